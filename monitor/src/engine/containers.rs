//! Containers: which job and step a container's processes belong to, and containers whose
//! settings hand a job the host.
//!
//! A container's processes descend from the runtime's shim, not from the step that asked for
//! them, so lineage cannot place them. A container is linked when the runtime says it was
//! created: to the job and step of the client that asked (the processes connected to the
//! runtime's socket then, `Detail::Container::requested_by`), or, when those were not caught,
//! to the one job then running and its current step (a runner runs one job at a time). A
//! container whose first process is seen before the runtime's word (the agent holds such events
//! briefly, so only when the API is slow or down) is linked by the latter. When neither tells,
//! the container is a job of its own (`container:<id>`), judged by the default profile and
//! reported as such: never nobody's.
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
    event::{ContainerChange, Event, ProcessRef},
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
        requested_by: &[ProcessRef],
        out: &mut Vec<Finding>,
    ) {
        match change {
            ContainerChange::Removed => {
                let Some(state) = self.containers.get_mut(&meta.id) else {
                    return;
                };
                state.removed = true;
                let link = state.link;
                self.index_addresses(&meta.id);
                // A container of its own ends with its container: its report is written.
                if let Some((job, _)) = link {
                    if self.jobs[job].identity.provider == "container" {
                        self.end_job(job, e.ts_ns);
                    }
                }
            }
            ContainerChange::Created | ContainerChange::Started | ContainerChange::Present => {
                // Started without a creation seen: made while the agent was not looking, or
                // restarted; linked now as if made now.
                let created = change != ContainerChange::Present;
                if !self.containers.contains_key(&meta.id) {
                    self.make_room_for_a_container();
                    // One already there when the agent started was created by nobody it saw.
                    let (link, by_runner) = if !created {
                        (None, false)
                    } else if requested_by.is_empty() {
                        self.link_now()
                    } else {
                        self.link_to_clients(requested_by)
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
                } else {
                    // Its first process came before the runtime's word and linked it to the
                    // step running then: the clients that asked for it say better who made it
                    // (the runner's own "Initialize containers" client makes it the runner's).
                    let first_word = created
                        && !requested_by.is_empty()
                        && self.containers.get(&meta.id).is_some_and(|s| !s.described);
                    let asked = if first_word {
                        self.link_to_clients(requested_by)
                    } else {
                        (None, false)
                    };
                    if let (Some(link), by_runner) = asked {
                        if self.containers[&meta.id].link != Some(link) {
                            self.relink(&meta.id, link, e.ts_ns);
                        }
                        if let Some(state) = self.containers.get_mut(&meta.id) {
                            state.by_runner = by_runner;
                        }
                    }
                    if let Some(state) = self.containers.get_mut(&meta.id) {
                        state.meta = meta.clone();
                        state.described = true;
                    }
                }
                self.link_by_network(&meta.id, e.ts_ns);
                self.index_addresses(&meta.id);
                self.judge_container_settings(e, &meta.id, out);
            }
        }
    }

    /// A container no job's client was seen asking for (its `docker run -d` had hung up before
    /// the agent looked, or several jobs were live), on a user-defined network a job's
    /// container is on: the runner made that network for the job (its service containers), so
    /// it is that job's, and the container's own job (if its processes had made one) ends.
    fn link_by_network(&mut self, id: &str, ts_ns: u64) {
        let real_job = |link: Option<(usize, usize)>, jobs: &[super::Job]| {
            link.filter(|(j, _)| jobs[*j].identity.provider != "container")
        };
        let Some(state) = self.containers.get(id) else {
            return;
        };
        if state.meta.networks.is_empty() {
            return;
        }
        // A job's container arriving: the unlinked ones already on its networks are its job's.
        if let Some(link) = real_job(state.link, &self.jobs) {
            let networks = state.meta.networks.clone();
            let strays: Vec<String> = self
                .containers
                .iter()
                .filter(|(other, c)| {
                    other.as_str() != id
                        && !c.removed
                        && real_job(c.link, &self.jobs).is_none()
                        && c.meta.networks.iter().any(|n| networks.contains(n))
                })
                .map(|(other, _)| other.clone())
                .collect();
            for stray in strays {
                self.relink(&stray, link, ts_ns);
            }
            return;
        }
        let peer = self.containers.iter().find_map(|(other, c)| {
            (other != id
                && !c.removed
                && c.meta
                    .networks
                    .iter()
                    .any(|n| state.meta.networks.contains(n)))
            .then(|| real_job(c.link, &self.jobs))
            .flatten()
        });
        if let Some(link) = peer {
            self.relink(id, link, ts_ns);
        }
    }

    /// Links container `id` to a job's step; the container's own job, if its processes had
    /// made one, ends, and its processes still running are the step's from now (a container
    /// whose first program ran before the word on who asked for it).
    fn relink(&mut self, id: &str, link: (usize, usize), ts_ns: u64) {
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        if let Some((own, _)) = c.link.replace(link) {
            if own != link.0 && self.jobs[own].identity.provider == "container" {
                for proc in self.procs.values_mut() {
                    if proc.job == own && proc.container.as_deref() == Some(id) {
                        proc.job = link.0;
                        proc.step = link.1;
                    }
                }
                self.end_job(own, ts_ns);
            }
        }
    }

    /// The job and step of the client that asked for the container: of the processes connected
    /// to the runtime when it was created, those in jobs (the agent's own connection and the
    /// host's tools are in none; clients in no job made a container of the host's, not linked).
    /// With clients of several jobs connected (one job's `docker run` stays attached to its
    /// container while another job makes one), the newest client process is the one that just
    /// asked: a client asks as it starts.
    pub(super) fn link_to_clients(&self, clients: &[ProcessRef]) -> (Option<(usize, usize)>, bool) {
        let mut places: Vec<(u64, usize, usize, bool)> = clients
            .iter()
            .filter_map(|c| {
                let p = self.procs.get(&super::key_of(c.pid, c.start_ticks))?;
                Some((c.start_ticks, p.job, p.step, p.runner_own))
            })
            .filter(|(_, job, _, _)| self.jobs[*job].identity.provider != "container")
            .collect();
        let Some(newest) = places.iter().map(|(t, _, _, _)| *t).max() else {
            return (None, false);
        };
        let job = places
            .iter()
            .filter(|(t, _, _, _)| *t == newest)
            .map(|(_, j, _, _)| *j)
            .max()
            .unwrap_or_default();
        if places.iter().any(|(t, j, _, _)| *t == newest && *j != job) {
            // Started in the same tick by different jobs: no telling.
            return (None, false);
        }
        places.retain(|(_, j, _, _)| *j == job);
        let places: Vec<(usize, usize, bool)> = places
            .into_iter()
            .map(|(_, j, s, own)| (j, s, own))
            .collect();
        // The most recent step among them (a step's client, not the runner's long-lived one).
        let step = places.iter().map(|(_, s, _)| *s).max().unwrap_or(0);
        let by_runner = places.iter().all(|(_, _, own)| *own);
        (Some((job, step)), by_runner)
    }

    /// The one running job and its current step. "Made by the runner" only while none of the
    /// job's own steps has run yet (its "Initialize containers", whose client a loaded agent
    /// can miss): later a daemon a step left behind can ask between steps and hang up at once,
    /// and only the runner's own client seen asking says it was the runner.
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
        let no_step_ran = state
            .steps
            .iter()
            .all(|s| s.identity.id == crate::ci::RUNNER_STEP_ID);
        (
            current.map(|step| (job, step)),
            current.is_some() && no_step_ran,
        )
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
        let job = self.job_index(JobIdentity::bare(
            "container",
            format!("container:{id}"),
            name,
        ));
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
            self.index_addresses(&id);
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

    /// Whether `address` is one of the job's own containers, or on a network of the job's own
    /// (a service container on the network the runner made for the job, even when it could not
    /// be linked: its client was gone, and the job's container was linked later, through its
    /// processes, which `link_by_network` does not see): talking to it does not leave the
    /// machine.
    pub(super) fn is_job_container_address(&self, job: usize, address: std::net::IpAddr) -> bool {
        let Some(target) = self
            .container_addresses
            .get(&address.to_canonical())
            .and_then(|id| self.containers.get(id))
            .filter(|c| !c.removed)
        else {
            return false;
        };
        let of_job = |c: &ContainerState| c.link.is_some_and(|(j, _)| j == job);
        of_job(target)
            || target.meta.networks.iter().any(|network| {
                self.containers
                    .values()
                    .any(|c| !c.removed && of_job(c) && c.meta.networks.contains(network))
            })
    }

    /// Keeps `container_addresses` (looked up on every connection) in step with `id`'s
    /// description: its addresses point to it, none other does.
    fn index_addresses(&mut self, id: &str) {
        self.container_addresses.retain(|_, owner| owner != id);
        let Some(c) = self.containers.get(id).filter(|c| !c.removed) else {
            return;
        };
        for address in &c.meta.addresses {
            self.container_addresses
                .insert(address.to_canonical(), id.to_string());
        }
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
