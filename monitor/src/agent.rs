//! The live pipeline: ring buffer -> decode -> process table -> JSON lines.
//!
//! The reader task only drains the ring, decodes and `try_send`s into a bounded channel, so a slow
//! consumer never stalls the kernel side; every record that cannot be decoded or queued is
//! counted. Enrichment and output run in the processing task.

use std::{
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use monitor_common::EventKind;
use tokio::{io::unix::AsyncFd, sync::mpsc};

use crate::{
    ci::identity_from_env,
    control::{self, Peer, Request, Response},
    engine::Engine,
    event::{
        decode::{decode, KernelEvent},
        Detail, Enricher, Event, WallClock,
    },
    finding::Finding,
    kernel_layout::running_kernel_layout,
    probes::{LossReader, ProbeOptions, Probes},
    process_tree::{clock_ticks_per_second, read_proc, ProcessTable},
    profile::Profile,
    replay::machine_engine_config,
    watch::WatchList,
};

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where to write events (None: stdout).
    pub events: Option<PathBuf>,
    /// Where to write findings (None: stderr).
    pub findings: Option<PathBuf>,
    /// The expected behaviour the findings are judged against.
    pub profile: Profile,
    /// Created once the probes are attached and the process table is seeded.
    pub ready_file: Option<PathBuf>,
    pub probe: ProbeOptions,
    pub max_processes: usize,
    pub channel_capacity: usize,
    /// The control socket (`monitor job`, `monitor hook`); None: no socket.
    pub control_socket: Option<PathBuf>,
    /// Group allowed to use the control socket (mode 0660); None: root only (0600).
    pub control_group: Option<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            events: None,
            findings: None,
            profile: Profile::default_profile(),
            ready_file: None,
            probe: ProbeOptions::default(),
            max_processes: 65_536,
            channel_capacity: 65_536,
            control_socket: None,
            control_group: None,
        }
    }
}

const KINDS: usize = EventKind::ALL.len();

/// Counters of the pipeline; every loss on either side is here.
#[derive(Debug, Default)]
pub struct Stats {
    pub events: [AtomicU64; KINDS],
    pub kernel_losses: [AtomicU64; KINDS],
    pub decode_errors: AtomicU64,
    pub channel_full: AtomicU64,
    pub write_errors: AtomicU64,
    pub findings: AtomicU64,
}

impl Stats {
    fn slot(kind: EventKind) -> usize {
        kind.loss_slot() as usize
    }

    pub fn summary(&self) -> serde_json::Value {
        let per_kind = |counters: &[AtomicU64; KINDS]| {
            EventKind::ALL
                .iter()
                .map(|k| {
                    (
                        k.name().to_string(),
                        serde_json::json!(counters[Self::slot(*k)].load(Ordering::Relaxed)),
                    )
                })
                .collect::<serde_json::Map<_, _>>()
        };
        serde_json::json!({
            "events": per_kind(&self.events),
            "kernel_losses": per_kind(&self.kernel_losses),
            "decode_errors": self.decode_errors.load(Ordering::Relaxed),
            "channel_full_drops": self.channel_full.load(Ordering::Relaxed),
            "write_errors": self.write_errors.load(Ordering::Relaxed),
            "findings": self.findings.load(Ordering::Relaxed),
        })
    }
}

/// Opens an output file for the agent's logs: created owner-only (0600), appended to.
pub fn open_private(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(file)
}

