//! An agent that starts (or restarts) while a job is running picks the job up from /proc: the
//! running step is attributed again, what it does next is judged, and the job's report says
//! monitoring began mid-job.

use std::time::{Duration, Instant};

use integration_tests::{by_rule, Agent, FakeRunner, Value, STRICT_PROFILE};

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
    let reports = agent.dir.path().join("reports");
    let deadline = Instant::now() + Duration::from_secs(20);
    let report = loop {
        let found = std::fs::read_dir(&reports).ok().and_then(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && p.to_string_lossy().contains(&runner.run_id)
            })
        });
        if let Some(path) = found {
            break serde_json::from_str::<Value>(&std::fs::read_to_string(path).unwrap()).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no report for the resumed job:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(report["complete"], false);
    let why = report["incomplete_because"].to_string();
    assert!(why.contains("monitoring began"), "{why}");
}
