//! The processing task: enriched events through the log, the judge, reports and block mode,
//! with control requests, SIGHUP reloads and the engine's clock ticks in between.

use std::{collections::BTreeMap, io::Write, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use monitor_common::EventKind;
use tokio::sync::mpsc;

use super::repeats::{Offer, RunEnd};
use super::{host::boot_ns, kernel_needs, Stats, ENGINE_TICK, HEARTBEAT_PORT, KINDS};
use crate::{
    control::{self, Order, Peer, Request, Response},
    decode::KernelEvent,
    enforce::Enforcer,
    event::{ConnectVia, Detail, Enricher, Event},
    finding::Finding,
    judge::Judge,
    metrics::{unix_now, Metrics},
    probes::LossReader,
    profile::ProfileSource,
    report::{markdown, new_summary_nonce, now_rfc3339, write_all},
};

/// OCI bundle specs kept from when their runtime started (newest last).
const MAX_BUNDLE_SPECS: usize = 64;
/// Kernel descriptions of Docker-shaped containers waiting for Docker's word.
const MAX_AWAITING_API: usize = 256;
/// Containers remembered as described from the kernel's view.
const MAX_KERNEL_DESCRIBED: usize = 1024;
/// Containers remembered as described by Docker's API.
const MAX_DOCKER_DESCRIBED: usize = 16_384;

/// A container as the kernel's view describes it, and the runtime's clients then.
type KernelDescription = (
    crate::containers::ContainerMeta,
    Vec<crate::event::ProcessRef>,
);

/// The pipeline above the process table: each enriched event is written to the event log,
/// judged (findings written at once), recorded for its job's report (written when the job
/// ends), and turned into block mode's kernel updates; control requests are carried out in
/// order with the events.
pub(super) struct Pipeline {
    /// OCI bundles' specs, read as their runtime started with them (see `handle`).
    pub(super) bundle_specs: std::collections::VecDeque<(String, serde_json::Value)>,
    /// Containers Docker's API described (the kernel's view of them is not needed).
    pub(super) docker_described: std::collections::HashSet<String>,
    /// Containers this agent described from the kernel's view (their end is its to say).
    pub(super) kernel_described: std::collections::HashSet<String>,
    /// Containers named as Docker names them, described from the kernel's view, waiting for
    /// Docker's own word (`described_by_the_kernel`, `judge_released`).
    pub(super) awaiting_api: std::collections::HashMap<String, KernelDescription>,
    pub(super) events: std::io::BufWriter<Box<dyn Write + Send>>,
    pub(super) findings: Box<dyn Write + Send>,
    pub(super) judge: Judge,
    /// Block mode's kernel side, when the profile asks for it.
    pub(super) enforcer: Option<Enforcer>,
    pub(super) reports_dir: Option<PathBuf>,
    /// Reused serialisation buffer: each event reaches the writer as one whole line.
    pub(super) line: Vec<u8>,
    /// Writes events as JSON, keeping each ancestor's JSON between events.
    pub(super) event_lines: crate::event::line::EventLineWriter,
    /// The kernel's per-kind loss counters, read on every tick and before a report is made.
    pub(super) losses: Option<LossReader>,
    /// Records the kernel refused to flooding control groups (its rings' fair shares).
    pub(super) shed: Option<LossReader>,
    /// The kernel's per-kind count of records its programs could not build.
    pub(super) probe_errors: Option<LossReader>,
    /// The kernel's per-process loss counts, charged to jobs as `lost` events.
    pub(super) process_losses: Option<crate::probes::ProcessLossReader>,
    /// Loss counts of processes not known yet, and how many ticks they waited.
    pub(super) losses_waiting: std::collections::HashMap<u32, (BTreeMap<String, u64>, u32)>,
    /// The reports of the jobs that ended last, for the hook that asks after the fact.
    pub(super) recent_reports: std::collections::VecDeque<Written>,
    /// The kernel's pinned log of signals aimed at the agent (see `tamper_log`).
    pub(super) tamper_log: Option<super::tamper_log::TamperLog>,
    /// This agent's enforcement pins, pinned again when removed (see `enforcement_pins`).
    pub(super) pin_guard: Option<crate::enforcement_pins::PinGuard>,
    /// The kernel's list of guarded host services (see `guarded`).
    pub(super) guarded: Option<super::guarded::Guarded>,
    /// The kernel's watched files by identity (see `identities`).
    pub(super) identities: Option<super::identities::Identities>,
    /// The runtime sockets the kernel recognises (see `runtime_sockets`).
    pub(super) runtime_sockets: Option<super::runtime_sockets::RuntimeSockets>,
    /// The jobs' tracked sources in the kernel (`source-modified`).
    pub(super) sources: Option<super::sources::SourceWatch>,
    /// Events of containers' processes waiting for the runtime's word (see `container_hold`).
    pub(super) hold: super::container_hold::ContainerHold,
    /// The run of identical connects being folded (see `repeats`).
    pub(super) repeats: super::repeats::Repeats,
    /// Baselines across runs: each ended job's run compared and recorded (see `baseline`).
    pub(super) baseline: Option<crate::baseline::Baseline>,
    /// Findings and a status line for a person at a terminal (`--output console`), and when
    /// the status line was last printed.
    pub(super) console: Option<(crate::console::Console, std::time::Instant)>,
    /// Outputs to SIEMs and log platforms (see `forward`).
    pub(super) forwarder: crate::forward::Forwarder,
    /// Set while a control request is served that did not see the kernel's records up to it
    /// (the barrier timed out): the reports it writes say so.
    pub(super) unsettled_request: bool,
    /// When the last barrier timeout was logged (one line a minute; all are counted).
    pub(super) barrier_warned: Option<std::time::Instant>,
    /// The running jobs' keys, for the findings log's rotation.
    pub(super) running_jobs: super::RunningJobs,
}

/// How often the console's status line is printed.
const CONSOLE_STATUS_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Ticks the loss counts of a process not known yet wait for it (its exec may be queued).
const LOSS_WAIT_TICKS: u32 = 20;
/// Processes whose loss counts wait at once.
const MAX_LOSSES_WAITING: usize = 4096;

/// How long a control request waits for the ring reader's barrier.
const BARRIER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What a job's report says when its end was served before its last records were read.
const UNSETTLED_END: &str = "the job's end was judged before every kernel record written up to it had been read (the agent's ring reader was stuck or flooded): its last events may be missing";

/// Jobs listed by `status`: running ones, then the latest ended ones.
const STATUS_RUNNING: usize = 256;
const STATUS_ENDED: usize = 32;

/// Reports kept for late hooks.
const RECENT_REPORTS: usize = 64;

/// A job's report as written when it ended.
#[derive(Clone)]
pub(super) struct Written {
    key: String,
    paths: Vec<PathBuf>,
    markdown: String,
    /// The worst severity among the job's findings, and how many there were.
    worst: Option<crate::finding::Severity>,
    findings: usize,
}

impl Pipeline {
    /// Reads the watched files' identities again when due (or a job brought a new home), and
    /// gives the enricher the new table.
    pub(super) fn refresh_identities(&mut self, enricher: &mut Enricher) {
        if let Some(sources) = &mut self.sources {
            sources.poll();
        }
        if let Some(sockets) = &mut self.runtime_sockets {
            sockets.refresh_if_due();
            if let Some(daemons) = sockets.take_new_daemons() {
                enricher.set_runtime_daemons(&daemons);
            }
        }
        let Some(identities) = self.identities.as_mut() else {
            return;
        };
        if let Some(table) = identities.refresh_if_due(self.judge.engine.job_homes()) {
            enricher.identities = table;
        }
        identities.watch_dirs(self.judge.engine.runner_dirs());
    }

    /// The console's status line, when one is due.
    fn console_status(&mut self, stats: &Stats) {
        let Some((console, last)) = &mut self.console else {
            return;
        };
        if last.elapsed() < CONSOLE_STATUS_EVERY {
            return;
        }
        *last = std::time::Instant::now();
        console.status(&crate::console::Status {
            active_jobs: stats.active_jobs.get().max(0) as u64,
            jobs_ended: stats.jobs_ended.get(),
            events: stats.events.iter().map(|c| c.get()).sum(),
            findings: stats.findings_total.get(),
            dropped: stats.drop_totals().total(),
        });
    }

    /// A write the kernel matched by a watched runner directory's identity is checked against
    /// the directories as they are now (see `Identities::confirm_subtree_match`); a stale match
    /// loses its reason.
    fn confirm_subtree_match(&mut self, event: &mut Event) {
        let Some(identities) = self.identities.as_mut() else {
            return;
        };
        let (matched, paths) = match &mut event.detail {
            Detail::Open { matched, path, .. } => (matched, vec![path.as_str()]),
            Detail::Name {
                matched,
                path,
                from,
                ..
            } => {
                let mut paths = vec![path.as_str()];
                paths.extend(from.as_deref());
                (matched, paths)
            }
            _ => return,
        };
        if !matched.contains(&crate::event::MatchReason::Subtree) {
            return;
        }
        if !identities.confirm_subtree_match(&paths) {
            log::info!(
                "a write under {} matched a runner directory that is gone (its identity was reused): not a write there",
                paths[0]
            );
            matched.retain(|r| *r != crate::event::MatchReason::Subtree);
        }
    }

    /// `handle` for a record taken from the ring reader's queue (see `ring::MAX_QUEUED_BYTES`).
    fn handle_queued(&mut self, enricher: &mut Enricher, event: KernelEvent, stats: &Stats) {
        stats.queued_bytes.sub(event.memory_bytes() as i64);
        self.handle(enricher, event, stats);
    }

    pub(super) fn handle(&mut self, enricher: &mut Enricher, event: KernelEvent, stats: &Stats) {
        stats.events[Metrics::slot(event.header().kind)].inc();
        // How far the kernel's events have been taken in (the heartbeat's too, which is not
        // judged): what the engine waits for before it trusts the machine over missing exits.
        // Main-ring records only: exits travel there, and a flood may hold them back behind
        // the security ring's.
        if !event.header().kind.is_security() {
            self.judge.engine.kernel_events_up_to(event.header().ts_ns);
        }
        if let (
            KernelEvent::Tamper {
                header,
                syscall: monitor_common::TAMPER_SIGNAL,
                ..
            },
            Some(log),
        ) = (&event, self.tamper_log.as_mut())
        {
            log.judged(header.ts_ns, header.tgid);
        }
        match self.repeats.offer(event) {
            Offer::Folded => {}
            Offer::Pass { ended, event } => {
                if let Some((last, repeats)) = ended {
                    self.handle_record(enricher, last, repeats, stats);
                }
                self.handle_record(enricher, event, 0, stats);
            }
        }
    }

    /// Ends the current run of identical connects (`repeats`): its last record, with its
    /// count, is handled now. Before anything that must see every connect so far (a control
    /// request, a reload, container news and the agent's stop: `RunEnd::Boundary`; a tick's
    /// judgements and reports: `RunEnd::Tick`).
    pub(super) fn end_connect_run(&mut self, enricher: &mut Enricher, stats: &Stats, how: RunEnd) {
        if let Some((last, repeats)) = self.repeats.end(how) {
            self.handle_record(enricher, last, repeats, stats);
            self.flush(stats);
        }
    }

    /// Enriches, judges and writes one record (`repeats`: the further connects, identical to
    /// it, that it stands for: `Detail::Connect::repeats`).
    fn handle_record(
        &mut self,
        enricher: &mut Enricher,
        event: KernelEvent,
        repeats: u32,
        stats: &Stats,
    ) {
        let Some(mut event) = enricher.enrich(event) else {
            return;
        };
        if let Detail::Connect { repeats: n, .. } = &mut event.detail {
            *n = repeats;
            stats.connects_folded.inc_by(repeats.into());
        }
        // Bundles a runtime was just started with: read now, while they are surely there.
        for bundle in enricher.take_new_bundles() {
            if let Some(spec) =
                crate::containers::kernel_facts::read_bundle_spec(std::path::Path::new(&bundle))
            {
                if self.bundle_specs.len() >= MAX_BUNDLE_SPECS {
                    self.bundle_specs.pop_front();
                }
                self.bundle_specs.push_back((bundle, spec));
            }
        }
        // Containers this event showed that no runtime API describes: described from the
        // kernel's view now, while their process runs, judged right after the event.
        let undescribed: Vec<KernelDescription> = enricher
            .take_new_containers()
            .into_iter()
            .map(|new| self.describe_from_the_kernel(new))
            .collect();
        self.confirm_subtree_match(&mut event);
        // The agent's own children are its heartbeats: proof the probes and the pipeline work,
        // not activity to log or judge.
        if event.process.ppid == std::process::id() {
            if let Detail::Connect {
                port: HEARTBEAT_PORT,
                address,
                via,
                ..
            } = &event.detail
            {
                if address.is_loopback() {
                    match via {
                        ConnectVia::Send => stats.egress_heartbeat.set(unix_now()),
                        _ => stats.heartbeat.set(unix_now()),
                    }
                }
            }
            return;
        }
        if self
            .hold
            .must_wait(&event, stats.container_runtime_up.get() == 1)
        {
            if let Some(overflow) = self.hold.hold(event, boot_ns()) {
                self.judge_released(enricher, vec![overflow], stats);
            }
            self.described_by_the_kernel(enricher, undescribed, stats);
            return;
        }
        self.log_and_judge_charging(enricher, &event, stats);
        self.described_by_the_kernel(enricher, undescribed, stats);
        // Containers no runtime API describes end with their last process.
        for id in enricher.take_ended_containers() {
            // Only those this agent described (Docker says itself when its containers go).
            if !self.kernel_described.remove(&id) {
                continue;
            }
            let ended = enricher.agent_event(
                Detail::Container {
                    change: crate::event::ContainerChange::Removed,
                    container: crate::containers::ContainerMeta {
                        id,
                        ..Default::default()
                    },
                    requested_by: Vec::new(),
                },
                boot_ns(),
            );
            self.handle_control_event(enricher, &ended, stats);
        }
    }

    /// A container no runtime API describes, from the kernel's view: what the runtime was asked
    /// for (its bundle, read when the runtime started with it, else now) joined with what its
    /// first program shows, while it runs.
    fn describe_from_the_kernel(
        &self,
        new: crate::event::enrich::NewContainer,
    ) -> KernelDescription {
        use crate::containers::kernel_facts;
        let proc = std::path::Path::new("/proc");
        let declared = new.bundle.as_deref().and_then(|b| {
            let path = std::path::Path::new(b);
            match self.bundle_specs.iter().rev().find(|(at, _)| at == b) {
                Some((_, spec)) => Some(kernel_facts::describe_spec(
                    proc,
                    spec,
                    path,
                    &new.id,
                    &new.runtime,
                )),
                None => kernel_facts::describe_bundle(proc, path, &new.id, &new.runtime),
            }
        });
        let shown = kernel_facts::describe(proc, new.pid, new.start_ticks, &new.id, &new.runtime);
        let meta = match (declared, shown) {
            (Some(a), Some(b)) => kernel_facts::union(a, b),
            (Some(one), None) | (None, Some(one)) => one,
            (None, None) => crate::containers::ContainerMeta {
                id: new.id.clone(),
                runtime: new.runtime.clone(),
                ..Default::default()
            },
        };
        (
            crate::containers::ContainerMeta {
                name: new.name,
                ..meta
            },
            new.clients,
        )
    }

    /// Containers described from the kernel's view (`kernel_facts`), logged and judged as the
    /// runtime's word on them would be: created, by the clients connected then.
    fn described_by_the_kernel(
        &mut self,
        enricher: &mut Enricher,
        containers: Vec<KernelDescription>,
        stats: &Stats,
    ) {
        for (container, requested_by) in containers {
            // Named as Docker names its containers while Docker's API answers: Docker's word
            // is awaited (it names the image); this one is judged only if that never comes.
            if self.docker_described.contains(&container.id) {
                continue;
            }
            // Still waited for (not described, not waited out) with room to wait: later.
            if crate::containers::is_docker_shaped(&container.id)
                && stats.container_runtime_up.get() == 1
                && !self.hold.is_described(&container.id)
                && self.awaiting_api.len() < MAX_AWAITING_API
            {
                self.awaiting_api
                    .insert(container.id.clone(), (container, requested_by));
                continue;
            }
            self.judge_kernel_description(enricher, (container, requested_by), stats);
        }
    }

    /// Logs and judges a kernel description: the container created, by those clients.
    fn judge_kernel_description(
        &mut self,
        enricher: &mut Enricher,
        (container, requested_by): KernelDescription,
        stats: &Stats,
    ) {
        stats.containers_seen.inc();
        if self.kernel_described.len() >= MAX_KERNEL_DESCRIBED {
            self.kernel_described.clear();
        }
        self.kernel_described.insert(container.id.clone());
        let event = enricher.agent_event(
            Detail::Container {
                change: crate::event::ContainerChange::Created,
                container,
                requested_by,
            },
            boot_ns(),
        );
        self.handle_control_event(enricher, &event, stats);
    }

    /// Judges held events whose wait is over (a container Docker's API did not describe in
    /// time is described from the kernel's view first, when it was).
    fn judge_released(&mut self, enricher: &mut Enricher, released: Vec<Event>, stats: &Stats) {
        for event in released {
            if let Some(waiting) = event
                .process
                .container
                .as_ref()
                .and_then(|id| self.awaiting_api.remove(id))
            {
                self.judge_kernel_description(enricher, waiting, stats);
            }
            self.log_and_judge_charging(enricher, &event, stats);
        }
    }

    /// As `log_and_judge`, charging the kernel's per-process losses to their jobs before the
    /// reports of the jobs this event ends are written.
    fn log_and_judge_charging(&mut self, enricher: &mut Enricher, event: &Event, stats: &Stats) {
        let homes = self.judge.engine.homes_learnt();
        let runner_dirs = self.judge.engine.runner_dirs_learnt();
        let ended = self.judge_event(event, stats);
        // A watched name written: the file is watched by identity from now.
        let written = match &event.detail {
            Detail::Open { access, path, .. } if access.writes() => Some(path),
            Detail::Name { path, .. } => Some(path),
            _ => None,
        };
        if let (Some(path), Some(identities)) = (written, self.identities.as_mut()) {
            if let Some((identity, file)) = identities.written(path) {
                enricher.identities.insert(identity, file);
            }
        }
        if self.judge.engine.homes_learnt() != homes
            || self.judge.engine.runner_dirs_learnt() != runner_dirs
        {
            // A job's first step: its home's credentials are watched by identity from now, and
            // its runner's actions and tool cache for writes.
            self.refresh_identities(enricher);
        }
        if !ended.is_empty() {
            self.charge_losses(enricher, stats, event.ts_ns);
        }
        self.write_reports(ended, stats);
    }

    /// Turns the kernel's per-process loss counts into `lost` events of those processes, so
    /// their jobs' reports count them (a process the agent does not know is counted only
    /// machine-wide).
    fn charge_losses(&mut self, enricher: &mut Enricher, stats: &Stats, now_ns: u64) {
        let Some(reader) = self.process_losses.as_mut() else {
            return;
        };
        // Counts of processes the agent does not know yet (their exec still queued behind the
        // flood) wait a few ticks; a process it never learns of counts only machine-wide.
        let mut waiting = std::mem::take(&mut self.losses_waiting);
        for (tgid, counts) in reader.drain() {
            let entry = waiting.entry(tgid).or_insert_with(|| (BTreeMap::new(), 0));
            for (kind, n) in counts {
                *entry.0.entry(kind.name().to_string()).or_default() += n;
            }
        }
        for (tgid, (records, tries)) in waiting {
            let detail = Detail::Lost {
                records: records.clone(),
            };
            // At the engine's time, not the clock's: the lost records were older than what is
            // still queued.
            let at = self.judge.engine.now_ns().min(now_ns);
            match enricher.control_event(detail, tgid, at) {
                Some(event) => self.log_and_judge(&event, stats),
                None if tries < LOSS_WAIT_TICKS
                    && self.losses_waiting.len() < MAX_LOSSES_WAITING =>
                {
                    self.losses_waiting.insert(tgid, (records, tries + 1));
                }
                None => {}
            }
        }
    }

    /// Writes the event to the log, judges it, records it for reports, and writes the reports
    /// of the jobs it ended (kept in `recent_reports` for the hook that asks).
    pub(super) fn log_and_judge(&mut self, event: &Event, stats: &Stats) {
        let ended = self.judge_event(event, stats);
        self.write_reports(ended, stats);
    }

    /// Writes the event to the log and judges it; returns the jobs it ended.
    fn judge_event(&mut self, event: &Event, stats: &Stats) -> Vec<crate::engine::EndedJob> {
        self.line.clear();
        let written = self.event_lines.write(&mut self.line, event).is_ok() && {
            self.line.push(b'\n');
            self.events.write_all(&self.line).is_ok()
        };
        if !written {
            stats.write_errors.inc();
        }
        self.judge.recorder.current_drops = Some(stats.drop_totals());
        let (findings, ended) = self.judge.on_event(event);
        for request in self.judge.engine.take_source_requests() {
            if let Some(sources) = &mut self.sources {
                sources.apply(&request);
            }
        }
        if let Some(sources) = &mut self.sources {
            sources.poll();
        }
        for action in self.judge.engine.take_enforcement() {
            if let Some(enforcer) = &mut self.enforcer {
                if let Err(e) = enforcer.apply(&action) {
                    stats.write_errors.inc();
                    log::error!("kernel enforcement: could not apply {action:?}: {e:#}");
                }
            }
        }
        self.write_findings(findings, stats);
        ended
    }

    /// The job's run against its baseline: the report's section, and `new-behaviour` findings
    /// written with the others. Only a job the runner declared (or the configuration names)
    /// is recorded: any process can claim a repository in its environment, and a baseline a job
    /// could teach in another's name would hide that job's next change.
    fn judge_baseline(
        &mut self,
        report: &mut crate::report::Report,
        job: &crate::engine::EndedJob,
        stats: &Stats,
    ) {
        let Some(baseline) = self.baseline.as_mut() else {
            return;
        };
        let home = self
            .judge
            .engine
            .job_home(&report.job.key)
            .map(str::to_string);
        let run = crate::baseline::behaviour::run_record(report, home.as_deref());
        let trusted = job.declared || self.judge.engine.profiles().names_repository(&report.job);
        let (section, comparison) = baseline.judge(run, trusted);
        let mut findings = match &comparison {
            Some(c) => {
                let steps: Vec<_> = report.steps.iter().map(|s| s.step.clone()).collect();
                let time = report.ended.clone().unwrap_or_else(now_rfc3339);
                crate::baseline::compare::findings(c, &report.job, &steps, &time, job.ended_ns)
            }
            None => Vec::new(),
        };
        for f in &mut findings {
            f.id = self.judge.engine.take_finding_id();
        }
        report.add_baseline(section, &findings);
        self.write_findings(findings, stats);
    }

    /// A control request is served without the kernel's records up to it: counted, logged
    /// (a line a minute), and said in the reports it writes.
    fn note_unsettled_request(&mut self, stats: &Stats) {
        stats.barrier_timeouts.inc();
        self.unsettled_request = true;
        if self
            .barrier_warned
            .is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(60))
        {
            self.barrier_warned = Some(std::time::Instant::now());
            log::warn!(
                "a control request was served before the kernel's records up to it were all read (the ring reader did not reach it within {BARRIER_WAIT:?}); a job it ends is reported as possibly missing its last events ({} so far)",
                stats.barrier_timeouts.get()
            );
        }
    }

    /// Writes the reports of the jobs that ended (kept in `recent_reports` for the hook).
    fn write_reports(&mut self, ended: Vec<crate::engine::EndedJob>, stats: &Stats) {
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
            let key = job.identity.key.clone();
            let Some(mut report) = self.judge.recorder.report(&key, now_rfc3339()) else {
                continue;
            };
            self.judge_baseline(&mut report, &job, stats);
            if report.summary_nonce.is_none() {
                report.summary_nonce = new_summary_nonce();
            }
            if self.unsettled_request {
                report.incomplete_because.push(UNSETTLED_END.to_string());
            }
            if !self.forwarder.is_empty() {
                self.forwarder.send(&crate::forward::Record::Job(Box::new(
                    crate::forward::JobSummary::of(&report),
                )));
            }
            let paths = match &self.reports_dir {
                Some(dir) => match write_all(dir, &report) {
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
            let written = Written {
                markdown: markdown::render(&report),
                worst: report.findings.iter().map(|f| f.severity).max(),
                findings: report.findings.len(),
                key,
                paths,
            };
            if self.recent_reports.len() >= RECENT_REPORTS {
                self.recent_reports.pop_front();
            }
            self.recent_reports.push_back(written);
        }
    }

    /// Writes again the reports of jobs whose processes raised findings after their end, with
    /// those findings and the reason (on the engine's tick: one rewrite per job and tick,
    /// however many arrive); the summary kept for a late hook is brought up to date too.
    pub(super) fn write_late_findings(&mut self, stats: &Stats) {
        for (key, late) in self.judge.recorder.take_late() {
            let Some(written) = self.recent_reports.iter_mut().rev().find(|w| w.key == key) else {
                log::warn!(
                    "job {key}: {} finding(s) after its end, and its report is no longer kept to add them to (the findings log has them)",
                    late.len()
                );
                continue;
            };
            let (Some(dir), Some(json)) = (
                self.reports_dir.as_deref(),
                written
                    .paths
                    .iter()
                    .find(|p| p.extension().is_some_and(|x| x == "json")),
            ) else {
                continue;
            };
            // Read back only what nobody else can have written: the agent's own file in a
            // directory only it can write to (else a job could have the agent publish a report
            // of its making under the agent's nonce).
            let own = |p: &std::path::Path| {
                use std::os::unix::fs::MetadataExt as _;
                std::fs::symlink_metadata(p).is_ok_and(|m| {
                    // SAFETY: geteuid has no preconditions.
                    m.uid() == unsafe { libc::geteuid() } && m.mode() & 0o022 == 0
                })
            };
            let read = if own(dir) && own(json) {
                std::fs::read_to_string(json)
                    .map_err(anyhow::Error::from)
                    .and_then(|text| Ok(serde_json::from_str::<crate::report::Report>(&text)?))
            } else {
                Err(anyhow::anyhow!(
                    "{} or its directory is not the agent's alone",
                    json.display()
                ))
            };
            let mut report = match read {
                Ok(report) => report,
                Err(e) => {
                    stats.write_errors.inc();
                    log::error!("reading the report of {key} to add late findings: {e:#}");
                    continue;
                }
            };
            let at = late.last().map(|f| f.time.clone()).unwrap_or_default();
            report.add_late_findings(&late, &at, now_rfc3339());
            if let Err(e) = write_all(dir, &report) {
                stats.write_errors.inc();
                log::error!("writing the report of {key} again: {e:#}");
                continue;
            }
            log::warn!(
                "job {key}: {} finding(s) after its end, from processes that outlived it; its report is written again",
                late.len()
            );
            written.markdown = markdown::render(&report);
            written.worst = report.findings.iter().map(|f| f.severity).max();
            written.findings = report.findings.len();
        }
    }

    /// Writes an agent-made event (job start/end) to the log and judges it like the kernel's.
    /// What the container runtime said, logged and judged as an event of the agent's own.
    fn container_news(
        &mut self,
        enricher: &mut Enricher,
        news: crate::containers::docker::ContainerNews,
        stats: &Stats,
    ) {
        use crate::{containers::docker::ContainerNews, event::ContainerChange};
        let mut requested_by = Vec::new();
        let (change, container) = match news {
            ContainerNews::Reachable(up) => {
                stats.container_runtime_up.set(i64::from(up));
                if !up {
                    let held = self.hold.all();
                    self.judge_released(enricher, held, stats);
                }
                return;
            }
            ContainerNews::Created {
                meta,
                existing,
                clients,
            } => {
                requested_by = enricher.process_refs(clients);
                (
                    if existing {
                        ContainerChange::Present
                    } else {
                        ContainerChange::Created
                    },
                    meta,
                )
            }
            ContainerNews::Started { meta } => (ContainerChange::Started, meta),
            ContainerNews::Removed { id } => (
                ContainerChange::Removed,
                crate::containers::ContainerMeta {
                    id,
                    ..Default::default()
                },
            ),
        };
        if matches!(change, ContainerChange::Created | ContainerChange::Present) {
            stats.containers_seen.inc();
        }
        let id = container.id.clone();
        // Docker's word came: the kernel's view of it is not needed.
        self.awaiting_api.remove(&id);
        if change == ContainerChange::Removed {
            self.docker_described.remove(&id);
        } else {
            if self.docker_described.len() >= MAX_DOCKER_DESCRIBED {
                self.docker_described.clear();
            }
            self.docker_described.insert(id.clone());
        }
        let event = enricher.agent_event(
            Detail::Container {
                change,
                container,
                requested_by,
            },
            boot_ns(),
        );
        self.handle_control_event(enricher, &event, stats);
        // Its processes' events that waited for this, in their order.
        let released = match change {
            ContainerChange::Removed => self.hold.removed(&id),
            _ => self.hold.described(&id),
        };
        if !released.is_empty() {
            self.judge_released(enricher, released, stats);
            self.flush(stats);
        }
    }

    fn handle_control_event(&mut self, enricher: &mut Enricher, event: &Event, stats: &Stats) {
        self.log_and_judge_charging(enricher, event, stats);
        self.flush(stats);
    }

    /// Carries out a control request, in order with the kernel's events.
    fn command(
        &mut self,
        enricher: &mut Enricher,
        request: Request,
        peer: Peer,
        stats: &Stats,
    ) -> Response {
        let order = match control::interpret(request, peer, std::path::Path::new("/proc")) {
            Ok(order) => order,
            Err(refusal) => return Response::error(refusal),
        };
        match order {
            Order::StartJob {
                job,
                anchor_pid,
                via,
            } => {
                let requested_by_start_ticks =
                    enricher.process_key(peer.pid).map_or(0, |k| k.start_ticks);
                let detail = Detail::JobStart {
                    job: job.clone(),
                    via,
                    requested_by_pid: peer.pid,
                    requested_by_uid: peer.uid,
                    requested_by_start_ticks,
                };
                let Some(event) = enricher.control_event(detail, anchor_pid, boot_ns()) else {
                    return Response::error(format!("no process {anchor_pid}"));
                };
                // Logged and judged either way: a refused request is itself evidence.
                let verdict = self.judge.engine.job_control_verdict(&event);
                self.handle_control_event(enricher, &event, stats);
                if let Err(why) = verdict {
                    return Response::error(format!("refused: {why}"));
                }
                log::info!("job {} started (anchor pid {anchor_pid})", job.key);
                Response {
                    ok: true,
                    job: Some(job),
                    ..Default::default()
                }
            }
            Order::EndJob { key, via } => {
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
                let verdict = self.judge.engine.job_control_verdict(&event);
                self.handle_control_event(enricher, &event, stats);
                if let Err(why) = verdict {
                    return Response::error(format!("refused: {why}"));
                }
                log::info!("job {key} ended");
                // The report of the job as it ended, whether by this request or earlier (its
                // Worker exited first): the real hook always gets the summary.
                let mine = self
                    .recent_reports
                    .iter()
                    .rev()
                    .find(|w| w.key == key)
                    .cloned();
                let fail_on = self
                    .judge
                    .engine
                    .profiles()
                    .for_job(&identity)
                    .hooks
                    .fail_on;
                let fail_job = match (fail_on, mine.as_ref().and_then(|w| w.worst)) {
                    (Some(bar), Some(worst)) if worst >= bar => Some(format!(
                        "the job raised {} finding(s), the worst {} (the profile fails jobs at {}); see the report",
                        mine.as_ref().map_or(0, |w| w.findings),
                        worst.name(),
                        bar.name()
                    )),
                    _ => None,
                };
                Response {
                    ok: true,
                    fail_job,
                    job: Some(identity),
                    reports: mine.as_ref().map(|w| w.paths.clone()).unwrap_or_default(),
                    summary_markdown: mine.map(|w| w.markdown),
                    ..Default::default()
                }
            }
            Order::Status => {
                // Bounded whatever the number of jobs seen: the running ones (up to a cap),
                // then the latest ended ones, and the counts.
                let jobs: Vec<_> = self.judge.engine.jobs().collect();
                let running: Vec<_> = jobs.iter().filter(|(_, ended)| !ended).collect();
                let shown = running
                    .iter()
                    .take(STATUS_RUNNING)
                    .chain(
                        jobs.iter()
                            .filter(|(_, ended)| *ended)
                            .rev()
                            .take(STATUS_ENDED)
                            .collect::<Vec<_>>()
                            .iter(),
                    )
                    .map(|(j, ended)| serde_json::json!({"job": j, "ended": ended}))
                    .collect::<Vec<_>>();
                Response {
                    ok: true,
                    status: Some(serde_json::json!({
                        "jobs": shown,
                        "jobs_running": running.len(),
                        "jobs_seen": jobs.len(),
                        "stats": stats.summary(),
                    })),
                    ..Default::default()
                }
            }
        }
    }

    /// Findings are written and flushed as they come: the 1 s latency bound is for them. The
    /// event log is flushed first, so the events a finding names are on disk before it is.
    fn write_findings(&mut self, findings: Vec<Finding>, stats: &Stats) {
        if findings.is_empty() {
            return;
        }
        self.flush(stats);
        for finding in findings {
            // A repository label only for jobs the runner declared or the configuration names:
            // any local process can put `GITHUB_REPOSITORY` in its environment, and the labels
            // are few.
            let repository = finding.job.as_ref().and_then(|j| {
                let trusted = self.judge.engine.job_declared(&j.key)
                    || self.judge.engine.profiles().names_repository(j);
                match j.repository.as_deref() {
                    Some(r) if trusted => Some(r),
                    Some(_) => Some("undeclared"),
                    None => None,
                }
            });
            stats.count_finding(finding.rule.as_str(), finding.severity.name(), repository);
            if let Some((console, _)) = &mut self.console {
                console.finding(&finding);
            }
            if !self.forwarder.is_empty() {
                self.forwarder
                    .send(&crate::forward::Record::Finding(Box::new(finding.clone())));
            }
            if let Some(response) = finding.response {
                stats
                    .responses
                    .with_label_values(&[finding.rule.as_str(), response.as_str()])
                    .inc();
            }
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

    /// Reads the profiles again from where they came from; anything broken is refused (with
    /// where and why) and what runs now stays.
    fn reload(&mut self, from: &ProfileSource, stats: &Stats) {
        let Some(path) = from.path() else {
            log::warn!("SIGHUP: running with the built-in profile, nothing to reload");
            return;
        };
        match from.load() {
            Ok(profiles) => {
                if kernel_needs(&profiles).any() != self.enforcer.is_some() {
                    log::warn!("SIGHUP: egress.mode or responses changed whether the kernel acts for jobs; switching that on or off takes a restart (the rest is applied)");
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
        if let Some(errors) = &self.probe_errors {
            for (kind, total) in errors.read() {
                stats.set_probe_errors(kind, total);
            }
        }
        if let Some(shed) = &self.shed {
            for (kind, total) in shed.read() {
                stats.set_kernel_shed(kind, total);
            }
        }
    }

    /// Job gauges (ended jobs are accounted when the event that ends them is judged).
    /// Counts the running jobs, and publishes their anchors and step roots for the control
    /// socket (when they changed).
    fn account_jobs(&mut self, stats: &Stats, runner: &control::SharedRunnerProcesses) {
        stats
            .active_jobs
            .set(self.judge.engine.active_jobs() as i64);
        self.running_jobs.publish(&self.judge.engine);
        let now = self.judge.engine.runner_processes();
        let stale = *runner.read().unwrap_or_else(|e| e.into_inner()) != now;
        if stale {
            *runner.write().unwrap_or_else(|e| e.into_inner()) = now;
        }
    }

    pub(super) fn flush(&mut self, stats: &Stats) {
        if self.events.flush().is_err() {
            stats.write_errors.inc();
        }
    }
}

/// Exports the kernel's running totals per kind (`set`) and warns once per increase.
fn note_kernel_counts(
    totals: Vec<(EventKind, u64)>,
    reported: &mut [u64; KINDS],
    set: impl Fn(EventKind, u64),
    what: &str,
    why: &str,
) {
    for (kind, total) in totals {
        let slot = Metrics::slot(kind);
        set(kind, total);
        if total > reported[slot] {
            log::warn!(
                "kernel {what} {} {} records {why}",
                total - reported[slot],
                kind.name()
            );
            reported[slot] = total;
        }
    }
}

/// What the pipeline takes in: the kernel's records, control requests, SIGHUP reloads and the
/// container runtime's news.
pub(super) struct Inputs {
    pub(super) rx: mpsc::Receiver<KernelEvent>,
    pub(super) commands: mpsc::Receiver<control::Command>,
    /// Published for the control socket's slots kept for the runner (see `RunnerProcesses`).
    pub(super) runner_processes: control::SharedRunnerProcesses,
    pub(super) reloads: mpsc::Receiver<()>,
    pub(super) container_news: mpsc::Receiver<crate::containers::docker::ContainerNews>,
}

/// Waits for the ring reader's barrier, judging what it queues meanwhile (the reader may be
/// waiting for room in the queue to hand on the records before the barrier). False when it did
/// not come within `BARRIER_WAIT`.
async fn wait_for_barrier<T>(
    drained: tokio::sync::oneshot::Receiver<()>,
    rx: &mut mpsc::Receiver<T>,
    mut handle: impl FnMut(T),
) -> bool {
    let deadline = tokio::time::sleep(BARRIER_WAIT);
    tokio::pin!(deadline, drained);
    loop {
        tokio::select! {
            biased;
            came = &mut drained => return came.is_ok(),
            Some(event) = rx.recv() => handle(event),
            _ = &mut deadline => return false,
        }
    }
}

pub(super) async fn run(
    inputs: Inputs,
    reload_from: ProfileSource,
    barrier: mpsc::Sender<tokio::sync::oneshot::Sender<()>>,
    mut enricher: Enricher,
    mut pipeline: Pipeline,
    stats: Arc<Stats>,
) -> anyhow::Result<()> {
    let Inputs {
        mut rx,
        mut commands,
        runner_processes,
        mut reloads,
        mut container_news,
    } = inputs;
    let mut tick = tokio::time::interval(ENGINE_TICK);
    // After a stall (the agent held still, a slow disk) the ticks resume at their pace, not in
    // a burst: a burst would spend the `LOSS_WAIT_TICKS` of processes whose exec is still in the
    // backlog before the backlog is read, and their losses would miss their job's report.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported_losses = [0u64; KINDS];
    let mut reported_shed = [0u64; KINDS];
    let mut reported_errors = [0u64; KINDS];
    loop {
        tokio::select! {
            received = rx.recv() => {
                let Some(event) = received else { break };
                pipeline.handle_queued(&mut enricher, event, &stats);
                // Drain what is queued, then flush: at most one flush per burst.
                while let Ok(event) = rx.try_recv() {
                    pipeline.handle_queued(&mut enricher, event, &stats);
                }
                pipeline.flush(&stats);
                stats.last_event.set(unix_now());
                pipeline.account_jobs(&stats, &runner_processes);
            }
            Some(command) = commands.recv() => {
                // Whatever the kernel wrote before the request belongs before it: the ring is
                // drained up to now (a barrier through the reader), then the queue.
                let (done, drained) = tokio::sync::oneshot::channel();
                // Never waits for room: a reader stuck with earlier barriers unanswered makes
                // this one unsettled at once, not the pipeline stuck behind it.
                let settled = barrier.try_send(done).is_ok()
                    && wait_for_barrier(drained, &mut rx, |event| {
                        pipeline.handle_queued(&mut enricher, event, &stats)
                    })
                    .await;
                // What was queued by then (not what a flood keeps adding behind it).
                for _ in 0..rx.len() {
                    let Ok(event) = rx.try_recv() else { break };
                    pipeline.handle_queued(&mut enricher, event, &stats);
                }
                pipeline.end_connect_run(&mut enricher, &stats, RunEnd::Boundary);
                if !settled {
                    pipeline.note_unsettled_request(&stats);
                }
                let response = pipeline.command(&mut enricher, command.request, command.peer, &stats);
                pipeline.unsettled_request = false;
                let _ = command.reply.send(response);
                pipeline.account_jobs(&stats, &runner_processes);
            }
            Some(news) = container_news.recv() => {
                // The kernel's records queued before the runtime's word come first: a
                // container's first processes are then linked as it was when they ran.
                while let Ok(event) = rx.try_recv() {
                    pipeline.handle_queued(&mut enricher, event, &stats);
                }
                pipeline.end_connect_run(&mut enricher, &stats, RunEnd::Boundary);
                pipeline.container_news(&mut enricher, news, &stats);
            }
            Some(()) = reloads.recv() => {
                // Whatever the kernel queued before the signal is judged by the old profile.
                while let Ok(event) = rx.try_recv() {
                    pipeline.handle_queued(&mut enricher, event, &stats);
                }
                pipeline.end_connect_run(&mut enricher, &stats, RunEnd::Boundary);
                pipeline.reload(&reload_from, &stats);
            }
            _ = tick.tick() => {
                pipeline.end_connect_run(&mut enricher, &stats, RunEnd::Tick);
                let losses = pipeline.losses.as_ref().map(LossReader::read).unwrap_or_default();
                note_kernel_counts(losses, &mut reported_losses, |k, t| stats.set_kernel_losses(k, t), "dropped", "(ring buffer full)");
                let shed = pipeline.shed.as_ref().map(LossReader::read).unwrap_or_default();
                note_kernel_counts(shed, &mut reported_shed, |k, t| stats.set_kernel_shed(k, t), "refused", "(a flooding control group, its ring three-quarters full: the others' share)");
                let errors = pipeline.probe_errors.as_ref().map(LossReader::read).unwrap_or_default();
                note_kernel_counts(errors, &mut reported_errors, |k, t| stats.set_probe_errors(k, t), "could not build", "(a read a probe needed failed)");
                let now = boot_ns();
                enricher.table.collect_garbage(now);
                let unparsed = enricher.dns_unparsed.saturating_sub(stats.dns_unparsed.get());
                stats.dns_unparsed.inc_by(unparsed);
                pipeline.charge_losses(&mut enricher, &stats, now);
                let released = pipeline.hold.expired(now);
                pipeline.judge_released(&mut enricher, released, &stats);
                let findings = pipeline.judge.tick(now);
                pipeline.write_findings(findings, &stats);
                // Jobs the clock ended (an anchor gone without its exit record).
                let ended = pipeline.judge.take_ended(&now_rfc3339());
                pipeline.write_reports(ended, &stats);
                pipeline.write_late_findings(&stats);
                pipeline.account_jobs(&stats, &runner_processes);
                pipeline.console_status(&stats);
                if let Some(guarded) = pipeline.guarded.as_mut() {
                    guarded.refresh_if_due();
                }
                pipeline.refresh_identities(&mut enricher);
                if let Some(log) = pipeline.tamper_log.as_mut() {
                    log.clear_judged();
                    if log.repin_if_removed() {
                        stats.tamper_log_unpinned.inc();
                    }
                }
                if let Some(guard) = pipeline.pin_guard.as_mut() {
                    stats.enforcement_unpinned.inc_by(guard.repin_removed() as u64);
                }
            }
        }
    }
    pipeline.end_connect_run(&mut enricher, &stats, RunEnd::Boundary);
    let held = pipeline.hold.all();
    pipeline.judge_released(&mut enricher, held, &stats);
    pipeline.refresh_losses(&stats);
    let findings = pipeline.judge.tick(boot_ns());
    pipeline.write_findings(findings, &stats);
    pipeline.write_late_findings(&stats);
    pipeline.events.flush().context("flushing events")?;
    if let Some(log) = pipeline.tamper_log.as_mut() {
        log.clear_judged();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_barrier_wait_judges_what_is_queued_meanwhile_and_says_when_it_timed_out() {
        // The reader hands on three records, then answers the barrier: all three are judged
        // while waiting (the reader could not have answered had nobody emptied the queue).
        let (tx, mut rx) = mpsc::channel(1);
        let (done, drained) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            for n in 0..3 {
                tx.send(n).await.unwrap();
            }
            done.send(()).unwrap();
            std::future::pending::<()>().await;
        });
        let mut judged = Vec::new();
        assert!(wait_for_barrier(drained, &mut rx, |n| judged.push(n)).await);
        // The last may still be queued when the answer comes: the caller empties the queue.
        while let Ok(n) = rx.try_recv() {
            judged.push(n);
        }
        assert_eq!(judged, [0, 1, 2]);

        // A reader that never gets there: the wait ends at its deadline and says so.
        let (_tx, mut rx) = mpsc::channel::<u32>(1);
        let (_done, drained) = tokio::sync::oneshot::channel();
        let started = tokio::time::Instant::now();
        assert!(!wait_for_barrier(drained, &mut rx, |_| {}).await);
        assert!(started.elapsed() >= BARRIER_WAIT);
    }
}