pub async fn run(options: RunOptions) -> anyhow::Result<()> {
    let layout =
        running_kernel_layout().context("reading this kernel's structure layout from BTF")?;
    let mut probes = Probes::load(&layout, &WatchList::defaults(), &options.probe)?;
    for (hook, why) in &probes.report.skipped {
        log::warn!("optional hook {hook} not attached: {why}");
    }
    log::info!("attached: {}", probes.report.attached.join(", "));
    let ring = probes.take_ring()?;
    let losses = probes.loss_reader()?;

    let mut table = ProcessTable::new(clock_ticks_per_second(), options.max_processes);
    table.seed(read_proc(std::path::Path::new("/proc")));
    log::info!("process table seeded with {} processes", table.len());
    let enricher = Enricher::new(table, WallClock::now())
        .with_pth_reader(pth_has_executable_lines)
        .with_exe_changed(exe_changed_unix_ns);

    let output: Box<dyn Write + Send> = match &options.events {
        Some(path) => Box::new(open_private(path)?),
        None => Box::new(std::io::stdout()),
    };
    let findings: Box<dyn Write + Send> = match &options.findings {
        Some(path) => Box::new(open_private(path)?),
        None => Box::new(std::io::stderr()),
    };
    let engine = Engine::new(options.profile.clone(), machine_engine_config());
    let sinks = Sinks {
        events: std::io::BufWriter::with_capacity(256 * 1024, output),
        findings,
        engine,
    };

    let (command_tx, commands) = mpsc::channel(64);
    let control = match &options.control_socket {
        Some(path) => {
            let listener = control::bind(path, options.control_group.as_deref())?;
            log::info!("control socket at {}", path.display());
            Some(tokio::spawn(control::serve(listener, command_tx)))
        }
        None => None,
    };

    let stats = Arc::new(Stats::default());
    let (tx, rx) = mpsc::channel(options.channel_capacity);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let reader = tokio::spawn(read_ring(ring, tx, stats.clone(), stop_rx));

    if let Some(path) = &options.ready_file {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing ready file {}", path.display()))?;
    }
    eprintln!("monitor: probes attached, streaming events");

    let processor = tokio::spawn(process(
        rx,
        commands,
        enricher,
        sinks,
        losses,
        stats.clone(),
    ));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let _ = stop_tx.send(true);
    if let Some(control) = control {
        control.abort();
        if let Some(path) = &options.control_socket {
            let _ = std::fs::remove_file(path);
        }
    }
    reader.await??;
    processor.await??;
    drop(probes);
    eprintln!("{}", serde_json::json!({ "stats": stats.summary() }));
    Ok(())
}

async fn read_ring(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<KernelEvent>,
    stats: Arc<Stats>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // SAFETY: the RingBuf owns its map fd and keeps it open and unchanged for as long as the
    // AsyncFd (which owns the RingBuf) lives.
    let mut fd = unsafe { AsyncFd::register(ring) }
        .map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;
    let drain = |ring: &mut RingBuf<MapData>| {
        while let Some(item) = ring.next() {
            match decode(&item) {
                Ok(event) => {
                    if tx.try_send(event).is_err() {
                        stats.channel_full.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                    log::debug!("undecodable record: {e}");
                }
            }
        }
    };
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut());
                guard.clear_ready();
            }
            _ = stop.changed() => {
                drain(fd.get_mut());
                return Ok(());
            }
        }
    }
}

/// Where enriched events go: the event log, and the engine whose findings are written at once.
struct Sinks {
    events: std::io::BufWriter<Box<dyn Write + Send>>,
    findings: Box<dyn Write + Send>,
    engine: Engine,
}

impl Sinks {
    fn handle(&mut self, enricher: &mut Enricher, event: KernelEvent, stats: &Stats) {
        stats.events[Stats::slot(event.header().kind)].fetch_add(1, Ordering::Relaxed);
        let Some(event) = enricher.enrich(event) else {
            return;
        };
        let written = serde_json::to_writer(&mut self.events, &event).is_ok()
            && self.events.write_all(b"\n").is_ok();
        if !written {
            stats.write_errors.fetch_add(1, Ordering::Relaxed);
        }
        let findings = self.engine.on_event(&event);
        self.write_findings(findings, stats);
    }

    /// Writes an agent-made event (job start/end) to the log and judges it like the kernel's.
    fn handle_control_event(&mut self, event: &Event, stats: &Stats) {
        let written = serde_json::to_writer(&mut self.events, event).is_ok()
            && self.events.write_all(b"\n").is_ok();
        if !written {
            stats.write_errors.fetch_add(1, Ordering::Relaxed);
        }
        let findings = self.engine.on_event(event);
        self.write_findings(findings, stats);
        self.flush(stats);
    }

