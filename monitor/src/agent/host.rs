//! What the agent reads from the host itself: files the enricher needs judged (`.pth` content,
//! executables' change times), the boot-time clock, and the heartbeat it sends through its own
//! probes. The paths come from jobs, so every read is non-blocking, does not follow a final
//! symlink, takes regular files only and runs off the pipeline with a deadline.

use std::time::Duration;

use super::HEARTBEAT_PORT;
use crate::rules::packaging::MapFacts;

/// Every `every`, runs `monitor heartbeat`: a child whose exec, UDP connect to loopback and exit
/// travel through the real probes, ring buffer and decoder, so a stalled pipeline shows as a
/// stale `monitor_pipeline_heartbeat_timestamp_seconds` even on an idle runner.
pub(super) async fn send_heartbeats(every: Duration) {
    let Ok(exe) = std::env::current_exe() else {
        log::warn!("heartbeat disabled: cannot find the agent's own executable");
        return;
    };
    let mut interval = tokio::time::interval(every);
    loop {
        interval.tick().await;
        let status = tokio::process::Command::new(&exe)
            .args(["heartbeat", "--port", &HEARTBEAT_PORT.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await;
        if !status.as_ref().is_ok_and(|s| s.success()) {
            log::warn!("heartbeat did not run: {status:?}");
        }
    }
}

pub(super) fn boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Reads of job-controlled paths run on a helper thread and are given up after this long: a
/// FIFO, a FUSE file or a hung network mount must never stall the pipeline.
const HOST_READ_TIMEOUT: Duration = Duration::from_millis(250);
/// Helper threads that may be stuck in such reads at once; past it, reads are skipped (the
/// answer is "unknown", which the rules treat as suspicious, never as clean).
const MAX_STUCK_READS: usize = 4;

type HostRead = Box<dyn FnOnce() + Send>;

/// The reader thread's queue; replaced (and the old thread abandoned) when a read gets stuck.
static READER: std::sync::Mutex<Option<std::sync::mpsc::Sender<HostRead>>> =
    std::sync::Mutex::new(None);
/// Abandoned reader threads still stuck in a read.
static STUCK_READERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs `read` on the reader thread; `None` when it does not answer within
/// `HOST_READ_TIMEOUT` (the thread is then abandoned and a fresh one serves the next read) or
/// too many abandoned ones are still stuck.
fn bounded<T: Send + 'static>(read: impl FnOnce() -> Option<T> + Send + 'static) -> Option<T> {
    use std::sync::atomic::Ordering;
    let (answer_tx, answer) = std::sync::mpsc::sync_channel(1);
    let task: HostRead = Box::new(move || {
        let _ = answer_tx.send(read());
    });
    {
        let mut reader = READER.lock().unwrap_or_else(|e| e.into_inner());
        if reader.is_none() {
            if STUCK_READERS.load(Ordering::SeqCst) >= MAX_STUCK_READS {
                log::warn!(
                    "a host read was skipped: {MAX_STUCK_READS} earlier ones are still stuck"
                );
                return None;
            }
            let (tx, rx) = std::sync::mpsc::channel::<HostRead>();
            std::thread::Builder::new()
                .name("host-read".into())
                .spawn(move || {
                    while let Ok(task) = rx.recv() {
                        task();
                    }
                    // Only an abandoned reader's queue closes.
                    STUCK_READERS.fetch_sub(1, Ordering::SeqCst);
                })
                .ok()?;
            *reader = Some(tx);
        }
        reader.as_ref()?.send(task).ok()?;
    }
    match answer.recv_timeout(HOST_READ_TIMEOUT) {
        Ok(answer) => answer,
        Err(_) => {
            STUCK_READERS.fetch_add(1, Ordering::SeqCst);
            *READER.lock().unwrap_or_else(|e| e.into_inner()) = None;
            log::warn!("a host read did not answer within {HOST_READ_TIMEOUT:?} (a FIFO or a hung file system?); treated as unknown");
            None
        }
    }
}

/// Opens a job-controlled path for reading without following a final symlink and without
/// blocking on FIFOs or devices; only regular files are returned.
fn open_regular(path: &str) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    file.metadata().ok()?.is_file().then_some(file)
}

