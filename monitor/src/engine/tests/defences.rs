//! `defence-tampering`: switching off the host's logging, audit and hardening, by the files or by
//! asking for it; their owners and readers stay quiet.

use super::*;

#[test]
fn switching_defences_off_by_file_or_by_command_is_a_finding() {
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "__run");
    sim.write(300, "/proc/sys/kernel/randomize_va_space");
    let f = sim.only("defence-tampering");
    assert_eq!(f.evidence["place"], "kernel-hardening");
    assert_eq!(f.evidence["route"], "file");
    sim.spawn(
        300,
        310,
        "/usr/bin/systemctl",
        &["systemctl", "stop", "auditd.service"],
        WORKSPACE,
        github_env("__run"),
    );
    let commands: Vec<&Finding> = sim
        .findings
        .iter()
        .filter(|f| f.evidence["route"] == "command")
        .collect();
    assert_eq!(commands.len(), 1, "{:?}", sim.rules());
    assert!(commands[0]
        .summary
        .contains("systemctl stop auditd.service"));
}

#[test]
fn owners_and_readers_of_the_defences_are_quiet() {
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "__run");
    sim.read(300, "/proc/sys/kernel/randomize_va_space");
    sim.spawn(
        300,
        320,
        "/usr/bin/dpkg",
        &["dpkg", "-i", "x.deb"],
        WORKSPACE,
        github_env("__run"),
    );
    sim.write(320, "/var/log/dpkg.log");
    sim.spawn(
        300,
        330,
        "/usr/bin/systemctl",
        &["systemctl", "status", "auditd"],
        WORKSPACE,
        github_env("__run"),
    );
    sim.spawn(
        300,
        340,
        "/usr/bin/systemctl",
        &["systemctl", "stop", "postgresql"],
        WORKSPACE,
        github_env("__run"),
    );
    assert!(sim.findings.is_empty(), "{:?}", sim.rules());
}
