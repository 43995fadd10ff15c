//! DNS answers as they arrive, whatever will read them (recvmsg, read, io_uring, a 32-bit
//! syscall): a `cgroup_skb` ingress program at the cgroup v2 root sees every packet delivered
//! to a socket, and copies the DNS responses that reach sockets which asked a question.
//!
//! An answer is evidence only when it comes from where its question went. As a question leaves,
//! its destination is kept under (socket cookie, message id) in `DNS_ASKED` (dns_question.rs);
//! an answer arriving on that socket from that address, port 53, with that id is sent marked
//! `DNS_FROM_ASKED`. Any other DNS response reaching a socket that asked (a datagram another
//! local socket sent it: a forged answer, no root needed) is sent without the mark, and the
//! agent learns nothing from it. A response reaching a socket before it asked anything (the
//! forger's head start: it is read as the answer once the question leaves) is kept in
//! `EARLY_ANSWERS` and sent, unmarked, when that socket's question with the same id leaves.
//!
//! Block mode: a marked answer to a process whose job's egress is enforced is parsed here (tail
//! call, `dns_block_answers`) and an allowed name's addresses allowed, before the packet is
//! queued on the socket: before any process can read it.
//!
//! Kernel contract: `BPF_CGROUP_INET_INGRESS` runs from `sk_filter` on each packet delivered to
//! a socket of the cgroup (UDP: each datagram before it is queued; TCP: each segment as
//! `tcp_v4_rcv`/`tcp_v6_rcv` receive it), in softirq or the sender's context (loopback), with
//! `skb->data` at the network header and `skb->sk` the receiving socket. The receiver is not
//! current: the record carries the header of the process that gave the socket port 53 as its
//! destination (`DNS_SOCKET_OWNERS`, egress.rs). Always lets the packet through. Its records
//! are built in `PACKET_SCRATCH`, not the tracepoints' scratch: a softirq may run while a
//! tracepoint program on the same CPU is half-way through a record.

use aya_ebpf::{
    helpers::generated::{bpf_get_socket_cookie, bpf_loop},
    macros::cgroup_skb,
    maps::lpm_trie::Key,
    programs::SkBuffContext,
};
use monitor_common::{
    fnv_step, name_step, DnsAskedKey, DnsEvent, EventKind, NameHashKey, PortSet, DNS_FROM_ASKED,
    DNS_PAYLOAD_MAX, DNS_TRUNCATED, EVENT_SCRATCH_LEN, FNV_OFFSET, POLICY_EGRESS_BLOCK, SOCK_DGRAM,
};

use crate::{
    block::{member, policy},
    dns_question::{asked_key, dns_packet, early_key},
    kernel::submit_for,
    packet::{copy_tail, header_from_owner, headers},
    EarlyAnswer, EventScratch, ALLOWED_NAMES, ALLOW_V4, ALLOW_V6, BLOCK_PARSER, DNS_ASKED,
    DNS_SOCKET_OWNERS, EARLY_ANSWERS, EARLY_ANSWER_MAX, PACKET_SCRATCH, PACKET_SCRATCH_INGRESS,
};

/// This program's own scratch (see the module comment).
#[inline(always)]
fn packet_scratch() -> Option<*mut EventScratch> {
    PACKET_SCRATCH.get_ptr_mut(PACKET_SCRATCH_INGRESS)
}

/// A DNS response arriving: sent to the agent when its socket asked a question (marked when it
/// comes from where the question went), kept when the socket has not asked yet.
#[cgroup_skb(ingress)]
pub fn dns_answers_in(ctx: SkBuffContext) -> i32 {
    let _ = unsafe { try_answer(&ctx) };
    1
}

