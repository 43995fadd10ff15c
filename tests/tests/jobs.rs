//! Jobs bounded explicitly: the GitHub runner's job hooks and `monitor job start|stop` over the
//! control socket, with the real agent.

use std::process::Command;

use integration_tests::{
    monitor_bin, rule, sink, Agent, FakeRunner, Value, MARKER_STEP, STRICT_PROFILE,
};

fn events_of_kind(agent: &Agent, kind: &str) -> Vec<Value> {
    agent
        .events()
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

/// With the job hooks installed, the Worker anchors the job: what the Worker runs outside any
/// step, without the job's variables (setting up the job, fetching actions), is still the job's.
#[test]
fn runner_job_hooks_bound_the_job_at_the_worker() {
    let agent = Agent::start_with_profile(STRICT_PROFILE);
    let runner = FakeRunner::new();
    let port = sink();
    let named_port = sink();
    runner.run_job_with_hooks(
        &[
            (
                "named",
                &format!("exec 3<>/dev/tcp/127.0.0.1/{named_port}; exec 3>&-\n"),
            ),
            (
                "",
                &format!("exec 3<>/dev/tcp/127.0.0.1/{port}; exec 3>&-\n"),
            ),
        ],
        Some(&agent.control_socket),
    );
    let starts = events_of_kind(&agent, "job_start");
    let start = starts
        .iter()
        .find(|e| e["job"]["run_id"].as_str() == Some(runner.run_id.as_str()))
        .unwrap_or_else(|| {
            panic!(
                "no job_start event for this run: {starts:?}\n{}",
                agent.log()
            )
        });
    assert_eq!(
        start["process"]["comm"], "Runner.Worker",
        "anchored at the Worker: {start}"
    );
    assert_eq!(start["via"], "hook");
    let findings = agent.wait_for_findings("both connections", |all| {
        runner
            .findings_of(all)
            .iter()
            .filter(|f| rule(f) == "unexpected-egress")
            .count()
            == 2
    });
    let egress: Vec<Value> = runner
        .findings_of(&findings)
        .into_iter()
        .filter(|f| rule(f) == "unexpected-egress")
        .collect();
    let (named, egress): (Vec<Value>, Vec<Value>) = egress
        .into_iter()
        .partition(|f| f["evidence"]["port"].as_u64() == Some(named_port as u64));
    // The Worker forks, then the child execs the step with its variables: the step is named
    // at that exec although the child was first seen as the anchor's.
    assert_eq!(named[0]["step"]["id"], "named", "{named:?}");
    assert_eq!(egress[0]["evidence"]["port"].as_u64(), Some(port as u64));
    assert_eq!(egress[0]["job"]["name"], "build");
    assert_eq!(
        egress[0]["step"]["id"], "job",
        "outside any step: the job itself"
    );
    let ends = events_of_kind(&agent, "job_end");
    assert!(
        ends.iter().any(|e| e["job"]
            .as_str()
            .is_some_and(|k| k.contains(&runner.run_id))),
        "the job-completed hook ends the job: {ends:?}"
    );
}

/// Without the hooks the Worker's own work outside steps is nobody's: this is what they add.
#[test]
fn without_hooks_a_step_without_job_variables_is_not_attributed() {
    let agent = Agent::start_with_profile(STRICT_PROFILE);
    let runner = FakeRunner::new();
    let port = sink();
    runner.run_job(&[
        (
            "",
            &format!("exec 3<>/dev/tcp/127.0.0.1/{port}; exec 3>&-\n"),
        ),
        MARKER_STEP,
    ]);
    let mine = agent.findings_through_marker(&runner);
    let egress: Vec<&Value> = mine
        .iter()
        .filter(|f| rule(f) == "unexpected-egress")
        .collect();
    assert!(egress.is_empty(), "{egress:?}");
}

/// `monitor job start` from a CI shell nobody recognises: everything the shell runs until
/// `monitor job stop` is the job; what it runs after is not.
#[test]
fn explicit_jobs_start_and_stop_over_the_socket() {
    let agent = Agent::start_with_profile(STRICT_PROFILE);
    let port = sink();
    let after = sink();
    let socket = agent.control_socket.display().to_string();
    let id = format!("nightly-{}", std::process::id());
    let script = format!(
        "set -e\n\
         '{bin}' job start --id {id} --socket '{socket}'\n\
         bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}; exec 3>&-'\n\
         '{bin}' job stop --id {id} --socket '{socket}'\n\
         bash -c 'exec 3<>/dev/tcp/127.0.0.1/{after}; exec 3>&-'\n",
        bin = monitor_bin().display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(answer["job"]["key"], format!("explicit/{id}"));
    let mine = |all: &[Value]| -> Vec<Value> {
        all.iter()
            .filter(|f| f["job"]["key"] == format!("explicit/{id}"))
            .cloned()
            .collect()
    };
    let findings = agent.wait_for_findings("the job's egress", |all| !mine(all).is_empty());
    let found = mine(&findings);
    assert_eq!(found[0]["rule"], "unexpected-egress");
    assert_eq!(found[0]["evidence"]["port"].as_u64(), Some(port as u64));
    assert_eq!(found[0]["step"]["id"], "main");
    // The stop was processed in order with the kernel's events: the later connection is no
    // longer the job's. The agent has seen it once its connect event is in the log.
    agent.wait_for("the connection after the stop", |e| {
        e["kind"] == "connect" && e["port"].as_u64() == Some(after as u64)
    });
    std::thread::sleep(std::time::Duration::from_millis(700));
    let late: Vec<Value> = mine(&agent.findings())
        .into_iter()
        .filter(|f| f["evidence"]["port"].as_u64() == Some(after as u64))
        .collect();
    assert!(
        late.is_empty(),
        "after `job stop` nothing is the job's: {late:?}"
    );
}

/// The socket is root-only unless a group is given; a caller that is not root may anchor a job
/// only at itself or an ancestor; bad requests get a clear error.
#[test]
fn control_socket_is_least_privilege_and_refuses_bad_requests() {
    let agent = Agent::start_with_profile(STRICT_PROFILE);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&agent.control_socket)
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "owner-only without --control-group");
    let socket = agent.control_socket.to_str().unwrap();

    let out = monitor_output(&["job", "start", "--socket", socket]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no job identity"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = monitor_output(&[
        "job",
        "stop",
        "--key",
        "explicit/never-started",
        "--socket",
        socket,
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job explicit/never-started"));

    // A raw malformed request.
    use std::io::{BufRead as _, Write as _};
    let mut stream = std::os::unix::net::UnixStream::connect(&agent.control_socket).unwrap();
    stream.write_all(b"{\"op\":\"format_disk\"}\n").unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.contains("\"ok\":false") && line.contains("bad request"),
        "{line}"
    );

    // An unprivileged caller in the socket's group cannot anchor a job at a process that is not
    // its own ancestor (here a sibling).
    let group_agent = Agent::start_with(&["--control-group", "nogroup"]);
    drop(agent);
    let dir = group_agent.dir.path();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    let bin_copy = dir.join("monitor-client");
    std::fs::copy(monitor_bin(), &bin_copy).unwrap();
    let mut sibling = Command::new("sleep").arg("30").spawn().unwrap();
    let as_nobody = |pid: u32| {
        Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(&bin_copy)
            .args([
                "job",
                "start",
                "--id",
                "x",
                "--pid",
                &pid.to_string(),
                "--socket",
            ])
            .arg(&group_agent.control_socket)
            .output()
            .unwrap()
    };
    let out = as_nobody(sibling.id());
    let _ = sibling.kill();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not the caller or one of its ancestors"),
        "{err}"
    );
    // Its own ancestor, but another user's process (the test, root's), is refused too: a job
    // anchored there would take in what that user runs.
    let out = as_nobody(std::process::id());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("belongs to another user"),
        "{err}"
    );
    // Its own process is fine.
    let out = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "sh",
            "-c",
        ])
        .arg("exec \"$0\" job start --id self-anchored --pid $$ --socket \"$1\"")
        .arg(&bin_copy)
        .arg(&group_agent.control_socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A GitLab Runner shell executor: `gitlab-runner` starts a bash whose generated script exports
/// the job's `CI_*` variables and then runs the job's commands, so the commands (not the bash)
/// are the first processes carrying the job's identity.
#[test]
fn gitlab_shell_executor_jobs_are_attributed_from_ci_variables() {
    let agent = Agent::start_with_profile(STRICT_PROFILE);
    let dir = tempfile::tempdir().unwrap();
    let runner = dir.path().join("gitlab-runner");
    std::fs::copy("/bin/bash", &runner).unwrap();
    let job_id = format!(
        "{}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let port = sink();
    let script = format!(
        "export CI_JOB_ID={job_id} CI_JOB_NAME=unit-tests CI_JOB_STAGE=test CI_PIPELINE_ID=77 CI_PROJECT_PATH=group/app CI_PROJECT_DIR={dir}\n\
         bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}; exec 3>&-'\n",
        dir = dir.path().display()
    );
    let out = Command::new(&runner)
        .args([
            "-c",
            &format!("echo \"$0\" >/dev/null; bash <<'SCRIPT'\n{script}SCRIPT\n"),
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let findings = agent.wait_for_findings("the GitLab job's egress", |all| {
        all.iter().any(|f| {
            f["job"]["key"]
                .as_str()
                .is_some_and(|k| k.ends_with(&format!("/{job_id}")))
        })
    });
    let f = findings
        .iter()
        .find(|f| {
            f["job"]["key"]
                .as_str()
                .is_some_and(|k| k.ends_with(&format!("/{job_id}")))
        })
        .unwrap();
    assert_eq!(f["job"]["provider"], "gitlab");
    assert_eq!(f["job"]["name"], "unit-tests");
    assert_eq!(f["job"]["repository"], "group/app");
    assert_eq!(f["rule"], "unexpected-egress");
    assert_eq!(f["evidence"]["port"].as_u64(), Some(port as u64));
}

/// Runs the monitor CLI and returns its output, successful or not.
fn monitor_output(args: &[&str]) -> std::process::Output {
    Command::new(monitor_bin()).args(args).output().unwrap()
}

/// A runner hook never fails the user's job because the monitor is down, unless told to.
#[test]
fn hooks_fail_open_unless_asked_to_fail_closed() {
    let missing = tempfile::tempdir().unwrap();
    let socket = missing.path().join("no-agent.sock");
    let socket = socket.to_str().unwrap();
    let open = monitor_output(&["hook", "job-started", "--socket", socket]);
    assert!(
        open.status.success(),
        "fail open: {}",
        String::from_utf8_lossy(&open.stderr)
    );
    assert!(String::from_utf8_lossy(&open.stderr).contains("continues unmonitored"));
    let closed = monitor_output(&["hook", "job-completed", "--socket", socket, "--fail-closed"]);
    assert!(!closed.status.success(), "--fail-closed fails the job");
    // Or the profile asks for it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yml"),
        "version: 1\nhooks:\n  fail_closed: true\n",
    )
    .unwrap();
    let config = dir.path().join("monitor.yml");
    std::fs::write(&config, "version: 1\nprofile: p.yml\n").unwrap();
    let asked = monitor_output(&[
        "hook",
        "job-started",
        "--socket",
        socket,
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(
        !asked.status.success(),
        "the profile's hooks.fail_closed fails the job"
    );
}

/// SIGHUP reloads the profile without a restart: what was a finding is allowed after the
/// reload; a broken profile is refused with its location and the agent keeps the old one.
#[test]
fn sighup_reloads_the_profile_and_refuses_a_broken_one() {
    let agent = Agent::start_with_profile(STRICT_PROFILE);
    let path = agent.profile_path.clone().unwrap();
    let port = sink();
    assert_eq!(egress_findings(&agent, &FakeRunner::new(), port), 1);

    let allow = format!("version: 1\negress:\n  allow:\n    - 127.0.0.1:{port}\n");
    std::fs::write(&path, allow).unwrap();
    agent.hangup_and_wait("profile reloaded");
    assert_eq!(
        egress_findings(&agent, &FakeRunner::new(), port),
        0,
        "allowed after the reload"
    );

    std::fs::write(&path, "version: 1\negress:\n  alow: []\n").unwrap();
    agent.hangup_and_wait("reload refused");
    let log = agent.log();
    assert!(
        log.contains(":3:3: ") && log.contains("unknown field `alow`"),
        "{log}"
    );
    // Still running, still with the reloaded profile.
    assert_eq!(
        egress_findings(&agent, &FakeRunner::new(), port),
        0,
        "the good profile stays"
    );
    let metrics = agent.scrape();
    assert!(
        metrics.contains("monitor_profile_reloads_total{result=\"refused\"} 1"),
        "{metrics}"
    );
}

/// A configuration file picks a profile per repository: the same job is allowed its egress in
/// the repository whose profile allows it, and reported in any other.
#[test]
fn a_configuration_file_picks_the_profile_per_repository() {
    let port = sink();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("strict.yml"), STRICT_PROFILE).unwrap();
    std::fs::write(
        dir.path().join("app.yml"),
        format!("version: 1\negress:\n  allow:\n    - 127.0.0.1:{port}\n"),
    )
    .unwrap();
    let config = dir.path().join("monitor.yml");
    std::fs::write(
        &config,
        "version: 1\nprofile: strict.yml\nprofiles:\n  - { repository: \"acme/*\", profile: app.yml }\n",
    )
    .unwrap();
    let checked = monitor_output(&["config", "check", config.to_str().unwrap()]);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let agent = Agent::start_with(&["--config", config.to_str().unwrap()]);
    assert_eq!(
        egress_findings(&agent, &FakeRunner::new(), port),
        0,
        "acme/app's profile allows it"
    );
    let mut other = FakeRunner::new();
    other.repository = "someone/else".into();
    assert_eq!(
        egress_findings(&agent, &other, port),
        1,
        "the default profile does not"
    );

    // A broken configuration is refused with where and why.
    std::fs::write(
        &config,
        "version: 1\nprofiles:\n  - { repo: x, profile: app.yml }\n",
    )
    .unwrap();
    let refused = monitor_output(&["config", "check", config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && err.contains("monitor.yml:3:")
            && err.contains("unknown field `repo`"),
        "{err}"
    );
}

/// Runs one job that connects to `port`, and counts its unexpected-egress findings.
fn egress_findings(agent: &Agent, runner: &FakeRunner, port: u16) -> usize {
    let connect = format!("exec 3<>/dev/tcp/127.0.0.1/{port}; exec 3>&-\n");
    runner.run_job(&[("call", &connect), MARKER_STEP]);
    let found = agent.findings_through_marker(runner);
    found
        .iter()
        .filter(|f| rule(f) == "unexpected-egress")
        .count()
}
