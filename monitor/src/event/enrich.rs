//! The enricher: decoded kernel records plus what the process table knows (executable, argv,
//! ancestry) become [`Event`]s, numbered in one stream with the agent's own events.

use std::collections::{BTreeMap, HashMap, HashSet};

use monitor_common::{
    EXEC_ARGV_TRUNCATED, EXEC_CWD_TRUNCATED, EXEC_CWD_UNRESOLVED, EXEC_EXE_TRUNCATED,
    EXEC_EXE_UNRESOLVED, EXEC_FILENAME_TRUNCATED, MATCH_ALL, MATCH_NAME, MATCH_NAME_PREFIX,
    MATCH_NAME_SUFFIX, MATCH_PARENT_DIR, MATCH_PROC_OTHER, OPEN_PATH_TRUNCATED,
    OPEN_PATH_UNRESOLVED, OPEN_VIA_FENTRY, OPEN_VIA_IO_URING, OPEN_VIA_LSM, SOCK_DGRAM,
    SOCK_STREAM,
};

use super::{
    dns, program_path, Access, Ancestor, ConnectVia, Detail, Event, KernelResponse, MatchReason,
    NameOp, OpenVia, ProcessInfo, Protocol, TamperSyscall, Transport, WallClock, ANCESTRY_IN_EVENT,
    JSON_SCHEMA_VERSION,
};
use crate::{
    decode::{Header, KernelEvent},
    process_tree::{Process, ProcessKey, ProcessTable},
    redact::redact_path,
};

/// Env records waiting for their exec record; more than this means exec records were lost.
const MAX_PENDING_ENV: usize = 4096;

/// Turns decoded kernel events into enriched events, keeping the process table up to date.
/// What a file reader said of a file lately, by its identity and version (modification time
/// and size): reading it again is what the next agent on the machine sees as an open of it,
/// and reads it in turn; two agents would read a `.pth` back and forth for ever. A file
/// rewritten has another version and is read again. Bounded, each answer kept 10 s.
pub struct ReadCache<T> {
    entries: HashMap<(u32, u64), ((i64, i64, u64), std::time::Instant, T)>,
}

impl<T> Default for ReadCache<T> {
    fn default() -> Self {
        ReadCache {
            entries: HashMap::new(),
        }
    }
}

const READ_CACHE_KEEP: std::time::Duration = std::time::Duration::from_secs(10);
const READ_CACHE_MAX: usize = 4_096;

impl<T: Clone> ReadCache<T> {
    pub fn get_or_read(&mut self, key: (u32, u64), path: &str, read: fn(&str) -> T) -> T {
        use std::os::unix::fs::MetadataExt as _;
        let version = std::fs::metadata(path)
            .ok()
            .map(|m| (m.mtime(), m.mtime_nsec(), m.len()));
        if let (Some(version), Some((seen, at, answer))) = (version, self.entries.get(&key)) {
            if *seen == version && at.elapsed() < READ_CACHE_KEEP {
                return answer.clone();
            }
        }
        let answer = read(path);
        if let Some(version) = version {
            if self.entries.len() >= READ_CACHE_MAX {
                self.entries
                    .retain(|_, (_, at, _)| at.elapsed() < READ_CACHE_KEEP);
                if self.entries.len() >= READ_CACHE_MAX {
                    self.entries.clear();
                }
            }
            self.entries
                .insert(key, (version, std::time::Instant::now(), answer.clone()));
        }
        answer
    }
}

/// See `Enricher::identity_check`: (watched path, opened path, identity, when the identity was
/// last read as the watched file's).
pub type IdentityCheck = fn(&str, &str, (u32, u64), std::time::SystemTime) -> bool;

/// A watched file known by identity: its path, when that identity was last read as its, and
/// its inode's generation then (None where the file system did not say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub path: String,
    pub seen_at: std::time::SystemTime,
    pub generation: Option<u32>,
}

/// How long after connecting to the runtime a process counts as the client of what the runtime
/// starts (`docker exec` asks within milliseconds of connecting; one still connected later is
/// found connected).
const RUNTIME_CLIENT_WINDOW_NS: u64 = 30_000_000_000;
/// Reborn identities kept at once.
const MAX_REBORN: usize = 4096;
/// Runtime clients' connections kept at once.
const MAX_RUNTIME_CONNECTS: usize = 1024;

pub struct Enricher {
    pub table: ProcessTable,
    clock: WallClock,
    seq: u64,
    /// Kept env keys of execs whose exec record has not arrived yet, by thread id.
    pending_env: HashMap<u32, BTreeMap<String, String>>,
    /// Reads the content a `.pth` open needs judged (live: the file; replay: nothing).
    pth_reader: Option<fn(&str) -> Option<bool>>,
    /// Reads what a source map reveals (live: the file; replay: nothing).
    map_reader: Option<fn(&str) -> Option<crate::rules::packaging::MapFacts>>,
    /// An executable's change time, Unix ns (live: stat; replay: nothing).
    exe_changed: Option<fn(&str) -> Option<i128>>,
    /// What the readers said of files lately, by identity and version (see `ReadCache`).
    pth_reads: ReadCache<Option<bool>>,
    map_reads: ReadCache<Option<crate::rules::packaging::MapFacts>>,
    /// Whether a file opened under another name than a watched file's, with the watched file's
    /// identity in `identities`, is still that file (live: see `Identities::still_that_file`;
    /// replay: trusted): a watched file removed since the table was read leaves its identity
    /// there, and the file system gives the number to the next file made anywhere.
    identity_check: Option<IdentityCheck>,
    /// DNS messages seen (questions leaving, responses arriving) that did not parse (counted, not
    /// reported).
    pub dns_unparsed: u64,
    /// The kernel marks answers that came from where their question went (its packet programs
    /// are attached): an unmarked answer is forged.
    dns_answers_checked: bool,
    /// The watched files the kernel knows by identity ((dev, ino) -> path), as the agent last
    /// pushed them (agent/identities.rs).
    pub identities: HashMap<(u32, u64), Watched>,
    /// Watched identities a file created since took (an open that made the file, `O_CREAT`,
    /// with a watched file's device and inode number under another name): the number of a
    /// removed file, given to a new one. When, as wall time.
    reborn: HashMap<(u32, u64), std::time::SystemTime>,
    /// Which container each cgroup id is (None: none), learnt once per id (live: from
    /// `/proc/<pid>/cgroup`; replay: the events say it).
    container_of_cgroup: HashMap<u64, Option<String>>,
    container_reader: Option<ContainerReader>,
    /// The container runtimes' daemons (the processes listening on their API sockets), with
    /// their own cgroup paths: a process one of them started, in a cgroup of its own, is in a
    /// container whatever the runtime named it (`container_of`).
    runtime_daemons: HashMap<ProcessKey, Daemon>,
    /// Cgroups that are a runtime daemon's own: a container left in one (`ctr run --cgroup ""`)
    /// is told by its mount namespace, process by process (`process_containers`).
    daemon_cgroups: HashSet<u64>,
    /// Processes in a daemon's cgroup found in a container by their mount namespace, and their
    /// descendants.
    process_containers: HashMap<ProcessKey, String>,
    /// Each container's own file system view: the mount namespace its first program ran in
    /// (`ProcessInfo::in_container_view`).
    container_views: HashMap<String, u32>,
    /// Containers told apart by mount namespace instead of cgroup: hosts with no cgroup v2
    /// hierarchy, where every record's cgroup id is the unified root's
    /// (`mount_namespace_key`, against `host_mnt_ns`).
    containers_by_mount_namespace: bool,
    /// The host's mount namespace (0: unknown): a program executed in it is not a container's
    /// own, whatever cgroup it is in (a runtime's `runc init`, put in the container's cgroup
    /// before it executed, when it is slow).
    host_mnt_ns: u32,
    /// Containers met that no runtime API describes (`started_by_a_runtime`), for the agent to
    /// describe from the kernel's view of them (`take_new_containers`).
    new_containers: Vec<NewContainer>,
    /// Containers no runtime API describes, met but not yet at their first program: their
    /// name and the daemon that started them.
    to_describe: HashMap<String, (String, String)>,
    /// OCI bundles a runtime daemon's descendant (runc, crun) was just started with, for the
    /// agent to read at once (`take_new_bundles`).
    new_bundles: Vec<String>,
    /// The live processes of each container the kernel's view described (no runtime API says
    /// when those end): the last one's exit ends it (`take_ended_containers`).
    kernel_containers: HashMap<String, HashSet<ProcessKey>>,
    ended_containers: Vec<String>,
    /// Who is connected to the container runtime's socket now (live: `containers::clients`).
    runtime_clients: Option<Box<dyn Fn() -> Vec<u32> + Send>>,
    /// The runtime sockets the kernel recognises (`RuntimeClient` records' numbers), by name.
    runtime_sockets: Vec<String>,
    /// Processes seen connecting to a runtime socket (kernel records, in event order), with
    /// when they last did: clients even when they have hung up and exited by the time the agent
    /// gets to what the runtime started for them.
    runtime_connects: HashMap<ProcessKey, u64>,
}

/// The bundle directory in an OCI runtime's arguments (`--bundle X`, `--bundle=X`, `-b X`),
/// when absolute (a relative one is the runtime's working directory's, not the agent's).
fn bundle_argument(argv: &[String]) -> Option<String> {
    let mut args = argv.iter();
    while let Some(arg) = args.next() {
        let dir = if let Some(dir) = arg.strip_prefix("--bundle=") {
            Some(dir.to_string())
        } else if arg == "--bundle" || arg == "-b" {
            args.next().cloned()
        } else {
            None
        };
        if let Some(dir) = dir {
            return dir.starts_with('/').then_some(dir);
        }
    }
    None
}

/// A container runtime's daemon: its cgroup path and mount namespace.
#[derive(Debug, Clone)]
struct Daemon {
    path: String,
    mount_namespace: Option<u64>,
}

/// A container a runtime daemon started that no runtime API describes, as first met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewContainer {
    pub id: String,
    /// The name its runtime gave it (its cgroup's last component).
    pub name: String,
    /// The process it was met through (still running, most likely), and its start.
    pub pid: u32,
    pub start_ticks: u64,
    /// The daemon that started it, by its program's name.
    pub runtime: String,
    /// The runtime's clients then: who asked for it.
    pub clients: Vec<crate::event::ProcessRef>,
    /// The OCI bundle its runtime (runc, crun) was given (`--bundle`), as an ancestor's
    /// arguments say: the container's declared settings, there until it is deleted.
    pub bundle: Option<String>,
}

