//! Detections on what leaves the machine: connections (unexpected egress, cloud metadata, the
//! OIDC token endpoint, block mode's refusals) and DNS (answers name addresses; questions that
//! carry data).

use std::net::IpAddr;

use serde_json::json;

use super::{emit::Raw, Engine, StdinShell};
use crate::{
    event::{ConnectVia, Detail, Event, Protocol},
    finding::{Finding, RuleId, Severity},
    process_tree::ProcessKey,
    profile::{Allowance, EgressMode},
    rules::{dns, egress::is_metadata_endpoint},
};

/// What a connection's TLS hello said, when its judgement waits for it.
pub(super) enum Hello {
    /// Not seen yet: a direct-IP HTTPS connection may wait for it (`HELLO_WAIT_NS`).
    Unknown,
    /// None came in time, or it named no server.
    Waited,
    /// The server name it asked for.
    Named(String),
}

/// Ports whose direct-IP connections wait for their TLS hello before they are judged: the
/// server name may be one the profile allows (a client with its own resolver or a hard-coded
/// address for an allowed host).
const HELLO_PORTS: [u16; 2] = [443, 8443];
/// How long (event time) such a connection waits for its hello.
pub(super) const HELLO_WAIT_NS: u64 = 1_000_000_000;
/// Connections waiting at once; past it they are judged without waiting.
const MAX_AWAITING_HELLO: usize = 1024;

impl Engine {
    pub(super) fn on_connect(&mut self, e: &Event, key: ProcessKey, out: &mut Vec<Finding>) {
        self.judge_connect(e, key, Hello::Unknown, out);
    }

    /// Judges the connections whose hello did not come in time, or (`ended_job`) all of a job
    /// that ended: its report must hold them.
    pub(super) fn judge_connections_without_hello(
        &mut self,
        out: &mut Vec<Finding>,
        ended_job: Option<usize>,
    ) {
        if self.awaiting_hello.is_empty()
            || (ended_job.is_none() && self.now_ns < self.next_hello_deadline)
        {
            return;
        }
        let now = self.now_ns;
        let procs = &self.procs;
        let mut due: Vec<(ProcessKey, IpAddr, u16)> = self
            .awaiting_hello
            .iter()
            .filter(|(k, (_, deadline))| match ended_job {
                Some(job) => procs.get(&k.0).is_some_and(|p| p.job == job),
                None => *deadline <= now,
            })
            .map(|(k, _)| *k)
            .collect();
        due.sort();
        for k in due {
            if let Some((event, _)) = self.awaiting_hello.remove(&k) {
                if self.procs.contains_key(&k.0) {
                    self.judge_connect(&event, k.0, Hello::Waited, out);
                }
            }
        }
        self.next_hello_deadline = self
            .awaiting_hello
            .values()
            .map(|(_, deadline)| *deadline)
            .min()
            .unwrap_or(u64::MAX);
    }

