//! Events as the agent emits them: one JSON object per line, documented in docs/events.md.
//!
//! A kernel record is decoded (`crate::decode`), then enriched (`enrich`) with what the process
//! table knows (the process's executable, argv and ancestry) into an [`Event`]. The JSON form is also the input of
//! replay, so it round-trips through serde.

pub mod dns;
pub mod enrich;
pub mod fields;
pub mod line;
mod program;
pub mod tls;

pub use enrich::Enricher;
pub use fields::{
    Access, ConnectVia, KernelResponse, MatchReason, NameOp, OpenVia, Protocol, TamperSyscall,
    Transport,
};

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

/// Version of the JSON event format; bump on any incompatible change.
pub const JSON_SCHEMA_VERSION: u32 = 10;
/// Ancestors listed in each event (the process table knows more).
pub const ANCESTRY_IN_EVENT: usize = 8;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub schema: u32,
    /// Position in this agent's stream, from 1.
    pub seq: u64,
    /// Wall-clock time, RFC 3339 UTC.
    pub time: String,
    /// CLOCK_BOOTTIME ns, as the kernel stamped it.
    pub ts_ns: u64,
    #[serde(flatten)]
    pub detail: Detail,
    pub process: ProcessInfo,
    /// Parent first, then grandparent, ...
    pub ancestry: Vec<Ancestor>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Detail {
    Exec {
        /// The name given to execve (the script, for a `#!` script).
        filename: String,
        filename_truncated: bool,
        exe_truncated: bool,
        exe_unresolved: bool,
        /// The executable had no name on any file system when it ran (memfd, deleted).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        exe_unlinked: bool,
        /// Size of the whole argument block, also when argv was cut.
        argv_total_len: u32,
        /// Resolved working directory at exec ("" when unresolved).
        #[serde(default)]
        cwd: String,
        #[serde(default)]
        cwd_truncated: bool,
        /// The CI-identity and package-manager keys of the new program's environment (see
        /// `ci::env`); nothing else of the environment is ever recorded.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
        /// When the program file execve named last changed (its ctime; for a `#!` script, the
        /// script), as kernel boot-time ns like `ts_ns`: a program written during the job shows
        /// it. Filled by the live agent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exe_changed_ns: Option<u64>,
        /// For a program the container runtime started in a container (its parent is outside
        /// it: a container's first program, a `docker exec`'s): the processes connected to the
        /// runtime's socket then, among them the client that asked. Filled by the live agent.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        runtime_clients: Vec<ProcessRef>,
        /// What the kernel did to the process at this exec (a profile's `responses`: a
        /// lifecycle script running a program it dropped is killed before the program runs).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        response: Option<KernelResponse>,
    },
    Fork {
        /// Made a sibling of its maker (`CLONE_PARENT`): the event's parent is its maker.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        sibling: bool,
        /// Shares its maker's descriptor table (`clone(CLONE_FILES)`, not a thread).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        shares_descriptors: bool,
        /// What the kernel did to the maker for it (a kill in force at opens ends only the
        /// opener: a process sharing its table would keep the descriptor).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        response: Option<KernelResponse>,
    },
    Exit {
        /// Wait status: `code << 8 | signal`.
        status: u32,
        code: Option<i32>,
        signal: Option<i32>,
    },
    Connect {
        protocol: Protocol,
        family: String,
        address: IpAddr,
        port: u16,
        /// 0, or the negative errno connect returned (-115 = EINPROGRESS for non-blocking).
        /// For the other routes (`via`), 0 unless the kernel refused it (-1, EPERM).
        result: i32,
        /// -1 when the route has no descriptor at hand (`via` other than `connect`).
        fd: i32,
        /// How the destination was given.
        #[serde(default)]
        via: ConnectVia,
        /// The kernel refused it (block mode).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        blocked: bool,
        /// How many more connects, identical to this one and made since the record before it,
        /// this record stands for (the same process, destination, protocol, route and outcome;
        /// its time is the last one's): a run of identical connects is written as its first
        /// and, at most every engine tick, one record for the rest (`agent::repeats`). Every
        /// record stands for `1 + repeats` connects.
        #[serde(default, skip_serializing_if = "is_zero")]
        repeats: u32,
    },
    Open {
        path: String,
        path_truncated: bool,
        path_unresolved: bool,
        /// "read", "write" or "read_write".
        access: Access,
        created: bool,
        flags: u32,
        ino: u64,
        dev: u32,
        /// Why the kernel filter let it through.
        matched: Vec<MatchReason>,
        via: OpenVia,
        fd: i32,
        /// The watched file this is by identity (device and inode) when it was opened under
        /// another name: a bind mount, a hard link, a detached mount tree, a chroot.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        same_file_as: Option<String>,
        /// For another process's `/proc/<pid>/{mem,environ,maps}`: that process's pid as the
        /// agent sees pids, which the kernel found from the directory's identity (in a container
        /// the path's number is a pid of the container's namespace).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proc_target: Option<u32>,
        /// For `.pth` files read at interpreter start: whether the file has lines Python
        /// executes (`import ...`). Filled by the live agent, which can read the file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pth_executable: Option<bool>,
        /// For source maps (`*.map`) opened for reading: whether the map embeds the sources it
        /// maps (`sourcesContent`). Filled by the live agent, which can read the file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        map_embeds_sources: Option<bool>,
        /// For such a map that does not embed them: whether the files it maps would be packed
        /// with it by npm (its package's `files`); absent when unknown.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        map_sources_packed: Option<bool>,
        /// What the kernel did to the opener, when its job's profile has kill responses.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        response: Option<KernelResponse>,
    },
    /// A name given to a file without opening it (rename, link, symlink): judged as a write of
    /// `path`, and for rename and link, as `from` taken elsewhere.
    Name {
        op: NameOp,
        /// The new name, absolute: the process's name joined to its directory, `.` and `..`
        /// folded (a symlinked directory on the way is not followed).
        path: String,
        /// The old name (or a symlink's target) as given, made absolute when its directory is
        /// known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        /// The directory of a relative name could not be resolved (or only in part): `path` is
        /// then as given.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        path_uncertain: bool,
        matched: Vec<MatchReason>,
        /// `io_uring`: seen when submitted (whether it succeeded is not known).
        #[serde(default)]
        via: OpenVia,
    },
    /// A syscall acting on another process or on BPF (see `monitor_common::TamperEvent`).
    Tamper {
        /// `kill`, `tkill`, `tgkill`, `ptrace`, `bpf`, `process_vm_readv`, `process_vm_writev`.
        syscall: TamperSyscall,
        /// The process acted on (-1: every process); 0 for bpf.
        target: i32,
        /// The signal, the ptrace request or the bpf command.
        arg: u64,
        /// What the kernel did to the process, when its job's profile has kill responses.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        response: Option<KernelResponse>,
    },
    /// A DNS answer a process received (any resolver, UDP or TCP).
    Dns {
        /// `udp` or `tcp`.
        transport: Transport,
        fd: i32,
        /// The name asked for, lowercase, without the final dot.
        question: Option<String>,
        question_type: Option<String>,
        /// `No Error`, `Non-Existent Domain`, ...
        rcode: String,
        /// A, AAAA and CNAME records, in the order of the answer section.
        answers: Vec<dns::DnsRecord>,
        /// The message was longer than the kernel copies.
        truncated: bool,
        /// A question the process sent, seen as it left (`answers` empty), rather than an
        /// answer it read.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        sent: bool,
        /// An answer that did not arrive from where its question went (another local socket
        /// sent it): forged. Only said where the kernel's packet programs can tell.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        forged: bool,
    },
    /// The process connected to a container runtime's API socket (`socket`: the name the agent
    /// knows it by; the kernel recognised it by identity, whatever name the process used): it
    /// is a client of the runtime from now on, so what the runtime starts while it is alive may
    /// be its doing (`runtime_clients` of an exec).
    RuntimeClient { socket: String, fd: i32 },
    /// The first TLS ClientHello of a TCP connection, read as it left: the server name the
    /// client asked for (SNI), in the clear before encryption starts. Nothing is decrypted.
    Tls {
        address: IpAddr,
        port: u16,
        /// The `server_name` extension's host name, lowercase; None: the hello named none (or
        /// it lay past the bytes the kernel copies).
        server_name: Option<String>,
    },
    /// Records the kernel could not deliver for this process (its ring was full), by kind:
    /// made by the agent from the kernel's per-process counts, so the job's report counts what
    /// its own processes lost.
    Lost { records: BTreeMap<String, u64> },
    /// A process already running when the agent started, carrying a CI job identity in its
    /// environment (read from /proc): how a restarted agent picks running jobs up again.
    Resume {
        /// The kept keys of its environment (as for exec).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
        cwd: String,
        /// When the process started, boot-time ns like `ts_ns`.
        process_started_ns: u64,
    },
    /// A job declared over the control socket (`monitor job start`, the runner's job-started
    /// hook). `process` is the job's anchor: its descendants are the job.
    JobStart {
        job: crate::ci::JobIdentity,
        /// `job start` or `hook`.
        via: String,
        /// Who asked (from the socket's peer credentials).
        requested_by_pid: u32,
        requested_by_uid: u32,
        /// With `requested_by_pid`, names the asking process (0: unknown).
        #[serde(default)]
        requested_by_start_ticks: u64,
    },
    /// What the container runtime said of a container (`containers::docker`). `process` is the
    /// agent.
    Container {
        change: ContainerChange,
        container: crate::containers::ContainerMeta,
        /// The processes connected to the runtime's socket when it said the container was
        /// created: the client that asked is among them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        requested_by: Vec<ProcessRef>,
    },
    /// The end of a job (`monitor job stop`, the job-completed hook). `process` is who asked.
    JobEnd {
        /// The job's key (`job.key` in findings).
        job: String,
        via: String,
    },
}

