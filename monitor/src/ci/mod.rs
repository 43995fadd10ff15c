//! CI job and step identity, read from the environment a step's processes are started with.
//!
//! GitHub's Runner.Worker starts every step (a `run:` script's shell, a JavaScript action's node)
//! as its own child with `GITHUB_*` variables naming the run, the job and the step; GitLab's shell
//! executor does the same with `CI_*`; any other CI can set `MONITOR_JOB_ID`. The kernel hands the
//! environment over at exec, so the identity is read before the step can change or exit.

pub mod env;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The step id of what the job runner does itself, outside any step of the job's (its set-up,
/// hooks, clean-up): the runner gives every step of the job's its `GITHUB_ACTION`.
pub const RUNNER_STEP_ID: &str = "job";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobIdentity {
    /// `github`, `gitlab` or `explicit`.
    pub provider: String,
    /// Unique across runs: provider, repository, run, attempt and job.
    pub key: String,
    /// The job's name in its workflow (`GITHUB_JOB`, `CI_JOB_NAME`, or the explicit id).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    /// Where the job's own sources are checked out (its own build code is not "install-time code
    /// of a dependency").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
}

impl JobIdentity {
    /// An identity with only its provider, key and name (no CI run behind it).
    pub fn bare(provider: &str, key: String, name: String) -> Self {
        JobIdentity {
            provider: provider.into(),
            key,
            name,
            repository: None,
            run_id: None,
            attempt: None,
            workflow: None,
            runner: None,
            workspace: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepIdentity {
    /// `GITHUB_ACTION`: the step's `id:`, or `__run`, `__run_2`, `__actions_checkout`, ...
    pub id: String,
    /// For action steps: `owner/repo@ref`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

impl StepIdentity {
    /// Whether a profile's step selector names this step: its id, its action with or without
    /// the ref.
    pub fn matches(&self, selector: &str) -> bool {
        if selector == self.id {
            return true;
        }
        match &self.action {
            Some(action) => {
                selector == action
                    || action
                        .split_once('@')
                        .is_some_and(|(name, _)| selector == name)
            }
            None => false,
        }
    }
}

fn get(env: &BTreeMap<String, String>, key: &str) -> Option<String> {
    env.get(key).filter(|v| !v.is_empty()).cloned()
}

/// The job and step a process's environment names, if it names one.
pub fn identity_from_env(env: &BTreeMap<String, String>) -> Option<(JobIdentity, StepIdentity)> {
    if let (Some(run_id), Some(job)) = (get(env, "GITHUB_RUN_ID"), get(env, "GITHUB_JOB")) {
        let repository = get(env, "GITHUB_REPOSITORY");
        let attempt = get(env, "GITHUB_RUN_ATTEMPT");
        let key = format!(
            "github/{}/{run_id}/{}/{job}",
            repository.as_deref().unwrap_or("-"),
            attempt.as_deref().unwrap_or("1")
        );
        let action =
            get(env, "GITHUB_ACTION_REPOSITORY").map(|repo| match get(env, "GITHUB_ACTION_REF") {
                Some(r) => format!("{repo}@{r}"),
                None => repo,
            });
        let job = JobIdentity {
            provider: "github".into(),
            key,
            name: job,
            repository,
            run_id: Some(run_id),
            attempt,
            workflow: get(env, "GITHUB_WORKFLOW"),
            runner: get(env, "RUNNER_NAME"),
            workspace: get(env, "GITHUB_WORKSPACE"),
        };
        let step = StepIdentity {
            id: get(env, "GITHUB_ACTION").unwrap_or_else(|| RUNNER_STEP_ID.into()),
            action,
        };
        return Some((job, step));
    }
    if let Some(job_id) = get(env, "CI_JOB_ID") {
        let project = get(env, "CI_PROJECT_PATH");
        let pipeline = get(env, "CI_PIPELINE_ID");
        let job = JobIdentity {
            provider: "gitlab".into(),
            key: format!(
                "gitlab/{}/{}/{job_id}",
                project.as_deref().unwrap_or("-"),
                pipeline.as_deref().unwrap_or("-")
            ),
            name: get(env, "CI_JOB_NAME").unwrap_or_else(|| job_id.clone()),
            repository: project,
            run_id: pipeline,
            attempt: None,
            workflow: get(env, "CI_JOB_STAGE"),
            runner: None,
            workspace: get(env, "CI_PROJECT_DIR"),
        };
        return Some((
            job,
            StepIdentity {
                id: "script".into(),
                action: None,
            },
        ));
    }
    if let Some(id) = get(env, "MONITOR_JOB_ID") {
        return Some((
            JobIdentity::bare("explicit", format!("explicit/{id}"), id),
            StepIdentity {
                id: "main".into(),
                action: None,
            },
        ));
    }
    None
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
    fn github_action_step_is_named_with_its_action() {
        let (job, step) = identity_from_env(&env(&[
            ("GITHUB_RUN_ID", "42"),
            ("GITHUB_RUN_ATTEMPT", "2"),
            ("GITHUB_JOB", "build"),
            ("GITHUB_REPOSITORY", "acme/app"),
            ("GITHUB_ACTION", "__actions_checkout"),
            ("GITHUB_ACTION_REPOSITORY", "actions/checkout"),
            ("GITHUB_ACTION_REF", "v4"),
        ]))
        .unwrap();
        assert_eq!(job.key, "github/acme/app/42/2/build");
        assert_eq!(step.action.as_deref(), Some("actions/checkout@v4"));
        assert!(step.matches("actions/checkout@v4"));
        assert!(step.matches("actions/checkout"));
        assert!(step.matches("__actions_checkout"));
        assert!(!step.matches("actions/setup-node"));
    }

    #[test]
    fn gitlab_and_explicit_jobs_and_no_identity() {
        let (job, _) = identity_from_env(&env(&[
            ("CI_JOB_ID", "7"),
            ("CI_JOB_NAME", "test"),
            ("CI_PIPELINE_ID", "3"),
            ("CI_PROJECT_PATH", "g/p"),
        ]))
        .unwrap();
        assert_eq!(
            (job.key.as_str(), job.name.as_str()),
            ("gitlab/g/p/3/7", "test")
        );
        let (job, step) = identity_from_env(&env(&[("MONITOR_JOB_ID", "nightly")])).unwrap();
        assert_eq!(
            (job.provider.as_str(), step.id.as_str()),
            ("explicit", "main")
        );
        assert!(identity_from_env(&env(&[("PATH", "/bin")])).is_none());
    }
}
