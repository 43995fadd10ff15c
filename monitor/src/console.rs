//! The agent's output for a person at a terminal: one compact line per finding (time, severity,
//! rule, job and step, what happened) and a short status line now and then, instead of every
//! event as JSON (a few KiB each, with the whole ancestry). Events and findings still go to
//! their logs in full. Chosen by `monitor run --output` (`auto`: when standard output is a
//! terminal).
//!
//! Everything printed that a job could have named (summaries, step ids, repository names) goes
//! through `output::terminal_line`: no control character or bidirectional mark reaches the
//! terminal raw.

use std::io::Write;

use crate::{
    finding::{Finding, Severity},
    output::terminal_line,
};

/// How `monitor run` writes to standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputMode {
    /// `console` when standard output is a terminal, else `json`.
    Auto,
    /// Findings for a person, and a status line; events only to the event log.
    Console,
    /// Every event as a JSON line (the event log, when none is named).
    Json,
}

impl OutputMode {
    /// `Auto` decided by whether standard output is a terminal.
    pub fn resolved(self) -> OutputMode {
        match self {
            // SAFETY: isatty(3) only inspects the descriptor.
            OutputMode::Auto if unsafe { libc::isatty(1) } == 1 => OutputMode::Console,
            OutputMode::Auto => OutputMode::Json,
            other => other,
        }
    }
}

/// Whether colour may be used: a terminal, `NO_COLOR` unset (no-color.org), `TERM` not `dumb`.
pub fn colour_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

pub struct Console {
    out: Box<dyn Write + Send>,
    colour: bool,
}

/// The counts a status line shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    pub active_jobs: u64,
    pub jobs_ended: u64,
    pub events: u64,
    pub findings: u64,
    pub dropped: u64,
}

impl Console {
    pub fn new(out: Box<dyn Write + Send>, colour: bool) -> Self {
        Console { out, colour }
    }

    /// Standard output, coloured when allowed.
    pub fn stdout() -> Self {
        Self::new(Box::new(std::io::stdout()), colour_allowed())
    }

    pub fn line(&mut self, text: &str) {
        let _ = writeln!(self.out, "{}", terminal_line(text));
        let _ = self.out.flush();
    }

    pub fn finding(&mut self, f: &Finding) {
        let line = finding_line(f, self.colour);
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }

    pub fn status(&mut self, s: &Status) {
        let line = status_line(s);
        let line = if self.colour {
            format!("\x1b[2m{line}\x1b[0m")
        } else {
            line
        };
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }
}

fn severity_style(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "\x1b[1;41;97m",
        Severity::High => "\x1b[1;31m",
        Severity::Medium => "\x1b[33m",
        Severity::Low => "\x1b[36m",
    }
}

/// `12:03:04 HIGH     credential-read  acme/app build › __run_2  node read ~/.npmrc ...`
pub fn finding_line(f: &Finding, colour: bool) -> String {
    // The time of day of the RFC 3339 stamp (the date is in the logs).
    let time = f
        .time
        .split_once('T')
        .map_or(f.time.as_str(), |(_, t)| t)
        .get(..8)
        .unwrap_or(&f.time);
    let severity = format!("{:<8}", f.severity.name().to_ascii_uppercase());
    let severity = if colour {
        format!("{}{severity}\x1b[0m", severity_style(f.severity))
    } else {
        severity
    };
    let job = match &f.job {
        Some(j) => {
            let repo = j.repository.as_deref().unwrap_or("");
            let step = f.step.as_ref().map(|s| s.id.as_str()).unwrap_or("-");
            if repo.is_empty() {
                format!("{} › {step}", j.name)
            } else {
                format!("{repo} {} › {step}", j.name)
            }
        }
        None => "(no job)".to_string(),
    };
    let mut summary = f.summary.clone();
    crate::redact::truncate_marked(&mut summary, 200, "…");
    // What a job could have named is escaped; the colour around the severity is the console's.
    format!(
        "{} {severity} {:<24} {}  {}",
        terminal_line(time),
        f.rule.as_str(),
        terminal_line(&job),
        terminal_line(&summary)
    )
}

pub fn status_line(s: &Status) -> String {
    format!(
        "monitor: {} job(s) running, {} ended · {} events · {} findings · {} dropped",
        s.active_jobs, s.jobs_ended, s.events, s.findings, s.dropped
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(summary: &str) -> Finding {
        crate::finding::sample_finding("__run_2", summary, "2026-12-01T12:03:04.123456789Z")
    }

    #[test]
    fn a_finding_is_one_readable_line_and_what_a_job_wrote_cannot_drive_the_terminal() {
        let line = finding_line(&finding("node read ~/.npmrc"), false);
        assert_eq!(
            line,
            "12:03:04 HIGH     credential-read          acme/app build › __run_2  node read ~/.npmrc"
        );
        let coloured = finding_line(&finding("x"), true);
        assert!(coloured.contains("\x1b[1;31mHIGH"), "{coloured:?}");
        let hostile = finding_line(&finding("evil\x1b]0;owned\x07\nsecond line\u{202e}"), false);
        assert!(
            !hostile.contains('\x1b') && !hostile.contains('\n') && !hostile.contains('\u{202e}'),
            "{hostile:?}"
        );
        assert!(finding_line(&finding(&"a".repeat(1000)), false).len() < 400);
    }

    #[test]
    fn the_status_line_counts() {
        let s = Status {
            active_jobs: 2,
            jobs_ended: 5,
            events: 1234,
            findings: 3,
            dropped: 0,
        };
        assert_eq!(
            status_line(&s),
            "monitor: 2 job(s) running, 5 ended · 1234 events · 3 findings · 0 dropped"
        );
    }
}
