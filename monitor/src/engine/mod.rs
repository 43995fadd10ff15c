//! The detection engine: enriched events in, findings out. Pure: no BPF, no clock, no I/O; time
//! is the events' own (`ts_ns`), so the live agent, `monitor replay` and the unit tests run the
//! very same code.
//!
//! It attributes every process to a CI job and step: a process with no attributed ancestor whose
//! exec carries a job identity in its environment (`ci::identity_from_env`) is a step's root;
//! every descendant belongs to that step, whatever its own environment says (a step cannot leave
//! its job by rewriting `GITHUB_*`), including processes that daemonize. Processes outside any
//! job are not judged.
//!
//! Layout: this file holds the engine's state, its public face and the dispatch of each event;
//! `attribution` decides which job, step and install hook a process belongs to and when jobs
//! end; `containers` places a container's processes and judges its settings; `emit` turns what
//! a detection found into a finding; the detections live by event family in `process` (exec,
//! exit, tamper), `network` (connect, DNS) and `files` (opens).

mod attribution;
mod containers;
mod emit;
mod files;
mod install_code;
mod job_control;
mod log_budget;
mod network;
mod process;

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

pub use crate::finding::Enforcement;
use crate::{
    ci::{JobIdentity, StepIdentity},
    event::{Access, Detail, Event},
    finding::{ChainLink, Finding},
    process_tree::ProcessKey,
    profile::{Profile, ProfileSet, Rules},
    rules::{dns, lifecycle, lifecycle::Hook},
};

/// How often (in event time) ended jobs are checked for retirement.
const RETIRE_EVERY_NS: u64 = 10 * 1_000_000_000;
/// How long a process's record outlives its exit (events of it still queued behind the exit,
/// a runtime client that asked just before it exited).
const DEAD_PROCESS_KEPT_NS: u64 = 20 * 1_000_000_000;
/// How often the live engine asks the machine whether jobs' anchors still run (their exit
/// record may have been lost in a full ring, and the job would never end).
const ANCHOR_CHECK_EVERY_NS: u64 = 2 * 1_000_000_000;
/// How long after a step's root exits its remaining processes count as having outlived it.
pub const STEP_GRACE_NS: u64 = 2_000_000_000;
/// Siblings made by steps (`CLONE_PARENT`) tracked at once (each is removed at its exit).
const MAX_SIBLINGS: usize = 4096;
/// Bound on the processes the engine tracks; past it, exited ones are forgotten first.
pub const MAX_TRACKED_PROCESSES: usize = 262_144;
/// How long an environment-only job without an anchor (its processes adopted by init: nothing
/// marks its end) stays open once none of its processes runs.
pub const QUIET_JOB_END_NS: u64 = 30 * 1_000_000_000;
/// Keys of forgotten jobs remembered (so an ended job is never re-opened): a runner doing a
/// job a minute reaches it after 45 days.
pub const MAX_FORGOTTEN_KEYS: usize = 65_536;
/// Jobs the engine keeps (live, ended, retired); past it, retired jobs whose processes are all
/// gone are forgotten (`compact_jobs`).
pub const MAX_JOBS_KEPT: usize = 4_096;
/// Live jobs one user may have that were seen only in exec environments (no runner hook
/// declared them): past it, that user's new ones share one job.
pub const MAX_UNDECLARED_JOBS_PER_UID: usize = 64;
/// Running jobs one user other than root may have declared over the control socket (a runner
/// runs one job at a time): a flood of `job start`s, each from a process of its own, is refused
/// past it.
pub const MAX_DECLARED_JOBS_PER_UID: usize = 64;
/// Bound on distinct findings kept for de-duplication per job.
const MAX_SEEN_PER_JOB: usize = 65_536;
/// Findings written per job; past it they are counted (one `finding-flood` finding says so, the
/// job's report gives the count), so one job's flood neither buries its first findings nor
/// rotates other jobs' findings out of the log.
pub const MAX_FINDINGS_PER_JOB: usize = 1_000;
/// How long an ended job keeps its de-duplication set and address-to-name map: processes it
/// left behind may still act (and are still judged) for a while; past it, only the job's
/// identity and steps stay, so a runner doing thousands of jobs keeps its memory flat.
pub const JOB_RETENTION_NS: u64 = 600 * 1_000_000_000;