/// Where a process's cgroup places it, by pid: `None` not known (gone).
pub type ContainerReader = fn(u32) -> Option<crate::containers::CgroupPlace>;

/// Cgroups whose container is remembered; past it the memory starts again (cgroups come and go
/// with containers and services).
const MAX_CGROUPS_KNOWN: usize = 16_384;
/// Containers waiting for their first program to be described.
const MAX_NEW_CONTAINERS: usize = 1024;
/// Processes remembered in containers found by their mount namespace.
const MAX_PROCESS_CONTAINERS: usize = 16_384;
/// Containers whose mount namespace is kept (`container_views`).
const MAX_CONTAINER_VIEWS: usize = 4096;
/// Runtime daemons remembered (the current ones and those restarted since).
const MAX_RUNTIME_DAEMONS: usize = 64;

impl Enricher {
    pub fn new(table: ProcessTable, clock: WallClock) -> Self {
        Self {
            table,
            clock,
            seq: 0,
            pending_env: HashMap::new(),
            pth_reader: None,
            map_reader: None,
            identity_check: None,
            pth_reads: ReadCache::default(),
            map_reads: ReadCache::default(),
            exe_changed: None,
            dns_unparsed: 0,
            dns_answers_checked: false,
            identities: HashMap::new(),
            reborn: HashMap::new(),
            container_of_cgroup: HashMap::new(),
            container_reader: None,
            runtime_daemons: HashMap::new(),
            daemon_cgroups: HashSet::new(),
            process_containers: HashMap::new(),
            container_views: HashMap::new(),
            containers_by_mount_namespace: false,
            host_mnt_ns: 0,
            new_containers: Vec::new(),
            to_describe: HashMap::new(),
            new_bundles: Vec::new(),
            kernel_containers: HashMap::new(),
            ended_containers: Vec::new(),
            runtime_clients: None,
            runtime_sockets: Vec::new(),
            runtime_connects: HashMap::new(),
        }
    }

    /// Lets the enricher name who asked the runtime for a program it starts in a container.
    pub fn with_runtime_clients(mut self, clients: Box<dyn Fn() -> Vec<u32> + Send>) -> Self {
        self.runtime_clients = Some(clients);
        self
    }

    /// The host's mount namespace (`host_mnt_ns`).
    pub fn with_host_mount_namespace(mut self, host_mnt_ns: u32) -> Self {
        self.host_mnt_ns = host_mnt_ns;
        self
    }

    /// Tell containers apart by their mount namespace (see `mount_namespace_key`), the host's
    /// being the one `with_host_mount_namespace` gave.
    pub fn with_containers_by_mount_namespace(mut self) -> Self {
        self.containers_by_mount_namespace = true;
        self
    }

    /// Names the runtime sockets the kernel was given, in the order of their numbers.
    pub fn with_runtime_sockets(mut self, names: Vec<String>) -> Self {
        self.runtime_sockets = names;
        self
    }

    /// The runtime's clients, when `key` is a program the runtime just started in a container
    /// (its parent's program was executed outside it: runc): a container's first program, or a
    /// `docker exec`'s. Those the kernel saw connect to the runtime within
    /// `RUNTIME_CLIENT_WINDOW_NS` before it and not exited by then (in event order: a client
    /// that hung up and exited before the agent got here is still named), and those connected
    /// now (`runtime_clients`: a connection older than the window, or one the kernel could not
    /// follow).
    fn runtime_clients_for(
        &mut self,
        h: &Header,
        key: ProcessKey,
    ) -> Vec<crate::event::ProcessRef> {
        if (self.runtime_clients.is_none() && self.runtime_connects.is_empty())
            || self.container_of(h.cgroup_id, key).is_none()
        {
            return Vec::new();
        }
        // The parent's program was executed in this container: a container's own process.
        let parent_exec_cgroup = self
            .table
            .get(&key)
            .and_then(|p| p.parent)
            .and_then(|k| self.table.get(&k))
            // Known only from /proc (running before the agent): its program's place is not
            // known; taken as the container's own (not asked about at every exec).
            .map(|p| {
                if p.seeded && p.exec_cgroup_id == 0 {
                    h.cgroup_id
                } else {
                    p.exec_cgroup_id
                }
            });
        if parent_exec_cgroup == Some(h.cgroup_id) {
            return Vec::new();
        }
        self.clients_at(h.ts_ns)
    }

    /// The runtime's clients at `ts_ns`: those the kernel saw connect within
    /// `RUNTIME_CLIENT_WINDOW_NS` before it and not exited by then, and those connected now.
    fn clients_at(&mut self, ts_ns: u64) -> Vec<crate::event::ProcessRef> {
        let mut clients: Vec<crate::event::ProcessRef> = self
            .runtime_connects
            .iter()
            .filter(|(key, at)| {
                ts_ns.saturating_sub(**at) <= RUNTIME_CLIENT_WINDOW_NS
                    && self
                        .table
                        .get(key)
                        .is_some_and(|p| p.exited_at_ns.is_none())
            })
            .map(|(key, _)| crate::event::ProcessRef {
                pid: key.tgid,
                start_ticks: key.start_ticks,
            })
            .collect();
        let pids = self
            .runtime_clients
            .as_ref()
            .map(|f| f())
            .unwrap_or_default();
        for now in self.process_refs(pids) {
            if !clients.contains(&now) {
                clients.push(now);
            }
        }
        clients.sort_by_key(|c| (c.start_ticks, c.pid));
        clients
    }

