//! The monitor's own attack surface: a job, running as the runner's unprivileged user in the
//! control socket's group (as the README recommends), must not be able to end, re-anchor,
//! stall or forge its own monitoring.

use std::time::{Duration, Instant};

use integration_tests::{
    monitor_bin, rule, unprivileged_runner_user, Agent, FakeRunner, Value, STRICT_PROFILE,
};

const CANARY: &str = "npm_SELFDEFENCECANARY00000000000000000000";

/// An agent whose control socket lives in a directory the agent makes itself, for the runner
/// user's group.
fn agent_for_group(group: &str) -> (Agent, std::path::PathBuf) {
    let dir = std::path::PathBuf::from(format!(
        "/run/monitor-test-{}-{}",
        std::process::id(),
        Instant::now().elapsed().subsec_nanos() ^ rand_tag()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let socket = dir.join("control.sock");
    let profile = tempfile::NamedTempFile::new().expect("profile");
    std::fs::write(profile.path(), STRICT_PROFILE).expect("profile");
    let (_, profile_path) = profile.keep().expect("keep profile");
    let agent = Agent::start_with_socket(
        Some(&socket),
        &[
            "--control-group",
            group,
            "--profile",
            profile_path.to_str().unwrap(),
        ],
    );
    (agent, dir)
}

/// CommonMark with GitHub's tables, as the step summary page renders it.
fn render_markdown(text: &str) -> String {
    let parser = pulldown_cmark::Parser::new_ext(text, pulldown_cmark::Options::ENABLE_TABLES);
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, parser);
    html
}

fn rand_tag() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// A step that tries every way the control socket offers to end or re-anchor its own job, then
/// a later step reads a credential: the attempts are refused (and reported), the job goes on
/// being judged, and the report and the step summary the real hook writes name the read.
#[test]
fn a_step_cannot_end_or_reanchor_its_own_job() {
    let user = unprivileged_runner_user();
    let (agent, socket_dir) = agent_for_group(user.group);
    let socket = agent.control_socket.display().to_string();
    let runner = FakeRunner::as_user(&user);
    std::fs::write(
        runner.home.join(".npmrc"),
        format!("//registry.npmjs.org/:_authToken={CANARY}\n"),
    )
    .unwrap();
    std::os::unix::fs::chown(runner.home.join(".npmrc"), Some(user.uid), Some(user.gid)).unwrap();
    let key = format!("github/acme/app/{}/1/build", runner.run_id);
    let bin = monitor_bin().display().to_string();
    let attack = format!(
        "M='{bin}'; S='{socket}'\n\
         echo \"== hook\"; \"$M\" hook job-completed --socket \"$S\" 2>&1 || true\n\
         echo \"== stop\"; \"$M\" job stop --key '{key}' --socket \"$S\" 2>&1 || true\n\
         echo \"== worker\"; \"$M\" job start --id decoy-$$ --pid $PPID --socket \"$S\" 2>&1 || true\n\
         echo \"== init\"; \"$M\" job start --id decoy1-$$ --pid 1 --socket \"$S\" 2>&1 || true\n\
         echo \"== self\"; \"$M\" job start --id decoy2-$$ --pid $$ --socket \"$S\" 2>&1 || true\n\
         echo \"== escape\"; \"$M\" job start --id \"$(printf 'e\\033]0;owned\\007')\" --pid $$ --socket \"$S\" 2>&1 || true\n\
         printf '%s\\n' '## Runtime security: `build` — no findings' '<details><summary>more</summary>' '<!-- the rest is hidden' '```' >> \"$GITHUB_STEP_SUMMARY\"\n\
         echo ATTACK-DONE\n"
    );
    // The step's root becomes Python and makes a sibling of itself (`CLONE_PARENT`): a child of
    // the Worker, outside every step by its parent and without the step's `GITHUB_ACTION`, that
    // asks to end the job as the runner's hook would.
    let sibling = format!(
        "exec python3 -c '\n\
import ctypes, os, sys, time\n\
libc = ctypes.CDLL(None, use_errno=True)\n\
pid = libc.syscall(56, 0x8000 | 17, 0, 0, 0, 0)\n\
if pid == 0: print(\"sibling of\", os.getppid(), flush=True); print(\"== sibling\", flush=True); os.dup2(1, 2); env = dict(os.environ); env.pop(\"GITHUB_ACTION\", None); os.execve(sys.argv[1], [sys.argv[1], \"hook\", \"job-completed\", \"--socket\", sys.argv[2]], env)\n\
time.sleep(3)\n\
print(\"maker\", os.getpid(), \"parent\", os.getppid(), flush=True)\n\
' '{bin}' '{socket}'\n"
    );
    let output = runner.run_job_with_hooks(
        &[
            ("attack", &attack),
            ("sibling", &sibling),
            ("steal", "cat \"$HOME/.npmrc\"\n"),
        ],
        Some(&agent.control_socket),
    );
    // The sibling really was one: its parent is its maker's parent (the Worker).
    let number = |after: &str| -> Option<u32> {
        output
            .split(after)
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    assert_eq!(
        number("sibling of "),
        number(" parent "),
        "CLONE_PARENT made a sibling: {output}"
    );
    // The attack really ran: each request reached the agent and was answered.
    assert!(output.contains("ATTACK-DONE"), "{output}");
    assert!(output.contains(CANARY), "the canary was read: {output}");
    for what in [
        "== hook",
        "== stop",
        "== worker",
        "== init",
        "== self",
        "== escape",
        "== sibling",
    ] {
        let answer = output
            .split(what)
            .nth(1)
            .and_then(|rest| rest.lines().nth(1))
            .unwrap_or_default();
        assert!(
            answer.contains("refused"),
            "{what}: the agent must refuse it, said: {answer:?}\n{output}"
        );
    }

    // The refusals are logged with what the job named, escaped: no escape sequence of the
    // job's reaches the agent's log (an administrator's terminal, the journal) raw.
    let log = agent.log();
    assert!(log.contains("\\u{1b}]0;owned"), "{log}");
    assert!(
        !log.bytes().any(|b| b == 0x1b || b == 0x07),
        "the agent logged a raw escape sequence"
    );

    let findings = agent.wait_for_findings("the credential read and the tampering", |all| {
        let mine = runner.findings_of(all);
        mine.iter().any(|f| rule(f) == "credential-read")
            && mine.iter().any(|f| rule(f) == "agent-tampering")
    });
    let mine = runner.findings_of(&findings);
    let tampering: Vec<&Value> = mine
        .iter()
        .filter(|f| rule(f) == "agent-tampering")
        .collect();
    assert!(
        tampering
            .iter()
            .all(|f| f["step"]["id"] == "attack" || f["step"]["id"] == "sibling"),
        "{tampering:?}"
    );
    assert!(
        tampering.iter().any(|f| f["step"]["id"] == "sibling"),
        "the sibling's request is the step's: {tampering:?}"
    );

    let starts: Vec<Value> = agent
        .events()
        .into_iter()
        .filter(|e| {
            e["kind"] == "job_start"
                && e["job"]["key"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("explicit/decoy"))
        })
        .collect();
    let status = integration_tests::monitor_cli(&["job", "status", "--socket", &socket]);
    assert!(
        !status.contains("explicit/decoy"),
        "no decoy job exists: {status}\n{starts:?}"
    );

    // The report written at the real end names the read, and so does the step summary.
    let reports = agent.dir.path().join("reports");
    let deadline = Instant::now() + Duration::from_secs(10);
    let report: Value = loop {
        let found = std::fs::read_dir(&reports).ok().and_then(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .filter_map(|p| {
                    serde_json::from_str::<Value>(&std::fs::read_to_string(p).ok()?).ok()
                })
                .find(|r| r["job"]["key"] == key.as_str())
        });
        if let Some(r) = found {
            break r;
        }
        assert!(Instant::now() < deadline, "no report for {key}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let rules: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(rule)
        .collect();
    assert!(rules.contains(&"credential-read"), "{rules:?}");
    let summary = std::fs::read_to_string(runner.step_summary()).unwrap_or_default();
    assert!(
        summary.contains("no findings") && summary.contains("<!-- the rest is hidden"),
        "the forged, hiding block was written: {summary}"
    );
    assert!(
        summary.contains("credential-read"),
        "the step summary names the read: {summary}"
    );
    assert!(!summary.contains(CANARY));
    // The agent's block carries the report's nonce (the forged one cannot know it) ...
    let nonce = report["summary_nonce"]
        .as_str()
        .expect("a live report has a nonce");
    assert!(summary.contains(nonce), "{summary}");
    // ... and renders: the finding is shown, not inside a comment, code block or <details>.
    let html = render_markdown(&summary);
    let at = html
        .find("credential-read")
        .unwrap_or_else(|| panic!("not rendered: {html}"));
    let before = &html[..at];
    for (open, close) in [
        ("<!--", "-->"),
        ("<pre", "</pre>"),
        ("<details", "</details>"),
    ] {
        assert_eq!(
            before.matches(open).count(),
            before.matches(close).count(),
            "the finding is inside {open}...: {html}"
        );
    }
    drop(agent);
    let _ = std::fs::remove_dir_all(socket_dir);
}

/// A step leaves more open blocks than anyone would close (1,000 `<details>`): the hook puts
/// the agent's block first, where nothing the step wrote can hide it; what the step wrote is
/// kept after it. The HTML report carries the same nonce as the block.
#[test]
fn a_summary_left_too_open_to_close_gets_the_agents_block_first() {
    let agent = Agent::start_with_profile(STRICT_PROFILE);
    let runner = FakeRunner::new();
    std::fs::write(
        runner.home.join(".npmrc"),
        format!("//registry.npmjs.org/:_authToken={CANARY}\n"),
    )
    .unwrap();
    let output = runner.run_job_with_hooks(
        &[
            (
                "hide",
                "for i in $(seq 1000); do echo '<details>'; done >> \"$GITHUB_STEP_SUMMARY\"\n\
                 echo '## Runtime security: no findings' >> \"$GITHUB_STEP_SUMMARY\"\n",
            ),
            ("steal", "cat \"$HOME/.npmrc\"\n"),
        ],
        Some(&agent.control_socket),
    );
    assert!(output.contains(CANARY), "the canary was read: {output}");
    let report = agent.wait_for_report(&runner);
    let nonce = report["summary_nonce"]
        .as_str()
        .expect("a live report has a nonce");
    let summary = std::fs::read_to_string(runner.step_summary()).unwrap();
    let forged = summary
        .find("## Runtime security: no findings")
        .expect("the step's text is kept");
    assert!(
        summary.matches("<details>").count() >= 1000,
        "the step's text is kept"
    );
    assert!(
        summary.find(nonce).is_some_and(|at| at < forged),
        "the agent's block comes first"
    );
    let html = render_markdown(&summary);
    let at = html
        .find("credential-read")
        .unwrap_or_else(|| panic!("not rendered: {html}"));
    let before = &html[..at];
    assert_eq!(
        before.matches("<details").count(),
        before.matches("</details>").count(),
        "the finding is inside a <details>: {}",
        &before[..before.len().min(2000)]
    );
    let html_report = agent.report_path(&runner).unwrap().with_extension("html");
    assert!(std::fs::read_to_string(html_report)
        .unwrap()
        .contains(nonce));
}

/// The agent makes the control socket's directory itself, reachable by the socket's group:
/// without systemd's RuntimeDirectoryMode the group could otherwise never connect.
#[test]
fn the_control_group_can_use_a_socket_in_a_directory_the_agent_made() {
    let user = unprivileged_runner_user();
    let (agent, socket_dir) = agent_for_group(user.group);
    let out = std::process::Command::new(monitor_bin())
        .args(["job", "status", "--socket"])
        .arg(&agent.control_socket)
        .uid(user.uid)
        .gid(user.gid)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the group's member reaches the socket: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let meta = std::fs::metadata(&socket_dir).unwrap();
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!(meta.gid(), user.gid, "the directory belongs to the group");
    assert_eq!(
        meta.mode() & 0o077,
        0o050,
        "group may enter and list, others nothing"
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(socket_dir);
}

use std::os::unix::process::CommandExt as _;

/// A FIFO named like a `.pth` file, opened by the job without blocking, must not freeze the
/// agent: a credential read right after it in the same job is still found within seconds.
#[test]
fn a_fifo_named_pth_does_not_stall_the_agent() {
    let agent = Agent::start_with_profile(STRICT_PROFILE);
    let runner = FakeRunner::outside_tmp();
    std::fs::write(
        runner.home.join(".npmrc"),
        format!("//r/:_authToken={CANARY}\n"),
    )
    .unwrap();
    // A site-packages directory no interpreter here reads at start (python3 -S, below, reads
    // none): the open that matters is the job's own, non-blocking one.
    let site = runner.workspace.join(".venv/lib/python3.11/site-packages");
    let script = format!(
        "mkdir -p '{site}'\nmkfifo '{site}/evil.pth'\n\
         python3 -S -s -c 'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY|os.O_NONBLOCK); print(\"fifo-opened\", fd)' '{site}/evil.pth'\n\
         cat \"$HOME/.npmrc\"\n",
        site = site.display()
    );
    let started = Instant::now();
    let output = runner.run_job(&[("fifo", &script)]);
    assert!(output.contains("fifo-opened"), "{output}");
    assert!(output.contains(CANARY), "{output}");
    let findings = agent.wait_for_findings("the credential read after the FIFO", |all| {
        runner
            .findings_of(all)
            .iter()
            .any(|f| rule(f) == "credential-read")
    });
    assert!(!runner.findings_of(&findings).is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "found, but only after {:?}",
        started.elapsed()
    );
    // And the agent still answers on its socket.
    let status = integration_tests::monitor_cli(&[
        "job",
        "status",
        "--socket",
        agent.control_socket.to_str().unwrap(),
    ]);
    assert!(status.contains("\"ok\":true"), "{status}");
}

/// Job keys, step ids and summaries come from jobs: what `monitor report` and `monitor profile
/// diff` print for an administrator carries no escape sequence (here one that would retitle the
/// terminal and clear the screen).
#[test]
fn terminal_output_escapes_what_jobs_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.jsonl");
    let evil = "b\u{1b}]0;owned\u{7}\u{1b}[2J";
    let event = serde_json::json!({
        "schema": 6, "seq": 1, "time": "2026-01-01T00:00:00Z", "ts_ns": 1000,
        "kind": "exec", "filename": format!("/tmp/{evil}"), "filename_truncated": false,
        "exe_truncated": false, "exe_unresolved": false, "argv_total_len": 4, "cwd": "/",
        "env": {"GITHUB_RUN_ID": "1", "GITHUB_JOB": evil, "GITHUB_REPOSITORY": "a/b",
                "GITHUB_ACTION": evil},
        "process": {"pid": 10, "tid": 10, "ppid": 9, "start_ticks": 5, "uid": 0, "gid": 0,
                    "comm": "x", "exe": format!("/tmp/{evil}"), "argv": ["x"],
                    "argv_truncated": false, "cgroup_id": 1},
        "ancestry": [{"pid": 9, "start_ticks": 4, "comm": "Runner.Worker",
                      "exe": "/r/Runner.Worker", "argv": [], "exited": false}]
    });
    std::fs::write(&log, format!("{event}\n")).unwrap();
    let profile = dir.path().join("p.yml");
    std::fs::write(&profile, "version: 1\n").unwrap();
    let log = log.to_str().unwrap();
    for args in [
        vec!["report", "--events", log],
        vec![
            "profile",
            "diff",
            "--profile",
            profile.to_str().unwrap(),
            log,
        ],
    ] {
        let out = std::process::Command::new(monitor_bin())
            .args(&args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        // The hostile job really reached the output, escaped.
        assert!(text.contains("\\u{1b}]0;owned"), "{args:?}: {text}");
        assert!(
            !out.stdout.iter().any(|&b| b == 0x1b || b == 0x07),
            "{args:?} printed a raw escape sequence: {text:?}"
        );
    }
}

/// A job's user floods the control socket (thousands of held connections, then a stream of
/// `job start` requests) while its own job runs: the agent stays responsive, its memory stays
/// bounded, its log is not flooded, and the runner's real hooks are still served.
#[test]
fn a_control_socket_flood_does_not_stop_the_real_hooks() {
    let user = unprivileged_runner_user();
    let (agent, socket_dir) = agent_for_group(user.group);
    let socket = agent.control_socket.display().to_string();
    let flood = r#"
import json, os, resource, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), min(hard, 8192)))
path, seconds = sys.argv[1], float(sys.argv[2])
held = []
for i in range(6000):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
    except OSError:
        break
    held.append(s)
print("held", len(held), flush=True)
sent = answered = 0
end = time.time() + seconds
while time.time() < end:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    try:
        s.connect(path)
        s.sendall(json.dumps({"op": "job_start", "env": {"MONITOR_JOB_ID": "flood%d" % sent},
                              "anchor_pid": os.getpid(), "via": "job start"}).encode() + b"\n")
        if s.recv(4096):
            answered += 1
    except OSError:
        pass
    s.close()
    sent += 1
print("sent", sent, "answered", answered, flush=True)
"#;
    let flooder = std::process::Command::new("python3")
        .args(["-c", flood, &socket, "12"])
        .uid(user.uid)
        .gid(user.gid)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let runner = FakeRunner::as_user(&user);
    std::fs::write(
        runner.home.join(".npmrc"),
        format!("//r/:_authToken={CANARY}\n"),
    )
    .unwrap();
    std::os::unix::fs::chown(runner.home.join(".npmrc"), Some(user.uid), Some(user.gid)).unwrap();
    let output = runner.run_job_with_hooks(
        &[("steal", "cat \"$HOME/.npmrc\"\n")],
        Some(&agent.control_socket),
    );
    assert!(output.contains(CANARY), "{output}");
    assert!(
        !output.contains("unmonitored") && !output.contains("refused"),
        "the hooks were served during the flood: {output}"
    );
    let status = integration_tests::monitor_cli(&["job", "status", "--socket", &socket]);
    assert!(status.contains("\"ok\":true"), "{status}");
    let flooded = flooder.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&flooded.stdout);
    let count = |label: &str| -> usize {
        said.split_whitespace()
            .skip_while(|w| *w != label)
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let (held, sent) = (count("held"), count("sent"));
    // The flood really happened.
    assert!(held >= 1000 && sent >= 500, "{said}");
    let summary = std::fs::read_to_string(runner.step_summary()).unwrap_or_default();
    assert!(summary.contains("credential-read"), "{summary}");
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", agent.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(rss_kib < 200 * 1024, "agent peak RSS {rss_kib} KiB");
    let warnings = agent
        .log()
        .lines()
        .filter(|l| l.contains("control socket:"))
        .count();
    assert!(
        warnings < 60,
        "{warnings} control socket warnings in the log"
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(socket_dir);
}

/// A step leaves a flooder behind that keeps every shared slot of the control socket taken (40
/// threads of the runner's user, each reconnecting the moment a slot frees): the runner's own
/// job-completed hook still gets a slot kept for it, and the job's summary names its read.
#[test]
fn a_steps_flood_of_the_control_socket_cannot_take_the_hooks_slot() {
    let user = unprivileged_runner_user();
    let (agent, socket_dir) = agent_for_group(user.group);
    let runner = FakeRunner::as_user(&user);
    std::fs::write(
        runner.home.join(".npmrc"),
        format!("//r/:_authToken={CANARY}\n"),
    )
    .unwrap();
    std::os::unix::fs::chown(runner.home.join(".npmrc"), Some(user.uid), Some(user.gid)).unwrap();
    let counts = runner.home.join("flood-counts");
    let flood = r#"
import socket, sys, threading, time
path, seconds, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
held = busy = 0
lock = threading.Lock()
end = time.time() + seconds
def hold():
    global held, busy
    while time.time() < end:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        try:
            s.connect(path)
            answer = s.recv(4096)
            with lock:
                if b"busy" in answer:
                    busy += 1
                else:
                    held += 1
        except OSError:
            pass
        s.close()
threads = [threading.Thread(target=hold) for _ in range(40)]
for t in threads: t.start()
time.sleep(1)
open(out + ".started", "w").close()
for t in threads: t.join()
with open(out, "w") as f:
    f.write("held %d busy %d\n" % (held, busy))
"#;
    let script = runner.home.join("flood.py");
    std::fs::write(&script, flood).unwrap();
    let step = format!(
        "nohup python3 {} {} 25 {} > /dev/null 2>&1 &\n\
         for i in $(seq 100); do [ -e {}.started ] && break; sleep 0.1; done\n\
         cat \"$HOME/.npmrc\"\n",
        script.display(),
        agent.control_socket.display(),
        counts.display(),
        counts.display()
    );
    let started = Instant::now();
    let output = runner.run_job_with_hooks(&[("flood", &step)], Some(&agent.control_socket));
    assert!(output.contains(CANARY), "{output}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the hooks finished while the flood ran"
    );
    assert!(
        !output.contains("unmonitored") && !output.contains("busy"),
        "the hooks were served during the flood: {output}"
    );
    let summary = std::fs::read_to_string(runner.step_summary()).unwrap_or_default();
    assert!(summary.contains("credential-read"), "{summary}");
    // The flood really held the shared slots: its own connections were turned away, busy.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !counts.exists() {
        assert!(Instant::now() < deadline, "the flooder did not finish");
        std::thread::sleep(Duration::from_millis(200));
    }
    let said = std::fs::read_to_string(&counts).unwrap();
    let busy: u64 = said
        .split_whitespace()
        .skip_while(|w| *w != "busy")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(busy > 1000, "the flood filled the shared slots: {said}");
    drop(agent);
    let _ = std::fs::remove_dir_all(socket_dir);
}

/// A job's last step reads a credential and the job-completed hook runs at once: the report the
/// hook gets must already hold the read (the agent drains the kernel's ring up to the request
/// before ending the job, not only what its reader had queued).
#[test]
fn the_report_at_a_jobs_end_holds_its_last_events() {
    let agent = Agent::start_with_profile(STRICT_PROFILE);
    for round in 0..5 {
        let runner = FakeRunner::outside_tmp();
        std::fs::write(
            runner.home.join(".npmrc"),
            format!("//r/:_authToken={CANARY}\n"),
        )
        .unwrap();
        let output = runner.run_job_with_hooks(
            &[("last", "cat \"$HOME/.npmrc\"\n")],
            Some(&agent.control_socket),
        );
        assert!(output.contains(CANARY), "{output}");
        let summary = std::fs::read_to_string(runner.step_summary()).unwrap_or_default();
        assert!(
            summary.contains("credential-read"),
            "round {round}: the summary the hook got misses the job's last read:\n{summary}"
        );
    }
}

/// Secrets given to commands in every form the agent recognises by meaning, and a token in a
/// directory name, never reach any file the agent writes (events, findings, reports, its log).
#[test]
fn secrets_by_meaning_reach_no_file_the_agent_writes() {
    let agent = Agent::start_with_profile(STRICT_PROFILE);
    let runner = FakeRunner::outside_tmp();
    let secret = "Plain5ecretCanary77";
    let token = format!("ghp_{}", "CaNaRy12".repeat(5));
    let b64 = "dXNlcjpnaHBfQ2FOYVJ5MTJDYU5hUnkxMkNhTmFSeTEyQ2FOYVJ5MTJDYU5hUnkxMg==";
    // A token given in two halves, each too short for its shape.
    let (split_a, split_b) = ("ghp_SpLiTCaNaRy", "SpLiTCaNaRy0123456789abcdef");
    let script = format!(
        "B=\"$GITHUB_WORKSPACE/fakebin\"; mkdir -p \"$B\"\n\
         for p in aws npm docker twine curl glab git; do ln -sf /bin/true \"$B/$p\"; done\n\
         export PATH=\"$B:$PATH\"\n\
         aws configure set aws_secret_access_key {secret}\n\
         npm config set //registry.npmjs.org/:_authToken {secret}\n\
         docker login -u bot -p {secret} registry.test\n\
         twine upload -p {secret} dist/x.whl\n\
         curl -u bot:{secret} -H 'PRIVATE-TOKEN: {secret}' -H 'X-Api-Key: {secret}' https://x.test\n\
         glab --access-token {secret}\n\
         git clone https://{secret}@github.com/o/r\n\
         curl -H Authorization: Bearer {secret}\n\
         curl -H 'Authorization: Basic {b64}'\n\
         /bin/echo {b64} > /dev/null\n\
         /usr/bin/printf %s%s {split_a} {split_b} > /dev/null\n\
         D=\"$GITHUB_WORKSPACE/{token}\"; mkdir -p \"$D/.ssh\"; echo key > \"$D/.ssh/id_rsa\"\n\
         cd \"$D\" && cat \"$D/.ssh/id_rsa\" && echo REDACTION-DONE\n"
    );
    let output = runner.run_job_with_hooks(&[("secrets", &script)], Some(&agent.control_socket));
    assert!(output.contains("REDACTION-DONE"), "{output}");
    // The commands really ran and were recorded (with their secrets replaced).
    let events = agent.wait_for("the docker login", |e| {
        e["kind"] == "exec" && e["process"]["argv"][0] == "docker"
    });
    assert!(events.to_string().contains("[REDACTED]"), "{events}");
    // The command run in the token-named directory was recorded, its working directory
    // (and the key's path) without the token.
    let cat = agent.wait_for("the read under the token-named directory", |e| {
        e["kind"] == "exec"
            && e["process"]["argv"][0] == "cat"
            && e["cwd"].as_str().is_some_and(|c| c.contains("[REDACTED]"))
    });
    assert!(
        cat["process"]["argv"][1]
            .as_str()
            .is_some_and(|a| a.contains("[REDACTED]/.ssh/id_rsa")),
        "{cat}"
    );
    let printf = agent.wait_for("the split token's printf", |e| {
        e["kind"] == "exec" && e["process"]["argv"][0] == "/usr/bin/printf"
    });
    assert_eq!(printf["process"]["argv"][2], "[REDACTED]", "{printf}");
    assert_eq!(printf["process"]["argv"][3], "[REDACTED]", "{printf}");
    std::thread::sleep(Duration::from_millis(500));
    let mut files = vec![];
    let mut dirs = vec![agent.dir.path().to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_file() {
                files.push(path);
            }
        }
    }
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|x| x == "html")),
        "the job's reports were written: {files:?}"
    );
    // And the summary the hook wrote for the job.
    files.push(runner.step_summary());
    for file in &files {
        let text = String::from_utf8_lossy(&std::fs::read(file).unwrap()).into_owned();
        for canary in [secret, token.as_str(), b64, split_b] {
            assert!(!text.contains(canary), "{} holds {canary}", file.display());
        }
    }
}

