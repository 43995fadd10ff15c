//! The detection engine: enriched events in, findings out. Pure: no BPF, no clock, no I/O; time
//! is the events' own (`ts_ns`), so the live agent, `monitor replay` and the unit tests run the
//! very same code.
//!
//! It attributes every process to a CI job and step: a process with no attributed ancestor whose
//! exec carries a job identity in its environment (`ci::identity_from_env`) is a step's root;
//! every descendant belongs to that step, whatever its own environment says (a step cannot leave
//! its job by rewriting `GITHUB_*`), including processes that daemonize. Processes outside any
//! job are not judged.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use serde_json::{json, Value};

use crate::{
    ci::{identity_from_env, JobIdentity, StepIdentity},
    event::{Detail, Event},
    finding::{ChainLink, Finding, Severity},
    process_tree::ProcessKey,
    profile::{Allowance, Profile, Rules},
    rules::{
        credentials, dns, egress::is_metadata_endpoint, executables, lifecycle, lifecycle::Hook,
        packaging, path_within, persistence, tool_matches, tool_of,
    },
};

/// Programs that adopt orphans (init, container inits, service managers): a job's process found
/// under one was reparented there, and the reaper is not the job's runner.
const REAPERS: &[&str] = &[
    "systemd",
    "init",
    "tini",
    "dumb-init",
    "catatonit",
    "s6-svscan",
    "s6-supervise",
    "runsvdir",
    "containerd-shim",
    "conmon",
];

/// How often (in event time) ended jobs are checked for retirement.
const RETIRE_EVERY_NS: u64 = 10 * 1_000_000_000;
/// How long after a step's root exits its remaining processes count as having outlived it.
pub const STEP_GRACE_NS: u64 = 2_000_000_000;
/// Bound on the processes the engine tracks; past it, exited ones are forgotten first.
pub const MAX_TRACKED_PROCESSES: usize = 262_144;
/// Bound on distinct findings kept for de-duplication per job.
const MAX_SEEN_PER_JOB: usize = 65_536;
/// How long an ended job keeps its de-duplication set and address-to-name map: processes it
/// left behind may still act (and are still judged) for a while; past it, only the job's
/// identity and steps stay, so a runner doing thousands of jobs keeps its memory flat.
pub const JOB_RETENTION_NS: u64 = 600 * 1_000_000_000;

#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// The machine's DNS resolvers: DNS to them is allowed unless the profile says otherwise.
    pub dns_resolvers: Vec<IpAddr>,
}

impl EngineConfig {
    /// Resolvers from a resolv.conf text.
    pub fn resolvers_from(resolv_conf: &str) -> Vec<IpAddr> {
        resolv_conf
            .lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .filter_map(|a| a.trim().split('%').next()?.parse().ok())
            .collect()
    }
}

struct Proc {
    job: usize,
    step: usize,
    hook: Option<usize>,
    link: ChainLink,
    tool: String,
    alive: bool,
    is_step_root: bool,
    /// A child of a job's anchor seen before its exec: its step is named when it executes
    /// with the step's identity in its environment (the runner forks, then execs the step).
    provisional: bool,
    /// It runs a packing command (`npm pack`): (the command, the directory it packs).
    packing: Option<(String, String)>,
}

struct Step {
    identity: StepIdentity,
    root: ProcessKey,
    ended: Option<(u64, String)>,
    checked: bool,
}

struct Job {
    identity: JobIdentity,
    /// The process the steps are children of (Runner.Worker): the job ends when it exits.
    anchor: Option<ProcessKey>,
    steps: Vec<Step>,
    /// When the engine first saw the job (its first step, or its declaration).
    started_ns: u64,
    ended_ns: Option<u64>,
    seen: HashSet<String>,
    /// Which names the job's processes resolved each address from.
    names: dns::JobNames,
    /// Its heavy state was dropped (`JOB_RETENTION_NS` after it ended).
    retired: bool,
    /// Where the job's steps ask for OIDC identity tokens (host, port), when the job may.
    oidc_endpoint: Option<(String, u16)>,
    /// The steps' home directory (`HOME` of the first step): a self-hosted runner's service
    /// user often lives outside `/home` (`/var/lib/runner`), and `~/` must still mean it.
    home: Option<String>,
}

struct HookState {
    hook: Hook,
    /// The hook runs with the profile's blessing; what it does is still judged.
    allowed: bool,
}

/// What block mode must tell the kernel (only made when the profile's egress mode is `block`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enforcement {
    /// Judge this process's connections (and its descendants'), or with `anchor_only` only its
    /// descendants' (a runner's Worker, whose own traffic is the runner's), against `rules`: its
    /// job's profile, job level and every step's (the kernel does not know steps).
    Process {
        job: String,
        pid: u32,
        anchor_only: bool,
        rules: Vec<crate::profile::EgressRule>,
    },
    JobEnded {
        key: String,
    },
}

/// Where an event's process belongs.
#[derive(Debug, Clone, Copy)]
pub struct Attribution<'a> {
    pub job: &'a JobIdentity,
    /// The step's position in its job (step ids may repeat: `job` for work outside steps).
    pub step_index: usize,
    pub step: Option<&'a StepIdentity>,
    /// The install hook it runs in: (engine-wide hook number, hook, allowed by the profile).
    pub hook: Option<(usize, &'a Hook, bool)>,
    /// For a connection: the name its address was resolved from during the job.
    pub domain: Option<&'a str>,
}

/// A job that ended, with its bounds (boot-time ns).
#[derive(Debug, Clone)]
pub struct EndedJob {
    pub identity: JobIdentity,
    pub started_ns: u64,
    pub ended_ns: u64,
}

/// A `.pth` file written by a job, waiting to be read at some interpreter's start.
struct WrittenPth {
    job: usize,
    step: usize,
    hook: Option<usize>,
    writer: Vec<ChainLink>,
    writer_seq: u64,
}

pub struct Engine {
    profiles: crate::config::ProfileSet,
    config: EngineConfig,
    procs: HashMap<ProcessKey, Proc>,
    jobs: Vec<Job>,
    job_by_key: HashMap<String, usize>,
    anchors: HashMap<ProcessKey, usize>,
    hooks: Vec<HookState>,
    written_pth: HashMap<String, WrittenPth>,
    /// Jobs that ended since the last `take_ended_jobs`.
    ended: Vec<usize>,
    /// Block mode's pending kernel updates.
    enforcement: Vec<Enforcement>,
    last_retire_ns: u64,
    next_id: u64,
    now_ns: u64,
    /// Exited processes forgotten because of the bound.
    pub evicted: u64,
}

