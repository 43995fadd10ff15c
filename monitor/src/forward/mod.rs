//! Outputs beyond the runner's disk: findings and job summaries sent to a SIEM or log platform
//! as they happen, as syslog (RFC 5424 over TCP, TLS or UDP; JSON or CEF bodies) or
//! OpenTelemetry logs (OTLP over HTTP/protobuf). A runner recycled after its job keeps nothing;
//! what it sent is kept elsewhere.
//!
//! The last stage of the pipeline: each record goes to every configured output whose filter
//! takes it, through a channel to the output's own thread ([`worker`]), which keeps it in a
//! bounded queue on disk ([`queue`]) until the destination took it: oldest first, retried
//! with backoff, never blocking the pipeline. What is dropped (the queue full, the channel
//! full) is counted and exported.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{ci::JobIdentity, finding::Finding, finding::Severity};

pub mod otlp;
pub mod queue;
pub mod syslog;
pub mod worker;

pub use worker::{Forwarder, OutputMetrics};

/// Where queues live unless an output names its own: `<this>/<output name>/`.
pub const DEFAULT_QUEUE_DIR: &str = "/var/lib/monitor/outputs";

/// One output in the configuration's `outputs:` list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Unique; names its queue and its metrics (`[a-z0-9_-]`, at most 64).
    pub name: String,
    #[serde(rename = "type")]
    pub kind: OutputKind,
    /// syslog: `host:port`.
    #[serde(default)]
    pub address: Option<String>,
    /// syslog: `tcp` (default), `tls` or `udp`.
    #[serde(default)]
    pub transport: Option<Transport>,
    /// syslog over TLS: the certificates.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// syslog: `local0` (default) ... `local7`, `user`, `daemon`, `auth`, `authpriv`.
    #[serde(default)]
    pub facility: Option<String>,
    /// syslog: the message body, `json` (default) or `cef`.
    #[serde(default)]
    pub format: Option<Format>,
    /// otlp: `http://host:4318/v1/logs` (or https).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// otlp: extra HTTP headers (an API key).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Findings below it are not sent (default: low, all).
    #[serde(default)]
    pub min_severity: Option<Severity>,
    /// What is sent: `findings`, `jobs` (job summaries); default both.
    #[serde(default)]
    pub records: Option<Vec<RecordKind>>,
    /// Where its queue lives (default `/var/lib/monitor/outputs/<name>`).
    #[serde(default)]
    pub queue_dir: Option<PathBuf>,
    /// Records kept waiting at most (default 100,000; the oldest are dropped past it).
    #[serde(default)]
    pub max_queued: Option<usize>,
}

/// What the records say of the runner besides its host name (the configuration's `runner:`):
/// its pool and labels, as the fleet groups runners.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerInfo {
    #[serde(default)]
    pub pool: Option<String>,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    Syslog,
    Otlp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Tls,
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Cef,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The CA certificates (PEM) the server's certificate must chain to.
    pub ca: PathBuf,
    /// The name the server's certificate must carry (default: the address's host).
    #[serde(default)]
    pub server_name: Option<String>,
    /// A client certificate (PEM) and its key, when the receiver asks for one.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    Findings,
    Jobs,
}

/// A job's summary, sent when its report is written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    pub job: JobIdentity,
    pub started: String,
    pub ended: Option<String>,
    pub duration_seconds: Option<f64>,
    pub complete: bool,
    pub steps: usize,
    pub processes: usize,
    pub connections: usize,
    pub findings: usize,
    pub findings_by_severity: std::collections::BTreeMap<String, usize>,
    /// The worst finding's severity.
    pub worst: Option<Severity>,
    /// The job's baseline state before this run, when baselines are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_state: Option<crate::baseline::BaselineState>,
}

impl JobSummary {
    pub fn of(report: &crate::report::Report) -> Self {
        JobSummary {
            job: report.job.clone(),
            started: report.started.clone(),
            ended: report.ended.clone(),
            duration_seconds: report.duration_seconds,
            complete: report.complete,
            steps: report.summary.steps,
            processes: report.summary.processes,
            connections: report.summary.connections,
            findings: report.summary.findings,
            findings_by_severity: report.summary.findings_by_severity.clone(),
            worst: report.findings.iter().map(|f| f.severity).max(),
            baseline_state: report.baseline.as_ref().and_then(|b| b.state),
        }
    }
}

