//! Resolving a `struct path` (a dentry on a mount) to the absolute path the task sees.
//!
//! Kernel contract (stable since well before 5.4): `dentry->d_parent`, `dentry->d_name` (a qstr
//! with `len` and `name`), `struct mount { struct mount *mnt_parent; struct dentry
//! *mnt_mountpoint; struct vfsmount mnt; ... }`, `vfsmount->mnt_root`, `fs_struct->root`.
//! The walk goes from the file up to the task's root, crossing mounts through `struct mount`, and
//! writes the components right to left into a per-CPU buffer.
//!
//! Verifier notes: the write position and flags live in map memory and are re-read (volatile)
//! every step, and every buffer access is masked. With the position in a register the verifier
//! cannot merge the states of successive steps and gives up ("program is too large").

use aya_ebpf::{macros::map, maps::PerCpuArray};
use monitor_common::{MAX_PATH_DEPTH, MAX_PATH_LEN};

use crate::kernel::{off, opaque, read, read_ptr};

/// Path characters are written to `bytes[pos..MAX_PATH_LEN]`; the extra 256 bytes let the
/// verifier prove a masked write of up to 255 bytes stays inside the value.
#[repr(C)]
pub struct PathScratch {
    pub bytes: [u8; MAX_PATH_LEN + 256],
    pub pos: u32,
    pub truncated: u32,
}

#[map]
static PATH_SCRATCH: PerCpuArray<PathScratch> = PerCpuArray::with_max_entries(1, 0);

const POS_MASK: usize = MAX_PATH_LEN - 1;
const NAME_MASK: u32 = 255;

/// A resolved path: `len` bytes at `scratch.bytes[start..]`.
pub struct Resolved {
    pub scratch: *mut PathScratch,
    pub start: usize,
    pub len: usize,
    pub truncated: bool,
}

/// Resolves `dentry` on `vfsmnt` relative to the root of `task`.
#[inline(always)]
pub unsafe fn resolve(
    task: *const u8,
    mut dentry: *const u8,
    vfsmnt: *const u8,
) -> Result<Resolved, i64> {
    let scratch = PATH_SCRATCH.get_ptr_mut(0).ok_or(-1i64)?;
    let bytes = (*scratch).bytes.as_mut_ptr();
    let pos_ptr = &raw mut (*scratch).pos;
    let truncated_ptr = &raw mut (*scratch).truncated;
    core::ptr::write_volatile(pos_ptr, MAX_PATH_LEN as u32);
    core::ptr::write_volatile(truncated_ptr, 1);

    let fs = read_ptr(task, off!(task_fs))?;
    let root_mnt = read_ptr(fs, off!(fs_root) + off!(path_mnt))?;
    let root_dentry = read_ptr(fs, off!(fs_root) + off!(path_dentry))?;

    let mount_mnt = off!(mount_mnt);
    let mut vfsmnt = vfsmnt;
    let mut mount = vfsmnt.wrapping_sub(mount_mnt);
    let mut mnt_root = read_ptr(vfsmnt, off!(vfsmount_mnt_root))?;

    for _ in 0..MAX_PATH_DEPTH {
        if dentry == root_dentry && vfsmnt == root_mnt {
            core::ptr::write_volatile(truncated_ptr, 0);
            break;
        }
        if dentry == mnt_root {
            // At the root of this mount: continue from where it is mounted in its parent.
            let parent = read_ptr(mount, off!(mount_mnt_parent))?;
            if parent == mount {
                // The top of the mount tree (outside the task's root, e.g. a chroot escape).
                core::ptr::write_volatile(truncated_ptr, 0);
                break;
            }
            dentry = read_ptr(mount, off!(mount_mnt_mountpoint))?;
            mount = parent;
            vfsmnt = mount.wrapping_add(mount_mnt);
            mnt_root = read_ptr(vfsmnt, off!(vfsmount_mnt_root))?;
            continue;
        }
        let parent = read_ptr(dentry, off!(dentry_d_parent))?;
        if parent == dentry {
            // Root of a filesystem that is not reached through a mount (detached, or pseudo fs).
            core::ptr::write_volatile(truncated_ptr, 0);
            break;
        }
        let qstr = dentry.wrapping_add(off!(dentry_d_name));
        let name_len = read::<u32>(qstr, off!(qstr_len))?;
        let name = read_ptr(qstr, off!(qstr_name))?;
        if name_len > NAME_MASK {
            break; // a name over 255 bytes: leave the path flagged as truncated
        }
        let pos = core::ptr::read_volatile(pos_ptr);
        if pos <= name_len + 1 {
            break; // longer than the buffer
        }
        let pos = pos - name_len;
        // `opaque`: LLVM knows `name_len <= 255` from the test above and drops the mask, and
        // where it reloads the length from the stack 6.1's verifier has lost that bound (seen in
        // the name hooks, which resolve two paths).
        let len = opaque(name_len) & NAME_MASK;
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            bytes.add(pos as usize & POS_MASK).cast(),
            len,
            name.cast(),
        );
        let pos = pos - 1;
        *bytes.add(pos as usize & POS_MASK) = b'/';
        core::ptr::write_volatile(pos_ptr, pos);
        dentry = parent;
    }

    let mut pos = core::ptr::read_volatile(pos_ptr) as usize;
    if pos >= MAX_PATH_LEN {
        // The root itself.
        pos = MAX_PATH_LEN - 1;
        *bytes.add(pos & POS_MASK) = b'/';
    }
    let start = pos & POS_MASK;
    Ok(Resolved {
        scratch,
        start,
        len: MAX_PATH_LEN - start,
        truncated: core::ptr::read_volatile(truncated_ptr) != 0,
    })
}

/// Resolves the `struct path` embedded at `path` (e.g. `&file->f_path`).
#[inline(always)]
pub unsafe fn resolve_path_struct(task: *const u8, path: *const u8) -> Result<Resolved, i64> {
    let mnt = read_ptr(path, off!(path_mnt))?;
    let dentry = read_ptr(path, off!(path_dentry))?;
    resolve(task, dentry, mnt)
}

/// Copies a resolved path to `dst` (at most `MAX_PATH_LEN - 1` bytes); returns the length copied.
#[inline(always)]
pub unsafe fn copy_to(resolved: &Resolved, dst: *mut u8) -> usize {
    let len = resolved.len & POS_MASK;
    let src = (*resolved.scratch)
        .bytes
        .as_ptr()
        .add(resolved.start & POS_MASK);
    aya_ebpf::helpers::generated::bpf_probe_read_kernel(dst.cast(), len as u32, src.cast());
    len
}
