//! Detections on opened files: credentials and other processes' memory read, persistence places
//! written, files a packing command would ship, and `.pth` files the job planted and an
//! interpreter then ran.

use serde_json::json;

use super::{
    emit::{Place, Raw, Trigger},
    link_of, Engine, WrittenPth,
};
use crate::{
    event::{Access, Detail, Event, KernelResponse, MatchReason, NameOp},
    finding::{Finding, RuleId, Severity},
    process_tree::ProcessKey,
    profile::{AccessRule, Allowance, PathPattern, Rules},
    rules::{
        credentials, defences, lifecycle, packaging, path_within, persistence,
        runner_dirs::RunnerDir, sources, tool_matches,
    },
};

impl Engine {
    /// The kernel killed (or would have killed) the opener, and no rule wrote a finding: the
    /// kill is reported under the rule the kernel decided it by.
    pub(super) fn on_unjudged_response(
        &mut self,
        e: &Event,
        key: ProcessKey,
        response: KernelResponse,
        out: &mut Vec<Finding>,
    ) {
        let Detail::Open { path, .. } = &e.detail else {
            return;
        };
        let tool = self
            .procs
            .get(&key)
            .map(|p| p.tool.clone())
            .unwrap_or_default();
        let (rule, what) = match credentials::proc_target(path) {
            Some((_, "environ")) => (
                RuleId::ProcessEnvironRead,
                "the environment of another process",
            ),
            Some(_) => (RuleId::ProcessMemoryRead, "the memory of another process"),
            None => (
                RuleId::CredentialRead,
                "a credential from install-time code",
            ),
        };
        let raw = Raw::new(
            rule,
            format!(
                "{tool} opened {what} ({path}) and its job's profile kills that: {}",
                response.as_str()
            ),
            format!("{path}:{}", e.process.pid),
        )
        .severity(Severity::Critical)
        .evidence(vec![("path", json!(path)), ("response", json!(response))]);
        self.emit_for(out, raw, e, key);
    }

