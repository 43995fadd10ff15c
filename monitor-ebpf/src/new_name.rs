//! Names made for files without opening them: rename, link and symlink; and names removed
//! (unlink: a system log deleted).
//!
//! A write that lands by `mv tmp ~/.bashrc`, `ln`, `sed -i` (a temporary file renamed over the
//! original), git's lock files or an editor's save never opens the final name for writing, so the
//! open filter (open.rs) cannot see it. These hooks see the name the process gave and test it
//! against the same watch maps.
//!
//! Hooks (kernel contract: the `syscalls` tracepoints, stable formats since 4.x; the argument
//! offsets below are those of `sys_enter_*/format`, checked by the agent before attaching):
//! - `sys_enter_{rename,renameat,renameat2,link,linkat,symlink,symlinkat,unlink,unlinkat}` keep
//!   the arguments
//!   per thread (`PENDING_NAMES`, LRU);
//! - `sys_exit_*` of the same syscalls: on success, read the names from the process's memory (by
//!   then the kernel has copied them, so their pages are present), test the new name's last
//!   component and its directory's name (from the string, or the directory file descriptor's
//!   dentry when the name has a single component), and for rename and link the old name too
//!   (a credential moved or linked away), and send a `FileNameEvent` on a match. The directory a
//!   relative name is relative to is resolved like an open's path.
//!
//! io_uring's RENAMEAT/LINKAT/SYMLINKAT are read at submission (`io_uring_submit_req`), from the
//! kernel's own copies of the names. Not seen: the 32-bit entry (the syscall tracepoints skip
//! compat calls). The syscalls' names are read after the call: a second thread rewriting the
//! buffer in between can hide a name (as with every syscall-argument hook).
//!
//! Where the kernel allows it, the agent attaches the security hooks instead (the tier chosen
//! at load, as for opens): BPF-LSM `path_rename`/`path_link`/`path_symlink`, else fentry on
//! `security_path_*`. They are called for every route (syscalls of either width, io_uring, any
//! added later) with the names already looked up: the kernel's own dentries, which no second
//! thread can rewrite and a bind mount does not rename. They run before the filesystem acts: a
//! change refused later (EXDEV, ENOTEMPTY) is still reported.

use aya_ebpf::{
    helpers::generated::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel, bpf_probe_read_kernel_str,
        bpf_probe_read_user_str,
    },
    macros::{map, raw_tracepoint, tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::{FEntryContext, LsmContext, RawTracePointContext, TracePointContext},
};
use monitor_common::{
    EventKind, FileNameEvent, MATCH_ALL, MATCH_FROM, MATCH_PARENT_DIR, MAX_PATH_LEN,
    NAME_DIR_FOR_FROM, NAME_DIR_FOR_NEW, NAME_DIR_TRUNCATED, NAME_DIR_UNRESOLVED, NAME_OP_LINK,
    NAME_OP_RENAME, NAME_OP_SYMLINK, NAME_OP_UNLINK, NAME_TRUNCATED, NAME_VIA_FENTRY,
    NAME_VIA_IO_URING, NAME_VIA_LSM, WATCH_READ, WATCH_WRITE,
};

use crate::{
    kernel::{
        add_bits, config, count_error, current_task, event_scratch, file_of_fd, fill_header,
        is_agent, off, offsets_present, opaque, read, read_ptr, submit,
    },
    open::dentry_name,
    path, watch,
};

const AT_FDCWD: i64 = -100;
const POS_MASK: usize = MAX_PATH_LEN - 1;

/// A rename, link or symlink between its entry and exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingName {
    op: u32,
    _pad0: u32,
    old_dfd: i64,
    new_dfd: i64,
    /// User pointers; `old` is the symlink's target for symlink.
    old: u64,
    new: u64,
}
/// Keyed by thread id. LRU, so a thread killed inside the call cannot fill it.
#[map]
static PENDING_NAMES: LruHashMap<u32, PendingName> = LruHashMap::with_max_entries(8192, 0);

/// Both names, read from the process at exit.
#[repr(C)]
pub struct NameScratch {
    new: [u8; MAX_PATH_LEN],
    old: [u8; MAX_PATH_LEN],
    /// The scan position of `name_match` (see `component_start`).
    cursor: u32,
    /// An io_uring request's names (syscalls' come from `PENDING_NAMES`).
    pending: PendingName,
    /// The record's flags, the names' lengths and what they matched (`MATCH_*`), kept here
    /// and not in registers (see `kernel::add_bits`).
    flags: u32,
    new_len: u32,
    old_len: u32,
    matched: u32,
    /// Whether the old name matched.
    from_matched: u32,
}
#[map]
static NAME_SCRATCH: PerCpuArray<NameScratch> = PerCpuArray::with_max_entries(1, 0);

