//! Every route out is seen: connections and datagrams made without `connect(2)` from a 64-bit
//! syscall (io_uring connect and sendmsg, the i386 syscall entry, TCP Fast Open, `sendmmsg`)
//! reach a sink in a network namespace made for the test, and each is an `unexpected-egress`
//! finding for its step, saying how it was made; in block mode each is refused and the finding
//! says so. The routes' benign twins reach an allowed destination and stay quiet.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, MutexGuard},
};

use integration_tests::{
    by_rule, delete_netns, make_netns, Agent, FakeRunner, PinDir, Value, MARKER_STEP,
};

/// One test at a time: every agent judges every job on the machine with its own profile, so a
/// block-mode agent would refuse the other tests' jobs too.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The destination no profile allows, and the one the profiles allow.
const SINK: &str = "10.78.0.9";
const ALLOWED: &str = "10.78.0.1";
const PROFILE: &str =
    "version: 1\negress:\n  allow:\n    - \"10.78.0.1:8080\"\n    - \"10.78.0.1:5353\"\n";

/// A network namespace with the two addresses on its loopback and sinks that append what they
/// receive (TCP 8080, UDP 5353) to `received`. Removed on drop.
struct Lab {
    ns: String,
    sink: Child,
    received: PathBuf,
    _dir: tempfile::TempDir,
}

