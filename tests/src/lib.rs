//! Harness for the privileged end-to-end tests: start the real agent binary, trigger behaviour
//! with real programs, and read back the JSON events it wrote.
//!
//! These tests need root (they load eBPF programs). Without it they fail with a message saying so;
//! they are never skipped silently.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub use serde_json::Value;

pub mod corpus;
pub mod docker;

/// How long a test waits for an event before failing.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the end-to-end tests load eBPF programs and must run as root (got euid {euid}); run `sudo cargo xtask test`"
    );
}

/// The agent binary: $MONITOR_BIN, or target/<profile>/monitor beside this test executable.
/// `--hook-tier TIER` when `MONITOR_TEST_OPEN_HOOK` asks every agent of the run for one tier
/// (`cargo xtask test` runs tests in its kernel VM once per tier that kernel has).
fn forced_open_hook() -> Vec<String> {
    match std::env::var("MONITOR_TEST_OPEN_HOOK") {
        Ok(tier) if !tier.is_empty() => vec!["--hook-tier".into(), tier],
        _ => Vec::new(),
    }
}

/// The open hook tier the agent says it runs with (`file opens: TIER (...)` in its log).
pub fn open_tier_in_force(agent: &Agent) -> String {
    let log = agent.log();
    log.lines()
        .find_map(|l| l.split("file opens: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the agent's log names no open hook tier:\n{log}"))
        .to_string()
}

pub fn monitor_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("MONITOR_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("monitor"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "agent binary {} not found: build it first (`cargo build -p monitor`; `cargo xtask test` does)",
        bin.display()
    );
    bin
}

pub struct Agent {
    child: Child,
    pub dir: tempfile::TempDir,
    pub events_path: PathBuf,
    pub findings_path: PathBuf,
    /// The agent's control socket (`monitor job`, `monitor hook`).
    pub control_socket: PathBuf,
    /// The profile file it was started with (`start_with_profile`).
    pub profile_path: Option<PathBuf>,
}

