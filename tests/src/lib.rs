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
}

impl Agent {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let events_path = dir.path().join("events.jsonl");
        let ready = dir.path().join("ready");
        let log = std::fs::File::create(dir.path().join("agent.log")).expect("agent log");
        let child = Command::new(monitor_bin())
            .arg("run")
            .arg("--events")
            .arg(&events_path)
            .arg("--ready-file")
            .arg(&ready)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting the agent");
        let mut agent = Agent {
            child,
            dir,
            events_path,
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Every event written so far. A line that is not valid JSON fails the test.
    pub fn events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.events_path).unwrap_or_default();
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
    pub fn stop(mut self) -> String {
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
