//! Kill responses: the engine tells the kernel which processes are a job's and with what policy
//! (and which run install-time code), and every response the kernel took is a finding that
//! says so, even where the rules, knowing an allowance the kernel does not, would be quiet.

use monitor_common::{
    POLICY_EGRESS_BLOCK, POLICY_KILL_PROC_ENVIRON, POLICY_KILL_PROC_MEMORY, POLICY_REHEARSE,
    RESPONSE_KILLED, RESPONSE_WOULD_KILL,
};

use super::*;
use crate::{
    event::KernelResponse,
    finding::{Enforcement, RuleId},
};

const KILLS: &str = "version: 1\nresponses:\n  process-environ-read: kill\n  process-memory-read: kill\n  credential-read: kill\n";

/// A step's `cat` (310) killed at its open of the Worker's environment.
fn cat_killed_reading_the_workers_environ(sim: &mut Sim) {
    cat_reading_the_workers_environ(sim, RESPONSE_KILLED);
}

/// A step's `cat` (310) opens the Worker's environment; the kernel's record has `flags`.
fn cat_reading_the_workers_environ(sim: &mut Sim, flags: u32) {
    sim.spawn(
        300,
        310,
        "/usr/bin/cat",
        &["cat", "/proc/200/environ"],
        WORKSPACE,
        github_env("__run"),
    );
    sim.read_responded(310, "/proc/200/environ", flags);
}

#[test]
fn a_killed_read_is_a_finding_that_says_killed() {
    let mut sim = Sim::new(profile(KILLS));
    sim.runner().run_step(300, "__run");
    cat_killed_reading_the_workers_environ(&mut sim);
    sim.exit(310).exit(300).exit(200).finish();
    let f = sim.only("process-environ-read");
    assert_eq!(f.response, Some(KernelResponse::Killed));
    let json = serde_json::to_value(f).unwrap();
    assert_eq!(json["response"], "killed");
}

#[test]
fn a_maker_killed_for_sharing_its_descriptor_table_is_a_finding_and_sharing_alone_is_not() {
    let mut sim = Sim::new(profile(KILLS));
    sim.runner().run_step(300, "__run");
    // Shared with no response (kills not in reach): nothing to say.
    sim.fork_sharing_descriptors(300, 305, 0);
    assert!(sim.findings.is_empty(), "{:#?}", sim.findings);
    sim.spawn(
        300,
        310,
        "/usr/bin/python3",
        &["python3", "share.py"],
        WORKSPACE,
        github_env("__run"),
    );
    sim.fork_sharing_descriptors(310, 311, RESPONSE_KILLED);
    sim.exit(311)
        .exit(310)
        .exit(305)
        .exit(300)
        .exit(200)
        .finish();
    let f = sim.only("descriptor-sharing");
    assert_eq!(f.response, Some(KernelResponse::Killed));
    assert_eq!(f.evidence["maker_pid"], 310);
    assert_eq!(f.evidence["sharer_pid"], 311);
    assert_eq!(f.step.as_ref().unwrap().id, "__run");
}

#[test]
fn taking_another_processs_descriptor_is_a_finding_in_audit_too() {
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "__run");
    sim.tamper(300, monitor_common::TAMPER_PIDFD_GETFD, 5, 3);
    let f = sim.only("descriptor-sharing");
    assert_eq!(f.evidence["syscall"], "pidfd_getfd");
    assert_eq!(f.evidence["argument"], 3);
    assert_eq!(f.response, None);
}

