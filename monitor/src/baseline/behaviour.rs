//! What one run of a job did, as the baseline keeps it: a set of behaviours per step, each a
//! kind and an item (`destination` `tcp registry.npmjs.org:443`), taken from the job's report.
//!
//! Items are generalised as `profile learn` generalises paths (temporary directories, hashes and
//! versions become `*`, loopback ports are any port) so that an honest job's next run gives the
//! same items; and they are behaviour, never secrets: no arguments, no environment, no file
//! contents (a report holds redacted arguments; none of them is kept here).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{ci::JobIdentity, event::Access, profile::learn::generalise_path, report::Report};

/// How an executable item names the install-time code that ran it:
/// `/usr/bin/curl (in npm evil-pkg postinstall)`.
pub const INSTALL_CODE_MARK: &str = " (in ";

/// Behaviours kept per step and run: past it a run's step is recorded truncated (and says so).
pub const MAX_BEHAVIOURS_PER_STEP: usize = 2_000;
/// Longest item kept (a longer one is cut, marked with `…`).
pub const MAX_ITEM_BYTES: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BehaviourKind {
    /// `tcp name:port` (the name the address was resolved from, else its TLS server name, else
    /// the address).
    Destination,
    /// A DNS zone the step asked names in, or its connections were resolved in (the
    /// registrable domain).
    DnsZone,
    /// A program that ran (its resolved path, generalised), and the dependency's install-time
    /// code that ran it, if any.
    Executable,
    /// Install-time code of a dependency that ran: `npm esbuild postinstall`.
    InstallHook,
    /// A credential file opened, and by which program: `~/.npmrc by npm`.
    CredentialAccess,
    /// A persistence place written (shell start-up files, cron, systemd units, git hooks).
    PersistenceAccess,
    /// A program whose process outlived its step.
    OutlivedStep,
}

impl BehaviourKind {
    pub const ALL: [BehaviourKind; 7] = [
        BehaviourKind::Destination,
        BehaviourKind::DnsZone,
        BehaviourKind::Executable,
        BehaviourKind::InstallHook,
        BehaviourKind::CredentialAccess,
        BehaviourKind::PersistenceAccess,
        BehaviourKind::OutlivedStep,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BehaviourKind::Destination => "destination",
            BehaviourKind::DnsZone => "dns-zone",
            BehaviourKind::Executable => "executable",
            BehaviourKind::InstallHook => "install-hook",
            BehaviourKind::CredentialAccess => "credential-access",
            BehaviourKind::PersistenceAccess => "persistence-access",
            BehaviourKind::OutlivedStep => "outlived-step",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Kinds whose first appearance on a stable baseline is the strongest sign (`high`): where
    /// data can go (a DNS question to a zone is a way out too), and which secrets were touched.
    pub fn weighs_most(self) -> bool {
        matches!(
            self,
            BehaviourKind::Destination
                | BehaviourKind::DnsZone
                | BehaviourKind::CredentialAccess
                | BehaviourKind::PersistenceAccess
        )
    }
}

impl std::fmt::Display for BehaviourKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One behaviour: what kind, and the generalised item.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Behaviour {
    pub kind: BehaviourKind,
    pub item: String,
}

impl Behaviour {
    /// `kind:item`, as the CLI takes it.
    pub fn parse(text: &str) -> Option<Self> {
        let (kind, item) = text.split_once(':')?;
        Some(Behaviour {
            kind: BehaviourKind::parse(kind)?,
            item: item.to_string(),
        })
    }
}

impl std::fmt::Display for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.item)
    }
}

/// The job a baseline belongs to: the same for every run of one job of one workflow of one
/// repository (`github:acme/app/CI/build`), as profiles pick jobs.
pub fn baseline_key(job: &JobIdentity) -> String {
    match (&job.repository, &job.workflow) {
        (Some(repo), Some(workflow)) => format!("{}:{repo}/{workflow}/{}", job.provider, job.name),
        (Some(repo), None) => format!("{}:{repo}/{}", job.provider, job.name),
        _ => format!("{}:{}", job.provider, job.name),
    }
}