impl Lab {
    fn start() -> Self {
        let ns = make_netns(
            "mon-egr",
            &[&format!("{SINK}/32"), &format!("{ALLOWED}/32")],
        );
        let dir = tempfile::tempdir().unwrap();
        let received = dir.path().join("received");
        std::fs::write(&received, "").unwrap();
        let sink = Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-c"])
            .arg(
                "import socket, sys, threading\n\
                 out = sys.argv[1]\n\
                 def keep(data):\n    with open(out, 'ab') as f: f.write(data)\n\
                 def tcp():\n    s = socket.create_server(('0.0.0.0', 8080))\n    s.setsockopt(socket.IPPROTO_TCP, 23, 16)\n    while True:\n        c, _ = s.accept(); data = b''\n        while True:\n            b = c.recv(4096)\n            if not b: break\n            data += b\n        keep(data); c.close()\n\
                 threading.Thread(target=tcp, daemon=True).start()\n\
                 u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('0.0.0.0', 5353))\n\
                 while True:\n    keep(u.recvfrom(65536)[0])\n",
            )
            .arg(&received)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lab = Lab {
            ns,
            sink,
            received,
            _dir: dir,
        };
        for _ in 0..300 {
            let ok = Command::new("ip")
                .args(["netns", "exec", &lab.ns, "bash", "-c"])
                .arg(format!("exec 3<>/dev/tcp/{ALLOWED}/8080"))
                .status()
                .unwrap()
                .success();
            if ok {
                return lab;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the sink in {} never accepted", lab.ns);
    }

    fn received(&self) -> String {
        std::fs::read_to_string(&self.received).unwrap()
    }

    /// What the sinks received once every one of `wanted` is there (or after 15 s, for the
    /// caller's assertion to show): a sink writes a stream down when its sender closes, which
    /// may come after the job that sent it has ended (CI at ae2a31c read the file first).
    fn received_with(&self, wanted: &[String]) -> String {
        for _ in 0..150 {
            let now = self.received();
            if wanted.iter().all(|w| now.contains(w.as_str())) {
                return now;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        self.received()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.sink.kill();
        let _ = self.sink.wait();
        delete_netns(&self.ns);
    }
}

/// Builds the route helper (tests/fixtures/egress/egress.c) into `dir`.
fn build_helper(dir: &Path) -> PathBuf {
    integration_tests::build_fixture(dir, "egress/egress.c", "egress")
}

/// Each route: (step id, helper mode, port, what the finding says in `evidence.via`).
const ROUTES: [(&str, &str, u16, &str); 5] = [
    ("uring", "uring-connect", 8080, "other_connect"),
    ("uring-udp", "uring-sendmsg", 5353, "send"),
    ("compat", "connect32", 8080, "other_connect"),
    ("fastopen", "fastopen", 8080, "other_connect"),
    ("sendmmsg", "sendmmsg", 5353, "send"),
];

fn egress_in<'a>(findings: &'a [Value], step: &str) -> Vec<&'a Value> {
    by_rule(findings, "unexpected-egress")
        .into_iter()
        .filter(|f| f["step"]["id"] == step)
        .collect()
}

/// The helper's pid, from its `PID=<n>` line after `marker`.
fn pid_after(output: &str, marker: &str) -> u64 {
    let at = output.find(marker).expect(marker);
    output[at..]
        .lines()
        .find_map(|l| l.strip_prefix("PID="))
        .and_then(|p| p.trim().parse().ok())
        .expect("PID line")
}

#[test]
fn connections_and_datagrams_made_without_connect_are_egress() {
    let _serial = one_at_a_time();
    let agent = Agent::start_with_profile(PROFILE);
    let lab = Lab::start();
    let runner = FakeRunner::outside_tmp();
    let helper = build_helper(&runner.workspace);
    let step = |mode: &str, address: &str, port: u16, extra: &str| {
        format!(
            "echo START-{mode}-{address}; ip netns exec {} '{}' {mode} {address} {port} {extra}\n",
            lab.ns,
            helper.display()
        )
    };
    let mut steps: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(id, mode, port, _)| (id.to_string(), step(mode, SINK, *port, "")))
        .collect();
    // Twins: the same routes to the allowed destination, and a stream of 200 datagrams on one
    // socket (one record in the kernel, not 200).
    steps.push((
        "twin-uring".into(),
        step("uring-connect", ALLOWED, 8080, ""),
    ));
    steps.push(("twin-compat".into(), step("connect32", ALLOWED, 8080, "")));
    steps.push(("twin-stream".into(), step("sendmmsg", ALLOWED, 5353, "200")));
    let mut pairs: Vec<(&str, &str)> = steps
        .iter()
        .map(|(id, s)| (id.as_str(), s.as_str()))
        .collect();
    pairs.push(MARKER_STEP);
    let output = runner.run_job(&pairs);
    // Every route really reached its sink.
    let received = lab.received_with(
        &ROUTES
            .iter()
            .map(|(_, mode, _, _)| format!("CANARY-{mode}-{SINK}"))
            .collect::<Vec<_>>(),
    );
    for (_, mode, _, _) in ROUTES {
        assert!(output.contains(&format!("SENT-{mode}")), "{output}");
        assert!(
            received.contains(&format!("CANARY-{mode}-{SINK}")),
            "{mode} did not reach the sink: {received:?}\n{output}"
        );
    }
    // The attack's two datagrams arrived; UDP on loopback may drop part of the twin's stream
    // at a slow sink.
    assert_eq!(
        received.matches(&format!("CANARY-sendmmsg-{SINK}")).count(),
        2
    );
    assert!(received.contains(&format!("CANARY-sendmmsg-{ALLOWED}")));
    let mine = agent.findings_through_marker(&runner);
    for (id, mode, port, via) in ROUTES {
        let found = egress_in(&mine, id);
        assert_eq!(found.len(), 1, "{mode}: {mine:#?}");
        let f = found[0];
        assert_eq!(f["evidence"]["address"], SINK, "{f:#}");
        assert_eq!(f["evidence"]["port"], port, "{f:#}");
        assert_eq!(f["evidence"]["via"], via, "{f:#}");
        assert_eq!(f["evidence"]["blocked"], false, "{f:#}");
        assert_eq!(f["process_chain"][0]["comm"], "egress", "{f:#}");
    }
    for twin in ["twin-uring", "twin-compat", "twin-stream"] {
        let quiet: Vec<&Value> = mine.iter().filter(|f| f["step"]["id"] == twin).collect();
        assert!(quiet.is_empty(), "{twin}: {quiet:#?}");
    }
    // The stream of 200 datagrams on one socket is one record.
    let stream_pid = pid_after(&output, &format!("START-sendmmsg-{ALLOWED}"));
    let records = agent
        .events()
        .into_iter()
        .filter(|e| e["process"]["pid"] == stream_pid && e["kind"] == "connect")
        .count();
    assert_eq!(records, 1, "datagrams of one socket to one destination");
    drop(lab);
}

/// Block mode: each route is refused by the kernel (the helper sees EPERM, the sink gets
/// nothing) and reported as blocked, saying how it was tried.
#[test]
fn block_mode_refuses_every_route_and_says_so() {
    let _serial = one_at_a_time();
    let profile = format!("{PROFILE}  mode: block\n");
    let agent = Agent::start_with_profile(&profile);
    let lab = Lab::start();
    let runner = FakeRunner::outside_tmp();
    let helper = build_helper(&runner.workspace);
    // The whole runner runs in the namespace; its hooks anchor the job at the Worker.
    let steps: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(id, mode, port, _)| {
            (
                id.to_string(),
                format!("'{}' {mode} {SINK} {port}\n", helper.display()),
            )
        })
        .chain([(
            "twin-uring".to_string(),
            format!("'{}' uring-connect {ALLOWED} 8080\n", helper.display()),
        )])
        .collect();
    let pairs: Vec<(&str, &str)> = steps
        .iter()
        .map(|(id, s)| (id.as_str(), s.as_str()))
        .collect();
    let output = runner.run_job_in(Some(&lab.ns), &pairs, Some(&agent.control_socket));
    for (_, mode, _, _) in ROUTES {
        assert!(output.contains(&format!("REFUSED-{mode}")), "{output}");
    }
    assert!(output.contains("SENT-uring-connect"), "{output}");
    let received = lab.received_with(&[format!("CANARY-uring-connect-{ALLOWED}")]);
    for (_, mode, _, _) in ROUTES {
        assert!(
            !received.contains(&format!("CANARY-{mode}-{SINK}")),
            "{mode} got through: {received:?}"
        );
    }
    assert!(
        received.contains(&format!("CANARY-uring-connect-{ALLOWED}")),
        "{received:?}"
    );
    let all = agent.wait_for_findings("the refused routes", |all| {
        let mine = runner.findings_of(all);
        ROUTES
            .iter()
            .all(|(id, ..)| !egress_in(&mine, id).is_empty())
    });
    let mine = runner.findings_of(&all);
    for (id, mode, _, via) in ROUTES {
        let found = egress_in(&mine, id);
        assert_eq!(found.len(), 1, "{mode}: {mine:#?}");
        assert_eq!(found[0]["evidence"]["blocked"], true, "{:#}", found[0]);
        assert_eq!(found[0]["evidence"]["via"], via, "{:#}", found[0]);
        assert!(found[0]["summary"]
            .as_str()
            .unwrap()
            .starts_with("blocked "));
    }
    assert!(egress_in(&mine, "twin-uring").is_empty(), "{mine:#?}");
    drop(lab);
}

