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

/// Tools whose positional arguments are key files by design (`ssh-add ~/.ssh/id_ed25519`).
const TAKE_KEY_FILES: &[&str] = &["ssh-add", "ssh-keygen"];

/// Whether the command line names the credential it reads as a plain (positional) argument:
/// then even its owner reads it because it was told to (`git diff --no-index /dev/null
/// ~/.git-credentials`), which is no use of the credential. A path given as an option's value
/// (`git credential-store --file ~/.git-credentials`, `ssh -i key`) is the tool's own use.
/// `paths` are the names the file was reached by.
pub fn named_on_command_line(tool: &str, argv: &[String], paths: &[&str]) -> bool {
    if TAKE_KEY_FILES.contains(&tool) {
        return false;
    }
    // A relative name counts when it looks like a path (`./x`, `.npmrc`, `dir/x`): a bare word
    // is as likely a subcommand (`git config` is not `.git/config`).
    let names_it = |arg: &str| {
        let looks_like_path = arg.contains('/') || arg.starts_with('.');
        let arg = arg.trim_start_matches("./");
        looks_like_path
            && !arg.is_empty()
            && paths
                .iter()
                .any(|p| *p == arg || (!arg.starts_with('/') && p.ends_with(&format!("/{arg}"))))
    };
    argv.iter().enumerate().skip(1).any(|(i, arg)| {
        // After an option, or after what redaction hid (`git credential-store --file` keeps
        // neither word: it may have been an option).
        let before = &argv[i - 1];
        let after_option = i > 1 && (before.starts_with('-') || before == crate::redact::REDACTED);
        !arg.starts_with('-') && !after_option && names_it(arg)
    })
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
    fn credentials_named_on_the_command_line_are_read_on_request() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let creds = "/home/runner/.git-credentials";
        assert!(named_on_command_line(
            "git",
            &v(&["git", "diff", "--no-index", "/dev/null", creds]),
            &[creds]
        ));
        // An option's value is the tool's own use of it.
        assert!(!named_on_command_line(
            "git",
            &v(&["git", "credential-store", "--file", creds, "get"]),
            &[creds]
        ));
        assert!(!named_on_command_line(
            "git",
            &v(&["git", "fetch"]),
            &[creds]
        ));
        // A subcommand is not a file.
        assert!(!named_on_command_line(
            "git",
            &v(&["git", "config", "--global", "user.name", "x"]),
            &["/w/.git/config"]
        ));
        // Relative to the working directory.
        assert!(named_on_command_line(
            "npm",
            &v(&["npm", "x", "./.npmrc"]),
            &["/w/.npmrc"]
        ));
        let key = "/home/runner/.ssh/id_ed25519";
        assert!(!named_on_command_line(
            "ssh-add",
            &v(&["ssh-add", key]),
            &[key]
        ));
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
