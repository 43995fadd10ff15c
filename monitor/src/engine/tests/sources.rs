//! `source-modified`: the repository's tracked files written after the checkout.

use super::*;
use crate::engine::SourceRequest;

/// actions/checkout runs and ends: the engine asks the agent to watch what git tracks.
fn checked_out(sim: &mut Sim) {
    sim.runner();
    let mut vars = github_env("__actions_checkout");
    vars.insert("GITHUB_ACTION_REPOSITORY".into(), "actions/checkout".into());
    vars.insert("GITHUB_ACTION_REF".into(), "v4".into());
    sim.spawn(
        200,
        250,
        "/usr/bin/node",
        &["node", "index.js"],
        WORKSPACE,
        vars,
    );
    sim.exit(250);
}

fn write_tracked(sim: &mut Sim, pid: u32, relative: &str) {
    sim.open_with(
        pid,
        &format!("{WORKSPACE}/{relative}"),
        0x2,
        monitor_common::MATCH_SOURCE,
    );
}

#[test]
fn the_end_of_the_checkout_step_asks_for_the_tracked_files() {
    let mut sim = Sim::new(empty_profile());
    checked_out(&mut sim);
    assert_eq!(
        sim.engine.take_source_requests(),
        vec![SourceRequest::Watch {
            job: "github/acme/app/9001/1/build".into(),
            workspace: WORKSPACE.into()
        }]
    );
    // Other steps ending ask nothing.
    sim.run_step(300, "__run").exit(300);
    assert!(sim.engine.take_source_requests().is_empty());
}

#[test]
fn a_step_editing_tracked_files_is_reported_by_what_they_are() {
    let mut sim = Sim::new(empty_profile());
    checked_out(&mut sim);
    sim.run_step(300, "__run");
    write_tracked(&mut sim, 300, "src/index.js");
    write_tracked(&mut sim, 300, "package.json");
    write_tracked(&mut sim, 300, ".github/workflows/ci.yml");
    let found: Vec<(String, Severity)> = sim
        .findings
        .iter()
        .filter(|f| f.rule == "source-modified")
        .map(|f| (f.evidence["file"].as_str().unwrap().to_string(), f.severity))
        .collect();
    assert_eq!(
        found,
        vec![
            ("src/index.js".into(), Severity::Medium),
            ("package.json".into(), Severity::High),
            (".github/workflows/ci.yml".into(), Severity::High),
        ]
    );
}

#[test]
fn install_time_code_editing_a_source_is_critical() {
    let mut sim = Sim::new(empty_profile());
    checked_out(&mut sim);
    npm_stealer(&mut sim);
    sim.findings.clear();
    let mut npm_env = github_env("__run");
    npm_env.extend(postinstall_of("evil-pkg"));
    sim.run_step(400, "__run_2");
    sim.spawn(
        400,
        410,
        "/usr/bin/node",
        &["node", "inject.js"],
        &format!("{WORKSPACE}/node_modules/evil-pkg"),
        npm_env,
    );
    write_tracked(&mut sim, 410, "src/index.js");
    let f = sim.only("source-modified");
    assert_eq!(f.severity, Severity::Critical);
}

#[test]
fn git_package_managers_build_output_and_listed_generators_may() {
    let mut sim = Sim::new(profile(
        "version: 1\nsources:\n  allow:\n    - { path: \"src/generated/**\", by: \"protoc*\" }\n",
    ));
    checked_out(&mut sim);
    sim.run_step(300, "__run");
    sim.spawn(
        300,
        310,
        "/usr/bin/git",
        &["git", "checkout", "feature"],
        WORKSPACE,
        github_env("__run"),
    );
    write_tracked(&mut sim, 310, "src/index.js");
    sim.spawn(
        300,
        320,
        NPM,
        &["node", NPM_CLI, "install", "left-pad"],
        WORKSPACE,
        github_env("__run"),
    );
    write_tracked(&mut sim, 320, "package.json");
    write_tracked(&mut sim, 320, "package-lock.json");
    sim.spawn(
        300,
        330,
        "/usr/bin/protoc",
        &["protoc", "--js_out=src/generated"],
        WORKSPACE,
        github_env("__run"),
    );
    write_tracked(&mut sim, 330, "src/generated/api_pb.js");
    // A repository that commits its build output (a JavaScript action's dist/).
    write_tracked(&mut sim, 300, "dist/index.js");
    assert!(sim.findings.is_empty(), "{:?}", sim.rules());
    // npm may save its manifest, not the sources; protoc its output, not the rest.
    write_tracked(&mut sim, 320, "src/index.js");
    write_tracked(&mut sim, 330, "src/api.js");
    assert_eq!(sim.rules(), vec!["source-modified", "source-modified"]);
}
