//! Reading recorded event logs (the JSON lines `monitor run --events` writes) for replay,
//! learning and reports. A line that is not a valid event is counted and reported with its file
//! and line number; it never stops the rest from being read.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use crate::{
    engine::{Engine, EngineConfig},
    event::Event,
    finding::Finding,
    profile::Profile,
};

/// Longest line read; an event is a few KiB at most (argv and paths are bounded).
pub const MAX_LINE: usize = 1 << 20;

#[derive(Debug, Default)]
pub struct ReadStats {
    pub events: u64,
    pub bad_lines: u64,
    /// The first few bad lines, as `file:line: problem`.
    pub first_errors: Vec<String>,
}

impl ReadStats {
    fn bad(&mut self, file: &Path, line: usize, problem: impl std::fmt::Display) {
        self.bad_lines += 1;
        if self.first_errors.len() < 5 {
            self.first_errors
                .push(format!("{}:{line}: {problem}", file.display()));
        }
    }

    pub fn report(&self) -> String {
        let mut text = format!(
            "{} events read, {} lines skipped",
            self.events, self.bad_lines
        );
        for e in &self.first_errors {
            text.push_str(&format!("\n  {e}"));
        }
        text
    }
}

/// Calls `each` for every event of `files`, in order.
pub fn for_each_event(
    files: &[PathBuf],
    stats: &mut ReadStats,
    mut each: impl FnMut(&Event),
) -> anyhow::Result<()> {
    for file in files {
        let reader = BufReader::new(
            std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
        );
        let lines = reader.split(b'\n');
        let mut number = 0;
        for line in lines {
            number += 1;
            let line = line.with_context(|| format!("reading {}", file.display()))?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if line.len() > MAX_LINE {
                stats.bad(file, number, format!("line longer than {MAX_LINE} bytes"));
                continue;
            }
            match serde_json::from_slice::<Event>(&line) {
                Ok(event) => {
                    stats.events += 1;
                    each(&event);
                }
                Err(e) => stats.bad(file, number, e),
            }
        }
    }
    Ok(())
}

/// Runs the engine over recorded events: the same findings the live agent would have written.
pub fn replay(
    files: &[PathBuf],
    profile: Profile,
    config: EngineConfig,
    stats: &mut ReadStats,
    mut each: impl FnMut(Finding),
) -> anyhow::Result<()> {
    let mut engine = Engine::new(profile, config);
    for_each_event(files, stats, |event| {
        for f in engine.on_event(event) {
            each(f);
        }
    })?;
    for f in engine.finish() {
        each(f);
    }
    Ok(())
}

/// Reports of the recorded jobs that `select` picks, rebuilt from the logs.
pub fn reports(
    files: &[PathBuf],
    profile: Profile,
    config: EngineConfig,
    stats: &mut ReadStats,
    select: impl Fn(&crate::ci::JobIdentity) -> bool,
) -> anyhow::Result<Vec<crate::report::Report>> {
    let mut judge = crate::judge::Judge::new(Engine::new(profile, config));
    for_each_event(files, stats, |event| {
        judge.on_event(event);
    })?;
    judge.tick(u64::MAX);
    let now = crate::report::now_rfc3339();
    let keys = judge.recorder.job_keys();
    Ok(keys
        .iter()
        .filter_map(|k| judge.recorder.report(k, now.clone()))
        .filter(|r| select(&r.job))
        .collect())
}

/// What `learn` made of the recorded runs.
pub struct Learnt {
    pub profile: Profile,
    /// Each entry added, with the finding that called for it.
    pub added: Vec<(String, Finding)>,
    /// Findings no profile may allow (review them: the run was not clean).
    pub unallowable: Vec<Finding>,
}

/// A profile allowing everything the recorded runs of the jobs `select` picks did, on top of
/// `base`, as patterns that hold for the next run (`Profile::learn`).
pub fn learn(
    files: &[PathBuf],
    base: Profile,
    config: EngineConfig,
    stats: &mut ReadStats,
    select: impl Fn(&crate::ci::JobIdentity) -> bool,
) -> anyhow::Result<Learnt> {
    let mut learnt = Learnt {
        profile: base.clone(),
        added: Vec::new(),
        unallowable: Vec::new(),
    };
    replay(files, base, config, stats, |f| {
        if !f.job.as_ref().is_some_and(&select) {
            return;
        }
        match &f.allowance {
            Some(a) => {
                if let Some(entry) = learnt.profile.learn(a) {
                    learnt.added.push((entry, f));
                }
            }
            None => learnt.unallowable.push(f),
        }
    })?;
    Ok(learnt)
}

/// The machine's resolvers, for the engine's DNS allowance.
pub fn machine_engine_config() -> EngineConfig {
    EngineConfig {
        dns_resolvers: EngineConfig::resolvers_from(
            &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        ),
        agent_program: std::env::current_exe()
            .ok()
            .map(|p| p.to_string_lossy().into_owned()),
        still_running: None,
        exfil_services: Default::default(),
    }
}
