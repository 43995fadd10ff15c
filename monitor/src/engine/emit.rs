//! Turning what a detection found into a finding: the job, step and process chain it belongs to,
//! the severity install-time code raises it to, and de-duplication per job and step.

use serde_json::{json, Value};

use super::{key_of, link_of, Engine, MAX_FINDINGS_PER_JOB, MAX_SEEN_PER_JOB};
use crate::{
    event::{Detail, Event, KernelResponse},
    finding::{ChainLink, Finding, RuleId, Severity},
    process_tree::ProcessKey,
    profile::Allowance,
};

/// What a detection found, before the engine adds the job, step, chain and id. Made with
/// [`Raw::new`]: the rule gives the severity and profile clause unless the finding says more.
pub(super) struct Raw {
    rule: RuleId,
    severity: Severity,
    pub(super) summary: String,
    evidence: Vec<(&'static str, Value)>,
    profile_clause: String,
    allowance: Option<Allowance>,
    /// De-duplication: the same rule with the same key in one job and step is reported once.
    dedupe: String,
    /// The container it is about, when no process of it acted (its settings).
    container: Option<String>,
    /// What the kernel did to the acting process (its event's).
    response: Option<KernelResponse>,
}

impl Raw {
    pub(super) fn new(rule: RuleId, summary: String, dedupe: impl Into<String>) -> Self {
        Self {
            rule,
            severity: rule.default_severity(),
            summary,
            evidence: Vec::new(),
            profile_clause: rule.clause().to_string(),
            allowance: None,
            dedupe: dedupe.into(),
            container: None,
            response: None,
        }
    }

    pub(super) fn in_container(mut self, id: &str) -> Self {
        self.container = Some(id.to_string());
        self
    }

    pub(super) fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    pub(super) fn clause(mut self, clause: impl Into<String>) -> Self {
        self.profile_clause = clause.into();
        self
    }

    pub(super) fn evidence(mut self, evidence: Vec<(&'static str, Value)>) -> Self {
        self.evidence = evidence;
        self
    }

    /// Adds to the evidence.
    pub(super) fn evidence_more(mut self, more: Vec<(&'static str, Value)>) -> Self {
        self.evidence.extend(more);
        self
    }

    /// What a profile would have to allow for this not to be a finding (none: nothing may).
    pub(super) fn allowance(mut self, allowance: Allowance) -> Self {
        self.allowance = Some(allowance);
        self
    }
}

/// Where a finding happened: the job, step and install hook, by the engine's indices.
#[derive(Clone, Copy)]
pub(super) struct Place {
    pub job: usize,
    pub step: usize,
    pub hook: Option<usize>,
}

/// The finding's triggering event(s) and time.
pub(super) struct Trigger<'a> {
    pub events: Vec<u64>,
    pub time: &'a str,
    pub ts_ns: u64,
}

impl Engine {
    /// The acting process and its ancestors up to the step root.
    pub(super) fn chain(&self, e: &Event, key: ProcessKey) -> Vec<ChainLink> {
        let mut chain = vec![link_of(e)];
        if self.procs.get(&key).is_some_and(|p| p.is_step_root) {
            return chain;
        }
        for a in &e.ancestry {
            let k = key_of(a.pid, a.start_ticks);
            let Some(p) = self.procs.get(&k) else { break };
            chain.push(ChainLink {
                pid: a.pid,
                start_ticks: a.start_ticks,
                comm: a.comm.clone(),
                exe: a.exe.clone(),
                argv: a.argv.clone(),
            });
            if p.is_step_root {
                break;
            }
        }
        chain
    }

