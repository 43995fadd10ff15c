//! An agent that starts (or restarts) while a job is running picks the job up from /proc: the
//! running step is attributed again, what it does next is judged, and the job's report says
//! monitoring began mid-job.

use std::time::{Duration, Instant};

use integration_tests::{by_rule, Agent, FakeRunner, PinDir, Value, STRICT_PROFILE};

#[test]
fn a_job_running_when_the_agent_starts_is_picked_up_and_its_report_says_so() {
    let runner = std::sync::Arc::new(FakeRunner::new());
    let flags = tempfile::tempdir().unwrap();
    let (started, go) = (flags.path().join("started"), flags.path().join("go"));
    let script = format!(
        "touch {s}\nwhile [ ! -e {g} ]; do sleep 0.05; done\ncat /proc/$PPID/environ >/dev/null\n",
        s = started.display(),
        g = go.display()
    );
    let job = {
        let runner = runner.clone();
        std::thread::spawn(move || runner.run_job(&[("long-step", &script)]))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The step is running; only now does the agent start.
    let agent = Agent::start_with_profile(STRICT_PROFILE);
    std::fs::write(&go, "").unwrap();
    job.join().unwrap();

    let findings = agent.wait_for_findings("the running step's environ read", |all| {
        !by_rule(&runner.findings_of(all), "process-environ-read").is_empty()
    });
    let read = by_rule(&runner.findings_of(&findings), "process-environ-read")[0].clone();
    assert_eq!(read["step"]["id"], "long-step", "{read}");
    assert_eq!(read["job"]["run_id"].as_str(), Some(runner.run_id.as_str()));
    let resumed: Vec<Value> = agent
        .events()
        .into_iter()
        .filter(|e| {
            e["kind"] == "resume"
                && e["env"]["GITHUB_RUN_ID"].as_str() == Some(runner.run_id.as_str())
        })
        .collect();
    assert!(
        !resumed.is_empty(),
        "the running step was read back from /proc"
    );

    // The job ended (its Worker exited): its report is written and says what is missing.
    let report = agent.wait_for_report(&runner);
    assert_eq!(report["complete"], false);
    let why = report["incomplete_because"].to_string();
    assert!(why.contains("monitoring began"), "{why}");
}

/// A step kills the agent with SIGKILL (as root: the job runs as root on many self-hosted
/// runners). The agent dies before it reads the record of that signal from its ring; the kernel
/// also kept it in the pinned tamper log, so the agent started after it reports the kill,
/// attributed to the step, and the job's report names it.
#[test]
fn an_agent_killed_by_a_step_is_reported_by_the_agent_that_starts_next() {
    let flags = tempfile::tempdir().unwrap();
    let socket = flags.path().join("control.sock");
    // This test's own place in bpffs: agents of other tests running now would otherwise report
    // (and take) the record of an agent they never followed.
    let pins = PinDir::new("restart");
    let pin_args = ["--pin-dir", pins.0.to_str().unwrap()];
    let mut first = Agent::start_with_socket(Some(&socket), &pin_args);
    let victim = first.pid();
    let runner = std::sync::Arc::new(FakeRunner::new());
    let (killed, go) = (flags.path().join("killed"), flags.path().join("go"));
    let script = format!(
        "kill -KILL {victim}\ntouch {k}\nwhile [ ! -e {g} ]; do sleep 0.05; done\n",
        k = killed.display(),
        g = go.display()
    );
    let job = {
        let (runner, socket) = (runner.clone(), socket.clone());
        std::thread::spawn(move || {
            runner.run_job_with_hooks(
                &[("setup", "true\n"), ("kill", &script), ("after", "true\n")],
                Some(&socket),
            )
        })
    };
    // The attack happened: the agent died of SIGKILL.
    let status = first.wait_for_exit();
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(status.signal(), Some(9), "the agent was killed: {status:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !killed.exists() {
        assert!(
            Instant::now() < deadline,
            "the step never got past its kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A new agent (systemd's Restart=always), on the same socket.
    let second = Agent::start_with_socket(Some(&socket), &pin_args);
    std::fs::write(&go, "").unwrap();
    job.join().unwrap();

    let findings = second.wait_for_findings("the kill, from the tamper log", |all| {
        by_rule(&runner.findings_of(all), "agent-tampering")
            .iter()
            .any(|f| f["evidence"]["syscall"] == "signal_logged")
    });
    let kill = by_rule(&runner.findings_of(&findings), "agent-tampering")
        .into_iter()
        .find(|f| f["evidence"]["syscall"] == "signal_logged")
        .unwrap()
        .clone();
    assert_eq!(kill["step"]["id"], "kill", "{kill}");
    assert_eq!(kill["severity"], "critical");
    assert_eq!(kill["evidence"]["argument"].as_u64(), Some(9), "{kill}");
    assert_eq!(kill["evidence"]["target_pid"].as_u64(), Some(victim as u64));
    // bash's own `kill` builtin: the step's shell itself sent it.
    assert_eq!(kill["process_chain"][0]["comm"], "bash", "{kill}");

    let report = second.wait_for_report(&runner);
    assert_eq!(report["complete"], false);
    let why = report["incomplete_because"].to_string();
    assert!(
        why.contains(&format!("the agent (pid {victim}) was sent signal 9"))
            && why.contains("of step kill"),
        "{why}"
    );
}

/// Removing the pinned tamper log (what a root attacker would do before a kill, so that the next
/// agent finds nothing) is noticed on the agent's next tick: it pins the log again, counts it
/// and says so.
#[test]
fn an_unpinned_tamper_log_is_pinned_again_and_counted() {
    let pins = PinDir::new("restart");
    let agent = Agent::start_with(&["--pin-dir", pins.0.to_str().unwrap()]);
    let log = pins.0.join("tamper_log");
    assert!(log.exists(), "the agent pinned its tamper log");
    std::fs::remove_file(&log).unwrap();
    assert!(!log.exists(), "the pin was removed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.exists() {
        assert!(
            Instant::now() < deadline,
            "not pinned again:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = agent.scrape();
    assert_eq!(
        integration_tests::sample(&text, "monitor_tamper_log_unpinned_total"),
        Some(1.0),
        "{text}"
    );
    assert!(agent.log().contains("was removed"), "{}", agent.log());
}
