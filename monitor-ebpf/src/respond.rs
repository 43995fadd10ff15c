//! Kill responses: what a job's policy (`JOB_POLICY`, written by the agent from the profile's
//! `responses`) has the kernel do itself, at the syscall that reveals the attack. The decision
//! is taken here, from maps the agent filled before, because userspace reads the ring too late:
//! by then the secret is in the attacker's process.
//!
//! The kill is `bpf_send_signal(SIGKILL)` from the open's exit: the signal is delivered before
//! the process returns to user space, so it dies holding a descriptor it never read. Only a job's
//! members (`JOB_PROCS` with `JOB_MEMBER`) are ever killed: never an anchor (the runner's
//! Worker), never a process outside a job, never the agent (its opens are not looked at).
//!
//! Which syscalls:
//! - another process's memory or memory map (`/proc/PID/mem`, `maps`) when that process is not
//!   of the opener's job (the Worker's, the runner's, another job's): `POLICY_KILL_PROC_MEMORY`;
//! - its environment (`environ`), the same way, except by the system's process listers
//!   (`QUIET_LISTERS`: `ps aux` reads every environ without printing it) not asked to print
//!   environments (`ps e`), as `exec_scan` found at their exec (`JOB_QUIET_LISTER`):
//!   `POLICY_KILL_PROC_ENVIRON`;
//! - a credential file, known by identity (`WATCH_INODES` with `WATCH_CREDENTIAL`), opened by
//!   install-time code (`JOB_INSTALL_CODE`): `POLICY_KILL_INSTALL_CREDENTIAL`;
//! - making a process that shares the maker's descriptor table while any of the open kills
//!   above is in force for it, or taking another's descriptor with `pidfd_getfd`
//!   (`to_descriptor_sharing`: the kill at the open would leave the descriptor in the other
//!   process's table, or to be taken from the dying opener);
//! - a signal to the agent, or bpf(2) (tamper.rs): `POLICY_KILL_TAMPER`. The signal still
//!   reaches the agent and the bpf(2) call still runs (a tracepoint cannot refuse them), but the
//!   process dies before it can act on either: what it meant to do next does not happen.
//!
//! Install-time code is found here too, at exec (`exec_scan`), so a lifecycle script is
//! marked before its first instruction runs: an npm-family script (`npm_lifecycle_event` is an
//! install hook) running in a dependency's directory (`node_modules`, pnpm's store, npm's cache
//! or git-clone directory), as the agent's rules recognise one; a dependency's cargo build script
//! (started in its crate's directory under the registry's sources, a git checkout or
//! `vendor/`) and what pip runs in the directory it unpacked a requirement into to build it
//! (`JOB_INSTALL_CODE` only). The agent marks the hooks its rules find too when it reads their
//! exec (late for a hook that reads at once: the kernel's mark is what the kill relies on);
//! children inherit the mark at fork.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm,
        generated::{bpf_loop, bpf_probe_read_kernel, bpf_probe_read_user, bpf_send_signal},
    },
    macros::{map, tracepoint},
    maps::PerCpuArray,
    programs::TracePointContext,
};
use monitor_common::{
    InodeKey, JobEntry, ENV_SCAN_LEN, JOB_INSTALL_CODE, JOB_INSTALL_SCRIPT, JOB_QUIET_LISTER,
    MATCH_PROC_OTHER, POLICY_KILLS, POLICY_KILL_INSTALL_CREDENTIAL, POLICY_KILL_INSTALL_EXEC,
    POLICY_KILL_PROC_ENVIRON, POLICY_KILL_PROC_MEMORY, POLICY_KILL_TAMPER,
    POLICY_NEEDS_INSTALL_SCAN, POLICY_OPENS_REFUSED, POLICY_REHEARSE, RESPONSE_KILLED,
    RESPONSE_KILL_FAILED, RESPONSE_WOULD_KILL, WATCH_CREDENTIAL, WATCH_PROC_MEMORY,
};

use crate::{
    block::{member, policy},
    kernel::{current_task, current_tgid, is_agent, off, offsets_present, read, read_ptr},
    open::dentry_name,
    ENV_SCRATCH, EXEC_SCANNERS, JOB_PROCS, JOB_STARTED, QUIET_LISTERS,
};

const SIGKILL: u32 = 9;

