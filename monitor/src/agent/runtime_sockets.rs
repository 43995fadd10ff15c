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
/// How often a socket with no daemon found is looked at again for one.
const LOOK_AGAIN: Duration = Duration::from_secs(60);

pub struct RuntimeSockets {
    map: HashMap<MapData, InodeKey, u32>,
    on: Array<MapData, u32>,
    paths: Vec<PathBuf>,
    /// What each path was when last looked at (None: no socket there).
    known: Vec<Option<InodeKey>>,
    last: Option<Instant>,
    /// `monitor_container_runtime_socket_present`, once the metrics exist, and the number of
    /// the socket whose API the agent asks (Docker's) it speaks of.
    present: Option<(prometheus::IntGauge, usize)>,
    /// The daemons listening on each socket, as last found, and when: looked for again when
    /// the socket changed or one of them is gone, and every `LOOK_AGAIN` while a socket that
    /// is there has none (a socket-activated daemon starts on a socket already there).
    daemons: Vec<(Vec<u32>, Option<Instant>)>,
    /// Daemons found since the enricher was last told.
    daemons_news: Option<Vec<u32>>,
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
            daemons: vec![(Vec::new(), None); paths.len()],
            paths,
            last: None,
            present: None,
            daemons_news: None,
        };
        sockets.refresh_if_due();
        Ok(sockets)
    }

    /// Says in `gauge` (now and at each look) whether socket `number`, the one whose API the
    /// agent asks, is there (another runtime's socket without Docker's is no API down).
    pub fn report_to(&mut self, gauge: prometheus::IntGauge, number: usize) {
        gauge.set(i64::from(self.api_socket_present(number)));
        self.present = Some((gauge, number));
    }

    fn api_socket_present(&self, number: usize) -> bool {
        self.known.get(number).is_some_and(Option::is_some)
    }

    /// The sockets' names, in the order of the numbers the kernel's records carry.
    pub fn names(&self) -> Vec<String> {
        self.paths.iter().map(|p| p.display().to_string()).collect()
    }

    /// The daemons listening on the sockets, when they changed since this was last asked.
    pub fn take_new_daemons(&mut self) -> Option<Vec<u32>> {
        self.daemons_news.take()
    }

    /// Looks at the sockets again when due, and tells the kernel what changed.
    pub fn refresh_if_due(&mut self) {
        if self.last.is_some_and(|t| t.elapsed() < REFRESH) {
            return;
        }
        self.last = Some(Instant::now());
        let before = self.known.clone();
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
        self.find_daemons(&before);
        let _ = self.on.set(0, any, 0);
        if let Some((gauge, number)) = &self.present {
            gauge.set(i64::from(self.api_socket_present(*number)));
        }
    }

    /// Finds the processes listening on each socket that changed since `before`, lost a daemon,
    /// or has had none for `LOOK_AGAIN`; keeps them all for the enricher when that changed them.
    fn find_daemons(&mut self, before: &[Option<InodeKey>]) {
        let mut changed = false;
        for (number, path) in self.paths.iter().enumerate() {
            let (pids, looked) = &self.daemons[number];
            let due = self.known[number] != before[number]
                || pids
                    .iter()
                    .any(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
                || (self.known[number].is_some()
                    && pids.is_empty()
                    && looked.is_none_or(|t| t.elapsed() >= LOOK_AGAIN));
            if !due {
                continue;
            }
            let mut found = if self.known[number].is_some() {
                crate::containers::clients::listeners_of(&[path.as_path()])
            } else {
                Vec::new()
            };
            found.sort_unstable();
            if found != *pids {
                log::info!("container runtime daemon of {}: {found:?}", path.display());
                changed = true;
            }
            self.daemons[number] = (found, Some(Instant::now()));
        }
        if changed {
            let mut all: Vec<u32> = self.daemons.iter().flat_map(|(p, _)| p.clone()).collect();
            all.sort_unstable();
            all.dedup();
            self.daemons_news = Some(all);
        }
    }
}
