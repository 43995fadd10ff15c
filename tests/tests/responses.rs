//! Kill responses (`responses:` in a profile): the kernel kills a job's process at the open that
//! would hand it another process's memory or environment, or a credential to install-time code,
//! before it can read a byte, at process_vm_readv of another process's memory, and at a signal
//! to the agent or bpf(2); the finding says `killed`. The benign twins (`ps aux`, a step
//! reading its own child's environment, npm reading its own `.npmrc`, a harmless install
//! script, the Worker itself, the project's own build script) live on. Install-time code is
//! marked by the kernel at its exec, so a hook that reads at once is killed too (npm-family
//! scripts, cargo build scripts and pip builds of dependencies). Rehearsed, the same attacks
//! succeed (proving they are real) and the findings say `would_kill`.
//!
//! Each test's agent applies its profile to its own repository only (a configuration file), so
//! the other tests' jobs, which every agent sees, are judged by the default profile.

use std::path::Path;

use integration_tests::{npm_package, remove_tree, sample, Agent, FakeRunner, PinDir, Value};

const CANARY_ENV: &str = "WORKER_SECRET_CANARYcanary4242";
const CANARY_NPM: &str = "npm_CANARYtokenCANARYtoken00000000000000";

fn agent_for(repository: &str, responses: &str) -> (Agent, tempfile::TempDir) {
    agent_with(repository, responses, &[])
}

/// An agent whose profile for `repository` has `responses`, started with `extra` arguments.
fn agent_with(repository: &str, responses: &str, extra: &[&str]) -> (Agent, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("respond.yml"),
        format!("version: 1\nresponses:\n{responses}"),
    )
    .unwrap();
    let config = dir.path().join("monitor.yml");
    std::fs::write(
        &config,
        format!(
            "version: 1\nprofiles:\n  - {{ repository: \"{repository}\", profile: respond.yml }}\n"
        ),
    )
    .unwrap();
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    let agent = Agent::start_with(&args);
    (agent, dir)
}

fn runner(repository: &str) -> FakeRunner {
    let mut runner = FakeRunner::outside_tmp();
    runner.repository = repository.into();
    runner
        .worker_env
        .push(("ACTIONS_RUNTIME_TOKEN".into(), CANARY_ENV.into()));
    std::fs::write(
        runner.home.join(".npmrc"),
        format!("//registry.example.invalid/:_authToken={CANARY_NPM}\n"),
    )
    .unwrap();
    runner
}

/// The evil package (its postinstall copies `~/.npmrc` to `stolen`) and a harmless one.
fn packages(runner: &FakeRunner, stolen: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let steal = format!(
        "const fs=require('fs'),os=require('os');\
         fs.writeFileSync({:?},fs.readFileSync(os.homedir()+'/.npmrc','utf8'));",
        stolen.display()
    );
    let evil = runner.evil_npm_package(&steal);
    let harmless = npm_package(
        runner.dir.path(),
        "harmless-pkg",
        r#""postinstall":"node -e \"console.log('built')\"""#,
        &[],
    );
    (evil, harmless)
}

