//! The event ABI shared by the kernel programs (`monitor-ebpf`) and the agent (`monitor`).
//!
//! Every record the kernel writes to the ring buffer starts with an [`EventHeader`]; the header's
//! `kind` says which fixed payload follows, and some kinds carry variable-length bytes after the
//! fixed payload (paths, argv). All types are plain `#[repr(C)]`, `Copy`, without `bool` or implicit
//! padding, and their sizes are asserted at compile time so both sides can never silently disagree.
#![no_std]

/// Version of the binary layout below. Bump it whenever a struct or a meaning changes; the JSON
/// event stream carries its own schema number (see the agent's `event` module).
pub const EVENT_ABI_VERSION: u32 = 3;

/// Event kinds. Families leave gaps so a kind can be added without renumbering the others.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    ProcessExec = 1,
    ProcessFork = 2,
    ProcessExit = 3,
    /// The environment of a program just executed; always sent right before its `ProcessExec`.
    ProcessEnv = 4,
    NetConnect = 16,
    /// A DNS message a process received on a socket it used to talk to port 53.
    NetDns = 17,
    /// The first TLS ClientHello a TCP socket sent: the server name the client asked for.
    NetTls = 18,
    /// A process connected to a container runtime's API socket (known by its inode).
    RuntimeClient = 19,
    /// A syscall that acts on other processes or on the kernel's BPF: signalling the agent,
    /// ptrace, reading or writing another process's memory, bpf(2).
    Tamper = 48,
    FileOpen = 32,
    /// A name made for a file by rename, link or symlink: a write of that name by another route.
    FileName = 33,
}

impl EventKind {
    pub const ALL: [EventKind; 11] = [
        EventKind::ProcessExec,
        EventKind::ProcessFork,
        EventKind::ProcessExit,
        EventKind::ProcessEnv,
        EventKind::NetConnect,
        EventKind::NetDns,
        EventKind::NetTls,
        EventKind::FileOpen,
        EventKind::Tamper,
        EventKind::FileName,
        EventKind::RuntimeClient,
    ];

    pub fn from_u32(value: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| *kind as u32 == value)
    }

    /// Records that go through the security ring (`SECURITY_EVENTS`), which floods of the
    /// others (an exec or fork storm, DNS answers) cannot fill: what the rules exist for.
    pub const fn is_security(self) -> bool {
        matches!(
            self,
            EventKind::NetConnect
                | EventKind::NetTls
                | EventKind::RuntimeClient
                | EventKind::FileOpen
                | EventKind::Tamper
                | EventKind::FileName
        )
    }

    /// Dense index into the kernel's per-kind loss counters ([`LOSS_SLOTS`] wide).
    pub const fn loss_slot(self) -> u32 {
        match self {
            EventKind::ProcessExec => 0,
            EventKind::ProcessFork => 1,
            EventKind::ProcessExit => 2,
            EventKind::NetConnect => 3,
            EventKind::FileOpen => 4,
            EventKind::ProcessEnv => 5,
            EventKind::NetDns => 6,
            EventKind::Tamper => 7,
            EventKind::FileName => 8,
            EventKind::NetTls => 9,
            EventKind::RuntimeClient => 10,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            EventKind::ProcessExec => "exec",
            EventKind::ProcessFork => "fork",
            EventKind::ProcessExit => "exit",
            EventKind::NetConnect => "connect",
            EventKind::FileOpen => "open",
            EventKind::ProcessEnv => "env",
            EventKind::NetDns => "dns",
            EventKind::Tamper => "tamper",
            EventKind::FileName => "name",
            EventKind::NetTls => "tls",
            EventKind::RuntimeClient => "runtime-client",
        }
    }
}

/// Width of the `LOSSES` per-CPU array: one slot per event kind, with room to grow.
pub const LOSS_SLOTS: u32 = 16;

/// Records lost for one process, per `EventKind::loss_slot` (`LOSSES_BY_PROCESS`): the agent
/// reads and clears them on every tick and charges them to the process's job.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessLosses {
    pub counts: [u64; LOSS_SLOTS as usize],
}
/// Fair shares of the rings (`RING_SHARES`, kernel.rs `admit`): a control group that sent more
/// than a quarter of a ring's size in one `SHARE_WINDOW_NS` (or the one before) is flooding,
/// and while the ring is three-quarters full its records are refused (`SHED`), so the last
/// quarter stays for everyone else's. With the default 8 MiB ring that is 2 MiB a second: a busy
/// build sends about that at most (a `configure` script or a `make -j`: a few hundred programs
/// a second, each exec record with its environment 4-10 KB), and then only loses records when
/// the agent is already behind; a storm sends several times more, all the time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ShareWindow {
    pub start_ns: u64,
    pub bytes: u64,
    /// The window before's bytes: a group that flooded then is still flooding now (else each
    /// new window would let a storm's first 2 MiB fill the room kept for the others).
    pub previous: u64,
}
pub const SHARE_WINDOW_NS: u64 = 1_000_000_000;
/// Control groups tracked at once (LRU beyond).
pub const RING_SHARE_SLOTS: u32 = 4096;

/// Processes whose losses are kept between two reads of the agent (LRU beyond).
pub const LOSSES_BY_PROCESS_SLOTS: u32 = 4096;

/// Length of `task_struct.comm`.
pub const COMM_LEN: usize = 16;

