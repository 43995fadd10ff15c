//! Findings: what the engine reports, one JSON object per line (documented in docs/findings.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    ci::{JobIdentity, StepIdentity},
    profile::{Allowance, EgressRule},
    rules::lifecycle::Hook,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// A rule of the engine: its id (as written in findings and documented in docs/findings.md), its
/// usual severity and the part of the profile it enforces. A finding may raise or lower the
/// severity, or say more about the clause, when its facts call for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleId {
    LifecycleHook,
    CredentialRead,
    ProcessMemoryRead,
    AgentTampering,
    ProcessEnvironRead,
    UnresolvedSensitiveOpen,
    UnexpectedEgress,
    EgressBlockedAllowed,
    DnsExfiltration,
    CloudMetadata,
    PthExecuted,
    PersistenceWrite,
    ExecFromTemp,
    ExecOfJobWrittenFile,
    UnexpectedExecutable,
    OidcTokenRequest,
    PackagedSensitiveFile,
    OutlivedStep,
    FindingFlood,
    DefenceTampering,
    DnsForgedAnswer,
    RawSocket,
    CredentialRelinked,
    DownloadAndExecute,
    FilelessExec,
    ContainerEscapeRisk,
    KnownExfilService,
    RuntimeServiceCall,
    ActionTampered,
    SourceModified,
    SniMismatch,
    DescriptorSharing,
    NewBehaviour,
}

impl RuleId {
    pub const ALL: [RuleId; 33] = [
        RuleId::LifecycleHook,
        RuleId::CredentialRead,
        RuleId::ProcessMemoryRead,
        RuleId::AgentTampering,
        RuleId::ProcessEnvironRead,
        RuleId::UnresolvedSensitiveOpen,
        RuleId::UnexpectedEgress,
        RuleId::EgressBlockedAllowed,
        RuleId::DnsExfiltration,
        RuleId::CloudMetadata,
        RuleId::PthExecuted,
        RuleId::PersistenceWrite,
        RuleId::ExecFromTemp,
        RuleId::ExecOfJobWrittenFile,
        RuleId::UnexpectedExecutable,
        RuleId::OidcTokenRequest,
        RuleId::PackagedSensitiveFile,
        RuleId::OutlivedStep,
        RuleId::FindingFlood,
        RuleId::DefenceTampering,
        RuleId::DnsForgedAnswer,
        RuleId::RawSocket,
        RuleId::CredentialRelinked,
        RuleId::DownloadAndExecute,
        RuleId::FilelessExec,
        RuleId::ContainerEscapeRisk,
        RuleId::KnownExfilService,
        RuleId::RuntimeServiceCall,
        RuleId::ActionTampered,
        RuleId::SourceModified,
        RuleId::SniMismatch,
        RuleId::DescriptorSharing,
        RuleId::NewBehaviour,
    ];