fn key_of(pid: u32, start_ticks: u64) -> ProcessKey {
    ProcessKey {
        tgid: pid,
        start_ticks,
    }
}

fn link_of(e: &Event) -> ChainLink {
    ChainLink {
        pid: e.process.pid,
        start_ticks: e.process.start_ticks,
        comm: e.process.comm.clone(),
        exe: e.process.exe.clone(),
        argv: e.process.argv.clone(),
    }
}

/// What a rule found, before the engine adds the job, step, chain and id.
struct Raw {
    rule: &'static str,
    severity: Severity,
    summary: String,
    evidence: Vec<(&'static str, Value)>,
    profile_clause: String,
    allowance: Option<Allowance>,
    /// De-duplication: the same rule with the same key in one job is reported once.
    dedupe: String,
}

impl Engine {
    pub fn new(profile: Profile, config: EngineConfig) -> Self {
        Self::with_profiles(crate::config::ProfileSet::single(profile), config)
    }

    /// An engine judging each job by the profile its identity picks.
    pub fn with_profiles(profiles: crate::config::ProfileSet, config: EngineConfig) -> Self {
        Self {
            profiles,
            config,
            procs: HashMap::new(),
            jobs: Vec::new(),
            job_by_key: HashMap::new(),
            anchors: HashMap::new(),
            hooks: Vec::new(),
            written_pth: HashMap::new(),
            ended: Vec::new(),
            enforcement: Vec::new(),
            last_retire_ns: 0,
            next_id: 0,
            now_ns: 0,
            evicted: 0,
        }
    }

    /// The profile of jobs no configuration entry picks.
    pub fn profile(&self) -> &Profile {
        &self.profiles.default
    }

    /// Judges everything from now on by `profile` (jobs and processes carry on).
    pub fn set_profile(&mut self, profile: Profile) {
        self.profiles = crate::config::ProfileSet::single(profile);
    }

    /// Judges everything from now on by these profiles (jobs and processes carry on).
    pub fn set_profiles(&mut self, profiles: crate::config::ProfileSet) {
        self.profiles = profiles;
    }

    fn profile_of(&self, job: usize) -> &Profile {
        self.profiles.for_job(&self.jobs[job].identity)
    }

    /// Jobs seen so far, and whether each has ended.
    pub fn jobs(&self) -> impl Iterator<Item = (&JobIdentity, bool)> {
        self.jobs
            .iter()
            .map(|j| (&j.identity, j.ended_ns.is_some()))
    }

    /// Jobs that ended (anchor exited, or declared ended) since the last call: the agent
    /// writes their reports.
    pub fn take_ended_jobs(&mut self) -> Vec<EndedJob> {
        std::mem::take(&mut self.ended)
            .into_iter()
            .map(|j| {
                let job = &self.jobs[j];
                EndedJob {
                    identity: job.identity.clone(),
                    started_ns: job.started_ns,
                    ended_ns: job.ended_ns.unwrap_or(job.started_ns),
                }
            })
            .collect()
    }

    /// What block mode must write to the kernel since the last call.
    pub fn take_enforcement(&mut self) -> Vec<Enforcement> {
        std::mem::take(&mut self.enforcement)
    }

    fn enforce(&mut self, job: usize, action: Enforcement) {
        if self.profile_of(job).egress_mode() == crate::profile::EgressMode::Block {
            self.enforcement.push(action);
        }
    }

    /// In block mode, has the kernel judge `pid` (and what it starts) by its job's profile.
    fn enforce_process(&mut self, job: usize, pid: u32, anchor_only: bool) {
        if self.profile_of(job).egress_mode() != crate::profile::EgressMode::Block {
            return;
        }
        let profile = self.profile_of(job);
        let rules = std::iter::once(&profile.rules)
            .chain(profile.steps.values())
            .flat_map(|r| r.egress.allow.iter().cloned())
            .collect();
        self.enforcement.push(Enforcement::Process {
            job: self.jobs[job].identity.key.clone(),
            pid,
            anchor_only,
            rules,
        });
    }

    /// Jobs seen and not ended.
    pub fn active_jobs(&self) -> usize {
        self.jobs.iter().filter(|j| j.ended_ns.is_none()).count()
    }

    /// The job, step and install hook an event's process belongs to, once `on_event` has seen
    /// it (reports are built from this).
    pub fn attribution(&self, e: &Event) -> Option<Attribution<'_>> {
        let p = self
            .procs
            .get(&key_of(e.process.pid, e.process.start_ticks))?;
        let job = &self.jobs[p.job];
        Some(Attribution {
            job: &job.identity,
            step_index: p.step,
            step: job.steps.get(p.step).map(|s| &s.identity),
            hook: p
                .hook
                .map(|h| (h, &self.hooks[h].hook, self.hooks[h].allowed)),
            domain: match &e.detail {
                Detail::Connect { address, .. } => job
                    .names
                    .names_of(*address, e.ts_ns)
                    .first()
                    .map(|n| n.asked.as_str()),
                _ => None,
            },
        })
    }

    fn end_job(&mut self, job: usize, ts_ns: u64) {
        if self.jobs[job].ended_ns.is_none() {
            self.jobs[job].ended_ns = Some(ts_ns);
            self.ended.push(job);
            let key = self.jobs[job].identity.key.clone();
            self.enforce(job, Enforcement::JobEnded { key });
        }
        self.anchors.retain(|_, j| *j != job);
        // The CI shell that anchored an explicit job goes on with other work: what it starts
        // from now on is not this job's. (Processes the job started stay in it.)
        if self.jobs[job].identity.provider == "explicit" {
            if let Some(anchor) = self.jobs[job].anchor {
                if self.procs.get(&anchor).is_some_and(|p| p.job == job) {
                    self.procs.remove(&anchor);
                }
            }
        }
    }

