//! The short Markdown form of a report, sized for `GITHUB_STEP_SUMMARY` (which takes 1 MiB per
//! step): the verdict, the findings, what was not allowed, and the profile additions.

use std::fmt::Write as _;

use super::Report;

/// Hard cap on the rendered text; lists are cut well before it.
pub const MAX_BYTES: usize = 256 * 1024;
const MAX_ROWS: usize = 30;

/// Escapes text for a Markdown table cell or line: no markup, no HTML, no line breaks.
fn cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' | '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    crate::redact::truncate_marked(&mut out, 300, "…");
    out
}

pub fn render(r: &Report) -> String {
    let mut md = String::new();
    let job = &r.job;
    let verdict = if r.summary.findings == 0 {
        "no findings".to_string()
    } else {
        let by: Vec<String> = ["critical", "high", "medium", "low"]
            .iter()
            .filter_map(|s| {
                r.summary
                    .findings_by_severity
                    .get(*s)
                    .map(|n| format!("{n} {s}"))
            })
            .collect();
        let noun = if r.summary.findings == 1 {
            "finding"
        } else {
            "findings"
        };
        format!("**{} {noun}** ({})", r.summary.findings, by.join(", "))
    };
    let _ = writeln!(
        md,
        "## Runtime security: {} — {}\n",
        cell(&job.name),
        verdict
    );
    let _ = writeln!(
        md,
        "{}{} · {} steps · {} processes · {} connections ({} not allowed) · {} sensitive file accesses · {} install hooks\n",
        job.repository.as_deref().map(|r| format!("{} · ", cell(r))).unwrap_or_default(),
        r.duration_seconds
            .map(|d| format!("{d:.0} s"))
            .unwrap_or_else(|| "running".into()),
        r.summary.steps,
        r.summary.processes,
        r.summary.connections,
        r.summary.connections_not_allowed,
        r.summary.file_accesses,
        r.summary.hooks,
    );
    if !r.complete {
        let _ = writeln!(
            md,
            "> [!WARNING]\n> This report may be incomplete: {}.\n",
            cell(&r.incomplete_because.join("; "))
        );
    }
    if !r.findings.is_empty() {
        md.push_str("| severity | rule | step | what happened |\n|---|---|---|---|\n");
        let mut findings: Vec<_> = r.findings.iter().collect();
        findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.id.cmp(&b.id)));
        for f in findings.iter().take(MAX_ROWS) {
            let _ = writeln!(
                md,
                "| {} | `{}` | {} | {} |",
                f.severity.name(),
                f.rule,
                cell(f.step.as_ref().map(|s| s.id.as_str()).unwrap_or("-")),
                cell(&f.summary)
            );
        }
        if findings.len() > MAX_ROWS {
            let _ = writeln!(
                md,
                "\n…and {} more in the full report.",
                findings.len() - MAX_ROWS
            );
        }
        md.push('\n');
    }
    let hooks: Vec<_> = r.steps.iter().flat_map(|s| &s.hooks).collect();
    if !hooks.is_empty() {
        md.push_str("**Install-time code that ran:** ");
        let list: Vec<String> = hooks
            .iter()
            .take(MAX_ROWS)
            .map(|h| {
                format!(
                    "{} {} `{}`{}",
                    h.hook.ecosystem.name(),
                    cell(&h.hook.package),
                    cell(&h.hook.script),
                    if h.allowed_by_profile {
                        " (allowed)"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        md.push_str(&list.join(", "));
        md.push_str("\n\n");
    }
    if let Some(additions) = &r.profile_additions {
        let _ = writeln!(
            md,
            "<details><summary>Profile additions that would allow all of this (review before adding)</summary>\n\n```yaml\n{}```\n</details>\n",
            additions.replace("```", "'''")
        );
    }
    crate::redact::truncate_marked(&mut md, MAX_BYTES, "\n\n(truncated)\n");
    md
}
