//! Kernel side of the monitor: process lifecycle, connect and file-open probes.
//!
//! Tracepoints, raw tracepoints and cgroup programs carry everything, so the object works where
//! fentry/LSM are refused and kprobes are absent; where the kernel allows them, a BPF-LSM or
//! fentry program on `security_file_open` replaces the open tracepoints (open.rs: every route,
//! and refusal). The agent loads only the programs it attaches. Kernel structures are read at offsets that the
//! agent finds in the running kernel's BTF (`KERNEL_OFFSETS`), never at offsets compiled in.
//! Each program filters before it reserves or copies anything, and counts every record it could
//! not hand to the ring buffer.
#![no_std]
#![no_main]

mod block;
mod connect;
mod dns_answer;
mod dns_question;
mod egress;
mod kernel;
mod new_name;
mod open;
mod packet;
mod path;
mod process;
mod respond;
mod sockets;
mod tamper;
mod tls_owner;
mod watch;

use aya_ebpf::{
    macros::map,
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, ProgramArray, RingBuf,
    },
};
use monitor_common::{
    AffixKey, Allow4Data, Allow6Data, ConnectEvent, DnsAskedKey, EgressSeenKey, EventHeader,
    InodeKey, JobEntry, KernelOffsets, NameHashKey, NameKey, PortSet, ProbeConfig, ProcessLosses,
    TamperEvent, TamperSeenKey, ENV_SCAN_LEN, EVENT_SCRATCH_LEN, GUARDED_SLOTS, JOB_SLOTS,
    LOSSES_BY_PROCESS_SLOTS, LOSS_SLOTS, TAMPER_LOG_SLOTS, WATCH_INODE_SLOTS, WATCH_PAIRS_WORDS,
    WATCH_SOURCE_SLOTS, WATCH_SUBTREE_SLOTS,
};

/// Filled by the agent before load (read-only data: the verifier sees them as constants).
#[no_mangle]
static KERNEL_OFFSETS: KernelOffsets = unsafe { core::mem::zeroed() };
#[no_mangle]
static PROBE_CONFIG: ProbeConfig = unsafe { core::mem::zeroed() };

/// Process lifecycle and DNS records, variable length. The agent may resize it before load.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Connects, watched opens and tamper records (`EventKind::is_security`): their own ring, so an
/// exec/fork storm or a DNS-answer flood that fills `EVENTS` cannot push them out. The agent
/// reads both and orders them by time. It may resize it before load.
#[map]
static SECURITY_EVENTS: RingBuf = RingBuf::with_byte_size(2 * 1024 * 1024, 0);

/// Whether the agent's ring reader is waiting to be woken (1) or will look at the rings on its
/// own within a few milliseconds (0, while records keep coming): records ask the kernel to wake
/// the reader only in the first case (kernel.rs, `wakeup_flag`). Written by the agent only.
#[map]
static READER_WAITING: Array<u32> = Array::with_max_entries(1, 0);

/// Records that could not be written to `EVENTS`, per `EventKind::loss_slot`.
#[map]
static LOSSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOSS_SLOTS, 0);

/// Records refused to a flooding control group while its ring was three-quarters full, per
/// `EventKind::loss_slot` (also counted in `LOSSES` and `LOSSES_BY_PROCESS`: they are lost).
#[map]
static SHED: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOSS_SLOTS, 0);

/// How many record bytes each control group sent in the current window, all CPUs together
/// (kernel.rs, `admit`). LRU: a flood of new control groups evicts the oldest, which start
/// afresh.
#[map]
static RING_SHARES: LruHashMap<u64, monitor_common::ShareWindow> =
    LruHashMap::with_max_entries(monitor_common::RING_SHARE_SLOTS, 0);

/// The same losses by the process whose record it was (tgid), so a job's report counts what
/// its own processes lost. LRU: a process flooding past the bound evicts the oldest entries,
/// whose losses then count only machine-wide.
#[map]
static LOSSES_BY_PROCESS: LruPerCpuHashMap<u32, ProcessLosses> =
    LruPerCpuHashMap::with_max_entries(LOSSES_BY_PROCESS_SLOTS, 0);

