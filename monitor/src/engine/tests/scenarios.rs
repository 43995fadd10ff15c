//! Attacks and their benign twins, as the GitHub runner would run them, through the engine.

use super::*;

#[test]
fn npm_postinstall_stealer_gives_hook_credential_and_egress_findings_in_its_step() {
    let mut sim = Sim::new(empty_profile());
    npm_stealer(&mut sim);
    let mut rules = sim.rules();
    rules.sort();
    assert_eq!(
        rules,
        vec!["credential-read", "lifecycle-hook", "unexpected-egress"],
        "{:#?}",
        sim.findings
    );
    let hook = sim.only("lifecycle-hook");
    assert_eq!(
        hook.severity,
        Severity::Critical,
        "raised by what the install code did: {}",
        hook.summary
    );
    assert_eq!(hook.evidence["package"], "evil-pkg");
    assert_eq!(
        hook.evidence["packages"][0]["findings"],
        serde_json::json!(["credential-read", "unexpected-egress"])
    );
    let cred = sim.only("credential-read");
    assert_eq!(
        cred.severity,
        Severity::Critical,
        "raised: inside install-time code"
    );
    assert_eq!(cred.hook.as_ref().unwrap().package, "evil-pkg");
    assert_eq!(cred.evidence["path"], "/home/runner/.npmrc");
    let job = cred.job.as_ref().unwrap();
    assert_eq!(
        (job.name.as_str(), job.repository.as_deref()),
        ("build", Some("acme/app"))
    );
    assert_eq!(cred.step.as_ref().unwrap().id, "__run");
    // The chain runs from the reader up to the step's root bash, with argv.
    let pids: Vec<u32> = cred.process_chain.iter().map(|l| l.pid).collect();
    assert_eq!(pids, vec![330, 320, 310, 300]);
    assert_eq!(&cred.process_chain[0].argv[..], ["node", "steal.js"]);
    let egress = sim.only("unexpected-egress");
    assert_eq!(
        (egress.evidence["port"].as_u64(), egress.severity),
        (Some(9999), Severity::Critical)
    );
    assert_eq!(egress.evidence["resolved"], false);
}

#[test]
fn benign_twins_npm_reading_its_npmrc_and_an_allowed_hook_give_nothing() {
    let mut sim = Sim::new(profile(
        "version: 1\nlifecycle:\n  allow:\n    - {ecosystem: npm, package: esbuild}\n",
    ));
    sim.runner().run_step(300, "__run");
    let mut e = github_env("__run");
    sim.spawn(
        300,
        310,
        NPM,
        &["node", NPM_CLI, "ci"],
        WORKSPACE,
        e.clone(),
    );
    sim.read(310, &format!("{HOME}/.npmrc"));
    sim.read(310, &format!("{WORKSPACE}/.npmrc"));
    e.insert("npm_lifecycle_event".into(), "postinstall".into());
    e.insert("npm_package_name".into(), "esbuild".into());
    sim.spawn(
        310,
        320,
        "/usr/bin/dash",
        &["sh", "-c", "node install.js"],
        &format!("{WORKSPACE}/node_modules/esbuild"),
        e.clone(),
    );
    // The project's own prepare script is the job's code, not a dependency's.
    e.insert("npm_package_name".into(), "app".into());
    e.insert("npm_lifecycle_event".into(), "prepare".into());
    sim.spawn(
        310,
        321,
        "/usr/bin/dash",
        &["sh", "-c", "tsc"],
        WORKSPACE,
        e,
    );
    // ps reads /proc/*/cmdline (not watched); a process reads its own environ (not sent).
    sim.spawn(
        300,
        340,
        "/usr/bin/ps",
        &["ps", "aux"],
        WORKSPACE,
        github_env("__run"),
    );
    sim.finish();
    assert!(sim.findings.is_empty(), "{:#?}", sim.findings);
}