    /// Keeps a runtime client's connection (bounded: the oldest forgotten first).
    fn runtime_connected(&mut self, key: ProcessKey, ts_ns: u64) {
        if self.runtime_connects.len() >= MAX_RUNTIME_CONNECTS {
            self.runtime_connects
                .retain(|_, at| ts_ns.saturating_sub(*at) <= RUNTIME_CLIENT_WINDOW_NS);
            if self.runtime_connects.len() >= MAX_RUNTIME_CONNECTS {
                if let Some(oldest) = self
                    .runtime_connects
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(k, _)| *k)
                {
                    self.runtime_connects.remove(&oldest);
                }
            }
        }
        self.runtime_connects.insert(key, ts_ns);
    }

    /// These pids as processes named across pid reuse (those gone already are left out).
    pub fn process_refs(&mut self, pids: Vec<u32>) -> Vec<crate::event::ProcessRef> {
        pids.into_iter()
            .filter_map(|pid| {
                Some(crate::event::ProcessRef {
                    pid,
                    start_ticks: self.process_key(pid)?.start_ticks,
                })
            })
            .collect()
    }

    /// Lets the enricher tell which container a process runs in (the live agent reads
    /// `/proc/<pid>/cgroup`, see `containers`).
    pub fn with_container_reader(mut self, reader: ContainerReader) -> Self {
        self.container_reader = Some(reader);
        self
    }

    /// The container of cgroup `cgroup_id`, learnt from its process `key` the first time the id
    /// is met: a container the path names by a runtime's id layout, or a cgroup of its own that
    /// a runtime daemon's descendant was put in (`ctr run IMAGE x1`, `runc run`, BuildKit: ids
    /// a step chooses, which no layout can name).
    fn container_of(&mut self, cgroup_id: u64, key: ProcessKey) -> Option<String> {
        if self.is_the_hosts_namespace(cgroup_id) {
            // No container, whatever cgroup a process of it is in (a runtime's set-up before
            // it enters the container's namespace, a host process moved there). Never asked,
            // so it is never taken for one.
            return None;
        }
        if let Some(known) = self.container_of_cgroup.get(&cgroup_id) {
            if known.is_none() && self.daemon_cgroups.contains(&cgroup_id) {
                return self.container_by_namespace(key);
            }
            return known.clone();
        }
        let reader = self.container_reader?;
        // The process may be gone already: nothing is learnt then, the next one asks again.
        let place = reader(key.tgid)?;
        if self.runtime_daemons.values().any(|d| d.path == place.path) && place.path != "/" {
            self.daemon_cgroups.insert(cgroup_id);
        }
        let found = match place.container {
            Some(id) => {
                // Named as Docker names its containers, but started by a daemon: if Docker's API
                // never describes it (`ctr run ... <64 hex digits>`), the agent will.
                match self.started_by_a_runtime(key, &place.path, cgroup_id) {
                    Some((_, _, daemon)) => {
                        self.describe_at_first_program(&id, String::new(), daemon)
                    }
                    // No daemon made it (Podman without its service: `podman run` is the
                    // step's own child, conmon and runc below it): described all the same when
                    // Docker's API does not.
                    None => self.queue_description(&id, String::new(), String::new()),
                }
                Some(id)
            }
            None => {
                self.started_by_a_runtime(key, &place.path, cgroup_id)
                    .map(|(id, name, daemon)| {
                        self.describe_at_first_program(&id, name, daemon);
                        id
                    })
            }
        };
        if self.container_of_cgroup.len() >= MAX_CGROUPS_KNOWN {
            self.container_of_cgroup.clear();
        }
        self.container_of_cgroup.insert(cgroup_id, found.clone());
        found
    }

    /// The container `key` runs in when a runtime daemon started it into a cgroup of its own
    /// (at `path`): its nearest daemon ancestor's cgroup is another. A daemon's own helpers
    /// (shims, proxies) stay in its cgroup; the root cgroup is nobody's container.
    /// Its id is its cgroup's path's last component and the cgroup's id (`x1@5678`: names repeat
    /// across namespaces and runs, cgroups do not), its name the component.
    fn started_by_a_runtime(
        &self,
        key: ProcessKey,
        path: &str,
        cgroup_id: u64,
    ) -> Option<(String, String, ProcessKey)> {
        let daemon = self.nearest_daemon(key)?;
        let (id, name) = self.in_a_cgroup_of_its_own(daemon, path, cgroup_id)?;
        Some((id, name, daemon))
    }

    /// With containers told by mount namespace, `cgroup_id` is the host's namespace's key.
    fn is_the_hosts_namespace(&self, cgroup_id: u64) -> bool {
        self.containers_by_mount_namespace && cgroup_id & MOUNT_NAMESPACE_KEY == 0
    }

    /// The runtime daemon `key` descends from, the nearest (its process table ancestry, bounded):
    /// none for a daemon itself, or when no daemon is known.
    fn nearest_daemon(&self, key: ProcessKey) -> Option<ProcessKey> {
        if self.runtime_daemons.is_empty() || self.runtime_daemons.contains_key(&key) {
            return None;
        }
        let mut at = self.table.get(&key)?.parent;
        for _ in 0..crate::process_tree::MAX_ANCESTRY {
            let ancestor = at?;
            if self.runtime_daemons.contains_key(&ancestor) {
                return Some(ancestor);
            }
            at = self.table.get(&ancestor)?.parent;
        }
        None
    }

    /// The container (id, name) of cgroup `cgroup_id` at `path`, which `daemon`'s descendant
    /// runs in: none when that is the daemon's own cgroup, or the root.
    fn in_a_cgroup_of_its_own(
        &self,
        daemon: ProcessKey,
        path: &str,
        cgroup_id: u64,
    ) -> Option<(String, String)> {
        if path == "/" || self.runtime_daemons.get(&daemon)?.path == path {
            return None;
        }
        let name = crate::containers::container_named_by_path(path)?;
        Some((format!("{name}@{cgroup_id}"), name))
    }

    /// A program a daemon's descendant executed in a cgroup taken for no container: asked
    /// again (the cgroup's first process may have been one the daemon did not start, put there
    /// to hide what the runtime puts there later; or its ancestry was not known yet).
    fn taken_for_no_container(&mut self, cgroup_id: u64, key: ProcessKey) -> Option<String> {
        if self.daemon_cgroups.contains(&cgroup_id) || self.is_the_hosts_namespace(cgroup_id) {
            return None;
        }
        // Cheap first: no daemon above it, no question.
        let daemon = self.nearest_daemon(key)?;
        let place = (self.container_reader?)(key.tgid)?;
        // Named by a runtime's id layout now (met first before the runtime moved it: a
        // namespace the runtime made before it placed the process, `mount_namespace_key`).
        let (id, name) = match place.container {
            Some(id) => (id, String::new()),
            None => self.in_a_cgroup_of_its_own(daemon, &place.path, cgroup_id)?,
        };
        self.container_of_cgroup.insert(cgroup_id, Some(id.clone()));
        self.describe_at_first_program(&id, name, daemon);
        Some(id)
    }

    /// The container of a process in a daemon's own cgroup: the one it or its parent was
    /// found in (`in_the_daemons_cgroup`).
    fn container_by_namespace(&mut self, key: ProcessKey) -> Option<String> {
        if let Some(id) = self.process_containers.get(&key) {
            return Some(id.clone());
        }
        let parent = self.table.get(&key)?.parent?;
        let id = self.process_containers.get(&parent)?.clone();
        self.remember_process_container(key, id.clone());
        Some(id)
    }

    fn remember_process_container(&mut self, key: ProcessKey, id: String) {
        if self.process_containers.len() >= MAX_PROCESS_CONTAINERS {
            self.process_containers
                .retain(|k, _| self.table.get(k).is_some_and(|p| p.exited_at_ns.is_none()));
            if self.process_containers.len() >= MAX_PROCESS_CONTAINERS {
                self.process_containers.clear();
            }
        }
        self.process_containers.insert(key, id);
    }

    /// A program executed in a daemon's own cgroup by a daemon's descendant, in another mount
    /// namespace than the daemon's: a container the runtime made without a cgroup of its own
    /// (`ctr run --cgroup ""`), named by its mount namespace. Its runtime's helpers (shims,
    /// runc) run in the daemon's namespace.
    fn in_the_daemons_cgroup(
        &mut self,
        cgroup_id: u64,
        mnt_ns: u32,
        key: ProcessKey,
    ) -> Option<String> {
        if !self.daemon_cgroups.contains(&cgroup_id) {
            return None;
        }
        let daemon = self.nearest_daemon(key)?;
        let daemon_namespace = self.runtime_daemons.get(&daemon)?.mount_namespace?;
        // The kernel's word at the exec; /proc (later, and only while the process lives) when
        // the kernel's layout was not known.
        let namespace = match mnt_ns {
            0 => (self.container_reader?)(key.tgid)?.mount_namespace?,
            known => u64::from(known),
        };
        if namespace == daemon_namespace {
            return None;
        }
        let name = format!("mnt-{namespace}");
        let id = format!("{name}@{cgroup_id}");
        self.remember_process_container(key, id.clone());
        self.describe_at_first_program(&id, name, daemon);
        Some(id)
    }

    /// Container `id` (named `name`), which `daemon` started, is to be described at its first
    /// program: now it is most likely the runtime's own set-up (runc init, before it entered
    /// the container's root and dropped capabilities), which would show the host's.
    fn describe_at_first_program(&mut self, id: &str, name: String, daemon: ProcessKey) {
        let runtime = self
            .table
            .get(&daemon)
            .map(|d| d.comm.clone())
            .unwrap_or_default();
        self.queue_description(id, name, runtime);
    }

    fn queue_description(&mut self, id: &str, name: String, runtime: String) {
        // Full (containers met that never executed a program: running before the agent, or
        // Docker's, described by its API): one of them makes room.
        if self.to_describe.len() >= MAX_NEW_CONTAINERS {
            if let Some(old) = self.to_describe.keys().next().cloned() {
                self.to_describe.remove(&old);
            }
        }
        self.to_describe.insert(id.to_string(), (name, runtime));
    }

    /// A program started in container `id`: the first one of a container no runtime API
    /// describes is the moment to read what it is (`take_new_containers`), with the runtime's
    /// clients then.
    fn first_program_in(&mut self, id: &str, pid: u32, cgroup_id: u64, ts_ns: u64) {
        let Some((name, runtime)) = self.to_describe.remove(id) else {
            return;
        };
        let mut clients = self.clients_at(ts_ns);
        if clients.is_empty() {
            // Nobody asked a daemon: whoever started the runtime did (`podman run`), among the
            // first program's ancestors.
            clients = self
                .ancestors_outside(pid, cgroup_id)
                .into_iter()
                .map(|(key, _)| crate::event::ProcessRef {
                    pid: key.tgid,
                    start_ticks: key.start_ticks,
                })
                .collect();
        }
        let bundle = self.bundle_of(pid, cgroup_id);
        if self.kernel_containers.len() < MAX_NEW_CONTAINERS {
            self.kernel_containers
                .insert(id.to_string(), HashSet::new());
        }
        let start_ticks = self.table.by_tgid(pid).map_or(0, |p| p.key.start_ticks);
        self.new_containers.push(NewContainer {
            id: id.to_string(),
            name,
            pid,
            start_ticks,
            runtime,
            clients,
            bundle,
        });
    }

    /// The ancestors of `pid`, nearest first, below the nearest runtime daemon, whose programs
    /// were executed outside cgroup `cgroup_id`: the runtime's own programs (runc, conmon) and,
    /// with no daemon, whoever started them (`podman run`).
    fn ancestors_outside(&self, pid: u32, cgroup_id: u64) -> Vec<(ProcessKey, &Process)> {
        let mut found = Vec::new();
        let mut at = self.table.by_tgid(pid).and_then(|p| p.parent);
        for _ in 0..crate::process_tree::MAX_ANCESTRY {
            let Some(key) = at else { break };
            if self.runtime_daemons.contains_key(&key) {
                break;
            }
            let Some(process) = self.table.get(&key) else {
                break;
            };
            if process.exec_cgroup_id != cgroup_id {
                found.push((key, process));
            }
            at = process.parent;
        }
        found
    }

    /// The `--bundle` (`-b`) an ancestor of `pid` was run with (the OCI runtime that made it).
    /// Only the runtime's own programs are asked: ancestors of the container's first program,
    /// below the daemon, whose programs were executed outside the container's cgroup (the
    /// container's processes could name any directory).
    fn bundle_of(&self, pid: u32, cgroup_id: u64) -> Option<String> {
        self.ancestors_outside(pid, cgroup_id)
            .into_iter()
            .find_map(|(_, process)| bundle_argument(&process.argv))
    }

    /// A program a runtime daemon's descendant executed with a bundle (`runc create --bundle
    /// X`): the bundle, to be read now, while it is surely there.
    fn runtime_started_with_a_bundle(&mut self, key: ProcessKey) {
        if self.new_bundles.len() >= MAX_NEW_CONTAINERS {
            return;
        }
        let Some(bundle) = self.table.get(&key).and_then(|p| bundle_argument(&p.argv)) else {
            return;
        };
        if self.nearest_daemon(key).is_some() {
            self.new_bundles.push(bundle);
        }
    }

    /// The first program executed in container `id` runs in the container's own view of the
    /// file system (the runtime made its mount namespace before executing it): remembered, so
    /// its later processes are told from host processes moved into its cgroup.
    fn learn_container_view(&mut self, id: &str, mnt_ns: u32) {
        if mnt_ns == 0 || self.container_views.contains_key(id) {
            return;
        }
        if self.container_views.len() >= MAX_CONTAINER_VIEWS {
            // Containers long gone (Docker's end is not seen here): start again. The cost is
            // a container's later host-placed processes not named with it, never a silence.
            self.container_views.clear();
        }
        self.container_views.insert(id.to_string(), mnt_ns);
    }

    /// Containers the kernel's view described whose last process has exited since this was
    /// last asked.
    pub fn take_ended_containers(&mut self) -> Vec<String> {
        std::mem::take(&mut self.ended_containers)
    }

    /// Bundles runtimes were started with since this was last asked (`runtime_started_with_a_bundle`).
    pub fn take_new_bundles(&mut self) -> Vec<String> {
        std::mem::take(&mut self.new_bundles)
    }

    /// Containers met since this was last asked that no runtime API describes.
    pub fn take_new_containers(&mut self) -> Vec<NewContainer> {
        std::mem::take(&mut self.new_containers)
    }

    /// The runtime daemons are now these processes (the agent looks again when a runtime's
    /// socket changes). Earlier ones are kept (bounded): a restarted containerd leaves its
    /// running containers' shims descended from the old one. Cgroups taken for no container are
    /// asked again.
    pub fn set_runtime_daemons(&mut self, pids: &[u32]) {
        let Some(reader) = self.container_reader else {
            return;
        };
        if self.runtime_daemons.len() + pids.len() > MAX_RUNTIME_DAEMONS {
            self.runtime_daemons.clear();
        }
        for &pid in pids {
            if let (Some(key), Some(place)) = (self.process_key(pid), reader(pid)) {
                self.runtime_daemons.insert(
                    key,
                    Daemon {
                        path: place.path,
                        mount_namespace: place.mount_namespace,
                    },
                );
            }
        }
        self.container_of_cgroup.retain(|_, c| c.is_some());
        self.daemon_cgroups.clear();
    }

    /// An event the agent itself makes (what the container runtime said), stamped `ts_ns`.
    pub fn agent_event(&mut self, detail: Detail, ts_ns: u64) -> Event {
        let pid = std::process::id();
        let key = self.process_key(pid);
        let p = key.and_then(|k| self.table.get(&k));
        let process = ProcessInfo {
            pid,
            tid: pid,
            ppid: p.map_or(0, |p| p.ppid),
            start_ticks: key.map_or(0, |k| k.start_ticks),
            uid: 0,
            gid: 0,
            comm: p.map(|p| p.comm.clone()).unwrap_or_default(),
            exe: p.and_then(|p| p.exe.clone()),
            argv: Vec::new().into(),
            argv_truncated: false,
            cgroup_id: 0,
            mnt_ns: 0,
            container: None,
            in_container_view: false,
        };
        self.stamp(detail, process, ts_ns, Vec::new())
    }

    /// The next event of the stream, for a record the agent made rather than the kernel.
    fn stamp(
        &mut self,
        detail: Detail,
        process: ProcessInfo,
        ts_ns: u64,
        ancestry: Vec<crate::event::Ancestor>,
    ) -> Event {
        self.seq += 1;
        Event {
            schema: JSON_SCHEMA_VERSION,
            seq: self.seq,
            time: self.clock.format(ts_ns),
            ts_ns,
            detail,
            process,
            ancestry,
        }
    }

    /// Says the kernel checks DNS answers against their questions (see `dns_answers_checked`).
    pub fn with_dns_answers_checked(mut self, checked: bool) -> Self {
        self.dns_answers_checked = checked;
        self
    }

    /// Lets the enricher stamp execs with their executable's change time.
    pub fn with_exe_changed(mut self, stat: fn(&str) -> Option<i128>) -> Self {
        self.exe_changed = Some(stat);
        self
    }

    /// Lets the enricher check a watched file's identity against the file system before it
    /// says a file is that one under another name (the live agent does).
    pub fn with_identity_check(mut self, check: IdentityCheck) -> Self {
        self.identity_check = Some(check);
        self
    }

    /// Lets the enricher judge `.pth` files by reading them (the live agent does; tests need not).
    pub fn with_pth_reader(mut self, reader: fn(&str) -> Option<bool>) -> Self {
        self.pth_reader = Some(reader);
        self
    }

    /// Lets the enricher judge source maps read by anything by whether they embed their
    /// sources (the live agent does; tests need not).
    pub fn with_map_reader(
        mut self,
        reader: fn(&str) -> Option<crate::rules::packaging::MapFacts>,
    ) -> Self {
        self.map_reader = Some(reader);
        self
    }

    /// Enriches one kernel record; `None` for records that only complete a later one (env).
    pub fn enrich(&mut self, mut event: KernelEvent) -> Option<Event> {
        if self.containers_by_mount_namespace {
            let header = event.header_mut();
            header.cgroup_id =
                mount_namespace_key(header.mnt_ns, header.mnt_ns_id, self.host_mnt_ns);
        }
        let header = event.header().clone();
        // A refused exec (BPF-LSM `bprm_check_security`) names the program it would have run,
        // but the process keeps its old one: the table gets it back once the event is made.
        let mut image_before_refusal: Option<crate::process_tree::Process> = None;
        let (key, detail) = match event {
            KernelEvent::Env { header, vars, .. } => {
                if self.pending_env.len() >= MAX_PENDING_ENV {
                    self.pending_env.clear();
                }
                self.pending_env.insert(header.pid, vars);
                return None;
            }
            KernelEvent::Exec {
                header,
                exe,
                argv,
                filename,
                argv_total_len,
                cwd,
                exe_ctime_ns,
            } => {
                let truncated = header.flags & EXEC_ARGV_TRUNCATED != 0;
                if header.flags & monitor_common::RESPONSE_REFUSED != 0 {
                    let key = self.table.observe(&header);
                    image_before_refusal = self.table.get(&key).cloned();
                }
                let key = self.table.on_exec(&header, &exe, &argv, truncated);
                // execve from a non-leader thread takes over the leader's pid: the env record
                // was sent by the same thread as the exec record, so match on the thread id.
                let env = self.pending_env.remove(&header.pid).unwrap_or_default();
                let program = program_path(&exe, &filename, &cwd, &argv);
                // A binary run itself: the kernel read its inode's change time at exec, in
                // whatever namespace it lives and however it is deleted later. A script (run by
                // its interpreter) is stat'ed by path.
                let kernel_changed = (exe_ctime_ns > 0
                    && crate::event::argument_program(&exe, &argv).is_none())
                .then_some(exe_ctime_ns);
                let exe_changed_ns = kernel_changed
                    .or_else(|| {
                        self.exe_changed
                            .filter(|_| header.flags & EXEC_FILENAME_TRUNCATED == 0)
                            .and_then(|stat| stat(&program))
                    })
                    .map(|unix| unix - self.clock.boot_to_unix_ns)
                    // Older than the boot: installed long before any job.
                    .filter(|boot| *boot > 0)
                    .map(|boot| boot as u64);
                let runtime_clients = self.runtime_clients_for(&header, key);
                let detail = Detail::Exec {
                    response: KernelResponse::from_flags(header.flags),
                    runtime_clients,
                    exe_changed_ns,
                    filename: redact_path(&filename).into_owned(),
                    filename_truncated: header.flags & EXEC_FILENAME_TRUNCATED != 0,
                    exe_truncated: header.flags & EXEC_EXE_TRUNCATED != 0,
                    exe_unresolved: header.flags & EXEC_EXE_UNRESOLVED != 0,
                    exe_unlinked: header.flags & monitor_common::EXEC_EXE_UNLINKED != 0,
                    argv_total_len,
                    cwd: if header.flags & EXEC_CWD_UNRESOLVED != 0 {
                        String::new()
                    } else {
                        redact_path(&cwd).into_owned()
                    },
                    cwd_truncated: header.flags & EXEC_CWD_TRUNCATED != 0,
                    env,
                };
                (key, detail)
            }
            KernelEvent::Fork { header } => (
                self.table.on_fork(&header),
                Detail::Fork {
                    sibling: header.flags & monitor_common::FORK_AS_SIBLING != 0,
                    shares_descriptors: header.flags & monitor_common::FORK_SHARES_FILES != 0,
                    response: KernelResponse::from_flags(header.flags),
                },
            ),
            KernelEvent::Tamper {
                header,
                syscall,
                target,
                arg,
            } => {
                let key = self.table.observe(&header);
                let syscall = TamperSyscall::from_kernel(syscall);
                (
                    key,
                    Detail::Tamper {
                        syscall,
                        target,
                        arg,
                        response: KernelResponse::from_flags(header.flags),
                    },
                )
            }
            KernelEvent::Dns {
                header,
                fd,
                sock_type,
                payload,
                truncated,
                question: sent,
                from_asked,
                ..
            } => {
                let stream = sock_type == SOCK_STREAM;
                let parsed = if sent {
                    dns::parse_question(&payload, stream)
                } else {
                    dns::parse(&payload, stream)
                };
                let Some(answer) = parsed else {
                    if payload.len() >= dns::MIN_MESSAGE {
                        self.dns_unparsed += 1;
                    }
                    return None;
                };
                let key = self.table.observe(&header);
                let detail = Detail::Dns {
                    transport: if stream {
                        Transport::Tcp
                    } else {
                        Transport::Udp
                    },
                    fd,
                    question: answer.question,
                    question_type: answer.question_type,
                    rcode: answer.rcode,
                    answers: answer.records,
                    truncated,
                    sent,
                    forged: self.dns_answers_checked && !sent && !from_asked,
                };
                (key, detail)
            }
            KernelEvent::Exit {
                header,
                exit_status,
            } => {
                let key = self.table.on_exit(&header, exit_status);
                self.runtime_connects.remove(&key);
                let signal = (exit_status & 0x7f) as i32;
                let detail = Detail::Exit {
                    status: exit_status,
                    code: (signal == 0).then_some(((exit_status >> 8) & 0xff) as i32),
                    signal: (signal != 0).then_some(signal),
                };
                (key, detail)
            }
            KernelEvent::RuntimeClient { header, fd, socket } => {
                let key = self.table.observe(&header);
                self.runtime_connected(key, header.ts_ns);
                let socket = self
                    .runtime_sockets
                    .get(socket as usize)
                    .cloned()
                    .unwrap_or_else(|| format!("runtime socket #{socket}"));
                (key, Detail::RuntimeClient { socket, fd })
            }
            KernelEvent::TlsHello {
                header,
                address,
                port,
                payload,
            } => {
                let key = self.table.observe(&header);
                (
                    key,
                    Detail::Tls {
                        address: address.to_canonical(),
                        port,
                        server_name: super::tls::server_name(&payload),
                    },
                )
            }
            KernelEvent::Connect {
                header,
                fd,
                result,
                sock_type,
                address,
                port,
                via,
                family,
                blocked,
            } => {
                let key = self.table.observe(&header);
                let family = match family {
                    monitor_common::AF_PACKET => "packet",
                    _ if address.is_ipv4() => "ipv4",
                    _ => "ipv6",
                };
                let protocol = match sock_type {
                    _ if via == monitor_common::CONNECT_VIA_PING => Protocol::Icmp,
                    SOCK_STREAM => Protocol::Tcp,
                    SOCK_DGRAM => Protocol::Udp,
                    _ => Protocol::Other,
                };
                let detail = Detail::Connect {
                    protocol,
                    family: family.into(),
                    // An IPv4-mapped IPv6 destination is an IPv4 destination.
                    address: address.to_canonical(),
                    port,
                    result,
                    fd,
                    via: ConnectVia::from_kernel(via),
                    blocked,
                    repeats: 0,
                };
                (key, detail)
            }
            KernelEvent::Name {
                header,
                op,
                matched,
                dir,
                name,
                from,
            } => {
                let key = self.table.observe(&header);
                let Some(op) = NameOp::from_raw(op) else {
                    return None;
                };
                let uncertain = header.flags
                    & (monitor_common::NAME_DIR_UNRESOLVED
                        | monitor_common::NAME_DIR_TRUNCATED
                        | monitor_common::NAME_TRUNCATED)
                    != 0;
                let for_new = header.flags & monitor_common::NAME_DIR_FOR_NEW != 0;
                let for_from = header.flags & monitor_common::NAME_DIR_FOR_FROM != 0;
                let (path, from) = if op == NameOp::Unlink {
                    // The removed name is the record's old one: it is the event's path.
                    (absolute_name(&dir, &from, for_from), String::new())
                } else {
                    (absolute_name(&dir, &name, for_new), from)
                };
                let from = (!from.is_empty()).then(|| match op {
                    // A symlink's target is relative to the link's own directory.
                    NameOp::Symlink => match path.rsplit_once('/') {
                        Some((parent, _)) if !from.starts_with('/') => {
                            absolute_name(if parent.is_empty() { "/" } else { parent }, &from, true)
                        }
                        _ => from.clone(),
                    },
                    _ => absolute_name(&dir, &from, for_from),
                });
                let detail = Detail::Name {
                    op,
                    path: redact_path(&path).into_owned(),
                    from: from.map(|f| redact_path(&f).into_owned()),
                    path_uncertain: uncertain,
                    matched: match_reasons(matched),
                    via: if header.flags & monitor_common::NAME_VIA_LSM != 0 {
                        OpenVia::Lsm
                    } else if header.flags & monitor_common::NAME_VIA_FENTRY != 0 {
                        OpenVia::Fentry
                    } else if header.flags & monitor_common::NAME_VIA_IO_URING != 0 {
                        OpenVia::IoUring
                    } else {
                        OpenVia::Syscall
                    },
                };
                (key, detail)
            }
            KernelEvent::Open {
                header,
                path,
                f_flags,
                f_mode,
                ino,
                dev,
                matched,
                fd,
                proc_owner,
                generation,
            } => {
                let key = self.table.observe(&header);
                let pth_executable = match self.pth_reader {
                    Some(read) if path.ends_with(".pth") && f_mode & FMODE_WRITE == 0 => {
                        self.pth_reads.get_or_read((dev, ino), &path, read)
                    }
                    _ => None,
                };
                let map = match self.map_reader {
                    Some(read) if path.ends_with(".map") && f_mode & FMODE_WRITE == 0 => {
                        self.map_reads.get_or_read((dev, ino), &path, read)
                    }
                    _ => None,
                };
                // Opened under another name than the watched file's own. Looked up for every
                // open the kernel sent, not only those it matched by identity: a home learnt from
                // a job's first event is in this table before the job's next events are enriched,
                // even when the kernel's map was filled too late for them.
                let check = self.identity_check;
                let at = std::time::UNIX_EPOCH
                    + std::time::Duration::from_nanos(
                        (self.clock.boot_to_unix_ns + header.ts_ns as i128).max(0) as u64,
                    );
                if f_mode & FMODE_CREATED != 0
                    && self
                        .identities
                        .get(&(dev, ino))
                        .is_some_and(|watched| watched.path != path)
                {
                    if self.reborn.len() >= MAX_REBORN {
                        self.reborn.clear();
                    }
                    self.reborn.insert((dev, ino), at);
                }
                let reborn = self.reborn.get(&(dev, ino)).copied();
                let same_file_as = self
                    .identities
                    .get(&(dev, ino))
                    .filter(|watched| watched.path != path)
                    .filter(|watched| match (watched.generation, generation) {
                        // The inode's generation, where both the record and the watched file's
                        // last read have one, settles it: a new inode given the number has
                        // another.
                        (Some(known), opened) if opened != 0 => known == opened,
                        _ => {
                            // Not a file made with that number after the watched file had it
                            // (read through a name given later: the new file's, whether it is
                            // there still or not when this is read).
                            reborn.is_none_or(|born| born < watched.seen_at)
                                // Still that file: not a removed one whose number went to
                                // this file.
                                && check.is_none_or(|still| {
                                    still(&watched.path, &path, (dev, ino), watched.seen_at)
                                })
                        }
                    })
                    .map(|watched| redact_path(&watched.path).into_owned());
                let detail = Detail::Open {
                    same_file_as,
                    proc_target: (proc_owner != 0).then_some(proc_owner),
                    pth_executable,
                    map_embeds_sources: map.map(|m| m.embeds_sources),
                    map_sources_packed: map.and_then(|m| m.sources_packed),
                    path: redact_path(&path).into_owned(),
                    path_truncated: header.flags & OPEN_PATH_TRUNCATED != 0,
                    path_unresolved: header.flags & OPEN_PATH_UNRESOLVED != 0,
                    access: access_of(f_mode),
                    created: f_mode & FMODE_CREATED != 0,
                    flags: f_flags,
                    ino,
                    dev,
                    matched: match_reasons(matched),
                    via: if header.flags & OPEN_VIA_LSM != 0 {
                        OpenVia::Lsm
                    } else if header.flags & OPEN_VIA_FENTRY != 0 {
                        OpenVia::Fentry
                    } else if header.flags & OPEN_VIA_IO_URING != 0 {
                        OpenVia::IoUring
                    } else {
                        OpenVia::Syscall
                    },
                    fd,
                    response: KernelResponse::from_flags(header.flags),
                };
                (key, detail)
            }
        };
        self.seq += 1;
        let mut container = self.container_of(header.cgroup_id, key);
        if container.is_none() && matches!(detail, Detail::Exec { .. }) {
            container = self
                .in_the_daemons_cgroup(header.cgroup_id, header.mnt_ns, key)
                .or_else(|| self.taken_for_no_container(header.cgroup_id, key));
            self.runtime_started_with_a_bundle(key);
        }
        // A container's first program runs in the namespace its runtime made for it; a program
        // executed in the host's (the runtime's own `runc init`, put in the cgroup before it
        // executed) shows the host's root, mounts and capabilities.
        let in_the_hosts_view = header.mnt_ns != 0 && header.mnt_ns == self.host_mnt_ns;
        if let (Some(id), Detail::Exec { .. }, false) = (&container, &detail, in_the_hosts_view) {
            if !self.to_describe.is_empty() {
                self.first_program_in(id, header.tgid, header.cgroup_id, header.ts_ns);
            }
            self.learn_container_view(id, header.mnt_ns);
        }
        if let Some(members) = container
            .as_ref()
            .and_then(|id| self.kernel_containers.get_mut(id))
        {
            if matches!(detail, Detail::Exit { .. }) {
                members.remove(&key);
                if members.is_empty() {
                    let id = container.clone().unwrap_or_default();
                    self.kernel_containers.remove(&id);
                    self.container_views.remove(&id);
                    self.to_describe.remove(&id);
                    self.ended_containers.push(id);
                }
            } else if members.len() < MAX_PROCESS_CONTAINERS {
                members.insert(key);
            }
        }
        let process = self.table.get(&key);
        let mut process = process_info(&header, key, process);
        process.in_container_view = container.as_ref().is_some_and(|id| {
            header.mnt_ns != 0 && self.container_views.get(id) == Some(&header.mnt_ns)
        });
        process.container = container;
        if let Some(before) = image_before_refusal {
            self.table.restore_image(before);
        }
        Some(Event {
            schema: JSON_SCHEMA_VERSION,
            seq: self.seq,
            time: self.clock.format(header.ts_ns),
            ts_ns: header.ts_ns,
            detail,
            process,
            ancestry: self.ancestry_of(&key),
        })
    }
}

