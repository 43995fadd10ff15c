//! The two kinds of pattern a profile holds: path globs and egress destinations. Both are checked
//! while the profile is parsed, so a bad one is reported with its line and column.

use std::{fmt, net::IpAddr, str::FromStr};

use ipnet::IpNet;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A path glob: `*` within one component, `**` across components, `{a,b}` alternatives, and a
/// leading `~/` for any home directory (`/root` and `/home/*`).
#[derive(Clone)]
pub struct PathPattern {
    source: String,
    matcher: globset::GlobMatcher,
}

impl PathPattern {
    pub fn new(source: &str) -> Result<Self, String> {
        if source.is_empty() {
            return Err("empty path pattern".into());
        }
        let expanded = match source.strip_prefix("~/") {
            Some(rest) => format!("{{/root,/home/*}}/{rest}"),
            None if source.starts_with('/') || source.starts_with("**") => source.to_string(),
            None => {
                return Err(format!(
                    "path pattern {source:?} must be absolute, start with `~/` or with `**`"
                ))
            }
        };
        Ok(Self {
            source: source.to_string(),
            matcher: path_glob(source, &expanded)?,
        })
    }

    /// A pattern matching exactly this path (glob characters escaped).
    pub fn literal(path: &str) -> Self {
        let mut escaped = String::with_capacity(path.len());
        for c in path.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        Self::new(&escaped).unwrap_or_else(|_| Self::new("/nonexistent-literal").expect("valid"))
    }

    pub fn matches(&self, path: &str) -> bool {
        self.matcher.is_match(path)
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// A path glob's matcher, built from `expanded` (what `source` means); `/` is a separator `*`
/// does not cross.
fn path_glob(source: &str, expanded: &str) -> Result<globset::GlobMatcher, String> {
    globset::GlobBuilder::new(expanded)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|glob| glob.compile_matcher())
        .map_err(|e| format!("bad path pattern {source:?}: {e}"))
}

/// A glob type is its source text: compared, shown and written as it, read through `new` (so a
/// bad one is refused where the profile says it).
macro_rules! pattern_as_text {
    ($pattern:ident) => {
        impl PartialEq for $pattern {
            fn eq(&self, other: &Self) -> bool {
                self.source == other.source
            }
        }

        impl fmt::Debug for $pattern {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.source)
            }
        }

        impl Serialize for $pattern {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.source)
            }
        }

        impl<'de> Deserialize<'de> for $pattern {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                $pattern::new(&text).map_err(de::Error::custom)
            }
        }
    };
}

pattern_as_text!(PathPattern);
pattern_as_text!(RepoPattern);

/// A path glob inside the job's repository (`src/generated/**`, relative to the workspace), or
/// an absolute one: the globs of `sources.allow`.
#[derive(Clone)]
pub struct RepoPattern {
    source: String,
    matcher: globset::GlobMatcher,
    relative: bool,
}

impl RepoPattern {
    pub fn new(source: &str) -> Result<Self, String> {
        let relative = !source.starts_with('/');
        if source.is_empty() || source.split('/').any(|c| c == "..") {
            return Err(format!(
                "repository path pattern {source:?} is empty or climbs out with `..`"
            ));
        }
        Ok(Self {
            source: source.to_string(),
            matcher: path_glob(source, source)?,
            relative,
        })
    }

    /// A pattern matching exactly this path.
    pub fn literal(path: &str) -> Self {
        let escaped = globset::escape(path);
        Self::new(&escaped).unwrap_or_else(|_| Self::new("nonexistent-literal").expect("valid"))
    }

    /// Whether the file (`relative` to the workspace, `absolute`) matches.
    pub fn matches(&self, relative: &str, absolute: &str) -> bool {
        self.matcher
            .is_match(if self.relative { relative } else { absolute })
    }
}

/// Where a connection may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressTarget {
    /// A lowercase domain; a leading `*.` matches any subdomain (not the domain itself).
    Domain(String),
    /// An address or network.
    Network(IpNet),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRule {
    pub target: EgressTarget,
    /// Allowed ports; empty means any.
    pub ports: Vec<u16>,
}

impl EgressRule {
    /// A rule for `address` at `port`; port 0 (a ping: an echo has no port, and no connection
    /// or datagram goes to port 0) makes a rule for the address at any port, which is what
    /// allows an echo.
    pub fn address_port(address: IpAddr, port: u16) -> Self {
        Self {
            target: EgressTarget::Network(IpNet::from(address)),
            ports: Self::only(port),
        }
    }

    /// As `address_port`, for a domain.
    pub fn domain_port(domain: &str, port: u16) -> Self {
        Self {
            target: EgressTarget::Domain(domain.to_ascii_lowercase()),
            ports: Self::only(port),
        }
    }

    fn only(port: u16) -> Vec<u16> {
        match port {
            0 => Vec::new(),
            port => vec![port],
        }
    }

