//! Opens, resolved to the file the kernel really opened, by one of three hook tiers the agent
//! picks at load (the best the kernel allows; the others are not attached):
//!
//! - **BPF-LSM** `file_open`: every open, whatever route made it (io_uring, 32-bit syscalls,
//!   `open_by_handle_at`, syscalls not invented yet), and it can refuse one (`-EPERM`) where
//!   the job's policy would kill: the process never gets the descriptor.
//! - **fentry** on `security_file_open`: the same sight, no refusal (kills as the tracepoints).
//! - **tracepoints**: `syscalls/sys_exit_{open,openat,openat2,creat,open_by_handle_at}`
//!   (record: `ret` at 16) and the raw tracepoint `io_uring_complete` for
//!   IORING_OP_OPENAT/OPENAT2. The returned descriptor is looked up in the task's files table.
//!   32-bit (compat) syscalls do not reach the per-syscall tracepoints.
//!
//! In each the kernel has already resolved relative paths, symlinks, `..` and dirfds.
//!
//! A build opens hundreds of thousands of files, so the cheap test comes first: the opened
//! dentry's own name and its parent's name are checked against the watch maps pushed by the
//! agent, and only a match pays for the full path walk and a ring-buffer record.

use aya_ebpf::{
    helpers::generated::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::{fentry, lsm, map, raw_tracepoint, tracepoint},
    maps::PerCpuArray,
    programs::{FEntryContext, LsmContext, RawTracePointContext, TracePointContext},
};
use monitor_common::{
    EventKind, FileOpenEvent, InodeKey, NameKey, IO_URING_LAYOUT_CQE_ARG2,
    IO_URING_LAYOUT_RES_ARG3, MATCH_ALL, MATCH_INODE, MATCH_PROC_OTHER, MATCH_SOURCE,
    MATCH_SUBTREE, OPEN_PATH_TRUNCATED, OPEN_PATH_UNRESOLVED, OPEN_VIA_FENTRY, OPEN_VIA_IO_URING,
    OPEN_VIA_LSM, PROC_SUPER_MAGIC, RESPONSE_KILLED, RESPONSE_KILL_FAILED, RESPONSE_REFUSED,
    SUBTREE_DEPTH, WATCH_READ, WATCH_WRITE,
};

use crate::{
    kernel::{
        add_bits, config, count_error, current_file_of_fd, current_task, current_tgid,
        event_scratch, fill_current_header, is_agent, off, offsets_present, opaque, read, read_ptr,
        submit, tracepoint_word, tracing_types_task,
    },
    path, respond, watch, WATCH_INODES, WATCH_INODE_BITS, WATCH_SOURCES, WATCH_SOURCES_ON,
    WATCH_SUBTREES, WATCH_SUBTREES_ON,
};

const FMODE_WRITE: u32 = 0x2;

/// The filter's findings about the open being judged (per CPU; see `kernel::add_bits`).
#[map]
static OPEN_FACTS: PerCpuArray<respond::OpenFacts> = PerCpuArray::with_max_entries(1, 0);
const EPERM: i32 = 1;
const IORING_OP_OPENAT: u8 = 18;
const IORING_OP_OPENAT2: u8 = 28;

#[tracepoint(category = "syscalls", name = "sys_exit_openat")]
pub fn sys_exit_open(ctx: TracePointContext) -> u32 {
    let ret = tracepoint_word(&ctx, 16) as i64;
    if ret >= 0 {
        if unsafe { try_open_fd(ret, 0) }.is_err() {
            count_error(EventKind::FileOpen);
        }
    }
    0
}

/// Kernel contract: `int security_file_open(struct file *file)` (LSM hook `file_open`, Linux
/// 5.7+ with `bpf` in the active LSM list), called from `do_dentry_open` for every open that
/// reaches a file (not `O_PATH`), in the opener's context, before the descriptor exists. The
/// program's last argument is the previous LSM's verdict: a refusal already made stands.
#[lsm(hook = "file_open")]
pub fn lsm_file_open(ctx: LsmContext) -> i32 {
    let earlier: i32 = ctx.arg(1);
    if earlier != 0 {
        return earlier;
    }
    let file: *const u8 = ctx.arg(0);
    match unsafe { try_open(file, -1, OPEN_VIA_LSM) } {
        Ok(response) if response & RESPONSE_REFUSED != 0 => -EPERM,
        Ok(_) => 0,
        Err(_) => {
            count_error(EventKind::FileOpen);
            0
        }
    }
}

