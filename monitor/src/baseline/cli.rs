//! `monitor baseline`: what the baselines hold (`status`, `show`), what a run brought
//! (`diff`), accepting or removing behaviours (`forget`), a tight profile from what is stable
//! (`export`), the store's consistency (`check`), and sending runs kept on disk (`import`).

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use super::{
    behaviour::{Behaviour, BehaviourKind, RunRecord},
    compare::{compare, steps_of},
    pending::Pending,
    state::{BaselineState, Thresholds},
    store::{self, Forget, Store},
    BaselineConfig, DEFAULT_STORE,
};
use crate::profile::{Allowance, Ecosystem, PathPattern, Profile};

#[derive(clap::Args)]
pub struct BaselineArgs {
    /// The store: a SQLite file or a postgres:// URL [default: the configuration's, else
    /// /var/lib/monitor/baseline.db].
    #[arg(long, global = true)]
    pub store: Option<String>,
    /// The agent's configuration file (its `baseline:` section: store and thresholds).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: BaselineCommand,
}

#[derive(clap::Subcommand)]
pub enum BaselineCommand {
    /// Jobs with a baseline, their runs and state; with JOB, each step's.
    Status { job: Option<String> },
    /// Every behaviour of a job's baseline, by step: first seen, last seen, runs.
    Show { job: String },
    /// What a run brought that the baseline had not seen (RUN: its key or its CI run id).
    Diff {
        job: String,
        #[arg(long)]
        run: String,
    },
    /// Remove behaviours from a job's baseline (they are new again at the next run); with
    /// neither --behaviour nor --kind nor --step, the whole baseline of the job.
    Forget {
        job: String,
        /// Only this step's.
        #[arg(long)]
        step: Option<String>,
        /// One behaviour, `kind:item` as `show` prints it (`destination:tcp example.com:443`).
        #[arg(long, conflicts_with = "kind")]
        behaviour: Option<String>,
        /// Every behaviour of this kind.
        #[arg(long)]
        kind: Option<String>,
    },
    /// Write a profile allowing what the job's baseline holds (the built-in profile plus its
    /// destinations, credential and persistence accesses by their tools, install hooks, programs
    /// outside system directories and processes that outlive steps).
    Export {
        job: String,
        #[arg(short, long)]
        output: PathBuf,
        /// Only behaviours seen in at least this many runs.
        #[arg(long, default_value_t = 1)]
        min_runs: u64,
        /// Export a baseline that is still learning or unstable too.
        #[arg(long)]
        force: bool,
    },
    /// Check the store: schema version and (SQLite) the database's integrity.
    Check,
    /// Record run records kept on disk (the agent's pending directory) or given as files.
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Record each file this many times, as new runs (for measuring the store).
        #[arg(long, default_value_t = 1, hide = true)]
        times: u32,
    },
}

fn settings(args: &BaselineArgs) -> anyhow::Result<(String, Thresholds)> {
    let section: Option<BaselineConfig> = match &args.config {
        Some(path) => crate::config::Config::load(path)?.baseline,
        None => None,
    };
    let store = args
        .store
        .clone()
        .or_else(|| section.as_ref().and_then(|s| s.store.clone()))
        .unwrap_or_else(|| DEFAULT_STORE.into());
    let thresholds = section.map(|s| s.thresholds()).unwrap_or_default();
    Ok((store, thresholds))
}

/// The job a name means: its exact key, else the one key containing it.
fn job_named(store: &mut Store, name: &str) -> anyhow::Result<String> {
    let jobs = store.jobs()?;
    if jobs.iter().any(|j| j.job == name) {
        return Ok(name.to_string());
    }
    let matching: Vec<&str> = jobs
        .iter()
        .filter(|j| j.job.contains(name))
        .map(|j| j.job.as_str())
        .collect();
    match matching.as_slice() {
        [one] => Ok(one.to_string()),
        [] => anyhow::bail!(
            "no baseline for a job named {name:?} (`monitor baseline status` lists them)"
        ),
        many => anyhow::bail!("{name:?} names {} jobs: {}", many.len(), many.join(", ")),
    }
}

