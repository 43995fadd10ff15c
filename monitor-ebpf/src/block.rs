//! Egress block mode: cgroup socket-address programs, attached to the cgroup v2 root only when a
//! profile asks for `egress.mode: block`, refuse connections and sends of a job's processes to
//! destinations its profile does not allow. The process sees EPERM.
//!
//! Which processes: `BLOCK_PROCS` (filled by the agent for a job's anchor or step roots, and
//! inherited here at fork). Where to: `ALLOW_V4`/`ALLOW_V6` (the profile's addresses and
//! networks, and the addresses DNS answered for its allowed domains: dns.rs inserts those while
//! the answer is being read, before the process can use it). Loopback is always allowed.

use aya_ebpf::{
    helpers::generated::bpf_get_current_pid_tgid, macros::cgroup_sock_addr, maps::lpm_trie::Key,
    programs::SockAddrContext,
};
use monitor_common::{BlockEntry, BLOCK_ANCHOR, BLOCK_ENFORCED};

use crate::{ALLOW_V4, ALLOW_V6, BLOCK_PROCS};

const ALLOW: i32 = 1;
const DENY: i32 = 0;

/// The current process's entry, when its connections are judged.
#[inline(always)]
pub fn enforced_slot() -> Option<u32> {
    let tgid = (unsafe { bpf_get_current_pid_tgid() } >> 32) as u32;
    let entry = unsafe { BLOCK_PROCS.get(&tgid) }?;
    (entry.flags & BLOCK_ENFORCED != 0).then_some(entry.slot)
}

/// At fork: a child of a judged process or of an anchor is judged.
#[inline(always)]
pub fn inherit(parent_tgid: u32, child_tgid: u32) {
    if let Some(entry) = unsafe { BLOCK_PROCS.get(&parent_tgid) } {
        if entry.flags & (BLOCK_ENFORCED | BLOCK_ANCHOR) != 0 {
            let child = BlockEntry {
                slot: entry.slot,
                flags: BLOCK_ENFORCED,
            };
            let _ = BLOCK_PROCS.insert(&child_tgid, &child, 0);
        }
    }
}

#[inline(always)]
fn allowed_v4(slot: u32, addr: [u8; 4], port: u16) -> bool {
    if addr[0] == 127 {
        return true;
    }
    let s = slot.to_be_bytes();
    let key = Key::new(
        64,
        [s[0], s[1], s[2], s[3], addr[0], addr[1], addr[2], addr[3]],
    );
    ALLOW_V4.get(&key).is_some_and(|ports| ports.allows(port))
}

#[inline(always)]
fn decide4(ctx: &SockAddrContext) -> i32 {
    let Some(slot) = enforced_slot() else {
        return ALLOW;
    };
    let sa = ctx.sock_addr;
    // Both stored in network byte order.
    let addr = unsafe { (*sa).user_ip4 }.to_ne_bytes();
    let port = u16::from_be(unsafe { (*sa).user_port } as u16);
    if allowed_v4(slot, addr, port) {
        ALLOW
    } else {
        DENY
    }
}

#[inline(always)]
fn decide6(ctx: &SockAddrContext) -> i32 {
    let Some(slot) = enforced_slot() else {
        return ALLOW;
    };
    let sa = ctx.sock_addr;
    let words = unsafe {
        [
            (*sa).user_ip6[0],
            (*sa).user_ip6[1],
            (*sa).user_ip6[2],
            (*sa).user_ip6[3],
        ]
    };
    let port = u16::from_be(unsafe { (*sa).user_port } as u16);
    let mut addr = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let b = words[i].to_ne_bytes();
        addr[i * 4] = b[0];
        addr[i * 4 + 1] = b[1];
        addr[i * 4 + 2] = b[2];
        addr[i * 4 + 3] = b[3];
        i += 1;
    }
    // ::1, and IPv4-mapped addresses judged as IPv4.
    let head_zero = addr[..10].iter().all(|b| *b == 0);
    if head_zero
        && addr[10] == 0
        && addr[11] == 0
        && addr[12..15].iter().all(|b| *b == 0)
        && addr[15] == 1
    {
        return ALLOW;
    }
    if head_zero && addr[10] == 0xff && addr[11] == 0xff {
        return if allowed_v4(slot, [addr[12], addr[13], addr[14], addr[15]], port) {
            ALLOW
        } else {
            DENY
        };
    }
    let s = slot.to_be_bytes();
    let mut data = [0u8; 20];
    data[0] = s[0];
    data[1] = s[1];
    data[2] = s[2];
    data[3] = s[3];
    let mut j = 0;
    while j < 16 {
        data[4 + j] = addr[j];
        j += 1;
    }
    let key = Key::new(160, data);
    if ALLOW_V6.get(&key).is_some_and(|ports| ports.allows(port)) {
        ALLOW
    } else {
        DENY
    }
}

#[cgroup_sock_addr(connect4)]
pub fn block_connect4(ctx: SockAddrContext) -> i32 {
    decide4(&ctx)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn block_sendmsg4(ctx: SockAddrContext) -> i32 {
    decide4(&ctx)
}

#[cgroup_sock_addr(connect6)]
pub fn block_connect6(ctx: SockAddrContext) -> i32 {
    decide6(&ctx)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn block_sendmsg6(ctx: SockAddrContext) -> i32 {
    decide6(&ctx)
}
