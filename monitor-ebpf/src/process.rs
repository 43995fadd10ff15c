//! Process lifecycle: exec, fork (new processes only, not threads) and exit (last thread).

use aya_ebpf::{
    helpers::generated::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel_str, bpf_probe_read_user,
    },
    macros::{lsm, raw_tracepoint, tracepoint},
    programs::{LsmContext, RawTracePointContext, TracePointContext},
    EbpfContext,
};
use monitor_common::{
    EnvEvent, EventKind, ExecEvent, ExitEvent, ForkEvent, ENV_TRUNCATED, ENV_UNREADABLE,
    EXEC_ARGV_TRUNCATED, EXEC_CWD_TRUNCATED, EXEC_CWD_UNRESOLVED, EXEC_EXE_TRUNCATED,
    EXEC_EXE_UNLINKED, EXEC_EXE_UNRESOLVED, EXEC_FILENAME_TRUNCATED, FORK_AS_SIBLING,
    FORK_SHARES_FILES, MAX_ARGV_LEN, MAX_ENV_LEN, MAX_FILENAME_LEN, RESPONSE_KILLED,
    RESPONSE_KILL_FAILED, RESPONSE_REFUSED,
};

use crate::{
    kernel::{
        add_bits, config, count_error, current_task, event_scratch, fill_current_header,
        fill_header, is_agent, off, offsets_present, process_start_ns, read, read_ptr, submit,
        submit_fixed, tracing_types_task, EventScratch,
    },
    path,
};

const HEADER_LEN: usize = core::mem::size_of::<ExecEvent>();
const SECTION_MASK: usize = 8191;
const TAIL_MASK: usize = 16383;

/// Kernel contract: `sched/sched_process_exec` record: `__data_loc char[] filename` at 8,
/// `pid` at 12, `old_pid` at 16. Fires in the new program's context, after the point of no return.
#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    if unsafe { try_exec(&ctx) }.is_err() {
        count_error(EventKind::ProcessExec);
    }
    0
}