/// Fixed header of every record. Identity fields describe the process the event is about (for a
/// fork, the new child), so the agent can key its process table without reading /proc.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHeader {
    /// An [`EventKind`] value.
    pub kind: u32,
    /// Kind-specific flag bits (`EXEC_*`, `OPEN_*`), e.g. truncation.
    pub flags: u32,
    /// `bpf_ktime_get_boot_ns()`: CLOCK_BOOTTIME, comparable with `start_ns`.
    pub ts_ns: u64,
    /// Thread group id (what userspace calls the pid).
    pub tgid: u32,
    /// Thread id of the thread that caused the event.
    pub pid: u32,
    /// Thread group id of the parent process (`real_parent->tgid`).
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    /// The inode number of the task's mount namespace (`nsproxy->mnt_ns->ns.inum`, what
    /// `/proc/PID/ns/mnt` names): whether a process in a container's cgroup runs in the
    /// container's file system view or the host's. 0 when unknown (no BTF for it; an exiting
    /// task whose namespaces are gone).
    pub mnt_ns: u32,
    /// `group_leader->start_boottime` in ns: with `tgid` it names a process even across pid reuse.
    pub start_ns: u64,
    /// The same for the parent process.
    pub parent_start_ns: u64,
    /// cgroup v2 id of the task (`bpf_get_current_cgroup_id`).
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
    /// The mount namespace's id for the whole boot (`ns_common.ns_id`, 6.18+;
    /// `mnt_namespace.seq` before): never given to another namespace, as the inode number in
    /// `mnt_ns` is once the namespace is gone. 0 when unknown.
    pub mnt_ns_id: u64,
}

/// Bounds on variable-length data. They are documented in docs/events.md; anything longer is cut
/// and the event carries a `*_TRUNCATED` flag, which the rules treat as suspicious (fail closed).
pub const MAX_PATH_LEN: usize = 4096;
pub const MAX_ARGV_LEN: usize = 4096;
pub const MAX_FILENAME_LEN: usize = 256;
/// Environment block copied at exec (bytes, a power of two; at most one less is kept).
pub const MAX_ENV_LEN: usize = 16384;
/// Maximum number of path components walked before a path is declared too deep.
pub const MAX_PATH_DEPTH: u32 = 48;

/// Exec flags.
pub const EXEC_ARGV_TRUNCATED: u32 = 1 << 0;
pub const EXEC_EXE_TRUNCATED: u32 = 1 << 1;
pub const EXEC_FILENAME_TRUNCATED: u32 = 1 << 2;
pub const EXEC_EXE_UNRESOLVED: u32 = 1 << 3;
pub const EXEC_CWD_TRUNCATED: u32 = 1 << 4;
pub const EXEC_CWD_UNRESOLVED: u32 = 1 << 5;
/// The executable has no name on any file system (its inode's link count is 0): a memfd, or a
/// file deleted before it ran.
pub const EXEC_EXE_UNLINKED: u32 = 1 << 6;

/// Env flags.
pub const ENV_TRUNCATED: u32 = 1 << 0;
pub const ENV_UNREADABLE: u32 = 1 << 1;

/// `sched_process_exec`: followed by `filename_len` bytes of the name given to execve (for a `#!`
/// script this is the script, while `exe` is its interpreter), `exe_len` bytes of the resolved
/// executable path, `argv_len` bytes of NUL-separated arguments and `cwd_len` bytes of the
/// resolved working directory.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExecEvent {
    pub header: EventHeader,
    pub exe_len: u16,
    pub argv_len: u16,
    pub filename_len: u16,
    pub cwd_len: u16,
    /// Total bytes of the argument block in the new process, before truncation.
    pub argv_total_len: u32,
    pub _pad1: u32,
    /// The executable inode's change time (seconds since the epoch), read by the kernel at
    /// exec: whether it was written during the job, whatever namespace it lives in and even if
    /// it is deleted later. 0 when unknown.
    pub exe_ctime_sec: i64,
    pub exe_ctime_nsec: u32,
    pub _pad2: u32,
}

/// The NUL-separated `KEY=value` block of a program just executed, followed by `env_len` bytes.
/// It carries secrets: the agent keeps only the CI-identity and package-manager keys it needs and
/// never writes the block anywhere.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EnvEvent {
    pub header: EventHeader,
    pub env_len: u32,
    /// Size of the whole block in the process, also when it was cut.
    pub env_total_len: u32,
}

/// A new process (not a thread) was created; the header describes the child.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ForkEvent {
    pub header: EventHeader,
}

/// The last thread of a process exited.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExitEvent {
    pub header: EventHeader,
    /// Wait status as the parent would see it: `(code << 8) | signal`.
    pub exit_code: u32,
    pub _pad0: u32,
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const SOCK_STREAM: u16 = 1;
pub const SOCK_DGRAM: u16 = 2;

/// An outbound `connect(2)` to an IPv4 or IPv6 address, with its result.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectEvent {
    pub header: EventHeader,
    pub fd: i32,
    /// Return value of connect: 0, or a negative errno (-EINPROGRESS for non-blocking sockets).
    pub result: i32,
    pub family: u16,
    /// `SOCK_STREAM`, `SOCK_DGRAM`, ... (0 when the socket could not be read).
    pub sock_type: u16,
    /// Destination port, host byte order.
    pub port: u16,
    /// `CONNECT_VIA_*`: which route the destination was given by.
    pub via: u8,
    /// 1 when the kernel refused it (block mode).
    pub blocked: u8,
    /// IPv4 in the first 4 bytes, or the 16 bytes of IPv6, network byte order.
    pub addr: [u8; 16],
}

/// `connect(2)`, seen at its syscall exit with its result.
pub const CONNECT_VIA_SYSCALL: u8 = 0;
/// A connect seen at the cgroup connect hook outside a `connect(2)` call: io_uring
/// `IORING_OP_CONNECT`, a 32-bit syscall, TCP Fast Open (`sendto` with `MSG_FASTOPEN`). Its
/// result is not known (0 unless the kernel refused it).
pub const CONNECT_VIA_OTHER: u8 = 1;
/// A datagram sent with a destination (`sendto`, `sendmsg`, `sendmmsg`, io_uring `SENDMSG`) on
/// an unconnected socket, seen at the cgroup sendmsg hook; once per socket and destination.
pub const CONNECT_VIA_SEND: u8 = 2;