/// Signals aimed at the agent, also kept here (pinned in bpffs by the agent, so the map outlives
/// it): round robin over `TAMPER_LOG_SLOTS`, the next slot in `TAMPER_LOG_NEXT[0]`.
#[map]
static TAMPER_LOG: Array<TamperEvent> = Array::with_max_entries(TAMPER_LOG_SLOTS, 0);
#[map]
static TAMPER_LOG_NEXT: Array<u64> = Array::with_max_entries(1, 0);

/// The last time each process sent each tamper record (tamper.rs): repeats within a second are
/// dropped. LRU: a process that cycles through more keys than this only gets more records.
#[map]
static TAMPER_SEEN: LruHashMap<TamperSeenKey, u64> = LruHashMap::with_max_entries(4096, 0);

/// Guarded host services (tgid -> 1): logging, audit and security daemons whose stopping is
/// `defence-tampering`. Filled and refreshed by the agent from /proc.
#[map]
static GUARDED: HashMap<u32, u32> = HashMap::with_max_entries(GUARDED_SLOTS, 0);

/// Records a probe could not build (a failed kernel or user memory read), per
/// `EventKind::loss_slot`: lost like ring losses, and counted like them.
#[map]
static PROBE_ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOSS_SLOTS, 0);

/// Where a record is assembled before it is copied to the ring (too big for the 512-byte stack).
#[repr(C)]
pub struct EventScratch {
    pub bytes: [u8; EVENT_SCRATCH_LEN],
}
#[map]
static EVENT_SCRATCH: PerCpuArray<EventScratch> = PerCpuArray::with_max_entries(1, 0);

/// Watch lists pushed by the agent: an open passes the kernel filter when the opened file's name,
/// name prefix, name suffix (reversed) or parent directory name is listed for that access.
#[map]
static WATCH_NAMES: HashMap<NameKey, u32> = HashMap::with_max_entries(1024, 0);
#[map]
static WATCH_PARENT_DIRS: HashMap<NameKey, u32> = HashMap::with_max_entries(256, 0);
/// Watched files by identity (dev, ino) -> WATCH_* access bits, pushed and refreshed by the
/// agent: the credential and persistence files of the machine's homes and of each job's.
#[map]
static WATCH_INODES: HashMap<InodeKey, u32> = HashMap::with_max_entries(WATCH_INODE_SLOTS, 0);
/// One bit per value of an inode number's low 16 bits, set when a watched identity has it: the
/// open filter looks `WATCH_INODES` up only then (with 4096 identities, about 6 % of opens).
#[map]
static WATCH_INODE_BITS: Array<u32> = Array::with_max_entries(2048, 0);
/// Watched directories by identity (dev, ino) -> WATCH_WRITE, pushed by the agent: writes
/// anywhere under them are sent (`MATCH_SUBTREE`). Their inode numbers' bits are in
/// `WATCH_INODE_BITS` too.
#[map]
static WATCH_SUBTREES: HashMap<InodeKey, u32> = HashMap::with_max_entries(WATCH_SUBTREE_SLOTS, 0);
/// Entry 0: non-zero once the agent watches a directory (until then no write pays the walk).
#[map]
static WATCH_SUBTREES_ON: Array<u32> = Array::with_max_entries(1, 0);
/// The jobs' tracked source files by identity (dev, ino) -> WATCH_WRITE, pushed by the agent
/// when a checkout step ends: writes to them are sent (`MATCH_SOURCE`). Allocated as used.
#[map]
static WATCH_SOURCES: HashMap<InodeKey, u32> =
    HashMap::with_max_entries(WATCH_SOURCE_SLOTS, BPF_F_NO_PREALLOC);
/// Entry 0: non-zero while some job's sources are watched.
#[map]
static WATCH_SOURCES_ON: Array<u32> = Array::with_max_entries(1, 0);
const BPF_F_NO_PREALLOC: u32 = 1;
/// The pair filter in front of the watch maps (`monitor_common::PAIR_SECTION_WORDS`).
#[map]
static WATCH_PAIRS: Array<u32> = Array::with_max_entries(WATCH_PAIRS_WORDS, 0);
/// BPF_F_NO_PREALLOC is required for LPM tries.
#[map]
static WATCH_NAME_PREFIXES: LpmTrie<NameKey, u32> = LpmTrie::with_max_entries(256, 1);
#[map]
static WATCH_NAME_SUFFIXES: LpmTrie<AffixKey, u32> = LpmTrie::with_max_entries(256, 1);