unsafe fn try_exec(ctx: &TracePointContext) -> Result<(), i64> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if is_agent(tgid) || !offsets_present() {
        return Ok(());
    }
    let scratch = event_scratch().ok_or(-1i64)?;
    let task = current_task();
    let mm = read_ptr(task, off!(task_mm))?;
    // The environment goes first, so the agent holds it when the exec record arrives (records of
    // one task on one CPU keep their order in the ring).
    if config().capture_env != 0 {
        send_env(scratch, mm);
    }

    let base = (*scratch).bytes.as_mut_ptr();
    let event = base.cast::<ExecEvent>();
    fill_current_header(
        &raw mut (*event).header,
        EventKind::ProcessExec,
        tracing_types_task(),
    );
    // Flags and lengths through the record (map memory), read back where needed: held in
    // registers, each path's constants (0 for a part not read) are states of their own, and
    // the verifier walks each later path resolution once per combination (see `add_bits`).
    let flags = &raw mut (*event).header.flags;
    let filename_len_at = &raw mut (*event).filename_len;
    let exe_len_at = &raw mut (*event).exe_len;
    let argv_len_at = &raw mut (*event).argv_len;
    let cwd_len_at = &raw mut (*event).cwd_len;
    let len_of = |at: *mut u16| core::ptr::read_volatile(at) as usize;
    for at in [filename_len_at, exe_len_at, argv_len_at, cwd_len_at] {
        core::ptr::write_volatile(at, 0);
    }
    (*event).exe_ctime_sec = 0;
    (*event).exe_ctime_nsec = 0;

    // The name given to execve, from the tracepoint record.
    let data_loc: u32 = ctx.read_at::<u32>(8).map_err(|e| e as i64)?;
    let filename_src = (ctx.as_ptr() as *const u8).add((data_loc & 0xffff) as usize);
    let copied = bpf_probe_read_kernel_str(
        base.add(HEADER_LEN).cast(),
        MAX_FILENAME_LEN as u32,
        filename_src.cast(),
    );
    if copied > 0 {
        let n = (copied as usize - 1) & (MAX_FILENAME_LEN - 1);
        core::ptr::write_volatile(filename_len_at, n as u16);
    }
    if (data_loc >> 16) as usize > MAX_FILENAME_LEN {
        add_bits(flags, EXEC_FILENAME_TRUNCATED);
    }

    // The executable the kernel really mapped (for a script: its interpreter), resolved.
    match read_ptr(mm, off!(mm_exe_file)) {
        Ok(exe_file) => {
            // No name anywhere: memfd_create + fexecve, or a file deleted before it ran. The
            // kernel's own count, not a stat of a path in some other namespace afterwards.
            if let Ok(inode) = read_ptr(exe_file, off!(file_f_inode)) {
                put_exe_inode(inode, event, flags);
            }
            put_exe(task, exe_file, base, filename_len_at, exe_len_at, flags);
        }
        Err(_) => add_bits(flags, EXEC_EXE_UNRESOLVED),
    }

    // A lifecycle script running what it dropped dies here, before the program's first
    // instruction (`respond::to_exec`); the record says so. Only a resolved path of a few bytes
    // is looked at: the scratch holds an earlier record's bytes past it.
    if len_of(exe_len_at) >= 6 {
        add_bits(flags, exec_response(tgid, event, filename_len_at));
    }

    // argv: the NUL-separated block the kernel just copied onto the new stack.
    let arg_start = read::<u64>(mm, off!(mm_arg_start))?;
    let arg_end = read::<u64>(mm, off!(mm_arg_end))?;
    let argv_total = arg_end.saturating_sub(arg_start);
    (*event).argv_total_len = argv_total.min(u32::MAX as u64) as u32;
    let mut argv_len = argv_total as usize;
    if argv_len > MAX_ARGV_LEN - 1 {
        argv_len = MAX_ARGV_LEN - 1;
        add_bits(flags, EXEC_ARGV_TRUNCATED);
    }
    let argv_len = argv_len & (MAX_ARGV_LEN - 1);
    core::ptr::write_volatile(argv_len_at, argv_len as u16);
    let at = (HEADER_LEN + len_of(filename_len_at) + len_of(exe_len_at)) & SECTION_MASK;
    if bpf_probe_read_user(base.add(at).cast(), argv_len as u32, arg_start as *const _) < 0 {
        add_bits(flags, EXEC_ARGV_TRUNCATED);
    }

    // The working directory: where a package manager runs a package's install code. Its place
    // is computed again from the lengths in the record, not from the registers above: carried
    // across the walk below they make the verifier walk more (measured: 59k -> 86k on 6.18).
    let cwd_at = ((HEADER_LEN + len_of(filename_len_at) + len_of(exe_len_at)) & SECTION_MASK)
        + len_of(argv_len_at);
    let cwd_at = cwd_at & TAIL_MASK;
    put_cwd(task, base.add(cwd_at), cwd_len_at, flags);
    (*event)._pad1 = 0;
    (*event)._pad2 = 0;
    submit(scratch, cwd_at + len_of(cwd_len_at), EventKind::ProcessExec);
    // Last: a tail call does not come back.
    crate::respond::scan_exec(ctx, tgid);
    Ok(())
}

const EPERM: i32 = 1;

/// Kernel contract: `int security_bprm_check(struct linux_binprm *bprm)` (LSM hook
/// `bprm_check_security`, Linux 5.7+ with `bpf` in the active LSM list), called by
/// `search_binary_handler` for each file an exec is about to run: the file given to execve,
/// then a `#!` script's interpreter (and binfmt_misc's), in the caller's context, with its old
/// program still mapped and before the point of no return, so a refusal makes execve fail.
/// `bprm->file` is that file, `bprm->filename` the name given to execve. The program's last
/// argument is the previous LSM's verdict: a refusal already made stands.
///
/// Where a job's policy kills a lifecycle script running a program it dropped
/// (`respond::to_exec`), this refuses the exec (`-EPERM`) and kills the caller: the program
/// never runs, and a dropped `#!` script is judged by its own file (the exec tracepoint sees
/// only its interpreter). Nothing is sent otherwise: `sched_process_exec` records every exec
/// that happens.
#[lsm(hook = "bprm_check_security")]
pub fn lsm_bprm_check(ctx: LsmContext) -> i32 {
    let earlier: i32 = ctx.arg(1);
    if earlier != 0 {
        return earlier;
    }
    let bprm: *const u8 = ctx.arg(0);
    match unsafe { try_bprm_check(bprm) } {
        Ok(true) => -EPERM,
        Ok(false) => 0,
        Err(_) => {
            count_error(EventKind::ProcessExec);
            0
        }
    }
}

