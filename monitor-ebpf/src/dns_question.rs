//! DNS questions as they leave, whatever made them: a `cgroup_skb` egress program at the cgroup
//! v2 root sees every packet a socket sends (syscalls, io_uring, 32-bit syscalls alike) and
//! copies the DNS message of those to port 53 (UDP, or TCP with its 2-byte length). A question
//! whose answer is never read is judged too.
//!
//! Each question's destination is kept under (socket cookie, message id) in `DNS_ASKED`, so
//! that an answer counts only when it comes back from there (dns_answer.rs); a response that
//! reached the socket before its question (`EARLY_ANSWERS`, a forger's head start) is sent
//! with the question, unmarked.
//!
//! Kernel contract: `BPF_CGROUP_INET_EGRESS` runs on each packet of a socket of the cgroup on
//! its way out, with `skb->data` at the network header (IPv4 or IPv6; IPv6 extension headers are
//! not followed). The sending task is not always current there (TCP sends from softirq), so the
//! record carries the header of the process that gave the socket port 53 as its destination,
//! kept by egress.rs in `DNS_SOCKET_OWNERS` under the socket cookie. Always allows the packet.

use aya_ebpf::{
    helpers::generated::{bpf_get_socket_cookie, bpf_ktime_get_boot_ns, bpf_probe_read_kernel},
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use monitor_common::{
    ConnectEvent, DnsAskedKey, DnsEvent, EgressSeenKey, EventKind, TlsHelloEvent, AF_INET,
    CONNECT_VIA_PING, DNS_QUESTION, DNS_QUESTION_MAX, DNS_TRUNCATED, POLICY_EGRESS_BLOCK,
    SOCK_DGRAM, SOCK_STREAM, TLS_HELLO_MAX,
};

use crate::{
    block::{allows_v4, allows_v6, member, policy},
    kernel::{offsets_present, submit_for},
    packet::{
        copy_tail, header_from_owner, headers, peer, Headers, IPPROTO_ICMP, IPPROTO_ICMPV6,
        IPPROTO_TCP, IPPROTO_UDP,
    },
    tls_owner, DNS_ASKED, DNS_SOCKET_OWNERS, EARLY_ANSWERS, EARLY_ANSWER_MAX, EGRESS_SEEN,
    PING_SOCKET_OWNERS,
};

/// A DNS packet's place in the skb: where its message starts (after TCP's 2-byte length),
/// the transport, the peer address (IPv4 in the first 4 bytes), and whether the peer's port is
/// 53.
pub(crate) struct DnsPacket {
    pub message_at: usize,
    pub sock_type: u16,
    pub family: u16,
    pub peer: [u8; 16],
    pub port_53: bool,
}

/// `Some` when the packet goes to (`outgoing`) or comes from port 53 and carries at least a DNS
/// header's worth of data, or (coming in) is a UDP datagram from any port that does (the caller
/// looks at its flags: a response from elsewhere may be a forged answer). `redirected`: the
/// socket was given port 53 as its destination (egress.rs saw it), so a packet leaving it to
/// another port was sent to port 53 and rewritten on the way (NAT in the local output path:
/// Docker's embedded resolver takes 127.0.0.11:53 to a port of its own, and its answers come
/// back from 127.0.0.11:53).
/// Asked last (a socket-cookie map lookup), only for a packet that carries a message to
/// another port: every other packet of a connect storm is spared it.
#[inline(always)]
pub(crate) fn dns_packet(
    ctx: &SkBuffContext,
    headers: &Headers,
    outgoing: bool,
    redirected: impl Fn() -> bool,
) -> Option<DnsPacket> {
    // Destination port going out, source port coming in.
    let to_53 = if outgoing {
        headers.dst_port == 53
    } else {
        headers.src_port == 53
    };
    if !to_53 && !outgoing && headers.protocol != IPPROTO_UDP {
        return None;
    }
    let (message_at, sock_type) = match headers.protocol {
        IPPROTO_UDP => (headers.payload_at, SOCK_DGRAM),
        // After the message's 2-byte length.
        IPPROTO_TCP => (headers.payload_at + 2, SOCK_STREAM),
        _ => return None,
    };
    if headers.len < message_at + 12 {
        return None; // no DNS header here (a TCP segment without data, a runt)
    }
    if outgoing && !to_53 && !redirected() {
        return None;
    }
    Some(DnsPacket {
        message_at,
        sock_type,
        family: headers.family,
        peer: peer(ctx, headers, outgoing)?,
        port_53: to_53,
    })
}

/// The key of the question with message `id` that the socket with `cookie` sent to the
/// packet's peer (its destination going out, the answer's source coming in).
#[inline(always)]
pub(crate) fn asked_key(cookie: u64, id: u16, packet: &DnsPacket) -> DnsAskedKey {
    DnsAskedKey {
        socket_cookie: cookie,
        id,
        family: packet.family,
        _pad0: [0; 4],
        addr: packet.peer,
    }
}

/// The key an early response (one that reached socket `cookie` before it asked anything) is
/// kept under in `EARLY_ANSWERS`: the socket and the message id only, whoever sent it (its
/// sender is what is in question).
#[inline(always)]
pub(crate) fn early_key(cookie: u64, id: u16) -> DnsAskedKey {
    DnsAskedKey {
        socket_cookie: cookie,
        id,
        family: 0,
        _pad0: [0; 4],
        addr: [0; 16],
    }
}

/// This program's own scratch: TCP sends from softirq, where a tracepoint program interrupted
/// on the same CPU may be half-way through a record in `EVENT_SCRATCH`.
#[inline(always)]
fn egress_scratch() -> Option<*mut crate::EventScratch> {
    crate::PACKET_SCRATCH.get_ptr_mut(crate::PACKET_SCRATCH_EGRESS)
}

/// Packets leaving: DNS questions, the first TLS ClientHello of each TCP socket, and ping
/// sockets' echo requests.
#[cgroup_skb(egress)]
pub fn dns_questions(ctx: SkBuffContext) -> i32 {
    if !offsets_present() {
        return 1;
    }
    let Some(headers) = headers(&ctx) else {
        return 1;
    };
    if unsafe { try_tls_hello(&ctx, &headers) }.is_some() {
        return 1;
    }
    match unsafe { try_ping(&ctx, &headers) } {
        // Block mode: an echo to a destination the job may not reach is dropped.
        Some(true) => return 0,
        Some(false) => return 1,
        None => {}
    }
    let _ = unsafe { try_question(&ctx, &headers) };
    1
}

const ICMP_ECHO: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;

/// An echo request leaving a ping socket whose maker sockets.rs kept (`PING_SOCKET_OWNERS`):
/// a connect record naming the destination (`CONNECT_VIA_PING`, port 0), once per socket and
/// destination (`EGRESS_SEEN`). Ping sockets have no socket-address hook for `sendto`, and
/// an echo's payload is the sender's to choose: the destination is what can be judged.
/// Raw sockets' echoes are not looked at here (the socket itself is reported, sockets.rs).
/// In block mode an echo from a job's socket to a destination its job may not reach (at any
/// port: an echo has none) is refused, every one of them. `Some(refused)` when the packet was
/// an echo request of a ping socket.
#[inline(always)]
unsafe fn try_ping(ctx: &SkBuffContext, headers: &Headers) -> Option<bool> {
    let echo = match headers.protocol {
        IPPROTO_ICMP => ICMP_ECHO,
        IPPROTO_ICMPV6 => ICMPV6_ECHO_REQUEST,
        _ => return None,
    };
    if headers.icmp_type != echo {
        return None;
    }
    let family = headers.family;
    let cookie = bpf_get_socket_cookie(ctx.skb.skb.cast());
    let owner = PING_SOCKET_OWNERS.get_ptr(&cookie)?;
    let addr = peer(ctx, headers, true)?;
    let refused = match member((*owner).tgid) {
        Some((slot, _)) if policy(slot) & POLICY_EGRESS_BLOCK != 0 => {
            !if family == AF_INET {
                allows_v4(slot, [addr[0], addr[1], addr[2], addr[3]], 0)
            } else {
                allows_v6(slot, &addr, 0)
            }
        }
        _ => false,
    };
    let key = EgressSeenKey {
        socket_cookie: cookie,
        addr,
        port: 0,
        family,
        _pad0: 0,
    };
    if EGRESS_SEEN.get_ptr(&key).is_some() {
        return Some(refused);
    }
    let _ = EGRESS_SEEN.insert(&key, &0u8, 0);
    let scratch = egress_scratch()?;
    let event = (*scratch).bytes.as_mut_ptr().cast::<ConnectEvent>();
    header_from_owner(&raw mut (*event).header, owner, EventKind::NetConnect, 0);
    (*event).fd = -1;
    (*event).result = if refused { -1 } else { 0 };
    (*event).family = family;
    (*event).sock_type = SOCK_DGRAM;
    (*event).port = 0;
    (*event).via = CONNECT_VIA_PING;
    (*event).blocked = refused as u8;
    (*event).addr = addr;
    let tgid = (*event).header.tgid;
    submit_for(
        scratch,
        core::mem::size_of::<ConnectEvent>(),
        EventKind::NetConnect,
        tgid,
    );
    Some(refused)
}

/// A TCP socket's first data segment, when it is a TLS ClientHello (record type 22, version
/// 3.x, handshake type 1) and egress.rs saw the socket's connect (`TLS_OWNERS`): its first
/// `TLS_HELLO_MAX` bytes go out as the socket's TLS hello record, once (the owner entry is
/// taken), with the destination. The agent reads the server name from it; nothing is decrypted
/// and the packet always passes. `Some` when the packet was a hello sent.
#[inline(always)]
unsafe fn try_tls_hello(ctx: &SkBuffContext, headers: &Headers) -> Option<()> {
    if headers.protocol != IPPROTO_TCP || headers.len < headers.payload_at + 6 {
        return None;
    }
    let payload_at = headers.payload_at;
    let cookie = bpf_get_socket_cookie(ctx.skb.skb.cast());
    if !tls_owner::kept(cookie) {
        return None;
    }
    // Only the socket's first data: a proxy's `CONNECT` goes first and the hello inside the
    // tunnel names the site, not the proxy the address was resolved from.
    let head: [u8; 6] = ctx.load(payload_at).ok()?;
    if head[0] != 0x16 || head[1] != 0x03 || head[5] != 0x01 {
        tls_owner::forget(cookie);
        return None;
    }
    let scratch = egress_scratch()?;
    let base = (*scratch).bytes.as_mut_ptr();
    let event = base as *mut TlsHelloEvent;
    let header = &raw mut (*event).header;
    if !tls_owner::take(cookie, header) {
        return None;
    }
    (*header).kind = EventKind::NetTls as u32;
    (*header).ts_ns = bpf_ktime_get_boot_ns();
    (*header).flags = 0;
    (*event).family = headers.family;
    (*event).port = headers.dst_port;
    (*event).addr = peer(ctx, headers, true)?;
    let header_len = core::mem::size_of::<TlsHelloEvent>();
    let Some((copy, _)) = copy_tail(ctx, payload_at, base.add(header_len), TLS_HELLO_MAX) else {
        return Some(());
    };
    (*event).payload_len = copy as u32;
    submit_for(
        scratch,
        header_len + copy,
        EventKind::NetTls,
        (*event).header.tgid,
    );
    Some(())
}

unsafe fn try_question(ctx: &SkBuffContext, headers: &Headers) -> Result<(), i64> {
    let Some(packet) = dns_packet(ctx, headers, true, || {
        let cookie = bpf_get_socket_cookie(ctx.skb.skb.cast());
        DNS_SOCKET_OWNERS.get_ptr(&cookie).is_some()
    }) else {
        return Ok(());
    };
    let cookie = bpf_get_socket_cookie(ctx.skb.skb.cast());
    // What is copied: over TCP the 2-byte length too (the parser expects it).
    let payload_at = if packet.sock_type == SOCK_STREAM {
        packet.message_at - 2
    } else {
        packet.message_at
    };
    let sock_type = packet.sock_type;
    let id = u16::from_be(ctx.load::<u16>(packet.message_at).map_err(|e| e as i64)?);
    let key = asked_key(cookie, id, &packet);
    // A retransmitted question keeps the entry.
    const BPF_NOEXIST: u64 = 1;
    let _ = DNS_ASKED.insert(&key, &1u8, BPF_NOEXIST);
    let Some(owner) = DNS_SOCKET_OWNERS.get_ptr(&cookie) else {
        return Ok(());
    };
    let scratch = egress_scratch().ok_or(-1i64)?;
    let base = (*scratch).bytes.as_mut_ptr();
    let event = base as *mut DnsEvent;
    header_from_owner(
        &raw mut (*event).header,
        owner,
        EventKind::NetDns,
        DNS_QUESTION,
    );
    (*event).fd = -1;
    (*event).sock_type = sock_type;
    (*event)._pad0 = 0;
    let header_len = core::mem::size_of::<DnsEvent>();
    let Some((copy, whole)) = copy_tail(ctx, payload_at, base.add(header_len), DNS_QUESTION_MAX)
    else {
        return Ok(());
    };
    (*event).received_len = whole as u32;
    if whole > copy {
        (*event).header.flags |= DNS_TRUNCATED;
    }
    (*event).payload_len = copy as u32;
    submit_for(
        scratch,
        header_len + copy,
        EventKind::NetDns,
        (*event).header.tgid,
    );
    // A response that reached this socket before its question left (a forger's head start:
    // the process will read it as the answer): sent now, unmarked, as the same process's.
    let key = early_key(cookie, id);
    if let Some(early) = EARLY_ANSWERS.get_ptr(&key) {
        (*event).header.flags = 0;
        (*event).sock_type = SOCK_DGRAM;
        (*event).received_len = (*early).received_len;
        let copy = (((*early).len as usize).wrapping_sub(1) & EARLY_ANSWER_MAX) + 1;
        if bpf_probe_read_kernel(
            base.add(header_len).cast(),
            copy as u32,
            (*early).bytes.as_ptr().cast(),
        ) >= 0
        {
            (*event).payload_len = copy as u32;
            submit_for(
                scratch,
                header_len + copy,
                EventKind::NetDns,
                (*event).header.tgid,
            );
        }
        let _ = EARLY_ANSWERS.remove(&key);
    }
    Ok(())
}