/// What one run did, per step: what the store records and the baseline is compared with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// [`baseline_key`].
    pub job: String,
    /// Unique per run and attempt (the job identity's key).
    pub run: String,
    /// The CI's run id (`GITHUB_RUN_ID`), to find the run by.
    #[serde(default)]
    pub run_id: Option<String>,
    /// When it ended (RFC 3339).
    pub ended: String,
    /// By step id, in the order the steps ran.
    pub steps: BTreeMap<String, BTreeSet<Behaviour>>,
    /// Steps whose behaviours passed [`MAX_BEHAVIOURS_PER_STEP`].
    #[serde(default)]
    pub truncated: BTreeSet<String>,
}

impl RunRecord {
    pub fn behaviours(&self) -> usize {
        self.steps.values().map(BTreeSet::len).sum()
    }
}

/// The behaviours a job's report shows: taken from what the report recorded (bounded there too).
/// `home` is the job's `HOME` when the agent knows it (a runner user living outside `/home`):
/// credential and persistence places are recognised under it as under `~`.
pub fn run_record(report: &Report, home: Option<&str>) -> RunRecord {
    let home = home.map(str::to_string).or_else(|| home_of(report));
    let mut steps: BTreeMap<String, BTreeSet<Behaviour>> = BTreeMap::new();
    let mut truncated = BTreeSet::new();
    for step in &report.steps {
        let mut set = BTreeSet::new();
        let mut add = |kind: BehaviourKind, item: String| {
            if set.len() < MAX_BEHAVIOURS_PER_STEP {
                set.insert(Behaviour {
                    kind,
                    item: bounded(item),
                });
            } else {
                truncated.insert(step.step.id.clone());
            }
        };
        for c in &step.connections {
            let protocol = c.protocol.as_str();
            let address = c.address.to_canonical();
            // Local servers listen on ports picked per run.
            let port = if address.is_loopback() {
                "*".to_string()
            } else {
                c.port.to_string()
            };
            let name = c.domain.as_deref().or(c.server_name.as_deref());
            let host = match name {
                Some(name) => name.to_ascii_lowercase(),
                None if address.is_ipv6() => format!("[{address}]"),
                None => address.to_string(),
            };
            add(
                BehaviourKind::Destination,
                format!("{protocol} {host}:{port}"),
            );
            if let Some(zone) = name.and_then(zone_of) {
                add(BehaviourKind::DnsZone, zone);
            }
        }
        for zone in &step.dns_zones {
            add(BehaviourKind::DnsZone, zone.clone());
        }
        for p in &step.processes {
            let Some(exe) = &p.exe else {
                continue;
            };
            // A program run by a dependency's install-time code is its own behaviour: `curl` in
            // the build is not `curl` in a postinstall.
            let hook = p
                .hook
                .and_then(|i| step.hooks.get(i))
                .filter(|h| h.hook.dependency);
            let item = match hook {
                Some(h) => format!(
                    "{}{INSTALL_CODE_MARK}{} {} {})",
                    shown_path(exe, &home),
                    h.hook.ecosystem.name(),
                    h.hook.package,
                    h.hook.script
                ),
                None => shown_path(exe, &home),
            };
            add(BehaviourKind::Executable, item);
        }
        for h in &step.hooks {
            if h.hook.dependency {
                add(
                    BehaviourKind::InstallHook,
                    format!(
                        "{} {} {}",
                        h.hook.ecosystem.name(),
                        h.hook.package,
                        h.hook.script
                    ),
                );
            }
        }
        for f in &step.file_accesses {
            let tool = f
                .exe
                .as_deref()
                .map(|e| e.rsplit('/').next().unwrap_or(e).to_string())
                .unwrap_or_else(|| "?".into());
            let path = shown_path(&f.path, &home);
            // The rules' lists name home files under `/root` and `/home/*`.
            let as_listed = match home.as_deref().and_then(|h| f.path.strip_prefix(h)) {
                Some(rest) if rest.starts_with('/') => format!("/root{rest}"),
                _ => f.path.clone(),
            };
            if crate::rules::credentials::classify(&as_listed).is_some() {
                add(BehaviourKind::CredentialAccess, format!("{path} by {tool}"));
            } else if f.access == Access::Write
                && crate::rules::persistence::classify(&as_listed).is_some()
            {
                add(
                    BehaviourKind::PersistenceAccess,
                    format!("{path} by {tool}"),
                );
            }
        }
        for f in report.findings.iter().filter(|f| {
            f.rule == crate::finding::RuleId::OutlivedStep
                && f.step.as_ref().is_some_and(|s| s.id == step.step.id)
        }) {
            if let Some(exe) = f.process_chain.first().and_then(|l| l.exe.as_deref()) {
                add(BehaviourKind::OutlivedStep, shown_path(exe, &home));
            }
        }
        steps.entry(step.step.id.clone()).or_default().extend(set);
    }
    RunRecord {
        job: baseline_key(&report.job),
        run: report.job.key.clone(),
        run_id: report.job.run_id.clone(),
        ended: report
            .ended
            .clone()
            .unwrap_or_else(|| report.generated_at.clone()),
        steps,
        truncated,
    }
}

