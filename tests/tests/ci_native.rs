//! The runner's own machinery as an attack path: downloaded actions and the tool cache
//! rewritten so later jobs run the payload (`action-tampered`). A real agent, real writes by
//! the usual routes, the runner's job hooks as the README installs them.

use integration_tests::{by_rule, Agent, FakeRunner, ScratchExt4, MARKER_STEP};

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

/// Source rewritten between checkout and build (xz, SolarWinds): a checkout step clones the
/// repository into the workspace; a dependency's postinstall then edits `src/index.js`
/// (critical), a step appends to the build script `package.json` (high); the build writing the
/// committed `dist/index.js`, npm saving its lock file and `git checkout` of another branch
/// stay quiet. The edits really happened (the files changed).
#[test]
fn sources_rewritten_after_the_checkout_are_reported_and_builds_are_not() {
    let agent = Agent::start();
    let runner = FakeRunner::new();
    // The repository the checkout fetches: sources, a build script, committed build output.
    let origin = runner.dir.path().join("origin");
    std::fs::create_dir_all(origin.join("src")).unwrap();
    std::fs::create_dir_all(origin.join("dist")).unwrap();
    std::fs::write(origin.join("src/index.js"), "module.exports = 1;\n").unwrap();
    std::fs::write(origin.join("dist/index.js"), "built();\n").unwrap();
    std::fs::write(
        origin.join("package.json"),
        r#"{"name":"app","version":"1.0.0","scripts":{"build":"node -e \"require('fs').writeFileSync('dist/index.js','rebuilt();')\""}}"#,
    )
    .unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t", "-C"])
            .arg(&origin)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "init"]);
    git(&["branch", "feature"]);
    let inject = "const fs=require('fs');fs.appendFileSync('../../src/index.js','require(\"child_process\");\\n');";
    let tgz = integration_tests::npm_package(
        runner.dir.path(),
        "injector",
        r#""postinstall":"node inject.js""#,
        &[("inject.js", inject)],
    );
    let o = origin.display();
    runner.run_job_with_hooks(
        &[
            (
                "__actions_checkout uses actions/checkout@v4",
                &format!("git clone -q {o} .\n"),
            ),
            // The agent asks git once the checkout step has ended: the next step waits until
            // it says it watches the tracked files.
            (
                "wait",
                &format!(
                    "for i in $(seq 600); do grep -q 'tracked files for writes' {} && exit 0; sleep 0.1; done\n\
                     echo 'the agent did not watch the tracked files'; exit 1\n",
                    agent.dir.path().join("agent.log").display()
                ),
            ),
            (
                "install",
                &format!(
                    "npm install --offline --no-audit --no-fund {} > /dev/null 2>&1\n",
                    tgz.display()
                ),
            ),
            ("script", "echo ' ' >> package.json\n"),
            ("build", "npm run build > /dev/null 2>&1\n"),
            ("branch", "git checkout -q feature\n"),
            MARKER_STEP,
        ],
        Some(&agent.control_socket),
    );
    let workspace = &runner.workspace;
    let index = std::fs::read_to_string(workspace.join("src/index.js")).unwrap_or_default();
    assert!(
        index.contains("child_process"),
        "the injection did not happen: {index}"
    );
    let built = std::fs::read_to_string(workspace.join("dist/index.js")).unwrap();
    assert!(built.contains("rebuilt"), "{built}");

    let mine = agent.findings_through_marker(&runner);
    let modified = by_rule(&mine, "source-modified");
    let in_step = |step: &str| {
        modified
            .iter()
            .find(|f| f["step"]["id"] == step)
            .copied()
            .unwrap_or_else(|| panic!("no source-modified in {step}: {mine:#?}"))
    };
    let injected = in_step("install");
    assert_eq!(injected["evidence"]["file"], "src/index.js");
    assert_eq!(injected["severity"], "critical");
    assert_eq!(injected["hook"]["package"], "injector");
    let script = in_step("script");
    assert_eq!(script["evidence"]["file"], "package.json");
    assert_eq!(script["severity"], "high");
    for quiet in ["build", "branch", "__actions_checkout", "wait"] {
        assert!(
            !modified.iter().any(|f| f["step"]["id"] == quiet),
            "{quiet} raised: {modified:#?}"
        );
    }
    // Only the injected file and the build script: npm's own lock and manifest writes, the
    // build's output and git's checkout are not findings.
    assert_eq!(modified.len(), 2, "{modified:#?}");
}