    fn judge_connect(&mut self, e: &Event, key: ProcessKey, hello: Hello, out: &mut Vec<Finding>) {
        let Detail::Connect {
            address,
            port,
            protocol,
            result,
            via,
            blocked,
            ..
        } = &e.detail
        else {
            return;
        };
        let (address, port) = (*address, *port);
        let (job, step) = {
            let p = &self.procs[&key];
            (p.job, p.step)
        };
        if *via == ConnectVia::RawSocket {
            let Detail::Connect { family, .. } = &e.detail else {
                return;
            };
            let tool = self.procs[&key].tool.clone();
            let what = if family == "packet" {
                format!("a packet socket (AF_PACKET, protocol {port:#06x})")
            } else {
                format!("a raw {family} socket (protocol {port})")
            };
            let verb = if *blocked { "was refused" } else { "opened" };
            let raw = Raw::new(
                RuleId::RawSocket,
                format!("{tool} {verb} {what}: what it sends bypasses every address and port rule"),
                format!("raw:{family}:{port}:{tool}"),
            )
            .evidence(vec![
                ("family", json!(family)),
                ("protocol", json!(port)),
                ("blocked", json!(blocked)),
            ]);
            self.emit_for(out, raw, e, key);
            return;
        }
        // Datagrams to the local link's own groups (mDNS, SSDP, test clusters' discovery) and
        // its broadcast never leave the link: not egress.
        if *via == ConnectVia::Send && stays_on_link(address) {
            return;
        }
        // DNS to the machine's resolvers, or to a local stub resolver on loopback
        // (systemd-resolved, dnsmasq), is how names get resolved at all.
        if port == 53
            && self.profile_of(job).allows_dns()
            && (address.to_canonical().is_loopback()
                || self
                    .config
                    .dns_resolvers
                    .iter()
                    .any(|r| r.to_canonical() == address.to_canonical()))
        {
            return;
        }
        // The job's own containers (its services, on the network the runner made for it) are
        // the job's, on this machine: not egress. What they send out is judged as theirs.
        if self.is_job_container_address(job, address) {
            return;
        }
        let metadata = is_metadata_endpoint(address);
        let resolved: Vec<dns::ResolvedName> = self.jobs[job]
            .names
            .names_of(address, e.ts_ns)
            .into_iter()
            .cloned()
            .collect();
        self.check_oidc_request(e, key, (job, step), (address, port), &resolved, out);
        if self.check_known_exfil(e, key, (job, step), (address, port), &resolved, out) {
            return;
        }
        if self.check_runtime_service_call(e, key, (job, step), (address, port), &resolved, out) {
            return;
        }
        // Allowed when the address itself is, or any name it was resolved from (the asked name
        // or a CNAME on the way) is.
        let allowed = self.rules_of(job, step).any(|r| {
            r.egress.allow.iter().any(|rule| {
                if metadata {
                    return rule.names_exactly(address);
                }
                rule.allows(address, port, None)
                    || resolved
                        .iter()
                        .flat_map(|n| n.names())
                        .any(|name| rule.allows(address, port, Some(name)))
            })
        });
        // The kernel's egress hook says when it refused; logs written before it said so have
        // only connect's EPERM in block mode.
        let blocked =
            *blocked || (self.profile_of(job).egress_mode() == EgressMode::Block && *result == -1);
        let noun = via.noun();
        if allowed {
            let domain = resolved.first().map(|n| n.asked.clone());
            self.check_download_and_execute(
                e,
                key,
                &dest_of(address, port),
                domain.as_deref(),
                true,
                out,
            );
            if blocked {
                // Allowed by the profile, refused by the kernel: an address the kernel did not
                // know yet (a name allowed only through a CNAME, or resolved elsewhere).
                let raw =
                    Raw::new(
                        RuleId::EgressBlockedAllowed,
                        format!(
                        "the kernel refused a {noun} to {address}:{port} that the profile allows{}",
                        resolved.first().map(|n| format!(" ({})", n.asked)).unwrap_or_default()
                    ),
                        format!("{address}:{port}"),
                    )
                    .evidence(vec![
                        ("address", json!(address)),
                        ("port", json!(port)),
                        ("blocked", json!(true)),
                        ("via", json!(via)),
                    ]);
                self.emit_for(out, raw, e, key);
            }
            return;
        }
        let domain = resolved.first().map(|n| n.asked.clone());
        self.check_download_and_execute(
            e,
            key,
            &dest_of(address, port),
            domain.as_deref(),
            false,
            out,
        );
        let chain = resolved
            .first()
            .map(|n| n.chain.clone())
            .unwrap_or_default();
        // An echo has no port: the address alone.
        let dest = match (address, *via == ConnectVia::Ping) {
            (address, true) => address.to_string(),
            (IpAddr::V6(a), false) => format!("[{a}]:{port}"),
            (IpAddr::V4(a), false) => format!("{a}:{port}"),
        };
        let raw = if metadata {
            Raw::new(
                RuleId::CloudMetadata,
                format!("{noun} to the cloud metadata endpoint {dest}"),
                dest.clone(),
            )
            .evidence(vec![
                ("address", json!(address)),
                ("port", json!(port)),
                ("protocol", json!(protocol)),
                ("result", json!(result)),
                ("via", json!(via)),
            ])
            .allowance(Allowance::Egress {
                address,
                port,
                domain: None,
            })
        } else {
            let verb = if blocked {
                format!("blocked {noun}")
            } else {
                noun.to_string()
            };
            let may_wait = matches!(hello, Hello::Unknown);
            let server_name = match hello {
                Hello::Named(name) => Some(name),
                _ => None,
            };
            if domain.is_none()
                && may_wait
                && !blocked
                && *protocol == Protocol::Tcp
                && *via != ConnectVia::Send
                && HELLO_PORTS.contains(&port)
                && self.awaiting_hello.len() < MAX_AWAITING_HELLO
            {
                // Judged when its TLS hello says which server it asks for, or after a moment.
                let deadline = e.ts_ns.saturating_add(HELLO_WAIT_NS);
                self.awaiting_hello
                    .insert((key, address, port), (e.clone(), deadline));
                self.next_hello_deadline = self.next_hello_deadline.min(deadline);
                return;
            }
            // The name the client asked for says what it meant, not where it went: any server
            // answers to any name. An allowed one lowers the finding (a client with its own
            // resolver), it does not allow the address.
            let name_allowed = server_name.as_deref().is_some_and(|name| {
                self.rules_of(job, step).any(|r| {
                    r.egress
                        .allow
                        .iter()
                        .any(|rule| rule.allows(address, port, Some(name)))
                })
            });
            let summary = match (&domain, &server_name) {
                (Some(d), _) => format!("{verb} to {d} ({dest}), which the profile does not allow"),
                (None, Some(name)) if name_allowed => format!(
                    "{verb} to {dest}, an address never resolved during the job, asking TLS for {name}: the profile allows that name, but nothing showed the address is its (a client with its own resolver, or an impostor)"
                ),
                (None, Some(name)) => format!(
                    "{verb} to {dest}, an address never resolved during the job, asking TLS for {name}, which the profile does not allow"
                ),
                (None, None) => format!(
                    "{verb} to {dest}, an address never resolved during the job (a direct-IP connection), which the profile does not allow"
                ),
            };
            let raw = Raw::new(RuleId::UnexpectedEgress, summary, dest.clone())
                .evidence(vec![
                    ("address", json!(address)),
                    ("port", json!(port)),
                    ("protocol", json!(protocol)),
                    ("result", json!(result)),
                    ("domain", json!(domain)),
                    ("cname_chain", json!(chain)),
                    ("resolved", json!(domain.is_some())),
                    ("blocked", json!(blocked)),
                    ("via", json!(via)),
                    ("server_name", json!(server_name)),
                    ("server_name_allowed", json!(name_allowed)),
                ])
                .allowance(Allowance::Egress {
                    address,
                    port,
                    domain: domain.clone(),
                });
            let raw = if name_allowed {
                raw.severity(Severity::Medium)
            } else {
                raw
            };
            match &domain {
                Some(_) => raw,
                None => raw.clause("egress.allow: no entry matches this address, and no DNS answer in the job named it"),
            }
        };
        self.emit_for(out, raw, e, key);
    }

