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

/// Untrusted text (names, paths, summaries: anything a job can influence) as one inline code
/// span: nothing in it is markup, HTML or an autolink (GitHub links bare URLs, `www.` names and
/// e-mail addresses in text, but not in code); `|` stays escaped for tables.
fn code(text: &str) -> String {
    let mut flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    crate::redact::truncate_marked(&mut flat, 300, "…");
    let flat = flat.replace('|', "\\|");
    let longest_run = flat.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest_run + 1);
    if flat.starts_with('`') || flat.ends_with('`') || flat.is_empty() {
        format!("{fence} {flat} {fence}")
    } else {
        format!("{fence}{flat}{fence}")
    }
}

/// What must come before a summary block appended to a file a job could write to (the step
/// summary), so that nothing the job left open there (an HTML comment, a code fence,
/// `<details>` and other block elements) swallows or hides the block.
/// None when more blocks are open than it is reasonable to close (`MAX_CLOSERS`).
pub fn closers_for(existing: &str) -> Option<String> {
    const BLOCKS: &[&str] = &["details", "div", "table", "blockquote", "pre", "p", "span"];
    let mut fence: Option<(char, usize)> = None;
    let mut in_comment = false;
    let mut open: Vec<usize> = vec![0; BLOCKS.len()];
    for line in existing.lines() {
        let trimmed = line.trim_start();
        let run = |c: char| trimmed.chars().take_while(|&x| x == c).count();
        if let Some((c, n)) = fence {
            if run(c) >= n && trimmed.trim_start_matches(c).trim().is_empty() {
                fence = None;
            }
            continue;
        }
        if !in_comment {
            for c in ['`', '~'] {
                if run(c) >= 3 && line.len() - trimmed.len() <= 3 {
                    fence = Some((c, run(c)));
                }
            }
            if fence.is_some() {
                continue;
            }
        }
        let lower = line.to_ascii_lowercase();
        let mut rest = lower.as_str();
        while !rest.is_empty() {
            if in_comment {
                match rest.find("-->") {
                    Some(i) => {
                        in_comment = false;
                        rest = &rest[i + 3..];
                    }
                    None => break,
                }
            } else {
                let next_comment = rest.find("<!--");
                let scan = &rest[..next_comment.unwrap_or(rest.len())];
                for (i, tag) in BLOCKS.iter().enumerate() {
                    let opens = scan.matches(&format!("<{tag}>")).count()
                        + scan.matches(&format!("<{tag} ")).count();
                    let closes = scan.matches(&format!("</{tag}>")).count();
                    open[i] = (open[i] + opens).saturating_sub(closes);
                }
                match next_comment {
                    Some(i) => {
                        in_comment = true;
                        rest = &rest[i + 4..];
                    }
                    None => break,
                }
            }
        }
    }
    // No blank line before the closers: a comment opened inside an HTML block (after a
    // `<details>` line) is raw HTML only until the block's first blank line.
    if existing.trim().is_empty() {
        return Some(String::new());
    }
    let mut out = String::new();
    if !existing.ends_with('\n') {
        out.push('\n');
    }
    if let Some((c, n)) = fence {
        out.push_str(&c.to_string().repeat(n.max(3)));
        out.push('\n');
    }
    if in_comment {
        out.push_str("-->\n");
    }
    if open.iter().sum::<usize>() > MAX_CLOSERS {
        return None;
    }
    for (i, tag) in BLOCKS.iter().enumerate().rev() {
        for _ in 0..open[i] {
            out.push_str(&format!("</{tag}>\n"));
        }
    }
    out.push('\n');
    Some(out)
}

/// Open blocks a step may leave that the hook closes; past it the step summary is taken as
/// hostile and the agent's block goes first (`with_block`).
const MAX_CLOSERS: usize = 256;

/// What GitHub renders of one step's summary (a bigger one is not shown at all).
pub const STEP_SUMMARY_LIMIT: usize = 1024 * 1024;

