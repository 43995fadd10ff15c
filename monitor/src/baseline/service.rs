//! The agent's side of the baseline: a thread that owns the store, so a slow or unreachable
//! database never holds the pipeline. At each job's end the pipeline asks it to compare and
//! record the run and waits a bounded time ([`ANSWER_WAIT`]); past that, or with the store
//! unreachable, the report says so, the run waits on disk ([`Pending`]) and is sent, oldest
//! first, when the store answers again (retried with backoff).
//!
//! While the store cannot be read, runs are compared with the agent's own copy of the job's
//! baseline (the snapshot it last read, with the runs it has recorded since), when it has one.

use std::{
    collections::{BTreeMap, HashMap},
    sync::mpsc,
    time::{Duration, Instant},
};

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use super::{
    behaviour::{Behaviour, RunRecord},
    compare::{compare, new_kinds, Comparison, Snapshot},
    pending::Pending,
    state::{BaselineState, Thresholds},
    store::{self, shown_location, Store},
    BaselineReport, ComparedWith, Recording,
};

/// How long the pipeline waits for the store's answer at a job's end.
pub const ANSWER_WAIT: Duration = Duration::from_secs(4);
/// Jobs whose baseline copy the agent keeps (for when the store cannot be read).
const MAX_COPIES: usize = 256;
/// Jobs with a `monitor_baseline_state` series.
pub const MAX_STATE_LABELS: usize = 256;
const RETRY_FIRST: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The metrics the baseline keeps (registered by `metrics`).
#[derive(Clone)]
pub struct BaselineMetrics {
    /// 1 for the state each job's baseline is in (label `state`), 0 for the others.
    pub state: IntGaugeVec,
    pub new_behaviours: IntCounterVec,
    pub runs_recorded: IntCounter,
    pub pending: IntGauge,
    /// Pending runs dropped to keep the directory bounded.
    pub runs_lost: IntCounter,
    pub store_errors: IntCounter,
    /// 1 while the store answers, 0 while it does not.
    pub store_up: IntGauge,
    /// Time to compare and record a run at a job's end.
    pub record_seconds: Histogram,
}

struct Request {
    run: RunRecord,
    /// False: compare only (a job whose identity is only its own word).
    record: bool,
    reply: mpsc::SyncSender<(Option<Comparison>, ComparedWith, Recording, Option<String>)>,
}

/// The handle the pipeline holds.
pub struct Baseline {
    tx: mpsc::SyncSender<Request>,
    thresholds: Thresholds,
    store_kind: &'static str,
    metrics: BaselineMetrics,
    labelled: std::collections::HashSet<String>,
}

/// Where and how the agent keeps baselines.
#[derive(Debug, Clone)]
pub struct BaselineOptions {
    /// A SQLite file or a `postgres://` URL.
    pub store: String,
    pub thresholds: Thresholds,
    /// Where runs wait while the store cannot take them.
    pub pending_dir: std::path::PathBuf,
}

