//! The selftest's laboratory: a private directory laid out like a self-hosted runner (home with
//! canary credentials, workspace, `Runner.Worker`), loopback servers standing in for the
//! internet, and the real agent started as a child process with its outputs inside the lab.
//!
//! Everything it creates is inside its directory or in the list of extra paths it removes; every
//! process it starts is a child it kills. Nothing listens beyond 127.0.0.1.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use std::os::unix::process::CommandExt as _;

use anyhow::{bail, Context as _};
use serde_json::Value;

/// Set by SIGINT/SIGTERM/SIGHUP: the run stops at the next check and cleans up.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Catch the signals that would otherwise kill the selftest before it cleans up.
pub fn catch_interrupts() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

#[derive(Debug)]
pub struct Interrupted;
impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}
impl std::error::Error for Interrupted {}

/// Canary secrets: fake, recognisable, harmless if they ever leaked.
pub const CANARY_NPM_TOKEN: &str = "npm_SELFTESTCANARY000000000000000000000000";
pub const CANARY_AWS_SECRET: &str = "selftest/canary/aws/secret/key/0000000000";
pub const CANARY_OIDC_REQUEST_TOKEN: &str = "selftest-canary-oidc-request-token";

/// A tiny HTTP server on loopback: serves `files` by path, answers anything else with 200, and
/// reads (then drops) request bodies, so it stands in for a registry, a download host, a token
/// endpoint or an exfiltration sink.
pub struct HttpServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl HttpServer {
    pub fn start(files: BTreeMap<String, Vec<u8>>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback server")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let files = Arc::new(files);
        std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let files = files.clone();
                        std::thread::spawn(move || serve(conn, &files));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(HttpServer { port, stop })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(mut conn: TcpStream, files: &BTreeMap<String, Vec<u8>>) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    // Bounded: a request head over 64 KiB or a body over 1 MiB is cut.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 65_536 {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .split('?')
        .next()
        .unwrap_or("/")
        .to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length.min(1 << 20)];
    let _ = conn.read_exact(&mut body);
    let reply = files.get(&path).cloned().unwrap_or_else(|| b"ok".to_vec());
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.len()
    );
    let _ = conn.write_all(&reply);
}

/// The agent under test, started from this very binary with its outputs in the lab.
pub struct AgentUnderTest {
    child: Child,
    pub findings: PathBuf,
    pub log: PathBuf,
    /// Where the agent writes a job's report when the job ends.
    pub reports: PathBuf,
    /// Its control socket, private to the lab (root only), for the lab runner's job hooks.
    pub control_socket: PathBuf,
}

/// The control socket of the lab agent whose outputs are in `dir`.
pub fn control_socket_of(dir: &Path) -> PathBuf {
    dir.join("control.sock")
}

/// A unix socket's path is at most `sun_path`'s 108 bytes with its terminating NUL: a longer
/// one fails the agent's bind with a bare "path too long" after the lab is half built.
pub fn check_socket_path(path: &Path) -> anyhow::Result<()> {
    const SUN_PATH_MAX: usize = 107;
    let len = path.as_os_str().len();
    if len > SUN_PATH_MAX {
        anyhow::bail!(
            "{} is {len} bytes long; a unix socket's path may be at most {SUN_PATH_MAX}",
            path.display()
        );
    }
    Ok(())
}

impl AgentUnderTest {
    /// Starts the agent with its outputs in `dir` (appended to when an agent ran there before)
    /// and its tamper log pinned in `pins`.
    /// Starts the agent with the lab's configuration file `config` (its profiles beside it).
    pub fn start(dir: &Path, config: &Path, pins: &Path) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the monitor binary")?;
        let ready = dir.join("agent.ready");
        let _ = std::fs::remove_file(&ready);
        let findings = dir.join("findings.jsonl");
        let log = dir.join("agent.log");
        let reports = dir.join("reports");
        let control_socket = control_socket_of(dir);
        let child = Command::new(exe)
            .arg("run")
            .arg("--events")
            .arg(dir.join("events.jsonl"))
            .arg("--findings")
            .arg(&findings)
            .arg("--ready-file")
            .arg(&ready)
            .arg("--config")
            .arg(config)
            .arg("--reports")
            .arg(&reports)
            .arg("--pin-dir")
            .arg(pins)
            // Never take over an installed agent's socket or metrics port: a socket of the
            // lab's own (mode 0600), which the lab runner's job hooks tell of each job.
            .arg("--control-socket")
            .arg(&control_socket)
            .args(["--no-metrics", "--no-baseline"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            // Its own process group: a Ctrl-C at the terminal reaches the selftest, which
            // stops the agent in order (SIGTERM drains its ring) after cleaning up.
            .process_group(0)
            .spawn()
            .context("starting the agent")?;
        let mut agent = AgentUnderTest {
            child,
            findings,
            log,
            reports,
            control_socket,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready.exists() {
            if let Some(status) = agent.child.try_wait()? {
                bail!(
                    "the agent exited before it was ready ({status}):\n{}",
                    agent.log_text()
                );
            }
            if interrupted() {
                return Err(Interrupted.into());
            }
            if Instant::now() > deadline {
                bail!("the agent was not ready after 60 s:\n{}", agent.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(agent)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The findings written so far (complete lines only).
    pub fn findings(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.findings).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Whether the agent has written the report of the job `run_id` (the job ended, and every
    /// finding of it, including those written at its end, is in the findings file).
    pub fn reported(&self, run_id: &str) -> bool {
        std::fs::read_dir(&self.reports).is_ok_and(|entries| {
            entries.filter_map(Result::ok).any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.ends_with(".json") && name.contains(run_id)
            })
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    pub fn stop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentUnderTest {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `command` to completion unless interrupted (then kills its whole process group).
/// Returns (success, combined output).
pub fn run_interruptible(command: &mut Command) -> anyhow::Result<(bool, String)> {
    let dir = tempfile::tempdir()?;
    let out_path = dir.path().join("out");
    let out = std::fs::File::create(&out_path)?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if interrupted() || Instant::now() > deadline {
            // SAFETY: kill(2) on the process group we created for the child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            if interrupted() {
                return Err(Interrupted.into());
            }
            bail!("{command:?} did not finish in 300 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    Ok((status.success(), text))
}

/// Kills every process whose executable or command line lies in `root` (what a scenario left
/// running, such as a daemonized step), and returns how many there were.
pub fn kill_processes_under(root: &Path) -> usize {
    let root = root.to_string_lossy().into_owned();
    let me = std::process::id();
    let mut killed = 0;
    for _ in 0..3 {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return killed;
        };
        let mut found = 0;
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            if pid as u32 == me {
                continue;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            let environ_marker = std::fs::read(format!("/proc/{pid}/environ"))
                .map(|e| {
                    e.split(|b| *b == 0)
                        .any(|v| v == format!("SELFTEST_LAB={root}").as_bytes())
                })
                .unwrap_or(false);
            if String::from_utf8_lossy(&cmdline).contains(&root)
                || exe.starts_with(&root)
                || environ_marker
            {
                // SAFETY: kill(2); the pid was just read from /proc.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                found += 1;
            }
        }
        killed += found;
        if found == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    killed
}