#[test]
fn a_kill_the_rules_would_allow_is_still_reported_and_not_folded_into_an_earlier_finding() {
    // The profile allows cat to read environments; the kernel does not know allowances.
    let allowing =
        format!("{KILLS}credentials:\n  allow:\n    - {{ path: /proc/*/environ, by: [cat] }}\n");
    let mut sim = Sim::new(profile(&allowing));
    sim.runner().run_step(300, "__run");
    cat_killed_reading_the_workers_environ(&mut sim);
    // Read once unnoticed by the kernel (before the policy reached it), then rehearsed twice:
    // the rehearsal is told once, after the plain finding.
    sim.spawn(
        300,
        320,
        "/usr/bin/cat",
        &["cat", "/proc/200/maps"],
        WORKSPACE,
        github_env("__run"),
    );
    sim.read(320, "/proc/200/maps");
    sim.read_responded(320, "/proc/200/maps", RESPONSE_WOULD_KILL);
    sim.read_responded(320, "/proc/200/maps", RESPONSE_WOULD_KILL);
    sim.exit(320).exit(310).exit(300).exit(200).finish();
    let environ = sim.only("process-environ-read");
    assert_eq!(environ.response, Some(KernelResponse::Killed));
    assert_eq!(environ.severity, Severity::Critical);
    let maps: Vec<_> = sim
        .findings
        .iter()
        .filter(|f| f.rule == RuleId::ProcessMemoryRead)
        .collect();
    assert_eq!(maps.len(), 2, "{maps:#?}");
    assert_eq!(maps[0].response, None);
    assert_eq!(maps[1].response, Some(KernelResponse::WouldKill));
}

#[test]
fn the_kernel_is_told_the_jobs_processes_policy_and_install_code() {
    let mut sim = Sim::new(profile(&format!(
        "{KILLS}  rehearse: true\negress:\n  mode: block\n"
    )));
    npm_stealer(&mut sim);
    let actions = sim.engine.take_enforcement();
    let policies: Vec<(u32, bool, u32)> = actions
        .iter()
        .filter_map(|a| match a {
            Enforcement::Process {
                pid,
                anchor_only,
                policy,
                ..
            } => Some((*pid, *anchor_only, *policy)),
            _ => None,
        })
        .collect();
    // The Worker anchors the job (inferred from its first step), then the step's root.
    assert!(
        policies.contains(&(200, true, policies[0].2)),
        "{policies:?}"
    );
    assert!(policies
        .iter()
        .any(|(pid, anchor, _)| *pid == 300 && !anchor));
    let policy = policies[0].2;
    assert_eq!(
        policy
            & (POLICY_EGRESS_BLOCK
                | POLICY_KILL_PROC_ENVIRON
                | POLICY_KILL_PROC_MEMORY
                | POLICY_REHEARSE),
        POLICY_EGRESS_BLOCK | POLICY_KILL_PROC_ENVIRON | POLICY_KILL_PROC_MEMORY | POLICY_REHEARSE
    );
    // The dependency's postinstall shell and what it ran: install-time code.
    let install: Vec<u32> = actions
        .iter()
        .filter_map(|a| match a {
            Enforcement::InstallCode { pid } => Some(*pid),
            _ => None,
        })
        .collect();
    assert!(install.contains(&320), "{install:?}");
    // npm itself is not.
    assert!(!install.contains(&310), "{install:?}");
}

#[test]
fn audit_profiles_tell_the_kernel_nothing() {
    let mut sim = Sim::new(empty_profile());
    npm_stealer(&mut sim);
    assert!(sim.engine.take_enforcement().is_empty());
}

/// The BPF-LSM tier refused the open and killed the reader: the finding says `blocked`, and
/// which hook saw it; the tracepoint tier's twin says `killed` and `syscall`.
#[test]
fn a_read_refused_by_the_lsm_hook_says_blocked_and_by_which_hook() {
    for (flags, response, via) in [
        (
            monitor_common::OPEN_VIA_LSM | monitor_common::RESPONSE_REFUSED | RESPONSE_KILLED,
            "blocked",
            "lsm",
        ),
        (RESPONSE_KILLED, "killed", "syscall"),
    ] {
        let mut sim = Sim::new(profile(KILLS));
        sim.runner().run_step(300, "__run");
        cat_reading_the_workers_environ(&mut sim, flags);
        sim.exit(310).exit(300).exit(200).finish();
        let json = serde_json::to_value(sim.only("process-environ-read")).unwrap();
        assert_eq!(json["response"], response, "{json:#}");
        assert_eq!(json["evidence"]["via"], via, "{json:#}");
    }
}
