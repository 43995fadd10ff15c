//! The judging step of the pipeline: each enriched event goes through the engine (findings) and
//! the report recorder (what each job did), with the attribution the engine gave it.

use crate::{
    engine::{EndedJob, Engine},
    event::Event,
    finding::Finding,
    report::Recorder,
};

/// The engine and a recorder fed the same events: what the live agent and `monitor report`
/// both run, so a report rebuilt from a log matches the one written at the job's end.
pub struct Judge {
    pub engine: Engine,
    pub recorder: Recorder,
}

impl Judge {
    pub fn new(engine: Engine) -> Self {
        Judge {
            engine,
            recorder: Recorder::new(),
        }
    }

    /// Judges one event; returns its findings and the jobs it ended.
    pub fn on_event(&mut self, e: &Event) -> (Vec<Finding>, Vec<EndedJob>) {
        let findings = self.engine.on_event(e);
        self.recorder.observe(e, self.engine.attribution(e));
        self.recorder.on_findings(&findings);
        let ended = self.take_ended(&e.time);
        (findings, ended)
    }

    /// The jobs that ended since the last call (`time`: when, as reports write it), told to
    /// the recorder.
    pub fn take_ended(&mut self, time: &str) -> Vec<EndedJob> {
        let ended = self.engine.take_ended_jobs();
        for job in &ended {
            self.recorder
                .job_ended(&job.identity.key, time.to_string(), job.ended_ns);
            self.recorder
                .findings_not_written(&job.identity.key, job.findings_suppressed);
        }
        ended
    }

    /// Lets time pass (pending checks such as processes outliving their step).
    pub fn tick(&mut self, now_ns: u64) -> Vec<Finding> {
        let findings = self.engine.tick(now_ns);
        self.recorder.on_findings(&findings);
        findings
    }
}
