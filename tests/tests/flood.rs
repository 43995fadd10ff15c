//! A flood inside a job (an exec storm whose records cannot fit a deliberately tiny ring): the agent keeps
//! its memory bounded, loses events only in the kernel where they are counted, exports the count,
//! and the job's report says it may be incomplete. Nothing is hidden.

use integration_tests::{sample, Agent, FakeRunner, Value, STRICT_PROFILE};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn an_exec_flood_is_counted_exported_and_reported_without_unbounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("strict.yml");
    std::fs::write(&profile, STRICT_PROFILE).unwrap();
    // One page of ring: an exec storm cannot fit.
    let agent = Agent::start_with(&[
        "--profile",
        profile.to_str().unwrap(),
        "--ring-bytes",
        "4096",
    ]);
    let runner = FakeRunner::new();
    runner.run_job_with_hooks(
        // Each program's environment (8 KB of padding) makes its env record bigger than the
        // whole ring: those records are lost whatever the agent's speed, and must be counted.
        &[(
            "flood",
            "export PADDING=$(printf '%08000d' 0)\nfor i in $(seq 1 1000); do /bin/true; done\n",
        )],
        Some(&agent.control_socket),
    );
    // Losses are read from the kernel every half second: wait for the export to show them.
    let lost = |metrics: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("monitor_events_dropped_total{cause=\"kernel_ring_full\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let metrics = loop {
        let metrics = agent.scrape();
        if lost(&metrics) > 0.0 || std::time::Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(
        lost(&metrics) > 0.0,
        "a 4 KiB ring lost nothing under an exec storm?\n{metrics}"
    );
    assert!(
        rss_kib(agent.pid()) < 256 * 1024,
        "agent RSS {} KiB",
        rss_kib(agent.pid())
    );
    assert!(sample(&metrics, "monitor_events_total{kind=\"exec\"}").unwrap() > 0.0);

    let reports = agent.dir.path().join("reports");
    let report: Value = std::fs::read_dir(&reports)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.extension().is_some_and(|x| x == "json")
                && p.to_string_lossy().contains(&runner.run_id)
        })
        .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
        .expect("the job's report");
    assert_eq!(report["complete"], false);
    assert!(
        report["drops"]["kernel_ring_full"].as_u64().unwrap() > 0,
        "{}",
        report["drops"]
    );
    assert!(
        report["incomplete_because"].to_string().contains("lost"),
        "{}",
        report["incomplete_because"]
    );
}