/// Kernel contract: as `lsm_file_open`, at the entry of `security_file_open(struct file *)`,
/// where BPF-LSM is not in the kernel's LSM list but fentry is allowed (5.5+): every route,
/// no refusal (responses kill as at the tracepoints).
#[fentry(function = "security_file_open")]
pub fn fentry_file_open(ctx: FEntryContext) -> i32 {
    let file: *const u8 = ctx.arg(0);
    if unsafe { try_open(file, -1, OPEN_VIA_FENTRY) }.is_err() {
        count_error(EventKind::FileOpen);
    }
    0
}

/// Kernel contract: 5.x `io_uring_complete(void *ctx, void *req, u64 user_data, int res, unsigned
/// cflags)`; 6.x `io_uring_complete(void *ctx, void *req, struct io_uring_cqe *cqe)`. The agent
/// reads which one from BTF. `req` is a `struct io_kiocb` with a `u8 opcode`.
#[raw_tracepoint(tracepoint = "io_uring_complete")]
pub fn io_uring_complete(ctx: RawTracePointContext) -> i32 {
    if unsafe { try_io_uring(&ctx) }.is_err() {
        count_error(EventKind::FileOpen);
    }
    0
}

unsafe fn try_io_uring(ctx: &RawTracePointContext) -> Result<(), i64> {
    let req: *const u8 = ctx.arg(1);
    let opcode = read::<u8>(req, off!(io_kiocb_opcode))?;
    if opcode != IORING_OP_OPENAT && opcode != IORING_OP_OPENAT2 {
        return Ok(());
    }
    let res: i64 = match config().io_uring_layout {
        IO_URING_LAYOUT_RES_ARG3 => ctx.arg::<i32>(3) as i64,
        IO_URING_LAYOUT_CQE_ARG2 => {
            let cqe: *const u8 = ctx.arg(2);
            read::<i32>(cqe, off!(io_uring_cqe_res))? as i64
        }
        _ => return Ok(()),
    };
    // 0 is also what an open into a fixed-file slot returns: those are not resolved (documented).
    if res <= 0 {
        return Ok(());
    }
    try_open_fd(res, OPEN_VIA_IO_URING).map(|_| ())
}

/// An open that returned descriptor `fd` (the tracepoint tier).
unsafe fn try_open_fd(fd: i64, extra_flags: u32) -> Result<u32, i64> {
    let file = current_file_of_fd(fd)?;
    try_open(file, fd, extra_flags)
}

/// The `RESPONSE_*` bits of a record's flags.
const RESPONSE_BITS: u32 =
    RESPONSE_KILLED | RESPONSE_KILL_FAILED | RESPONSE_REFUSED | monitor_common::RESPONSE_WOULD_KILL;

