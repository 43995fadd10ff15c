//! Services that take data from anyone (request bins, paste and file drops, tunnels, chat
//! webhooks, out-of-band collectors): reaching one is exfiltration's shape before any profile or
//! baseline exists (`known-exfil-service`). The list is data (`profiles/exfil-services.yml`,
//! built in), replaceable from the agent's configuration; it is checked when loaded, with the
//! place of a mistake.

use std::path::Path;

use serde::Deserialize;

use crate::profile::{line_containing, parse_yaml, read_located, ProfileError};

/// The list shipped with the monitor.
pub const BUILT_IN: &str = include_str!("../../../profiles/exfil-services.yml");
pub const LIST_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExfilServices {
    pub version: u32,
    /// When the list was last revised (free text, reported with findings).
    #[serde(default)]
    pub updated: Option<String>,
    pub services: Vec<ExfilService>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExfilService {
    pub name: String,
    pub kind: ServiceKind,
    /// Each covers itself and its subdomains (lowercase, no trailing dot).
    pub domains: Vec<String>,
    /// A DNS question under it reaches the collector (the data is in the name asked).
    #[serde(default)]
    pub dns: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceKind {
    RequestBin,
    Paste,
    FileDrop,
    Tunnel,
    ChatWebhook,
    OutOfBand,
}

impl ServiceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::RequestBin => "request-bin",
            ServiceKind::Paste => "paste",
            ServiceKind::FileDrop => "file-drop",
            ServiceKind::Tunnel => "tunnel",
            ServiceKind::ChatWebhook => "chat-webhook",
            ServiceKind::OutOfBand => "out-of-band",
        }
    }

    /// What the service does with what it is sent, for a finding's summary.
    pub fn described(self) -> &'static str {
        match self {
            ServiceKind::RequestBin => "a request bin (it records every request for its owner)",
            ServiceKind::Paste => "a paste site",
            ServiceKind::FileDrop => "an anonymous file drop",
            ServiceKind::Tunnel => "a tunnel (a public name for a listener on someone's machine)",
            ServiceKind::ChatWebhook => "a chat webhook (it posts what it is sent into someone's channel)",
            ServiceKind::OutOfBand => {
                "an out-of-band collector (every question and request under it is logged for its owner)"
            }
        }
    }
}

/// A name on the list: the service and the listed domain it falls under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match<'a> {
    pub service: &'a ExfilService,
    pub domain: &'a str,
}

impl Default for ExfilServices {
    fn default() -> Self {
        Self::built_in()
    }
}

impl ExfilServices {
    pub fn built_in() -> Self {
        Self::parse(BUILT_IN, "profiles/exfil-services.yml (built in)")
            .expect("the built-in exfiltration list is checked by its test")
    }

    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        Self::parse(&read_located(path)?, &path.display().to_string())
    }

    /// Parses and checks a list: its version, and every domain a plain lowercase name.
    pub fn parse(text: &str, file: &str) -> Result<Self, ProfileError> {
        let list: ExfilServices = parse_yaml(text, file)?;
        let located = |needle: &str, message: String| ProfileError {
            file: file.to_string(),
            line: line_containing(text, needle),
            column: 1,
            message,
        };
        if list.version != LIST_VERSION {
            return Err(located(
                "version",
                format!(
                    "unsupported exfiltration list version {} (this monitor reads version {LIST_VERSION})",
                    list.version
                ),
            ));
        }
        for service in &list.services {
            if service.domains.is_empty() {
                return Err(located(
                    &service.name,
                    format!("service {:?} lists no domains", service.name),
                ));
            }
            for domain in &service.domains {
                if !is_plain_domain(domain) {
                    return Err(located(
                        domain,
                        format!(
                            "{domain:?} (service {:?}) is not a lowercase domain name (`example.com`; no wildcard: a domain covers its subdomains)",
                            service.name
                        ),
                    ));
                }
            }
        }
        Ok(list)
    }

    /// The listed service `name` falls under (the name itself or a parent domain listed).
    pub fn find(&self, name: &str) -> Option<Match<'_>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.services.iter().find_map(|service| {
            service
                .domains
                .iter()
                .find(|d| covers(d, &name))
                .map(|domain| Match {
                    service,
                    domain: domain.as_str(),
                })
        })
    }

    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

/// `domain` is `name` or a parent of it (`webhook.site` covers `abc.webhook.site`, not
/// `evilwebhook.site`).
pub fn covers(domain: &str, name: &str) -> bool {
    name == domain
        || name
            .strip_suffix(domain)
            .is_some_and(|head| head.ends_with('.'))
}

fn is_plain_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').count() >= 2
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_list_loads_and_names_the_usual_channels() {
        let list = ExfilServices::built_in();
        assert!(list.len() > 30, "{}", list.len());
        let hit = list.find("abc123.webhook.site").unwrap();
        assert_eq!(
            (hit.service.name.as_str(), hit.domain),
            ("webhook.site", "webhook.site")
        );
        assert_eq!(
            list.find("x.ngrok-free.app").unwrap().service.kind,
            ServiceKind::Tunnel
        );
        assert!(list.find("c59abc.oast.fun").unwrap().service.dns);
        assert!(
            list.find("Hooks.Slack.com.").is_some(),
            "case and the root dot do not hide it"
        );
        // Neighbours are not the service.
        assert!(list.find("evilwebhook.site").is_none());
        assert!(list.find("slack.com").is_none());
        assert!(list.find("registry.npmjs.org").is_none());
        assert!(list.find("github.com").is_none());
    }

    #[test]
    fn a_bad_list_is_refused_with_its_place() {
        let err = ExfilServices::parse(
            "version: 1\nservices:\n  - {name: a, kind: paste, domains: [ok.example]}\n  - {name: b, kind: paste, domains: [\"*.bad.example\"]}\n",
            "list.yml",
        )
        .unwrap_err();
        assert_eq!(err.line, 4, "{err}");
        assert!(err.message.contains("*.bad.example"), "{err}");
        let err = ExfilServices::parse(
            "version: 1\nservices:\n  - {name: a, kind: smoke-signal, domains: [ok.example]}\n",
            "list.yml",
        )
        .unwrap_err();
        assert_eq!(err.line, 3, "{err}");
        assert!(err.message.contains("smoke-signal"), "{err}");
        let err = ExfilServices::parse("version: 2\nservices: []\n", "list.yml").unwrap_err();
        assert!(
            err.to_string().starts_with("list.yml:1:1: unsupported"),
            "{err}"
        );
    }
}