    /// Whether a connection to `address:port`, made for `domain` when it is known, is allowed.
    pub fn allows(&self, address: IpAddr, port: u16, domain: Option<&str>) -> bool {
        if !self.ports.is_empty() && !self.ports.contains(&port) {
            return false;
        }
        match &self.target {
            EgressTarget::Network(net) => net.contains(&address.to_canonical()),
            EgressTarget::Domain(pattern) => domain.is_some_and(|d| domain_matches(pattern, d)),
        }
    }

    /// True when this rule names `name` by domain (any port).
    pub fn names_domain(&self, name: &str) -> bool {
        matches!(&self.target, EgressTarget::Domain(pattern) if domain_matches(pattern, name))
    }

    /// True when this rule allows `name` (at `port`) by naming a domain at or under
    /// `service_domain`: the explicit allowance a known exfiltration service needs
    /// (`hooks.slack.com`, `*.ngrok-free.app`). Networks and wider domains (`*.app`) do not
    /// count: an allowlist written for a CDN must not open a request bin by accident.
    pub fn names_service(&self, service_domain: &str, name: &str, port: u16) -> bool {
        (self.ports.is_empty() || self.ports.contains(&port))
            && self.names_service_at_any_port(service_domain, name)
    }

    /// As `names_service`, whatever ports the rule lists (a DNS question names no port).
    pub fn names_service_at_any_port(&self, service_domain: &str, name: &str) -> bool {
        match &self.target {
            EgressTarget::Domain(pattern) => {
                let body = pattern.strip_prefix("*.").unwrap_or(pattern);
                domain_matches(pattern, name)
                    && crate::rules::exfil_services::covers(service_domain, body)
            }
            EgressTarget::Network(_) => false,
        }
    }

    /// True when this rule names exactly one address (the only way to allow a metadata endpoint:
    /// `0.0.0.0/0` must not open it by accident).
    pub fn names_exactly(&self, address: IpAddr) -> bool {
        matches!(&self.target, EgressTarget::Network(net)
            if net.prefix_len() == net.max_prefix_len() && net.addr() == address.to_canonical())
    }
}

/// Checks a domain pattern (`example.com`, `*.example.com`) as `egress.allow` takes it.
pub fn check_domain_pattern(pattern: &str) -> Result<(), String> {
    match parse_host(pattern)? {
        EgressTarget::Domain(_) => Ok(()),
        EgressTarget::Network(_) => Err(format!("{pattern:?} is an address, not a domain")),
    }
}

pub fn domain_matches(pattern: &str, domain: &str) -> bool {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(parent) => domain
            .strip_suffix(parent)
            .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        None => domain == pattern,
    }
}

fn parse_host(host: &str) -> Result<EgressTarget, String> {
    let host = host.trim();
    if let Ok(net) = IpNet::from_str(host) {
        return Ok(EgressTarget::Network(net.trunc()));
    }
    if let Ok(ip) = IpAddr::from_str(host.trim_start_matches('[').trim_end_matches(']')) {
        return Ok(EgressTarget::Network(IpNet::from(ip.to_canonical())));
    }
    let domain = host.to_ascii_lowercase();
    let body = domain.strip_prefix("*.").unwrap_or(&domain);
    let valid = !body.is_empty()
        && body.len() <= 253
        && body.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err(format!(
            "{host:?} is not a domain (`example.com`, `*.example.com`), an address or a network (`10.0.0.0/8`)"
        ));
    }
    Ok(EgressTarget::Domain(domain))
}

fn parse_port(text: &str) -> Result<u16, String> {
    text.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{text:?} is not a port (1-65535)"))
}

impl FromStr for EgressRule {
    type Err = String;

    /// `host`, `host:port`, `[v6]:port`, `10.0.0.0/8`, `::1`.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix('[') {
            let (addr, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: missing `]`"))?;
            let ports = match after.strip_prefix(':') {
                Some(port) => vec![parse_port(port)?],
                None if after.is_empty() => vec![],
                None => return Err(format!("{text:?}: expected `:port` after `]`")),
            };
            return Ok(Self {
                target: parse_host(addr)?,
                ports,
            });
        }
        // More than one colon and no brackets: a bare IPv6 address or network.
        if text.matches(':').count() > 1 {
            return Ok(Self {
                target: parse_host(text)?,
                ports: vec![],
            });
        }
        match text.split_once(':') {
            Some((host, port)) => Ok(Self {
                target: parse_host(host)?,
                ports: vec![parse_port(port)?],
            }),
            None => Ok(Self {
                target: parse_host(text)?,
                ports: vec![],
            }),
        }
    }
}

impl fmt::Display for EgressTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EgressTarget::Domain(d) => f.write_str(d),
            EgressTarget::Network(net) if net.prefix_len() == net.max_prefix_len() => {
                write!(f, "{}", net.addr())
            }
            EgressTarget::Network(net) => write!(f, "{net}"),
        }
    }
}