impl Enricher {
    /// `Resume` events for the processes running now that carry a CI identity, parents first
    /// (so a step's root is known before its children), stamped `now_ns`.
    pub fn resume_running_jobs(&mut self, proc_root: &std::path::Path, now_ns: u64) -> Vec<Event> {
        let mut running: Vec<(u64, u32, u64)> = self
            .table
            .processes()
            .filter(|p| p.exited_at_ns.is_none())
            .map(|p| (p.key.start_ticks, p.key.tgid, p.start_ns))
            .collect();
        running.sort();
        let mut out = Vec::new();
        for (_, pid, started_ns) in running {
            let dir = proc_root.join(pid.to_string());
            let Ok(block) = std::fs::File::open(dir.join("environ")).and_then(|f| {
                use std::io::Read as _;
                let mut bytes = Vec::new();
                f.take(monitor_common::MAX_ENV_LEN as u64)
                    .read_to_end(&mut bytes)?;
                Ok(bytes)
            }) else {
                continue;
            };
            let env = crate::ci::env::select_env(&block);
            if crate::ci::identity_from_env(&env).is_none() {
                continue;
            }
            let cwd = std::fs::read_link(dir.join("cwd"))
                .map(|p| redact_path(&p.to_string_lossy()).into_owned())
                .unwrap_or_default();
            let detail = Detail::Resume {
                env,
                cwd,
                process_started_ns: started_ns,
            };
            if let Some(event) = self.control_event(detail, pid, now_ns) {
                out.push(event);
            }
        }
        out
    }