/// A destination the syscall's entry could not read is not lost: `connect(2)` given an address
/// in a file mapping it has not touched (the syscall's own copy faults the page in; a probe's
/// read of user memory may not). The entry reads no user memory for an IPv4/IPv6 connect where
/// the egress hooks are attached: the hook is given the destination the kernel copied, and the
/// record still carries the syscall's result (it came through connect(2)'s exit, not as a
/// connect seen outside the syscall).
#[test]
fn a_connect_whose_address_the_probe_cannot_read_is_seen_with_its_result() {
    let _serial = one_at_a_time();
    let agent = Agent::start_with_profile(PROFILE);
    let lab = Lab::start();
    let runner = FakeRunner::outside_tmp();
    let helper = build_helper(&runner.workspace);
    let output = runner.run_job(&[
        (
            "unmapped",
            &format!(
                "ip netns exec {} '{}' connect-unmapped {SINK} 8080\n",
                lab.ns,
                helper.display()
            ),
        ),
        MARKER_STEP,
    ]);
    assert!(output.contains("SENT-connect-unmapped"), "{output}");
    assert!(
        lab.received_with(&[format!("CANARY-connect-unmapped-{SINK}")])
            .contains(&format!("CANARY-connect-unmapped-{SINK}")),
        "{output}"
    );
    let mine = agent.findings_through_marker(&runner);
    let found = egress_in(&mine, "unmapped");
    assert_eq!(found.len(), 1, "{mine:#?}");
    assert_eq!(found[0]["evidence"]["address"], SINK);
    assert_eq!(found[0]["evidence"]["via"], "connect", "{:#?}", found[0]);
    assert_eq!(found[0]["evidence"]["result"], 0, "{:#?}", found[0]);
    drop(lab);
}

