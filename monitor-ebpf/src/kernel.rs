//! Reading kernel structures at offsets found in BTF by the agent, and filling event headers.

use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
    generated::{
        bpf_get_current_cgroup_id, bpf_get_current_task, bpf_ktime_get_boot_ns,
        bpf_probe_read_kernel, bpf_ringbuf_query,
    },
};
use monitor_common::{
    EventHeader, EventKind, ProbeConfig, ProcessLosses, ShareWindow, COMM_LEN, SHARE_WINDOW_NS,
};

pub use crate::EventScratch;
use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, RingBuf},
};

use crate::{
    EVENTS, EVENT_SCRATCH, KERNEL_OFFSETS, LOSSES, LOSSES_BY_PROCESS, PROBE_CONFIG, PROBE_ERRORS,
    READER_WAITING, RING_SHARES, SECURITY_EVENTS, SHED,
};

/// One field offset. Volatile so the compiler cannot fold the zero initialiser; the verifier
/// still sees the loaded value as a constant because the global lives in frozen .rodata.
macro_rules! off {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&raw const $crate::KERNEL_OFFSETS.$field) as usize }
    };
}
pub(crate) use off;

#[inline(always)]
pub fn offsets_present() -> bool {
    unsafe { core::ptr::read_volatile(&raw const KERNEL_OFFSETS.present) != 0 }
}

#[inline(always)]
pub fn config() -> ProbeConfig {
    unsafe { core::ptr::read_volatile(&raw const PROBE_CONFIG) }
}

/// The 8-byte word at `offset` of a tracepoint's record, read in place: the context is the
/// record, and a direct load (checked by the verifier against the record's size) costs no
/// helper call, where `TracePointContext::read_at` makes one. Every syscall tracepoint's hot
/// path reads its arguments or result this way.
#[inline(always)]
pub fn tracepoint_word(ctx: &aya_ebpf::programs::TracePointContext, offset: usize) -> u64 {
    use aya_ebpf::EbpfContext as _;
    unsafe { core::ptr::read_volatile(ctx.as_ptr().cast::<u8>().add(offset).cast::<u64>()) }
}

#[inline(always)]
pub fn is_agent(tgid: u32) -> bool {
    unsafe { core::ptr::read_volatile(&raw const PROBE_CONFIG.agent_tgid) == tgid }
}

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
pub unsafe fn read<T: Copy>(base: *const u8, offset: usize) -> Result<T, i64> {
    if base.is_null() {
        return Err(-1);
    }
    let mut value = core::mem::MaybeUninit::<T>::uninit();
    let ret = aya_ebpf::helpers::generated::bpf_probe_read_kernel(
        value.as_mut_ptr().cast(),
        core::mem::size_of::<T>() as u32,
        base.add(offset).cast(),
    );
    if ret < 0 {
        return Err(ret);
    }
    Ok(value.assume_init())
}

#[inline(always)]
pub unsafe fn read_ptr(base: *const u8, offset: usize) -> Result<*const u8, i64> {
    read::<*const u8>(base, offset)
}

/// The current process's id (the thread group's).
#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

#[inline(always)]
pub fn current_task() -> *const u8 {
    unsafe { bpf_get_current_task() as *const u8 }
}

/// `task->group_leader->start_boottime`: with the tgid, the identity of a process.
#[inline(always)]
pub unsafe fn process_start_ns(task: *const u8) -> u64 {
    let leader = read_ptr(task, off!(task_group_leader)).unwrap_or(task);
    read::<u64>(leader, off!(task_start_boottime)).unwrap_or(0)
}

