//! Findings and job summaries to the places a security team reads: a real rsyslog (Debian's,
//! started by the test on loopback ports, writing what it receives to a file) over TCP, UDP and
//! TLS, and an OTLP/HTTP receiver built here on the official `opentelemetry-proto` types. The
//! receivers are stopped during jobs and started again: what was found meanwhile arrives, in
//! order, and nothing is counted lost.

use std::{
    io::{BufRead, Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use integration_tests::{sample, Agent, FakeRunner};
use prost::Message as _;
use serde_json::Value;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An rsyslogd of the test's own: `conf` (its inputs) plus an action writing every message in
/// RFC 5424 form to `received.log`.
struct Rsyslog {
    dir: PathBuf,
    conf: PathBuf,
    child: Option<Child>,
    tcp_port: u16,
}

impl Rsyslog {
    fn start(dir: &Path, inputs: &str, tcp_port: u16) -> Self {
        let conf = dir.join("rsyslog.conf");
        std::fs::create_dir_all(dir.join("work")).unwrap();
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{d}/work\" maxMessageSize=\"64k\")\n{inputs}\n\
                 action(type=\"omfile\" file=\"{d}/received.log\" template=\"RSYSLOG_SyslogProtocol23Format\")\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let mut r = Rsyslog {
            dir: dir.to_path_buf(),
            conf,
            child: None,
            tcp_port,
        };
        r.up();
        r
    }

    fn up(&mut self) {
        let child = Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(&self.conf)
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdout(std::fs::File::create(self.dir.join("rsyslogd.out")).unwrap())
            .stderr(std::fs::File::create(self.dir.join("rsyslogd.err")).unwrap())
            .spawn()
            .expect("rsyslogd (`cargo xtask setup` installs Debian's rsyslog)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.tcp_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "rsyslogd did not listen: {}",
                std::fs::read_to_string(self.dir.join("rsyslogd.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            child.wait().unwrap();
        }
    }

    /// What rsyslog wrote (lossily: a receiver may write any bytes it was sent).
    fn received(&self) -> String {
        std::fs::read(self.dir.join("received.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The received messages of run `run_id`, waiting until `done` says they are all there.
    fn wait_for(&self, run_id: &str, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let lines: Vec<String> = self
                .received()
                .lines()
                .filter(|l| l.contains(run_id))
                .map(str::to_string)
                .collect();
            if done(&lines) {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not received; rsyslog has:\n{}",
                self.received()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.down();
    }
}

/// An RFC 5424 line as rsyslog wrote it: PRI, MSGID and the JSON body.
fn parse(line: &str) -> (u16, String, Value) {
    let rest = line
        .strip_prefix('<')
        .unwrap_or_else(|| panic!("not RFC 5424: {line}"));
    let (pri, rest) = rest
        .split_once(">1 ")
        .unwrap_or_else(|| panic!("not RFC 5424: {line}"));
    let fields: Vec<&str> = rest.splitn(6, ' ').collect();
    // TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD...] MSG
    assert_eq!(fields[2], "ci-runtime-monitor", "{line}");
    let msgid = fields[4].to_string();
    let json_start = line
        .find("] {")
        .unwrap_or_else(|| panic!("no JSON body: {line}"))
        + 2;
    let body: Value = serde_json::from_str(line[json_start..].trim_end())
        .unwrap_or_else(|e| panic!("{e}: {line}"));
    (pri.parse().unwrap(), msgid, body)
}

fn steps_reading(files: &[&str]) -> Vec<(String, String)> {
    files
        .iter()
        .enumerate()
        .map(|(i, f)| (format!("read{i}"), format!("cat ~/{f} > /dev/null\n")))
        .collect()
}

fn run(agent: &Agent, runner: &mut FakeRunner, n: u32, steps: &[(String, String)]) {
    runner.run_id = format!("{}{n}{}", std::process::id(), free_port());
    let pairs: Vec<(&str, &str)> = steps
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    runner.run_job_with_hooks(&pairs, Some(&agent.control_socket));
}

/// With `output`'s receiver down, a job reads three credentials (one step each): its three
/// findings and its summary wait in the output's queue.
fn three_findings_wait(agent: &Agent, runner: &mut FakeRunner, output: &str) {
    run(
        agent,
        runner,
        2,
        &steps_reading(&[".npmrc", ".pypirc", ".git-credentials"]),
    );
    wait_metric(
        agent,
        &format!("monitor_output_queued_records{{output=\"{output}\"}}"),
        |n| n >= 4.0,
    );
}

fn runner_with_secrets() -> FakeRunner {
    let runner = FakeRunner::outside_tmp();
    std::fs::write(runner.home.join(".npmrc"), "//r/:_authToken=CANARY\n").unwrap();
    std::fs::write(runner.home.join(".pypirc"), "[pypi]\npassword = CANARY\n").unwrap();
    std::fs::write(runner.home.join(".git-credentials"), "https://u:CANARY@h\n").unwrap();
    runner
}

fn metric(agent: &Agent, series: &str) -> f64 {
    sample(&agent.scrape(), series).unwrap_or(0.0)
}

fn wait_metric(agent: &Agent, series: &str, pred: impl Fn(f64) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pred(metric(agent, series)) {
        assert!(
            Instant::now() < deadline,
            "{series}: {}",
            metric(agent, series)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Syslog over TCP (JSON bodies) and UDP (CEF, high findings only): a real job's findings and
/// summary arrive as RFC 5424 with the severity mapped; rsyslog stopped, a job's three findings
/// and summary wait on disk, and arrive in order when it is back, with nothing lost.
#[test]
fn findings_reach_rsyslog_over_tcp_and_udp_and_wait_for_it_when_it_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let (tcp, udp) = (free_port(), free_port());
    let mut rsyslog = Rsyslog::start(
        dir.path(),
        &format!(
            "module(load=\"imtcp\")\ninput(type=\"imtcp\" port=\"{tcp}\" address=\"127.0.0.1\")\n\
             module(load=\"imudp\")\ninput(type=\"imudp\" port=\"{udp}\" address=\"127.0.0.1\")"
        ),
        tcp,
    );
    let config = dir.path().join("monitor.yml");
    std::fs::write(
        &config,
        format!(
            "version: 1\nrunner: {{pool: ci-test}}\noutputs:\n\
             \x20 - {{name: siem, type: syslog, address: \"127.0.0.1:{tcp}\", queue_dir: {q}/siem}}\n\
             \x20 - {{name: siem-udp, type: syslog, address: \"127.0.0.1:{udp}\", transport: udp, format: cef, facility: local1, min_severity: high, records: [findings], queue_dir: {q}/udp}}\n",
            q = dir.path().display()
        ),
    )
    .unwrap();
    let agent = Agent::start_with(&["--config", config.to_str().unwrap()]);
    let mut runner = runner_with_secrets();

    run(&agent, &mut runner, 1, &steps_reading(&[".npmrc"]));
    let lines = rsyslog.wait_for(&runner.run_id, "job 1's finding and summary", |l| {
        l.iter().any(|l| l.contains("CEF:0|"))
            && l.iter().filter(|l| !l.contains("CEF:0|")).count() >= 2
    });
    let tcp_lines: Vec<(u16, String, Value)> = lines
        .iter()
        .filter(|l| !l.contains("CEF:0|"))
        .map(|l| parse(l))
        .collect();
    let (pri, msgid, body) = tcp_lines
        .iter()
        .find(|(_, m, _)| m == "finding")
        .cloned()
        .expect("the finding");
    assert_eq!(pri, 16 * 8 + 3, "local0, err (high)");
    assert!(
        lines.iter().any(|l| l.contains(" pool=\"ci-test\"]")),
        "the runner's pool in the structured data: {lines:#?}"
    );
    assert_eq!(msgid, "finding");
    assert_eq!(body["rule"], "credential-read");
    assert_eq!(body["step"]["id"], "read0");
    let (pri, _, summary) = tcp_lines
        .iter()
        .find(|(_, m, _)| m == "job")
        .cloned()
        .expect("the job summary");
    assert_eq!(pri, 16 * 8 + 6, "informational");
    assert_eq!(summary["record"], "job");
    assert!(summary["findings"].as_u64().unwrap() >= 1);
    let cef = lines.iter().find(|l| l.contains("CEF:0|")).unwrap();
    assert!(cef.starts_with(&format!("<{}>1 ", 17 * 8 + 3)), "{cef}");
    assert!(
        cef.contains("|credential-read|") && cef.contains("cs3Label=step cs3=read0"),
        "{cef}"
    );

    // The receiver goes away; a job finds three things meanwhile.
    rsyslog.down();
    three_findings_wait(&agent, &mut runner, "siem");
    assert_eq!(metric(&agent, "monitor_output_up{output=\"siem\"}"), 0.0);
    assert!(!rsyslog.received().contains(&runner.run_id));
    rsyslog.up();
    let lines = rsyslog.wait_for(&runner.run_id, "job 2's findings after the restart", |l| {
        l.iter().filter(|l| !l.contains("CEF:0|")).count() >= 4
    });
    let order: Vec<String> = lines
        .iter()
        .filter(|l| !l.contains("CEF:0|"))
        .map(|l| parse(l))
        .filter(|(_, m, _)| m == "finding")
        .map(|(_, _, b)| b["step"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(order, ["read0", "read1", "read2"], "in order, each once");
    wait_metric(
        &agent,
        "monitor_output_queued_records{output=\"siem\"}",
        |n| n == 0.0,
    );
    assert_eq!(
        metric(
            &agent,
            "monitor_output_records_total{output=\"siem\",result=\"dropped\"}"
        ),
        0.0
    );
    assert_eq!(metric(&agent, "monitor_output_up{output=\"siem\"}"), 1.0);
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for `localhost` signed by it, in `dir`; and another CA.
fn certificates(dir: &Path) {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    for (key, cert, cn) in [
        ("ca.key", "ca.pem", "test CA"),
        ("other.key", "other.pem", "other CA"),
    ] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                key,
                "-out",
                cert,
                "-days",
                "2",
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
    }
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
}

/// Syslog over TLS: the output whose CA signed rsyslog's certificate delivers; the one trusting
/// another CA is refused at the handshake, delivers nothing, and keeps its records waiting
/// (counted as errors, not lost).
#[test]
fn syslog_over_tls_checks_the_receivers_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificates(d);
    let port = free_port();
    let rsyslog = Rsyslog::start(
        d,
        &format!(
            "global(DefaultNetstreamDriver=\"gtls\" DefaultNetstreamDriverCAFile=\"{d}/ca.pem\" DefaultNetstreamDriverCertFile=\"{d}/server.pem\" DefaultNetstreamDriverKeyFile=\"{d}/server.key\")\n\
             module(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"anon\")\n\
             input(type=\"imtcp\" port=\"{port}\" address=\"127.0.0.1\")",
            d = d.display()
        ),
        port,
    );
    let config = d.join("monitor.yml");
    std::fs::write(
        &config,
        format!(
            "version: 1\noutputs:\n\
             \x20 - {{name: good, type: syslog, address: \"127.0.0.1:{port}\", transport: tls, tls: {{ca: {d}/ca.pem, server_name: localhost}}, queue_dir: {d}/q-good}}\n\
             \x20 - {{name: bad, type: syslog, address: \"127.0.0.1:{port}\", transport: tls, tls: {{ca: {d}/other.pem, server_name: localhost}}, facility: local5, queue_dir: {d}/q-bad}}\n",
            d = d.display()
        ),
    )
    .unwrap();
    let agent = Agent::start_with(&["--config", config.to_str().unwrap()]);
    let mut runner = runner_with_secrets();
    run(&agent, &mut runner, 1, &steps_reading(&[".npmrc"]));
    let lines = rsyslog.wait_for(&runner.run_id, "the finding over TLS", |l| {
        l.iter().any(|l| parse(l).1 == "finding")
    });
    let (pri, _, body) = lines
        .iter()
        .map(|l| parse(l))
        .find(|(_, m, _)| m == "finding")
        .unwrap();
    assert_eq!(pri, 16 * 8 + 3);
    assert_eq!(body["rule"], "credential-read");
    wait_metric(&agent, "monitor_output_errors_total{output=\"bad\"}", |n| {
        n >= 1.0
    });
    assert!(metric(&agent, "monitor_output_queued_records{output=\"bad\"}") >= 1.0);
    assert_eq!(metric(&agent, "monitor_output_up{output=\"bad\"}"), 0.0);
    assert_eq!(
        metric(
            &agent,
            "monitor_output_records_total{output=\"bad\",result=\"sent\"}"
        ),
        0.0
    );
    assert!(
        !rsyslog
            .received()
            .lines()
            .any(|l| l.starts_with(&format!("<{}>", 21 * 8 + 3))),
        "the wrongly trusting output delivered:\n{}",
        rsyslog.received()
    );
    assert!(agent.log().contains("output bad:"), "{}", agent.log());
}

use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{any_value::Value as AnyValueKind, KeyValue},
};

/// An OTLP/HTTP logs receiver: decodes each request with the official types.
struct Collector {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Collector {
    fn start(port: u16, received: Arc<Mutex<Vec<ExportLogsServiceRequest>>>) -> Self {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (r, s) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                let mut reader = std::io::BufReader::new(stream);
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                let mut length = 0;
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    if header.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                assert!(request_line.starts_with("POST /v1/logs "), "{request_line}");
                r.lock()
                    .unwrap()
                    .push(ExportLogsServiceRequest::decode(body.as_slice()).unwrap());
                let mut stream = reader.into_inner();
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n")
                    .unwrap();
            }
        });
        Collector {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValueKind> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text_of(value: Option<&AnyValueKind>) -> String {
    match value {
        Some(AnyValueKind::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// OTLP logs: one log record per finding and job summary, with the runner as resource and the
/// semantic conventions' attributes; the collector stopped, the records wait and arrive in order.
#[test]
fn findings_reach_an_otlp_collector_with_their_attributes_and_wait_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let mut collector = Collector::start(port, received.clone());
    let config = dir.path().join("monitor.yml");
    std::fs::write(
        &config,
        format!(
            "version: 1\nrunner: {{pool: ci-test, labels: {{team: security}}}}\noutputs:\n  - {{name: logs, type: otlp, endpoint: \"http://127.0.0.1:{port}/v1/logs\", queue_dir: {}/q}}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let agent = Agent::start_with(&["--config", config.to_str().unwrap()]);
    let mut runner = runner_with_secrets();
    // (event name, rule or "", step) of the records of the current run, in arrival order.
    let records_of = |run_id: &str| -> Vec<(String, String, String, i32)> {
        received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|req| &req.resource_logs)
            .flat_map(|rl| &rl.scope_logs)
            .flat_map(|sl| &sl.log_records)
            .filter(|r| text_of(attribute(&r.attributes, "cicd.pipeline.run.id")) == run_id)
            .map(|r| {
                (
                    text_of(attribute(&r.attributes, "event.name")),
                    attribute(&r.attributes, "monitor.rule")
                        .map(|v| text_of(Some(v)))
                        .unwrap_or_default(),
                    attribute(&r.attributes, "monitor.step.id")
                        .map(|v| text_of(Some(v)))
                        .unwrap_or_default(),
                    r.severity_number,
                )
            })
            .collect()
    };
    let wait = |run_id: &str, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = records_of(run_id);
            if got.len() >= n {
                return got;
            }
            assert!(Instant::now() < deadline, "{got:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    run(&agent, &mut runner, 1, &steps_reading(&[".npmrc"]));
    let got = wait(&runner.run_id, 2);
    assert!(
        got.contains(&(
            "monitor.finding".into(),
            "credential-read".into(),
            "read0".into(),
            17
        )),
        "{got:?}"
    );
    assert!(
        got.iter().any(|r| r.0 == "monitor.job" && r.3 == 9),
        "{got:?}"
    );
    {
        let all = received.lock().unwrap();
        let resource = all[0].resource_logs[0].resource.as_ref().unwrap();
        assert_eq!(
            text_of(attribute(&resource.attributes, "service.name")),
            "ci-runtime-monitor"
        );
        assert!(!text_of(attribute(&resource.attributes, "host.name")).is_empty());
        assert_eq!(
            text_of(attribute(&resource.attributes, "monitor.runner.pool")),
            "ci-test"
        );
        assert_eq!(
            text_of(attribute(&resource.attributes, "monitor.runner.label.team")),
            "security"
        );
        assert_eq!(
            text_of(attribute(&resource.attributes, "service.version")),
            env!("CARGO_PKG_VERSION")
        );
        let record = all
            .iter()
            .flat_map(|r| &r.resource_logs)
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
            .find(|r| text_of(attribute(&r.attributes, "monitor.rule")) == "credential-read")
            .unwrap();
        assert_eq!(
            text_of(attribute(&record.attributes, "vcs.repository.name")),
            "acme/app"
        );
        assert_eq!(
            text_of(attribute(&record.attributes, "cicd.pipeline.name")),
            "CI"
        );
        assert_eq!(
            text_of(attribute(&record.attributes, "cicd.pipeline.task.name")),
            "build"
        );
        assert!(
            matches!(attribute(&record.attributes, "process.pid"), Some(AnyValueKind::IntValue(p)) if *p > 0)
        );
        assert!(record.time_unix_nano > 0 && record.severity_text == "high");
        let full: Value =
            serde_json::from_str(&text_of(attribute(&record.attributes, "monitor.record")))
                .unwrap();
        assert_eq!(full["rule"], "credential-read");
    }

    collector.stop();
    three_findings_wait(&agent, &mut runner, "logs");
    let _collector = Collector::start(port, received.clone());
    let got = wait(&runner.run_id, 4);
    let steps: Vec<&str> = got
        .iter()
        .filter(|r| r.0 == "monitor.finding")
        .map(|r| r.2.as_str())
        .collect();
    assert_eq!(steps, ["read0", "read1", "read2"], "{got:?}");
    wait_metric(
        &agent,
        "monitor_output_queued_records{output=\"logs\"}",
        |n| n == 0.0,
    );
    assert_eq!(
        metric(
            &agent,
            "monitor_output_records_total{output=\"logs\",result=\"dropped\"}"
        ),
        0.0
    );
}
