//! Which job, step and install hook a process belongs to, and when a job begins and ends.
//!
//! A process with no attributed ancestor whose exec carries a job identity in its environment
//! starts a step; a child of a job's anchor (the runner's Worker) starts a step; everything else
//! inherits its nearest attributed ancestor's place. In block mode every new step root, and the
//! anchor of a declared job, is handed to the kernel (`Enforcement`), which judges what they
//! start as the engine does.

use std::collections::HashSet;

use super::{
    key_of, link_of, Engine, Job, Proc, Step, JOB_RETENTION_NS, MAX_JOBS_KEPT,
    MAX_TRACKED_PROCESSES, MAX_UNDECLARED_JOBS_PER_UID,
};
use crate::{
    ci::{identity_from_env, JobIdentity, StepIdentity},
    event::{Detail, Event},
    finding::Enforcement,
    process_tree::ProcessKey,
    profile::EgressMode,
    rules::{dns, executables, tool_of},
};

/// Programs that adopt orphans (init, container inits, service managers): a job's process found
/// under one was reparented there, and the reaper is not the job's runner.
pub(super) const REAPERS: &[&str] = &[
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

impl Engine {
    /// A job declared through the control socket (a runner hook, `monitor job start`), anchored
    /// at the event's process.
    pub(super) fn declare_job(&mut self, e: &Event, key: ProcessKey, identity: &JobIdentity) {
        let explicit = identity.provider == "explicit";
        let job = self.job_index(identity.clone());
        // Declared again (a restarted hook): the latest anchor wins.
        self.jobs[job].ended_ns = None;
        self.jobs[job].declared = true;
        if let Detail::JobStart {
            requested_by_uid, ..
        } = &e.detail
        {
            self.jobs[job].declared_by = Some(*requested_by_uid);
        }
        self.jobs[job].anchor = Some(key);
        self.jobs[job].anchor_exe = e.process.exe.clone();
        self.anchors.insert(key, job);
        self.enforce_process(job, e.process.pid, !explicit);
        // The runner's directories are watched from the declaration, before any step runs.
        if self.jobs[job].runner_dirs.is_empty() && !explicit {
            if let Some(workspace) = &identity.workspace {
                let env = [("GITHUB_WORKSPACE".to_string(), workspace.clone())].into();
                let dirs = crate::rules::runner_dirs::from_env(&env);
                if !dirs.is_empty() {
                    self.jobs[job].runner_dirs = dirs;
                    self.runner_dirs_learnt += 1;
                }
            }
        }
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
                    exited_ns: None,
                    is_step_root: true,
                    provisional: false,
                    packing: None,
                    // The CI's shell runs the job's own code.
                    runner_own: false,
                    installed: false,
                    container: None,
                    container_entry: false,
                },
            );
        }
    }

    pub(super) fn end_job(&mut self, job: usize, ts_ns: u64) {
        if self.jobs[job].ended_ns.is_none() {
            self.jobs[job].ended_ns = Some(ts_ns);
            self.ended.push(job);
            let key = self.jobs[job].identity.key.clone();
            if self.jobs[job].sources_watched {
                self.source_requests
                    .push(super::SourceRequest::Forget { job: key.clone() });
            }
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

    /// Drops what ended jobs no longer need.
    pub(super) fn retire_old_jobs(&mut self) {
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
        self.compact_jobs();
        self.forget_dead_processes();
    }

    /// Forgets processes that exited over `DEAD_PROCESS_KEPT_NS` ago: their records (and the
    /// command lines they hold) are not needed once their last events are judged, and an exec
    /// storm would otherwise keep hundreds of thousands of them. Measured on the kernel's
    /// clock as far as its records have been read (a pipeline behind by more than that still
    /// has the process's queued records to judge), not the wall clock.
    fn forget_dead_processes(&mut self) {
        let now = self.last_kernel_event_ns;
        self.procs.retain(|_, p| {
            p.exited_ns
                .is_none_or(|t| now < t.saturating_add(super::DEAD_PROCESS_KEPT_NS))
        });
    }

    /// Finds (or makes) the engine's record of the event's process; false when it is in no job.
    pub(super) fn attribute(&mut self, e: &Event, key: ProcessKey) -> bool {
        if let Some(job) = self.procs.get(&key).map(|p| p.job) {
            // Now in a container's own view of the file system (the runtime's child, forked
            // on the host, executing the container's program): the container's from here on.
            if e.process.in_container_view {
                self.procs.get_mut(&key).expect("checked").container = e.process.container.clone();
            }
            if let Detail::Exec { env, .. } = &e.detail {
                let runner_own = self.stays_runner_own(job, e);
                let proc = self.procs.get_mut(&key).expect("checked");
                proc.runner_own &= runner_own;
                proc.link = link_of(e);
                proc.tool = tool_of(e.process.exe.as_deref(), &e.process.argv);
                let trusted = self.installed_program(e, job);
                let proc = self.procs.get_mut(&key).expect("checked");
                proc.installed = trusted;
                if std::mem::take(&mut proc.provisional) {
                    let (job, step) = (proc.job, proc.step);
                    if let Some((job_id, step_id)) = identity_from_env(env) {
                        if job_id.key == self.jobs[job].identity.key {
                            self.jobs[job].steps[step].identity = step_id;
                        }
                    }
                }
                // A process the runtime started in a container (`docker exec`'s, seen at its
                // fork) names its step when it executes, as the runner's steps do.
                if std::mem::take(&mut proc.container_entry) {
                    // Seen at its fork in the container's place; its exec says who asked the
                    // runtime for it (`docker exec` into a container of another's).
                    if let Detail::Exec {
                        runtime_clients, ..
                    } = &e.detail
                    {
                        if let (Some((j, s)), _) = self.link_to_clients(runtime_clients) {
                            let proc = self.procs.get_mut(&key).expect("checked");
                            proc.job = j;
                            proc.step = s;
                        }
                    }
                    let job = self.procs[&key].job;
                    if let Some((job_id, step_id)) = identity_from_env(env) {
                        if job_id.key == self.jobs[job].identity.key {
                            let step = self.new_step(job, step_id, key, e.process.pid);
                            let proc = self.procs.get_mut(&key).expect("checked");
                            proc.step = step;
                            proc.is_step_root = true;
                        }
                    }
                }
            }
            return true;
        }
        // The nearest ancestor that is in a job, or that anchors one: under an anchor, a process
        // with no job member between them starts a step of its own.
        enum Found {
            /// (job, step, hook, packing, runner_own, installed): the nearest member's place,
            /// and whether it runs an installed program (a forked child runs the same).
            Member(
                usize,
                usize,
                Option<usize>,
                Option<(String, String)>,
                bool,
                bool,
                Option<String>,
            ),
            ChildOfAnchor(usize),
        }
        let found = e.ancestry.iter().find_map(|a| {
            let k = key_of(a.pid, a.start_ticks);
            if let Some(p) = self.procs.get(&k) {
                // A child of a declared job's anchor (its CI shell) starts as the runner's own.
                let runner_own = p.runner_own || self.jobs[p.job].anchor == Some(k);
                return Some(Found::Member(
                    p.job,
                    p.step,
                    p.hook,
                    p.packing.clone(),
                    runner_own,
                    p.installed,
                    p.container.clone(),
                ));
            }
            self.anchors.get(&k).map(|job| Found::ChildOfAnchor(*job))
        });
        let mut provisional = false;
        let mut container_entry = false;
        // Which container the process counts as being in: one the runtime started it in (no job
        // ancestor), one whose file system view it runs in, or its parent's when it is still
        // there. A host process that moves itself into a container's cgroup is not a
        // container's process: its paths are the host's.
        let mut container = None;
        // A forked child of a packing process packs too, until it executes something else.
        let mut packing = None;
        let runner_own;
        let mut installed = false;
        let (job, step, hook, is_root) = match found {
            Some(Found::Member(
                job,
                step,
                hook,
                parent_packing,
                parent_runner_own,
                parent_installed,
                parent_container,
            )) => {
                packing = parent_packing;
                runner_own = parent_runner_own;
                installed = parent_installed;
                // Its parent's container, or one it runs in the view of (a program the
                // runtime started below a step's own client: `podman run`).
                container = if e.process.in_container_view {
                    e.process.container.clone()
                } else {
                    parent_container.filter(|c| e.process.container.as_ref() == Some(c))
                };
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
                    id: crate::ci::RUNNER_STEP_ID.into(),
                    action: None,
                });
                let step = self.new_step(job, identity, key, e.process.pid);
                runner_own = true;
                (job, step, None, true)
            }
            None if e.process.container.is_some() => {
                let id = e.process.container.as_deref().unwrap_or_default();
                let (mut job, mut step) = self.container_place(id, e);
                // Started by the runtime on some client's word (`docker exec` into a container
                // of another job's or the host's): that client's step, when it is in a job.
                if let Detail::Exec {
                    runtime_clients, ..
                } = &e.detail
                {
                    if let (Some((j, s)), _) = self.link_to_clients(runtime_clients) {
                        (job, step) = (j, s);
                    }
                }
                // A `container:` job's step: the runner execs it in the job's container with
                // the step's identity in its environment. Only a step of the job the container
                // belongs to.
                let own_step = match &e.detail {
                    Detail::Exec { env, .. } | Detail::Resume { env, .. } => identity_from_env(env)
                        .filter(|(j, _)| j.key == self.jobs[job].identity.key)
                        .map(|(_, s)| s),
                    _ => None,
                };
                runner_own = false;
                container_entry = !matches!(e.detail, Detail::Exec { .. });
                container = e.process.container.clone();
                match own_step {
                    Some(identity) => {
                        let step = self.new_step(job, identity, key, e.process.pid);
                        (job, step, None, true)
                    }
                    None => (job, step, None, false),
                }
            }
            None => {
                let env = match &e.detail {
                    Detail::Exec { env, .. } | Detail::Resume { env, .. } => env,
                    _ => return false,
                };
                let Some((job_id, step_id)) = identity_from_env(env) else {
                    return false;
                };
                // Any local program can put `GITHUB_*` in an environment: jobs seen only that
                // way are bounded per user; past the bound, the user's new ones share one job
                // (still judged, never dropped).
                let uid = e.process.uid;
                let job = match self.job_by_key.get(&job_id.key) {
                    Some(&job) => job,
                    None if self.undeclared_live(uid) >= MAX_UNDECLARED_JOBS_PER_UID => {
                        self.overflow_job(uid, &job_id)
                    }
                    None => {
                        let mut job_id = job_id;
                        let forgotten = self
                            .forgotten_keys
                            .contains(&job_id.key)
                            .then(|| job_id.key.clone());
                        if let Some(key) = &forgotten {
                            // A key whose job ended and was forgotten: a new job under a key of
                            // its own, so the ended job's report is never written over.
                            job_id.key = format!("{key}/again-{}", self.now_ns);
                        }
                        let job = self.job_index(job_id);
                        self.jobs[job].env_uid = Some(uid);
                        if let Some(key) = forgotten {
                            // Later processes naming the same key join it (one job, not one
                            // each).
                            self.job_by_key.insert(key, job);
                        }
                        job
                    }
                };
                let parent = e.ancestry.first().map(|a| key_of(a.pid, a.start_ticks));
                // The parent anchors the job (the runner's Worker), unless it merely adopted the
                // process: init, or whoever a process found running at start-up was reparented
                // to (a step's daemon outlives its step). Anchoring there would pull every other
                // process on the machine into the job.
                let adopted = e
                    .ancestry
                    .first()
                    .is_some_and(|p| p.pid == 1 || REAPERS.iter().any(|r| p.comm.starts_with(r)));
                if self.jobs[job].anchor.is_none() && !adopted && !self.jobs[job].overflow {
                    if let Some(parent) = parent {
                        self.jobs[job].anchor = Some(parent);
                        self.jobs[job].anchor_exe = e.ancestry.first().and_then(|a| a.exe.clone());
                        self.anchors.insert(parent, job);
                        // The steps it starts from now on are the job's in the kernel from
                        // their fork, not from when their exec is read here.
                        self.enforce_process(job, parent.tgid, true);
                    }
                }
                // A direct child of the job's anchor: the runner's own unless it runs a named
                // step (the job-started hook is usually the first process seen this way).
                runner_own = parent.is_some() && self.jobs[job].anchor == parent;
                let step = self.new_step(job, step_id, key, e.process.pid);
                (job, step, None, true)
            }
        };
        if self.procs.len() >= MAX_TRACKED_PROCESSES {
            let before = self.procs.len();
            self.procs.retain(|_, p| p.alive);
            self.evicted += (before - self.procs.len()) as u64;
        }
        let runner_own = runner_own && self.stays_runner_own(job, e);
        match &e.detail {
            Detail::Exec { .. } => installed = self.installed_program(e, job),
            // Running when the agent started: its executable's place is all there is to go by.
            Detail::Resume { .. } => {
                installed = e
                    .process
                    .exe
                    .as_deref()
                    .and_then(executables::installed_place)
                    .is_some()
            }
            _ => {}
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
                exited_ns: None,
                is_step_root: is_root,
                provisional,
                packing,
                runner_own,
                installed,
                container,
                container_entry,
            },
        );
        true
    }

    /// Whether an exec runs an installed program: the program it runs (a loader's or an
    /// interpreter's file, as `program_path` says) lives where packages and toolchains install
    /// (`rules::executables::installed_place`) and was not written during this job. Only such a
    /// program's name is proof of what it is: a copy of `cat` renamed `npm`, or a script named
    /// `npm` in the workspace, owns nothing.
    pub(super) fn installed_program(&self, e: &Event, job: usize) -> bool {
        let Detail::Exec {
            filename,
            cwd,
            exe_changed_ns,
            ..
        } = &e.detail
        else {
            return false;
        };
        let exe = e.process.exe.as_deref().unwrap_or_default();
        let program = crate::event::program_path(exe, filename, cwd, &e.process.argv);
        let place = executables::installed_place(&program);
        // The runner's tool cache is filled by setup actions during jobs (a first run
        // downloads node there): its programs count as installed whenever they were written.
        place == Some(executables::InstallPlace::ToolCache)
            || (place == Some(executables::InstallPlace::System)
                && exe_changed_ns.is_none_or(|t| t < self.jobs[job].started_ns))
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

    /// Jobs of `uid` seen only in exec environments and not ended.
    fn undeclared_live(&self, uid: u32) -> usize {
        self.jobs
            .iter()
            .filter(|j| {
                j.env_uid == Some(uid) && !j.declared && j.ended_ns.is_none() && !j.overflow
            })
            .count()
    }

    /// The job that `uid`'s environment-only jobs past the bound share.
    fn overflow_job(&mut self, uid: u32, wanted: &JobIdentity) -> usize {
        if let Some(open) = self
            .jobs
            .iter()
            .position(|j| j.overflow && j.env_uid == Some(uid) && j.ended_ns.is_none())
        {
            return open;
        }
        // A new one each time the last has ended (its report is written; never re-opened).
        let identity = JobIdentity {
            provider: wanted.provider.clone(),
            key: format!(
                "{}/undeclared-over-bound/uid-{uid}/{}",
                wanted.provider, self.now_ns
            ),
            name: format!(
                "jobs of uid {uid} past {MAX_UNDECLARED_JOBS_PER_UID} undeclared at once"
            ),
            repository: None,
            run_id: None,
            attempt: None,
            workflow: None,
            runner: wanted.runner.clone(),
            workspace: None,
        };
        let job = self.job_index(identity);
        if !self.jobs[job].overflow {
            self.jobs[job].overflow = true;
            self.jobs[job].env_uid = Some(uid);
            log::warn!(
                "uid {uid} has {MAX_UNDECLARED_JOBS_PER_UID} jobs known only from exec environments; its further ones are judged as one job ({})",
                self.jobs[job].identity.key
            );
        }
        job
    }

    /// Past `MAX_JOBS_KEPT`, forgets retired jobs none of whose processes is alive any more
    /// (their reports were written when they ended), and install hooks nothing refers to.
    /// Indices change: every table that holds one is rewritten.
    pub(super) fn compact_jobs(&mut self) {
        if self.jobs.len() <= MAX_JOBS_KEPT {
            return;
        }
        let mut keep: Vec<bool> = self.jobs.iter().map(|j| !j.retired).collect();
        for p in self.procs.values().filter(|p| p.alive) {
            keep[p.job] = true;
        }
        for &j in self.anchors.values().chain(self.ended.iter()) {
            keep[j] = true;
        }
        for b in &self.batches {
            keep[b.job()] = true;
        }
        for w in self.written_pth.values() {
            keep[w.job] = true;
        }
        let mut new_index = vec![usize::MAX; self.jobs.len()];
        let mut next = 0;
        for (old, kept) in keep.iter().enumerate() {
            if *kept {
                new_index[old] = next;
                next += 1;
            }
        }
        if next == self.jobs.len() {
            return;
        }
        for (job, _) in self.jobs.iter().zip(&keep).filter(|(_, k)| !**k) {
            self.forgotten_keys.insert(&job.identity.key);
        }
        // Keyed by index: renumbered as the jobs are.
        let renumber = |m: &mut std::collections::HashMap<usize, u64>| {
            *m = m
                .drain()
                .filter(|(j, _)| keep[*j])
                .map(|(j, since)| (new_index[j], since))
                .collect();
        };
        renumber(&mut self.anchors_gone_since);
        renumber(&mut self.quiet_since);
        let jobs = std::mem::take(&mut self.jobs);
        self.jobs = jobs
            .into_iter()
            .zip(&keep)
            .filter_map(|(j, k)| k.then_some(j))
            .collect();
        self.procs.retain(|_, p| keep[p.job]);
        for p in self.procs.values_mut() {
            p.job = new_index[p.job];
        }
        for j in self.anchors.values_mut() {
            *j = new_index[*j];
        }
        for j in &mut self.ended {
            *j = new_index[*j];
        }
        for b in &mut self.batches {
            b.set_job(new_index[b.job()]);
        }
        for w in self.written_pth.values_mut() {
            w.job = new_index[w.job];
        }
        self.job_by_key = self
            .jobs
            .iter()
            .enumerate()
            .map(|(i, j)| (j.identity.key.clone(), i))
            .collect();
        self.removed_jobs += (keep.len() - next) as u64;
        self.compact_hooks();
    }

    /// Drops install hooks no process, batch or planted `.pth` refers to any more.
    fn compact_hooks(&mut self) {
        let used: HashSet<usize> = self
            .procs
            .values()
            .filter_map(|p| p.hook)
            .chain(self.written_pth.values().filter_map(|w| w.hook))
            .chain(self.batches.iter().flat_map(|b| b.hooks()))
            .collect();
        self.hooks.retain(|h, _| used.contains(h));
    }

    pub(super) fn job_index(&mut self, identity: JobIdentity) -> usize {
        if let Some(i) = self.job_by_key.get(&identity.key) {
            return *i;
        }
        self.jobs.push(Job {
            identity: identity.clone(),
            declared: false,
            anchor: None,
            anchor_exe: None,
            steps: Vec::new(),
            started_ns: self.now_ns,
            ended_ns: None,
            seen: HashSet::new(),
            findings_written: 0,
            findings_suppressed: 0,
            names: dns::JobNames::default(),
            retired: false,
            oidc_endpoint: None,
            runtime_services: Vec::new(),
            runtime_values_seen: Vec::new(),
            runner_dirs: Vec::new(),
            runner_dirs_from_env: false,
            sources_watched: false,
            home: None,
            env_uid: None,
            declared_by: None,
            overflow: false,
        });
        let job = self.jobs.len() - 1;
        self.job_by_key.insert(identity.key, job);
        job
    }

    /// Whether the kernel acts for this job's processes: egress block mode, or kill responses.
    fn kernel_acts_for(&self, job: usize) -> bool {
        let profile = self.profile_of(job);
        profile.egress_mode() == EgressMode::Block || profile.responses.kills()
    }

    fn enforce(&mut self, job: usize, action: Enforcement) {
        if self.kernel_acts_for(job) {
            self.enforcement.push(action);
        }
    }

    /// Where the kernel acts for the job (block mode, kill responses), has it judge `pid` (and
    /// what it starts) by the job's profile.
    fn enforce_process(&mut self, job: usize, pid: u32, anchor_only: bool) {
        if !self.kernel_acts_for(job) {
            return;
        }
        let profile = self.profile_of(job);
        let rules = std::iter::once(&profile.rules)
            .chain(profile.steps.values())
            .flat_map(|r| r.egress.allow.iter().cloned())
            .collect();
        let mut policy = profile.responses.kernel_policy();
        if profile.egress_mode() == EgressMode::Block {
            policy |= monitor_common::POLICY_EGRESS_BLOCK;
        }
        self.enforcement.push(Enforcement::Process {
            job: self.jobs[job].identity.key.clone(),
            pid,
            anchor_only,
            rules,
            policy,
        });
    }

    /// Tells the kernel that `pid` runs a dependency's install-time code (found at its exec),
    /// when the job's profile kills install-time code's credential reads.
    pub(super) fn enforce_install_code(&mut self, job: usize, pid: u32) {
        if self.profile_of(job).responses.credential_read == crate::profile::Response::Kill {
            self.enforcement.push(Enforcement::InstallCode { pid });
        }
    }
}

/// Keys of jobs the engine forgot, remembered by a 64-bit hash (bounded, oldest out first).
#[derive(Default)]
pub(super) struct ForgottenKeys {
    set: HashSet<u64>,
    order: std::collections::VecDeque<u64>,
}

impl ForgottenKeys {
    fn hash(key: &str) -> u64 {
        use std::hash::{Hash as _, Hasher as _};
        // Fixed keys: a replay of the same log decides the same.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        h.finish()
    }

    pub(super) fn insert(&mut self, key: &str) {
        let h = Self::hash(key);
        if self.set.insert(h) {
            self.order.push_back(h);
            if self.order.len() > super::MAX_FORGOTTEN_KEYS {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    pub(super) fn contains(&self, key: &str) -> bool {
        self.set.contains(&Self::hash(key))
    }
}