/// A socket that bypasses addresses and ports: `SOCK_RAW` of IPv4/IPv6 (seen at the cgroup
/// `sock_create` hook, any route) or `AF_PACKET` (at `socket(2)`). `port` holds the protocol
/// number, `addr` is empty.
pub const CONNECT_VIA_RAW_SOCKET: u8 = 3;
/// An ICMP echo request sent on a ping socket (`SOCK_DGRAM` with `IPPROTO_ICMP` or
/// `IPPROTO_ICMPV6`, which unprivileged users may open where `net.ipv4.ping_group_range`
/// allows): seen as the packet leaves (the cgroup skb egress hook), since no socket-address
/// hook runs for a ping socket's `sendto`; once per socket and destination. `port` is 0: an
/// echo has none, its payload is whatever the sender chose.
pub const CONNECT_VIA_PING: u8 = 4;
pub const AF_PACKET: u16 = 17;
pub const SOCK_RAW: u16 = 3;

/// Identifies one socket and destination already reported from the cgroup hooks (`EGRESS_SEEN`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EgressSeenKey {
    /// `bpf_get_socket_cookie`: unique per socket for the life of the system.
    pub socket_cookie: u64,
    pub addr: [u8; 16],
    pub port: u16,
    pub family: u16,
    pub _pad0: u32,
}

/// Longest DNS message copied (one byte short of a power of two, so a mask bounds it). Answers
/// over UDP fit (EDNS buffers are 1232 bytes); longer TCP answers are cut and flagged.
pub const DNS_PAYLOAD_MAX: usize = 4095;
/// DNS flags.
pub const DNS_TRUNCATED: u32 = 1 << 0;
/// A question the process sent (seen on the way out), not an answer it read.
pub const DNS_QUESTION: u32 = 1 << 1;
/// Longest DNS question copied (one byte short of a power of two): a question is one name.
pub const DNS_QUESTION_MAX: usize = 511;
/// An answer that was seen arriving from the address its question was sent to, port 53, on the
/// socket that sent it with the same message id (dns_answer.rs). Without it the response was
/// forged by someone else on the machine.
pub const DNS_FROM_ASKED: u32 = 1 << 2;

/// One question a socket sent: its cookie, the message id, and where it went (IPv4 in the first
/// 4 bytes of `addr`). With the destination in the key, a stub that sends one id to several
/// resolvers from one socket (musl) has each answer checked against its own question. Responses
/// kept before any question (`EARLY_ANSWERS`) are keyed with `family` 0 and `addr` zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsAskedKey {
    pub socket_cookie: u64,
    pub id: u16,
    pub family: u16,
    pub _pad0: [u8; 4],
    pub addr: [u8; 16],
}

/// A DNS message seen as a packet (cgroup skb programs): a question leaving (`DNS_QUESTION`) or
/// a response reaching a socket that asked one. The header is the process that gave the socket
/// port 53 as its destination. Followed by `payload_len` bytes of the message.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DnsEvent {
    pub header: EventHeader,
    /// -1: a packet names no descriptor (the field is kept for the record's layout).
    pub fd: i32,
    /// `SOCK_STREAM` (DNS over TCP: the 2-byte length leads), `SOCK_DGRAM`.
    pub sock_type: u16,
    pub _pad0: u16,
    pub payload_len: u32,
    /// Bytes the packet carried (more than `payload_len` when cut).
    pub received_len: u32,
}

/// The first TLS ClientHello a TCP socket sent (seen as a packet leaving, `cgroup_skb`), with
/// the destination it went to. Followed by `payload_len` bytes of the TLS record (at most
/// `TLS_HELLO_MAX`): the agent reads the server name (SNI) from it. The header is the process
/// that connected the socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TlsHelloEvent {
    pub header: EventHeader,
    /// Destination: IPv4 in the first 4 bytes.
    pub addr: [u8; 16],
    pub family: u16,
    pub port: u16,
    pub payload_len: u32,
}

/// A `connect(2)` of a unix socket to one of the container runtimes' API sockets the agent
/// watches (`RUNTIME_SOCKETS`, by device and inode: whatever name or mount reached it), seen at
/// the call's successful exit: who is asking the runtime, at the moment they ask.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RuntimeClientEvent {
    pub header: EventHeader,
    pub fd: i32,
    /// The value the agent stored for that socket (which runtime).
    pub socket: u32,
}

/// How much of a ClientHello is copied: the server name is among its first extensions.
pub const TLS_HELLO_MAX: usize = 1023;

/// Which syscall a `TamperEvent` reports.
pub const TAMPER_KILL: u32 = 1;
pub const TAMPER_TKILL: u32 = 2;
pub const TAMPER_TGKILL: u32 = 3;
pub const TAMPER_PTRACE: u32 = 4;
pub const TAMPER_BPF: u32 = 5;
pub const TAMPER_VM_READV: u32 = 6;
pub const TAMPER_VM_WRITEV: u32 = 7;
/// A signal generated for the agent, by whatever route (kill of its pid or process group,
/// pidfd_send_signal, 32-bit syscalls, io_uring): seen where the kernel generates it.
pub const TAMPER_SIGNAL: u32 = 8;
/// A `TAMPER_SIGNAL` record read back from the pinned tamper log by the agent that started
/// after the one it was aimed at (never sent by the kernel: the agent sets it).
pub const TAMPER_SIGNAL_LOGGED: u32 = 9;
/// A signal that stops or ends a guarded host service (a logging, audit or security daemon the
/// agent lists in `GUARDED`), by whatever route: `target` is its tgid, `arg` the signal.
pub const TAMPER_SIGNAL_GUARDED: u32 = 10;
/// A kernel module load asked for (`init_module`, `finit_module`), whatever program asks and
/// whether the kernel then loads it or not: `arg` says which call (0 init, 1 finit).
pub const TAMPER_MODULE_LOAD: u32 = 11;
/// Another process's descriptor taken (`pidfd_getfd(pidfd, fd, flags)`): `target` is the pidfd,
/// `arg` the descriptor asked for. A process killed at an open dies holding its descriptor
/// for a moment; this takes it from it (or any other) meanwhile.
pub const TAMPER_PIDFD_GETFD: u32 = 12;
/// Most processes the agent can list in `GUARDED`.
pub const GUARDED_SLOTS: u32 = 64;
/// One kind of tamper record of one process (`TAMPER_SEEN`): repeats within a second are not
/// sent again, so a loop of bpf(2) or kill calls cannot fill the security ring.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TamperSeenKey {
    pub tgid: u32,
    pub syscall: u32,
    pub target: i32,
    pub _pad0: u32,
    pub arg: u64,
}

