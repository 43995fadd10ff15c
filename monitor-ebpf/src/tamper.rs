//! Syscalls that act on other processes or on BPF itself: what an attacker in a job does to blind
//! the monitor (signal it, load or detach BPF programs) or to read secrets from other processes'
//! memory (ptrace, process_vm_readv). All are rare in builds, so each program returns at once
//! for anything that is not one of them.
//!
//! Kernel contract (syscall tracepoints, 8-byte fields from offset 16): kill(pid, sig);
//! tkill(pid, sig); tgkill(tgid, pid, sig); ptrace(request, pid, addr, data);
//! bpf(cmd, uattr, size); process_vm_readv/writev(pid, ...); init_module(umod, len, uargs) and
//! finit_module(fd, uargs, flags); pidfd_getfd(pidfd, fd, flags) (5.6+).

use aya_ebpf::{
    helpers::generated::bpf_ktime_get_boot_ns,
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use monitor_common::{
    EventKind, TamperEvent, TamperSeenKey, TAMPER_BPF, TAMPER_KILL, TAMPER_LOG_SLOTS,
    TAMPER_MODULE_LOAD, TAMPER_PIDFD_GETFD, TAMPER_PTRACE, TAMPER_SIGNAL, TAMPER_SIGNAL_GUARDED,
    TAMPER_TGKILL, TAMPER_TKILL, TAMPER_VM_READV, TAMPER_VM_WRITEV,
};

use crate::{
    kernel::{
        config, current_task, current_tgid, fill_header, is_agent, off, offsets_present, read,
        submit_fixed,
    },
    respond, GUARDED, TAMPER_LOG, TAMPER_LOG_NEXT, TAMPER_SEEN,
};

const PTRACE_TRACEME: u64 = 0;

#[inline(always)]
unsafe fn record(syscall: u32, target: i32, arg: u64, response: u32) -> TamperEvent {
    let mut event = TamperEvent::default();
    fill_header(&raw mut event.header, EventKind::Tamper, current_task());
    event.header.flags = response;
    event.syscall = syscall;
    event.target = target;
    event.arg = arg;
    event
}

/// Repeats of the same record by the same process within this long are not sent: they say
/// nothing new, and a loop of them would fill the security ring.
const REPEAT_NS: u64 = 1_000_000_000;

#[inline(always)]
unsafe fn repeated(syscall: u32, target: i32, arg: u64) -> bool {
    let key = TamperSeenKey {
        tgid: current_tgid(),
        syscall,
        target,
        _pad0: 0,
        arg,
    };
    let now = bpf_ktime_get_boot_ns();
    if let Some(last) = TAMPER_SEEN.get_ptr_mut(&key) {
        if now.saturating_sub(*last) < REPEAT_NS {
            return true;
        }
        *last = now;
        return false;
    }
    let _ = TAMPER_SEEN.insert(&key, &now, 0);
    false
}

/// Sends the record, unless it repeats one sent within `REPEAT_NS` (a response is always sent).
#[inline(always)]
unsafe fn send(syscall: u32, target: i32, arg: u64, response: u32) {
    if !offsets_present() || (repeated(syscall, target, arg) && response == 0) {
        return;
    }
    let event = record(syscall, target, arg, response);
    submit_fixed(&event, EventKind::Tamper);
}

/// Keeps `event` in the pinned tamper log too. Two signals at the same instant may share a slot
/// (the counter is not atomic): the log is the fallback of the ring, not a second ring.
#[inline(always)]
unsafe fn log(event: &TamperEvent) {
    let Some(next) = TAMPER_LOG_NEXT.get_ptr_mut(0) else {
        return;
    };
    let slot = (*next % TAMPER_LOG_SLOTS as u64) as u32;
    *next = (*next).wrapping_add(1);
    let _ = TAMPER_LOG.set(slot, event, 0);
}

#[inline(always)]
fn from_agent() -> bool {
    is_agent(current_tgid())
}

/// A signal aimed at the agent (or at every process).
#[inline(always)]
unsafe fn on_signal(ctx: &TracePointContext, syscall: u32, pid_at: usize, sig_at: usize) {
    if from_agent() {
        return;
    }
    let Ok(pid) = ctx.read_at::<u64>(pid_at) else {
        return;
    };
    let pid = pid as i64 as i32;
    if pid != -1 && pid as u32 != config().agent_tgid {
        return;
    }
    let sig = ctx.read_at::<u64>(sig_at).unwrap_or(0);
    // Signal 0 only asks whether the agent lives.
    let response = if sig != 0 {
        respond::to_tamper(current_tgid())
    } else {
        0
    };
    send(syscall, pid, sig, response);
}

#[tracepoint(category = "syscalls", name = "sys_enter_kill")]
pub fn sys_enter_kill(ctx: TracePointContext) -> u32 {
    unsafe { on_signal(&ctx, TAMPER_KILL, 16, 24) };
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_tkill")]
pub fn sys_enter_tkill(ctx: TracePointContext) -> u32 {
    unsafe { on_signal(&ctx, TAMPER_TKILL, 16, 24) };
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_tgkill")]
pub fn sys_enter_tgkill(ctx: TracePointContext) -> u32 {
    unsafe { on_signal(&ctx, TAMPER_TGKILL, 16, 32) };
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_ptrace")]
pub fn sys_enter_ptrace(ctx: TracePointContext) -> u32 {
    if from_agent() {
        return 0;
    }
    let request = unsafe { ctx.read_at::<u64>(16) }.unwrap_or(0);
    if request != PTRACE_TRACEME {
        let pid = unsafe { ctx.read_at::<u64>(24) }.unwrap_or(0) as i32;
        unsafe {
            let response = respond::to_process_access(current_tgid(), pid as u32, true);
            send(TAMPER_PTRACE, pid, request, response);
        }
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_bpf")]
pub fn sys_enter_bpf(ctx: TracePointContext) -> u32 {
    if from_agent() {
        return 0;
    }
    let cmd = unsafe { ctx.read_at::<u64>(16) }.unwrap_or(0);
    unsafe {
        let response = respond::to_tamper(current_tgid());
        send(TAMPER_BPF, 0, cmd, response);
    }
    0
}

/// A kernel module load asked for: code in the kernel, below the monitor. Kernel contract:
/// `init_module(umod, len, uargs)` and `finit_module(fd, uargs, flags)` (present where the
/// kernel has module support; absent, nothing can be loaded).
#[tracepoint(category = "syscalls", name = "sys_enter_init_module")]
pub fn sys_enter_init_module(_ctx: TracePointContext) -> u32 {
    module_load(0)
}

#[tracepoint(category = "syscalls", name = "sys_enter_finit_module")]
pub fn sys_enter_finit_module(_ctx: TracePointContext) -> u32 {
    module_load(1)
}

#[inline(always)]
fn module_load(call: u64) -> u32 {
    if from_agent() {
        return 0;
    }
    unsafe { send(TAMPER_MODULE_LOAD, 0, call, 0) };
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_process_vm_readv")]
pub fn sys_enter_process_vm_readv(ctx: TracePointContext) -> u32 {
    if from_agent() {
        return 0;
    }
    let pid = unsafe { ctx.read_at::<u64>(16) }.unwrap_or(0) as i32;
    unsafe {
        let response = respond::to_process_access(current_tgid(), pid as u32, false);
        send(TAMPER_VM_READV, pid, 0, response);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_process_vm_writev")]
pub fn sys_enter_process_vm_writev(ctx: TracePointContext) -> u32 {
    if from_agent() {
        return 0;
    }
    let pid = unsafe { ctx.read_at::<u64>(16) }.unwrap_or(0) as i32;
    unsafe {
        let response = respond::to_process_access(current_tgid(), pid as u32, true);
        send(TAMPER_VM_WRITEV, pid, 0, response);
    }
    0
}

/// Another process's descriptor taken. Where an open kill is in force for the caller, it dies
/// here: a process killed at an open holds the descriptor until it has exited, and this is
/// how another would take it meanwhile (`respond::to_descriptor_sharing`).
#[tracepoint(category = "syscalls", name = "sys_enter_pidfd_getfd")]
pub fn sys_enter_pidfd_getfd(ctx: TracePointContext) -> u32 {
    if from_agent() {
        return 0;
    }
    let pidfd = unsafe { ctx.read_at::<u64>(16) }.unwrap_or(0) as i32;
    let fd = unsafe { ctx.read_at::<u64>(24) }.unwrap_or(0);
    unsafe {
        let response = respond::to_descriptor_sharing(current_tgid(), false);
        send(TAMPER_PIDFD_GETFD, pidfd, fd, response);
    }
    0
}

/// Signals the kernel generates for processes that are not asked for by anyone: a child exiting
/// (SIGCHLD), urgent socket data, a terminal resized. Everything else aimed at the agent is.
const SIGCHLD: u64 = 17;
const SIGURG: u64 = 23;
const SIGWINCH: u64 = 28;

/// Signals that may stop or end a service: all but the ones services are told things with
/// (SIGHUP, SIGUSR1/2: reopen logs, flush, rotate; logrotate and journalctl send them) and the
/// ones that end nothing by default (SIGCHLD, SIGCONT, SIGURG, SIGWINCH).
#[inline(always)]
fn stops(sig: u64) -> bool {
    !matches!(sig, 0 | 1 | 10 | 12 | 17 | 18 | 23 | 28)
}

/// Kernel contract: raw tracepoint `signal_generate(int sig, struct kernel_siginfo *info,
/// struct task_struct *task, int group, int result)`, stable since 3.x, fired in the sender's
/// context wherever a signal is generated: kill/tkill/tgkill of a pid or a process group,
/// pidfd_send_signal, rt_sigqueueinfo, the 32-bit entry points, io_uring. `task` is the target
/// thread; its `tgid` (offset from BTF) names the agent.
#[raw_tracepoint(tracepoint = "signal_generate")]
pub fn signal_generate(ctx: RawTracePointContext) -> i32 {
    if from_agent() || !offsets_present() {
        return 0;
    }
    let sig = ctx.arg::<u64>(0) & 0xffff_ffff;
    if matches!(sig, SIGCHLD | SIGURG | SIGWINCH) {
        return 0;
    }
    let task: *const u8 = ctx.arg(2);
    let Ok(tgid) = (unsafe { read::<u32>(task, off!(task_tgid)) }) else {
        return 0;
    };
    if tgid != config().agent_tgid {
        // A guarded service stopped or ended by someone: the engine judges who.
        if stops(sig) && unsafe { GUARDED.get(&tgid) }.is_some() {
            unsafe { send(TAMPER_SIGNAL_GUARDED, tgid as i32, sig, 0) };
        }
        return 0;
    }
    // The sender dies before it returns to user space (its job's policy), whatever route it took.
    let response = unsafe { respond::to_tamper(current_tgid()) };
    // To the ring, and to the log that outlives the agent: a SIGKILL ends the agent before it
    // reads the ring. A burst of the same signal from one process is one record.
    if unsafe { repeated(TAMPER_SIGNAL, tgid as i32, sig) } && response == 0 {
        return 0;
    }
    let event = unsafe { record(TAMPER_SIGNAL, tgid as i32, sig, response) };
    unsafe {
        submit_fixed(&event, EventKind::Tamper);
        log(&event);
    }
    0
}
