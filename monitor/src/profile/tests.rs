use super::*;

fn parse(text: &str) -> Result<Profile, ProfileError> {
    Profile::parse(text, "p.yml")
}

#[test]
fn built_in_and_example_profiles_are_valid() {
    let p = Profile::default_profile();
    assert!(p
        .rules
        .egress
        .allow
        .iter()
        .any(|r| r.allows("127.0.0.1".parse().unwrap(), 9, None)));
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../profiles/example-node-app.yml"
    ))
    .unwrap();
    let p = parse(&example).unwrap();
    assert_eq!(p.steps.len(), 2);
    assert!(p.rules.lifecycle.allow[1].matches(Ecosystem::Npm, "@swc/core", Some("1.3.0")));
    assert!(!p.rules.lifecycle.allow[1].matches(Ecosystem::Npm, "@swc/core", Some("2.0.0")));
}

#[test]
fn unknown_keys_are_refused_with_file_line_and_column() {
    let err = parse("version: 1\negress:\n  alow:\n    - example.com\n").unwrap_err();
    assert_eq!(
        (err.file.as_str(), err.line, err.column),
        ("p.yml", 3, 3),
        "{err}"
    );
    assert!(err.message.contains("unknown field `alow`"), "{err}");
    let err = parse("version: 1\negres:\n  allow: []\n").unwrap_err();
    assert_eq!(err.line, 2, "{err}");
    assert!(err.message.contains("unknown field `egres`"), "{err}");
    let err = parse("version: 1\nsteps:\n  build:\n    lifecycle:\n      allow:\n        - {ecosystem: npm, pakage: x}\n").unwrap_err();
    assert_eq!(err.line, 6, "{err}");
    assert!(err.to_string().starts_with("p.yml:6:"), "{err}");
}

#[test]
fn bad_values_are_refused_where_they_stand() {
    let err = parse("version: 1\negress:\n  allow:\n    - good.example\n    - \"bad host!\"\n")
        .unwrap_err();
    assert_eq!(err.line, 5, "{err}");
    assert!(err.message.contains("not a domain"), "{err}");
    let err = parse("version: 1\nlifecycle:\n  allow:\n    - {ecosystem: maven, package: x}\n")
        .unwrap_err();
    assert_eq!(err.line, 4, "{err}");
    assert!(err.message.contains("maven"), "{err}");
    let err = parse("version: 1\ncredentials:\n  watch: [relative/token]\n").unwrap_err();
    assert_eq!(err.line, 3, "{err}");
    assert!(err.message.contains("absolute"), "{err}");
    let err = parse("version: 2\n").unwrap_err();
    assert!(
        err.message.contains("unsupported profile version 2"),
        "{err}"
    );
    let err = parse("egress: [\n").unwrap_err();
    assert!(err.line >= 1, "{err}");
    let err = Profile::load(Path::new("/nonexistent/profile.yml")).unwrap_err();
    assert!(
        err.to_string().starts_with("/nonexistent/profile.yml:"),
        "{err}"
    );
}

#[test]
fn step_sections_apply_to_the_named_step_only() {
    let p = parse("version: 1\nsteps:\n  publish:\n    egress:\n      allow: [1.2.3.4]\n  actions/checkout:\n    egress:\n      allow: [5.6.7.8]\n").unwrap();
    let step = |id: &str, action: Option<&str>| StepIdentity {
        id: id.into(),
        action: action.map(String::from),
    };
    let count = |s: &StepIdentity| p.rules_for(Some(s)).count();
    assert_eq!(count(&step("publish", None)), 2);
    assert_eq!(
        count(&step("__actions_checkout", Some("actions/checkout@v4"))),
        2
    );
    assert_eq!(count(&step("build", None)), 1);
    assert_eq!(p.rules_for(None).count(), 1);
}

#[test]
fn allowances_round_trip_through_yaml() {
    let mut p = Profile {
        version: 1,
        ..Default::default()
    };
    for a in [
        Allowance::Egress {
            address: "10.1.2.3".parse().unwrap(),
            port: 443,
            domain: None,
        },
        Allowance::Egress {
            address: "::1".parse().unwrap(),
            port: 80,
            domain: None,
        },
        Allowance::Lifecycle {
            ecosystem: Ecosystem::Npm,
            packages: vec!["esbuild".into()],
        },
        Allowance::Credentials {
            path: "/home/r/.npmrc".into(),
            by: "node".into(),
        },
        Allowance::Credentials {
            path: "/home/r/.npmrc".into(),
            by: "curl".into(),
        },
        Allowance::Executables {
            path: "/tmp/x[1]".into(),
        },
    ] {
        p.allow(&a);
        p.allow(&a);
    }
    assert_eq!(p.rules.egress.allow.len(), 2);
    assert_eq!(p.rules.credentials.allow[0].by, vec!["node", "curl"]);
    let yaml = p.to_yaml();
    let back = parse(&yaml).unwrap();
    assert_eq!(back, p, "{yaml}");
    assert!(back.rules.executables.allow.as_ref().unwrap()[0].matches("/tmp/x[1]"));
}