/// Slots of the tamper log (`TAMPER_LOG`), a map pinned in bpffs so it outlives the agent: the
/// kernel writes every signal aimed at the agent there as well as to the ring, round robin, so
/// an agent killed before it read its ring leaves the record to the next one.
pub const TAMPER_LOG_SLOTS: u32 = 64;

/// A syscall aimed at another process or at BPF. Sent for: kill/tkill/tgkill of the agent (or of
/// every process, pid -1), every ptrace but PTRACE_TRACEME, every bpf(2), every
/// process_vm_readv/writev.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TamperEvent {
    pub header: EventHeader,
    /// `TAMPER_*`.
    pub syscall: u32,
    /// The process acted on (kill's pid, ptrace's pid, ...); 0 for bpf.
    pub target: i32,
    /// The signal, the ptrace request or the bpf command.
    pub arg: u64,
}

/// The processes of jobs the kernel acts for (`JOB_PROCS`): a `JOB_MEMBER` is judged by its
/// job's policy (`JOB_POLICY[slot]`): egress block mode refuses its connections and sends to
/// destinations the job may not reach, and kill responses end it at the syscall that reveals an
/// attack. A `JOB_ANCHOR` (a runner's Worker) is never judged itself, but every process it forks
/// is, as are their children (inherited in the kernel at fork).
pub const JOB_MEMBER: u32 = 1 << 0;
pub const JOB_ANCHOR: u32 = 1 << 1;
/// Inside a package's install-time code (an npm-family lifecycle script, a cargo build script or
/// a pip build of a dependency, found by the kernel at exec; or any hook the agent found):
/// inherited at fork and exec.
pub const JOB_INSTALL_CODE: u32 = 1 << 2;
/// Runs one of the system's process listers (`QUIET_LISTERS`) not asked to print environments:
/// spared the environ kill. Set and cleared at each exec, never inherited.
pub const JOB_QUIET_LISTER: u32 = 1 << 3;
/// Install-time code the kernel found itself at exec (an npm-family lifecycle script in a
/// dependency's directory), and its children: `JOB_INSTALL_CODE` too. Pip builds and cargo
/// build scripts (marked by the agent) compile and run test programs in temporary directories,
/// so only these are killed for running a program they dropped (`POLICY_KILL_INSTALL_EXEC`).
pub const JOB_INSTALL_SCRIPT: u32 = 1 << 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobEntry {
    /// The job's number in the allow maps and in `JOB_POLICY`.
    pub slot: u32,
    pub flags: u32,
}

/// Job slots: `JOB_POLICY` has one entry per slot; the agent hands them out round robin from 1
/// (0 is no job).
pub const JOB_SLOTS: u32 = 4096;

/// Header flags of any record (above the kind-specific ones): what the kernel did to the acting
/// process by its job's policy. Killed: SIGKILL, delivered before it returns to user space, so
/// before it can use what the syscall gave it.
pub const RESPONSE_KILLED: u32 = 1 << 28;
/// The policy would have killed it, but it is rehearsed (`POLICY_REHEARSE`).
pub const RESPONSE_WOULD_KILL: u32 = 1 << 29;
/// The policy asked for a kill, but the kernel refused to send the signal.
pub const RESPONSE_KILL_FAILED: u32 = 1 << 30;
/// The kernel refused the call (a BPF-LSM hook returned `-EPERM`): the process never got what
/// it asked for. Set with the kill flags: refused where the policy says `kill`.
pub const RESPONSE_REFUSED: u32 = 1 << 27;

/// How much of a new program's environment the install-time code scan reads (a power of two).
pub const ENV_SCAN_LEN: usize = 32768;

/// `JOB_POLICY` bits: what the kernel does for a job's processes.
/// Egress block mode (block.rs).
pub const POLICY_EGRESS_BLOCK: u32 = 1 << 0;
/// Kill a process that opens the memory or memory map (`/proc/PID/mem`, `maps`) of a process
/// outside its job, or reads or writes it another way (ptrace, process_vm_readv/writev).
pub const POLICY_KILL_PROC_MEMORY: u32 = 1 << 1;
/// Kill a process that opens the environment (`/proc/PID/environ`) of a process outside its job
/// (process listers, `QUIET_LISTERS`, excepted: `ps aux` reads every environ).
pub const POLICY_KILL_PROC_ENVIRON: u32 = 1 << 2;
/// Kill install-time code that opens a credential file (by identity, `WATCH_CREDENTIAL`).
pub const POLICY_KILL_INSTALL_CREDENTIAL: u32 = 1 << 3;
/// Rehearse: decide as above, mark the record `would_kill`, and kill nothing.
pub const POLICY_REHEARSE: u32 = 1 << 4;
/// Kill a process that signals the agent or uses bpf(2).
pub const POLICY_KILL_TAMPER: u32 = 1 << 5;
/// Kill a lifecycle script's process (`JOB_INSTALL_SCRIPT`) that executes a program written
/// during the job (its file changed after `JOB_STARTED`) in a temporary directory (`/tmp`,
/// `/var/tmp`, `/dev/shm`) or with no name (memfd, deleted): a dropper's payload, killed before
/// its first instruction.
pub const POLICY_KILL_INSTALL_EXEC: u32 = 1 << 6;
/// Set by the agent, not the profile: opens a kill is due for are refused (BPF-LSM
/// `file_open`), so no descriptor ever exists and a process sharing the opener's descriptor
/// table has nothing to read (no kill at `clone(CLONE_FILES)` is needed).
pub const POLICY_OPENS_REFUSED: u32 = 1 << 7;
/// The policies that need install-time code found at exec (`exec_scan`).
pub const POLICY_NEEDS_INSTALL_SCAN: u32 =
    POLICY_KILL_INSTALL_CREDENTIAL | POLICY_KILL_INSTALL_EXEC;
