//! Syslog: RFC 5424 messages, the finding or job summary as JSON (or CEF) in the body, over
//! TCP with octet counting (RFC 6587), TLS (RFC 5425: the server's certificate checked against
//! the configured CA, a client certificate when asked) or UDP (RFC 5426, one message per
//! datagram). Severity maps to syslog severity; the facility is configured.
//!
//! TCP has no acknowledgement: before each batch the connection is checked for the receiver's
//! close (a receiver that stopped is seen then, and the records wait), so a receiver stopping
//! between batches loses nothing; one stopping during a batch's write can (said in
//! docs/outputs.md).

use std::{
    io::{Read, Write},
    net::{TcpStream, ToSocketAddrs, UdpSocket},
    time::Duration,
};

use anyhow::Context as _;

use super::{Format, OutputConfig, Record, Transport};
use crate::finding::Severity;

/// Largest message sent: bodies past it lose their process chain's arguments, then the chain.
pub const MAX_MESSAGE_BYTES: usize = 60 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The structured-data id's enterprise number (RFC 5612's documentation number).
const SD_ID: &str = "monitor@32473";
const APP_NAME: &str = "ci-runtime-monitor";

pub fn facility_code(name: &str) -> Option<u8> {
    Some(match name {
        "kern" => 0,
        "user" => 1,
        "daemon" => 3,
        "auth" => 4,
        "authpriv" => 10,
        "local0" => 16,
        "local1" => 17,
        "local2" => 18,
        "local3" => 19,
        "local4" => 20,
        "local5" => 21,
        "local6" => 22,
        "local7" => 23,
        _ => return None,
    })
}

/// Syslog severity: critical 2 (crit), high 3 (err), medium 4 (warning), low 5 (notice); job
/// summaries 6 (informational).
pub fn severity_code(record: &Record) -> u8 {
    match record {
        Record::Finding(f) => match f.severity {
            Severity::Critical => 2,
            Severity::High => 3,
            Severity::Medium => 4,
            Severity::Low => 5,
        },
        Record::Job(_) => 6,
    }
}

