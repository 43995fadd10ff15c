//! Processes expected to outlive the step that started them: agents that tools start on demand
//! and that later steps use on purpose (`ssh-agent` started in one step, `ssh-add -l` in the
//! next; `gpg` starting `gpg-agent` and `keyboxd` on first use). Known by their installed path:
//! the kernel's executable, which a copy or a renamed program elsewhere does not have.

/// Installed agents (Debian, Ubuntu, Fedora paths).
const ON_DEMAND_AGENTS: &[&str] = &[
    "/usr/bin/ssh-agent",
    "/usr/bin/gpg-agent",
    "/usr/bin/dirmngr",
    "/usr/bin/keyboxd",
    "/usr/lib/gnupg/scdaemon",
    "/usr/lib/gnupg/keyboxd",
    "/usr/lib/gnupg2/scdaemon",
    "/usr/libexec/scdaemon",
    "/usr/libexec/keyboxd",
];

/// Whether `exe` is an agent tooling starts on demand and leaves running.
pub fn expected_agent(exe: &str) -> bool {
    ON_DEMAND_AGENTS.contains(&exe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_agents_only() {
        assert!(expected_agent("/usr/bin/ssh-agent"));
        assert!(expected_agent("/usr/bin/gpg-agent"));
        assert!(!expected_agent("/home/runner/.cache/ssh-agent"));
        assert!(!expected_agent("/tmp/gpg-agent"));
        assert!(!expected_agent("/usr/bin/sleep"));
    }
}
