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
    /// For git among the owners: the subcommands that may write here (checking a tree out);
    /// empty: any.
    pub git_subcommands: &'static [&'static str],
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
        git_subcommands: &[],
    }
}

/// git subcommands that write a work tree from commits (what actions/checkout and a job's own
/// checkout do). `git apply`, `am`, `config` and the rest write what the job hands them.
pub const GIT_CHECKOUT_SUBCOMMANDS: &[&str] = &[
    "clone",
    "checkout",
    "switch",
    "pull",
    "merge",
    "rebase",
    "reset",
    "restore",
    "stash",
    "cherry-pick",
    "revert",
    "read-tree",
    "checkout-index",
    "sparse-checkout",
    "submodule",
    "worktree",
];

pub static PLACES: LazyLock<Vec<PersistencePlace>> = LazyLock::new(|| {
    vec![
        // actions/checkout (git) writes them when it checks the repository out.
        PersistencePlace {
            git_subcommands: GIT_CHECKOUT_SUBCOMMANDS,
            ..place("workflow-file", &["**/.github/workflows/**"], &["git"])
        },
        place(
            "shell-startup",
            &[
                "~/.bashrc",
                "~/.bash_profile",
                "~/.profile",
                "~/.zshrc",
                "~/.zprofile",
                "~/.bash_logout",
                "~/.bash_login",
                "~/.shrc",
                "/etc/profile",
                "/etc/profile.d/**",
                "/etc/bash.bashrc",
                "/etc/environment",
                "/etc/zsh/**",
            ],
            &["rustup-init", "rustup"],
        ),
        // core.fsmonitor, core.hooksPath, core.sshCommand, aliases: configuration that runs code.
        place(
            "git-config",
            &["~/.gitconfig", "~/.config/git/config", "/etc/gitconfig"],
            &["git"],
        ),
        // git runs them; clone writes only inert `*.sample` files.
        PersistencePlace {
            except: vec![PathPattern::new("**/.git/hooks/*.sample").expect("built-in pattern")],
            ..place("git-hook", &["**/.git/hooks/**"], &[])
        },
        place(
            "systemd-system-unit",
            &["/etc/systemd/system/**", "/etc/systemd/user/**"],
            &["systemctl", "dpkg", "deb-systemd-helper"],
        ),
        place(
            "init-script",
            &["/etc/init.d/**", "/etc/rc.local", "/etc/rc*.d/**"],
            &["dpkg", "update-rc.d", "insserv"],
        ),
        // Every dynamically linked program loads what it names.
        place("ld-preload", &["/etc/ld.so.preload"], &[]),
        place(
            "systemd-user-unit",
            &["~/.config/systemd/user/**"],
            &["systemctl"],
        ),
        place(
            "ssh-authorized-keys",
            &["~/.ssh/authorized_keys", "~/.ssh/authorized_keys2"],
            &[],
        ),
        // sshd runs it at every login.
        place("ssh-rc", &["~/.ssh/rc", "/etc/ssh/sshrc"], &[]),
        place(
            "cron",
            &[
                "/etc/crontab",
                "/etc/cron.d/**",
                "/etc/cron.hourly/**",
                "/etc/cron.daily/**",
                "/etc/cron.weekly/**",
                "/etc/cron.monthly/**",
                "/var/spool/cron/**",
            ],
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
    /// Whether `tool` (run as `argv`) owns writes here: git only for the subcommands the place
    /// allows it.
    pub fn owned_by(&self, tool: &str, argv: &[String]) -> bool {
        self.owners.iter().any(|o| tool_matches(o, tool))
            && (self.git_subcommands.is_empty()
                || tool != "git"
                || git_subcommand(argv).is_some_and(|sub| self.git_subcommands.contains(&sub)))
    }
}

/// The subcommand of a git command line: the first word after git's own options (`-C dir`,
/// `-c key=value`, `--git-dir=...`).
pub fn git_subcommand(argv: &[String]) -> Option<&str> {
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-C" | "-c" | "--git-dir" | "--work-tree" | "--namespace" | "--exec-path"
            | "--config-env" => {
                args.next();
            }
            a if a.starts_with('-') => {}
            a => return Some(a),
        }
    }
    None
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
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let workflow = classify("/w/.github/workflows/ci.yml").unwrap();
        assert!(workflow.owned_by("git", &v(&["git", "-c", "a=b", "checkout", "--force", "x"])));
        assert!(workflow.owned_by("git", &v(&["git", "clone", "https://h/r"])));
        // `git apply` writes what the job hands it: not a checkout.
        assert!(!workflow.owned_by("git", &v(&["git", "apply", "p.diff"])));
        assert!(!workflow.owned_by("cp", &v(&["cp", "a", "b"])));
        for (path, place) in [
            ("/home/runner/.bash_login", "shell-startup"),
            ("/etc/profile", "shell-startup"),
            ("/etc/environment", "shell-startup"),
            ("/home/runner/.gitconfig", "git-config"),
            ("/home/runner/.config/git/config", "git-config"),
            ("/w/app/.git/hooks/pre-commit", "git-hook"),
            ("/etc/systemd/system/evil.service", "systemd-system-unit"),
            ("/etc/cron.daily/evil", "cron"),
            ("/etc/ld.so.preload", "ld-preload"),
            ("/home/runner/.ssh/rc", "ssh-rc"),
            ("/etc/init.d/evil", "init-script"),
        ] {
            assert_eq!(classify(path).map(|p| p.name), Some(place), "{path}");
        }
        assert!(classify("/w/app/.git/hooks/pre-commit.sample").is_none());
    }
}
