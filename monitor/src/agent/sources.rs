//! The jobs' tracked sources in the kernel (`WATCH_SOURCES`): when a checkout step ends, the
//! agent asks git what it tracks in the workspace and watches those files by identity, so a
//! later write to one, by any route and under any name, is sent (`MATCH_SOURCE`) and judged
//! (`source-modified`). When the job ends its files are forgotten.
//!
//! git runs hardened, off the pipeline (a thread of its own: a job's huge index or a FIFO in
//! `.git` costs the agent nothing): as the workspace's owner, with no system or global
//! configuration, no fsmonitor hook, a bounded output and a deadline; a workspace that is a
//! symbolic link is refused. Only files inside the workspace, at most `MAX_PER_JOB` per job, are
//! watched; build output the repository commits (`dist/`, `target/`, ...) is not.

use std::{
    collections::{HashMap as StdHashMap, HashSet},
    io::Read as _,
    os::unix::{fs::MetadataExt as _, process::CommandExt as _},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
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
/// Tracked files watched for one job: one repository cannot take every job's room.
const MAX_PER_JOB: usize = 16_384;

/// A job's tracked files as its thread found them (identities, and how many were left out).
type Found = (String, anyhow::Result<(Vec<InodeKey>, usize)>);

pub struct SourceWatch {
    map: HashMap<MapData, InodeKey, u32>,
    on: Array<MapData, u32>,
    /// Each job's watched files, and how many jobs watch each identity.
    jobs: StdHashMap<String, Vec<InodeKey>>,
    users: StdHashMap<InodeKey, u32>,
    /// Jobs whose files a thread is reading; results for others (ended meanwhile) are dropped.
    reading: HashSet<String>,
    found_tx: mpsc::Sender<Found>,
    found: mpsc::Receiver<Found>,
}

impl SourceWatch {
    pub fn open(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let map = ebpf
            .take_map("WATCH_SOURCES")
            .context("WATCH_SOURCES map missing")?;
        let on = ebpf
            .take_map("WATCH_SOURCES_ON")
            .context("WATCH_SOURCES_ON map missing")?;
        let (found_tx, found) = mpsc::channel();
        Ok(Self {
            map: HashMap::try_from(map)?,
            on: Array::try_from(on)?,
            jobs: StdHashMap::new(),
            users: StdHashMap::new(),
            reading: HashSet::new(),
            found_tx,
            found,
        })
    }

    pub fn apply(&mut self, request: &SourceRequest) {
        match request {
            SourceRequest::Watch { job, workspace } => {
                self.reading.insert(job.clone());
                let (tx, job, workspace) = (self.found_tx.clone(), job.clone(), workspace.clone());
                let spawned = std::thread::Builder::new()
                    .name("tracked-sources".into())
                    .spawn(move || {
                        let found = tracked_identities(Path::new(&workspace));
                        let _ = tx.send((job, found));
                    });
                if let Err(e) = spawned {
                    log::warn!("tracked sources: no thread to read them: {e}");
                }
            }
            SourceRequest::Forget { job } => {
                self.reading.remove(job);
                self.forget(job);
            }
        }
    }

    /// Puts the files the threads found in the kernel's map.
    pub fn poll(&mut self) {
        while let Ok((job, found)) = self.found.try_recv() {
            if !self.reading.remove(&job) {
                continue;
            }
            match found {
                Ok((keys, skipped)) => {
                    let n = self.watch(&job, keys);
                    let left = if skipped > 0 {
                        format!(" ({skipped} not: outside the workspace or past the bound)")
                    } else {
                        String::new()
                    };
                    log::info!("job {job}: watching {n} tracked files for writes{left}");
                }
                Err(e) => log::warn!("job {job}: its tracked files are not watched: {e:#}"),
            }
        }
    }

    fn watch(&mut self, job: &str, keys: Vec<InodeKey>) -> usize {
        self.forget(job);
        let mut kept = Vec::new();
        for key in keys {
            if !self.users.contains_key(&key) {
                if self.users.len() >= WATCH_SOURCE_SLOTS as usize {
                    log::warn!(
                        "job {job}: {WATCH_SOURCE_SLOTS} tracked files are watched already: the rest are not"
                    );
                    break;
                }
                if let Err(e) = self.map.insert(key, WATCH_WRITE, 0) {
                    log::warn!("job {job}: watching a tracked file: {e}");
                    break;
                }
            }
            *self.users.entry(key).or_default() += 1;
            kept.push(key);
        }
        let n = kept.len();
        self.jobs.insert(job.to_string(), kept);
        let _ = self.on.set(0, u32::from(!self.users.is_empty()), 0);
        n
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

/// The identities of the files git tracks in `workspace` (inside it, not build output, at most
/// `MAX_PER_JOB`), and how many were left out.
fn tracked_identities(workspace: &Path) -> anyhow::Result<(Vec<InodeKey>, usize)> {
    let files = tracked_files(workspace)?;
    let root = std::fs::canonicalize(workspace)?;
    let (mut keys, mut skipped) = (Vec::new(), 0);
    let mut parents: StdHashMap<std::path::PathBuf, bool> = StdHashMap::new();
    for relative in files {
        if sources::is_build_output(&relative) {
            continue;
        }
        let path = workspace.join(&relative);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        // Inside the workspace: a crafted index naming `lib/x` where `lib` links elsewhere
        // does not put other files under watch.
        let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let inside = *parents
            .entry(parent.clone())
            .or_insert_with(|| std::fs::canonicalize(&parent).is_ok_and(|p| p.starts_with(&root)));
        if !inside || keys.len() >= MAX_PER_JOB {
            skipped += 1;
            continue;
        }
        keys.push(inode_key(&meta));
    }
    Ok((keys, skipped))
}

/// What git tracks in `workspace` (paths relative to it), asked as the workspace's owner.
fn tracked_files(workspace: &Path) -> anyhow::Result<Vec<String>> {
    let meta = std::fs::symlink_metadata(workspace)
        .with_context(|| format!("reading {}", workspace.display()))?;
    if !meta.is_dir() {
        bail!("not a directory (a symbolic link is not followed)");
    }
    if std::fs::symlink_metadata(workspace.join(".git")).is_err() {
        bail!("not a git work tree (no .git)");
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