/// The engine's word to the agent about a job's tracked sources (`source-modified`): the
/// engine knows when a checkout ends; the agent asks git what it tracks and tells the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceRequest {
    /// Watch what git tracks in `workspace` for the job `job` (its key).
    Watch { job: String, workspace: String },
    /// The job ended: its files are no longer watched.
    Forget { job: String },
}

#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// Whether a process (pid, start ticks) still exists, asked before a process is reported
    /// as outliving its step: its exit record may have been lost (the ring was full). The live
    /// agent reads /proc; replay has no machine to ask and trusts the log.
    pub still_running: Option<fn(u32, u64) -> bool>,
    /// The machine's DNS resolvers: DNS to them is allowed unless the profile says otherwise.
    pub dns_resolvers: Vec<IpAddr>,
    /// The monitor's own executable (what `monitor job stop` runs): in a job declared by hand,
    /// only it may end the job from the anchor's shell. None: any program named `monitor`.
    pub agent_program: Option<String>,
    /// Services that take data from anyone (`known-exfil-service`): the built-in list unless
    /// the configuration names another.
    pub exfil_services: std::sync::Arc<crate::rules::exfil_services::ExfilServices>,
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
    /// When its exit was judged (`forget_dead_processes`).
    exited_ns: Option<u64>,
    is_step_root: bool,
    /// A child of a job's anchor seen before its exec: its step is named when it executes
    /// with the step's identity in its environment (the runner forks, then execs the step).
    provisional: bool,
    /// It runs a packing command (`npm pack`): (the command, the directory it packs).
    packing: Option<(String, String)>,
    /// One of the job runner's own processes (its hooks), not a step's: it may end the job
    /// (`job_control`).
    runner_own: bool,
    /// It runs an installed program (`Engine::installed_program`): only then does its name make
    /// it the owner of a credential, or a process lister.
    installed: bool,
    /// The container it runs in (the runtime's id).
    container: Option<String>,
    /// Placed by its container (no ancestor in a job) before its exec: the exec may name its
    /// step (`docker exec -e GITHUB_...`).
    container_entry: bool,
}

/// An interpreter started to read its program from standard input.
struct StdinShell {
    key: ProcessKey,
    argv: crate::event::Argv,
    reported: bool,
}

struct Step {
    identity: StepIdentity,
    root: ProcessKey,
    ended: Option<(u64, String)>,
    checked: bool,
}