/// connect(2) arguments between syscall entry and exit, keyed by thread id. LRU, so a thread that
/// never returns (killed in the syscall) cannot fill it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingConnect {
    pub fd: i32,
    pub addr_len: u32,
    pub sockaddr: [u8; 28],
    /// Set by egress.rs when block mode refused this connect.
    pub blocked: u32,
    /// `CONNECT_VIA_SYSCALL`, or `CONNECT_VIA_PING` when egress.rs saw the socket is a ping
    /// socket (its record then has no port, and its echoes are not reported again).
    pub via: u32,
}
/// The container runtimes' API sockets the agent watches, by identity (dev, ino) -> the
/// agent's number for it: a unix `connect(2)` reaching one is a `RuntimeClient` record
/// (connect.rs). Entry 0 of `RUNTIME_SOCKETS_ON` is non-zero once there is one (until then unix
/// connects are not followed to their exit).
#[map]
static RUNTIME_SOCKETS: HashMap<InodeKey, u32> = HashMap::with_max_entries(16, 0);
#[map]
static RUNTIME_SOCKETS_ON: Array<u32> = Array::with_max_entries(1, 0);
#[map]
static PENDING_CONNECTS: LruHashMap<u32, PendingConnect> = LruHashMap::with_max_entries(8192, 0);

/// A thread inside `connect(2)` while the egress hooks are attached (`EGRESS_HOOKS_ON`), in the
/// slot of its thread id's low bits: connect.rs marks it at the syscall's entry, egress.rs
/// builds the record there when the destination is seen, and the syscall's exit adds the
/// result and sends it. An array, not a hash: every connect pays for this, and an array slot
/// costs no insert, delete or lock. Two threads in connect(2) at once whose ids share the low
/// bits take the same slot: the hook then finds another thread's mark and reports the connect
/// at once as one outside connect(2) (no result): seen either way, never lost.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct InFlightConnect {
    /// The thread, 0 when the slot is free.
    pub tid: u32,
    /// `CONNECT_ENTERED`, `CONNECT_RECORDED` (the record below is built) or
    /// `CONNECT_UNIX_PENDING` (a unix connect in `PENDING_CONNECTS`).
    pub state: u32,
    pub fd: i32,
    pub _pad0: u32,
    pub record: ConnectEvent,
}
pub const CONNECT_ENTERED: u32 = 1;
pub const CONNECT_RECORDED: u32 = 2;
pub const CONNECT_UNIX_PENDING: u32 = 3;
pub const CONNECT_SLOTS: u32 = 8192;
#[map]
static CONNECTS_IN_FLIGHT: Array<InFlightConnect> = Array::with_max_entries(CONNECT_SLOTS, 0);
/// Entry 0 is non-zero once the agent attached every egress hook (egress.rs): connect(2) is
/// then reported from the hook (the syscall's entry only marks the thread), else from the
/// syscall's entry and exit alone.
#[map]
static EGRESS_HOOKS_ON: Array<u32> = Array::with_max_entries(1, 0);

/// Sockets and destinations egress.rs has reported (a UDP stream is one record). LRU: bounded,
/// the oldest forgotten first (a forgotten one is reported again, never missed).
#[map]
static EGRESS_SEEN: LruHashMap<EgressSeenKey, u8> = LruHashMap::with_max_entries(16384, 0);

/// Who owns each socket that was given port 53 as its destination (by socket cookie), for the
/// packet programs, which run where the current task is not the process concerned: questions
/// leaving (dns_question.rs) and responses arriving (dns_answer.rs). LRU: closed sockets are
/// never removed explicitly.
#[map]
static DNS_SOCKET_OWNERS: LruHashMap<u64, EventHeader> = LruHashMap::with_max_entries(8192, 0);

/// Who made each ping socket (socket cookie -> the header its echo record carries), kept by
/// sockets.rs at the socket's creation and read by dns_question.rs as its echoes leave. LRU:
/// closed sockets are never removed explicitly.
#[map]
static PING_SOCKET_OWNERS: LruHashMap<u64, EventHeader> = LruHashMap::with_max_entries(4096, 0);

/// Who connected each TCP socket (the header its TLS hello record carries), kept by egress.rs
/// at connect and taken by dns_question.rs with the socket's first data: slot `cookie &
/// (TLS_OWNER_SLOTS - 1)`, see tls_owner.rs.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsOwner {
    /// The socket's cookie, 0 when the slot is free.
    pub cookie: u64,
    pub header: EventHeader,
}
pub const TLS_OWNER_SLOTS: u32 = 8192;
#[map]
static TLS_OWNERS: Array<TlsOwner> = Array::with_max_entries(TLS_OWNER_SLOTS, 0);

