//! `runtime-service-call`: the CI's cache and artifact services, learnt from the runner's
//! variables, called from a step that is not a cache, artifact or setup action.

use super::*;

const CACHE_URL: &str = "https://artifactcache.example.net/Xyz123/";

/// An action step's environment: the step's variables, its action, and the service origins
/// the runner gives actions.
fn action_env(step: &str, action: &str) -> BTreeMap<String, String> {
    let mut vars = github_env(step);
    vars.insert("GITHUB_ACTION_REPOSITORY".into(), action.into());
    vars.insert("GITHUB_ACTION_REF".into(), "v4".into());
    vars.insert("ACTIONS_CACHE_URL".into(), CACHE_URL.into());
    vars.insert(
        "ACTIONS_RESULTS_URL".into(),
        "https://results-receiver.example.net/".into(),
    );
    vars.insert("GITHUB_SERVER_URL".into(), "https://github.com".into());
    vars
}

fn action_step(sim: &mut Sim, pid: u32, step: &str, action: &str) {
    sim.spawn(
        200,
        pid,
        "/usr/bin/node",
        &["node", "/home/runner/work/_actions/x/dist/index.js"],
        WORKSPACE,
        action_env(step, action),
    );
}

fn call_cache(sim: &mut Sim, pid: u32) {
    sim.resolve(pid, "artifactcache.example.net", "10.0.0.20")
        .connect(pid, "10.0.0.20", 443);
}

#[test]
fn a_run_step_calling_the_cache_service_is_reported_and_the_cache_action_is_not() {
    let mut sim = Sim::new(profile("version: 1\negress:\n  allow: [\"0.0.0.0/0\"]\n"));
    sim.runner();
    action_step(&mut sim, 300, "__actions_cache", "actions/cache");
    call_cache(&mut sim, 300);
    action_step(&mut sim, 310, "__actions_setup-node", "actions/setup-node");
    call_cache(&mut sim, 310);
    assert!(sim.findings.is_empty(), "{:?}", sim.rules());
    sim.run_step(400, "__run");
    call_cache(&mut sim, 400);
    let f = sim.only("runtime-service-call");
    assert_eq!(f.severity, Severity::High);
    assert_eq!(f.evidence["service_variable"], "ACTIONS_CACHE_URL");
    assert_eq!(f.evidence["endpoint"], "artifactcache.example.net:443");
    assert!(f.summary.contains("`run:` step"), "{}", f.summary);
    // The token beside the origin is never kept.
    assert!(!serde_json::to_string(f).unwrap().contains("Xyz123"));
    assert_eq!(
        f.allowance,
        Some(Allowance::RuntimeServices {
            step: "__run".into()
        })
    );
}

#[test]
fn a_poisoned_actions_post_step_calling_the_cache_is_reported() {
    let mut sim = Sim::new(empty_profile());
    sim.runner();
    action_step(&mut sim, 300, "__actions_checkout", "actions/checkout");
    call_cache(&mut sim, 300);
    let f = sim.only("runtime-service-call");
    assert_eq!(f.evidence["action"], "actions/checkout");
}

#[test]
fn a_step_or_an_action_the_profile_names_may_call_it() {
    let mut sim = Sim::new(profile(
        "version: 1\negress:\n  allow: [\"0.0.0.0/0\"]\nruntime_services:\n  actions: [\"my-org/*\"]\nsteps:\n  __run:\n    runtime_services: {allow: true}\n",
    ));
    sim.runner();
    action_step(&mut sim, 300, "__my-org_cacher", "My-Org/cacher");
    call_cache(&mut sim, 300);
    sim.run_step(400, "__run");
    call_cache(&mut sim, 400);
    assert!(sim.findings.is_empty(), "{:?}", sim.rules());
    sim.run_step(500, "__run_2");
    call_cache(&mut sim, 500);
    assert_eq!(sim.rules(), vec!["runtime-service-call"]);
}

#[test]
fn services_at_the_servers_own_origin_are_not_watched() {
    // GitHub Enterprise Server: the services live under the server's origin, which steps reach
    // for git and the API.
    let mut sim = Sim::new(empty_profile());
    sim.runner();
    let mut vars = action_env("__actions_checkout", "actions/checkout");
    vars.insert(
        "ACTIONS_CACHE_URL".into(),
        "https://ghes.example.net/_services/artifactcache/abc/".into(),
    );
    vars.insert(
        "GITHUB_SERVER_URL".into(),
        "https://ghes.example.net".into(),
    );
    sim.spawn(
        200,
        300,
        "/usr/bin/node",
        &["node", "index.js"],
        WORKSPACE,
        vars,
    );
    sim.run_step(400, "__run");
    sim.resolve(400, "ghes.example.net", "10.0.0.30")
        .connect(400, "10.0.0.30", 443);
    assert!(
        !sim.rules().contains(&"runtime-service-call"),
        "{:?}",
        sim.rules()
    );
}