/// What the watch filter found about an open, for the response. Kept in map memory
/// (`open::OPEN_FACTS`) and read volatile: see `kernel::add_bits`.
#[repr(C)]
pub struct OpenFacts {
    /// `MATCH_*` bits.
    pub matched: u32,
    /// The watch value of a `/proc/PID/{mem,maps,environ}` name (`WATCH_PROC_*`), or 0.
    pub proc_kind: u32,
    /// The process whose /proc file it is (the pid before `/task/TID` for a thread's).
    pub proc_owner: u32,
    /// The `WATCH_INODES` value of the opened file, or 0.
    pub inode_kind: u32,
    /// Opened for writing (1) or not (0).
    pub writes: u32,
}

/// The response to an open by `tgid`, taken now: `RESPONSE_KILLED`, `RESPONSE_WOULD_KILL`,
/// `RESPONSE_KILL_FAILED`, or 0 when its job's policy asks for nothing.
#[inline(always)]
pub unsafe fn to_open(tgid: u32, facts: *const OpenFacts) -> u32 {
    let Some((slot, flags)) = member(tgid) else {
        return 0;
    };
    let policy = policy(slot);
    if policy & POLICY_KILLS == 0 {
        return 0;
    }
    let get = |field: *const u32| core::ptr::read_volatile(field);
    let matched = get(&raw const (*facts).matched);
    let proc_kind = get(&raw const (*facts).proc_kind);
    let proc_owner = get(&raw const (*facts).proc_owner);
    let mut kill = false;
    if matched & MATCH_PROC_OTHER != 0 && proc_owner != 0 {
        let same_job = member(proc_owner).is_some_and(|(s, _)| s == slot);
        if same_job && get(&raw const (*facts).writes) != 0 && proc_kind & WATCH_PROC_MEMORY != 0 {
            no_longer_quiet(proc_owner);
        }
        if !same_job {
            kill = if proc_kind & WATCH_PROC_MEMORY != 0 {
                policy & POLICY_KILL_PROC_MEMORY != 0
            } else {
                policy & POLICY_KILL_PROC_ENVIRON != 0 && flags & JOB_QUIET_LISTER == 0
            };
        }
    }
    if get(&raw const (*facts).inode_kind) & WATCH_CREDENTIAL != 0
        && flags & JOB_INSTALL_CODE != 0
        && policy & POLICY_KILL_INSTALL_CREDENTIAL != 0
    {
        kill = true;
    }
    if !kill {
        return 0;
    }
    kill_now(policy)
}

/// The response to a job's process executing a program (`sched_process_exec`, before the new
/// program's first instruction): killed when a lifecycle script's process (`JOB_INSTALL_SCRIPT`)
/// runs a program written during its job (the file changed at or after `JOB_STARTED`) from a
/// temporary directory or with no name (`unlinked`: memfd, deleted). `exe` is the resolved
/// path of the file judged: at `sched_process_exec` the program the kernel mapped (a `#!`
/// script's interpreter), at BPF-LSM's `bprm_check_security` each file the exec is about to
/// run (the script itself first; that hook also refuses the exec).
#[inline(always)]
pub unsafe fn to_exec(tgid: u32, exe: *const u8, unlinked: bool, changed_ns: u64) -> u32 {
    let Some((slot, flags)) = member(tgid) else {
        return 0;
    };
    if flags & JOB_INSTALL_SCRIPT == 0 {
        return 0;
    }
    let policy = policy(slot);
    if policy & POLICY_KILL_INSTALL_EXEC == 0 {
        return 0;
    }
    let started = JOB_STARTED.get(slot).copied().unwrap_or(u64::MAX);
    if changed_ns < started || !(unlinked || in_temp_dir(exe)) {
        return 0;
    }
    kill_now(policy)
}

/// Whether `to_exec` may kill at an exec of `tgid`: it is a lifecycle script's process whose
/// job's policy kills such execs (the cheap test every exec of the machine passes first).
#[inline(always)]
pub fn may_refuse_exec(tgid: u32) -> bool {
    match member(tgid) {
        Some((slot, flags)) => {
            flags & JOB_INSTALL_SCRIPT != 0 && policy(slot) & POLICY_KILL_INSTALL_EXEC != 0
        }
        None => false,
    }
}