    pub(super) fn on_open(&mut self, e: &Event, key: ProcessKey, out: &mut Vec<Finding>) {
        let Detail::Open {
            path: opened,
            access,
            matched,
            path_truncated,
            created,
            same_file_as,
            proc_target,
            ..
        } = &e.detail
        else {
            return;
        };
        // A watched file opened under another name is judged as itself; the name it was
        // opened by is evidence.
        let path = same_file_as.as_ref().unwrap_or(opened);
        let through = match same_file_as {
            Some(_) => format!(" through {opened}"),
            None => String::new(),
        };
        let (job, step, hook, tool) = {
            let p = &self.procs[&key];
            (p.job, p.step, p.hook, p.tool.clone())
        };
        let in_hook = hook.is_some();
        // Judged as if the job's home were a usual one, so `~/` patterns cover it.
        let home_path = self.home_relative(job, path);
        let home_path = home_path.as_deref().unwrap_or(path);
        let allowed_by = |rules: &Rules, list: fn(&Rules) -> &Vec<AccessRule>| {
            access_allowed(rules, list, e, &tool, path, home_path)
        };

        // Another process's memory, environment or memory map: always a finding.
        if matched.contains(&MatchReason::ProcOtherProcess) {
            // The kernel saw a proc file of another thread id; a thread of the reader's own
            // process is its own memory. A path that cannot be parsed is still judged (fail
            // closed), as the file its name says.
            // Whose it is: the kernel's answer from the directory's identity, a pid as the
            // agent's are (in a container the path's number is a pid of its namespace), else
            // the path's number (the same outside containers).
            let parsed = credentials::proc_target(path)
                .map(|(named, file)| (proc_target.unwrap_or(named), file));
            if parsed.is_some_and(|(target, _)| target == e.process.pid) {
                return;
            }
            let unparsed = || {
                let file = path.rsplit('/').next().unwrap_or("");
                matches!(file, "mem" | "environ" | "maps")
                    .then_some((proc_target.unwrap_or(0), file))
            };
            if let Some((target, file)) = parsed.or_else(unparsed) {
                if file == "environ"
                    && self.procs[&key].installed
                    && credentials::environ_read_is_listing(&tool, &e.process.argv)
                {
                    return;
                }
                if self
                    .rules_of(job, step)
                    .any(|r| allowed_by(r, |r| &r.credentials.allow))
                {
                    return;
                }
                let (rule, severity, what) = match file {
                    "mem" => (RuleId::ProcessMemoryRead, Severity::Critical, "memory"),
                    "maps" => (RuleId::ProcessMemoryRead, Severity::High, "memory map"),
                    _ => (RuleId::ProcessEnvironRead, Severity::High, "environment"),
                };
                let raw = Raw::new(
                    rule,
                    match target {
                        0 => format!("{tool} opened the {what} of another process ({path})"),
                        _ => format!("{tool} opened the {what} of process {target} ({path})"),
                    },
                    format!("{path}:{}", e.process.pid),
                )
                .severity(severity)
                .evidence(vec![
                    ("path", json!(path)),
                    ("target_pid", json!((target != 0).then_some(target))),
                    ("access", json!(access)),
                ])
                // Pids change from run to run: an allowance names the file of any process.
                .allowance(Allowance::Credentials {
                    path: format!("/proc/*/{file}"),
                    by: tool.clone(),
                });
                self.emit_for(out, raw, e, key);
                return;
            }
        }

        if *path_truncated {
            let raw = Raw::new(
                RuleId::UnresolvedSensitiveOpen,
                format!(
                    "{tool} opened a watched file whose path is too deep to resolve (...{path})"
                ),
                path.clone(),
            )
            .evidence(vec![
                ("path_tail", json!(path)),
                ("matched", json!(matched)),
                ("access", json!(access)),
            ]);
            self.emit_for(out, raw, e, key);
            return;
        }

        if access.writes() {
            self.judge_write(
                e,
                key,
                path,
                home_path,
                WriteHow::Open { created: *created },
                out,
            );
        }
        if access.reads() {
            if let Some((command, dir)) = self.procs[&key].packing.clone() {
                if self.check_packed_file(e, key, path, &command, &dir, out) {
                    return;
                }
            }
            let builtin = credentials::classify(home_path);
            let watched = self.rules_of(job, step).any(|r| {
                r.credentials
                    .watch
                    .iter()
                    .any(|p| p.matches(path) || p.matches(home_path))
            });
            if builtin.is_none() && !watched {
                return;
            }
            // Inside a dependency's install hook even the owning tool is not itself: npm run from
            // a postinstall script to read .npmrc is how the worm publishes.
            // A name proves nothing by itself: the owner must be an installed program that
            // nobody wrote during the job (a `cat` copied to `npm` owns nothing). Nor is a
            // credential its owner reads because the command line names it.
            let owner = builtin.is_some_and(|k| k.owned_by(&tool))
                && !in_hook
                && self.procs[&key].installed
                && !credentials::named_on_command_line(&tool, &e.process.argv, &[path, opened]);
            if owner
                || self
                    .rules_of(job, step)
                    .any(|r| allowed_by(r, |r| &r.credentials.allow))
            {
                return;
            }
            let name = builtin.map_or("watched-credential", |k| k.name);
            let owners = builtin.map(|k| k.owners.join(", ")).unwrap_or_default();
            let mut raw = Raw::new(
                RuleId::CredentialRead,
                format!("{tool} read {path} ({name}){through}"),
                format!("{path}:{tool}"),
            )
            .evidence(vec![
                ("path", json!(path)),
                ("credential", json!(name)),
                ("access", json!(access)),
                ("owners", json!(owners)),
                ("opened_as", json!(same_file_as.as_ref().map(|_| opened))),
            ])
            .allowance(Allowance::Credentials {
                path: path.clone(),
                by: tool.clone(),
            });
            if !owners.is_empty() && !in_hook {
                raw = raw.clause(format!(
                    "credentials: only {owners} may read it, and not from install-time code"
                ));
            }
            self.emit_for(out, raw, e, key);
        }
    }