#[test]
fn wildcards() {
    assert!(wildcard_match("@types/*", "@types/node"));
    assert!(wildcard_match("*", ""));
    assert!(wildcard_match("a*b*c", "aXbYc"));
    assert!(!wildcard_match("a*b*c", "aXcYb"));
    assert!(!wildcard_match("esbuild", "esbuild-wasm"));
}

#[test]
fn responses_become_the_kernels_policy_and_typos_are_located() {
    use monitor_common::{
        POLICY_KILL_INSTALL_CREDENTIAL, POLICY_KILL_PROC_ENVIRON, POLICY_KILL_PROC_MEMORY,
        POLICY_REHEARSE,
    };
    let p = parse("version: 1\nresponses:\n  process-memory-read: kill\n  credential-read: kill\n")
        .unwrap();
    assert_eq!(
        p.responses.kernel_policy(),
        POLICY_KILL_PROC_MEMORY | POLICY_KILL_INSTALL_CREDENTIAL
    );
    assert!(p.responses.kills());
    // Round trip: what `profile learn` writes back keeps them.
    assert_eq!(parse(&p.to_yaml()).unwrap().responses, p.responses);

    let rehearsed =
        parse("version: 1\nresponses:\n  rehearse: true\n  process-environ-read: kill\n").unwrap();
    assert_eq!(
        rehearsed.responses.kernel_policy(),
        POLICY_KILL_PROC_ENVIRON | POLICY_REHEARSE
    );
    // A dropped program's exec: the kernel scans each new program for install scripts.
    let dropper = parse("version: 1\nresponses:\n  exec-of-job-written-file: kill\n").unwrap();
    assert_eq!(
        dropper.responses.kernel_policy(),
        monitor_common::POLICY_KILL_INSTALL_EXEC
    );
    assert!(dropper.responses.needs_exec_scan());
    assert!(dropper
        .responses
        .kills_for(crate::finding::RuleId::ExecFromTemp, true));
    assert!(!dropper
        .responses
        .kills_for(crate::finding::RuleId::ExecFromTemp, false));
    // Rehearsing nothing is nothing.
    let nothing = parse("version: 1\nresponses:\n  rehearse: true\n").unwrap();
    assert_eq!(nothing.responses.kernel_policy(), 0);
    assert!(
        !Profile::default_profile().responses.kills(),
        "audit by default"
    );

    let err = parse("version: 1\nresponses:\n  credential-reads: kill\n").unwrap_err();
    assert_eq!((err.line, err.column), (3, 3), "{err}");
    assert!(
        err.message.contains("unknown field `credential-reads`"),
        "{err}"
    );
    let err = parse("version: 1\nresponses:\n  credential-read: block\n").unwrap_err();
    assert_eq!(err.line, 3, "{err}");
    assert!(err.message.contains("unknown variant `block`"), "{err}");
}

#[test]
fn the_built_in_profiles_recommended_responses_parse_when_uncommented() {
    let start = DEFAULT_PROFILE
        .find("# responses:")
        .expect("the built-in profile documents the recommended responses");
    let uncommented: String = DEFAULT_PROFILE[start..]
        .lines()
        .take_while(|l| l.starts_with("# "))
        .map(|l| format!("{}\n", &l[2..]))
        .collect();
    let text = format!("{DEFAULT_PROFILE}{uncommented}");
    let p = parse(&text).unwrap();
    assert!(p.responses.rehearse);
    for rule in [
        crate::finding::RuleId::ProcessMemoryRead,
        crate::finding::RuleId::ProcessEnvironRead,
        crate::finding::RuleId::AgentTampering,
    ] {
        assert!(p.responses.kills_for(rule, false), "{rule:?}");
    }
    assert!(p
        .responses
        .kills_for(crate::finding::RuleId::CredentialRead, true));
    assert!(!p
        .responses
        .kills_for(crate::finding::RuleId::CredentialRead, false));
}