/// Where a syscall's arguments sit in its `sys_enter_*` record (offsets from `format`): the
/// old name (or symlink target) and the new one, each with its directory descriptor when the
/// syscall takes one (else AT_FDCWD).
struct Args {
    old_dfd: Option<usize>,
    old: usize,
    new_dfd: Option<usize>,
    new: usize,
}
/// rename, link, symlink.
const PLAIN: Args = Args {
    old_dfd: None,
    old: 16,
    new_dfd: None,
    new: 24,
};
/// renameat, renameat2, linkat.
const AT: Args = Args {
    old_dfd: Some(16),
    old: 24,
    new_dfd: Some(32),
    new: 40,
};
/// unlink: one name, kept as the old one (the new one is not read).
const UNLINK: Args = Args {
    old_dfd: None,
    old: 16,
    new_dfd: None,
    new: 16,
};
/// unlinkat (its flags, at 32, say whether a directory is removed: either way a name goes).
const UNLINKAT: Args = Args {
    old_dfd: Some(16),
    old: 24,
    new_dfd: Some(16),
    new: 24,
};
/// symlinkat (the target is not a path of the caller's).
const SYMLINKAT: Args = Args {
    old_dfd: None,
    old: 16,
    new_dfd: Some(24),
    new: 32,
};

#[inline(always)]
fn arg<T: Copy + Default>(ctx: &TracePointContext, offset: usize) -> T {
    unsafe { ctx.read_at::<T>(offset) }.unwrap_or_default()
}

/// Keeps the call's arguments for its exit.
#[inline(always)]
fn keep(ctx: &TracePointContext, op: u32, args: Args) -> u32 {
    let pid_tgid = unsafe { bpf_get_current_pid_tgid() };
    if is_agent((pid_tgid >> 32) as u32) {
        return 0;
    }
    // The dfd fields are `int` widened to 8 bytes.
    let dfd = |at: Option<usize>| at.map_or(AT_FDCWD, |at| arg::<i64>(ctx, at) as i32 as i64);
    let pending = PendingName {
        op,
        _pad0: 0,
        old_dfd: dfd(args.old_dfd),
        new_dfd: dfd(args.new_dfd),
        old: arg(ctx, args.old),
        new: arg(ctx, args.new),
    };
    let _ = PENDING_NAMES.insert(&(pid_tgid as u32), &pending, 0);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_rename")]
pub fn sys_enter_rename(ctx: TracePointContext) -> u32 {
    keep(&ctx, NAME_OP_RENAME, PLAIN)
}

/// `renameat` and `renameat2` (same leading arguments).
#[tracepoint(category = "syscalls", name = "sys_enter_renameat")]
pub fn sys_enter_renameat(ctx: TracePointContext) -> u32 {
    keep(&ctx, NAME_OP_RENAME, AT)
}

#[tracepoint(category = "syscalls", name = "sys_enter_link")]
pub fn sys_enter_link(ctx: TracePointContext) -> u32 {
    keep(&ctx, NAME_OP_LINK, PLAIN)
}

#[tracepoint(category = "syscalls", name = "sys_enter_linkat")]
pub fn sys_enter_linkat(ctx: TracePointContext) -> u32 {
    keep(&ctx, NAME_OP_LINK, AT)
}

#[tracepoint(category = "syscalls", name = "sys_enter_symlink")]
pub fn sys_enter_symlink(ctx: TracePointContext) -> u32 {
    keep(&ctx, NAME_OP_SYMLINK, PLAIN)
}

#[tracepoint(category = "syscalls", name = "sys_enter_symlinkat")]
pub fn sys_enter_symlinkat(ctx: TracePointContext) -> u32 {
    keep(&ctx, NAME_OP_SYMLINK, SYMLINKAT)
}

/// A name removed: a system log deleted is gone as surely as one truncated (which the open
/// filter sees); the removed name is tested as a moved one is (read or write watch).
#[tracepoint(category = "syscalls", name = "sys_enter_unlink")]
pub fn sys_enter_unlink(ctx: TracePointContext) -> u32 {
    keep(&ctx, NAME_OP_UNLINK, UNLINK)
}

#[tracepoint(category = "syscalls", name = "sys_enter_unlinkat")]
pub fn sys_enter_unlinkat(ctx: TracePointContext) -> u32 {
    keep(&ctx, NAME_OP_UNLINK, UNLINKAT)
}

/// Attached to the `sys_exit_*` of every syscall above.
#[tracepoint(category = "syscalls", name = "sys_exit_renameat2")]
pub fn sys_exit_new_name(ctx: TracePointContext) -> u32 {
    let tid = unsafe { bpf_get_current_pid_tgid() } as u32;
    let Some(pending) = (unsafe { PENDING_NAMES.get(&tid) }).copied() else {
        return 0;
    };
    let _ = PENDING_NAMES.remove(&tid);
    let ret = arg::<i64>(&ctx, 16);
    if ret == 0 && unsafe { try_new_name(&pending, Strings::User, 0) }.is_err() {
        count_error(EventKind::FileName);
    }
    0
}

const IORING_OP_RENAMEAT: u8 = 35;
const IORING_OP_UNLINKAT: u8 = 36;
const IORING_OP_SYMLINKAT: u8 = 38;
const IORING_OP_LINKAT: u8 = 39;

/// io_uring's rename, link, symlink and unlink, when submitted. Kernel contract: 5.19+
/// `io_uring_submit_req(struct io_kiocb *req)`, fired after the request was prepared: its
/// `cmd` holds a `struct io_rename` / `struct io_link` whose `oldpath`/`newpath` are the kernel's
/// own copies of the names (`struct filename`), so no second thread can rewrite them. Whether
/// the request then succeeds is not known here (`NAME_VIA_IO_URING`).
#[raw_tracepoint(tracepoint = "io_uring_submit_req")]
pub fn io_uring_submit_req(ctx: RawTracePointContext) -> i32 {
    if config().io_uring_names == 0 {
        return 0;
    }
    let tgid = (unsafe { bpf_get_current_pid_tgid() } >> 32) as u32;
    if is_agent(tgid) {
        return 0;
    }
    if unsafe { try_io_uring_name(ctx.arg(0)) }.is_err() {
        count_error(EventKind::FileName);
    }
    0
}

unsafe fn try_io_uring_name(req: *const u8) -> Result<(), i64> {
    let op = match read::<u8>(req, off!(io_kiocb_opcode))? {
        IORING_OP_RENAMEAT => NAME_OP_RENAME,
        IORING_OP_LINKAT => NAME_OP_LINK,
        IORING_OP_SYMLINKAT => NAME_OP_SYMLINK,
        IORING_OP_UNLINKAT => NAME_OP_UNLINK,
        _ => return Ok(()),
    };
    let cmd = req.wrapping_add(off!(io_kiocb_cmd));
    // In map memory, the operation written volatile: as a constant on the stack each of the
    // four would be walked through the whole judgement on its own (see `add_bits`).
    let names = NAME_SCRATCH.get_ptr_mut(0).ok_or(-1i64)?;
    let pending = &raw mut (*names).pending;
    core::ptr::write_volatile(&raw mut (*pending).op, op);
    (*pending)._pad0 = 0;
    if op == NAME_OP_UNLINK {
        // `struct io_unlink`: one name, kept as the old one (as the syscalls' is).
        let dfd = read::<i32>(cmd, off!(io_unlink_dfd))? as i64;
        let filename = read_ptr(cmd, off!(io_unlink_filename))?;
        let name = read_ptr(filename, off!(filename_name))? as u64;
        (*pending).old_dfd = dfd;
        (*pending).new_dfd = dfd;
        (*pending).old = name;
        (*pending).new = name;
    } else {
        let oldpath = read_ptr(cmd, off!(io_names_oldpath))?;
        let newpath = read_ptr(cmd, off!(io_names_newpath))?;
        (*pending).old_dfd = read::<i32>(cmd, off!(io_names_old_dfd))? as i64;
        (*pending).new_dfd = read::<i32>(cmd, off!(io_names_new_dfd))? as i64;
        (*pending).old = read_ptr(oldpath, off!(filename_name))? as u64;
        (*pending).new = read_ptr(newpath, off!(filename_name))? as u64;
    }
    try_new_name(&*pending, Strings::Kernel, NAME_VIA_IO_URING)
}

/// Where a request's names are: in the process's memory (syscalls), or the kernel's copies
/// (io_uring).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Strings {
    User,
    Kernel,
}

