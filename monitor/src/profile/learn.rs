//! What `monitor profile learn` writes for a finding: a pattern that will hold for the next run,
//! not the literal values of this one. Temporary directories are random per run
//! (`/tmp/build-env-k2j4x8`), packages change versions, loopback servers listen on ephemeral
//! ports and key files are named by their key: a profile listing those literally raises the
//! same findings again on the next run. And learning never switches a rule into allowlist mode:
//! programs a job writes go to `executables.written`, never to `executables.allow`.

use ipnet::IpNet;

use super::{
    add_access_pattern, push_new, Allowance, EgressRule, EgressTarget, PathPattern, Profile,
};

impl Profile {
    /// Adds the generalised form of `allowance`; returns what it added (`section: entry`), or
    /// `None` when the profile already allowed it.
    pub fn learn(&mut self, allowance: &Allowance) -> Option<String> {
        let rules = &mut self.rules;
        match allowance {
            Allowance::Egress { address, .. } if address.to_canonical().is_loopback() => {
                let net: IpNet = if address.to_canonical().is_ipv4() {
                    "127.0.0.0/8".parse().expect("valid")
                } else {
                    "::1/128".parse().expect("valid")
                };
                let rule = EgressRule {
                    target: EgressTarget::Network(net),
                    ports: Vec::new(),
                };
                push_new(&mut rules.egress.allow, rule).then(|| {
                    format!("egress.allow: {net} (loopback, any port: local servers listen on ports picked per run)")
                })
            }
            Allowance::Credentials { path, by } | Allowance::Persistence { path, by } => {
                // `/proc/*/environ`-style allowances are patterns already.
                let glob = if path.starts_with("/proc/*/") {
                    path.clone()
                } else {
                    generalise_path(path)
                };
                let pattern = PathPattern::new(&glob).ok()?;
                let (list, section) = match allowance {
                    Allowance::Credentials { .. } => (&mut rules.credentials.allow, "credentials"),
                    _ => (&mut rules.persistence.allow, "persistence"),
                };
                add_access_pattern(list, pattern, by)
                    .then(|| format!("{section}.allow: {glob} by {by}"))
            }
            Allowance::Executables { path: p }
            | Allowance::WrittenProgram { path: p }
            | Allowance::Processes { executable: p }
            | Allowance::Packaging { path: p } => {
                let glob = generalise_path(p);
                let pattern = PathPattern::new(&glob).ok()?;
                let (list, section) = match allowance {
                    Allowance::Processes { .. } => {
                        (&mut rules.processes.background, "processes.background")
                    }
                    Allowance::Packaging { .. } => (&mut rules.packaging.allow, "packaging.allow"),
                    // Never `executables.allow`: that would switch on allowlist mode.
                    _ => (&mut rules.executables.written, "executables.written"),
                };
                push_new(list, pattern).then(|| format!("{section}: {glob}"))
            }
            Allowance::Egress { .. }
            | Allowance::Lifecycle { .. }
            | Allowance::Oidc { .. }
            | Allowance::RuntimeServices { .. }
            | Allowance::Sources { .. }
            | Allowance::SniAlias { .. }
            | Allowance::Containers { .. } => self.allow(allowance).then(|| describe(allowance)),
        }
    }
}

fn describe(allowance: &Allowance) -> String {
    match allowance {
        // Port 0: a ping (an echo has no port): the rule allows the address at any port.
        Allowance::Egress {
            address,
            port: 0,
            domain: Some(d),
        } => format!("egress.allow: {d} (seen at {address})"),
        Allowance::Egress {
            address,
            port: 0,
            domain: None,
        } => format!("egress.allow: {address}"),
        Allowance::Egress {
            address,
            port,
            domain: Some(d),
        } => format!("egress.allow: {d}:{port} (seen at {address})"),
        Allowance::Egress { address, port, .. } => format!("egress.allow: {address}:{port}"),
        Allowance::Lifecycle {
            ecosystem,
            packages,
        } => format!(
            "lifecycle.allow: {} {} (any version)",
            ecosystem.name(),
            packages.join(", ")
        ),
        Allowance::Oidc { step } => format!("steps.{step}.oidc.allow: true"),
        Allowance::RuntimeServices { step } => {
            format!("steps.{step}.runtime_services.allow: true")
        }
        Allowance::Containers { image } => format!("containers.allow: {image}"),
        Allowance::Sources { path, by } => format!("sources.allow: {path} by {by}"),
        Allowance::SniAlias { resolved, sni } => {
            format!("egress.sni_aliases: {sni} at addresses of {resolved}")
        }
        other => format!("{other:?}"),
    }
}

/// A glob for `path` that matches the same place in another run: each path component whose
/// tail is random per run (a temporary directory's suffix, a content hash, a key's id) or a
/// version becomes `*` there; everything else stays literal (glob characters escaped).
pub fn generalise_path(path: &str) -> String {
    path.split('/')
        .map(generalise_component)
        .collect::<Vec<_>>()
        .join("/")
}