/// Whether the exec `bprm` describes is refused; when it is, its record (an exec record whose
/// flags say `RESPONSE_REFUSED`) is sent. The record's arguments are the name given to execve
/// alone: the new arguments are in the new program's memory, which the caller cannot read.
unsafe fn try_bprm_check(bprm: *const u8) -> Result<bool, i64> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if is_agent(tgid) || !offsets_present() || !crate::respond::may_refuse_exec(tgid) {
        return Ok(false);
    }
    let file = read_ptr(bprm, off!(binprm_file))?;
    let inode = read_ptr(file, off!(file_f_inode))?;
    let scratch = event_scratch().ok_or(-1i64)?;
    let task = current_task();
    let base = (*scratch).bytes.as_mut_ptr();
    let event = base.cast::<ExecEvent>();
    fill_current_header(
        &raw mut (*event).header,
        EventKind::ProcessExec,
        tracing_types_task(),
    );
    let flags = &raw mut (*event).header.flags;
    let filename_len_at = &raw mut (*event).filename_len;
    let exe_len_at = &raw mut (*event).exe_len;
    let argv_len_at = &raw mut (*event).argv_len;
    let cwd_len_at = &raw mut (*event).cwd_len;
    let len_of = |at: *mut u16| core::ptr::read_volatile(at) as usize;
    for at in [filename_len_at, exe_len_at, argv_len_at, cwd_len_at] {
        core::ptr::write_volatile(at, 0);
    }
    put_exe_inode(inode, event, flags);

    let filename = read_ptr(bprm, off!(binprm_filename))?;
    let copied = bpf_probe_read_kernel_str(
        base.add(HEADER_LEN).cast(),
        MAX_FILENAME_LEN as u32,
        filename.cast(),
    );
    if copied > 0 {
        let n = (copied as usize - 1) & (MAX_FILENAME_LEN - 1);
        core::ptr::write_volatile(filename_len_at, n as u16);
    }
    // The buffer filled: the name may be longer.
    if copied as usize >= MAX_FILENAME_LEN {
        add_bits(flags, EXEC_FILENAME_TRUNCATED);
    }
    put_exe(task, file, base, filename_len_at, exe_len_at, flags);
    if len_of(exe_len_at) < 6 {
        return Ok(false);
    }
    let response = exec_response(tgid, event, filename_len_at);
    // A rehearsal refuses nothing: the exec goes on and its tracepoint says `would_kill`.
    if response & (RESPONSE_KILLED | RESPONSE_KILL_FAILED) == 0 {
        return Ok(false);
    }
    add_bits(flags, response | RESPONSE_REFUSED);

    // Arguments: the name given to execve, NUL-terminated.
    let argv_at = (HEADER_LEN + len_of(filename_len_at) + len_of(exe_len_at)) & SECTION_MASK;
    let copied = bpf_probe_read_kernel_str(
        base.add(argv_at).cast(),
        MAX_FILENAME_LEN as u32,
        filename.cast(),
    );
    if copied > 0 {
        // Its NUL kept (each argument ends with one): at most MAX_FILENAME_LEN bytes.
        let n = ((copied as usize - 1) & (MAX_FILENAME_LEN - 1)) + 1;
        core::ptr::write_volatile(argv_len_at, n as u16);
    }
    (*event).argv_total_len = len_of(argv_len_at) as u32;

    let cwd_at = ((HEADER_LEN + len_of(filename_len_at) + len_of(exe_len_at)) & SECTION_MASK)
        + len_of(argv_len_at);
    let cwd_at = cwd_at & TAIL_MASK;
    put_cwd(task, base.add(cwd_at), cwd_len_at, flags);
    (*event)._pad1 = 0;
    (*event)._pad2 = 0;
    submit(scratch, cwd_at + len_of(cwd_len_at), EventKind::ProcessExec);
    Ok(true)
}