#[inline(always)]
unsafe fn read_str(dst: *mut u8, src: u64, from: Strings) -> i64 {
    match from {
        Strings::User => bpf_probe_read_user_str(dst.cast(), MAX_PATH_LEN as u32, src as *const _),
        Strings::Kernel => {
            bpf_probe_read_kernel_str(dst.cast(), MAX_PATH_LEN as u32, src as *const _)
        }
    }
}

/// Byte `i` of a name in map memory. The index is `opaque`: else LLVM folds the `- 1` of
/// `byte(s, at - 1)` into the load's offset after the mask, and 6.1's verifier, which does not
/// learn `at >= 1` from `at != 0`, refuses the access as reaching before the buffer.
#[inline(always)]
unsafe fn byte(s: *const u8, i: u32) -> u8 {
    *s.add(opaque(i) as usize & POS_MASK)
}

/// The dentry of the directory `dfd` names for the current task (its cwd for AT_FDCWD).
#[inline(always)]
unsafe fn dir_dentry(task: *const u8, dfd: i64) -> Result<*const u8, i64> {
    if dfd == AT_FDCWD {
        let fs = read_ptr(task, off!(task_fs))?;
        read_ptr(fs, off!(fs_pwd) + off!(path_dentry))
    } else {
        let file = file_of_fd(task, dfd)?;
        read_ptr(file, off!(file_f_path) + off!(path_dentry))
    }
}