/// Judges the opened `file` (`fd`: its descriptor, -1 before it has one) and sends its record
/// when it is watched; returns the response taken (`RESPONSE_*`). In the LSM tier a kill
/// response also refuses the open: the record says `RESPONSE_REFUSED`.
#[inline(always)]
unsafe fn try_open(file: *const u8, fd: i64, extra_flags: u32) -> Result<u32, i64> {
    // Whose open it is is asked only once the filter matched (below): most opens match
    // nothing, and each helper call is a measurable share of an open's cost.
    if !offsets_present() {
        return Ok(0);
    }
    let windows = OPEN_WINDOWS.get_ptr_mut(0).ok_or(-1i64)?;
    let (f_mode, dentry, inode) = file_fields(file, windows)?;
    let access = if f_mode & FMODE_WRITE != 0 {
        WATCH_WRITE
    } else {
        WATCH_READ
    };
    let f_path = file.wrapping_add(off!(file_f_path));
    let ino = read::<u64>(inode, off!(inode_i_ino)).unwrap_or(0);
    // The inode's own file system (see `inode_i_sb`), not the path's.
    let device = || {
        let sb = read_ptr(inode, off!(inode_i_sb)).unwrap_or(core::ptr::null());
        read::<u32>(sb, off!(sb_s_dev)).unwrap_or(0)
    };
    let mut dev = None;
    let facts = OPEN_FACTS.get_ptr_mut(0).ok_or(-1i64)?;
    let matched_at = &raw mut (*facts).matched;
    for field in [
        matched_at,
        &raw mut (*facts).proc_kind,
        &raw mut (*facts).proc_owner,
        &raw mut (*facts).inode_kind,
    ] {
        core::ptr::write_volatile(field, 0);
    }
    core::ptr::write_volatile(&raw mut (*facts).writes, (access == WATCH_WRITE) as u32);
    watch_match(dentry, access, facts, windows)?;
    if access == WATCH_WRITE {
        if let Ok(parent) = read_ptr(dentry, off!(dentry_d_parent)) {
            match_subtree(parent, matched_at);
        }
        match_source(inode, matched_at);
    }
    // The same file under another name: a bind mount, a hard link, a detached tree. The
    // inode number's bit in `WATCH_INODE_BITS` first: most opens stop there.
    if inode_bit_set(ino) {
        let identity = InodeKey {
            ino,
            dev: *dev.insert(device()),
            _pad0: 0,
        };
        if let Some(kind) = WATCH_INODES.get_ptr(&identity) {
            let kind = *kind;
            core::ptr::write_volatile(&raw mut (*facts).inode_kind, kind);
            if kind & access != 0 {
                add_bits(matched_at, MATCH_INODE);
            }
        }
    }
    let mut matched = core::ptr::read_volatile(matched_at);
    let open_all = config().open_all != 0;
    if matched == 0 && !open_all {
        return Ok(0);
    }
    // The agent's own opens (its /proc reads among them) are never judged nor reported.
    let tgid = current_tgid();
    if is_agent(tgid) {
        return Ok(0);
    }
    let mut response = if matched != 0 {
        respond::to_open(tgid, facts)
    } else {
        0
    };
    if extra_flags & OPEN_VIA_LSM != 0 && response & (RESPONSE_KILLED | RESPONSE_KILL_FAILED) != 0 {
        response |= RESPONSE_REFUSED;
    }
    if open_all {
        matched = MATCH_ALL | matched;
    }
    let dev = dev.unwrap_or_else(device);
    let task = current_task();

    let scratch = event_scratch().ok_or(-1i64)?;
    let base = (*scratch).bytes.as_mut_ptr();
    let event = base.cast::<FileOpenEvent>();
    fill_current_header(
        &raw mut (*event).header,
        EventKind::FileOpen,
        tracing_types_task(),
    );
    // The filter's outcome goes through map memory before the path walk and is read back
    // after it: held in registers, each combination of its bits is a constant of its own, and
    // the verifier walks the whole path resolution once for each (past 6.1's budget).
    core::ptr::write_volatile(&raw mut (*event).header.flags, extra_flags | response);
    core::ptr::write_volatile(&raw mut (*event).matched, matched);
    (*event).f_flags = read::<u32>(file, off!(file_f_flags)).unwrap_or(0);
    (*event).f_mode = f_mode;
    (*event).ino = ino;
    (*event).dev = dev;
    (*event).fd = fd as i32;
    (*event)._pad0 = 0;
    (*event).proc_owner = core::ptr::read_volatile(&raw const (*facts).proc_owner);
    (*event).generation = if off!(inode_i_generation) != 0 {
        read::<u32>(inode, off!(inode_i_generation)).unwrap_or(0)
    } else {
        0
    };
    let header_len = core::mem::size_of::<FileOpenEvent>();
    let mut path_flags = 0;
    let path_len = match path::resolve_path_struct(task, f_path) {
        Ok(resolved) => {
            if resolved.truncated {
                path_flags = OPEN_PATH_TRUNCATED;
            }
            path::copy_to(&resolved, base.add(header_len))
        }
        Err(_) => {
            path_flags = OPEN_PATH_UNRESOLVED;
            0
        }
    };
    let flags = core::ptr::read_volatile(&raw const (*event).header.flags) | path_flags;
    (*event).header.flags = flags;
    (*event).path_len = path_len as u16;
    submit(scratch, header_len + path_len, EventKind::FileOpen);
    Ok(flags & RESPONSE_BITS)
}