impl Agent {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_with_socket(None, extra)
    }

    /// Starts the agent with its control socket at `socket` (default: in its private directory,
    /// which only root can reach).
    pub fn start_with_socket(socket: Option<&Path>, extra: &[&str]) -> Self {
        require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let events_path = dir.path().join("events.jsonl");
        let findings_path = dir.path().join("findings.jsonl");
        let ready = dir.path().join("ready");
        let control_socket = socket
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.path().join("control.sock"));
        let log = std::fs::File::create(dir.path().join("agent.log")).expect("agent log");
        use std::os::unix::process::CommandExt as _;
        let child = Command::new(monitor_bin())
            .arg("run")
            .arg("--events")
            .arg(&events_path)
            .arg("--findings")
            .arg(&findings_path)
            .arg("--ready-file")
            .arg(&ready)
            .arg("--control-socket")
            .arg(&control_socket)
            .args(["--metrics-address", "127.0.0.1:0"])
            .arg("--reports")
            .arg(dir.path().join("reports"))
            .args(forced_open_hook())
            // Baselines only where a test asks for one: every test's jobs are `acme/app`'s
            // `build`, and a baseline shared by unrelated tests would report their differences.
            .args(if extra.iter().any(|a| a.starts_with("--baseline")) {
                &[][..]
            } else {
                &["--no-baseline"][..]
            })
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group, as under systemd (where it leads its group): a step can
            // then signal the agent's group without signalling the test.
            .process_group(0)
            .spawn()
            .expect("starting the agent");
        let mut agent = Agent {
            child,
            dir,
            events_path,
            findings_path,
            control_socket,
            profile_path: None,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready.exists() {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!(
                    "agent exited before it was ready ({status}):\n{}",
                    agent.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "agent not ready after 60 s:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    /// Where the agent wrote `runner`'s job report (JSON; `.md` and `.html` beside it), if it did.
    pub fn report_path(&self, runner: &FakeRunner) -> Option<PathBuf> {
        std::fs::read_dir(self.dir.path().join("reports"))
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && p.to_string_lossy().contains(&runner.run_id)
            })
    }

    /// `runner`'s job report, waiting up to 20 s for it (a job that ended without its hook).
    pub fn wait_for_report(&self, runner: &FakeRunner) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(path) = self.report_path(runner) {
                let text = std::fs::read_to_string(&path).expect("reading the report");
                return serde_json::from_str(&text).expect("a JSON report");
            }
            assert!(
                Instant::now() < deadline,
                "no report for run {}:\n{}",
                runner.run_id,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The event log and its rotated files, oldest first (what `monitor replay` and
    /// `monitor profile learn` must be given to see everything the agent logged).
    pub fn event_logs(&self) -> Vec<PathBuf> {
        let mut logs: Vec<PathBuf> = (1..=10)
            .rev()
            .map(|n| {
                let mut name = self.events_path.clone().into_os_string();
                name.push(format!(".{n}"));
                PathBuf::from(name)
            })
            .filter(|p| p.exists())
            .collect();
        logs.push(self.events_path.clone());
        logs
    }

    /// Waits (up to 20 s) for the agent process to end; its exit status.
    pub fn wait_for_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the agent") {
                return status;
            }
            assert!(Instant::now() < deadline, "the agent is still running");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGHUP and waits until the agent's log says it handled it (`needle`).
    pub fn hangup_and_wait(&self, needle: &str) {
        let before = self.log().matches(needle).count();
        // SAFETY: plain kill(2) on our child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) };
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while self.log().matches(needle).count() == before {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} after SIGHUP:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where the agent serves `/metrics` (from its ready file).
    pub fn metrics_address(&self) -> String {
        let ready = std::fs::read_to_string(self.dir.path().join("ready")).expect("ready file");
        ready
            .lines()
            .find_map(|l| l.strip_prefix("metrics="))
            .expect("the agent serves metrics")
            .to_string()
    }

    /// One scrape of `/metrics`.
    pub fn scrape(&self) -> String {
        http_get(&format!("http://{}/metrics", self.metrics_address()))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Starts the agent judging against `profile` (YAML text).
    pub fn start_with_profile(profile: &str) -> Self {
        let file = tempfile::NamedTempFile::new().expect("profile file");
        std::fs::write(file.path(), profile).expect("writing profile");
        let (_, path) = file.keep().expect("keeping profile file");
        let mut agent = Self::start_with(&["--profile", path.to_str().expect("utf-8 temp path")]);
        agent.profile_path = Some(path);
        agent
    }

    /// Every event written so far. A line that is not valid JSON fails the test.
    pub fn events(&self) -> Vec<Value> {
        read_json_lines(&self.events_path)
    }

    /// Every finding written so far.
    pub fn findings(&self) -> Vec<Value> {
        read_json_lines(&self.findings_path)
    }

    /// Waits until `pred` holds for the findings so far, failing with them on timeout.
    pub fn wait_for_findings(&self, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let findings = self.findings();
            if pred(&findings) {
                return findings;
            }
            if Instant::now() > deadline {
                let shown: Vec<String> = findings.iter().map(|f| f.to_string()).collect();
                panic!(
                    "{what}: not seen after {EVENT_TIMEOUT:?}; findings:\n{}\nagent log:\n{}",
                    shown.join("\n"),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn read_json_lines(path: &Path) -> Vec<Value> {
    {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        // The last line may be half written; only complete lines count.
        let complete = match text.rfind('\n') {
            Some(end) => &text[..end],
            None => "",
        };
        complete
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }
}

impl Agent {
    /// Waits for the first event matching `pred`; fails with what was seen on timeout.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            if let Some(found) = self.events().into_iter().find(|e| pred(e)) {
                return found;
            }
            if Instant::now() > deadline {
                let events = self.events();
                let tail: Vec<String> = events
                    .iter()
                    .rev()
                    .take(15)
                    .map(|e| e.to_string())
                    .collect();
                panic!("no event {what} after {EVENT_TIMEOUT:?} ({} events seen); last ones:\n{}\nagent log:\n{}", events.len(), tail.join("\n"), self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the agent (SIGTERM: it drains the ring) and returns its stderr.
    pub fn stop(&mut self) -> String {
        // SAFETY: plain kill(2) on our child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait agent");
        assert!(
            status.success(),
            "agent exited with {status}:\n{}",
            self.log()
        );
        self.log()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn kind(e: &Value) -> &str {
    e["kind"].as_str().unwrap_or("")
}

pub fn pid(e: &Value) -> u64 {
    e["process"]["pid"].as_u64().unwrap_or(0)
}

pub fn argv(e: &Value) -> Vec<String> {
    e["process"]["argv"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A GitHub Actions self-hosted runner executing jobs (the process layout is `runner_sim`'s,
/// shared with `monitor selftest`), in a directory of its own.
pub struct FakeRunner {
    pub dir: tempfile::TempDir,
    pub layout: runner_sim::Layout,
    /// The job's `GITHUB_RUN_ID`: findings are matched by it, since every agent running in
    /// parallel tests sees every test's processes.
    pub run_id: String,
    pub home: PathBuf,
    pub workspace: PathBuf,
    /// `GITHUB_REPOSITORY` of its jobs.
    pub repository: String,
    /// The runner's service user (uid, gid), when not root.
    pub user: Option<(u32, u32)>,
    /// More variables in the Worker's own environment (as the real Worker holds the job's
    /// secrets): `/proc/<worker>/environ` shows them.
    pub worker_env: Vec<(String, String)>,
    /// Variables the runner gives action steps only (`ACTIONS_CACHE_URL`, ...).
    pub action_env: Vec<(String, String)>,
}

impl FakeRunner {
    /// A runner whose service (the Worker, its hooks and steps) runs as `user`, as the README
    /// recommends: an unprivileged user in the control socket's group.
    pub fn as_user(user: &TestUser) -> Self {
        let mut runner = Self::outside_tmp();
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", user.uid, user.gid))
            .arg(runner.dir.path())
            .status()
            .expect("chown");
        assert!(status.success(), "chown of the runner's directory");
        runner.user = Some((user.uid, user.gid));
        runner
    }

    pub fn new() -> Self {
        Self::with_dir(tempfile::tempdir().expect("runner dir"))
    }

    /// A runner laid out outside /tmp (as real runners are: a program run from /tmp is a
    /// finding of its own, `exec-from-temp`).
    pub fn outside_tmp() -> Self {
        Self::with_dir(tempdir_outside_tmp())
    }

    /// A runner laid out in a directory of its own under `parent` (created if missing).
    pub fn in_dir(parent: &Path) -> Self {
        std::fs::create_dir_all(parent).expect("runner parent");
        Self::with_dir(tempfile::tempdir_in(parent).expect("runner dir"))
    }

    fn with_dir(dir: tempfile::TempDir) -> Self {
        let layout = runner_sim::Layout::create(dir.path()).expect("runner layout");
        let run_id = format!(
            "{}{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        FakeRunner {
            repository: "acme/app".into(),
            home: layout.home(),
            workspace: layout.workspace(),
            layout,
            dir,
            run_id,
            user: None,
            worker_env: Vec::new(),
            action_env: Vec::new(),
        }
    }

    /// The file the runner exposes as `GITHUB_STEP_SUMMARY`.
    pub fn step_summary(&self) -> PathBuf {
        self.layout.step_summary()
    }

    /// Runs the job: each `(step id, script)` as one step, in order (an empty id: the Worker's
    /// own work outside steps, in a child; `@worker`: run by the Worker process itself).
    /// Returns the Worker's output; panics (with the output) when a step fails.
    pub fn run_job(&self, steps: &[(&str, &str)]) -> String {
        self.run_job_with_hooks(steps, None)
    }

    /// Runs the job as `run_job`, with the runner's job hooks set to call the monitor at
    /// `socket` (as `ACTIONS_RUNNER_HOOK_JOB_STARTED`/`_COMPLETED` scripts would).
    pub fn run_job_with_hooks(&self, steps: &[(&str, &str)], socket: Option<&Path>) -> String {
        self.run_job_in(None, steps, socket)
    }

    /// Runs the job with the whole runner inside network namespace `netns` (as a runner in a
    /// container or VM has its own network), when given.
    pub fn run_job_in(
        &self,
        netns: Option<&str>,
        steps: &[(&str, &str)],
        socket: Option<&Path>,
    ) -> String {
        let (ok, text) = self.try_run_job_in(netns, steps, socket);
        assert!(ok, "job failed:\n{text}");
        text
    }

    /// Runs the job as `run_job_in`; returns whether it succeeded, and its output.
    pub fn try_run_job_in(
        &self,
        netns: Option<&str>,
        steps: &[(&str, &str)],
        socket: Option<&Path>,
    ) -> (bool, String) {
        let mut job = runner_sim::Job::new(self.run_id.clone());
        job.repository = self.repository.clone();
        job.action_env = self.action_env.clone();
        let steps: Vec<runner_sim::Step> = steps
            .iter()
            .map(|s| runner_sim::Step::from_pair(*s))
            .collect();
        let hooks = socket.map(|socket| runner_sim::Hooks {
            monitor: monitor_bin(),
            socket: socket.to_path_buf(),
        });
        let worker = self
            .layout
            .write_worker(&job, &steps, hooks.as_ref())
            .expect("writing the Worker's script");
        let mut command = self.layout.worker_command(&worker, netns, &[]);
        command.env("PYENV_ROOT", "/root/.pyenv");
        for (name, value) in &self.worker_env {
            command.env(name, value);
        }
        if let Some((uid, gid)) = self.user {
            use std::os::unix::process::CommandExt as _;
            command.uid(uid).gid(gid);
        }
        // A test thread forking while another writes its Worker script lends the child that
        // writable descriptor until it execs: the script is "busy" for that moment (ETXTBSY).
        let mut tries = 0;
        let output = loop {
            match command.output() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other.expect("starting Runner.Worker"),
            }
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if !output.status.success() {
            return (false, format!("({})\n{text}", output.status));
        }
        (true, text)
    }

    /// This job's findings, among all an agent wrote.
    pub fn findings_of(&self, all: &[Value]) -> Vec<Value> {
        all.iter()
            .filter(|f| f["job"]["run_id"].as_str() == Some(self.run_id.as_str()))
            .cloned()
            .collect()
    }
}

impl Default for FakeRunner {
    fn default() -> Self {
        Self::new()
    }
}

pub fn rule(f: &Value) -> &str {
    f["rule"].as_str().unwrap_or("")
}

/// GET `url`, failing the test on any error; the body.
pub fn http_get(url: &str) -> String {
    let mut response = ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    response
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|e| panic!("GET {url}: reading the body: {e}"))
}

/// The value of one sample in a text exposition (`name{labels}` exactly as printed).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A last step whose finding (reading its parent's environment) proves the agent has judged
/// every step before it: run it last, then `Agent::findings_through_marker`.
pub const MARKER_STEP: (&str, &str) = ("marker", "cat /proc/$PPID/environ >/dev/null\n");

impl Agent {
    /// This runner's findings, once the marker step's has arrived.
    pub fn findings_through_marker(&self, runner: &FakeRunner) -> Vec<Value> {
        let all = self.wait_for_findings("the marker step's finding", |all| {
            runner
                .findings_of(all)
                .iter()
                .any(|f| f["step"]["id"] == MARKER_STEP.0)
        });
        runner.findings_of(&all)
    }
}

/// A profile that judges loopback like any other destination, so a loopback sink is
/// unexpected egress.
pub const STRICT_PROFILE: &str = "version: 1\negress:\n  allow: []\n";

/// A loopback sink standing in for an exfiltration host: accepts, reads what comes and hangs up,
/// so clients that wait for the peer to close (node's `socket.end`) finish. Returns its port.
pub fn sink() -> u16 {
    use std::io::Read as _;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("sink");
    let port = listener.local_addr().expect("sink address").port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = conn.read_to_end(&mut Vec::new());
        }
    });
    port
}

/// An npm package as a tarball made by `npm pack` (no registry involved).
pub fn npm_package(dir: &Path, name: &str, scripts: &str, files: &[(&str, &str)]) -> PathBuf {
    let pkg = dir.join(name);
    std::fs::create_dir_all(&pkg).expect("package dir");
    std::fs::write(
        pkg.join("package.json"),
        format!(r#"{{"name":"{name}","version":"1.0.0","scripts":{{{scripts}}}}}"#),
    )
    .expect("package.json");
    for (file, text) in files {
        std::fs::write(pkg.join(file), text).expect("package file");
    }
    let out = Command::new("npm")
        .args(["pack", "--silent", "--pack-destination"])
        .arg(dir)
        .current_dir(&pkg)
        .output()
        .expect("npm pack");
    assert!(
        out.status.success(),
        "npm pack: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join(format!("{name}-1.0.0.tgz"))
}

/// Builds the C helper `tests/fixtures/<source>` with gcc into `dir/<name>`.
pub fn build_fixture(dir: &Path, source: &str, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(source);
    let bin = dir.join(name);
    let built = Command::new("gcc")
        .args(["-O1", "-Wall", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("gcc (`cargo xtask setup` installs it)");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    bin
}

/// The findings of one rule.
pub fn by_rule<'a>(findings: &'a [Value], r: &str) -> Vec<&'a Value> {
    findings.iter().filter(|f| rule(f) == r).collect()
}

/// Runs the monitor CLI, failing the test with its stderr when it fails; returns stdout.
pub fn monitor_cli(args: &[&str]) -> String {
    let out = Command::new(monitor_bin())
        .args(args)
        .output()
        .expect("monitor");
    assert!(
        out.status.success(),
        "monitor {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

impl FakeRunner {
    /// Packs `evil-pkg`, whose `postinstall` runs `steal_js`, and gives the job's workspace a
    /// `package.json` to install it into; returns the tarball (install it with `npm install
    /// --offline --no-audit --no-fund <tarball>`).
    pub fn evil_npm_package(&self, steal_js: &str) -> PathBuf {
        let tgz = npm_package(
            self.dir.path(),
            "evil-pkg",
            r#""postinstall":"node steal.js""#,
            &[("steal.js", steal_js)],
        );
        std::fs::write(
            self.workspace.join("package.json"),
            r#"{"name":"app","version":"1.0.0"}"#,
        )
        .expect("workspace package.json");
        tgz
    }
}

/// An unprivileged user and its group, made once per machine (idempotent), standing in for a
/// self-hosted runner's service user in the control socket's group.
pub struct TestUser {
    pub name: &'static str,
    pub group: &'static str,
    pub uid: u32,
    pub gid: u32,
}

pub fn unprivileged_runner_user() -> TestUser {
    require_root();
    let (name, group) = ("monitor-ci-runner", "monitor-ci-group");
    let run = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"))
    };
    if !run("getent", &["group", group]).status.success() {
        let out = run("groupadd", &["--system", group]);
        assert!(
            out.status.success() || run("getent", &["group", group]).status.success(),
            "groupadd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if !run("id", &["-u", name]).status.success() {
        let out = run(
            "useradd",
            &[
                "--system",
                "--gid",
                group,
                "--no-create-home",
                "--shell",
                "/bin/sh",
                name,
            ],
        );
        assert!(
            out.status.success() || run("id", &["-u", name]).status.success(),
            "useradd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let number = |args: &[&str]| -> u32 {
        String::from_utf8_lossy(&run("id", args).stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    TestUser {
        name,
        group,
        uid: number(&["-u", name]),
        gid: number(&["-g", name]),
    }
}

/// The canary npm token `monitor selftest` plants in its lab's `~/.npmrc`.
pub const CANARY_NPM_TOKEN: &str = "npm_SELFTESTCANARY000000000000000000000000";

/// Makes a network namespace named `prefix-<pid>-<n>` with its loopback up and `addresses`
/// (with their prefix length) on it, for a test's own network; `delete_netns` removes it.
pub fn make_netns(prefix: &str, addresses: &[&str]) -> String {
    static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let ns = format!(
        "{prefix}-{}-{}",
        std::process::id(),
        MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let run = |args: &[&str]| {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["ip", "netns", "add", &ns]);
    run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
    for a in addresses {
        run(&["ip", "-n", &ns, "addr", "add", a, "dev", "lo"]);
    }
    ns
}

/// Removes a namespace `make_netns` made (and its `/etc/netns` files).
pub fn delete_netns(ns: &str) {
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
    let _ = std::fs::remove_dir_all(format!("/etc/netns/{ns}"));
}

/// A directory of its own in bpffs for an agent's pins (`--pin-dir`), removed with everything
/// in it when the test ends, however it ends (pinned links too: their programs detach, so a
/// failed test leaves no enforcement behind).
pub struct PinDir(pub PathBuf);

impl PinDir {
    /// `/sys/fs/bpf/monitor-test-<name>-<test process>-<n>`.
    pub fn new(name: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        PinDir(format!("/sys/fs/bpf/monitor-test-{name}-{}-{n}", std::process::id()).into())
    }

    /// The directory, as `--pin-dir`'s value.
    pub fn arg(&self) -> &str {
        self.0.to_str().expect("utf-8 pin directory")
    }

    /// The enforcement directories agents left in it.
    pub fn enforcement_dirs(&self) -> Vec<String> {
        std::fs::read_dir(&self.0)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.starts_with("enforcement-"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        remove_tree(&self.0);
    }
}

/// Where tests keep directories that must not be under /tmp (a program run from /tmp is a
/// finding of its own, `exec-from-temp`; /tmp may be a tmpfs).
pub const OUTSIDE_TMP: &str = "/var/lib/monitor-tests";

/// A directory of its own under [`OUTSIDE_TMP`] (created if missing), removed when dropped.
pub fn tempdir_outside_tmp() -> tempfile::TempDir {
    std::fs::create_dir_all(OUTSIDE_TMP).expect(OUTSIDE_TMP);
    tempfile::tempdir_in(OUTSIDE_TMP).expect("a directory under /var/lib/monitor-tests")
}

/// A fresh ext4 file system of its own (a 64 MB image, loop-mounted under
/// /var/lib/monitor-tests), for cases that depend on how ext4 hands out inode numbers: on a
/// file system nothing else writes, a removed directory's number goes to the next directory
/// made beside it. On the machine's own disk that stops holding once the parent's block group
/// fills up (other tests, earlier runs), and a case that needs the reuse cannot be made.
/// Unmounted when dropped; whatever is mounted on it must be dropped first.
pub struct ScratchExt4 {
    dir: tempfile::TempDir,
}

impl ScratchExt4 {
    pub fn mount() -> Self {
        let dir = tempdir_outside_tmp();
        let image = dir.path().join("image");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mount point");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(64 << 20))
            .expect("image file");
        let run = |cmd: &mut Command| {
            let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
            assert!(
                out.status.success(),
                "{cmd:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mnt));
        ScratchExt4 { dir }
    }

    /// Where it is mounted.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
}

impl Drop for ScratchExt4 {
    fn drop(&mut self) {
        // `mount -o loop` set the loop device to detach itself when unmounted.
        let _ = Command::new("umount").arg(self.path()).status();
    }
}

/// Removes a directory and everything below it, as far as it can (bpffs pins included).
pub fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                remove_tree(&e.path());
            } else {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}