/// The raw socket route: an ICMP echo crafted on a raw IPv4 socket, and a packet socket. The
/// echo's reply proves the packet left; each socket is a `raw-socket` finding. In block mode the
/// raw IPv4 socket is refused.
#[test]
fn raw_and_packet_sockets_are_reported_and_refused_in_block_mode() {
    let _serial = one_at_a_time();
    let lab = Lab::start();
    let script = |tag: &str| {
        format!(
            "ip netns exec {ns} python3 -c \"\nimport socket, struct\ntry:\n    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\nexcept PermissionError:\n    print('REFUSED-{tag}'); raise SystemExit\ndef checksum(b):\n    t = sum(struct.unpack('!7H', b))\n    t = (t >> 16) + (t & 0xffff)\n    t += t >> 16\n    return ~t & 0xffff\nbody = struct.pack('>BBHHH', 8, 0, 0, 1, 1) + b'CANARY'\nbody = body[:2] + struct.pack('!H', checksum(body)) + body[4:]\ns.settimeout(5)\ns.sendto(body, ('{SINK}', 0))\nwhile True:\n    reply, source = s.recvfrom(1024)\n    if reply[20] == 0:\n        print('ECHOED-{tag}', source[0]); break\n\"\nip netns exec {ns} python3 -c \"import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); print('PACKET-{tag}')\"\n",
            ns = lab.ns
        )
    };
    // Audit mode.
    let agent = Agent::start_with_profile(PROFILE);
    let runner = FakeRunner::outside_tmp();
    let output = runner.run_job(&[("raw", &script("audit")), MARKER_STEP]);
    assert!(output.contains(&format!("ECHOED-audit {SINK}")), "{output}");
    assert!(output.contains("PACKET-audit"), "{output}");
    let mine = agent.findings_through_marker(&runner);
    let raw = by_rule(&mine, "raw-socket");
    assert!(
        raw.iter().any(|f| f["evidence"]["family"] == "ipv4"
            && f["evidence"]["protocol"] == 1
            && f["evidence"]["blocked"] == false),
        "{mine:#?}"
    );
    assert!(
        raw.iter().any(|f| f["evidence"]["family"] == "packet"),
        "{mine:#?}"
    );
    assert!(raw.iter().all(|f| f["step"]["id"] == "raw"));
    drop(agent);
    // Block mode: the raw socket is refused.
    let profile = format!("{PROFILE}  mode: block\n");
    let agent = Agent::start_with_profile(&profile);
    let runner = FakeRunner::outside_tmp();
    let output =
        runner.run_job_with_hooks(&[("raw", &script("block"))], Some(&agent.control_socket));
    assert!(output.contains("REFUSED-block"), "{output}");
    let all = agent.wait_for_findings("the refused raw socket", |all| {
        by_rule(&runner.findings_of(all), "raw-socket")
            .iter()
            .any(|f| f["evidence"]["blocked"] == true)
    });
    let refused = by_rule(&runner.findings_of(&all), "raw-socket")
        .into_iter()
        .find(|f| f["evidence"]["blocked"] == true)
        .cloned()
        .unwrap();
    assert!(
        refused["summary"].as_str().unwrap().contains("was refused"),
        "{refused:#}"
    );
    drop(lab);
}

