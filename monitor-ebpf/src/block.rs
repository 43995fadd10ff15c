//! Egress block mode: the decisions the cgroup socket-address programs (egress.rs) take when a
//! profile asks for `egress.mode: block`: connections and sends of a job's processes to
//! destinations its profile does not allow are refused. The process sees EPERM.
//!
//! Which processes: `JOB_PROCS` members (filled by the agent for a job's anchor or step roots,
//! and inherited here at fork) whose job's `JOB_POLICY` has `POLICY_EGRESS_BLOCK`. Where to: `ALLOW_V4`/`ALLOW_V6` (the profile's addresses and
//! networks, and the addresses DNS answered for its allowed domains: dns_answer.rs inserts those
//! as the answer arrives, before the process can read it). Loopback is always allowed.

use aya_ebpf::maps::lpm_trie::Key;
use monitor_common::{
    JobEntry, JOB_ANCHOR, JOB_INSTALL_CODE, JOB_INSTALL_SCRIPT, JOB_MEMBER, POLICY_EGRESS_BLOCK,
};

use crate::{ALLOW_V4, ALLOW_V6, JOB_POLICY, JOB_PROCS};

/// The current process's job slot and entry flags, when it is a member of a job.
#[inline(always)]
pub fn member(tgid: u32) -> Option<(u32, u32)> {
    let entry = unsafe { JOB_PROCS.get(&tgid) }?;
    (entry.flags & JOB_MEMBER != 0).then_some((entry.slot, entry.flags))
}

/// What the kernel does for the job in `slot` (`POLICY_*`).
#[inline(always)]
pub fn policy(slot: u32) -> u32 {
    JOB_POLICY.get(slot).copied().unwrap_or(0)
}

/// Slot 0 of `JOB_POLICY` is no job's: the agent sets there every bit it gave any job.
const ANY_JOB: u32 = 0;

/// The current process's slot, when its connections are judged. While no job was ever put in
/// block mode (the agent's `ANY_JOB` bits), no process is looked up: every connect and send
/// passes here.
#[inline(always)]
pub fn enforced_slot() -> Option<u32> {
    if policy(ANY_JOB) & POLICY_EGRESS_BLOCK == 0 {
        return None;
    }
    let (slot, _) = member(crate::kernel::current_tgid())?;
    (policy(slot) & POLICY_EGRESS_BLOCK != 0).then_some(slot)
}

/// At fork: a child of a member or of an anchor is a member; a child of install-time code is
/// install-time code (of the same kind).
#[inline(always)]
pub fn inherit(parent_tgid: u32, child_tgid: u32) {
    if let Some(entry) = unsafe { JOB_PROCS.get(&parent_tgid) } {
        if entry.flags & (JOB_MEMBER | JOB_ANCHOR) != 0 {
            let child = JobEntry {
                slot: entry.slot,
                flags: JOB_MEMBER | (entry.flags & (JOB_INSTALL_CODE | JOB_INSTALL_SCRIPT)),
            };
            let _ = JOB_PROCS.insert(&child_tgid, &child, 0);
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
