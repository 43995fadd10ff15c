//! Whether a kind of kernel program may call a helper, asked of the kernel itself. Which
//! helpers a program type may call has grown from version to version (the socket-address
//! programs were given `bpf_get_current_task_btf` long after tracing programs had it), and
//! BTF lists the helpers a kernel has, not who may call them. A program of three instructions
//! that calls the helper is loaded and closed at once: the verifier's answer is the answer.

use std::os::fd::{FromRawFd as _, OwnedFd};

/// `BPF_PROG_LOAD`'s part of `union bpf_attr` (include/uapi/linux/bpf.h), up to the field this
/// needs; the kernel takes a shorter attribute as the longer one with zeros after it.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
const BPF_CGROUP_INET4_CONNECT: u32 = 10;
/// `enum bpf_func_id` (uapi: numbers are never reused).
pub const BPF_FUNC_GET_CURRENT_TASK_BTF: i32 = 158;

/// One `struct bpf_insn`: opcode, registers (destination in the low nibble), offset, immediate.
fn insn(code: u8, regs: u8, off: i16, imm: i32) -> u64 {
    let mut bytes = [0u8; 8];
    bytes[0] = code;
    bytes[1] = regs;
    bytes[2..4].copy_from_slice(&off.to_le_bytes());
    bytes[4..8].copy_from_slice(&imm.to_le_bytes());
    u64::from_le_bytes(bytes)
}

/// Whether a connect (`BPF_CGROUP_INET4_CONNECT`) program may call `helper`; every
/// socket-address program gets the same helpers. False on any refusal (an unknown helper, a
/// kernel without the program type, too little privilege).
pub fn sock_addr_may_call(helper: i32) -> bool {
    let program = [
        insn(0x85, 0, 0, helper), // call helper
        insn(0xb7, 0, 0, 1),      // r0 = 1 (allow)
        insn(0x95, 0, 0, 0),      // exit
    ];
    // Helpers that hand out kernel pointers are for GPL programs only.
    let license = c"GPL";
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
        insn_cnt: program.len() as u32,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        expected_attach_type: BPF_CGROUP_INET4_CONNECT,
        ..Default::default()
    };
    // SAFETY: `attr` and what it points to live across the call; the kernel reads
    // `size_of::<ProgLoadAttr>()` bytes of it and writes nothing back for this command.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        return false;
    }
    // SAFETY: a new descriptor the kernel just gave this process; closed when dropped.
    drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_are_encoded_as_the_kernel_reads_them() {
        // `call 158`: opcode 0x85, registers 0, offset 0, immediate 158 (little endian).
        assert_eq!(
            insn(0x85, 0, 0, 158).to_le_bytes(),
            [0x85, 0, 0, 0, 158, 0, 0, 0]
        );
        assert_eq!(
            insn(0xb7, 0, 0, 1).to_le_bytes(),
            [0xb7, 0, 0, 0, 1, 0, 0, 0]
        );
    }

    /// Needs root (CAP_BPF), as every test that loads programs here does.
    #[test]
    fn a_helper_the_egress_programs_call_is_allowed_and_an_unknown_one_is_not() {
        // bpf_get_socket_cookie (46): egress.rs calls it, so any kernel the agent runs on
        // allows it. A probe that always said no would fail here.
        assert!(
            sock_addr_may_call(46),
            "loading a socket-address program failed (not root?)"
        );
        // Helper ids far past any kernel's: refused whatever the privilege.
        assert!(!sock_addr_may_call(1_000_000));
    }
}