    /// A name given to a file without opening it: a write of the new name, and for a rename or a
    /// hard link of a credential, the credential given another name.
    pub(super) fn on_name(&mut self, e: &Event, key: ProcessKey, out: &mut Vec<Finding>) {
        let Detail::Name {
            op,
            path,
            from,
            matched,
            path_uncertain,
            ..
        } = &e.detail
        else {
            return;
        };
        // A watched name given in a directory the kernel could not resolve (or cut): where it
        // landed cannot be judged, so it is reported as such (fail closed).
        if *path_uncertain && !path.starts_with('/') {
            let tool = self.procs[&key].tool.clone();
            let raw = Raw::new(
                RuleId::UnresolvedSensitiveOpen,
                format!(
                    "{tool} {} a watched name in a directory that could not be resolved ({path})",
                    op.verb()
                ),
                format!("{path}:{tool}"),
            )
            .evidence(vec![
                ("name", json!(path)),
                ("matched", json!(matched)),
                ("via", json!(op)),
            ]);
            self.emit_for(out, raw, e, key);
            return;
        }
        if *op == NameOp::Unlink {
            self.on_removed_name(e, key, path, out);
            return;
        }
        let home_path = self.home_relative(self.procs[&key].job, path);
        let home_path = home_path.as_deref().unwrap_or(path);
        self.judge_write(e, key, path, home_path, WriteHow::Name(*op), out);
        if *op == NameOp::Symlink || !matched.contains(&MatchReason::From) {
            return;
        }
        let Some(from) = from else { return };
        let (job, step, hook, tool) = {
            let p = &self.procs[&key];
            (p.job, p.step, p.hook, p.tool.clone())
        };
        // A system log or other defence moved away (`mv /var/log/auth.log /tmp/x`): the log
        // is gone from where it is read as surely as if it were deleted. Renames only: a hard
        // link leaves it in place.
        if *op == NameOp::Rename {
            if let Some(place) = defences::classify(from) {
                if !place.owned_by(&tool) || hook.is_some() || !self.procs[&key].installed {
                    let raw = Raw::new(
                        RuleId::DefenceTampering,
                        format!("{tool} moved {from} ({}) to {path}", place.name),
                        format!("{from}:{tool}:moved"),
                    )
                    .evidence(vec![
                        ("path", json!(from)),
                        ("new_name", json!(path)),
                        ("place", json!(place.name)),
                        ("route", json!("rename")),
                    ]);
                    self.emit_for(out, raw, e, key);
                }
            }
        }
        let home_from = self.home_relative(job, from);
        let home_from = home_from.as_deref().unwrap_or(from);
        let Some(kind) = credentials::classify(home_from) else {
            return;
        };
        // The owner rotating its own file (`gh auth` replacing hosts.yml by rename) is not a
        // finding; nothing inside install-time code owns anything.
        if (kind.owned_by(&tool) && hook.is_none() && self.procs[&key].installed)
            || self
                .rules_of(job, step)
                .any(|r| access_allowed(r, |r| &r.credentials.allow, e, &tool, from, home_from))
        {
            return;
        }
        let raw = Raw::new(
            RuleId::CredentialRelinked,
            format!("{tool} {} {path}: {from} ({})", op.verb(), kind.name),
            format!("{from}:{path}:{tool}"),
        )
        .evidence(vec![
            ("path", json!(from)),
            ("new_name", json!(path)),
            ("credential", json!(kind.name)),
            ("via", json!(op)),
        ])
        .allowance(Allowance::Credentials {
            path: from.clone(),
            by: tool.clone(),
        });
        self.emit_for(out, raw, e, key);
    }

