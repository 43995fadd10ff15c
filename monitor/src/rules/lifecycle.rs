//! Install-time code: what each package manager runs for a package while installing it, as the
//! kernel sees it at exec.
//!
//! - npm, yarn, pnpm and bun run `preinstall`/`install`/`postinstall`/`prepare` scripts through
//!   a shell with `npm_lifecycle_event` and `npm_package_name` in its environment, in the
//!   package's directory (`node_modules/<name>`, or a temporary clone for git dependencies).
//! - pip builds source distributions through PEP 517 hooks (`.../_in_process.py build_wheel`) or
//!   a legacy `setup.py`, in the unpacked source directory (`/tmp/pip-install-*/<name>_<hash>`).
//! - cargo runs each package's `build.rs` as `target/.../build/<pkg>-<hash>/build-script-build`
//!   with `CARGO_PKG_NAME` and `CARGO_MANIFEST_DIR` set.
//! - Python runs the `import` lines of every `.pth` file in site-packages at interpreter start;
//!   that is handled on file opens (see the engine), with the file classification here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::profile::Ecosystem;

/// A package's install-time code, as found at exec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    pub ecosystem: Ecosystem,
    pub package: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `postinstall`, `build_wheel`, `setup.py`, `build.rs`, `.pth`.
    pub script: String,
    /// `npm`, `yarn`, `pnpm`, `bun`, `pip`, `cargo`, `python`.
    pub manager: String,
    /// False for the project's own scripts (its own `prepare`, `pip install -e .`, its own
    /// `build.rs`): those are the job's code, not a dependency's.
    pub dependency: bool,
}

const NPM_HOOK_EVENTS: &[&str] = &[
    "preinstall",
    "install",
    "postinstall",
    "prepare",
    "preprepare",
    "postprepare",
    "prepack",
    "postpack",
    "prepublish",
];

/// npm-family lifecycle scripts, from the environment npm gives them.
pub fn npm_hook(env: &BTreeMap<String, String>, cwd: &str) -> Option<Hook> {
    let event = env.get("npm_lifecycle_event")?;
    if !NPM_HOOK_EVENTS.contains(&event.as_str()) {
        return None;
    }
    let package = env.get("npm_package_name")?.clone();
    let manager = env
        .get("npm_config_user_agent")
        .and_then(|ua| ua.split('/').next())
        .filter(|m| ["npm", "yarn", "pnpm", "bun"].contains(m))
        .unwrap_or("npm")
        .to_string();
    // A dependency lives under node_modules (or pnpm's store), or is a git dependency being
    // prepared in a temporary clone in npm's cache.
    let dependency = cwd.contains("/node_modules/")
        || cwd.contains("/_cacache/")
        || cwd.contains("/.pnpm-store/")
        || cwd.contains("/git-clone");
    Some(Hook {
        ecosystem: Ecosystem::Npm,
        package,
        version: env.get("npm_package_version").cloned(),
        script: event.clone(),
        manager,
        dependency,
    })
}

/// Which build tool an argv is, for the temporary places it makes and the builds it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend {
    /// PyPA's `python -m build` / `pyproject-build`: builds the project in hand.
    PypaBuild,
    /// `pip` / `python -m pip`.
    Pip,
    /// `cargo install`.
    CargoInstall,
    /// `go test`, `go run`, `go build` (which build and run programs in `/tmp/go-build*`).
    Go,
}

/// The build frontend `argv` runs, if any (by its arguments: the interpreter's name says
/// nothing, and the frontends all run under it).
pub fn frontend_of(argv: &[String]) -> Option<Frontend> {
    let base = |a: &String| a.rsplit('/').next().unwrap_or(a).to_string();
    let module = argv
        .windows(2)
        .find(|w| w[0] == "-m")
        .map(|w| w[1].as_str());
    let program = argv.first().map(base).unwrap_or_default();
    let script = argv.get(1).map(base).unwrap_or_default();
    if module == Some("build") || program == "pyproject-build" || script == "pyproject-build" {
        return Some(Frontend::PypaBuild);
    }
    let pip = |n: &str| {
        n == "pip"
            || (n.starts_with("pip3") && n[4..].chars().all(|c| c == '.' || c.is_ascii_digit()))
    };
    if module == Some("pip") || pip(&program) || (program.starts_with("python") && pip(&script)) {
        return Some(Frontend::Pip);
    }
    if program == "cargo"
        && argv
            .iter()
            .skip(1)
            .find(|a| !a.starts_with('-'))
            .map(String::as_str)
            == Some("install")
    {
        return Some(Frontend::CargoInstall);
    }
    if program == "go"
        && argv
            .iter()
            .skip(1)
            .find(|a| !a.starts_with('-'))
            .is_some_and(|sub| {
                ["test", "run", "build", "generate", "vet", "install"].contains(&sub.as_str())
            })
    {
        return Some(Frontend::Go);
    }
    None
}