/// Whether the path at `exe` (NUL-padded, at least 16 readable bytes) is in `/tmp`, `/var/tmp`
/// or `/dev/shm`: where droppers put what they fetch, and where no package manager installs
/// programs.
#[inline(always)]
unsafe fn in_temp_dir(exe: *const u8) -> bool {
    let mut head = [0u8; 16];
    if bpf_probe_read_kernel(head.as_mut_ptr().cast(), 16, exe.cast()) < 0 {
        return false;
    }
    let word = u64::from_le_bytes([
        head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7],
    ]);
    let five = word & 0xff_ffff_ffff;
    five == u64::from_le_bytes(*b"/tmp/\0\0\0")
        || (head[8] == b'/'
            && (word == u64::from_le_bytes(*b"/var/tmp")
                || word == u64::from_le_bytes(*b"/dev/shm")))
}

/// The response to a job's process reading or writing (`may_write`: ptrace,
/// process_vm_writev) the memory of process `target` (at the syscall's entry: the process dies
/// before it returns to user space with what it read).
#[inline(always)]
pub unsafe fn to_process_access(tgid: u32, target: u32, may_write: bool) -> u32 {
    let Some((slot, _)) = member(tgid) else {
        return 0;
    };
    if target == 0 || target == tgid {
        return 0;
    }
    if member(target).is_some_and(|(s, _)| s == slot) {
        if may_write {
            no_longer_quiet(target);
        }
        return 0;
    }
    let policy = policy(slot);
    if policy & POLICY_KILL_PROC_MEMORY == 0 {
        return 0;
    }
    kill_now(policy)
}

/// The response to a job's process making another process that shares its descriptor table
/// (`clone(CLONE_FILES)` without `CLONE_THREAD`, seen at `sched_process_fork` in the maker), or
/// taking another process's descriptor (`pidfd_getfd`, tamper.rs):
/// a kill at an open ends the opener's thread group only, and the descriptor would live on in
/// the other process's table, readable there. Where the job's policy kills at opens this
/// process is in reach of (another process's memory or environment; credentials, for
/// install-time code), the maker is killed now, before either opens anything: the new process
/// keeps the table alone, and a kill of it ends the table. A shared table is let be where
/// BPF-LSM refuses those opens (`POLICY_OPENS_REFUSED`): no such descriptor ever exists there;
/// `pidfd_getfd` can take any other descriptor, and is not.
#[inline(always)]
pub unsafe fn to_descriptor_sharing(tgid: u32, shares_table: bool) -> u32 {
    let Some((slot, flags)) = member(tgid) else {
        return 0;
    };
    let policy = policy(slot);
    // A shared table holds only descriptors opens gave, none of them refused ones.
    if shares_table && policy & POLICY_OPENS_REFUSED != 0 {
        return 0;
    }
    let mut in_reach = POLICY_KILL_PROC_MEMORY | POLICY_KILL_PROC_ENVIRON;
    if flags & JOB_INSTALL_CODE != 0 {
        in_reach |= POLICY_KILL_INSTALL_CREDENTIAL;
    }
    if policy & in_reach == 0 {
        return 0;
    }
    kill_now(policy)
}

/// A process lister whose memory another process may have written (ptrace, /proc/PID/mem,
/// process_vm_writev: code injected into it) is not spared any more.
#[inline(always)]
unsafe fn no_longer_quiet(tgid: u32) {
    if let Some(entry) = JOB_PROCS.get_ptr_mut(&tgid) {
        if (*entry).flags & JOB_QUIET_LISTER != 0 {
            (*entry).flags &= !JOB_QUIET_LISTER;
        }
    }
}

/// The response to a job's process signalling the agent or using bpf(2).
#[inline(always)]
pub unsafe fn to_tamper(tgid: u32) -> u32 {
    let Some((slot, _)) = member(tgid) else {
        return 0;
    };
    let policy = policy(slot);
    if policy & POLICY_KILL_TAMPER == 0 {
        return 0;
    }
    kill_now(policy)
}

/// Kills the current process, or says it would (rehearsed).
#[inline(always)]
unsafe fn kill_now(policy: u32) -> u32 {
    if policy & POLICY_REHEARSE != 0 {
        return RESPONSE_WOULD_KILL;
    }
    if bpf_send_signal(SIGKILL) == 0 {
        RESPONSE_KILLED
    } else {
        RESPONSE_KILL_FAILED
    }
}