unsafe fn try_answer(ctx: &SkBuffContext) -> Option<()> {
    let headers = headers(ctx)?;
    let packet = dns_packet(ctx, &headers, false, || false)?;
    let at = packet.message_at;
    let id = u16::from_be(ctx.load::<u16>(at).ok()?);
    let flags: u8 = ctx.load(at + 2).ok()?;
    if flags & 0x80 == 0 {
        return None; // a question, or not DNS at all
    }
    if !packet.port_53 || packet.sock_type == SOCK_DGRAM {
        // Only what a resolver library would take for the answer to a standard query (QR set,
        // opcode 0, one question) is looked at further when it may be forged: other datagrams
        // (QUIC, games, a build's own protocols) cost these two loads and nothing more.
        let questions = u16::from_be(ctx.load::<u16>(at + 4).ok()?);
        if flags & 0x78 != 0 || questions != 1 {
            return None;
        }
    }
    let cookie = bpf_get_socket_cookie(ctx.skb.skb.cast());
    let key = asked_key(cookie, id, &packet);
    let from_asked = packet.port_53 && DNS_ASKED.get_ptr(&key).is_some();
    if packet.sock_type != SOCK_DGRAM {
        // TCP: only from port 53 (dns_packet), and only the segment that starts the answer (a
        // later segment's bytes may look like any id; a second answer in the same segment is
        // not looked at). Only a raw socket can put a segment into the connection
        // (`tcp_filter` runs before the sequence check): root's, or a packet socket's, which
        // block mode refuses.
        if !from_asked {
            return None;
        }
        let _ = DNS_ASKED.remove(&key);
    }
    let Some(owner) = DNS_SOCKET_OWNERS.get_ptr(&cookie) else {
        // Whatever its source port (port 53 may be bound without root where
        // `net.ipv4.ip_unprivileged_port_start` allows it, as in containers).
        if packet.sock_type == SOCK_DGRAM {
            keep_early(ctx, at, &early_key(cookie, id));
        }
        return None;
    };
    let scratch = packet_scratch()?;
    let base = (*scratch).bytes.as_mut_ptr();
    let event = base as *mut DnsEvent;
    let flags = if from_asked { DNS_FROM_ASKED } else { 0 };
    header_from_owner(&raw mut (*event).header, owner, EventKind::NetDns, flags);
    (*event).fd = -1;
    (*event).sock_type = packet.sock_type;
    (*event)._pad0 = 0;
    // What is copied: over TCP the 2-byte length too (the parser expects it).
    let payload_at = if packet.sock_type == SOCK_DGRAM {
        at
    } else {
        at - 2
    };
    let header_len = core::mem::size_of::<DnsEvent>();
    let (copy, whole) = copy_tail(ctx, payload_at, base.add(header_len), DNS_PAYLOAD_MAX)?;
    (*event).received_len = whole as u32;
    if whole > copy {
        (*event).header.flags |= DNS_TRUNCATED;
    }
    (*event).payload_len = copy as u32;
    let tgid = (*event).header.tgid;
    submit_for(scratch, header_len + copy, EventKind::NetDns, tgid);
    // Block mode: allow an allowed name's addresses before anyone can read them (the parse lives
    // in its own program: see `dns_block_answers`). A forged answer allows nothing.
    if from_asked {
        if let Some((slot, _)) = member(tgid) {
            if policy(slot) & POLICY_EGRESS_BLOCK != 0 {
                let _ = BLOCK_PARSER.tail_call(ctx, 0);
            }
        }
    }
    Some(())
}

/// Keeps a DNS response that reached a socket which has asked nothing (yet): dns_question.rs
/// sends it, unmarked, if the socket's question with the same id
/// leaves (the response is then what the asking process reads first).
#[inline(always)]
unsafe fn keep_early(ctx: &SkBuffContext, at: usize, key: &DnsAskedKey) {
    let Some(scratch) = packet_scratch() else {
        return;
    };
    let early = (*scratch).bytes.as_mut_ptr().cast::<EarlyAnswer>();
    let Some((copy, whole)) = copy_tail(ctx, at, (*early).bytes.as_mut_ptr(), EARLY_ANSWER_MAX)
    else {
        return;
    };
    (*early).len = copy as u32;
    (*early).received_len = whole as u32;
    let _ = EARLY_ANSWERS.insert(key, &*early, 0);
}

