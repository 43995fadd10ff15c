//! Quiet on real builds: every job of the real-build corpus (`tests/corpus`, real packages from
//! the registries, real toolchains) runs as a CI job under the real agent with the built-in
//! profile and the runner's job hooks, and must raise no `high` or `critical` finding and at most
//! one `lifecycle-hook` finding per step and ecosystem. Then the monitor's own advice is followed:
//! a profile learnt from that run (`monitor profile learn --job`) must judge a second run of the
//! same job clean, except for an attack step injected at its end, which it must still find.
//! The same second run, on the same runner, is compared with the first by the job's baseline:
//! its honest steps must bring nothing new, the injected step must be `new-behaviour`.
//!
//! Each test prints its job's findings (a table in the test output) so precision can be read
//! off a run: `cargo test -p integration-tests --test corpus -- --nocapture`.

use std::path::{Path, PathBuf};

use integration_tests::{
    corpus::{self, step_refs},
    monitor_cli, rule, Agent, FakeRunner, Value,
};

/// The canary the injected attack steals (an AWS key file the job never uses).
const CANARY: &str = "aws_secret_access_key = CORPUSCANARYcorpuscanaryCORPUSCANARY00\n";

/// The job's JSON report, written by the time its job-completed hook returned.
fn report_of(agent: &Agent, runner: &FakeRunner, output: &str) -> Value {
    let path = agent.report_path(runner).unwrap_or_else(|| {
        panic!(
            "no report for run {}\njob:\n{output}\nagent:\n{}",
            runner.run_id,
            agent.log()
        )
    });
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn findings(report: &Value) -> Vec<Value> {
    report["findings"].as_array().cloned().unwrap_or_default()
}

fn table(name: &str, findings: &[Value]) -> String {
    let mut text = format!("{name}: {} finding(s)\n", findings.len());
    for f in findings {
        text.push_str(&format!(
            "  [{}] {} step {}: {}\n",
            f["severity"].as_str().unwrap_or("?"),
            rule(f),
            f["step"]["id"].as_str().unwrap_or("-"),
            f["summary"].as_str().unwrap_or("")
        ));
    }
    text
}

/// A step a compromised dependency or action would run: reads a credential file the job never
/// uses and keeps a copy, then drops a program in /tmp and runs it.
fn attack_step(runner: &FakeRunner) -> String {
    let ws = runner.workspace.display();
    format!(
        "base64 \"$HOME/.aws/credentials\" > '{ws}/.stolen'\n\
         printf '#!/bin/sh\\ntouch \"$1\"\\n' > /tmp/corpus-dropper-$$\n\
         chmod +x /tmp/corpus-dropper-$$\n\
         /tmp/corpus-dropper-$$ '{ws}/.dropped'\n\
         rm -f /tmp/corpus-dropper-$$\n"
    )
}

/// One corpus job at a time: every agent sees every job on the machine, so two heavy builds at
/// once double each agent's work (and make the test measure the machine, not the monitor).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_corpus_job(name: &str) {
    integration_tests::require_root();
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let job = corpus::job(name);
    // A baseline that judges from the second run on (learning one run, unstable after it).
    let baseline_dir = tempfile::tempdir().unwrap();
    let config = baseline_dir.path().join("monitor.yml");
    std::fs::write(
        &config,
        "version: 1\nbaseline:\n  learning_runs: 1\n  stable_after: 1\n  unstable_window: 1\n",
    )
    .unwrap();
    let db = baseline_dir.path().join("baseline.db");
    let mut agent = Agent::start_with(&[
        "--config",
        config.to_str().unwrap(),
        "--baseline",
        db.to_str().unwrap(),
    ]);

    // 1. The job as it is, under the built-in profile.
    let first = FakeRunner::outside_tmp();
    let home_before: Vec<std::ffi::OsString> = std::fs::read_dir(&first.home)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let steps = job.prepare(&first.workspace);
    let output = first.run_job_with_hooks(&step_refs(&steps), Some(&agent.control_socket));
    let report = report_of(&agent, &first, &output);
    let found = findings(&report);
    println!("{}", table(name, &found));
    let loud: Vec<&Value> = found
        .iter()
        .filter(|f| matches!(f["severity"].as_str(), Some("high" | "critical")))
        .collect();
    assert!(
        loud.is_empty(),
        "{name}: high or critical findings on a benign build:\n{}",
        table(name, &found)
    );
    let mut lifecycle: Vec<(String, String)> = found
        .iter()
        .filter(|f| rule(f) == "lifecycle-hook")
        .map(|f| {
            (
                f["step"]["id"].as_str().unwrap_or("").to_string(),
                f["evidence"]["ecosystem"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    let all = lifecycle.len();
    lifecycle.sort();
    lifecycle.dedup();
    assert_eq!(
        all,
        lifecycle.len(),
        "{name}: more than one lifecycle finding for a step and ecosystem:\n{}",
        table(name, &found)
    );
    assert_eq!(
        report["complete"], true,
        "{name}: the report must be complete: {}",
        report["incomplete_because"]
    );

    // 2. The same job again on the same runner (a fresh checkout in the same workspace, as
    // actions/checkout cleans it), with an attack step at its end.
    let first_run = first.run_id.clone();
    let mut second = first;
    second.run_id = format!("{first_run}2");
    // The workspace cleaned, and what the first run left in the home (keys it generated:
    // the corpus jobs are written for fresh runners) removed.
    let left_in_home = std::fs::read_dir(&second.home)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !home_before.contains(&e.file_name()))
        .map(|e| e.path());
    for path in std::fs::read_dir(&second.workspace)
        .unwrap()
        .map(|e| e.unwrap().path())
        .chain(left_in_home)
    {
        if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    std::fs::create_dir_all(second.home.join(".aws")).unwrap();
    std::fs::write(second.home.join(".aws/credentials"), CANARY).unwrap();
    let mut steps = job.prepare(&second.workspace);
    steps.push(("injected".to_string(), attack_step(&second)));
    let output = second.run_job_with_hooks(&step_refs(&steps), Some(&agent.control_socket));
    // The attack happened: the canary was read and the dropped program ran.
    let stolen = std::process::Command::new("base64")
        .arg("-d")
        .arg(second.workspace.join(".stolen"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&stolen.stdout),
        CANARY,
        "the attack step read the canary:\n{output}"
    );
    assert!(second.workspace.join(".dropped").exists(), "{output}");
    let second_report = report_of(&agent, &second, &output);
    // The baseline: the honest steps did nothing the first run did not; the injected step is
    // new behaviour (the canary's read, the dropped program).
    let new_outside: Vec<&Value> = second_report["baseline"]["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: no baseline section: {second_report:#}"))
        .iter()
        .filter(|s| s["step"] != "injected" && s["new"] != serde_json::json!([]))
        .collect();
    assert!(
        new_outside.is_empty(),
        "{name}: an honest step's second run did something new: {new_outside:#?}"
    );
    let found = findings(&second_report);
    let new: Vec<&Value> = found
        .iter()
        .filter(|f| rule(f) == "new-behaviour")
        .collect();
    assert!(
        !new.is_empty() && new.iter().all(|f| f["step"]["id"] == "injected"),
        "{name}: new-behaviour must be the injected step's only:\n{}",
        table(name, &found)
    );
    assert!(
        new.iter()
            .any(|f| f["evidence"]["kind"] == "credential-access"),
        "{name}: the canary's read is new:\n{}",
        table(name, &found)
    );
    agent.stop();
    // Rotated logs included: a busy machine fills the log quickly.
    let events = agent.event_logs();
    let event_args: Vec<&str> = events.iter().map(|p| p.to_str().unwrap()).collect();

    // 3. Learn from the first run, replay the second.
    let learnt: PathBuf = agent.dir.path().join(format!("{name}.yml"));
    let mut learn = vec![
        "profile",
        "learn",
        "--job",
        &first_run,
        "-o",
        learnt.to_str().unwrap(),
    ];
    learn.extend(&event_args);
    monitor_cli(&learn);
    let text = std::fs::read_to_string(&learnt).unwrap();
    println!("{name}: learnt profile:\n{text}");
    let yaml: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    assert!(
        yaml["executables"]["allow"].is_null(),
        "learning never switches on allowlist mode:\n{text}"
    );
    let replayed = replay(&learnt, &event_args, &second);
    println!(
        "{}",
        table(&format!("{name} (second run, learnt profile)"), &replayed)
    );
    let outside: Vec<&Value> = replayed
        .iter()
        .filter(|f| f["step"]["id"] != "injected")
        .collect();
    assert!(
        outside.is_empty(),
        "{name}: the learnt profile still finds on the second run:\n{}\nprofile:\n{text}",
        table(name, &replayed)
    );
    let attack: Vec<&str> = replayed.iter().map(rule).collect();
    for expected in ["credential-read", "exec-from-temp"] {
        assert!(
            attack.contains(&expected),
            "{name}: the learnt profile hides the attack ({expected} missing):\n{}\nprofile:\n{text}",
            table(name, &replayed)
        );
    }
}

/// The findings of `runner`'s job when `events` are judged by `profile`.
fn replay(profile: &Path, events: &[&str], runner: &FakeRunner) -> Vec<Value> {
    let mut args = vec!["replay", "--profile", profile.to_str().unwrap()];
    args.extend(events);
    let out = monitor_cli(&args);
    let all: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    runner.findings_of(&all)
}

macro_rules! corpus_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                run_corpus_job($name);
            }
        )*

        #[test]
        fn every_corpus_job_has_a_test() {
            let tested = [$($name),*];
            for job in corpus::jobs() {
                assert!(tested.contains(&job.name), "no test runs corpus job {}", job.name);
            }
        }
    };
}

corpus_tests! {
    ts_library_is_quiet => "ts-library",
    npm_monorepo_is_quiet => "npm-monorepo",
    node_addon_is_quiet => "node-addon",
    python_package_is_quiet => "python-package",
    python_c_extension_is_quiet => "python-c-extension",
    rust_crate_is_quiet => "rust-crate",
    cargo_workspace_is_quiet => "cargo-workspace",
    c_project_is_quiet => "c-project",
    sign_deploy_is_quiet => "sign-deploy",
}
