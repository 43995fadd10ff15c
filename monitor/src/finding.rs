//! Findings: what the engine reports, one JSON object per line (documented in docs/findings.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    ci::{JobIdentity, StepIdentity},
    profile::Allowance,
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

/// One process of the chain that led to a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainLink {
    pub pid: u32,
    pub start_ticks: u64,
    pub comm: String,
    pub exe: Option<String>,
    /// Already redacted.
    pub argv: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Position in this engine's findings, from 1.
    pub id: u64,
    /// `lifecycle-hook`, `credential-read`, `unexpected-egress`, ... (docs/findings.md).
    pub rule: String,
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
}
