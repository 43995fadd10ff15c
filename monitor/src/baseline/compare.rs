//! A run against its job's baseline: what is new, per step, and the `new-behaviour` findings it
//! gives. Pure: the same snapshot and run give the same answer (replayable, unit-tested).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{
    behaviour::{Behaviour, RunRecord},
    state::{BaselineState, Thresholds},
};
use crate::{
    ci::{JobIdentity, StepIdentity},
    finding::{Finding, RuleId, Severity},
};

/// `new-behaviour` findings per step and run: past it the report lists the rest.
pub const MAX_FINDINGS_PER_STEP: usize = 20;
/// Past runs a snapshot carries (the states need the last few only; the count is separate).
pub const RECENT_RUNS: usize = 256;

/// When and how often a behaviour was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub first_seen: String,
    pub last_seen: String,
    pub runs: u64,
}

/// A past run: which steps it had, and how many new behaviours each brought.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastRun {
    pub run: String,
    #[serde(default)]
    pub run_id: Option<String>,
    pub ended: String,
    pub new_by_step: BTreeMap<String, u64>,
}

impl PastRun {
    pub fn brought_new(&self) -> bool {
        self.new_by_step.values().any(|n| *n > 0)
    }
}

/// A job's baseline as read from the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub job: String,
    /// Runs recorded.
    pub runs: u64,
    /// The latest of them (at most [`RECENT_RUNS`]), oldest first.
    pub recent: Vec<PastRun>,
    /// By step, what was seen.
    pub known: BTreeMap<String, BTreeMap<Behaviour, Seen>>,
}

impl Snapshot {
    pub fn job_state(&self, t: &Thresholds) -> BaselineState {
        // Runs before the recent ones were learnt from too: they count toward learning.
        let older = self.runs.saturating_sub(self.recent.len() as u64);
        let padding = std::iter::repeat_n(true, older.min(t.learning_runs as u64) as usize);
        t.state(padding.chain(self.recent.iter().map(PastRun::brought_new)))
    }

    /// A step's state, from the runs that had it; and how many did.
    pub fn step_state(&self, step: &str, t: &Thresholds) -> (BaselineState, u64) {
        let history: Vec<bool> = self
            .recent
            .iter()
            .filter_map(|r| r.new_by_step.get(step).map(|n| *n > 0))
            .collect();
        (t.state(history.iter().copied()), history.len() as u64)
    }

    /// The snapshot as it is once `run` is recorded (what a store gives afterwards): kept by the
    /// agent as its copy for when the store cannot be read.
    pub fn with_run(mut self, run: &RunRecord, new_by_step: &BTreeMap<String, u64>) -> Self {
        self.runs += 1;
        self.recent.push(PastRun {
            run: run.run.clone(),
            run_id: run.run_id.clone(),
            ended: run.ended.clone(),
            new_by_step: new_by_step.clone(),
        });
        if self.recent.len() > RECENT_RUNS {
            let extra = self.recent.len() - RECENT_RUNS;
            self.recent.drain(..extra);
        }
        for (step, behaviours) in &run.steps {
            let known = self.known.entry(step.clone()).or_default();
            for b in behaviours {
                known
                    .entry(b.clone())
                    .and_modify(|s| {
                        s.last_seen.clone_from(&run.ended);
                        s.runs += 1;
                    })
                    .or_insert_with(|| Seen {
                        first_seen: run.ended.clone(),
                        last_seen: run.ended.clone(),
                        runs: 1,
                    });
            }
        }
        self
    }
}

/// What one step did that its baseline had not seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepComparison {
    pub step: String,
    /// The state findings were judged by: the step's own, or the job's for a step the baseline
    /// has not seen enough of while the job has.
    pub state: BaselineState,
    /// Runs of the job that had this step.
    pub runs: u64,
    pub new: Vec<Behaviour>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comparison {
    pub job_state: BaselineState,
    pub job_runs: u64,
    pub steps: Vec<StepComparison>,
}

impl Comparison {
    /// New behaviours per step, as the store records them with the run.
    pub fn new_by_step(&self, run: &RunRecord) -> BTreeMap<String, u64> {
        run.steps
            .keys()
            .map(|step| {
                let n = self
                    .steps
                    .iter()
                    .find(|s| &s.step == step)
                    .map_or(0, |s| s.new.len() as u64);
                (step.clone(), n)
            })
            .collect()
    }
}

