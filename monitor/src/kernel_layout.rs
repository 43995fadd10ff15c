//! Kernel structure field offsets, read from the running kernel's BTF at load time.
//!
//! The kernel programs read `task_struct`, `file`, `dentry`, `mount`, ... at the offsets found
//! here, so one object works on 5.15 (Ubuntu 22.04), 6.8 (24.04) and 6.18 alike. Fields inside
//! anonymous structs and unions (e.g. `file.f_path` and `qstr.len` on 6.x, most of `mm_struct`)
//! are found by searching through anonymous members. Every field's size is checked too, so a
//! kernel that changes a type is refused with a clear message instead of read wrongly.

use std::path::Path;

use btf_rs::{Btf, Type};
use monitor_common::{
    KernelOffsets, IO_URING_LAYOUT_CQE_ARG2, IO_URING_LAYOUT_NONE, IO_URING_LAYOUT_RES_ARG3,
};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "cannot read kernel BTF at {path}: {source} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)"
    )]
    Btf { path: String, source: anyhow::Error },
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {strukt} has no field {field}")]
    NoField { strukt: String, field: String },
    #[error("kernel BTF: {strukt}.{field} is {actual} bytes, expected one of {expected:?}")]
    FieldSize {
        strukt: String,
        field: String,
        actual: usize,
        expected: Vec<usize>,
    },
}

/// What the programs need to know about this kernel.
#[derive(Clone, Copy, Debug)]
pub struct KernelLayout {
    pub offsets: KernelOffsets,
    /// One of `IO_URING_LAYOUT_*`: how `io_uring_complete` passes its result.
    pub io_uring_layout: u32,
    /// io_uring's rename, link and symlink requests can be read at submission.
    pub io_uring_names: bool,
    /// The name of the submission tracepoint on this kernel (`io_uring_submit_tracepoint`).
    pub io_uring_submit: Option<&'static str>,
}

pub struct BtfIndex {
    btf: Btf,
}

/// A field found in BTF: byte offset from the start of the outer struct, and byte size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: usize,
}