/// `task->nsproxy->mnt_ns`: its inode number (what `/proc/PID/ns/mnt` names) and its id for
/// the whole boot. Zeros when the layout is unknown or the task's namespaces are already
/// released (`exit_task_namespaces`). The inode number and the id are read together where they
/// lie within `MNT_WINDOW` bytes (both are in `ns_common` from 6.18 on; `seq` follows closely
/// before), with a `window` to read into.
#[inline(always)]
pub unsafe fn mount_namespace(task: *const u8, window: Option<*mut HeaderWindows>) -> (u32, u64) {
    if off!(task_nsproxy) == 0 {
        return (0, 0);
    }
    let Ok(nsproxy) = read_ptr(task, off!(task_nsproxy)) else {
        return (0, 0);
    };
    let Ok(mnt_ns) = read_ptr(nsproxy, off!(nsproxy_mnt_ns)) else {
        return (0, 0);
    };
    let inum_at = off!(mnt_ns_inum);
    let id_at = off!(mnt_ns_unique);
    if let Some(windows) = window {
        let low = inum_at.min(id_at) & !7;
        let high = (inum_at + 4).max(id_at + 8);
        if id_at != 0 && high - low <= MNT_WINDOW && inum_at % 4 == 0 && id_at % 8 == 0 {
            let w = (*windows).mnt.as_mut_ptr().cast::<u8>();
            if bpf_probe_read_kernel(w.cast(), MNT_WINDOW as u32, mnt_ns.wrapping_add(low).cast())
                < 0
            {
                return (0, 0);
            }
            return (
                *w.add(inum_at - low).cast::<u32>(),
                *w.add(id_at - low).cast::<u64>(),
            );
        }
    }
    let inum = read::<u32>(mnt_ns, inum_at).unwrap_or(0);
    let id = match id_at {
        0 => 0,
        at => read::<u64>(mnt_ns, at).unwrap_or(0),
    };
    (inum, id)
}

/// Words `fill_header` reads in one go, per CPU: a task's links, its parent's, and its mount
/// namespace's identity (too big for some programs' stacks next to their own). Every record's
/// header is filled this way, so each read saved is saved on every exec, fork, exit, connect
/// and reported open. A program that interrupts another on the same CPU (a tracepoint in an
/// interrupt) could overwrite a window between its read and its use a few instructions later:
/// the header of that one record would be wrong, no memory unsafe (the same holds of the record
/// scratch).
#[repr(C)]
pub struct HeaderWindows {
    task: [u64; TASK_WINDOW / 8],
    parent: [u64; TASK_WINDOW / 8],
    mnt: [u64; MNT_WINDOW / 8],
}
/// `pid`, `tgid`, (the stack canary,) `real_parent`, `parent`, `children`, `sibling`,
/// `group_leader`: 64 bytes from `tgid` on in every kernel since 2.6.
const TASK_WINDOW: usize = 80;
const MNT_WINDOW: usize = 64;
#[map]
static HEADER_WINDOWS: PerCpuArray<HeaderWindows> = PerCpuArray::with_max_entries(1, 0);

/// A task's `tgid`, `real_parent` and `group_leader` (0 and nulls where unreadable): one read
/// where they lie within `TASK_WINDOW` bytes, else three. The offsets are constants to the
/// verifier (read-only data): it checks only the branch this kernel takes.
#[inline(always)]
unsafe fn task_links(task: *const u8, window: Option<*mut u64>) -> (u32, *const u8, *const u8) {
    let tgid_at = off!(task_tgid);
    let parent_at = off!(task_real_parent);
    let leader_at = off!(task_group_leader);
    if task.is_null() {
        return (0, core::ptr::null(), core::ptr::null());
    }
    if let Some(w) = window {
        let w = w.cast::<u8>();
        let low = tgid_at.min(parent_at).min(leader_at) & !7;
        let high = (tgid_at + 4).max(parent_at + 8).max(leader_at + 8);
        if high - low <= TASK_WINDOW && tgid_at % 4 == 0 && parent_at % 8 == 0 && leader_at % 8 == 0
        {
            if bpf_probe_read_kernel(w.cast(), TASK_WINDOW as u32, task.wrapping_add(low).cast())
                < 0
            {
                return (0, core::ptr::null(), core::ptr::null());
            }
            return (
                *w.add(tgid_at - low).cast::<u32>(),
                *w.add(parent_at - low).cast::<*const u8>(),
                *w.add(leader_at - low).cast::<*const u8>(),
            );
        }
    }
    (
        read::<u32>(task, tgid_at).unwrap_or(0),
        read_ptr(task, parent_at).unwrap_or(core::ptr::null()),
        read_ptr(task, leader_at).unwrap_or(core::ptr::null()),
    )
}

