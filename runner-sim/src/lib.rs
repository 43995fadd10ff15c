//! A stand-in for a GitHub Actions self-hosted runner executing one job, copying what the real
//! runner does at the process level, so the monitor's attribution sees what it sees on a real
//! runner:
//! - one `Runner.Worker` process per job (a copy of bash under that name, so its `comm` is
//!   `Runner.Worker` as the real .NET worker's is);
//! - each step is a direct child of the Worker, started with the job's and the step's `GITHUB_*`
//!   variables in its environment (`GITHUB_ACTION` is the step id or `__run`, `__run_2`, ...);
//!   a `run:` step is `bash -e <RUNNER_TEMP>/<file>.sh`;
//! - the Worker itself runs with the runner's environment, without the step variables;
//! - with job hooks, the Worker runs `ACTIONS_RUNNER_HOOK_JOB_STARTED`/`_COMPLETED` as children
//!   with the job's variables, before the first step and after the last.
//!
//! Used by `monitor selftest` and by the end-to-end tests: one copy, one quoting.

use std::{
    io,
    path::{Path, PathBuf},
    process::Command,
};

/// A runner's directory tree: `bin/Runner.Worker`, `home`, `work/app/app` (the workspace),
/// `work/_temp` (RUNNER_TEMP), `work/_actions` (downloaded actions), `work/_tool` (the tool
/// cache).
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// Lays a runner out under `root` (created if missing; canonicalised, so the paths the
    /// kernel reports match).
    pub fn create(root: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let root = std::fs::canonicalize(root)?;
        for sub in [
            "bin",
            "home",
            "work/app/app",
            "work/_temp",
            "work/_actions",
            "work/_tool",
        ] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        std::fs::copy("/bin/bash", root.join("bin/Runner.Worker"))?;
        Ok(Layout { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn home(&self) -> PathBuf {
        self.root.join("home")
    }

    pub fn workspace(&self) -> PathBuf {
        self.root.join("work/app/app")
    }

    /// RUNNER_TEMP.
    pub fn temp(&self) -> PathBuf {
        self.root.join("work/_temp")
    }

    /// Where the Worker keeps downloaded actions (`_work/_actions/<owner>/<repo>/<ref>`).
    pub fn actions(&self) -> PathBuf {
        self.root.join("work/_actions")
    }

    /// RUNNER_TOOL_CACHE.
    pub fn tool_cache(&self) -> PathBuf {
        self.root.join("work/_tool")
    }

    pub fn worker_binary(&self) -> PathBuf {
        self.root.join("bin/Runner.Worker")
    }

    /// The file the runner exposes as `GITHUB_STEP_SUMMARY`.
    pub fn step_summary(&self) -> PathBuf {
        self.temp().join("step_summary.md")
    }

    /// Writes the Worker's script for `job` (its step scripts beside it in RUNNER_TEMP, named
    /// by the run id so jobs can share a layout) and returns its path.
    pub fn write_worker(
        &self,
        job: &Job,
        steps: &[Step<'_>],
        hooks: Option<&Hooks>,
    ) -> io::Result<PathBuf> {
        let exports = job
            .env(self)
            .iter()
            .map(|(k, v)| format!("{k}={}", shell_quote(v)))
            .collect::<Vec<_>>()
            .join(" ");
        let mut worker = String::from("set -e\n");
        let hook = |which: &str, hooks: &Hooks| {
            format!(
                "( export {exports}; {} hook {which} --socket {} )\n",
                shell_quote(&hooks.monitor.display().to_string()),
                shell_quote(&hooks.socket.display().to_string())
            )
        };
        if let Some(hooks) = hooks {
            worker.push_str(&hook("job-started", hooks));
        }
        for (i, step) in steps.iter().enumerate() {
            let file = self.temp().join(format!("{}-step-{i}.sh", job.run_id));
            let quoted_file = shell_quote(&file.display().to_string());
            match step {
                Step::Run { id, script } => {
                    std::fs::write(&file, script)?;
                    // A subshell per step: the Worker forks, the child sets the job's and the
                    // step's variables and becomes `bash -e <script>`, a direct child of the
                    // Worker as on the real runner, which hands these variables to each step,
                    // not to itself.
                    worker.push_str(&format!(
                        "( export {exports} GITHUB_ACTION={}; exec /bin/bash -e {quoted_file} )\n",
                        shell_quote(id)
                    ));
                }
                Step::Action { id, action, script } => {
                    std::fs::write(&file, script)?;
                    // An action's step: the runner adds the action's name and ref, and the
                    // variables it gives actions only (the runtime services' origins).
                    let (repository, reference) = action.split_once('@').unwrap_or((action, ""));
                    let action_exports = job
                        .action_env
                        .iter()
                        .map(|(k, v)| format!(" {k}={}", shell_quote(v)))
                        .collect::<String>();
                    worker.push_str(&format!(
                        "( export {exports}{action_exports} GITHUB_ACTION={} GITHUB_ACTION_REPOSITORY={} GITHUB_ACTION_REF={}; exec /bin/bash -e {quoted_file} )\n",
                        shell_quote(id),
                        shell_quote(repository),
                        shell_quote(reference)
                    ));
                }
                Step::OutsideSteps(script) => {
                    std::fs::write(&file, script)?;
                    worker.push_str(&format!("/bin/bash -e {quoted_file}\n"));
                }
                Step::ByWorker(script) => {
                    worker.push_str(script);
                    worker.push('\n');
                }
            }
        }
        if let Some(hooks) = hooks {
            worker.push_str(&hook("job-completed", hooks));
        }
        let path = self.temp().join(format!("{}-worker.sh", job.run_id));
        std::fs::write(&path, worker)?;
        Ok(path)
    }

    /// The command that runs the Worker on `worker_file`: in the workspace, with only the
    /// runner's environment (`PATH`, `HOME`, and `keep` from this process's environment), inside
    /// network namespace `netns` when given (`ip netns exec` execs the Worker in place).
    pub fn worker_command(
        &self,
        worker_file: &Path,
        netns: Option<&str>,
        keep: &[&str],
    ) -> Command {
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(self.worker_binary());
                c
            }
            None => Command::new(self.worker_binary()),
        };
        command
            .arg(worker_file)
            .current_dir(self.workspace())
            .env_clear()
            .env("PATH", RUNNER_PATH)
            .env("HOME", self.home());
        for name in keep {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command
    }
}

/// The runner service's PATH (with pyenv's, where this machine's Python lives).
pub const RUNNER_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/root/.pyenv/shims:/root/.pyenv/bin";

/// One job's identity and job-wide variables.
#[derive(Debug, Clone)]
pub struct Job {
    /// `GITHUB_RUN_ID`: unique per job, so findings can be matched to it.
    pub run_id: String,
    /// `GITHUB_JOB`.
    pub name: String,
    /// `GITHUB_REPOSITORY`.
    pub repository: String,
    /// `GITHUB_WORKFLOW`.
    pub workflow: String,
    /// `RUNNER_NAME`.
    pub runner_name: String,
    /// More job-wide variables (`ACTIONS_ID_TOKEN_REQUEST_URL`, ...), after the standard ones.
    pub extra: Vec<(String, String)>,
    /// Variables the runner gives action steps only (`ACTIONS_CACHE_URL`, ...).
    pub action_env: Vec<(String, String)>,
}

impl Job {
    pub fn new(run_id: impl Into<String>) -> Self {
        Job {
            run_id: run_id.into(),
            name: "build".into(),
            repository: "acme/app".into(),
            workflow: "CI".into(),
            runner_name: "fake-runner".into(),
            extra: Vec::new(),
            action_env: Vec::new(),
        }
    }

    /// The variables the runner gives every step and hook of the job.
    pub fn env(&self, layout: &Layout) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("GITHUB_ACTIONS", "true".to_string()),
            ("GITHUB_RUN_ID", self.run_id.clone()),
            ("GITHUB_RUN_ATTEMPT", "1".into()),
            ("GITHUB_JOB", self.name.clone()),
            ("GITHUB_REPOSITORY", self.repository.clone()),
            ("GITHUB_WORKFLOW", self.workflow.clone()),
            ("GITHUB_WORKSPACE", layout.workspace().display().to_string()),
            (
                "RUNNER_WORKSPACE",
                layout.root.join("work/app").display().to_string(),
            ),
            ("RUNNER_TEMP", layout.temp().display().to_string()),
            (
                "RUNNER_TOOL_CACHE",
                layout.tool_cache().display().to_string(),
            ),
            ("RUNNER_NAME", self.runner_name.clone()),
            (
                "GITHUB_STEP_SUMMARY",
                layout.step_summary().display().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        env.extend(self.extra.iter().cloned());
        env
    }
}

/// What the Worker runs.
#[derive(Debug, Clone, Copy)]
pub enum Step<'a> {
    /// A `run:` step with this `GITHUB_ACTION` id.
    Run { id: &'a str, script: &'a str },
    /// A `uses:` step: `action` is `owner/repo@ref`; its work is `script`.
    Action {
        id: &'a str,
        action: &'a str,
        script: &'a str,
    },
    /// The Worker's own work outside any step (setting up the job, fetching actions): a child
    /// of the Worker without the job's variables.
    OutsideSteps(&'a str),
    /// Work the Worker process itself does (its own network traffic, say).
    ByWorker(&'a str),
}

impl<'a> Step<'a> {
    /// `(id, script)` as the tests write steps: an empty id is work outside steps, `@worker`
    /// the Worker's own, `<id> uses <owner/repo@ref>` an action's step.
    pub fn from_pair((id, script): (&'a str, &'a str)) -> Self {
        match id {
            "" => Step::OutsideSteps(script),
            "@worker" => Step::ByWorker(script),
            id => match id.split_once(" uses ") {
                Some((id, action)) => Step::Action { id, action, script },
                None => Step::Run { id, script },
            },
        }
    }
}

/// The runner's job hooks, calling `monitor hook job-started|job-completed` on `socket`.
#[derive(Debug, Clone)]
pub struct Hooks {
    pub monitor: PathBuf,
    pub socket: PathBuf,
}

/// `s` as one single-quoted shell word, whatever it contains.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes_spaces_and_expansions() {
        let dir = std::env::temp_dir().join(format!("runner-sim-{}", std::process::id()));
        let layout = Layout::create(&dir).unwrap();
        let mut job = Job::new("q1");
        job.repository = "it's $HOME `x` a/b".into();
        let steps = [Step::Run {
            id: "step 'one'",
            script: "printf '%s|%s' \"$GITHUB_REPOSITORY\" \"$GITHUB_ACTION\"\n",
        }];
        let worker = layout.write_worker(&job, &steps, None).unwrap();
        let out = layout.worker_command(&worker, None, &[]).output().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "it's $HOME `x` a/b|step 'one'"
        );
    }
}
