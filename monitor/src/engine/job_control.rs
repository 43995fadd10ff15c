//! Who may declare, re-declare and end a job over the control socket. A job's own code must
//! never end, re-anchor or re-open its monitoring: the job's findings would stop, or its report
//! would say "complete, no findings" while it went on. Decided here, from the events alone (so
//! replay decides the same), and refused attempts by a job's process are findings.
//!
//! - A job ends (`job_end`) only at the request of root from outside every live job, or of the
//!   job runner's own processes: descendants of the job's anchor with no step between them and
//!   the anchor (the runner's hooks; for a job declared by hand, the monitor run by the anchor
//!   shell itself). A step's processes never are: the runner starts every step with its
//!   `GITHUB_ACTION`, and what a step starts inherits that.
//! - A job is declared (`job_start`) at an anchor that is not PID 1, a reaper, the runner's
//!   listener, a process of another user, a member of a live job, or the anchor of another live
//!   job; an ended job is never re-opened; a live job is re-declared only by those who may end it.

use serde_json::json;

use super::{
    attribution::REAPERS,
    emit::{Place, Raw, Trigger},
    Engine,
};
use crate::{
    ci::identity_from_env,
    event::{Detail, Event},
    finding::{Finding, RuleId},
    process_tree::ProcessKey,
};

/// Processes that are never a job's anchor: the runner's listener serves every job.
const NEVER_ANCHORS: &[&str] = &["Runner.Listener"];

impl Engine {
    /// Whether the control request this event records is allowed; `Err` says why not.
    pub fn job_control_verdict(&self, e: &Event) -> Result<(), String> {
        match &e.detail {
            Detail::JobStart {
                job,
                requested_by_pid,
                requested_by_uid,
                requested_by_start_ticks,
                ..
            } => {
                let requester = ProcessKey {
                    tgid: *requested_by_pid,
                    start_ticks: *requested_by_start_ticks,
                };
                let anchor = e.process.pid;
                if anchor <= 1 {
                    return Err(format!("process {anchor} (init) cannot anchor a job"));
                }
                let comm = e.process.comm.as_str();
                if REAPERS
                    .iter()
                    .chain(NEVER_ANCHORS)
                    .any(|r| comm.starts_with(r))
                {
                    return Err(format!(
                        "process {anchor} ({comm}) serves every job and cannot anchor one"
                    ));
                }
                if *requested_by_uid != 0 && e.process.uid != *requested_by_uid {
                    return Err(format!(
                        "process {anchor} belongs to another user (uid {})",
                        e.process.uid
                    ));
                }
                let anchor_key = ProcessKey {
                    tgid: e.process.pid,
                    start_ticks: e.process.start_ticks,
                };
                let existing = self.job_by_key.get(&job.key).copied();
                if existing.is_none() && self.forgotten_keys.contains(&job.key) {
                    return Err(format!(
                        "job {} has ended; an ended job is never re-opened",
                        job.key
                    ));
                }
                if let Some(j) = existing {
                    if self.jobs[j].ended_ns.is_some() {
                        return Err(format!(
                            "job {} has ended; an ended job is never re-opened",
                            job.key
                        ));
                    }
                }
                if let Some(member) = self.procs.get(&anchor_key) {
                    if self.is_live(member.job) && Some(member.job) != existing {
                        return Err(format!(
                            "process {anchor} belongs to the running job {}",
                            self.jobs[member.job].identity.key
                        ));
                    }
                }
                if let Some(&other) = self.anchors.get(&anchor_key) {
                    if self.is_live(other) && Some(other) != existing {
                        return Err(format!(
                            "process {anchor} anchors the running job {}",
                            self.jobs[other].identity.key
                        ));
                    }
                }
                match existing {
                    // Re-declaring a running job moves its anchor: only who may end it may.
                    Some(j) => self.may_control(j, requester, *requested_by_uid),
                    // A new job: its requester must not be a running job's process (a step
                    // declaring a decoy job around itself or its runner).
                    None => match self.procs.get(&requester) {
                        Some(p) if self.is_live(p.job) => Err(format!(
                            "the caller belongs to the running job {}",
                            self.jobs[p.job].identity.key
                        )),
                        // A process an ended job left behind: declaring jobs from it would let
                        // a job fill its user's bound below and refuse the next real job.
                        Some(p) if !p.runner_own => Err(format!(
                            "the caller is a process the ended job {} left behind",
                            self.jobs[p.job].identity.key
                        )),
                        _ if *requested_by_uid != 0
                            && self
                                .jobs
                                .iter()
                                .filter(|j| {
                                    j.declared_by == Some(*requested_by_uid)
                                        && j.ended_ns.is_none()
                                })
                                .count()
                                >= super::MAX_DECLARED_JOBS_PER_UID =>
                        {
                            Err(format!(
                                "uid {requested_by_uid} already has {} running jobs declared; end one first",
                                super::MAX_DECLARED_JOBS_PER_UID
                            ))
                        }
                        _ => Ok(()),
                    },
                }
            }
            Detail::JobEnd { job, .. } => {
                let Some(&j) = self.job_by_key.get(job) else {
                    return Ok(());
                };
                let requester = ProcessKey {
                    tgid: e.process.pid,
                    start_ticks: e.process.start_ticks,
                };
                self.may_control(j, requester, e.process.uid)
            }
            _ => Ok(()),
        }
    }

