//! `known-exfil-service`: a service that takes data from anyone is reported whatever the
//! allowlist says, unless an entry names the service itself; a question under an out-of-band
//! collector is reported without any connection.

use super::*;

/// A profile that allows everywhere, as a team that gave up on listing would write it.
const ALLOW_ALL: &str =
    "version: 1\negress:\n  allow: [\"0.0.0.0/0\", \"::/0\", \"*.site\", \"*.app\"]\n";

#[test]
fn a_request_bin_is_reported_even_when_the_allowlist_allows_everything() {
    let mut sim = Sim::new(profile(ALLOW_ALL));
    sim.runner().run_step(300, "__run");
    // An ordinary destination under the broad allowlist: quiet.
    sim.resolve(300, "registry.example.org", "10.0.0.5")
        .connect(300, "10.0.0.5", 443);
    assert!(sim.findings.is_empty(), "{:?}", sim.rules());
    sim.resolve(300, "abc123.webhook.site", "10.0.0.9")
        .connect(300, "10.0.0.9", 443);
    let f = sim.only("known-exfil-service");
    assert_eq!(f.severity, Severity::Critical);
    assert_eq!(f.evidence["service"], "webhook.site");
    assert_eq!(f.evidence["service_kind"], "request-bin");
    assert_eq!(f.evidence["domain"], "abc123.webhook.site");
    assert!(f.summary.contains("request bin"), "{}", f.summary);
    // Not learnable: the allowance is written by hand.
    assert!(f.allowance.is_none());
}

#[test]
fn a_tunnel_is_reported_instead_of_unexpected_egress() {
    let mut sim = Sim::new(profile("version: 1\negress:\n  allow: []\n"));
    sim.runner().run_step(300, "__run");
    sim.resolve(300, "x7.ngrok-free.app", "10.0.0.7")
        .connect(300, "10.0.0.7", 443);
    assert_eq!(
        sim.rules(),
        vec!["known-exfil-service"],
        "one finding, not two"
    );
    assert_eq!(sim.findings[0].evidence["service_kind"], "tunnel");
}

#[test]
fn only_an_entry_naming_the_service_allows_it() {
    for (allow, allowed) in [
        ("hooks.slack.com:443", true),
        ("\"*.slack.com:443\"", false),
        ("\"*.com\"", false),
        ("0.0.0.0/0", false),
        ("hooks.slack.com:8443", false),
    ] {
        let mut sim = Sim::new(profile(&format!(
            "version: 1\negress:\n  allow: [{allow}]\n"
        )));
        sim.runner().run_step(300, "__run");
        sim.resolve(300, "hooks.slack.com", "10.0.0.8")
            .connect(300, "10.0.0.8", 443);
        let rules = sim.rules();
        if allowed {
            assert!(rules.is_empty(), "{allow}: {rules:?}");
        } else {
            assert!(rules.contains(&"known-exfil-service"), "{allow}: {rules:?}");
        }
    }
}

#[test]
fn a_question_under_an_out_of_band_collector_is_the_finding_and_others_are_not() {
    let mut sim = Sim::new(profile(ALLOW_ALL));
    sim.runner().run_step(300, "__run");
    // The answer is never read: the question reached the collector anyway.
    sim.ask(300, "c0ffee1234.oast.fun");
    let f = sim.only("known-exfil-service");
    assert_eq!(f.evidence["service"], "Interactsh");
    assert_eq!(f.evidence["via"], "dns-question");
    // A request bin needs a connection: its name alone is not one.
    let mut sim = Sim::new(profile(ALLOW_ALL));
    sim.runner().run_step(300, "__run");
    sim.ask(300, "webhook.site").ask(300, "github.com");
    assert!(sim.findings.is_empty(), "{:?}", sim.rules());
}

#[test]
fn a_replacement_list_is_the_one_used() {
    let list = crate::rules::exfil_services::ExfilServices::parse(
        "version: 1\nservices:\n  - {name: Team drop, kind: file-drop, domains: [drop.example]}\n",
        "list.yml",
    )
    .unwrap();
    let mut sim = Sim::with_config(
        profile(ALLOW_ALL),
        EngineConfig {
            exfil_services: std::sync::Arc::new(list),
            ..Default::default()
        },
    );
    sim.runner().run_step(300, "__run");
    sim.resolve(300, "webhook.site", "10.0.0.9")
        .connect(300, "10.0.0.9", 443);
    assert!(
        sim.findings.is_empty(),
        "the built-in list was replaced: {:?}",
        sim.rules()
    );
    sim.resolve(300, "up.drop.example", "10.0.0.10")
        .connect(300, "10.0.0.10", 443);
    assert_eq!(
        sim.only("known-exfil-service").evidence["service"],
        "Team drop"
    );
}
