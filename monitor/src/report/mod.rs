//! Post-job forensic reports: what ran, what it read, where it connected, and why each finding
//! was raised. A [`Recorder`] follows the same events and attributions as the engine (live in
//! the agent, or from a recorded log for `monitor report`), bounded per job; [`Report`] is the
//! versioned JSON document (docs/report.md), rendered to Markdown and to one self-contained
//! HTML file.
//!
//! Everything a report holds comes from events and findings, which are redacted before they
//! exist (argv, URLs, kept environment values), so a report cannot carry more than they do.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::{
    ci::{JobIdentity, StepIdentity},
    engine::Attribution,
    event::{Access, Detail, Event, NameOp, Protocol},
    finding::Finding,
    profile::{Profile, PROFILE_VERSION},
    rules::lifecycle::Hook,
};

pub mod html;
mod late;
pub mod markdown;

/// Version of the report format; bump on any incompatible change.
pub const REPORT_SCHEMA_VERSION: u32 = 1;
/// Per-job bounds: past them, items are counted in `omitted`, not kept.
pub const MAX_PROCESSES: usize = 20_000;
pub const MAX_CONNECTIONS: usize = 10_000;
pub const MAX_FILE_ACCESSES: usize = 10_000;
pub const MAX_FINDINGS: usize = 5_000;
/// Jobs recorded at once; the oldest ended one is forgotten first.
pub const MAX_JOBS: usize = 256;

/// Events lost by the pipeline, by cause (totals at some moment, or a difference of two).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drops {
    pub kernel_ring_full: u64,
    pub agent_queue_full: u64,
    pub decode_error: u64,
    /// Records a kernel program could not build (a read it needed failed).
    #[serde(default)]
    pub probe_error: u64,
    /// Records the kernel refused to a flooding control group while the ring was
    /// three-quarters full (its fair share, so others' records kept their room).
    #[serde(default)]
    pub kernel_fair_share: u64,
}

impl Drops {
    pub fn since(self, earlier: Drops) -> Drops {
        Drops {
            kernel_ring_full: self
                .kernel_ring_full
                .saturating_sub(earlier.kernel_ring_full),
            agent_queue_full: self
                .agent_queue_full
                .saturating_sub(earlier.agent_queue_full),
            decode_error: self.decode_error.saturating_sub(earlier.decode_error),
            probe_error: self.probe_error.saturating_sub(earlier.probe_error),
            kernel_fair_share: self
                .kernel_fair_share
                .saturating_sub(earlier.kernel_fair_share),
        }
    }

