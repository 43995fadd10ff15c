//! Engine scenarios built from kernel records, enriched by the real enricher and round-tripped
//! through the JSON form (as `monitor replay` reads it), so they test what runs live.
//!
//! The process layouts copy the GitHub runner's: `Runner.Listener` starts one `Runner.Worker` per
//! job; the Worker starts every step as its own child (`bash -e $RUNNER_TEMP/<uuid>.sh` for a
//! `run:` step, `node .../_actions/<owner>/<repo>/<ref>/dist/index.js` for an action) with the
//! step's `GITHUB_*` variables in its environment.

use std::collections::{BTreeMap, HashMap};

use monitor_common::{EventKind, SOCK_STREAM};

use super::*;
use crate::{
    decode::{Header, KernelEvent},
    event::{Enricher, Event, WallClock},
    finding::Severity,
    process_tree::ProcessTable,
    profile::Allowance,
};

pub struct Sim {
    enricher: Enricher,
    pub engine: Engine,
    starts: HashMap<u32, u64>,
    parents: HashMap<u32, u32>,
    ts: u64,
    pub events: Vec<Event>,
    pub findings: Vec<Finding>,
    /// Processes in a container (pid -> container id), as the live enricher tells by cgroup.
    pub in_container: HashMap<u32, String>,
    /// Processes in their container's own mount namespace (`ProcessInfo::in_container_view`).
    pub in_container_view: HashSet<u32>,
}

pub const HOME: &str = "/home/runner";
/// The monitor's own executable in these scenarios.
pub const MONITOR: &str = "/usr/bin/monitor";
pub const WORKSPACE: &str = "/home/runner/work/app/app";