impl BtfIndex {
    pub fn open(path: &Path) -> Result<Self, LayoutError> {
        let btf = Btf::from_file(path).map_err(|source| LayoutError::Btf {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self { btf })
    }

    fn struct_named(&self, name: &str) -> Result<btf_rs::Struct, LayoutError> {
        let types = self.btf.resolve_types_by_name(name).unwrap_or_default();
        types
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| LayoutError::NoStruct(name.to_string()))
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn strip(&self, mut t: Type) -> Type {
        for _ in 0..16 {
            let next = match &t {
                Type::Typedef(x) => self.btf.resolve_chained_type(x),
                Type::Const(x) => self.btf.resolve_chained_type(x),
                Type::Volatile(x) => self.btf.resolve_chained_type(x),
                Type::Restrict(x) => self.btf.resolve_chained_type(x),
                Type::TypeTag(x) => self.btf.resolve_chained_type(x),
                _ => return t,
            };
            match next {
                Ok(n) => t = n,
                Err(_) => return t,
            }
        }
        t
    }

    fn type_size(&self, t: &Type) -> usize {
        match self.strip(t.clone()) {
            Type::Int(i) => i.size(),
            Type::Ptr(_) => 8,
            Type::Struct(s) | Type::Union(s) => s.size(),
            Type::Enum(e) => e.size(),
            Type::Array(a) => {
                let elem = self
                    .btf
                    .resolve_chained_type(&a)
                    .map(|e| self.type_size(&e))
                    .unwrap_or(0);
                elem * a.len()
            }
            _ => 0,
        }
    }

    /// Finds `field` in `members`, descending into anonymous structs and unions.
    fn find_in(&self, members: &[btf_rs::Member], field: &str, base_bits: u32) -> Option<Field> {
        for member in members {
            let name = self.btf.resolve_name(member).unwrap_or_default();
            let bits = base_bits + member.bit_offset();
            let Ok(member_type) = self.btf.resolve_chained_type(member) else {
                continue;
            };
            if name == field {
                return Some(Field {
                    offset: bits / 8,
                    size: self.type_size(&member_type),
                });
            }
            if name.is_empty() {
                if let Type::Struct(s) | Type::Union(s) = self.strip(member_type) {
                    if let Some(found) = self.find_in(&s.members, field, bits) {
                        return Some(found);
                    }
                }
            }
        }
        None
    }

    pub fn field(&self, strukt: &str, field: &str) -> Result<Field, LayoutError> {
        let s = self.struct_named(strukt)?;
        self.find_in(&s.members, field, 0)
            .ok_or_else(|| LayoutError::NoField {
                strukt: strukt.to_string(),
                field: field.to_string(),
            })
    }

    /// A field's offset, with its size checked against what the programs read.
    fn offset(&self, strukt: &str, field: &str, sizes: &[usize]) -> Result<u32, LayoutError> {
        let found = self.field(strukt, field)?;
        if !sizes.contains(&found.size) {
            return Err(LayoutError::FieldSize {
                strukt: strukt.to_string(),
                field: field.to_string(),
                actual: found.size,
                expected: sizes.to_vec(),
            });
        }
        Ok(found.offset)
    }

    /// Number of arguments of a tracepoint's prototype (`btf_trace_<name>` minus the context).
    /// The prototype of raw tracepoint `name` (`btf_trace_<name>`: its first parameter is the
    /// tracepoint's own data pointer, the tracepoint's arguments follow).
    /// Whether this kernel has the BPF helper `BPF_FUNC_<name>` (a value of its `enum
    /// bpf_func_id`).
    fn has_helper(&self, name: &str) -> bool {
        let want = format!("BPF_FUNC_{name}");
        let types = self
            .btf
            .resolve_types_by_name("bpf_func_id")
            .unwrap_or_default();
        types.into_iter().any(|t| match t {
            Type::Enum(e) => e
                .members
                .iter()
                .any(|m| self.btf.resolve_name(m).is_ok_and(|n| n == want)),
            _ => false,
        })
    }

    fn tracepoint_proto(&self, name: &str) -> Option<btf_rs::FuncProto> {
        let types = self
            .btf
            .resolve_types_by_name(&format!("btf_trace_{name}"))
            .ok()?;
        types.into_iter().find_map(|t| match self.strip(t) {
            Type::Ptr(p) => match self.btf.resolve_chained_type(&p) {
                Ok(Type::FuncProto(proto)) => Some(proto),
                _ => None,
            },
            _ => None,
        })
    }

    pub fn tracepoint_arg_count(&self, name: &str) -> Option<usize> {
        Some(
            self.tracepoint_proto(name)?
                .parameters
                .len()
                .saturating_sub(1),
        )
    }

    /// The name of the struct that argument `index` of raw tracepoint `name` points to.
    pub fn tracepoint_arg_struct(&self, name: &str, index: usize) -> Option<String> {
        let proto = self.tracepoint_proto(name)?;
        let param = proto.parameters.get(index + 1)?;
        let Type::Ptr(arg) = self.strip(self.btf.resolve_chained_type(param).ok()?) else {
            return None;
        };
        match self.strip(self.btf.resolve_chained_type(&arg).ok()?) {
            Type::Struct(s) => self.btf.resolve_name(&s).ok(),
            _ => None,
        }
    }

    /// The raw tracepoint io_uring fires for a request once it is prepared, with the request
    /// (`struct io_kiocb *`) first: `io_uring_submit_req` (6.5+), `io_uring_submit_sqe` before
    /// (6.0-6.4 take the request too; 5.x took the ring and the opcode).
    pub fn io_uring_submit_tracepoint(&self) -> Option<&'static str> {
        ["io_uring_submit_req", "io_uring_submit_sqe"]
            .into_iter()
            .find(|name| self.tracepoint_arg_struct(name, 0).as_deref() == Some("io_kiocb"))
    }