    /// The id as findings, metrics and docs/findings.md spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleId::LifecycleHook => "lifecycle-hook",
            RuleId::CredentialRead => "credential-read",
            RuleId::ProcessMemoryRead => "process-memory-read",
            RuleId::AgentTampering => "agent-tampering",
            RuleId::ProcessEnvironRead => "process-environ-read",
            RuleId::UnresolvedSensitiveOpen => "unresolved-sensitive-open",
            RuleId::UnexpectedEgress => "unexpected-egress",
            RuleId::EgressBlockedAllowed => "egress-blocked-allowed",
            RuleId::DnsExfiltration => "dns-exfiltration",
            RuleId::CloudMetadata => "cloud-metadata",
            RuleId::PthExecuted => "pth-executed",
            RuleId::PersistenceWrite => "persistence-write",
            RuleId::ExecFromTemp => "exec-from-temp",
            RuleId::ExecOfJobWrittenFile => "exec-of-job-written-file",
            RuleId::UnexpectedExecutable => "unexpected-executable",
            RuleId::OidcTokenRequest => "oidc-token-request",
            RuleId::PackagedSensitiveFile => "packaged-sensitive-file",
            RuleId::OutlivedStep => "outlived-step",
            RuleId::FindingFlood => "finding-flood",
            RuleId::DefenceTampering => "defence-tampering",
            RuleId::DnsForgedAnswer => "dns-forged-answer",
            RuleId::RawSocket => "raw-socket",
            RuleId::CredentialRelinked => "credential-relinked",
            RuleId::DownloadAndExecute => "download-and-execute",
            RuleId::FilelessExec => "fileless-exec",
            RuleId::ContainerEscapeRisk => "container-escape-risk",
            RuleId::KnownExfilService => "known-exfil-service",
            RuleId::RuntimeServiceCall => "runtime-service-call",
            RuleId::ActionTampered => "action-tampered",
            RuleId::SourceModified => "source-modified",
            RuleId::SniMismatch => "sni-mismatch",
            RuleId::DescriptorSharing => "descriptor-sharing",
            RuleId::NewBehaviour => "new-behaviour",
        }
    }

    /// The severity of the rule's findings unless their facts say otherwise (docs/findings.md
    /// lists it first in the rule's row). Inside install-time code every rule but
    /// `lifecycle-hook` is critical.
    pub fn default_severity(self) -> Severity {
        match self {
            RuleId::UnresolvedSensitiveOpen
            | RuleId::ExecOfJobWrittenFile
            | RuleId::UnexpectedExecutable
            | RuleId::OutlivedStep
            | RuleId::SourceModified
            | RuleId::NewBehaviour => Severity::Medium,
            RuleId::EgressBlockedAllowed | RuleId::LifecycleHook => Severity::Low,
            RuleId::ProcessMemoryRead
            | RuleId::AgentTampering
            | RuleId::CloudMetadata
            | RuleId::KnownExfilService => Severity::Critical,
            RuleId::CredentialRead
            | RuleId::ProcessEnvironRead
            | RuleId::UnexpectedEgress
            | RuleId::DnsExfiltration
            | RuleId::PthExecuted
            | RuleId::PersistenceWrite
            | RuleId::ExecFromTemp
            | RuleId::OidcTokenRequest
            | RuleId::PackagedSensitiveFile
            | RuleId::FindingFlood
            | RuleId::DefenceTampering
            | RuleId::DnsForgedAnswer
            | RuleId::RawSocket
            | RuleId::CredentialRelinked
            | RuleId::DownloadAndExecute
            | RuleId::FilelessExec
            | RuleId::ContainerEscapeRisk
            | RuleId::RuntimeServiceCall
            | RuleId::ActionTampered
            | RuleId::SniMismatch
            | RuleId::DescriptorSharing => Severity::High,
        }
    }

    /// The profile clause a finding of this rule breaks, unless it names a narrower one.
    pub fn clause(self) -> &'static str {
        match self {
            RuleId::LifecycleHook => {
                "lifecycle.allow: the package is not allowed to run code at install time"
            }
            RuleId::CredentialRead => "credentials.allow: no exception lets this process read it",
            RuleId::ProcessMemoryRead | RuleId::ProcessEnvironRead => {
                "credentials: other processes' memory and environment hold the job's secrets"
            }
            RuleId::AgentTampering => "nothing in a job may signal the monitor",
            RuleId::UnresolvedSensitiveOpen => {
                "credentials: a path that cannot be resolved cannot be allowed (fail closed)"
            }
            RuleId::UnexpectedEgress => "egress.allow: no entry matches this domain or address",
            RuleId::EgressBlockedAllowed => "egress.mode: block allows a domain's addresses as its DNS answers arrive; this one was not seen in time",
            RuleId::DnsExfiltration => {
                "DNS names are not a channel for data (long or encoded labels)"
            }
            RuleId::CloudMetadata => {
                "egress.allow: metadata endpoints are allowed only by their exact address"
            }
            RuleId::PthExecuted => {
                "lifecycle: .pth files run at every interpreter start; only known ones are expected"
            }
            RuleId::PersistenceWrite => {
                "persistence.allow: writes to places that run code later must be expected"
            }
            RuleId::ExecFromTemp => "executables.allow: programs in temporary directories are downloads until allowed",
            RuleId::ExecOfJobWrittenFile => "executables.allow: a program written during the job, outside the places package managers and builds put programs, is a download until allowed",
            RuleId::UnexpectedExecutable => "executables.allow",
            RuleId::OidcTokenRequest => "oidc.allow: only steps given `oidc: {allow: true}` under `steps:` may request identity tokens",
            RuleId::PackagedSensitiveFile => "packaging.allow: a package should not ship source maps, .env files or keys unless listed",
            RuleId::OutlivedStep => {
                "processes.background: only listed programs may outlive their step"
            }
            RuleId::RawSocket => "egress: a raw or packet socket sends past every address and port rule",
            RuleId::FilelessExec => {
                "executables: a program with no file cannot be checked against any list"
            }
            RuleId::DescriptorSharing => "a descriptor is the process's that opened it: no job process takes another's (pidfd_getfd), and where kills are in force none shares its table with another (a kill ends only the opener)",
            RuleId::SniMismatch => "egress.sni_aliases: a connection asks for the name its address was resolved from, unless the profile lists the pair",
            RuleId::SourceModified => "sources.allow: after the checkout, only git, package managers (their manifests and locks) and the generators and formatters listed write the repository's tracked files",
            RuleId::ActionTampered => "persistence.allow: only the runner writes its downloaded actions, and only setup actions its tool cache",
            RuleId::RuntimeServiceCall => "runtime_services: only the cache, artifact and setup actions (and steps given `runtime_services: {allow: true}`) call the CI's cache and artifact services",
            RuleId::KnownExfilService => "egress.allow: a service that takes data from anyone is allowed only by its own name (a network or a wider domain does not allow it)",
            RuleId::ContainerEscapeRisk => "containers.allow: a container with the host's namespaces, root, daemon socket or privileges is root on the host; only listed images may have them",
            RuleId::DownloadAndExecute => {
                "egress: code fetched over the network and run unseen by any file rule"
            }
            RuleId::CredentialRelinked => {
                "credentials: a credential under another name is read past every path rule"
            }
            RuleId::DnsForgedAnswer => "a DNS answer is evidence of where a name points only when it comes from where the question went",
            RuleId::DefenceTampering => "a job does not switch off the host's logging, auditing, hardening or module policy",
            RuleId::NewBehaviour => "baseline: none of this job's recorded runs did this in this step (`monitor baseline forget` removes what should not be kept; the profile may allow it and still the change is news)",
            RuleId::FindingFlood => "a job raising thousands of findings buries the ones that matter and can push earlier findings out of rotated logs: past the bound they are counted, not written",
        }
    }
}