pub fn github_env(step: &str) -> BTreeMap<String, String> {
    [
        ("GITHUB_RUN_ID", "9001"),
        ("GITHUB_RUN_ATTEMPT", "1"),
        ("GITHUB_JOB", "build"),
        ("GITHUB_REPOSITORY", "acme/app"),
        ("GITHUB_WORKFLOW", "CI"),
        ("GITHUB_WORKSPACE", WORKSPACE),
        ("RUNNER_NAME", "runner-1"),
        ("GITHUB_ACTION", step),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Sim {
    pub fn new(profile: Profile) -> Self {
        Self::with_config(
            profile,
            EngineConfig {
                dns_resolvers: vec!["127.0.0.53".parse().unwrap()],
                agent_program: Some(MONITOR.into()),
                still_running: None,
                exfil_services: Default::default(),
            },
        )
    }

    pub fn with_config(profile: Profile, config: EngineConfig) -> Self {
        let mut sim = Self {
            enricher: Enricher::new(
                ProcessTable::new(100, 100_000),
                WallClock { boot_to_unix_ns: 0 },
            ),
            engine: Engine::new(profile, config),
            starts: HashMap::new(),
            parents: HashMap::new(),
            ts: 1_000_000_000,
            events: Vec::new(),
            findings: Vec::new(),
            in_container: HashMap::new(),
            in_container_view: HashSet::new(),
        };
        // pid 1 exists from the start.
        sim.starts.insert(1, 10_000_000);
        sim
    }

    fn header(&mut self, kind: EventKind, pid: u32) -> Header {
        self.ts += 1_000_000;
        let ppid = self.parents.get(&pid).copied().unwrap_or(1);
        Header {
            kind,
            flags: 0,
            ts_ns: self.ts,
            tgid: pid,
            pid,
            ppid,
            uid: 1001,
            gid: 1001,
            start_ns: self.starts[&pid],
            parent_start_ns: self.starts.get(&ppid).copied().unwrap_or(0),
            cgroup_id: 1,
            mnt_ns: 0,
            mnt_ns_id: 0,
            comm: format!("p{pid}"),
        }
    }

    fn feed(&mut self, record: KernelEvent) {
        self.feed_with(record, |_| {});
    }

    /// Feeds a record, letting `edit` add what the live agent adds after enrichment.
    fn feed_with(&mut self, record: KernelEvent, edit: impl FnOnce(&mut Event)) {
        let Some(mut event) = self.enricher.enrich(record) else {
            return;
        };
        event.process.container = self.in_container.get(&event.process.pid).cloned();
        event.process.in_container_view = self.in_container_view.contains(&event.process.pid);
        edit(&mut event);
        // Through JSON, as replay reads it.
        let line = serde_json::to_string(&event).unwrap();
        let event: Event = serde_json::from_str(&line).unwrap();
        self.findings.extend(self.engine.on_event(&event));
        self.events.push(event);
    }

    pub fn fork(&mut self, parent: u32, child: u32) -> &mut Self {
        self.starts.insert(child, self.ts + 500);
        self.parents.insert(child, parent);
        let h = self.header(EventKind::ProcessFork, child);
        self.feed(KernelEvent::Fork { header: h });
        self
    }

    /// A child its maker made a sibling of itself (`CLONE_PARENT`): the record names the maker.
    pub fn fork_sibling(&mut self, maker: u32, child: u32) -> &mut Self {
        self.starts.insert(child, self.ts + 500);
        self.parents.insert(child, maker);
        let mut h = self.header(EventKind::ProcessFork, child);
        h.flags = monitor_common::FORK_AS_SIBLING;
        self.feed(KernelEvent::Fork { header: h });
        self
    }

    /// A child sharing its maker's descriptor table (`CLONE_FILES`), the record's flags
    /// `response` besides.
    pub fn fork_sharing_descriptors(&mut self, maker: u32, child: u32, response: u32) -> &mut Self {
        self.starts.insert(child, self.ts + 500);
        self.parents.insert(child, maker);
        let mut h = self.header(EventKind::ProcessFork, child);
        h.flags = monitor_common::FORK_SHARES_FILES | response;
        self.feed(KernelEvent::Fork { header: h });
        self
    }

    pub fn exec(
        &mut self,
        pid: u32,
        exe: &str,
        argv: &[&str],
        cwd: &str,
        vars: BTreeMap<String, String>,
    ) -> &mut Self {
        let h = self.header(EventKind::ProcessEnv, pid);
        self.feed(KernelEvent::Env {
            header: h,
            vars,
            total_len: 100,
        });
        let h = self.header(EventKind::ProcessExec, pid);
        self.feed(KernelEvent::Exec {
            header: h,
            exe: exe.into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            filename: exe.into(),
            argv_total_len: 10,
            cwd: cwd.into(),
            exe_ctime_ns: 0,
        });
        self
    }

    /// fork + exec of a program whose file changed just now (written during the job).
    pub fn spawn_written(
        &mut self,
        parent: u32,
        child: u32,
        exe: &str,
        cwd: &str,
        vars: BTreeMap<String, String>,
    ) -> &mut Self {
        self.fork(parent, child);
        let h = self.header(EventKind::ProcessEnv, child);
        self.feed(KernelEvent::Env {
            header: h,
            vars,
            total_len: 100,
        });
        let h = self.header(EventKind::ProcessExec, child);
        let changed = self.ts - 1;
        self.feed_with(
            KernelEvent::Exec {
                header: h,
                exe: exe.into(),
                argv: vec![exe.into()],
                filename: exe.into(),
                argv_total_len: 10,
                cwd: cwd.into(),
                exe_ctime_ns: 0,
            },
            |e| {
                if let Detail::Exec { exe_changed_ns, .. } = &mut e.detail {
                    *exe_changed_ns = Some(changed);
                }
            },
        );
        self
    }

    /// fork + exec, inheriting the parent's environment like a real child does.
    pub fn spawn(
        &mut self,
        parent: u32,
        child: u32,
        exe: &str,
        argv: &[&str],
        cwd: &str,
        vars: BTreeMap<String, String>,
    ) -> &mut Self {
        self.fork(parent, child);
        self.exec(child, exe, argv, cwd, vars)
    }

    pub fn exit(&mut self, pid: u32) -> &mut Self {
        let h = self.header(EventKind::ProcessExit, pid);
        self.feed(KernelEvent::Exit {
            header: h,
            exit_status: 0,
        });
        self
    }

    pub fn connect(&mut self, pid: u32, address: &str, port: u16) -> &mut Self {
        let h = self.header(EventKind::NetConnect, pid);
        self.feed(KernelEvent::Connect {
            header: h,
            fd: 3,
            result: 0,
            sock_type: SOCK_STREAM,
            address: address.parse().unwrap(),
            port,
            via: monitor_common::CONNECT_VIA_SYSCALL,
            family: monitor_common::AF_INET,
            blocked: false,
        });
        self
    }

    /// A DNS message over UDP: an answer naming `name` at `address` read by `pid` (from the
    /// resolver), or with `sent` the question leaving.
    fn dns_message(&mut self, pid: u32, name: &str, address: Option<&str>, sent: bool) {
        use hickory_proto::{
            op::{Message, MessageType, Query},
            rr::{rdata, Name, RData, Record, RecordType},
        };
        let mut m = Message::new();
        m.set_id(7);
        m.set_message_type(if sent {
            MessageType::Query
        } else {
            MessageType::Response
        });
        let owner = Name::from_ascii(name).unwrap();
        m.add_query(Query::query(owner.clone(), RecordType::A));
        if let Some(address) = address {
            m.add_answer(Record::from_rdata(
                owner,
                300,
                RData::A(rdata::A(address.parse().unwrap())),
            ));
        }
        let payload = m.to_vec().unwrap();
        let h = self.header(EventKind::NetDns, pid);
        self.feed(KernelEvent::Dns {
            header: h,
            fd: 4,
            sock_type: monitor_common::SOCK_DGRAM,
            received_len: payload.len() as u32,
            payload,
            truncated: false,
            question: sent,
            from_asked: true,
        });
    }

    /// `pid` resolves `name` to `address` (the question, then the resolver's answer).
    pub fn resolve(&mut self, pid: u32, name: &str, address: &str) -> &mut Self {
        self.dns_message(pid, name, None, true);
        self.dns_message(pid, name, Some(address), false);
        self
    }

    /// A question that leaves and whose answer is never read.
    pub fn ask(&mut self, pid: u32, name: &str) -> &mut Self {
        self.dns_message(pid, name, None, true);
        self
    }

    /// The TLS hello of `pid`'s connection to `address:port`, asking for `sni`.
    pub fn tls(&mut self, pid: u32, address: &str, port: u16, sni: &str) -> &mut Self {
        let h = self.header(EventKind::NetTls, pid);
        self.feed(KernelEvent::TlsHello {
            header: h,
            address: address.parse().unwrap(),
            port,
            payload: crate::event::tls::client_hello(sni),
        });
        self
    }

    /// A destination seen at the kernel's egress hook: `via` is `CONNECT_VIA_OTHER` or
    /// `CONNECT_VIA_SEND`, `blocked` when block mode refused it.
    pub fn egress_hook(
        &mut self,
        pid: u32,
        address: &str,
        port: u16,
        via: u8,
        blocked: bool,
    ) -> &mut Self {
        let h = self.header(EventKind::NetConnect, pid);
        self.feed(KernelEvent::Connect {
            header: h,
            fd: -1,
            result: if blocked { -1 } else { 0 },
            sock_type: if via == monitor_common::CONNECT_VIA_SEND {
                monitor_common::SOCK_DGRAM
            } else {
                SOCK_STREAM
            },
            address: address.parse().unwrap(),
            port,
            via,
            family: monitor_common::AF_INET,
            blocked,
        });
        self
    }

    fn open_with(&mut self, pid: u32, path: &str, f_mode: u32, matched: u32) -> &mut Self {
        self.open_judged(pid, path, f_mode, matched, None)
    }

    /// A read the kernel responded to (`OPEN_KILLED`, `OPEN_WOULD_KILL`, ... in `flags`).
    pub fn read_responded(&mut self, pid: u32, path: &str, flags: u32) -> &mut Self {
        let matched = if path.starts_with("/proc/") {
            monitor_common::MATCH_PROC_OTHER
        } else {
            monitor_common::MATCH_INODE
        };
        self.read_record(pid, path, matched, flags, 0)
    }

    /// Another process's `/proc/<n>/...` file opened by `pid`, the kernel naming its owner
    /// `owner` by the directory's identity (a container's reader: `n` is a pid of its namespace).
    pub fn read_proc_owned_by(&mut self, pid: u32, path: &str, owner: u32) -> &mut Self {
        self.read_record(pid, path, monitor_common::MATCH_PROC_OTHER, 0, owner)
    }

    /// A read-only open's record as the kernel sends it.
    fn read_record(
        &mut self,
        pid: u32,
        path: &str,
        matched: u32,
        flags: u32,
        proc_owner: u32,
    ) -> &mut Self {
        let mut header = self.header(EventKind::FileOpen, pid);
        header.flags = flags;
        self.feed(KernelEvent::Open {
            header,
            path: path.into(),
            f_flags: 0,
            f_mode: 0x1,
            ino: 1,
            dev: 1,
            matched,
            fd: 3,
            proc_owner,
            generation: 0,
        });
        self
    }

    fn open_judged(
        &mut self,
        pid: u32,
        path: &str,
        f_mode: u32,
        matched: u32,
        pth: Option<bool>,
    ) -> &mut Self {
        let h = self.header(EventKind::FileOpen, pid);
        let record = KernelEvent::Open {
            header: h,
            path: path.into(),
            f_flags: 0,
            f_mode,
            ino: 1,
            dev: 1,
            matched,
            fd: 3,
            proc_owner: 0,
            generation: 0,
        };
        self.feed_with(record, |event| {
            if let Detail::Open { pth_executable, .. } = &mut event.detail {
                *pth_executable = pth;
            }
        });
        self
    }

    pub fn read(&mut self, pid: u32, path: &str) -> &mut Self {
        let matched = if path.starts_with("/proc/") {
            monitor_common::MATCH_PROC_OTHER
        } else {
            monitor_common::MATCH_NAME
        };
        self.open_with(pid, path, 0x1, matched)
    }

    /// A name given by rename, link or symlink (`NAME_OP_*`), the kernel's record as sent:
    /// `dir` is the directory of a relative `name` ("" when it could not be resolved).
    pub fn name(
        &mut self,
        pid: u32,
        op: u32,
        dir: &str,
        name: &str,
        from: &str,
        matched: u32,
    ) -> &mut Self {
        let mut h = self.header(EventKind::FileName, pid);
        if !name.starts_with('/') {
            h.flags |= monitor_common::NAME_DIR_FOR_NEW;
            if dir.is_empty() {
                h.flags |= monitor_common::NAME_DIR_UNRESOLVED;
            }
            // Both relative to the same directory (the calls the tests model).
            if !from.starts_with('/') {
                h.flags |= monitor_common::NAME_DIR_FOR_FROM;
            }
        }
        self.feed(KernelEvent::Name {
            header: h,
            op,
            matched,
            dir: dir.into(),
            name: name.into(),
            from: from.into(),
        });
        self
    }

    /// A tamper record the kernel sent for `pid` (`TAMPER_*`).
    pub fn tamper(&mut self, pid: u32, syscall: u32, target: i32, arg: u64) -> &mut Self {
        let header = self.header(EventKind::Tamper, pid);
        self.feed(KernelEvent::Tamper {
            header,
            syscall,
            target,
            arg,
        });
        self
    }

    pub fn write(&mut self, pid: u32, path: &str) -> &mut Self {
        self.open_with(pid, path, 0x2 | 0x10_0000, monitor_common::MATCH_NAME)
    }

    /// A source map read, with what the live agent finds in it.
    pub fn read_map(
        &mut self,
        pid: u32,
        path: &str,
        embeds_sources: bool,
        sources_packed: Option<bool>,
    ) -> &mut Self {
        let h = self.header(EventKind::FileOpen, pid);
        let record = KernelEvent::Open {
            header: h,
            path: path.into(),
            f_flags: 0,
            f_mode: 0x1,
            ino: 1,
            dev: 1,
            matched: monitor_common::MATCH_NAME_SUFFIX,
            fd: 3,
            proc_owner: 0,
            generation: 0,
        };
        self.feed_with(record, |event| {
            if let Detail::Open {
                map_embeds_sources,
                map_sources_packed,
                ..
            } = &mut event.detail
            {
                *map_embeds_sources = Some(embeds_sources);
                *map_sources_packed = sources_packed;
            }
        });
        self
    }

    /// A `.pth` read as Python's site.py does it, with the content verdict the live agent adds.
    pub fn read_pth(&mut self, pid: u32, path: &str, executable: bool) -> &mut Self {
        self.open_judged(
            pid,
            path,
            0x1,
            monitor_common::MATCH_NAME_SUFFIX,
            Some(executable),
        )
    }

    pub fn finish(&mut self) -> &mut Self {
        let f = self.engine.finish();
        self.findings.extend(f);
        self
    }

    pub fn rules(&self) -> Vec<&str> {
        self.findings.iter().map(|f| f.rule.as_str()).collect()
    }

    pub fn only(&self, rule: &str) -> &Finding {
        let matching: Vec<_> = self.findings.iter().filter(|f| f.rule == rule).collect();
        assert_eq!(
            matching.len(),
            1,
            "expected one {rule}: {:#?}",
            self.findings
        );
        matching[0]
    }

    /// Runner.Listener (100) -> Runner.Worker (200): the job's anchor.
    pub fn runner(&mut self) -> &mut Self {
        self.spawn(
            1,
            100,
            "/home/runner/bin/Runner.Listener",
            &["/home/runner/bin/Runner.Listener", "run"],
            "/home/runner",
            env(&[]),
        );
        self.spawn(
            100,
            200,
            "/home/runner/bin/Runner.Worker",
            &[
                "/home/runner/bin/Runner.Worker",
                "spawnclient",
                "110",
                "113",
            ],
            "/home/runner",
            env(&[]),
        )
    }

    /// What the container runtime said, as the agent records it.
    pub fn container_news(
        &mut self,
        change: crate::event::ContainerChange,
        container: crate::containers::ContainerMeta,
    ) -> &mut Self {
        self.container_news_by(change, container, &[])
    }

    /// As `container_news`, with the processes connected to the runtime's socket at the time.
    pub fn container_news_by(
        &mut self,
        change: crate::event::ContainerChange,
        container: crate::containers::ContainerMeta,
        clients: &[u32],
    ) -> &mut Self {
        let requested_by = clients
            .iter()
            .map(|&pid| crate::event::ProcessRef {
                pid,
                start_ticks: self.enricher.table.by_tgid(pid).unwrap().key.start_ticks,
            })
            .collect();
        self.ts += 1_000_000;
        let event = self.enricher.agent_event(
            Detail::Container {
                change,
                container,
                requested_by,
            },
            self.ts,
        );
        let line = serde_json::to_string(&event).unwrap();
        let event: Event = serde_json::from_str(&line).unwrap();
        self.findings.extend(self.engine.on_event(&event));
        self.events.push(event);
        self
    }

    /// A control request as the agent records it (`job_start` anchored at, or `job_end` asked
    /// by, `pid`): the engine's verdict, after it has judged the event.
    pub fn control(&mut self, detail: Detail, pid: u32) -> Result<(), String> {
        self.ts += 1_000_000;
        let event = self
            .enricher
            .control_event(detail, pid, self.ts)
            .expect("a known process");
        let line = serde_json::to_string(&event).unwrap();
        let event: Event = serde_json::from_str(&line).unwrap();
        let verdict = self.engine.job_control_verdict(&event);
        self.findings.extend(self.engine.on_event(&event));
        self.events.push(event);
        verdict
    }

    /// A job-started or job-completed hook as the runner runs it: a child of the Worker
    /// running the monitor with the job's variables (no step's), asking the agent.
    pub fn hook(&mut self, pid: u32, started: bool) -> Result<(), String> {
        let mut vars = github_env("");
        vars.remove("GITHUB_ACTION");
        let which = if started {
            "job-started"
        } else {
            "job-completed"
        };
        self.spawn(
            200,
            pid,
            MONITOR,
            &["monitor", "hook", which],
            WORKSPACE,
            vars.clone(),
        );
        let start_ticks = self.enricher.table.by_tgid(pid).unwrap().key.start_ticks;
        let job = crate::ci::identity_from_env(&vars).unwrap().0;
        if started {
            self.control(
                Detail::JobStart {
                    job,
                    via: "hook".into(),
                    requested_by_pid: pid,
                    requested_by_uid: 1001,
                    requested_by_start_ticks: start_ticks,
                },
                200,
            )
        } else {
            self.control(
                Detail::JobEnd {
                    job: job.key,
                    via: "hook".into(),
                },
                pid,
            )
        }
    }

    /// A `run:` step: the Worker's child bash running the step script.
    pub fn run_step(&mut self, pid: u32, step: &str) -> &mut Self {
        self.spawn(
            200,
            pid,
            "/usr/bin/bash",
            &["bash", "-e", "/home/runner/work/_temp/0a1b.sh"],
            WORKSPACE,
            github_env(step),
        )
    }
}

pub(crate) fn empty_profile() -> Profile {
    Profile::parse("version: 1\n", "t.yml").unwrap()
}

fn profile(text: &str) -> Profile {
    Profile::parse(text, "t.yml").unwrap()
}

const NPM: &str = "/usr/bin/node";
const NPM_CLI: &str = "/usr/lib/node_modules/npm/bin/npm-cli.js";

/// The variables npm gives a dependency's postinstall script (`package` 1.0.0).
pub(crate) fn postinstall_of(package: &str) -> BTreeMap<String, String> {
    env(&[
        ("npm_lifecycle_event", "postinstall"),
        ("npm_package_name", package),
        ("npm_package_version", "1.0.0"),
    ])
}

/// npm install in a `run:` step; the dependency `evil-pkg`'s postinstall reads ~/.npmrc and
/// connects out (Shai-Hulud's shape).
pub(crate) fn npm_stealer(sim: &mut Sim) {
    sim.runner().run_step(300, "__run");
    let mut npm_env = github_env("__run");
    sim.spawn(
        300,
        310,
        NPM,
        &["node", NPM_CLI, "install"],
        WORKSPACE,
        npm_env.clone(),
    );
    sim.read(310, &format!("{HOME}/.npmrc")); // npm's own read: fine
    npm_env.extend(postinstall_of("evil-pkg"));
    let hook_dir = format!("{WORKSPACE}/node_modules/evil-pkg");
    sim.spawn(
        310,
        320,
        "/usr/bin/dash",
        &["sh", "-c", "node steal.js"],
        &hook_dir,
        npm_env.clone(),
    );
    sim.spawn(320, 330, NPM, &["node", "steal.js"], &hook_dir, npm_env);
    sim.read(330, &format!("{HOME}/.npmrc"));
    sim.connect(330, "127.0.0.1", 9999);
    sim.connect(330, "127.0.0.1", 9999); // repeated: reported once
    sim.exit(330).exit(320).exit(310).exit(300).exit(200);
    sim.finish();
}

mod bounds;
mod containers;
mod defences;
mod egress_routes;
mod exfil_services;
mod names;
mod real_builds;
mod responses;
mod runner_dirs;
mod runtime_services;
mod scenarios;
mod sources;
