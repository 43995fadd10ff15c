//! Places whose modification makes code run later: in the next workflow run, the next shell, the
//! next login (`../shared/notes/threats.md`: Shai-Hulud, Nx, LiteLLM).

use std::sync::LazyLock;

use crate::profile::PathPattern;

use super::tool_matches;

pub struct PersistencePlace {
    pub name: &'static str,
    pub patterns: Vec<PathPattern>,
    /// Paths inside packages being unpacked are not persistence.
    pub except: Vec<PathPattern>,
    pub owners: &'static [&'static str],
}

fn place(
    name: &'static str,
    patterns: &[&str],
    owners: &'static [&'static str],
) -> PersistencePlace {
    let compile = |list: &[&str]| {
        list.iter()
            .map(|p| PathPattern::new(p).expect("built-in persistence pattern"))
            .collect()
    };
    PersistencePlace {
        name,
        patterns: compile(patterns),
        // Package managers' stores, by their layout (a job names its CARGO_HOME or npm cache
        // as it likes): unpacking a crate writes the crate's own `.github/workflows`, which no
        // CI ever runs (only a repository root's are).
        except: compile(&[
            "**/node_modules/**",
            "**/site-packages/**",
            "**/dist-packages/**",
            "**/registry/src/**",
            "**/registry/cache/**",
            "**/git/checkouts/**",
            "**/git/db/**",
            "**/_cacache/**",
            "**/vendor/**",
        ]),
        owners,
    }
}

pub static PLACES: LazyLock<Vec<PersistencePlace>> = LazyLock::new(|| {
    vec![
        // actions/checkout (git) writes them when it checks the repository out.
        place("workflow-file", &["**/.github/workflows/**"], &["git*"]),
        place(
            "shell-startup",
            &[
                "~/.bashrc",
                "~/.bash_profile",
                "~/.profile",
                "~/.zshrc",
                "~/.zprofile",
                "~/.bash_logout",
                "/etc/profile.d/**",
                "/etc/bash.bashrc",
            ],
            &["rustup-init", "rustup"],
        ),
        place(
            "systemd-user-unit",
            &["~/.config/systemd/user/**"],
            &["systemctl"],
        ),
        place("ssh-authorized-keys", &["~/.ssh/authorized_keys"], &[]),
        place(
            "cron",
            &["/etc/crontab", "/etc/cron.d/**", "/var/spool/cron/**"],
            &["crontab"],
        ),
        place(
            "sudoers",
            &["/etc/sudoers", "/etc/sudoers.d/**"],
            &["visudo"],
        ),
        place(
            "agent-settings",
            &[
                "**/.claude/settings*.json",
                "**/.vscode/tasks.json",
                "**/.vscode/settings.json",
            ],
            &[],
        ),
        place("autostart", &["~/.config/autostart/**"], &[]),
    ]
});

pub fn classify(path: &str) -> Option<&'static PersistencePlace> {
    PLACES.iter().find(|p| {
        p.patterns.iter().any(|pat| pat.matches(path)) && !p.except.iter().any(|e| e.matches(path))
    })
}

impl PersistencePlace {
    pub fn owned_by(&self, tool: &str) -> bool {
        self.owners.iter().any(|o| tool_matches(o, tool))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persistence_places() {
        assert_eq!(
            classify("/w/app/.github/workflows/ci.yml").unwrap().name,
            "workflow-file"
        );
        assert!(classify("/w/app/node_modules/x/.github/workflows/ci.yml").is_none());
        // cargo unpacking crates into a CARGO_HOME of any name.
        assert!(classify(
            "/w/cache/cargo-home/registry/src/index.crates.io-1949cf8c6b5b557f/quote-1.0.47/.github/workflows/ci.yml"
        )
        .is_none());
        assert!(classify("/w/app/vendor/ring/.github/workflows/ci.yml").is_none());
        assert_eq!(
            classify("/home/runner/.bashrc").unwrap().name,
            "shell-startup"
        );
        assert!(classify("/home/runner/.config/systemd/user/sysmon.service").is_some());
        assert!(classify("/home/runner/notes.txt").is_none());
        assert!(classify("/w/.github/workflows/ci.yml")
            .unwrap()
            .owned_by("git"));
    }
}