    /// A connection to a service on the exfiltration list, by a name the job resolved the
    /// address from: reported whatever the allowlist says, unless an entry names the service
    /// itself. True when reported (the connection is judged no further: one finding, not an
    /// `unexpected-egress` beside it).
    fn check_known_exfil(
        &mut self,
        e: &Event,
        key: ProcessKey,
        (job, step): (usize, usize),
        (address, port): (IpAddr, u16),
        resolved: &[dns::ResolvedName],
        out: &mut Vec<Finding>,
    ) -> bool {
        let list = self.config.exfil_services.clone();
        let Some((name, hit)) = resolved
            .iter()
            .flat_map(|n| n.names())
            .find_map(|name| list.find(name).map(|hit| (name.to_string(), hit)))
        else {
            return false;
        };
        if self.service_allowed(job, step, hit.domain, &name, port) {
            return false;
        }
        let Detail::Connect {
            protocol,
            result,
            via,
            blocked,
            ..
        } = &e.detail
        else {
            return false;
        };
        let blocked =
            *blocked || (self.profile_of(job).egress_mode() == EgressMode::Block && *result == -1);
        let asked = resolved.first().map_or(name.clone(), |n| n.asked.clone());
        let verb = if blocked {
            format!("blocked {}", via.noun())
        } else {
            via.noun().to_string()
        };
        let tool = self.procs[&key].tool.clone();
        let raw = exfil_raw(
            &hit,
            list.updated.as_deref(),
            format!("{tool}: {verb} to {asked}"),
            (address, port),
            &name,
        )
        .evidence_more(vec![
            ("domain", json!(asked)),
            ("protocol", json!(protocol)),
            ("result", json!(result)),
            ("blocked", json!(blocked)),
            ("via", json!(via)),
        ]);
        self.emit_for(out, raw, e, key);
        true
    }

