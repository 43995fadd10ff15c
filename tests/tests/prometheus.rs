//! Prometheus: the alert rules under promtool's unit tests, the agent's real `/metrics`, and a
//! real Prometheus server scraping the agent and firing an alert for a real finding.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{http_get, sample, Agent, FakeRunner, Value};

fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(rules_dir())
        .output()
        .expect(
            "promtool not found: install Debian's `prometheus` package (`cargo xtask setup` does)",
        );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_are_valid_and_pass_their_unit_tests() {
    let checked = promtool(&["check", "rules", "monitor-alerts.yml"]);
    assert!(checked.contains("11 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "monitor-alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    let checked = promtool(&["check", "rules", "monitor-fleet-rules.yml"]);
    assert!(checked.contains("11 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "monitor-fleet-rules.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Debian's Prometheus is built without Kubernetes discovery: that file is read as YAML
    // below, the file-based one checked by promtool.
    let kubernetes: serde_norway::Value = serde_norway::from_str(
        &std::fs::read_to_string(rules_dir().join("fleet/scrape-kubernetes.yml")).unwrap(),
    )
    .unwrap();
    let job = &kubernetes["scrape_configs"][0];
    assert_eq!(job["job_name"].as_str(), Some("ci-runtime-monitor"));
    assert_eq!(
        job["kubernetes_sd_configs"][0]["role"].as_str(),
        Some("pod")
    );
    assert!(job["relabel_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|r| r["target_label"].as_str() == Some("pool")));
    for config in ["fleet/scrape-file-sd.yml"] {
        let out = Command::new("promtool")
            .args(["check", "config", "--syntax-only"])
            .arg(rules_dir().join(config))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{config}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn metrics_endpoint_exports_events_heartbeat_probes_and_findings() {
    let agent = Agent::start_with_profile("version: 1\negress:\n  allow: []\n");
    // A job the runner declares through its hooks is labelled with its repository; one only
    // seen in environments (which any local process can set) is not.
    let mut runner = FakeRunner::new();
    runner.repository = "acme/metrics-declared".into();
    runner.run_job_with_hooks(
        &[("__run", "cat /proc/$PPID/environ >/dev/null\n")],
        Some(&agent.control_socket),
    );
    let mut undeclared = FakeRunner::new();
    undeclared.repository = "acme/metrics-undeclared".into();
    undeclared.run_job(&[("__run", "cat /proc/$PPID/environ >/dev/null\n")]);
    agent.wait_for_findings("the environ reads", |all| {
        !runner.findings_of(all).is_empty() && !undeclared.findings_of(all).is_empty()
    });
    // Findings are counted as they are written; the heartbeat runs at start and every 10 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = agent.scrape();
        let heartbeat =
            sample(&text, "monitor_pipeline_heartbeat_timestamp_seconds").unwrap_or(0.0);
        // The heartbeat's addressed datagram, seen only by the cgroup egress hooks.
        let egress_heartbeat =
            sample(&text, "monitor_egress_hook_heartbeat_timestamp_seconds").unwrap_or(0.0);
        if heartbeat > 0.0
            && egress_heartbeat > 0.0
            && text.contains("acme/metrics-declared")
            && text.contains("repository=\"undeclared\"")
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed the heartbeat and the finding:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let heartbeat = sample(&text, "monitor_pipeline_heartbeat_timestamp_seconds").unwrap();
    assert!(
        (now - heartbeat).abs() < 30.0,
        "heartbeat {heartbeat} vs now {now}"
    );
    let egress_heartbeat =
        sample(&text, "monitor_egress_hook_heartbeat_timestamp_seconds").unwrap();
    assert!(
        (now - egress_heartbeat).abs() < 30.0,
        "egress hooks' heartbeat {egress_heartbeat} vs now {now}"
    );
    assert!(
        sample(&text, "monitor_events_total{kind=\"exec\"}").unwrap() >= 2.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "monitor_findings_total{repository=\"acme/metrics-declared\",rule=\"process-environ-read\",severity=\"high\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(
        !text.contains("acme/metrics-undeclared"),
        "an undeclared job takes no label: {text}"
    );
    assert_eq!(
        sample(&text, "monitor_probe_attached{optional=\"false\",probe=\"tracepoint/sched/sched_process_exec\"}"),
        Some(1.0)
    );
    // Every program loads and attaches on this kernel: an optional one the verifier refused is
    // skipped with a warning by the agent, and its detections go quiet (a refused DNS packet
    // program once passed every DNS test but two), so the test machine insists on all of them.
    // Except a tracepoint this kernel does not have at all (module loads, where the kernel has
    // no module support: nothing can be loaded, and tracefs has no such event).
    let absent_here = |line: &str| {
        line.split("probe=\"tracepoint/")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .is_some_and(|event| {
                !std::path::Path::new("/sys/kernel/tracing/events")
                    .join(event)
                    .exists()
            })
    };
    let refused: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("monitor_probe_attached{") && !l.ends_with(" 1"))
        .filter(|l| !absent_here(l))
        .collect();
    assert!(refused.is_empty(), "probes not attached: {refused:#?}");
    assert!(
        text.lines()
            .filter(|l| l.starts_with("monitor_probe_attached{"))
            .count()
            > 40,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "monitor_events_dropped_total{cause=\"kernel_ring_full\",kind=\"open\"}"
        ),
        Some(0.0)
    );
    // The kernel programs' own failures are exported per kind too (none on a healthy kernel).
    for kind in ["exec", "fork", "exit", "connect", "open", "dns"] {
        assert_eq!(
            sample(
                &text,
                &format!("monitor_events_dropped_total{{cause=\"probe_error\",kind=\"{kind}\"}}")
            ),
            Some(0.0),
            "{kind}"
        );
    }
    assert!(sample(&text, "monitor_process_resident_memory_bytes").unwrap() > 1e6);
    // Conventions: one prefix; counters, and only counters, end in _total.
    for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(fields[2].starts_with("monitor_"), "{line}");
        assert_eq!(
            fields[3] == "counter",
            fields[2].ends_with("_total"),
            "{line}"
        );
    }
    // The heartbeat's own processes stay out of the event log. (Other tests' agents run at the
    // same time, and their heartbeats are ordinary processes to this one.)
    let own_pid = agent.pid() as u64;
    let leaked: Vec<Value> = agent
        .events()
        .into_iter()
        .filter(|e| {
            e["process"]["ppid"].as_u64() == Some(own_pid)
                && e["process"]["argv"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == "heartbeat"))
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "heartbeat processes leaked into the log: {leaked:?}"
    );
}

/// A Prometheus server on loopback, with the repo's alert rules, scraping `target` every second.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Self {
        Self::start_with(target, None, &["monitor-alerts.yml"])
    }

    /// Scraping `target` (labelled with `pool` when given, as fleet service discovery does),
    /// with these rule files of deploy/prometheus.
    fn start_with(target: &str, pool: Option<&str>, rule_files: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let rules: String = rule_files
            .iter()
            .map(|f| {
                format!(
                    "  - {}\n",
                    rules_dir().join(f).canonicalize().unwrap().display()
                )
            })
            .collect();
        let labels = pool.map_or(String::new(), |p| {
            format!("        labels: {{pool: {p}}}\n")
        });
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n{rules}\
             scrape_configs:\n  - job_name: ci-runtime-monitor\n    static_configs:\n      - targets: ['{target}']\n{labels}"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus not found: install Debian's `prometheus` package (`cargo xtask setup` does)");
        let prometheus = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        prometheus.wait("its target to be up", Duration::from_secs(60), |p| {
            let up = p.query("up{job=\"ci-runtime-monitor\"}");
            up["data"]["result"][0]["value"][1] == "1"
        });
        prometheus
    }

    fn api(&self, path: &str) -> Value {
        let body = http_get(&format!("{}{path}", self.url));
        serde_json::from_str(&body).unwrap()
    }

    fn query(&self, expr: &str) -> Value {
        let encoded: String = expr
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        self.api(&format!("/api/v1/query?query={encoded}"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Polls until `ready` holds; Prometheus may still be starting (connection refused).
    fn wait(&self, what: &str, timeout: Duration, ready: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ready(self)))
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus: no {what} after {timeout:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn real_prometheus_fires_the_high_severity_alert_for_a_real_finding() {
    let agent = Agent::start_with_profile("version: 1\negress:\n  allow: []\n");
    let prometheus = Prometheus::start(&agent.metrics_address());
    let runner = FakeRunner::new();
    // The runner-memory secret dump's first move: reading a sibling's environment.
    runner.run_job_with_hooks(
        &[("__run", "cat /proc/$PPID/environ >/dev/null\n")],
        Some(&agent.control_socket),
    );
    agent.wait_for_findings("the environ read", |all| {
        !runner.findings_of(all).is_empty()
    });
    prometheus.wait(
        "firing CIMonitorHighSeverityFinding",
        Duration::from_secs(60),
        |p| {
            let alerts = p.api("/api/v1/alerts");
            alerts["data"]["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| {
                    a["labels"]["alertname"] == "CIMonitorHighSeverityFinding"
                        && a["labels"]["rule"] == "process-environ-read"
                        && a["labels"]["repository"] == "acme/app"
                        && a["state"] == "firing"
                })
        },
    );
    // A healthy agent raises none of the health alerts.
    let alerts = prometheus.api("/api/v1/alerts");
    let health: Vec<&Value> = alerts["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["labels"]["alertname"] != "CIMonitorHighSeverityFinding")
        .collect();
    assert!(health.is_empty(), "unexpected alerts: {health:#?}");
}

/// The fleet's Grafana dashboard and rules against a real Prometheus scraping a real agent (its
/// target labelled with a pool, as service discovery does) that ran a job with a finding, a
/// baseline and an output: every dashboard query and every recording rule returns data, and the
/// fleet alerts, whose conditions need a failing agent or several runners (promtool's unit tests
/// cover those), evaluate and stay quiet on this healthy one-runner fleet.
#[test]
fn every_fleet_dashboard_query_and_rule_returns_data_from_a_real_agent() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("monitor.yml");
    std::fs::write(
        &config,
        format!(
            "version: 1\noutputs:\n  - {{name: siem, type: syslog, address: \"127.0.0.1:9\", transport: udp, queue_dir: {}/q}}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let db = dir.path().join("baseline.db");
    let agent = Agent::start_with(&[
        "--config",
        config.to_str().unwrap(),
        "--baseline",
        db.to_str().unwrap(),
    ]);
    let prometheus = Prometheus::start_with(
        &agent.metrics_address(),
        Some("ci-test"),
        &["monitor-alerts.yml", "monitor-fleet-rules.yml"],
    );
    let runner = FakeRunner::new();
    runner.run_job_with_hooks(
        &[("__run", "cat /proc/$PPID/environ >/dev/null\n")],
        Some(&agent.control_socket),
    );
    agent.wait_for_report(&runner);

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy/grafana/ci-runtime-monitor-fleet.json"),
        )
        .unwrap(),
    )
    .unwrap();
    // Grafana's variables as a dashboard showing every pool over the last hour would set them.
    let grafana = |expr: &str| {
        expr.replace("$__rate_interval", "1m")
            .replace("$__range", "1h")
            .replace("$pool", ".*")
    };
    let mut expressions: Vec<(String, String)> = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            expressions.push((
                format!("panel {:?}", panel["title"].as_str().unwrap()),
                grafana(target["expr"].as_str().unwrap()),
            ));
        }
    }
    assert!(expressions.len() >= 15, "{expressions:?}");
    let rules: serde_norway::Value = serde_norway::from_str(
        &std::fs::read_to_string(rules_dir().join("monitor-fleet-rules.yml")).unwrap(),
    )
    .unwrap();
    let mut alerts = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let expr = rule["expr"].as_str().unwrap().to_string();
            match (rule["record"].as_str(), rule["alert"].as_str()) {
                (Some(record), _) => {
                    expressions.push((format!("rule {record}"), expr));
                    // Recorded; per pool, with the pool label.
                    let recorded = if record.starts_with("pool") {
                        format!("{record}{{pool=\"ci-test\"}}")
                    } else {
                        record.to_string()
                    };
                    expressions.push((format!("recorded {record}"), recorded));
                }
                (_, Some(alert)) => alerts.push((alert.to_string(), expr)),
                _ => panic!("a rule that is neither a record nor an alert: {rule:?}"),
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    for (what, expr) in &expressions {
        loop {
            let answer = prometheus.query(expr);
            assert_eq!(answer["status"], "success", "{what}: {expr}: {answer}");
            if !answer["data"]["result"].as_array().unwrap().is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what} returns no data: {expr}\n{}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    // Alerts need a failing agent or several runners; on this fleet they evaluate and are quiet.
    assert_eq!(
        alerts.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>(),
        [
            "CIMonitorPoolCoverageLow",
            "CIMonitorRepositoryFindingsOnSeveralRunners"
        ],
        "a new fleet alert: say here whether this scenario makes it fire"
    );
    for (alert, expr) in &alerts {
        let answer = prometheus.query(expr);
        assert_eq!(answer["status"], "success", "{alert}: {answer}");
        assert_eq!(
            answer["data"]["result"],
            serde_json::json!([]),
            "{alert} fires on a healthy fleet"
        );
    }
    // The pool label went through: the coverage ratio is 1 for it.
    let coverage =
        prometheus.query("pool:monitor_agents_reporting:count / pool:monitor_agents:count");
    assert_eq!(
        coverage["data"]["result"][0]["metric"]["pool"], "ci-test",
        "{coverage}"
    );
    assert_eq!(coverage["data"]["result"][0]["value"][1], "1", "{coverage}");
}