/// The watch bits of an opened dentry: its own name and its parent directory's name, and for
/// `/proc/<pid>/{mem,environ,maps}` (or `/proc/<pid>/task/<tid>/...`) whether the process is
/// another one; `facts` gets the /proc file's kind and owner.
#[inline(always)]
unsafe fn watch_match(
    dentry: *const u8,
    access: u32,
    facts: *mut respond::OpenFacts,
    windows: *mut OpenWindows,
) -> Result<(), i64> {
    let matched = &raw mut (*facts).matched;
    let proc_kind_at = &raw mut (*facts).proc_kind;
    let own = dentry_window(dentry, (*windows).dentry.as_mut_ptr().cast())?;
    watch::match_name_with(own.name, own.len, own.pairs, access, matched, proc_kind_at)?;

    // The parent directory's name (~/.ssh/*, .github/workflows/*, ...).
    let parent = own.parent;
    let up = dentry_window(parent, (*windows).parent.as_mut_ptr().cast())?;
    let (parent_len, parent_name) = (up.len, up.name);
    watch::match_parent_with(parent_name, parent_len, up.pairs, access, matched)?;

    // /proc/<pid>/{mem,environ,maps} of another process: always sent, whatever the access.
    // Whose it is, by identity where the layout allows: a /proc directory's name is a pid in
    // the pid namespace of that /proc (a container's: its own process may be /proc/7 there).
    if core::ptr::read_volatile(proc_kind_at) != 0 {
        let sb = read_ptr(dentry, off!(dentry_d_sb))?;
        let magic = read::<u64>(sb, off!(sb_s_magic))? as u32;
        if magic == PROC_SUPER_MAGIC {
            let pid_tgid = bpf_get_current_pid_tgid();
            let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
            let process_dir = proc_dir_process(parent);
            let owner = match process_dir.and_then(|dir| proc_dir_host_pid(dir)) {
                Some(host) => host,
                None => {
                    // The process directory's name: a pid of that /proc's namespace.
                    let (len, name) = match process_dir {
                        Some(dir) if dir != parent => dentry_name(dir)?,
                        _ => (parent_len, parent_name),
                    };
                    let key = &raw mut (*watch::scratch()?).name.data;
                    watch::load_name(name, len, key);
                    let named = parse_pid(&*key);
                    if named == tgid || named == tid {
                        0
                    } else {
                        named
                    }
                }
            };
            // By `numbers[0].nr` (a task that has just exited), a thread's own `/proc/<tid>` is
            // the thread's number: its own too.
            if owner != 0 && owner != tgid && owner != tid {
                add_bits(matched, MATCH_PROC_OTHER);
                core::ptr::write_volatile(&raw mut (*facts).proc_owner, owner);
            }
        }
    }
    Ok(())
}

/// The process directory a /proc file's directory `dir` stands for: `dir` itself
/// (`/proc/<pid>`), or for a thread's (`/proc/<pid>/task/<tid>`) its process's.
#[inline(always)]
unsafe fn proc_dir_process(dir: *const u8) -> Option<*const u8> {
    let task_dir = read_ptr(dir, off!(dentry_d_parent)).ok()?;
    let (len, name) = dentry_name(task_dir).ok()?;
    if len == 4 && read::<u32>(name, 0).ok()? == u32::from_le_bytes(*b"task") {
        return read_ptr(task_dir, off!(dentry_d_parent)).ok();
    }
    Some(dir)
}