    pub fn layout(&self) -> Result<KernelLayout, LayoutError> {
        const PTR: &[usize] = &[8];
        const U32: &[usize] = &[4];
        let task_start = self
            .offset("task_struct", "start_boottime", &[8])
            .or_else(|_| self.offset("task_struct", "real_start_time", &[8]))?;
        let mut offsets = KernelOffsets {
            present: 1,
            task_pid: self.offset("task_struct", "pid", U32)?,
            task_tgid: self.offset("task_struct", "tgid", U32)?,
            task_real_parent: self.offset("task_struct", "real_parent", PTR)?,
            task_group_leader: self.offset("task_struct", "group_leader", PTR)?,
            task_start_boottime: task_start,
            task_mm: self.offset("task_struct", "mm", PTR)?,
            task_files: self.offset("task_struct", "files", PTR)?,
            task_fs: self.offset("task_struct", "fs", PTR)?,
            task_signal: self.offset("task_struct", "signal", PTR)?,
            fs_pwd: self.offset("fs_struct", "pwd", &[16])?,
            mm_env_start: self.offset("mm_struct", "env_start", &[8])?,
            mm_env_end: self.offset("mm_struct", "env_end", &[8])?,
            task_exit_code: self.offset("task_struct", "exit_code", U32)?,
            signal_live: self.offset("signal_struct", "live", U32)?,
            mm_arg_start: self.offset("mm_struct", "arg_start", &[8])?,
            mm_arg_end: self.offset("mm_struct", "arg_end", &[8])?,
            mm_exe_file: self.offset("mm_struct", "exe_file", PTR)?,
            files_fdt: self.offset("files_struct", "fdt", PTR)?,
            fdt_max_fds: self.offset("fdtable", "max_fds", U32)?,
            fdt_fd: self.offset("fdtable", "fd", PTR)?,
            file_f_path: self.offset("file", "f_path", &[16])?,
            file_f_flags: self.offset("file", "f_flags", U32)?,
            file_f_mode: self.offset("file", "f_mode", U32)?,
            file_f_inode: self.offset("file", "f_inode", PTR)?,
            file_private_data: self.offset("file", "private_data", PTR)?,
            path_mnt: self.offset("path", "mnt", PTR)?,
            path_dentry: self.offset("path", "dentry", PTR)?,
            dentry_d_parent: self.offset("dentry", "d_parent", PTR)?,
            dentry_d_name: self.offset("dentry", "d_name", &[16])?,
            dentry_d_inode: self.offset("dentry", "d_inode", PTR)?,
            dentry_d_sb: self.offset("dentry", "d_sb", PTR)?,
            qstr_len: self.offset("qstr", "len", U32)?,
            qstr_name: self.offset("qstr", "name", PTR)?,
            mount_mnt: self.offset("mount", "mnt", &[self.struct_named("vfsmount")?.size()])?,
            mount_mnt_parent: self.offset("mount", "mnt_parent", PTR)?,
            mount_mnt_mountpoint: self.offset("mount", "mnt_mountpoint", PTR)?,
            vfsmount_mnt_root: self.offset("vfsmount", "mnt_root", PTR)?,
            fs_root: self.offset("fs_struct", "root", &[16])?,
            inode_i_ino: self.offset("inode", "i_ino", &[8])?,
            inode_i_sb: self.offset("inode", "i_sb", PTR)?,
            inode_i_nlink: self.offset("inode", "i_nlink", U32)?,
            inode_i_ctime_sec: self
                .offset("inode", "i_ctime_sec", &[8])
                .or_else(|_| self.offset("inode", "__i_ctime", &[16]))
                .or_else(|_| self.offset("inode", "i_ctime", &[16]))?,
            inode_i_ctime_nsec: self
                .offset("inode", "i_ctime_nsec", U32)
                .or_else(|_| self.offset("inode", "__i_ctime", &[16]).map(|o| o + 8))
                .or_else(|_| self.offset("inode", "i_ctime", &[16]).map(|o| o + 8))?,
            sb_s_dev: self.offset("super_block", "s_dev", U32)?,
            sb_s_magic: self.offset("super_block", "s_magic", &[8])?,
            socket_type: self.offset("socket", "type", &[2])?,
            socket_sk: self.offset("socket", "sk", PTR)?,
            sock_cookie: self.offset("sock_common", "skc_cookie", &[8])?,
            io_kiocb_opcode: 0,
            io_uring_cqe_res: 0,
            io_kiocb_cmd: 0,
            io_names_old_dfd: 0,
            io_names_new_dfd: 0,
            io_names_oldpath: 0,
            io_names_newpath: 0,
            io_unlink_dfd: 0,
            io_unlink_filename: 0,
            filename_name: 0,
            binprm_file: self.offset("linux_binprm", "file", PTR)?,
            binprm_filename: self.offset("linux_binprm", "filename", PTR)?,
            // Optional: unix sockets may be a module (no `unix_sock` in vmlinux's BTF).
            unix_sock_peer: self.offset("unix_sock", "peer", PTR).unwrap_or(0),
            unix_sock_path: self.offset("unix_sock", "path", &[16]).unwrap_or(0),
            proc_inode_pid: 0,
            proc_inode_vfs_inode: 0,
            pid_numbers: 0,
            upid_nr: 0,
            pid_tasks: 0,
            task_pid_links: 0,
            inode_i_generation: self.offset("inode", "i_generation", U32).unwrap_or(0),
            task_nsproxy: 0,
            nsproxy_mnt_ns: 0,
            mnt_ns_inum: 0,
            mnt_ns_unique: 0,
            dentry_d_iname: self
                .field("dentry", "d_shortname")
                .or_else(|_| self.field("dentry", "d_iname"))
                .ok()
                .filter(|f| f.size >= 16)
                .map_or(0, |f| f.offset),
            task_btf_loads: self.has_helper("get_current_task_btf") as u32,
        };
        // Optional as a whole: the mount namespace in every record's header.
        if let (Ok(nsproxy), Ok(mnt_ns), Ok(ns), Ok(inum)) = (
            self.offset("task_struct", "nsproxy", PTR),
            self.offset("nsproxy", "mnt_ns", PTR),
            self.field("mnt_namespace", "ns"),
            self.offset("ns_common", "inum", U32),
        ) {
            if nsproxy != 0 {
                offsets.task_nsproxy = nsproxy;
                offsets.nsproxy_mnt_ns = mnt_ns;
                offsets.mnt_ns_inum = ns.offset + inum;
                // Its id for the boot: `ns_common.ns_id` (6.18+), `mnt_namespace.seq` before.
                offsets.mnt_ns_unique = self
                    .offset("ns_common", "ns_id", &[8])
                    .map(|id| ns.offset + id)
                    .or_else(|_| self.offset("mnt_namespace", "seq", &[8]))
                    .unwrap_or(0);
            }
        }
        // Optional as a whole: whose a /proc directory is, by its `struct pid`. `numbers` is a
        // flexible array (`numbers[1]` before 5.x): its size is not checked.
        if let (Ok(pid), Ok(vfs_inode), Ok(numbers), Ok(nr)) = (
            self.offset("proc_inode", "pid", PTR),
            self.field("proc_inode", "vfs_inode"),
            self.field("pid", "numbers"),
            self.offset("upid", "nr", U32),
        ) {
            if numbers.offset != 0 {
                offsets.proc_inode_pid = pid;
                offsets.proc_inode_vfs_inode = vfs_inode.offset;
                offsets.pid_numbers = numbers.offset;
                offsets.upid_nr = nr;
                // And, optional too, the task a `struct pid` is (a thread's: its process).
                if let (Ok(tasks), Ok(links)) = (
                    self.field("pid", "tasks"),
                    self.field("task_struct", "pid_links"),
                ) {
                    // `hlist_head tasks[PIDTYPE_MAX]`, `hlist_node pid_links[PIDTYPE_MAX]`.
                    if tasks.offset != 0 && links.offset != 0 && tasks.size >= 8 && links.size >= 16
                    {
                        offsets.pid_tasks = tasks.offset;
                        offsets.task_pid_links = links.offset;
                    }
                }
            }
        }
        // io_uring is optional (CONFIG_IO_URING); without it the open path still works.
        let io_uring_layout = match (
            self.offset("io_kiocb", "opcode", &[1]),
            self.tracepoint_arg_count("io_uring_complete"),
        ) {
            (Ok(opcode), Some(3)) => {
                offsets.io_kiocb_opcode = opcode;
                offsets.io_uring_cqe_res = self.offset("io_uring_cqe", "res", U32)?;
                IO_URING_LAYOUT_CQE_ARG2
            }
            // 5.x: (ctx, req, user_data, res, cflags); 5.19-6.2 add extra1, extra2 (big CQEs).
            (Ok(opcode), Some(5) | Some(7)) => {
                offsets.io_kiocb_opcode = opcode;
                IO_URING_LAYOUT_RES_ARG3
            }
            _ => IO_URING_LAYOUT_NONE,
        };
        // io_uring's rename/link/symlink requests, when their structs are described and share
        // one layout (they do from 5.11 on).
        let io_uring_submit = self.io_uring_submit_tracepoint();
        let io_uring_names = io_uring_layout != IO_URING_LAYOUT_NONE
            && io_uring_submit.is_some()
            && self.io_names_layout(&mut offsets).is_ok();
        Ok(KernelLayout {
            offsets,
            io_uring_layout,
            io_uring_names,
            io_uring_submit,
        })
    }
}