/// Whether a `.pth` file has lines Python executes at start-up (`import ...`), reading at most
/// 64 KiB. `None` when it cannot be read in time (gone already, not a regular file, a symlink,
/// a file system that does not answer).
pub(super) fn pth_has_executable_lines(path: &str) -> Option<bool> {
    let path = path.to_string();
    bounded(move || {
        use std::io::Read as _;
        let file = open_regular(&path)?;
        let mut text = Vec::new();
        file.take(64 * 1024).read_to_end(&mut text).ok()?;
        Some(crate::rules::lifecycle::pth_is_executable(
            &String::from_utf8_lossy(&text),
        ))
    })
}

/// What a source map reveals: whether it embeds its sources (`sourcesContent` with text, up to
/// `packaging::MAX_MAP_SCAN` bytes), and if not, whether npm would pack the files it maps with
/// it (its package's `files`). `None` when it cannot be read in time or is larger.
pub(super) fn map_facts(path: &str) -> Option<MapFacts> {
    let path = path.to_string();
    bounded(move || {
        use std::io::Read as _;
        let file = open_regular(&path)?;
        let len = file.metadata().ok()?.len();
        // Large maps are streamed once for `sourcesContent`; the others are read once, and
        // scanned and parsed from memory.
        if len > MAX_MAP_PARSE {
            let embeds_sources = crate::rules::packaging::embeds_sources(file).ok()??;
            return Some(MapFacts {
                embeds_sources,
                sources_packed: None,
            });
        }
        let mut text = Vec::new();
        file.take(MAX_MAP_PARSE).read_to_end(&mut text).ok()?;
        let embeds_sources = crate::rules::packaging::embeds_sources(&text[..]).ok()??;
        Some(MapFacts {
            embeds_sources,
            sources_packed: if embeds_sources {
                None
            } else {
                sources_packed(std::path::Path::new(&path), &text)
            },
        })
    })
}

/// Source maps parsed for their `sources` list (larger ones: unknown).
const MAX_MAP_PARSE: u64 = 8 * 1024 * 1024;
/// Directories walked up from a map to find its package's `package.json`.
const MAX_PACKAGE_DEPTH: usize = 12;

/// Whether npm would pack, with the map at `map`, any file it maps that exists in its package.
fn sources_packed(map: &std::path::Path, text: &[u8]) -> Option<bool> {
    #[derive(serde::Deserialize)]
    struct Sources {
        #[serde(default)]
        sources: Vec<Option<String>>,
        #[serde(default, rename = "sourceRoot")]
        source_root: Option<String>,
    }
    let parsed: Sources = serde_json::from_slice(text).ok()?;
    let dir = map.parent()?;
    // The nearest package.json above the map, opened once.
    let (root, manifest) = dir
        .ancestors()
        .take(MAX_PACKAGE_DEPTH)
        .find_map(|d| open_regular(&d.join("package.json").to_string_lossy()).map(|f| (d, f)))?;
    let package: serde_json::Value = {
        use std::io::Read as _;
        let mut text = Vec::new();
        manifest.take(1024 * 1024).read_to_end(&mut text).ok()?;
        serde_json::from_slice(&text).ok()?
    };
    let files: Option<Vec<String>> = package.get("files").and_then(|f| {
        f.as_array().map(|a| {
            a.iter()
                .filter_map(|e| e.as_str().map(String::from))
                .collect()
        })
    });
    let base = dir.join(parsed.source_root.unwrap_or_default());
    let present: Vec<String> = parsed
        .sources
        .iter()
        .flatten()
        .take(4096)
        .filter(|s| !s.contains("://"))
        .filter_map(|s| {
            let full = lexical_normal(&base.join(s));
            let rel = full.strip_prefix(root).ok()?.to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&full).ok()?;
            (meta.is_file() && !rel.starts_with("node_modules/")).then_some(rel)
        })
        .collect();
    let ignore_file = [".npmignore", ".gitignore"]
        .iter()
        .any(|f| std::fs::symlink_metadata(root.join(f)).is_ok());
    crate::rules::packaging::npm_packs_any(files.as_deref(), ignore_file, &present)
}

/// `a/b/../c` as `a/c`, without touching the file system.
fn lexical_normal(path: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Whether process `pid` that started at `start_ticks` (clock ticks after boot) still exists.
pub(super) fn still_running(pid: u32, start_ticks: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| crate::process_tree::parse_stat(&stat))
        .is_some_and(|(_, _, started)| started == start_ticks)
}

/// The change time (ctime: content or metadata written) of an executable, Unix ns.
pub(super) fn exe_changed_unix_ns(path: &str) -> Option<i128> {
    let path = path.to_string();
    bounded(move || {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(&path).ok()?;
        Some(meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128)
    })
}