    /// Judges one event.
    pub fn on_event(&mut self, e: &Event) -> Vec<Finding> {
        let mut out = Vec::new();
        self.advance(e.ts_ns, &mut out);
        let key = key_of(e.process.pid, e.process.start_ticks);
        match &e.detail {
            Detail::Exit { .. } => {
                if let Some(job) = self.anchors.get(&key).copied() {
                    self.end_job(job, e.ts_ns);
                }
            }
            Detail::JobStart { job: identity, .. } => {
                let explicit = identity.provider == "explicit";
                let job = self.job_index(identity.clone());
                // Declared again (a restarted hook): the latest anchor wins.
                self.jobs[job].ended_ns = None;
                self.jobs[job].anchor = Some(key);
                self.anchors.insert(key, job);
                self.enforce_process(job, e.process.pid, !explicit);
                // An explicitly started job's anchor is the CI's own shell: it is the job's
                // first step. A GitHub runner's Worker is the runner, not the job's code.
                if explicit && !self.procs.contains_key(&key) {
                    self.jobs[job].steps.push(Step {
                        identity: StepIdentity {
                            id: "main".into(),
                            action: None,
                        },
                        root: key,
                        ended: None,
                        checked: false,
                    });
                    let step = self.jobs[job].steps.len() - 1;
                    self.procs.insert(
                        key,
                        Proc {
                            job,
                            step,
                            hook: None,
                            link: link_of(e),
                            tool: tool_of(e.process.exe.as_deref(), &e.process.argv),
                            alive: true,
                            is_step_root: true,
                            provisional: false,
                            packing: None,
                        },
                    );
                }
                return out;
            }
            Detail::JobEnd { job, .. } => {
                if let Some(job) = self.job_by_key.get(job).copied() {
                    self.end_job(job, e.ts_ns);
                }
                return out;
            }
            _ => {}
        }
        let attributed = self.attribute(e, key);
        // A job-written .pth file judges the interpreter that reads it, wherever it runs.
        if let Detail::Open {
            path,
            access,
            pth_executable,
            ..
        } = &e.detail
        {
            if access == "read" && lifecycle::is_site_pth(path) {
                self.on_pth_read(e, path, *pth_executable, &mut out);
            }
        }
        if !attributed {
            return out;
        }
        match &e.detail {
            Detail::Exec { .. } => self.on_exec(e, key, &mut out),
            Detail::Exit { .. } => self.on_exit(e, key),
            Detail::Connect { .. } => self.on_connect(e, key, &mut out),
            Detail::Dns { .. } => self.on_dns(e, key, &mut out),
            Detail::Tamper { .. } => self.on_tamper(e, key, &mut out),
            Detail::Open { .. } => self.on_open(e, key, &mut out),
            Detail::Fork {}
            | Detail::JobStart { .. }
            | Detail::JobEnd { .. }
            | Detail::Resume { .. } => {}
        }
        out
    }

    /// Lets time pass without events (the live agent calls this about twice a second).
    pub fn tick(&mut self, now_ns: u64) -> Vec<Finding> {
        let mut out = Vec::new();
        self.advance(now_ns, &mut out);
        out
    }

    /// End of input: every pending check is done now.
    pub fn finish(&mut self) -> Vec<Finding> {
        self.tick(u64::MAX)
    }

    fn advance(&mut self, now_ns: u64, out: &mut Vec<Finding>) {
        self.now_ns = self.now_ns.max(now_ns);
        self.check_outlived_steps(out);
        if self.now_ns >= self.last_retire_ns.saturating_add(RETIRE_EVERY_NS) {
            self.last_retire_ns = self.now_ns;
            self.retire_old_jobs();
        }
    }

    /// Drops what ended jobs no longer need.
    fn retire_old_jobs(&mut self) {
        let now = self.now_ns;
        for (index, job) in self.jobs.iter_mut().enumerate() {
            if job.retired
                || !job
                    .ended_ns
                    .is_some_and(|e| now >= e.saturating_add(JOB_RETENTION_NS))
            {
                continue;
            }
            job.retired = true;
            job.seen = HashSet::new();
            job.names = dns::JobNames::default();
            self.written_pth.retain(|_, w| w.job != index);
        }
    }

    /// Ended jobs whose heavy state has been dropped.
    pub fn retired_jobs(&self) -> usize {
        self.jobs.iter().filter(|j| j.retired).count()
    }

    /// Finds (or makes) the engine's record of the event's process; false when it is in no job.
    fn attribute(&mut self, e: &Event, key: ProcessKey) -> bool {
        if self.procs.contains_key(&key) {
            if let Detail::Exec { env, .. } = &e.detail {
                let proc = self.procs.get_mut(&key).expect("checked");
                proc.link = link_of(e);
                proc.tool = tool_of(e.process.exe.as_deref(), &e.process.argv);
                if std::mem::take(&mut proc.provisional) {
                    let (job, step) = (proc.job, proc.step);
                    if let Some((job_id, step_id)) = identity_from_env(env) {
                        if job_id.key == self.jobs[job].identity.key {
                            self.jobs[job].steps[step].identity = step_id;
                        }
                    }
                }
            }
            return true;
        }
        // The nearest ancestor that is in a job, or that anchors one: under an anchor, a process
        // with no job member between them starts a step of its own.
        enum Found {
            Member(usize, usize, Option<usize>, Option<(String, String)>),
            ChildOfAnchor(usize),
        }
        let found = e.ancestry.iter().find_map(|a| {
            let k = key_of(a.pid, a.start_ticks);
            if let Some(p) = self.procs.get(&k) {
                return Some(Found::Member(p.job, p.step, p.hook, p.packing.clone()));
            }
            self.anchors.get(&k).map(|job| Found::ChildOfAnchor(*job))
        });
        let mut provisional = false;
        // A forked child of a packing process packs too, until it executes something else.
        let mut packing = None;
        let (job, step, hook, is_root) = match found {
            Some(Found::Member(job, step, hook, parent_packing)) => {
                packing = parent_packing;
                (job, step, hook, false)
            }
            Some(Found::ChildOfAnchor(job)) => {
                let own = match &e.detail {
                    Detail::Exec { env, .. } => identity_from_env(env)
                        .filter(|(j, _)| j.key == self.jobs[job].identity.key)
                        .map(|(_, s)| s),
                    _ => None,
                };
                provisional = own.is_none() && !matches!(e.detail, Detail::Exec { .. });
                let identity = own.unwrap_or_else(|| StepIdentity {
                    id: "job".into(),
                    action: None,
                });
                let step = self.new_step(job, identity, key, e.process.pid);
                (job, step, None, true)
            }
            None => {
                let env = match &e.detail {
                    Detail::Exec { env, .. } | Detail::Resume { env, .. } => env,
                    _ => return false,
                };
                let Some((job_id, step_id)) = identity_from_env(env) else {
                    return false;
                };
                let job = self.job_index(job_id);
                let parent = e.ancestry.first().map(|a| key_of(a.pid, a.start_ticks));
                // The parent anchors the job (the runner's Worker), unless it merely adopted the
                // process: init, or whoever a process found running at start-up was reparented
                // to (a step's daemon outlives its step). Anchoring there would pull every other
                // process on the machine into the job.
                let adopted = e.ancestry.first().is_some_and(|p| {
                    p.pid == 1 || REAPERS.iter().any(|r| p.comm.starts_with(r))
                });
                if self.jobs[job].anchor.is_none() && !adopted {
                    if let Some(parent) = parent {
                        self.jobs[job].anchor = Some(parent);
                        self.anchors.insert(parent, job);
                    }
                }
                let step = self.new_step(job, step_id, key, e.process.pid);
                (job, step, None, true)
            }
        };
        if self.procs.len() >= MAX_TRACKED_PROCESSES {
            let before = self.procs.len();
            self.procs.retain(|_, p| p.alive);
            self.evicted += (before - self.procs.len()) as u64;
        }
        self.procs.insert(
            key,
            Proc {
                job,
                step,
                hook,
                link: link_of(e),
                tool: tool_of(e.process.exe.as_deref(), &e.process.argv),
                alive: true,
                is_step_root: is_root,
                provisional,
                packing,
            },
        );
        true
    }

