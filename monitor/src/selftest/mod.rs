//! `monitor selftest`: re-enacts real CI supply-chain attacks, benignly, on this machine, against
//! the real agent with its real probes, and scores what it catches. Each attack has a benign twin
//! (the legitimate version of the same thing) that must stay clean, so the score counts false
//! positives as well as misses. Documented in docs/selftest.md.

mod lab;
pub mod scenarios;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde::Serialize;
use serde_json::Value;

pub use lab::Interrupted;
use lab::{interrupted, AgentUnderTest, HttpServer};
use runner_sim::{Layout, Step};
use scenarios::Scenario;

#[derive(clap::Args, Debug, Clone)]
pub struct SelftestArgs {
    /// Where the lab is made (a private directory inside it, removed at the end). Not a
    /// temporary directory: programs run from /tmp are themselves a finding.
    #[arg(long, default_value = "/var/lib/monitor/selftest")]
    pub work_dir: PathBuf,
    /// Run only the scenarios whose name contains this (repeatable).
    #[arg(long)]
    pub only: Vec<String>,
    /// Print the scorecard as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Keep the lab (agent log, events, findings) for inspection instead of removing it.
    #[arg(long)]
    pub keep: bool,
}

/// What became of one job.
#[derive(Debug, Clone, Serialize)]
pub struct JobResult {
    pub what: String,
    /// `detected`/`missed` for an attack, `clean`/`false-positive` for a twin, or `not-run`.
    pub verdict: String,
    /// Findings of the job as `#id rule`.
    pub findings: Vec<String>,
    /// Rules expected but not raised (attacks only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub threat: String,
    pub expect: Vec<String>,
    pub attack: JobResult,
    pub twin: JobResult,
}

#[derive(Debug, Serialize)]
pub struct Scorecard {
    pub scenarios: Vec<ScenarioResult>,
    pub detected: usize,
    pub attacks: usize,
    pub clean: usize,
    pub twins: usize,
    pub not_run: usize,
}

impl Scorecard {
    /// 0: everything detected and every twin clean; 1: a miss or a false positive; 2: some
    /// scenario could not run here (a program it needs is missing).
    pub fn exit_code(&self) -> i32 {
        if self.detected < self.attacks - self.not_run || self.clean < self.twins - self.not_run {
            1
        } else if self.not_run > 0 {
            2
        } else {
            0
        }
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        for s in &self.scenarios {
            out.push_str(&format!("{:<36} {}\n", s.name, s.threat));
            for (label, r) in [("attack", &s.attack), ("twin  ", &s.twin)] {
                out.push_str(&format!(
                    "  {label} {:<16} {}\n",
                    r.verdict.to_uppercase(),
                    r.what
                ));
                if !r.findings.is_empty() {
                    out.push_str(&format!("         findings: {}\n", r.findings.join(", ")));
                }
                if !r.missing.is_empty() {
                    out.push_str(&format!("         missing:  {}\n", r.missing.join(", ")));
                }
                if let Some(note) = &r.note {
                    out.push_str(&format!("         note:     {note}\n"));
                }
            }
        }
        out.push_str(&format!(
            "\nscore: {}/{} attacks detected, {}/{} benign twins clean{}\n",
            self.detected,
            self.attacks,
            self.clean,
            self.twins,
            if self.not_run > 0 {
                format!(", {} scenario(s) not run", self.not_run)
            } else {
                String::new()
            }
        ));
        out
    }
}