pub fn run(args: BaselineArgs) -> anyhow::Result<()> {
    // The database and anything written here are the owner's only.
    // SAFETY: umask(2) only sets the process's file mode mask.
    unsafe { libc::umask(0o077) };
    let (location, thresholds) = settings(&args)?;
    let mut store = store::open(&location)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match args.command {
        BaselineCommand::Status { job: None } => {
            let jobs = store.jobs()?;
            if jobs.is_empty() {
                writeln!(out, "no baselines yet")?;
            }
            for j in jobs {
                let snapshot = store.snapshot(&j.job)?;
                writeln!(
                    out,
                    "{}\t{}\t{} run(s)\tlast {}",
                    j.job,
                    snapshot.job_state(&thresholds),
                    j.runs,
                    j.last_ended
                )?;
            }
        }
        BaselineCommand::Status { job: Some(name) } => {
            let job = job_named(&mut store, &name)?;
            let snapshot = store.snapshot(&job)?;
            writeln!(
                out,
                "{job}: {} ({} run(s); learning {} runs, stable after {} without anything new, unstable while new in the last {})",
                snapshot.job_state(&thresholds),
                snapshot.runs,
                thresholds.learning_runs,
                thresholds.stable_after,
                thresholds.unstable_window
            )?;
            for step in steps_of(&snapshot) {
                let (state, runs) = snapshot.step_state(&step, &thresholds);
                let behaviours = snapshot.known.get(&step).map_or(0, BTreeMap::len);
                writeln!(
                    out,
                    "  {step}\t{state}\t{runs} run(s)\t{behaviours} behaviour(s)"
                )?;
            }
        }
        BaselineCommand::Show { job: name } => {
            let job = job_named(&mut store, &name)?;
            let snapshot = store.snapshot(&job)?;
            writeln!(out, "{job}: {} run(s)", snapshot.runs)?;
            for (step, known) in &snapshot.known {
                writeln!(out, "  step {step}")?;
                for (b, seen) in known {
                    writeln!(
                        out,
                        "    {b}\t{} run(s)\tfirst {}\tlast {}",
                        seen.runs, seen.first_seen, seen.last_seen
                    )?;
                }
            }
        }
        BaselineCommand::Diff { job: name, run } => {
            let job = job_named(&mut store, &name)?;
            let Some((key, by_step)) = store.run_new(&job, &run)? else {
                anyhow::bail!("no run {run:?} recorded for {job}");
            };
            writeln!(out, "{job}, run {key}: what its baseline had not seen")?;
            for (step, new) in by_step {
                if new.is_empty() {
                    writeln!(out, "  {step}: nothing new")?;
                }
                for b in new {
                    writeln!(out, "  {step}: new {b}")?;
                }
            }
        }
        BaselineCommand::Forget {
            job: name,
            step,
            behaviour,
            kind,
        } => {
            let job = job_named(&mut store, &name)?;
            let behaviour =
                match behaviour {
                    Some(text) => Some(Behaviour::parse(&text).with_context(|| {
                        format!("{text:?} is not kind:item (kinds: {})", kinds())
                    })?),
                    None => None,
                };
            let kind = match kind {
                Some(text) => Some(
                    BehaviourKind::parse(&text)
                        .with_context(|| format!("unknown kind {text:?} (kinds: {})", kinds()))?,
                ),
                None => None,
            };
            let n = store.forget(
                &job,
                &Forget {
                    step,
                    behaviour,
                    kind,
                },
            )?;
            writeln!(out, "{job}: {n} row(s) removed")?;
        }
        BaselineCommand::Export {
            job: name,
            output,
            min_runs,
            force,
        } => {
            let job = job_named(&mut store, &name)?;
            let snapshot = store.snapshot(&job)?;
            let state = snapshot.job_state(&thresholds);
            if state != BaselineState::Stable && !force {
                anyhow::bail!(
                    "{job}'s baseline is {state}, not stable: what it holds may not be what the job usually does (--force exports it anyway)"
                );
            }
            let mut profile = Profile::default_profile();
            let mut added = 0;
            for known in snapshot.known.values() {
                for (b, seen) in known {
                    if seen.runs >= min_runs && allow(&mut profile, b) {
                        added += 1;
                    }
                }
            }
            let yaml = format!(
                "# Exported by `monitor baseline export` from {job}'s {state} baseline ({} run(s)), {added} allowance(s) added to the built-in profile.\n{}",
                snapshot.runs,
                profile.to_yaml()
            );
            // The profile must load as written.
            crate::profile::parse_yaml::<Profile>(&yaml, &output.display().to_string())
                .map_err(|e| anyhow::anyhow!("the exported profile does not load: {e}"))?;
            write_private(&output, yaml.as_bytes())?;
            writeln!(out, "{}: {added} allowance(s) from {job}", output.display())?;
        }
        BaselineCommand::Check => {
            writeln!(out, "{}", store.check()?)?;
        }
        BaselineCommand::Import { files, times } => {
            let mut recorded = 0;
            for file in &files {
                let run = Pending::read(file)?;
                for n in 0..times {
                    let mut run: RunRecord = run.clone();
                    if times > 1 {
                        run.run = format!("{}#{n}", run.run);
                    }
                    let snapshot = store.snapshot(&run.job)?;
                    let c = compare(&snapshot, &run, &thresholds);
                    let new = c
                        .steps
                        .iter()
                        .map(|s| (s.step.clone(), s.new.clone()))
                        .collect();
                    if store.record(&run, &new)? {
                        recorded += 1;
                    }
                }
            }
            writeln!(out, "{recorded} run(s) recorded")?;
        }
    }
    Ok(())
}