impl Detail {
    /// What the kernel did, on its own, to the process the record is about.
    pub fn response(&self) -> Option<KernelResponse> {
        match self {
            Detail::Open { response, .. }
            | Detail::Tamper { response, .. }
            | Detail::Fork { response, .. }
            | Detail::Exec { response, .. } => *response,
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Detail::Exec { .. } => "exec",
            Detail::Fork { .. } => "fork",
            Detail::Exit { .. } => "exit",
            Detail::Connect { .. } => "connect",
            Detail::Open { .. } => "open",
            Detail::Name { .. } => "name",
            Detail::Dns { .. } => "dns",
            Detail::Tls { .. } => "tls",
            Detail::RuntimeClient { .. } => "runtime_client",
            Detail::Tamper { .. } => "tamper",
            Detail::Resume { .. } => "resume",
            Detail::Lost { .. } => "lost",
            Detail::JobStart { .. } => "job_start",
            Detail::JobEnd { .. } => "job_end",
            Detail::Container { .. } => "container",
        }
    }
}

/// A process, named across pid reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRef {
    pub pid: u32,
    pub start_ticks: u64,
}

/// What happened to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerChange {
    Created,
    /// Started (again): its description with its network addresses.
    Started,
    /// There already when the agent connected to the runtime.
    Present,
    Removed,
}