    pub(super) fn emit(
        &mut self,
        out: &mut Vec<Finding>,
        raw: Raw,
        place: Place,
        chain: Vec<ChainLink>,
        trigger: Trigger<'_>,
    ) {
        let Place { job, step, hook } = place;
        if let Some(h) = hook.filter(|_| raw.rule != RuleId::LifecycleHook) {
            if let Some(state) = self.hooks.get_mut(&h) {
                state.acted.insert(raw.rule);
            }
        }
        let seen = &mut self.jobs[job].seen;
        // What the kernel did to a process is told even when the rule was seen without it.
        let dedupe = match raw.response {
            Some(response) => format!("{}|{step}|{}|{}", raw.rule, raw.dedupe, response.as_str()),
            None => format!("{}|{step}|{}", raw.rule, raw.dedupe),
        };
        if seen.contains(&dedupe) {
            return;
        }
        if seen.len() < MAX_SEEN_PER_JOB {
            seen.insert(dedupe);
        }
        let job_state = &mut self.jobs[job];
        let raw = if job_state.findings_written < MAX_FINDINGS_PER_JOB {
            job_state.findings_written += 1;
            raw
        } else {
            job_state.findings_suppressed += 1;
            if job_state.findings_suppressed > 1 {
                return;
            }
            // The first one past the bound says what happens to the rest.
            Raw::new(
                RuleId::FindingFlood,
                format!(
                    "the job raised more than {MAX_FINDINGS_PER_JOB} findings; the rest are counted in its report, not written (the first over the bound: {})",
                    raw.summary
                ),
                "flood",
            )
            .evidence(vec![
                ("bound", json!(MAX_FINDINGS_PER_JOB)),
                ("first_suppressed_rule", json!(raw.rule)),
            ])
        };
        let mut evidence: std::collections::BTreeMap<String, Value> = raw
            .evidence
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        if let Some(h) = hook {
            evidence.insert(
                "hook_allowed_by_profile".into(),
                json!(self.hooks[&h].allowed),
            );
        }
        // The container the acting process runs in: named, and a path it gave is also told as
        // the host's file behind its binds.
        let container_id = raw.container.clone().or_else(|| {
            let first = chain.first()?;
            self.procs
                .get(&key_of(first.pid, first.start_ticks))?
                .container
                .clone()
        });
        let container = container_id.as_deref().map(|id| {
            let meta = self.containers.get(id).map(|c| &c.meta);
            // A file known by its identity is already named by its host path (the container's
            // name for it is `opened_as`): not mapped twice.
            let named_by_host = evidence.get("opened_as").is_some_and(|v| !v.is_null());
            if let (Some(meta), Some(Value::String(path)), false) =
                (meta, evidence.get("path"), named_by_host)
            {
                if let Some(host) = meta.host_path_of(path) {
                    evidence.insert("host_path".into(), json!(host));
                }
            }
            crate::finding::FindingContainer {
                id: id.to_string(),
                name: meta.map(|m| m.name.clone()).unwrap_or_default(),
                image: meta.map(|m| m.image.clone()).unwrap_or_default(),
            }
        });
        let hook = hook.map(|h| self.hooks[&h].hook.clone());
        // Inside a dependency's install code everything is worse: that code has no business
        // reading credentials, connecting out or running downloads.
        let severity = match (&hook, raw.rule) {
            (Some(_), RuleId::LifecycleHook) => raw.severity,
            (Some(_), _) => Severity::Critical,
            (None, _) => raw.severity,
        };
        self.next_id += 1;
        let job_state = &self.jobs[job];
        out.push(Finding {
            id: self.next_id,
            rule: raw.rule,
            severity,
            summary: raw.summary,
            time: trigger.time.to_string(),
            ts_ns: trigger.ts_ns,
            job: Some(job_state.identity.clone()),
            step: job_state.steps.get(step).map(|s| s.identity.clone()),
            process_chain: chain,
            events: trigger.events,
            evidence,
            hook,
            profile_clause: raw.profile_clause,
            allowance: raw.allowance,
            container,
            response: raw.response,
        });
    }

    /// A finding about what the event's own process did.
    pub(super) fn emit_for(
        &mut self,
        out: &mut Vec<Finding>,
        raw: Raw,
        e: &Event,
        key: ProcessKey,
    ) {
        let Some(p) = self.procs.get(&key) else {
            return;
        };
        let mut raw = raw;
        raw.response = e.detail.response();
        // Which route the kernel saw an open by (syscall, io_uring, lsm, fentry), unless the
        // rule said how the file was reached itself (a rename's, a link's).
        if let Detail::Open { via, .. } = &e.detail {
            if !raw.evidence.iter().any(|(k, _)| *k == "via") {
                raw.evidence.push(("via", json!(via)));
            }
        }
        // A new name's `via` is the operation (rename, link, symlink); the hook that saw it
        // (syscall, io_uring, lsm, fentry) is `hook`.
        if let Detail::Name { via, .. } = &e.detail {
            if !raw.evidence.iter().any(|(k, _)| *k == "hook") {
                raw.evidence.push(("hook", json!(via)));
            }
        }
        let place = Place {
            job: p.job,
            step: p.step,
            hook: p.hook,
        };
        let chain = self.chain(e, key);
        let trigger = Trigger {
            events: vec![e.seq],
            time: &e.time,
            ts_ns: e.ts_ns,
        };
        self.emit(out, raw, place, chain, trigger);
    }
}
