//! The kernel's tamper log: every signal aimed at the agent is written to the ring and also to
//! `TAMPER_LOG`, a small map pinned in bpffs, which outlives the agent. An agent killed with
//! SIGKILL dies before it reads the ring; the agent that starts next finds the record here, judges
//! it as the dead one would have (attributed to the sender's job and step through the sender's
//! parent, usually the step's still-running shell) and names it in the job's report.
//!
//! The live agent clears the records it has judged from the ring (on its tick), so the next agent
//! reports only what nobody reported.

use std::path::{Path, PathBuf};

use aya::maps::{Array, MapData};
use monitor_common::{TamperEvent, TAMPER_LOG_SLOTS, TAMPER_SIGNAL, TAMPER_SIGNAL_LOGGED};

/// Where the agent pins what must outlive it.
pub const PIN_DIR: &str = "/sys/fs/bpf/monitor";
/// Records judged from the ring and waiting to be cleared from the log.
const MAX_PENDING_CLEAR: usize = 1024;

pub struct PinPaths {
    pub log: PathBuf,
    pub next: PathBuf,
}

impl PinPaths {
    /// Removes the pins (a stale layout), so the next load makes new maps.
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_file(&self.next);
    }
}

/// Where the tamper log is pinned in `dir` (made owner-only); `None` (said in the log) where
/// `dir`'s parent is not a bpffs: then the log dies with the agent.
pub fn pin_paths(dir: &Path) -> Option<PinPaths> {
    use std::os::unix::fs::DirBuilderExt as _;
    let parent = dir.parent().unwrap_or(dir);
    if !crate::enforcement_pins::on_bpffs(parent) {
        log::warn!(
            "{} is not on a bpffs: signals that kill the agent before it reads them are lost with it (mount -t bpf bpf /sys/fs/bpf)",
            parent.display()
        );
        return None;
    }
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        log::warn!(
            "cannot make {} ({e}): the tamper log dies with the agent",
            dir.display()
        );
        return None;
    }
    Some(PinPaths {
        log: dir.join("tamper_log"),
        next: dir.join("tamper_log_next"),
    })
}

pub struct TamperLog {
    map: Array<MapData, TamperEvent>,
    /// Where it is pinned (checked on every tick: unpinning it is how a root attacker would make
    /// sure a kill leaves no trace for the next agent).
    pin: Option<PathBuf>,
    /// (time, sender) of signal records judged from the ring, to clear from the log.
    judged: Vec<(u64, u32)>,
}

impl TamperLog {
    pub fn open(ebpf: &mut aya::Ebpf, pin: Option<PathBuf>) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let map = ebpf
            .take_map("TAMPER_LOG")
            .context("TAMPER_LOG map missing")?;
        Ok(Self {
            map: Array::try_from(map)?,
            pin,
            judged: Vec::new(),
        })
    }

    /// Records aimed at agents that are no longer running, oldest first, as the records the
    /// ring would have carried (marked `TAMPER_SIGNAL_LOGGED`); taken out of the log.
    pub fn take_orphans(&mut self) -> Vec<TamperEvent> {
        let own = std::process::id();
        let mut orphans = Vec::new();
        for slot in 0..TAMPER_LOG_SLOTS {
            let Ok(record) = self.map.get(&slot, 0) else {
                continue;
            };
            if record.header.ts_ns == 0 || record.syscall != TAMPER_SIGNAL {
                continue;
            }
            let target = record.target as u32;
            if target == own || agent_running(target) {
                continue;
            }
            let mut record = record;
            record.syscall = TAMPER_SIGNAL_LOGGED;
            orphans.push(record);
            let _ = self.map.set(slot, TamperEvent::default(), 0);
        }
        orphans.sort_by_key(|r| r.header.ts_ns);
        orphans
    }

    /// Whether its pin was found removed: then it is pinned again, and said.
    pub fn repin_if_removed(&mut self) -> bool {
        use aya::maps::IterableMap as _;
        let Some(path) = &self.pin else {
            return false;
        };
        if std::fs::symlink_metadata(path).is_ok() {
            return false;
        }
        match self.map.map().pin(path) {
            Ok(()) => log::warn!(
                "the pinned tamper log {} was removed (only root can: a step preparing to kill the agent unseen?); pinned it again",
                path.display()
            ),
            Err(e) => log::warn!(
                "the pinned tamper log {} was removed and could not be pinned again ({e}): a signal that kills the agent now dies with it",
                path.display()
            ),
        }
        true
    }

    /// A signal record this agent judged from the ring: no successor needs to.
    pub fn judged(&mut self, ts_ns: u64, sender: u32) {
        if self.judged.len() < MAX_PENDING_CLEAR {
            self.judged.push((ts_ns, sender));
        }
    }

    /// Clears the judged records from the log.
    pub fn clear_judged(&mut self) {
        if self.judged.is_empty() {
            return;
        }
        for slot in 0..TAMPER_LOG_SLOTS {
            let Ok(record) = self.map.get(&slot, 0) else {
                continue;
            };
            if self
                .judged
                .contains(&(record.header.ts_ns, record.header.tgid))
            {
                let _ = self.map.set(slot, TamperEvent::default(), 0);
            }
        }
        self.judged.clear();
    }
}

/// Whether `pid` is an agent still running (the same program as this one): its records are its
/// own to report.
fn agent_running(pid: u32) -> bool {
    let Ok(theirs) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
        return false;
    };
    std::env::current_exe().is_ok_and(|ours| ours == theirs)
}