    /// A refused request from one of a job's processes is the job trying to silence its own
    /// monitoring: a finding against that job and step.
    pub(super) fn refused_job_control(&mut self, e: &Event, why: &str, out: &mut Vec<Finding>) {
        let (requester, what) = match &e.detail {
            Detail::JobStart {
                job,
                requested_by_pid,
                requested_by_start_ticks,
                ..
            } => (
                ProcessKey {
                    tgid: *requested_by_pid,
                    start_ticks: *requested_by_start_ticks,
                },
                format!(
                    "declare job {} anchored at process {}",
                    job.key, e.process.pid
                ),
            ),
            Detail::JobEnd { job, .. } => (
                ProcessKey {
                    tgid: e.process.pid,
                    start_ticks: e.process.start_ticks,
                },
                format!("end job {job}"),
            ),
            _ => return,
        };
        match self.refusals_logged.take(self.now_ns) {
            super::log_budget::Verdict::Write { suppressed_before } => {
                if suppressed_before > 0 {
                    log::warn!(
                        "{suppressed_before} more control requests were refused and not logged (at most {} lines a minute)",
                        super::log_budget::LINES_PER_WINDOW
                    );
                }
                log::warn!("control request refused: {what}: {why}");
            }
            super::log_budget::Verdict::Count => {}
        }
        let Some(p) = self.procs.get(&requester) else {
            return;
        };
        let place = Place {
            job: p.job,
            step: p.step,
            hook: p.hook,
        };
        let raw = Raw::new(
            RuleId::AgentTampering,
            format!("{} asked the monitor to {what}; refused: {why}", p.tool),
            format!(
                "control:{what}:{}:{}",
                requester.tgid, requester.start_ticks
            ),
        )
        .clause("a job may not end, re-declare or re-anchor its own monitoring")
        .evidence(vec![
            ("request", json!(e.detail.kind())),
            ("refused_because", json!(why)),
            ("requester_pid", json!(requester.tgid)),
        ]);
        let chain = vec![p.link.clone()];
        let trigger = Trigger {
            events: vec![e.seq],
            time: &e.time,
            ts_ns: e.ts_ns,
        };
        self.emit(out, raw, place, chain, trigger);
    }

    /// The running jobs' anchors and the roots of their steps (tgids), for the control
    /// socket's slots kept for the runner (`control::RunnerProcesses`).
    pub fn runner_processes(&self) -> crate::control::RunnerProcesses {
        let mut out = crate::control::RunnerProcesses::default();
        for (anchor, &job) in &self.anchors {
            if self.is_live(job) {
                out.anchors.insert(anchor.tgid);
                // The runner's own work outside steps (its hooks) is kept as a step too: not
                // one of the job's.
                out.step_roots.extend(
                    self.jobs[job]
                        .steps
                        .iter()
                        .filter(|s| s.identity.id != crate::ci::RUNNER_STEP_ID)
                        .map(|s| s.root.tgid),
                );
            }
        }
        // A sibling a step made under the Worker stops the walk as a step's root would.
        out.step_roots.extend(self.siblings.iter().map(|k| k.tgid));
        out
    }

    pub(super) fn is_live(&self, job: usize) -> bool {
        self.jobs[job].ended_ns.is_none()
    }

    /// Root from outside every live job, or the job's own hook.
    fn may_control(&self, job: usize, requester: ProcessKey, uid: u32) -> Result<(), String> {
        match self.procs.get(&requester) {
            Some(p) if p.job == job && p.runner_own => Ok(()),
            Some(p) if self.is_live(p.job) => Err(format!(
                "the caller is a process of the running job {} (step {}), not its runner's hook",
                self.jobs[p.job].identity.key,
                self.jobs[p.job]
                    .steps
                    .get(p.step)
                    .map(|s| s.identity.id.as_str())
                    .unwrap_or("?")
            )),
            _ if uid == 0 => Ok(()),
            _ => Err(format!(
                "only root or job {}'s own runner hook may change it",
                self.jobs[job].identity.key
            )),
        }
    }

    /// Whether a process of `job` that executes `e` stays one of the job runner's own: never
    /// when it runs a named step (the runner gives every step its `GITHUB_ACTION`); in a job
    /// declared by hand (`monitor job start`), whose anchor is the CI's own shell, only while
    /// it runs the monitor itself (`monitor job stop`).
    pub(super) fn stays_runner_own(&self, job: usize, e: &Event) -> bool {
        let Detail::Exec { env, .. } = &e.detail else {
            return true;
        };
        if identity_from_env(env).is_some_and(|(_, step)| step.id != crate::ci::RUNNER_STEP_ID) {
            return false;
        }
        if self.jobs[job].identity.provider != "explicit" {
            return true;
        }
        let exe = e.process.exe.as_deref().unwrap_or_default();
        match &self.config.agent_program {
            Some(agent) => exe == agent,
            None => exe.rsplit('/').next() == Some("monitor"),
        }
    }
}