/// What the executable's inode says of it into the record: no name left (`EXEC_EXE_UNLINKED`:
/// memfd_create + fexecve, or deleted before it ran; the kernel's own count, not a stat of a
/// path in some other namespace afterwards) and its change time.
#[inline(always)]
unsafe fn put_exe_inode(inode: *const u8, event: *mut ExecEvent, flags: *mut u32) {
    if read::<u32>(inode, off!(inode_i_nlink)) == Ok(0) {
        add_bits(flags, EXEC_EXE_UNLINKED);
    }
    (*event).exe_ctime_sec = read::<i64>(inode, off!(inode_i_ctime_sec)).unwrap_or(0);
    (*event).exe_ctime_nsec =
        read::<u32>(inode, off!(inode_i_ctime_nsec)).unwrap_or(0) % 1_000_000_000;
}

/// The response due to `tgid` running the executable the record names (resolved, after the
/// name given to execve), from what `put_exe_inode` put there (`respond::to_exec`).
#[inline(always)]
unsafe fn exec_response(tgid: u32, event: *mut ExecEvent, filename_len_at: *mut u16) -> u32 {
    let base = event.cast::<u8>();
    let filename_len = core::ptr::read_volatile(filename_len_at) as usize;
    let exe = base.add((HEADER_LEN + filename_len) & SECTION_MASK);
    let changed_ns = ((*event).exe_ctime_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add((*event).exe_ctime_nsec as u64);
    let unlinked =
        core::ptr::read_volatile(&raw const (*event).header.flags) & EXEC_EXE_UNLINKED != 0;
    crate::respond::to_exec(tgid, exe, unlinked, changed_ns)
}

/// Resolves the executable `file` (its `f_path`) into the record after the name given to
/// execve (`base` is the record, `filename_len_at` that name's length), its length to
/// `exe_len_at` and what went wrong to `flags` (all map memory). Where it goes is computed
/// after the walk, from the record: a place held in a register across it makes the verifier
/// walk more. Shared by the exec record and a refused exec's record; inlined, so each
/// program's verifier walk is what it was.
#[inline(always)]
unsafe fn put_exe(
    task: *const u8,
    file: *const u8,
    base: *mut u8,
    filename_len_at: *mut u16,
    exe_len_at: *mut u16,
    flags: *mut u32,
) {
    match path::resolve_path_struct(task, file.wrapping_add(off!(file_f_path))) {
        Ok(resolved) => {
            if resolved.truncated {
                add_bits(flags, EXEC_EXE_TRUNCATED);
            }
            let filename_len = core::ptr::read_volatile(filename_len_at) as usize;
            let at = (HEADER_LEN + filename_len) & SECTION_MASK;
            let n = path::copy_to(&resolved, base.add(at));
            core::ptr::write_volatile(exe_len_at, n as u16);
        }
        Err(_) => add_bits(flags, EXEC_EXE_UNRESOLVED),
    }
}

/// Resolves the task's working directory into the record at `at`, as `put_exe`.
#[inline(always)]
unsafe fn put_cwd(task: *const u8, at: *mut u8, len_at: *mut u16, flags: *mut u32) {
    match read_ptr(task, off!(task_fs)) {
        Ok(fs) => match path::resolve_path_struct(task, fs.wrapping_add(off!(fs_pwd))) {
            Ok(resolved) => {
                if resolved.truncated {
                    add_bits(flags, EXEC_CWD_TRUNCATED);
                }
                let n = path::copy_to(&resolved, at);
                core::ptr::write_volatile(len_at, n as u16);
            }
            Err(_) => add_bits(flags, EXEC_CWD_UNRESOLVED),
        },
        Err(_) => add_bits(flags, EXEC_CWD_UNRESOLVED),
    }
}

/// Sends the new program's environment block (`mm->env_start..env_end`, just copied onto its
/// stack by execve, so it cannot have been changed by the program yet).
#[inline(always)]
unsafe fn send_env(scratch: *mut EventScratch, mm: *const u8) {
    let base = (*scratch).bytes.as_mut_ptr();
    let event = base.cast::<EnvEvent>();
    fill_current_header(
        &raw mut (*event).header,
        EventKind::ProcessEnv,
        tracing_types_task(),
    );
    let start = read::<u64>(mm, off!(mm_env_start)).unwrap_or(0);
    let end = read::<u64>(mm, off!(mm_env_end)).unwrap_or(0);
    let total = end.saturating_sub(start);
    let mut flags = 0u32;
    let mut len = total as usize;
    if len > MAX_ENV_LEN - 1 {
        len = MAX_ENV_LEN - 1;
        flags |= ENV_TRUNCATED;
    }
    let len = len & (MAX_ENV_LEN - 1);
    let header_len = core::mem::size_of::<EnvEvent>();
    let mut kept = len;
    if start == 0
        || bpf_probe_read_user(base.add(header_len).cast(), len as u32, start as *const _) < 0
    {
        flags |= ENV_UNREADABLE;
        kept = 0;
    }
    (*event).header.flags = flags;
    (*event).env_len = kept as u32;
    (*event).env_total_len = total.min(u32::MAX as u64) as u32;
    submit(scratch, header_len + kept, EventKind::ProcessEnv);
}

/// Kernel contract: raw tracepoint `sched_process_fork(struct task_struct *parent, struct
/// task_struct *child)`, called after copy_process, so the child's ids and start time are set.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    if unsafe { try_fork(&ctx) }.is_err() {
        count_error(EventKind::ProcessFork);
    }
    0
}