/// Runs the selftest; the caller prints the scorecard and exits with its code.
pub fn run(args: &SelftestArgs) -> anyhow::Result<Scorecard> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the selftest loads the monitor's eBPF programs and must run as root");
    }
    lab::catch_interrupts();
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("creating {}", args.work_dir.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("selftest-")
        .tempdir_in(&args.work_dir)
        .with_context(|| format!("creating the lab in {}", args.work_dir.display()))?;
    let root = std::fs::canonicalize(dir.path())?;
    let mut extra_paths = Vec::new();
    // Checked before anything runs, and cleaned up after as any other failure.
    let result = lab::check_socket_path(&lab::control_socket_of(&root))
        .with_context(|| {
            format!(
                "the lab's control socket under --work-dir {}: choose a shorter --work-dir",
                args.work_dir.display()
            )
        })
        .and_then(|()| run_in(&root, args, &mut extra_paths));
    // Cleanup whatever happened: processes left behind, files outside the lab, the lab.
    let leftover = lab::kill_processes_under(&root);
    if leftover > 0 {
        log::info!("selftest: stopped {leftover} process(es) the scenarios left running");
    }
    for p in extra_paths {
        if p.is_dir() {
            let _ = std::fs::remove_dir_all(p);
        } else {
            let _ = std::fs::remove_file(p);
        }
    }
    if args.keep {
        let kept = dir.keep();
        eprintln!("selftest: lab kept in {}", kept.display());
    } else {
        drop(dir);
        // The parent too, when the selftest made it and nothing else is in it.
        let _ = std::fs::remove_dir(&args.work_dir);
    }
    result
}