/// The pid, in the initial pid namespace (the agent's: what records carry), of the process a
/// `/proc/<pid>` directory is: its inode is a `proc_inode` whose `pid` is the task's
/// `struct pid`; the task it stands for (`tasks[PIDTYPE_PID].first`, the task's
/// `pid_links[PIDTYPE_PID]`) gives its process (`tgid`: `/proc/<tid>` of a thread is its
/// process's), else `numbers[0].nr`, its number at level 0 (a task that has just exited, or no
/// such layout). None without the layout (the directory's name is used then) or for a
/// directory that is no process's.
/// Kernel contract: `proc_inode.vfs_inode` embedded (container_of), `proc_inode.pid`,
/// `pid.numbers[0]`, `upid.nr`, `pid.tasks[0].first`, `task_struct.pid_links[0]` and `tgid`
/// (BTF offsets).
#[inline(always)]
unsafe fn proc_dir_host_pid(dir: *const u8) -> Option<u32> {
    if off!(pid_numbers) == 0 {
        return None;
    }
    let inode = read_ptr(dir, off!(dentry_d_inode)).ok()?;
    let proc_inode = inode.wrapping_sub(off!(proc_inode_vfs_inode));
    let pid = read_ptr(proc_inode, off!(proc_inode_pid)).ok()?;
    if off!(pid_tasks) != 0 {
        if let Ok(link) = read_ptr(pid, off!(pid_tasks)) {
            if !link.is_null() {
                let task = link.wrapping_sub(off!(task_pid_links));
                if let Ok(tgid @ 1..) = read::<u32>(task, off!(task_tgid)) {
                    return Some(tgid);
                }
            }
        }
    }
    match read::<u32>(pid, off!(pid_numbers) + off!(upid_nr)).ok()? {
        0 => None,
        nr => Some(nr),
    }
}

/// Adds `MATCH_SUBTREE` to `*matched` (map memory) when `dir` or one of its ancestors, up to
/// `SUBTREE_DEPTH` of them, is a watched directory (`WATCH_SUBTREES`, by identity). The walk
/// follows `d_parent`, which stays in the directory's file system and is the same through any
/// mount of it (a bind mount of the runner's directory reaches the same dentries). Kernel
/// contract: `dentry->d_parent`, `d_inode`, `inode->i_ino`, `i_sb->s_dev` (BTF offsets); a
/// file system's root is its own parent.
#[inline(always)]
pub unsafe fn match_subtree(dir: *const u8, matched: *mut u32) {
    match WATCH_SUBTREES_ON.get(0) {
        Some(on) if *on != 0 => {}
        _ => return,
    }
    let mut dentry = dir;
    let mut depth = 0;
    while depth < SUBTREE_DEPTH {
        let Ok(inode) = read_ptr(dentry, off!(dentry_d_inode)) else {
            return;
        };
        let ino = read::<u64>(inode, off!(inode_i_ino)).unwrap_or(0);
        if ino != 0 && inode_bit_set(ino) {
            let sb = read_ptr(inode, off!(inode_i_sb)).unwrap_or(core::ptr::null());
            let identity = InodeKey {
                ino,
                dev: read::<u32>(sb, off!(sb_s_dev)).unwrap_or(0),
                _pad0: 0,
            };
            if WATCH_SUBTREES.get_ptr(&identity).is_some() {
                add_bits(matched, MATCH_SUBTREE);
                return;
            }
        }
        let Ok(parent) = read_ptr(dentry, off!(dentry_d_parent)) else {
            return;
        };
        if parent == dentry {
            return;
        }
        dentry = parent;
        depth += 1;
    }
}

/// Adds `MATCH_SOURCE` to `*matched` (map memory) when `inode` is one of the jobs' tracked
/// source files (`WATCH_SOURCES`). Only writes ask, and only while some job's sources are
/// watched. Kernel contract: `inode->i_ino`, `i_sb->s_dev` (BTF offsets).
#[inline(always)]
pub unsafe fn match_source(inode: *const u8, matched: *mut u32) {
    match WATCH_SOURCES_ON.get(0) {
        Some(on) if *on != 0 => {}
        _ => return,
    }
    if inode.is_null() {
        return;
    }
    let Ok(ino) = read::<u64>(inode, off!(inode_i_ino)) else {
        return;
    };
    let sb = read_ptr(inode, off!(inode_i_sb)).unwrap_or(core::ptr::null());
    let identity = InodeKey {
        ino,
        dev: read::<u32>(sb, off!(sb_s_dev)).unwrap_or(0),
        _pad0: 0,
    };
    if WATCH_SOURCES.get_ptr(&identity).is_some() {
        add_bits(matched, MATCH_SOURCE);
    }
}