/// `leader->start_boottime` for a task whose group leader is `leader` (the task itself when
/// unknown).
#[inline(always)]
unsafe fn leader_start_ns(task: *const u8, leader: *const u8) -> u64 {
    let leader = if leader.is_null() { task } else { leader };
    read::<u64>(leader, off!(task_start_boottime)).unwrap_or(0)
}

/// Fills the header for the current task, as seen from `task` (the current task unless a fork).
/// Seven reads of kernel memory where the layout allows (the task's links, its leader's start,
/// its parent's links and leader's start, the namespace's three), ten otherwise.
#[inline(always)]
pub unsafe fn fill_header(header: *mut EventHeader, kind: EventKind, task: *const u8) {
    let windows = HEADER_WINDOWS.get_ptr_mut(0);
    let (_, parent, leader) = task_links(task, windows.map(|w| (*w).task.as_mut_ptr()));
    let (ppid, _, parent_leader) = task_links(parent, windows.map(|w| (*w).parent.as_mut_ptr()));
    let (mnt_ns, mnt_ns_id) = mount_namespace(task, windows);
    let lineage = Lineage {
        ppid,
        mnt_ns,
        mnt_ns_id,
        start_ns: leader_start_ns(task, leader),
        parent_start_ns: if parent.is_null() {
            0
        } else {
            leader_start_ns(parent, parent_leader)
        },
    };
    write_header(header, kind, &lineage);
}

/// What a header says of the task's place in the process tree, read one way or another
/// (`fill_header`, `fill_current_header`); the rest of the header is the current task's own.
struct Lineage {
    ppid: u32,
    mnt_ns: u32,
    mnt_ns_id: u64,
    start_ns: u64,
    parent_start_ns: u64,
}

/// The one writer of a record header: the current task's ids, clock and cgroup from helpers,
/// its lineage as read by the caller.
#[inline(always)]
unsafe fn write_header(header: *mut EventHeader, kind: EventKind, lineage: &Lineage) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    (*header).kind = kind as u32;
    (*header).flags = 0;
    (*header).ts_ns = bpf_ktime_get_boot_ns();
    (*header).tgid = (pid_tgid >> 32) as u32;
    (*header).pid = pid_tgid as u32;
    (*header).ppid = lineage.ppid;
    (*header).uid = uid_gid as u32;
    (*header).gid = (uid_gid >> 32) as u32;
    (*header).mnt_ns = lineage.mnt_ns;
    (*header).mnt_ns_id = lineage.mnt_ns_id;
    (*header).start_ns = lineage.start_ns;
    (*header).parent_start_ns = lineage.parent_start_ns;
    (*header).cgroup_id = bpf_get_current_cgroup_id();
    // Straight into the record: the helper NUL-pads the 16 bytes itself (and zeroes them on
    // failure). aya's `bpf_get_current_comm()` returns an array, which cost a 16-byte memset
    // (a one-byte loop) and the copy of it on every header.
    aya_ebpf::helpers::generated::bpf_get_current_comm(
        (&raw mut (*header).comm).cast(),
        COMM_LEN as u32,
    );
}

/// `leader_start_ns` for a task typed from BTF (`fill_current_header`): the same fallback to
/// the task itself, a plain load instead of a helper read.
#[inline(always)]
unsafe fn btf_leader_start_ns(task: *const u8, leader: *const u8) -> u64 {
    let leader = if leader.is_null() { task } else { leader };
    btf_load::<u64>(leader, off!(task_start_boottime))
}

/// Where a program may type the current task (`bpf_get_current_task_btf`): tracing programs
/// (tracepoints, raw tracepoints, fentry, LSM) on kernels that have the helper (5.11+).
#[inline(always)]
pub fn tracing_types_task() -> bool {
    off!(task_btf_loads) != 0
}

/// The same for the socket-address programs (egress.rs): the kernel lets them call the helper
/// from some version on, which the agent asked it by loading one (`ProbeConfig`).
#[inline(always)]
pub fn sock_addr_types_task() -> bool {
    unsafe { core::ptr::read_volatile(&raw const PROBE_CONFIG.sock_addr_task_btf) != 0 }
}