/// Compares a run with the baseline it had before it.
pub fn compare(snapshot: &Snapshot, run: &RunRecord, t: &Thresholds) -> Comparison {
    let job_state = snapshot.job_state(t);
    let empty = BTreeMap::new();
    let steps = run
        .steps
        .iter()
        .map(|(step, behaviours)| {
            let known = snapshot.known.get(step).unwrap_or(&empty);
            let new: Vec<Behaviour> = behaviours
                .iter()
                .filter(|b| !known.contains_key(b))
                .cloned()
                .collect();
            let (own, runs) = snapshot.step_state(step, t);
            // A step new to a job whose baseline is settled is judged as the job is: its
            // whole behaviour is new, and waiting for it to learn would let it run unjudged.
            let state = if own == BaselineState::Learning && job_state != BaselineState::Learning {
                job_state
            } else {
                own
            };
            StepComparison {
                step: step.clone(),
                state,
                runs,
                new,
            }
        })
        .collect();
    Comparison {
        job_state,
        job_runs: snapshot.runs,
        steps,
    }
}

/// The `new-behaviour` findings of a comparison: none while a step's baseline learns; on a
/// stable one a new destination, DNS zone, credential or persistence access is `high`, anything else
/// `medium`; on an unstable one everything is `medium`. At most [`MAX_FINDINGS_PER_STEP`] per
/// step, the weightiest first. Ids are left 0 for the engine to number.
pub fn findings(
    comparison: &Comparison,
    job: &JobIdentity,
    steps: &[StepIdentity],
    time: &str,
    ts_ns: u64,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for step in &comparison.steps {
        if step.state == BaselineState::Learning || step.new.is_empty() {
            continue;
        }
        let mut new: Vec<&Behaviour> = step.new.iter().collect();
        new.sort_by_key(|b| (!b.kind.weighs_most(), b.kind, b.item.clone()));
        let identity = steps
            .iter()
            .find(|s| s.id == step.step)
            .cloned()
            .unwrap_or(StepIdentity {
                id: step.step.clone(),
                action: None,
            });
        let total = new.len();
        for b in new.into_iter().take(MAX_FINDINGS_PER_STEP) {
            let severity = if step.state == BaselineState::Stable && b.kind.weighs_most() {
                Severity::High
            } else {
                Severity::Medium
            };
            let mut evidence = BTreeMap::new();
            evidence.insert("kind".into(), b.kind.as_str().into());
            evidence.insert("item".into(), b.item.clone().into());
            evidence.insert("baseline_state".into(), step.state.as_str().into());
            evidence.insert("baseline_runs".into(), step.runs.into());
            evidence.insert("new_in_step".into(), (total as u64).into());
            out.push(Finding {
                id: 0,
                rule: RuleId::NewBehaviour,
                severity,
                summary: format!(
                    "step {} did what none of its {} recorded run(s) did ({} baseline): {} {}",
                    step.step, step.runs, step.state, b.kind, b.item
                ),
                time: time.to_string(),
                ts_ns,
                job: Some(job.clone()),
                step: Some(identity.clone()),
                process_chain: Vec::new(),
                events: Vec::new(),
                evidence,
                hook: None,
                profile_clause: RuleId::NewBehaviour.clause().to_string(),
                allowance: None,
                container: None,
                response: None,
            });
        }
    }
    out
}

/// Steps of a run that brought something new (for the metrics' counts by kind).
pub fn new_kinds(comparison: &Comparison) -> BTreeMap<&'static str, u64> {
    let mut counts = BTreeMap::new();
    for b in comparison.steps.iter().flat_map(|s| &s.new) {
        *counts.entry(b.kind.as_str()).or_default() += 1;
    }
    counts
}

