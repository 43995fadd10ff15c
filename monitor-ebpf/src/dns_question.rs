//! DNS questions as they leave, whatever made them: a `cgroup_skb` egress program at the cgroup
//! v2 root sees every packet a socket sends (syscalls, io_uring, 32-bit syscalls alike) and
//! copies the DNS message of those to port 53 (UDP, or TCP with its 2-byte length). A question
//! whose answer is never read is judged too.
//!
//! Kernel contract: `BPF_CGROUP_INET_EGRESS` runs on each packet of a socket of the cgroup on
//! its way out, with `skb->data` at the network header (IPv4 or IPv6; IPv6 extension headers are
//! not followed). The sending task is not always current there (TCP sends from softirq), so the
//! record carries the header of the process that gave the socket port 53 as its destination,
//! kept by egress.rs in `DNS_SOCKET_OWNERS` under the socket cookie. Always allows the packet.

use aya_ebpf::{
    helpers::generated::{bpf_get_socket_cookie, bpf_ktime_get_boot_ns, bpf_skb_load_bytes},
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use monitor_common::{
    DnsEvent, EventKind, DNS_QUESTION, DNS_QUESTION_MAX, DNS_TRUNCATED, SOCK_DGRAM, SOCK_STREAM,
};

use crate::{
    kernel::{event_scratch, offsets_present, submit},
    DNS_SOCKET_OWNERS,
};

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

#[cgroup_skb(egress)]
pub fn dns_questions(ctx: SkBuffContext) -> i32 {
    let _ = unsafe { try_question(&ctx) };
    1
}

unsafe fn try_question(ctx: &SkBuffContext) -> Result<(), i64> {
    if !offsets_present() {
        return Ok(());
    }
    let first: u8 = ctx.load(0).map_err(|e| e as i64)?;
    // Where the transport header starts, and which transport.
    let (transport_at, protocol) = match first >> 4 {
        4 => (
            ((first & 0x0f) as usize) * 4,
            ctx.load::<u8>(9).map_err(|e| e as i64)?,
        ),
        6 => (40usize, ctx.load::<u8>(6).map_err(|e| e as i64)?),
        _ => return Ok(()),
    };
    if transport_at < 20 {
        return Ok(());
    }
    let dport = u16::from_be(ctx.load::<u16>(transport_at + 2).map_err(|e| e as i64)?);
    if dport != 53 {
        return Ok(());
    }
    let (payload_at, sock_type) = match protocol {
        IPPROTO_UDP => (transport_at + 8, SOCK_DGRAM),
        IPPROTO_TCP => {
            let offset: u8 = ctx.load(transport_at + 12).map_err(|e| e as i64)?;
            (transport_at + ((offset >> 4) as usize) * 4, SOCK_STREAM)
        }
        _ => return Ok(()),
    };
    let len = ctx.len() as usize;
    if len <= payload_at {
        return Ok(()); // a TCP segment without data
    }
    let cookie = bpf_get_socket_cookie(ctx.skb.skb.cast());
    let Some(owner) = DNS_SOCKET_OWNERS.get_ptr(&cookie) else {
        return Ok(());
    };
    let scratch = event_scratch().ok_or(-1i64)?;
    let base = (*scratch).bytes.as_mut_ptr();
    let event = base as *mut DnsEvent;
    (*event).header = *owner;
    (*event).header.kind = EventKind::NetDns as u32;
    (*event).header.ts_ns = bpf_ktime_get_boot_ns();
    (*event).header.flags = DNS_QUESTION;
    (*event).fd = -1;
    (*event).sock_type = sock_type;
    (*event)._pad0 = 0;
    let mut copy = len - payload_at;
    (*event).received_len = copy as u32;
    if copy > DNS_QUESTION_MAX {
        copy = DNS_QUESTION_MAX;
        (*event).header.flags |= DNS_TRUNCATED;
    }
    // Masked so the verifier sees the bound; at least one byte.
    let copy = copy & DNS_QUESTION_MAX;
    if copy == 0 {
        return Ok(());
    }
    let header_len = core::mem::size_of::<DnsEvent>();
    if bpf_skb_load_bytes(
        ctx.skb.skb.cast(),
        payload_at as u32,
        base.add(header_len).cast(),
        copy as u32,
    ) < 0
    {
        return Ok(());
    }
    (*event).payload_len = copy as u32;
    submit(scratch, header_len + copy, EventKind::NetDns);
    Ok(())
}