fn run_in(root: &Path, args: &SelftestArgs, extra: &mut Vec<PathBuf>) -> anyhow::Result<Scorecard> {
    let chosen: Vec<Scenario> = scenarios::all()
        .into_iter()
        .filter(|s| args.only.is_empty() || args.only.iter().any(|o| s.name.contains(o.as_str())))
        .collect();
    if chosen.is_empty() {
        bail!("no scenario matches {:?}", args.only);
    }
    let fixtures = root.join("lab");
    let layout = Layout::create(root).context("laying out the lab's runner")?;
    for sub in ["lab", "out"] {
        std::fs::create_dir_all(root.join(sub))?;
    }

    let registry = HttpServer::start(BTreeMap::from([
        (
            "/prebuilt".to_string(),
            scenarios::TOOL_SH.as_bytes().to_vec(),
        ),
        (
            "/helper".to_string(),
            scenarios::TOOL_SH.as_bytes().to_vec(),
        ),
    ]))?;
    let untrusted = HttpServer::start(BTreeMap::from([(
        "/miner".to_string(),
        scenarios::MINER_SH.as_bytes().to_vec(),
    )]))?;
    let oidc = HttpServer::start(BTreeMap::from([(
        "/idtoken".to_string(),
        br#"{"value":"selftest-canary-oidc-jwt"}"#.to_vec(),
    )]))?;
    // The CI's cache service, as the runner tells actions where it is.
    let cache = HttpServer::start(BTreeMap::new())?;
    let cache_url = format!("http://127.0.0.1:{}/selftest-cache/", cache.port);
    // Run ids unique to this selftest (the pid, and the clock for pids reused later).
    let run_tag = format!(
        "{}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_micros())
    );
    extra.push(PathBuf::from(format!("/tmp/.selftest-miner-{run_tag}")));

    let missing_programs: Vec<&str> = chosen
        .iter()
        .flat_map(|s| s.needs.iter().copied())
        .filter(|p| !available(p))
        .collect();
    prepare_fixtures(root, &fixtures, &missing_programs)?;

    std::fs::write(
        root.join("selftest-profile.yml"),
        scenarios::profile(registry.port, oidc.port, cache.port),
    )?;
    std::fs::write(
        root.join("selftest-responses.yml"),
        scenarios::responses_profile(registry.port, oidc.port, cache.port),
    )?;
    let profile = root.join("selftest.yml");
    std::fs::write(&profile, scenarios::config())?;
    // The lab's own place in bpffs for the tamper log: an installed agent's is not touched.
    let pins = PathBuf::from(format!("/sys/fs/bpf/monitor-selftest-{run_tag}"));
    extra.push(pins.clone());
    let mut agent = AgentUnderTest::start(root, &profile, &pins)?;

    let base_env = vec![
        ("LAB".to_string(), fixtures.display().to_string()),
        ("SELFTEST_LAB".to_string(), root.display().to_string()),
        ("SELFTEST_RUN".to_string(), run_tag.clone()),
        (
            "REGISTRY".to_string(),
            format!("http://127.0.0.1:{}", registry.port),
        ),
        (
            "UNTRUSTED".to_string(),
            format!("http://127.0.0.1:{}", untrusted.port),
        ),
        (
            "NPM_CONFIG_UPDATE_NOTIFIER".to_string(),
            "false".to_string(),
        ),
        (
            "npm_config_cache".to_string(),
            root.join("home/.npm").display().to_string(),
        ),
    ];
    let oidc_url = format!("http://127.0.0.1:{}/idtoken?api-version=2.0", oidc.port);
    let mut results = Vec::new();
    let mut job_number = 0;
    for scenario in &chosen {
        let needs: Vec<&str> = scenario
            .needs
            .iter()
            .copied()
            .filter(|p| missing_programs.contains(p))
            .collect();
        let mut pair = Vec::new();
        for (attack, job) in [(true, &scenario.attack), (false, &scenario.twin)] {
            if interrupted() {
                return Err(Interrupted.into());
            }
            if !needs.is_empty() {
                pair.push(JobResult {
                    what: job.what.to_string(),
                    verdict: "not-run".into(),
                    findings: Vec::new(),
                    missing: Vec::new(),
                    note: Some(format!("needs {}", needs.join(", "))),
                });
                continue;
            }
            job_number += 1;
            let run_id = format!("{run_tag}{job_number:03}");
            let runner = Runner {
                layout: &layout,
                run_id: &run_id,
                repository: if scenario.responses {
                    scenarios::RESPONSES_REPOSITORY
                } else {
                    "monitor/selftest"
                },
                env: &base_env,
                oidc_url: &oidc_url,
                cache_url: &cache_url,
            };
            let findings = if attack && scenario.kills_agent {
                runner.run_through_agent_restart(job, &mut agent, || {
                    AgentUnderTest::start(root, &profile, &pins)
                })?
            } else {
                runner.run(job, &mut agent)?
            };
            pair.push(judge(scenario, job.what, attack, findings));
        }
        let twin = pair.pop().expect("two");
        let attack = pair.pop().expect("two");
        results.push(ScenarioResult {
            name: scenario.name.into(),
            threat: scenario.threat.into(),
            expect: scenario.expect.iter().map(|s| s.to_string()).collect(),
            attack,
            twin,
        });
    }
    if !agent.alive() {
        bail!("the agent died during the selftest:\n{}", agent.log_text());
    }
    agent.stop();
    let count = |f: &dyn Fn(&ScenarioResult) -> bool| results.iter().filter(|r| f(r)).count();
    Ok(Scorecard {
        detected: count(&|r| r.attack.verdict == "detected"),
        clean: count(&|r| r.twin.verdict == "clean"),
        not_run: count(&|r| r.attack.verdict == "not-run"),
        attacks: results.len(),
        twins: results.len(),
        scenarios: results,
    })
}

fn judge(scenario: &Scenario, what: &str, attack: bool, findings: Vec<Value>) -> JobResult {
    let listed = findings
        .iter()
        .map(|f| format!("#{} {}", f["id"], f["rule"].as_str().unwrap_or("?")))
        .collect();
    let (verdict, missing) = if attack {
        let missing: Vec<String> = scenario
            .expect
            .iter()
            .filter(|want| {
                let (rule, text) = want.split_once(' ').unwrap_or((want, ""));
                !findings.iter().any(|f| {
                    f["rule"] == rule
                        && match text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
                            Some(response) => f["response"] == response,
                            None => f["summary"].as_str().is_some_and(|s| s.contains(text)),
                        }
                })
            })
            .map(|r| r.to_string())
            .collect();
        let verdict = if missing.is_empty() {
            "detected"
        } else {
            "missed"
        };
        (verdict, missing)
    } else {
        let verdict = if findings.is_empty() {
            "clean"
        } else {
            "false-positive"
        };
        (verdict, Vec::new())
    };
    JobResult {
        what: what.to_string(),
        verdict: verdict.into(),
        findings: listed,
        missing,
        note: None,
    }
}