    pub fn total(self) -> u64 {
        self.kernel_ring_full
            + self.agent_queue_full
            + self.decode_error
            + self.probe_error
            + self.kernel_fair_share
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub pid: u32,
    pub start_ticks: u64,
    /// The parent, when it is in the same step.
    pub parent_pid: Option<u32>,
    pub exe: Option<String>,
    pub argv: crate::event::Argv,
    pub started: String,
    pub started_ns: u64,
    pub ended: Option<String>,
    pub ended_ns: Option<u64>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The install hook it ran in (index into the step's `hooks`).
    pub hook: Option<usize>,
    /// The container it ran in (the runtime's full id; `containers` says what it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// A container the job's processes ran in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    /// Empty when the runtime never described it (its API was not reachable).
    pub name: String,
    pub image: String,
    /// The step it was linked to (the one running when it was created), by its id.
    pub step: String,
    pub first_seen: String,
    /// Processes of the job seen in it.
    pub processes: usize,
    /// What the runtime said of its privileges and mounts, when it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<crate::containers::ContainerMeta>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionRecord {
    pub time: String,
    pub pid: u32,
    pub exe: Option<String>,
    pub protocol: Protocol,
    pub address: std::net::IpAddr,
    pub port: u16,
    /// The name the address was resolved from, when known.
    pub domain: Option<String>,
    /// The server name its TLS hello asked for (SNI), when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// 0, or the negative errno.
    pub result: i32,
    /// False when a finding was raised for it.
    pub allowed: bool,
    pub findings: Vec<u64>,
    /// Further connects, identical to this one, that the record stands for (the event's
    /// `repeats`); `time` is the last one's.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repeats: u32,
    #[serde(skip)]
    seq: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileAccessRecord {
    pub time: String,
    pub pid: u32,
    pub exe: Option<String>,
    pub path: String,
    pub access: Access,
    /// For a name given without opening the file: rename, link or symlink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<NameOp>,
    pub findings: Vec<u64>,
    #[serde(skip)]
    seq: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookRecord {
    #[serde(flatten)]
    pub hook: Hook,
    pub allowed_by_profile: bool,
    pub first_pid: u32,
    pub time: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    pub step: StepIdentity,
    pub started: String,
    pub started_ns: u64,
    pub processes: Vec<ProcessRecord>,
    pub connections: Vec<ConnectionRecord>,
    pub file_accesses: Vec<FileAccessRecord>,
    pub hooks: Vec<HookRecord>,
    /// The zones (registrable domains) of the DNS names the step asked, whether or not it then
    /// connected (a question alone can carry data out); at most [`MAX_DNS_ZONES`].
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub dns_zones: std::collections::BTreeSet<String>,
}

/// DNS zones listed per step.
pub const MAX_DNS_ZONES: usize = 1_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Omitted {
    pub processes: u64,
    pub connections: u64,
    pub file_accesses: u64,
    pub findings: u64,
    /// Processes whose arguments were not kept (the job's argument memory was spent).
    #[serde(default)]
    pub arguments: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub steps: usize,
    pub processes: usize,
    pub connections: usize,
    pub connections_not_allowed: usize,
    pub file_accesses: usize,
    pub hooks: usize,
    pub findings: usize,
    /// Findings by severity name.
    pub findings_by_severity: BTreeMap<String, usize>,
}

/// The report of one job (docs/report.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    pub generated_at: String,
    pub job: JobIdentity,
    pub started: String,
    pub ended: Option<String>,
    pub duration_seconds: Option<f64>,
    /// False when events may be missing: losses during the job, bounds reached, or losses
    /// unknown (a report from a log, which does not record them).
    pub complete: bool,
    pub incomplete_because: Vec<String>,
    /// Events lost while the job ran; `None` when unknown.
    pub drops: Option<Drops>,
    /// Of those, the records of the job's own processes, by kind (the machine-wide `drops`
    /// include other jobs' and the host's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lost_by_job_processes: BTreeMap<String, u64>,
    pub omitted: Omitted,
    pub summary: Summary,
    pub steps: Vec<StepReport>,
    /// The containers its processes ran in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerRecord>,
    pub findings: Vec<Finding>,
    /// YAML to add to the profile for none of these findings to be raised again (review it:
    /// some findings should stay findings).
    pub profile_additions: Option<String>,
    /// A secret the agent makes for this report and writes into the step summary it returns:
    /// a summary block whose nonce is not the report's was not written by the agent (steps
    /// can write to `GITHUB_STEP_SUMMARY` too). Absent for reports rebuilt from logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary_nonce: Option<String>,
    /// Findings raised after the report was first written, by the job's processes that
    /// outlived its end; the report was written again with them (see `late.rs`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub late_findings: u64,
    /// The job's baseline across runs and what this run did that it had not seen (absent when
    /// the agent keeps no baseline, or for reports rebuilt from logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<crate::baseline::BaselineReport>,
}

impl Report {
    /// Adds the baseline's section and its `new-behaviour` findings (numbered already), and
    /// brings the summary up to date.
    pub fn add_baseline(&mut self, section: crate::baseline::BaselineReport, findings: &[Finding]) {
        for f in findings {
            if self.findings.len() >= MAX_FINDINGS {
                self.omitted.findings += 1;
            } else {
                self.findings.push(f.clone());
            }
        }
        self.summary.findings = self.findings.len();
        self.summary.findings_by_severity = severity_counts(&self.findings);
        self.baseline = Some(section);
    }
}

fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

/// A fresh summary nonce (128 random bits, hex).
pub fn new_summary_nonce() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

struct JobRecord {
    identity: JobIdentity,
    started: String,
    started_ns: u64,
    ended: Option<(String, u64)>,
    drops_at_start: Option<Drops>,
    steps: BTreeMap<usize, StepReport>,
    /// (pid, start_ticks) -> (step index, position in its processes).
    process_index: HashMap<(u32, u64), (usize, usize)>,
    /// Engine hook number -> (step index, position in its hooks).
    hook_index: HashMap<usize, (usize, usize)>,
    findings: Vec<Finding>,
    omitted: Omitted,
    /// Records its own processes lost, by kind (`Detail::Lost`).
    lost: BTreeMap<String, u64>,
    counts: (usize, usize, usize),
    /// Picked up by a (re)started agent: (when, earliest process start, ts).
    resumed: Option<(String, u64, u64)>,
    /// Containers its processes ran in, by id, in the order first seen.
    containers: Vec<ContainerRecord>,
    /// Memory its processes' arguments hold in the record (see `MAX_ARGV_BYTES`).
    argv_bytes: usize,
    /// Made when the job's record begins (its start), for its summary block.
    summary_nonce: Option<String>,
}

/// Memory a job's recorded arguments may hold: a storm of processes with long command lines
/// (4 KiB each, or thousands of one-letter arguments) would otherwise cost hundreds of MiB per
/// job. Past it a process keeps its program name and a count.
pub const MAX_ARGV_BYTES: usize = 32 << 20;

/// The arguments a job keeps of a process: all of them (shared with the process table) while
/// its budget lasts (`spent` of `MAX_ARGV_BYTES`), then the first and a count.
fn kept_argv(
    spent: &mut usize,
    omitted: &mut Omitted,
    argv: &crate::event::Argv,
) -> crate::event::Argv {
    let cost = crate::decode::argv_memory(argv);
    if *spent + cost <= MAX_ARGV_BYTES {
        *spent += cost;
        return argv.clone();
    }
    omitted.arguments += 1;
    let mut kept: Vec<String> = argv.iter().take(1).cloned().collect();
    if argv.len() > 1 {
        kept.push(format!(
            "[{} arguments not kept: the job's argument memory is spent]",
            argv.len() - 1
        ));
    }
    // Charged as a refund would give it back (`record_process`).
    *spent += crate::decode::argv_memory(&kept);
    kept.into()
}

/// Containers whose description is kept for reports at once.
const MAX_CONTAINERS_DESCRIBED: usize = 4_096;
/// Containers listed per job.
pub const MAX_CONTAINERS: usize = 1_000;

/// Records the event's process in its step (once; a later exec updates its program), or counts
/// it in `omitted` past the bound. `hook` is (step, position in its hooks).
fn record_process(
    job: &mut JobRecord,
    step_index: usize,
    e: &Event,
    started_ns: u64,
    hook: Option<(usize, usize)>,
) {
    let key = (e.process.pid, e.process.start_ticks);
    if let Some(&(s, i)) = job.process_index.get(&key) {
        let JobRecord {
            steps,
            argv_bytes,
            omitted,
            ..
        } = job;
        if let Some(p) = steps.get_mut(&s).and_then(|s| s.processes.get_mut(i)) {
            p.exe = e.process.exe.clone();
            if !std::sync::Arc::ptr_eq(&p.argv, &e.process.argv) {
                // Its program changed (a fork's child executing): what the old command line
                // was charged is given back.
                *argv_bytes = argv_bytes.saturating_sub(crate::decode::argv_memory(&p.argv));
                p.argv = kept_argv(argv_bytes, omitted, &e.process.argv);
            }
            p.hook = hook.filter(|(hs, _)| *hs == s).map(|(_, h)| h).or(p.hook);
        }
        return;
    }
    if job.counts.0 >= MAX_PROCESSES {
        job.omitted.processes += 1;
        return;
    }
    job.counts.0 += 1;
    // The parent, when the step already has it: the step's process tree.
    let parent = e.ancestry.first().and_then(|p| {
        job.process_index
            .get(&(p.pid, p.start_ticks))
            .filter(|(s, _)| *s == step_index)
            .map(|_| p.pid)
    });
    let JobRecord {
        steps,
        argv_bytes,
        omitted,
        ..
    } = job;
    let Some(step) = steps.get_mut(&step_index) else {
        return;
    };
    let argv = kept_argv(argv_bytes, omitted, &e.process.argv);
    step.processes.push(ProcessRecord {
        pid: e.process.pid,
        start_ticks: e.process.start_ticks,
        parent_pid: parent,
        exe: e.process.exe.clone(),
        argv,
        started: e.time.clone(),
        started_ns,
        ended: None,
        ended_ns: None,
        exit_code: None,
        signal: None,
        hook: hook.filter(|(hs, _)| *hs == step_index).map(|(_, h)| h),
        container: e.process.container.clone(),
    });
    job.process_index
        .insert(key, (step_index, step.processes.len() - 1));
}

/// Follows events and findings per job, bounded, until a report is asked for.
#[derive(Default)]
pub struct Recorder {
    jobs: HashMap<String, JobRecord>,
    /// What the container runtime said of each container, by id.
    described: HashMap<String, crate::containers::ContainerMeta>,
    /// Drop totals now (the live agent keeps this current; `None` from a log).
    pub current_drops: Option<Drops>,
    /// Jobs reported and forgotten, newest last: their later events make no new record, their
    /// later findings wait in `late` for their report to be written again.
    reported: std::collections::VecDeque<String>,
    reported_set: std::collections::HashSet<String>,
    late: BTreeMap<String, Vec<Finding>>,
    /// Whether each job gets a summary nonce at its start (the live agent; a rebuild from a
    /// log has no secret to give).
    pub nonces: bool,
}

/// Reported jobs remembered as such.
const MAX_REPORTED: usize = 4_096;

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one event the engine has judged, with the engine's attribution of it.
    pub fn observe(&mut self, e: &Event, attribution: Option<Attribution<'_>>) {
        if let Detail::Container {
            change, container, ..
        } = &e.detail
        {
            if *change == crate::event::ContainerChange::Removed {
                return;
            }
            if self.described.len() >= MAX_CONTAINERS_DESCRIBED {
                self.described.clear();
            }
            self.described
                .insert(container.id.clone(), container.clone());
            for job in self.jobs.values_mut() {
                for c in job.containers.iter_mut().filter(|c| c.id == container.id) {
                    c.name = container.name.clone();
                    c.image = container.image.clone();
                    c.settings = Some(container.clone());
                }
            }
            return;
        }
        let Some(a) = attribution else {
            if let Detail::JobEnd { job, .. } = &e.detail {
                if let Some(record) = self.jobs.get_mut(job) {
                    record.ended.get_or_insert((e.time.clone(), e.ts_ns));
                }
            }
            return;
        };
        if !self.jobs.contains_key(&a.job.key) {
            if self.reported_set.contains(&a.job.key) {
                return;
            }
            self.make_room();
            self.jobs.insert(
                a.job.key.clone(),
                JobRecord {
                    identity: a.job.clone(),
                    started: e.time.clone(),
                    started_ns: e.ts_ns,
                    ended: None,
                    drops_at_start: self.current_drops,
                    steps: BTreeMap::new(),
                    process_index: HashMap::new(),
                    hook_index: HashMap::new(),
                    findings: Vec::new(),
                    omitted: Omitted::default(),
                    lost: BTreeMap::new(),
                    counts: (0, 0, 0),
                    argv_bytes: 0,
                    resumed: None,
                    containers: Vec::new(),
                    summary_nonce: if self.nonces {
                        new_summary_nonce()
                    } else {
                        None
                    },
                },
            );
        }
        let job = self.jobs.get_mut(&a.job.key).expect("inserted");
        // Identity details (a workspace, a step's action) can arrive after the first event.
        job.identity = a.job.clone();
        let step = job.steps.entry(a.step_index).or_insert_with(|| StepReport {
            step: a.step.cloned().unwrap_or(StepIdentity {
                id: crate::ci::RUNNER_STEP_ID.into(),
                action: None,
            }),
            started: e.time.clone(),
            started_ns: e.ts_ns,
            processes: Vec::new(),
            connections: Vec::new(),
            file_accesses: Vec::new(),
            hooks: Vec::new(),
            dns_zones: Default::default(),
        });
        if let Some(s) = a.step {
            step.step = s.clone();
        }
        let hook = a.hook.map(|(number, hook, allowed)| {
            *job.hook_index.entry(number).or_insert_with(|| {
                step.hooks.push(HookRecord {
                    hook: hook.clone(),
                    allowed_by_profile: allowed,
                    first_pid: e.process.pid,
                    time: e.time.clone(),
                });
                (a.step_index, step.hooks.len() - 1)
            })
        });
        let key = (e.process.pid, e.process.start_ticks);
        if let (Some(id), Detail::Exec { .. } | Detail::Fork { .. }) =
            (e.process.container.as_deref(), &e.detail)
        {
            let new_process = !job.process_index.contains_key(&key);
            let known = job.containers.iter().position(|c| c.id == id);
            match known {
                Some(i) => job.containers[i].processes += usize::from(new_process),
                None if job.containers.len() < MAX_CONTAINERS => {
                    let meta = self.described.get(id);
                    job.containers.push(ContainerRecord {
                        id: id.to_string(),
                        name: meta.map(|m| m.name.clone()).unwrap_or_default(),
                        image: meta.map(|m| m.image.clone()).unwrap_or_default(),
                        step: a
                            .step
                            .map(|s| s.id.clone())
                            .unwrap_or_else(|| crate::ci::RUNNER_STEP_ID.into()),
                        first_seen: e.time.clone(),
                        processes: 1,
                        settings: meta.cloned(),
                    });
                }
                None => {}
            }
        }
        match &e.detail {
            // A job start's process is the job's anchor: for an explicit job, its first process.
            Detail::Exec { .. } | Detail::Fork { .. } | Detail::JobStart { .. } => {
                record_process(job, a.step_index, e, e.ts_ns, hook);
            }
            Detail::Container { .. } => {}
            Detail::Exit { code, signal, .. } => {
                if let Some(&(s, i)) = job.process_index.get(&key) {
                    if let Some(p) = job.steps.get_mut(&s).and_then(|s| s.processes.get_mut(i)) {
                        p.ended = Some(e.time.clone());
                        p.ended_ns = Some(e.ts_ns);
                        p.exit_code = *code;
                        p.signal = *signal;
                    }
                }
            }
            Detail::Connect {
                protocol,
                address,
                port,
                result,
                repeats,
                ..
            } => {
                if job.counts.1 >= MAX_CONNECTIONS {
                    // Every connect the record stands for is one left out.
                    job.omitted.connections += 1 + u64::from(*repeats);
                    return;
                }
                job.counts.1 += 1;
                step.connections.push(ConnectionRecord {
                    time: e.time.clone(),
                    pid: e.process.pid,
                    exe: e.process.exe.clone(),
                    protocol: *protocol,
                    address: *address,
                    port: *port,
                    domain: a.domain.map(str::to_string),
                    server_name: None,
                    result: *result,
                    allowed: true,
                    findings: Vec::new(),
                    repeats: *repeats,
                    seq: e.seq,
                });
            }
            Detail::Open { .. } | Detail::Name { .. } => {
                let (path, access, via) = match &e.detail {
                    Detail::Open { path, access, .. } => (path, *access, None),
                    Detail::Name { path, op, .. } => (path, Access::Write, Some(*op)),
                    _ => return,
                };
                if job.counts.2 >= MAX_FILE_ACCESSES {
                    job.omitted.file_accesses += 1;
                    return;
                }
                job.counts.2 += 1;
                step.file_accesses.push(FileAccessRecord {
                    time: e.time.clone(),
                    pid: e.process.pid,
                    exe: e.process.exe.clone(),
                    path: path.clone(),
                    access,
                    via,
                    findings: Vec::new(),
                    seq: e.seq,
                });
            }
            Detail::JobEnd { .. } => {
                job.ended.get_or_insert((e.time.clone(), e.ts_ns));
            }
            Detail::Tls {
                address,
                port,
                server_name,
            } => {
                if let Some(c) =
                    step.connections.iter_mut().rev().find(|c| {
                        c.pid == e.process.pid && c.address == *address && c.port == *port
                    })
                {
                    c.server_name.clone_from(server_name);
                }
            }
            Detail::Dns {
                question: Some(name),
                ..
            } => {
                if step.dns_zones.len() < MAX_DNS_ZONES {
                    if let Some(zone) = crate::baseline::behaviour::zone_of(name) {
                        step.dns_zones.insert(zone);
                    }
                }
            }
            Detail::Dns { .. } | Detail::Tamper { .. } | Detail::RuntimeClient { .. } => {}
            Detail::Lost { records } => {
                for (kind, n) in records {
                    *job.lost.entry(kind.clone()).or_default() += n;
                }
            }
            Detail::Resume {
                process_started_ns, ..
            } => {
                // Picked up by an agent that started while the job ran: before this, nothing
                // was seen.
                let gap_from = job
                    .resumed
                    .as_ref()
                    .map(|(_, from, _)| (*from).min(*process_started_ns))
                    .unwrap_or(*process_started_ns);
                job.resumed = Some((e.time.clone(), gap_from, e.ts_ns));
                record_process(job, a.step_index, e, *process_started_ns, None);
            }
        }
    }

    /// Records findings (of any job).
    pub fn on_findings(&mut self, findings: &[Finding]) {
        for f in findings {
            let Some(key) = f.job.as_ref().map(|j| &j.key) else {
                continue;
            };
            let Some(job) = self.jobs.get_mut(key) else {
                if self.reported_set.contains(key) {
                    let late = self.late.entry(key.clone()).or_default();
                    if late.len() < MAX_FINDINGS {
                        late.push(f.clone());
                    }
                }
                continue;
            };
            if job.findings.len() >= MAX_FINDINGS {
                job.omitted.findings += 1;
            } else {
                job.findings.push(f.clone());
            }
        }
    }

    /// Marks a job ended (its anchor exited) when no `job_end` event said so.
    pub fn job_ended(&mut self, key: &str, time: String, ts_ns: u64) {
        if let Some(job) = self.jobs.get_mut(key) {
            job.ended.get_or_insert((time, ts_ns));
        }
    }

    /// Findings the engine counted but did not write for this job (its flood bound).
    pub fn findings_not_written(&mut self, key: &str, count: u64) {
        if let Some(job) = self.jobs.get_mut(key) {
            job.omitted.findings += count;
        }
    }

    /// Keys of the jobs recorded, oldest first.
    pub fn job_keys(&self) -> Vec<String> {
        let mut keys: Vec<(&u64, &String)> =
            self.jobs.iter().map(|(k, j)| (&j.started_ns, k)).collect();
        keys.sort();
        keys.into_iter().map(|(_, k)| k.clone()).collect()
    }

    /// Forgets a job whose report was written; its later findings are kept for `take_late`.
    pub fn forget(&mut self, key: &str) {
        if self.jobs.remove(key).is_some() {
            if self.reported.len() >= MAX_REPORTED {
                if let Some(oldest) = self.reported.pop_front() {
                    self.reported_set.remove(&oldest);
                }
            }
            self.reported.push_back(key.to_string());
            self.reported_set.insert(key.to_string());
        }
    }

    /// Findings of reported jobs raised since the last call, by job key.
    pub fn take_late(&mut self) -> BTreeMap<String, Vec<Finding>> {
        std::mem::take(&mut self.late)
    }

    fn make_room(&mut self) {
        if self.jobs.len() < MAX_JOBS {
            return;
        }
        let oldest = self
            .jobs
            .iter()
            .min_by_key(|(_, j)| (j.ended.is_none(), j.started_ns))
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            self.jobs.remove(&k);
        }
    }

    /// The report of a job so far, judged against `profile` for the suggested additions.
    pub fn report(&self, key: &str, generated_at: String) -> Option<Report> {
        let job = self.jobs.get(key)?;
        let mut by_seq: HashMap<u64, Vec<u64>> = HashMap::new();
        for f in &job.findings {
            for seq in &f.events {
                by_seq.entry(*seq).or_default().push(f.id);
            }
        }
        let mut steps: Vec<StepReport> = job.steps.values().cloned().collect();
        for step in &mut steps {
            for c in &mut step.connections {
                c.findings = by_seq.get(&c.seq).cloned().unwrap_or_default();
            }
            // A destination is reported once per step: later connections to it are just as
            // unallowed as the first, and point at the same finding.
            let mut denied: HashMap<(std::net::IpAddr, u16), Vec<u64>> = HashMap::new();
            for c in &step.connections {
                if !c.findings.is_empty() {
                    denied
                        .entry((c.address, c.port))
                        .or_default()
                        .extend(&c.findings);
                }
            }
            for c in &mut step.connections {
                if let Some(ids) = denied.get(&(c.address, c.port)) {
                    c.allowed = false;
                    if c.findings.is_empty() {
                        c.findings = ids.clone();
                    }
                } else {
                    c.allowed = true;
                }
            }
            for f in &mut step.file_accesses {
                f.findings = by_seq.get(&f.seq).cloned().unwrap_or_default();
            }
        }
        steps.sort_by_key(|s| s.started_ns);
        let findings_by_severity = severity_counts(&job.findings);
        let summary = Summary {
            steps: steps.len(),
            processes: steps.iter().map(|s| s.processes.len()).sum(),
            // Connects made, a record's repeats with it.
            connections: steps
                .iter()
                .flat_map(|s| &s.connections)
                .map(|c| 1 + c.repeats as usize)
                .sum(),
            connections_not_allowed: steps
                .iter()
                .flat_map(|s| &s.connections)
                .filter(|c| !c.allowed)
                .map(|c| 1 + c.repeats as usize)
                .sum(),
            file_accesses: steps.iter().map(|s| s.file_accesses.len()).sum(),
            hooks: steps.iter().map(|s| s.hooks.len()).sum(),
            findings: job.findings.len(),
            findings_by_severity,
        };
        let drops = match (self.current_drops, job.drops_at_start) {
            (Some(now), Some(start)) => Some(now.since(start)),
            _ => None,
        };
        let mut incomplete = Vec::new();
        match drops {
            None => incomplete.push(
                "event losses during the job are unknown (rebuilt from an event log)".to_string(),
            ),
            Some(d) if d.total() > 0 => incomplete.push(format!(
                "{} events were lost while the job ran ({} kernel ring full, {} agent queue full, {} undecodable, {} not built by a probe)",
                d.total(),
                d.kernel_ring_full,
                d.agent_queue_full,
                d.decode_error,
                d.probe_error
            )),
            Some(_) => {}
        }
        let own: u64 = job.lost.values().sum();
        if own > 0 {
            let kinds: Vec<String> = job.lost.iter().map(|(k, n)| format!("{k} {n}")).collect();
            incomplete.push(format!(
                "{own} records of the job's own processes were lost ({})",
                kinds.join(", ")
            ));
        }
        let o = &job.omitted;
        if o.processes + o.connections + o.file_accesses + o.findings + o.arguments > 0 {
            incomplete.push(format!(
                "bounds reached: {} processes, {} connections, {} file accesses, {} findings not kept; {} processes' arguments not kept",
                o.processes, o.connections, o.file_accesses, o.findings, o.arguments
            ));
        }
        if job.ended.is_none() {
            incomplete.push("the job had not ended when this report was made".into());
        }
        // The agent was killed during the job: the next agent found the signal in the kernel's
        // tamper log and judged it; say who did it here too.
        for f in job.findings.iter().filter(|f| {
            f.rule == crate::finding::RuleId::AgentTampering
                && f.evidence.get("syscall").and_then(|v| v.as_str()) == Some("signal_logged")
        }) {
            let sender = f.process_chain.first();
            incomplete.push(format!(
                "the agent (pid {}) was sent signal {} by pid {} ({}) of step {} and did not report it; the agent that started after it found it in the kernel's tamper log",
                f.evidence.get("target_pid").cloned().unwrap_or_default(),
                f.evidence.get("argument").cloned().unwrap_or_default(),
                sender.map(|l| l.pid).unwrap_or_default(),
                sender.map(|l| l.comm.as_str()).unwrap_or("?"),
                f.step.as_ref().map(|s| s.id.as_str()).unwrap_or("?"),
            ));
        }
        if let Some((at, from, ts)) = &job.resumed {
            incomplete.push(format!(
                "monitoring began at {at}, {:.1} s after the job's oldest running process started (the agent started or restarted mid-job): what ran and exited before is missing",
                ts.saturating_sub(*from) as f64 / 1e9
            ));
        }
        Some(Report {
            schema: REPORT_SCHEMA_VERSION,
            generated_at,
            job: job.identity.clone(),
            started: job.started.clone(),
            ended: job.ended.as_ref().map(|(t, _)| t.clone()),
            duration_seconds: job
                .ended
                .as_ref()
                .map(|(_, ns)| ns.saturating_sub(job.started_ns) as f64 / 1e9),
            complete: incomplete.is_empty(),
            incomplete_because: incomplete,
            drops,
            lost_by_job_processes: job.lost.clone(),
            omitted: job.omitted.clone(),
            summary,
            steps,
            containers: job.containers.clone(),
            findings: job.findings.clone(),
            profile_additions: profile_additions(&job.findings),
            summary_nonce: job.summary_nonce.clone(),
            late_findings: 0,
            baseline: None,
        })
    }
}

/// Findings by severity name.
fn severity_counts(findings: &[Finding]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for f in findings {
        *counts.entry(f.severity.name().to_string()).or_insert(0) += 1;
    }
    counts
}

/// The profile YAML that would allow every allowable finding, if any is.
fn profile_additions(findings: &[Finding]) -> Option<String> {
    let mut additions = Profile {
        version: PROFILE_VERSION,
        ..Default::default()
    };
    let mut any = false;
    for a in findings.iter().filter_map(|f| f.allowance.as_ref()) {
        additions.allow(a);
        any = true;
    }
    any.then(|| additions.to_yaml())
}

/// A file name for a job's reports: its key with anything but `[A-Za-z0-9._-]` replaced (for a
/// person to recognise), then a hash of the whole key, so two keys never share a name (a job
/// cannot choose a key whose benign report replaces another job's).
pub fn file_stem(key: &str) -> String {
    use sha2::Digest as _;
    let readable: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(150)
        .collect();
    let digest = sha2::Sha256::digest(key.as_bytes());
    let hash: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
    format!("{readable}-{hash}")
}

/// Writes `report` as `<dir>/<stem>.{json,md,html}`, owner-only; returns the paths.
pub fn write_all(
    dir: &std::path::Path,
    report: &Report,
) -> anyhow::Result<Vec<std::path::PathBuf>> {
    use anyhow::Context as _;
    use std::{io::Write as _, os::unix::fs::DirBuilderExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let stem = file_stem(&report.job.key);
    let mut written = Vec::new();
    for (ext, text) in [
        ("json", serde_json::to_string_pretty(report)?),
        ("md", markdown::render(report)),
        ("html", html::render(report)),
    ] {
        // Written aside and renamed into place: a reader never sees half a report.
        let path = dir.join(format!("{stem}.{ext}"));
        let partial = dir.join(format!(".{stem}.{ext}.partial"));
        let _ = std::fs::remove_file(&partial);
        let mut file = crate::output::open_private(&partial)?;
        file.write_all(text.as_bytes())
            .with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, &path)
            .with_context(|| format!("moving {} into place", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Wall-clock now, RFC 3339.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::engine::tests::{empty_profile, npm_stealer, Sim};
    use crate::judge::Judge;

    /// The npm stealer scenario, replayed through a Judge as `monitor report` does.
    pub(super) fn stealer_report(edit: impl FnOnce(&mut Vec<Event>)) -> Report {
        let mut sim = Sim::new(empty_profile());
        npm_stealer(&mut sim);
        let mut events = sim.events.clone();
        edit(&mut events);
        let mut judge = Judge::new(crate::engine::Engine::new(
            empty_profile(),
            Default::default(),
        ));
        judge.recorder.current_drops = Some(Drops::default());
        for e in &events {
            judge.on_event(e);
        }
        judge.tick(u64::MAX);
        let key = judge.recorder.job_keys().pop().expect("one job");
        judge.recorder.report(&key, "now".into()).unwrap()
    }

    #[test]
    fn arguments_are_kept_within_the_jobs_budget_then_counted() {
        let (mut spent, mut omitted) = (0, Omitted::default());
        let long: crate::event::Argv = vec!["x".repeat(1 << 20); 4].into();
        let mut kept = Vec::new();
        for _ in 0..10 {
            kept.push(kept_argv(&mut spent, &mut omitted, &long));
        }
        // Shared, not copied, while the budget lasts.
        assert!(std::sync::Arc::ptr_eq(&kept[0], &long));
        assert!(spent <= MAX_ARGV_BYTES + 1024, "{spent}");
        // Each costs a little over 4 MiB: seven fit in 32 MiB.
        assert_eq!(omitted.arguments, 3);
        assert_eq!(kept[9].len(), 2);
        assert!(
            kept[9][1].contains("3 arguments not kept"),
            "{:?}",
            kept[9][1]
        );
    }

    /// The baseline's view of the stealer's job: its install hook, the token it read and by
    /// what, where it sent it and the zone it asked, all in the step they happened in.
    #[test]
    fn a_reports_run_record_has_the_steps_behaviours_generalised() {
        use crate::baseline::behaviour::{run_record, BehaviourKind};
        // The hook's process also asks a name in a zone it never connects to.
        let r = stealer_report(|events| {
            let at = events
                .iter()
                .position(|e| matches!(e.detail, Detail::Connect { .. }))
                .expect("the stealer connects");
            let mut question = events[at].clone();
            question.detail = Detail::Dns {
                transport: crate::event::Transport::Udp,
                fd: 3,
                question: Some("bm9wZQ.collector.example.net".into()),
                question_type: Some("TXT".into()),
                rcode: "No Error".into(),
                answers: Vec::new(),
                truncated: false,
                sent: true,
                forged: false,
            };
            events.insert(at, question);
        });
        let record = run_record(&r, None);
        assert_eq!(record.job, crate::baseline::behaviour::baseline_key(&r.job));
        let step = &record.steps["__run"];
        let items = |kind: BehaviourKind| -> Vec<&str> {
            step.iter()
                .filter(|b| b.kind == kind)
                .map(|b| b.item.as_str())
                .collect()
        };
        assert_eq!(items(BehaviourKind::DnsZone), ["example.net"]);
        assert_eq!(
            items(BehaviourKind::InstallHook),
            ["npm evil-pkg postinstall"]
        );
        assert!(
            items(BehaviourKind::CredentialAccess)
                .iter()
                .any(|i| i.starts_with("~/.npmrc by ")),
            "{step:#?}"
        );
        assert!(!items(BehaviourKind::Destination).is_empty(), "{step:#?}");
        // The hook's programs say so; the step's own do not.
        let programs = items(BehaviourKind::Executable);
        assert!(
            programs.contains(&"/usr/bin/node (in npm evil-pkg postinstall)"),
            "{programs:?}"
        );
        assert!(
            programs.iter().any(|p| !p.contains(" (in ")),
            "{programs:?}"
        );
        // Nothing of the arguments (the token was on no command line, but the URL path was).
        assert!(step.iter().all(|b| !b.item.contains("npm_")), "{step:#?}");
    }

    #[test]
    fn a_connect_record_standing_for_repeats_counts_them_in_the_summary() {
        let plain = stealer_report(|_| {});
        let r = stealer_report(|events| {
            let connect = events
                .iter_mut()
                .find(|e| matches!(e.detail, Detail::Connect { .. }))
                .expect("the stealer connects");
            if let Detail::Connect { repeats, .. } = &mut connect.detail {
                *repeats = 4;
            }
        });
        let step = r.steps.iter().find(|s| s.step.id == "__run").unwrap();
        assert_eq!(step.connections.len(), 2, "still two records");
        assert_eq!(step.connections[0].repeats, 4);
        assert_eq!(r.summary.connections, plain.summary.connections + 4);
        assert_eq!(
            r.summary.connections_not_allowed,
            plain.summary.connections_not_allowed + 4
        );
        let json = serde_json::to_value(&step.connections).unwrap();
        assert_eq!(json[0]["repeats"], 4);
        assert!(json[1].get("repeats").is_none(), "{json:#}");
        // The page's table says how many connects the row stands for.
        assert!(html::render(&r).contains(" \u{00d7}5"), "the row shows x5");
        assert!(!html::render(&plain).contains('\u{00d7}'));
    }

    #[test]
    fn report_links_connections_and_reads_to_their_findings() {
        let r = stealer_report(|_| {});
        assert_eq!(r.job.name, "build");
        assert!(r.ended.is_some(), "the Worker exited");
        assert!(r.complete, "{:?}", r.incomplete_because);
        let step = r.steps.iter().find(|s| s.step.id == "__run").unwrap();
        assert_eq!(step.hooks.len(), 1);
        assert_eq!(step.hooks[0].hook.package, "evil-pkg");
        let hooked: Vec<_> = step
            .processes
            .iter()
            .filter(|p| p.hook.is_some())
            .map(|p| p.pid)
            .collect();
        assert_eq!(hooked, vec![320, 330], "the hook's processes");
        assert_eq!(step.connections.len(), 2);
        assert!(step.connections.iter().all(|c| !c.allowed));
        let reads: Vec<_> = step
            .file_accesses
            .iter()
            .map(|f| (f.pid, f.findings.len()))
            .collect();
        assert_eq!(
            reads,
            vec![(310, 0), (330, 1)],
            "npm's own read has no finding, the hook's has"
        );
        let tree_parent = step
            .processes
            .iter()
            .find(|p| p.pid == 330)
            .unwrap()
            .parent_pid;
        assert_eq!(tree_parent, Some(320));
        // The read, the connection, and the install code that made them.
        assert_eq!(r.summary.findings_by_severity.get("critical"), Some(&3));
        assert!(r.profile_additions.as_deref().unwrap().contains("evil-pkg"));
    }

    #[test]
    fn lost_events_make_a_report_incomplete() {
        let mut sim = Sim::new(empty_profile());
        npm_stealer(&mut sim);
        let mut judge = Judge::new(crate::engine::Engine::new(
            empty_profile(),
            Default::default(),
        ));
        judge.recorder.current_drops = Some(Drops::default());
        for e in &sim.events {
            judge.recorder.current_drops = Some(Drops {
                kernel_ring_full: e.seq / 10,
                ..Default::default()
            });
            judge.on_event(e);
        }
        let key = judge.recorder.job_keys().pop().unwrap();
        let r = judge.recorder.report(&key, "now".into()).unwrap();
        assert!(!r.complete);
        assert!(r.drops.unwrap().kernel_ring_full > 0);
        assert!(
            r.incomplete_because[0].contains("lost"),
            "{:?}",
            r.incomplete_because
        );
    }

    #[test]
    fn hostile_text_is_escaped_in_markdown_and_html() {
        let r = stealer_report(|events| {
            for e in events.iter_mut() {
                if e.process.pid == 330 {
                    e.process.argv = vec![
                        "node".into(),
                        "<script>alert(1)</script>|x](http://evil)".into(),
                    ]
                    .into();
                }
            }
        });
        let html = html::render(&r);
        assert!(!html.contains("<script>"), "argv must be escaped in HTML");
        assert!(html.contains("&lt;script&gt;"));
        assert!(
            html.contains("default-src 'none'"),
            "the page forbids loading anything"
        );
        assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
        let md = markdown::render(&r);
        assert!(md.len() < markdown::MAX_BYTES);
        assert!(md.contains("critical"));
        assert!(
            !md.contains("](http://evil)") || md.contains("`"),
            "untrusted text is code, never a link: {md}"
        );
    }

    /// What the kernel did is on the page next to the finding (a killed step otherwise just
    /// failed), in the Markdown summary and in the HTML report alike.
    #[test]
    fn responses_are_shown_in_markdown_and_html() {
        let mut r = stealer_report(|_| {});
        assert!(!r.findings.is_empty());
        assert!(!html::render(&r).contains("Response: "));
        r.findings[0].response = Some(crate::event::KernelResponse::Killed);
        let html = html::render(&r);
        assert!(html.contains("Response: <strong>killed</strong>"), "{html}");
        assert!(html.contains("before the call returned"));
        assert!(markdown::render(&r).contains("**killed**"));
        r.findings[0].response = Some(crate::event::KernelResponse::WouldKill);
        assert!(html::render(&r).contains("Response: <strong>would kill</strong>"));
    }

    /// Two jobs whose keys sanitise to the same text keep a report each.
    #[test]
    fn colliding_job_keys_keep_both_reports() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = stealer_report(|_| {});
        first.job.key = "explicit/a/b".into();
        let mut second = first.clone();
        second.job.key = "explicit/a_b".into();
        second.findings.clear();
        assert_eq!(
            file_stem(&first.job.key).split('-').next(),
            file_stem(&second.job.key).split('-').next(),
            "the readable parts collide"
        );
        let a = write_all(dir.path(), &first).unwrap();
        let b = write_all(dir.path(), &second).unwrap();
        assert_ne!(a[0], b[0]);
        let kept: Report = serde_json::from_str(&std::fs::read_to_string(&a[0]).unwrap()).unwrap();
        assert_eq!(kept.job.key, "explicit/a/b");
        assert!(
            !kept.findings.is_empty(),
            "the report with the finding survives"
        );
    }
}