impl std::fmt::Display for RuleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for RuleId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// What the kernel must be told to act for a job (made only when the profile's egress mode is
/// `block` or it has kill responses): the engine's decision, which `enforce` writes to the
/// kernel's maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enforcement {
    /// Judge this process's connections (and its descendants'), or with `anchor_only` only its
    /// descendants' (a runner's Worker, whose own traffic is the runner's), against `rules`: its
    /// job's profile, job level and every step's (the kernel does not know steps).
    Process {
        job: String,
        pid: u32,
        anchor_only: bool,
        rules: Vec<EgressRule>,
        /// `POLICY_*` bits for the job.
        policy: u32,
    },
    /// This process runs a dependency's install-time code (the kernel found npm's itself).
    InstallCode {
        pid: u32,
    },
    JobEnded {
        key: String,
    },
}

/// One process of the chain that led to a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainLink {
    pub pid: u32,
    pub start_ticks: u64,
    pub comm: String,
    pub exe: Option<String>,
    /// Already redacted.
    pub argv: crate::event::Argv,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Position in this engine's findings, from 1.
    pub id: u64,
    /// `lifecycle-hook`, `credential-read`, `unexpected-egress`, ... (docs/findings.md).
    pub rule: RuleId,
    pub severity: Severity,
    /// One sentence a person can act on.
    pub summary: String,
    /// Wall-clock time of the triggering event.
    pub time: String,
    pub ts_ns: u64,
    pub job: Option<JobIdentity>,
    pub step: Option<StepIdentity>,
    /// The process that acted, then its ancestors up to the step's root process.
    pub process_chain: Vec<ChainLink>,
    /// `seq` of the triggering event(s) in the event stream.
    pub events: Vec<u64>,
    /// The facts: path, address, port, package, ...
    pub evidence: BTreeMap<String, serde_json::Value>,
    /// The install-time code this happened in, if any (it raises the severity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<Hook>,
    /// Which part of the profile this breaks, and why.
    pub profile_clause: String,
    /// What a profile would have to allow for this not to be a finding; absent when nothing
    /// may allow it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowance: Option<Allowance>,
    /// The container the acting process ran in (or the finding is about).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<FindingContainer>,
    /// What the kernel did to the acting process on its own (a profile's `responses`):
    /// `killed`, `would_kill` (rehearsed) or `kill_failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<crate::event::KernelResponse>,
}