/// Whether what a scenario needs is here: a program on the PATH, or the 32-bit syscall entry.
fn available(need: &str) -> bool {
    if need == scenarios::COMPAT_SYSCALLS {
        return compat_syscalls();
    }
    on_path(need)
}

/// x86-64 with IA32 emulation: built in (`CONFIG_IA32_EMULATION`, the distributions' kernels)
/// and not switched off at boot (`ia32_emulation=0`, Linux 6.7+). Where the kernel's build
/// configuration cannot be read it is taken as there (the step then fails, saying why).
fn compat_syscalls() -> bool {
    if !cfg!(target_arch = "x86_64") {
        return false;
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if cmdline.split_whitespace().any(|word| {
        matches!(
            word,
            "ia32_emulation=0" | "ia32_emulation=false" | "ia32_emulation=n"
        )
    }) {
        return false;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    match std::fs::read_to_string(format!("/boot/config-{}", release.trim())) {
        Ok(config) => config.lines().any(|l| l == "CONFIG_IA32_EMULATION=y"),
        Err(_) => true,
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// The job's findings are all in once the marker step's arrived and the job's report is written:
/// the agent judges events in order, the marker step runs last, and findings held to a step's or
/// job's end (one lifecycle finding per step) are written before the report.
/// (Under kill responses the reader is killed: the finding still marks the end, and the step
/// must not fail the job.)
const MARKER: (&str, &str) = (
    "selftest-marker",
    "cat /proc/$PPID/environ >/dev/null || true\n",
);

/// The lab's GitHub runner (`runner_sim`'s process layout) executing one job, with the
/// selftest's identity, canary OIDC variables and output directory.
struct Runner<'a> {
    layout: &'a Layout,
    run_id: &'a str,
    repository: &'a str,
    env: &'a [(String, String)],
    oidc_url: &'a str,
    /// Given to action steps as `ACTIONS_CACHE_URL`.
    cache_url: &'a str,
}

impl Runner<'_> {
    fn run(&self, job: &scenarios::Job, agent: &mut AgentUnderTest) -> anyhow::Result<Vec<Value>> {
        self.execute(job, agent.pid(), &agent.control_socket)?;
        self.collect(job, agent)
    }

    /// Runs a job whose attack kills the agent: once the agent is dead, `restart` starts a new
    /// one (as systemd would) and the job is told through `$OUT/agent-restarted`; its findings
    /// are collected from the new agent.
    fn run_through_agent_restart(
        &self,
        job: &scenarios::Job,
        agent: &mut AgentUnderTest,
        restart: impl FnOnce() -> anyhow::Result<AgentUnderTest>,
    ) -> anyhow::Result<Vec<Value>> {
        let pid = agent.pid();
        // The agent started in its place listens on the same socket: the job's completed hook
        // tells it of the job's end (or, when none is listening, fails open as on a runner).
        let socket = agent.control_socket.clone();
        std::thread::scope(|scope| {
            let running = scope.spawn(|| self.execute(job, pid, &socket));
            let deadline = Instant::now() + Duration::from_secs(30);
            while agent.alive() {
                if running.is_finished() || Instant::now() > deadline || interrupted() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !agent.alive() {
                *agent = restart()?;
            }
            let out = self.layout.root().join("out").join(self.run_id);
            std::fs::write(out.join("agent-restarted"), "")?;
            running
                .join()
                .map_err(|_| anyhow::anyhow!("the job's thread panicked"))??;
            Ok::<(), anyhow::Error>(())
        })?;
        self.collect(job, agent)
    }

    /// Runs the job to its end, with the runner's job hooks telling the agent on
    /// `control_socket` of its start and end (as an installed runner's do: the agent and the
    /// kernel know the job before its first step); the agent's pid is in the job's `AGENT_PID`.
    fn execute(
        &self,
        job: &scenarios::Job,
        agent_pid: u32,
        control_socket: &std::path::Path,
    ) -> anyhow::Result<()> {
        let workspace = self.layout.workspace();
        let out = self.layout.root().join("out").join(self.run_id);
        // A fresh workspace per job, as a runner checks out anew.
        let _ = std::fs::remove_dir_all(&workspace);
        std::fs::create_dir_all(&workspace)?;
        std::fs::create_dir_all(&out)?;
        let mut spec = runner_sim::Job::new(self.run_id);
        spec.name = "selftest".into();
        spec.repository = self.repository.into();
        spec.workflow = "selftest".into();
        spec.runner_name = "selftest-runner".into();
        spec.extra = vec![
            (
                "ACTIONS_ID_TOKEN_REQUEST_URL".into(),
                self.oidc_url.to_string(),
            ),
            (
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN".into(),
                lab::CANARY_OIDC_REQUEST_TOKEN.to_string(),
            ),
            ("OUT".into(), out.display().to_string()),
        ];
        spec.action_env = vec![("ACTIONS_CACHE_URL".into(), self.cache_url.to_string())];
        let steps: Vec<Step> = job
            .steps
            .iter()
            .map(|(id, script)| (*id, script.as_str()))
            .chain([MARKER])
            .map(Step::from_pair)
            .collect();
        let hooks = runner_sim::Hooks {
            monitor: std::env::current_exe().context("locating the monitor binary")?,
            socket: control_socket.to_path_buf(),
        };
        let worker_file = self.layout.write_worker(&spec, &steps, Some(&hooks))?;
        let mut command = self
            .layout
            .worker_command(&worker_file, None, &["PYENV_ROOT", "LANG"]);
        // The caller's PATH: the selftest runs the package managers the machine has.
        command
            .env(
                "PATH",
                std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("AGENT_PID", agent_pid.to_string());
        let (ok, output) = lab::run_interruptible(&mut command)?;
        if !ok {
            bail!("the job \"{}\" failed to run:\n{output}", job.what);
        }
        Ok(())
    }

    /// The job's findings, once all are in (see `MARKER`).
    fn collect(
        &self,
        job: &scenarios::Job,
        agent: &mut AgentUnderTest,
    ) -> anyhow::Result<Vec<Value>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mine: Vec<Value> = agent
                .findings()
                .into_iter()
                .filter(|f| f["job"]["run_id"].as_str() == Some(self.run_id))
                .collect();
            if mine.iter().any(|f| f["step"]["id"] == MARKER.0) && agent.reported(self.run_id) {
                return Ok(mine
                    .into_iter()
                    .filter(|f| f["step"]["id"] != MARKER.0)
                    .collect());
            }
            if interrupted() {
                return Err(Interrupted.into());
            }
            if Instant::now() > deadline || !agent.alive() {
                bail!(
                    "the agent judged nothing of the job \"{}\" within 30 s (no finding from its marker step, or no report at its end); agent log:\n{}",
                    job.what,
                    agent.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Builds what the jobs use, outside any job: canary credentials, npm tarballs, a git
/// dependency, wheels, a virtualenv, packages to pack.
fn prepare_fixtures(root: &Path, lab: &Path, missing: &[&str]) -> anyhow::Result<()> {
    let home = root.join("home");
    let write = |path: PathBuf, text: &str| -> anyhow::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write(
        home.join(".npmrc"),
        &format!(
            "//registry.npmjs.org/:_authToken={}\n",
            lab::CANARY_NPM_TOKEN
        ),
    )?;
    write(
        home.join(".aws/credentials"),
        &format!(
            "[default]\naws_access_key_id = AKIASELFTESTCANARY00\naws_secret_access_key = {}\n",
            lab::CANARY_AWS_SECRET
        ),
    )?;
    write(home.join(".bashrc"), "# selftest home\n")?;
    let prep = |what: &str, command: &mut Command| -> anyhow::Result<()> {
        let (ok, output) = lab::run_interruptible(command.env("HOME", &home))?;
        if !ok {
            bail!("selftest: preparing {what} failed:\n{output}");
        }
        Ok(())
    };
    write(lab.join("memdump.py"), scenarios::MEMDUMP_PY)?;
    let has = |p: &str| !missing.contains(&p);

    if has("npm") {
        let pack = |name: &str, scripts: &str, files: &[(&str, &str)]| -> anyhow::Result<()> {
            let dir = lab.join("src").join(name);
            write(
                dir.join("package.json"),
                &format!(r#"{{"name":"{name}","version":"1.0.0","scripts":{{{scripts}}}}}"#),
            )?;
            for (file, text) in files {
                write(dir.join(file), text)?;
            }
            prep(
                name,
                Command::new("npm")
                    .args(["pack", "--silent", "--pack-destination"])
                    .arg(lab)
                    .current_dir(&dir),
            )
        };
        pack(
            "evil-stealer",
            r#""postinstall":"node steal.js""#,
            &[("steal.js", scenarios::STEALER_JS)],
        )?;
        pack(
            "native-prebuilt",
            r#""postinstall":"node install.js""#,
            &[("install.js", scenarios::PREBUILT_JS)],
        )?;
        // Trees to pack: the same files, with and without a files list.
        for (name, files_list) in [
            ("pack-leaky", ""),
            ("pack-clean", r#","files":["dist/*.js"]"#),
        ] {
            let dir = lab.join(name);
            write(
                dir.join("package.json"),
                &format!(r#"{{"name":"{name}","version":"1.0.0"{files_list}}}"#),
            )?;
            write(dir.join("dist/cli.js"), "console.log('cli');\n")?;
            write(
                dir.join("dist/cli.js.map"),
                r#"{"version":3,"sources":["../src/cli.ts"],"sourcesContent":["// the whole source"],"mappings":""}"#,
            )?;
            write(dir.join(".env"), "API_KEY=selftest-canary\n")?;
        }
    }
    if has("git") {
        let git = |dir: &Path, args: &[&str]| {
            prep(
                "a git repository",
                Command::new("git")
                    .args([
                        "-c",
                        "user.email=selftest@localhost",
                        "-c",
                        "user.name=selftest",
                        "-c",
                        "init.defaultBranch=main",
                    ])
                    .args(args)
                    .current_dir(dir),
            )
        };
        let dep = lab.join("git-dep");
        write(
            dep.join("package.json"),
            r#"{"name":"git-dep","version":"1.0.0","scripts":{"prepare":"node prepare.js"}}"#,
        )?;
        write(dep.join("prepare.js"), scenarios::PREPARE_STEALER_JS)?;
        let repo = lab.join("repo-with-workflows");
        write(
            repo.join(".github/workflows/ci.yml"),
            "on: push\njobs: {}\n",
        )?;
        write(repo.join("README.md"), "selftest\n")?;
        for dir in [&dep, &repo] {
            git(dir, &["init", "-q"])?;
            git(dir, &["add", "."])?;
            git(dir, &["commit", "-q", "-m", "selftest"])?;
        }
    }
    if has("python3") {
        prep(
            "a virtualenv",
            Command::new("python3")
                .arg("-m")
                .arg("venv")
                .arg(lab.join("venv")),
        )?;
        write(lab.join("make_wheel.py"), scenarios::MAKE_WHEEL_PY)?;
        std::fs::create_dir_all(lab.join("wheels"))?;
        prep(
            "a wheel with an executable .pth",
            Command::new("python3").arg(lab.join("make_wheel.py")).args([
                lab.join("wheels/telemetry_init-1.0-py3-none-any.whl").display().to_string(),
                "telemetry_init".into(),
                "telemetry_init.pth=import os; os.path.exists(os.path.expanduser('~/.aws/credentials'))\n".into(),
                "telemetry_init/__init__.py=".into(),
            ]),
        )?;
        prep(
            "a wheel with a path-only .pth",
            Command::new("python3")
                .arg(lab.join("make_wheel.py"))
                .args([
                    lab.join("wheels/plain_paths-1.0-py3-none-any.whl")
                        .display()
                        .to_string(),
                    "plain_paths".into(),
                    format!("plain_paths.pth={}\n", lab.join("py").display()),
                    "plain_paths/__init__.py=".into(),
                ]),
        )?;
        write(
            lab.join("py/fastmath_evil/__init__.py"),
            scenarios::FASTMATH_EVIL,
        )?;
        write(
            lab.join("py/fastmath_ok/__init__.py"),
            scenarios::FASTMATH_OK,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(id: u64, rule: &str, summary: &str) -> Value {
        serde_json::json!({"id": id, "rule": rule, "summary": summary})
    }

    fn scenario() -> Scenario {
        scenarios::all()
            .into_iter()
            .find(|s| s.name == "workflow-and-shell-rc-persistence")
            .unwrap()
    }

    #[test]
    fn a_control_socket_path_is_refused_exactly_where_the_kernel_refuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().as_os_str().len() + 1;
        let longest = dir.path().join("s".repeat(107 - base));
        let too_long = dir.path().join("s".repeat(108 - base));
        lab::check_socket_path(&longest).unwrap();
        std::os::unix::net::UnixListener::bind(&longest).expect("107 bytes bind");
        let err = lab::check_socket_path(&too_long).unwrap_err();
        assert!(err.to_string().contains("108 bytes long"), "{err}");
        assert!(std::os::unix::net::UnixListener::bind(&too_long).is_err());
    }

    #[test]
    fn an_attack_is_detected_only_when_everything_expected_is_raised() {
        let s = scenario();
        let half = vec![finding(
            1,
            "persistence-write",
            "bash created /w/.github/workflows/x.yml (workflow-file)",
        )];
        let r = judge(&s, "attack", true, half.clone());
        assert_eq!(r.verdict, "missed");
        assert_eq!(r.missing, vec!["persistence-write shell-startup"]);
        let mut both = half;
        both.push(finding(
            2,
            "persistence-write",
            "bash wrote /h/.bashrc (shell-startup)",
        ));
        let r = judge(&s, "attack", true, both);
        assert_eq!((r.verdict.as_str(), r.findings.len()), ("detected", 2));
        assert_eq!(r.findings[1], "#2 persistence-write");
    }

    #[test]
    fn a_twin_with_any_finding_is_a_false_positive_and_fails_the_run() {
        let s = scenario();
        let clean = judge(&s, "twin", false, Vec::new());
        let noisy = judge(&s, "twin", false, vec![finding(3, "credential-read", "x")]);
        assert_eq!(
            (clean.verdict.as_str(), noisy.verdict.as_str()),
            ("clean", "false-positive")
        );
        let detected = judge(
            &s,
            "attack",
            true,
            vec![
                finding(1, "persistence-write", "(workflow-file)"),
                finding(2, "persistence-write", "(shell-startup)"),
            ],
        );
        let card = |twin: JobResult| {
            let result = ScenarioResult {
                name: s.name.into(),
                threat: s.threat.into(),
                expect: Vec::new(),
                attack: detected.clone(),
                twin,
            };
            Scorecard {
                detected: 1,
                attacks: 1,
                clean: usize::from(result.twin.verdict == "clean"),
                twins: 1,
                not_run: 0,
                scenarios: vec![result],
            }
        };
        assert_eq!(card(clean).exit_code(), 0);
        let failing = card(noisy);
        assert_eq!(failing.exit_code(), 1);
        assert!(
            failing.table().contains("FALSE-POSITIVE"),
            "{}",
            failing.table()
        );
        assert!(failing.table().contains("#3 credential-read"));
    }
}