struct Job {
    identity: JobIdentity,
    /// Declared over the control socket (a runner hook, `monitor job start`), not only seen
    /// in an environment any local process can set.
    declared: bool,
    /// The process the steps are children of (Runner.Worker): the job ends when it exits.
    anchor: Option<ProcessKey>,
    /// What the anchor runs (the runner's directory is where it lives).
    anchor_exe: Option<String>,
    steps: Vec<Step>,
    /// When the engine first saw the job (its first step, or its declaration).
    started_ns: u64,
    ended_ns: Option<u64>,
    seen: HashSet<String>,
    /// Findings written, and those past `MAX_FINDINGS_PER_JOB` only counted.
    findings_written: usize,
    findings_suppressed: u64,
    /// Which names the job's processes resolved each address from.
    names: dns::JobNames,
    /// Its heavy state was dropped (`JOB_RETENTION_NS` after it ended).
    retired: bool,
    /// Where the job's steps ask for OIDC identity tokens (host, port), when the job may.
    oidc_endpoint: Option<(String, u16)>,
    /// The CI's cache and artifact services (variable, host, port), from the job's
    /// environment: only their origins are kept, never the token beside them.
    runtime_services: Vec<(&'static str, String, u16)>,
    /// The variables' values already read (each action's process carries the same ones).
    runtime_values_seen: Vec<String>,
    /// The runner's directories later jobs run code from (its actions, its tool cache).
    runner_dirs: Vec<(crate::rules::runner_dirs::RunnerDir, String)>,
    /// Whether a process's variables have named them yet.
    runner_dirs_from_env: bool,
    /// The agent was asked to watch the job's tracked sources.
    sources_watched: bool,
    /// The steps' home directory (`HOME` of the first step): a self-hosted runner's service
    /// user often lives outside `/home` (`/var/lib/runner`), and `~/` must still mean it.
    home: Option<String>,
    /// The user whose exec environment made the job, when no hook declared it.
    env_uid: Option<u32>,
    /// The user who declared it over the control socket.
    declared_by: Option<u32>,
    /// The job a user's environment-only jobs past `MAX_UNDECLARED_JOBS_PER_UID` share.
    overflow: bool,
}

struct HookState {
    hook: Hook,
    /// The hook runs with the profile's blessing; what it does is still judged.
    allowed: bool,
    /// Rules its processes' findings broke (they raise the step's install-code finding).
    acted: std::collections::BTreeSet<crate::finding::RuleId>,
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
    /// Findings counted but not written (past `MAX_FINDINGS_PER_JOB`).
    pub findings_suppressed: u64,
    pub started_ns: u64,
    pub ended_ns: u64,
    /// The runner's job hook declared it (its identity is the runner's word, not the job's
    /// environment): only such jobs, or those the configuration names, teach baselines.
    pub declared: bool,
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
    profiles: ProfileSet,
    config: EngineConfig,
    procs: HashMap<ProcessKey, Proc>,
    jobs: Vec<Job>,
    job_by_key: HashMap<String, usize>,
    anchors: HashMap<ProcessKey, usize>,
    /// Install hooks seen, by a number that stays the same while the hook is referred to
    /// (reports key on it); unused ones are dropped with retired jobs.
    hooks: HashMap<usize, HookState>,
    next_hook: usize,
    /// Install-time code per step and ecosystem, reported when the step ends.
    batches: Vec<install_code::Batch>,
    written_pth: HashMap<String, WrittenPth>,
    /// Interpreters reading their program from stdin, by their parent's pid: a sibling that
    /// connects out is feeding them what it downloads (`curl ... | sh`).
    stdin_shells: HashMap<u32, Vec<StdinShell>>,
    /// Connections out kept per parent for an interpreter of their pipeline seen after them.
    recent_downloads: HashMap<u32, Vec<network::RecentDownload>>,
    /// Direct-IP HTTPS connections waiting for their TLS hello (`network::Hello`), with when
    /// they are judged without it.
    awaiting_hello: HashMap<(ProcessKey, IpAddr, u16), (Event, u64)>,
    /// The earliest of their deadlines (`u64::MAX`: none).
    next_hello_deadline: u64,
    /// Jobs that ended since the last `take_ended_jobs`.
    ended: Vec<usize>,
    /// Containers the runtime told of, or whose processes were seen, by id.
    containers: HashMap<String, containers::ContainerState>,
    /// The running containers' addresses, to their ids (asked on every connection).
    container_addresses: HashMap<IpAddr, String>,
    /// How many jobs' homes have been learnt (the agent watches each new home's files).
    homes_learnt: u64,
    /// The "control request refused" warnings' rate (a job can ask a request a second).
    refusals_logged: log_budget::LogBudget,
    /// Grows each time a job's runner directories are learnt.
    runner_dirs_learnt: u64,
    /// Block mode's pending kernel updates.
    enforcement: Vec<Enforcement>,
    /// What the agent must ask git and the kernel about the jobs' tracked sources.
    source_requests: Vec<SourceRequest>,
    last_retire_ns: u64,
    last_anchor_check_ns: u64,
    last_quiet_check_ns: u64,
    /// The latest time of an event the kernel reported (not the clock's ticks, not the
    /// agent's own events): what has been processed up to.
    last_kernel_event_ns: u64,
    /// Jobs whose anchor was found gone, and when.
    anchors_gone_since: HashMap<usize, u64>,
    /// Processes a job's step made siblings of themselves (`CLONE_PARENT`), while they live.
    siblings: HashSet<ProcessKey>,
    /// Anchorless environment-only jobs found with no live process, and since when.
    quiet_since: HashMap<usize, u64>,
    /// Keys of jobs forgotten by `compact_jobs`: an ended job is never re-opened, even after
    /// its record is gone.
    forgotten_keys: attribution::ForgottenKeys,
    next_id: u64,
    now_ns: u64,
    /// Exited processes forgotten because of the bound.
    pub evicted: u64,
    /// Retired jobs forgotten because of `MAX_JOBS_KEPT`.
    pub removed_jobs: u64,
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

impl Engine {
    pub fn new(profile: Profile, config: EngineConfig) -> Self {
        Self::with_profiles(ProfileSet::single(profile), config)
    }

