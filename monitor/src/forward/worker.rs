//! Each output's thread: records from the pipeline into the output's disk queue, and from the
//! queue to the destination, oldest first, in batches; on failure the connection is dropped and
//! retried with backoff (1 s doubling to 30 s) while records keep queueing. The pipeline only
//! ever hands a record to a bounded channel (a full channel drops it, counted).

use std::{
    sync::mpsc,
    time::{Duration, Instant},
};

use prometheus::{IntCounterVec, IntGaugeVec};

use super::{queue::DiskQueue, OutputConfig, OutputKind, Record};

/// Records handed to an output's thread and not yet queued on disk.
const CHANNEL: usize = 4_096;
pub const DEFAULT_MAX_QUEUED: usize = 100_000;
/// Records sent at once.
const BATCH: usize = 100;
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The outputs' metrics (registered by `metrics`), by output name.
#[derive(Clone)]
pub struct OutputMetrics {
    /// `result`: `queued`, `sent`, `dropped`.
    pub records: IntCounterVec,
    pub queued: IntGaugeVec,
    /// 1 while the destination takes records, 0 after a failure.
    pub up: IntGaugeVec,
    pub errors: IntCounterVec,
}

/// The pipeline's handle on every output.
#[derive(Default)]
pub struct Forwarder {
    outputs: Vec<(OutputConfig, mpsc::SyncSender<Record>)>,
    metrics: Option<OutputMetrics>,
}

enum Destination {
    Syslog(super::syslog::Syslog),
    Otlp(super::otlp::Otlp),
}

impl Destination {
    fn deliver(&mut self, records: &[Record]) -> anyhow::Result<()> {
        match self {
            Destination::Syslog(s) => s.deliver(records),
            Destination::Otlp(o) => o.deliver(records),
        }
    }
}

impl Forwarder {
    /// Starts a thread per output; a broken output (its CA unreadable, its queue directory not
    /// writable) fails the start with its name.
    pub fn start(
        configs: &[OutputConfig],
        runner: &super::RunnerInfo,
        metrics: OutputMetrics,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let mut outputs = Vec::new();
        for config in configs {
            let destination = match config.kind {
                OutputKind::Syslog => {
                    Destination::Syslog(super::syslog::Syslog::new(config, runner)?)
                }
                OutputKind::Otlp => Destination::Otlp(super::otlp::Otlp::new(config, runner)?),
            };
            let queue = DiskQueue::open(
                &config.queue_dir(),
                config.max_queued.unwrap_or(DEFAULT_MAX_QUEUED),
            )
            .with_context(|| format!("output {}: its queue", config.name))?;
            let name = config.name.clone();
            for result in ["queued", "sent", "dropped"] {
                metrics.records.with_label_values(&[&name, result]);
            }
            metrics.errors.with_label_values(&[&name]);
            metrics
                .queued
                .with_label_values(&[&name])
                .set(queue.len() as i64);
            if !queue.is_empty() {
                log::info!(
                    "output {name}: {} record(s) an earlier agent left are sent first",
                    queue.len()
                );
            }
            let (tx, rx) = mpsc::sync_channel(CHANNEL);
            let worker_metrics = metrics.clone();
            std::thread::Builder::new()
                .name(format!("output-{name}"))
                .spawn(move || run(name, rx, queue, destination, worker_metrics))?;
            outputs.push((config.clone(), tx));
        }
        Ok(Forwarder {
            outputs,
            metrics: Some(metrics),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty()
    }

    /// Hands a record to every output that takes it; never waits.
    pub fn send(&self, record: &Record) {
        for (config, tx) in &self.outputs {
            if !config.takes(record) {
                continue;
            }
            if tx.try_send(record.clone()).is_err() {
                if let Some(m) = &self.metrics {
                    m.records
                        .with_label_values(&[&config.name, "dropped"])
                        .inc();
                }
            }
        }
    }
}

fn run(
    name: String,
    rx: mpsc::Receiver<Record>,
    mut queue: DiskQueue,
    mut destination: Destination,
    metrics: OutputMetrics,
) {
    let count = |result: &str, n: u64| {
        metrics
            .records
            .with_label_values(&[&name, result])
            .inc_by(n)
    };
    let mut retry_at = Instant::now();
    let mut retry_wait = RETRY_FIRST;
    let mut last_error: Option<String> = None;
    let mut open = true;
    while open || !queue.is_empty() {
        let wait = if queue.is_empty() {
            Duration::from_secs(1)
        } else {
            retry_at.saturating_duration_since(Instant::now())
        };
        let mut incoming = Vec::new();
        match rx.recv_timeout(wait) {
            Ok(r) => incoming.push(r),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => open = false,
        }
        while let Ok(r) = rx.try_recv() {
            incoming.push(r);
        }
        for record in incoming {
            let bytes = serde_json::to_vec(&record).unwrap_or_default();
            match queue.push(&bytes) {
                Ok(dropped) => {
                    count("queued", 1);
                    count("dropped", dropped);
                }
                Err(e) => {
                    count("dropped", 1);
                    log::error!("output {name}: could not queue a record: {e:#}");
                }
            }
        }
        metrics
            .queued
            .with_label_values(&[&name])
            .set(queue.len() as i64);
        if !open && Instant::now() < retry_at {
            // Stopping, and the destination is failing: what waits stays on disk for the next
            // agent.
            return;
        }
        while !queue.is_empty() && Instant::now() >= retry_at {
            let (batch, unreadable) = queue.oldest(BATCH);
            count("dropped", unreadable);
            let records: Vec<Record> = batch
                .iter()
                .filter_map(|(_, bytes)| serde_json::from_slice(bytes).ok())
                .collect();
            match destination.deliver(&records) {
                Ok(()) => {
                    for (seq, _) in &batch {
                        queue.remove(*seq);
                    }
                    count("sent", records.len() as u64);
                    count("dropped", (batch.len() - records.len()) as u64);
                    metrics.up.with_label_values(&[&name]).set(1);
                    if last_error.take().is_some() {
                        log::info!("output {name}: the destination takes records again");
                    }
                    retry_wait = RETRY_FIRST;
                }
                Err(e) => {
                    metrics.errors.with_label_values(&[&name]).inc();
                    metrics.up.with_label_values(&[&name]).set(0);
                    let text = format!("{e:#}");
                    if last_error.as_deref() != Some(text.as_str()) {
                        log::warn!(
                            "output {name}: {text}; {} record(s) wait and are retried",
                            queue.len()
                        );
                        last_error = Some(text);
                    }
                    retry_at = Instant::now() + retry_wait;
                    retry_wait = (retry_wait * 2).min(RETRY_MAX);
                }
            }
            metrics
                .queued
                .with_label_values(&[&name])
                .set(queue.len() as i64);
            if !open {
                break;
            }
        }
    }
}
