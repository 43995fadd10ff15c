//! What honest builds do that looked like attacks: one scenario per false-positive class found
//! on real CI jobs (TypeScript, Python, signing), each with the attack it must not hide.

use super::*;

const PYTHON: &str = "/usr/bin/python3.11";
const HOOKS: &str =
    "/usr/lib/python3/dist-packages/pip/_vendor/pyproject_hooks/_in_process/_in_process.py";

fn rules_of<'a>(sim: &'a Sim, rule: &str) -> Vec<&'a Finding> {
    sim.findings.iter().filter(|f| f.rule == rule).collect()
}

#[test]
fn packing_an_ordinary_tsc_source_map_is_quiet_one_embedding_its_sources_is_not() {
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "pack");
    sim.spawn(
        300,
        310,
        NPM,
        &["node", "/usr/bin/npm", "pack"],
        WORKSPACE,
        github_env("pack"),
    );
    // `files: ["dist"]`: the map names sources that do not ship.
    sim.read_map(
        310,
        &format!("{WORKSPACE}/dist/index.js.map"),
        false,
        Some(false),
    );
    assert!(sim.findings.is_empty(), "{:#?}", sim.findings);
    sim.read_map(310, &format!("{WORKSPACE}/dist/cli.js.map"), true, None);
    let f = sim.only("packaged-sensitive-file");
    assert_eq!(f.evidence["path"], format!("{WORKSPACE}/dist/cli.js.map"));
    assert_eq!(f.evidence["kind"], "source map with embedded sources");
    // A map whose sources ship beside it.
    sim.read_map(
        310,
        &format!("{WORKSPACE}/dist/util.js.map"),
        false,
        Some(true),
    );
    let kinds: Vec<&str> = rules_of(&sim, "packaged-sensitive-file")
        .iter()
        .map(|f| f.evidence["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        vec![
            "source map with embedded sources",
            "source map shipped with its sources"
        ]
    );
}

#[test]
fn pep517_hook_calls_and_several_packages_are_one_finding_per_step() {
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "install");
    let mut pid = 310;
    for package in [
        "slugify_0123456789abcdef0123456789abcdef",
        "pyyaml_fedcba9876543210fedcba9876543210",
    ] {
        for hook in [
            "get_requires_for_build_wheel",
            "prepare_metadata_for_build_wheel",
            "build_wheel",
        ] {
            sim.spawn(
                300,
                pid,
                PYTHON,
                &["python3", HOOKS, hook, "/tmp/tmpx"],
                &format!("/tmp/pip-install-q1/{package}"),
                github_env("install"),
            );
            sim.exit(pid);
            pid += 1;
        }
    }
    // A cargo build script in the same step is another ecosystem: its own finding.
    sim.spawn(
        300,
        pid,
        "/home/runner/work/app/app/target/debug/build/ring-1a2b/build-script-build",
        &["build-script-build"],
        WORKSPACE,
        {
            let mut vars = github_env("install");
            vars.insert("CARGO_PKG_NAME".into(), "ring".into());
            vars.insert(
                "CARGO_MANIFEST_DIR".into(),
                "/home/runner/.cargo/registry/src/index.crates.io-1/ring-0.17.8".into(),
            );
            vars
        },
    );
    assert!(
        rules_of(&sim, "lifecycle-hook").is_empty(),
        "written when the step ends"
    );
    sim.exit(pid).exit(300);
    sim.finish();
    let hooks = rules_of(&sim, "lifecycle-hook");
    assert_eq!(hooks.len(), 2, "{:#?}", sim.findings);
    let pypi = hooks
        .iter()
        .find(|f| f.evidence["ecosystem"] == "pypi")
        .unwrap();
    let packages = pypi.evidence["packages"].as_array().unwrap();
    let names: Vec<&str> = packages
        .iter()
        .map(|p| p["package"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["pyyaml", "slugify"]);
    assert_eq!(packages[0]["scripts"].as_array().unwrap().len(), 3);
    assert_eq!(pypi.severity, Severity::Low);
    assert_eq!(
        pypi.allowance,
        Some(Allowance::Lifecycle {
            ecosystem: crate::profile::Ecosystem::Pypi,
            packages: vec!["pyyaml".into(), "slugify".into()],
        })
    );
    assert!(pypi.summary.contains("2 pypi packages"), "{}", pypi.summary);
}

