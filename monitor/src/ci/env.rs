//! Which environment variables of an executed program the agent keeps.
//!
//! The kernel hands over the whole environment block of every exec, and environments on CI
//! runners carry secrets (`GITHUB_TOKEN`, `NPM_TOKEN`, `AWS_SECRET_ACCESS_KEY`, ...). Only the keys
//! listed here survive decoding: CI job and step identity, and the context package managers give
//! the code they run at install time. Everything else is dropped before the record leaves the
//! decoder, so it can reach no log, report or metric. Values are bounded and redacted too.

use std::collections::BTreeMap;

use crate::redact::redact;

/// Kept with their value.
const KEEP: &[&str] = &[
    // GitHub Actions: job and step identity (set by Runner.Worker for every step process).
    "GITHUB_ACTIONS",
    "GITHUB_ACTION",
    "GITHUB_ACTION_REPOSITORY",
    "GITHUB_ACTION_REF",
    "GITHUB_JOB",
    "GITHUB_RUN_ID",
    "GITHUB_RUN_ATTEMPT",
    "GITHUB_RUN_NUMBER",
    "GITHUB_WORKFLOW",
    "GITHUB_WORKFLOW_REF",
    "GITHUB_REPOSITORY",
    "GITHUB_SHA",
    "GITHUB_REF",
    "GITHUB_EVENT_NAME",
    "GITHUB_ACTOR",
    "GITHUB_WORKSPACE",
    "GITHUB_STEP_SUMMARY",
    "RUNNER_NAME",
    "RUNNER_TEMP",
    // `_work/<repo>`: the runner's `_work`, where its downloaded actions are, is beside it.
    "RUNNER_WORKSPACE",
    // Where `~/` is for the job's processes (a self-hosted runner's user may live anywhere).
    "HOME",
    // GitLab CI.
    "GITLAB_CI",
    "CI_JOB_ID",
    "CI_JOB_NAME",
    "CI_JOB_STAGE",
    "CI_PIPELINE_ID",
    "CI_PROJECT_PATH",
    "CI_PROJECT_DIR",
    // Jobs started explicitly with `monitor job start` / the runner hooks.
    "MONITOR_JOB_ID",
    // npm, yarn, pnpm and bun run lifecycle scripts with these.
    "npm_lifecycle_event",
    "npm_lifecycle_script",
    "npm_package_name",
    "npm_package_version",
    "npm_command",
    "npm_config_user_agent",
    // Cargo runs build scripts with these.
    "CARGO_PKG_NAME",
    "CARGO_PKG_VERSION",
    "CARGO_MANIFEST_DIR",
    // Directories the job names for its own build outputs and environments: programs built
    // or installed there are the job's tooling, even under /tmp.
    "CARGO_TARGET_DIR",
    "VIRTUAL_ENV",
    "RUNNER_TOOL_CACHE",
];

/// The kept variables that name a job's own build, environment and tool directories.
pub const TOOLING_DIRS: &[&str] = &[
    "CARGO_TARGET_DIR",
    "VIRTUAL_ENV",
    "RUNNER_TOOL_CACHE",
    "RUNNER_TEMP",
];

/// Kept as `"[present]"`: whether they are set matters, their value is (or guards) a secret.
const PRESENCE_ONLY: &[&str] = &["ACTIONS_ID_TOKEN_REQUEST_TOKEN"];

/// Kept as their origin only (`https://host:port`): where the endpoint is tells the engine which
/// connections ask for an OIDC token or call the cache and artifact services; the path names
/// the run (and may carry a token) and is dropped with any user info.
const ORIGIN_ONLY: &[&str] = &[
    "ACTIONS_ID_TOKEN_REQUEST_URL",
    "ACTIONS_CACHE_URL",
    "ACTIONS_RESULTS_URL",
    "ACTIONS_RUNTIME_URL",
    "GITHUB_SERVER_URL",
    "GITHUB_API_URL",
];

pub const PRESENT: &str = "[present]";

/// Longest value kept; longer ones are cut (on a character boundary) and marked.
pub const MAX_VALUE_LEN: usize = 512;

