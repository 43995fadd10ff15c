//! The jobs' tracked sources in the kernel (`WATCH_SOURCES`): when a checkout step ends, the
//! agent asks git what it tracks in the workspace and watches those files by identity, so a
//! later write to one, by any route and under any name, is sent (`MATCH_SOURCE`) and judged
//! (`source-modified`). When the job ends its files are forgotten.
//!
//! git runs hardened: as the workspace's owner (never as root: a repository's configuration is
//! the job's), with no system or global configuration, no fsmonitor hook, a bounded output and a
//! deadline. Build output the repository commits (`dist/`, `target/`, ...) is not watched.

use std::{
    collections::HashMap as StdHashMap,
    io::Read as _,
    os::unix::{fs::MetadataExt as _, process::CommandExt as _},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use aya::{
    maps::{Array, HashMap, MapData},
    Ebpf,
};
use monitor_common::{InodeKey, WATCH_SOURCE_SLOTS, WATCH_WRITE};

use super::identities::inode_key;
use crate::{engine::SourceRequest, rules::sources};

/// How long git may take, and how much it may print (NUL-separated paths).
const GIT_DEADLINE: Duration = Duration::from_secs(10);
const GIT_OUTPUT_MAX: usize = 32 << 20;

pub struct SourceWatch {
    map: HashMap<MapData, InodeKey, u32>,
    on: Array<MapData, u32>,
    /// Each job's watched files, and how many jobs watch each identity.
    jobs: StdHashMap<String, Vec<InodeKey>>,
    users: StdHashMap<InodeKey, u32>,
}

impl SourceWatch {
    pub fn open(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let map = ebpf
            .take_map("WATCH_SOURCES")
            .context("WATCH_SOURCES map missing")?;
        let on = ebpf
            .take_map("WATCH_SOURCES_ON")
            .context("WATCH_SOURCES_ON map missing")?;
        Ok(Self {
            map: HashMap::try_from(map)?,
            on: Array::try_from(on)?,
            jobs: StdHashMap::new(),
            users: StdHashMap::new(),
        })
    }

    pub fn apply(&mut self, request: &SourceRequest) {
        match request {
            SourceRequest::Watch { job, workspace } => {
                match self.watch(job, Path::new(workspace)) {
                    Ok(n) => log::info!(
                        "job {job}: watching {n} tracked files of {workspace} for writes"
                    ),
                    Err(e) => log::warn!(
                        "job {job}: the tracked files of {workspace} are not watched: {e:#}"
                    ),
                }
            }
            SourceRequest::Forget { job } => self.forget(job),
        }
    }

    fn watch(&mut self, job: &str, workspace: &Path) -> anyhow::Result<usize> {
        self.forget(job);
        let files = tracked_files(workspace)?;
        let mut keys = Vec::new();
        for relative in files {
            if sources::is_build_output(&relative) {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(workspace.join(&relative)) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let key = inode_key(&meta);
            if !self.users.contains_key(&key) {
                if self.users.len() >= WATCH_SOURCE_SLOTS as usize {
                    log::warn!(
                        "job {job}: more than {WATCH_SOURCE_SLOTS} tracked files watched: the rest of {} are not",
                        workspace.display()
                    );
                    break;
                }
                self.map.insert(key, WATCH_WRITE, 0)?;
            }
            *self.users.entry(key).or_default() += 1;
            keys.push(key);
        }
        let n = keys.len();
        self.jobs.insert(job.to_string(), keys);
        self.on.set(0, u32::from(!self.users.is_empty()), 0)?;
        Ok(n)
    }

    fn forget(&mut self, job: &str) {
        let Some(keys) = self.jobs.remove(job) else {
            return;
        };
        for key in keys {
            if let Some(n) = self.users.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.users.remove(&key);
                    let _ = self.map.remove(&key);
                }
            }
        }
        let _ = self.on.set(0, u32::from(!self.users.is_empty()), 0);
    }
}

/// What git tracks in `workspace` (paths relative to it), asked as the workspace's owner.
fn tracked_files(workspace: &Path) -> anyhow::Result<Vec<String>> {
    let meta =
        std::fs::metadata(workspace).with_context(|| format!("reading {}", workspace.display()))?;
    if meta.uid() == 0 && !workspace.join(".git").exists() {
        bail!("not a git work tree");
    }
    let mut child = Command::new("git")
        .args(["-c", "core.fsmonitor=false", "-c", "safe.directory=*", "-C"])
        .arg(workspace)
        .args(["ls-files", "-z", "--cached"])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", "/nonexistent")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .uid(meta.uid())
        .gid(meta.gid())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("running git ls-files")?;
    let mut stdout = child.stdout.take().context("git's output")?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = (&mut stdout)
            .take(GIT_OUTPUT_MAX as u64 + 1)
            .read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + GIT_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("git ls-files took longer than {GIT_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reading git's output"))?;
    if !status.success() {
        bail!("git ls-files failed ({status}): not a git work tree?");
    }
    if out.len() > GIT_OUTPUT_MAX {
        bail!("git ls-files printed more than {GIT_OUTPUT_MAX} bytes");
    }
    Ok(out
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .filter_map(|p| std::str::from_utf8(p).ok())
        .filter(|p| !p.split('/').any(|c| c == ".." || c.is_empty()))
        .map(str::to_string)
        .collect())
}