/// The ping socket route: ICMP echo requests carrying a payload from a ping socket
/// (`SOCK_DGRAM` with `IPPROTO_ICMP`: no privilege needed where `net.ipv4.ping_group_range`
/// allows it, as on GitHub's runner images), sent with `sendto` (no socket-address hook runs
/// for it) and, on another socket, after `connect` (which Linux 6.0+ shows the connect hooks).
/// The echo replies carrying the payload back prove the requests left; each step's destination
/// is one `unexpected-egress` finding, `via: ping`, however many echoes and whichever way
/// (never a `udp` connection besides). The twin pings an address the profile allows (any
/// port): quiet. In block mode every echo to the sink is refused and the finding says so.
#[test]
fn ping_sockets_name_their_destination_and_are_refused_in_block_mode() {
    let _serial = one_at_a_time();
    let lab = Lab::start();
    // A new network namespace allows ping sockets to no group ("1 0").
    let sysctl = Command::new("ip")
        .args(["netns", "exec", &lab.ns, "sysctl", "-q", "-w"])
        .arg("net.ipv4.ping_group_range=0 2147483647")
        .status()
        .unwrap();
    assert!(sysctl.success(), "ping sockets allowed in the lab");
    let ping = |to: &str, tag: &str, connected: bool| {
        let send = if connected {
            format!("s.connect(('{to}', 0))\n    s.send(echo)")
        } else {
            format!("s.sendto(echo, ('{to}', 0))")
        };
        format!(
            "ip netns exec {ns} python3 -c \"\nimport socket, struct\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)\ns.settimeout(3)\ntry:\n  for i in range(3):\n    echo = struct.pack('>BBHHH', 8, 0, 0, 0, i) + b'CANARY'\n    {send}\n    reply, source = s.recvfrom(1024)\n    assert reply[0] == 0 and reply.endswith(b'CANARY'), reply\n  print('ECHOED-{tag}', source[0])\nexcept OSError as e:\n  print('REFUSED-{tag}', e)\n\"\n",
            ns = lab.ns
        )
    };
    let profile = format!("{PROFILE}    - \"{ALLOWED}\"\n");
    let agent = Agent::start_with_profile(&profile);
    let runner = FakeRunner::outside_tmp();
    let output = runner.run_job(&[
        ("ping", &ping(SINK, "sink", false)),
        ("connected", &ping(SINK, "connected", true)),
        ("twin", &ping(ALLOWED, "twin", false)),
        MARKER_STEP,
    ]);
    for tag in ["sink", "connected"] {
        assert!(output.contains(&format!("ECHOED-{tag} {SINK}")), "{output}");
    }
    assert!(
        output.contains(&format!("ECHOED-twin {ALLOWED}")),
        "{output}"
    );
    let mine = agent.findings_through_marker(&runner);
    let egress = by_rule(&mine, "unexpected-egress");
    for step in ["ping", "connected"] {
        let of_step: Vec<&&Value> = egress.iter().filter(|f| f["step"]["id"] == step).collect();
        assert_eq!(of_step.len(), 1, "{step}: {mine:#?}");
        let f = of_step[0];
        assert_eq!(f["evidence"]["via"], "ping", "{f:#}");
        assert_eq!(f["evidence"]["address"], SINK, "{f:#}");
        assert_eq!(f["evidence"]["protocol"], "icmp", "{f:#}");
        assert!(
            f["summary"]
                .as_str()
                .unwrap_or("")
                .starts_with(&format!("ping to {SINK},")),
            "{f:#}"
        );
    }
    assert!(
        !egress.iter().any(|f| f["evidence"]["address"] == ALLOWED),
        "the twin: {mine:#?}"
    );
    drop(agent);
    // Block mode: the echoes to the sink are refused, the twin's still pass.
    let agent = Agent::start_with_profile(&format!("{profile}  mode: block\n"));
    let runner = FakeRunner::outside_tmp();
    let output = runner.run_job_with_hooks(
        &[
            ("ping", &ping(SINK, "sink", false)),
            ("twin", &ping(ALLOWED, "twin", false)),
        ],
        Some(&agent.control_socket),
    );
    assert!(output.contains("REFUSED-sink"), "{output}");
    assert!(
        output.contains(&format!("ECHOED-twin {ALLOWED}")),
        "{output}"
    );
    let all = agent.wait_for_findings("the refused ping", |all| {
        by_rule(&runner.findings_of(all), "unexpected-egress")
            .iter()
            .any(|f| f["evidence"]["via"] == "ping" && f["evidence"]["blocked"] == true)
    });
    let refused: Vec<Value> = by_rule(&runner.findings_of(&all), "unexpected-egress")
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0]["step"]["id"], "ping");
    drop(agent);
    drop(lab);
}