/// A runner directory removed while watched leaves its identity in the kernel until the next
/// refresh, and ext4 gives its inode number to the next directory made (at once, here): a write
/// in that new directory, beside the runner's directories, is not a write in the runner's
/// actions. The runner lives on an ext4 file system of its own: ext4 puts a directory in its
/// parent's block group when it can, and on the shared disk, after many runs and beside
/// parallel tests, the group may be another and the number never comes back (CI once saw 1000
/// new directories without it). The new directories are made in the removed one's parent, and
/// the step proves the number was reused before it writes.
#[test]
fn a_removed_runner_directorys_reused_inode_is_not_a_runner_directory() {
    let agent = Agent::start();
    let fs = ScratchExt4::mount();
    let runner = FakeRunner::in_dir(&fs.path().join("runners"));
    let actions = runner.layout.actions();
    std::fs::create_dir_all(actions.join("actions/checkout/v4")).unwrap();
    let a = actions.display();
    let output = runner.run_job_with_hooks(
        &[
            (
                "reuse",
                &format!(
                    "sleep 1\n\
                     old=$(stat -c %i '{a}')\n\
                     rm -rf '{a}'\n\
                     cd \"$(dirname '{a}')\"\n\
                     for i in $(seq 1000); do\n\
                       mkdir \"fresh$i\"\n\
                       if [ \"$(stat -c %i fresh$i)\" = \"$old\" ]; then\n\
                         echo 'build();' > \"fresh$i/index.js\"; echo REUSED; break\n\
                       fi\n\
                     done\n"
                ),
            ),
            MARKER_STEP,
        ],
        Some(&agent.control_socket),
    );
    assert!(
        output.contains("REUSED"),
        "the file system did not reuse the inode number, the case was not made:\n{output}"
    );
    let mine = agent.findings_through_marker(&runner);
    let tampered = by_rule(&mine, "action-tampered");
    assert!(tampered.is_empty(), "{tampered:#?}");
}

/// A runner whose home holds a canary `.pypirc`, and an agent watching that home; with the
/// home's and the workspace's paths. The runner lives on an ext4 file system of its own (as in
/// the case above: on the shared disk a removed file's number may go elsewhere first), which
/// must outlive it.
fn runner_with_a_pypirc(fs: &ScratchExt4) -> (FakeRunner, Agent, String, String) {
    let runner = FakeRunner::in_dir(&fs.path().join("runners"));
    let (home, w) = (runner.home.clone(), runner.workspace.clone());
    std::fs::write(home.join(".pypirc"), "[pypi]\npassword = CANARY-PYPI\n").unwrap();
    let agent = Agent::start_with(&["--watch-home", &home.display().to_string()]);
    let (home_s, w_s) = (home.display().to_string(), w.display().to_string());
    (runner, agent, home_s, w_s)
}

/// A credential removed and its inode number given at once to a new file (ext4 does) is not
/// the credential: reading the new file is quiet. The step proves the number was reused.
/// (The hard link that outlives a removed key is still the key: `file_routes.rs`.)
#[test]
fn a_removed_credentials_reused_inode_number_is_not_the_credential() {
    let fs = ScratchExt4::mount();
    let (runner, agent, home_s, w_s) = runner_with_a_pypirc(&fs);
    let reused = format!(
        "old=$(stat -c %i '{home_s}/.pypirc')\n\
         rm '{home_s}/.pypirc'\n\
         for i in $(seq 100); do\n\
           echo notes > '{w_s}/new'$i.txt\n\
           if [ \"$(stat -c %i '{w_s}/new'$i.txt)\" = \"$old\" ]; then\n\
             cat '{w_s}/new'$i.txt > /dev/null; echo REUSED; break\n\
           fi\n\
         done\n"
    );
    let output = runner.run_job(&[("reused", &reused), MARKER_STEP]);
    assert!(
        output.contains("REUSED"),
        "the file system did not reuse the inode number, the case was not made:\n{output}"
    );
    let mine = agent.findings_through_marker(&runner);
    assert!(
        !mine.iter().any(|f| f["step"]["id"] == "reused"),
        "a new file with a removed key's number is not the key: {mine:#?}"
    );
}

/// The same, with the new file gone before the agent can look at it (the agent held still while
/// the step runs: a loaded agent reads its records late), and made without an open (`mknod`):
/// neither the file's creation time nor a creating open can tell it from the key then; the
/// inode's generation in the open record does (ext4 gives every inode it allocates a new one).
/// Without it this is a `credential-read` of the removed key.
#[test]
fn a_reused_inode_number_gone_before_the_agent_looks_is_not_the_credential() {
    let fs = ScratchExt4::mount();
    let (runner, agent, home_s, w_s) = runner_with_a_pypirc(&fs);
    let reused = format!(
        "old=$(stat -c %i '{home_s}/.pypirc')\n\
         rm '{home_s}/.pypirc'\n\
         for i in $(seq 1000); do\n\
           python3 -c 'import os, sys; os.mknod(sys.argv[1])' '{w_s}/new'$i\n\
           if [ \"$(stat -c %i '{w_s}/new'$i)\" = \"$old\" ]; then\n\
             cat '{w_s}/new'$i > /dev/null && echo REUSED\n\
             rm '{w_s}/new'$i; break\n\
           fi\n\
         done\n\
         rm -f '{w_s}'/new*\n"
    );
    // SAFETY: signals to the agent this test started.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGSTOP) };
    let output = runner.try_run_job_in(None, &[("reused", &reused), MARKER_STEP], None);
    unsafe { libc::kill(agent.pid() as i32, libc::SIGCONT) };
    assert!(output.0, "job failed: {}", output.1);
    assert!(
        output.1.contains("REUSED"),
        "the file system did not reuse the inode number, the case was not made:\n{}",
        output.1
    );
    let mine = agent.findings_through_marker(&runner);
    assert!(
        !mine.iter().any(|f| f["step"]["id"] == "reused"),
        "a new file with a removed key's number is not the key: {mine:#?}"
    );
}
