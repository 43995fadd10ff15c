//! The live agent: loads the probes and wires the pipeline's tasks together.
//!
//! kernel probes -> ring buffer -> `ring` (decode, never waits) -> bounded channel ->
//! `pipeline` (process table, enrich, log, judge, reports, block mode, control requests).
//! `host` is what the agent reads from the machine itself and its heartbeat.

mod container_hold;
mod guarded;
mod host;
mod identities;
mod repeats;
mod sources;
pub(crate) use identities::inode_key;
mod pipeline;
mod ring;
mod runtime_sockets;
pub mod tamper_log;

use std::{io::Write, os::unix::fs::DirBuilderExt as _, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use monitor_common::EventKind;
use tokio::sync::mpsc;

use crate::{
    control,
    enforce::{Enforcer, Needs},
    enforcement_pins::EnforcementPins,
    engine::Engine,
    event::{Enricher, WallClock},
    judge::Judge,
    kernel_layout::running_kernel_layout,
    metrics::Metrics,
    output::{RotatingLog, LOG_KEEP},
    probes::{ProbeOptions, Probes},
    process_tree::{clock_ticks_per_second, read_proc, ProcessTable},
    profile::{EgressMode, Profile, ProfileSet, ProfileSource},
    replay::machine_engine_config,
    watch::WatchList,
};
use host::{boot_ns, exe_changed_unix_ns, map_facts, pth_has_executable_lines, send_heartbeats};
use pipeline::Pipeline;

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where to write events (None: stdout).
    pub events: Option<PathBuf>,
    /// Where to write findings (None: stderr).
    pub findings: Option<PathBuf>,
    /// The profiles findings are judged against, as read at start.
    pub profiles: ProfileSet,
    /// Where `profiles` came from: SIGHUP reads them again from there.
    pub profile_source: ProfileSource,
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
    /// Homes whose watched files are known by identity from the start (see `identities`).
    pub watch_homes: Vec<PathBuf>,
    /// The Docker Engine API's socket (containers' images, privileges, mounts); None: not asked.
    pub docker_socket: Option<PathBuf>,
    /// Other container runtimes' API sockets (containerd, Podman, CRI-O, BuildKit): their
    /// clients are named as they connect, and what their daemons start in cgroups of their own
    /// are containers whatever they are named. The Docker socket is one without being listed.
    pub runtime_sockets: Vec<PathBuf>,
    /// How containers are told apart (by cgroup, or by mount namespace on cgroup v1 hosts).
    pub container_identity: crate::containers::ContainerIdentity,
    /// Enforcement ends with the agent, and a dead agent's is removed (`--release-enforcement`).
    pub release_enforcement: bool,
    /// Services that take data from anyone (`known-exfil-service`).
    pub exfil_services: std::sync::Arc<crate::rules::exfil_services::ExfilServices>,
    /// Baselines across runs; None: off.
    pub baseline: Option<crate::baseline::BaselineOptions>,
    /// Findings for a person on standard output (`--output console`), not events.
    pub console: bool,
    /// Where findings and job summaries are sent (syslog, OTLP).
    pub outputs: Vec<crate::forward::OutputConfig>,
    /// The runner's pool and labels, as outputs name it.
    pub runner: crate::forward::RunnerInfo,
}

pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// The runtimes' sockets where their packages put them: containerd's own and the one dockerd
/// starts for itself, Podman's rootful service, CRI-O, BuildKit.
pub const DEFAULT_RUNTIME_SOCKETS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/var/run/docker/containerd/containerd.sock",
    "/run/podman/podman.sock",
    "/var/run/crio/crio.sock",
    "/run/buildkit/buildkitd.sock",
];

/// Runtime sockets the kernel can recognise at once (`RUNTIME_SOCKETS`' size).
pub const MAX_RUNTIME_SOCKETS: usize = 16;

