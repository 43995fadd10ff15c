//! Detections on what processes are: what they execute (install-time code, downloads, programs
//! the profile does not list), how long they live (beyond their step), and the syscalls they
//! aim at the monitor or at other processes' memory.

use serde_json::json;

use super::{
    emit::{Place, Raw, Trigger},
    Engine, HookState, STEP_GRACE_NS,
};
use crate::{
    event::{Detail, Event, TamperSyscall},
    finding::{ChainLink, Finding, RuleId, Severity},
    process_tree::ProcessKey,
    profile::{Allowance, Rules},
    rules::{background, defences, executables, lifecycle, packaging},
};

/// Distinct values of those variables read per job (a job's own variables are bounded too).
const MAX_RUNTIME_VALUES: usize = 16;

/// The origin (host, port) of the URL in environment variable `variable`.
fn origin_of(
    env: &std::collections::BTreeMap<String, String>,
    variable: &str,
) -> Option<(String, u16)> {
    let url = url::Url::parse(env.get(variable)?).ok()?;
    Some((
        url.host_str()?.to_ascii_lowercase(),
        url.port_or_known_default()?,
    ))
}

/// Where the runner tells actions the CI's cache and artifact services are.
const RUNTIME_SERVICE_VARIABLES: [&str; 3] = [
    "ACTIONS_CACHE_URL",
    "ACTIONS_RESULTS_URL",
    "ACTIONS_RUNTIME_URL",
];