    /// An engine judging each job by the profile its identity picks.
    pub fn with_profiles(profiles: ProfileSet, config: EngineConfig) -> Self {
        Self {
            profiles,
            config,
            procs: HashMap::new(),
            jobs: Vec::new(),
            job_by_key: HashMap::new(),
            anchors: HashMap::new(),
            hooks: HashMap::new(),
            next_hook: 0,
            batches: Vec::new(),
            written_pth: HashMap::new(),
            stdin_shells: HashMap::new(),
            recent_downloads: HashMap::new(),
            awaiting_hello: HashMap::new(),
            next_hello_deadline: u64::MAX,
            ended: Vec::new(),
            containers: HashMap::new(),
            container_addresses: HashMap::new(),
            homes_learnt: 0,
            refusals_logged: Default::default(),
            runner_dirs_learnt: 0,
            enforcement: Vec::new(),
            source_requests: Vec::new(),
            last_retire_ns: 0,
            last_anchor_check_ns: 0,
            last_quiet_check_ns: 0,
            last_kernel_event_ns: 0,
            anchors_gone_since: HashMap::new(),
            quiet_since: HashMap::new(),
            siblings: HashSet::new(),
            forgotten_keys: Default::default(),
            next_id: 0,
            now_ns: 0,
            evicted: 0,
            removed_jobs: 0,
        }
    }

    /// The profiles in force.
    pub fn profiles(&self) -> &ProfileSet {
        &self.profiles
    }

    /// The profile of jobs no configuration entry picks.
    pub fn profile(&self) -> &Profile {
        &self.profiles.default
    }

    /// Judges everything from now on by `profile` (jobs and processes carry on).
    pub fn set_profile(&mut self, profile: Profile) {
        self.profiles = ProfileSet::single(profile);
    }

    /// Judges everything from now on by these profiles (jobs and processes carry on).
    pub fn set_profiles(&mut self, profiles: ProfileSet) {
        self.profiles = profiles;
    }

    fn profile_of(&self, job: usize) -> &Profile {
        self.profiles.for_job(&self.jobs[job].identity)
    }

    /// The home directories of the jobs still running (their credentials and start-up files
    /// are watched by identity).
    pub fn job_homes(&self) -> impl Iterator<Item = &str> {
        self.jobs
            .iter()
            .filter(|j| j.ended_ns.is_none())
            .filter_map(|j| j.home.as_deref())
    }

    /// The home of a job (its first process's `HOME`), ended or not, while the engine keeps it.
    pub fn job_home(&self, key: &str) -> Option<&str> {
        self.job_by_key
            .get(key)
            .and_then(|&j| self.jobs[j].home.as_deref())
    }

    /// The runner directories of the jobs seen (ended ones too: the directories outlive them).
    pub fn runner_dirs(&self) -> impl Iterator<Item = &str> {
        self.jobs
            .iter()
            .flat_map(|j| j.runner_dirs.iter().map(|(_, d)| d.as_str()))
    }

    /// Grows each time a job's runner directories are learnt.
    pub fn runner_dirs_learnt(&self) -> u64 {
        self.runner_dirs_learnt
    }