/// The port of the heartbeat's UDP connect (discard: nothing is sent by a UDP connect anyway).
pub const HEARTBEAT_PORT: u16 = 9;
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9477";

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            events: None,
            findings: None,
            profiles: ProfileSet::single(Profile::default_profile()),
            profile_source: ProfileSource::BuiltIn,
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
            watch_homes: Vec::new(),
            docker_socket: Some(DEFAULT_DOCKER_SOCKET.into()),
            runtime_sockets: DEFAULT_RUNTIME_SOCKETS.iter().map(PathBuf::from).collect(),
            container_identity: Default::default(),
            release_enforcement: false,
            exfil_services: Default::default(),
            baseline: None,
            console: false,
            outputs: Vec::new(),
            runner: Default::default(),
        }
    }
}

const KINDS: usize = EventKind::ALL.len();

/// The pipeline's counters are the metrics (`crate::metrics`): one set of numbers for the stop
/// summary, `monitor job status` and `/metrics`.
pub type Stats = Metrics;

/// How often the engine is given the time (for steps' grace periods) and losses are polled.
pub const ENGINE_TICK: Duration = Duration::from_millis(500);

/// What the profiles in force ask the kernel to do: refuse unallowed egress, kill.
fn kernel_needs(profiles: &ProfileSet) -> Needs {
    Needs {
        egress_block: profiles.all().any(|p| p.egress_mode() == EgressMode::Block),
        kills: profiles.all().any(|p| p.responses.kills()),
        exec_scan: profiles.all().any(|p| p.responses.needs_exec_scan()),
    }
}

/// Raises the soft descriptor limit to the hard one: the control socket's connections, the ring
/// and the logs must not run out before the caps (`control::MAX_CONNECTIONS`) apply.
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                log::warn!("could not raise the descriptor limit");
            }
        }
    }
}