    /// A name removed (unlink): a system log or another defence deleted by other than its
    /// owner (`rm /var/log/auth.log`), whatever route the kernel saw.
    fn on_removed_name(&mut self, e: &Event, key: ProcessKey, path: &str, out: &mut Vec<Finding>) {
        let Some(place) = defences::classify(path) else {
            return;
        };
        let (tool, hook, installed) = {
            let p = &self.procs[&key];
            (p.tool.clone(), p.hook, p.installed)
        };
        // An owner by what it is, not what it is called: an installed program (a copy of `rm`
        // named `apt-x` in /tmp owns nothing).
        if place.owned_by(&tool) && installed && hook.is_none() {
            return;
        }
        let raw = Raw::new(
            RuleId::DefenceTampering,
            format!("{tool} deleted {path} ({})", place.name),
            format!("{path}:{tool}:deleted"),
        )
        .evidence(vec![
            ("path", json!(path)),
            ("place", json!(place.name)),
            ("route", json!("unlink")),
        ]);
        self.emit_for(out, raw, e, key);
    }

    /// A file written at `path` (opened for writing, or given that name by rename, link or
    /// symlink): persistence and defence places, and `.pth` files an interpreter will run.
    /// A write as the host sees it. A container's process writes either into a host path
    /// mounted into it (judged as that host path: `-v /:/host` then `/host/etc/cron.d/x` is the
    /// host's cron) or into the container's own file system, which is not the host's: an image
    /// build's `RUN` writing `/etc/profile.d` persists nothing on the runner. A file known by
    /// identity is the host's already. Without the runtime's description (its API is down) the
    /// path is judged as given (fail closed).
    fn judge_write(
        &mut self,
        e: &Event,
        key: ProcessKey,
        path: &str,
        home_path: &str,
        how: WriteHow,
        out: &mut Vec<Finding>,
    ) {
        let identified = matches!(
            &e.detail,
            Detail::Open {
                same_file_as: Some(_),
                ..
            }
        );
        let described = self.procs[&key]
            .container
            .as_ref()
            .and_then(|id| self.containers.get(id))
            .filter(|c| c.described)
            .map(|c| c.meta.host_path_of(path));
        match described {
            Some(Some(host)) if !identified => {
                let job = self.procs[&key].job;
                let home = self.home_relative(job, &host);
                let home = home.as_deref().unwrap_or(&host).to_string();
                self.judge_host_write(e, key, &host, &home, how, out);
            }
            Some(None) if !identified => {
                // Its own file system: only a `.pth` file matters there (an interpreter in the
                // same container reads it).
                if lifecycle::is_site_pth(path) {
                    self.judge_host_write(e, key, path, home_path, how, out);
                }
            }
            _ => self.judge_host_write(e, key, path, home_path, how, out),
        }
    }

