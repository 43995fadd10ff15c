//! The live pipeline: ring buffer -> decode -> process table -> JSON lines.
//!
//! The reader task only drains the ring, decodes and `try_send`s into a bounded channel, so a slow
//! consumer never stalls the kernel side; every record that cannot be decoded or queued is
//! counted. Enrichment and output run in the processing task.

use std::{
    io::Write,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt},
    path::PathBuf,
    sync::Arc,
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
    metrics::{unix_now, Metrics},
    probes::{LossReader, ProbeOptions, Probes},
    process_tree::{clock_ticks_per_second, read_proc, ProcessTable},
    profile::Profile,
    replay::machine_engine_config,
    report::Judge,
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
    /// Where `profile` was read from: SIGHUP reads it again (None: the built-in profile).
    pub profile_path: Option<PathBuf>,
    /// The configuration file whose profiles judge jobs (instead of `profile`); SIGHUP reads it
    /// and its profiles again.
    pub config_path: Option<PathBuf>,
    /// Created once the probes are attached and the process table is seeded.
    pub ready_file: Option<PathBuf>,
    pub probe: ProbeOptions,
    pub max_processes: usize,
    pub channel_capacity: usize,
    /// The control socket (`monitor job`, `monitor hook`); None: no socket.
    pub control_socket: Option<PathBuf>,
    /// Group allowed to use the control socket (mode 0660); None: root only (0600).
    pub control_group: Option<String>,
    /// Size past which the event and findings logs rotate.
    pub log_max_bytes: u64,
    /// Where job reports are written (JSON, Markdown, HTML) when a job ends; None: not written.
    pub reports: Option<PathBuf>,
    /// Where to serve `/metrics`; None: no endpoint.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// How often the agent sends a heartbeat through its own probes; None: never.
    pub heartbeat: Option<Duration>,
}

/// What SIGHUP reads again.
struct ReloadFrom {
    profile: Option<PathBuf>,
    config: Option<PathBuf>,
}

/// The port of the heartbeat's UDP connect (discard: nothing is sent by a UDP connect anyway).
pub const HEARTBEAT_PORT: u16 = 9;
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9477";

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            events: None,
            findings: None,
            profile: Profile::default_profile(),
            profile_path: None,
            config_path: None,
            ready_file: None,
            probe: ProbeOptions::default(),
            max_processes: 65_536,
            channel_capacity: 65_536,
            control_socket: None,
            control_group: None,
            metrics_address: None,
            reports: None,
            log_max_bytes: 256 * 1024 * 1024,
            heartbeat: Some(Duration::from_secs(10)),
        }
    }
}

const KINDS: usize = EventKind::ALL.len();

/// The pipeline's counters are the metrics (`crate::metrics`): one set of numbers for the stop
/// summary, `monitor job status` and `/metrics`.
pub type Stats = Metrics;

/// An append-only log (created 0600) that rotates once it passes `max_bytes`: `log` becomes
/// `log.1`, `log.1` becomes `log.2`, ..., the oldest beyond `keep` is deleted. It rotates only
/// between writes, and the agent hands it whole lines, so no line is split across files.
/// (Small and exact on purpose: the crates that rotate by size cut at byte counts mid-line.)
pub struct RotatingLog {
    path: PathBuf,
    file: std::fs::File,
    written: u64,
    max_bytes: u64,
    keep: u32,
}

impl RotatingLog {
    pub fn open(path: &std::path::Path, max_bytes: u64, keep: u32) -> anyhow::Result<Self> {
        let file = open_private(path)?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            path: path.to_path_buf(),
            file,
            written,
            max_bytes: max_bytes.max(4096),
            keep: keep.max(1),
        })
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        name.into()
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let _ = std::fs::remove_file(self.rotated(self.keep));
        for n in (1..self.keep).rev() {
            let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        self.file = open_private(&self.path).map_err(std::io::Error::other)?;
        self.written = 0;
        Ok(())
    }
}