/// pip's PEP 517 hook runner and legacy `setup.py` runs. `workspace` is the job's own checkout:
/// building it (`pip install -e .`) is not a dependency's install code. `frontends`: the build
/// tools among the process's ancestors; `python -m build` builds the project's wheel from its
/// own sdist, unpacked in `/tmp/build-via-sdist-*`: that is the project too.
pub fn pip_hook(
    argv: &[String],
    cwd: &str,
    workspace: Option<&str>,
    frontends: &[Frontend],
) -> Option<Hook> {
    let script = if let Some(i) = argv
        .iter()
        .position(|a| a.ends_with("/_in_process.py") || a.ends_with("/_in_process/_in_process.py"))
    {
        argv.get(i + 1).cloned().unwrap_or_else(|| "pep517".into())
    } else if argv.get(1).is_some_and(|a| a.ends_with("setup.py"))
        || (argv.get(1).map(String::as_str) == Some("-c")
            && argv.get(2).is_some_and(|code| code.contains("setup.py")))
    {
        "setup.py".to_string()
    } else {
        return None;
    };
    let dir = cwd.trim_end_matches('/');
    let base = dir.rsplit('/').next().unwrap_or(dir);
    let package = strip_pip_suffix(base).to_string();
    let own = workspace.is_some_and(|w| {
        let w = w.trim_end_matches('/');
        !w.is_empty() && (dir == w || dir.starts_with(&format!("{w}/")))
    }) || (frontends.contains(&Frontend::PypaBuild)
        && temp_component(dir, "build-via-sdist-"));
    Some(Hook {
        ecosystem: Ecosystem::Pypi,
        package,
        version: None,
        script,
        manager: "pip".into(),
        dependency: !own,
    })
}

/// Whether `path` lies in a directory directly under a temporary directory whose name starts
/// with `prefix` (`/tmp/build-env-x1y2/...`).
pub fn temp_component(path: &str, prefix: &str) -> bool {
    ["/tmp/", "/var/tmp/"].iter().any(|t| {
        path.strip_prefix(t)
            .is_some_and(|rest| rest.starts_with(prefix) && !rest[prefix.len()..].starts_with('/'))
    })
}

/// pip unpacks into `<name>_<32 hex digits>`.
fn strip_pip_suffix(dir: &str) -> &str {
    match dir.rsplit_once('_') {
        Some((name, hash))
            if hash.len() == 32
                && hash.bytes().all(|b| b.is_ascii_hexdigit())
                && !name.is_empty() =>
        {
            name
        }
        _ => dir,
    }
}

/// A cargo build script. `workspace` is the job's checkout: crates there are the project's own.
/// Others are dependencies: cargo unpacks registry crates under `$CARGO_HOME/registry/src/`
/// and git ones under `$CARGO_HOME/git/checkouts/`, wherever `CARGO_HOME` is (a job sets it as
/// it likes, so its name proves nothing), or vendors them.
pub fn cargo_hook(
    exe: &str,
    env: &BTreeMap<String, String>,
    workspace: Option<&str>,
) -> Option<Hook> {
    let (dir, file) = exe.rsplit_once('/')?;
    if !file.starts_with("build-script-") || !dir.contains("/build/") {
        return None;
    }
    let package = match env.get("CARGO_PKG_NAME") {
        Some(name) => name.clone(),
        None => {
            let pkg_dir = dir.rsplit('/').next().unwrap_or(dir);
            pkg_dir
                .rsplit_once('-')
                .map_or(pkg_dir, |(n, _)| n)
                .to_string()
        }
    };
    let manifest = env
        .get("CARGO_MANIFEST_DIR")
        .map(String::as_str)
        .unwrap_or("");
    // Registry and git crates are unpacked under `$CARGO_HOME`, vendored ones under `vendor/`:
    // third-party code wherever they are. A manifest outside the job's checkout (a path
    // dependency elsewhere on the machine) is not the project's either.
    let member = workspace.filter(|w| !w.is_empty()).map(|w| {
        let w = w.trim_end_matches('/');
        manifest == w || manifest.starts_with(&format!("{w}/"))
    });
    let dependency = manifest.contains("/registry/src/")
        || manifest.contains("/git/checkouts/")
        || manifest.contains("/vendor/")
        || (member == Some(false) && !manifest.is_empty());
    Some(Hook {
        ecosystem: Ecosystem::Cargo,
        package,
        version: env.get("CARGO_PKG_VERSION").cloned(),
        script: "build.rs".into(),
        manager: "cargo".into(),
        dependency,
    })
}

