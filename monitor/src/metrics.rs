//! The agent's Prometheus metrics and the `/metrics` endpoint.
//!
//! Names follow Prometheus conventions: one prefix (`monitor_`), `_total` for counters, base
//! units (seconds, bytes). Label values are bounded: event kinds, drop causes, rule ids and
//! severities are fixed sets; repositories are capped at [`MAX_REPOSITORY_LABELS`] (later ones
//! count as `other`); run ids, paths and pids never become labels.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use monitor_common::EventKind;
use prometheus::{
    Encoder as _, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub const KINDS: usize = EventKind::ALL.len();
/// Distinct `repository` label values before the rest are counted as `other`.
pub const MAX_REPOSITORY_LABELS: usize = 64;

/// Every counter of the pipeline: what the stop summary prints and `/metrics` exports.
pub struct Metrics {
    pub registry: Registry,
    /// Kernel records received, by kind.
    pub events: [IntCounter; KINDS],
    /// Records the kernel could not queue (ring buffer full), by kind.
    pub kernel_losses: [IntCounter; KINDS],
    /// Records a kernel program could not build (a failed read), by kind.
    pub probe_errors: [IntCounter; KINDS],
    /// Records refused to a flooding control group (the kernel's fair share of its rings).
    pub kernel_shed: [IntCounter; KINDS],
    /// Records the agent decoded but could not queue for processing, by kind.
    pub queue_full: [IntCounter; KINDS],
    /// Records the agent could not decode (their kind is unknown).
    pub decode_errors: IntCounter,
    pub write_errors: IntCounter,
    findings: IntCounterVec,
    pub findings_total: IntCounter,
    /// What the kernel did on its own to job processes, by rule and response.
    pub responses: IntCounterVec,
    pub active_jobs: IntGauge,
    pub jobs_ended: IntCounter,
    pub job_duration: Histogram,
    pub probe_attached: IntGaugeVec,
    pub last_event: Gauge,
    pub heartbeat: Gauge,
    pub egress_heartbeat: Gauge,
    /// DNS messages seen (questions leaving, responses arriving) that did not parse.
    pub dns_unparsed: IntCounter,
    /// Times the pinned tamper log was found removed from bpffs (and pinned again).
    pub tamper_log_unpinned: IntCounter,
    /// Enforcement pins found removed from bpffs (and pinned again).
    pub enforcement_unpinned: IntCounter,
    /// Control requests answered before the kernel's records up to them were all read.
    pub barrier_timeouts: IntCounter,
    /// Connect records folded into the record of their run of identical connects.
    pub connects_folded: IntCounter,
    /// SIGHUP profile reloads, by result (`ok`, `refused`).
    pub profile_reloads: IntCounterVec,
    /// Whether the container runtime's API answers (1), or not (0); absent until first asked.
    pub container_runtime_up: IntGauge,
    pub container_runtime_socket_present: IntGauge,
    /// Containers the runtime told of (created, or there at start).
    pub containers_seen: IntCounter,
    /// Memory held by decoded records waiting for the pipeline (`KernelEvent::memory_bytes`).
    pub queued_bytes: IntGauge,
    /// Baselines across runs (see `baseline`).
    pub baseline: crate::baseline::BaselineMetrics,
    /// Outputs to SIEMs and log platforms (see `forward`).
    pub outputs: crate::forward::OutputMetrics,
    repositories: Mutex<HashSet<String>>,
}

fn registered<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn baseline_metrics(registry: &Registry) -> crate::baseline::BaselineMetrics {
    use crate::baseline::behaviour::BehaviourKind;
    let new_behaviours = counter_vec(
        registry,
        "monitor_baseline_new_behaviours_total",
        "Behaviours a job's run did that its baseline had not seen, by kind (counted while learning too).",
        &["kind"],
    );
    for kind in BehaviourKind::ALL {
        new_behaviours.with_label_values(&[kind.as_str()]);
    }
    crate::baseline::BaselineMetrics {
        state: registered(
            registry,
            IntGaugeVec::new(
                Opts::new(
                    "monitor_baseline_state",
                    "1 for the state of each job's baseline (learning, stable, unstable) as of its last recorded run, 0 for the others (at most 256 jobs).",
                ),
                &["job", "state"],
            )
            .expect("valid metric"),
        ),
        new_behaviours,
        runs_recorded: registered(
            registry,
            IntCounter::new(
                "monitor_baseline_runs_recorded_total",
                "Runs recorded in the baseline store (at the job's end, or later from the pending directory).",
            )
            .expect("valid metric"),
        ),
        pending: registered(
            registry,
            IntGauge::new(
                "monitor_baseline_pending_runs",
                "Runs waiting on disk for the baseline store to take them.",
            )
            .expect("valid metric"),
        ),
        runs_lost: registered(
            registry,
            IntCounter::new(
                "monitor_baseline_runs_lost_total",
                "Runs the baseline never got: pending ones dropped past the bound, or ones that could not be kept on disk.",
            )
            .expect("valid metric"),
        ),
        store_errors: registered(
            registry,
            IntCounter::new(
                "monitor_baseline_store_errors_total",
                "Failed attempts to reach, read or write the baseline store.",
            )
            .expect("valid metric"),
        ),
        store_up: registered(
            registry,
            IntGauge::new(
                "monitor_baseline_store_up",
                "Whether the baseline store answered the last attempt: 1 yes, 0 no.",
            )
            .expect("valid metric"),
        ),
        record_seconds: registered(
            registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "monitor_baseline_record_seconds",
                    "Time at a job's end to compare its run with the baseline and record it.",
                )
                .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 4.0]),
            )
            .expect("valid metric"),
        ),
    }
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