    /// Grows each time a job's home is learnt.
    pub fn homes_learnt(&self) -> u64 {
        self.homes_learnt
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
                    findings_suppressed: job.findings_suppressed,
                    identity: job.identity.clone(),
                    started_ns: job.started_ns,
                    ended_ns: job.ended_ns.unwrap_or(job.started_ns),
                    declared: job.declared,
                }
            })
            .collect()
    }

    /// What block mode must write to the kernel since the last call.
    pub fn take_enforcement(&mut self) -> Vec<Enforcement> {
        std::mem::take(&mut self.enforcement)
    }

    /// The source watches to start (a checkout step ended) and end (its job ended).
    pub fn take_source_requests(&mut self) -> Vec<SourceRequest> {
        std::mem::take(&mut self.source_requests)
    }

    /// Whether the job was declared over the control socket (its identity is the runner's
    /// word, not only an environment any local process can set).
    /// A number for a finding made outside the engine's rules (the baseline's, at a job's end).
    pub fn take_finding_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn job_declared(&self, key: &str) -> bool {
        self.job_by_key
            .get(key)
            .is_some_and(|&j| self.jobs[j].declared)
    }

    /// Jobs seen and not ended.
    /// Jobs the engine holds (running, ended, retired).
    pub fn jobs_known(&self) -> usize {
        self.jobs.len()
    }

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
                .map(|h| (h, &self.hooks[&h].hook, self.hooks[&h].allowed)),
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

    /// Judges one event.
    pub fn on_event(&mut self, e: &Event) -> Vec<Finding> {
        let mut out = Vec::new();
        if !matches!(
            e.detail,
            Detail::Lost { .. }
                | Detail::JobStart { .. }
                | Detail::JobEnd { .. }
                | Detail::Resume { .. }
                | Detail::Container { .. }
        ) {
            self.last_kernel_event_ns = self.last_kernel_event_ns.max(e.ts_ns);
        }
        self.advance(e.ts_ns, &mut out);
        let key = key_of(e.process.pid, e.process.start_ticks);
        match &e.detail {
            Detail::Exit { .. } => {
                self.siblings.remove(&key);
                if let Some(job) = self.anchors.get(&key).copied() {
                    self.end_job(job, e.ts_ns);
                    self.judge_connections_without_hello(&mut out, Some(job));
                    self.flush_install_code(&mut out, Some(job));
                }
            }
            Detail::JobStart { job: identity, .. } => {
                match self.job_control_verdict(e) {
                    Ok(()) => self.declare_job(e, key, identity),
                    Err(why) => self.refused_job_control(e, &why, &mut out),
                }
                return out;
            }
            Detail::JobEnd { job, .. } => {
                match self.job_control_verdict(e) {
                    Ok(()) => {
                        if let Some(job) = self.job_by_key.get(job).copied() {
                            self.end_job(job, e.ts_ns);
                            self.judge_connections_without_hello(&mut out, Some(job));
                            self.flush_install_code(&mut out, Some(job));
                        }
                    }
                    Err(why) => self.refused_job_control(e, &why, &mut out),
                }
                return out;
            }
            Detail::Container {
                change,
                container,
                requested_by,
            } => {
                self.on_container(e, *change, container, requested_by, &mut out);
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
            if *access == Access::Read && lifecycle::is_site_pth(path) {
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
            Detail::Tls { .. } => self.on_tls(e, key, &mut out),
            Detail::Tamper { .. } => self.on_tamper(e, key, &mut out),
            Detail::Open { .. } => {
                let before = out.len();
                self.on_open(e, key, &mut out);
                // A process the kernel killed (or would have) is reported, even when the rules
                // had nothing to say (an allowance the kernel does not know).
                if let Some(response) = e.detail.response() {
                    if !out[before..].iter().any(|f| f.response.is_some()) {
                        self.on_unjudged_response(e, key, response, &mut out);
                    }
                }
            }
            Detail::Name { .. } => self.on_name(e, key, &mut out),
            Detail::Fork {
                shares_descriptors: true,
                response: Some(_),
                ..
            } => self.on_shared_descriptors(e, key, &mut out),
            Detail::Fork { sibling: true, .. } => {
                // A step's process made a sibling of itself (`CLONE_PARENT`), under the runner's
                // Worker if it was the step's root: it is the step's, and the control socket
                // must not take it for the runner's own (see `runner_processes`).
                if self.siblings.len() < MAX_SIBLINGS
                    && self
                        .procs
                        .get(&key)
                        .is_some_and(|p| !p.runner_own && self.is_live(p.job))
                {
                    self.siblings.insert(key);
                }
            }
            Detail::Fork { sibling: false, .. }
            | Detail::JobStart { .. }
            | Detail::JobEnd { .. }
            | Detail::Resume { .. }
            | Detail::Container { .. }
            | Detail::RuntimeClient { .. }
            | Detail::Lost { .. } => {}
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
        self.judge_connections_without_hello(out, None);
        self.flush_install_code(out, None);
        if self.now_ns != u64::MAX
            && self.now_ns
                >= self
                    .last_anchor_check_ns
                    .saturating_add(ANCHOR_CHECK_EVERY_NS)
        {
            self.last_anchor_check_ns = self.now_ns;
            self.end_jobs_of_vanished_anchors(out);
        }
        if self.now_ns != u64::MAX
            && self.now_ns
                >= self
                    .last_quiet_check_ns
                    .saturating_add(ANCHOR_CHECK_EVERY_NS)
        {
            self.last_quiet_check_ns = self.now_ns;
            self.end_quiet_anchorless_jobs(out);
        }
        if self.now_ns >= self.last_retire_ns.saturating_add(RETIRE_EVERY_NS) {
            self.last_retire_ns = self.now_ns;
            self.retire_old_jobs();
        }
    }

    /// Says the kernel's events up to `ts_ns` have been taken in (the live agent's events that
    /// are not judged, such as its heartbeat's, still show how far it has read).
    pub fn kernel_events_up_to(&mut self, ts_ns: u64) {
        self.last_kernel_event_ns = self.last_kernel_event_ns.max(ts_ns);
    }

    /// The agent's clock: the latest time it has been given (events and ticks).
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// Ends the jobs whose anchor no longer runs although its exit was never seen (lost in a
    /// full ring): without it they would never end and never be reported. Only once the
    /// kernel's events up to the moment it was found gone have been judged (a backlog may
    /// still hold the job's last events and the anchor's exit). Live engine only
    /// (`still_running`); a replay sees what the log has.
    fn end_jobs_of_vanished_anchors(&mut self, out: &mut Vec<Finding>) {
        let Some(still_running) = self.config.still_running else {
            return;
        };
        let now = self.now_ns;
        let gone: Vec<usize> = self
            .anchors
            .iter()
            .filter(|(key, _)| !still_running(key.tgid, key.start_ticks))
            .map(|(_, job)| *job)
            .collect();
        self.anchors_gone_since.retain(|job, _| gone.contains(job));
        for job in gone {
            let since = *self.anchors_gone_since.entry(job).or_insert(now);
            if self.last_kernel_event_ns >= since {
                self.anchors_gone_since.remove(&job);
                self.end_job(job, now);
                self.judge_connections_without_hello(out, Some(job));
                self.flush_install_code(out, Some(job));
            }
        }
    }

    /// Ends the environment-only jobs that have no anchor (nothing will mark their end: their
    /// first process was adopted by init) once none of their processes has run for
    /// `QUIET_JOB_END_NS`: without it a user's `MAX_UNDECLARED_JOBS_PER_UID` would stay taken
    /// for good. Decided on the events' clock, so a replay agrees.
    fn end_quiet_anchorless_jobs(&mut self, out: &mut Vec<Finding>) {
        let now = self.now_ns;
        let candidates: Vec<usize> = (0..self.jobs.len())
            .filter(|&j| {
                let job = &self.jobs[j];
                job.ended_ns.is_none()
                    && !job.declared
                    && job.env_uid.is_some()
                    && job.anchor.is_none()
            })
            .collect();
        if candidates.is_empty() {
            self.quiet_since.clear();
            return;
        }
        let busy: HashSet<usize> = self
            .procs
            .values()
            .filter(|p| p.alive)
            .map(|p| p.job)
            .collect();
        self.quiet_since
            .retain(|j, _| candidates.contains(j) && !busy.contains(j));
        for job in candidates.into_iter().filter(|j| !busy.contains(j)) {
            let since = *self.quiet_since.entry(job).or_insert(now);
            if now >= since.saturating_add(QUIET_JOB_END_NS) {
                self.quiet_since.remove(&job);
                log::info!(
                    "job {} (known from exec environments only, no anchor) ended: none of its processes ran for {} s",
                    self.jobs[job].identity.key,
                    QUIET_JOB_END_NS / 1_000_000_000
                );
                self.end_job(job, now);
                self.judge_connections_without_hello(out, Some(job));
                self.flush_install_code(out, Some(job));
            }
        }
    }

    /// Ended jobs whose heavy state has been dropped.
    pub fn retired_jobs(&self) -> usize {
        self.jobs.iter().filter(|j| j.retired).count()
    }

    fn rules_of(&self, job: usize, step: usize) -> impl Iterator<Item = &Rules> {
        let identity = self.jobs[job].steps.get(step).map(|s| &s.identity);
        self.profile_of(job).rules_for(identity)
    }
}

#[cfg(test)]
pub(crate) mod tests;