/// What goes out: a finding or a job's summary, as queued (JSON) and encoded per output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "lowercase")]
pub enum Record {
    Finding(Box<Finding>),
    Job(Box<JobSummary>),
}

impl Record {
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Finding(_) => RecordKind::Findings,
            Record::Job(_) => RecordKind::Jobs,
        }
    }

    /// The time it is about (RFC 3339).
    pub fn time(&self) -> &str {
        match self {
            Record::Finding(f) => &f.time,
            Record::Job(j) => j.ended.as_deref().unwrap_or(&j.started),
        }
    }
}

impl OutputConfig {
    /// Whether this output takes `record`.
    pub fn takes(&self, record: &Record) -> bool {
        let kinds_ok = self
            .records
            .as_ref()
            .is_none_or(|kinds| kinds.contains(&record.kind()));
        let severity_ok = match (record, self.min_severity) {
            (Record::Finding(f), Some(min)) => f.severity >= min,
            _ => true,
        };
        kinds_ok && severity_ok
    }

    /// What is wrong with it, when something is (the configuration's check, located by the
    /// caller at the output's `name:` line).
    pub fn problem(&self) -> Option<String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !name_ok {
            return Some(format!(
                "output name {:?} must be 1 to 64 of a-z, 0-9, - and _",
                self.name
            ));
        }
        let n = &self.name;
        match self.kind {
            OutputKind::Syslog => {
                let Some(address) = &self.address else {
                    return Some(format!("output {n}: syslog needs `address: host:port`"));
                };
                if address
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .is_none()
                {
                    return Some(format!("output {n}: address {address:?} is not host:port"));
                }
                if self.endpoint.is_some() || !self.headers.is_empty() {
                    return Some(format!(
                        "output {n}: endpoint and headers are for otlp outputs"
                    ));
                }
                if let Some(f) = &self.facility {
                    if syslog::facility_code(f).is_none() {
                        return Some(format!("output {n}: unknown facility {f:?} (local0..local7, user, daemon, auth, authpriv)"));
                    }
                }
                let tls = self.transport == Some(Transport::Tls);
                if tls != self.tls.is_some() {
                    return Some(format!(
                        "output {n}: `transport: tls` and a `tls:` section (its `ca:`) go together"
                    ));
                }
                if let Some(t) = &self.tls {
                    if t.cert.is_some() != t.key.is_some() {
                        return Some(format!("output {n}: tls.cert and tls.key go together"));
                    }
                }
            }
            OutputKind::Otlp => {
                let Some(endpoint) = &self.endpoint else {
                    return Some(format!(
                        "output {n}: otlp needs `endpoint: http://host:4318/v1/logs`"
                    ));
                };
                match url::Url::parse(endpoint) {
                    Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                    _ => {
                        return Some(format!(
                            "output {n}: endpoint {endpoint:?} is not an http(s) URL"
                        ))
                    }
                }
                if self.address.is_some()
                    || self.transport.is_some()
                    || self.facility.is_some()
                    || self.format.is_some()
                {
                    return Some(format!("output {n}: address, transport, facility and format are for syslog outputs"));
                }
                if self
                    .tls
                    .as_ref()
                    .is_some_and(|t| t.cert.is_some() != t.key.is_some())
                {
                    return Some(format!("output {n}: tls.cert and tls.key go together"));
                }
            }
        }
        if self.max_queued == Some(0) {
            return Some(format!("output {n}: max_queued must be at least 1"));
        }
        None
    }

    pub fn queue_dir(&self) -> PathBuf {
        self.queue_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_QUEUE_DIR).join(&self.name))
    }
}

/// A rustls client configuration trusting `tls.ca`, with the client certificate when given.
pub fn tls_client(tls: &TlsConfig) -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
    use anyhow::Context as _;
    use rustls::pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&tls.ca)
        .with_context(|| format!("reading {}", tls.ca.display()))?
    {
        roots.add(cert.with_context(|| format!("a certificate in {}", tls.ca.display()))?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("reading {}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("reading {}", key.display()))?;
            builder.with_client_auth_cert(chain, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(std::sync::Arc::new(config))
}