/// At exec (end of `sched_process_exec`): hands the new program to `exec_scan` when its job's
/// policy needs listers or install-time code told. Returns only when it
/// did not (no scan needed, or the scanner is not loaded).
#[inline(always)]
pub unsafe fn scan_exec(ctx: &TracePointContext, tgid: u32) {
    let Some((slot, flags)) = member(tgid) else {
        return;
    };
    let policy = policy(slot);
    // Until the kernel itself has marked it a lifecycle script: a process the agent marked
    // install code (a pip or cargo hook) may still start an npm script under it.
    let install_scan = flags & JOB_INSTALL_SCRIPT == 0 && policy & POLICY_NEEDS_INSTALL_SCAN != 0;
    if install_scan || policy & POLICY_KILL_PROC_ENVIRON != 0 {
        let _ = EXEC_SCANNERS.tail_call(ctx, 0);
    }
}

/// Kernel contract: as `sched_process_exec` (tail-called from it, in the new program's context,
/// before it runs): `task->fs->pwd` is the directory it was started in, `mm->exe_file` the
/// program, `mm->arg_start..arg_end` and `env_start..env_end` its arguments and environment as
/// execve copied them. Needs `bpf_loop` (Linux 5.17+); loaded only when a profile has kill
/// responses.
#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn exec_scan(_ctx: TracePointContext) -> u32 {
    let tgid = current_tgid();
    if is_agent(tgid) || !offsets_present() {
        return 0;
    }
    let Some((slot, flags)) = member(tgid) else {
        return 0;
    };
    let policy = policy(slot);
    let task = current_task();
    // What the program that ran before in this process was does not carry over.
    let quiet = policy & POLICY_KILL_PROC_ENVIRON != 0 && unsafe { quiet_lister(task) };
    let mut new_flags = flags & !JOB_QUIET_LISTER;
    if quiet {
        new_flags |= JOB_QUIET_LISTER;
    }
    if flags & JOB_INSTALL_SCRIPT == 0 && policy & POLICY_NEEDS_INSTALL_SCAN != 0 {
        match unsafe { install_code(task) }.unwrap_or(InstallCode::None) {
            InstallCode::LifecycleScript => new_flags |= JOB_INSTALL_CODE | JOB_INSTALL_SCRIPT,
            InstallCode::Build => new_flags |= JOB_INSTALL_CODE,
            InstallCode::None => {}
        }
    }
    if new_flags != flags {
        let entry = JobEntry {
            slot,
            flags: new_flags,
        };
        let _ = JOB_PROCS.insert(&tgid, &entry, 0);
    }
    0
}

/// Whether the new program is one of the system's process listers (by its file's identity)
/// run without asking it to print environments.
#[inline(always)]
unsafe fn quiet_lister(task: *const u8) -> bool {
    let identity = || -> Result<InodeKey, i64> {
        let mm = read_ptr(task, off!(task_mm))?;
        let exe = read_ptr(mm, off!(mm_exe_file))?;
        let inode = read_ptr(exe, off!(file_f_inode))?;
        let dentry = read_ptr(exe.wrapping_add(off!(file_f_path)), off!(path_dentry))?;
        let sb = read_ptr(dentry, off!(dentry_d_sb))?;
        Ok(InodeKey {
            ino: read::<u64>(inode, off!(inode_i_ino))?,
            dev: read::<u32>(sb, off!(sb_s_dev))?,
            _pad0: 0,
        })
    };
    match identity() {
        Ok(key) => {
            QUIET_LISTERS.get_ptr(&key).is_some()
                && !asks_for_environments(task)
                // A lister made to load someone's code is theirs (LD_PRELOAD, LD_AUDIT, ...).
                && !scan_env(task, ENV_LOADER).unwrap_or(true)
        }
        Err(_) => false,
    }
}

/// How much of a lister's arguments is read for `asks_for_environments` (a power of two).
const LISTER_ARGS_LEN: usize = 256;

#[repr(C)]
struct ArgsState {
    /// Index of the word being read (0: the program's own name).
    word: u64,
    at_start: u64,
    letters_only: u64,
    has_e: u64,
    asks: u64,
}