/// The kill bits.
pub const POLICY_KILLS: u32 = POLICY_KILL_PROC_MEMORY
    | POLICY_KILL_PROC_ENVIRON
    | POLICY_KILL_INSTALL_CREDENTIAL
    | POLICY_KILL_TAMPER
    | POLICY_KILL_INSTALL_EXEC;

/// Ports a destination is allowed on: any, or up to `MAX_ALLOWED_PORTS` listed.
pub const MAX_ALLOWED_PORTS: usize = 14;
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortSet {
    pub any: u16,
    pub count: u16,
    pub ports: [u16; MAX_ALLOWED_PORTS],
}

impl PortSet {
    pub fn allows(&self, port: u16) -> bool {
        if self.any != 0 {
            return true;
        }
        let mut i = 0;
        while i < MAX_ALLOWED_PORTS {
            if i < self.count as usize && self.ports[i] == port {
                return true;
            }
            i += 1;
        }
        false
    }
}

/// Allow-map keys (LPM data): the job's slot (big-endian, matched exactly: the first 32 bits
/// of every prefix) and the address.
pub type Allow4Data = [u8; 8];
pub type Allow6Data = [u8; 20];

/// A domain the job may reach, by the hash of its labels from the right (`com`, then
/// `example`): `wildcard` entries match names strictly below it (`*.example.com`), others the
/// name itself.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NameHashKey {
    pub slot: u32,
    pub wildcard: u32,
    pub hash: u64,
}

/// FNV-1a 64 of each label (lowercase ASCII), folded from the rightmost label: the kernel gets
/// every suffix's hash on the way (`com`, `example.com`, `www.example.com`).
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

pub fn fnv_step(hash: u64, byte: u8) -> u64 {
    (hash ^ byte.to_ascii_lowercase() as u64).wrapping_mul(FNV_PRIME)
}

/// Folds one more label (its own hash) into a suffix hash.
pub fn name_step(suffix: u64, label_hash: u64) -> u64 {
    (suffix ^ label_hash).wrapping_mul(FNV_PRIME)
}

/// The hash of `name` as the kernel computes it.
pub fn reversed_name_hash(name: &[u8]) -> u64 {
    let mut end = name.len();
    if end > 0 && name[end - 1] == b'.' {
        end -= 1; // the root label
    }
    let mut suffix = FNV_OFFSET;
    let mut i = end;
    while i > 0 {
        let mut start = i;
        while start > 0 && name[start - 1] != b'.' {
            start -= 1;
        }
        let mut label = FNV_OFFSET;
        let mut j = start;
        while j < i {
            label = fnv_step(label, name[j]);
            j += 1;
        }
        suffix = name_step(suffix, label);
        i = start.saturating_sub(1);
        if start == 0 {
            break;
        }
    }
    suffix
}

/// Open flags.
pub const OPEN_PATH_TRUNCATED: u32 = 1 << 0;
pub const OPEN_VIA_IO_URING: u32 = 1 << 1;
pub const OPEN_PATH_UNRESOLVED: u32 = 1 << 2;
/// Seen by the BPF-LSM `file_open` hook (every route; `fd` is -1: it had none yet).
pub const OPEN_VIA_LSM: u32 = 1 << 3;
/// Seen by fentry on `security_file_open` (every route; `fd` is -1).
pub const OPEN_VIA_FENTRY: u32 = 1 << 4;

/// Why the kernel let an open through its filter (bits of `FileOpenEvent::matched`).
pub const MATCH_NAME: u32 = 1 << 0;
pub const MATCH_NAME_PREFIX: u32 = 1 << 1;
pub const MATCH_NAME_SUFFIX: u32 = 1 << 2;
pub const MATCH_PARENT_DIR: u32 = 1 << 3;
pub const MATCH_PROC_OTHER: u32 = 1 << 4;
pub const MATCH_ALL: u32 = 1 << 5;

/// Values of the watch maps: which accesses of a matching file are sent.
pub const WATCH_READ: u32 = 1 << 0;
pub const WATCH_WRITE: u32 = 1 << 1;
/// For `mem`, `environ` and `maps`: matched on procfs only, and only when the process directory
/// is not the opener's own (reading your own /proc/self/environ is normal).
pub const WATCH_PROC_OTHER: u32 = 1 << 2;
/// With `WATCH_PROC_OTHER`: the file is a process's memory (`mem`, `maps`), not its environment.
pub const WATCH_PROC_MEMORY: u32 = 1 << 3;
/// In `WATCH_INODES`: the file is a credential (not a persistence place).
pub const WATCH_CREDENTIAL: u32 = 1 << 4;

/// A successful open, resolved to the file the kernel really opened. Followed by `path_len` bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FileOpenEvent {
    pub header: EventHeader,
    /// `file->f_flags` (O_ACCMODE, O_CREAT, O_TRUNC, ... as the kernel kept them).
    pub f_flags: u32,
    /// `file->f_mode` (FMODE_READ = 1, FMODE_WRITE = 2, FMODE_CREATED = 0x100000).
    pub f_mode: u32,
    pub ino: u64,
    /// `sb->s_dev` of the file's filesystem (kernel dev_t encoding).
    pub dev: u32,
    /// `MATCH_*` bits.
    pub matched: u32,
    pub fd: i32,
    pub path_len: u16,
    pub _pad0: u16,
    /// For `/proc/<pid>/{mem,environ,maps}` of another process (`MATCH_PROC_OTHER`): that
    /// process, as a pid of the initial namespace (the directory's name is a pid of its /proc's
    /// namespace: a container's). 0 otherwise.
    pub proc_owner: u32,
    /// `inode->i_generation`: made anew for every inode a file system allocates (ext4, xfs,
    /// btrfs, tmpfs), so a removed file's number given to a new file is told from the file
    /// itself. 0 where the file system keeps none, or the layout is unknown.
    pub generation: u32,
}