    /// A connection to the CI's cache or artifact service (by address or by the name it was
    /// resolved from) from a step whose action is not one that uses them, or from install-time
    /// code: those services take the runtime token, whatever the workflow's `permissions:`, and
    /// egress allowlists let their hosts through. True when reported.
    fn check_runtime_service_call(
        &mut self,
        e: &Event,
        key: ProcessKey,
        (job, step): (usize, usize),
        (address, port): (IpAddr, u16),
        resolved: &[dns::ResolvedName],
        out: &mut Vec<Finding>,
    ) -> bool {
        let Some((variable, host)) = self.jobs[job]
            .runtime_services
            .iter()
            .find(|(_, host, service_port)| {
                *service_port == port
                    && (host
                        .trim_matches(|c| c == '[' || c == ']')
                        .parse::<IpAddr>()
                        .is_ok_and(|a| a.to_canonical() == address.to_canonical())
                        || resolved
                            .iter()
                            .any(|n| n.names().any(|name| name.eq_ignore_ascii_case(host))))
            })
            .map(|(v, h, _)| (*v, h.clone()))
        else {
            return false;
        };
        let in_hook = self.procs[&key].hook.is_some();
        let identity = self.jobs[job].steps.get(step).map(|s| s.identity.clone());
        let action = identity
            .as_ref()
            .and_then(|s| s.action.as_deref())
            .map(|a| a.split_once('@').map_or(a, |(name, _)| name).to_string());
        let action_may = action.as_deref().is_some_and(|a| {
            crate::profile::RuntimeServices::built_in_action(a)
                || self
                    .rules_of(job, step)
                    .any(|r| r.runtime_services.lists_action(a))
        });
        let step_may = self.rules_of(job, step).any(|r| r.runtime_services.allow);
        if !in_hook && (action_may || step_may) {
            return false;
        }
        let step_id = identity.map(|s| s.id).unwrap_or_default();
        let tool = self.procs[&key].tool.clone();
        let who = match (&action, in_hook) {
            (_, true) => "install-time code".to_string(),
            (Some(a), false) => {
                format!("step {step_id} (action {a}, not a cache or artifact action)")
            }
            (None, false) => format!("step {step_id} (a `run:` step)"),
        };
        let mut raw = Raw::new(
            RuleId::RuntimeServiceCall,
            format!(
                "{tool} connected to the CI's {} ({host}:{port}, from {variable}) in {who}: that service takes the job's runtime token whatever the workflow's permissions",
                service_noun(variable)
            ),
            format!("runtime:{host}:{port}"),
        )
        .evidence(vec![
            ("service_variable", json!(variable)),
            ("endpoint", json!(format!("{host}:{port}"))),
            ("address", json!(address)),
            ("port", json!(port)),
            ("action", json!(action)),
        ]);
        if !in_hook {
            raw = raw.allowance(Allowance::RuntimeServices { step: step_id });
        }
        self.emit_for(out, raw, e, key);
        true
    }