    /// A step rooted at `root`; in block mode its process is judged from now on.
    fn new_step(
        &mut self,
        job: usize,
        identity: StepIdentity,
        root: ProcessKey,
        pid: u32,
    ) -> usize {
        self.jobs[job].steps.push(Step {
            identity,
            root,
            ended: None,
            checked: false,
        });
        self.enforce_process(job, pid, false);
        self.jobs[job].steps.len() - 1
    }

    fn job_index(&mut self, identity: JobIdentity) -> usize {
        if let Some(i) = self.job_by_key.get(&identity.key) {
            return *i;
        }
        self.jobs.push(Job {
            identity: identity.clone(),
            anchor: None,
            steps: Vec::new(),
            started_ns: self.now_ns,
            ended_ns: None,
            seen: HashSet::new(),
            names: dns::JobNames::default(),
            retired: false,
            oidc_endpoint: None,
            home: None,
        });
        let job = self.jobs.len() - 1;
        self.job_by_key.insert(identity.key, job);
        job
    }

    fn rules_of(&self, job: usize, step: usize) -> impl Iterator<Item = &Rules> {
        let identity = self.jobs[job].steps.get(step).map(|s| &s.identity);
        self.profile_of(job).rules_for(identity)
    }

    /// The acting process and its ancestors up to the step root.
    fn chain(&self, e: &Event, key: ProcessKey) -> Vec<ChainLink> {
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

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        out: &mut Vec<Finding>,
        raw: Raw,
        job: usize,
        step: usize,
        hook: Option<usize>,
        chain: Vec<ChainLink>,
        events: Vec<u64>,
        time: &str,
        ts_ns: u64,
    ) {
        let seen = &mut self.jobs[job].seen;
        let dedupe = format!("{}|{step}|{}", raw.rule, raw.dedupe);
        if seen.contains(&dedupe) {
            return;
        }
        if seen.len() < MAX_SEEN_PER_JOB {
            seen.insert(dedupe);
        }
        let mut evidence: std::collections::BTreeMap<String, Value> = raw
            .evidence
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        if let Some(h) = hook {
            evidence.insert(
                "hook_allowed_by_profile".into(),
                json!(self.hooks[h].allowed),
            );
        }
        let hook = hook.map(|h| self.hooks[h].hook.clone());
        // Inside a dependency's install code everything is worse: that code has no business
        // reading credentials, connecting out or running downloads.
        let severity = match (&hook, raw.rule) {
            (Some(_), "lifecycle-hook") => raw.severity,
            (Some(_), _) => Severity::Critical,
            (None, _) => raw.severity,
        };
        self.next_id += 1;
        let job_state = &self.jobs[job];
        out.push(Finding {
            id: self.next_id,
            rule: raw.rule.into(),
            severity,
            summary: raw.summary,
            time: time.to_string(),
            ts_ns,
            job: Some(job_state.identity.clone()),
            step: job_state.steps.get(step).map(|s| s.identity.clone()),
            process_chain: chain,
            events,
            evidence,
            hook,
            profile_clause: raw.profile_clause,
            allowance: raw.allowance,
        });
    }

    fn emit_for(&mut self, out: &mut Vec<Finding>, raw: Raw, e: &Event, key: ProcessKey) {
        let Some(p) = self.procs.get(&key) else {
            return;
        };
        let (job, step, hook) = (p.job, p.step, p.hook);
        let chain = self.chain(e, key);
        self.emit(
            out,
            raw,
            job,
            step,
            hook,
            chain,
            vec![e.seq],
            &e.time,
            e.ts_ns,
        );
    }