#[test]
fn processes_outside_jobs_are_not_judged_and_cannot_join_or_leave_by_env() {
    let mut sim = Sim::new(empty_profile());
    // A host process reading credentials: no job, no finding.
    sim.spawn(
        1,
        50,
        "/usr/bin/cat",
        &["cat", "/root/.npmrc"],
        "/",
        env(&[]),
    );
    sim.read(50, "/root/.npmrc");
    // A step child that rewrites its GITHUB_* environment stays in its step.
    sim.runner().run_step(300, "__run");
    let mut other = github_env("__run");
    other.insert("GITHUB_JOB".into(), "other-job".into());
    sim.spawn(
        300,
        310,
        "/usr/bin/curl",
        &["curl", "http://10.0.0.1"],
        WORKSPACE,
        other,
    );
    sim.connect(310, "10.0.0.1", 80);
    let f = sim.only("unexpected-egress");
    assert_eq!(f.job.as_ref().unwrap().name, "build");
    assert_eq!(sim.findings.len(), 1);
}

#[test]
fn reading_another_process_memory_is_always_a_finding() {
    let mut sim = Sim::new(profile("version: 1\negress:\n  allow: [0.0.0.0/0]\n"));
    sim.runner().run_step(300, "__actions_changed-files");
    sim.spawn(
        300,
        310,
        "/usr/bin/python3.11",
        &["python3", "memdump.py"],
        WORKSPACE,
        github_env("__actions_changed-files"),
    );
    sim.read(310, "/proc/200/maps");
    sim.read(310, "/proc/200/mem");
    sim.read(310, "/proc/200/environ");
    let mut rules = sim.rules();
    rules.sort();
    assert_eq!(
        rules,
        vec![
            "process-environ-read",
            "process-memory-read",
            "process-memory-read"
        ]
    );
    let mem = sim
        .findings
        .iter()
        .find(|f| f.evidence["path"] == "/proc/200/mem")
        .unwrap();
    assert_eq!(
        (mem.severity, mem.evidence["target_pid"].as_u64()),
        (Severity::Critical, Some(200))
    );
}

#[test]
fn pth_installed_during_the_job_is_reported_when_python_runs_it() {
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "install");
    let site = "/home/runner/.local/lib/python3.11/site-packages";
    sim.spawn(
        300,
        310,
        "/usr/bin/python3.11",
        &["python3", "-m", "pip", "install", "litellm"],
        WORKSPACE,
        github_env("install"),
    );
    sim.write(310, &format!("{site}/litellm_init.pth"));
    sim.write(310, &format!("{site}/distutils-precedence.pth"));
    sim.write(310, &format!("{site}/plain_paths.pth"));
    sim.exit(310);
    sim.spawn(
        300,
        320,
        "/usr/bin/python3.11",
        &["python3", "-c", "pass"],
        WORKSPACE,
        github_env("install"),
    );
    sim.read_pth(320, &format!("{site}/distutils-precedence.pth"), true);
    sim.read_pth(320, &format!("{site}/plain_paths.pth"), false);
    sim.read_pth(320, &format!("{site}/litellm_init.pth"), true);
    let f = sim.only("pth-executed");
    assert_eq!(f.evidence["path"], format!("{site}/litellm_init.pth"));
    assert_eq!(f.process_chain[0].pid, 320, "the interpreter that ran it");
    assert_eq!(
        f.process_chain[1].pid, 310,
        "then the process that wrote it"
    );
    assert_eq!(f.events.len(), 2);
    assert_eq!(sim.findings.len(), 1, "{:#?}", sim.findings);
}

