//! Enforcement that outlives the agent: when a profile asks the kernel to act (egress block
//! mode, kill responses), the agent pins its programs' links and the maps their decisions come
//! from in bpffs, so a job that kills the agent (or an agent that crashes or restarts) does not
//! switch enforcement off. Tetragon's `--keep-sensors-on-exit` does the same.
//!
//! Each agent owns `<pin_dir>/enforcement-<pid>/` (`maps/` and `links/`). An agent that starts
//! and needs enforcement adopts a dead agent's directory (renaming it is the claim): it reuses
//! its maps, so the jobs that agent knew stay judged, pins its own links, and only then unpins
//! the dead agent's links (their programs detach). An agent that does not need enforcement, or
//! runs with `--release-enforcement`, removes the dead agents' directories. A live agent's
//! directory is never touched (tests and a second agent run beside each other).

use std::{
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use aya::programs::links::FdLink;

/// The maps enforcement decides from (monitor-ebpf main.rs).
pub const ENFORCEMENT_MAPS: &[&str] = &[
    "JOB_PROCS",
    "JOB_POLICY",
    "JOB_STARTED",
    "QUIET_LISTERS",
    "ALLOW_V4",
    "ALLOW_V6",
    "ALLOWED_NAMES",
];

const PREFIX: &str = "enforcement-";

/// This agent's enforcement directory in bpffs.
#[derive(Debug, Clone)]
pub struct EnforcementPins {
    dir: PathBuf,
    /// The dead agent whose enforcement this one took over.
    pub adopted_from: Option<u32>,
}

impl EnforcementPins {
    /// Claims a directory under `pin_dir` for this agent: a dead agent's (renamed; its maps are
    /// reused) or a new one. `None` (said in the log) when `pin_dir` is not in bpffs.
    pub fn claim(pin_dir: &Path) -> anyhow::Result<Option<Self>> {
        if !on_bpffs(pin_dir.parent().unwrap_or(pin_dir)) {
            log::warn!(
                "{} is not in a bpf file system: enforcement ends with the agent",
                pin_dir.display()
            );
            return Ok(None);
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(pin_dir)
            .with_context(|| format!("creating {}", pin_dir.display()))?;
        let mine = pin_dir.join(format!("{PREFIX}{}", std::process::id()));
        let mut adopted_from = None;
        if !mine.exists() {
            for (pid, dir) in agent_dirs(pin_dir) {
                if pid != std::process::id()
                    && !agent_alive(pid)
                    && std::fs::rename(&dir, &mine).is_ok()
                {
                    adopted_from = Some(pid);
                    break;
                }
            }
        }
        for sub in ["maps", "links"] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(mine.join(sub))
                .with_context(|| format!("creating {}", mine.join(sub).display()))?;
        }
        Ok(Some(Self {
            dir: mine,
            adopted_from,
        }))
    }

    /// Where map `name` is pinned (reused when it is there).
    pub fn map_path(&self, name: &str) -> PathBuf {
        self.dir.join("maps").join(name)
    }

    /// Removes the pinned maps (another layout's: they cannot be reused).
    pub fn discard_maps(&self) {
        for name in ENFORCEMENT_MAPS {
            let _ = std::fs::remove_file(self.map_path(name));
        }
    }

    /// Pins this agent's links (`(label, link)`), then unpins the ones a dead agent left (their
    /// programs detach once this agent's are in place). The links stay open in the returned
    /// list (a link that could not be pinned then ends with the agent, and is named in the
    /// errors).
    pub fn pin_links(&self, links: Vec<(String, FdLink)>) -> (Vec<FdLink>, usize, Vec<String>) {
        // bpffs refuses names with a dot.
        let fresh = self.dir.join(format!("links-{}", std::process::id()));
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&fresh);
        let mut kept = Vec::new();
        let mut pinned = 0;
        let mut errors = Vec::new();
        for (label, link) in links {
            let path = fresh.join(label.replace('/', "_"));
            match pin_link(&link, &path) {
                Ok(()) => pinned += 1,
                Err(e) => errors.push(format!("{label}: {e}")),
            }
            kept.push(link);
        }
        let old = self.dir.join("links");
        remove_tree(&old);
        if let Err(e) = std::fs::rename(&fresh, &old) {
            errors.push(format!("renaming {}: {e}", fresh.display()));
        }
        (kept, pinned, errors)
    }
}

/// The pins of this agent's enforcement, held open: a pin removed from bpffs while the agent
/// runs (only root can, as a step would before killing the agent so that enforcement ends with
/// it) is pinned again on the next tick.
pub struct PinGuard {
    held: Vec<(PathBuf, std::os::fd::OwnedFd)>,
    /// Pins that could not be pinned again (said once each).
    failed: std::collections::HashSet<PathBuf>,
}