/// Whether a lister's arguments ask it to print environments: procps `ps`'s BSD `e` modifier
/// (`ps auxeww`: a word of letters, not an option, that has an `e`). Arguments longer than
/// `LISTER_ARGS_LEN` count as asking (fail closed).
#[inline(always)]
unsafe fn asks_for_environments(task: *const u8) -> bool {
    let args = || -> Result<u64, i64> {
        let mm = read_ptr(task, off!(task_mm))?;
        let start = read::<u64>(mm, off!(mm_arg_start))?;
        let end = read::<u64>(mm, off!(mm_arg_end))?;
        let len = end.saturating_sub(start);
        let buf = ENV_SCRATCH.get_ptr_mut(0).ok_or(-1i64)?;
        // A fixed-size read (the environment follows the arguments on the stack).
        if len as usize > LISTER_ARGS_LEN
            || bpf_probe_read_user(
                (*buf).bytes.as_mut_ptr().cast(),
                LISTER_ARGS_LEN as u32,
                start as *const _,
            ) < 0
        {
            return Err(-1);
        }
        Ok(len)
    };
    let Ok(len) = args() else {
        return true;
    };
    let Some(state) = LOOP_STATE.get_ptr_mut(0) else {
        return true;
    };
    let st = &raw mut (*state).args;
    (*st).word = 0;
    (*st).at_start = 1;
    (*st).letters_only = 1;
    (*st).has_e = 0;
    (*st).asks = 0;
    bpf_loop(
        (len as u32) & (LISTER_ARGS_LEN as u32 * 2 - 1),
        args_byte as *mut core::ffi::c_void,
        core::ptr::null_mut(),
        0,
    );
    core::ptr::read_volatile(&raw const (*st).asks) != 0
}

/// The state of a `bpf_loop` scan, kept in map memory and not on the stack (the callback's
/// context argument): the verifier tracks stack values exactly, so a counter there is a new
/// state on every round and the callback's walk never meets one it has seen (6.18's verifier,
/// which walks callbacks until their states repeat, gives up at its budget); map memory holds
/// unknown values to it, and the walk merges at once.
#[repr(C)]
struct LoopState {
    args: ArgsState,
    scan: ScanState,
}
#[map]
static LOOP_STATE: PerCpuArray<LoopState> = PerCpuArray::with_max_entries(1, 0);

/// One byte of a lister's arguments (NUL-separated words).
extern "C" fn args_byte(index: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let (Some(buf), Some(state)) = (ENV_SCRATCH.get_ptr(0), LOOP_STATE.get_ptr_mut(0)) else {
        return 1;
    };
    let st = unsafe { &raw mut (*state).args };
    unsafe {
        let c = (*buf).bytes[index as usize & (LISTER_ARGS_LEN - 1)];
        if c == 0 {
            if (*st).word > 0 && (*st).at_start == 0 && (*st).letters_only != 0 && (*st).has_e != 0
            {
                (*st).asks = 1;
                return 1;
            }
            (*st).word += 1;
            (*st).at_start = 1;
            (*st).letters_only = 1;
            (*st).has_e = 0;
            return 0;
        }
        if !c.is_ascii_alphabetic() {
            (*st).letters_only = 0;
        }
        if c == b'e' {
            (*st).has_e = 1;
        }
        (*st).at_start = 0;
        0
    }
}

/// What kind of install-time code a new program is, if any.
#[derive(Clone, Copy)]
enum InstallCode {
    None,
    /// A dependency's npm-family lifecycle script (`JOB_INSTALL_SCRIPT`).
    LifecycleScript,
    /// A dependency's cargo build script or pip build (`JOB_INSTALL_CODE` only: they compile
    /// and run test programs in temporary directories).
    Build,
}

/// What install-time code the new program is: an npm-family install script (run in a
/// dependency's directory with an install event as `npm_lifecycle_event`), a cargo build
/// script (`build-script-*`, which cargo starts in its crate's directory) of a crate unpacked
/// from a registry or a git source, or vendored, or anything pip starts in the directory it
/// unpacked a requirement into to build it (`pip-install-*`, `pip-req-build-*`, ...): the
/// places `rules::lifecycle` calls a dependency's.
#[inline(always)]
unsafe fn install_code(task: *const u8) -> Result<InstallCode, i64> {
    let comm = bpf_get_current_comm().unwrap_or([0; 16]);
    let build_script = comm.starts_with(b"build-script-");
    match dependency_dir(task, build_script)? {
        DIR_NPM => Ok(if scan_env(task, ENV_INSTALL_EVENT)? {
            InstallCode::LifecycleScript
        } else {
            InstallCode::None
        }),
        DIR_BUILD => Ok(InstallCode::Build),
        _ => Ok(InstallCode::None),
    }
}