impl Baseline {
    /// Starts the store's thread. The store is opened there (a database that is down at the
    /// agent's start is retried, not fatal); a SQLite file that cannot be opened is an error now.
    pub fn start(options: BaselineOptions, metrics: BaselineMetrics) -> anyhow::Result<Self> {
        let store_kind = if options.store.starts_with("postgres") {
            "postgres"
        } else {
            // Opened once here so a bad path fails the start with a clear error.
            store::open(&options.store)?;
            "sqlite"
        };
        let (tx, rx) = mpsc::sync_channel::<Request>(64);
        let pending = Pending::new(options.pending_dir.clone());
        metrics.pending.set(pending.count() as i64);
        let worker_metrics = metrics.clone();
        let thresholds = options.thresholds;
        std::thread::Builder::new()
            .name("baseline".into())
            .spawn(move || Worker::new(options, pending, worker_metrics).run(rx))?;
        Ok(Baseline {
            tx,
            thresholds,
            store_kind,
            metrics,
            labelled: Default::default(),
        })
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// Compares a job's run with its baseline and records it (when `record`): the report's
    /// section. Waits at most [`ANSWER_WAIT`].
    pub fn judge(&mut self, run: RunRecord, record: bool) -> (BaselineReport, Option<Comparison>) {
        let started = Instant::now();
        let (reply, answer) = mpsc::sync_channel(1);
        let job = run.job.clone();
        let sent = self.tx.try_send(Request { run, record, reply });
        let (comparison, compared_with, recording, note) = match sent {
            Err(_) => (
                None,
                ComparedWith::Nothing,
                Recording::NotRecorded,
                Some("the baseline's queue is full (the store is far behind): this run was neither compared nor recorded".to_string()),
            ),
            Ok(()) => match answer.recv_timeout(ANSWER_WAIT) {
                Ok(a) => a,
                Err(_) => (
                    None,
                    ComparedWith::Nothing,
                    if record { Recording::Pending } else { Recording::NotRecorded },
                    Some(format!(
                        "the baseline store did not answer within {} s: this run was not compared; it is recorded when the store answers",
                        ANSWER_WAIT.as_secs()
                    )),
                ),
            },
        };
        self.metrics
            .record_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Some(c) = &comparison {
            for (kind, n) in new_kinds(c) {
                self.metrics
                    .new_behaviours
                    .with_label_values(&[kind])
                    .inc_by(n);
            }
            // The state of the job's baseline is its recorded runs': a run whose identity no
            // hook declared (any local process can name a job in its environment) is compared,
            // not recorded, and does not move it.
            if record {
                self.set_state(&job, c.job_state);
            }
        }
        let report = BaselineReport {
            job,
            store: self.store_kind.to_string(),
            state: comparison.as_ref().map(|c| c.job_state),
            runs: comparison.as_ref().map_or(0, |c| c.job_runs),
            compared_with,
            recorded: recording,
            note,
            steps: comparison
                .as_ref()
                .map(|c| c.steps.clone())
                .unwrap_or_default(),
        };
        (report, comparison)
    }

    fn set_state(&mut self, job: &str, state: BaselineState) {
        if !self.labelled.contains(job) {
            if self.labelled.len() >= MAX_STATE_LABELS {
                return;
            }
            self.labelled.insert(job.to_string());
        }
        for s in BaselineState::ALL {
            self.metrics
                .state
                .with_label_values(&[job, s.as_str()])
                .set((s == state) as i64);
        }
    }
}

struct Worker {
    options: BaselineOptions,
    store: Option<Store>,
    pending: Pending,
    metrics: BaselineMetrics,
    copies: HashMap<String, Snapshot>,
    retry_at: Instant,
    retry_wait: Duration,
    /// The last store error written to the log (each new one is written once).
    last_error: Option<String>,
}

impl Worker {
    fn new(options: BaselineOptions, pending: Pending, metrics: BaselineMetrics) -> Self {
        Worker {
            options,
            store: None,
            pending,
            metrics,
            copies: HashMap::new(),
            retry_at: Instant::now(),
            retry_wait: RETRY_FIRST,
            last_error: None,
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Request>) {
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(request) => self.handle(request),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if Instant::now() >= self.retry_at && self.pending.count() > 0 {
                if self.send_pending() {
                    self.retry_wait = RETRY_FIRST;
                } else {
                    self.retry_wait = (self.retry_wait * 2).min(RETRY_MAX);
                }
                self.retry_at = Instant::now() + self.retry_wait;
            }
        }
    }

    fn failed(&mut self, what: &str, e: anyhow::Error) {
        self.metrics.store_errors.inc();
        self.metrics.store_up.set(0);
        self.store = None;
        let text = format!("{e:#}");
        if self.last_error.as_deref() != Some(text.as_str()) {
            log::warn!(
                "baseline store {}: {what}: {text}",
                shown_location(&self.options.store)
            );
            self.last_error = Some(text);
        }
    }

    fn store(&mut self) -> Option<&mut Store> {
        if self.store.is_none() {
            match store::open(&self.options.store) {
                Ok(s) => {
                    if self.last_error.take().is_some() {
                        log::info!(
                            "baseline store {} answers again",
                            shown_location(&self.options.store)
                        );
                    }
                    self.metrics.store_up.set(1);
                    self.store = Some(s);
                }
                Err(e) => {
                    self.failed("opening", e);
                    return None;
                }
            }
        }
        self.store.as_mut()
    }

    /// Records a run against the store's baseline as it is now; the comparison made.
    fn record(&mut self, run: &RunRecord) -> anyhow::Result<(Snapshot, Comparison)> {
        let thresholds = self.options.thresholds;
        let store = self
            .store()
            .ok_or_else(|| anyhow::anyhow!("the store cannot be reached"))?;
        let snapshot = store.snapshot(&run.job)?;
        let comparison = compare(&snapshot, run, &thresholds);
        let new: BTreeMap<String, Vec<Behaviour>> = comparison
            .steps
            .iter()
            .map(|s| (s.step.clone(), s.new.clone()))
            .collect();
        store.record(run, &new)?;
        self.metrics.runs_recorded.inc();
        Ok((snapshot, comparison))
    }