    fn judge_host_write(
        &mut self,
        e: &Event,
        key: ProcessKey,
        path: &str,
        home_path: &str,
        how: WriteHow,
        out: &mut Vec<Finding>,
    ) {
        let (job, step, hook, tool) = {
            let p = &self.procs[&key];
            (p.job, p.step, p.hook, p.tool.clone())
        };
        let in_hook = hook.is_some();
        if lifecycle::is_site_pth(path) {
            let chain = self.chain(e, key);
            self.written_pth.insert(
                path.to_string(),
                WrittenPth {
                    job,
                    step,
                    hook,
                    writer: chain,
                    writer_seq: e.seq,
                },
            );
        }
        let (verb, created, access, via) = match how {
            WriteHow::Open { created } => {
                let Detail::Open { access, .. } = &e.detail else {
                    return;
                };
                (
                    if created { "created" } else { "wrote" },
                    created,
                    json!(access),
                    None,
                )
            }
            WriteHow::Name(op) => (op.verb(), true, json!(Access::Write), Some(op)),
        };
        let written = |rule: RuleId, place: &str, more: (&'static str, serde_json::Value)| {
            let mut evidence = vec![
                ("path", json!(path)),
                ("place", json!(place)),
                ("access", access.clone()),
                more,
            ];
            if let Some(op) = via {
                evidence.push(("via", json!(op)));
            }
            if let Detail::Open {
                path: opened,
                same_file_as: Some(_),
                ..
            } = &e.detail
            {
                evidence.push(("opened_as", json!(opened)));
            }
            Raw::new(
                rule,
                format!("{tool} {verb} {path} ({place})"),
                format!("{path}:{tool}"),
            )
            .evidence(evidence)
        };
        // A directory renamed into place brings every file in it: judged as one of them.
        let inside = format!("{path}/-");
        let place = persistence::classify(home_path).or_else(|| match via {
            Some(NameOp::Rename) => persistence::classify(&format!("{home_path}/-")),
            _ => None,
        });
        if let Some(place) = place {
            let owner = place.owned_by(&tool, &e.process.argv) && !in_hook;
            if !owner
                && !self
                    .rules_of(job, step)
                    .any(|r| access_allowed(r, |r| &r.persistence.allow, e, &tool, path, home_path))
            {
                let raw = written(
                    RuleId::PersistenceWrite,
                    place.name,
                    ("created", json!(created)),
                )
                .allowance(Allowance::Persistence {
                    path: path.to_string(),
                    by: tool.clone(),
                });
                self.emit_for(out, raw, e, key);
            }
        }
        self.check_runner_dir_write(e, key, path, &written, out);
        self.check_source_write(e, key, path, &written, out);
        let defence = defences::classify(path).or_else(|| match via {
            Some(NameOp::Rename) => defences::classify(&inside),
            _ => None,
        });
        if let Some(place) = defence {
            if !place.owned_by(&tool) || in_hook {
                let raw = written(
                    RuleId::DefenceTampering,
                    place.name,
                    ("route", json!("file")),
                );
                self.emit_for(out, raw, e, key);
            }
        }
    }