/// How the hook writes the agent's block into a step summary a job could write to.
#[derive(Debug, PartialEq, Eq)]
pub enum SummaryWrite {
    /// Append this (closers for what the steps left open, then the block).
    Append(String),
    /// Replace the file with this: the block first, then what was there, cut to fit. For a
    /// summary that would hide the block however it is closed (thousands of open blocks) or
    /// push the whole page past what GitHub shows.
    Rewrite(String),
}

/// The agent's `block` added to a step summary that holds `existing`.
pub fn with_block(existing: &str, block: &str) -> SummaryWrite {
    if let Some(closers) = closers_for(existing) {
        if existing.len() + closers.len() + block.len() <= STEP_SUMMARY_LIMIT {
            return SummaryWrite::Append(closers + block);
        }
    }
    let mut whole = String::with_capacity(STEP_SUMMARY_LIMIT);
    whole.push_str(block);
    whole.push_str("\n---\n\n");
    let room = STEP_SUMMARY_LIMIT.saturating_sub(whole.len());
    let mut cut = existing.len().min(room);
    while !existing.is_char_boundary(cut) {
        cut -= 1;
    }
    whole.push_str(&existing[..cut]);
    SummaryWrite::Rewrite(whole)
}

/// The baseline's section: its state, and per step what was new.
fn baseline(md: &mut String, b: &crate::baseline::BaselineReport) {
    let state = b
        .state
        .map_or("not compared".to_string(), |s| s.as_str().to_string());
    let recorded = match b.recorded {
        crate::baseline::Recording::Recorded => "this run is recorded",
        crate::baseline::Recording::Pending => {
            "**this run's record is pending** (the store did not take it yet)"
        }
        crate::baseline::Recording::NotRecorded => "this run is not recorded",
    };
    let _ = writeln!(
        md,
        "**Baseline** {} ({} store): {state} after {} run(s); {recorded}.",
        code(&b.job),
        b.store,
        b.runs
    );
    if let Some(note) = &b.note {
        let _ = writeln!(md, "\n> {}", cell(note));
    }
    let new: Vec<_> = b.steps.iter().filter(|s| !s.new.is_empty()).collect();
    if !new.is_empty() {
        md.push_str("\n| step | baseline | new behaviour |\n|---|---|---|\n");
        let mut rows = 0;
        for s in new {
            for behaviour in &s.new {
                if rows == MAX_ROWS {
                    break;
                }
                rows += 1;
                let _ = writeln!(
                    md,
                    "| {} | {} | {} |",
                    code(&s.step),
                    s.state,
                    code(&behaviour.to_string())
                );
            }
        }
    }
    md.push('\n');
}

