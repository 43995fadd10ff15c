//! OpenTelemetry logs: each finding and job summary as one log record of an OTLP
//! `ExportLogsServiceRequest` (the official `opentelemetry-proto` types), sent over HTTP/1.1 as
//! protobuf (`POST /v1/logs`, `application/x-protobuf`; https with the configured CA).
//! Attributes follow OpenTelemetry's semantic conventions where they exist (`cicd.pipeline.*`,
//! `vcs.repository.name`, `process.*`, `server.*`), the rest under `monitor.*`; the resource
//! says which runner (`host.name`) and agent (`service.*`).

use std::{
    io::{Read, Write},
    net::{TcpStream, ToSocketAddrs},
    time::Duration,
};

use anyhow::Context as _;
use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{any_value::Value as AnyValueKind, AnyValue, InstrumentationScope, KeyValue},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    resource::v1::Resource,
};
use prost::Message as _;

use super::{OutputConfig, Record};
use crate::finding::Severity;

const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read back (its status line is all that matters).
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

fn text(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(AnyValueKind::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(AnyValueKind::IntValue(value)),
        }),
        ..Default::default()
    }
}

fn unix_nanos(time: &str) -> u64 {
    humantime::parse_rfc3339_weak(time)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

/// OpenTelemetry severity numbers: low INFO2 (10), medium WARN (13), high ERROR (17),
/// critical FATAL (21); job summaries INFO (9).
fn severity(record: &Record) -> (i32, &'static str) {
    match record {
        Record::Finding(f) => match f.severity {
            Severity::Low => (10, "low"),
            Severity::Medium => (13, "medium"),
            Severity::High => (17, "high"),
            Severity::Critical => (21, "critical"),
        },
        Record::Job(_) => (9, "info"),
    }
}

fn job_attributes(job: &crate::ci::JobIdentity, out: &mut Vec<KeyValue>) {
    out.push(text("cicd.pipeline.task.name", job.name.clone()));
    if let Some(w) = &job.workflow {
        out.push(text("cicd.pipeline.name", w.clone()));
    }
    if let Some(r) = &job.run_id {
        out.push(text("cicd.pipeline.run.id", r.clone()));
    }
    if let Some(r) = &job.repository {
        out.push(text("vcs.repository.name", r.clone()));
    }
    out.push(text("monitor.job.key", job.key.clone()));
    out.push(text("monitor.job.provider", job.provider.clone()));
}

/// One log record for a finding or a job summary.
pub fn log_record(record: &Record, observed_ns: u64) -> LogRecord {
    let (number, severity_text) = severity(record);
    let mut attributes = Vec::new();
    let body = match record {
        Record::Finding(f) => {
            attributes.push(text("event.name", "monitor.finding"));
            attributes.push(text("monitor.rule", f.rule.as_str()));
            attributes.push(int("monitor.finding.id", f.id as i64));
            if let Some(j) = &f.job {
                job_attributes(j, &mut attributes);
            }
            if let Some(s) = &f.step {
                attributes.push(text("monitor.step.id", s.id.clone()));
                if let Some(a) = &s.action {
                    attributes.push(text("monitor.step.action", a.clone()));
                }
            }
            if let Some(p) = f.process_chain.first() {
                attributes.push(int("process.pid", i64::from(p.pid)));
                if let Some(exe) = &p.exe {
                    attributes.push(text("process.executable.path", exe.clone()));
                }
            }
            let evidence = |k: &str| f.evidence.get(k);
            if let Some(d) = evidence("domain").and_then(|v| v.as_str()) {
                attributes.push(text("server.address", d));
            } else if let Some(a) = evidence("address").and_then(|v| v.as_str()) {
                attributes.push(text("server.address", a));
            }
            if let Some(p) = evidence("port").and_then(|v| v.as_i64()) {
                attributes.push(int("server.port", p));
            }
            if let Some(p) = evidence("path").and_then(|v| v.as_str()) {
                attributes.push(text("file.path", p));
            }
            f.summary.clone()
        }
        Record::Job(j) => {
            attributes.push(text("event.name", "monitor.job"));
            job_attributes(&j.job, &mut attributes);
            attributes.push(int("monitor.job.findings", j.findings as i64));
            if let Some(w) = j.worst {
                attributes.push(text("monitor.job.worst", w.name()));
            }
            format!("job {} ended with {} finding(s)", j.job.name, j.findings)
        }
    };
    attributes.push(text(
        "monitor.record",
        serde_json::to_string(record).unwrap_or_default(),
    ));
    LogRecord {
        time_unix_nano: unix_nanos(record.time()),
        observed_time_unix_nano: observed_ns,
        severity_number: number,
        severity_text: severity_text.into(),
        body: Some(AnyValue {
            value: Some(AnyValueKind::StringValue(body)),
        }),
        attributes,
        ..Default::default()
    }
}

/// The request carrying `records`, with the runner as its resource.
pub fn request(
    records: &[Record],
    hostname: &str,
    runner: &super::RunnerInfo,
) -> ExportLogsServiceRequest {
    let observed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut attributes = vec![
        text("service.name", "ci-runtime-monitor"),
        text("service.version", env!("CARGO_PKG_VERSION")),
        text("host.name", hostname),
    ];
    if let Some(pool) = &runner.pool {
        attributes.push(text("monitor.runner.pool", pool.clone()));
    }
    for (k, v) in &runner.labels {
        attributes.push(text(&format!("monitor.runner.label.{k}"), v.clone()));
    }
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes,
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "ci-runtime-monitor".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                log_records: records.iter().map(|r| log_record(r, observed)).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Sends an output's records to its OTLP/HTTP endpoint.
pub struct Otlp {
    url: url::Url,
    headers: Vec<(String, String)>,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    hostname: String,
    runner: super::RunnerInfo,
}

impl Otlp {
    pub fn new(config: &OutputConfig, runner: &super::RunnerInfo) -> anyhow::Result<Self> {
        let url: url::Url = config
            .endpoint
            .as_deref()
            .context("otlp output without an endpoint")?
            .parse()?;
        let tls = match (url.scheme(), &config.tls) {
            ("https", Some(tls)) => Some(super::tls_client(tls)?),
            ("https", None) => anyhow::bail!("an https endpoint needs `tls: {{ca: ...}}`"),
            _ => None,
        };
        Ok(Otlp {
            url,
            headers: config
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            tls,
            hostname: super::syslog::hostname(),
            runner: runner.clone(),
        })
    }

    pub fn deliver(&mut self, records: &[Record]) -> anyhow::Result<()> {
        let body = request(records, &self.hostname, &self.runner).encode_to_vec();
        let host = self
            .url
            .host_str()
            .context("endpoint without a host")?
            .to_string();
        let port = self
            .url
            .port_or_known_default()
            .context("endpoint without a port")?;
        let target = (host.as_str(), port)
            .to_socket_addrs()?
            .next()
            .with_context(|| format!("{host} resolves to nothing"))?;
        let stream = TcpStream::connect_timeout(&target, TIMEOUT)
            .with_context(|| format!("connecting to {target}"))?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.url.path(),
            body.len()
        );
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut answer = Vec::new();
        match &self.tls {
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(host.clone())?;
                let connection = rustls::ClientConnection::new(config.clone(), name)?;
                let mut tls = rustls::StreamOwned::new(connection, stream);
                tls.write_all(head.as_bytes())?;
                tls.write_all(&body)?;
                tls.flush()?;
                let _ = tls.take(MAX_ANSWER_BYTES).read_to_end(&mut answer);
            }
            None => {
                let mut stream = stream;
                stream.write_all(head.as_bytes())?;
                stream.write_all(&body)?;
                stream.flush()?;
                let _ = (&stream).take(MAX_ANSWER_BYTES).read_to_end(&mut answer);
            }
        }
        let status_line = String::from_utf8_lossy(&answer);
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .context("the endpoint gave no HTTP answer")?;
        if !(200..300).contains(&status) {
            anyhow::bail!(
                "the endpoint answered {}",
                status_line.lines().next().unwrap_or("").trim()
            );
        }
        Ok(())
    }
}
