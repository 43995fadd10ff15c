//! `action-tampered`: writes in the runner's downloaded actions and tool cache.

use super::*;

const ACTIONS: &str = "/home/runner/work/_actions";
const TOOLS: &str = "/home/runner/work/_tool";

fn setup_node_step(sim: &mut Sim, pid: u32) {
    let mut vars = github_env("__actions_setup-node");
    vars.insert(
        "GITHUB_ACTION_REPOSITORY".into(),
        "actions/setup-node".into(),
    );
    vars.insert("GITHUB_ACTION_REF".into(), "v4".into());
    sim.spawn(
        200,
        pid,
        "/usr/bin/node",
        &[
            "node",
            &format!("{ACTIONS}/actions/setup-node/v4/dist/setup/index.js"),
        ],
        WORKSPACE,
        vars,
    );
}

#[test]
fn a_step_rewriting_a_downloaded_action_is_reported() {
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "__run");
    // The job's own files and build output: quiet.
    sim.write(300, &format!("{WORKSPACE}/dist/index.js"));
    assert!(sim.findings.is_empty(), "{:?}", sim.rules());
    sim.write(300, &format!("{ACTIONS}/actions/checkout/v4/dist/index.js"));
    let f = sim.only("action-tampered");
    assert_eq!(f.severity, Severity::High);
    assert_eq!(f.evidence["place"], "runner actions");
    assert_eq!(f.evidence["runner_dir"], ACTIONS);
    assert!(f.summary.contains("every later job"), "{}", f.summary);
}

#[test]
fn install_time_code_poisoning_an_action_is_critical() {
    let mut sim = Sim::new(empty_profile());
    npm_stealer(&mut sim);
    sim.findings.clear();
    // The stealer (pid 330 exited in npm_stealer): a new hook process of the same install.
    let mut npm_env = github_env("__run");
    npm_env.extend(postinstall_of("evil-pkg"));
    sim.run_step(400, "__run_2");
    sim.spawn(
        400,
        410,
        "/usr/bin/node",
        &["node", "poison.js"],
        &format!("{WORKSPACE}/node_modules/evil-pkg"),
        npm_env,
    );
    sim.write(410, &format!("{ACTIONS}/actions/cache/v4/action.yml"));
    let f = sim
        .findings
        .iter()
        .find(|f| f.rule == "action-tampered")
        .unwrap_or_else(|| panic!("{:?}", sim.rules()));
    assert_eq!(f.severity, Severity::Critical);
}

#[test]
fn setup_actions_fill_the_tool_cache_and_other_steps_may_not() {
    let mut sim = Sim::new(empty_profile());
    sim.runner();
    setup_node_step(&mut sim, 300);
    // setup-node and the tar it starts unpack node into the cache.
    sim.spawn(
        300,
        310,
        "/usr/bin/tar",
        &["tar", "xzf", "node.tgz"],
        WORKSPACE,
        github_env("__actions_setup-node"),
    );
    sim.write(310, &format!("{TOOLS}/node/20.11.0/x64/bin/node"));
    assert!(sim.findings.is_empty(), "{:?}", sim.rules());
    // setup-node may not rewrite another action.
    sim.write(
        300,
        &format!("{ACTIONS}/actions/cache/v4/dist/save/index.js"),
    );
    assert_eq!(sim.rules(), vec!["action-tampered"]);
    sim.findings.clear();
    sim.run_step(400, "__run");
    sim.write(400, &format!("{TOOLS}/node/20.11.0/x64/bin/node"));
    assert_eq!(
        sim.only("action-tampered").evidence["place"],
        "runner tool cache"
    );
}

#[test]
fn a_write_the_profile_allows_and_one_reached_by_another_path() {
    let mut sim = Sim::new(profile(&format!(
        "version: 1\npersistence:\n  allow:\n    - {{ path: \"{ACTIONS}/my-org/composite/*/node_modules/**\", by: [npm] }}\n"
    )));
    sim.runner().run_step(300, "__run");
    sim.spawn(
        300,
        310,
        NPM,
        &["node", NPM_CLI, "ci"],
        WORKSPACE,
        github_env("__run"),
    );
    sim.write(
        310,
        &format!("{ACTIONS}/my-org/composite/v1/node_modules/x/index.js"),
    );
    assert!(sim.findings.is_empty(), "{:?}", sim.rules());
    // The kernel matched the directory by identity under another path (a bind mount).
    sim.open_with(
        300,
        "/mnt/actions-copy/actions/checkout/v4/dist/index.js",
        0x2,
        monitor_common::MATCH_SUBTREE,
    );
    let f = sim.only("action-tampered");
    assert_eq!(f.evidence["place"], "runner directory");
}

#[test]
fn package_managers_and_bytecode_caches_in_the_runners_directories_are_ordinary() {
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "__run");
    // `pip install` into setup-python's interpreter; `npm i -g` into setup-node's.
    sim.spawn(
        300,
        310,
        "/usr/bin/python3",
        &["python3", "-m", "pip", "install", "requests"],
        WORKSPACE,
        github_env("__run"),
    );
    sim.write(
        310,
        &format!("{TOOLS}/Python/3.12.1/x64/lib/python3.12/site-packages/requests/api.py"),
    );
    sim.spawn(
        300,
        320,
        NPM,
        &["node", NPM_CLI, "install", "-g", "yarn"],
        WORKSPACE,
        github_env("__run"),
    );
    sim.write(
        320,
        &format!("{TOOLS}/node/20.11.0/x64/lib/node_modules/yarn/package.json"),
    );
    // A Python action caching its bytecode beside its own files.
    sim.spawn(
        300,
        330,
        "/usr/bin/python3",
        &["python3", "main.py"],
        WORKSPACE,
        github_env("__run"),
    );
    sim.write(
        330,
        &format!("{ACTIONS}/acme/py-action/v1/__pycache__/main.cpython-312.pyc"),
    );
    assert!(sim.findings.is_empty(), "{:?}", sim.rules());
    // The same interpreter writing the action's code is tampering.
    sim.write(330, &format!("{ACTIONS}/acme/py-action/v1/main.py"));
    assert_eq!(sim.rules(), vec!["action-tampered"]);
}