    /// The server name a TLS client asked for (SNI), against where the connection's address
    /// came from: a name on the exfiltration list is `known-exfil-service` (whatever the address
    /// was resolved from); a name other than every name the job resolved the address from is
    /// domain fronting (`sni-mismatch`: an allowed CDN's address carrying another site's
    /// traffic), unless the profile lists the pair. A direct-IP connection was judged at its
    /// connect; its server name is in the report.
    pub(super) fn on_tls(&mut self, e: &Event, key: ProcessKey, out: &mut Vec<Finding>) {
        let Detail::Tls {
            address,
            port,
            server_name,
        } = &e.detail
        else {
            return;
        };
        let (address, port) = (*address, *port);
        // A direct-IP connection waiting for this hello.
        let waiting = self.awaiting_hello.remove(&(key, address, port));
        let Some(sni) = server_name else {
            if let Some((connect, _)) = waiting {
                self.judge_connect(&connect, key, Hello::Waited, out);
            }
            return;
        };
        let (job, step) = {
            let p = &self.procs[&key];
            (p.job, p.step)
        };
        if self.is_job_container_address(job, address) {
            return;
        }
        let dest = dest_of(address, port);
        let tool = self.procs[&key].tool.clone();
        let list = self.config.exfil_services.clone();
        if let Some(hit) = list.find(sni) {
            if !self.service_allowed(job, step, hit.domain, sni, port) {
                let raw = exfil_raw(
                    &hit,
                    list.updated.as_deref(),
                    format!("{tool}: TLS to {sni}"),
                    (address, port),
                    sni,
                )
                .evidence_more(vec![("server_name", json!(sni)), ("via", json!("tls-sni"))]);
                self.emit_for(out, raw, e, key);
                return;
            }
        }
        if let Some((connect, _)) = waiting {
            self.judge_connect(&connect, key, Hello::Named(sni.clone()), out);
            return;
        }
        let resolved: Vec<dns::ResolvedName> = self.jobs[job]
            .names
            .names_of(address, e.ts_ns)
            .into_iter()
            .cloned()
            .collect();
        if resolved.is_empty()
            || resolved
                .iter()
                .flat_map(|n| n.names())
                .any(|n| n.eq_ignore_ascii_case(sni))
        {
            return;
        }
        let aliased = self.rules_of(job, step).any(|r| {
            r.egress.sni_aliases.iter().any(|a| {
                crate::profile::pattern::domain_matches(&a.sni, sni)
                    && resolved
                        .iter()
                        .flat_map(|n| n.names())
                        .any(|n| crate::profile::pattern::domain_matches(&a.resolved, n))
            })
        });
        if aliased {
            return;
        }
        let asked = resolved[0].asked.clone();
        let names: Vec<&str> = resolved.iter().flat_map(|n| n.names()).collect();
        let sni_allowed = self.rules_of(job, step).any(|r| {
            r.egress
                .allow
                .iter()
                .any(|rule| rule.allows(address, port, Some(sni)))
        });
        let raw = Raw::new(
            RuleId::SniMismatch,
            format!(
                "{tool} connected to {dest}, resolved as {asked}, but its TLS hello asked for {sni}: another site's traffic through this address (domain fronting)"
            ),
            format!("sni:{sni}:{dest}"),
        )
        .evidence(vec![
            ("address", json!(address)),
            ("port", json!(port)),
            ("server_name", json!(sni)),
            ("resolved_as", json!(names)),
            ("server_name_allowed", json!(sni_allowed)),
        ])
        .allowance(Allowance::SniAlias {
            resolved: asked,
            sni: sni.clone(),
        });
        self.emit_for(out, raw, e, key);
    }

    /// Whether an `egress.allow` entry of the job or step names the listed service itself.
    fn service_allowed(
        &self,
        job: usize,
        step: usize,
        service_domain: &str,
        name: &str,
        port: u16,
    ) -> bool {
        self.rules_of(job, step).any(|r| {
            r.egress
                .allow
                .iter()
                .any(|rule| rule.names_service(service_domain, name, port))
        })
    }

    /// A DNS question under an out-of-band collector (`dns: true` in the list): the question
    /// itself reaches it, with whatever its labels carry.
    fn check_known_exfil_question(
        &mut self,
        e: &Event,
        key: ProcessKey,
        (job, step): (usize, usize),
        question: &str,
        out: &mut Vec<Finding>,
    ) {
        let list = self.config.exfil_services.clone();
        let Some(hit) = list.find(question).filter(|hit| hit.service.dns) else {
            return;
        };
        // Any port: a question names no port, and the allowance is of the service.
        if self.rules_of(job, step).any(|r| {
            r.egress
                .allow
                .iter()
                .any(|rule| rule.names_service_at_any_port(hit.domain, question))
        }) {
            return;
        }
        let tool = self.procs[&key].tool.clone();
        let raw = Raw::new(
            RuleId::KnownExfilService,
            format!(
                "{tool} asked DNS for a name under {} ({}, {}): the question alone reaches its owner ({})",
                hit.domain,
                hit.service.name,
                hit.service.kind.described(),
                dns::redact_name(question)
            ),
            format!("exfil-dns:{}", hit.domain),
        )
        .evidence(vec![
            ("service", json!(hit.service.name)),
            ("service_kind", json!(hit.service.kind.as_str())),
            ("listed_domain", json!(hit.domain)),
            ("query", json!(dns::redact_name(question))),
            ("via", json!("dns-question")),
            ("list_updated", json!(list.updated)),
        ]);
        self.emit_for(out, raw, e, key);
    }

