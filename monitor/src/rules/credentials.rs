//! Credential files, and the tools that own them (`../shared/notes/threats.md`, "Where secrets
//! live on a CI runner"). A read by the owning tool is normal (npm reads `.npmrc`); a read by
//! anything else, or by the owning tool running inside a package's install hook, is a finding.

use std::sync::LazyLock;

use crate::profile::PathPattern;

use super::tool_matches;

pub struct CredentialKind {
    /// Short name shown in findings (`npm-token`, `ssh-key`).
    pub name: &'static str,
    pub patterns: Vec<PathPattern>,
    /// Paths that look like the patterns but are not secrets (CA bundles, public keys).
    pub except: Vec<PathPattern>,
    pub owners: &'static [&'static str],
}

fn kind(
    name: &'static str,
    patterns: &[&str],
    except: &[&str],
    owners: &'static [&'static str],
) -> CredentialKind {
    let compile = |list: &[&str]| {
        list.iter()
            .map(|p| PathPattern::new(p).expect("built-in credential pattern"))
            .collect()
    };
    CredentialKind {
        name,
        patterns: compile(patterns),
        except: compile(except),
        owners,
    }
}

pub static CREDENTIALS: LazyLock<Vec<CredentialKind>> = LazyLock::new(|| {
    vec![
        kind(
            "npm-token",
            &["**/.npmrc"],
            &[],
            &["npm", "npx", "yarn", "pnpm", "bun", "corepack"],
        ),
        kind(
            "yarn-token",
            &["**/.yarnrc", "**/.yarnrc.yml"],
            &[],
            &["yarn", "corepack"],
        ),
        kind(
            "pypi-token",
            &["~/.pypirc"],
            &[],
            &["twine", "pip", "poetry", "flit", "hatch", "uv", "pdm"],
        ),
        kind(
            "netrc",
            &["~/.netrc"],
            &[],
            &["curl", "git*", "pip", "wget", "poetry", "uv"],
        ),
        kind(
            "git-credentials",
            &["~/.git-credentials", "~/.config/git/credentials"],
            &[],
            &["git*"],
        ),
        // actions/checkout leaves the job's token in the workspace's .git/config (http.extraheader).
        kind(
            "git-config-token",
            &["**/.git/config"],
            &[],
            &["git*", "gh", "cargo"],
        ),
        kind(
            "gh-token",
            &["~/.config/gh/hosts.yml"],
            &[],
            &["gh", "git-credential-*"],
        ),
        kind(
            "ssh-key",
            &["~/.ssh/id_*", "/etc/ssh/ssh_host_*_key"],
            &["**/*.pub"],
            &[
                "ssh",
                "ssh-add",
                "ssh-keygen",
                "scp",
                "sftp",
                "ssh-agent",
                "sshd",
            ],
        ),
        kind(
            "aws-credentials",
            &["~/.aws/credentials", "~/.aws/config"],
            &[],
            &["aws", "terraform", "tofu"],
        ),
        kind(
            "gcloud-credentials",
            &["~/.config/gcloud/**"],
            &[],
            &["gcloud", "gsutil", "bq", "docker-credential-gcloud"],
        ),
        kind("azure-credentials", &["~/.azure/**"], &[], &["az"]),
        kind(
            "kube-config",
            &["~/.kube/config", "**/kubeconfig"],
            &[],
            &["kubectl", "helm", "k9s", "kustomize", "kind", "minikube"],
        ),
        kind(
            "kubernetes-service-account-token",
            &[
                "/var/run/secrets/kubernetes.io/serviceaccount/token",
                "/run/secrets/kubernetes.io/serviceaccount/token",
            ],
            &[],
            &["kubectl"],
        ),
        kind(
            "docker-config",
            &["~/.docker/config.json"],
            &[],
            &["docker", "docker-*", "buildx", "buildkitd"],
        ),
        kind(
            "cargo-token",
            &["~/.cargo/credentials", "~/.cargo/credentials.toml"],
            &[],
            &["cargo"],
        ),
        kind("gem-token", &["~/.gem/credentials"], &[], &["gem"]),
        kind("vault-token", &["~/.vault-token"], &[], &["vault"]),
        kind(
            "terraform-token",
            &["~/.terraform.d/credentials.tfrc.json", "~/.terraformrc"],
            &[],
            &["terraform", "tofu"],
        ),
        kind(
            "dotenv",
            &["**/.env", "**/.env.*"],
            &["**/node_modules/**"],
            &[],
        ),
        kind(
            "shadow",
            &["/etc/shadow", "/etc/gshadow"],
            &[],
            &[
                "sudo",
                "su",
                "unix_chkpwd",
                "passwd",
                "chage",
                "login",
                "sshd",
                "useradd",
                "usermod",
                "groupadd",
                "chpasswd",
                "pwck",
                "grpck",
            ],
        ),
        kind(
            "runner-credentials",
            &["**/.credentials", "**/.credentials_rsaparams", "**/.runner"],
            &[],
            &["Runner.Listener", "Runner.Worker"],
        ),
        // gpg-agent holds the secret keys and reads them for gpg (signing in release jobs);
        // anything else reading them is taking the key.
        kind(
            "gpg-private-key",
            &[
                "~/.gnupg/private-keys-v1.d/**",
                "~/.gnupg/secring.gpg",
                "**/.gnupg/private-keys-v1.d/**",
            ],
            &[],
            &["gpg*", "scdaemon", "keyboxd"],
        ),
        kind(
            "private-key",
            &["~/**/*.pem", "~/**/*.key", "~/**/*.p12", "~/**/*.pfx"],
            &[
                "**/node_modules/**",
                "**/site-packages/**",
                "**/.cache/**",
                "**/.rustup/**",
                "**/.cargo/registry/**",
                "**/*cert*",
                "**/*ca-bundle*",
            ],
            &[],
        ),
    ]
});

