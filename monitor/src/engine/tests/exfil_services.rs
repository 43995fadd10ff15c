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

#[test]
fn a_tls_hello_asking_for_another_site_than_the_address_was_resolved_from_is_fronting() {
    let mut sim = Sim::new(profile(
        "version: 1\negress:\n  allow: [\"cdn.allowed.example:443\"]\n  sni_aliases:\n    - { resolved: cdn.allowed.example, sni: \"*.allowed.example\" }\n",
    ));
    sim.runner().run_step(300, "__run");
    sim.resolve(300, "cdn.allowed.example", "10.0.0.5")
        .connect(300, "10.0.0.5", 443)
        .tls(300, "10.0.0.5", 443, "cdn.allowed.example")
        // An alias the profile lists.
        .tls(300, "10.0.0.5", 443, "static.allowed.example");
    assert!(sim.findings.is_empty(), "{:?}", sim.rules());
    sim.tls(300, "10.0.0.5", 443, "evil.example");
    let f = sim.only("sni-mismatch");
    assert_eq!(f.evidence["server_name"], "evil.example");
    assert_eq!(f.evidence["resolved_as"][0], "cdn.allowed.example");
    assert_eq!(f.evidence["server_name_allowed"], false);
    assert_eq!(
        f.allowance,
        Some(Allowance::SniAlias {
            resolved: "cdn.allowed.example".into(),
            sni: "evil.example".into()
        })
    );
}

#[test]
fn a_tls_hello_naming_an_exfiltration_service_is_reported_at_any_address() {
    let mut sim = Sim::new(profile(ALLOW_ALL));
    sim.runner().run_step(300, "__run");
    // A hard-coded address (no DNS), fronted or not: the name in the hello gives it away.
    sim.connect(300, "10.0.0.9", 443)
        .tls(300, "10.0.0.9", 443, "abc.trycloudflare.com");
    let f = sim.only("known-exfil-service");
    assert_eq!(f.evidence["via"], "tls-sni");
    assert_eq!(f.evidence["service_kind"], "tunnel");
}

#[test]
fn bad_sni_aliases_are_refused_with_their_line() {
    let e = Profile::parse(
        "version: 1\negress:\n  sni_aliases:\n    - { resolved: \"10.0.0.0/8\", sni: a.example }\n",
        "p.yml",
    )
    .unwrap_err();
    assert_eq!(e.line, 4, "{e}");
    assert!(e.message.contains("sni_aliases"), "{e}");
}

#[test]
fn a_direct_ip_https_connection_is_reported_with_the_server_name_it_asks_for() {
    let mut sim = Sim::new(profile(
        "version: 1\negress:\n  allow: [\"github.com:443\"]\n",
    ));
    sim.runner().run_step(300, "__run");
    // A hard-coded address asking for an allowed host: any server answers to any name, so
    // it is still reported, lower (a client with its own resolver, or an impostor).
    sim.connect(300, "10.0.0.5", 443)
        .tls(300, "10.0.0.5", 443, "github.com");
    let f = sim.only("unexpected-egress");
    assert_eq!(f.severity, Severity::Medium);
    assert_eq!(f.evidence["server_name_allowed"], true);
    sim.findings.clear();
    // The same way to a host the profile does not allow: reported with the name.
    sim.connect(300, "10.0.0.6", 443)
        .tls(300, "10.0.0.6", 443, "uploads.example.net");
    let f = sim.only("unexpected-egress");
    assert_eq!(f.severity, Severity::High);
    assert_eq!(f.evidence["server_name"], "uploads.example.net");
    assert!(f.summary.contains("uploads.example.net"), "{}", f.summary);
    // Learnt by its address: the name it asked for proves nothing.
    assert_eq!(
        f.allowance,
        Some(Allowance::Egress {
            address: "10.0.0.6".parse().unwrap(),
            port: 443,
            domain: None
        })
    );
}

#[test]
fn a_direct_ip_connection_without_a_hello_is_judged_after_its_wait_and_other_ports_at_once() {
    let mut sim = Sim::new(profile("version: 1\negress:\n  allow: []\n"));
    sim.runner().run_step(300, "__run");
    sim.connect(300, "10.0.0.7", 8080);
    assert_eq!(
        sim.rules(),
        vec!["unexpected-egress"],
        "not an HTTPS port: at once"
    );
    sim.connect(300, "10.0.0.8", 443);
    assert_eq!(sim.rules().len(), 1, "waiting for its hello");
    let later = sim.events.last().unwrap().ts_ns + crate::engine::network::HELLO_WAIT_NS + 1;
    let f = sim.engine.tick(later);
    sim.findings.extend(f);
    assert_eq!(sim.rules(), vec!["unexpected-egress", "unexpected-egress"]);
    assert!(
        sim.findings[1].summary.contains("direct-IP"),
        "{}",
        sim.findings[1].summary
    );
}