/// Fills the header for the current task. Where the program may type the task (`typed`: one of
/// the two functions above, so the verifier sees a constant and checks only the branch this
/// kernel takes), its links, starts and mount namespace are plain loads the verifier checks
/// against BTF (a faulting load gives 0, as an unreadable field gives here otherwise): seven
/// helper calls fewer than `fill_header`, which every record's header cost.
#[inline(always)]
pub unsafe fn fill_current_header(header: *mut EventHeader, kind: EventKind, typed: bool) {
    if !typed {
        return fill_header(header, kind, current_task());
    }
    let task = aya_ebpf::helpers::generated::bpf_get_current_task_btf() as *const u8;
    let parent = btf_load::<*const u8>(task, off!(task_real_parent));
    let leader = btf_load::<*const u8>(task, off!(task_group_leader));
    let (mut mnt_ns, mut mnt_ns_id) = (0, 0);
    if off!(task_nsproxy) != 0 {
        let nsproxy = btf_load::<*const u8>(task, off!(task_nsproxy));
        if !nsproxy.is_null() {
            let mnt = btf_load::<*const u8>(nsproxy, off!(nsproxy_mnt_ns));
            if !mnt.is_null() {
                mnt_ns = btf_load::<u32>(mnt, off!(mnt_ns_inum));
                if off!(mnt_ns_unique) != 0 {
                    mnt_ns_id = btf_load::<u64>(mnt, off!(mnt_ns_unique));
                }
            }
        }
    }
    let lineage = Lineage {
        ppid: if parent.is_null() {
            0
        } else {
            btf_load::<u32>(parent, off!(task_tgid))
        },
        mnt_ns,
        mnt_ns_id,
        start_ns: btf_leader_start_ns(task, leader),
        parent_start_ns: if parent.is_null() {
            0
        } else {
            btf_leader_start_ns(
                parent,
                btf_load::<*const u8>(parent, off!(task_group_leader)),
            )
        },
    };
    write_header(header, kind, &lineage);
}

/// Copies a record header word by word (volatile, so LLVM does not turn the loop back into a
/// call). A plain assignment of the 88-byte header compiles to a call to the object's
/// `memmove`, a loop of one-byte loads and stores: 88 rounds of it on the connect hook's path.
#[inline(always)]
pub unsafe fn copy_header(to: *mut EventHeader, from: *const EventHeader) {
    const WORDS: usize = core::mem::size_of::<EventHeader>() / 8;
    const _: () = assert!(
        core::mem::size_of::<EventHeader>() % 8 == 0 && core::mem::align_of::<EventHeader>() == 8
    );
    let to = to.cast::<u64>();
    let from = from.cast::<u64>();
    let mut i = 0;
    while i < WORDS {
        core::ptr::write_volatile(to.add(i), core::ptr::read_volatile(from.add(i)));
        i += 1;
    }
}

/// The per-CPU record scratch buffer.
/// `value`, with everything LLVM knows of it forgotten (it passes through memory, volatile).
/// A mask or bound check written after it stays in the program: from a value it has bounded
/// already, LLVM drops the mask or folds an offset past it, and verifiers before ~6.8 (6.1's),
/// which track less, then refuse the access the mask was there to bound.
#[inline(always)]
pub fn opaque<T: Copy>(value: T) -> T {
    unsafe { core::ptr::read_volatile(&value) }
}

/// Adds `bits` to the word at `at`, in map memory. Volatile, so the compiler keeps the bits out
/// of registers: flags built up in a register are a different constant on each path that set
/// them, and the verifier walks everything after once per combination (older verifiers, 6.1's,
/// past their budget); read back from map memory they are one unknown value, and the walks
/// merge.
#[inline(always)]
pub unsafe fn add_bits(at: *mut u32, bits: u32) {
    core::ptr::write_volatile(at, core::ptr::read_volatile(at) | bits);
}

#[inline(always)]
pub fn event_scratch() -> Option<*mut EventScratch> {
    EVENT_SCRATCH.get_ptr_mut(0)
}