/// The built-in credential kind a path is, if any.
pub fn classify(path: &str) -> Option<&'static CredentialKind> {
    CREDENTIALS.iter().find(|k| {
        k.patterns.iter().any(|p| p.matches(path)) && !k.except.iter().any(|p| p.matches(path))
    })
}

impl CredentialKind {
    pub fn owned_by(&self, tool: &str) -> bool {
        self.owners.iter().any(|o| tool_matches(o, tool))
    }
}

/// For `<proc>/<pid>/{mem,environ,maps}` and `<proc>/<pid>/task/<tid>/...` (a thread's view of
/// the same memory): the process's pid and the file. Read from the end of the path, since the
/// kernel has already checked the file is on a proc file system, wherever it is mounted (a
/// container's `/proc`, a second mount elsewhere).
pub fn proc_target(path: &str) -> Option<(u32, &str)> {
    let mut parts = path.rsplit('/');
    let file = parts.next()?;
    if !matches!(file, "mem" | "environ" | "maps") {
        return None;
    }
    let pid_or_tid: u32 = parts.next()?.parse().ok()?;
    let mut rest = parts.clone();
    match (rest.next(), rest.next().and_then(|p| p.parse::<u32>().ok())) {
        (Some("task"), Some(pid)) => Some((pid, file)),
        _ => Some((pid_or_tid, file)),
    }
}

/// Whether a process lister opening other processes' `environ` is just listing them: procps-ng 4
/// `ps aux` opens every `/proc/<pid>/environ` without printing it. Asking `ps` for the
/// environment (the BSD `e` modifier, as in `ps auxeww`) dumps every job secret to the terminal,
/// so that stays a finding.
pub fn environ_read_is_listing(tool: &str, argv: &[String]) -> bool {
    match tool {
        "pgrep" | "pkill" | "pidof" | "top" | "htop" | "pstree" | "w" => true,
        "ps" => !argv
            .iter()
            .skip(1)
            .take_while(|a| a.as_str() != "--")
            .any(|a| {
                !a.starts_with('-') && a.chars().all(|c| c.is_ascii_alphabetic()) && a.contains('e')
            }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_listers_may_open_environ_unless_asked_to_print_it() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(environ_read_is_listing("ps", &v(&["ps", "aux"])));
        assert!(environ_read_is_listing("ps", &v(&["ps", "-ef"])));
        assert!(!environ_read_is_listing("ps", &v(&["ps", "auxeww"])));
        assert!(!environ_read_is_listing("ps", &v(&["ps", "e", "-p", "1"])));
        assert!(environ_read_is_listing("pgrep", &v(&["pgrep", "-f", "x"])));
        assert!(!environ_read_is_listing(
            "cat",
            &v(&["cat", "/proc/1/environ"])
        ));
    }

    #[test]
    fn gpg_agent_owns_the_gpg_key_store() {
        let key =
            "/home/runner/.gnupg/private-keys-v1.d/0123456789ABCDEF0123456789ABCDEF01234567.key";
        let kind = classify(key).expect("a gpg secret key");
        assert_eq!(kind.name, "gpg-private-key");
        assert!(kind.owned_by("gpg-agent") && kind.owned_by("gpg"));
        assert!(!kind.owned_by("node") && !kind.owned_by("curl"));
    }

    #[test]
    fn credential_paths_are_classified_with_their_owners() {
        let npmrc = classify("/home/runner/.npmrc").unwrap();
        assert_eq!(npmrc.name, "npm-token");
        assert!(npmrc.owned_by("npm") && !npmrc.owned_by("node") && !npmrc.owned_by("curl"));
        assert_eq!(
            classify("/home/runner/work/app/app/.git/config")
                .unwrap()
                .name,
            "git-config-token"
        );
        assert!(classify("/root/.ssh/id_ed25519").is_some());
        assert!(classify("/root/.ssh/id_ed25519.pub").is_none());
        assert!(classify("/root/.ssh/known_hosts").is_none());
        assert_eq!(classify("/etc/shadow").unwrap().name, "shadow");
        assert_eq!(classify("/w/app/.env.production").unwrap().name, "dotenv");
        assert!(classify("/w/app/node_modules/x/.env").is_none());
        assert!(
            classify("/home/u/.local/lib/python3.11/site-packages/certifi/cacert.pem").is_none()
        );
        assert_eq!(classify("/home/u/deploy.pem").unwrap().name, "private-key");
        assert!(classify("/usr/share/doc/readme").is_none());
        assert!(
            classify("/home/runner/.config/gcloud/application_default_credentials.json").is_some()
        );
    }

    #[test]
    fn proc_targets() {
        assert_eq!(proc_target("/proc/123/mem"), Some((123, "mem")));
        assert_eq!(proc_target("/proc/123/task/125/mem"), Some((123, "mem")));
        assert_eq!(
            proc_target("/proc/123/task/123/environ"),
            Some((123, "environ"))
        );
        // A second proc mount (a container's, or one the job made).
        assert_eq!(proc_target("/tmp/p/77/maps"), Some((77, "maps")));
        assert_eq!(proc_target("/proc/123/cmdline"), None);
        assert_eq!(proc_target("/proc/self/environ"), None);
    }
}
