//! What the agent reads from the host itself: files the enricher needs judged (`.pth` content,
//! executables' change times), the boot-time clock, and the heartbeat it sends through its own
//! probes.

use std::time::Duration;

use super::HEARTBEAT_PORT;

/// Whether a `.pth` file has lines Python executes at start-up (`import ...`), reading at most
/// 64 KiB. `None` when it cannot be read (gone already, or not a regular file).
pub(super) fn pth_has_executable_lines(path: &str) -> Option<bool> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = Vec::new();
    file.take(64 * 1024).read_to_end(&mut text).ok()?;
    Some(crate::rules::lifecycle::pth_is_executable(
        &String::from_utf8_lossy(&text),
    ))
}

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

/// The change time (ctime: content or metadata written) of an executable, Unix ns.
pub(super) fn exe_changed_unix_ns(path: &str) -> Option<i128> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    Some(meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128)
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
