//! Containers: which job and step a container's processes belong to, and containers whose
//! settings hand a job the host.
//!
//! A container's processes descend from the runtime's shim, not from the step that asked for
//! them, so lineage cannot place them. A container is linked, when the runtime says it was
//! created (or when its first process is seen, whichever is first), to the one job then running
//! and that job's current step: a runner runs one job at a time. With several jobs running at
//! once the creator cannot be told apart this way, and the container is a job of its own
//! (`container:<id>`), judged by the default profile and reported as such: never nobody's.
//! Inside a linked container, a process whose environment names a step of the same job (a
//! `container:` job's steps, which the runner starts with `docker exec -e GITHUB_...`) starts
//! that step, as on the host.

use serde_json::json;

use super::{
    emit::{Place, Raw, Trigger},
    Engine, Step,
};
use crate::{
    ci::{JobIdentity, StepIdentity},
    containers::ContainerMeta,
    event::{ContainerChange, Event},
    finding::{Finding, RuleId},
    profile::Allowance,
    rules::containers::escape_risks,
};

/// Containers remembered at once; past it the removed ones go first, then the oldest.
pub(super) const MAX_CONTAINERS: usize = 4_096;

pub(super) struct ContainerState {
    pub meta: ContainerMeta,
    /// (job, step) its processes belong to.
    pub link: Option<(usize, usize)>,
    /// The runtime has described it (not only its id, from a process's cgroup).
    pub described: bool,
    /// It was created by the runner itself (while none of the job's own code ran): the
    /// runner's job and service containers, set up as the workflow file says.
    pub by_runner: bool,
    pub removed: bool,
    /// Its settings have been judged.
    pub judged: bool,
    pub seen_ns: u64,
}

impl Engine {
    pub(super) fn on_container(
        &mut self,
        e: &Event,
        change: ContainerChange,
        meta: &ContainerMeta,
        out: &mut Vec<Finding>,
    ) {
        match change {
            ContainerChange::Removed => {
                let Some(state) = self.containers.get_mut(&meta.id) else {
                    return;
                };
                state.removed = true;
                // A container of its own ends with its container: its report is written.
                if let Some((job, _)) = state.link {
                    if self.jobs[job].identity.provider == "container" {
                        self.end_job(job, e.ts_ns);
                    }
                }
            }
            ContainerChange::Created | ContainerChange::Present => {
                let created = change == ContainerChange::Created;
                if !self.containers.contains_key(&meta.id) {
                    self.make_room_for_a_container();
                    // One already there when the agent started was created by nobody it saw.
                    let (link, by_runner) = if created {
                        self.link_now()
                    } else {
                        (None, false)
                    };
                    self.containers.insert(
                        meta.id.clone(),
                        ContainerState {
                            meta: meta.clone(),
                            link,
                            described: true,
                            by_runner,
                            removed: false,
                            judged: !created,
                            seen_ns: e.ts_ns,
                        },
                    );
                } else if let Some(state) = self.containers.get_mut(&meta.id) {
                    state.meta = meta.clone();
                    state.described = true;
                }
                self.judge_container_settings(e, &meta.id, out);
            }
        }
    }