#[test]
fn pip_build_of_a_dependency_is_a_hook_but_an_editable_install_of_the_project_is_not() {
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "install");
    let hooks =
        "/usr/lib/python3/dist-packages/pip/_vendor/pyproject_hooks/_in_process/_in_process.py";
    sim.spawn(
        300,
        310,
        "/usr/bin/python3.11",
        &["python3", hooks, "build_editable", "/tmp/x"],
        WORKSPACE,
        github_env("install"),
    );
    sim.spawn(
        300,
        320,
        "/usr/bin/python3.11",
        &["python3", hooks, "build_wheel", "/tmp/y"],
        "/tmp/pip-install-q/evil_0123456789abcdef0123456789abcdef",
        github_env("install"),
    );
    sim.finish();
    let f = sim.only("lifecycle-hook");
    assert_eq!(f.evidence["package"], "evil");
    assert_eq!(
        f.hook.as_ref().unwrap().package,
        "evil",
        "the hook finding carries its hook"
    );
    assert_eq!(f.severity, Severity::Low, "a hook alone is not raised");
}

#[test]
fn processes_that_outlive_their_step_are_reported_unless_allowed() {
    for (text, expected) in [
        ("version: 1\n", 1),
        (
            "version: 1\nprocesses:\n  background: [/usr/bin/sleep]\n",
            0,
        ),
    ] {
        let mut sim = Sim::new(profile(text));
        sim.runner().run_step(300, "__run");
        sim.spawn(
            300,
            310,
            "/usr/bin/sleep",
            &["sleep", "1000"],
            WORKSPACE,
            github_env("__run"),
        );
        sim.spawn(
            300,
            311,
            "/usr/bin/true",
            &["true"],
            WORKSPACE,
            github_env("__run"),
        );
        sim.exit(311).exit(300);
        assert!(sim.findings.is_empty(), "not before the grace period");
        sim.finish();
        assert_eq!(
            sim.rules()
                .iter()
                .filter(|r| **r == "outlived-step")
                .count(),
            expected,
            "{text}: {:#?}",
            sim.findings
        );
    }
}

#[test]
fn metadata_endpoint_needs_its_exact_address_and_dns_to_the_resolver_is_fine() {
    let mut sim = Sim::new(profile("version: 1\negress:\n  allow: [0.0.0.0/0]\n"));
    sim.runner().run_step(300, "__run");
    sim.connect(300, "127.0.0.53", 53);
    sim.connect(300, "93.184.216.34", 443);
    sim.connect(300, "169.254.169.254", 80);
    assert_eq!(sim.rules(), vec!["cloud-metadata"]);
    let mut sim = Sim::new(profile(
        "version: 1\negress:\n  allow: [\"169.254.169.254:80\"]\n  allow_dns: false\n",
    ));
    sim.runner().run_step(300, "__run");
    sim.connect(300, "169.254.169.254", 80);
    sim.connect(300, "127.0.0.53", 53);
    assert_eq!(
        sim.rules(),
        vec!["unexpected-egress"],
        "DNS refused when allow_dns is false"
    );
}

#[test]
fn step_sections_allow_only_in_their_step() {
    let text = "version: 1\nsteps:\n  publish:\n    egress:\n      allow: [\"10.9.9.9:443\"]\n";
    let mut sim = Sim::new(profile(text));
    sim.runner().run_step(300, "publish");
    sim.connect(300, "10.9.9.9", 443);
    sim.exit(300);
    sim.run_step(400, "test");
    sim.connect(400, "10.9.9.9", 443);
    // A direct-IP HTTPS connection waits for its TLS hello (none comes here).
    sim.finish();
    let f = sim.only("unexpected-egress");
    assert_eq!(f.step.as_ref().unwrap().id, "test");
}

#[test]
fn persistence_writes_and_temp_executables() {
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "__run");
    sim.spawn(
        300,
        310,
        "/usr/bin/git",
        &["git", "checkout", "main"],
        WORKSPACE,
        github_env("__run"),
    );
    sim.write(310, &format!("{WORKSPACE}/.github/workflows/ci.yml"));
    sim.spawn(
        300,
        320,
        "/usr/bin/node",
        &["node", "worm.js"],
        WORKSPACE,
        github_env("__run"),
    );
    sim.write(
        320,
        &format!("{WORKSPACE}/.github/workflows/shai-hulud.yml"),
    );
    sim.write(320, &format!("{HOME}/.bashrc"));
    sim.spawn(
        320,
        330,
        "/tmp/bun-x/bun",
        &["/tmp/bun-x/bun", "run"],
        WORKSPACE,
        github_env("__run"),
    );
    let mut rules = sim.rules();
    rules.sort();
    assert_eq!(
        rules,
        vec!["exec-from-temp", "persistence-write", "persistence-write"],
        "{:#?}",
        sim.findings
    );
}

