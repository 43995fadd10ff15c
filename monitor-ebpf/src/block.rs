//! Egress block mode: the decisions the cgroup socket-address programs (egress.rs) take when a
//! profile asks for `egress.mode: block`: connections and sends of a job's processes to
//! destinations its profile does not allow are refused. The process sees EPERM.
//!
//! Which processes: `BLOCK_PROCS` (filled by the agent for a job's anchor or step roots, and
//! inherited here at fork). Where to: `ALLOW_V4`/`ALLOW_V6` (the profile's addresses and
//! networks, and the addresses DNS answered for its allowed domains: dns.rs inserts those while
//! the answer is being read, before the process can use it). Loopback is always allowed.

use aya_ebpf::{helpers::generated::bpf_get_current_pid_tgid, maps::lpm_trie::Key};
use monitor_common::{BlockEntry, BLOCK_ANCHOR, BLOCK_ENFORCED};

use crate::{ALLOW_V4, ALLOW_V6, BLOCK_PROCS};

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

/// Whether the process with `slot` may reach the IPv4 `addr`:`port` (loopback always).
#[inline(always)]
pub fn allows_v4(slot: u32, addr: [u8; 4], port: u16) -> bool {
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

/// Whether the process with `slot` may reach the IPv6 `addr`:`port` (loopback always; an
/// IPv4-mapped address judged as IPv4).
#[inline(always)]
pub fn allows_v6(slot: u32, addr: &[u8; 16], port: u16) -> bool {
    let head_zero = addr[..10].iter().all(|b| *b == 0);
    if head_zero
        && addr[10] == 0
        && addr[11] == 0
        && addr[12..15].iter().all(|b| *b == 0)
        && addr[15] == 1
    {
        return true;
    }
    if head_zero && addr[10] == 0xff && addr[11] == 0xff {
        return allows_v4(slot, [addr[12], addr[13], addr[14], addr[15]], port);
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
    ALLOW_V6.get(&key).is_some_and(|ports| ports.allows(port))
}