    /// A step connecting to the job's OIDC token endpoint: minting an identity token that can
    /// publish packages or reach clouds as the repository (the npm worm published this way).
    /// HTTPS hides the request path, so the endpoint's host and port are the sign; on GitHub that
    /// host serves the runner itself and OIDC, not the steps' ordinary traffic.
    fn check_oidc_request(
        &mut self,
        e: &Event,
        key: ProcessKey,
        (job, step): (usize, usize),
        (address, port): (IpAddr, u16),
        resolved: &[dns::ResolvedName],
        out: &mut Vec<Finding>,
    ) {
        let Some((host, endpoint_port)) = self.jobs[job].oidc_endpoint.clone() else {
            return;
        };
        let host_is_address = host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
            .is_ok_and(|a| a.to_canonical() == address.to_canonical());
        let host_was_resolved = resolved
            .iter()
            .any(|n| n.names().any(|name| name.eq_ignore_ascii_case(&host)));
        if port != endpoint_port || !(host_is_address || host_was_resolved) {
            return;
        }
        if self.rules_of(job, step).any(|r| r.oidc.allow) {
            return;
        }
        let step_id = self.jobs[job]
            .steps
            .get(step)
            .map(|s| s.identity.id.clone())
            .unwrap_or_default();
        let tool = self.procs[&key].tool.clone();
        let raw = Raw::new(
            RuleId::OidcTokenRequest,
            format!(
                "{tool} connected to the job's OIDC token endpoint ({host}:{port}) in step {step_id}, which may not request identity tokens"
            ),
            format!("{host}:{port}"),
        )
        .evidence(vec![
            ("endpoint", json!(format!("{host}:{port}"))),
            ("address", json!(address)),
            ("port", json!(port)),
        ])
        .allowance(Allowance::Oidc { step: step_id });
        self.emit_for(out, raw, e, key);
    }

    pub(super) fn on_dns(&mut self, e: &Event, key: ProcessKey, out: &mut Vec<Finding>) {
        let Detail::Dns {
            question,
            answers,
            sent,
            forged,
            ..
        } = &e.detail
        else {
            return;
        };
        let job = self.procs[&key].job;
        if *forged {
            // Not learnt: a connection to its addresses is judged as a direct-IP one.
            let name = question.as_deref().unwrap_or("?");
            let addresses: Vec<&str> = answers
                .iter()
                .filter(|r| r.kind == "A" || r.kind == "AAAA")
                .map(|r| r.data.as_str())
                .collect();
            let raw = Raw::new(
                RuleId::DnsForgedAnswer,
                format!(
                    "{} received a forged DNS answer for {} (it did not come from where the question went): {} not trusted",
                    self.procs[&key].tool,
                    dns::redact_name(name),
                    if addresses.is_empty() { "its records are".to_string() } else { addresses.join(", ") + " is" }
                ),
                format!("forged:{name}"),
            )
            .evidence(vec![
                ("question", json!(dns::redact_name(name))),
                ("addresses", json!(addresses)),
            ]);
            self.emit_for(out, raw, e, key);
            return;
        }
        // A question only says what was asked; answers say where names point.
        if !sent {
            self.jobs[job]
                .names
                .learn(question.as_deref(), answers, e.ts_ns);
        }
        let Some(question) = question else {
            return;
        };
        let step = self.procs[&key].step;
        self.check_known_exfil_question(e, key, (job, step), question, out);
        // Names the profile allows by domain are trusted destinations, whatever their labels.
        if self.rules_of(job, step).any(|r| {
            r.egress
                .allow
                .iter()
                .any(|rule| rule.names_domain(question))
        }) {
            return;
        }
        if let Some(part) = dns::data_carrying_part(question) {
            let zone = dns::registrable_domain(question).unwrap_or_else(|| question.clone());
            let spread = if part.labels > 1 {
                format!(
                    "{} characters spread over {} labels",
                    part.text.len(),
                    part.labels
                )
            } else {
                format!("a {}-character label", part.text.len())
            };
            let raw = Raw::new(
                RuleId::DnsExfiltration,
                format!(
                    "DNS query under {zone} carries data in {spread} ({})",
                    dns::redact_name(question)
                ),
                zone.clone(),
            )
            .evidence(vec![
                ("zone", json!(zone)),
                ("query", json!(dns::redact_name(question))),
                ("label_length", json!(part.text.len())),
                ("labels", json!(part.labels)),
                (
                    "label_entropy_bits",
                    json!((dns::entropy(&part.text) * 100.0).round() / 100.0),
                ),
            ]);
            self.emit_for(out, raw, e, key);
        }
        if let Some(tunnel) = self.jobs[job].names.count_question(question) {
            let zone = tunnel.zone;
            let raw = Raw::new(
                RuleId::DnsExfiltration,
                format!(
                    "{} different names ({} characters left of the domain) queried under {zone} in one job (a DNS tunnel's pattern)",
                    tunnel.unique_names, tunnel.bytes
                ),
                format!("unique:{zone}"),
            )
            .clause(format!(
                "DNS names are not a channel for data (more than {} names, or {} characters of names, under one domain)",
                dns::EXFIL_UNIQUE_NAMES,
                dns::EXFIL_ZONE_BYTES
            ))
            .evidence(vec![
                ("zone", json!(zone)),
                ("unique_names", json!(tunnel.unique_names)),
                ("name_bytes", json!(tunnel.bytes)),
                ("query", json!(dns::redact_name(question))),
            ]);
            self.emit_for(out, raw, e, key);
        }
    }
}