/// Whether some watched identity has this inode number's low 16 bits (`WATCH_INODE_BITS`).
#[inline(always)]
fn inode_bit_set(ino: u64) -> bool {
    let low = (ino & 0xffff) as u32;
    match WATCH_INODE_BITS.get(low >> 5) {
        Some(bits) => (*bits >> (low & 31)) & 1 != 0,
        None => true,
    }
}

/// Per-CPU room for the reads every open makes (`file_fields`, `dentry_window`): one read
/// each of a stretch of `struct file` and of the opened dentry and its parent, where the fields
/// sit together, instead of one helper call per field. Every open of every process pays for
/// these reads, so their number is the filter's cost.
#[repr(C)]
pub struct OpenWindows {
    file: [u64; FILE_WINDOW / 8],
    dentry: [u64; DENTRY_WINDOW / 8],
    parent: [u64; DENTRY_WINDOW / 8],
}
const FILE_WINDOW: usize = 96;
const DENTRY_WINDOW: usize = 64;
#[map]
static OPEN_WINDOWS: PerCpuArray<OpenWindows> = PerCpuArray::with_max_entries(1, 0);

/// An opened file's `f_mode`, `f_path.dentry` and `f_inode` (null when unreadable): one read
/// where the three lie within `FILE_WINDOW` bytes (every kernel this agent knows: 5.x keeps
/// them within 56 bytes, 6.x within 72), else three. The offsets are constants to the
/// verifier (read-only data), so it checks only the branch this kernel takes, with constant
/// indexes into the window.
#[inline(always)]
unsafe fn file_fields(
    file: *const u8,
    windows: *mut OpenWindows,
) -> Result<(u32, *const u8, *const u8), i64> {
    let mode_at = off!(file_f_mode);
    let dentry_at = off!(file_f_path) + off!(path_dentry);
    let inode_at = off!(file_f_inode);
    let low = mode_at.min(dentry_at).min(inode_at) & !7;
    let high = (mode_at + 4).max(dentry_at + 8).max(inode_at + 8);
    if high - low <= FILE_WINDOW && mode_at % 4 == 0 && dentry_at % 8 == 0 && inode_at % 8 == 0 {
        let window = (*windows).file.as_mut_ptr().cast::<u8>();
        let ret = bpf_probe_read_kernel(
            window.cast(),
            FILE_WINDOW as u32,
            file.wrapping_add(low).cast(),
        );
        if ret < 0 {
            return Err(ret);
        }
        return Ok((
            *window.add(mode_at - low).cast::<u32>(),
            *window.add(dentry_at - low).cast::<*const u8>(),
            *window.add(inode_at - low).cast::<*const u8>(),
        ));
    }
    let f_mode = read::<u32>(file, mode_at)?;
    let dentry = read_ptr(file, dentry_at)?;
    let inode = read_ptr(file, inode_at).unwrap_or(core::ptr::null());
    Ok((f_mode, dentry, inode))
}

/// What the open filter needs of a dentry.
struct DentryFacts {
    parent: *const u8,
    len: u32,
    name: *const u8,
    /// The name's first and last two bytes (`watch::first_pair`, `watch::last_pair`), when
    /// they came with the same read (a short name kept in the dentry itself).
    pairs: Option<(u32, u32)>,
}

