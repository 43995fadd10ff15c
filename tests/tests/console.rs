//! `monitor run` at a terminal: findings as one readable line each, not the event stream. The
//! agent runs under `script`, so its standard output is a real pseudo-terminal.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{monitor_bin, require_root, FakeRunner};

#[test]
fn at_a_terminal_findings_are_one_line_each_and_events_go_to_their_log() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (events, findings, ready, screen) = (
        dir.path().join("events.jsonl"),
        dir.path().join("findings.jsonl"),
        dir.path().join("ready"),
        dir.path().join("screen.txt"),
    );
    let command = format!(
        "{} run --events {} --findings {} --ready-file {} --no-control-socket --no-metrics --no-reports --no-baseline",
        monitor_bin().display(),
        events.display(),
        findings.display(),
        ready.display()
    );
    let mut script = Command::new("script")
        .args(["-qfec", &command])
        .arg(&screen)
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        assert!(
            Instant::now() < deadline,
            "the agent under script never became ready"
        );
        assert!(script.try_wait().unwrap().is_none(), "script exited");
        std::thread::sleep(Duration::from_millis(100));
    }
    let runner = FakeRunner::outside_tmp();
    std::fs::write(runner.home.join(".npmrc"), "//r/:_authToken=CANARY\n").unwrap();
    runner.run_job(&[("leak", "cat ~/.npmrc > /dev/null\n")]);
    // The finding is in the findings log, in full.
    let deadline = Instant::now() + Duration::from_secs(20);
    let finding = loop {
        let text = std::fs::read_to_string(&findings).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .find(|l| l.contains(&runner.run_id) && l.contains("credential-read"))
        {
            break serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no finding in {}",
            findings.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(finding["step"]["id"], "leak");
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("pkill")
        .args(["-TERM", "-f", &ready.display().to_string()])
        .status();
    let _ = script.wait();
    let screen = std::fs::read_to_string(&screen).unwrap();
    // One line for it: the time, severity in colour, rule, repository, job and step, summary.
    let line = screen
        .lines()
        .find(|l| l.contains("credential-read") && l.contains("acme/app build › leak"))
        .unwrap_or_else(|| panic!("no finding line on the terminal:\n{screen}"));
    assert!(line.contains("\x1b[1;31mHIGH"), "{line:?}");
    assert!(line.contains(".npmrc"), "{line:?}");
    // No event stream on the terminal; the events are in their log.
    assert!(
        !screen.contains("\"seq\""),
        "events on the terminal:\n{screen}"
    );
    assert!(screen.contains("monitor: watching"), "{screen}");
    let logged = std::fs::read_to_string(&events).unwrap();
    assert!(logged.lines().count() > 10 && logged.contains("\"seq\""));
}