/// One counter per kind, at each kind's `loss_slot` (the index the kernel's loss array uses).
fn per_kind(vec: &IntCounterVec, extra: &[&str]) -> [IntCounter; KINDS] {
    std::array::from_fn(|slot| {
        let kind = EventKind::ALL
            .into_iter()
            .find(|k| k.loss_slot() as usize == slot)
            .expect("loss slots are dense over the kinds");
        let mut labels = vec![kind.name()];
        labels.extend_from_slice(extra);
        vec.with_label_values(&labels)
    })
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let events = counter_vec(
            &registry,
            "monitor_events_total",
            "Kernel event records received by the agent, by kind.",
            &["kind"],
        );
        let dropped = counter_vec(
            &registry,
            "monitor_events_dropped_total",
            "Event records lost, by kind and cause (kernel_ring_full, agent_queue_full, decode_error).",
            &["kind", "cause"],
        );
        let findings = counter_vec(
            &registry,
            "monitor_findings_total",
            "Findings raised, by rule, severity and repository.",
            &["rule", "severity", "repository"],
        );
        let responses = counter_vec(
            &registry,
            "monitor_responses_total",
            "Responses the kernel took to findings (killed; blocked: refused by BPF-LSM and killed; would_kill when rehearsed; kill_failed), by rule.",
            &["rule", "response"],
        );
        let write_errors = IntCounter::new(
            "monitor_write_errors_total",
            "Events or findings that could not be written to their log.",
        )
        .expect("valid metric");
        let findings_total = IntCounter::new(
            "monitor_findings_raised_total",
            "Findings raised, all rules.",
        )
        .expect("valid metric");
        let active_jobs =
            IntGauge::new("monitor_active_jobs", "CI jobs running now.").expect("valid metric");
        let jobs_ended =
            IntCounter::new("monitor_jobs_ended_total", "CI jobs that ended.").expect("valid");
        let job_duration = Histogram::with_opts(
            HistogramOpts::new("monitor_job_duration_seconds", "Duration of ended CI jobs.")
                .buckets(vec![
                    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0,
                ]),
        )
        .expect("valid metric");
        let probe_attached = IntGaugeVec::new(
            Opts::new(
                "monitor_probe_attached",
                "1 when the probe (a kernel hook) is attached, 0 when it is not (optional: may be missing on some kernels).",
            ),
            &["probe", "optional"],
        )
        .expect("valid metric");
        let last_event = Gauge::new(
            "monitor_last_event_timestamp_seconds",
            "Unix time the agent last processed a kernel event.",
        )
        .expect("valid metric");
        let heartbeat = Gauge::new(
            "monitor_pipeline_heartbeat_timestamp_seconds",
            "Unix time the agent's own heartbeat connection last came back through the probes.",
        )
        .expect("valid metric");
        let egress_heartbeat = Gauge::new(
            "monitor_egress_hook_heartbeat_timestamp_seconds",
            "Unix time the agent's heartbeat datagram last came back through the cgroup egress hooks (stale while the pipeline heartbeat is fresh: the hooks were detached or never attached).",
        )
        .expect("valid metric");
        let dns_unparsed = IntCounter::new(
            "monitor_dns_messages_unparsed_total",
            "DNS messages seen as packets (questions leaving, responses arriving) that did not parse.",
        )
        .expect("valid metric");
        let tamper_log_unpinned = IntCounter::new(
            "monitor_tamper_log_unpinned_total",
            "Times the agent found its pinned tamper log removed from bpffs (someone with root unpinned it, as before killing the agent) and pinned it again.",
        )
        .expect("valid metric");
        let enforcement_unpinned = IntCounter::new(
            "monitor_enforcement_unpinned_total",
            "Enforcement pins (the kernel's maps and program links that keep block mode and kill responses on when the agent is gone) the agent found removed from bpffs (and pinned again, unless the log says it could not).",
        )
        .expect("valid metric");
        let barrier_timeouts = IntCounter::new(
            "monitor_control_barrier_timeouts_total",
            "Control requests (a job's start or end) answered before every kernel record written up to them had been read, the ring reader being stuck or flooded: the job's report then says it may miss its last events.",
        )
        .expect("valid metric");
        let connects_folded = IntCounter::new(
            "monitor_connects_folded_total",
            "Connects not written as records of their own but counted in a record's `repeats`: a process's consecutive connects identical to the one before (destination, protocol, route, outcome).",
        )
        .expect("valid metric");
        let container_runtime_up = IntGauge::new(
            "monitor_container_runtime_up",
            "Whether the container runtime's API (Docker) answers: 1 yes, 0 no (containers are then told by their cgroup only, without image, privileges or mounts).",
        )
        .expect("valid metric");
        registry
            .register(Box::new(container_runtime_up.clone()))
            .expect("unique metric");
        let container_runtime_socket_present = IntGauge::new(
            "monitor_container_runtime_socket_present",
            "Whether the container runtime's API socket (--docker-socket) is there: 1 yes (the runtime runs on this machine), 0 no.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(container_runtime_socket_present.clone()))
            .expect("unique metric");
        let queued_bytes = IntGauge::new(
            "monitor_queue_bytes",
            "Memory held by kernel records decoded and waiting for the agent's pipeline (bounded: past it other than security records are dropped and counted as agent_queue_full).",
        )
        .expect("valid metric");
        registry
            .register(Box::new(queued_bytes.clone()))
            .expect("unique metric");
        let containers_seen = IntCounter::new(
            "monitor_containers_seen_total",
            "Containers the runtime told the agent of (created, or present when it connected).",
        )
        .expect("valid metric");
        for c in [
            &write_errors,
            &findings_total,
            &jobs_ended,
            &dns_unparsed,
            &tamper_log_unpinned,
            &enforcement_unpinned,
            &barrier_timeouts,
            &connects_folded,
            &containers_seen,
        ] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        registry
            .register(Box::new(active_jobs.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(job_duration.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(probe_attached.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(last_event.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(heartbeat.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(egress_heartbeat.clone()))
            .expect("unique metric");
        // The agent's own CPU and resident memory: monitor_process_cpu_seconds_total,
        // monitor_process_resident_memory_bytes, ...
        let process = prometheus::process_collector::ProcessCollector::new(
            std::process::id() as i32,
            "monitor",
        );
        registry.register(Box::new(process)).expect("unique metric");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "monitor_build_info",
                "Always 1; the agent's version as a label (which agents a fleet runs).",
            ),
            &["version"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(build_info.clone()))
            .expect("unique metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let profile_reloads = counter_vec(
            &registry,
            "monitor_profile_reloads_total",
            "Profile reloads on SIGHUP, by result (ok, refused).",
            &["result"],
        );
        for result in ["ok", "refused"] {
            profile_reloads.with_label_values(&[result]);
        }
        Metrics {
            outputs: crate::forward::OutputMetrics {
                records: counter_vec(
                    &registry,
                    "monitor_output_records_total",
                    "Records (findings, job summaries) by output and result: queued (kept on disk for it), sent (it took them), dropped (lost: its queue or channel was full, or a record was unreadable).",
                    &["output", "result"],
                ),
                queued: registered(
                    &registry,
                    IntGaugeVec::new(
                        Opts::new(
                            "monitor_output_queued_records",
                            "Records waiting on disk for an output's destination.",
                        ),
                        &["output"],
                    )
                    .expect("valid metric"),
                ),
                up: registered(
                    &registry,
                    IntGaugeVec::new(
                        Opts::new(
                            "monitor_output_up",
                            "Whether an output's destination took the last batch: 1 yes, 0 no (absent until the first).",
                        ),
                        &["output"],
                    )
                    .expect("valid metric"),
                ),
                errors: counter_vec(
                    &registry,
                    "monitor_output_errors_total",
                    "Failed attempts to deliver to an output's destination (connection, TLS, refused answer).",
                    &["output"],
                ),
            },
            baseline: baseline_metrics(&registry),
            profile_reloads,
            container_runtime_up,
            container_runtime_socket_present,
            containers_seen,
            queued_bytes,
            events: per_kind(&events, &[]),
            kernel_losses: per_kind(&dropped, &["kernel_ring_full"]),
            probe_errors: per_kind(&dropped, &["probe_error"]),
            kernel_shed: per_kind(&dropped, &["kernel_fair_share"]),
            queue_full: per_kind(&dropped, &["agent_queue_full"]),
            decode_errors: dropped.with_label_values(&["unknown", "decode_error"]),
            write_errors,
            findings,
            findings_total,
            responses,
            active_jobs,
            jobs_ended,
            job_duration,
            probe_attached,
            last_event,
            heartbeat,
            egress_heartbeat,
            dns_unparsed,
            tamper_log_unpinned,
            enforcement_unpinned,
            barrier_timeouts,
            connects_folded,
            repositories: Mutex::new(HashSet::new()),
            registry,
        }
    }

    pub fn slot(kind: EventKind) -> usize {
        kind.loss_slot() as usize
    }

    /// Counts a finding under a bounded repository label.
    pub fn count_finding(&self, rule: &str, severity: &str, repository: Option<&str>) {
        let repository = repository.unwrap_or("none");
        let label = {
            let mut known = self.repositories.lock().unwrap_or_else(|e| e.into_inner());
            if known.contains(repository) {
                repository.to_string()
            } else if known.len() < MAX_REPOSITORY_LABELS {
                known.insert(repository.to_string());
                repository.to_string()
            } else {
                "other".to_string()
            }
        };
        self.findings
            .with_label_values(&[rule, severity, &label])
            .inc();
        self.findings_total.inc();
    }

    /// Sets a kernel loss counter to the kernel's running total (it only grows).
    pub fn set_kernel_losses(&self, kind: EventKind, total: u64) {
        let c = &self.kernel_losses[Self::slot(kind)];
        let now = c.get();
        if total > now {
            c.inc_by(total - now);
        }
    }

    /// Sets a shed counter to the kernel's running total (it only grows).
    pub fn set_kernel_shed(&self, kind: EventKind, total: u64) {
        let c = &self.kernel_shed[Self::slot(kind)];
        let now = c.get();
        if total > now {
            c.inc_by(total - now);
        }
    }

    /// Sets a probe error counter to the kernel's running total (it only grows).
    pub fn set_probe_errors(&self, kind: EventKind, total: u64) {
        let c = &self.probe_errors[Self::slot(kind)];
        let now = c.get();
        if total > now {
            c.inc_by(total - now);
        }
    }

    /// Events lost so far, by cause.
    pub fn drop_totals(&self) -> crate::report::Drops {
        let sum = |c: &[IntCounter; KINDS]| c.iter().map(IntCounter::get).sum::<u64>();
        crate::report::Drops {
            kernel_ring_full: sum(&self.kernel_losses),
            agent_queue_full: sum(&self.queue_full),
            decode_error: self.decode_errors.get(),
            probe_error: sum(&self.probe_errors),
            kernel_fair_share: sum(&self.kernel_shed),
        }
    }

    /// The stop summary (also what `monitor job status` shows).
    pub fn summary(&self) -> serde_json::Value {
        let per_kind = |counters: &[IntCounter; KINDS]| {
            EventKind::ALL
                .iter()
                .map(|k| {
                    (
                        k.name().to_string(),
                        serde_json::json!(counters[Self::slot(*k)].get()),
                    )
                })
                .collect::<serde_json::Map<_, _>>()
        };
        serde_json::json!({
            "events": per_kind(&self.events),
            "kernel_losses": per_kind(&self.kernel_losses),
            "probe_errors": per_kind(&self.probe_errors),
            "kernel_fair_share": per_kind(&self.kernel_shed),
            "decode_errors": self.decode_errors.get(),
            "channel_full_drops": self.drop_totals().agent_queue_full,
            "write_errors": self.write_errors.get(),
            "findings": self.findings_total.get(),
        })
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buffer) {
            log::warn!("encoding metrics: {e}");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Unix time now, in seconds.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Serves `GET /metrics` (and `/healthz`) on `address` until the agent stops. Returns the
/// address actually bound (port 0 picks one).
pub async fn serve(
    address: SocketAddr,
    metrics: Arc<Metrics>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use axum::{http::header, routing::get, Router};
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the metrics endpoint to {address}"))?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            log::error!("metrics endpoint stopped: {e}");
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_conventions_and_labels_stay_bounded() {
        let m = Metrics::new();
        m.events[Metrics::slot(EventKind::ProcessExec)].inc();
        for _ in 0..2 {
            m.events[Metrics::slot(EventKind::NetConnect)].inc();
        }
        m.set_probe_errors(EventKind::ProcessExec, 2);
        m.set_probe_errors(EventKind::ProcessExec, 1); // totals never go back
        assert_eq!(m.drop_totals().probe_error, 2);
        m.set_kernel_losses(EventKind::FileOpen, 5);
        m.set_kernel_losses(EventKind::FileOpen, 3); // totals never go back
        for i in 0..(MAX_REPOSITORY_LABELS + 10) {
            m.count_finding("credential-read", "high", Some(&format!("org/repo{i}")));
        }
        let text = m.render();
        assert!(
            text.contains("monitor_events_total{kind=\"exec\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("monitor_events_total{kind=\"connect\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("monitor_events_total{kind=\"env\"} 0"),
            "{text}"
        );
        assert!(text
            .contains("monitor_events_dropped_total{cause=\"kernel_ring_full\",kind=\"open\"} 5"));
        assert!(text.contains(
            "monitor_findings_total{repository=\"other\",rule=\"credential-read\",severity=\"high\"} 10"
        ));
        assert!(text.contains("monitor_process_resident_memory_bytes"));
        let repos = text
            .lines()
            .filter(|l| l.starts_with("monitor_findings_total{"))
            .count();
        assert_eq!(repos, MAX_REPOSITORY_LABELS + 1);
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let mut parts = line.split_whitespace().skip(2);
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(name.starts_with("monitor_"), "{line}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
        }
    }
}