impl BtfIndex {
    /// The offsets of `struct io_rename` (= `struct io_link`) and `struct io_unlink` in
    /// `io_kiocb.cmd`, and of `filename.name`.
    fn io_names_layout(&self, offsets: &mut KernelOffsets) -> Result<(), LayoutError> {
        const PTR: &[usize] = &[8];
        const U32: &[usize] = &[4];
        let fields = |s: &str| -> Result<[u32; 4], LayoutError> {
            Ok([
                self.offset(s, "old_dfd", U32)?,
                self.offset(s, "new_dfd", U32)?,
                self.offset(s, "oldpath", PTR)?,
                self.offset(s, "newpath", PTR)?,
            ])
        };
        let rename = fields("io_rename")?;
        if fields("io_link")? != rename {
            return Err(LayoutError::NoField {
                strukt: "io_link".into(),
                field: "(the layout of io_rename)".into(),
            });
        }
        offsets.io_kiocb_cmd = self.field("io_kiocb", "cmd")?.offset;
        [
            offsets.io_names_old_dfd,
            offsets.io_names_new_dfd,
            offsets.io_names_oldpath,
            offsets.io_names_newpath,
        ] = rename;
        offsets.io_unlink_dfd = self.offset("io_unlink", "dfd", U32)?;
        offsets.io_unlink_filename = self.offset("io_unlink", "filename", PTR)?;
        offsets.filename_name = self.offset("filename", "name", PTR)?;
        Ok(())
    }
}