#[test]
fn a_profile_learnt_from_a_run_gives_no_finding_on_that_run() {
    let mut first = Sim::new(empty_profile());
    npm_stealer(&mut first);
    assert!(!first.findings.is_empty());
    let mut learnt = empty_profile();
    for f in &first.findings {
        learnt.allow(
            f.allowance
                .as_ref()
                .expect("every finding here can be allowed"),
        );
    }
    // Through YAML, as `monitor profile learn` writes it.
    let learnt = Profile::parse(&learnt.to_yaml(), "learnt.yml").unwrap();
    let mut replay = Sim::new(learnt);
    npm_stealer(&mut replay);
    assert!(replay.findings.is_empty(), "{:#?}", replay.findings);
}

#[test]
fn running_a_program_written_during_the_job_is_found_unless_tooling_put_it_there() {
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "__run");
    let mut hook_env = github_env("__run");
    hook_env.insert("npm_lifecycle_event".into(), "postinstall".into());
    hook_env.insert("npm_package_name".into(), "evil-pkg".into());
    let hook_dir = format!("{WORKSPACE}/node_modules/evil-pkg");
    // The job's own build output and a dependency's installed binary: expected.
    sim.spawn_written(
        300,
        310,
        &format!("{WORKSPACE}/build/app-test"),
        WORKSPACE,
        github_env("__run"),
    );
    sim.spawn_written(
        300,
        311,
        &format!("{hook_dir}/bin/tool"),
        WORKSPACE,
        github_env("__run"),
    );
    // A hook dropping a program into the home directory and running it.
    sim.spawn(
        300,
        320,
        "/usr/bin/dash",
        &["sh", "-c", "node i.js"],
        &hook_dir,
        hook_env.clone(),
    );
    sim.spawn_written(
        320,
        330,
        &format!("{HOME}/.cache/evil/payload"),
        &hook_dir,
        hook_env,
    );
    sim.finish();
    let f = sim.only("exec-of-job-written-file");
    assert_eq!(f.evidence["program"], format!("{HOME}/.cache/evil/payload"));
    assert_eq!(
        f.severity,
        Severity::Critical,
        "raised: a hook running what it downloaded"
    );
    assert_eq!(f.hook.as_ref().unwrap().package, "evil-pkg");
    // A program that predates the job (no change time after its start) is not this rule's.
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "__run");
    sim.spawn(
        300,
        310,
        &format!("{HOME}/.cache/evil/payload"),
        &["payload"],
        WORKSPACE,
        github_env("__run"),
    );
    sim.finish();
    assert!(
        !sim.rules().contains(&"exec-of-job-written-file"),
        "{:#?}",
        sim.findings
    );
}

#[test]
fn ended_jobs_drop_their_heavy_state_after_the_retention_time() {
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "__run");
    // A daemon the step leaves behind.
    sim.spawn(
        300,
        310,
        "/usr/bin/sleep",
        &["sleep", "9999"],
        WORKSPACE,
        github_env("__run"),
    );
    sim.exit(300).exit(200); // the step, then the Worker: the job ended
    assert_eq!(sim.engine.retired_jobs(), 0);
    let ended = sim.events.last().unwrap().ts_ns;
    sim.engine
        .tick(ended + crate::engine::JOB_RETENTION_NS + 20_000_000_000);
    assert_eq!(sim.engine.retired_jobs(), 1);
    // What it left behind is still the job's, and still judged.
    sim.read(310, &format!("{HOME}/.npmrc"));
    let read = sim.only("credential-read");
    assert_eq!(read.step.as_ref().unwrap().id, "__run");
}