    /// The process's ancestors as events list them (parent first, bounded, argv redacted).
    fn ancestry_of(&self, key: &ProcessKey) -> Vec<Ancestor> {
        self.table
            .ancestry(key)
            .into_iter()
            .take(ANCESTRY_IN_EVENT)
            .map(|p| Ancestor {
                pid: p.key.tgid,
                start_ticks: p.key.start_ticks,
                comm: p.comm.clone(),
                exe: p.exe.clone(),
                argv: p.argv.clone(),
                exited: p.exited_at_ns.is_some(),
            })
            .collect()
    }

    /// The process `pid` as the table knows it (read from /proc when it has not been seen).
    pub fn process_key(&mut self, pid: u32) -> Option<ProcessKey> {
        if self
            .table
            .by_tgid(pid)
            .is_none_or(|p| p.exited_at_ns.is_some())
        {
            let entry = crate::process_tree::read_proc_entry(std::path::Path::new("/proc"), pid)?;
            self.table.seed([entry]);
        }
        self.table.by_tgid(pid).map(|p| p.key)
    }

    /// An event the agent itself makes (job start and end, from the control socket), about the
    /// process `pid` as the table knows it, numbered in the same stream as the kernel's.
    /// `None` when the process is unknown (gone, or never seen and not in /proc).
    pub fn control_event(&mut self, detail: Detail, pid: u32, ts_ns: u64) -> Option<Event> {
        self.process_key(pid)?;
        let p = self.table.by_tgid(pid)?;
        let key = p.key;
        let process = ProcessInfo {
            pid,
            tid: pid,
            ppid: p.ppid,
            start_ticks: key.start_ticks,
            uid: p.uid,
            // Not kept by the process table; nothing judges it.
            gid: 0,
            comm: p.comm.clone(),
            exe: p.exe.clone(),
            argv: p.argv.clone(),
            argv_truncated: p.argv_truncated,
            cgroup_id: 0,
            mnt_ns: 0,
            container: None,
            in_container_view: false,
        };
        let ancestry = self.ancestry_of(&key);
        Some(self.stamp(detail, process, ts_ns, ancestry))
    }
}