/// A byte of the answer being parsed (the mask keeps every access inside the scratch buffer).
#[inline(always)]
unsafe fn byte(msg: *const u8, i: usize) -> u8 {
    *msg.add(i & DNS_PAYLOAD_MAX)
}

const MAX_LABELS: usize = 16;
const MAX_ANSWERS: usize = 8;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

/// State of the block-mode parse of one DNS response, shared with the `bpf_loop` callbacks
/// (bounded loops over message bytes are too many paths for the verifier; a callback is checked
/// once).
#[repr(C)]
struct ParseState {
    len: u64,
    off: u64,
    remaining: u64,
    labels: u64,
    hash: u64,
    ended: u64,
    failed: u64,
    name_end: u64,
    slot: u32,
    _pad0: u32,
    ancount: u64,
    ports: PortSet,
}

/// The answer being parsed (after the `DnsEvent` header in the packet scratch).
#[inline(always)]
fn message() -> Option<*mut u8> {
    let scratch = packet_scratch()?;
    Some(unsafe {
        (*scratch)
            .bytes
            .as_mut_ptr()
            .add(core::mem::size_of::<DnsEvent>())
    })
}

/// Label hashes, well past the message in the scratch buffer.
#[inline(always)]
fn label_hashes() -> Option<*mut u64> {
    let scratch = packet_scratch()?;
    Some(unsafe {
        (*scratch)
            .bytes
            .as_mut_ptr()
            .add(EVENT_SCRATCH_LEN / 2)
            .cast::<u64>()
    })
}

/// One byte of the question name per call. The position comes from the loop index, not from
/// state carried between calls, so the verifier sees every call alike and checks it once.
extern "C" fn question_byte(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let st = ctx.cast::<ParseState>();
    let (Some(msg), Some(hashes)) = (message(), label_hashes()) else {
        return 1;
    };
    unsafe {
        let off = (*st).off as usize + index as usize;
        if off >= (*st).len as usize {
            (*st).failed = 1;
            return 1;
        }
        let b = byte(msg, off);
        if (*st).remaining == 0 {
            if b == 0 {
                (*st).ended = 1;
                // Where the answers parse goes on: past the root label.
                (*st).name_end = (off + 1) as u64;
                return 1;
            }
            if b > 63 || (*st).labels >= MAX_LABELS as u64 {
                (*st).failed = 1;
                return 1;
            }
            (*st).remaining = b as u64;
            (*st).hash = FNV_OFFSET;
        } else {
            (*st).hash = fnv_step((*st).hash, b);
            (*st).remaining -= 1;
            if (*st).remaining == 0 {
                *hashes.add((*st).labels as usize & (MAX_LABELS - 1)) = (*st).hash;
                (*st).labels += 1;
            }
        }
    }
    0
}

/// One answer record per call: allows A and AAAA addresses with the name's ports.
extern "C" fn answer_record(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let st = ctx.cast::<ParseState>();
    let Some(msg) = message() else {
        return 1;
    };
    unsafe {
        let len = (*st).len as usize;
        let mut off = (*st).off as usize;
        if index >= (*st).ancount || off + 12 > len || byte(msg, off) & 0xC0 != 0xC0 {
            return 1; // done, or an owner name that is not a compression pointer: stop
        }
        off += 2;
        let rtype = ((byte(msg, off) as u16) << 8) | byte(msg, off + 1) as u16;
        let rdlen = ((byte(msg, off + 8) as usize) << 8) | byte(msg, off + 9) as usize;
        off += 10;
        if off + rdlen > len {
            return 1;
        }
        let s = (*st).slot.to_be_bytes();
        let ports = (*st).ports;
        if rtype == TYPE_A && rdlen == 4 {
            let key = Key::new(
                64,
                [
                    s[0],
                    s[1],
                    s[2],
                    s[3],
                    byte(msg, off),
                    byte(msg, off + 1),
                    byte(msg, off + 2),
                    byte(msg, off + 3),
                ],
            );
            if ALLOW_V4.get(&key).is_none() {
                let _ = ALLOW_V4.insert(&key, &ports, 0);
            }
        } else if rtype == TYPE_AAAA && rdlen == 16 {
            let mut data = [0u8; 20];
            data[0] = s[0];
            data[1] = s[1];
            data[2] = s[2];
            data[3] = s[3];
            let mut b = 0usize;
            while b < 16 {
                data[4 + b] = byte(msg, off + b);
                b += 1;
            }
            let key = Key::new(160, data);
            if ALLOW_V6.get(&key).is_none() {
                let _ = ALLOW_V6.insert(&key, &ports, 0);
            }
        }
        (*st).off = (off + rdlen) as u64;
    }
    0
}