/// Scans `s` backwards from `from` while the byte before is not '/', at most 256 bytes; returns
/// where it stopped. The position lives in map memory (`cursor`, re-read volatile): with it in a
/// register every possible stopping point would be a state of its own for the verifier, and the
/// program after the loop would be walked once for each.
#[inline(always)]
unsafe fn component_start(s: *const u8, from: u32, cursor: *mut u32) -> u32 {
    core::ptr::write_volatile(cursor, from);
    for _ in 0..256 {
        let at = core::ptr::read_volatile(cursor);
        if at == 0 || byte(s, at - 1) == b'/' {
            break;
        }
        core::ptr::write_volatile(cursor, at - 1);
    }
    core::ptr::read_volatile(cursor) & POS_MASK as u32
}

/// `len` without its trailing slashes (`dir/name/` names `dir/name`), through map memory.
#[inline(always)]
unsafe fn without_trailing_slashes(s: *const u8, len: u32, cursor: *mut u32) -> u32 {
    core::ptr::write_volatile(cursor, len);
    for _ in 0..4 {
        let at = core::ptr::read_volatile(cursor);
        if at > 1 && byte(s, at - 1) == b'/' {
            core::ptr::write_volatile(cursor, at - 1);
        }
    }
    core::ptr::read_volatile(cursor) & POS_MASK as u32
}

/// Adds the watch bits of the name `s` (`len` bytes, relative to `dfd`) for `access` to
/// `*matched` (map memory, see `kernel::add_bits`): its last component, and its
/// directory's name. A name the filter cannot take apart (a component over 255 bytes, a `..`
/// directory) passes: userspace decides on the whole path.
#[inline(always)]
unsafe fn name_match(
    task: *const u8,
    s: *const u8,
    len: u32,
    dfd: i64,
    access: u32,
    cursor: *mut u32,
    matched: *mut u32,
) -> Result<(), i64> {
    let end = without_trailing_slashes(s, len, cursor);
    let start = component_start(s, end, cursor);
    if (start > 0 && byte(s, start - 1) != b'/') || start > end {
        add_bits(matched, MATCH_ALL);
        return Ok(());
    }
    let base_len = (end - start) & 255;
    let mut no_proc_kind = 0u32;
    watch::match_name(
        s.add(start as usize),
        base_len,
        access,
        matched,
        &raw mut no_proc_kind,
    )?;

    if start == 0 {
        let (plen, pname) = dentry_name(dir_dentry(task, dfd)?)?;
        return watch::match_parent(pname, plen, access, matched);
    }
    // The component before the last: `start - 1` is its '/'.
    let pend = without_trailing_slashes(s, start - 1, cursor);
    let pstart = component_start(s, pend, cursor);
    if (pstart > 0 && byte(s, pstart - 1) != b'/') || pstart > pend {
        add_bits(matched, MATCH_PARENT_DIR);
        return Ok(());
    }
    let plen = (pend - pstart) & 255;
    let dot = plen == 1 && byte(s, pstart) == b'.';
    let dot_dot = plen == 2 && byte(s, pstart) == b'.' && byte(s, pstart + 1) == b'.';
    if dot && pstart == 0 {
        // `./name`: the directory is dfd's.
        let (dlen, dname) = dentry_name(dir_dentry(task, dfd)?)?;
        watch::match_parent(dname, dlen, access, matched)
    } else if dot || dot_dot {
        add_bits(matched, MATCH_PARENT_DIR);
        Ok(())
    } else {
        watch::match_parent(s.add(pstart as usize), plen, access, matched)
    }
}

