//! The HTML form of a report: one self-contained file (inline CSS, no script, no fetches; a
//! Content-Security-Policy forbids loading anything) with the steps' timeline, the findings with
//! their evidence chains, the process tree, the connections and the file accesses. Every value
//! is escaped by the template engine.

use std::collections::HashMap;

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::{ProcessRecord, Report, StepReport};
use crate::finding::Finding;

const STYLE: &str = r#"
body{font-family:system-ui,sans-serif;margin:2rem;color:#1b1f24;background:#fff;max-width:80rem}
h1{font-size:1.5rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;width:100%;font-size:.85rem} td,th{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;vertical-align:top}
code,pre{font-family:ui-monospace,monospace;font-size:.8rem;word-break:break-all;white-space:pre-wrap}
.sev{font-weight:bold;padding:0 .4rem;border-radius:.3rem;color:#fff}
.critical{background:#8b0000}.high{background:#cf222e}.medium{background:#bf8700}.low{background:#57606a}
.finding{border:1px solid #d0d7de;border-left:.4rem solid #cf222e;padding:.5rem 1rem;margin:.75rem 0}
.warning{background:#fff8c5;border:1px solid #d4a72c;padding:.5rem 1rem}
.ok{background:#dafbe1;border:1px solid #4ac26b;padding:.5rem 1rem}
.timeline{position:relative;border-left:1px solid #d0d7de;margin:.5rem 0}
.lane{position:relative;height:1.6rem;margin:.2rem 0}
.bar{position:absolute;height:1.4rem;background:#54aeff;border-radius:.2rem;font-size:.75rem;overflow:hidden;white-space:nowrap;padding:0 .3rem;box-sizing:border-box;min-width:.5rem}
.bar.bad{background:#ff8182}
ul.tree{list-style:none;padding-left:1.2rem;border-left:1px dotted #afb8c1} ul.tree li{margin:.15rem 0}
.denied{color:#cf222e;font-weight:bold}
.response{background:#ffebe9;border:1px solid #ff8182;padding:.25rem .5rem}
"#;

fn severity(f: &Finding) -> Markup {
    let name = f.severity.name();
    html! { span class={"sev " (name)} { (name) } }
}

fn argv(args: &[String]) -> String {
    args.join(" ")
}

/// What the kernel did to the process, in words: it explains a step that failed.
fn response_meaning(r: crate::event::KernelResponse) -> &'static str {
    use crate::event::KernelResponse::*;
    match r {
        Blocked => "the kernel refused the operation and killed the process: it never got what it asked for",
        Killed => "the kernel killed the process (SIGKILL) before the call returned to it",
        WouldKill => "the profile rehearses this response: a kill would have happened here, nothing was done",
        KillFailed => "a kill was due, but the kernel refused to send the signal: the process went on",
    }
}

fn finding(f: &Finding) -> Markup {
    html! {
        div class="finding" id={"finding-" (f.id)} {
            p { (severity(f)) " " code { (f.rule) } " — " strong { (f.summary) } }
            @if let Some(r) = f.response {
                p class="response" { "Response: " strong { (r.as_str().replace('_', " ")) } " — " (response_meaning(r)) }
            }
            p { "Step " code { (f.step.as_ref().map(|s| s.id.as_str()).unwrap_or("-")) }
                " at " (f.time)
                @if let Some(h) = &f.hook { ", inside install-time code of " (h.ecosystem.name()) " package " code { (h.package) } " (" (h.script) ")" } }
            p { "Why: " (f.profile_clause) }
            table {
                tr { th { "process chain (acting process first)" } }
                @for link in &f.process_chain {
                    tr { td { "pid " (link.pid) " " code { (argv(&link.argv)) } } }
                }
            }
            @if !f.evidence.is_empty() {
                pre { (serde_json::to_string_pretty(&f.evidence).unwrap_or_default()) }
            }
        }
    }
}

/// A step's processes as a tree (parents within the step; the rest are roots).
fn tree(step: &StepReport) -> Markup {
    let mut children: HashMap<Option<u32>, Vec<&ProcessRecord>> = HashMap::new();
    let pids: std::collections::HashSet<u32> = step.processes.iter().map(|p| p.pid).collect();
    for p in &step.processes {
        let parent = p.parent_pid.filter(|pp| pids.contains(pp) && *pp != p.pid);
        children.entry(parent).or_default().push(p);
    }
    fn node(
        p: &ProcessRecord,
        children: &HashMap<Option<u32>, Vec<&ProcessRecord>>,
        depth: usize,
    ) -> Markup {
        html! {
            li {
                code { (argv(&p.argv)) }
                " " small { "pid " (p.pid)
                    @if let Some(code) = p.exit_code { ", exit " (code) }
                    @if let Some(sig) = p.signal { ", signal " (sig) }
                    @if p.hook.is_some() { ", install hook" } }
                @if depth < 64 {
                    @if let Some(kids) = children.get(&Some(p.pid)) {
                        ul class="tree" { @for k in kids { (node(k, children, depth + 1)) } }
                    }
                }
            }
        }
    }
    html! {
        ul class="tree" {
            @if let Some(roots) = children.get(&None) {
                @for r in roots { (node(r, &children, 0)) }
            }
        }
    }
}

fn timeline(r: &Report) -> Markup {
    let start = r.steps.iter().map(|s| s.started_ns).min().unwrap_or(0);
    let end_of = |s: &StepReport| {
        s.processes
            .iter()
            .filter_map(|p| p.ended_ns)
            .max()
            .unwrap_or(s.started_ns)
            .max(s.started_ns)
    };
    let end = r
        .steps
        .iter()
        .map(end_of)
        .max()
        .unwrap_or(start)
        .max(start + 1);
    let span = (end - start) as f64;
    html! {
        div class="timeline" {
            @for s in &r.steps {
                @let left = (s.started_ns - start) as f64 / span * 100.0;
                @let width = ((end_of(s) - s.started_ns) as f64 / span * 100.0).max(0.5);
                @let bad = r.findings.iter().any(|f| f.step.as_ref() == Some(&s.step));
                div class="lane" {
                    div class={"bar" @if bad { " bad" }} style=(format!("left:{left:.2}%;width:{width:.2}%"))
                        title=(s.step.id) { (s.step.id) }
                }
            }
        }
    }
}

pub fn render(r: &Report) -> String {
    let job = &r.job;
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:";
                meta name="referrer" content="no-referrer";
                title { "Runtime security report: " (job.name) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "Runtime security report: " (job.name) }
                p {
                    @if let Some(repo) = &job.repository { (repo) " · " }
                    @if let Some(wf) = &job.workflow { "workflow " (wf) " · " }
                    @if let Some(run) = &job.run_id { "run " (run) " · " }
                    "started " (r.started)
                    @if let Some(d) = r.duration_seconds { " · " (format!("{d:.0}")) " s" }
                }
                @if r.complete {
                    div class="ok" { "Complete: no events were lost while this job ran." }
                } @else {
                    div class="warning" id="incomplete" {
                        strong { "This report may be incomplete: " }
                        @for why in &r.incomplete_because { (why) ". " }
                    }
                }
                h2 { "Summary" }
                p {
                    (r.summary.findings) " findings · " (r.summary.steps) " steps · "
                    (r.summary.processes) " processes · " (r.summary.connections) " connections ("
                    (r.summary.connections_not_allowed) " not allowed) · "
                    (r.summary.file_accesses) " sensitive file accesses · " (r.summary.hooks) " install hooks"
                }
                @if let Some(b) = &r.baseline {
                    h2 id="baseline" { "Baseline" }
                    p {
                        code { (b.job) } " (" (b.store) " store): "
                        (b.state.map_or("not compared", |s| s.as_str())) " after " (b.runs) " run(s); "
                        (match b.recorded {
                            crate::baseline::Recording::Recorded => "this run is recorded",
                            crate::baseline::Recording::Pending => "this run's record is pending (the store did not take it yet)",
                            crate::baseline::Recording::NotRecorded => "this run is not recorded",
                        }) "."
                    }
                    @if let Some(note) = &b.note { div class="warning" { (note) } }
                    table {
                        tr { th { "step" } th { "baseline" } th { "runs" } th { "new behaviour" } }
                        @for s in &b.steps {
                            tr {
                                td { code { (s.step) } } td { (s.state.as_str()) } td { (s.runs) }
                                td { @if s.new.is_empty() { "nothing new" }
                                     @for n in &s.new { code { (n.to_string()) } br; } }
                            }
                        }
                    }
                }
                h2 { "Timeline of steps" }
                (timeline(r))
                h2 id="findings" { "Findings" }
                @if r.findings.is_empty() { p { "None." } }
                @for f in &r.findings { (finding(f)) }
                @for s in &r.steps {
                    h2 { "Step " code { (s.step.id) }
                        @if let Some(a) = &s.step.action { " (" (a) ")" } }
                    p { "started " (s.started) }
                    @if !s.hooks.is_empty() {
                        h3 { "Install-time code" }
                        table {
                            tr { th { "ecosystem" } th { "package" } th { "version" } th { "script" } th { "allowed by profile" } }
                            @for h in &s.hooks {
                                tr { td { (h.hook.ecosystem.name()) } td { code { (h.hook.package) } }
                                    td { (h.hook.version.as_deref().unwrap_or("")) } td { (h.hook.script) }
                                    td { (if h.allowed_by_profile { "yes" } else { "no" }) } }
                            }
                        }
                    }
                    h3 { "Processes" }
                    (tree(s))
                    @if !s.connections.is_empty() {
                        h3 { "Connections" }
                        table {
                            tr { th { "time" } th { "process" } th { "destination" } th { "result" } th { "allowed" } }
                            @for c in &s.connections {
                                tr {
                                    td { (c.time) }
                                    td { "pid " (c.pid) " " code { (c.exe.as_deref().unwrap_or("?")) } }
                                    td { (c.protocol) " " (c.domain.as_deref().unwrap_or("")) " " (c.address) ":" (c.port) }
                                    td { (c.result) @if c.repeats > 0 { " \u{00d7}" (1 + u64::from(c.repeats)) } }
                                    td { @if c.allowed { "yes" } @else {
                                        span class="denied" { "no" }
                                        @for id in &c.findings { " " a href={"#finding-" (id)} { "#" (id) } } } }
                                }
                            }
                        }
                    }
                    @if !s.file_accesses.is_empty() {
                        h3 { "Sensitive file accesses" }
                        table {
                            tr { th { "time" } th { "process" } th { "path" } th { "access" } th { "findings" } }
                            @for f in &s.file_accesses {
                                tr {
                                    td { (f.time) }
                                    td { "pid " (f.pid) " " code { (f.exe.as_deref().unwrap_or("?")) } }
                                    td { code { (f.path) } }
                                    td { (f.access) }
                                    td { @for id in &f.findings { a href={"#finding-" (id)} { "#" (id) } " " } }
                                }
                            }
                        }
                    }
                }
                @if let Some(additions) = &r.profile_additions {
                    h2 { "Profile additions" }
                    p { "What a profile would need to allow for none of these findings to be raised again. Review before adding: some findings should stay findings." }
                    pre { (additions) }
                }
                p { small { "Report schema " (r.schema) ", generated " (r.generated_at) "."
                    @if let Some(nonce) = &r.summary_nonce {
                        " Summary nonce " code { (nonce) } ": a step summary block without it was not written by the agent."
                    }
                } }
            }
        }
    };
    page.into_string()
}