/// Link-local multicast (224.0.0.0/24, ff02::/16) and the limited broadcast: routers do not
/// forward them off the local link.
fn stays_on_link(address: IpAddr) -> bool {
    match address.to_canonical() {
        IpAddr::V4(a) => {
            let o = a.octets();
            a.is_broadcast() || (o[0] == 224 && o[1] == 0 && o[2] == 0)
        }
        IpAddr::V6(a) => a.segments()[0] == 0xff02,
    }
}

/// A `known-exfil-service` finding: `what` (the tool and what it did) reached the listed
/// service at `address:port` by `name`. The caller adds how.
fn exfil_raw(
    hit: &crate::rules::exfil_services::Match<'_>,
    list_updated: Option<&str>,
    what: String,
    (address, port): (IpAddr, u16),
    name: &str,
) -> Raw {
    let dest = dest_of(address, port);
    Raw::new(
        RuleId::KnownExfilService,
        format!(
            "{what} ({dest}): {}, {}, which takes data from anyone",
            hit.service.name,
            hit.service.kind.described()
        ),
        format!("exfil:{}:{dest}", hit.domain),
    )
    .evidence(vec![
        ("service", json!(hit.service.name)),
        ("service_kind", json!(hit.service.kind.as_str())),
        ("listed_domain", json!(hit.domain)),
        ("matched_name", json!(name)),
        ("address", json!(address)),
        ("port", json!(port)),
        ("list_updated", json!(list_updated)),
    ])
}

/// What the runner's variable points at.
fn service_noun(variable: &str) -> &'static str {
    match variable {
        "ACTIONS_CACHE_URL" => "cache service",
        "ACTIONS_RESULTS_URL" => "results (artifact and cache) service",
        _ => "runtime (artifact) service",
    }
}

fn dest_of(address: IpAddr, port: u16) -> String {
    match address {
        IpAddr::V6(a) => format!("[{a}]:{port}"),
        IpAddr::V4(a) => format!("{a}:{port}"),
    }
}

/// How far apart (in clock ticks, 1/100 s) the processes of one pipeline start.
const PIPELINE_TICKS: u64 = 200;
/// Interpreters fed on stdin kept per parent, and how long (ticks).
const STDIN_SHELLS_PER_PARENT: usize = 64;
const STDIN_SHELL_TICKS: u64 = 60 * 100;

/// Connections kept per parent for a pipeline's interpreter seen after them (its exec record
/// may be read after the connection's: they travel on different rings), how many parents, and
/// for how long (event time).
const DOWNLOADS_PER_PARENT: usize = 4;
const DOWNLOAD_PARENTS: usize = 256;
const DOWNLOAD_KEPT_NS: u64 = 10 * 1_000_000_000;

/// A connection out, kept until a sibling interpreter reading stdin shows up.
pub(super) struct RecentDownload {
    key: ProcessKey,
    event: Event,
    dest: String,
    domain: Option<String>,
    allowed: bool,
}