unsafe fn try_new_name(pending: &PendingName, from: Strings, via: u32) -> Result<(), i64> {
    if !offsets_present() {
        return Ok(());
    }
    let task = current_task();
    let names = NAME_SCRATCH.get_ptr_mut(0).ok_or(-1i64)?;
    let new = (*names).new.as_mut_ptr();
    let old = (*names).old.as_mut_ptr();
    let cursor = &raw mut (*names).cursor;
    // Flags, lengths and match bits through map memory (see `add_bits`): the directory's path
    // walk below is then walked once, not once per combination of what came before.
    let flags = &raw mut (*names).flags;
    let new_len_at = &raw mut (*names).new_len;
    let old_len_at = &raw mut (*names).old_len;
    let matched = &raw mut (*names).matched;
    let from_matched = &raw mut (*names).from_matched;
    for at in [flags, new_len_at, old_len_at, matched, from_matched] {
        core::ptr::write_volatile(at, 0);
    }
    add_bits(flags, via);

    // An unlink has no new name: only the removed one is judged.
    if pending.op != NAME_OP_UNLINK {
        let new_read = read_str(new, pending.new, from);
        if new_read <= 1 {
            add_bits(flags, NAME_TRUNCATED); // unreadable: fail closed
            add_bits(matched, MATCH_ALL);
        } else {
            let new_len = (new_read - 1) as u32;
            core::ptr::write_volatile(new_len_at, new_len);
            if new_len as usize >= MAX_PATH_LEN - 1 {
                add_bits(flags, NAME_TRUNCATED);
            }
            name_match(
                task,
                new,
                new_len,
                pending.new_dfd,
                WATCH_WRITE,
                cursor,
                matched,
            )?;
        }
    }

    let old_read = read_str(old, pending.old, from);
    if old_read > 1 {
        core::ptr::write_volatile(old_len_at, (old_read - 1) as u32);
    }
    let old_len = core::ptr::read_volatile(old_len_at);
    if pending.op != NAME_OP_SYMLINK && old_len > 0 {
        // A credential (or any watched file) given another name: read or write alike.
        name_match(
            task,
            old,
            old_len,
            pending.old_dfd,
            WATCH_READ | WATCH_WRITE,
            cursor,
            from_matched,
        )?;
        if core::ptr::read_volatile(from_matched) != 0 {
            add_bits(matched, MATCH_FROM);
        }
    }
    if core::ptr::read_volatile(matched) == 0 {
        return Ok(());
    }

    let scratch = event_scratch().ok_or(-1i64)?;
    let base = (*scratch).bytes.as_mut_ptr();
    let event = base.cast::<FileNameEvent>();
    fill_header(&raw mut (*event).header, EventKind::FileName, task);
    let header_len = core::mem::size_of::<FileNameEvent>();
    let dir_len_at = &raw mut (*event).dir_len;
    core::ptr::write_volatile(dir_len_at, 0);

    // The directory of whichever name is relative (the new one first).
    let new_relative = core::ptr::read_volatile(new_len_at) > 0 && byte(new, 0) != b'/';
    let old_relative = core::ptr::read_volatile(old_len_at) > 0 && byte(old, 0) != b'/';
    let dir_dfd = if new_relative {
        add_bits(flags, NAME_DIR_FOR_NEW);
        if old_relative && pending.old_dfd == pending.new_dfd && pending.op != NAME_OP_SYMLINK {
            add_bits(flags, NAME_DIR_FOR_FROM);
        }
        Some(pending.new_dfd)
    } else if old_relative && pending.op != NAME_OP_SYMLINK {
        add_bits(flags, NAME_DIR_FOR_FROM);
        Some(pending.old_dfd)
    } else {
        None
    };
    if let Some(dfd) = dir_dfd {
        let dir = if dfd == AT_FDCWD {
            read_ptr(task, off!(task_fs)).map(|fs| fs.wrapping_add(off!(fs_pwd)))
        } else {
            file_of_fd(task, dfd).map(|file| file.wrapping_add(off!(file_f_path)))
        };
        match dir.and_then(|dir| path::resolve_path_struct(task, dir)) {
            Ok(resolved) => {
                if resolved.truncated {
                    add_bits(flags, NAME_DIR_TRUNCATED);
                }
                let n = path::copy_to(&resolved, base.add(header_len));
                core::ptr::write_volatile(dir_len_at, n as u16);
            }
            Err(_) => add_bits(flags, NAME_DIR_UNRESOLVED),
        }
    }
    let dir_len = core::ptr::read_volatile(dir_len_at) as usize & POS_MASK;
    let name_len = core::ptr::read_volatile(new_len_at) as usize & POS_MASK;
    bpf_probe_read_kernel(
        base.add(header_len + dir_len).cast(),
        name_len as u32,
        new.cast(),
    );
    let from_len = core::ptr::read_volatile(old_len_at) as usize & POS_MASK;
    bpf_probe_read_kernel(
        base.add(header_len + dir_len + name_len).cast(),
        from_len as u32,
        old.cast(),
    );
    (*event).header.flags = core::ptr::read_volatile(flags);
    (*event).op = pending.op;
    (*event).matched = core::ptr::read_volatile(matched);
    (*event).name_len = name_len as u16;
    (*event).from_len = from_len as u16;
    (*event)._pad0 = 0;
    submit(
        scratch,
        header_len + dir_len + name_len + from_len,
        EventKind::FileName,
    );
    Ok(())
}

// The eight programs are written out (section and symbol) rather than with aya's `#[lsm]` and
// `#[fentry]` attributes: those put the body in an inner function, and when LLVM keeps it as a
// subprogram (it did for these, not for `lsm_file_open`) 6.1's verifier refuses its context
// argument ("reg type unsupported for arg#0").

/// Kernel contract: BPF-LSM `path_rename(const struct path *old_dir, struct dentry *old_dentry,
/// const struct path *new_dir, struct dentry *new_dentry, ...)` (CONFIG_SECURITY_PATH, which
/// AppArmor and TOMOYO need: on in Debian's and Ubuntu's kernels; 5.19 added a `flags` argument
/// after these), called by `do_renameat2` for every route after both names were looked up and
/// both are known to be on one mount. Observes only: returns 0 (a refusal by an earlier BPF-LSM
/// program ends the call before this one runs).
#[no_mangle]
#[link_section = "lsm/path_rename"]
pub fn lsm_path_rename(ctx: *mut core::ffi::c_void) -> i32 {
    let ctx = LsmContext::new(ctx);
    // Argument 0, `old_dir`, is on the same mount as `new_dir`: the old dentry is enough.
    let (old, new_dir, new) = (ctx.arg(1), ctx.arg(2), ctx.arg(3));
    security_name(NAME_OP_RENAME, old, new_dir, new, NAME_VIA_LSM);
    0
}