/// What `scan_env` looks for: `npm_lifecycle_event=` with an install event.
const ENV_INSTALL_EVENT: u64 = 1;
/// ... or any variable of the dynamic loader's (`LD_*`).
const ENV_LOADER: u64 = 2;

/// Whether the new program's environment (its first `ENV_SCAN_LEN` bytes) has what `look_for`
/// names.
#[inline(always)]
unsafe fn scan_env(task: *const u8, look_for: u64) -> Result<bool, i64> {
    let mm = read_ptr(task, off!(task_mm))?;
    let start = read::<u64>(mm, off!(mm_env_start))?;
    let end = read::<u64>(mm, off!(mm_env_end))?;
    let mut len = end.saturating_sub(start) as usize;
    if len > ENV_SCAN_LEN - 1 {
        len = ENV_SCAN_LEN - 1;
    }
    let buf = ENV_SCRATCH.get_ptr_mut(0).ok_or(-1i64)?;
    // `opaque`: the mask must reach the verifier (6.1's loses the clamp above).
    let len = crate::kernel::opaque(len) & (ENV_SCAN_LEN - 1);
    if bpf_probe_read_user(
        (*buf).bytes.as_mut_ptr().cast(),
        len as u32,
        start as *const _,
    ) < 0
    {
        return Err(-1);
    }
    (*buf).bytes[len] = 0;
    let state = LOOP_STATE.get_ptr_mut(0).ok_or(-1i64)?;
    let st = &raw mut (*state).scan;
    (*st).len = len as u64;
    (*st).look_for = look_for;
    (*st).found = 0;
    bpf_loop(
        len as u32,
        env_byte as *mut core::ffi::c_void,
        core::ptr::null_mut(),
        0,
    );
    Ok(core::ptr::read_volatile(&raw const (*st).found) != 0)
}

#[repr(C)]
struct ScanState {
    len: u64,
    look_for: u64,
    found: u64,
}

const LIFECYCLE_KEY: &[u8; 20] = b"npm_lifecycle_event=";
/// The npm-family lifecycle events that are install-time code (`rules::lifecycle`).
const INSTALL_EVENTS: [&[u8]; 9] = [
    b"preinstall",
    b"install",
    b"postinstall",
    b"prepare",
    b"preprepare",
    b"postprepare",
    b"prepack",
    b"postpack",
    b"prepublish",
];
const MASK: usize = ENV_SCAN_LEN - 1;

/// One byte of the environment: at the start of a variable, is it what the scan looks for
/// (`npm_lifecycle_event=` with an install event: there is one, so the scan stops at it; or
/// `LD_`)?
extern "C" fn env_byte(index: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let (Some(buf), Some(state)) = (ENV_SCRATCH.get_ptr(0), LOOP_STATE.get_ptr_mut(0)) else {
        return 1;
    };
    let st = unsafe { &raw mut (*state).scan };
    unsafe {
        let i = index as usize;
        let len = (*st).len as usize;
        if i + 3 >= len {
            return 1;
        }
        let bytes = &(*buf).bytes;
        if i != 0 && bytes[(i - 1) & MASK] != 0 {
            return 0;
        }
        if (*st).look_for == ENV_LOADER {
            if bytes[i & MASK] == b'L'
                && bytes[(i + 1) & MASK] == b'D'
                && bytes[(i + 2) & MASK] == b'_'
            {
                (*st).found = 1;
                return 1;
            }
            return 0;
        }
        if i + LIFECYCLE_KEY.len() >= len {
            return 1;
        }
        let mut j = 0;
        while j < LIFECYCLE_KEY.len() {
            if bytes[(i + j) & MASK] != LIFECYCLE_KEY[j] {
                return 0;
            }
            j += 1;
        }
        let value = i + LIFECYCLE_KEY.len();
        let mut e = 0;
        while e < INSTALL_EVENTS.len() {
            let event = INSTALL_EVENTS[e];
            let mut k = 0;
            let mut same = true;
            while k < event.len() {
                if bytes[(value + k) & MASK] != event[k] {
                    same = false;
                    break;
                }
                k += 1;
            }
            if same && bytes[(value + event.len()) & MASK] == 0 {
                (*st).found = 1;
                return 1;
            }
            e += 1;
        }
        1
    }
}