impl Engine {
    pub(super) fn on_exec(&mut self, e: &Event, key: ProcessKey, out: &mut Vec<Finding>) {
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
        let exe = e.process.exe.clone().unwrap_or_default();
        let (job, step, inherited_hook, step_root) = {
            let p = &self.procs[&key];
            (p.job, p.step, p.hook, p.is_step_root)
        };
        let program = crate::event::program_path(&exe, filename, cwd, &e.process.argv);
        // A step's own script, which the runner wrote and started (`bash -e $RUNNER_TEMP/x.sh`,
        // `node _actions/.../index.js`), is the step, not a program the job dropped.
        let runner_started_script =
            step_root && crate::event::argument_program(&exe, &e.process.argv).is_some();
        let (program, exe_changed_ns) = if runner_started_script {
            (crate::event::program_path(&exe, filename, cwd, &[]), &None)
        } else {
            (program, exe_changed_ns)
        };
        let workspace = self.jobs[job].identity.workspace.clone();
        {
            let proc = self.procs.get_mut(&key).expect("attributed");
            proc.packing = packaging::packing_command(&proc.tool, &e.process.argv)
                .map(|command| (command, cwd.clone()));
        }
        let tool = self.procs[&key].tool.clone();
        if let Some(what) = defences::command_disables(&tool, &e.process.argv) {
            let raw = Raw::new(
                RuleId::DefenceTampering,
                format!("{tool} asked to switch off a host defence: {what}"),
                what.clone(),
            )
            .evidence(vec![("command", json!(what)), ("route", json!("command"))]);
            self.emit_for(out, raw, e, key);
        }
        if self.jobs[job].home.is_none() {
            self.jobs[job].home = env
                .get("HOME")
                .filter(|h| h.starts_with('/') && h.len() > 1)
                .map(|h| h.trim_end_matches('/').to_string());
            if self.jobs[job].home.is_some() {
                self.homes_learnt += 1;
            }
        }
        if self.jobs[job].oidc_endpoint.is_none() {
            self.jobs[job].oidc_endpoint = origin_of(env, "ACTIONS_ID_TOKEN_REQUEST_URL");
        }
        // From the first step's variables (they name the tool cache, which the declaration's
        // workspace alone does not); the directories learnt are only ever added to.
        if !self.jobs[job].runner_dirs_from_env {
            let dirs = crate::rules::runner_dirs::from_env(env);
            self.jobs[job].runner_dirs_from_env = !dirs.is_empty();
            for dir in dirs {
                if !self.jobs[job].runner_dirs.contains(&dir)
                    && self.jobs[job].runner_dirs.len() < 4
                {
                    self.jobs[job].runner_dirs.push(dir);
                    self.runner_dirs_learnt += 1;
                }
            }
        }
        // On GitHub Enterprise Server the services live under the server's own origin
        // (`/_services/...`), which steps reach for git and the API: the host cannot tell them
        // apart there, so a service at the server's origin is not watched. Asked only for a
        // value not seen yet: every action's process carries the same ones.
        let mut server = None;
        for variable in RUNTIME_SERVICE_VARIABLES {
            let Some(value) = env.get(variable) else {
                continue;
            };
            let seen = &mut self.jobs[job].runtime_values_seen;
            if seen.contains(value) || seen.len() >= MAX_RUNTIME_VALUES {
                continue;
            }
            seen.push(value.clone());
            let Some((host, port)) = origin_of(env, variable) else {
                continue;
            };
            let server: &[Option<(String, u16)>; 2] = server.get_or_insert_with(|| {
                [
                    origin_of(env, "GITHUB_SERVER_URL"),
                    origin_of(env, "GITHUB_API_URL"),
                ]
            });
            if server
                .iter()
                .flatten()
                .any(|(h, p)| *h == host && *p == port)
            {
                continue;
            }
            let known = &mut self.jobs[job].runtime_services;
            if known.len() < RUNTIME_SERVICE_VARIABLES.len() * 2
                && !known.iter().any(|(_, h, p)| *h == host && *p == port)
            {
                known.push((variable, host, port));
            }
        }
        // Build tools above this process: their own builds and temporary places are theirs.
        let frontends: Vec<lifecycle::Frontend> = e
            .ancestry
            .iter()
            .filter_map(|a| lifecycle::frontend_of(&a.argv))
            .collect();
        let hook = lifecycle::npm_hook(env, cwd)
            .or_else(|| lifecycle::pip_hook(&e.process.argv, cwd, workspace.as_deref(), &frontends))
            .or_else(|| lifecycle::cargo_hook(&exe, env, workspace.as_deref()))
            .filter(|h| h.dependency);
        if let Some(hook) = hook {
            let same = inherited_hook.is_some_and(|i| {
                let h = &self.hooks[&i].hook;
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
                let index = self.next_hook;
                self.next_hook += 1;
                self.hooks.insert(
                    index,
                    HookState {
                        hook: hook.clone(),
                        allowed,
                        acted: Default::default(),
                    },
                );
                self.procs.get_mut(&key).expect("attributed").hook = Some(index);
                self.enforce_install_code(job, e.process.pid);
                if !allowed {
                    self.note_install_code(index, e, key);
                }
            }
        }

        if matches!(
            &e.detail,
            Detail::Exec {
                exe_unlinked: true,
                ..
            }
        ) {
            let raw = Raw::new(
                RuleId::FilelessExec,
                format!(
                    "executed a program with no name on any file system ({}, {})",
                    if exe.is_empty() { "?" } else { &exe },
                    e.process.argv.first().map(String::as_str).unwrap_or("")
                ),
                format!("fileless:{}", e.process.pid),
            )
            .evidence(vec![
                ("executable", json!(exe)),
                ("filename", json!(filename)),
            ]);
            self.emit_for(out, raw, e, key);
        }
        if !step_root && crate::event::reads_program_from_stdin(&exe, &e.process.argv) {
            self.note_stdin_shell(e, key, out);
        }

        let allowed_exe = |rules: &Rules| rules.executables.allows_written(&exe);
        // The program run: the binary, or a `#!` script (then `exe` is its interpreter). Under
        // a temporary directory only the job's own places are tooling: its workspace (a runner
        // may keep `_work` under /tmp) and the directories its environment names for builds,
        // environments and tools; a `target/` or `node_modules/` anywhere else in /tmp is not.
        let own_places: Vec<&str> = workspace
            .as_deref()
            .into_iter()
            .chain(
                crate::ci::env::TOOLING_DIRS
                    .iter()
                    .filter_map(|k| env.get(*k).map(String::as_str)),
            )
            .filter(|d| d.starts_with('/') && d.len() > 1)
            .collect();
        let temp = |path: &str| {
            ["/tmp/", "/var/tmp/", "/dev/shm/"]
                .iter()
                .any(|t| path.starts_with(t))
                && !own_places
                    .iter()
                    .any(|d| crate::rules::path_within(path, d).is_some())
        };
        let in_temp = temp(&exe) || temp(&program);
        // A build frontend's own isolated environment: tooling, judged by who made it.
        let frontend_temp = executables::in_frontend_temp(&exe, &frontends)
            || executables::in_frontend_temp(&program, &frontends);
        let temp_program = if temp(&exe) {
            exe.clone()
        } else {
            program.clone()
        };
        if in_temp
            && !frontend_temp
            && !self
                .rules_of(job, step)
                .any(|r| allowed_exe(r) || r.executables.allows_written(&temp_program))
        {
            let raw = Raw::new(
                RuleId::ExecFromTemp,
                format!("executed {temp_program}, a program in a temporary directory"),
                temp_program.clone(),
            )
            .evidence(vec![
                ("executable", json!(exe)),
                ("program", json!(temp_program)),
                ("cwd", json!(cwd)),
            ])
            .allowance(Allowance::WrittenProgram {
                path: temp_program.clone(),
            });
            self.emit_for(out, raw, e, key);
        } else if !in_temp
            && exe_changed_ns.is_some_and(|t| t >= self.jobs[job].started_ns)
            && !executables::installed_by_tooling(&program, &own_places)
            && !self
                .rules_of(job, step)
                .any(|r| r.executables.allows_written(&program))
        {
            let raw = Raw::new(
                RuleId::ExecOfJobWrittenFile,
                format!("executed {program}, written during this job"),
                program.clone(),
            )
            .evidence(vec![
                ("program", json!(program)),
                ("executable", json!(exe)),
                ("cwd", json!(cwd)),
            ])
            .allowance(Allowance::WrittenProgram {
                path: program.clone(),
            });
            self.emit_for(out, raw, e, key);
        }
        if !in_temp {
            let lists: Vec<_> = self
                .rules_of(job, step)
                .filter(|r| r.executables.allow.is_some())
                .collect();
            if !lists.is_empty() && !lists.iter().any(|r| r.executables.allows(&exe)) {
                let raw = Raw::new(
                    RuleId::UnexpectedExecutable,
                    format!("executed {exe}, which the profile does not list"),
                    exe.clone(),
                )
                .evidence(vec![("executable", json!(exe))])
                .allowance(Allowance::Executables { path: exe.clone() });
                self.emit_for(out, raw, e, key);
            }
        }
    }

    pub(super) fn on_exit(&mut self, e: &Event, key: ProcessKey) {
        let Some(p) = self.procs.get_mut(&key) else {
            return;
        };
        p.alive = false;
        p.exited_ns = Some(e.ts_ns);
        if p.is_step_root {
            let (job, step) = (p.job, p.step);
            if let Some(s) = self.jobs[job].steps.get_mut(step) {
                if s.root == key && s.ended.is_none() {
                    s.ended = Some((e.ts_ns, e.time.clone()));
                    // The checkout is done: what git tracks now is the repository as checked
                    // out, and later writes to it are judged (`source-modified`).
                    let checkout = s.identity.action.as_deref().is_some_and(|a| {
                        a.split_once('@')
                            .map_or(a, |(name, _)| name)
                            .eq_ignore_ascii_case("actions/checkout")
                    });
                    let job_state = &mut self.jobs[job];
                    if let (true, Some(workspace)) = (checkout, &job_state.identity.workspace) {
                        job_state.sources_watched = true;
                        self.source_requests.push(super::SourceRequest::Watch {
                            job: job_state.identity.key.clone(),
                            workspace: workspace.clone(),
                        });
                    }
                }
            }
        }
    }

    /// Processes still alive `STEP_GRACE_NS` after their step's root exited.
    pub(super) fn check_outlived_steps(&mut self, out: &mut Vec<Finding>) {
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
                // A container's processes live as long as their container (a service
                // container serves every later step): the runtime, not the step, ends them.
                .filter(|(_, p)| p.container.is_none())
                .map(|(k, p)| (*k, p.link.clone(), p.hook))
                .collect();
            left.sort_by_key(|(k, _, _)| *k);
            // An exit record lost on the way is not a process that stayed: ask the machine.
            if let Some(still_running) = self.config.still_running {
                left.retain(|(key, _, _)| {
                    let running = still_running(key.tgid, key.start_ticks);
                    if !running {
                        if let Some(p) = self.procs.get_mut(key) {
                            p.alive = false;
                            p.exited_ns.get_or_insert(self.last_kernel_event_ns);
                        }
                    }
                    running
                });
            }
            for (_, link, hook) in left {
                let exe = link.exe.clone().unwrap_or_default();
                let allowed = background::expected_agent(&exe)
                    || self
                        .rules_of(job, step)
                        .any(|r| r.processes.background.iter().any(|p| p.matches(&exe)));
                if allowed {
                    continue;
                }
                let raw = Raw::new(
                    RuleId::OutlivedStep,
                    format!("{exe} (pid {}) kept running after its step ended", link.pid),
                    format!("{}:{}", link.pid, link.start_ticks),
                )
                .evidence(vec![("executable", json!(exe)), ("pid", json!(link.pid))])
                .allowance(Allowance::Processes {
                    executable: exe.clone(),
                });
                let place = Place { job, step, hook };
                let trigger = Trigger {
                    events: vec![],
                    time: &time,
                    ts_ns: ended,
                };
                self.emit(out, raw, place, vec![link], trigger);
            }
        }
    }