/// A dentry's parent and name, and a short name's first and last bytes, from one read of
/// `DENTRY_WINDOW` bytes from `d_parent` on: `d_name` follows `d_parent` in every kernel since
/// 2.6, and the in-place name (`d_iname`/`d_shortname`) comes a little after. Names of up to 16
/// bytes kept in place (most file and directory names) need no other read before the pair
/// filter; others, and other layouts, are read as before (`dentry_parent_and_name`).
#[inline(always)]
unsafe fn dentry_window(dentry: *const u8, window: *mut u8) -> Result<DentryFacts, i64> {
    let base = off!(dentry_d_parent);
    let inline_at = off!(dentry_d_iname);
    if off!(dentry_d_name) == base + 8
        && off!(qstr_len) == 4
        && off!(qstr_name) == 8
        && inline_at >= base + 24
        && inline_at + 16 <= base + DENTRY_WINDOW
    {
        let ret = bpf_probe_read_kernel(
            window.cast(),
            DENTRY_WINDOW as u32,
            dentry.wrapping_add(base).cast(),
        );
        if ret < 0 {
            return Err(ret);
        }
        let words = window.cast::<u64>();
        let parent = *words as *const u8;
        let len = (*words.add(1) >> 32) as u32;
        let name = *words.add(2) as *const u8;
        let mut pairs = None;
        if name as u64 == dentry as u64 + inline_at as u64 && len >= 1 && len <= 16 {
            let bytes = window.add(inline_at - base);
            let first_two = *bytes as u32 | (*bytes.add(1) as u32) << 8;
            let first = if len < 2 { first_two & 0xff } else { first_two };
            // The index's mask must reach the verifier (see `kernel::opaque`).
            let last_at = (opaque(len).wrapping_sub(1) as usize) & 15;
            let before_at = (opaque(len).wrapping_sub(2) as usize) & 15;
            let last = if len < 2 {
                *bytes as u32
            } else {
                *bytes.add(last_at) as u32 | (*bytes.add(before_at) as u32) << 8
            };
            pairs = Some((first, last));
        }
        return Ok(DentryFacts {
            parent,
            len,
            name,
            pairs,
        });
    }
    let (parent, len, name) = dentry_parent_and_name(dentry)?;
    Ok(DentryFacts {
        parent,
        len,
        name,
        pairs: None,
    })
}

/// A dentry's name: its length and where its bytes are.
///
/// Every open pays for this (twice: the file and its directory), so where `struct qstr` has
/// its usual layout (`len` in the high half of the first word, `name` in the second: every
/// kernel this agent loads on) both come from one read of 16 bytes, not two: each read is a
/// helper call. The offsets are constants to the verifier, which walks only the branch taken.
#[inline(always)]
pub unsafe fn dentry_name(dentry: *const u8) -> Result<(u32, *const u8), i64> {
    let qstr = dentry.wrapping_add(off!(dentry_d_name));
    if off!(qstr_len) == 4 && off!(qstr_name) == 8 {
        let words = read::<[u64; 2]>(qstr, 0)?;
        return Ok(((words[0] >> 32) as u32, words[1] as *const u8));
    }
    let len = read::<u32>(qstr, off!(qstr_len))?;
    let name = read_ptr(qstr, off!(qstr_name))?;
    Ok((len, name))
}

/// A dentry's parent and its own name (length, bytes): one read of 24 bytes where `d_name`
/// directly follows `d_parent` (as in every kernel since 2.6), else three.
#[inline(always)]
pub unsafe fn dentry_parent_and_name(
    dentry: *const u8,
) -> Result<(*const u8, u32, *const u8), i64> {
    if off!(dentry_d_name) == off!(dentry_d_parent) + 8
        && off!(qstr_len) == 4
        && off!(qstr_name) == 8
    {
        let words = read::<[u64; 3]>(dentry, off!(dentry_d_parent))?;
        return Ok((
            words[0] as *const u8,
            (words[1] >> 32) as u32,
            words[2] as *const u8,
        ));
    }
    let parent = read_ptr(dentry, off!(dentry_d_parent))?;
    let (len, name) = dentry_name(dentry)?;
    Ok((parent, len, name))
}

/// The decimal number in a /proc directory name, or 0 when it is not one.
#[inline(always)]
fn parse_pid(key: &NameKey) -> u32 {
    let mut value = 0u32;
    let mut i = 0;
    while i < 10 {
        let c = key.bytes[i];
        if c == 0 {
            break;
        }
        if !c.is_ascii_digit() {
            return 0;
        }
        value = value.wrapping_mul(10).wrapping_add((c - b'0') as u32);
        i += 1;
    }
    value
}