pub async fn run(mut options: RunOptions) -> anyhow::Result<()> {
    raise_descriptor_limit();
    let layout =
        running_kernel_layout().context("reading this kernel's structure layout from BTF")?;
    let needs = kernel_needs(&options.profiles);
    // Enforcement a profile asks for outlives the agent (pinned); otherwise what a dead agent
    // left is released.
    if let Some(pin_dir) = options.probe.pin_dir.clone() {
        if needs.any() && !options.release_enforcement {
            options.probe.enforcement = EnforcementPins::claim(&pin_dir)?;
        } else {
            let released = crate::enforcement_pins::release_dead(&pin_dir);
            if released > 0 {
                log::info!(
                    "released the enforcement {released} stopped agent(s) left in the kernel"
                );
            }
        }
    }
    let mut probes = Probes::load(&layout, &WatchList::defaults(), &options.probe)?;
    for (hook, why) in &probes.report.skipped {
        log::warn!("optional hook {hook} not attached: {why}");
    }
    log::info!("attached: {}", probes.report.attached.join(", "));
    for tier in &probes.report.tiers {
        log::info!("{}", tier.describe());
    }
    for line in crate::hook_tier::FIXED_FAMILIES {
        log::info!("{line}");
    }
    if let Some((heaviest, walked)) = probes.report.verifier_cost.first() {
        log::debug!(
            "verifier: {heaviest} walked {walked} of {} instructions (the heaviest)",
            crate::probes::VERIFIER_BUDGET
        );
    }
    let rings = probes.take_rings()?;
    let losses = probes.loss_reader()?;
    let shed = probes.shed_reader()?;
    let probe_errors = probes.probe_error_reader()?;
    let process_losses = probes.process_loss_reader()?;
    let pin = probes.tamper_log_pin.clone();
    let tamper_log = match tamper_log::TamperLog::open(&mut probes.ebpf, pin) {
        Ok(log) => Some(log),
        Err(e) => {
            log::warn!(
                "tamper log unavailable ({e:#}): a signal that kills the agent is lost with it"
            );
            None
        }
    };

    let guarded = match guarded::Guarded::open(&mut probes.ebpf) {
        Ok(g) => Some(g),
        Err(e) => {
            log::warn!("guarded services unavailable ({e:#}): stopping them is not reported");
            None
        }
    };

    let sources = match sources::SourceWatch::open(&mut probes.ebpf) {
        Ok(s) => Some(s),
        Err(e) => {
            log::warn!("tracked sources unavailable ({e:#}): source-modified is not judged");
            None
        }
    };
    let identities = match identities::Identities::open(&mut probes.ebpf, &options.watch_homes) {
        Ok(i) => Some(i),
        Err(e) => {
            log::warn!(
                "watched files by identity unavailable ({e:#}): they are known by name only"
            );
            None
        }
    };

    // The Docker socket first, then the others; the same socket twice is one.
    let mut socket_paths: Vec<PathBuf> = Vec::new();
    for path in options.docker_socket.iter().chain(&options.runtime_sockets) {
        if !socket_paths.contains(path) {
            socket_paths.push(path.clone());
        }
    }
    if socket_paths.len() > MAX_RUNTIME_SOCKETS {
        log::warn!(
            "{} runtime sockets given; the kernel recognises the first {MAX_RUNTIME_SOCKETS}: {:?} are asked of /proc only",
            socket_paths.len(),
            &socket_paths[MAX_RUNTIME_SOCKETS..]
        );
    }
    let runtime_sockets = if socket_paths.is_empty() {
        None
    } else {
        let watched = socket_paths[..socket_paths.len().min(MAX_RUNTIME_SOCKETS)].to_vec();
        match runtime_sockets::RuntimeSockets::open(&mut probes.ebpf, watched) {
            Ok(s) => Some(s),
            Err(e) => {
                log::warn!("runtime clients asked of /proc only ({e:#})");
                None
            }
        }
    };

    let mut table = ProcessTable::new(clock_ticks_per_second(), options.max_processes);
    table.seed(read_proc(std::path::Path::new("/proc")));
    log::info!("process table seeded with {} processes", table.len());
    // The host's mount namespace: a program executed in it is no container's first program;
    // by it, containers are told apart on hosts whose cgroup ids cannot.
    let host_mnt_ns = crate::containers::host_mount_namespace();
    let by_mount_namespace = options.container_identity.by_mount_namespace();
    match (&host_mnt_ns, by_mount_namespace) {
        (Ok(host), true) => log::info!(
            "containers are told apart by mount namespace (the host's is mnt:[{host}]): {}",
            if options.container_identity == crate::containers::ContainerIdentity::Auto {
                "no cgroup v2 hierarchy is mounted, so every cgroup id is its root's"
            } else {
                "as configured"
            }
        ),
        (Err(e), true) => anyhow::bail!("{e:#}: containers cannot be told apart by it"),
        (Ok(_), false) => log::info!("containers are told apart by cgroup"),
        (Err(e), false) => log::warn!(
            "containers are told apart by cgroup; {e:#}: a container's first program is taken as it comes"
        ),
    }
    let enricher = Enricher::new(table, WallClock::now())
        .with_pth_reader(pth_has_executable_lines)
        .with_map_reader(map_facts)
        .with_identity_check(identities::still_that_file)
        .with_exe_changed(exe_changed_unix_ns)
        .with_container_reader(crate::containers::cgroup_place_of_process)
        .with_runtime_clients(Box::new(move || {
            let sockets: Vec<&std::path::Path> = socket_paths
                .iter()
                .map(PathBuf::as_path)
                .filter(|p| p.exists())
                .collect();
            if sockets.is_empty() {
                Vec::new()
            } else {
                crate::containers::clients::clients_of_any(&sockets)
            }
        }))
        .with_runtime_sockets(
            runtime_sockets
                .as_ref()
                .map(runtime_sockets::RuntimeSockets::names)
                .unwrap_or_default(),
        )
        .with_dns_answers_checked(crate::probes::dns_answers_checked(&probes.report));
    let enricher = match host_mnt_ns {
        Ok(host) => enricher.with_host_mount_namespace(host),
        Err(_) => enricher,
    };
    let enricher = if by_mount_namespace {
        enricher.with_containers_by_mount_namespace()
    } else {
        enricher
    };

    let output: Box<dyn Write + Send> = match &options.events {
        Some(path) => Box::new(RotatingLog::open(path, options.log_max_bytes, LOG_KEEP)?),
        None => Box::new(std::io::stdout()),
    };
    // The running jobs' keys (the pipeline keeps them current): their findings are carried
    // over when the findings log's oldest file goes, so no flood rotates them away.
    let running_jobs = RunningJobs::default();
    let findings: Box<dyn Write + Send> = match &options.findings {
        Some(path) => Box::new(
            RotatingLog::open(path, options.log_max_bytes, LOG_KEEP)?
                .carrying(running_jobs.carry()),
        ),
        None => Box::new(std::io::stderr()),
    };
    let engine_config = crate::engine::EngineConfig {
        still_running: Some(host::still_running),
        exfil_services: options.exfil_services.clone(),
        ..machine_engine_config()
    };
    let profiles = options.profiles.clone();
    let enforcer = if needs.any() {
        let enforcer = Enforcer::attach(
            &mut probes.ebpf,
            needs,
            crate::probes::egress_hooks_attached(&probes.report)
                && crate::probes::dns_answers_checked(&probes.report),
            probes.report.tier(crate::hook_tier::HookFamily::Opens)
                == crate::hook_tier::HookTier::Lsm,
            &engine_config.dns_resolvers,
        )
        .context("a profile asks the kernel to act (egress.mode block, or responses), but its kernel side could not be set up")?;
        if needs.egress_block {
            log::info!("egress block mode: connections and sends of job processes to destinations the profile does not allow are refused (cgroup/connect4, connect6, sendmsg4, sendmsg6)");
        }
        if needs.kills {
            log::info!("kill responses: a job process that breaks a rule the profile sets to `kill` is killed by the kernel at the syscall that reveals it (bpf_send_signal(SIGKILL) at the open's exit or the exec, before it returns to user space); `rehearse: true` profiles only mark it would_kill");
            match probes.report.tier(crate::hook_tier::HookFamily::Opens) {
                crate::hook_tier::HookTier::Lsm => log::info!("response mechanism: refuse and kill (BPF-LSM file_open refuses the open with EPERM: no descriptor ever exists)"),
                tier => log::info!("response mechanism: kill (BPF-LSM, which would refuse the open with EPERM first, is not in force: opens are seen by the {} tier)", tier.as_str()),
            }
            match probes.report.tier(crate::hook_tier::HookFamily::ExecChecks) {
                crate::hook_tier::HookTier::Lsm => log::info!("response mechanism at exec: refuse and kill (BPF-LSM bprm_check_security makes execve fail with EPERM: the dropped program or script never runs)"),
                _ => log::info!("response mechanism at exec: kill before the new program's first instruction (sched_process_exec; BPF-LSM, which would refuse the exec, is not in force)"),
            }
        }
        Some(enforcer)
    } else {
        log::info!(
            "responses: audit only (no profile in force sets egress.mode block or a kill response)"
        );
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
    let stats = Arc::new(Metrics::new());
    let mut runtime_sockets = runtime_sockets;
    if let Some(sockets) = &mut runtime_sockets {
        // Docker's socket is the first when there is one.
        if options.docker_socket.is_some() {
            sockets.report_to(stats.container_runtime_socket_present.clone(), 0);
        }
    }
    let baseline = match &options.baseline {
        Some(b) => {
            let baseline = crate::baseline::Baseline::start(b.clone(), stats.baseline.clone())
                .context("starting the baseline store (--no-baseline runs without)")?;
            log::info!(
                "baselines across runs: {} store {} (learning {} runs, stable after {} runs without anything new)",
                if b.store.starts_with("postgres") { "PostgreSQL" } else { "SQLite" },
                crate::baseline::store::shown_location(&b.store),
                b.thresholds.learning_runs,
                b.thresholds.stable_after
            );
            Some(baseline)
        }
        None => {
            log::info!("baselines across runs: off");
            None
        }
    };
    let console = options.console.then(|| {
        let mut console = crate::console::Console::stdout();
        let place = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or("standard error".to_string(), |p| p.display().to_string())
        };
        console.line(&format!(
            "monitor: watching; findings below as they happen (full JSON in {}), events in {}",
            place(&options.findings),
            place(&options.events)
        ));
        (console, std::time::Instant::now())
    });
    let forwarder =
        crate::forward::Forwarder::start(&options.outputs, &options.runner, stats.outputs.clone())
            .context("starting the outputs")?;
    for o in &options.outputs {
        log::info!(
            "output {}: {} to {}",
            o.name,
            match o.kind {
                crate::forward::OutputKind::Syslog => "syslog",
                crate::forward::OutputKind::Otlp => "OTLP logs",
            },
            // An endpoint's credentials (user:password@) and query never reach the log.
            o.address
                .clone()
                .or_else(|| o.endpoint.as_deref().map(|e| {
                    crate::baseline::store::shown_location(e.split('?').next().unwrap_or(e))
                }))
                .unwrap_or_else(|| "?".into())
        );
    }
    let pipeline = Pipeline {
        bundle_specs: Default::default(),
        awaiting_api: Default::default(),
        kernel_described: Default::default(),
        docker_described: Default::default(),
        forwarder,
        unsettled_request: false,
        running_jobs,
        barrier_warned: None,
        console,
        baseline,
        events: std::io::BufWriter::with_capacity(256 * 1024, output),
        findings,
        judge: {
            let mut judge = Judge::new(engine);
            // Each job's summary nonce is made when its record begins.
            judge.recorder.nonces = true;
            judge
        },
        enforcer,
        reports_dir: options.reports.clone(),
        line: Vec::with_capacity(4096),
        event_lines: Default::default(),
        losses: Some(losses),
        shed: Some(shed),
        probe_errors: Some(probe_errors),
        process_losses: Some(process_losses),
        losses_waiting: Default::default(),
        recent_reports: Default::default(),
        tamper_log,
        pin_guard: probes.pin_guard.take(),
        guarded,
        identities,
        runtime_sockets,
        sources,
        hold: Default::default(),
        repeats: Default::default(),
    };

    let (command_tx, commands) = mpsc::channel(64);
    let runner_processes = control::SharedRunnerProcesses::default();
    let control = match &options.control_socket {
        Some(path) => {
            let listener = control::bind(path, options.control_group.as_deref())?;
            log::info!("control socket at {}", path.display());
            Some(tokio::spawn(control::serve(
                listener,
                command_tx,
                runner_processes.clone(),
            )))
        }
        None => None,
    };

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
    let (barrier_tx, barriers) = mpsc::channel(4);
    let reader = tokio::spawn(ring::read_ring(rings, tx, stats.clone(), stop_rx, barriers));

    // Jobs already running (the agent started or restarted mid-job): picked up from /proc
    // before the agent says it is ready, so nothing they do after that is missed.
    let mut enricher = enricher;
    let mut pipeline = pipeline;
    pipeline.refresh_identities(&mut enricher);
    let resumed = enricher.resume_running_jobs(std::path::Path::new("/proc"), boot_ns());
    if !resumed.is_empty() {
        log::info!(
            "{} running job processes picked up from /proc",
            resumed.len()
        );
    }
    for event in &resumed {
        pipeline.log_and_judge(event, &stats);
    }
    // What the previous agent was sent and did not live to read (a SIGKILL): judged now, with
    // the running jobs known, so it lands in the sender's job and step.
    let orphans = pipeline
        .tamper_log
        .as_mut()
        .map(|l| l.take_orphans())
        .unwrap_or_default();
    for record in orphans {
        match crate::decode::decode_tamper(&record) {
            Ok(kernel) => {
                log::warn!(
                    "the previous agent (pid {}) was sent signal {} by pid {} ({}) and did not report it; reporting it now",
                    record.target,
                    record.arg,
                    record.header.tgid,
                    crate::output::terminal_line(&String::from_utf8_lossy(
                        record.header.comm.split(|b| *b == 0).next().unwrap_or_default()
                    ))
                );
                // A tamper record, never a connect: no run of connects holds it back.
                pipeline.handle(&mut enricher, kernel, &stats);
            }
            Err(e) => log::warn!("an undecodable record in the tamper log: {e}"),
        }
    }
    pipeline.flush(&stats);

    // The stop signals are taken before the agent says it is ready: a SIGTERM that comes right
    // after the ready line must drain and stop it, not kill it by the default action.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangups = signal(SignalKind::hangup())?;
    if let Some(path) = &options.ready_file {
        std::fs::write(path, &ready_text)
            .with_context(|| format!("writing ready file {}", path.display()))?;
    }
    eprintln!("monitor: probes attached, streaming events");

    // SIGHUP: read the profile again (open jobs go on, judged by the new one from then on).
    let (reload_tx, reloads) = mpsc::channel(4);
    let hangup_task = tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            if reload_tx.send(()).await.is_err() {
                break;
            }
        }
    });
    // What the container runtime says of containers, in order with the events it lands among.
    let (news_tx, container_news) = mpsc::channel(256);
    let container_watch = options
        .docker_socket
        .clone()
        .map(|socket| tokio::spawn(crate::containers::docker::watch(socket, news_tx)));
    let processor = tokio::spawn(pipeline::run(
        pipeline::Inputs {
            rx,
            commands,
            runner_processes,
            reloads,
            container_news,
        },
        options.profile_source.clone(),
        barrier_tx,
        enricher,
        pipeline,
        stats.clone(),
    ));

    tokio::select! {
        _ = interrupt.recv() => {}
        _ = term.recv() => {}
    }
    let _ = stop_tx.send(true);
    hangup_task.abort();
    for task in [metrics_server, heartbeat, container_watch]
        .into_iter()
        .flatten()
    {
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

/// The keys of the running jobs, shared between the pipeline (which keeps them current) and
/// the findings log (which carries their findings over at rotation).
#[derive(Clone, Default)]
pub(super) struct RunningJobs {
    keys: Arc<std::sync::RwLock<std::collections::HashSet<String>>>,
    /// (jobs known, jobs running) when last published: they change whenever the set can.
    version: Option<(usize, usize)>,
}

impl RunningJobs {
    pub(super) fn publish(&mut self, engine: &crate::engine::Engine) {
        let version = (engine.jobs_known(), engine.active_jobs());
        if self.version == Some(version) {
            return;
        }
        self.version = Some(version);
        let keys = engine
            .jobs()
            .filter(|(_, ended)| !ended)
            .map(|(j, _)| j.key.clone())
            .collect();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
    }

    /// Whether a findings log line is a running job's.
    fn carry(&self) -> crate::output::Carry {
        let keys = self.keys.clone();
        Box::new(move |line: &[u8]| {
            #[derive(serde::Deserialize)]
            struct Line {
                job: Option<Job>,
            }
            #[derive(serde::Deserialize)]
            struct Job {
                key: String,
            }
            let key = serde_json::from_slice::<Line>(line).ok()?.job?.key;
            keys.read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&key)
                .then_some(key)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tests::{empty_profile, Sim};

    #[test]
    fn the_findings_log_carries_the_running_jobs_findings_only() {
        let mut sim = Sim::new(empty_profile());
        sim.runner().run_step(300, "steal");
        sim.read(300, "/home/runner/.npmrc");
        let finding = sim.findings.last().expect("a finding").clone();
        let mut running = RunningJobs::default();
        running.publish(&sim.engine);
        let carry = running.carry();
        let line = serde_json::to_vec(&finding).unwrap();
        let key = finding.job.as_ref().unwrap().key.clone();
        assert_eq!(
            carry(&line),
            Some(key),
            "the running job's finding is carried"
        );
        let mut other = finding.clone();
        other.job.as_mut().unwrap().key = "github/someone/else".into();
        assert_eq!(carry(&serde_json::to_vec(&other).unwrap()), None);
        assert_eq!(carry(b"not json\n"), None);
        // Once the job has ended, its findings go with their file.
        sim.exit(300).exit(200);
        running.publish(&sim.engine);
        assert_eq!(sim.engine.active_jobs(), 0);
        assert_eq!(carry(&line), None);
    }
}