/// How many directories up from the working directory a dependency's directory is looked for.
const DEPENDENCY_DIR_DEPTH: u32 = 24;

/// `dependency_dir`'s answers: an npm-family dependency's directory, or one where a
/// dependency is built (cargo, pip).
const DIR_NPM: u64 = 1;
const DIR_BUILD: u64 = 2;

/// The name of the directory the walk came up from, when it matters to the next one up.
const CHILD_OTHER: u64 = 0;
const CHILD_SRC: u64 = 1;
const CHILD_CHECKOUTS: u64 = 2;

#[repr(C)]
struct DirWalk {
    dentry: u64,
    /// `DIR_*`, or 0 while none is found.
    found: u64,
    /// Whether the program is a cargo build script (cargo's places count only for one).
    build_script: u64,
    /// `CHILD_*`: the directory below the one being looked at.
    child: u64,
}

/// Whose directory the task's working directory is inside: an npm-family dependency's
/// (`node_modules`, `.pnpm-store`, `_cacache`, npm's `git-clone*` for a git dependency:
/// `DIR_NPM`); for a cargo build script, a crate from a registry (`registry/src/`), a git
/// source (`git/checkouts/`) or `vendor/`; pip's build directory of a requirement
/// (`pip-install-*`, `pip-req-build-*`, `pip-wheel-*`, `pip-download-*`): `DIR_BUILD`; else 0.
#[inline(always)]
unsafe fn dependency_dir(task: *const u8, build_script: bool) -> Result<u64, i64> {
    let fs = read_ptr(task, off!(task_fs))?;
    let dentry = read_ptr(fs.wrapping_add(off!(fs_pwd)), off!(path_dentry))?;
    let mut walk = DirWalk {
        dentry: dentry as u64,
        found: 0,
        build_script: build_script as u64,
        child: CHILD_OTHER,
    };
    bpf_loop(
        DEPENDENCY_DIR_DEPTH,
        dir_step as *mut core::ffi::c_void,
        (&raw mut walk).cast(),
        0,
    );
    Ok(walk.found)
}

/// One directory of the walk up: is it a dependency's? Stops at the root.
extern "C" fn dir_step(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let walk = ctx.cast::<DirWalk>();
    unsafe {
        let dentry = (*walk).dentry as *const u8;
        let Ok((len, bytes)) = dentry_name(dentry) else {
            return 1;
        };
        let mut name = [0u8; 16];
        let copy = if len < 15 { len } else { 15 };
        bpf_probe_read_kernel(name.as_mut_ptr().cast(), copy & 15, bytes.cast());
        let n = &name[..];
        let is = |word: &[u8]| len as usize == word.len() && n.starts_with(word);
        if is(b"node_modules")
            || is(b".pnpm-store")
            || is(b"_cacache")
            || (len >= 9 && n.starts_with(b"git-clone"))
        {
            (*walk).found = DIR_NPM;
            return 1;
        }
        // pip's temporary directories are `pip-<kind>-<random>`.
        if n.starts_with(b"pip-install-")
            || n.starts_with(b"pip-req-build-")
            || n.starts_with(b"pip-wheel-")
            || n.starts_with(b"pip-download-")
        {
            (*walk).found = DIR_BUILD;
            return 1;
        }
        if (*walk).build_script != 0
            && ((is(b"registry") && (*walk).child == CHILD_SRC)
                || (is(b"git") && (*walk).child == CHILD_CHECKOUTS)
                || is(b"vendor"))
        {
            (*walk).found = DIR_BUILD;
            return 1;
        }
        (*walk).child = if is(b"src") {
            CHILD_SRC
        } else if is(b"checkouts") {
            CHILD_CHECKOUTS
        } else {
            CHILD_OTHER
        };
        let Ok(parent) = read_ptr(dentry, off!(dentry_d_parent)) else {
            return 1;
        };
        if parent == dentry {
            return 1;
        }
        (*walk).dentry = parent as u64;
        0
    }
}