impl Serialize for EgressRule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let host = self.target.to_string();
        match self.ports.as_slice() {
            [] => s.serialize_str(&host),
            [port] => match &self.target {
                EgressTarget::Network(net) if net.addr().is_ipv6() => {
                    s.serialize_str(&format!("[{host}]:{port}"))
                }
                EgressTarget::Network(net) if net.prefix_len() != net.max_prefix_len() => {
                    HostPorts::serialize(
                        &HostPorts {
                            host,
                            ports: self.ports.clone(),
                        },
                        s,
                    )
                }
                _ => s.serialize_str(&format!("{host}:{port}")),
            },
            _ => HostPorts::serialize(
                &HostPorts {
                    host,
                    ports: self.ports.clone(),
                },
                s,
            ),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostPorts {
    host: String,
    #[serde(default)]
    ports: Vec<u16>,
}

impl<'de> Deserialize<'de> for EgressRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = EgressRule;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a destination (`host`, `host:port`, `10.0.0.0/8`) or {host, ports}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EgressRule, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<EgressRule, A::Error> {
                let raw = HostPorts::deserialize(de::value::MapAccessDeserializer::new(map))?;
                if raw.ports.contains(&0) {
                    return Err(de::Error::custom("port 0 is not a port (1-65535)"));
                }
                Ok(EgressRule {
                    target: parse_host(&raw.host).map_err(de::Error::custom)?,
                    ports: raw.ports,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_rules_parse_and_match() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let r: EgressRule = "*.githubusercontent.com".parse().unwrap();
        assert!(r.allows(ip("1.2.3.4"), 443, Some("raw.githubusercontent.com")));
        assert!(r.allows(ip("1.2.3.4"), 443, Some("a.b.GithubUserContent.com.")));
        assert!(!r.allows(ip("1.2.3.4"), 443, Some("githubusercontent.com")));
        assert!(!r.allows(ip("1.2.3.4"), 443, Some("evilgithubusercontent.com")));
        assert!(
            !r.allows(ip("1.2.3.4"), 443, None),
            "a domain rule needs the domain"
        );
        let r: EgressRule = "registry.npmjs.org:443".parse().unwrap();
        assert!(r.allows(ip("1.2.3.4"), 443, Some("registry.npmjs.org")));
        assert!(!r.allows(ip("1.2.3.4"), 80, Some("registry.npmjs.org")));
        let r: EgressRule = "10.0.0.0/8".parse().unwrap();
        assert!(r.allows(ip("10.9.8.7"), 1, None));
        assert!(
            r.allows(ip("::ffff:10.9.8.7"), 1, None),
            "IPv4-mapped is IPv4"
        );
        assert!(!r.allows(ip("11.0.0.1"), 1, None));
        let r: EgressRule = "[::1]:8080".parse().unwrap();
        assert!(r.allows(ip("::1"), 8080, None) && !r.allows(ip("::1"), 8081, None));
        let r: EgressRule = "fd00::/8".parse().unwrap();
        assert!(r.allows(ip("fd12::1"), 5, None));
        let r: EgressRule = "127.0.0.1:9000".parse().unwrap();
        assert!(r.names_exactly(ip("127.0.0.1")));
        assert!(!"0.0.0.0/0"
            .parse::<EgressRule>()
            .unwrap()
            .names_exactly(ip("169.254.169.254")));
        for bad in [
            "",
            "exa mple.com",
            "host:0",
            "host:99999",
            "[::1",
            "a..b",
            "*.",
            "1.2.3.4/40",
        ] {
            assert!(bad.parse::<EgressRule>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn egress_rules_serialize_back_to_what_parses_the_same() {
        for text in [
            "example.com",
            "*.example.com:443",
            "10.0.0.0/8",
            "1.2.3.4:80",
            "[::1]:53",
            "::1",
        ] {
            let rule: EgressRule = text.parse().unwrap();
            let yaml = serde_norway::to_string(&rule).unwrap();
            let back: EgressRule = serde_norway::from_str(&yaml).unwrap();
            assert_eq!(back, rule, "{text} -> {yaml}");
        }
    }

    #[test]
    fn path_patterns_expand_home_and_keep_components_apart() {
        let p = PathPattern::new("~/.ssh/id_*").unwrap();
        assert!(p.matches("/home/runner/.ssh/id_ed25519"));
        assert!(p.matches("/root/.ssh/id_rsa"));
        assert!(!p.matches("/home/runner/.ssh/keys/id_rsa"));
        let p = PathPattern::new("**/.env").unwrap();
        assert!(p.matches("/w/app/.env"));
        let lit = PathPattern::literal("/tmp/a[1]*.txt");
        assert!(lit.matches("/tmp/a[1]*.txt") && !lit.matches("/tmp/a1x.txt"));
        assert!(PathPattern::new("relative/path").is_err());
        assert!(PathPattern::new("/a/{b").is_err());
    }
}