/// Reads the layout of the running kernel.
pub fn running_kernel_layout() -> Result<KernelLayout, LayoutError> {
    BtfIndex::open(Path::new(VMLINUX_BTF))?.layout()
}

#[cfg(test)]
mod tests {
    use super::*;

    // These read the real BTF of the machine the tests run on (world-readable, no root needed).
    fn index() -> BtfIndex {
        BtfIndex::open(Path::new(VMLINUX_BTF)).expect("tests need /sys/kernel/btf/vmlinux")
    }

    #[test]
    fn finds_fields_inside_anonymous_members() {
        let btf = index();
        // On 6.x qstr.len sits in an anonymous struct inside an anonymous union, after `hash`.
        let len = btf.field("qstr", "len").unwrap();
        let hash = btf.field("qstr", "hash").unwrap();
        assert_eq!(len.offset, hash.offset + 4);
        assert_eq!(len.size, 4);
        let name = btf.field("qstr", "name").unwrap();
        assert_eq!(name.offset, 8);
    }

    #[test]
    fn layout_of_running_kernel_is_complete_and_consistent() {
        let layout = index().layout().unwrap();
        let o = layout.offsets;
        assert_eq!(o.present, 1);
        // struct path is { mnt, dentry } on every supported kernel.
        assert_eq!((o.path_mnt, o.path_dentry), (0, 8));
        assert!(
            o.task_tgid == o.task_pid + 4,
            "pid and tgid are adjacent in task_struct"
        );
        // struct fdtable starts { unsigned int max_fds; struct file **fd; }.
        assert_eq!((o.fdt_max_fds, o.fdt_fd), (0, 8));
        // Every kernel this is tested on is 5.11+ (6.18 here, 6.1 in the VM).
        assert_eq!(o.task_btf_loads, 1, "bpf_get_current_task_btf is known");
        assert_ne!(
            layout.io_uring_layout, IO_URING_LAYOUT_NONE,
            "this kernel has io_uring"
        );
    }

    #[test]
    fn missing_struct_and_field_are_named() {
        let btf = index();
        let err = btf
            .field("task_struct", "no_such_field")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("task_struct") && err.contains("no_such_field"),
            "{err}"
        );
        let err = btf
            .field("no_such_struct_xyz", "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no_such_struct_xyz"), "{err}");
    }
}