/// Kernel contract: BPF-LSM `path_link(struct dentry *old_dentry, const struct path *new_dir,
/// struct dentry *new_dentry)`, from `do_linkat` (the old file is on `new_dir`'s mount).
#[no_mangle]
#[link_section = "lsm/path_link"]
pub fn lsm_path_link(ctx: *mut core::ffi::c_void) -> i32 {
    let ctx = LsmContext::new(ctx);
    let (old, new_dir, new) = (ctx.arg(0), ctx.arg(1), ctx.arg(2));
    security_name(NAME_OP_LINK, old, new_dir, new, NAME_VIA_LSM);
    0
}

/// Kernel contract: BPF-LSM `path_symlink(const struct path *dir, struct dentry *dentry, const
/// char *old_name)`, from `do_symlinkat`; `old_name` is the kernel's copy of the target.
#[no_mangle]
#[link_section = "lsm/path_symlink"]
pub fn lsm_path_symlink(ctx: *mut core::ffi::c_void) -> i32 {
    let ctx = LsmContext::new(ctx);
    let (dir, new, target) = (ctx.arg(0), ctx.arg(1), ctx.arg(2));
    security_name(NAME_OP_SYMLINK, target, dir, new, NAME_VIA_LSM);
    0
}

/// Kernel contract: BPF-LSM `path_unlink(const struct path *dir, struct dentry *dentry)`
/// (CONFIG_SECURITY_PATH), from `do_unlinkat` for every route once the name was looked up.
#[no_mangle]
#[link_section = "lsm/path_unlink"]
pub fn lsm_path_unlink(ctx: *mut core::ffi::c_void) -> i32 {
    let ctx = LsmContext::new(ctx);
    let (dir, dentry) = (ctx.arg(0), ctx.arg(1));
    security_unlink(dir, dentry, NAME_VIA_LSM);
    0
}

/// As `lsm_path_unlink`, at the entry of `security_path_unlink`.
#[no_mangle]
#[link_section = "fentry/security_path_unlink"]
pub fn fentry_path_unlink(ctx: *mut core::ffi::c_void) -> i32 {
    let ctx = FEntryContext::new(ctx);
    let (dir, dentry) = (ctx.arg(0), ctx.arg(1));
    security_unlink(dir, dentry, NAME_VIA_FENTRY);
    0
}

#[inline(always)]
fn security_unlink(dir: *const u8, dentry: *const u8, via: u32) {
    let tgid = (unsafe { bpf_get_current_pid_tgid() } >> 32) as u32;
    if is_agent(tgid) {
        return;
    }
    if unsafe { try_security_unlink(dir, dentry, via) }.is_err() {
        count_error(EventKind::FileName);
    }
}

/// Judges a name removed, seen by a security hook: `dentry` in the directory `dir` (a `struct
/// path`). The record is an unlink's: the directory resolved, no new name, the removed name.
#[inline(always)]
unsafe fn try_security_unlink(dir: *const u8, dentry: *const u8, via: u32) -> Result<(), i64> {
    if !offsets_present() {
        return Ok(());
    }
    let task = current_task();
    let names = NAME_SCRATCH.get_ptr_mut(0).ok_or(-1i64)?;
    let flags = &raw mut (*names).flags;
    let matched = &raw mut (*names).matched;
    let old_len_at = &raw mut (*names).old_len;
    for at in [flags, matched, old_len_at] {
        core::ptr::write_volatile(at, 0);
    }
    add_bits(flags, via | NAME_DIR_FOR_FROM);
    let mut no_proc_kind = 0u32;
    let (old_len, old_name) = dentry_name(dentry)?;
    core::ptr::write_volatile(old_len_at, old_len);
    watch::match_name(
        old_name,
        old_len,
        WATCH_READ | WATCH_WRITE,
        matched,
        &raw mut no_proc_kind,
    )?;
    let dir_dentry = read_ptr(dir, off!(path_dentry))?;
    let (dir_len, dir_name) = dentry_name(dir_dentry)?;
    watch::match_parent(dir_name, dir_len, WATCH_READ | WATCH_WRITE, matched)?;
    if core::ptr::read_volatile(matched) == 0 {
        return Ok(());
    }
    add_bits(matched, MATCH_FROM);

    let scratch = event_scratch().ok_or(-1i64)?;
    let base = (*scratch).bytes.as_mut_ptr();
    let event = base.cast::<FileNameEvent>();
    fill_header(&raw mut (*event).header, EventKind::FileName, task);
    let header_len = core::mem::size_of::<FileNameEvent>();
    let dir_len_at = &raw mut (*event).dir_len;
    let from_len_at = &raw mut (*event).from_len;
    for at in [dir_len_at, from_len_at] {
        core::ptr::write_volatile(at, 0);
    }
    match path::resolve_path_struct(task, dir) {
        Ok(resolved) => {
            if resolved.truncated {
                add_bits(flags, NAME_DIR_TRUNCATED);
            }
            let n = path::copy_to(&resolved, base.add(header_len));
            core::ptr::write_volatile(dir_len_at, n as u16);
        }
        Err(_) => add_bits(flags, NAME_DIR_UNRESOLVED),
    }
    let at = header_len + (core::ptr::read_volatile(dir_len_at) as usize & POS_MASK);
    let len = core::ptr::read_volatile(old_len_at) & 255;
    bpf_probe_read_kernel(base.add(at).cast(), len, old_name.cast());
    core::ptr::write_volatile(from_len_at, len as u16);
    let from_len = core::ptr::read_volatile(from_len_at) as usize & 255;
    (*event).header.flags = core::ptr::read_volatile(flags);
    (*event).op = NAME_OP_UNLINK;
    (*event).matched = core::ptr::read_volatile(matched);
    (*event).name_len = 0;
    (*event)._pad0 = 0;
    submit(scratch, at + from_len, EventKind::FileName);
    Ok(())
}

