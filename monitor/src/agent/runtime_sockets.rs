//! The container runtimes' API sockets the kernel recognises by identity (`RUNTIME_SOCKETS`,
//! monitor-ebpf connect.rs): a unix `connect(2)` that reaches one, by whatever name or mount, is
//! a `runtime-client` record, taken when the client asks, so what the runtime then starts is
//! named after its client even when the client is gone by the time the agent reads it.
//!
//! A daemon makes its socket anew when it restarts (a new inode), and may start after the
//! agent: the sockets are looked at again on the pipeline's tick, at most every `REFRESH`.

use std::{
    os::unix::fs::FileTypeExt as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::{
    maps::{Array, HashMap, MapData},
    Ebpf,
};
use monitor_common::InodeKey;

const REFRESH: Duration = Duration::from_secs(5);

pub struct RuntimeSockets {
    map: HashMap<MapData, InodeKey, u32>,
    on: Array<MapData, u32>,
    paths: Vec<PathBuf>,
    /// What each path was when last looked at (None: no socket there).
    known: Vec<Option<InodeKey>>,
    last: Option<Instant>,
    /// `monitor_container_runtime_socket_present`, once the metrics exist.
    present: Option<prometheus::IntGauge>,
}

impl RuntimeSockets {
    /// Takes the kernel's map for these socket paths (numbered in this order) and looks at them.
    pub fn open(ebpf: &mut Ebpf, paths: Vec<PathBuf>) -> anyhow::Result<Self> {
        let map = ebpf
            .take_map("RUNTIME_SOCKETS")
            .context("RUNTIME_SOCKETS map missing")?;
        let on = ebpf
            .take_map("RUNTIME_SOCKETS_ON")
            .context("RUNTIME_SOCKETS_ON map missing")?;
        let mut sockets = Self {
            map: HashMap::try_from(map)?,
            on: Array::try_from(on)?,
            known: vec![None; paths.len()],
            paths,
            last: None,
            present: None,
        };
        sockets.refresh_if_due();
        Ok(sockets)
    }

    /// Says in `gauge` (now and at each look) whether any of the sockets is there.
    pub fn report_to(&mut self, gauge: prometheus::IntGauge) {
        gauge.set(i64::from(self.known.iter().any(Option::is_some)));
        self.present = Some(gauge);
    }

    /// The sockets' names, in the order of the numbers the kernel's records carry.
    pub fn names(&self) -> Vec<String> {
        self.paths.iter().map(|p| p.display().to_string()).collect()
    }

    /// Looks at the sockets again when due, and tells the kernel what changed.
    pub fn refresh_if_due(&mut self) {
        if self.last.is_some_and(|t| t.elapsed() < REFRESH) {
            return;
        }
        self.last = Some(Instant::now());
        for (number, path) in self.paths.iter().enumerate() {
            let now = std::fs::metadata(path)
                .ok()
                .filter(|m| m.file_type().is_socket())
                .map(|m| super::inode_key(&m));
            if now == self.known[number] {
                continue;
            }
            if let Some(old) = self.known[number] {
                let _ = self.map.remove(&old);
            }
            if let Some(key) = now {
                if let Err(e) = self.map.insert(key, number as u32, 0) {
                    log::warn!(
                        "{}: runtime clients not recognised by the kernel ({e}); they are asked of /proc only",
                        path.display()
                    );
                    continue;
                }
                log::info!(
                    "runtime socket {} (inode {}) watched: its clients are named as they connect",
                    path.display(),
                    key.ino
                );
            }
            self.known[number] = now;
        }
        let any = u32::from(self.known.iter().any(Option::is_some));
        let _ = self.on.set(0, any, 0);
        if let Some(gauge) = &self.present {
            gauge.set(i64::from(any));
        }
    }
}