const FMODE_READ: u32 = 0x1;
const FMODE_WRITE: u32 = 0x2;
const FMODE_CREATED: u32 = 0x10_0000;

fn access_of(f_mode: u32) -> Access {
    match (f_mode & FMODE_READ != 0, f_mode & FMODE_WRITE != 0) {
        (true, true) => Access::ReadWrite,
        (false, true) => Access::Write,
        _ => Access::Read,
    }
}

/// `name` made absolute against `dir` (when `dir` is its directory and it is relative), with
/// `.`, `..` and repeated slashes folded. Lexical: a symlinked directory on the way is not
/// followed (the kernel's own resolution of the final file is what opens report).
fn absolute_name(dir: &str, name: &str, dir_applies: bool) -> String {
    let joined = if name.starts_with('/') || !dir_applies || dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    };
    if !joined.starts_with('/') {
        return joined; // relative to a directory the kernel could not resolve: as given
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

fn match_reasons(bits: u32) -> Vec<MatchReason> {
    [
        (MATCH_NAME, MatchReason::Name),
        (MATCH_NAME_PREFIX, MatchReason::NamePrefix),
        (MATCH_NAME_SUFFIX, MatchReason::NameSuffix),
        (MATCH_PARENT_DIR, MatchReason::ParentDir),
        (MATCH_PROC_OTHER, MatchReason::ProcOtherProcess),
        (MATCH_ALL, MatchReason::All),
        (monitor_common::MATCH_FROM, MatchReason::From),
        (monitor_common::MATCH_INODE, MatchReason::Identity),
        (monitor_common::MATCH_SUBTREE, MatchReason::Subtree),
        (monitor_common::MATCH_SOURCE, MatchReason::Source),
    ]
    .into_iter()
    .filter(|(bit, _)| bits & bit != 0)
    .map(|(_, reason)| reason)
    .collect()
}

/// The key a record's process is placed by when containers are told by mount namespace: the
/// unified root's id (1) for the host's namespace (inode `host`; or none known), else the
/// namespace's id for the boot (its inode number where the kernel has no such id: inode
/// numbers are given again once a namespace is gone) with the top bit set (no cgroup id has
/// it). Everything keyed by cgroup (which container, the runtime's own programs outside it)
/// then works per namespace: a runtime makes one for each container; the namespace a step
/// makes for itself descends from no runtime daemon and is in no container, as its own cgroup
/// would be.
pub fn mount_namespace_key(mnt_ns: u32, mnt_ns_id: u64, host: u32) -> u64 {
    if mnt_ns == 0 || mnt_ns == host {
        1
    } else if mnt_ns_id != 0 {
        MOUNT_NAMESPACE_KEY | (mnt_ns_id & (MOUNT_NAMESPACE_KEY - 1))
    } else {
        MOUNT_NAMESPACE_KEY | u64::from(mnt_ns)
    }
}

/// The bit `mount_namespace_key` sets.
pub const MOUNT_NAMESPACE_KEY: u64 = 1 << 62;

fn process_info(h: &Header, key: ProcessKey, p: Option<&Process>) -> ProcessInfo {
    ProcessInfo {
        pid: h.tgid,
        tid: h.pid,
        ppid: h.ppid,
        start_ticks: key.start_ticks,
        uid: h.uid,
        gid: h.gid,
        comm: h.comm.clone(),
        exe: p.and_then(|p| p.exe.clone()),
        argv: p.map(|p| p.argv.clone()).unwrap_or_default(),
        argv_truncated: p.map(|p| p.argv_truncated).unwrap_or(false),
        cgroup_id: h.cgroup_id,
        mnt_ns: h.mnt_ns,
        container: None,
        in_container_view: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process_tree::ProcessTable;
    use monitor_common::EventKind;
    use std::net::IpAddr;

    fn header(kind: EventKind, tgid: u32, ppid: u32) -> Header {
        Header {
            kind,
            flags: 0,
            ts_ns: 1_000,
            tgid,
            pid: tgid,
            ppid,
            uid: 1000,
            gid: 1000,
            start_ns: tgid as u64 * 1_000_000_000,
            parent_start_ns: ppid as u64 * 1_000_000_000,
            cgroup_id: 1,
            mnt_ns: 0,
            mnt_ns_id: 0,
            comm: "x".into(),
        }
    }

    /// `exe` executed as itself (its name its only argument) in `/`, by `tgid` (child of
    /// `ppid`) in cgroup `cgroup`, with header `flags`.
    fn exec_record(tgid: u32, ppid: u32, cgroup: u64, flags: u32, exe: &str) -> KernelEvent {
        let mut h = header(EventKind::ProcessExec, tgid, ppid);
        h.cgroup_id = cgroup;
        h.flags = flags;
        KernelEvent::Exec {
            header: h,
            exe: exe.into(),
            argv: vec![exe.into()],
            filename: exe.into(),
            argv_total_len: exe.len() as u32 + 1,
            cwd: "/".into(),
            exe_ctime_ns: 0,
        }
    }

    /// `exec_record`, its process in mount namespace `mnt_ns` (id `mnt_ns_id`).
    fn exec_in_namespace(
        tgid: u32,
        ppid: u32,
        cgroup: u64,
        mnt_ns: u32,
        mnt_ns_id: u64,
    ) -> KernelEvent {
        let mut record = exec_record(tgid, ppid, cgroup, 0, "/bin/x");
        let header = record.header_mut();
        header.mnt_ns = mnt_ns;
        header.mnt_ns_id = mnt_ns_id;
        record
    }

    /// An enricher whose container reader says `text` is `/proc/<pid>/cgroup`.
    fn enricher_with_cgroups(text: fn(u32) -> String) -> Enricher {
        thread_local! {
            static TEXT: std::cell::Cell<Option<fn(u32) -> String>> = const { std::cell::Cell::new(None) };
        }
        TEXT.with(|t| t.set(Some(text)));
        fn reader(pid: u32) -> Option<crate::containers::CgroupPlace> {
            let text = TEXT.with(|t| t.get())?;
            Some(crate::containers::cgroup_place(&text(pid)))
        }
        Enricher::new(
            ProcessTable::new(100, 1000),
            WallClock { boot_to_unix_ns: 0 },
        )
        .with_container_reader(reader)
    }

    #[test]
    fn exec_event_round_trips_through_json_with_redacted_argv() {
        let mut e = Enricher::new(
            ProcessTable::new(100, 1000),
            WallClock { boot_to_unix_ns: 0 },
        );
        e.enrich(KernelEvent::Exec {
            header: header(EventKind::ProcessExec, 10, 1),
            exe: "/usr/bin/bash".into(),
            argv: vec!["bash".into()],
            filename: "/bin/bash".into(),
            argv_total_len: 5,
            cwd: "/".into(),
            exe_ctime_ns: 0,
        });
        let token = format!("ghp_{}", "a".repeat(36));
        let event = e
            .enrich(KernelEvent::Exec {
                header: header(EventKind::ProcessExec, 11, 10),
                exe: "/usr/bin/curl".into(),
                argv: vec![
                    "curl".into(),
                    "-H".into(),
                    format!("Authorization: token {token}"),
                ],
                filename: "curl".into(),
                argv_total_len: 60,
                cwd: "/work".into(),
                exe_ctime_ns: 0,
            })
            .unwrap();
        let line = serde_json::to_string(&event).unwrap();
        assert!(!line.contains(&token), "token leaked: {line}");
        assert!(line.contains("\"kind\":\"exec\""));
        assert_eq!(event.ancestry[0].exe.as_deref(), Some("/usr/bin/bash"));
        let back: Event = serde_json::from_str(&line).unwrap();
        assert_eq!(back, event);
        assert_eq!(event.time, "1970-01-01T00:00:00.000001000Z");
    }

    #[test]
    fn a_cgroup_a_runtime_daemon_started_a_process_into_is_a_container_whatever_its_name() {
        // The daemon (10, cgroup path /daemon) starts a shim (11, its cgroup), the shim the
        // container's process (12, /exp/x1). A host process (14) in a cgroup of its own is in
        // none; so is a cgroup met before the daemon was known, once it is.
        fn reader(pid: u32) -> Option<crate::containers::CgroupPlace> {
            let path = match pid {
                10 | 11 => "/daemon",
                12 => "/exp/x1",
                13 => "/exp/x1/sub",
                14 => "/system.slice/cron.service",
                _ => "/",
            };
            Some(crate::containers::CgroupPlace {
                container: None,
                path: path.into(),
                mount_namespace: None,
            })
        }
        let mut e = Enricher::new(
            ProcessTable::new(100, 1000),
            WallClock { boot_to_unix_ns: 0 },
        )
        .with_container_reader(reader);
        let container_of = |e: &mut Enricher, tgid: u32, ppid: u32, cgroup: u64| {
            e.enrich(exec_record(tgid, ppid, cgroup, 0, "/bin/x"))
                .unwrap()
                .process
                .container
        };
        assert_eq!(container_of(&mut e, 10, 1, 2), None);
        assert_eq!(container_of(&mut e, 11, 10, 2), None);
        // Before the daemon is known: not a container (and remembered so)...
        assert_eq!(container_of(&mut e, 12, 11, 3), None);
        e.set_runtime_daemons(&[10]);
        // ...asked again once it is.
        assert_eq!(container_of(&mut e, 12, 11, 3).as_deref(), Some("x1@3"));
        // Described at its first program, with the daemon that started it.
        let new = e.take_new_containers();
        assert_eq!(
            new.iter()
                .map(|n| (n.id.as_str(), n.name.as_str(), n.pid))
                .collect::<Vec<_>>(),
            vec![("x1@3", "x1", 12)]
        );
        assert_eq!(container_of(&mut e, 12, 11, 3).as_deref(), Some("x1@3"));
        assert!(e.take_new_containers().is_empty(), "described once");
        // Its last process's exit ends it.
        let mut exit = header(EventKind::ProcessExit, 12, 11);
        exit.cgroup_id = 3;
        e.enrich(KernelEvent::Exit {
            header: exit,
            exit_status: 0,
        })
        .unwrap();
        assert_eq!(e.take_ended_containers(), vec!["x1@3".to_string()]);
        assert_eq!(
            container_of(&mut e, 11, 10, 2),
            None,
            "the shim stays the daemon's"
        );
        assert_eq!(container_of(&mut e, 10, 1, 2), None, "the daemon itself");
        assert_eq!(container_of(&mut e, 14, 1, 5), None, "no daemon started it");
        assert_eq!(
            container_of(&mut e, 13, 12, 6).as_deref(),
            Some("sub@6"),
            "a container's own child cgroup is named by its own last component"
        );
    }

    #[test]
    fn a_process_is_in_its_containers_view_only_in_the_namespace_its_first_program_ran_in() {
        let e = enricher_with_cgroups(|pid| {
            if pid == 10 || pid == 11 {
                "0::/daemon\n"
            } else {
                "0::/exp/x1\n"
            }
            .to_string()
        });
        let mut e = e.with_host_mount_namespace(100);
        let seen = |e: &mut Enricher, tgid: u32, ppid: u32, cgroup: u64, mnt_ns: u32| {
            let p = e
                .enrich(exec_in_namespace(tgid, ppid, cgroup, mnt_ns, 0))
                .unwrap()
                .process;
            (p.container, p.in_container_view)
        };
        let x1 = Some("x1@3".to_string());
        assert_eq!(seen(&mut e, 10, 1, 2, 100), (None, false));
        e.set_runtime_daemons(&[10]);
        assert_eq!(seen(&mut e, 11, 10, 2, 100), (None, false));
        // The runtime's `runc init`, executed once put in the cgroup (a slow start), in the
        // host's namespace: not the container's view.
        assert_eq!(seen(&mut e, 16, 11, 3, 100), (x1.clone(), false));
        // The container's first program, in the namespace the runtime made for it.
        assert_eq!(seen(&mut e, 12, 11, 3, 200), (x1.clone(), true));
        assert_eq!(seen(&mut e, 13, 12, 3, 200), (x1.clone(), true));
        // A host process put into its cgroup keeps the host's view: in the cgroup, not the view.
        assert_eq!(seen(&mut e, 14, 11, 3, 100), (x1.clone(), false));
        // Unknown namespaces (no layout for it) are never the container's view.
        assert_eq!(seen(&mut e, 15, 12, 3, 0), (x1, false));
    }

    #[test]
    fn told_by_mount_namespace_the_hosts_is_no_container_and_a_reused_number_is_a_new_one() {
        const ID: &str = "68b32f19a2ebfbe4b4ff840b0893ecd6a8ef14b887e8889724463deb2bf58b1a";
        const OTHER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        // Every process's cgroup id is the root's (1); /proc names the v1 paths.
        let mut e = enricher_with_cgroups(|pid| match pid {
            12 | 13 => format!("4:memory:/docker/{ID}\n0::/\n"),
            14 => format!("4:memory:/docker/{OTHER}\n0::/\n"),
            _ => "4:memory:/system.slice/runner.service\n0::/\n".to_string(),
        })
        .with_host_mount_namespace(100)
        .with_containers_by_mount_namespace();
        let seen = |e: &mut Enricher, tgid: u32, mnt_ns: u32, mnt_ns_id: u64| {
            e.enrich(exec_in_namespace(tgid, 1, 1, mnt_ns, mnt_ns_id))
                .unwrap()
                .process
                .container
        };
        // A host process, whatever cgroup /proc puts it in (a runtime's set-up): none.
        assert_eq!(seen(&mut e, 13, 100, 1), None);
        assert_eq!(seen(&mut e, 12, 200, 7).as_deref(), Some(ID));
        // The same inode number given to another container's namespace: its own id, asked anew.
        assert_eq!(seen(&mut e, 14, 200, 9).as_deref(), Some(OTHER));
        // The host's namespace stays nobody's, also after a container was met.
        assert_eq!(seen(&mut e, 15, 100, 1), None);
        assert_eq!(mount_namespace_key(0, 0, 100), 1, "unknown is the host's");
    }

    #[test]
    fn a_containers_bundle_is_the_runtimes_not_what_its_own_programs_name() {
        fn reader(pid: u32) -> Option<crate::containers::CgroupPlace> {
            Some(crate::containers::CgroupPlace {
                container: None,
                path: if pid >= 12 { "/ns/x1" } else { "/daemon" }.into(),
                mount_namespace: None,
            })
        }
        let mut e = Enricher::new(
            ProcessTable::new(100, 1000),
            WallClock { boot_to_unix_ns: 0 },
        )
        .with_container_reader(reader);
        let exec = |e: &mut Enricher, tgid: u32, ppid: u32, cgroup: u64, argv: &[&str]| {
            let mut h = header(EventKind::ProcessExec, tgid, ppid);
            h.cgroup_id = cgroup;
            e.enrich(KernelEvent::Exec {
                header: h,
                exe: argv[0].into(),
                argv: argv.iter().map(|a| a.to_string()).collect(),
                filename: argv[0].into(),
                argv_total_len: 64,
                cwd: "/".into(),
                exe_ctime_ns: 0,
            })
            .unwrap()
        };
        exec(&mut e, 10, 1, 2, &["containerd"]);
        e.set_runtime_daemons(&[10]);
        exec(
            &mut e,
            11,
            10,
            2,
            &["runc", "create", "--bundle", "/run/b/x1", "x1"],
        );
        // The container's first program names a bundle of the job's choosing.
        let first = exec(&mut e, 12, 11, 3, &["sh", "-b", "/tmp/benign"]);
        assert_eq!(first.process.container.as_deref(), Some("x1@3"));
        let new = e.take_new_containers();
        assert_eq!(new.len(), 1, "{new:?}");
        assert_eq!(new[0].bundle.as_deref(), Some("/run/b/x1"));
        assert_eq!(e.take_new_bundles(), vec!["/run/b/x1".to_string()]);
    }

    #[test]
    fn a_container_left_in_its_daemons_cgroup_is_told_by_its_mount_namespace() {
        // `ctr run --cgroup ""`: the daemon (10), its shim (11) and the container's program
        // (12, its child 13) share cgroup 2; only the mount namespace tells the program apart.
        fn reader(pid: u32) -> Option<crate::containers::CgroupPlace> {
            Some(crate::containers::CgroupPlace {
                container: None,
                path: "/daemon".into(),
                mount_namespace: Some(if pid >= 12 { 200 } else { 100 }),
            })
        }
        let mut e = Enricher::new(
            ProcessTable::new(100, 1000),
            WallClock { boot_to_unix_ns: 0 },
        )
        .with_container_reader(reader);
        let exec = |e: &mut Enricher, tgid: u32, ppid: u32| {
            e.enrich(exec_record(tgid, ppid, 2, 0, "/bin/x"))
                .unwrap()
                .process
                .container
        };
        assert_eq!(exec(&mut e, 10, 1), None);
        e.set_runtime_daemons(&[10]);
        assert_eq!(exec(&mut e, 11, 10), None, "the shim is the daemon's");
        assert_eq!(exec(&mut e, 12, 11).as_deref(), Some("mnt-200@2"));
        let new = e.take_new_containers();
        assert_eq!(new.len(), 1, "{new:?}");
        assert_eq!((new[0].name.as_str(), new[0].pid), ("mnt-200", 12));
        // Its child, forked, is in it too; a process no daemon started is not.
        let mut fork = header(EventKind::ProcessFork, 13, 12);
        fork.cgroup_id = 2;
        let child = e.enrich(KernelEvent::Fork { header: fork }).unwrap();
        assert_eq!(child.process.container.as_deref(), Some("mnt-200@2"));
        assert_eq!(exec(&mut e, 20, 1), None);
    }

    #[test]
    fn a_runtime_client_seen_connecting_is_named_though_it_hung_up_before_the_exec_was_read() {
        // Cgroup 7 is a container's; the /proc walk finds nobody connected any more (the
        // client exited before the agent read the exec: the race a kernel record closes).
        fn reader(pid: u32) -> Option<crate::containers::CgroupPlace> {
            Some(crate::containers::CgroupPlace {
                container: (pid >= 50).then(|| "c0ffee".to_string()),
                path: "/".into(),
                mount_namespace: None,
            })
        }
        let mut e = Enricher::new(
            ProcessTable::new(100, 1000),
            WallClock { boot_to_unix_ns: 0 },
        )
        .with_container_reader(reader)
        .with_runtime_clients(Box::new(Vec::new))
        .with_runtime_sockets(vec!["/run/docker.sock".into()]);
        let exec = |e: &mut Enricher, tgid: u32, ppid: u32, cgroup: u64, exe: &str| {
            e.enrich(exec_record(tgid, ppid, cgroup, 0, exe)).unwrap()
        };
        let clients = |event: &Event| match &event.detail {
            Detail::Exec {
                runtime_clients, ..
            } => runtime_clients.iter().map(|c| c.pid).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        exec(&mut e, 20, 1, 1, "/usr/bin/docker");
        let connected = e
            .enrich(KernelEvent::RuntimeClient {
                header: header(EventKind::RuntimeClient, 20, 1),
                fd: 3,
                socket: 0,
            })
            .unwrap();
        assert_eq!(
            connected.detail,
            Detail::RuntimeClient {
                socket: "/run/docker.sock".into(),
                fd: 3
            }
        );
        exec(&mut e, 40, 1, 1, "/usr/bin/runc");
        let in_container = exec(&mut e, 50, 40, 7, "/bin/cat");
        assert_eq!(clients(&in_container), vec![20]);
        // The client exits: what the runtime starts later is not its doing.
        e.enrich(KernelEvent::Exit {
            header: header(EventKind::ProcessExit, 20, 1),
            exit_status: 0,
        });
        let later = exec(&mut e, 51, 40, 7, "/bin/cat");
        assert!(clients(&later).is_empty(), "{later:?}");
        // A program the container's own process runs is nobody's request.
        let own = exec(&mut e, 52, 50, 7, "/bin/ls");
        assert!(clients(&own).is_empty(), "{own:?}");
    }

    /// An enricher that watches `/home/u/.ssh/id_deploy` as identity (8, 42), read at wall time
    /// 0 (the tests' clock: boot time is wall time) with inode generation `generation`.
    fn watching_a_key(generation: Option<u32>) -> Enricher {
        let mut e = Enricher::new(
            ProcessTable::new(100, 1000),
            WallClock { boot_to_unix_ns: 0 },
        );
        e.identities.insert(
            (8, 42),
            Watched {
                path: "/home/u/.ssh/id_deploy".into(),
                seen_at: std::time::UNIX_EPOCH,
                generation,
            },
        );
        e
    }

    /// The watched file an open of identity (8, 42) by `path` is taken for (`same_file_as`).
    fn opened_as(e: &mut Enricher, path: &str, f_mode: u32, generation: u32) -> Option<String> {
        let event = e
            .enrich(KernelEvent::Open {
                header: header(EventKind::FileOpen, 10, 1),
                path: path.into(),
                f_flags: 0,
                f_mode,
                ino: 42,
                dev: 8,
                matched: monitor_common::MATCH_INODE,
                fd: 3,
                proc_owner: 0,
                generation,
            })
            .unwrap();
        match event.detail {
            Detail::Open { same_file_as, .. } => same_file_as,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_watched_files_number_given_to_a_file_made_since_is_that_file_not_the_watched_one() {
        let mut e = watching_a_key(None);
        let open = |e: &mut Enricher, path: &str, f_mode: u32| opened_as(e, path, f_mode, 0);
        // Read by another name, nothing made since: the key (a hard link, a bind mount).
        assert_eq!(
            open(&mut e, "/tmp/x", 0x1).as_deref(),
            Some("/home/u/.ssh/id_deploy")
        );
        // gpg makes its lock's temporary file (O_CREAT) and the number is the removed key's:
        // neither that open nor a later one of the same number by the lock's name is the key.
        assert_eq!(
            open(&mut e, "/home/u/.gnupg/.#lk0x1.host.7", 0x2 | FMODE_CREATED),
            None
        );
        assert_eq!(open(&mut e, "/home/u/.gnupg/trustdb.gpg.lock", 0x1), None);
    }

    #[test]
    fn an_inodes_generation_tells_the_watched_file_from_a_new_one_given_its_number() {
        let mut e = watching_a_key(Some(0x5eed));
        // What the agent's look at the files would say: always "that file" (the test's
        // worst case: a removed key's number, the new file gone before the agent looks).
        e.identity_check = Some(|_, _, _, _| true);
        let open = opened_as;
        // Another inode with the number (another generation): not the key, whatever the look.
        assert_eq!(
            open(&mut e, "/home/u/.gnupg/trustdb.gpg.lock", 0x1, 0x77),
            None
        );
        // The key's own inode under another name (a hard link): the key, even after a file
        // was created with the number under another name (which, made before, it cannot be).
        assert_eq!(
            open(&mut e, "/home/u/.gnupg/.#lk0x1", 0x2 | FMODE_CREATED, 0x99),
            None
        );
        assert_eq!(
            open(&mut e, "/tmp/innocent", 0x1, 0x5eed).as_deref(),
            Some("/home/u/.ssh/id_deploy")
        );
        // A record without a generation (a file system that keeps none) falls back to the
        // other checks: reborn by the creating open above, so not the key.
        assert_eq!(open(&mut e, "/tmp/innocent", 0x1, 0), None);
    }

    #[test]
    fn a_refused_exec_names_the_refused_program_and_leaves_the_process_its_own() {
        let mut e = Enricher::new(
            ProcessTable::new(100, 1000),
            WallClock { boot_to_unix_ns: 0 },
        );
        let exec = |e: &mut Enricher, flags: u32, exe: &str| {
            e.enrich(exec_record(30, 1, 1, flags, exe)).unwrap()
        };
        exec(&mut e, 0, "/usr/bin/sh");
        let refused = exec(
            &mut e,
            monitor_common::RESPONSE_REFUSED | monitor_common::RESPONSE_KILLED,
            "/tmp/drop/payload",
        );
        assert_eq!(refused.process.exe.as_deref(), Some("/tmp/drop/payload"));
        assert_eq!(refused.detail.response(), Some(KernelResponse::Blocked));
        // The process's next event: still its own program.
        let later = e
            .enrich(KernelEvent::Exit {
                header: header(EventKind::ProcessExit, 30, 1),
                exit_status: 9,
            })
            .unwrap();
        assert_eq!(later.process.exe.as_deref(), Some("/usr/bin/sh"));
    }

    #[test]
    fn env_record_is_attached_to_the_following_exec_of_the_same_thread() {
        let mut e = Enricher::new(
            ProcessTable::new(100, 1000),
            WallClock { boot_to_unix_ns: 0 },
        );
        let vars: BTreeMap<String, String> = [("GITHUB_JOB".to_string(), "build".to_string())]
            .into_iter()
            .collect();
        assert!(e
            .enrich(KernelEvent::Env {
                header: header(EventKind::ProcessEnv, 20, 1),
                vars: vars.clone(),
                total_len: 100,
            })
            .is_none());
        let exec = e
            .enrich(KernelEvent::Exec {
                header: header(EventKind::ProcessExec, 20, 1),
                exe: "/usr/bin/bash".into(),
                argv: vec!["bash".into()],
                filename: "/bin/bash".into(),
                argv_total_len: 5,
                cwd: "/w".into(),
                exe_ctime_ns: 0,
            })
            .unwrap();
        let Detail::Exec { env, cwd, .. } = &exec.detail else {
            panic!()
        };
        assert_eq!((env, cwd.as_str()), (&vars, "/w"));
        assert_eq!(exec.seq, 1, "env records take no place in the stream");
        // Consumed: a later exec of the same thread without an env record has none.
        let again = e
            .enrich(KernelEvent::Exec {
                header: header(EventKind::ProcessExec, 20, 1),
                exe: "/usr/bin/true".into(),
                argv: vec![],
                filename: "true".into(),
                argv_total_len: 0,
                cwd: "/w".into(),
                exe_ctime_ns: 0,
            })
            .unwrap();
        assert!(matches!(&again.detail, Detail::Exec { env, .. } if env.is_empty()));
    }

    #[test]
    fn exit_status_is_split_into_code_and_signal() {
        let mut e = Enricher::new(
            ProcessTable::new(100, 1000),
            WallClock { boot_to_unix_ns: 0 },
        );
        let ev = e
            .enrich(KernelEvent::Exit {
                header: header(EventKind::ProcessExit, 5, 1),
                exit_status: 3 << 8,
            })
            .unwrap();
        assert_eq!(
            ev.detail,
            Detail::Exit {
                status: 768,
                code: Some(3),
                signal: None
            }
        );
        let ev = e
            .enrich(KernelEvent::Exit {
                header: header(EventKind::ProcessExit, 6, 1),
                exit_status: 9,
            })
            .unwrap();
        assert_eq!(
            ev.detail,
            Detail::Exit {
                status: 9,
                code: None,
                signal: Some(9)
            }
        );
    }

    #[test]
    fn mapped_ipv4_is_reported_as_ipv4_address() {
        let mut e = Enricher::new(
            ProcessTable::new(100, 1000),
            WallClock { boot_to_unix_ns: 0 },
        );
        let ev = e
            .enrich(KernelEvent::Connect {
                header: header(EventKind::NetConnect, 5, 1),
                fd: 3,
                result: 0,
                sock_type: SOCK_STREAM,
                address: "::ffff:10.1.2.3".parse().unwrap(),
                port: 80,
                via: monitor_common::CONNECT_VIA_SYSCALL,
                family: monitor_common::AF_INET6,
                blocked: false,
            })
            .unwrap();
        let Detail::Connect {
            address,
            family,
            protocol,
            ..
        } = ev.detail
        else {
            panic!()
        };
        assert_eq!(address, "10.1.2.3".parse::<IpAddr>().unwrap());
        assert_eq!((family.as_str(), protocol.as_str()), ("ipv6", "tcp"));
    }
}

#[cfg(test)]
mod name_tests {
    use super::absolute_name;

    #[test]
    fn names_are_made_absolute_against_their_directory_and_folded() {
        assert_eq!(absolute_name("/w/a", "ci.yml", true), "/w/a/ci.yml");
        assert_eq!(absolute_name("/w/a", "../b/./c", true), "/w/b/c");
        assert_eq!(
            absolute_name("/w/a", "/etc//cron.d/x", true),
            "/etc/cron.d/x"
        );
        // The directory is another name's: the relative name stays as given.
        assert_eq!(absolute_name("/w/a", "x", false), "x");
        assert_eq!(absolute_name("/", "..", true), "/");
    }
}

#[cfg(test)]
mod read_cache_tests {
    use super::ReadCache;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static READS: AtomicUsize = AtomicUsize::new(0);

    fn reader(path: &str) -> Option<bool> {
        READS.fetch_add(1, Ordering::SeqCst);
        std::fs::read_to_string(path)
            .ok()
            .map(|t| t.contains("import"))
    }

    /// A file read again and again (as two agents would, each seeing the other's read) is read
    /// once; rewritten, it is read again at once.
    #[test]
    fn a_file_is_read_once_per_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pth");
        std::fs::write(&path, "/some/dir\n").unwrap();
        let path = path.to_str().unwrap();
        let mut cache = ReadCache::default();
        for _ in 0..5 {
            assert_eq!(cache.get_or_read((1, 2), path, reader), Some(false));
        }
        assert_eq!(READS.load(Ordering::SeqCst), 1);
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(path, "import os; os.system('x')\n").unwrap();
        assert_eq!(cache.get_or_read((1, 2), path, reader), Some(true));
        assert_eq!(READS.load(Ordering::SeqCst), 2);
    }
}