fn statuses(out: &Path) -> String {
    std::fs::read_to_string(out.join("status")).unwrap_or_default()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The job's findings with a kernel response.
fn responded(runner: &FakeRunner, all: &[Value]) -> Vec<Value> {
    runner
        .findings_of(all)
        .into_iter()
        .filter(|f| f.get("response").is_some())
        .collect()
}

#[test]
fn kill_responses_end_the_theft_before_a_byte_is_read_and_spare_the_twins() {
    let repository = "acme/kill";
    let (agent, _config) = agent_for(
        repository,
        "  process-memory-read: kill\n  process-environ-read: kill\n  credential-read: kill\n  agent-tampering: kill\n",
    );
    let agent_pid = agent.pid();
    let runner = runner(repository);
    let out = runner.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let stolen = runner.dir.path().join("stolen");
    let (evil, harmless) = packages(&runner, &stolen);
    let o = out.display();
    let npm = "npm install --offline --no-audit --no-fund";
    // The job-started hook has the agent learn the job (and the kernel its Worker) before
    // the first step.
    runner.run_job_with_hooks(
        &[
            // The Worker's environment, memory map and memory (the Worker is the step's parent).
            (
                "environ",
                &format!("cat /proc/$PPID/environ > {o}/environ.txt || echo \"environ $?\" >> {o}/status\n"),
            ),
            (
                "maps",
                &format!("cat /proc/$PPID/maps > {o}/maps.txt || echo \"maps $?\" >> {o}/status\n"),
            ),
            (
                "mem",
                &format!(
                    "python3 -c \"import sys; open('/proc/%s/mem' % sys.argv[1], 'rb'); print('opened')\" $PPID > {o}/mem.txt || echo \"mem $?\" >> {o}/status\n"
                ),
            ),
            // The same memory by another route than /proc: process_vm_readv (x86_64 syscall 310).
            (
                "vm-readv",
                &format!(
                    "python3 -c \"import ctypes, sys\n\
    buf = ctypes.create_string_buffer(64)\n\
    local = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 64)\n\
    remote = (ctypes.c_void_p * 2)(0x400000, 64)\n\
    ctypes.CDLL(None).syscall(310, int(sys.argv[1]), local, 1, remote, 1, 0)\n\
    print('returned')\" $PPID > {o}/vm.txt || echo \"vm $?\" >> {o}/status\n"
                ),
            ),
            // Tampering: a signal to the agent (SIGCONT: harmless to it), and bpf(2) (syscall 321).
            (
                "signal",
                &format!("/bin/kill -CONT {agent_pid} || echo \"signal $?\" >> {o}/status\n"),
            ),
            (
                "bpf",
                &format!(
                    "python3 -c \"import ctypes; ctypes.CDLL(None).syscall(321, 0, None, 0); print('returned')\" > {o}/bpf.txt || echo \"bpf $?\" >> {o}/status\n"
                ),
            ),
            // A process lister asked to print environments is not spared.
            (
                "ps-environments",
                &format!("ps eww -p $PPID > {o}/pse.txt || echo \"pse $?\" >> {o}/status\n"),
            ),
            // Nor one made to load someone's code.
            (
                "ps-preloaded",
                &format!(
                    "LD_PRELOAD=/lib/x86_64-linux-gnu/libc.so.6 ps aux > {o}/pspre.txt || echo \"pspre $?\" >> {o}/status\n"
                ),
            ),
            // Twins: a listing, the job's own child's environment, its own, its own thread's.
            (
                "twins",
                &format!(
                    "ps aux > {o}/ps.txt; echo \"ps $?\" >> {o}/status\n\
                     sleep 5 & child=$!\n\
                     cat /proc/$child/environ > /dev/null; echo \"child $?\" >> {o}/status\n\
                     kill $child\n\
                     cat /proc/self/environ > /dev/null; echo \"self $?\" >> {o}/status\n\
                     python3 -c \"import threading, time\n\
    t = threading.Thread(target=time.sleep, args=(3,)); t.start(); time.sleep(0.3)\n\
    open('/proc/%d/environ' % t.native_id, 'rb').read()\" \
                     && echo \"sibling 0\" >> {o}/status || echo \"sibling $?\" >> {o}/status\n"
                ),
            ),
            // npm reads its own .npmrc; a harmless install script runs; then the thief.
            (
                "npm-harmless",
                &format!("{npm} --foreground-scripts {} > {o}/npm-harmless.txt 2>&1; echo \"npm-harmless $?\" >> {o}/status\n", harmless.display()),
            ),
            (
                "npm-evil",
                &format!("{npm} {} > {o}/npm-evil.txt 2>&1 || echo \"npm-evil $?\" >> {o}/status\n", evil.display()),
            ),
            // The Worker itself opens another process's environment: never killed.
            ("@worker", "read -r -d '' _ < /proc/1/environ || true\n"),
            ("after", &format!("echo alive >> {o}/status\n")),
        ],
        Some(&agent.control_socket),
    );

    let status = statuses(&out);
    // Killed (128 + SIGKILL) at the open, before reading: nothing reached their output.
    for killed in [
        "environ 137",
        "maps 137",
        "mem 137",
        "vm 137",
        "signal 137",
        "bpf 137",
        "pse 137",
        "pspre 137",
    ] {
        assert!(
            status.contains(killed),
            "{killed}: {status}\n{}",
            read(&out.join("pse.txt"))
        );
    }
    assert!(!read(&out.join("environ.txt")).contains(CANARY_ENV));
    assert!(read(&out.join("maps.txt")).is_empty(), "maps printed");
    assert!(!read(&out.join("mem.txt")).contains("opened"));
    assert!(!read(&out.join("vm.txt")).contains("returned"));
    assert!(!read(&out.join("bpf.txt")).contains("returned"));
    assert!(!read(&out.join("pse.txt")).contains(CANARY_ENV));
    // The thief died in npm's postinstall; npm itself lived to report it (and exits with its
    // script's status), and the kill was the hook's (below).
    assert!(!stolen.exists(), "the hook copied the token");
    let npm_evil = read(&out.join("npm-evil.txt"));
    assert!(
        status.contains("npm-evil ") && npm_evil.contains("npm error"),
        "npm reports its script failed: {status}\n{npm_evil}"
    );
    // The twins lived.
    // (A sibling thread's `/proc/<tid>` is its own process's.)
    for alive in [
        "ps 0",
        "child 0",
        "self 0",
        "sibling 0",
        "npm-harmless 0",
        "alive",
    ] {
        assert!(status.contains(alive), "{alive}: {status}");
    }
    assert!(read(&out.join("npm-harmless.txt")).contains("built"));

    let findings = agent.wait_for_findings("the kills", |all| responded(&runner, all).len() >= 9);
    let kills = responded(&runner, &findings);
    for f in &kills {
        assert_eq!(f["response"], "killed", "{f:#}");
    }
    let by = |rule: &str, tool: &str| {
        kills
            .iter()
            .filter(|f| f["rule"] == rule && f["process_chain"][0]["comm"] == tool)
            .count()
    };
    assert_eq!(by("process-environ-read", "cat"), 1, "{kills:#?}");
    assert_eq!(
        by("process-environ-read", "ps"),
        2,
        "`ps e` and a preloaded ps: {kills:#?}"
    );
    assert_eq!(by("process-memory-read", "cat"), 1, "{kills:#?}");
    assert_eq!(
        by("process-memory-read", "python3"),
        2,
        "/proc and process_vm_readv: {kills:#?}"
    );
    assert_eq!(by("agent-tampering", "kill"), 1, "{kills:#?}");
    assert_eq!(by("agent-tampering", "python3"), 1, "{kills:#?}");
    let credential: Vec<_> = kills
        .iter()
        .filter(|f| f["rule"] == "credential-read")
        .collect();
    assert_eq!(credential.len(), 1, "{kills:#?}");
    assert_eq!(credential[0]["hook"]["package"], "evil-pkg");
    assert_eq!(kills.len(), 9, "nothing else was killed: {kills:#?}");
    // The Worker's own read is not a kill.
    assert!(kills
        .iter()
        .all(|f| f["process_chain"][0]["comm"] != "Runner.Worker"));

    let metrics = agent.scrape();
    assert!(
        sample(
            &metrics,
            "monitor_responses_total{response=\"killed\",rule=\"process-memory-read\"}"
        )
        .is_some_and(|v| v >= 3.0),
        "{metrics}"
    );
    assert!(
        agent.log().contains("kill responses"),
        "the start-up log names the mechanism: {}",
        agent.log()
    );
    // The job's report says what was killed, first in the row.
    agent.wait_for_report(&runner);
    let report = read(&agent.report_path(&runner).unwrap().with_extension("md"));
    assert!(report.contains("| **killed** "), "{report}");
}

#[test]
fn rehearsed_responses_kill_nothing_and_say_what_they_would_have_killed() {
    let repository = "acme/rehearse";
    let (agent, config) = agent_for(
        repository,
        "  rehearse: true\n  process-environ-read: kill\n  credential-read: kill\n",
    );
    let runner = runner(repository);
    let out = runner.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let stolen = runner.dir.path().join("stolen");
    let (evil, _) = packages(&runner, &stolen);
    let o = out.display();
    runner.run_job_with_hooks(
        &[
            (
                "environ",
                &format!("cat /proc/$PPID/environ > {o}/environ.txt; echo \"environ $?\" >> {o}/status\n"),
            ),
            (
                "npm-evil",
                &format!(
                    "npm install --offline --no-audit --no-fund {} > {o}/npm-evil.txt 2>&1; echo \"npm-evil $?\" >> {o}/status\n",
                    evil.display()
                ),
            ),
        ],
        Some(&agent.control_socket),
    );
    // The attacks really happened: the Worker's secret and the token were read.
    let status = statuses(&out);
    assert!(
        status.contains("environ 0") && status.contains("npm-evil 0"),
        "{status}"
    );
    assert!(read(&out.join("environ.txt")).contains(CANARY_ENV));
    assert!(
        read(&stolen).contains(CANARY_NPM),
        "the hook copied the token"
    );

    let findings = agent.wait_for_findings("the rehearsed kills", |all| {
        responded(&runner, all).len() >= 2
    });
    let rehearsed = responded(&runner, &findings);
    assert_eq!(rehearsed.len(), 2, "{rehearsed:#?}");
    for f in &rehearsed {
        assert_eq!(f["response"], "would_kill", "{f:#}");
    }
    assert!(rehearsed
        .iter()
        .any(|f| f["rule"] == "process-environ-read" && f["process_chain"][0]["comm"] == "cat"));
    assert!(rehearsed
        .iter()
        .any(|f| f["rule"] == "credential-read" && f["hook"]["package"] == "evil-pkg"));

    // `profile diff` over the recorded run, with a profile that kills memory reads too: the
    // rehearsed kills and the ones the profile would add are marked.
    let kills = config.path().join("kills.yml");
    std::fs::write(
        &kills,
        "version: 1\nresponses:\n  process-memory-read: kill\n  process-environ-read: kill\n",
    )
    .unwrap();
    let mut args = vec![
        "profile".to_string(),
        "diff".into(),
        "--profile".into(),
        kills.display().to_string(),
    ];
    args.extend(agent.event_logs().iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let diff = integration_tests::monitor_cli(&args);
    let environ_line = diff.lines().find(|l| {
        l.contains("process-environ-read") && l.contains("/proc/") && l.contains("[would kill]")
    });
    assert!(environ_line.is_some(), "{diff}");
}

/// Waits (up to 30 s) for `path` to exist.
fn wait_for_file(path: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn enforcement_outlives_a_killed_agent_is_taken_over_and_released_on_request() {
    let repository = "acme/outlive";
    let pins = PinDir::new("outlive");
    let responses = "  process-environ-read: kill\n";
    let (mut first, config) = agent_with(repository, responses, &["--pin-dir", pins.arg()]);
    let config_path = config.path().join("monitor.yml");
    let runner = runner(repository);
    let out = runner.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let o = out.display().to_string();
    // Each attempt waits for the test's word (a file), then reads the Worker's environment.
    let attempt = |name: &str, gate: &str| {
        format!(
            "touch {o}/waiting-{name}\n\
             while [ ! -e {o}/{gate} ]; do sleep 0.05; done\n\
             if cat /proc/$PPID/environ > {o}/{name}.txt; then echo \"{name} 0\" >> {o}/status; \
             else echo \"{name} $?\" >> {o}/status; fi\n\
             touch {o}/done-{name}\n"
        )
    };
    let steps: Vec<(String, String)> = vec![
        ("while-dead".into(), attempt("dead", "go-dead")),
        ("taken-over".into(), attempt("taken", "go-taken")),
        ("released".into(), attempt("released", "go-released")),
    ];
    // The job-started hook has the first agent learn the job before the first step; the
    // completed hook finds no agent there at the end, and the job goes on (hooks fail open).
    let socket = first.control_socket.clone();
    let job = std::thread::spawn(move || {
        let steps: Vec<(&str, &str)> = steps
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        runner.run_job_with_hooks(&steps, Some(&socket));
        runner
    });

    // The agent is killed while the job runs: nothing is left to read the ring, yet the
    // kernel still kills the theft.
    wait_for_file(&out.join("waiting-dead"));
    let first_pid = first.pid();
    // First, as root in a step would to end enforcement with the agent, its pins are removed:
    // the agent pins them again within a tick (else the kill below would end enforcement,
    // and the theft would succeed).
    let mine = pins.0.join(format!("enforcement-{first_pid}"));
    let pinned = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = ["maps", "links"]
            .iter()
            .flat_map(|sub| {
                std::fs::read_dir(dir.join(sub))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(move |e| format!("{sub}/{}", e.file_name().to_string_lossy()))
            })
            .collect();
        names.sort();
        names
    };
    let before = pinned(&mine);
    assert!(
        before.iter().any(|n| n.starts_with("links/"))
            && before.iter().any(|n| n.starts_with("maps/")),
        "{before:?}"
    );
    remove_tree(&mine);
    assert!(!mine.exists());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pinned(&mine) != before {
        assert!(
            std::time::Instant::now() < deadline,
            "pins not restored: {:?} of {before:?}",
            pinned(&mine)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        integration_tests::sample(&first.scrape(), "monitor_enforcement_unpinned_total")
            .unwrap_or(0.0)
            >= before.len() as f64
    );
    unsafe { libc::kill(first_pid as i32, libc::SIGKILL) };
    first.wait_for_exit();
    assert_eq!(
        pins.enforcement_dirs(),
        vec![format!("enforcement-{first_pid}")]
    );
    std::fs::write(out.join("go-dead"), "").unwrap();
    wait_for_file(&out.join("done-dead"));
    let status = statuses(&out);
    assert!(
        status.contains("dead 137"),
        "killed with no agent running: {status}"
    );
    assert!(!read(&out.join("dead.txt")).contains(CANARY_ENV));

    // The next agent takes the enforcement over (the dead one's maps, its own programs).
    let mut second = Agent::start_with(&[
        "--config",
        config_path.to_str().unwrap(),
        "--pin-dir",
        pins.arg(),
    ]);
    assert!(
        second.log().contains(&format!(
            "taken over from the agent that was pid {first_pid}"
        )),
        "{}",
        second.log()
    );
    assert_eq!(
        pins.enforcement_dirs(),
        vec![format!("enforcement-{}", second.pid())]
    );
    wait_for_file(&out.join("waiting-taken"));
    std::fs::write(out.join("go-taken"), "").unwrap();
    wait_for_file(&out.join("done-taken"));
    assert!(statuses(&out).contains("taken 137"), "{}", statuses(&out));
    second.stop();

    // An agent started with --release-enforcement removes what the stopped one left, and
    // pins nothing of its own; once it stops too, the theft is no longer killed.
    let mut third = Agent::start_with(&[
        "--config",
        config_path.to_str().unwrap(),
        "--pin-dir",
        pins.arg(),
        "--release-enforcement",
    ]);
    assert!(
        pins.enforcement_dirs().is_empty(),
        "{:?}",
        pins.enforcement_dirs()
    );
    third.stop();
    wait_for_file(&out.join("waiting-released"));
    std::fs::write(out.join("go-released"), "").unwrap();
    let runner = job.join().expect("the job");
    let status = statuses(&out);
    assert!(status.contains("released 0"), "{status}");
    assert!(
        read(&out.join("released.txt")).contains(CANARY_ENV),
        "the attack works once enforcement is released (so the kills above were the pins')"
    );
    let _ = runner;
}

/// A dependency's postinstall drops a program in /tmp and runs it (the npm worm's shape): the
/// kernel kills the process at its exec, before the program's first instruction (the program,
/// a copy of `touch`, would have made a file). Twins that run: the same script running a
/// program it unpacked into its own package directory (esbuild's shape) and a system program,
/// and the job's own step running the dropped program (reported, not killed).
#[test]
fn a_lifecycle_script_running_what_it_dropped_is_killed_before_it_runs() {
    let repository = "acme/dropper";
    let (agent, _config) = agent_for(repository, "  exec-of-job-written-file: kill\n");
    let runner = runner(repository);
    let out = runner.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // Where droppers put what they fetch (the runner's own directory is outside /tmp).
    let drop = tempfile::Builder::new()
        .prefix("monitor-drop-")
        .tempdir_in("/tmp")
        .unwrap();
    let (o, d) = (out.display(), drop.path().display());
    let dropper = format!(
        "const fs=require('fs'),cp=require('child_process');\n\
         const run=(name,program)=>{{try{{cp.execFileSync(program,['{o}/'+name+'-ran']);\
         fs.appendFileSync('{o}/status',name+' 0\\n')}}catch(e){{\
         fs.appendFileSync('{o}/status',name+' '+(e.signal||e.status)+'\\n')}}}};\n\
         fs.copyFileSync('/usr/bin/touch','{d}/payload');fs.chmodSync('{d}/payload',0o755);\n\
         fs.copyFileSync('/usr/bin/touch','unpacked');fs.chmodSync('unpacked',0o755);\n\
         run('unpacked','./unpacked');\n\
         run('system','/usr/bin/touch');\n\
         run('payload','{d}/payload');\n"
    );
    let tgz = npm_package(
        runner.dir.path(),
        "dropper-pkg",
        r#""postinstall":"node drop.js""#,
        &[("drop.js", &dropper)],
    );
    std::fs::write(
        runner.workspace.join("package.json"),
        r#"{"name":"app","version":"1.0.0"}"#,
    )
    .unwrap();
    let npm = "npm install --offline --no-audit --no-fund";
    runner.run_job_with_hooks(
        &[
            (
                "install",
                &format!(
                    "{npm} {} > {o}/npm.txt 2>&1; echo \"npm $?\" >> {o}/status\n",
                    tgz.display()
                ),
            ),
            // The job's own step runs the same program: reported, not killed.
            (
                "step",
                &format!("{d}/payload {o}/step-ran; echo \"step $?\" >> {o}/status\n"),
            ),
        ],
        Some(&agent.control_socket),
    );
    let status = statuses(&out);
    // The attack was real: the program was written, executable, and its exec was asked for.
    let payload = drop.path().join("payload");
    assert!(
        payload.exists(),
        "the dropper wrote nothing: {status}\n{}",
        read(&out.join("npm.txt"))
    );
    assert!(
        status.contains("payload SIGKILL"),
        "killed at exec: {status}\n{}",
        read(&out.join("npm.txt"))
    );
    assert!(!out.join("payload-ran").exists(), "the dropped program ran");
    for alive in ["unpacked 0", "system 0", "step 0"] {
        assert!(status.contains(alive), "{alive}: {status}");
    }
    for ran in ["unpacked-ran", "system-ran", "step-ran"] {
        assert!(out.join(ran).exists(), "{ran}: {status}");
    }

    // The step's run is judged after the kill: wait for both before looking (the engine may
    // write them in separate batches).
    let steps_run = |all: &[Value]| {
        runner.findings_of(all).iter().any(|f| {
            f["step"]["id"] == "step"
                && (f["rule"] == "exec-from-temp" || f["rule"] == "exec-of-job-written-file")
        })
    };
    let findings = agent.wait_for_findings("the kill and the step's run", |all| {
        !responded(&runner, all).is_empty() && steps_run(all)
    });
    let kills = responded(&runner, &findings);
    assert!(!kills.is_empty(), "{findings:#?}");
    for f in &kills {
        assert_eq!(f["response"], "killed", "{f:#}");
        assert_eq!(f["step"]["id"], "install", "{f:#}");
        assert_eq!(f["hook"]["package"], "dropper-pkg", "{f:#}");
        assert!(
            f["process_chain"][0]["argv"]
                .to_string()
                .contains("payload"),
            "{f:#}"
        );
    }
    // The step's run of the same program is a finding, without a kill.
    let mine = runner.findings_of(&findings);
    assert!(
        mine.iter().any(|f| f["step"]["id"] == "step"
            && (f["rule"] == "exec-from-temp" || f["rule"] == "exec-of-job-written-file")
            && f.get("response").is_none()),
        "{mine:#?}"
    );
    assert!(
        !mine.iter().any(|f| f["process_chain"][0]["argv"]
            .to_string()
            .contains("unpacked")
            && f.get("response").is_some()),
        "{mine:#?}"
    );
}

/// A dependency's cargo build script and a pip build of a dependency that read `~/.npmrc` as
/// their first act: the kernel marks them install-time code at their exec (cargo starts a build
/// script in its crate's directory, here under the registry's sources; pip builds in the
/// directory it unpacked the requirement into), so the kill does not wait for the agent to
/// read the exec, which such a hook outruns. Twins: the project's own build script reading the
/// same file is not install-time code (reported, not killed), and a dependency's build script
/// that reads nothing of the kind builds.
#[test]
fn build_hooks_reading_a_credential_at_once_are_killed_before_a_byte_is_read() {
    let repository = "acme/build-hooks";
    let (agent, _config) = agent_for(repository, "  credential-read: kill\n");
    let runner = runner(repository);
    let out = runner.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let o = out.display();
    let write = |path: &Path, text: &str| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    let crate_toml = |name: &str, deps: &str| {
        format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n{deps}")
    };
    // The build script copies the token to a file named by its crate, then fails loudly
    // if it got that far.
    let steal_rs = |sink: &str| {
        format!(
            "fn main() {{\n    let home = std::env::var(\"HOME\").unwrap();\n    \
             let token = std::fs::read_to_string(format!(\"{{home}}/.npmrc\")).unwrap_or_default();\n    \
             std::fs::write(\"{o}/{sink}\", token).unwrap();\n}}\n"
        )
    };
    // A crate as cargo unpacks one from a registry, used by path (nothing is fetched).
    let registry = runner
        .home
        .join(".cargo/registry/src/index.example-0123456789abcdef");
    let evil = registry.join("evil-build-0.1.0");
    write(&evil.join("Cargo.toml"), &crate_toml("evil-build", ""));
    write(&evil.join("build.rs"), &steal_rs("cargo-stolen"));
    write(&evil.join("src/lib.rs"), "pub fn f() {}\n");
    let plain = registry.join("plain-build-0.1.0");
    write(&plain.join("Cargo.toml"), &crate_toml("plain-build", ""));
    write(
        &plain.join("build.rs"),
        "fn main() { println!(\"cargo:rustc-env=PLAIN=1\"); }\n",
    );
    write(&plain.join("src/lib.rs"), "pub fn g() {}\n");
    let project = |dir: &Path, dep: &Path, dep_name: &str, name: &str| {
        let deps = format!(
            "dep = {{ path = \"{}\", package = \"{dep_name}\" }}\n",
            dep.display()
        );
        write(&dir.join("Cargo.toml"), &crate_toml(name, &deps));
        write(&dir.join("src/main.rs"), "fn main() {}\n");
    };
    let thief = runner.workspace.join("thief");
    project(&thief, &evil, "evil-build", "thief");
    // The twin project's own build script reads the token too: its own code, not a dependency's.
    let honest = runner.workspace.join("honest");
    project(&honest, &plain, "plain-build", "honest");
    write(&honest.join("build.rs"), &steal_rs("own-read"));

    // A Python package whose setup.py copies the token, installed by name from a local index.
    let index = runner.dir.path().join("index");
    let sdist = runner.dir.path().join("evil-build-py-0.1");
    write(
        &sdist.join("setup.py"),
        &format!(
            "import os\ntoken = open(os.path.expanduser('~/.npmrc')).read()\nopen('{o}/pip-stolen', 'w').write(token)\n\
             from setuptools import setup\nsetup(name='evil-build-py', version='0.1')\n"
        ),
    );
    std::fs::create_dir_all(&index).unwrap();
    let status = std::process::Command::new("tar")
        .arg("-czf")
        .arg(index.join("evil-build-py-0.1.tar.gz"))
        .arg("-C")
        .arg(runner.dir.path())
        .arg("evil-build-py-0.1")
        .status()
        .unwrap();
    assert!(status.success(), "tar of the sdist");

    let cargo = "RUSTUP_HOME=/root/.rustup CARGO_HOME=$HOME/.cargo PATH=/root/.cargo/bin:$PATH \
                 cargo build --offline --quiet";
    runner.run_job_with_hooks(
        &[
            (
                "cargo-evil",
                &format!(
                    "{cargo} --manifest-path {}/Cargo.toml > {o}/cargo-evil.txt 2>&1 || echo \"cargo-evil $?\" >> {o}/status\n",
                    thief.display()
                ),
            ),
            (
                "pip-evil",
                &format!(
                    "python3 -m pip install --no-index --find-links {} --no-build-isolation --target {o}/site \
                     evil-build-py > {o}/pip-evil.txt 2>&1 || echo \"pip-evil $?\" >> {o}/status\n",
                    index.display()
                ),
            ),
            (
                "cargo-honest",
                &format!(
                    "{cargo} --manifest-path {}/Cargo.toml > {o}/cargo-honest.txt 2>&1 && echo \"cargo-honest 0\" >> {o}/status\n",
                    honest.display()
                ),
            ),
        ],
        Some(&agent.control_socket),
    );

    let status = statuses(&out);
    // The attacks were really made: the build scripts ran (cargo and pip report a failed
    // build), and were killed before they had the token.
    let cargo_evil = read(&out.join("cargo-evil.txt"));
    assert!(
        status.contains("cargo-evil 101") && cargo_evil.contains("evil-build"),
        "cargo reports the dependency's build script failed: {status}\n{cargo_evil}"
    );
    assert!(
        cargo_evil.contains("SIGKILL") || cargo_evil.contains("signal: 9"),
        "the build script died of SIGKILL: {cargo_evil}"
    );
    assert!(
        !out.join("cargo-stolen").exists(),
        "the build script wrote the token"
    );
    let pip_evil = read(&out.join("pip-evil.txt"));
    assert!(
        status.contains("pip-evil ") && pip_evil.contains("evil-build-py"),
        "pip's build failed: {status}\n{pip_evil}"
    );
    assert!(
        pip_evil.contains("exit code: -9"),
        "setup.py died of SIGKILL: {pip_evil}"
    );
    assert!(!out.join("pip-stolen").exists(), "setup.py wrote the token");
    // The twins: the project's own build script read the token and built; the dependency's
    // harmless build script built.
    assert!(
        status.contains("cargo-honest 0"),
        "{status}\n{}",
        read(&out.join("cargo-honest.txt"))
    );
    assert!(read(&out.join("own-read")).contains(CANARY_NPM));

    let findings = agent.wait_for_findings("the kills", |all| responded(&runner, all).len() >= 2);
    let kills = responded(&runner, &findings);
    let killed_hooks: Vec<_> = kills
        .iter()
        .filter(|f| f["rule"] == "credential-read" && f["response"] == "killed")
        .map(|f| f["hook"]["package"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        killed_hooks.iter().any(|p| p == "evil-build")
            && killed_hooks.iter().any(|p| p == "evil-build-py"),
        "both hooks' reads are killed credential reads: {kills:#?}"
    );
    assert_eq!(kills.len(), 2, "nothing else was killed: {kills:#?}");
}

/// A kill at an open ends the opener, and with it its descriptor table, unless another process
/// shares the table (`clone(CLONE_FILES)` without `CLONE_THREAD`): that process would keep the
/// descriptor and read it. The same script twice: under the default profile (audit) the sharer
/// reads the Worker's environment through the descriptor its maker opened (the route is real);
/// where `process-environ-read: kill` is in force the maker dies at the `clone`, before it opens
/// anything, and the sharer finds nothing. The other route to a dying opener's descriptor,
/// `pidfd_getfd`, is reported under audit (after it took the Worker's standard input) and
/// killed at its entry under the kill. Twins (a thread, a fork child) live.
#[test]
fn a_process_sharing_the_openers_descriptor_table_gets_nothing_where_kills_are_in_force() {
    let repository = "acme/kill-shared-table";
    let (agent, _config) = agent_for(repository, "  process-environ-read: kill\n");
    // The sharer waits for its maker's descriptor, then reads every descriptor it can; the
    // maker opens the Worker's environment (its parent's: the step is the Worker's child).
    // clone (x86_64 syscall 56) with CLONE_FILES | SIGCHLD: a fork sharing the table.
    let programs = integration_tests::tempdir_outside_tmp();
    let program = |name: &str, source: &str| {
        let path = programs.path().join(name);
        std::fs::write(&path, source).unwrap();
        path
    };
    let share_py = program(
        "share.py",
        "import ctypes, os, sys, time\n\
         pid = ctypes.CDLL(None).syscall(56, 0x400 | 17, 0, 0, 0, 0)\n\
         if pid == 0:\n\
         \x20   time.sleep(1.5)\n\
         \x20   got = b''\n\
         \x20   for fd in range(3, 256):\n\
         \x20       try:\n\
         \x20           got += os.pread(fd, 65536, 0)\n\
         \x20       except OSError:\n\
         \x20           pass\n\
         \x20   open(sys.argv[2], 'wb').write(got)\n\
         \x20   os._exit(0)\n\
         fd = os.open('/proc/%s/environ' % sys.argv[1], os.O_RDONLY)\n\
         time.sleep(3)\n",
    );
    let script = |out: &Path| {
        format!(
            "python3 {} $PPID {} || echo \"maker $?\" >> {}/status\nsleep 2\n",
            share_py.display(),
            out.join("shared.txt").display(),
            out.display()
        )
    };
    // Another route to a dying opener's descriptor: pidfd_getfd (x86_64 438) of the Worker's
    // standard input, through a pidfd of it (pidfd_open, 434).
    let take_py = program(
        "take.py",
        "import ctypes, sys\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         pidfd = libc.syscall(434, int(sys.argv[1]), 0)\n\
         fd = libc.syscall(438, pidfd, 0, 0)\n\
         print('took', fd, ctypes.get_errno())\n",
    );
    let take = |out: &Path| {
        format!(
            "python3 {} $PPID > {o}/took.txt || echo \"taker $?\" >> {o}/status\n",
            take_py.display(),
            o = out.display()
        )
    };
    let twins_py = program(
        "twins.py",
        "import os, threading, time\n\
         t = threading.Thread(target=time.sleep, args=(1,)); t.start()\n\
         if os.fork() == 0:\n\
         \x20   os._exit(0)\n\
         os.wait(); t.join()\n",
    );
    let twins = |out: &Path| {
        format!(
            "python3 {} && echo \"twins 0\" >> {o}/status\n",
            twins_py.display(),
            o = out.display()
        )
    };

    // The route is real: under audit, the sharer reads what its maker opened.
    let audit = runner("acme/audit-shared-table");
    let audit_out = audit.dir.path().join("out");
    std::fs::create_dir_all(&audit_out).unwrap();
    audit.run_job_with_hooks(
        &[("share", &script(&audit_out)), ("take", &take(&audit_out))],
        Some(&agent.control_socket),
    );
    let took = read(&audit_out.join("took.txt"));
    assert!(
        took.starts_with("took ") && !took.starts_with("took -1"),
        "pidfd_getfd took the Worker's descriptor: {took}"
    );
    let audited = agent.wait_for_findings("the audit's descriptor taken", |all| {
        audit
            .findings_of(all)
            .iter()
            .any(|f| f["rule"] == "descriptor-sharing")
    });
    let taken: Vec<_> = audit
        .findings_of(&audited)
        .into_iter()
        .filter(|f| f["rule"] == "descriptor-sharing")
        .collect();
    assert!(
        taken.iter().all(|f| f.get("response").is_none()
            && f["evidence"]["syscall"] == "pidfd_getfd"
            && f["step"]["id"] == "take"),
        "audit: reported, not killed (the clone is news only where kills are): {taken:#?}"
    );
    assert!(
        read(&audit_out.join("shared.txt")).contains(CANARY_ENV),
        "the sharer did not read the Worker's environment through the shared table: {:?}",
        read(&audit_out.join("shared.txt"))
    );

    let runner = runner(repository);
    let out = runner.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    runner.run_job_with_hooks(
        &[
            ("share", &script(&out)),
            ("take", &take(&out)),
            ("twins", &twins(&out)),
            (
                "after",
                &format!("echo alive >> {}/status\n", out.display()),
            ),
        ],
        Some(&agent.control_socket),
    );
    let status = statuses(&out);
    assert!(
        status.contains("maker 137"),
        "the maker was killed: {status}"
    );
    assert!(
        !read(&out.join("shared.txt")).contains(CANARY_ENV),
        "the sharer read the Worker's environment"
    );
    assert!(out.join("shared.txt").exists(), "the sharer ran: {status}");
    for alive in ["twins 0", "alive"] {
        assert!(status.contains(alive), "{alive}: {status}");
    }
    assert!(
        status.contains("taker 137"),
        "the taker was killed: {status}"
    );
    assert!(
        read(&out.join("took.txt")).is_empty(),
        "it took a descriptor"
    );
    let findings = agent.wait_for_findings("the kills", |all| responded(&runner, all).len() >= 2);
    let kills = responded(&runner, &findings);
    assert_eq!(kills.len(), 2, "{kills:#?}");
    for (step, syscall) in [("share", None), ("take", Some("pidfd_getfd"))] {
        let f = kills
            .iter()
            .find(|f| f["step"]["id"] == step)
            .unwrap_or_else(|| panic!("{step}: {kills:#?}"));
        assert_eq!(f["rule"], "descriptor-sharing", "{f:#}");
        assert_eq!(f["response"], "killed", "{f:#}");
        if let Some(syscall) = syscall {
            assert_eq!(f["evidence"]["syscall"], syscall, "{f:#}");
        }
    }
}