    fn on_exec(&mut self, e: &Event, key: ProcessKey, out: &mut Vec<Finding>) {
        let Detail::Exec {
            env,
            cwd,
            exe_changed_ns,
            filename,
            ..
        } = &e.detail
        else {
            return;
        };
        let program =
            crate::event::program_path(e.process.exe.as_deref().unwrap_or_default(), filename, cwd);
        let exe = e.process.exe.clone().unwrap_or_default();
        let (job, step, inherited_hook) = {
            let p = &self.procs[&key];
            (p.job, p.step, p.hook)
        };
        let workspace = self.jobs[job].identity.workspace.clone();
        {
            let proc = self.procs.get_mut(&key).expect("attributed");
            proc.packing = packaging::packing_command(&proc.tool, &e.process.argv)
                .map(|command| (command, cwd.clone()));
        }
        if self.jobs[job].home.is_none() {
            self.jobs[job].home = env
                .get("HOME")
                .filter(|h| h.starts_with('/') && h.len() > 1)
                .map(|h| h.trim_end_matches('/').to_string());
        }
        if self.jobs[job].oidc_endpoint.is_none() {
            self.jobs[job].oidc_endpoint = env
                .get("ACTIONS_ID_TOKEN_REQUEST_URL")
                .and_then(|origin| url::Url::parse(origin).ok())
                .and_then(|u| Some((u.host_str()?.to_string(), u.port_or_known_default()?)));
        }
        let hook = lifecycle::npm_hook(env, cwd)
            .or_else(|| lifecycle::pip_hook(&e.process.argv, cwd, workspace.as_deref()))
            .or_else(|| lifecycle::cargo_hook(&exe, env))
            .filter(|h| h.dependency);
        if let Some(hook) = hook {
            let same = inherited_hook.is_some_and(|i| {
                let h = &self.hooks[i].hook;
                h.package == hook.package
                    && h.ecosystem == hook.ecosystem
                    && h.script == hook.script
            });
            if !same {
                let allowed = self.rules_of(job, step).any(|r| {
                    r.lifecycle.allow.iter().any(|rule| {
                        rule.matches(hook.ecosystem, &hook.package, hook.version.as_deref())
                    })
                });
                self.hooks.push(HookState {
                    hook: hook.clone(),
                    allowed,
                });
                let index = self.hooks.len() - 1;
                self.procs.get_mut(&key).expect("attributed").hook = Some(index);
                if !allowed {
                    let raw = Raw {
                        rule: "lifecycle-hook",
                        severity: Severity::Medium,
                        summary: format!(
                            "{} runs install-time code of {} package {} ({})",
                            hook.manager,
                            hook.ecosystem.name(),
                            hook.package,
                            hook.script
                        ),
                        evidence: vec![
                            ("package", json!(hook.package)),
                            ("version", json!(hook.version)),
                            ("script", json!(hook.script)),
                            ("cwd", json!(cwd)),
                        ],
                        profile_clause: "lifecycle.allow: the package is not allowed to run code at install time".into(),
                        allowance: Some(Allowance::Lifecycle {
                            ecosystem: hook.ecosystem,
                            package: hook.package.clone(),
                            version: None,
                        }),
                        dedupe: format!("{}:{}:{}", hook.ecosystem.name(), hook.package, hook.script),
                    };
                    self.emit_for(out, raw, e, key);
                }
            }
        }

        let allowed_exe = |rules: &Rules| rules.executables.allows(&exe);
        // The program run: the binary, or a `#!` script (then `exe` is its interpreter).
        let temp = |path: &str| {
            ["/tmp/", "/var/tmp/", "/dev/shm/"]
                .iter()
                .any(|t| path.starts_with(t))
                && !path.contains("/target/")
        };
        let in_temp = temp(&exe) || temp(&program);
        let temp_program = if temp(&exe) { exe.clone() } else { program.clone() };
        if in_temp
            && !self
                .rules_of(job, step)
                .any(|r| allowed_exe(r) || r.executables.allows(&temp_program))
        {
            let raw = Raw {
                rule: "exec-from-temp",
                severity: Severity::High,
                summary: format!("executed {temp_program}, a program in a temporary directory"),
                evidence: vec![
                    ("executable", json!(exe)),
                    ("program", json!(temp_program)),
                    ("cwd", json!(cwd)),
                ],
                profile_clause: "executables.allow: programs in temporary directories are downloads until allowed".into(),
                allowance: Some(Allowance::Executables { path: temp_program.clone() }),
                dedupe: temp_program.clone(),
            };
            self.emit_for(out, raw, e, key);
        } else if !in_temp
            && exe_changed_ns.is_some_and(|t| t >= self.jobs[job].started_ns)
            && !executables::installed_by_tooling(&program, workspace.as_deref())
            && !self
                .rules_of(job, step)
                .any(|r| r.executables.allows(&program))
        {
            let raw = Raw {
                rule: "exec-of-job-written-file",
                severity: Severity::Medium,
                summary: format!("executed {program}, written during this job"),
                evidence: vec![
                    ("program", json!(program)),
                    ("executable", json!(exe)),
                    ("cwd", json!(cwd)),
                ],
                profile_clause: "executables.allow: a program written during the job, outside the places package managers and builds put programs, is a download until allowed".into(),
                allowance: Some(Allowance::Executables { path: program.clone() }),
                dedupe: program.clone(),
            };
            self.emit_for(out, raw, e, key);
        }
        if !in_temp {
            let lists: Vec<_> = self
                .rules_of(job, step)
                .filter(|r| r.executables.allow.is_some())
                .collect();
            if !lists.is_empty() && !lists.iter().any(|r| allowed_exe(r)) {
                let raw = Raw {
                    rule: "unexpected-executable",
                    severity: Severity::Medium,
                    summary: format!("executed {exe}, which the profile does not list"),
                    evidence: vec![("executable", json!(exe))],
                    profile_clause: "executables.allow".into(),
                    allowance: Some(Allowance::Executables { path: exe.clone() }),
                    dedupe: exe.clone(),
                };
                self.emit_for(out, raw, e, key);
            }
        }
    }

    fn on_exit(&mut self, e: &Event, key: ProcessKey) {
        let Some(p) = self.procs.get_mut(&key) else {
            return;
        };
        p.alive = false;
        if p.is_step_root {
            let (job, step) = (p.job, p.step);
            if let Some(s) = self.jobs[job].steps.get_mut(step) {
                if s.root == key && s.ended.is_none() {
                    s.ended = Some((e.ts_ns, e.time.clone()));
                }
            }
        }
    }

    /// Processes still alive `STEP_GRACE_NS` after their step's root exited.
    fn check_outlived_steps(&mut self, out: &mut Vec<Finding>) {
        let mut due = Vec::new();
        for (j, job) in self.jobs.iter_mut().enumerate() {
            for (s, step) in job.steps.iter_mut().enumerate() {
                if let Some((ended, time)) = &step.ended {
                    if !step.checked && self.now_ns >= ended.saturating_add(STEP_GRACE_NS) {
                        step.checked = true;
                        due.push((j, s, *ended, time.clone()));
                    }
                }
            }
        }
        for (job, step, ended, time) in due {
            let mut left: Vec<(ProcessKey, ChainLink, Option<usize>)> = self
                .procs
                .iter()
                .filter(|(_, p)| p.job == job && p.step == step && p.alive && !p.is_step_root)
                .map(|(k, p)| (*k, p.link.clone(), p.hook))
                .collect();
            left.sort_by_key(|(k, _, _)| *k);
            for (_, link, hook) in left {
                let exe = link.exe.clone().unwrap_or_default();
                let allowed = self
                    .rules_of(job, step)
                    .any(|r| r.processes.background.iter().any(|p| p.matches(&exe)));
                if allowed {
                    continue;
                }
                let raw = Raw {
                    rule: "outlived-step",
                    severity: Severity::Medium,
                    summary: format!("{exe} (pid {}) kept running after its step ended", link.pid),
                    evidence: vec![("executable", json!(exe)), ("pid", json!(link.pid))],
                    profile_clause:
                        "processes.background: only listed programs may outlive their step".into(),
                    allowance: Some(Allowance::Processes {
                        executable: exe.clone(),
                    }),
                    dedupe: format!("{}:{}", link.pid, link.start_ticks),
                };
                self.emit(out, raw, job, step, hook, vec![link], vec![], &time, ended);
            }
        }
    }