    /// Sends the waiting runs, oldest first; false when the store did not take them all.
    fn send_pending(&mut self) -> bool {
        let files = match self.pending.files() {
            Ok(files) => files,
            Err(e) => {
                self.failed("listing pending runs", e);
                return false;
            }
        };
        for file in files {
            let run = match Pending::read(&file) {
                Ok(run) => run,
                Err(e) => {
                    // Set aside, not retried forever.
                    log::error!("baseline: {e:#}; moved aside");
                    let _ = std::fs::rename(&file, file.with_extension("unreadable"));
                    continue;
                }
            };
            match self.record(&run) {
                Ok((snapshot, comparison)) => {
                    let _ = std::fs::remove_file(&file);
                    log::info!(
                        "baseline: the pending run {} of {} is recorded",
                        run.run,
                        run.job
                    );
                    self.keep_copy(snapshot.with_run(&run, &comparison.new_by_step(&run)));
                }
                Err(e) => {
                    self.failed("sending a pending run", e);
                    self.metrics.pending.set(self.pending.count() as i64);
                    return false;
                }
            }
        }
        self.metrics.pending.set(self.pending.count() as i64);
        true
    }

    fn keep_copy(&mut self, snapshot: Snapshot) {
        if self.copies.len() >= MAX_COPIES && !self.copies.contains_key(&snapshot.job) {
            if let Some(any) = self.copies.keys().next().cloned() {
                self.copies.remove(&any);
            }
        }
        self.copies.insert(snapshot.job.clone(), snapshot);
    }

    fn handle(&mut self, request: Request) {
        let Request { run, record, reply } = request;
        // Older runs first: a run recorded before the pending ones would be compared with a
        // baseline that lacks them.
        if record && self.pending.count() > 0 {
            self.send_pending();
        }
        let answer = if record && self.pending.count() == 0 {
            match self.record(&run) {
                Ok((snapshot, comparison)) => {
                    self.keep_copy(snapshot.with_run(&run, &comparison.new_by_step(&run)));
                    (
                        Some(comparison),
                        ComparedWith::Store,
                        Recording::Recorded,
                        None,
                    )
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    self.failed("recording a run", e);
                    self.keep_pending(&run, why)
                }
            }
        } else if record {
            self.keep_pending(&run, "older runs are still waiting for the store".into())
        } else {
            let thresholds = self.options.thresholds;
            let read = self.store().map(|s| s.snapshot(&run.job));
            let (snapshot, from) = match read {
                Some(Ok(s)) => (Some(s), ComparedWith::Store),
                Some(Err(e)) => {
                    self.failed("reading a baseline", e);
                    (self.copies.get(&run.job).cloned(), ComparedWith::Copy)
                }
                None => (self.copies.get(&run.job).cloned(), ComparedWith::Copy),
            };
            match snapshot {
                Some(s) => (
                    Some(compare(&s, &run, &thresholds)),
                    from,
                    Recording::NotRecorded,
                    Some("the job's identity was not declared by the runner's job hook (nor named by the configuration): it is compared with its baseline, not recorded into it".into()),
                ),
                None => (None, ComparedWith::Nothing, Recording::NotRecorded, None),
            }
        };
        let _ = reply.try_send(answer);
    }

    /// The store did not take the run: it waits on disk, and is compared with the agent's copy.
    fn keep_pending(
        &mut self,
        run: &RunRecord,
        why: String,
    ) -> (Option<Comparison>, ComparedWith, Recording, Option<String>) {
        let thresholds = self.options.thresholds;
        let kept = self.pending.keep(run);
        let mut note = format!(
            "the baseline store did not take this run ({why}): its record waits in {} and is sent when the store answers",
            self.pending.dir().display()
        );
        let recording = match kept {
            Ok(dropped) => {
                self.metrics.runs_lost.inc_by(dropped);
                Recording::Pending
            }
            Err(e) => {
                note = format!("the baseline store did not take this run ({why}) and it could not be kept on disk ({e:#}): it is lost to the baseline");
                self.metrics.runs_lost.inc();
                Recording::NotRecorded
            }
        };
        self.metrics.pending.set(self.pending.count() as i64);
        let copy = self.copies.get(&run.job).cloned();
        match copy {
            Some(copy) => {
                let comparison = compare(&copy, run, &thresholds);
                self.keep_copy(copy.with_run(run, &comparison.new_by_step(run)));
                (Some(comparison), ComparedWith::Copy, recording, Some(note))
            }
            None => (None, ComparedWith::Nothing, recording, Some(note)),
        }
    }
}