impl PinGuard {
    /// Opens every pin under this agent's directory (its maps and its links).
    pub fn hold(pins: &EnforcementPins) -> Self {
        use std::os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _};
        const BPF_OBJ_GET: libc::c_long = 7;
        let mut held = Vec::new();
        for sub in ["maps", "links"] {
            let Ok(entries) = std::fs::read_dir(pins.dir.join(sub)) else {
                continue;
            };
            for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
                let Ok(name) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
                    continue;
                };
                match bpf(BPF_OBJ_GET, [name.as_ptr() as u64, 0]) {
                    // SAFETY: a descriptor bpf(2) just gave us, owned from here.
                    Ok(fd) => held.push((path, unsafe {
                        std::os::fd::OwnedFd::from_raw_fd(fd as i32)
                    })),
                    Err(e) => log::warn!("holding the pin {}: {e}", path.display()),
                }
            }
        }
        log::info!(
            "holding {} enforcement pins, to pin again any removed",
            held.len()
        );
        Self {
            held,
            failed: Default::default(),
        }
    }

    /// Pins again what was removed; returns how many were found removed (pinned again or
    /// not: one that cannot be is where enforcement really ends with the agent).
    pub fn repin_removed(&mut self) -> usize {
        use std::os::fd::AsRawFd as _;
        let mut removed = 0;
        for (path, fd) in &self.held {
            if std::fs::symlink_metadata(path).is_ok() {
                continue;
            }
            if self.failed.contains(path) {
                continue;
            }
            removed += 1;
            if let Some(dir) = path.parent() {
                let _ = std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir);
            }
            match pin_fd(fd.as_raw_fd(), path) {
                Ok(_) => log::warn!(
                    "the enforcement pin {} was removed (only root can: a step preparing to end enforcement with the agent?); pinned it again",
                    path.display()
                ),
                Err(e) => {
                    log::warn!(
                        "the enforcement pin {} was removed and could not be pinned again ({e}): enforcement now ends with the agent",
                        path.display()
                    );
                    self.failed.insert(path.clone());
                }
            }
        }
        removed
    }
}

/// Pins `link` at `path` through a descriptor of its own (aya's `FdLink::pin` consumes the
/// link, and a failed pin would detach it).
fn pin_link(link: &FdLink, path: &Path) -> anyhow::Result<()> {
    const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
    let id = link.info().context("reading the link's id")?.id();
    let fd = bpf(BPF_LINK_GET_FD_BY_ID, [id as u64, 0]).context("BPF_LINK_GET_FD_BY_ID")?;
    let pinned = pin_fd(fd as i32, path);
    // SAFETY: closing the descriptor bpf(2) just gave us.
    unsafe { libc::close(fd as i32) };
    pinned.with_context(|| format!("pinning at {}", path.display()))?;
    Ok(())
}

/// Pins the bpf object behind descriptor `fd` at `path` (BPF_OBJ_PIN).
fn pin_fd(fd: i32, path: &Path) -> std::io::Result<i64> {
    use std::os::unix::ffi::OsStrExt as _;
    const BPF_OBJ_PIN: libc::c_long = 6;
    let name =
        std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    bpf(BPF_OBJ_PIN, [name.as_ptr() as u64, fd as u64])
}

/// bpf(2) `cmd` with an attribute whose first two words are `head` (the rest zero).
fn bpf(cmd: libc::c_long, head: [u64; 2]) -> std::io::Result<i64> {
    let mut attr = [0u64; 16];
    attr[..2].copy_from_slice(&head);
    // SAFETY: bpf(2) with a zeroed attribute buffer larger than any command's; a pointer in it
    // (a path) outlives the call, as the caller holds it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

/// Removes the enforcement left by agents that are gone: their programs detach, their maps are
/// freed. Returns how many there were.
pub fn release_dead(pin_dir: &Path) -> usize {
    let mut released = 0;
    for (pid, dir) in agent_dirs(pin_dir) {
        if pid != std::process::id() && !agent_alive(pid) {
            // Links first: their programs stop acting before the maps go.
            remove_tree(&dir.join("links"));
            remove_tree(&dir);
            released += 1;
        }
    }
    released
}

/// The `enforcement-<pid>` directories under `pin_dir`.
fn agent_dirs(pin_dir: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(pin_dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let pid = name.strip_prefix(PREFIX)?.parse().ok()?;
            Some((pid, e.path()))
        })
        .collect()
}

/// Whether `pid` is a running monitor agent (a reused pid of another program is not).
fn agent_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim_end() == "monitor")
}

/// Removes a directory of pins, and the directories in it (`links-*` included).
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(|e| e.ok()) {
            let path = e.path();
            if path.is_dir() {
                remove_tree(&path);
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// bpffs's `f_type`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Whether `dir` is in a bpf file system (pins can be made there).
pub(crate) fn on_bpffs(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut fs = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: statfs with a NUL-terminated path and a pointer to a statfs buffer.
    let rc = unsafe { libc::statfs(path.as_ptr(), fs.as_mut_ptr()) };
    // SAFETY: statfs filled it when it returned 0.
    rc == 0 && unsafe { fs.assume_init() }.f_type == BPF_FS_MAGIC
}