/// Questions sent: (socket cookie, message id, destination), dns_question.rs. An answer is
/// marked when it arrives from there (dns_answer.rs). LRU: bounded, the oldest questions forgotten first.
#[map]
static DNS_ASKED: LruHashMap<DnsAskedKey, u8> = LruHashMap::with_max_entries(8192, 0);

/// A DNS response that reached a socket before it asked anything, by (socket cookie, message
/// id): sent, unmarked, when that socket's question with the same id leaves (dns_answer.rs).
/// LRU: responses no question ever follows are forgotten (so a flood of thousands of
/// answer-shaped datagrams to sockets that never ask can push a forgery out: a known limit).
#[map]
static EARLY_ANSWERS: LruHashMap<DnsAskedKey, EarlyAnswer> = LruHashMap::with_max_entries(4096, 0);

/// Longest early response kept (one byte short of a power of two, so a mask bounds it): a
/// forged answer is a question and an address or two.
pub const EARLY_ANSWER_MAX: usize = 511;

#[repr(C)]
pub struct EarlyAnswer {
    /// Bytes kept in `bytes`.
    pub len: u32,
    /// The datagram's whole length.
    pub received_len: u32,
    pub bytes: [u8; EARLY_ANSWER_MAX + 1],
}

/// The packet programs' records, one slot each (dns_answer.rs, dns_question.rs): a softirq's
/// program must not write over the record a tracepoint program it interrupted on the same CPU
/// is building in `EVENT_SCRATCH`, nor over the other packet program's.
#[map]
static PACKET_SCRATCH: PerCpuArray<EventScratch> = PerCpuArray::with_max_entries(2, 0);
pub const PACKET_SCRATCH_INGRESS: u32 = 0;
pub const PACKET_SCRATCH_EGRESS: u32 = 1;

/// The processes of jobs the kernel acts for (block.rs, respond.rs), and each job's policy (slot 0
/// is no job's: it holds every bit any job was given).
#[map]
static JOB_PROCS: LruHashMap<u32, JobEntry> = LruHashMap::with_max_entries(65536, 0);
#[map]
static JOB_POLICY: Array<u32> = Array::with_max_entries(JOB_SLOTS, 0);
/// When each slot's job began, wall-clock ns (as inode change times are): a program whose file
/// changed after it was written during the job.
#[map]
static JOB_STARTED: Array<u64> = Array::with_max_entries(JOB_SLOTS, 0);
/// Process listers by executable identity (`ps aux` reads every process's environ without
/// printing it): spared the environ kill. Filled by the agent from the system's binaries.
#[map]
static QUIET_LISTERS: HashMap<InodeKey, u32> = HashMap::with_max_entries(64, 0);
/// Slot 0: `exec_scan` (respond.rs), tail-called at exec when a job's policy kills on
/// environment reads or install-time code's credential reads (it needs `bpf_loop`: loaded only
/// then).
#[map]
static EXEC_SCANNERS: ProgramArray = ProgramArray::with_max_entries(1, 0);
/// Where exec_scan reads the new program's arguments or environment.
#[repr(C)]
pub struct EnvScratch {
    pub bytes: [u8; ENV_SCAN_LEN],
}
#[map]
static ENV_SCRATCH: PerCpuArray<EnvScratch> = PerCpuArray::with_max_entries(1, 0);
/// Where block mode may connect.
#[map]
static ALLOW_V4: LpmTrie<Allow4Data, PortSet> = LpmTrie::with_max_entries(16384, 1);
#[map]
static ALLOW_V6: LpmTrie<Allow6Data, PortSet> = LpmTrie::with_max_entries(16384, 1);
/// Slot 0: `dns_block_answers`, set by the agent in block mode.
#[map]
static BLOCK_PARSER: ProgramArray = ProgramArray::with_max_entries(1, 0);
/// Domains a job may reach (dns_answer.rs allows their answers' addresses).
#[map]
static ALLOWED_NAMES: HashMap<NameHashKey, PortSet> = HashMap::with_max_entries(4096, 0);

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects programs that could reach a panic; this is never executed.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