/// A job with `id-token: write`: every step's environment names the token endpoint (kept as its
/// origin by the decoder).
fn oidc_env(step: &str) -> BTreeMap<String, String> {
    let mut vars = github_env(step);
    vars.insert(
        "ACTIONS_ID_TOKEN_REQUEST_URL".into(),
        "http://10.1.2.3:8123".into(),
    );
    vars.insert("ACTIONS_ID_TOKEN_REQUEST_TOKEN".into(), "[present]".into());
    vars
}

#[test]
fn only_the_designated_step_may_request_an_oidc_token() {
    let text = "version: 1\negress:\n  allow: [10.0.0.0/8]\nsteps:\n  publish:\n    oidc:\n      allow: true\n";
    let mut sim = Sim::new(profile(text));
    sim.runner();
    sim.spawn(
        200,
        300,
        "/usr/bin/bash",
        &["bash", "-e", "s.sh"],
        WORKSPACE,
        oidc_env("publish"),
    );
    sim.spawn(
        300,
        310,
        NPM,
        &["node", NPM_CLI, "publish", "--provenance"],
        WORKSPACE,
        oidc_env("publish"),
    );
    sim.connect(310, "10.1.2.3", 8123);
    sim.exit(310).exit(300);
    assert!(
        sim.findings.is_empty(),
        "the publish step may: {:#?}",
        sim.findings
    );
    sim.spawn(
        200,
        400,
        "/usr/bin/bash",
        &["bash", "-e", "s.sh"],
        WORKSPACE,
        oidc_env("test"),
    );
    sim.spawn(
        400,
        410,
        NPM,
        &["node", "bundle.js"],
        WORKSPACE,
        oidc_env("test"),
    );
    sim.connect(410, "10.1.2.3", 443); // same host, another port: not the endpoint
    sim.connect(410, "10.1.2.3", 8123);
    let f = sim.only("oidc-token-request");
    assert_eq!(f.step.as_ref().unwrap().id, "test");
    assert_eq!(f.evidence["endpoint"], "10.1.2.3:8123");
    assert_eq!(
        f.allowance,
        Some(Allowance::Oidc {
            step: "test".into()
        })
    );
    // The allowance goes to the step, so learning it does not open the job.
    let mut learnt = empty_profile();
    learnt.allow(f.allowance.as_ref().unwrap());
    assert!(!learnt.rules.oidc.allow && learnt.steps["test"].oidc.allow);
    assert_eq!(sim.rules(), vec!["oidc-token-request"]);
}

#[test]
fn packing_source_maps_or_env_files_is_found_but_not_npm_reading_its_config() {
    for (text, expected) in [
        (
            "version: 1\n",
            vec!["packaged-sensitive-file", "packaged-sensitive-file"],
        ),
        (
            "version: 1\npackaging:\n  allow: [\"**/dist/*.map\"]\n",
            vec!["packaged-sensitive-file"],
        ),
    ] {
        let mut sim = Sim::new(profile(text));
        sim.runner().run_step(300, "__run");
        sim.spawn(
            300,
            310,
            NPM,
            &["node", "/usr/bin/npm", "pack"],
            WORKSPACE,
            github_env("__run"),
        );
        sim.read(310, &format!("{WORKSPACE}/.npmrc"));
        sim.read(310, &format!("{WORKSPACE}/dist/cli.js.map"));
        sim.read(310, &format!("{WORKSPACE}/.env"));
        // Not in the tree it packs: an ordinary credential read, judged as such.
        sim.read(310, &format!("{HOME}/.aws/credentials"));
        // Building reads source maps all the time: only packing counts.
        sim.spawn(
            300,
            320,
            NPM,
            &["node", "/usr/bin/npm", "run", "build"],
            WORKSPACE,
            github_env("__run"),
        );
        sim.read(320, &format!("{WORKSPACE}/dist/cli.js.map"));
        let packed: Vec<_> = sim
            .findings
            .iter()
            .filter(|f| f.rule == "packaged-sensitive-file")
            .collect();
        assert_eq!(
            packed.iter().map(|f| f.rule.as_str()).collect::<Vec<_>>(),
            expected,
            "{text}: {:#?}",
            sim.findings
        );
        assert_eq!(
            packed.last().unwrap().evidence["path"],
            format!("{WORKSPACE}/.env")
        );
        assert_eq!(packed[0].evidence["command"], "npm pack");
        let others: Vec<_> = sim
            .rules()
            .into_iter()
            .filter(|r| *r != "packaged-sensitive-file")
            .collect();
        assert_eq!(others, vec!["credential-read"], "{:#?}", sim.findings);
    }
}