/// Picks the kept keys out of a NUL-separated `KEY=value` block.
pub fn select_env(block: &[u8]) -> BTreeMap<String, String> {
    let mut kept = BTreeMap::new();
    for entry in block.split(|b| *b == 0) {
        let Some(eq) = entry.iter().position(|b| *b == b'=') else {
            continue;
        };
        let Ok(key) = std::str::from_utf8(&entry[..eq]) else {
            continue;
        };
        if PRESENCE_ONLY.contains(&key) {
            kept.insert(key.to_string(), PRESENT.to_string());
        } else if ORIGIN_ONLY.contains(&key) {
            let value = String::from_utf8_lossy(&entry[eq + 1..]);
            let origin = url::Url::parse(&value)
                .ok()
                .filter(|u| u.has_host())
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or_else(|| PRESENT.to_string());
            kept.insert(key.to_string(), origin);
        } else if KEEP.contains(&key) {
            let value = String::from_utf8_lossy(&entry[eq + 1..]);
            let mut value = redact(&value).into_owned();
            crate::redact::truncate_marked(&mut value, MAX_VALUE_LEN, "[...]");
            kept.insert(key.to_string(), value);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_identity_keys_survive_and_secrets_never_do() {
        let token = format!("ghp_{}", "x".repeat(36));
        let block = format!(
            "PATH=/usr/bin\0GITHUB_TOKEN={token}\0GITHUB_JOB=build\0GITHUB_ACTION=__run_2\0\
             NPM_TOKEN=npm_{npm}\0ACTIONS_ID_TOKEN_REQUEST_TOKEN=eyJsecret\0\
             npm_lifecycle_event=postinstall\0npm_lifecycle_script=curl -H 'Authorization: token {token}' x\0\
             AWS_SECRET_ACCESS_KEY=abc\0garbage-without-equals\0",
            npm = "y".repeat(36)
        );
        let kept = select_env(block.as_bytes());
        assert_eq!(kept.get("GITHUB_JOB").map(String::as_str), Some("build"));
        assert_eq!(
            kept.get("GITHUB_ACTION").map(String::as_str),
            Some("__run_2")
        );
        assert_eq!(
            kept.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
                .map(String::as_str),
            Some(PRESENT)
        );
        assert_eq!(
            kept.get("npm_lifecycle_event").map(String::as_str),
            Some("postinstall")
        );
        let all = format!("{kept:?}");
        assert!(!all.contains(&token), "{all}");
        assert!(!all.contains("npm_yyy"), "{all}");
        assert!(!all.contains("eyJsecret"), "{all}");
        for gone in ["PATH", "GITHUB_TOKEN", "NPM_TOKEN", "AWS_SECRET_ACCESS_KEY"] {
            assert!(!kept.contains_key(gone), "{gone} kept: {all}");
        }
    }

    #[test]
    fn the_oidc_endpoint_is_kept_as_its_origin() {
        let block = b"ACTIONS_ID_TOKEN_REQUEST_URL=https://user:pw@pipelines.actions.githubusercontent.com/abc/_apis/idtoken?api-version=2.0\0";
        let kept = select_env(block);
        assert_eq!(
            kept["ACTIONS_ID_TOKEN_REQUEST_URL"],
            "https://pipelines.actions.githubusercontent.com"
        );
        let kept = select_env(b"ACTIONS_ID_TOKEN_REQUEST_URL=http://127.0.0.1:8123/idtoken\0");
        assert_eq!(
            kept["ACTIONS_ID_TOKEN_REQUEST_URL"],
            "http://127.0.0.1:8123"
        );
        let kept = select_env(b"ACTIONS_ID_TOKEN_REQUEST_URL=not a url\0");
        assert_eq!(kept["ACTIONS_ID_TOKEN_REQUEST_URL"], PRESENT);
    }

    #[test]
    fn long_values_are_cut_and_marked() {
        let block = format!("GITHUB_WORKFLOW={}\0", "é".repeat(600));
        let kept = select_env(block.as_bytes());
        let value = &kept["GITHUB_WORKFLOW"];
        assert!(value.ends_with("[...]") && value.len() <= MAX_VALUE_LEN + 5);
    }
}
