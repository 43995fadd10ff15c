//! Baselines across runs: what a job usually does, per job and step, and what a run did that
//! its earlier runs never did (`new-behaviour`), even where the profile allows it.
//!
//! The pipeline's last stage for a job: its report becomes a [`behaviour::RunRecord`] (what it
//! did, generalised, never secrets), the record is compared with the job's baseline
//! ([`compare`], pure) and recorded in the store ([`store`]: SQLite on one runner, PostgreSQL for
//! a fleet) by a thread of its own ([`service`]), runs waiting on disk while the store is away
//! ([`pending`]). `monitor baseline` ([`cli`]) reads, edits and exports what is kept.

use serde::{Deserialize, Serialize};

pub mod behaviour;
pub mod cli;
pub mod compare;
pub mod pending;
pub mod postgres;
pub mod service;
pub mod sqlite;
pub mod state;
pub mod store;

pub use compare::StepComparison;
pub use service::{Baseline, BaselineMetrics, BaselineOptions};
pub use state::{BaselineState, Thresholds};

/// The store when neither flag nor configuration names one.
pub const DEFAULT_STORE: &str = "/var/lib/monitor/baseline.db";
/// Where runs wait for the store, by default.
pub const DEFAULT_PENDING_DIR: &str = "/var/lib/monitor/baseline-pending";

/// The configuration's `baseline:` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineConfig {
    /// False: no baseline is kept or compared.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A SQLite file (`sqlite://` optional) or a `postgres://` URL.
    #[serde(default)]
    pub store: Option<String>,
    #[serde(default)]
    pub pending_dir: Option<std::path::PathBuf>,
    #[serde(default)]
    pub learning_runs: Option<u32>,
    #[serde(default)]
    pub stable_after: Option<u32>,
    #[serde(default)]
    pub unstable_window: Option<u32>,
}

fn yes() -> bool {
    true
}

impl BaselineConfig {
    pub fn thresholds(&self) -> Thresholds {
        let d = Thresholds::default();
        Thresholds {
            learning_runs: self.learning_runs.unwrap_or(d.learning_runs),
            stable_after: self.stable_after.unwrap_or(d.stable_after),
            unstable_window: self.unstable_window.unwrap_or(d.unstable_window),
        }
    }
}

/// What the run was compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComparedWith {
    /// The store's baseline as it was when the job ended.
    Store,
    /// The agent's own copy (the store could not be read).
    Copy,
    /// Nothing: no baseline could be read.
    Nothing,
}

/// What became of the run's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recording {
    Recorded,
    /// Kept on disk, sent when the store answers.
    Pending,
    NotRecorded,
}

/// The report's `baseline` section: the job's baseline before this run, and what each step did
/// that it had not seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineReport {
    /// The baseline's job (`github:acme/app/CI/build`).
    pub job: String,
    /// `sqlite` or `postgres`.
    pub store: String,
    /// The job's baseline state before this run; absent when it was not compared.
    pub state: Option<BaselineState>,
    /// Runs recorded before this one.
    pub runs: u64,
    pub compared_with: ComparedWith,
    pub recorded: Recording,
    /// Why it was not compared or not recorded, when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub steps: Vec<StepComparison>,
}
