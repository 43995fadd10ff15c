//! The engine's memory stays bounded whatever jobs a machine runs or a local user makes up.

use super::*;

fn run_env(run: usize, step: &str) -> BTreeMap<String, String> {
    let mut vars = github_env(step);
    vars.insert("GITHUB_RUN_ID".into(), (50_000 + run).to_string());
    vars
}

#[test]
fn jobs_made_up_in_environments_are_bounded_per_user_and_still_judged() {
    let mut sim = Sim::new(empty_profile());
    let extra = 5;
    let mut last = 0;
    for run in 0..MAX_UNDECLARED_JOBS_PER_UID + extra {
        let pid = 1_000 + run as u32;
        // Under init: nothing anchors them, so they never end.
        sim.spawn(
            1,
            pid,
            "/usr/bin/bash",
            &["bash"],
            "/",
            run_env(run, "__run"),
        );
        last = pid;
    }
    assert_eq!(
        sim.engine.jobs.len(),
        MAX_UNDECLARED_JOBS_PER_UID + 1,
        "the bound, plus one job for the rest"
    );
    // The ones past the bound are still judged, in the shared job.
    sim.read(last, "/home/runner/.aws/credentials");
    let f = sim.only("credential-read");
    let job = f.job.as_ref().unwrap();
    assert!(
        job.key
            .starts_with("github/undeclared-over-bound/uid-1001/"),
        "{}",
        job.key
    );
    assert!(
        job.name.contains("past 64"),
        "the job says why it exists: {}",
        job.name
    );
}

#[test]
fn anchorless_environment_jobs_end_when_quiet_and_free_their_users_room() {
    let mut sim = Sim::new(empty_profile());
    for run in 0..MAX_UNDECLARED_JOBS_PER_UID {
        let pid = 1_000 + run as u32;
        // Under init: no anchor, nothing marks their end.
        sim.spawn(
            1,
            pid,
            "/usr/bin/bash",
            &["bash"],
            "/",
            run_env(run, "__run"),
        );
    }
    // One of them still runs a process; the others' processes exit.
    for run in 1..MAX_UNDECLARED_JOBS_PER_UID {
        sim.exit(1_000 + run as u32);
    }
    // Quiet for less than the bound: still open.
    sim.ts += QUIET_JOB_END_NS / 2;
    sim.engine.tick(sim.ts);
    assert!(sim.engine.take_ended_jobs().is_empty());
    sim.ts += QUIET_JOB_END_NS;
    sim.engine.tick(sim.ts);
    sim.ts += 3_000_000_000;
    sim.engine.tick(sim.ts);
    let ended = sim.engine.take_ended_jobs();
    assert_eq!(
        ended.len(),
        MAX_UNDECLARED_JOBS_PER_UID - 1,
        "the busy one stays open"
    );
    assert!(ended
        .iter()
        .all(|j| j.identity.run_id.as_deref() != Some("50000")));
    // The user's room is free again: a new made-up job is a job of its own, not the overflow.
    sim.spawn(
        1,
        5_000,
        "/usr/bin/bash",
        &["bash"],
        "/",
        run_env(900, "__run"),
    );
    sim.read(5_000, "/home/runner/.aws/credentials");
    let f = sim.only("credential-read");
    assert_eq!(f.job.as_ref().unwrap().run_id.as_deref(), Some("50900"));
}

#[test]
fn a_forgotten_jobs_key_is_never_reopened() {
    let mut sim = Sim::new(empty_profile());
    let mut pid = 10_000;
    for run in 0..MAX_JOBS_KEPT + 50 {
        sim.spawn(
            1,
            pid,
            "/usr/bin/Runner.Worker",
            &["Runner.Worker"],
            "/",
            BTreeMap::new(),
        );
        sim.spawn(
            pid,
            pid + 1,
            "/usr/bin/bash",
            &["bash"],
            "/",
            run_env(run, "__run"),
        );
        sim.exit(pid + 1).exit(pid);
        pid += 2;
    }
    sim.engine.take_ended_jobs();
    let first_key = crate::ci::identity_from_env(&run_env(0, "__run"))
        .unwrap()
        .0
        .key;
    let later = sim.ts + JOB_RETENTION_NS + 60 * 1_000_000_000;
    sim.engine.tick(later);
    sim.ts = later;
    assert!(
        sim.engine.jobs().all(|(j, _)| j.key != first_key),
        "the first job was forgotten"
    );
    // A declaration under its key is refused, as for an ended job still remembered.
    sim.spawn(1, 60_000, "/usr/bin/bash", &["bash"], "/", BTreeMap::new());
    let refused = sim.control(
        Detail::JobStart {
            job: crate::ci::identity_from_env(&run_env(0, "__run"))
                .unwrap()
                .0,
            via: "job start".into(),
            requested_by_pid: 60_000,
            requested_by_uid: 0,
            requested_by_start_ticks: 0,
        },
        60_000,
    );
    assert!(refused.unwrap_err().contains("never re-opened"));
    // A process whose environment names it makes a job under a key of its own.
    sim.spawn(
        1,
        60_001,
        "/usr/bin/bash",
        &["bash"],
        "/",
        run_env(0, "__run"),
    );
    sim.read(60_001, "/home/runner/.aws/credentials");
    let f = sim.only("credential-read");
    let key = &f.job.as_ref().unwrap().key;
    assert!(key.starts_with(&format!("{first_key}/again-")), "{key}");
}