/// A process's arguments, shared by the process table and every event, finding and report
/// record that names the process: an exec storm with long command lines keeps each one once,
/// and an event's ancestry costs reference counts, not copies.
pub type Argv = std::sync::Arc<[String]>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    /// With `pid`, names the process across pid reuse (clock ticks since boot, as in /proc).
    pub start_ticks: u64,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    pub exe: Option<String>,
    /// Secrets found in arguments are replaced by `[REDACTED]`.
    pub argv: Argv,
    pub argv_truncated: bool,
    pub cgroup_id: u64,
    /// Its mount namespace (the inode `/proc/PID/ns/mnt` names; 0 unknown).
    #[serde(default)]
    pub mnt_ns: u32,
    /// The container it runs in (its runtime's full id), told by its cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// It runs in its container's own file system view: the mount namespace the container's
    /// first program ran in. A process the runtime started in the container is in it; a host
    /// process moved into the container's cgroup is not, and its paths stay the host's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_container_view: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ancestor {
    pub pid: u32,
    pub start_ticks: u64,
    pub comm: String,
    pub exe: Option<String>,
    pub argv: Argv,
    pub exited: bool,
}

/// Converts CLOCK_BOOTTIME to wall time with an offset taken once at start.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    pub boot_to_unix_ns: i128,
}

impl WallClock {
    pub fn now() -> Self {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid pointer to a timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        let boot = ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128;
        Self {
            boot_to_unix_ns: unix - boot,
        }
    }

    pub fn format(&self, boot_ns: u64) -> String {
        let unix = (boot_ns as i128 + self.boot_to_unix_ns).max(0) as u64;
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(unix);
        humantime::format_rfc3339_nanos(t).to_string()
    }
}

pub use program::{argument_program, program_path, reads_program_from_stdin};

fn is_zero(n: &u32) -> bool {
    *n == 0
}