/// Stopping the agent by routes other than `kill(2)` with its pid: `pidfd_send_signal`, `kill`
/// made as a 32-bit syscall (`int $0x80`), which syscall tracepoints do not report, and a kill
/// of its process group (the agent leads its own, as under systemd). The
/// signal is seen where it is generated, whatever the route: each is an `agent-tampering`
/// finding for the step that sent it.
#[test]
fn stopping_the_agent_by_any_route_is_reported() {
    let agent = Agent::start_with_profile(STRICT_PROFILE);
    let runner = FakeRunner::outside_tmp();
    let pid = agent.pid();
    // A 32-bit kill through the i386 entry (IA32 emulation), from a 64-bit program.
    let src = runner.workspace.join("kill32.c");
    std::fs::write(
        &src,
        "int main(int c, char **v) { int pid = 0, sig = 0, r;\n\
         for (char *p = v[1]; *p; p++) pid = pid * 10 + (*p - '0');\n\
         for (char *p = v[2]; *p; p++) sig = sig * 10 + (*p - '0');\n\
         __asm__ volatile (\"int $0x80\" : \"=a\"(r) : \"a\"(37), \"b\"(pid), \"c\"(sig) : \"memory\");\n\
         return r; }\n",
    )
    .unwrap();
    let bin = runner.workspace.join("kill32");
    let built = std::process::Command::new("gcc")
        .arg("-O0")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("gcc");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let stopped = "grep -q '^State:.*T' /proc/$A/status && echo stopped";
    let script = format!(
        "A={pid}\n\
         python3 -S -c 'import os,signal,sys; fd=os.pidfd_open(int(sys.argv[1])); signal.pidfd_send_signal(fd, signal.SIGSTOP)' $A\n\
         sleep 0.3; {stopped} || echo not-stopped; kill -CONT $A\n\
         '{bin}' $A 19; sleep 0.3; {stopped} || echo not-stopped; '{bin}' $A 18\n\
         kill -STOP -- -$A; sleep 0.3; {stopped} || echo not-stopped; kill -CONT -- -$A\n",
        bin = bin.display()
    );
    // The benign twin: a step stopping and resuming its own child by the same routes.
    let twin = format!(
        "sleep 5 & C=$!\n\
         python3 -S -c 'import os,signal,sys; fd=os.pidfd_open(int(sys.argv[1])); signal.pidfd_send_signal(fd, signal.SIGSTOP)' $C\n\
         '{bin}' $C 18; kill $C; wait $C || true; echo twin-done\n",
        bin = bin.display()
    );
    let output = runner.run_job(&[("twin", &twin), ("stop", &script)]);
    assert!(output.contains("twin-done"), "{output}");
    // The three routes really stopped the agent.
    assert_eq!(
        output.matches("stopped").count() - output.matches("not-stopped").count(),
        3,
        "{output}"
    );
    let findings = agent.wait_for_findings("both stops", |all| {
        runner
            .findings_of(all)
            .iter()
            .filter(|f| {
                rule(f) == "agent-tampering" && f["evidence"]["argument"].as_u64() == Some(19)
            })
            .count()
            >= 3
    });
    let stops: Vec<Value> = runner
        .findings_of(&findings)
        .into_iter()
        .filter(|f| rule(f) == "agent-tampering" && f["evidence"]["argument"].as_u64() == Some(19))
        .collect();
    let tools: Vec<&str> = stops
        .iter()
        .map(|f| f["process_chain"][0]["comm"].as_str().unwrap_or(""))
        .collect();
    assert!(tools.iter().any(|t| t.starts_with("python")), "{stops:#?}");
    assert!(tools.contains(&"kill32"), "{stops:#?}");
    // The process group's: bash's own `kill` of the negative pid.
    assert!(tools.contains(&"bash"), "{stops:#?}");
    assert!(stops
        .iter()
        .all(|f| f["severity"] == "critical" && f["step"]["id"] == "stop"));
    assert!(
        runner
            .findings_of(&findings)
            .iter()
            .all(|f| f["step"]["id"] != "twin"),
        "signalling one's own child is no tampering: {findings:#?}"
    );
}