#[test]
fn retired_jobs_are_forgotten_past_the_bound_and_live_ones_keep_their_hooks() {
    let mut sim = Sim::new(empty_profile());
    // A live job whose install hook is running.
    npm_hook_running(&mut sim);
    let before = hook_of(&sim, 320);
    let mut pid = 10_000;
    for run in 0..MAX_JOBS_KEPT + 50 {
        // A Worker and its one step, both exiting: the job ends.
        sim.spawn(
            1,
            pid,
            "/usr/bin/Runner.Worker",
            &["Runner.Worker"],
            "/",
            BTreeMap::new(),
        );
        sim.spawn(
            pid,
            pid + 1,
            "/usr/bin/bash",
            &["bash"],
            "/",
            run_env(run, "__run"),
        );
        sim.exit(pid + 1).exit(pid);
        pid += 2;
    }
    assert!(sim.engine.jobs.len() > MAX_JOBS_KEPT);
    // The agent takes ended jobs as they end (to write their reports).
    assert_eq!(sim.engine.take_ended_jobs().len(), MAX_JOBS_KEPT + 50);
    let later = sim.ts + JOB_RETENTION_NS + 60 * 1_000_000_000;
    sim.engine.tick(later);
    sim.ts = later;
    assert!(
        sim.engine.jobs.len() <= MAX_JOBS_KEPT,
        "{} jobs kept",
        sim.engine.jobs.len()
    );
    assert!(sim.engine.removed_jobs >= 50);
    assert_eq!(hook_of(&sim, 320), before, "a live hook keeps its number");
    // The live job is still the live job: its hook's read is found, in it, raised.
    sim.read(320, &format!("{HOME}/.npmrc"));
    let f = sim.only("credential-read");
    assert_eq!(f.job.as_ref().unwrap().run_id.as_deref(), Some("9001"));
    assert_eq!(f.hook.as_ref().unwrap().package, "evil-pkg");
    assert_eq!(f.severity, Severity::Critical);
}

/// npm install in a step, with a dependency's postinstall (pid 320) still running.
fn npm_hook_running(sim: &mut Sim) {
    sim.runner().run_step(300, "__run");
    let mut npm_env = github_env("__run");
    sim.spawn(
        300,
        310,
        NPM,
        &["node", NPM_CLI, "install"],
        WORKSPACE,
        npm_env.clone(),
    );
    npm_env.insert("npm_lifecycle_event".into(), "postinstall".into());
    npm_env.insert("npm_package_name".into(), "evil-pkg".into());
    sim.spawn(
        310,
        320,
        "/usr/bin/dash",
        &["sh", "-c", "node x.js"],
        &format!("{WORKSPACE}/node_modules/evil-pkg"),
        npm_env,
    );
}

fn hook_of(sim: &Sim, pid: u32) -> Option<usize> {
    let e = sim
        .events
        .iter()
        .rev()
        .find(|e| e.process.pid == pid)
        .unwrap();
    sim.engine
        .attribution(e)
        .and_then(|a| a.hook.map(|(n, _, _)| n))
}

/// A job whose anchor's exit record was lost (a full ring) ends once the machine says the anchor
/// is gone and the kernel's events up to that moment have been read; with the anchor running,
/// or without the machine to ask (a replay), it does not.
#[test]
fn a_job_whose_anchor_exit_was_lost_ends_when_the_anchor_is_gone() {
    for (still_running, ends) in [(Some(false), true), (Some(true), false), (None, false)] {
        let mut sim = Sim::with_config(
            empty_profile(),
            EngineConfig {
                dns_resolvers: vec![],
                agent_program: Some(MONITOR.into()),
                exfil_services: Default::default(),
                still_running: still_running.map(|running| {
                    if running {
                        (|_, _| true) as fn(u32, u64) -> bool
                    } else {
                        |_, _| false
                    }
                }),
            },
        );
        sim.runner().run_step(300, "__run");
        sim.exit(300);
        // The Worker's exit never arrives. First check: found gone, events read up to then?
        let t = sim.ts + 3_000_000_000;
        sim.engine.tick(t);
        assert!(
            sim.engine.take_ended_jobs().is_empty(),
            "not on the first look"
        );
        // The kernel's events have been read past that moment (the heartbeat's, say).
        sim.engine.kernel_events_up_to(t + 1);
        sim.engine.tick(t + 3_000_000_000);
        assert_eq!(
            !sim.engine.take_ended_jobs().is_empty(),
            ends,
            "still running: {still_running:?}"
        );
    }
}

#[test]
fn a_user_declares_a_bounded_number_of_running_jobs() {
    let mut sim = Sim::new(empty_profile());
    let declare = |sim: &mut Sim, pid: u32, n: usize| {
        sim.spawn(1, pid, "/usr/bin/bash", &["bash"], "/", BTreeMap::new());
        let job = crate::ci::identity_from_env(
            &[("MONITOR_JOB_ID".to_string(), format!("flood-{n}"))].into(),
        )
        .unwrap()
        .0;
        sim.control(
            Detail::JobStart {
                job,
                via: "job start".into(),
                requested_by_pid: pid,
                requested_by_uid: 1001,
                requested_by_start_ticks: 0,
            },
            pid,
        )
    };
    for n in 0..MAX_DECLARED_JOBS_PER_UID {
        assert_eq!(declare(&mut sim, 20_000 + n as u32, n), Ok(()));
    }
    let refused = declare(&mut sim, 30_000, 999).unwrap_err();
    assert!(refused.contains("running jobs declared"), "{refused}");
    // One ends (its anchor exits): room for one more.
    sim.exit(20_000);
    assert_eq!(declare(&mut sim, 30_001, 1000), Ok(()));
}