#[test]
fn lifecycle_severity_is_configurable() {
    let mut sim = Sim::new(profile("version: 1\nlifecycle:\n  severity: medium\n"));
    sim.runner().run_step(300, "install");
    sim.spawn(
        300,
        310,
        PYTHON,
        &["python3", HOOKS, "build_wheel", "/tmp/tmpx"],
        "/tmp/pip-install-q1/slugify_0123456789abcdef0123456789abcdef",
        github_env("install"),
    );
    sim.finish();
    assert_eq!(sim.only("lifecycle-hook").severity, Severity::Medium);
}

#[test]
fn building_the_project_with_pypa_build_is_the_projects_code_in_tooling_places() {
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "build");
    // python -m build: an isolated environment in /tmp, then the wheel from the project's own
    // sdist unpacked in /tmp/build-via-sdist-*.
    sim.spawn(
        300,
        310,
        PYTHON,
        &["python3", "-m", "build"],
        WORKSPACE,
        github_env("build"),
    );
    sim.spawn(
        310,
        311,
        "/tmp/build-env-k2j4x8/bin/python",
        &[
            "/tmp/build-env-k2j4x8/bin/python",
            "-m",
            "pip",
            "install",
            "setuptools",
        ],
        WORKSPACE,
        github_env("build"),
    );
    sim.spawn(
        310,
        312,
        "/tmp/build-env-k2j4x8/bin/python",
        &[
            "/tmp/build-env-k2j4x8/bin/python",
            HOOKS,
            "build_wheel",
            "/tmp/tmpq",
        ],
        "/tmp/build-via-sdist-a1b2c3/acme_app-0.1.0",
        github_env("build"),
    );
    sim.exit(312).exit(311).exit(310);
    sim.finish();
    assert!(sim.findings.is_empty(), "{:#?}", sim.findings);

    // The same place, run by a step's own shell rather than the frontend that made it.
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "build");
    sim.spawn(
        300,
        310,
        "/tmp/build-env-k2j4x8/bin/python",
        &["/tmp/build-env-k2j4x8/bin/python", "-c", "pass"],
        WORKSPACE,
        github_env("build"),
    );
    sim.finish();
    assert_eq!(sim.rules(), vec!["exec-from-temp"]);
}

#[test]
fn gpg_agent_reads_its_key_store_anything_else_is_a_credential_read() {
    let key = "/home/runner/.gnupg/private-keys-v1.d/0123456789ABCDEF0123456789ABCDEF01234567.key";
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "sign");
    sim.spawn(
        300,
        310,
        "/usr/bin/gpg",
        &["gpg", "--detach-sign", "dist/app.tgz"],
        WORKSPACE,
        github_env("sign"),
    );
    sim.spawn(
        310,
        311,
        "/usr/bin/gpg-agent",
        &[
            "gpg-agent",
            "--homedir",
            "/home/runner/.gnupg",
            "--use-standard-socket",
            "--daemon",
        ],
        WORKSPACE,
        github_env("sign"),
    );
    sim.read(311, key);
    assert!(sim.findings.is_empty(), "{:#?}", sim.findings);
    sim.spawn(
        300,
        320,
        "/usr/bin/node",
        &["node", "steal.js"],
        WORKSPACE,
        github_env("sign"),
    );
    sim.read(320, key);
    let f = sim.only("credential-read");
    assert_eq!(f.evidence["credential"], "gpg-private-key");
}

#[test]
fn on_demand_agents_may_outlive_their_step_other_programs_may_not() {
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "keys");
    for (pid, exe) in [
        (310, "/usr/bin/ssh-agent"),
        (311, "/usr/bin/gpg-agent"),
        (312, "/home/runner/.cache/ssh-agent"),
    ] {
        sim.spawn(
            300,
            pid,
            exe,
            &[exe.rsplit('/').next().unwrap()],
            WORKSPACE,
            github_env("keys"),
        );
    }
    sim.exit(300);
    sim.finish();
    let outlived = rules_of(&sim, "outlived-step");
    assert_eq!(outlived.len(), 1, "{:#?}", sim.findings);
    assert_eq!(
        outlived[0].evidence["executable"],
        "/home/runner/.cache/ssh-agent"
    );
}