/// The ring a record of `kind` goes through.
#[inline(always)]
fn ring_for(kind: EventKind) -> &'static RingBuf {
    if kind.is_security() {
        unsafe { &*(&raw const SECURITY_EVENTS) }
    } else {
        unsafe { &*(&raw const EVENTS) }
    }
}

/// `bpf_ringbuf_query` flags.
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_RING_SIZE: u64 = 1;
/// `bpf_ringbuf_output` flag: commit without waking the reader.
const BPF_RB_NO_WAKEUP: u64 = 1;

/// How a record is committed: waking the reader only when it waits to be woken
/// (`READER_WAITING`). A wakeup is an irq_work raised on this CPU (a self-interrupt: in a VM an
/// exit to the hypervisor) and the reader's wakeup on another; while records keep coming the
/// reader looks every few milliseconds by itself (agent/ring.rs), so a storm's records wake
/// nobody. The kernel already skips the wakeup when the reader has records left to read.
#[inline(always)]
fn wakeup_flag() -> u64 {
    if READER_WAITING.get(0).is_some_and(|waiting| *waiting != 0) {
        0
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Whether the current process's control group may add a record of `kind` (`len` bytes) to its
/// ring now.
///
/// Fairness under pressure: one job's storm (exec, DNS answers, connects) must not cost another
/// job its records. Each control group's record bytes are counted (all CPUs together) in windows
/// of `SHARE_WINDOW_NS`; a group that sent more than a quarter of the ring in its window, or in
/// the one before, is flooding, and while the ring is three-quarters full a flooding group's
/// records are refused (counted in `SHED` and in the process's losses). So a storm is refused
/// before it reaches the last quarter, which stays for the groups that are not flooding, even
/// with the agent held still. Runners run as services (each its own group) and containers have
/// their own: a job flooding from its group leaves the others their room. Records about the
/// agent itself (`Tamper`) are never refused. Kernel contract: `bpf_get_current_cgroup_id`
/// (4.18; the task's cgroup v2 id), `bpf_ringbuf_query` (5.8).
#[inline(always)]
fn admit(kind: EventKind, len: usize) -> bool {
    admit_for(kind, len, unsafe { bpf_get_current_cgroup_id() }, unsafe {
        bpf_ktime_get_boot_ns()
    })
}

/// As `admit`, for a record of control group `group` made at `now` (CLOCK_BOOTTIME, as a
/// header's time: a record built a moment ago is in the same window as one built now). Packet
/// programs give the group of the process that connected the socket, from the record's header.
#[inline(always)]
fn admit_for(kind: EventKind, len: usize, group: u64, now: u64) -> bool {
    if matches!(kind, EventKind::Tamper) {
        return true;
    }
    let ring: *const RingBuf = ring_for(kind);
    let size = match ring_size(kind) {
        0 => unsafe { bpf_ringbuf_query(ring.cast_mut().cast(), BPF_RB_RING_SIZE) },
        known => known,
    };
    let share = size / 4;
    let flooding = match RING_SHARES.get_ptr_mut(&group) {
        Some(window) => unsafe {
            // A record made before the window's start (built on another CPU, or by the
            // connect hook and sent at the syscall's exit) counts in it.
            let since = now.saturating_sub((*window).start_ns);
            if since > SHARE_WINDOW_NS {
                // Two CPUs may both start the new window: the count is a bound, not a ledger.
                // A window with nothing between counts as quiet.
                (*window).previous = if since > 2 * SHARE_WINDOW_NS {
                    0
                } else {
                    (*window).bytes
                };
                (*window).start_ns = now;
                (*window).bytes = 0;
            }
            // Shared by every CPU, and not atomic (the BPF target has no atomic add in Rust):
            // two CPUs adding at once lose one of the adds. A storm adds thousands of times a
            // second, so it still crosses its share at once.
            (*window).bytes += len as u64;
            (*window).bytes > share || (*window).previous > share
        },
        None => {
            let first = ShareWindow {
                start_ns: now,
                bytes: len as u64,
                previous: 0,
            };
            let _ = RING_SHARES.insert(&group, &first, 0);
            false
        }
    };
    if !flooding {
        return true;
    }
    let held = unsafe { bpf_ringbuf_query(ring.cast_mut().cast(), BPF_RB_AVAIL_DATA) };
    held < size - size / 4
}

/// The size of `kind`'s ring as the agent created it (0 when not given).
#[inline(always)]
fn ring_size(kind: EventKind) -> u64 {
    let config = &raw const PROBE_CONFIG;
    unsafe {
        if kind.is_security() {
            core::ptr::read_volatile(&raw const (*config).security_ring_bytes) as u64
        } else {
            core::ptr::read_volatile(&raw const (*config).events_ring_bytes) as u64
        }
    }
}

/// Copies `len` bytes of `scratch` to `kind`'s ring buffer, counting a loss on failure (or when
/// the process's group is refused its share, `admit`). The record starts with a header
/// `fill_header` built for the current task: its control group is the one `admit` would ask
/// the kernel for again.
#[inline(always)]
pub unsafe fn submit(scratch: *mut EventScratch, len: usize, kind: EventKind) {
    let header = (*scratch).bytes.as_ptr().cast::<EventHeader>();
    if !admit_for(kind, len, (*header).cgroup_id, (*header).ts_ns) {
        count_shed(kind);
    } else if !output(scratch, len, kind) {
        count_loss(kind);
    }
}

/// As `submit`, for programs where the current task is not the record's process (`cgroup_skb`,
/// which before Linux 6.10 may not even ask for it): the record's header (at the start of the
/// scratch) names the process's control group for its fair share, and a loss is counted for
/// `tgid`.
#[inline(always)]
pub unsafe fn submit_for(scratch: *mut EventScratch, len: usize, kind: EventKind, tgid: u32) {
    let header = (*scratch).bytes.as_ptr().cast::<EventHeader>();
    if !admit_for(kind, len, (*header).cgroup_id, (*header).ts_ns) {
        if let Some(slot) = SHED.get_ptr_mut(kind.loss_slot()) {
            *slot += 1;
        }
        count_process_loss(kind, tgid);
    } else if !output(scratch, len, kind) {
        count_loss_of(kind, tgid);
    }
}

#[inline(always)]
unsafe fn output(scratch: *mut EventScratch, len: usize, kind: EventKind) -> bool {
    let len = len & (monitor_common::EVENT_SCRATCH_LEN - 1);
    let ring: *const RingBuf = ring_for(kind);
    aya_ebpf::helpers::generated::bpf_ringbuf_output(
        ring.cast_mut().cast(),
        scratch.cast(),
        len as u64,
        wakeup_flag(),
    ) >= 0
}

/// Submits a fixed-size record.
#[inline(always)]
pub unsafe fn submit_fixed<T>(record: &T, kind: EventKind) {
    if !admit(kind, core::mem::size_of::<T>()) {
        count_shed(kind);
    } else if ring_for(kind).output::<T>(record, wakeup_flag()).is_err() {
        count_loss(kind);
    }
}

#[inline(always)]
pub fn count_loss(kind: EventKind) {
    count_loss_of(kind, current_tgid());
}

/// Counts a record refused to a flooding group (`admit`): machine-wide as shed, and for the
/// process as lost (its job's report counts it like any other loss).
#[inline(always)]
fn count_shed(kind: EventKind) {
    if let Some(slot) = SHED.get_ptr_mut(kind.loss_slot()) {
        // Per-CPU value: no other writer can race this increment.
        unsafe { *slot += 1 };
    }
    count_process_loss(kind, current_tgid());
}

/// Counts a record of process `tgid` lost: machine-wide and for the process.
#[inline(always)]
pub fn count_loss_of(kind: EventKind, tgid: u32) {
    if let Some(slot) = LOSSES.get_ptr_mut(kind.loss_slot()) {
        // Per-CPU value: no other writer can race this increment.
        unsafe { *slot += 1 };
    }
    count_process_loss(kind, tgid);
}

#[inline(always)]
fn count_process_loss(kind: EventKind, tgid: u32) {
    // For the process (its job's report), per CPU like the total.
    let index = kind.loss_slot() as usize & (monitor_common::LOSS_SLOTS as usize - 1);
    match LOSSES_BY_PROCESS.get_ptr_mut(&tgid) {
        Some(losses) => unsafe { (*losses).counts[index] += 1 },
        None => {
            let mut first = ProcessLosses::default();
            first.counts[index] = 1;
            let _ = LOSSES_BY_PROCESS.insert(&tgid, &first, 0);
        }
    }
}

/// Counts a record of `kind` a probe could not build: its program failed a read it needed.
#[inline(always)]
pub fn count_error(kind: EventKind) {
    if let Some(slot) = PROBE_ERRORS.get_ptr_mut(kind.loss_slot()) {
        // Per-CPU value: no other writer can race this increment.
        unsafe { *slot += 1 };
    }
}

/// `current->files->fdt->fd[fd]`, as `file_of_fd` for the current task. Where the kernel
/// allows it (`task_btf_loads`: 5.11+), the task is asked for as a typed pointer and `files`,
/// `fdt`, `max_fds` and `fd` are plain loads the verifier checks against the kernel's BTF at the
/// offsets the agent found there (constants to it, read-only data): a load through a bad
/// pointer gives 0, as a failed helper read does. Two helper calls (the task, the slot) instead
/// of four, on every open. Before 5.11 the flag is 0, a constant, and the verifier never walks
/// the branch that names the helper that kernel does not know.
#[inline(always)]
pub unsafe fn current_file_of_fd(fd: i64) -> Result<*const u8, i64> {
    if !tracing_types_task() {
        return file_of_fd(current_task(), fd);
    }
    if fd < 0 {
        return Err(-1);
    }
    let task = aya_ebpf::helpers::generated::bpf_get_current_task_btf() as *const u8;
    let files = btf_load::<*const u8>(task, off!(task_files));
    if files.is_null() {
        return Err(-1);
    }
    let fdt = btf_load::<*const u8>(files, off!(files_fdt));
    if fdt.is_null() {
        return Err(-1);
    }
    let max_fds = btf_load::<u32>(fdt, off!(fdt_max_fds));
    let fd_array = btf_load::<*const u8>(fdt, off!(fdt_fd));
    if fd as u64 >= max_fds as u64 {
        return Err(-1);
    }
    read_ptr(fd_array, (fd as usize) * 8)
}

/// A field of a typed kernel pointer (`bpf_get_current_task_btf` and what it leads to), loaded
/// in place: the verifier checks the offset and size against BTF.
#[inline(always)]
unsafe fn btf_load<T: Copy>(base: *const u8, offset: usize) -> T {
    core::ptr::read_volatile(base.add(offset).cast::<T>())
}

/// `current->files->fdt->fd[fd]`, checked against `max_fds`.
#[inline(always)]
pub unsafe fn file_of_fd(task: *const u8, fd: i64) -> Result<*const u8, i64> {
    if fd < 0 {
        return Err(-1);
    }
    let files = read_ptr(task, off!(task_files))?;
    // `struct fdtable` starts `{ unsigned int max_fds; struct file **fd; ...}` on every kernel
    // this agent loads on: one read of both (each read is a helper call, and every open of the
    // tracepoint tier pays for this), else two. A process with few descriptors uses the table
    // embedded in `files_struct` right after the `fdt` pointer (`fdtab`): one read of 24 bytes
    // gives the pointer and, when it points just past itself, the table too. Only the pointer's
    // value is trusted for that, not a layout: the table is where it points.
    let (max_fds, fd_array) = if off!(fdt_max_fds) == 0 && off!(fdt_fd) == 8 {
        let words = read::<[u64; 3]>(files, off!(files_fdt))?;
        let fdt = words[0] as *const u8;
        if fdt as u64 == files as u64 + off!(files_fdt) as u64 + 8 {
            (words[1] as u32, words[2] as *const u8)
        } else {
            let table = read::<[u64; 2]>(fdt, 0)?;
            (table[0] as u32, table[1] as *const u8)
        }
    } else {
        let fdt = read_ptr(files, off!(files_fdt))?;
        (
            read::<u32>(fdt, off!(fdt_max_fds))?,
            read_ptr(fdt, off!(fdt_fd))?,
        )
    };
    if fd as u64 >= max_fds as u64 {
        return Err(-1);
    }
    read_ptr(fd_array, (fd as usize) * 8)
}