#[test]
fn a_home_outside_home_is_still_a_home() {
    // A self-hosted runner's service user: HOME=/var/lib/gh-runner.
    let mut sim = Sim::new(empty_profile());
    sim.runner();
    let mut vars = github_env("__run");
    vars.insert("HOME".into(), "/var/lib/gh-runner".into());
    sim.spawn(
        200,
        300,
        "/usr/bin/bash",
        &["bash", "-e", "s.sh"],
        WORKSPACE,
        vars.clone(),
    );
    sim.write(300, "/var/lib/gh-runner/.bashrc");
    sim.spawn(300, 310, NPM, &["node", "steal.js"], WORKSPACE, vars);
    sim.read(310, "/var/lib/gh-runner/.npmrc");
    sim.read(310, "/var/lib/other/.bashrc"); // not a home, and only writes matter there
    let mut rules = sim.rules();
    rules.sort();
    assert_eq!(
        rules,
        vec!["credential-read", "persistence-write"],
        "{:#?}",
        sim.findings
    );
    assert_eq!(
        sim.only("persistence-write").evidence["path"],
        "/var/lib/gh-runner/.bashrc"
    );
}

#[test]
fn a_daemon_found_at_start_up_does_not_make_init_its_jobs_anchor() {
    // The agent starts while a step's daemon (reparented to init) still runs: it is resumed
    // into its job, and the unrelated processes init starts afterwards stay out of it.
    let mut sim = Sim::new(empty_profile());
    sim.fork(1, 500).exec(
        500,
        "/usr/bin/sleep",
        &["sleep", "100"],
        "/",
        github_env("install"),
    );
    let mut resumed = sim.events.last().unwrap().clone();
    resumed.detail = Detail::Resume {
        env: github_env("install"),
        cwd: "/".into(),
        process_started_ns: 0,
    };
    let mut engine = Engine::new(empty_profile(), EngineConfig::default());
    assert!(engine.on_event(&resumed).is_empty());
    assert_eq!(
        engine.jobs[0].anchor, None,
        "init adopted the daemon; it anchors nothing"
    );
    // An unrelated service started by init reads a credential: not the job's business.
    sim.fork(1, 600)
        .exec(600, "/usr/bin/cat", &["cat", "/root/.npmrc"], "/", env(&[]));
    sim.read(600, "/root/.npmrc");
    for e in sim.events.iter().skip_while(|e| e.process.pid != 600) {
        assert!(engine.on_event(e).is_empty(), "{e:?}");
    }
}