/// `hooks: {fail_on: critical}`: the job-completed hook fails a job that raised a critical
/// finding (after writing its summary); a job with only a high one passes.
#[test]
fn a_profile_can_fail_the_job_on_critical_findings() {
    let agent = Agent::start_with_profile("version: 1\nhooks:\n  fail_on: critical\n");
    let twin = FakeRunner::outside_tmp();
    std::fs::write(
        twin.home.join(".npmrc"),
        format!("//r/:_authToken={CANARY}\n"),
    )
    .unwrap();
    let (ok, output) = twin.try_run_job_in(
        None,
        &[("high", "cat \"$HOME/.npmrc\" >/dev/null && echo read\n")],
        Some(&agent.control_socket),
    );
    assert!(
        ok && output.contains("read"),
        "a high finding does not fail the job: {output}"
    );
    let summary = std::fs::read_to_string(twin.step_summary()).unwrap_or_default();
    assert!(summary.contains("credential-read"), "{summary}");

    let runner = FakeRunner::outside_tmp();
    let (ok, output) = runner.try_run_job_in(
        None,
        &[(
            "dump",
            "cat /proc/$PPID/mem >/dev/null 2>&1 || true; echo dumped\n",
        )],
        Some(&agent.control_socket),
    );
    assert!(output.contains("dumped"), "{output}");
    assert!(
        !ok && output.contains("failing the job") && output.contains("critical"),
        "a critical finding fails the job: {output}"
    );
    let summary = std::fs::read_to_string(runner.step_summary()).unwrap_or_default();
    assert!(
        summary.contains("process-memory-read"),
        "the summary is written before the job fails: {summary}"
    );
}

