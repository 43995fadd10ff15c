//! Wiring the monitor into a GitHub Actions self-hosted runner: the runner runs the scripts named
//! by `ACTIONS_RUNNER_HOOK_JOB_STARTED` / `ACTIONS_RUNNER_HOOK_JOB_COMPLETED` (read from the
//! runner directory's `.env`) before and after every job. `monitor install-runner-hooks` writes
//! two scripts calling `monitor hook ...` and points those variables at them, keeping every other
//! setting; `--remove` takes them out again.

use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::Context as _;

pub const STARTED_KEY: &str = "ACTIONS_RUNNER_HOOK_JOB_STARTED";
pub const COMPLETED_KEY: &str = "ACTIONS_RUNNER_HOOK_JOB_COMPLETED";
/// Where the scripts go, inside the runner directory.
pub const HOOKS_DIR: &str = "monitor-hooks";

/// `.env` text with `key=value` set (replacing an existing `key=` line in place, else appended),
/// every other line kept as it was.
pub fn set_env_line(text: &str, key: &str, value: &str) -> String {
    let mut out = Vec::new();
    let mut done = false;
    for line in text.lines() {
        if line.split_once('=').is_some_and(|(k, _)| k.trim() == key) {
            if !done {
                out.push(format!("{key}={value}"));
                done = true;
            }
        } else {
            out.push(line.to_string());
        }
    }
    if !done {
        out.push(format!("{key}={value}"));
    }
    out.join("\n") + "\n"
}

/// `.env` text without any `key=` line.
pub fn remove_env_line(text: &str, key: &str) -> String {
    let kept: Vec<&str> = text
        .lines()
        .filter(|line| !line.split_once('=').is_some_and(|(k, _)| k.trim() == key))
        .collect();
    if kept.is_empty() {
        String::new()
    } else {
        kept.join("\n") + "\n"
    }
}

/// The script for one hook. Fail open unless asked: a monitor that is down must not fail users'
/// jobs (the hook then says so in the job log and exits 0).
pub fn hook_script(monitor: &Path, which: &str, socket: &Path, fail_closed: bool) -> String {
    format!(
        "#!/bin/sh\n# Written by `monitor install-runner-hooks`; removed by `--remove`.\nexec '{}' hook {which} --socket '{}'{}\n",
        monitor.display(),
        socket.display(),
        if fail_closed { " --fail-closed" } else { "" }
    )
}