impl Engine {
    /// An interpreter reading its program from stdin: kept until a sibling connects out, or
    /// judged at once with a sibling's connection seen before it.
    pub(super) fn note_stdin_shell(&mut self, e: &Event, key: ProcessKey, out: &mut Vec<Finding>) {
        let list = self.stdin_shells.entry(e.process.ppid).or_default();
        list.retain(|s| key.start_ticks.saturating_sub(s.key.start_ticks) < STDIN_SHELL_TICKS);
        if list.len() >= STDIN_SHELLS_PER_PARENT {
            list.remove(0);
        }
        list.push(StdinShell {
            key,
            argv: e.process.argv.clone(),
            reported: false,
        });
        let Some(downloads) = self.recent_downloads.get_mut(&e.process.ppid) else {
            return;
        };
        let Some(at) = downloads.iter().position(|d| {
            d.key != key && d.key.start_ticks.abs_diff(key.start_ticks) <= PIPELINE_TICKS
        }) else {
            return;
        };
        let d = downloads.remove(at);
        if self.procs.contains_key(&d.key) {
            self.check_download_and_execute(
                &d.event,
                d.key,
                &d.dest,
                d.domain.as_deref(),
                d.allowed,
                out,
            );
        }
    }

    /// Keeps a connection for an interpreter of its pipeline not seen yet.
    fn keep_recent_download(
        &mut self,
        e: &Event,
        key: ProcessKey,
        dest: &str,
        domain: Option<&str>,
        allowed: bool,
    ) {
        let now = e.ts_ns;
        if self.recent_downloads.len() >= DOWNLOAD_PARENTS {
            self.recent_downloads.retain(|_, list| {
                list.retain(|d| now.saturating_sub(d.event.ts_ns) < DOWNLOAD_KEPT_NS);
                !list.is_empty()
            });
            if self.recent_downloads.len() >= DOWNLOAD_PARENTS {
                return;
            }
        }
        let list = self.recent_downloads.entry(e.process.ppid).or_default();
        list.retain(|d| now.saturating_sub(d.event.ts_ns) < DOWNLOAD_KEPT_NS);
        if list.len() >= DOWNLOADS_PER_PARENT {
            list.remove(0);
        }
        list.push(RecentDownload {
            key,
            event: e.clone(),
            dest: dest.to_string(),
            domain: domain.map(str::to_string),
            allowed,
        });
    }

    /// A process connecting out while an interpreter of its pipeline (a sibling started within
    /// `PIPELINE_TICKS`) reads its program from stdin: what it downloads is run.
    fn check_download_and_execute(
        &mut self,
        e: &Event,
        key: ProcessKey,
        dest: &str,
        domain: Option<&str>,
        allowed: bool,
        out: &mut Vec<Finding>,
    ) {
        let found = self.stdin_shells.get_mut(&e.process.ppid).and_then(|list| {
            list.iter_mut().find(|s| {
                !s.reported
                    && s.key != key
                    && s.key.start_ticks.abs_diff(key.start_ticks) <= PIPELINE_TICKS
            })
        });
        let Some(shell) = found else {
            self.keep_recent_download(e, key, dest, domain, allowed);
            return;
        };
        if !self.procs.get(&shell.key).is_some_and(|p| p.alive) {
            return;
        }
        shell.reported = true;
        let shell_argv = shell.argv.join(" ");
        let shell_pid = shell.key.tgid;
        let tool = self.procs[&key].tool.clone();
        let from = domain.unwrap_or(dest);
        let mut raw = Raw::new(
            RuleId::DownloadAndExecute,
            format!("`{shell_argv}` ran what {tool} downloaded from {from} (a download piped into an interpreter)"),
            format!("download-and-execute:{shell_pid}"),
        )
        .evidence(vec![
            ("interpreter", json!(shell_argv)),
            ("interpreter_pid", json!(shell_pid)),
            ("downloader", json!(e.process.argv.join(" "))),
            ("destination", json!(dest)),
            ("domain", json!(domain)),
            ("destination_allowed", json!(allowed)),
        ]);
        if allowed {
            raw = raw.severity(Severity::Low);
        }
        self.emit_for(out, raw, e, key);
    }
}