/// An SD-PARAM value: `"`, `\` and `]` escaped (RFC 5424 6.3.3), control characters dropped.
fn sd_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().filter(|c| !c.is_control()).take(256) {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A CEF header field: `|` and `\` escaped, no line breaks.
fn cef_header(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .flat_map(|c| match c {
            '|' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

/// A CEF extension value: `=` and `\` escaped, line breaks as `\n`.
fn cef_value(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '=' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The record as JSON, within [`MAX_MESSAGE_BYTES`].
fn json_body(record: &Record) -> String {
    let text = serde_json::to_string(record).unwrap_or_default();
    if text.len() <= MAX_MESSAGE_BYTES {
        return text;
    }
    let Record::Finding(f) = record else {
        return text;
    };
    let mut f = f.clone();
    for link in &mut f.process_chain {
        link.argv = Vec::<String>::new().into();
    }
    let text = serde_json::to_string(&Record::Finding(f.clone())).unwrap_or_default();
    if text.len() <= MAX_MESSAGE_BYTES {
        return text;
    }
    f.process_chain.clear();
    f.evidence.clear();
    f.evidence.insert(
        "truncated".into(),
        "the finding was too large for syslog".into(),
    );
    serde_json::to_string(&Record::Finding(f)).unwrap_or_default()
}

fn cef_body(record: &Record) -> String {
    let version = env!("CARGO_PKG_VERSION");
    match record {
        Record::Finding(f) => {
            let cef_severity = match f.severity {
                Severity::Critical => 10,
                Severity::High => 8,
                Severity::Medium => 5,
                Severity::Low => 3,
            };
            let mut ext = vec![format!("rt={}", cef_value(&f.time))];
            if let Some(j) = &f.job {
                ext.push(format!("cs1Label=job cs1={}", cef_value(&j.key)));
                if let Some(r) = &j.repository {
                    ext.push(format!("cs2Label=repository cs2={}", cef_value(r)));
                }
            }
            if let Some(s) = &f.step {
                ext.push(format!("cs3Label=step cs3={}", cef_value(&s.id)));
            }
            if let Some(p) = f.process_chain.first() {
                ext.push(format!("dproc={}", cef_value(p.exe.as_deref().unwrap_or(&p.comm))));
                ext.push(format!("dpid={}", p.pid));
            }
            ext.push(format!("cn1Label=finding cn1={}", f.id));
            format!(
                "CEF:0|Monitor|{APP_NAME}|{version}|{}|{}|{cef_severity}|{}",
                cef_header(f.rule.as_str()),
                cef_header(&f.summary),
                ext.join(" ")
            )
        }
        Record::Job(j) => format!(
            "CEF:0|Monitor|{APP_NAME}|{version}|job-summary|job {} ended with {} finding(s)|1|cs1Label=job cs1={} cn1Label=findings cn1={}",
            cef_header(&j.job.name),
            j.findings,
            cef_value(&j.job.key),
            j.findings
        ),
    }
}

/// An RFC 3339 time as RFC 5424 takes it: at most six fractional digits (rsyslog garbles
/// more), `-` when there is none.
fn rfc5424_time(time: &str) -> String {
    if time.is_empty() || time.contains(' ') {
        return "-".into();
    }
    match time.split_once('.') {
        Some((whole, rest)) => {
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            let (fraction, zone) = rest.split_at(digits);
            format!("{whole}.{}{zone}", &fraction[..fraction.len().min(6)])
        }
        None => time.to_string(),
    }
}

/// One RFC 5424 message for `record`; `pool` the runner's, when configured.
pub fn message(
    record: &Record,
    facility: u8,
    format: Format,
    hostname: &str,
    pool: Option<&str>,
) -> Vec<u8> {
    let pri = u16::from(facility) * 8 + u16::from(severity_code(record));
    let (msgid, mut params) = match record {
        Record::Finding(f) => {
            let mut p = vec![
                ("rule", f.rule.as_str().to_string()),
                ("severity", f.severity.name().to_string()),
            ];
            if let Some(j) = &f.job {
                p.push(("job", j.key.clone()));
                if let Some(r) = &j.repository {
                    p.push(("repository", r.clone()));
                }
            }
            if let Some(s) = &f.step {
                p.push(("step", s.id.clone()));
            }
            ("finding", p)
        }
        Record::Job(j) => (
            "job",
            vec![
                ("job", j.job.key.clone()),
                ("findings", j.findings.to_string()),
            ],
        ),
    };
    if let Record::Job(j) = record {
        if let Some(r) = &j.job.repository {
            params.push(("repository", r.clone()));
        }
    }
    if let Some(pool) = pool {
        params.push(("pool", pool.to_string()));
    }
    let sd: String = params
        .iter()
        .map(|(k, v)| format!(" {k}=\"{}\"", sd_value(v)))
        .collect();
    let body = match format {
        Format::Json => json_body(record),
        Format::Cef => cef_body(record),
    };
    let time = rfc5424_time(record.time());
    format!(
        "<{pri}>1 {time} {hostname} {APP_NAME} {} {msgid} [{SD_ID}{sd}] {body}",
        std::process::id()
    )
    .into_bytes()
}

/// The machine's name as syslog headers want it (no spaces; `-` when unknown).
pub fn hostname() -> String {
    let name = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let name: String = name
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if name.is_empty() {
        "-".into()
    } else {
        name
    }
}

enum Connection {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Udp(UdpSocket),
}

/// Sends an output's records to its syslog receiver.
pub struct Syslog {
    address: String,
    transport: Transport,
    tls: Option<(
        std::sync::Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    facility: u8,
    format: Format,
    hostname: String,
    pool: Option<String>,
    connection: Option<Connection>,
}

impl Syslog {
    pub fn new(config: &OutputConfig, runner: &super::RunnerInfo) -> anyhow::Result<Self> {
        let address = config
            .address
            .clone()
            .context("syslog output without an address")?;
        let transport = config.transport.unwrap_or(Transport::Tcp);
        let tls = match (&config.tls, transport) {
            (Some(tls), Transport::Tls) => {
                let host = address
                    .rsplit_once(':')
                    .map_or(address.as_str(), |(h, _)| h)
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                let name = tls.server_name.clone().unwrap_or_else(|| host.to_string());
                let name =
                    rustls::pki_types::ServerName::try_from(name).context("the TLS server name")?;
                Some((super::tls_client(tls)?, name))
            }
            _ => None,
        };
        Ok(Syslog {
            address,
            transport,
            tls,
            facility: config
                .facility
                .as_deref()
                .and_then(facility_code)
                .unwrap_or(16),
            format: config.format.unwrap_or(Format::Json),
            hostname: hostname(),
            pool: runner.pool.clone(),
            connection: None,
        })
    }

    fn connect(&self) -> anyhow::Result<Connection> {
        let target = self
            .address
            .to_socket_addrs()
            .with_context(|| format!("resolving {}", self.address))?
            .next()
            .with_context(|| format!("{} resolves to nothing", self.address))?;
        if self.transport == Transport::Udp {
            let bind = if target.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let socket = UdpSocket::bind(bind)?;
            socket.connect(target)?;
            return Ok(Connection::Udp(socket));
        }
        let stream = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)
            .with_context(|| format!("connecting to {target}"))?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        stream.set_read_timeout(Some(WRITE_TIMEOUT))?;
        match &self.tls {
            Some((config, name)) => {
                let mut connection = rustls::ClientConnection::new(config.clone(), name.clone())?;
                let mut stream = stream;
                // The handshake now: a certificate the CA did not sign fails here.
                while connection.is_handshaking() {
                    connection
                        .complete_io(&mut stream)
                        .context("TLS handshake")?;
                }
                Ok(Connection::Tls(Box::new(rustls::StreamOwned::new(
                    connection, stream,
                ))))
            }
            None => Ok(Connection::Tcp(stream)),
        }
    }

    /// Whether an open stream connection's receiver has closed it (it never sends anything
    /// else).
    fn closed_by_peer(connection: &mut Connection) -> bool {
        let mut byte = [0u8; 64];
        let (socket, result) = match connection {
            Connection::Udp(_) => return false,
            Connection::Tcp(s) => {
                let _ = s.set_nonblocking(true);
                let r = s.read(&mut byte);
                (s as &TcpStream, r)
            }
            Connection::Tls(s) => {
                let _ = s.sock.set_nonblocking(true);
                let r = s.read(&mut byte);
                (&s.sock, r)
            }
        };
        let _ = socket.set_nonblocking(false);
        match result {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }

    /// Sends the records (JSON as queued), in order; an error leaves the connection closed.
    pub fn deliver(&mut self, records: &[Record]) -> anyhow::Result<()> {
        if let Some(c) = &mut self.connection {
            if Self::closed_by_peer(c) {
                self.connection = None;
            }
        }
        if self.connection.is_none() {
            self.connection = Some(self.connect()?);
        }
        let result = (|| -> anyhow::Result<()> {
            let connection = self.connection.as_mut().expect("connected above");
            for record in records {
                let message = message(
                    record,
                    self.facility,
                    self.format,
                    &self.hostname,
                    self.pool.as_deref(),
                );
                match connection {
                    Connection::Udp(s) => {
                        s.send(&message)?;
                    }
                    Connection::Tcp(s) => {
                        s.write_all(format!("{} ", message.len()).as_bytes())?;
                        s.write_all(&message)?;
                    }
                    Connection::Tls(s) => {
                        s.write_all(format!("{} ", message.len()).as_bytes())?;
                        s.write_all(&message)?;
                    }
                }
            }
            match connection {
                Connection::Tcp(s) => s.flush()?,
                Connection::Tls(s) => s.flush()?,
                Connection::Udp(_) => {}
            }
            Ok(())
        })();
        if result.is_err() {
            self.connection = None;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Finding;

    fn finding() -> Finding {
        crate::finding::sample_finding(
            "le\"ak]",
            "cat read ~/.npmrc | a \\ b",
            "2026-12-01T12:03:04.5Z",
        )
    }

    #[test]
    fn a_finding_is_an_rfc5424_message_with_its_json_and_escaped_structured_data() {
        let record = Record::Finding(Box::new(finding()));
        let text = String::from_utf8(message(&record, 16, Format::Json, "runner-1", None)).unwrap();
        let pid = std::process::id();
        let prefix = format!(
            "<131>1 2026-12-01T12:03:04.5Z runner-1 ci-runtime-monitor {pid} finding [monitor@32473 rule=\"credential-read\" severity=\"high\" job=\"github/acme/app/1/1/build\" repository=\"acme/app\" step=\"le\\\"ak\\]\"] "
        );
        assert!(text.starts_with(&prefix), "{text}");
        let body: serde_json::Value = serde_json::from_str(&text[prefix.len()..]).unwrap();
        assert_eq!(body["record"], "finding");
        assert_eq!(body["rule"], "credential-read");
    }

    #[test]
    fn times_keep_six_fractional_digits() {
        assert_eq!(
            rfc5424_time("2026-12-01T03:09:31.342084907Z"),
            "2026-12-01T03:09:31.342084Z"
        );
        assert_eq!(
            rfc5424_time("2026-12-01T03:09:31.5+01:00"),
            "2026-12-01T03:09:31.5+01:00"
        );
        assert_eq!(rfc5424_time("2026-12-01T03:09:31Z"), "2026-12-01T03:09:31Z");
        assert_eq!(rfc5424_time(""), "-");
    }

    #[test]
    fn cef_escapes_its_separators() {
        let record = Record::Finding(Box::new(finding()));
        let text =
            String::from_utf8(message(&record, 4, Format::Cef, "h", Some("linux-x64"))).unwrap();
        assert!(text.starts_with("<35>1 "), "{text}");
        assert!(text.contains(" pool=\"linux-x64\"]"), "{text}");
        let cef = &text[text.find("CEF:0|").unwrap()..];
        assert!(
            cef.starts_with(&format!("CEF:0|Monitor|ci-runtime-monitor|{}|credential-read|cat read ~/.npmrc \\| a \\\\ b|8|rt=2026-12-01T12:03:04.5Z", env!("CARGO_PKG_VERSION"))),
            "{cef}"
        );
        assert!(cef.contains("cs3Label=step cs3=le\"ak]"), "{cef}");
    }

    #[test]
    fn an_oversized_finding_is_cut_to_fit() {
        let mut f = finding();
        f.process_chain = vec![crate::finding::ChainLink {
            pid: 1,
            start_ticks: 1,
            comm: "x".into(),
            exe: None,
            argv: vec!["a".repeat(100_000)].into(),
        }];
        let record = Record::Finding(Box::new(f));
        let text = message(&record, 16, Format::Json, "h", None);
        assert!(text.len() < MAX_MESSAGE_BYTES + 1024);
    }
}