/// Block mode outlives the agent: killed mid-job (as a step with root could kill it), the agent
/// leaves its links and the maps their verdicts come from pinned, so the kernel still refuses
/// the job's connection to a destination its profile does not allow (from a process forked
/// after the agent died) and still lets the allowed one through.
#[test]
fn egress_block_outlives_a_killed_agent() {
    let _serial = one_at_a_time();
    let pins = PinDir::new("egress-outlive");
    let profile = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(profile.path(), format!("{PROFILE}  mode: block\n")).unwrap();
    let mut agent = Agent::start_with(&[
        "--profile",
        profile.path().to_str().unwrap(),
        "--pin-dir",
        pins.arg(),
    ]);
    assert!(
        agent.log().contains("enforcement outlives the agent"),
        "{}",
        agent.log()
    );
    let lab = Lab::start();
    let gates = tempfile::tempdir().unwrap();
    let g = gates.path().display().to_string();
    // Each destination from a subshell of its own (a process forked at that moment).
    let attempt = |tag: &str| {
        format!(
            "for to in {SINK} {ALLOWED}; do \
             if (echo CANARY-{tag}-$to > /dev/tcp/$to/8080) 2>/dev/null; \
             then echo SENT-{tag}-$to; else echo REFUSED-{tag}-$to; fi; done\n"
        )
    };
    let steps: Vec<(String, String)> = vec![
        ("alive".into(), attempt("alive")),
        (
            "dead".into(),
            format!(
                "touch {g}/waiting\nwhile [ ! -e {g}/go ]; do sleep 0.05; done\n{}",
                attempt("dead")
            ),
        ),
    ];
    let runner = FakeRunner::outside_tmp();
    let ns = lab.ns.clone();
    let socket = agent.control_socket.clone();
    let job = std::thread::spawn(move || {
        let pairs: Vec<(&str, &str)> = steps
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        // The job's end hook finds no agent: the job's success is not the question here.
        runner.try_run_job_in(Some(&ns), &pairs, Some(&socket)).1
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !gates.path().join("waiting").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the step never waited"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    unsafe { libc::kill(agent.pid() as i32, libc::SIGKILL) };
    agent.wait_for_exit();
    std::fs::write(gates.path().join("go"), "").unwrap();
    let output = job.join().unwrap();
    // With the agent alive, and with it dead: the same verdicts.
    for tag in ["alive", "dead"] {
        assert!(
            output.contains(&format!("REFUSED-{tag}-{SINK}")),
            "{tag}: {output}"
        );
        assert!(
            output.contains(&format!("SENT-{tag}-{ALLOWED}")),
            "{tag}: {output}"
        );
    }
    let received = lab.received_with(&[format!("CANARY-dead-{ALLOWED}")]);
    assert!(
        received.contains(&format!("CANARY-dead-{ALLOWED}")),
        "{received:?}"
    );
    assert!(!received.contains(&format!("-{SINK}")), "{received:?}");
    drop(lab);
}