unsafe fn try_fork(ctx: &RawTracePointContext) -> Result<(), i64> {
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if is_agent(parent_tgid) || !offsets_present() {
        return Ok(());
    }
    let parent: *const u8 = ctx.arg(0);
    let child: *const u8 = ctx.arg(1);
    let child_pid = read::<u32>(child, off!(task_pid))?;
    let child_tgid = read::<u32>(child, off!(task_tgid))?;
    if child_pid != child_tgid {
        return Ok(()); // a thread, not a process
    }
    crate::block::inherit(parent_tgid, child_tgid);
    let mut event = ForkEvent::default();
    fill_header(&raw mut event.header, EventKind::ProcessFork, child);
    // fill_header used the current (parent) thread for the ids: the record is about the child.
    event.header.tgid = child_tgid;
    event.header.pid = child_pid;
    // The child's parent here is its maker, the current process (`parent`), even when
    // `CLONE_PARENT` gave it its maker's parent: a step's process making a sibling under the
    // runner's Worker made it, and its job and step are the maker's.
    event.header.ppid = parent_tgid;
    event.header.start_ns = read::<u64>(child, off!(task_start_boottime)).unwrap_or(0);
    event.header.parent_start_ns = process_start_ns(parent);
    let real_parent = read_ptr(child, off!(task_real_parent)).unwrap_or(parent);
    if read::<u32>(real_parent, off!(task_tgid)).unwrap_or(parent_tgid) != parent_tgid {
        event.header.flags = FORK_AS_SIBLING;
    }
    // A process sharing its maker's descriptor table (`CLONE_FILES`): a kill at an open would
    // end the opener and leave the descriptor in the other's table.
    let files = read_ptr(child, off!(task_files)).unwrap_or(core::ptr::null());
    if !files.is_null() && read_ptr(parent, off!(task_files)).ok() == Some(files) {
        event.header.flags |=
            FORK_SHARES_FILES | crate::respond::to_descriptor_sharing(parent_tgid, true);
    }
    submit_fixed(&event, EventKind::ProcessFork);
    Ok(())
}

/// Kernel contract: `sched/sched_process_exit` fires in do_exit after `signal->live` was
/// decremented and `exit_code` set, for every thread; `live == 0` marks the last one.
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    if unsafe { try_exit() }.is_err() {
        count_error(EventKind::ProcessExit);
    }
    0
}

unsafe fn try_exit() -> Result<(), i64> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if is_agent(tgid) || !offsets_present() {
        return Ok(());
    }
    let task = current_task();
    let signal = read_ptr(task, off!(task_signal))?;
    let live = read::<i32>(signal, off!(signal_live))?;
    if live != 0 {
        return Ok(()); // other threads of the process still run
    }
    // A reused pid must not inherit block mode.
    let _ = crate::JOB_PROCS.remove(&tgid);
    let mut event = ExitEvent::default();
    fill_current_header(
        &raw mut event.header,
        EventKind::ProcessExit,
        tracing_types_task(),
    );
    event.exit_code = read::<u32>(task, off!(task_exit_code)).unwrap_or(0);
    submit_fixed(&event, EventKind::ProcessExit);
    Ok(())
}