    /// The one running job and its current step, and whether the job's own code is running
    /// yet (false: the runner is still setting the job up).
    fn link_now(&self) -> (Option<(usize, usize)>, bool) {
        let mut live = self
            .jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| j.ended_ns.is_none() && j.identity.provider != "container");
        let (Some((job, state)), None) = (live.next(), live.next()) else {
            return (None, false);
        };
        let current = state
            .steps
            .iter()
            .rposition(|s| s.ended.is_none())
            .or_else(|| state.steps.len().checked_sub(1));
        let by_job_code = state.steps.iter().any(|s| {
            s.ended.is_none()
                && self
                    .procs
                    .get(&s.root)
                    .is_some_and(|p| !p.runner_own && p.job == job)
        });
        match current {
            Some(step) => (Some((job, step)), !by_job_code),
            None => (None, false),
        }
    }

    /// Where a process of container `id` belongs (creating the container's own job when it is
    /// linked to none), for `attribute`.
    pub(super) fn container_place(&mut self, id: &str, e: &Event) -> (usize, usize) {
        if !self.containers.contains_key(id) {
            // Its first process arrived before the runtime's word: link it now, judge its
            // settings when they are told.
            self.make_room_for_a_container();
            let (link, by_runner) = self.link_now();
            self.containers.insert(
                id.to_string(),
                ContainerState {
                    meta: ContainerMeta {
                        id: id.to_string(),
                        ..Default::default()
                    },
                    link,
                    described: false,
                    by_runner,
                    removed: false,
                    judged: false,
                    seen_ns: e.ts_ns,
                },
            );
        }
        if let Some(link) = self.containers[id].link {
            return link;
        }
        let state = &self.containers[id];
        let short = state.meta.short_id().to_string();
        let name = if state.meta.name.is_empty() {
            short.clone()
        } else {
            state.meta.name.clone()
        };
        let job = self.job_index(JobIdentity {
            provider: "container".into(),
            key: format!("container:{id}"),
            name,
            repository: None,
            run_id: None,
            attempt: None,
            workflow: None,
            runner: None,
            workspace: None,
        });
        self.jobs[job].steps.push(Step {
            identity: StepIdentity {
                id: format!("container {short}"),
                action: None,
            },
            root: super::key_of(e.process.pid, e.process.start_ticks),
            ended: None,
            checked: true,
        });
        let link = (job, self.jobs[job].steps.len() - 1);
        if let Some(state) = self.containers.get_mut(id) {
            state.link = Some(link);
        }
        link
    }

    fn make_room_for_a_container(&mut self) {
        if self.containers.len() < MAX_CONTAINERS {
            return;
        }
        let victim = self
            .containers
            .iter()
            .min_by_key(|(_, c)| (!c.removed, c.seen_ns))
            .map(|(id, _)| id.clone());
        if let Some(id) = victim {
            self.containers.remove(&id);
        }
    }

    /// `container-escape-risk`: a container a job's code created with settings that reach the
    /// host, unless the profile allows its image.
    fn judge_container_settings(&mut self, e: &Event, id: &str, out: &mut Vec<Finding>) {
        let Some(state) = self.containers.get(id) else {
            return;
        };
        if state.judged || !state.described || state.by_runner {
            return;
        }
        let Some((job, step)) = state.link else {
            return;
        };
        let meta = state.meta.clone();
        if let Some(state) = self.containers.get_mut(id) {
            state.judged = true;
        }
        let guarded: Vec<String> = self.jobs[job]
            .home
            .iter()
            .cloned()
            .chain(self.runner_directory(job))
            .collect();
        // The runner's work directory (`<workspace>/../..`), where every build mounts from.
        let exempt: Vec<String> = self.jobs[job]
            .identity
            .workspace
            .as_deref()
            .and_then(|w| std::path::Path::new(w).parent()?.parent())
            .map(|p| p.to_string_lossy().into_owned())
            .into_iter()
            .collect();
        let risks = escape_risks(&meta, &guarded, &exempt);
        if risks.is_empty() {
            return;
        }
        let allowed = self
            .rules_of(job, step)
            .any(|r| r.containers.allows_image(&meta.image));
        if allowed {
            return;
        }
        let raw = Raw::new(
            RuleId::ContainerEscapeRisk,
            format!(
                "container {} ({}) was started with {}: its processes reach the host",
                if meta.name.is_empty() {
                    meta.short_id()
                } else {
                    &meta.name
                },
                meta.image,
                risks.join(", ")
            ),
            format!("container|{}", meta.id),
        )
        .evidence(vec![
            ("container_id", json!(meta.id)),
            ("container_name", json!(meta.name)),
            ("image", json!(meta.image)),
            ("risks", json!(risks)),
            ("binds", json!(meta.binds)),
        ])
        .allowance(Allowance::Containers {
            image: meta.image.clone(),
        })
        .in_container(id);
        let trigger = Trigger {
            events: vec![e.seq],
            time: &e.time,
            ts_ns: e.ts_ns,
        };
        // No process acted yet: the runtime made it on some client's word.
        self.emit(
            out,
            raw,
            Place {
                job,
                step,
                hook: None,
            },
            Vec::new(),
            trigger,
        );
    }

    /// The runner's own directory (where its Worker runs from), guarded like the host's.
    fn runner_directory(&self, job: usize) -> Option<String> {
        let exe = self.jobs[job].anchor_exe.as_deref()?;
        // `<runner>/bin/Runner.Worker`
        let bin = std::path::Path::new(exe).parent()?;
        (bin.file_name()? == "bin")
            .then(|| bin.parent().map(|p| p.to_string_lossy().into_owned()))
            .flatten()
    }
}
