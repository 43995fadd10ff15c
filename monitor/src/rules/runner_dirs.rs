//! The runner's own directories that later jobs run code from: the downloaded actions
//! (`_work/_actions/<owner>/<repo>/<ref>`, whose `action.yml` and `dist/*.js` every later job
//! using that action runs, post steps included) and the tool cache (`_work/_tool`,
//! `RUNNER_TOOL_CACHE`, where setup actions keep node, Python, Go, ...). On a self-hosted runner
//! they outlive the job: a cache-poisoning tool persists by rewriting them (`action-tampered`).

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerDir {
    Actions,
    ToolCache,
}

impl RunnerDir {
    /// How findings name the place.
    pub fn described(self) -> &'static str {
        match self {
            RunnerDir::Actions => {
                "the runner's downloaded actions, which every later job using the action runs"
            }
            RunnerDir::ToolCache => {
                "the runner's tool cache, which later jobs' setup actions hand out"
            }
        }
    }
}

/// The runner's directories named by a step's environment: `_actions` beside the job's
/// workspace directory (`RUNNER_WORKSPACE` is `_work/<repo>`; else `GITHUB_WORKSPACE`'s
/// grandparent) and the tool cache (`RUNNER_TOOL_CACHE`, else `_work/_tool`). Absolute, clean
/// paths only: a job's own variables must not point the watch elsewhere (`..`).
pub fn from_env(env: &BTreeMap<String, String>) -> Vec<(RunnerDir, String)> {
    let clean = |p: &str| {
        let p = p.trim_end_matches('/');
        (p.starts_with('/') && p.len() > 1 && !p.split('/').any(|c| c == ".." || c == "."))
            .then(|| p.to_string())
    };
    let parent = |p: &str| p.rsplit_once('/').map(|(head, _)| head.to_string());
    let work = env
        .get("RUNNER_WORKSPACE")
        .and_then(|w| clean(w))
        .and_then(|w| parent(&w))
        .or_else(|| {
            env.get("GITHUB_WORKSPACE")
                .and_then(|w| clean(w))
                .and_then(|w| parent(&w))
                .and_then(|w| parent(&w))
        })
        .filter(|w| !w.is_empty());
    let mut dirs = Vec::new();
    if let Some(work) = &work {
        dirs.push((RunnerDir::Actions, format!("{work}/_actions")));
    }
    let tools = env
        .get("RUNNER_TOOL_CACHE")
        .and_then(|t| clean(t))
        .or_else(|| work.as_ref().map(|w| format!("{w}/_tool")));
    if let Some(tools) = tools {
        dirs.push((RunnerDir::ToolCache, tools));
    }
    dirs
}

/// Whether a step of `action` (`owner/repo`) keeps tools in the tool cache: setup actions
/// (`actions/setup-node`, `ruby/setup-ruby`, `astral-sh/setup-uv`, ...).
pub fn keeps_tools(action: &str) -> bool {
    action
        .split_once('/')
        .is_some_and(|(_, repo)| repo.to_ascii_lowercase().starts_with("setup-"))
}

/// Package managers a step runs against the tool a setup action put in the cache: `pip
/// install` into setup-python's site-packages, `npm i -g` and `corepack enable` into
/// setup-node's, `gem install` into setup-ruby's. Their work, not tampering (the caller checks
/// they are the installed programs and not inside install-time code).
const TOOL_PACKAGE_MANAGERS: &[&str] = &[
    "pip", "pip3", "npm", "yarn", "pnpm", "corepack", "gem", "bundle", "bundler", "uv", "pipx",
    "poetry", "cargo", "rustup", "go",
];

/// Whether `tool` writing `path` in the tool cache is its ordinary work.
pub fn tool_cache_work(tool: &str, path: &str) -> bool {
    TOOL_PACKAGE_MANAGERS.contains(&tool) || python_bytecode(tool, path)
}

/// An interpreter caching the bytecode of what it runs (`__pycache__/*.pyc`): Python actions
/// and tools do it beside their own files.
pub fn python_bytecode(tool: &str, path: &str) -> bool {
    tool.starts_with("python") && path.contains("/__pycache__/") && path.ends_with(".pyc")
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

    #[test]
    fn the_runners_directories_come_from_its_variables() {
        let dirs = from_env(&env(&[
            ("RUNNER_WORKSPACE", "/home/runner/_work/app"),
            ("GITHUB_WORKSPACE", "/home/runner/_work/app/app"),
            ("RUNNER_TOOL_CACHE", "/opt/hostedtoolcache"),
        ]));
        assert_eq!(
            dirs,
            vec![
                (
                    RunnerDir::Actions,
                    "/home/runner/_work/_actions".to_string()
                ),
                (RunnerDir::ToolCache, "/opt/hostedtoolcache".to_string()),
            ]
        );
        let dirs = from_env(&env(&[("GITHUB_WORKSPACE", "/srv/r/_work/app/app/")]));
        assert_eq!(
            dirs,
            vec![
                (RunnerDir::Actions, "/srv/r/_work/_actions".to_string()),
                (RunnerDir::ToolCache, "/srv/r/_work/_tool".to_string()),
            ]
        );
        // A job's own variable cannot point the watch elsewhere.
        assert!(from_env(&env(&[("RUNNER_WORKSPACE", "/x/../etc/app")])).is_empty());
        assert!(from_env(&env(&[("GITHUB_WORKSPACE", "relative/app/app")])).is_empty());
    }

    #[test]
    fn setup_actions_keep_tools() {
        assert!(keeps_tools("actions/setup-node"));
        assert!(keeps_tools("astral-sh/setup-uv"));
        assert!(!keeps_tools("actions/checkout"));
        assert!(!keeps_tools("setup-node"));
    }
}