fn generalise_component(component: &str) -> String {
    if component.is_empty() {
        return String::new();
    }
    if is_version(component.trim_start_matches('v')) {
        return "*".into();
    }
    // A name made only of a hash or an id (a gpg keygrip, a content address), extension kept.
    let (stem, extension) = match component.rsplit_once('.') {
        Some((s, e))
            if !s.is_empty() && e.len() <= 5 && e.chars().all(|c| c.is_ascii_alphabetic()) =>
        {
            (s, Some(e))
        }
        _ => (component, None),
    };
    if stem.len() >= 16 && stem.chars().all(|c| c.is_ascii_hexdigit()) {
        return match extension {
            Some(e) => format!("*.{}", escape(e)),
            None => "*".into(),
        };
    }
    // Temporary names: `tmpk2j4x8ab`, `.tmpAbC123` (Python's and Rust's tempfile).
    for prefix in [".tmp", "tmp"] {
        if let Some(rest) = component.strip_prefix(prefix) {
            if rest.len() >= 6 && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return format!("{}*", escape(prefix));
            }
        }
    }
    // `<name><sep><random or version>`: `build-env-k2j4x8`, `ring-1a2b3c4d5e6f7a8b`,
    // `ring-0.17.8`, `slugify_0123...`.
    for (i, sep) in component.char_indices().rev() {
        if !matches!(sep, '-' | '_') || i == 0 {
            continue;
        }
        let (name, tail) = (&component[..i], &component[i + 1..]);
        if is_version(tail.trim_start_matches('v')) || is_random(tail) {
            return format!("{}{sep}*", escape(name));
        }
        break;
    }
    escape(component)
}

/// `1.2.3`, `0.17.8-beta.1`, `20.1.0+build`: digits, a dot and more.
fn is_version(s: &str) -> bool {
    let core = s.split(['-', '+']).next().unwrap_or(s);
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() >= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// A per-run tail: 6+ letters and digits with at least one digit and one letter, or 8+ hex.
fn is_random(s: &str) -> bool {
    let alnum = s.chars().all(|c| c.is_ascii_alphanumeric());
    let digit = s.chars().any(|c| c.is_ascii_digit());
    let letter = s.chars().any(|c| c.is_ascii_alphabetic());
    alnum
        && ((s.len() >= 6 && digit && letter)
            || (s.len() >= 8 && s.chars().all(|c| c.is_ascii_hexdigit())))
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_run_names_become_globs_stable_names_stay() {
        for (path, glob) in [
            (
                "/tmp/build-env-k2j4x8ab/bin/python",
                "/tmp/build-env-*/bin/python",
            ),
            (
                "/tmp/pip-build-env-q1w2e3r4/overlay/bin/cmake",
                "/tmp/pip-build-env-*/overlay/bin/cmake",
            ),
            ("/tmp/tmpk2j4x8ab/x", "/tmp/tmp*/x"),
            (
                "/var/lib/t/.tmpAbC123/home/.cache/x",
                "/var/lib/t/.tmp*/home/.cache/x",
            ),
            (
                "/home/r/.gnupg/private-keys-v1.d/0123456789ABCDEF0123456789ABCDEF01234567.key",
                "/home/r/.gnupg/private-keys-v1.d/*.key",
            ),
            (
                "/w/target/debug/build/ring-1a2b3c4d5e6f7a8b/build-script-build",
                "/w/target/debug/build/ring-*/build-script-build",
            ),
            (
                "/opt/hostedtoolcache/node/20.1.0/x64/bin/node",
                "/opt/hostedtoolcache/node/*/x64/bin/node",
            ),
            (
                "/c/registry/src/index.crates.io-1949cf8c6b5b557f/ring-0.17.8/build.rs",
                "/c/registry/src/index.crates.io-*/ring-*/build.rs",
            ),
            ("/usr/bin/ssh-agent", "/usr/bin/ssh-agent"),
            ("/w/node_modules/.bin/tsc", "/w/node_modules/.bin/tsc"),
            (
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
            ),
            (
                "/w/site-packages/python3.11/x",
                "/w/site-packages/python3.11/x",
            ),
            ("/w/dist/[x].map", "/w/dist/\\[x\\].map"),
        ] {
            assert_eq!(generalise_path(path), glob, "{path}");
            let pattern = PathPattern::new(glob).unwrap();
            assert!(pattern.matches(path), "{glob} matches its own path");
        }
        assert!(
            PathPattern::new(&generalise_path("/tmp/build-env-k2j4x8ab/bin/python"))
                .unwrap()
                .matches("/tmp/build-env-zz99qq11/bin/python")
        );
    }

    #[test]
    fn learning_never_switches_on_allowlist_mode_and_loopback_ports_become_the_range() {
        let mut p = Profile {
            version: super::super::PROFILE_VERSION,
            ..Default::default()
        };
        let added = p
            .learn(&Allowance::WrittenProgram {
                path: "/tmp/build-env-k2j4x8ab/bin/python".into(),
            })
            .unwrap();
        assert_eq!(added, "executables.written: /tmp/build-env-*/bin/python");
        assert!(p.rules.executables.allow.is_none(), "no allowlist mode");
        let loopback = |port| Allowance::Egress {
            address: "127.0.0.1".parse().unwrap(),
            port,
            domain: None,
        };
        assert!(p.learn(&loopback(41234)).is_some());
        assert_eq!(p.learn(&loopback(39999)), None, "already allowed");
        assert!(p.rules.egress.allow[0].allows("127.0.0.1".parse().unwrap(), 50000, None));
        let back = Profile::parse(&p.to_yaml(), "learnt.yml").unwrap();
        assert_eq!(back.rules, p.rules);
    }

    #[test]
    fn a_learnt_ping_allows_the_address_at_any_port_and_loads_again() {
        let mut p = Profile {
            version: super::super::PROFILE_VERSION,
            ..Default::default()
        };
        let ping = Allowance::Egress {
            address: "10.78.0.9".parse().unwrap(),
            port: 0,
            domain: None,
        };
        assert_eq!(p.learn(&ping).as_deref(), Some("egress.allow: 10.78.0.9"));
        let back = Profile::parse(&p.to_yaml(), "learnt.yml").unwrap();
        assert_eq!(back.rules, p.rules);
        assert!(back.rules.egress.allow[0].allows("10.78.0.9".parse().unwrap(), 0, None));
    }
}
