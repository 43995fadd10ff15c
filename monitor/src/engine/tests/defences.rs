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

/// A system log moved away by rename (any route the kernel reports as a name) is as gone as a
/// deleted one; dpkg rotating its own log, and a hard link to a log (it stays in place), are
/// quiet.
#[test]
fn a_system_log_moved_away_is_a_finding_and_its_rotation_by_its_owner_is_not() {
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "__run");
    sim.name(
        300,
        monitor_common::NAME_OP_RENAME,
        "",
        "/tmp/gone",
        "/var/log/auth.log",
        monitor_common::MATCH_FROM,
    );
    let f = sim.only("defence-tampering");
    assert_eq!(f.evidence["route"], "rename");
    assert_eq!(f.evidence["path"], "/var/log/auth.log");
    assert_eq!(f.evidence["place"], "system-logs");
    sim.findings.clear();
    sim.spawn(
        300,
        330,
        "/usr/bin/dpkg",
        &["dpkg", "-i", "x.deb"],
        WORKSPACE,
        github_env("__run"),
    );
    sim.name(
        330,
        monitor_common::NAME_OP_RENAME,
        "",
        "/var/log/dpkg.log.1",
        "/var/log/dpkg.log",
        monitor_common::MATCH_FROM | monitor_common::MATCH_ALL,
    );
    sim.name(
        300,
        monitor_common::NAME_OP_LINK,
        "",
        "/tmp/copy",
        "/var/log/auth.log",
        monitor_common::MATCH_FROM,
    );
    assert!(sim.findings.is_empty(), "{:?}", sim.rules());
}

/// A system log deleted (unlink, any route) is a finding; dpkg removing its own log and a job
/// deleting its own files are not.
#[test]
fn a_system_log_deleted_is_a_finding_and_its_owner_removing_it_is_not() {
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "__run");
    sim.name(
        300,
        monitor_common::NAME_OP_UNLINK,
        "/var/log",
        "",
        "syslog",
        monitor_common::MATCH_FROM,
    );
    let f = sim.only("defence-tampering");
    assert_eq!(f.evidence["route"], "unlink");
    assert_eq!(f.evidence["path"], "/var/log/syslog");
    assert!(
        f.summary.contains("deleted /var/log/syslog"),
        "{}",
        f.summary
    );
    sim.findings.clear();
    sim.spawn(
        300,
        330,
        "/usr/bin/dpkg",
        &["dpkg", "-i", "x.deb"],
        WORKSPACE,
        github_env("__run"),
    );
    sim.name(
        330,
        monitor_common::NAME_OP_UNLINK,
        "",
        "",
        "/var/log/dpkg.log.9",
        monitor_common::MATCH_FROM,
    );
    sim.name(
        300,
        monitor_common::NAME_OP_UNLINK,
        "",
        "",
        &format!("{WORKSPACE}/build.log"),
        monitor_common::MATCH_FROM,
    );
    assert!(sim.findings.is_empty(), "{:?}", sim.rules());
}

/// A module load asked for by any program (no `insmod` in sight) is a finding.
#[test]
fn a_module_load_asked_by_any_program_is_a_finding() {
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "__run");
    sim.tamper(300, monitor_common::TAMPER_MODULE_LOAD, 0, 1);
    let f = sim.only("defence-tampering");
    assert_eq!(f.evidence["syscall"], "module_load");
    assert!(f.summary.contains("finit_module"), "{}", f.summary);
}
