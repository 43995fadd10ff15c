//! The repository's own files, written after the checkout (`source-modified`): SolarWinds' and
//! xz's route, a dependency's install code or a compromised step editing what gets built.
//!
//! Which files: what git tracks once the checkout step has ended (the agent asks git), except
//! what builds write by design (`target/`, `dist/`, `build/`, `node_modules/`: some repositories
//! commit their build output). Who may write them: git when it checks a tree out, package
//! managers their own manifests and lock files, and what the profile's `sources.allow` lists
//! (generators, formatters).

use super::{
    persistence::{git_subcommand, GIT_CHECKOUT_SUBCOMMANDS},
    tool_matches,
};

/// Directories whose tracked files builds rewrite (committed build output, vendored modules).
const BUILD_OUTPUT: &[&str] = &["target", "dist", "build", "node_modules", ".git"];

/// Package-manager subcommands that save the manifest and lock as their work (`npm pkg set`
/// and the like write what the job hands them, and are not among them). A bare `yarn` installs.
const SAVES_MANIFEST: &[&str] = &[
    "install",
    "i",
    "ci",
    "add",
    "remove",
    "rm",
    "uninstall",
    "un",
    "update",
    "up",
    "upgrade",
    "version",
    "dedupe",
    "prune",
    "audit",
    "link",
    "generate-lockfile",
];

/// Files package managers rewrite as their work (`npm install` saves `package.json` and its
/// lock), with the tools that own them.
const MANIFESTS: &[(&str, &[&str])] = &[
    ("package.json", &["npm", "yarn", "pnpm", "bun", "corepack"]),
    ("package-lock.json", &["npm"]),
    ("npm-shrinkwrap.json", &["npm"]),
    ("yarn.lock", &["yarn"]),
    ("pnpm-lock.yaml", &["pnpm"]),
    ("bun.lockb", &["bun"]),
    ("bun.lock", &["bun"]),
    ("Cargo.lock", &["cargo"]),
    ("Cargo.toml", &["cargo"]),
    ("go.mod", &["go"]),
    ("go.sum", &["go"]),
    ("poetry.lock", &["poetry"]),
    ("uv.lock", &["uv"]),
    ("Pipfile.lock", &["pipenv"]),
    ("Gemfile.lock", &["bundle", "bundler"]),
    ("composer.lock", &["composer"]),
];

/// Build scripts and CI configuration: what runs code at build time or in later jobs.
const BUILD_SCRIPTS: &[&str] = &[
    "package.json",
    "setup.py",
    "setup.cfg",
    "pyproject.toml",
    "build.rs",
    "Makefile",
    "GNUmakefile",
    "makefile",
    "CMakeLists.txt",
    "configure",
    "configure.ac",
    "meson.build",
    "build.gradle",
    "build.gradle.kts",
    "settings.gradle",
    "settings.gradle.kts",
    "pom.xml",
    "Cargo.toml",
    "Dockerfile",
    "Jenkinsfile",
    ".gitlab-ci.yml",
    "Rakefile",
    "Gemfile",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// Runs code at build time (`package.json` scripts, `setup.py`, `build.rs`, `Makefile`).
    BuildScript,
    /// CI configuration (`.github/**`): runs in later jobs.
    CiConfig,
    Source,
}

impl SourceKind {
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::BuildScript => "build script",
            SourceKind::CiConfig => "CI configuration",
            SourceKind::Source => "source file",
        }
    }
}

/// What `relative` (a path inside the repository) is.
pub fn classify(relative: &str) -> SourceKind {
    let name = relative.rsplit('/').next().unwrap_or(relative);
    if relative.starts_with(".github/") || relative.contains("/.github/") {
        SourceKind::CiConfig
    } else if BUILD_SCRIPTS.contains(&name) || name.ends_with(".mk") {
        SourceKind::BuildScript
    } else {
        SourceKind::Source
    }
}

/// Whether a tracked file is build output by its place (not watched, never judged).
pub fn is_build_output(relative: &str) -> bool {
    relative
        .split('/')
        .rev()
        .skip(1)
        .any(|dir| BUILD_OUTPUT.contains(&dir))
}

/// Whether `tool` (run as `argv`; the caller checks it is the installed program, not a copy
/// named so) writes `relative` as its work: git (and git-lfs) checking a tree out, a package
/// manager saving its manifest or lock.
pub fn owned_by(relative: &str, tool: &str, argv: &[String]) -> bool {
    if tool == "git" {
        return git_subcommand(argv).is_some_and(|sub| GIT_CHECKOUT_SUBCOMMANDS.contains(&sub));
    }
    if tool == "git-lfs" {
        return argv.iter().any(|a| {
            matches!(
                a.as_str(),
                "pull" | "checkout" | "smudge" | "filter-process"
            )
        });
    }
    let name = relative.rsplit('/').next().unwrap_or(relative);
    let manager = MANIFESTS
        .iter()
        .any(|(file, owners)| *file == name && owners.iter().any(|o| tool_matches(o, tool)));
    // The words after the program (a script path for `node npm-cli.js`): a saving subcommand,
    // or none at all (`yarn`).
    let words: Vec<&str> = argv
        .iter()
        .skip(1)
        .map(String::as_str)
        .filter(|a| !a.starts_with('-') && !a.contains('/'))
        .collect();
    manager && (words.is_empty() || words.iter().any(|w| SAVES_MANIFEST.contains(w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn build_scripts_ci_config_and_sources() {
        assert_eq!(classify("package.json"), SourceKind::BuildScript);
        assert_eq!(classify("crates/x/build.rs"), SourceKind::BuildScript);
        assert_eq!(classify(".github/workflows/ci.yml"), SourceKind::CiConfig);
        assert_eq!(classify("src/index.js"), SourceKind::Source);
        assert_eq!(classify("mk/rules.mk"), SourceKind::BuildScript);
    }

    #[test]
    fn build_output_is_not_watched() {
        assert!(is_build_output("dist/index.js"));
        assert!(is_build_output("packages/a/node_modules/x/index.js"));
        assert!(!is_build_output("src/dist.js"));
        assert!(!is_build_output("target"));
    }

    #[test]
    fn owners() {
        assert!(!owned_by(
            "src/a.rs",
            "git",
            &argv(&["git", "apply", "x.patch"])
        ));
        assert!(!owned_by(
            "package.json",
            "npm",
            &argv(&["npm", "pkg", "set", "x=y"])
        ));
        assert!(owned_by("yarn.lock", "yarn", &argv(&["yarn"])));
        assert!(owned_by(
            "src/a.rs",
            "git",
            &argv(&["git", "checkout", "main"])
        ));
        assert!(!owned_by(
            "src/a.rs",
            "git",
            &argv(&["git", "config", "x", "y"])
        ));
        assert!(owned_by(
            "package-lock.json",
            "npm",
            &argv(&["npm", "install"])
        ));
        assert!(owned_by(
            "web/package.json",
            "npm",
            &argv(&["npm", "version", "patch"])
        ));
        assert!(!owned_by("src/index.js", "npm", &argv(&["npm", "install"])));
        assert!(!owned_by("package.json", "node", &argv(&["node", "x.js"])));
    }
}