/// Block mode, tail-called from `dns_answers_in` once a marked answer is in the packet scratch:
/// when the question is a name the job may reach (exactly, or under an allowed `*.` domain),
/// allows the answer's A and AAAA addresses with that name's ports, before the answer is queued
/// on the socket. Needs `bpf_loop` (Linux 5.17+); loaded only in block mode. Anything unexpected
/// stops the parse, so the address stays refused (fail closed). An address already allowed
/// keeps its first ports.
#[cgroup_skb(ingress)]
pub fn dns_block_answers(_ctx: SkBuffContext) -> i32 {
    let _ = unsafe { try_block_answers() };
    1
}

unsafe fn try_block_answers() -> Result<(), i64> {
    let scratch = packet_scratch().ok_or(-1i64)?;
    let event = (*scratch).bytes.as_ptr().cast::<DnsEvent>();
    let Some((slot, _)) = member((*event).header.tgid) else {
        return Ok(());
    };
    if policy(slot) & POLICY_EGRESS_BLOCK == 0 {
        return Ok(());
    }
    let mut len = ((*event).payload_len as usize) & DNS_PAYLOAD_MAX;
    let msg = message().ok_or(-1i64)?;
    let mut start = 0usize;
    if (*event).sock_type != SOCK_DGRAM {
        // A TCP segment starts with the message's 2-byte length (dns_answers_in copies from
        // there) and may hold more than that message: parse only it.
        if len < 2 {
            return Ok(());
        }
        start = 2;
        let declared = (((byte(msg, 0) as usize) << 8) | byte(msg, 1) as usize) + 2;
        if declared < len {
            len = declared;
        }
    }
    if len < start + 12 || byte(msg, start + 2) & 0x80 == 0 {
        return Ok(()); // not a response
    }
    let mut st = ParseState {
        len: len as u64,
        off: (start + 12) as u64,
        remaining: 0,
        labels: 0,
        hash: FNV_OFFSET,
        ended: 0,
        failed: 0,
        name_end: 0,
        slot,
        _pad0: 0,
        ancount: (((byte(msg, start + 6) as u64) << 8) | byte(msg, start + 7) as u64),
        ports: PortSet::default(),
    };
    bpf_loop(
        256,
        question_byte as *mut core::ffi::c_void,
        (&raw mut st).cast(),
        0,
    );
    if st.ended == 0 || st.failed != 0 {
        return Ok(());
    }
    st.off = st.name_end + 4; // QTYPE, QCLASS
    let hashes = label_hashes().ok_or(-1i64)?;
    // Suffixes from the right: com, example.com, www.example.com.
    let mut suffix = FNV_OFFSET;
    let mut found = false;
    let mut k = 0usize;
    while k < MAX_LABELS {
        if k as u64 >= st.labels {
            break;
        }
        let idx = (st.labels as usize - 1 - k) & (MAX_LABELS - 1);
        suffix = name_step(suffix, *hashes.add(idx));
        let key = NameHashKey {
            slot,
            wildcard: if idx > 0 { 1 } else { 0 },
            hash: suffix,
        };
        if let Some(p) = ALLOWED_NAMES.get_ptr(&key) {
            st.ports = *p;
            found = true;
            break;
        }
        k += 1;
    }
    if !found {
        return Ok(());
    }
    bpf_loop(
        MAX_ANSWERS as u32,
        answer_record as *mut core::ffi::c_void,
        (&raw mut st).cast(),
        0,
    );
    Ok(())
}
