//! Where programs written during a job are expected: package managers, toolchain installers and
//! builds put programs in known places all the time (`node_modules`, virtualenvs, `target/`, the
//! runner's tool cache, the job's own workspace). A program written during the job anywhere else
//! and then executed is what a dropper does.

use super::lifecycle::{temp_component, Frontend};

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
    // The runner's copies of the actions a job uses, and pre-commit's of its hooks.
    "/_actions/",
    "/.cache/pre-commit/",
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

/// Where an installed program lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallPlace {
    /// The system's and the toolchain managers' directories.
    System,
    /// The runner's tool cache (`actions/setup-*` fill it during jobs).
    ToolCache,
}

/// Directories packages and toolchain managers install programs into (not build outputs, not
/// dependency trees: a program there is what its name says only if nobody wrote it lately).
const INSTALL_ROOTS: &[&str] = &[
    "/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/", "/opt/", "/snap/",
];
const INSTALL_PLACES: &[&str] = &[
    "/.cargo/bin/",
    "/.rustup/toolchains/",
    "/.nvm/versions/",
    "/.pyenv/versions/",
    "/.local/bin/",
    "/.local/share/pnpm/",
    "/.bun/bin/",
    "/.deno/bin/",
    "/.volta/",
];
const TOOL_CACHES: &[&str] = &["/hostedtoolcache/", "/_tool/"];

/// Whether `program` lives where programs are installed, and which kind of place.
pub fn installed_place(program: &str) -> Option<InstallPlace> {
    if TOOL_CACHES.iter().any(|p| program.contains(p)) {
        Some(InstallPlace::ToolCache)
    } else if INSTALL_ROOTS.iter().any(|p| program.starts_with(p))
        || INSTALL_PLACES.iter().any(|p| program.contains(p))
    {
        Some(InstallPlace::System)
    } else {
        None
    }
}

/// Temporary directories build frontends make for themselves and run programs from: isolated
/// build environments (virtualenvs with their own `bin/python`, console scripts of build
/// requirements) and `cargo install`'s target directory (build scripts). Tooling's, when the
/// frontend that makes them is among the running program's ancestors: a program dropped in a
/// directory named like them and run by anything else is still `exec-from-temp`.
const FRONTEND_TEMP: &[(&str, Frontend)] = &[
    ("build-env-", Frontend::PypaBuild),
    ("pip-build-env-", Frontend::Pip),
    ("cargo-install", Frontend::CargoInstall),
    ("go-build", Frontend::Go),
];

/// Whether `program`, in a temporary directory, is in one a build frontend among `frontends`
/// (the running process's ancestors) made for itself.
pub fn in_frontend_temp(program: &str, frontends: &[Frontend]) -> bool {
    FRONTEND_TEMP
        .iter()
        .any(|(prefix, tool)| frontends.contains(tool) && temp_component(program, prefix))
}

/// Whether `exe`, written during a job, is in a place where tooling or the job's own build put
/// it: the job's own places (its workspace, the directories its environment names for builds
/// and tools), or where tooling installs.
pub fn installed_by_tooling(exe: &str, own_places: &[&str]) -> bool {
    if own_places
        .iter()
        .filter(|d| !d.is_empty())
        .any(|d| super::path_within(exe, d).is_some())
    {
        return true;
    }
    TOOLING_PLACES.iter().any(|p| exe.contains(p))
        || SYSTEM_PLACES.iter().any(|p| exe.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontends_temporary_places_are_theirs_only_under_them() {
        let build = [Frontend::PypaBuild];
        assert!(in_frontend_temp("/tmp/build-env-k2j4x8/bin/python", &build));
        assert!(!in_frontend_temp("/tmp/build-env-k2j4x8/bin/python", &[]));
        assert!(!in_frontend_temp(
            "/tmp/build-env-k2j4x8/bin/python",
            &[Frontend::Pip]
        ));
        assert!(!in_frontend_temp("/tmp/x/build-env-1/bin/python", &build));
        assert!(in_frontend_temp(
            "/tmp/pip-build-env-abc/overlay/bin/cmake",
            &[Frontend::Pip]
        ));
        assert!(in_frontend_temp(
            "/tmp/cargo-installAbC/release/build/ring-1/build-script-build",
            &[Frontend::CargoInstall]
        ));
        // `go test` runs the test binary it built; a program there run by anything else is not
        // Go's.
        assert!(in_frontend_temp(
            "/tmp/go-build3471923/b001/app.test",
            &[Frontend::Go]
        ));
        assert!(!in_frontend_temp("/tmp/go-build3471923/b001/app.test", &[]));
    }

    #[test]
    fn installed_programs_live_where_installers_put_them() {
        let system = Some(InstallPlace::System);
        assert_eq!(
            installed_place("/usr/share/nodejs/npm/bin/npm-cli.js"),
            system
        );
        assert_eq!(installed_place("/usr/lib/git-core/git"), system);
        assert_eq!(installed_place("/home/runner/.cargo/bin/cargo"), system);
        assert_eq!(
            installed_place("/opt/hostedtoolcache/node/20.1.0/x64/bin/node"),
            Some(InstallPlace::ToolCache)
        );
        // The workspace, dependency trees, build outputs and temp are not installs.
        for path in [
            "/home/runner/work/app/app/npm",
            "/home/runner/work/app/app/node_modules/.bin/npm",
            "/tmp/npm",
            "/home/runner/work/app/app/target/debug/npm",
        ] {
            assert_eq!(installed_place(path), None, "{path}");
        }
    }

    #[test]
    fn build_and_install_places_are_expected_elsewhere_is_not() {
        let ws = &["/home/runner/work/app/app"][..];
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
            &[]
        ));
    }
}