    fn on_connect(&mut self, e: &Event, key: ProcessKey, out: &mut Vec<Finding>) {
        let Detail::Connect {
            address,
            port,
            protocol,
            result,
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
        let metadata = is_metadata_endpoint(address);
        let resolved: Vec<dns::ResolvedName> = self.jobs[job]
            .names
            .names_of(address, e.ts_ns)
            .into_iter()
            .cloned()
            .collect();
        self.check_oidc_request(e, key, (job, step), (address, port), &resolved, out);
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
        // In block mode the kernel refused it when connect failed with EPERM.
        let blocked = self.profile_of(job).egress_mode() == crate::profile::EgressMode::Block
            && *result == -1;
        if allowed {
            if blocked {
                // Allowed by the profile, refused by the kernel: an address the kernel did not
                // know yet (a name allowed only through a CNAME, or resolved elsewhere).
                let raw = Raw {
                    rule: "egress-blocked-allowed",
                    severity: Severity::Low,
                    summary: format!(
                        "the kernel refused a connection to {address}:{port} that the profile allows{}",
                        resolved.first().map(|n| format!(" ({})", n.asked)).unwrap_or_default()
                    ),
                    evidence: vec![("address", json!(address)), ("port", json!(port)), ("blocked", json!(true))],
                    profile_clause: "egress.mode: block allows a domain's addresses as its DNS answers arrive; this one was not seen in time".into(),
                    allowance: None,
                    dedupe: format!("{address}:{port}"),
                };
                self.emit_for(out, raw, e, key);
            }
            return;
        }
        let domain = resolved.first().map(|n| n.asked.clone());
        let chain = resolved
            .first()
            .map(|n| n.chain.clone())
            .unwrap_or_default();
        let dest = match address {
            IpAddr::V6(a) => format!("[{a}]:{port}"),
            IpAddr::V4(a) => format!("{a}:{port}"),
        };
        let raw = if metadata {
            Raw {
                rule: "cloud-metadata",
                severity: Severity::Critical,
                summary: format!("connection to the cloud metadata endpoint {dest}"),
                evidence: vec![
                    ("address", json!(address)),
                    ("port", json!(port)),
                    ("protocol", json!(protocol)),
                    ("result", json!(result)),
                ],
                profile_clause:
                    "egress.allow: metadata endpoints are allowed only by their exact address"
                        .into(),
                allowance: Some(Allowance::Egress {
                    address,
                    port,
                    domain: None,
                }),
                dedupe: dest.clone(),
            }
        } else {
            let verb = if blocked {
                "blocked connection"
            } else {
                "connection"
            };
            let summary = match &domain {
                Some(d) => format!("{verb} to {d} ({dest}), which the profile does not allow"),
                None => format!(
                    "{verb} to {dest}, an address never resolved during the job (a direct-IP connection), which the profile does not allow"
                ),
            };
            Raw {
                rule: "unexpected-egress",
                severity: Severity::High,
                summary,
                evidence: vec![
                    ("address", json!(address)),
                    ("port", json!(port)),
                    ("protocol", json!(protocol)),
                    ("result", json!(result)),
                    ("domain", json!(domain)),
                    ("cname_chain", json!(chain)),
                    ("resolved", json!(domain.is_some())),
                    ("blocked", json!(blocked)),
                ],
                profile_clause: match &domain {
                    Some(_) => "egress.allow: no entry matches this domain or address".into(),
                    None => "egress.allow: no entry matches this address, and no DNS answer in the job named it".into(),
                },
                allowance: Some(Allowance::Egress {
                    address,
                    port,
                    domain: domain.clone(),
                }),
                dedupe: dest.clone(),
            }
        };
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
        let raw = Raw {
            rule: "oidc-token-request",
            severity: Severity::High,
            summary: format!(
                "{tool} connected to the job's OIDC token endpoint ({host}:{port}) in step {step_id}, which may not request identity tokens"
            ),
            evidence: vec![
                ("endpoint", json!(format!("{host}:{port}"))),
                ("address", json!(address)),
                ("port", json!(port)),
            ],
            profile_clause: "oidc.allow: only steps given `oidc: {allow: true}` under `steps:` may request identity tokens".into(),
            allowance: Some(Allowance::Oidc { step: step_id }),
            dedupe: format!("{host}:{port}"),
        };
        self.emit_for(out, raw, e, key);
    }

    /// Syscalls against the monitor itself or into other processes' memory.
    fn on_tamper(&mut self, e: &Event, key: ProcessKey, out: &mut Vec<Finding>) {
        let Detail::Tamper {
            syscall,
            target,
            arg,
        } = &e.detail
        else {
            return;
        };
        let tool = self.procs[&key].tool.clone();
        let (rule, severity, summary, clause) = match syscall.as_str() {
            "kill" | "tkill" | "tgkill" if *target == -1 => (
                "agent-tampering",
                Severity::Critical,
                format!("{tool} sent signal {arg} to every process, the monitor included"),
                "nothing in a job may signal the monitor",
            ),
            "kill" | "tkill" | "tgkill" => (
                "agent-tampering",
                Severity::Critical,
                format!("{tool} sent signal {arg} to the monitor agent (pid {target})"),
                "nothing in a job may signal the monitor",
            ),
            "bpf" => (
                "agent-tampering",
                Severity::High,
                format!("{tool} used bpf(2) (command {arg}): loading, changing or detaching eBPF programs"),
                "a job has no business with the kernel's eBPF: it can blind or subvert the monitor",
            ),
            "ptrace" => (
                "process-memory-read",
                Severity::High,
                format!("{tool} used ptrace (request {arg}) on process {target}"),
                "credentials: other processes' memory holds the job's secrets",
            ),
            _ => (
                "process-memory-read",
                Severity::Critical,
                format!("{tool} used {syscall} on process {target}"),
                "credentials: other processes' memory holds the job's secrets",
            ),
        };
        let raw = Raw {
            rule,
            severity,
            summary,
            evidence: vec![
                ("syscall", json!(syscall)),
                ("target_pid", json!(target)),
                ("argument", json!(arg)),
            ],
            profile_clause: clause.into(),
            allowance: None,
            dedupe: format!("{syscall}:{target}:{}", e.process.pid),
        };
        self.emit_for(out, raw, e, key);
    }

    fn on_dns(&mut self, e: &Event, key: ProcessKey, out: &mut Vec<Finding>) {
        let Detail::Dns {
            question, answers, ..
        } = &e.detail
        else {
            return;
        };
        let job = self.procs[&key].job;
        self.jobs[job]
            .names
            .learn(question.as_deref(), answers, e.ts_ns);
        let Some(question) = question else {
            return;
        };
        // Names the profile allows by domain are trusted destinations, whatever their labels.
        let step = self.procs[&key].step;
        if self.rules_of(job, step).any(|r| {
            r.egress
                .allow
                .iter()
                .any(|rule| rule.names_domain(question))
        }) {
            return;
        }
        if let Some(label) = dns::data_carrying_label(question) {
            let zone = dns::registrable_domain(question).unwrap_or_else(|| question.clone());
            let raw = Raw {
                rule: "dns-exfiltration",
                severity: Severity::High,
                summary: format!(
                    "DNS query under {zone} carries data in a {}-character label ({})",
                    label.len(),
                    dns::redact_name(question)
                ),
                evidence: vec![
                    ("zone", json!(zone)),
                    ("query", json!(dns::redact_name(question))),
                    ("label_length", json!(label.len())),
                    (
                        "label_entropy_bits",
                        json!((dns::entropy(label) * 100.0).round() / 100.0),
                    ),
                ],
                profile_clause: "DNS names are not a channel for data (long or encoded labels)"
                    .into(),
                allowance: None,
                dedupe: zone,
            };
            self.emit_for(out, raw, e, key);
        }
        if let Some((zone, count)) = self.jobs[job].names.count_question(question) {
            let raw = Raw {
                rule: "dns-exfiltration",
                severity: Severity::High,
                summary: format!("{count} different names queried under {zone} in one job (a DNS tunnel's pattern)"),
                evidence: vec![
                    ("zone", json!(zone)),
                    ("unique_names", json!(count)),
                    ("query", json!(dns::redact_name(question))),
                ],
                profile_clause: format!(
                    "DNS names are not a channel for data (more than {} names under one domain)",
                    dns::EXFIL_UNIQUE_NAMES
                ),
                allowance: None,
                dedupe: format!("unique:{zone}"),
            };
            self.emit_for(out, raw, e, key);
        }
    }

    fn on_open(&mut self, e: &Event, key: ProcessKey, out: &mut Vec<Finding>) {
        let Detail::Open {
            path,
            access,
            matched,
            path_truncated,
            created,
            ..
        } = &e.detail
        else {
            return;
        };
        let (job, step, hook, tool) = {
            let p = &self.procs[&key];
            (p.job, p.step, p.hook, p.tool.clone())
        };
        let in_hook = hook.is_some();
        // Judged as if the job's home were a usual one, so `~/` patterns cover it.
        let home_path = self.home_relative(job, path);
        let home_path = home_path.as_deref().unwrap_or(path);
        let allowed_by = |rules: &Rules, list: fn(&Rules) -> &Vec<crate::profile::AccessRule>| {
            list(rules).iter().any(|a| {
                (a.path.matches(path) || a.path.matches(home_path))
                    && a.by.iter().any(|b| {
                        if b.starts_with('/') {
                            crate::profile::PathPattern::new(b)
                                .is_ok_and(|p| p.matches(e.process.exe.as_deref().unwrap_or("")))
                        } else {
                            tool_matches(b, &tool)
                        }
                    })
            })
        };

        // Another process's memory, environment or memory map: always a finding.
        if matched.iter().any(|m| m == "proc_other_process") {
            if let Some((target, file)) = credentials::proc_target(path) {
                if file == "environ" && credentials::environ_read_is_listing(&tool, &e.process.argv)
                {
                    return;
                }
                if self
                    .rules_of(job, step)
                    .any(|r| allowed_by(r, |r| &r.credentials.allow))
                {
                    return;
                }
                let (rule, severity, what) = match file {
                    "mem" => ("process-memory-read", Severity::Critical, "memory"),
                    "maps" => ("process-memory-read", Severity::High, "memory map"),
                    _ => ("process-environ-read", Severity::High, "environment"),
                };
                let raw = Raw {
                    rule,
                    severity,
                    summary: format!("{tool} opened the {what} of process {target} ({path})"),
                    evidence: vec![("path", json!(path)), ("target_pid", json!(target)), ("access", json!(access))],
                    profile_clause: "credentials: other processes' memory and environment hold the job's secrets".into(),
                    // Pids change from run to run: an allowance names the file of any process.
                    allowance: Some(Allowance::Credentials { path: format!("/proc/*/{file}"), by: tool.clone() }),
                    dedupe: format!("{path}:{}", e.process.pid),
                };
                self.emit_for(out, raw, e, key);
                return;
            }
        }

        if *path_truncated {
            let raw = Raw {
                rule: "unresolved-sensitive-open",
                severity: Severity::Medium,
                summary: format!(
                    "{tool} opened a watched file whose path is too deep to resolve (...{path})"
                ),
                evidence: vec![
                    ("path_tail", json!(path)),
                    ("matched", json!(matched)),
                    ("access", json!(access)),
                ],
                profile_clause:
                    "credentials: a path that cannot be resolved cannot be allowed (fail closed)"
                        .into(),
                allowance: None,
                dedupe: path.clone(),
            };
            self.emit_for(out, raw, e, key);
            return;
        }

        let writes = access != "read";
        let reads = access != "write";
        if writes && lifecycle::is_site_pth(path) {
            let chain = self.chain(e, key);
            self.written_pth.insert(
                path.clone(),
                WrittenPth {
                    job,
                    step,
                    hook,
                    writer: chain,
                    writer_seq: e.seq,
                },
            );
        }
        if writes {
            if let Some(place) = persistence::classify(home_path) {
                let owner = place.owned_by(&tool) && !in_hook;
                if !owner
                    && !self
                        .rules_of(job, step)
                        .any(|r| allowed_by(r, |r| &r.persistence.allow))
                {
                    let raw = Raw {
                        rule: "persistence-write",
                        severity: Severity::High,
                        summary: format!("{tool} {} {path} ({})", if *created { "created" } else { "wrote" }, place.name),
                        evidence: vec![("path", json!(path)), ("place", json!(place.name)), ("access", json!(access)), ("created", json!(created))],
                        profile_clause: "persistence.allow: writes to places that run code later must be expected".into(),
                        allowance: Some(Allowance::Persistence { path: path.clone(), by: tool.clone() }),
                        dedupe: format!("{path}:{tool}"),
                    };
                    self.emit_for(out, raw, e, key);
                }
            }
        }
        if reads {
            if let Some((command, dir)) = self.procs[&key].packing.clone() {
                if self.check_packed_file(e, key, path, &command, &dir, out) {
                    return;
                }
            }
            let builtin = credentials::classify(home_path);
            let watched = self.rules_of(job, step).any(|r| {
                r.credentials
                    .watch
                    .iter()
                    .any(|p| p.matches(path) || p.matches(home_path))
            });
            if builtin.is_none() && !watched {
                return;
            }
            // Inside a dependency's install hook even the owning tool is not itself: npm run from
            // a postinstall script to read .npmrc is how the worm publishes.
            let owner = builtin.is_some_and(|k| k.owned_by(&tool)) && !in_hook;
            if owner
                || self
                    .rules_of(job, step)
                    .any(|r| allowed_by(r, |r| &r.credentials.allow))
            {
                return;
            }
            let name = builtin.map_or("watched-credential", |k| k.name);
            let owners = builtin.map(|k| k.owners.join(", ")).unwrap_or_default();
            let raw = Raw {
                rule: "credential-read",
                severity: Severity::High,
                summary: format!("{tool} read {path} ({name})"),
                evidence: vec![
                    ("path", json!(path)),
                    ("credential", json!(name)),
                    ("access", json!(access)),
                    ("owners", json!(owners)),
                ],
                profile_clause: if owners.is_empty() || in_hook {
                    "credentials.allow: no exception lets this process read it".to_string()
                } else {
                    format!(
                        "credentials: only {owners} may read it, and not from install-time code"
                    )
                },
                allowance: Some(Allowance::Credentials {
                    path: path.clone(),
                    by: tool.clone(),
                }),
                dedupe: format!("{path}:{tool}"),
            };
            self.emit_for(out, raw, e, key);
        }
    }

    /// `path` with the job's home directory spelt `/root`, when it lies in a home that `~/`
    /// patterns (`/root`, `/home/*`) would not cover.
    fn home_relative(&self, job: usize, path: &str) -> Option<String> {
        let home = self.jobs[job].home.as_deref()?;
        if home == "/root" || home.starts_with("/home/") {
            return None;
        }
        path_within(path, home).map(|rest| format!("/root{rest}"))
    }

    /// A packing command reading a file of the tree it packs that should not ship. Returns
    /// whether the open was judged here (then it is not also a credential read).
    fn check_packed_file(
        &mut self,
        e: &Event,
        key: ProcessKey,
        path: &str,
        command: &str,
        dir: &str,
        out: &mut Vec<Finding>,
    ) -> bool {
        let (job, step, tool) = {
            let p = &self.procs[&key];
            (p.job, p.step, p.tool.clone())
        };
        if path_within(path, dir).is_none() {
            return false;
        }
        let Some(kind) = packaging::leak_kind(path, &tool) else {
            return false;
        };
        if self
            .rules_of(job, step)
            .any(|r| r.packaging.allow.iter().any(|p| p.matches(path)))
        {
            return true;
        }
        let raw = Raw {
            rule: "packaged-sensitive-file",
            severity: Severity::High,
            summary: format!("`{command}` read {path} ({kind}) to pack it"),
            evidence: vec![
                ("path", json!(path)),
                ("kind", json!(kind)),
                ("command", json!(command)),
                ("package_dir", json!(dir)),
            ],
            profile_clause: "packaging.allow: a package should not ship source maps, .env files or keys unless listed".into(),
            allowance: Some(Allowance::Packaging { path: path.to_string() }),
            dedupe: path.to_string(),
        };
        self.emit_for(out, raw, e, key);
        true
    }

    fn on_pth_read(
        &mut self,
        e: &Event,
        path: &str,
        executable: Option<bool>,
        out: &mut Vec<Finding>,
    ) {
        let Some(written) = self.written_pth.get(path) else {
            return;
        };
        let file = path.rsplit('/').next().unwrap_or(path);
        // Unknown content (a replayed log, or a file already gone) fails closed.
        if executable == Some(false) || lifecycle::pth_is_known_benign(file) {
            return;
        }
        let (job, step, hook) = (written.job, written.step, written.hook);
        let writer = written.writer.clone();
        let writer_seq = written.writer_seq;
        let reader = link_of(e);
        let package = hook.map(|h| self.hooks[h].hook.package.clone());
        let raw = Raw {
            rule: "pth-executed",
            severity: Severity::High,
            summary: format!(
                "{} ran the executable .pth file {path}, installed during this job{}",
                reader.exe.as_deref().unwrap_or(&reader.comm),
                package
                    .map(|p| format!(" by package {p}"))
                    .unwrap_or_default()
            ),
            evidence: vec![
                ("path", json!(path)),
                ("executable_lines", json!(executable)),
                ("written_by", json!(writer.first())),
                ("reader_pid", json!(e.process.pid)),
            ],
            profile_clause:
                "lifecycle: .pth files run at every interpreter start; only known ones are expected"
                    .into(),
            allowance: None,
            dedupe: path.to_string(),
        };
        let mut chain = vec![reader];
        chain.extend(writer);
        // Reported even when the hook was allowed: an allowed build has no business planting code.
        self.emit(
            out,
            raw,
            job,
            step,
            hook,
            chain,
            vec![writer_seq, e.seq],
            &e.time,
            e.ts_ns,
        );
    }
}

#[cfg(test)]
pub(crate) mod tests;