/// The runner's own hooks may declare and end the job; a step may not end it, re-anchor it or
/// declare a decoy job around itself or its runner, and trying is a finding against that step.
#[test]
fn only_the_runners_hooks_control_the_job() {
    let mut sim = Sim::new(empty_profile());
    sim.runner();
    assert_eq!(sim.hook(250, true), Ok(()), "the job-started hook");
    sim.exit(250);
    sim.run_step(300, "attack");
    let key = "github/acme/app/9001/1/build".to_string();
    let stop = |sim: &mut Sim, pid: u32, argv: &[&str]| {
        sim.spawn(300, pid, MONITOR, argv, WORKSPACE, github_env("attack"));
        sim.control(
            Detail::JobEnd {
                job: key.clone(),
                via: "job stop".into(),
            },
            pid,
        )
    };
    assert!(stop(&mut sim, 310, &["monitor", "hook", "job-completed"]).is_err());
    assert!(stop(&mut sim, 311, &["monitor", "job", "stop"]).is_err());
    let start_ticks = sim.enricher.table.by_tgid(300).unwrap().key.start_ticks;
    let decoy = |anchor: u32, sim: &mut Sim| {
        sim.control(
            Detail::JobStart {
                job: crate::ci::identity_from_env(&env(&[(
                    "MONITOR_JOB_ID",
                    &format!("decoy-{anchor}"),
                )]))
                .unwrap()
                .0,
                via: "job start".into(),
                requested_by_pid: 300,
                requested_by_uid: 1001,
                requested_by_start_ticks: start_ticks,
            },
            anchor,
        )
    };
    assert!(decoy(200, &mut sim)
        .unwrap_err()
        .contains("anchors the running job"));
    assert!(decoy(300, &mut sim)
        .unwrap_err()
        .contains("belongs to the running job"));
    assert!(
        decoy(100, &mut sim)
            .unwrap_err()
            .contains("Runner.Listener")
            || decoy(100, &mut sim).is_err()
    );
    // Still the same job: a later step's read is judged and the job has not ended.
    sim.run_step(400, "steal");
    sim.read(400, &format!("{HOME}/.npmrc"));
    assert_eq!(sim.engine.active_jobs(), 1);
    let tampering: Vec<_> = sim
        .findings
        .iter()
        .filter(|f| f.rule == "agent-tampering")
        .collect();
    assert_eq!(tampering.len(), 5, "{tampering:#?}");
    assert!(tampering
        .iter()
        .all(|f| f.step.as_ref().unwrap().id == "attack"));
    assert!(sim.findings.iter().any(|f| f.rule == "credential-read"));
    // The real end: accepted, the job ends; an ended job is never re-opened.
    assert_eq!(sim.hook(260, false), Ok(()));
    assert_eq!(sim.engine.active_jobs(), 0);
    assert!(sim.hook(270, true).unwrap_err().contains("never re-opened"));
}

/// A job flooding the monitor with findings (distinct destinations, each a finding): past the
/// bound they are counted, one `finding-flood` says so, the job's first finding stands, and
/// another job's findings are written as usual.
#[test]
fn a_findings_flood_is_bounded_per_job() {
    let mut sim = Sim::new(empty_profile());
    sim.runner();
    sim.run_step(300, "flood");
    sim.read(300, &format!("{HOME}/.npmrc"));
    let total = crate::engine::MAX_FINDINGS_PER_JOB as u16 + 200;
    for port in 0..total {
        sim.connect(300, "127.0.0.1", 10_000 + port);
    }
    let mine: Vec<_> = sim.findings.iter().collect();
    assert_eq!(mine.len(), crate::engine::MAX_FINDINGS_PER_JOB + 1);
    assert_eq!(mine[0].rule, "credential-read", "the first finding stands");
    let flood: Vec<_> = mine.iter().filter(|f| f.rule == "finding-flood").collect();
    assert_eq!(flood.len(), 1);
    assert_eq!(flood[0].step.as_ref().unwrap().id, "flood");
    // Another job is not affected.
    let mut other = github_env("__run");
    other.insert("GITHUB_RUN_ID".into(), "9002".into());
    sim.spawn(1, 500, "/usr/bin/bash", &["bash"], WORKSPACE, other);
    sim.read(500, &format!("{HOME}/.npmrc"));
    assert_eq!(sim.findings.last().unwrap().rule, "credential-read");
    assert_eq!(
        sim.findings
            .last()
            .unwrap()
            .job
            .as_ref()
            .unwrap()
            .run_id
            .as_deref(),
        Some("9002")
    );
    // The count reaches the job's end.
    sim.exit(300).exit(200);
    let ended = sim.engine.take_ended_jobs();
    let flooded = ended
        .iter()
        .find(|j| j.identity.run_id.as_deref() == Some("9001"))
        .unwrap();
    assert_eq!(
        flooded.findings_suppressed,
        1 + total as u64 - crate::engine::MAX_FINDINGS_PER_JOB as u64
    );
}

