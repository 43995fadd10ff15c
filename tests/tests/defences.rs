//! `defence-tampering` end to end: a step switches off the host's defences by writing the files
//! (a kernel hardening switch, a system log) and by asking the service manager to stop an audit
//! service; each is a finding for the step. Its twin reads the same files and asks for a status.
//! Nothing on the machine changes: the switch is written back with the value it has, the log is
//! one the test made.

use integration_tests::{by_rule, Agent, FakeRunner, MARKER_STEP, STRICT_PROFILE};

#[test]
fn switching_off_host_defences_is_reported_by_any_route() {
    let agent = Agent::start_with_profile(STRICT_PROFILE);
    let runner = FakeRunner::outside_tmp();
    let log = format!("/var/log/monitor-test-{}.log", std::process::id());
    // A unit of the audit family that no machine has: the request is the route under test, and
    // it must not stop a real audit service where the tests run.
    let unit = format!("auditd-monitor-test-{}.service", std::process::id());
    std::fs::write(&log, "a line a job wants gone\n").unwrap();
    let attack = format!(
        "v=$(cat /proc/sys/kernel/randomize_va_space)\n\
         echo \"$v\" > /proc/sys/kernel/randomize_va_space && echo aslr-written\n\
         : > '{log}' && echo log-truncated\n\
         systemctl stop {unit} 2>/dev/null || true; echo stop-asked\n"
    );
    let twin = format!(
        "cat /proc/sys/kernel/randomize_va_space >/dev/null\n\
         tail -n 1 /var/log/dpkg.log >/dev/null 2>&1 || true\n\
         systemctl status auditd.service >/dev/null 2>&1 || true\n\
         grep -c line '{log}' >/dev/null; echo twin-done\n"
    );
    let output = runner.run_job(&[("twin", &twin), ("attack", &attack), MARKER_STEP]);
    let log_text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    for said in ["twin-done", "aslr-written", "log-truncated", "stop-asked"] {
        assert!(output.contains(said), "{said}: {output}");
    }
    // The truncation really happened.
    assert!(log_text.is_empty(), "{log_text:?}");
    let mine = agent.findings_through_marker(&runner);
    let tampering = by_rule(&mine, "defence-tampering");
    assert!(
        tampering.iter().all(|f| f["step"]["id"] == "attack"),
        "{tampering:#?}"
    );
    let has = |what: &str| {
        tampering
            .iter()
            .any(|f| f["summary"].as_str().unwrap_or("").contains(what))
    };
    assert!(has("randomize_va_space"), "{tampering:#?}");
    assert!(has(&log), "{tampering:#?}");
    assert!(has(&format!("systemctl stop {unit}")), "{tampering:#?}");
    assert!(!mine.iter().any(|f| f["step"]["id"] == "twin"), "{mine:#?}");
}

/// A system log deleted or moved away, by several routes: `rm` (unlinkat), `unlink` (unlink),
/// a relative name from inside /var/log (the kernel resolves the directory) and `mv` out of it
/// (rename). Each log is one the test made; each is proved gone. The twin deletes and moves its
/// own files elsewhere.
#[test]
fn deleting_or_moving_a_system_log_away_is_reported() {
    let agent = Agent::start_with_profile(STRICT_PROFILE);
    let runner = FakeRunner::outside_tmp();
    let logs: Vec<String> = (0..4)
        .map(|n| format!("/var/log/monitor-test-{}-{n}.log", std::process::id()))
        .collect();
    for log in &logs {
        std::fs::write(log, "a line a job wants gone\n").unwrap();
    }
    let moved = format!("/var/tmp/monitor-test-{}-moved.log", std::process::id());
    let relative = logs[2].rsplit('/').next().unwrap();
    let attack = format!(
        "rm -f '{}' && echo rm-done\n\
         unlink '{}' && echo unlink-done\n\
         (cd /var/log && python3 -c 'import os,sys; os.unlink(sys.argv[1])' '{relative}') && echo relative-done\n\
         mv '{}' '{moved}' && echo mv-done\n",
        logs[0], logs[1], logs[3]
    );
    let twin = "t=$(mktemp -d /var/tmp/twin.XXXXXX)\n\
                echo x > \"$t/a.log\"; mv \"$t/a.log\" \"$t/b.log\"; rm -f \"$t/b.log\"; rmdir \"$t\"\n\
                echo x > build.log; rm build.log; echo twin-done\n";
    let output = runner.run_job(&[("twin", twin), ("attack", &attack), MARKER_STEP]);
    let _ = std::fs::remove_file(&moved);
    for said in [
        "twin-done",
        "rm-done",
        "unlink-done",
        "relative-done",
        "mv-done",
    ] {
        assert!(output.contains(said), "{said}: {output}");
    }
    for log in &logs {
        assert!(!std::path::Path::new(log).exists(), "{log} is gone");
    }
    let mine = agent.findings_through_marker(&runner);
    let tampering = by_rule(&mine, "defence-tampering");
    assert!(
        tampering.iter().all(|f| f["step"]["id"] == "attack"),
        "{tampering:#?}"
    );
    for log in &logs {
        assert!(
            tampering
                .iter()
                .any(|f| f["evidence"]["path"].as_str() == Some(log.as_str())),
            "{log}: {tampering:#?}"
        );
    }
    assert!(!mine.iter().any(|f| f["step"]["id"] == "twin"), "{mine:#?}");
}

/// The signal route: a job stopping an audit daemon directly (kill, a pidfd, its process group:
/// every route passes where the kernel generates the signal). The daemon here is the test's own
/// stand-in, a program named `auditd` started outside any job; the step proves it stopped it.
/// The twin stops its own child and probes the daemon with signal 0.
#[test]
fn stopping_a_guarded_service_by_signal_is_reported() {
    let dir = integration_tests::tempdir_outside_tmp();
    let daemon = dir.path().join("auditd");
    std::fs::copy("/bin/sleep", &daemon).unwrap();
    let mut service = std::process::Command::new(&daemon)
        .arg("120")
        .spawn()
        .unwrap();
    let pid = service.id();
    // Started after the daemon: the agent reads /proc for guarded services as it starts (and
    // every 2 s after), so the daemon is guarded before the first step.
    let agent = Agent::start_with_profile(STRICT_PROFILE);
    let runner = FakeRunner::outside_tmp();
    let attack = format!(
        "kill -STOP {pid}; sleep 0.2; grep -q '^State:.*T' /proc/{pid}/status && echo daemon-stopped; kill -CONT {pid}\n"
    );
    let twin = format!(
        "sleep 5 & C=$!; kill -STOP $C; kill -KILL $C; wait $C || true\nkill -0 {pid} && echo daemon-alive\n"
    );
    let output = runner.run_job(&[("twin", &twin), ("attack", &attack), MARKER_STEP]);
    let _ = service.kill();
    let _ = service.wait();
    assert!(output.contains("daemon-alive"), "{output}");
    assert!(output.contains("daemon-stopped"), "{output}");
    let mine = agent.findings_through_marker(&runner);
    let tampering = by_rule(&mine, "defence-tampering");
    assert_eq!(tampering.len(), 1, "{mine:#?}");
    let f = tampering[0];
    assert_eq!(f["step"]["id"], "attack", "{f:#}");
    assert_eq!(f["evidence"]["syscall"], "signal_guarded", "{f:#}");
    assert_eq!(f["evidence"]["argument"], 19, "{f:#}");
    assert_eq!(f["evidence"]["target_pid"], pid, "{f:#}");
    assert!(!mine.iter().any(|f| f["step"]["id"] == "twin"), "{mine:#?}");
}