/// A step asking the agent to end its own job again and again: every request is refused (and
/// each answered), but the agent's log gets at most a minute's budget of warnings, not one per
/// request (a job must not be able to fill the journal through the control socket).
#[test]
fn refused_control_requests_do_not_flood_the_agents_log() {
    let user = unprivileged_runner_user();
    let (agent, socket_dir) = agent_for_group(user.group);
    let socket = agent.control_socket.display().to_string();
    let runner = FakeRunner::as_user(&user);
    let key = format!("github/acme/app/{}/1/build", runner.run_id);
    let bin = monitor_bin().display().to_string();
    let requests = 45;
    let attack = format!(
        "for i in $(seq {requests}); do '{bin}' job stop --key '{key}' --socket '{socket}' 2>&1 || true; done\n"
    );
    let output = runner.run_job_with_hooks(&[("spam", &attack)], Some(&agent.control_socket));
    // The requests really reached the agent: each was answered with a refusal.
    assert_eq!(
        output.matches("Error: the agent refused").count(),
        requests,
        "{output}"
    );
    let logged = agent
        .log()
        .lines()
        .filter(|l| l.contains("control request refused"))
        .count();
    // `engine::log_budget::LINES_PER_WINDOW` lines a minute.
    assert_eq!(logged, 20, "{logged} refusal lines for {requests} requests");
    drop(agent);
    let _ = std::fs::remove_dir_all(socket_dir);
}