#[test]
fn a_lost_exit_record_is_not_a_process_that_outlived_its_step() {
    for (still_running, expected) in [(false, 0), (true, 1)] {
        let mut sim = Sim::with_config(
            empty_profile(),
            EngineConfig {
                dns_resolvers: vec![],
                agent_program: Some(MONITOR.into()),
                exfil_services: Default::default(),
                still_running: Some(if still_running {
                    |_, _| true
                } else {
                    |_, _| false
                }),
            },
        );
        sim.runner().run_step(300, "__run");
        // Its exit record never arrives (the ring was full); the machine says whether it runs.
        sim.spawn(
            300,
            310,
            "/usr/bin/sleep",
            &["sleep", "1"],
            WORKSPACE,
            github_env("__run"),
        );
        sim.exit(300);
        sim.finish();
        assert_eq!(
            sim.rules()
                .iter()
                .filter(|r| **r == "outlived-step")
                .count(),
            expected,
            "still running: {still_running}: {:#?}",
            sim.findings
        );
    }
}

/// A step's root making a sibling of itself under the Worker (`CLONE_PARENT`): the sibling is
/// the step's (the record names its maker), it may not end the job, and the control socket does
/// not take it for the runner's own.
#[test]
fn a_sibling_a_step_makes_under_the_worker_stays_the_steps() {
    let mut sim = Sim::new(empty_profile());
    sim.runner();
    assert_eq!(sim.hook(250, true), Ok(()), "the job-started hook");
    sim.exit(250);
    sim.run_step(300, "attack");
    sim.fork_sibling(300, 320);
    sim.exec(
        320,
        MONITOR,
        &["monitor", "hook", "job-completed"],
        WORKSPACE,
        github_env(""),
    );
    let refused = sim.control(
        Detail::JobEnd {
            job: "github/acme/app/9001/1/build".into(),
            via: "hook".into(),
        },
        320,
    );
    assert!(refused.is_err(), "a step's sibling may not end the job");
    let runner = sim.engine.runner_processes();
    assert!(runner.step_roots.contains(&320), "{runner:?}");
    assert_eq!(sim.engine.active_jobs(), 1);
}

/// A process an ended job left behind (a daemon of one of its steps) may not declare jobs: it
/// could fill its user's bound and have the next real job refused.
#[test]
fn a_process_an_ended_job_left_behind_declares_no_job() {
    let mut sim = Sim::new(empty_profile());
    sim.runner();
    assert_eq!(sim.hook(250, true), Ok(()), "the job-started hook");
    sim.exit(250);
    sim.run_step(300, "leave");
    sim.spawn(
        300,
        330,
        "/usr/bin/sleep",
        &["sleep", "1000"],
        WORKSPACE,
        github_env("leave"),
    );
    sim.exit(300);
    assert_eq!(sim.hook(260, false), Ok(()), "the job-completed hook");
    assert_eq!(sim.engine.active_jobs(), 0);
    let start_ticks = sim.enricher.table.by_tgid(330).unwrap().key.start_ticks;
    let refused = sim.control(
        Detail::JobStart {
            job: crate::ci::identity_from_env(&env(&[("MONITOR_JOB_ID", "squatter")]))
                .unwrap()
                .0,
            via: "job start".into(),
            requested_by_pid: 330,
            requested_by_uid: 1001,
            requested_by_start_ticks: start_ticks,
        },
        330,
    );
    assert!(refused.unwrap_err().contains("left behind"));
}
