//! The host's guarded services: the logging, audit and security daemons whose stopping by a job
//! is `defence-tampering`. The kernel (`signal_generate`) reports stopping signals aimed at the
//! processes listed in its `GUARDED` map, whatever route sent them; this keeps the map in step
//! with /proc.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use aya::{
    maps::{HashMap, MapData},
    Ebpf,
};
use monitor_common::GUARDED_SLOTS;

/// Process names (`comm`) of the services guarded: journald, auditd, the syslog daemons, and
/// other security agents.
const SERVICES: &[&str] = &[
    "systemd-journal",
    "auditd",
    "rsyslogd",
    "syslog-ng",
    "syslogd",
    "falco",
    "tetragon",
    "kunai",
    "osqueryd",
    "wazuh-agentd",
    "wazuh-modulesd",
    "ossec-agentd",
    "auditbeat",
];

/// How often /proc is read again (services restart with new pids).
const REFRESH: Duration = Duration::from_secs(2);

pub struct Guarded {
    map: HashMap<MapData, u32, u32>,
    listed: BTreeSet<u32>,
    last: Option<Instant>,
}

impl Guarded {
    pub fn open(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let map = ebpf
            .take_map("GUARDED")
            .ok_or_else(|| anyhow::anyhow!("GUARDED map missing"))?;
        let mut guarded = Self {
            map: HashMap::try_from(map)?,
            listed: BTreeSet::new(),
            last: None,
        };
        guarded.refresh_if_due();
        Ok(guarded)
    }

    /// Reads /proc again when the last read is older than `REFRESH`, and updates the kernel's
    /// list: new services added, gone ones removed.
    pub fn refresh_if_due(&mut self) {
        if self.last.is_some_and(|t| t.elapsed() < REFRESH) {
            return;
        }
        self.last = Some(Instant::now());
        let now = running_services();
        for gone in self.listed.difference(&now).copied().collect::<Vec<_>>() {
            let _ = self.map.remove(&gone);
            self.listed.remove(&gone);
        }
        for pid in now {
            if self.listed.len() >= GUARDED_SLOTS as usize {
                break;
            }
            if !self.listed.contains(&pid) && self.map.insert(pid, 1, 0).is_ok() {
                log::debug!("guarding host service pid {pid}");
                self.listed.insert(pid);
            }
        }
    }
}

/// Pids of the running guarded services.
fn running_services() -> BTreeSet<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            SERVICES.contains(&comm.trim_end()).then_some(pid)
        })
        .collect()
}
