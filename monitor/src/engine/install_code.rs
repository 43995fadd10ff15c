//! Install-time code, reported once per step and ecosystem: a step that installs 40
//! dependencies with build scripts gets one `lifecycle-hook` finding listing them (with their
//! hook names), not 40. Hook code is still judged one process at a time: whatever it does
//! (credential reads, connections, downloads run) is its own finding at once, raised to
//! critical, and the step's install-code finding is raised with it and names the package.
//!
//! The finding is written when the step has ended (after the same grace as `outlived-step`),
//! when its job ends, or at the end of input, whichever comes first.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::{
    emit::{Place, Raw, Trigger},
    Engine, STEP_GRACE_NS,
};
use crate::{
    event::Event,
    finding::{ChainLink, Finding, RuleId, Severity},
    process_tree::ProcessKey,
    profile::{Allowance, Ecosystem},
};

/// Packages listed in one finding; past it they are counted.
const MAX_PACKAGES_PER_BATCH: usize = 500;

/// Install-time code one step ran for one ecosystem, waiting for the step to end.
pub(super) struct Batch {
    job: usize,
    step: usize,
    ecosystem: Ecosystem,
    /// The first hook's: where the finding points.
    first_hook: usize,
    chain: Vec<ChainLink>,
    event: u64,
    time: String,
    ts_ns: u64,
    packages: BTreeMap<String, BatchPackage>,
    /// Packages past `MAX_PACKAGES_PER_BATCH`.
    more: u64,
}

#[derive(Default)]
struct BatchPackage {
    version: Option<String>,
    /// Hook names (`postinstall`; PEP 517's `get_requires_for_build_wheel`, `build_wheel`...:
    /// one package, one entry).
    scripts: BTreeSet<String>,
    managers: BTreeSet<String>,
    hooks: Vec<usize>,
}

impl Batch {
    pub(super) fn job(&self) -> usize {
        self.job
    }

    pub(super) fn set_job(&mut self, job: usize) {
        self.job = job;
    }

    /// The hooks it lists.
    pub(super) fn hooks(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(self.first_hook)
            .chain(self.packages.values().flat_map(|p| p.hooks.iter().copied()))
    }
}

impl Engine {
    /// Notes that hook `hook` (not allowed by the profile) started in the event's process.
    pub(super) fn note_install_code(&mut self, hook: usize, e: &Event, key: ProcessKey) {
        let Some(p) = self.procs.get(&key) else {
            return;
        };
        let (job, step) = (p.job, p.step);
        let h = self.hooks[&hook].hook.clone();
        let index = match self
            .batches
            .iter()
            .position(|b| b.job == job && b.step == step && b.ecosystem == h.ecosystem)
        {
            Some(i) => i,
            None => {
                let chain = self.chain(e, key);
                self.batches.push(Batch {
                    job,
                    step,
                    ecosystem: h.ecosystem,
                    first_hook: hook,
                    chain,
                    event: e.seq,
                    time: e.time.clone(),
                    ts_ns: e.ts_ns,
                    packages: BTreeMap::new(),
                    more: 0,
                });
                self.batches.len() - 1
            }
        };
        let batch = &mut self.batches[index];
        if !batch.packages.contains_key(&h.package)
            && batch.packages.len() >= MAX_PACKAGES_PER_BATCH
        {
            batch.more += 1;
            return;
        }
        let entry = batch.packages.entry(h.package.clone()).or_default();
        if entry.version.is_none() {
            entry.version = h.version.clone();
        }
        entry.scripts.insert(h.script.clone());
        entry.managers.insert(h.manager.clone());
        entry.hooks.push(hook);
    }

    /// Writes the batches that are due: their step ended more than the grace ago, their job
    /// ended (`job`), or input is over (`now_ns` at its maximum).
    pub(super) fn flush_install_code(&mut self, out: &mut Vec<Finding>, ended_job: Option<usize>) {
        let now = self.now_ns;
        let due = |engine: &Engine, b: &Batch| {
            now == u64::MAX
                || ended_job == Some(b.job)
                || engine.jobs[b.job].ended_ns.is_some()
                || engine.jobs[b.job].steps.get(b.step).is_some_and(|s| {
                    s.ended
                        .as_ref()
                        .is_some_and(|(t, _)| now >= t.saturating_add(STEP_GRACE_NS))
                })
        };
        let mut i = 0;
        while i < self.batches.len() {
            if due(self, &self.batches[i]) {
                let batch = self.batches.swap_remove(i);
                self.emit_install_code(out, batch);
            } else {
                i += 1;
            }
        }
    }

    fn emit_install_code(&mut self, out: &mut Vec<Finding>, batch: Batch) {
        let configured = self
            .rules_of(batch.job, batch.step)
            .filter_map(|r| r.lifecycle.severity)
            .max()
            .unwrap_or(RuleId::LifecycleHook.default_severity());
        let mut acted: Vec<(String, Vec<RuleId>)> = Vec::new();
        let packages: Vec<serde_json::Value> = batch
            .packages
            .iter()
            .map(|(name, p)| {
                let rules: BTreeSet<RuleId> = p
                    .hooks
                    .iter()
                    .flat_map(|&h| self.hooks[&h].acted.iter().copied())
                    .collect();
                if !rules.is_empty() {
                    acted.push((name.clone(), rules.iter().copied().collect()));
                }
                json!({
                    "package": name,
                    "version": p.version,
                    "scripts": p.scripts,
                    "managers": p.managers,
                    "findings": rules,
                })
            })
            .collect();
        let listed: Vec<String> = batch
            .packages
            .iter()
            .map(|(name, p)| {
                let scripts: Vec<&str> = p.scripts.iter().map(String::as_str).collect();
                format!("{name} ({})", scripts.join(", "))
            })
            .collect();
        let count = batch.packages.len() as u64 + batch.more;
        let more = if batch.more > 0 {
            format!(" and {} more", batch.more)
        } else {
            String::new()
        };
        let mut summary = format!(
            "install-time code of {count} {} package{} ran in this step: {}{more}",
            batch.ecosystem.name(),
            if count == 1 { "" } else { "s" },
            listed.join("; ")
        );
        // What the code did decides how bad this is, not that it ran.
        let severity = if acted.is_empty() {
            configured
        } else {
            let names: Vec<&str> = acted.iter().map(|(n, _)| n.as_str()).collect();
            summary.push_str(&format!(
                "; the install code of {} did more than build (see its findings)",
                names.join(", ")
            ));
            Severity::Critical
        };
        let first = batch.packages.keys().next().cloned().unwrap_or_default();
        let raw = Raw::new(
            RuleId::LifecycleHook,
            summary,
            format!("{}:{}:{}", batch.ecosystem.name(), batch.ts_ns, first),
        )
        .severity(severity)
        .evidence(vec![
            ("ecosystem", json!(batch.ecosystem.name())),
            ("package", json!(first)),
            ("packages", json!(packages)),
            ("packages_not_listed", json!(batch.more)),
        ])
        .allowance(Allowance::Lifecycle {
            ecosystem: batch.ecosystem,
            packages: batch.packages.keys().cloned().collect(),
        });
        let place = Place {
            job: batch.job,
            step: batch.step,
            hook: Some(batch.first_hook),
        };
        let trigger = Trigger {
            events: vec![batch.event],
            time: &batch.time,
            ts_ns: batch.ts_ns,
        };
        self.emit(out, raw, place, batch.chain, trigger);
    }
}