/// A fork record's flag: the child was made a sibling of its maker (`CLONE_PARENT`): its parent
/// in the record is its maker, not the parent the kernel gave it.
pub const FORK_AS_SIBLING: u32 = 1;
/// A fork record's flag: the child shares its maker's descriptor table (`CLONE_FILES`, a
/// process, not a thread). With a `RESPONSE_*` flag: what the kernel did to the maker for it.
pub const FORK_SHARES_FILES: u32 = 2;
/// A new name given to a file (`FileNameEvent::op`).
pub const NAME_OP_RENAME: u32 = 1;
pub const NAME_OP_LINK: u32 = 2;
pub const NAME_OP_SYMLINK: u32 = 3;
/// A name removed (unlink): the record's old name is the removed one, its new name empty.
pub const NAME_OP_UNLINK: u32 = 4;

/// `FileNameEvent` flags: the directory a relative name is relative to could not be resolved,
/// or was resolved only in part (too deep).
pub const NAME_DIR_UNRESOLVED: u32 = 1 << 0;
pub const NAME_DIR_TRUNCATED: u32 = 1 << 1;
/// The new name was cut at `MAX_PATH_LEN` (or could not be read).
pub const NAME_TRUNCATED: u32 = 1 << 2;
/// The directory is the one the (relative) new name is relative to.
pub const NAME_DIR_FOR_NEW: u32 = 1 << 3;
/// The directory is (also) the one the (relative) old name is relative to.
pub const NAME_DIR_FOR_FROM: u32 = 1 << 4;
/// Asked of io_uring (IORING_OP_RENAMEAT/LINKAT/SYMLINKAT), seen when submitted: whether it
/// succeeded is not known.
pub const NAME_VIA_IO_URING: u32 = 1 << 5;
/// Seen by the BPF-LSM `path_rename`/`path_link`/`path_symlink` hooks (any route), before the
/// filesystem acted.
pub const NAME_VIA_LSM: u32 = 1 << 6;
/// Seen by fentry on `security_path_rename`/`_link`/`_symlink` (any route), before the
/// filesystem acted.
pub const NAME_VIA_FENTRY: u32 = 1 << 7;

/// A successful rename, link or symlink whose new name (or, for rename and link, old name) passed
/// the watch filter. Followed by `dir_len` bytes (the directory a relative new name is relative
/// to, resolved like an open's path; empty for an absolute name), `name_len` bytes (the new name
/// as the process gave it) and `from_len` bytes (the old name or the symlink's target as given).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FileNameEvent {
    pub header: EventHeader,
    /// `NAME_OP_*`.
    pub op: u32,
    /// `MATCH_*` bits of the new name (and `MATCH_FROM` when the old name matched).
    pub matched: u32,
    pub dir_len: u16,
    pub name_len: u16,
    pub from_len: u16,
    pub _pad0: u16,
}

/// The opened file is one of the watched files by identity (`WATCH_INODES`): the same inode
/// reached through a bind mount, a hard link, a detached mount tree or a chroot.
pub const MATCH_INODE: u32 = 1 << 7;

/// A watched file's identity: `sb->s_dev` (kernel dev_t encoding: major << 20 | minor) and
/// `i_ino`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InodeKey {
    pub ino: u64,
    pub dev: u32,
    pub _pad0: u32,
}
/// Watched identities the kernel holds.
pub const WATCH_INODE_SLOTS: u32 = 4096;

/// The old name of a rename or link passed the watch filter (a credential moved or linked away).
pub const MATCH_FROM: u32 = 1 << 6;

/// The written file (or new name) lies under a watched directory (`WATCH_SUBTREES`), found by
/// the directory's identity among its first `SUBTREE_DEPTH` ancestors: the runner's downloaded
/// actions and tool cache, whatever name or mount reached them.
pub const MATCH_SUBTREE: u32 = 1 << 8;
/// How many ancestors of a written file are compared with the watched directories.
pub const SUBTREE_DEPTH: u32 = 12;
/// Watched directories the kernel holds.
pub const WATCH_SUBTREE_SLOTS: u32 = 64;

/// The written file (or the file a rename replaces) is one of the job's tracked sources
/// (`WATCH_SOURCES`, by identity): what git checked out, written after the checkout.
pub const MATCH_SOURCE: u32 = 1 << 9;
/// Tracked source files the kernel holds (every job's together).
pub const WATCH_SOURCE_SLOTS: u32 = 65536;

/// `WATCH_PAIRS`: one bit per pair of bytes (65536 bits, 2048 words) in each of four sections,
/// set when some watched entry of that list could match a name with that pair: the first two
/// bytes of names, of prefixes and of parent directory names, and the last two bytes (last
/// first) of suffixes. The kernel looks a name up in a list only when its pair's bit is set, so
/// the names a build opens all day (`main.rs`, `index.js`) cost two array reads, not four hash
/// and trie lookups.
pub const PAIR_SECTION_WORDS: u32 = 2048;
pub const PAIRS_NAMES: u32 = 0;
pub const PAIRS_PREFIXES: u32 = 1;
pub const PAIRS_SUFFIXES: u32 = 2;
pub const PAIRS_PARENTS: u32 = 3;
pub const WATCH_PAIRS_WORDS: u32 = 4 * PAIR_SECTION_WORDS;