impl Write for RotatingLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written > 0 && self.written + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Rotated files kept beside each log.
pub const LOG_KEEP: u32 = 3;

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
        Some(path) => Box::new(RotatingLog::open(path, options.log_max_bytes, LOG_KEEP)?),
        None => Box::new(std::io::stdout()),
    };
    let findings: Box<dyn Write + Send> = match &options.findings {
        Some(path) => Box::new(RotatingLog::open(path, options.log_max_bytes, LOG_KEEP)?),
        None => Box::new(std::io::stderr()),
    };
    let engine_config = machine_engine_config();
    let profiles = match &options.config_path {
        Some(path) => crate::config::Config::load_profiles(path)?,
        None => crate::config::ProfileSet::single(options.profile.clone()),
    };
    let block = profiles
        .all()
        .any(|p| p.egress_mode() == crate::profile::EgressMode::Block);
    let enforcer = if block {
        let enforcer =
            crate::enforce::Enforcer::attach(&mut probes.ebpf, &engine_config.dns_resolvers)
                .context(
                    "egress.mode is block, but the kernel side of block mode could not be set up",
                )?;
        log::info!("egress block mode: connections and sends of job processes to destinations the profile does not allow are refused (cgroup/connect4, connect6, sendmsg4, sendmsg6)");
        log::warn!("credential reads are reported, not blocked: that needs BPF-LSM, which this agent does not load");
        Some(enforcer)
    } else {
        None
    };
    let engine = Engine::with_profiles(profiles, engine_config);
    if let Some(dir) = &options.reports {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the reports directory {}", dir.display()))?;
    }
    let sinks = Sinks {
        events: std::io::BufWriter::with_capacity(256 * 1024, output),
        findings,
        judge: Judge::new(engine),
        enforcer,
        reports_dir: options.reports.clone(),
        line: Vec::with_capacity(4096),
        losses: Some(losses),
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

    let stats = Arc::new(Metrics::new());
    let optional = |hook: &str| {
        if crate::probes::is_optional(hook) {
            "true"
        } else {
            "false"
        }
    };
    for hook in &probes.report.attached {
        stats
            .probe_attached
            .with_label_values(&[hook, optional(hook)])
            .set(1);
    }
    for (hook, _) in &probes.report.skipped {
        stats
            .probe_attached
            .with_label_values(&[hook, optional(hook)])
            .set(0);
    }
    let mut ready_text = format!("{}\n", std::process::id());
    let metrics_server = match options.metrics_address {
        Some(address) => {
            let (bound, task) = crate::metrics::serve(address, stats.clone()).await?;
            log::info!("metrics at http://{bound}/metrics");
            ready_text.push_str(&format!("metrics={bound}\n"));
            Some(task)
        }
        None => None,
    };
    let heartbeat = options
        .heartbeat
        .map(|every| tokio::spawn(send_heartbeats(every)));
    let (tx, rx) = mpsc::channel(options.channel_capacity);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let reader = tokio::spawn(read_ring(ring, tx, stats.clone(), stop_rx));

    // Jobs already running (the agent started or restarted mid-job): picked up from /proc
    // before the agent says it is ready, so nothing they do after that is missed.
    let mut enricher = enricher;
    let mut sinks = sinks;
    let resumed = enricher.resume_running_jobs(std::path::Path::new("/proc"), boot_ns());
    if !resumed.is_empty() {
        log::info!(
            "{} running job processes picked up from /proc",
            resumed.len()
        );
    }
    for event in &resumed {
        sinks.log_and_judge(event, &stats);
    }
    sinks.flush(&stats);

    if let Some(path) = &options.ready_file {
        std::fs::write(path, &ready_text)
            .with_context(|| format!("writing ready file {}", path.display()))?;
    }
    eprintln!("monitor: probes attached, streaming events");

    // SIGHUP: read the profile again (open jobs go on, judged by the new one from then on).
    let (reload_tx, reloads) = mpsc::channel(4);
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let hangup_task = tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            if reload_tx.send(()).await.is_err() {
                break;
            }
        }
    });
    let processor = tokio::spawn(process(
        rx,
        commands,
        reloads,
        ReloadFrom {
            profile: options.profile_path.clone(),
            config: options.config_path.clone(),
        },
        enricher,
        sinks,
        stats.clone(),
    ));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let _ = stop_tx.send(true);
    hangup_task.abort();
    for task in [metrics_server, heartbeat].into_iter().flatten() {
        task.abort();
    }
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
                    let kind = event.header().kind;
                    if tx.try_send(event).is_err() {
                        stats.queue_full[Metrics::slot(kind)].inc();
                    }
                }
                Err(e) => {
                    stats.decode_errors.inc();
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

/// Where enriched events go: the event log, and the engine whose findings are written at once,
/// with the recorder that makes each job's report when it ends.
struct Sinks {
    events: std::io::BufWriter<Box<dyn Write + Send>>,
    findings: Box<dyn Write + Send>,
    judge: Judge,
    /// Block mode's kernel side, when the profile asks for it.
    enforcer: Option<crate::enforce::Enforcer>,
    reports_dir: Option<PathBuf>,
    /// Reused serialisation buffer: each event reaches the writer as one whole line.
    line: Vec<u8>,
    /// The kernel's per-kind loss counters, read on every tick and before a report is made.
    losses: Option<LossReader>,
}

/// A job's report as written when it ended.
struct Written {
    key: String,
    paths: Vec<PathBuf>,
    markdown: String,
}

impl Sinks {
    fn handle(&mut self, enricher: &mut Enricher, event: KernelEvent, stats: &Stats) {
        stats.events[Metrics::slot(event.header().kind)].inc();
        let Some(event) = enricher.enrich(event) else {
            return;
        };
        // The agent's own children are its heartbeats: proof the probes and the pipeline work,
        // not activity to log or judge.
        if event.process.ppid == std::process::id() {
            if let Detail::Connect {
                port: HEARTBEAT_PORT,
                address,
                ..
            } = &event.detail
            {
                if address.is_loopback() {
                    stats.heartbeat.set(unix_now());
                }
            }
            return;
        }
        self.log_and_judge(&event, stats);
    }

    /// Writes the event to the log, judges it, records it for reports, and writes the reports
    /// of the jobs it ended.
    fn log_and_judge(&mut self, event: &Event, stats: &Stats) -> Vec<Written> {
        self.line.clear();
        let written = serde_json::to_writer(&mut self.line, event).is_ok() && {
            self.line.push(b'\n');
            self.events.write_all(&self.line).is_ok()
        };
        if !written {
            stats.write_errors.inc();
        }
        self.judge.recorder.current_drops = Some(stats.drop_totals());
        let (findings, ended) = self.judge.on_event(event);
        for action in self.judge.engine.take_enforcement() {
            if let Some(enforcer) = &mut self.enforcer {
                if let Err(e) = enforcer.apply(&action) {
                    stats.write_errors.inc();
                    log::error!("block mode: could not apply {action:?}: {e:#}");
                }
            }
        }
        self.write_findings(findings, stats);
        let mut reports = Vec::new();
        if !ended.is_empty() {
            // A report must count the losses up to now, not up to the last tick.
            self.refresh_losses(stats);
            self.judge.recorder.current_drops = Some(stats.drop_totals());
        }
        for job in ended {
            stats.jobs_ended.inc();
            stats
                .job_duration
                .observe(job.ended_ns.saturating_sub(job.started_ns) as f64 / 1e9);
            let key = job.identity.key;
            let Some(report) = self
                .judge
                .recorder
                .report(&key, crate::report::now_rfc3339())
            else {
                continue;
            };
            let paths = match &self.reports_dir {
                Some(dir) => match crate::report::write_all(dir, &report) {
                    Ok(paths) => paths,
                    Err(e) => {
                        stats.write_errors.inc();
                        log::error!("writing the report of {key}: {e:#}");
                        Vec::new()
                    }
                },
                None => Vec::new(),
            };
            if let Some(p) = paths.first() {
                log::info!("report of job {key}: {}", p.display());
            }
            self.judge.recorder.forget(&key);
            reports.push(Written {
                markdown: crate::report::markdown::render(&report),
                key,
                paths,
            });
        }
        reports
    }

    /// Writes an agent-made event (job start/end) to the log and judges it like the kernel's.
    fn handle_control_event(&mut self, event: &Event, stats: &Stats) -> Vec<Written> {
        let reports = self.log_and_judge(event, stats);
        self.flush(stats);
        reports
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
                    .judge
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
                let written = self.handle_control_event(&event, stats);
                log::info!("job {key} ended");
                let mine = written.into_iter().find(|w| w.key == key);
                Response {
                    ok: true,
                    job: Some(identity),
                    reports: mine.as_ref().map(|w| w.paths.clone()).unwrap_or_default(),
                    summary_markdown: mine.map(|w| w.markdown),
                    ..Default::default()
                }
            }
            Request::Status {} => Response {
                ok: true,
                status: Some(serde_json::json!({
                    "jobs": self.judge.engine.jobs().map(|(j, ended)| serde_json::json!({"job": j, "ended": ended})).collect::<Vec<_>>(),
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
            stats.count_finding(
                &finding.rule,
                finding.severity.name(),
                finding.job.as_ref().and_then(|j| j.repository.as_deref()),
            );
            self.line.clear();
            let written = serde_json::to_writer(&mut self.line, &finding).is_ok() && {
                self.line.push(b'\n');
                self.findings.write_all(&self.line).is_ok()
            };
            if !written {
                stats.write_errors.inc();
            }
        }
        if self.findings.flush().is_err() {
            stats.write_errors.inc();
        }
    }

    /// Reads the profile (or the configuration and its profiles) again; anything broken is
    /// refused (with where and why) and what runs now stays.
    fn reload(&mut self, from: &ReloadFrom, stats: &Stats) {
        let loaded = match (&from.config, &from.profile) {
            (Some(config), _) => crate::config::Config::load_profiles(config)
                .map(|p| (p, config.clone()))
                .map_err(anyhow::Error::from),
            (None, Some(profile)) => Profile::load(profile)
                .map(|p| (crate::config::ProfileSet::single(p), profile.clone()))
                .map_err(anyhow::Error::from),
            (None, None) => {
                log::warn!("SIGHUP: running with the built-in profile, nothing to reload");
                return;
            }
        };
        match loaded {
            Ok((profiles, path)) => {
                let block = |p: &crate::config::ProfileSet| {
                    p.all()
                        .any(|p| p.egress_mode() == crate::profile::EgressMode::Block)
                };
                if block(&profiles) != self.enforcer.is_some() {
                    log::warn!("SIGHUP: egress.mode changed; switching block mode on or off takes a restart (the rest is applied)");
                }
                self.judge.engine.set_profiles(profiles);
                stats.profile_reloads.with_label_values(&["ok"]).inc();
                log::info!("SIGHUP: profile reloaded from {}", path.display());
            }
            Err(e) => {
                stats.profile_reloads.with_label_values(&["refused"]).inc();
                log::error!("SIGHUP: profile reload refused, keeping the current one: {e:#}");
            }
        }
    }

    fn refresh_losses(&mut self, stats: &Stats) {
        if let Some(losses) = &self.losses {
            for (kind, total) in losses.read() {
                stats.set_kernel_losses(kind, total);
            }
        }
    }

    /// Job gauges (ended jobs are accounted when the event that ends them is judged).
    fn account_jobs(&mut self, stats: &Stats) {
        stats
            .active_jobs
            .set(self.judge.engine.active_jobs() as i64);
    }

    fn flush(&mut self, stats: &Stats) {
        if self.events.flush().is_err() {
            stats.write_errors.inc();
        }
    }
}

async fn process(
    mut rx: mpsc::Receiver<KernelEvent>,
    mut commands: mpsc::Receiver<control::Command>,
    mut reloads: mpsc::Receiver<()>,
    reload_from: ReloadFrom,
    mut enricher: Enricher,
    mut sinks: Sinks,
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
                stats.last_event.set(unix_now());
                sinks.account_jobs(&stats);
            }
            Some(command) = commands.recv() => {
                // Whatever the kernel queued before the request belongs before it.
                while let Ok(event) = rx.try_recv() {
                    sinks.handle(&mut enricher, event, &stats);
                }
                let response = sinks.command(&mut enricher, command.request, command.peer, &stats);
                let _ = command.reply.send(response);
                sinks.account_jobs(&stats);
            }
            Some(()) = reloads.recv() => {
                // Whatever the kernel queued before the signal is judged by the old profile.
                while let Ok(event) = rx.try_recv() {
                    sinks.handle(&mut enricher, event, &stats);
                }
                sinks.reload(&reload_from, &stats);
            }
            _ = tick.tick() => {
                let totals = sinks.losses.as_ref().map(LossReader::read).unwrap_or_default();
                for (kind, total) in totals {
                    let slot = Metrics::slot(kind);
                    stats.set_kernel_losses(kind, total);
                    if total > reported_losses[slot] {
                        log::warn!("kernel dropped {} {} records (ring buffer full)", total - reported_losses[slot], kind.name());
                        reported_losses[slot] = total;
                    }
                }
                let now = boot_ns();
                enricher.table.collect_garbage(now);
                let unparsed = enricher.dns_unparsed.saturating_sub(stats.dns_unparsed.get());
                stats.dns_unparsed.inc_by(unparsed);
                let findings = sinks.judge.tick(now);
                sinks.write_findings(findings, &stats);
                sinks.account_jobs(&stats);
            }
        }
    }
    sinks.refresh_losses(&stats);
    let findings = sinks.judge.tick(boot_ns());
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

/// Every `every`, runs `monitor heartbeat`: a child whose exec, UDP connect to loopback and exit
/// travel through the real probes, ring buffer and decoder, so a stalled pipeline shows as a
/// stale `monitor_pipeline_heartbeat_timestamp_seconds` even on an idle runner.
async fn send_heartbeats(every: Duration) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn logs_rotate_between_whole_lines_keep_a_bounded_number_and_stay_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut log = RotatingLog::open(&path, 4096, 2).unwrap();
        let line = format!("{{\"n\":\"{}\"}}\n", "x".repeat(990));
        for _ in 0..20 {
            log.write_all(line.as_bytes()).unwrap();
        }
        log.flush().unwrap();
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let names: Vec<_> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]);
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            assert!(text.len() <= 4096, "{} is over the cap", f.display());
            assert!(
                text.lines().all(|l| l.len() == line.len() - 1),
                "a line was split in {}",
                f.display()
            );
            assert_eq!(
                std::fs::metadata(f).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
}