/// Python executes a `.pth` line that starts with `import` followed by a space or a tab.
pub fn pth_is_executable(text: &str) -> bool {
    text.lines()
        .any(|l| l.starts_with("import ") || l.starts_with("import\t"))
}

/// `.pth` files that ordinary tools install with executable lines (the benign twins).
pub fn pth_is_known_benign(file_name: &str) -> bool {
    file_name == "distutils-precedence.pth"
        || file_name == "_virtualenv.pth"
        || file_name.starts_with("__editable__")
        || file_name.ends_with("-nspkg.pth")
        || file_name.contains("coverage")
        || file_name == "pytest-cov.pth"
}

/// Whether a path is a `.pth` file Python reads at start-up.
pub fn is_site_pth(path: &str) -> bool {
    path.ends_with(".pth") && (path.contains("/site-packages/") || path.contains("/dist-packages/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn build_frontends_are_known_by_their_arguments() {
        assert_eq!(
            frontend_of(&v(&["/usr/local/go/bin/go", "test", "./..."])),
            Some(Frontend::Go)
        );
        assert_eq!(frontend_of(&v(&["go", "mod", "download"])), None);
        assert_eq!(
            frontend_of(&v(&["python3", "-m", "build", "--sdist"])),
            Some(Frontend::PypaBuild)
        );
        assert_eq!(
            frontend_of(&v(&["/w/.venv/bin/python", "/w/.venv/bin/pyproject-build"])),
            Some(Frontend::PypaBuild)
        );
        assert_eq!(
            frontend_of(&v(&[
                "/w/.venv/bin/python",
                "/w/.venv/bin/pip",
                "install",
                "."
            ])),
            Some(Frontend::Pip)
        );
        assert_eq!(
            frontend_of(&v(&["python", "-m", "pip", "wheel", "."])),
            Some(Frontend::Pip)
        );
        assert_eq!(
            frontend_of(&v(&["pip3.11", "install", "x"])),
            Some(Frontend::Pip)
        );
        assert_eq!(
            frontend_of(&v(&["cargo", "install", "ripgrep"])),
            Some(Frontend::CargoInstall)
        );
        assert_eq!(frontend_of(&v(&["cargo", "build"])), None);
        assert_eq!(frontend_of(&v(&["python3", "build.py"])), None);
        assert_eq!(frontend_of(&v(&["pipx", "run", "x"])), None);
    }

    #[test]
    fn pypa_build_of_the_project_from_its_own_sdist_is_the_project() {
        let hooks = "/tmp/build-env-x/lib/python3.11/site-packages/pyproject_hooks/_in_process/_in_process.py";
        let argv = v(&["python", hooks, "build_wheel", "/tmp/tmpq"]);
        let via_sdist = "/tmp/build-via-sdist-a1b2/corpus_pkg-0.1.0";
        let h = pip_hook(&argv, via_sdist, Some("/w"), &[Frontend::PypaBuild]).unwrap();
        assert!(!h.dependency);
        // Without the frontend above it, the same directory is somebody else's build.
        let h = pip_hook(&argv, via_sdist, Some("/w"), &[Frontend::Pip]).unwrap();
        assert!(h.dependency);
        // A build requirement pip builds inside the frontend's environment is a dependency.
        let dep = "/tmp/pip-install-q/evil_0123456789abcdef0123456789abcdef";
        let h = pip_hook(
            &argv,
            dep,
            Some("/w"),
            &[Frontend::PypaBuild, Frontend::Pip],
        )
        .unwrap();
        assert!(h.dependency);
        assert_eq!(h.package, "evil");
    }

    #[test]
    fn npm_scripts_of_dependencies_and_of_the_project() {
        let e = env(&[
            ("npm_lifecycle_event", "postinstall"),
            ("npm_package_name", "evil-pkg"),
            ("npm_package_version", "1.0.0"),
            (
                "npm_config_user_agent",
                "npm/11.1.0 node/v20.20.2 linux x64",
            ),
        ]);
        let hook = npm_hook(&e, "/w/app/node_modules/evil-pkg").unwrap();
        assert_eq!(
            (
                hook.package.as_str(),
                hook.script.as_str(),
                hook.manager.as_str()
            ),
            ("evil-pkg", "postinstall", "npm")
        );
        assert!(hook.dependency);
        assert!(
            !npm_hook(&e, "/w/app").unwrap().dependency,
            "the project's own script"
        );
        let test = env(&[("npm_lifecycle_event", "test"), ("npm_package_name", "app")]);
        assert!(
            npm_hook(&test, "/w/app").is_none(),
            "npm test is not install-time code"
        );
    }

    #[test]
    fn pip_builds_are_named_from_their_directory() {
        let argv = v(&[
            "/usr/bin/python3",
            "/usr/lib/python3/dist-packages/pip/_vendor/pyproject_hooks/_in_process/_in_process.py",
            "build_wheel",
            "/tmp/tmpabc",
        ]);
        let hook = pip_hook(
            &argv,
            "/tmp/pip-install-x1/litellm_0123456789abcdef0123456789abcdef",
            Some("/w/app"),
            &[],
        )
        .unwrap();
        assert_eq!(
            (hook.package.as_str(), hook.script.as_str()),
            ("litellm", "build_wheel")
        );
        assert!(hook.dependency);
        assert!(
            !pip_hook(&argv, "/w/app", Some("/w/app"), &[])
                .unwrap()
                .dependency,
            "pip install -e ."
        );
        let legacy = v(&[
            "python",
            "-c",
            "import setuptools; exec(open('/tmp/p/setup.py').read())",
        ]);
        assert_eq!(
            pip_hook(&legacy, "/tmp/p", None, &[]).unwrap().script,
            "setup.py"
        );
        assert!(pip_hook(&v(&["python3", "-c", "pass"]), "/", None, &[]).is_none());
    }

    #[test]
    fn cargo_build_scripts_of_registry_crates_are_dependencies() {
        let exe = "/w/app/target/debug/build/ring-0a1b2c/build-script-build";
        let dep = cargo_hook(
            exe,
            &env(&[
                ("CARGO_PKG_NAME", "ring"),
                (
                    "CARGO_MANIFEST_DIR",
                    "/home/r/.cargo/registry/src/index.crates.io-x/ring-0.17.8",
                ),
            ]),
            Some("/w/app"),
        )
        .unwrap();
        assert!(dep.dependency && dep.package == "ring");
        // A job's own CARGO_HOME, named anything.
        let cached = cargo_hook(
            exe,
            &env(&[(
                "CARGO_MANIFEST_DIR",
                "/w/target/corpus-cache/cargo-home/registry/src/index.crates.io-x/ring-0.17.8",
            )]),
            Some("/w/app"),
        )
        .unwrap();
        assert!(cached.dependency);
        let git = cargo_hook(
            exe,
            &env(&[("CARGO_MANIFEST_DIR", "/c/git/checkouts/ring-1a2b/0c1d2e3")]),
            Some("/w/app"),
        )
        .unwrap();
        assert!(git.dependency);
        let own = cargo_hook(
            "/w/app/target/debug/build/app-0a1b2c/build-script-build",
            &env(&[("CARGO_MANIFEST_DIR", "/w/app")]),
            Some("/w/app"),
        )
        .unwrap();
        assert!(!own.dependency && own.package == "app");
        let member = cargo_hook(
            "/w/app/target/debug/build/macros-0a1b2c/build-script-build",
            &env(&[("CARGO_MANIFEST_DIR", "/w/app/crates/macros")]),
            Some("/w/app"),
        )
        .unwrap();
        assert!(!member.dependency, "a workspace member");
        assert!(cargo_hook("/usr/bin/cargo", &env(&[]), None).is_none());
    }

    #[test]
    fn pth_files() {
        assert!(pth_is_executable("/some/path\nimport os; os.system('x')\n"));
        assert!(!pth_is_executable(
            "/some/path\n# import nothing\n  import indented\n"
        ));
        assert!(pth_is_known_benign("distutils-precedence.pth"));
        assert!(pth_is_known_benign("__editable__.app-1.0.pth"));
        assert!(!pth_is_known_benign("litellm_init.pth"));
        assert!(is_site_pth("/usr/lib/python3/dist-packages/x.pth"));
        assert!(!is_site_pth("/tmp/x.pth"));
    }
}