pub fn render(r: &Report) -> String {
    let mut md = String::new();
    if let Some(nonce) = &r.summary_nonce {
        let _ = writeln!(md, "<!-- ci-runtime-monitor summary {nonce} -->");
    }
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
        code(&job.name),
        verdict
    );
    let _ = writeln!(
        md,
        "{}{} · {} steps · {} processes · {} connections ({} not allowed) · {} sensitive file accesses · {} install hooks\n",
        job.repository.as_deref().map(|r| format!("{} · ", code(r))).unwrap_or_default(),
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
            // What the kernel did to the process, first: it explains a failed step.
            let response = match f.response {
                Some(r) => format!("**{}** ", r.as_str().replace('_', " ")),
                None => String::new(),
            };
            let _ = writeln!(
                md,
                "| {} | `{}` | {} | {response}{} |",
                f.severity.name(),
                f.rule,
                code(f.step.as_ref().map(|s| s.id.as_str()).unwrap_or("-")),
                code(&f.summary)
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
    if let Some(b) = &r.baseline {
        baseline(&mut md, b);
    }
    if !r.containers.is_empty() {
        md.push_str("| container | image | step | processes |\n|---|---|---|---|\n");
        for c in r.containers.iter().take(MAX_ROWS) {
            let name = if c.name.is_empty() {
                c.id.chars().take(12).collect::<String>()
            } else {
                format!("{} ({})", c.name, c.id.chars().take(12).collect::<String>())
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                code(&name),
                code(if c.image.is_empty() { "?" } else { &c.image }),
                code(&c.step),
                c.processes
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
                    "{} {} {}{}",
                    h.hook.ecosystem.name(),
                    code(&h.hook.package),
                    code(&h.hook.script),
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
    if let Some(nonce) = &r.summary_nonce {
        let _ = writeln!(
            md,
            "<sub>Written by the runtime monitor agent, report nonce `{}`. Steps can write to this page too: the agent's report (its `summary_nonce`) and metrics are the source of truth.</sub>",
            &nonce[..nonce.len().min(12)]
        );
    }
    crate::redact::truncate_marked(&mut md, MAX_BYTES, "\n\n(truncated)\n");
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_text_is_one_code_span_without_links_or_cell_breaks() {
        assert_eq!(code("https://evil.example/x"), "`https://evil.example/x`");
        assert_eq!(code("a|b"), "`a\\|b`");
        assert_eq!(code("x ``y`` z"), "```x ``y`` z```");
        assert_eq!(code("`tick"), "`` `tick ``");
        assert_eq!(code("line\n<!--\u{1b}[31m"), "`line <!-- [31m`");
    }

    #[test]
    fn whatever_a_step_left_open_is_closed_before_the_block() {
        assert_eq!(
            closers_for("").unwrap(),
            "",
            "an empty summary gets the block alone"
        );
        assert_eq!(closers_for("# fine\n\n| a |\n").unwrap(), "\n");
        assert_eq!(
            closers_for("text\n<!-- hide the rest\nmore").unwrap(),
            "\n-->\n\n"
        );
        assert_eq!(closers_for("<!-- closed --> text").unwrap(), "\n\n");
        assert_eq!(closers_for("````js\ncode\n").unwrap(), "````\n\n");
        assert_eq!(closers_for("```\ncode\n```\n").unwrap(), "\n");
        assert_eq!(closers_for("~~~\n```\n").unwrap(), "~~~\n\n");
        assert_eq!(
            closers_for("<details><summary>x</summary>\n<div>\n").unwrap(),
            "</div>\n</details>\n\n"
        );
        assert_eq!(
            closers_for("<details>\n<!-- hide\n```\n").unwrap(),
            "-->\n</details>\n\n"
        );
        // Inside a fence or a comment, tags are text.
        assert_eq!(closers_for("```\n<details>\n```\n").unwrap(), "\n");
        assert_eq!(closers_for("<!-- <details> -->").unwrap(), "\n\n");
    }

    #[test]
    fn a_summary_too_open_or_too_big_to_close_gets_the_block_first() {
        let block = "## Runtime monitor\nno findings\n";
        // Ordinary: appended after the closers.
        assert_eq!(
            with_block("<details>\n", block),
            SummaryWrite::Append(format!("</details>\n\n{block}"))
        );
        // Past what is reasonable to close, every one of them closed would still be needed.
        let many = "<details>\n".repeat(MAX_CLOSERS + 1);
        assert_eq!(closers_for(&many), None);
        let SummaryWrite::Rewrite(whole) = with_block(&many, block) else {
            panic!("a hostile summary is rewritten")
        };
        assert!(whole.starts_with(block));
        assert!(
            whole.ends_with(&many),
            "what was there is kept after the block"
        );
        // A summary grown to GitHub's limit: the block first, the rest cut to fit.
        let huge = "x".repeat(STEP_SUMMARY_LIMIT);
        let SummaryWrite::Rewrite(whole) = with_block(&huge, block) else {
            panic!("an oversized summary is rewritten")
        };
        assert!(whole.starts_with(block));
        assert_eq!(whole.len(), STEP_SUMMARY_LIMIT);
    }
}