/// The bit of `PAIRS_NAMES` for a name: exact names are known whole, so their bit folds the
/// first pair (`b0 | b1 << 8`, `b1` 0 for a one-byte name) with the last pair (`last |
/// second_last << 8`, the byte itself for a one-byte name) and the length. A first pair alone
/// let through every name sharing a watched name's first two bytes (`config.h`, `constants.rs`
/// and `configure` all passed for `config`; the bench's `unwatched.txt` for
/// `unprivileged_bpf_disabled`), each then paying a name read and a hash lookup.
pub const fn name_filter_key(first: u32, last: u32, len: u32) -> u32 {
    (first.wrapping_mul(0x9e37) ^ last.wrapping_mul(0x2c1b) ^ len.wrapping_mul(0x7f4b)) & 0xffff
}

/// Size of a watch-map key: a file or directory name, NUL padded. Longer names are cut.
pub const NAME_KEY_LEN: usize = 64;
/// Suffix keys hold the last bytes of a name, reversed, so a longest-prefix-match trie finds them.
pub const SUFFIX_KEY_LEN: usize = 16;

/// Key of the exact-name and parent-directory watch maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NameKey {
    pub bytes: [u8; NAME_KEY_LEN],
}

/// Data of the prefix and suffix LPM tries (the prefix length in bits is beside it in the key).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AffixKey {
    pub bytes: [u8; SUFFIX_KEY_LEN],
}

/// Byte offsets of the kernel structure fields the programs read, found in the running kernel's
/// BTF by the agent at load time and handed over as a read-only global, so no layout of one kernel
/// is compiled in. A zero `present` means the agent could not fill it (the programs then report
/// `*_UNRESOLVED` instead of reading garbage).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub present: u32,
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub task_group_leader: u32,
    pub task_start_boottime: u32,
    pub task_mm: u32,
    pub task_files: u32,
    pub task_fs: u32,
    pub task_signal: u32,
    pub fs_pwd: u32,
    pub mm_env_start: u32,
    pub mm_env_end: u32,
    pub task_exit_code: u32,
    pub signal_live: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub mm_exe_file: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_f_path: u32,
    pub file_f_flags: u32,
    pub file_f_mode: u32,
    pub file_f_inode: u32,
    pub file_private_data: u32,
    pub path_mnt: u32,
    pub path_dentry: u32,
    pub dentry_d_parent: u32,
    pub dentry_d_name: u32,
    pub dentry_d_inode: u32,
    pub dentry_d_sb: u32,
    pub qstr_len: u32,
    pub qstr_name: u32,
    pub mount_mnt: u32,
    pub mount_mnt_parent: u32,
    pub mount_mnt_mountpoint: u32,
    pub vfsmount_mnt_root: u32,
    pub fs_root: u32,
    pub inode_i_ino: u32,
    /// `inode.i_sb`: the file's own superblock. For a file opened through overlayfs, the
    /// security hooks also see the real file beneath, whose path is the overlay's; its
    /// identity (device and inode) is the real file system's, what `stat` reports for it.
    pub inode_i_sb: u32,
    /// `inode.i_nlink` (in an anonymous union with `__i_nlink`).
    pub inode_i_nlink: u32,
    /// Seconds of `inode`'s change time (`i_ctime_sec`, 6.11+; `__i_ctime.tv_sec` 6.6-6.10;
    /// `i_ctime.tv_sec` before).
    pub inode_i_ctime_sec: u32,
    /// Its nanoseconds (`i_ctime_nsec`, or the timespec's `tv_nsec`, read as 32 bits).
    pub inode_i_ctime_nsec: u32,
    pub sb_s_dev: u32,
    pub sb_s_magic: u32,
    pub socket_type: u32,
    /// `socket.sk`, and `sock_common.skc_cookie` (the socket cookie, once one was asked for).
    pub socket_sk: u32,
    pub sock_cookie: u32,
    pub io_kiocb_opcode: u32,
    pub io_uring_cqe_res: u32,
    /// io_uring's rename, link and symlink requests (`io_kiocb.cmd` as `struct io_rename` /
    /// `struct io_link`, which share this layout) and `struct filename.name`. Valid when
    /// `ProbeConfig::io_uring_names` is set.
    pub io_kiocb_cmd: u32,
    pub io_names_old_dfd: u32,
    pub io_names_new_dfd: u32,
    pub io_names_oldpath: u32,
    pub io_names_newpath: u32,
    /// io_uring's unlink requests (`io_kiocb.cmd` as `struct io_unlink`).
    pub io_unlink_dfd: u32,
    pub io_unlink_filename: u32,
    pub filename_name: u32,
    /// `linux_binprm.file` (the file an exec is about to run) and `.filename` (the name given
    /// to execve), for the BPF-LSM `bprm_check_security` program.
    pub binprm_file: u32,
    pub binprm_filename: u32,
    /// `unix_sock.peer` (a connected socket's other end) and `unix_sock.path` (the bound name's
    /// `struct path`, which an accepted socket shares with its listener). 0 when the kernel's
    /// BTF has no `unix_sock` (unix sockets built as a module): runtime clients are then asked
    /// of `/proc` only.
    pub unix_sock_peer: u32,
    pub unix_sock_path: u32,
    /// `proc_inode.pid` and `.vfs_inode`, `pid.numbers`, `upid.nr`: whose a /proc directory is,
    /// by its `struct pid` (the pid in the initial namespace, whatever /proc it was opened
    /// through). `pid_numbers` 0 when absent: the directory's name is used.
    pub proc_inode_pid: u32,
    pub proc_inode_vfs_inode: u32,
    pub pid_numbers: u32,
    pub upid_nr: u32,
    /// `pid.tasks` (`tasks[PIDTYPE_PID].first`: the task the `struct pid` is, through its
    /// `task_struct.pid_links[PIDTYPE_PID]`): a thread's /proc directory is its process's
    /// (the task's `tgid`). 0 when absent: the `struct pid`'s own number is used.
    pub pid_tasks: u32,
    pub task_pid_links: u32,
    /// `inode.i_generation` (0: not in BTF, the records carry no generation).
    pub inode_i_generation: u32,
    /// `task_struct.nsproxy`, `nsproxy.mnt_ns` and `mnt_namespace.ns.inum` (the header's
    /// `mnt_ns`). All 0 when any is missing from BTF: the header says 0.
    pub task_nsproxy: u32,
    pub nsproxy_mnt_ns: u32,
    pub mnt_ns_inum: u32,
    /// `mnt_namespace.ns.ns_id` (6.18+) or `mnt_namespace.seq` (the header's `mnt_ns_id`);
    /// 0: neither (the header says 0).
    pub mnt_ns_unique: u32,
    /// Where a dentry keeps a short name in place (`d_shortname`, 6.14+; `d_iname` before):
    /// the open filter takes a short name's first and last bytes from the same read as the
    /// dentry's parent and name (monitor-ebpf open.rs). 0: not in BTF (read separately).
    pub dentry_d_iname: u32,
    /// Non-zero where tracing programs may ask for the current task as a typed pointer
    /// (`bpf_get_current_task_btf`, 5.11+ with BTF) and read its fields with plain loads the
    /// verifier checks against BTF, not one helper call each (monitor-ebpf
    /// `kernel::current_file_of_fd`). 0: every field is read with `bpf_probe_read_kernel`.
    pub task_btf_loads: u32,
}