    /// Answers a control request, in order with the kernel's events.
    fn command(
        &mut self,
        enricher: &mut Enricher,
        request: Request,
        peer: Peer,
        stats: &Stats,
    ) -> Response {
        let proc_root = std::path::Path::new("/proc");
        match request {
            Request::JobStart {
                env,
                anchor_pid,
                via,
            } => {
                if peer.uid != 0 && !control::is_self_or_ancestor(proc_root, peer.pid, anchor_pid) {
                    return Response::error(format!(
                        "process {anchor_pid} is not the caller or one of its ancestors; only root may anchor a job elsewhere"
                    ));
                }
                let env = control::filter_env(&env);
                let Some((job, _)) = identity_from_env(&env) else {
                    return Response::error(
                        "no job identity: need GITHUB_RUN_ID and GITHUB_JOB, CI_JOB_ID, or MONITOR_JOB_ID",
                    );
                };
                let detail = Detail::JobStart {
                    job: job.clone(),
                    via,
                    requested_by_pid: peer.pid,
                    requested_by_uid: peer.uid,
                };
                let Some(event) = enricher.control_event(detail, anchor_pid, boot_ns()) else {
                    return Response::error(format!("no process {anchor_pid}"));
                };
                self.handle_control_event(&event, stats);
                log::info!("job {} started (anchor pid {anchor_pid})", job.key);
                Response {
                    ok: true,
                    job: Some(job),
                    ..Default::default()
                }
            }
            Request::JobEnd { job, env, via } => {
                let key = match job {
                    Some(key) => key,
                    None => match identity_from_env(&control::filter_env(&env)) {
                        Some((job, _)) => job.key,
                        None => {
                            return Response::error(
                                "name the job (its key) or pass its identity variables",
                            )
                        }
                    },
                };
                let Some(identity) = self
                    .engine
                    .jobs()
                    .find(|(j, _)| j.key == key)
                    .map(|(j, _)| j.clone())
                else {
                    return Response::error(format!("no job {key}"));
                };
                let detail = Detail::JobEnd {
                    job: key.clone(),
                    via,
                };
                let Some(event) = enricher.control_event(detail, peer.pid, boot_ns()) else {
                    return Response::error("the caller's process is not visible");
                };
                self.handle_control_event(&event, stats);
                log::info!("job {key} ended");
                Response {
                    ok: true,
                    job: Some(identity),
                    ..Default::default()
                }
            }
            Request::Status {} => Response {
                ok: true,
                status: Some(serde_json::json!({
                    "jobs": self.engine.jobs().map(|(j, ended)| serde_json::json!({"job": j, "ended": ended})).collect::<Vec<_>>(),
                    "stats": stats.summary(),
                })),
                ..Default::default()
            },
        }
    }

    /// Findings are written and flushed as they come: the 1 s latency bound is for them.
    fn write_findings(&mut self, findings: Vec<Finding>, stats: &Stats) {
        if findings.is_empty() {
            return;
        }
        for finding in findings {
            stats.findings.fetch_add(1, Ordering::Relaxed);
            let written = serde_json::to_writer(&mut self.findings, &finding).is_ok()
                && self.findings.write_all(b"\n").is_ok();
            if !written {
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        if self.findings.flush().is_err() {
            stats.write_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn flush(&mut self, stats: &Stats) {
        if self.events.flush().is_err() {
            stats.write_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn process(
    mut rx: mpsc::Receiver<KernelEvent>,
    mut commands: mpsc::Receiver<control::Command>,
    mut enricher: Enricher,
    mut sinks: Sinks,
    losses: LossReader,
    stats: Arc<Stats>,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(ENGINE_TICK);
    let mut reported_losses = [0u64; KINDS];
    loop {
        tokio::select! {
            received = rx.recv() => {
                let Some(event) = received else { break };
                sinks.handle(&mut enricher, event, &stats);
                // Drain what is queued, then flush: at most one flush per burst.
                while let Ok(event) = rx.try_recv() {
                    sinks.handle(&mut enricher, event, &stats);
                }
                sinks.flush(&stats);
            }
            Some(command) = commands.recv() => {
                // Whatever the kernel queued before the request belongs before it.
                while let Ok(event) = rx.try_recv() {
                    sinks.handle(&mut enricher, event, &stats);
                }
                let response = sinks.command(&mut enricher, command.request, command.peer, &stats);
                let _ = command.reply.send(response);
            }
            _ = tick.tick() => {
                for (kind, total) in losses.read() {
                    let slot = Stats::slot(kind);
                    stats.kernel_losses[slot].store(total, Ordering::Relaxed);
                    if total > reported_losses[slot] {
                        log::warn!("kernel dropped {} {} records (ring buffer full)", total - reported_losses[slot], kind.name());
                        reported_losses[slot] = total;
                    }
                }
                let now = boot_ns();
                enricher.table.collect_garbage(now);
                let findings = sinks.engine.tick(now);
                sinks.write_findings(findings, &stats);
            }
        }
    }
    for (kind, total) in losses.read() {
        stats.kernel_losses[Stats::slot(kind)].store(total, Ordering::Relaxed);
    }
    let findings = sinks.engine.tick(boot_ns());
    sinks.write_findings(findings, &stats);
    sinks.events.flush().context("flushing events")?;
    Ok(())
}

/// Whether a `.pth` file has lines Python executes at start-up (`import ...`), reading at most
/// 64 KiB. `None` when it cannot be read (gone already, or not a regular file).
fn pth_has_executable_lines(path: &str) -> Option<bool> {
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

/// The change time (ctime: content or metadata written) of an executable, Unix ns.
fn exe_changed_unix_ns(path: &str) -> Option<i128> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    Some(meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128)
}

fn boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// How often the engine is given the time (for steps' grace periods) and losses are polled.
pub const ENGINE_TICK: Duration = Duration::from_millis(500);