/// As `lsm_path_rename`, at the entry of `security_path_rename` (kernels with fentry but
/// without `bpf` among their LSMs).
#[no_mangle]
#[link_section = "fentry/security_path_rename"]
pub fn fentry_path_rename(ctx: *mut core::ffi::c_void) -> i32 {
    let ctx = FEntryContext::new(ctx);
    let (old, new_dir, new) = (ctx.arg(1), ctx.arg(2), ctx.arg(3));
    security_name(NAME_OP_RENAME, old, new_dir, new, NAME_VIA_FENTRY);
    0
}

/// As `lsm_path_link`, at the entry of `security_path_link`.
#[no_mangle]
#[link_section = "fentry/security_path_link"]
pub fn fentry_path_link(ctx: *mut core::ffi::c_void) -> i32 {
    let ctx = FEntryContext::new(ctx);
    let (old, new_dir, new) = (ctx.arg(0), ctx.arg(1), ctx.arg(2));
    security_name(NAME_OP_LINK, old, new_dir, new, NAME_VIA_FENTRY);
    0
}

/// As `lsm_path_symlink`, at the entry of `security_path_symlink`.
#[no_mangle]
#[link_section = "fentry/security_path_symlink"]
pub fn fentry_path_symlink(ctx: *mut core::ffi::c_void) -> i32 {
    let ctx = FEntryContext::new(ctx);
    let (dir, new, target) = (ctx.arg(0), ctx.arg(1), ctx.arg(2));
    security_name(NAME_OP_SYMLINK, target, dir, new, NAME_VIA_FENTRY);
    0
}

#[inline(always)]
fn security_name(op: u32, old: *const u8, new_dir: *const u8, new: *const u8, via: u32) {
    let tgid = (unsafe { bpf_get_current_pid_tgid() } >> 32) as u32;
    if is_agent(tgid) {
        return;
    }
    if unsafe { try_security_name(op, old, new_dir, new, via) }.is_err() {
        count_error(EventKind::FileName);
    }
}

