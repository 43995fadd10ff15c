//! `monitor selftest` end to end: the real agent, real probes, real npm/pip/git/curl, every
//! re-enacted attack detected and every benign twin clean; and an interrupted run leaves nothing.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{monitor_bin, require_root, Value};

/// A work directory outside /tmp (programs run from /tmp are a finding of their own).
fn work_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(format!(
        "/var/lib/monitor-tests/{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Processes still running from a lab under `dir` (by executable, command line or the marker
/// every lab process inherits).
fn processes_from(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&dir)
            || String::from_utf8_lossy(&environ).contains(&format!("SELFTEST_LAB={dir}"))
        {
            found.push(format!("{name}: {cmdline}"));
        }
    }
    found
}

#[test]
fn every_reenacted_attack_is_detected_and_every_benign_twin_is_clean() {
    require_root();
    let dir = work_dir("selftest");
    let out = Command::new(monitor_bin())
        .args(["selftest", "--json", "--work-dir"])
        .arg(&dir)
        .output()
        .expect("monitor selftest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let card: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("no JSON scorecard ({e}):\n{stdout}\n{stderr}"));
    assert_eq!(out.status.code(), Some(0), "{card:#}\n{stderr}");
    let scenarios = card["scenarios"].as_array().expect("scenarios");
    let names: Vec<&str> = scenarios
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    // The scenarios of the issue, every one of them run.
    for name in [
        "npm-postinstall-stealer",
        "git-dependency-prepare",
        "pth-dropper",
        "import-time-miner",
        "runner-memory-dump",
        "runner-memory-dump-killed",
        "environ-harvest",
        "oidc-token-from-test-step",
        "cache-service-from-another-action",
        "action-poisoned-on-disk",
        "workflow-and-shell-rc-persistence",
        "process-outlives-step",
        "packaging-leak",
        "exfiltration-without-connect",
        "agent-killed",
        "persistence-by-rename",
        "credential-by-another-name",
        "fileless-and-piped",
        "forged-dns-answer",
        "dns-question-exfiltration",
        "raw-socket-egress",
        "fast-open-exfiltration",
        "io-uring-exfiltration",
        "compat-syscall-exfiltration",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    for s in scenarios {
        assert_eq!(s["attack"]["verdict"], "detected", "{s:#}");
        assert!(
            !s["attack"]["findings"].as_array().unwrap().is_empty(),
            "{s:#}"
        );
        assert_eq!(s["twin"]["verdict"], "clean", "{s:#}");
    }
    assert_eq!(card["detected"], card["attacks"]);
    assert_eq!(card["not_run"], 0);
    assert!(!dir.exists(), "the lab was not removed: {}", dir.display());
    assert!(
        processes_from(&dir).is_empty(),
        "{:?}",
        processes_from(&dir)
    );
    assert!(
        !stdout.contains(integration_tests::CANARY_NPM_TOKEN),
        "a canary secret reached the scorecard"
    );
}

#[test]
fn an_interrupted_selftest_removes_everything_it_made() {
    require_root();
    let dir = work_dir("selftest-interrupted");
    let mut child = Command::new(monitor_bin())
        .args(["selftest", "--only", "process-outlives-step", "--work-dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("monitor selftest");
    // Interrupt it mid-job: once the detached process of the attack step is running.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let daemon = processes_from(&dir).iter().any(|p| p.contains("sleep 8"));
        if daemon {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the scenario never started: {:?}",
            child.try_wait()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.exists(), "the lab was not removed: {}", dir.display());
    assert!(
        processes_from(&dir).is_empty(),
        "left running: {:?}",
        processes_from(&dir)
    );
}

#[test]
fn a_work_dir_too_long_for_the_labs_socket_is_refused_before_anything_runs_and_left_clean() {
    require_root();
    // 100 bytes: with the lab's name and "control.sock" over a unix socket path's 107.
    let base = work_dir("selftest-long");
    let pad = 100usize.saturating_sub(base.as_os_str().len() + 1);
    let dir = base.join("d".repeat(pad));
    let out = Command::new(monitor_bin())
        .args(["selftest", "--work-dir"])
        .arg(&dir)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("monitor selftest");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("choose a shorter --work-dir") && stderr.contains("at most 107"),
        "{stderr}"
    );
    // Nothing ran (no scenario's line) and nothing is left of the lab.
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("detected"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
    let _ = std::fs::remove_dir_all(&base);
}