/// The runner user's home, as the job's credential paths start (the report's file accesses
/// name it; `~` keeps the item the same on runners whose users live elsewhere).
fn home_of(report: &Report) -> Option<String> {
    report
        .steps
        .iter()
        .flat_map(|s| &s.file_accesses)
        .find_map(|f| {
            let rest = f.path.strip_prefix("/home/")?;
            let user = rest.split('/').next()?;
            Some(format!("/home/{user}"))
        })
        .or_else(|| {
            report
                .steps
                .iter()
                .flat_map(|s| &s.file_accesses)
                .any(|f| f.path.starts_with("/root/"))
                .then(|| "/root".to_string())
        })
}

/// A path as the baseline keeps it: generalised, the home as `~`, the workspace as itself (the
/// runner's workspace is the same directory on every run of a job on one runner).
fn shown_path(path: &str, home: &Option<String>) -> String {
    let path = match home {
        Some(h) => match path.strip_prefix(h.as_str()) {
            Some(rest) if rest.starts_with('/') => format!("~{rest}"),
            _ => path.to_string(),
        },
        None => path.to_string(),
    };
    generalise_path(&path)
}

/// The registrable domain of a name (`registry.npmjs.org` → `npmjs.org`),
/// or the name itself when the public suffix list does not know its suffix.
pub fn zone_of(name: &str) -> Option<String> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    // Reverse lookups name the addresses a run met, which differ from run to run.
    if name.is_empty() || name.parse::<std::net::IpAddr>().is_ok() || name.ends_with(".arpa") {
        return None;
    }
    Some(psl::domain_str(&name).map(str::to_string).unwrap_or(name))
}

fn bounded(mut item: String) -> String {
    if item.len() > MAX_ITEM_BYTES {
        let mut end = MAX_ITEM_BYTES;
        while !item.is_char_boundary(end) {
            end -= 1;
        }
        item.truncate(end);
        item.push('…');
    }
    item
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_same_for_every_run_of_a_job_and_differs_between_jobs() {
        let mut a = JobIdentity::bare("github", "github/acme/app/1/1/build".into(), "build".into());
        a.repository = Some("acme/app".into());
        a.workflow = Some("CI".into());
        a.run_id = Some("1".into());
        let mut b = a.clone();
        b.key = "github/acme/app/2/1/build".into();
        b.run_id = Some("2".into());
        assert_eq!(baseline_key(&a), "github:acme/app/CI/build");
        assert_eq!(baseline_key(&a), baseline_key(&b));
        b.name = "test".into();
        assert_ne!(baseline_key(&a), baseline_key(&b));
    }

    #[test]
    fn items_are_generalised_and_bounded() {
        assert_eq!(zone_of("registry.npmjs.org").as_deref(), Some("npmjs.org"));
        assert_eq!(zone_of("10.0.0.1"), None);
        assert_eq!(zone_of("1.0.0.127.in-addr.arpa"), None);
        let home = Some("/home/runner".to_string());
        assert_eq!(shown_path("/home/runner/.npmrc", &home), "~/.npmrc");
        assert_eq!(
            shown_path("/tmp/tmpk2j4x8ab/run.sh", &home),
            generalise_path("/tmp/tmpk2j4x8ab/run.sh")
        );
        assert!(shown_path("/tmp/tmpk2j4x8ab/run.sh", &home).contains('*'));
        let long = bounded("é".repeat(600));
        assert!(long.len() <= MAX_ITEM_BYTES + '…'.len_utf8() && long.ends_with('…'));
        assert_eq!(
            Behaviour::parse("destination:tcp a.example:443"),
            Some(Behaviour {
                kind: BehaviourKind::Destination,
                item: "tcp a.example:443".into()
            })
        );
        assert_eq!(Behaviour::parse("nonsense:x"), None);
    }
}