fn kinds() -> String {
    BehaviourKind::ALL.map(BehaviourKind::as_str).join(", ")
}

/// Program directories a profile never needs to name (the system's own).
const SYSTEM_DIRS: &[&str] = &["/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/", "/etc/"];

/// Adds what a behaviour needs to a profile; whether it added anything.
fn allow(profile: &mut Profile, b: &Behaviour) -> bool {
    let item = b.item.as_str();
    match b.kind {
        BehaviourKind::Destination => {
            let Some((_, target)) = item.split_once(' ') else {
                return false;
            };
            let Some((host, port)) = target.rsplit_once(':') else {
                return false;
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port: u16 = port.parse().unwrap_or(0);
            match host.parse::<std::net::IpAddr>() {
                Ok(address) if address.to_canonical().is_loopback() => profile
                    .learn(&Allowance::Egress {
                        address,
                        port,
                        domain: None,
                    })
                    .is_some(),
                Ok(address) => profile.allow(&Allowance::Egress {
                    address,
                    port,
                    domain: None,
                }),
                Err(_) => profile.allow(&Allowance::Egress {
                    address: std::net::Ipv4Addr::UNSPECIFIED.into(),
                    port,
                    domain: Some(host.to_string()),
                }),
            }
        }
        BehaviourKind::CredentialAccess | BehaviourKind::PersistenceAccess => {
            let Some((path, by)) = item.rsplit_once(" by ") else {
                return false;
            };
            // The item is a pattern already (`~/`, `*` where runs differ).
            let Ok(pattern) = PathPattern::new(path) else {
                return false;
            };
            let list = if b.kind == BehaviourKind::CredentialAccess {
                &mut profile.rules.credentials.allow
            } else {
                &mut profile.rules.persistence.allow
            };
            crate::profile::add_access_pattern(list, pattern, by)
        }
        BehaviourKind::InstallHook => {
            let mut words = item.split(' ');
            let (Some(ecosystem), Some(package)) = (words.next(), words.next()) else {
                return false;
            };
            let ecosystem = match ecosystem {
                "npm" => Ecosystem::Npm,
                "pypi" => Ecosystem::Pypi,
                "cargo" => Ecosystem::Cargo,
                _ => return false,
            };
            profile.allow(&Allowance::Lifecycle {
                ecosystem,
                packages: vec![package.to_string()],
            })
        }
        BehaviourKind::Executable | BehaviourKind::OutlivedStep => {
            let item = match item.split_once(super::behaviour::INSTALL_CODE_MARK) {
                Some((path, _)) => path,
                None => item,
            };
            if b.kind == BehaviourKind::Executable
                && SYSTEM_DIRS.iter().any(|d| item.starts_with(d))
            {
                return false;
            }
            let Ok(pattern) = PathPattern::new(item) else {
                return false;
            };
            let list = if b.kind == BehaviourKind::Executable {
                &mut profile.rules.executables.written
            } else {
                &mut profile.rules.processes.background
            };
            if list.contains(&pattern) {
                return false;
            }
            list.push(pattern);
            true
        }
        BehaviourKind::DnsZone => false,
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}
