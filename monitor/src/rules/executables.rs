//! Where programs written during a job are expected: package managers, toolchain installers and
//! builds put programs in known places all the time (`node_modules`, virtualenvs, `target/`, the
//! runner's tool cache, the job's own workspace). A program written during the job anywhere else
//! and then executed is what a dropper does.

/// Path fragments of places where tooling installs or builds programs.
const TOOLING_PLACES: &[&str] = &[
    "/node_modules/",
    "/site-packages/",
    "/dist-packages/",
    "/venv/",
    "/.venv/",
    "/target/",
    "/.cargo/",
    "/.rustup/",
    "/hostedtoolcache/",
    "/_tool/",
    "/go/pkg/",
    "/.npm/",
    "/.local/bin/",
    "/.local/share/pnpm/",
    "/.bun/",
    "/.deno/",
    "/.pyenv/",
    "/.nvm/",
];

/// Directories only the system package manager writes (an `apt-get install` in a job).
const SYSTEM_PLACES: &[&str] = &[
    "/usr/bin/",
    "/usr/sbin/",
    "/usr/lib/",
    "/usr/libexec/",
    "/bin/",
    "/sbin/",
];

/// Whether `exe`, written during a job, is in a place where tooling or the job's own build put it.
pub fn installed_by_tooling(exe: &str, workspace: Option<&str>) -> bool {
    if let Some(ws) = workspace.filter(|w| !w.is_empty()) {
        if super::path_within(exe, ws).is_some() {
            return true;
        }
    }
    TOOLING_PLACES.iter().any(|p| exe.contains(p))
        || SYSTEM_PLACES.iter().any(|p| exe.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_install_places_are_expected_elsewhere_is_not() {
        let ws = Some("/home/runner/work/app/app");
        assert!(installed_by_tooling(
            "/home/runner/work/app/app/build/tool",
            ws
        ));
        assert!(!installed_by_tooling(
            "/home/runner/work/app/app-evil/x",
            ws
        ));
        assert!(installed_by_tooling(
            "/home/runner/work/app/app/node_modules/esbuild/bin/esbuild",
            ws
        ));
        assert!(installed_by_tooling(
            "/opt/hostedtoolcache/node/20.1.0/x64/bin/node",
            ws
        ));
        assert!(installed_by_tooling("/usr/bin/jq", ws));
        assert!(!installed_by_tooling("/home/runner/.cache/x/payload", ws));
        assert!(!installed_by_tooling("/usr/local/bin/payload", ws));
        assert!(!installed_by_tooling(
            "/home/runner/.config/systemd/user/agent",
            None
        ));
    }
}