/// The distinct steps of a snapshot (for `status`).
pub fn steps_of(snapshot: &Snapshot) -> BTreeSet<String> {
    let mut steps: BTreeSet<String> = snapshot.known.keys().cloned().collect();
    for r in &snapshot.recent {
        steps.extend(r.new_by_step.keys().cloned());
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::behaviour::BehaviourKind;

    fn b(kind: BehaviourKind, item: &str) -> Behaviour {
        Behaviour {
            kind,
            item: item.into(),
        }
    }

    fn run(n: u32, fetch_extra: Option<Behaviour>) -> RunRecord {
        let mut steps = BTreeMap::new();
        steps.insert(
            "install".to_string(),
            BTreeSet::from([
                b(BehaviourKind::Destination, "tcp registry.npmjs.org:443"),
                b(BehaviourKind::Executable, "/usr/bin/node"),
            ]),
        );
        let mut fetch = BTreeSet::from([b(BehaviourKind::Executable, "/usr/bin/curl")]);
        fetch.extend(fetch_extra);
        steps.insert("fetch".to_string(), fetch);
        RunRecord {
            job: "github:acme/app/CI/build".into(),
            run: format!("run-{n}"),
            run_id: Some(n.to_string()),
            ended: format!("2026-12-01T00:00:0{n}Z"),
            steps,
            truncated: BTreeSet::new(),
        }
    }

    fn job() -> JobIdentity {
        JobIdentity::bare("github", "k".into(), "build".into())
    }

    #[test]
    fn nothing_while_learning_then_a_new_destination_on_a_stable_baseline_is_high_in_its_step_only()
    {
        let t = Thresholds {
            learning_runs: 2,
            stable_after: 2,
            unstable_window: 2,
        };
        let mut snap = Snapshot::default();
        for n in 1..=3 {
            let r = run(n, None);
            let c = compare(&snap, &r, &t);
            assert!(
                findings(&c, &job(), &[], "t", 0).is_empty(),
                "run {n}: {c:?}"
            );
            snap = snap.with_run(&r, &c.new_by_step(&r));
        }
        assert_eq!(snap.job_state(&t), BaselineState::Stable);
        let evil = b(BehaviourKind::Destination, "tcp webhook.example:443");
        let r = run(4, Some(evil.clone()));
        let c = compare(&snap, &r, &t);
        let f = findings(&c, &job(), &[], "t", 0);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].rule, RuleId::NewBehaviour);
        assert_eq!(f[0].severity, Severity::High);
        assert_eq!(f[0].step.as_ref().unwrap().id, "fetch");
        assert_eq!(f[0].evidence["item"], "tcp webhook.example:443");
        // Recorded, the baseline is unstable and the same destination is no longer new.
        snap = snap.with_run(&r, &c.new_by_step(&r));
        assert_eq!(snap.job_state(&t), BaselineState::Unstable);
        let again = compare(&snap, &run(5, Some(evil)), &t);
        assert!(again.steps.iter().all(|s| s.new.is_empty()));
        // Something else new on the unstable baseline: medium.
        let other = compare(
            &snap,
            &run(
                5,
                Some(b(BehaviourKind::Destination, "tcp other.example:443")),
            ),
            &t,
        );
        assert_eq!(
            findings(&other, &job(), &[], "t", 0)[0].severity,
            Severity::Medium
        );
    }

    #[test]
    fn a_new_executable_is_medium_even_on_a_stable_baseline_and_findings_are_bounded() {
        let t = Thresholds {
            learning_runs: 1,
            stable_after: 1,
            unstable_window: 1,
        };
        let r = run(1, None);
        let snap = Snapshot::default().with_run(&r, &BTreeMap::new());
        assert_eq!(snap.job_state(&t), BaselineState::Stable);
        let mut r2 = run(2, None);
        for i in 0..50 {
            r2.steps
                .get_mut("fetch")
                .unwrap()
                .insert(b(BehaviourKind::Executable, &format!("/opt/x{i}")));
        }
        let f = findings(&compare(&snap, &r2, &t), &job(), &[], "t", 0);
        assert_eq!(f.len(), MAX_FINDINGS_PER_STEP);
        assert!(f.iter().all(|f| f.severity == Severity::Medium));
        assert_eq!(f[0].evidence["new_in_step"], 50);
    }

    #[test]
    fn a_step_new_to_a_settled_job_is_judged_as_the_job_is() {
        let t = Thresholds {
            learning_runs: 1,
            stable_after: 1,
            unstable_window: 1,
        };
        let r = run(1, None);
        let snap = Snapshot::default().with_run(&r, &BTreeMap::new());
        let mut r2 = run(2, None);
        r2.steps.insert(
            "added".into(),
            BTreeSet::from([b(BehaviourKind::CredentialAccess, "~/.npmrc by node")]),
        );
        let f = findings(&compare(&snap, &r2, &t), &job(), &[], "t", 0);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::High);
        assert_eq!(f[0].step.as_ref().unwrap().id, "added");
    }
}