    /// A job's process made another that shares its descriptor table while kills were in
    /// force at opens: the kernel killed the maker (or says it would have), since a kill at an
    /// open ends only the opener and the other process would keep what it was handed.
    pub(super) fn on_shared_descriptors(
        &mut self,
        e: &Event,
        key: ProcessKey,
        out: &mut Vec<Finding>,
    ) {
        let tool = self.procs[&key].tool.clone();
        let parent = e.process.ppid;
        let raw = Raw::new(
            RuleId::DescriptorSharing,
            format!(
                "{tool} (pid {parent}) made process {} sharing its descriptor table (clone with CLONE_FILES): a descriptor either opened would outlive a kill of the opener",
                e.process.pid
            ),
            format!("descriptors:{parent}:{}", e.process.pid),
        )
        .evidence(vec![
            ("maker_pid", json!(parent)),
            ("sharer_pid", json!(e.process.pid)),
        ]);
        self.emit_for(out, raw, e, key);
    }

    /// Syscalls against the monitor itself or into other processes' memory.
    pub(super) fn on_tamper(&mut self, e: &Event, key: ProcessKey, out: &mut Vec<Finding>) {
        let Detail::Tamper {
            syscall,
            target,
            arg,
            ..
        } = &e.detail
        else {
            return;
        };
        let tool = self.procs[&key].tool.clone();
        let (rule, severity, summary, clause) = match syscall {
            TamperSyscall::Kill | TamperSyscall::Tkill | TamperSyscall::Tgkill if *target == -1 => (
                RuleId::AgentTampering,
                Severity::Critical,
                format!("{tool} sent signal {arg} to every process, the monitor included"),
                RuleId::AgentTampering.clause(),
            ),
            TamperSyscall::Kill | TamperSyscall::Tkill | TamperSyscall::Tgkill => (
                RuleId::AgentTampering,
                Severity::Critical,
                format!("{tool} sent signal {arg} to the monitor agent (pid {target})"),
                RuleId::AgentTampering.clause(),
            ),
            TamperSyscall::Signal => (
                RuleId::AgentTampering,
                Severity::Critical,
                format!(
                    "{tool} sent signal {arg} to the monitor agent (pid {target}) by a route other than kill(2) of its pid (its process group, a pidfd, a 32-bit syscall)"
                ),
                RuleId::AgentTampering.clause(),
            ),
            TamperSyscall::SignalLogged => (
                RuleId::AgentTampering,
                Severity::Critical,
                format!(
                    "{tool} sent signal {arg} to the monitor agent (pid {target}), which did not live to report it: found by the agent that started after it, in the kernel's tamper log; what the job did while no agent ran is missing"
                ),
                RuleId::AgentTampering.clause(),
            ),
            TamperSyscall::SignalGuarded => {
                let target_proc = self.procs.iter().find(|(k, _)| k.tgid as i32 == *target);
                // A job's own copy of such a daemon (started for a test) is the job's to stop.
                let sender_job = self.procs[&key].job;
                if target_proc.is_some_and(|(_, p)| p.job == sender_job) {
                    return;
                }
                let service = target_proc
                    .map(|(_, p)| p.tool.clone())
                    .unwrap_or_else(|| "a guarded service".into());
                (
                    RuleId::DefenceTampering,
                    Severity::High,
                    format!(
                        "{tool} sent signal {arg} to {service} (pid {target}), a logging, audit or security service"
                    ),
                    RuleId::DefenceTampering.clause(),
                )
            }
            TamperSyscall::ModuleLoad => (
                RuleId::DefenceTampering,
                Severity::High,
                format!(
                    "{tool} asked the kernel to load a module ({}): code below every defence on the host, the monitor included",
                    if *arg == 0 { "init_module" } else { "finit_module" }
                ),
                RuleId::DefenceTampering.clause(),
            ),
            TamperSyscall::PidfdGetfd => (
                RuleId::DescriptorSharing,
                Severity::High,
                format!(
                    "{tool} took descriptor {arg} of another process (pidfd_getfd on pidfd {target}): whatever that process had open, a credential or a connection, is its too"
                ),
                RuleId::DescriptorSharing.clause(),
            ),
            TamperSyscall::Bpf => (
                RuleId::AgentTampering,
                Severity::High,
                format!("{tool} used bpf(2) (command {arg}): loading, changing or detaching eBPF programs"),
                "a job has no business with the kernel's eBPF: it can blind or subvert the monitor",
            ),
            TamperSyscall::Ptrace => (
                RuleId::ProcessMemoryRead,
                Severity::High,
                format!("{tool} used ptrace (request {arg}) on process {target}"),
                "credentials: other processes' memory holds the job's secrets",
            ),
            TamperSyscall::ProcessVmReadv
            | TamperSyscall::ProcessVmWritev
            | TamperSyscall::Unknown => (
                RuleId::ProcessMemoryRead,
                Severity::Critical,
                format!("{tool} used {syscall} on process {target}"),
                "credentials: other processes' memory holds the job's secrets",
            ),
        };
        // One signal is seen twice when sent with kill(2) (at the syscall, and where the kernel
        // generates it): one finding.
        let dedupe = match syscall {
            TamperSyscall::Kill
            | TamperSyscall::Tkill
            | TamperSyscall::Tgkill
            | TamperSyscall::Signal
            | TamperSyscall::SignalLogged
                if *target != -1 =>
            {
                format!("signal:{arg}:{target}:{}", e.process.pid)
            }
            _ => format!("{syscall}:{target}:{}", e.process.pid),
        };
        let raw = Raw::new(rule, summary, dedupe)
            .severity(severity)
            .clause(clause)
            .evidence(vec![
                ("syscall", json!(syscall)),
                ("target_pid", json!(target)),
                ("argument", json!(arg)),
            ]);
        self.emit_for(out, raw, e, key);
    }
}