/// A container, as a finding names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingContainer {
    /// The runtime's full id.
    pub id: String,
    /// Empty when the runtime had not described it yet.
    pub name: String,
    pub image: String,
}

/// A finding of `acme/app`'s job `build`, step `step`, as output tests need one.
#[cfg(test)]
pub(crate) fn sample_finding(step: &str, summary: &str, time: &str) -> Finding {
    let mut job = JobIdentity::bare("github", "github/acme/app/1/1/build".into(), "build".into());
    job.repository = Some("acme/app".into());
    Finding {
        id: 7,
        rule: RuleId::CredentialRead,
        severity: Severity::High,
        summary: summary.into(),
        time: time.into(),
        ts_ns: 0,
        job: Some(job),
        step: Some(StepIdentity {
            id: step.into(),
            action: None,
        }),
        process_chain: Vec::new(),
        events: Vec::new(),
        evidence: Default::default(),
        hook: None,
        profile_clause: String::new(),
        allowance: None,
        container: None,
        response: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules table of docs/findings.md: (rule id, severity column).
    fn documented_rules() -> Vec<(String, String)> {
        let doc = include_str!("../../docs/findings.md");
        let table = doc
            .split("## Rules")
            .nth(1)
            .expect("docs/findings.md has a Rules section");
        table
            .lines()
            .skip_while(|l| !l.starts_with("|---"))
            .skip(1)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (cells[1].trim_matches('`').to_string(), cells[2].to_string())
            })
            .collect()
    }

    #[test]
    fn every_rule_id_is_documented_with_its_default_severity_and_nothing_else_is() {
        let documented = documented_rules();
        for rule in RuleId::ALL {
            let Some((_, severity)) = documented.iter().find(|(id, _)| id == rule.as_str()) else {
                panic!("{rule} is not in docs/findings.md's rules table");
            };
            assert!(
                severity.starts_with(rule.default_severity().name()),
                "{rule}: docs say {severity:?}, the code's default is {}",
                rule.default_severity().name()
            );
            let json = serde_json::to_string(&rule).unwrap();
            assert_eq!(json, format!("\"{rule}\""));
            assert_eq!(serde_json::from_str::<RuleId>(&json).unwrap(), rule);
        }
        for (id, _) in &documented {
            assert!(
                RuleId::ALL.iter().any(|r| r.as_str() == id),
                "docs/findings.md documents {id}, which no rule raises"
            );
        }
        assert_eq!(
            documented.len(),
            RuleId::ALL.len(),
            "a rule is documented twice"
        );
    }
}