/// Replaces `path` with `text`, keeping the old file's owner and mode (the runner's user owns
/// its `.env`); a new file is 0644.
fn replace_keeping_owner(path: &Path, text: &str) -> anyhow::Result<()> {
    let old = std::fs::metadata(path).ok();
    let tmp = path.with_extension("monitor-tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    let mode = old.as_ref().map(|m| m.mode() & 0o7777).unwrap_or(0o644);
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    if let Some(m) = &old {
        std::os::unix::fs::chown(&tmp, Some(m.uid()), Some(m.gid()))
            .with_context(|| format!("keeping the owner of {}", path.display()))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

pub struct Installed {
    pub env_file: PathBuf,
    pub scripts: Vec<PathBuf>,
}

/// Installs (or with `remove`, uninstalls) the hooks in `runner_dir`. Idempotent.
pub fn install(
    runner_dir: &Path,
    monitor: &Path,
    socket: &Path,
    fail_closed: bool,
    remove: bool,
) -> anyhow::Result<Installed> {
    anyhow::ensure!(
        runner_dir.join("config.sh").exists()
            || runner_dir.join("run.sh").exists()
            || runner_dir.join(".runner").exists(),
        "{} does not look like a GitHub Actions runner directory (no config.sh, run.sh or .runner)",
        runner_dir.display()
    );
    let env_file = runner_dir.join(".env");
    let text = std::fs::read_to_string(&env_file).unwrap_or_default();
    let dir = runner_dir.join(HOOKS_DIR);
    let started = dir.join("job-started.sh");
    let completed = dir.join("job-completed.sh");
    if remove {
        let text = remove_env_line(&remove_env_line(&text, STARTED_KEY), COMPLETED_KEY);
        replace_keeping_owner(&env_file, &text)?;
        for script in [&started, &completed] {
            let _ = std::fs::remove_file(script);
        }
        let _ = std::fs::remove_dir(&dir);
        return Ok(Installed {
            env_file,
            scripts: Vec::new(),
        });
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    for (path, which) in [(&started, "job-started"), (&completed, "job-completed")] {
        std::fs::write(path, hook_script(monitor, which, socket, fail_closed))
            .with_context(|| format!("writing {}", path.display()))?;
        // Readable and runnable by the runner's user, writable by root only.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    let text = set_env_line(&text, STARTED_KEY, &started.display().to_string());
    let text = set_env_line(&text, COMPLETED_KEY, &completed.display().to_string());
    replace_keeping_owner(&env_file, &text)?;
    Ok(Installed {
        env_file,
        scripts: vec![started, completed],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lines_are_set_in_place_and_removed_without_touching_the_rest() {
        let original = "LANG=C.UTF-8\nACTIONS_RUNNER_HOOK_JOB_STARTED=/old.sh\nhttps_proxy=http://proxy:3128\n";
        let once = set_env_line(original, STARTED_KEY, "/new.sh");
        assert_eq!(once, "LANG=C.UTF-8\nACTIONS_RUNNER_HOOK_JOB_STARTED=/new.sh\nhttps_proxy=http://proxy:3128\n");
        assert_eq!(
            set_env_line(&once, STARTED_KEY, "/new.sh"),
            once,
            "idempotent"
        );
        let both = set_env_line(&once, COMPLETED_KEY, "/done.sh");
        assert!(both.ends_with("ACTIONS_RUNNER_HOOK_JOB_COMPLETED=/done.sh\n"));
        let removed = remove_env_line(&remove_env_line(&both, STARTED_KEY), COMPLETED_KEY);
        assert_eq!(removed, "LANG=C.UTF-8\nhttps_proxy=http://proxy:3128\n");
        assert_eq!(
            set_env_line("", STARTED_KEY, "/x"),
            "ACTIONS_RUNNER_HOOK_JOB_STARTED=/x\n"
        );
    }

    #[test]
    fn install_is_idempotent_keeps_owner_and_mode_and_removes_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.sh"), "#!/bin/bash\n").unwrap();
        let env = dir.path().join(".env");
        std::fs::write(&env, "LANG=C.UTF-8\n").unwrap();
        std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::chown(&env, Some(65534), Some(65534)).unwrap();
        let bin = Path::new("/usr/local/bin/monitor");
        let sock = Path::new("/run/monitor/control.sock");
        install(dir.path(), bin, sock, false, false).unwrap();
        let first = std::fs::read_to_string(&env).unwrap();
        install(dir.path(), bin, sock, false, false).unwrap();
        assert_eq!(std::fs::read_to_string(&env).unwrap(), first, "idempotent");
        assert!(first.starts_with("LANG=C.UTF-8\n"));
        assert!(first.contains(&format!(
            "{STARTED_KEY}={}",
            dir.path().join("monitor-hooks/job-started.sh").display()
        )));
        let meta = std::fs::metadata(&env).unwrap();
        assert_eq!(
            (meta.mode() & 0o777, meta.uid()),
            (0o640, 65534),
            "owner and mode kept"
        );
        let script =
            std::fs::read_to_string(dir.path().join("monitor-hooks/job-completed.sh")).unwrap();
        assert!(script.contains("hook job-completed --socket '/run/monitor/control.sock'"));
        assert!(!script.contains("--fail-closed"));
        install(dir.path(), bin, sock, false, true).unwrap();
        assert_eq!(std::fs::read_to_string(&env).unwrap(), "LANG=C.UTF-8\n");
        assert!(!dir.path().join("monitor-hooks").exists());
        assert!(
            install(Path::new("/tmp"), bin, sock, false, false).is_err(),
            "not a runner directory"
        );
    }
}
