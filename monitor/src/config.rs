//! The agent's configuration file (`monitor run --config /etc/monitor/monitor.yml`): which
//! profile judges which jobs (per repository or workflow), and where outputs go. Validated like
//! profiles: unknown keys and bad values are refused with `file:line:column: problem`, and every
//! profile it names is loaded and checked too.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

pub use crate::profile::set::{ProfileChoice, ProfileSet};
use crate::{
    profile::{parse_yaml, Profile, ProfileError},
    rules::exfil_services::ExfilServices,
};

pub const CONFIG_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub version: u32,
    /// The profile for jobs no `profiles` entry picks (default: the built-in one).
    #[serde(default)]
    pub profile: Option<PathBuf>,
    /// First match wins.
    #[serde(default)]
    pub profiles: Vec<ProfileChoice>,
    #[serde(default)]
    pub events: Option<PathBuf>,
    #[serde(default)]
    pub findings: Option<PathBuf>,
    #[serde(default)]
    pub reports: Option<PathBuf>,
    #[serde(default)]
    pub metrics_address: Option<SocketAddr>,
    #[serde(default)]
    pub control_socket: Option<PathBuf>,
    #[serde(default)]
    pub control_group: Option<String>,
    #[serde(default)]
    pub log_max_bytes: Option<u64>,
    /// `audit` or `block`, for profiles that do not say (default: audit).
    #[serde(default)]
    pub egress_mode: Option<crate::profile::EgressMode>,
    /// Homes whose credentials are watched by identity from the start, beside `/root`,
    /// `/home/*` and `/etc/passwd`'s (runner users known only to LDAP, or kept elsewhere).
    #[serde(default)]
    pub watch_homes: Vec<PathBuf>,
    /// The Docker Engine API's socket (default /var/run/docker.sock); `none`: containers are
    /// told by their cgroup only.
    #[serde(default)]
    pub docker_socket: Option<PathBuf>,
    /// Other container runtimes' API sockets, replacing the built-in list (`[]` or `[none]`:
    /// only Docker's).
    #[serde(default)]
    pub runtime_sockets: Option<Vec<PathBuf>>,
    /// How containers are told apart: `auto` (default), `cgroup`, `mount-namespace`.
    #[serde(default)]
    pub container_identity: Option<crate::containers::ContainerIdentity>,
    /// A list of services that take data from anyone, replacing the built-in one
    /// (`profiles/exfil-services.yml`'s format; relative to this file's directory).
    #[serde(default)]
    pub exfil_services: Option<PathBuf>,
    /// Baselines across runs: the store (SQLite file or `postgres://` URL) and thresholds.
    #[serde(default)]
    pub baseline: Option<crate::baseline::BaselineConfig>,
    /// Where findings and job summaries are sent besides the logs (syslog, OTLP).
    #[serde(default)]
    pub outputs: Vec<crate::forward::OutputConfig>,
    /// The runner's pool and labels, as outputs name it.
    #[serde(default)]
    pub runner: Option<crate::forward::RunnerInfo>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let file = path.display().to_string();
        let text = crate::profile::read_located(path)?;
        let config: Config = parse_yaml(&text, &file)?;
        if config.version != CONFIG_VERSION {
            return Err(ProfileError {
                file,
                line: 1,
                column: 1,
                message: format!(
                    "unsupported configuration version {} (this monitor reads version {CONFIG_VERSION})",
                    config.version
                ),
            });
        }
        let mut names = std::collections::BTreeSet::new();
        for output in &config.outputs {
            let problem = output.problem().or_else(|| {
                (!names.insert(output.name.clone()))
                    .then(|| format!("two outputs are named {:?}", output.name))
            });
            if let Some(message) = problem {
                return Err(ProfileError {
                    line: crate::profile::line_containing(&text, &output.name),
                    column: 1,
                    file,
                    message: format!("outputs: {message}"),
                });
            }
        }
        if let Some(baseline) = &config.baseline {
            let problem = baseline.thresholds().check().err().or_else(|| {
                baseline
                    .store
                    .as_deref()
                    .filter(|s| s.starts_with("postgres"))
                    .and_then(|s| s.parse::<postgres::Config>().err())
                    .map(|e| format!("store: not a PostgreSQL URL: {e}"))
            });
            if let Some(message) = problem {
                return Err(ProfileError {
                    line: crate::profile::line_containing(&text, "baseline:"),
                    column: 1,
                    file,
                    message: format!("baseline: {message}"),
                });
            }
        }
        Ok(config)
    }

    /// Loads the configuration at `path` and every profile it names (relative to its directory).
    pub fn load_profiles(path: &Path) -> Result<ProfileSet, ProfileError> {
        Self::load(path)?.profiles_beside(path)
    }

    /// Loads every profile this configuration, read from `path`, names.
    pub fn profiles_beside(&self, path: &Path) -> Result<ProfileSet, ProfileError> {
        self.profiles(path.parent().unwrap_or(Path::new("/")))
    }

    /// The exfiltration list this configuration, read from `path`, names (the built-in one
    /// when it names none).
    pub fn exfil_services_beside(&self, path: &Path) -> Result<ExfilServices, ProfileError> {
        match &self.exfil_services {
            Some(list) if list.is_absolute() => ExfilServices::load(list),
            Some(list) => ExfilServices::load(&path.parent().unwrap_or(Path::new("/")).join(list)),
            None => Ok(ExfilServices::built_in()),
        }
    }

    /// Loads every profile the configuration names (relative to `base`).
    pub fn profiles(&self, base: &Path) -> Result<ProfileSet, ProfileError> {
        let load = |p: &Path| {
            let path = if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            };
            Profile::load(&path)
        };
        let default = match &self.profile {
            Some(p) => load(p)?,
            None => {
                let mut profile = Profile::default_profile();
                if profile.rules.egress.mode.is_none() {
                    profile.rules.egress.mode = self.egress_mode;
                }
                profile
            }
        };
        let chosen = self
            .profiles
            .iter()
            .map(|c| Ok((c.clone(), load(&c.profile)?)))
            .collect::<Result<_, ProfileError>>()?;
        Ok(ProfileSet { default, chosen })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ci::JobIdentity;

    fn job(repository: &str, workflow: &str) -> JobIdentity {
        JobIdentity {
            provider: "github".into(),
            key: format!("github/{repository}/1/1/build"),
            name: "build".into(),
            repository: Some(repository.into()),
            run_id: Some("1".into()),
            attempt: None,
            workflow: Some(workflow.into()),
            runner: None,
            workspace: None,
        }
    }

    #[test]
    fn profiles_are_chosen_per_repository_and_workflow_and_errors_are_located() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("strict.yml"),
            "version: 1\negress:\n  allow: []\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("release.yml"),
            "version: 1\negress:\n  allow: [10.0.0.0/8]\n",
        )
        .unwrap();
        let config_path = dir.path().join("monitor.yml");
        std::fs::write(
            &config_path,
            "version: 1\nprofile: strict.yml\nprofiles:\n  - { repository: \"acme/*\", workflow: Release, profile: release.yml }\n",
        )
        .unwrap();
        let config = Config::load(&config_path).unwrap();
        let set = config.profiles(dir.path()).unwrap();
        assert!(!set
            .for_job(&job("acme/app", "Release"))
            .rules
            .egress
            .allow
            .is_empty());
        assert!(set
            .for_job(&job("acme/app", "CI"))
            .rules
            .egress
            .allow
            .is_empty());
        assert!(set
            .for_job(&job("other/app", "Release"))
            .rules
            .egress
            .allow
            .is_empty());

        std::fs::write(
            &config_path,
            "version: 1\nprofiles:\n  - { repo: x, profile: a.yml }\n",
        )
        .unwrap();
        let e = Config::load(&config_path).unwrap_err().to_string();
        assert!(
            e.contains("monitor.yml:3:") && e.contains("unknown field `repo`"),
            "{e}"
        );
        std::fs::write(&config_path, "version: 1\nprofile: missing.yml\n").unwrap();
        let e = Config::load(&config_path)
            .unwrap()
            .profiles(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.yml"), "{e}");
    }

    #[test]
    fn an_exfiltration_list_replaces_the_built_in_one_and_its_errors_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("monitor.yml");
        std::fs::write(&config_path, "version: 1\n").unwrap();
        let config = Config::load(&config_path).unwrap();
        assert_eq!(
            config.exfil_services_beside(&config_path).unwrap(),
            ExfilServices::built_in()
        );
        std::fs::write(&config_path, "version: 1\nexfil_services: drops.yml\n").unwrap();
        std::fs::write(
            dir.path().join("drops.yml"),
            "version: 1\nservices:\n  - {name: a, kind: paste, domains: [paste.example]}\n",
        )
        .unwrap();
        let config = Config::load(&config_path).unwrap();
        let list = config.exfil_services_beside(&config_path).unwrap();
        assert!(list.find("x.paste.example").is_some());
        assert!(list.find("webhook.site").is_none());
        std::fs::write(
            dir.path().join("drops.yml"),
            "version: 1\nservices:\n  - {name: a, kind: paste, domains: [Paste.Example]}\n",
        )
        .unwrap();
        let e = config
            .exfil_services_beside(&config_path)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("drops.yml:3:") && e.contains("Paste.Example"),
            "{e}"
        );
    }

    #[test]
    fn the_baseline_section_is_read_and_its_errors_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("monitor.yml");
        std::fs::write(
            &path,
            "version: 1\nbaseline:\n  store: postgres://monitor@db.internal/baselines\n  learning_runs: 3\n",
        )
        .unwrap();
        let b = Config::load(&path).unwrap().baseline.unwrap();
        assert!(b.enabled);
        assert_eq!(b.thresholds().learning_runs, 3);
        assert_eq!(b.thresholds().stable_after, 5);
        for (text, needle) in [
            (
                "version: 1\n\nbaseline:\n  stable_after: 2\n  unstable_window: 4\n",
                ":3:1: baseline: unstable_window (4)",
            ),
            (
                "version: 1\nbaseline:\n  learning_runs: 0\n",
                ":2:1: baseline: learning_runs",
            ),
            (
                "version: 1\nbaseline:\n  store: postgres://a:b:c@/x?bad=1\n",
                ":2:1: baseline: store: not a PostgreSQL URL",
            ),
            ("version: 1\nbaseline:\n  stor: x\n", "stor"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = Config::load(&path).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn outputs_are_read_and_their_errors_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("monitor.yml");
        std::fs::write(
            &path,
            "version: 1\noutputs:\n  - name: siem\n    type: syslog\n    address: \"siem:514\"\n    min_severity: high\n  - {name: logs, type: otlp, endpoint: \"http://c:4318/v1/logs\", records: [findings]}\n",
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.outputs.len(), 2);
        assert_eq!(
            config.outputs[0].min_severity,
            Some(crate::finding::Severity::High)
        );
        assert_eq!(config.outputs[1].kind, crate::forward::OutputKind::Otlp);
        for (text, needle) in [
            ("version: 1\noutputs:\n  - {name: a, type: syslog}\n", ":3:1: outputs: output a: syslog needs `address: host:port`"),
            ("version: 1\noutputs:\n\n  - {name: b, type: syslog, address: \"h:1\", transport: tls}\n", ":4:1: outputs: output b: `transport: tls` and a `tls:` section"),
            ("version: 1\noutputs:\n  - {name: c, type: otlp, endpoint: \"ftp://x\"}\n", ":3:1: outputs: output c: endpoint \"ftp://x\" is not an http(s) URL"),
            ("version: 1\noutputs:\n  - {name: d, type: syslog, address: \"h:1\", facility: local9}\n", "unknown facility"),
            ("version: 1\noutputs:\n  - {name: e, type: syslog, address: \"h:1\"}\n  - {name: e, type: syslog, address: \"h:2\"}\n", "two outputs are named \"e\""),
            ("version: 1\noutputs:\n  - {name: Bad Name, type: syslog, address: \"h:1\"}\n", "must be 1 to 64 of"),
            ("version: 1\noutputs:\n  - {name: f, type: kafka}\n", "kafka"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = Config::load(&path).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
