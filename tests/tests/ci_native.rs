//! The runner's own machinery as an attack path: downloaded actions and the tool cache
//! rewritten so later jobs run the payload (`action-tampered`). A real agent, real writes by
//! the usual routes, the runner's job hooks as the README installs them.

use integration_tests::{by_rule, Agent, FakeRunner, MARKER_STEP};

/// Steps rewrite a downloaded action by appending, by `sed -i`, and deep inside its
/// `node_modules`, and a `run:` step puts a binary in the tool cache: each is reported, and the
/// kernel found each by the directories' identity (the names `index.js`, `action.yml`, `x.js`
/// are watched nowhere else). Twins: the runner extracting an action (its own work, outside every
/// step), a build writing its own `dist/index.js`, setup-node filling the tool cache.
#[test]
fn rewriting_the_runners_actions_or_tool_cache_is_reported_and_the_runners_own_work_is_not() {
    let agent = Agent::start();
    let runner = FakeRunner::new();
    let actions = runner.layout.actions();
    let tools = runner.layout.tool_cache();
    // What the Worker downloaded for earlier jobs.
    let checkout = actions.join("actions/checkout/v4");
    std::fs::create_dir_all(checkout.join("dist")).unwrap();
    std::fs::write(
        checkout.join("action.yml"),
        "runs:\n  using: node20\n  main: dist/index.js\n",
    )
    .unwrap();
    std::fs::write(checkout.join("dist/index.js"), "checkout();\n").unwrap();
    let deep = actions.join("acme/lint/v1/node_modules/a/b/c/lib");
    std::fs::create_dir_all(&deep).unwrap();
    let (a, t) = (actions.display(), tools.display());
    runner.run_job_with_hooks(
        &[
            // The Worker extracting another action: the runner's own work.
            (
                "",
                &format!("mkdir -p {a}/actions/cache/v4/dist && echo 'cache();' > {a}/actions/cache/v4/dist/index.js\n"),
            ),
            ("append", &format!("echo 'steal();' >> {a}/actions/checkout/v4/dist/index.js\n")),
            ("sed", &format!("sed -i 's/node20/node16/' {a}/actions/checkout/v4/action.yml\n")),
            ("deep", &format!("echo 'steal();' > {a}/acme/lint/v1/node_modules/a/b/c/lib/x.js\n")),
            ("build", "mkdir -p dist && echo 'app();' > dist/index.js\n"),
            (
                "__actions_setup-node uses actions/setup-node@v4",
                &format!("mkdir -p {t}/node/20.11.0/x64/bin && echo node > {t}/node/20.11.0/x64/bin/node\n"),
            ),
            ("tool", &format!("echo payload > {t}/node/20.11.0/x64/bin/npx\n")),
            MARKER_STEP,
        ],
        Some(&agent.control_socket),
    );
    // The writes happened.
    let index = std::fs::read_to_string(checkout.join("dist/index.js")).unwrap();
    assert!(index.contains("steal();"), "{index}");
    let yml = std::fs::read_to_string(checkout.join("action.yml")).unwrap();
    assert!(yml.contains("node16"), "{yml}");
    assert!(deep.join("x.js").exists());
    assert!(tools.join("node/20.11.0/x64/bin/npx").exists());
    assert!(actions.join("actions/cache/v4/dist/index.js").exists());

    let mine = agent.findings_through_marker(&runner);
    let tampered = by_rule(&mine, "action-tampered");
    let in_step = |step: &str| {
        tampered
            .iter()
            .find(|f| f["step"]["id"] == step)
            .copied()
            .unwrap_or_else(|| panic!("no action-tampered in {step}: {mine:#?}"))
    };
    assert_eq!(in_step("append")["evidence"]["place"], "runner actions");
    assert_eq!(
        in_step("append")["evidence"]["path"],
        format!("{a}/actions/checkout/v4/dist/index.js")
    );
    in_step("sed");
    in_step("deep");
    assert_eq!(in_step("tool")["evidence"]["place"], "runner tool cache");
    for quiet in ["job", "build", "__actions_setup-node"] {
        assert!(
            !tampered.iter().any(|f| f["step"]["id"] == quiet),
            "{quiet} raised: {tampered:#?}"
        );
    }
    // Found by the directory's identity: the kernel said so on the open.
    let events = agent.events();
    let deep_open = events
        .iter()
        .find(|e| {
            e["kind"] == "open"
                && e["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/c/lib/x.js"))
        })
        .unwrap_or_else(|| panic!("no open event for the deep write"));
    assert!(
        deep_open["matched"].to_string().contains("subtree"),
        "{deep_open:#}"
    );
}