/// Judges a new name seen by a security hook: `new` (a dentry, maybe negative) in the directory
/// `new_dir` (a `struct path`), and `old`: the file's present dentry for rename and link (in
/// the same mount), the target string for symlink. The record has the same shape as the
/// syscalls': the new name's directory resolved, the new name, and the old name relative to the
/// same directory or, when it is elsewhere, resolved whole.
#[inline(always)]
unsafe fn try_security_name(
    op: u32,
    old: *const u8,
    new_dir: *const u8,
    new: *const u8,
    via: u32,
) -> Result<(), i64> {
    if !offsets_present() {
        return Ok(());
    }
    let task = current_task();
    let names = NAME_SCRATCH.get_ptr_mut(0).ok_or(-1i64)?;
    let flags = &raw mut (*names).flags;
    let matched = &raw mut (*names).matched;
    let from_matched = &raw mut (*names).from_matched;
    for at in [flags, matched, from_matched] {
        core::ptr::write_volatile(at, 0);
    }
    add_bits(flags, via | NAME_DIR_FOR_NEW);
    let mut no_proc_kind = 0u32;

    let (new_len, new_name) = dentry_name(new)?;
    // The length is read back from map memory where the record needs it: the matching below
    // bounds it differently on each of its paths, and those bounds would be states of their own
    // through the path walk (measured on 6.1: the symlink hook walked 521k instructions).
    let new_len_at = &raw mut (*names).new_len;
    core::ptr::write_volatile(new_len_at, new_len);
    watch::match_name(
        new_name,
        new_len,
        WATCH_WRITE,
        matched,
        &raw mut no_proc_kind,
    )?;
    let dir_dentry = read_ptr(new_dir, off!(path_dentry))?;
    let (dir_len, dir_name) = dentry_name(dir_dentry)?;
    watch::match_parent(dir_name, dir_len, WATCH_WRITE, matched)?;
    // A new name anywhere under a watched directory (the runner's actions and tools).
    crate::open::match_subtree(dir_dentry, matched);
    // A rename over a tracked source file (an editor's or `sed -i`'s save): the file replaced.
    if op == NAME_OP_RENAME {
        let replaced = read_ptr(new, off!(dentry_d_inode)).unwrap_or(core::ptr::null());
        crate::open::match_source(replaced, matched);
    }

    let old_parent = if op != NAME_OP_SYMLINK {
        // A watched file given another name. Its dentry's own name, whatever path reached it:
        // a bind-mounted directory or file shares the file system's dentries.
        let (old_len, old_name) = dentry_name(old)?;
        watch::match_name(
            old_name,
            old_len,
            WATCH_READ | WATCH_WRITE,
            from_matched,
            &raw mut no_proc_kind,
        )?;
        let parent = read_ptr(old, off!(dentry_d_parent))?;
        let (parent_len, parent_name) = dentry_name(parent)?;
        watch::match_parent(
            parent_name,
            parent_len,
            WATCH_READ | WATCH_WRITE,
            from_matched,
        )?;
        if core::ptr::read_volatile(from_matched) != 0 {
            add_bits(matched, MATCH_FROM);
        }
        // A file of a watched directory linked or moved out (to be written under another
        // name): the new name is judged as a write there.
        crate::open::match_subtree(parent, matched);
        parent
    } else {
        core::ptr::null()
    };
    if core::ptr::read_volatile(matched) == 0 {
        return Ok(());
    }

    let scratch = event_scratch().ok_or(-1i64)?;
    let base = (*scratch).bytes.as_mut_ptr();
    let event = base.cast::<FileNameEvent>();
    fill_header(&raw mut (*event).header, EventKind::FileName, task);
    let header_len = core::mem::size_of::<FileNameEvent>();
    let dir_len_at = &raw mut (*event).dir_len;
    let name_len_at = &raw mut (*event).name_len;
    let from_len_at = &raw mut (*event).from_len;
    for at in [dir_len_at, name_len_at, from_len_at] {
        core::ptr::write_volatile(at, 0);
    }
    match path::resolve_path_struct(task, new_dir) {
        Ok(resolved) => {
            if resolved.truncated {
                add_bits(flags, NAME_DIR_TRUNCATED);
            }
            let n = path::copy_to(&resolved, base.add(header_len));
            core::ptr::write_volatile(dir_len_at, n as u16);
        }
        Err(_) => add_bits(flags, NAME_DIR_UNRESOLVED),
    }
    let at = header_len + (core::ptr::read_volatile(dir_len_at) as usize & POS_MASK);
    let name_len = core::ptr::read_volatile(new_len_at) & 255;
    bpf_probe_read_kernel(base.add(at).cast(), name_len, new_name.cast());
    core::ptr::write_volatile(name_len_at, name_len as u16);
    let at = at + (core::ptr::read_volatile(name_len_at) as usize & 255);

    if op == NAME_OP_SYMLINK {
        // The target as given (the kernel's copy), read into the scratch first and copied
        // by its length, as the syscalls' names are.
        let target = (*names).old.as_mut_ptr();
        let n = bpf_probe_read_kernel_str(target.cast(), MAX_PATH_LEN as u32, old.cast());
        if n > 1 {
            core::ptr::write_volatile(from_len_at, (n - 1) as u16);
        }
        let len = core::ptr::read_volatile(from_len_at) as usize & POS_MASK;
        bpf_probe_read_kernel(base.add(at).cast(), len as u32, target.cast());
    } else if old_parent == dir_dentry {
        add_bits(flags, NAME_DIR_FOR_FROM);
        let (old_len, old_name) = dentry_name(old)?;
        let old_len = old_len & 255;
        bpf_probe_read_kernel(base.add(at).cast(), old_len, old_name.cast());
        core::ptr::write_volatile(from_len_at, old_len as u16);
    } else {
        // Elsewhere on the same mount: its whole path.
        let mnt = read_ptr(new_dir, off!(path_mnt))?;
        if let Ok(resolved) = path::resolve(task, old, mnt) {
            let n = path::copy_to(&resolved, base.add(at));
            core::ptr::write_volatile(from_len_at, n as u16);
        }
    }
    let from_len = core::ptr::read_volatile(from_len_at) as usize & POS_MASK;
    (*event).header.flags = core::ptr::read_volatile(flags);
    (*event).op = op;
    (*event).matched = core::ptr::read_volatile(matched);
    (*event)._pad0 = 0;
    submit(scratch, at + from_len, EventKind::FileName);
    Ok(())
}