    /// A write in the runner's downloaded actions or tool cache (`action-tampered`): later
    /// jobs on this runner run what is there. Only the runner's own processes write its actions,
    /// and setup actions (and what they start) its tool cache; nothing inside install-time code
    /// does. The kernel finds these writes by the directories' identity (`MATCH_SUBTREE`): one
    /// reached by another path (a bind mount) is judged as a write there (fail closed).
    fn check_runner_dir_write(
        &mut self,
        e: &Event,
        key: ProcessKey,
        path: &str,
        written: &dyn Fn(RuleId, &str, (&'static str, serde_json::Value)) -> Raw,
        out: &mut Vec<Finding>,
    ) {
        let (job, step, hook, runner_own) = {
            let p = &self.procs[&key];
            (p.job, p.step, p.hook, p.runner_own)
        };
        let under_watch = matched_for(e, MatchReason::Subtree);
        let place = self.jobs[job]
            .runner_dirs
            .iter()
            .find(|(_, dir)| path_within(path, dir).is_some())
            .map(|(kind, dir)| (Some(*kind), dir.clone()));
        let Some((kind, dir)) = place.or_else(|| under_watch.then(|| (None, String::new()))) else {
            return;
        };
        let action = self.jobs[job]
            .steps
            .get(step)
            .and_then(|s| s.identity.action.as_deref())
            .map(|a| a.split_once('@').map_or(a, |(name, _)| name).to_string());
        let tool = self.procs[&key].tool.clone();
        let installed = self.procs[&key].installed;
        let owner = hook.is_none()
            && (runner_own
                || (kind == Some(RunnerDir::ToolCache)
                    && action
                        .as_deref()
                        .is_some_and(crate::rules::runner_dirs::keeps_tools))
                || (installed
                    && kind == Some(RunnerDir::ToolCache)
                    && crate::rules::runner_dirs::tool_cache_work(&tool, path))
                // The interpreter itself (an installed python, whatever script it runs)
                // caching bytecode; a crafted `.pyc` written by anything else is tampering.
                || (crate::rules::runner_dirs::python_bytecode(&tool, path)
                    && e.process
                        .exe
                        .as_deref()
                        .and_then(crate::rules::executables::installed_place)
                        .is_some()));
        if owner
            || self
                .rules_of(job, step)
                .any(|r| access_allowed(r, |r| &r.persistence.allow, e, &tool, path, path))
        {
            return;
        }
        let place_name = match kind {
            Some(RunnerDir::Actions) => "runner actions",
            Some(RunnerDir::ToolCache) => "runner tool cache",
            None => "runner directory",
        };
        let mut raw = written(
            RuleId::ActionTampered,
            place_name,
            ("runner_dir", json!(dir)),
        );
        raw.summary = format!(
            "{}: {}",
            raw.summary,
            kind.map_or("a watched runner directory reached by another path", |k| k
                .described())
        );
        let raw = raw
            .evidence_more(vec![("action", json!(action))])
            .allowance(Allowance::Persistence {
                path: path.to_string(),
                by: tool,
            });
        self.emit_for(out, raw, e, key);
    }

    /// A write to one of the repository's tracked files after its checkout (`source-modified`;
    /// the kernel says which files by identity: what git tracked when the checkout step ended).
    /// High for build scripts and CI configuration, medium for other files; inside install-time
    /// code critical. git checking a tree out, package managers on their manifests and locks,
    /// and `sources.allow` may.
    fn check_source_write(
        &mut self,
        e: &Event,
        key: ProcessKey,
        path: &str,
        written: &dyn Fn(RuleId, &str, (&'static str, serde_json::Value)) -> Raw,
        out: &mut Vec<Finding>,
    ) {
        if !matched_for(e, MatchReason::Source) {
            return;
        }
        let (job, step, hook) = {
            let p = &self.procs[&key];
            (p.job, p.step, p.hook)
        };
        let relative = self.jobs[job]
            .identity
            .workspace
            .as_deref()
            .and_then(|w| path_within(path, w.trim_end_matches('/')))
            .map(|r| r.trim_start_matches('/').to_string())
            .unwrap_or_else(|| path.to_string());
        if sources::is_build_output(&relative) {
            return;
        }
        let tool = self.procs[&key].tool.clone();
        let installed = self.procs[&key].installed;
        if (hook.is_none() && installed && sources::owned_by(&relative, &tool, &e.process.argv))
            || self.rules_of(job, step).any(|r| {
                r.sources.allow.iter().any(|rule| {
                    rule.path.matches(&relative, path) && writer_listed(&rule.by, e, &tool)
                })
            })
        {
            return;
        }
        let kind = sources::classify(&relative);
        let severity = match kind {
            sources::SourceKind::BuildScript | sources::SourceKind::CiConfig => Severity::High,
            sources::SourceKind::Source => Severity::Medium,
        };
        let raw = written(
            RuleId::SourceModified,
            kind.name(),
            ("file", json!(relative)),
        )
        .severity(severity)
        .allowance(Allowance::Sources {
            path: relative,
            by: tool,
        });
        self.emit_for(out, raw, e, key);
    }

    /// `path` with the job's home directory spelt `/root`, when it lies in a home that `~/`
    /// patterns (`/root`, `/home/*`) would not cover.
    fn home_relative(&self, job: usize, path: &str) -> Option<String> {
        let home = self.jobs[job].home.as_deref()?;
        if home == "/root" || home.starts_with("/home/") {
            return None;
        }
        path_within(path, home).map(|rest| format!("/root{rest}"))
    }

    /// A packing command reading a file of the tree it packs that should not ship. Returns
    /// whether the open was judged here (then it is not also a credential read).
    fn check_packed_file(
        &mut self,
        e: &Event,
        key: ProcessKey,
        path: &str,
        command: &str,
        dir: &str,
        out: &mut Vec<Finding>,
    ) -> bool {
        let (job, step, tool) = {
            let p = &self.procs[&key];
            (p.job, p.step, p.tool.clone())
        };
        if path_within(path, dir).is_none() {
            return false;
        }
        let map = match &e.detail {
            crate::event::Detail::Open {
                map_embeds_sources: Some(embeds_sources),
                map_sources_packed,
                ..
            } => Some(packaging::MapFacts {
                embeds_sources: *embeds_sources,
                sources_packed: *map_sources_packed,
            }),
            _ => None,
        };
        let Some(kind) = packaging::leak_kind(path, &tool, map) else {
            return false;
        };
        if self
            .rules_of(job, step)
            .any(|r| r.packaging.allow.iter().any(|p| p.matches(path)))
        {
            return true;
        }
        let raw = Raw::new(
            RuleId::PackagedSensitiveFile,
            format!("`{command}` read {path} ({kind}) to pack it"),
            path,
        )
        .evidence(vec![
            ("path", json!(path)),
            ("kind", json!(kind)),
            ("command", json!(command)),
            ("package_dir", json!(dir)),
        ])
        .allowance(Allowance::Packaging {
            path: path.to_string(),
        });
        self.emit_for(out, raw, e, key);
        true
    }

    /// An interpreter reading a `.pth` file the job wrote: judged wherever the interpreter runs
    /// (even outside any job), and reported even when the writing hook was allowed: an allowed
    /// build has no business planting code.
    pub(super) fn on_pth_read(
        &mut self,
        e: &Event,
        path: &str,
        executable: Option<bool>,
        out: &mut Vec<Finding>,
    ) {
        let Some(written) = self.written_pth.get(path) else {
            return;
        };
        let file = path.rsplit('/').next().unwrap_or(path);
        // Unknown content (a replayed log, or a file already gone) fails closed.
        if executable == Some(false) || lifecycle::pth_is_known_benign(file) {
            return;
        }
        let place = Place {
            job: written.job,
            step: written.step,
            hook: written.hook,
        };
        let writer = written.writer.clone();
        let writer_seq = written.writer_seq;
        let reader = link_of(e);
        let package = place.hook.map(|h| self.hooks[&h].hook.package.clone());
        let raw = Raw::new(
            RuleId::PthExecuted,
            format!(
                "{} ran the executable .pth file {path}, installed during this job{}",
                reader.exe.as_deref().unwrap_or(&reader.comm),
                package
                    .map(|p| format!(" by package {p}"))
                    .unwrap_or_default()
            ),
            path,
        )
        .evidence(vec![
            ("path", json!(path)),
            ("executable_lines", json!(executable)),
            ("written_by", json!(writer.first())),
            ("reader_pid", json!(e.process.pid)),
        ]);
        let mut chain = vec![reader];
        chain.extend(writer);
        let trigger = Trigger {
            events: vec![writer_seq, e.seq],
            time: &e.time,
            ts_ns: e.ts_ns,
        };
        self.emit(out, raw, place, chain, trigger);
    }
}

/// How a file came to be written at a path.
#[derive(Clone, Copy)]
enum WriteHow {
    Open { created: bool },
    Name(NameOp),
}

/// Whether an access rule of `list` lets this process touch `path` (as the rule's `by` names it:
/// a tool name, or an executable path pattern).
/// Whether the kernel sent this open or name for `reason`.
fn matched_for(e: &Event, reason: MatchReason) -> bool {
    match &e.detail {
        Detail::Open { matched, .. } | Detail::Name { matched, .. } => matched.contains(&reason),
        _ => false,
    }
}

/// Whether a profile's `by` list names the writer: a tool name (`git*`), or an absolute glob of
/// its executable.
fn writer_listed(by: &[String], e: &Event, tool: &str) -> bool {
    by.iter().any(|b| {
        if b.starts_with('/') {
            PathPattern::new(b).is_ok_and(|p| p.matches(e.process.exe.as_deref().unwrap_or("")))
        } else {
            tool_matches(b, tool)
        }
    })
}

fn access_allowed(
    rules: &Rules,
    list: fn(&Rules) -> &Vec<AccessRule>,
    e: &Event,
    tool: &str,
    path: &str,
    home_path: &str,
) -> bool {
    list(rules).iter().any(|a| {
        (a.path.matches(path) || a.path.matches(home_path)) && writer_listed(&a.by, e, tool)
    })
}