/// io_uring_complete's arguments differ across kernels; the agent reads the prototype from BTF.
/// 5.x: (ctx, req, user_data, res, cflags); 6.x: (ctx, req, cqe).
pub const IO_URING_LAYOUT_NONE: u32 = 0;
pub const IO_URING_LAYOUT_RES_ARG3: u32 = 1;
pub const IO_URING_LAYOUT_CQE_ARG2: u32 = 2;

/// Run-time settings handed to the programs as a read-only global.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeConfig {
    /// The agent's own tgid: its events are never sent.
    pub agent_tgid: u32,
    /// Non-zero: send every successful open (learning and debugging; costly).
    pub open_all: u32,
    /// One of `IO_URING_LAYOUT_*`.
    pub io_uring_layout: u32,
    /// Non-zero: send each executed program's environment (an `EnvEvent` before its exec).
    pub capture_env: u32,
    /// Non-zero: the io_uring name offsets are known (`KernelOffsets::io_kiocb_cmd`, ...).
    pub io_uring_names: u32,
    /// The sizes the two rings were created with (`EVENTS`, `SECURITY_EVENTS`), so a record's
    /// fair-share check need not ask the kernel each time; 0: ask it.
    pub events_ring_bytes: u32,
    pub security_ring_bytes: u32,
    /// Non-zero: socket-address programs may call `bpf_get_current_task_btf` on this kernel
    /// (the agent loaded one that does).
    pub sock_addr_task_btf: u32,
}

/// Magic of procfs (`PROC_SUPER_MAGIC`): opens of `/proc/<other pid>/{mem,environ,maps}` always pass.
pub const PROC_SUPER_MAGIC: u32 = 0x9fa0;

const _: () = {
    assert!(core::mem::size_of::<EventHeader>() == 88);
    assert!(core::mem::size_of::<ExecEvent>() == 120);
    assert!(core::mem::size_of::<ForkEvent>() == 88);
    assert!(core::mem::size_of::<ExitEvent>() == 96);
    assert!(core::mem::size_of::<EnvEvent>() == 96);
    assert!(core::mem::size_of::<ConnectEvent>() == 120);
    assert!(core::mem::size_of::<DnsEvent>() == 104);
    assert!(core::mem::size_of::<TlsHelloEvent>() == 112);
    assert!(core::mem::size_of::<RuntimeClientEvent>() == 96);
    assert!(core::mem::size_of::<PortSet>() == 32);
    assert!(core::mem::size_of::<TamperEvent>() == 104);
    assert!(core::mem::size_of::<NameHashKey>() == 16);
    assert!(core::mem::size_of::<JobEntry>() == 8);
    assert!(core::mem::size_of::<DnsEvent>() + DNS_PAYLOAD_MAX + 1 <= EVENT_SCRATCH_LEN);
    assert!((DNS_PAYLOAD_MAX + 1).is_power_of_two());
    assert!(core::mem::size_of::<FileOpenEvent>() == 128);
    assert!(core::mem::size_of::<NameKey>() == NAME_KEY_LEN);
    assert!(core::mem::size_of::<KernelOffsets>() == 76 * 4);
    assert!(core::mem::size_of::<DnsAskedKey>() == 32);
    assert!(core::mem::size_of::<TamperSeenKey>() == 24);
    assert!(core::mem::size_of::<EgressSeenKey>() == 32);
    assert!(core::mem::size_of::<ProbeConfig>() == 32);
    // The kernel builds a record in one scratch buffer before copying it out.
    assert!(
        core::mem::size_of::<ExecEvent>() + 2 * MAX_PATH_LEN + MAX_ARGV_LEN + MAX_FILENAME_LEN
            <= EVENT_SCRATCH_LEN
    );
    assert!(core::mem::size_of::<EnvEvent>() + MAX_ENV_LEN <= EVENT_SCRATCH_LEN);
    assert!(core::mem::size_of::<TlsHelloEvent>() + TLS_HELLO_MAX + 1 <= EVENT_SCRATCH_LEN);
};

/// Size of the per-CPU buffer a record is assembled in (a power of two, so offsets can be masked).
pub const EVENT_SCRATCH_LEN: usize = 32768;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C), Copy, without padding or invalid bit patterns.
    unsafe impl aya::Pod for NameKey {}
    unsafe impl aya::Pod for AffixKey {}
    unsafe impl aya::Pod for InodeKey {}
    unsafe impl aya::Pod for KernelOffsets {}
    unsafe impl aya::Pod for ProbeConfig {}
    unsafe impl aya::Pod for JobEntry {}
    unsafe impl aya::Pod for ProcessLosses {}
    unsafe impl aya::Pod for TamperEvent {}
    unsafe impl aya::Pod for PortSet {}
    unsafe impl aya::Pod for NameHashKey {}
}
