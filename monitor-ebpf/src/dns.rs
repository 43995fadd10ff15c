//! DNS answers, captured where the process receives them, whatever resolver it talks to.
//!
//! A descriptor becomes a DNS socket when its process connects it, or sends on it, to port 53
//! (glibc, c-ares and Go connect their UDP sockets; musl sends with an address). Reads on a DNS
//! socket (recvfrom, recvmsg, recvmmsg, read) copy what was received into a `DnsEvent`; the
//! agent parses it. Every other read costs one hash lookup at entry.
//!
//! Kernel contract (syscall tracepoint records, 8-byte fields from offset 16):
//! sendto(fd, buff, len, flags, addr, addr_len): addr at 48; sendmsg/sendmmsg(fd, msg, ...): msg
//! at 24; recvfrom(fd, ubuf, size, ...): ubuf at 24; recvmsg/recvmmsg(fd, msg, ...): msg at 24;
//! read(fd, buf, count): buf at 24; exits: ret at 16. User structures (x86-64 and arm64 ABI):
//! `msghdr` {name @0, namelen @8, iov @16, iovlen @24, ...} of 56 bytes, then `mmsghdr.msg_len`
//! @56; `iovec` {base @0, len @8}; `sockaddr_in{,6}`: family @0, port @2 (network order).

use aya_ebpf::{helpers::generated::bpf_loop, maps::lpm_trie::Key};
use aya_ebpf::{
    helpers::generated::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use monitor_common::{
    fnv_step, name_step, DnsAskedKey, DnsEvent, DnsSocketKey, EventKind, NameHashKey, PortSet,
    AF_INET, AF_INET6, DNS_FROM_ASKED, DNS_PAYLOAD_MAX, DNS_READ_BUF, DNS_READ_MMSGHDR,
    DNS_READ_MSGHDR, DNS_TRUNCATED, EVENT_SCRATCH_LEN, FNV_OFFSET,
};

use crate::{
    kernel::{
        count_error, current_task, event_scratch, file_of_fd, fill_header, is_agent, off,
        offsets_present, read, read_ptr, submit,
    },
    PendingDnsRead, ALLOWED_NAMES, ALLOW_V4, ALLOW_V6, DNS_ASKED, DNS_SOCKETS, DNS_VERIFY,
    PENDING_DNS_READS,
};

const DNS_PORT: u16 = 53;
const SOCK_STREAM: u16 = 1;
const MAX_LABELS: usize = 16;
const MAX_ANSWERS: usize = 8;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

/// A byte of the captured message (the mask keeps every access inside the scratch buffer).
#[inline(always)]
unsafe fn byte(msg: *const u8, i: usize) -> u8 {
    *msg.add(i & DNS_PAYLOAD_MAX)
}

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

/// The captured message (after the `DnsEvent` header in the scratch buffer).
#[inline(always)]
fn message() -> Option<*mut u8> {
    let scratch = event_scratch()?;
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
    let scratch = event_scratch()?;
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

/// Block mode, tail-called from the DNS read exit once the response is in the scratch buffer:
/// when the question is a name the job may reach (exactly, or under an allowed `*.` domain),
/// allows the answer's A and AAAA addresses with that name's ports, before the process can use
/// them. Needs `bpf_loop` (Linux 5.17+); loaded only in block mode. Anything unexpected stops
/// the parse, so the address stays refused (fail closed). An address already allowed keeps its
/// first ports.
#[tracepoint(category = "syscalls", name = "sys_exit_read")]
pub fn dns_block_answers(_ctx: TracePointContext) -> u32 {
    let _ = unsafe { try_block_answers() };
    0
}

unsafe fn try_block_answers() -> Result<(), i64> {
    let Some(slot) = crate::block::enforced_slot() else {
        return Ok(());
    };
    let scratch = event_scratch().ok_or(-1i64)?;
    let event = (*scratch).bytes.as_ptr().cast::<DnsEvent>();
    let len = ((*event).payload_len as usize) & DNS_PAYLOAD_MAX;
    let msg = message().ok_or(-1i64)?;
    let mut start = 0usize;
    if (*event).sock_type == SOCK_STREAM
        && len >= 2
        && (((byte(msg, 0) as usize) << 8) | byte(msg, 1) as usize) + 2 == len
    {
        start = 2;
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

#[inline(always)]
unsafe fn user<T: Copy + Default>(addr: u64) -> Result<T, i64> {
    let mut value = T::default();
    let ret = bpf_probe_read_user(
        (&raw mut value).cast(),
        core::mem::size_of::<T>() as u32,
        addr as *const _,
    );
    if ret < 0 {
        return Err(ret);
    }
    Ok(value)
}

/// Remembers `fd` of the current process as a DNS socket, with the file it names now: a later
/// file opened on the same descriptor number is not a DNS socket.
#[inline(always)]
pub unsafe fn mark_dns_socket(tgid: u32, fd: i32) {
    if !offsets_present() {
        return;
    }
    let Ok(file) = file_of_fd(current_task(), fd as i64) else {
        return;
    };
    let key = DnsSocketKey { tgid, fd };
    let _ = DNS_SOCKETS.insert(&key, &(file as u64), 0);
}

/// Whether the user sockaddr at `addr` is an IPv4/IPv6 address on port 53.
#[inline(always)]
unsafe fn is_dns_address(addr: u64) -> bool {
    if addr == 0 {
        return false;
    }
    let Ok(head) = user::<[u8; 4]>(addr) else {
        return false;
    };
    let family = u16::from_ne_bytes([head[0], head[1]]);
    (family == AF_INET || family == AF_INET6) && u16::from_be_bytes([head[2], head[3]]) == DNS_PORT
}

#[inline(always)]
unsafe fn on_send(ctx: &TracePointContext, sockaddr_at: SockaddrAt) -> Result<(), i64> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if is_agent(tgid) {
        return Ok(());
    }
    let fd = ctx.read_at::<u64>(16).map_err(|e| e as i64)? as i32;
    let addr = match sockaddr_at {
        SockaddrAt::Arg(offset) => ctx.read_at::<u64>(offset).map_err(|e| e as i64)?,
        SockaddrAt::MsgName => {
            let msg = ctx.read_at::<u64>(24).map_err(|e| e as i64)?;
            user::<u64>(msg)?
        }
    };
    if is_dns_address(addr) {
        mark_dns_socket(tgid, fd);
    }
    Ok(())
}

enum SockaddrAt {
    Arg(usize),
    MsgName,
}

#[tracepoint(category = "syscalls", name = "sys_enter_sendto")]
pub fn sys_enter_sendto(ctx: TracePointContext) -> u32 {
    let _ = unsafe { on_send(&ctx, SockaddrAt::Arg(48)) };
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_sendmsg")]
pub fn sys_enter_sendmsg(ctx: TracePointContext) -> u32 {
    let _ = unsafe { on_send(&ctx, SockaddrAt::MsgName) };
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_sendmmsg")]
pub fn sys_enter_sendmmsg(ctx: TracePointContext) -> u32 {
    // The first message's address: resolvers send one query (or an A/AAAA pair) per call.
    let _ = unsafe { on_send(&ctx, SockaddrAt::MsgName) };
    0
}

/// At a read's entry: remember where the data will land, if the descriptor is a DNS socket.
#[inline(always)]
unsafe fn on_read_enter(ctx: &TracePointContext, how: u32) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let fd = ctx.read_at::<u64>(16).map_err(|e| e as i64)? as i32;
    let key = DnsSocketKey {
        tgid: (pid_tgid >> 32) as u32,
        fd,
    };
    let Some(marked) = DNS_SOCKETS.get_ptr(&key) else {
        return Ok(());
    };
    // The descriptor was closed and reused since: forget it.
    if file_of_fd(current_task(), fd as i64).map(|f| f as u64) != Ok(*marked) {
        let _ = DNS_SOCKETS.remove(&key);
        return Ok(());
    }
    let pending = PendingDnsRead {
        fd,
        how,
        buf: ctx.read_at::<u64>(24).map_err(|e| e as i64)?,
    };
    PENDING_DNS_READS
        .insert(&(pid_tgid as u32), &pending, 0)
        .map_err(|e| e as i64)
}

/// At a read's exit: copy what was received.
#[inline(always)]
unsafe fn on_read_exit(ctx: &TracePointContext) -> Result<(), i64> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(pending) = PENDING_DNS_READS.get_ptr(&tid) else {
        return Ok(());
    };
    let pending = *pending;
    let _ = PENDING_DNS_READS.remove(&tid);
    let ret = ctx.read_at::<i64>(16).map_err(|e| e as i64)?;
    if ret <= 0 || !offsets_present() {
        return Ok(());
    }
    let (data, received) = match pending.how {
        DNS_READ_BUF => (pending.buf, ret as u64),
        DNS_READ_MSGHDR | DNS_READ_MMSGHDR => {
            let iov = user::<u64>(pending.buf + 16)?;
            let base = user::<u64>(iov)?;
            let iov_len = user::<u64>(iov + 8)?;
            let received = if pending.how == DNS_READ_MSGHDR {
                ret as u64
            } else {
                user::<u32>(pending.buf + 56)? as u64
            };
            (
                base,
                if received < iov_len {
                    received
                } else {
                    iov_len
                },
            )
        }
        _ => return Ok(()),
    };
    let task = current_task();
    let scratch = event_scratch().ok_or(-1i64)?;
    let base = (*scratch).bytes.as_mut_ptr();
    let event = base as *mut DnsEvent;
    fill_header(&raw mut (*event).header, EventKind::NetDns, task);
    (*event).fd = pending.fd;
    (*event)._pad0 = 0;
    let socket = file_of_fd(task, pending.fd as i64)
        .and_then(|file| read_ptr(file, off!(file_private_data)))
        .unwrap_or(core::ptr::null());
    (*event).sock_type = read::<u16>(socket, off!(socket_type)).unwrap_or(0);
    // The socket cookie, for the answer check (dns_question.rs): 0 when none was made.
    let cookie = read_ptr(socket, off!(socket_sk))
        .and_then(|sk| read::<u64>(sk, off!(sock_cookie)))
        .unwrap_or(0);
    let mut copy = received as usize;
    if copy > DNS_PAYLOAD_MAX {
        copy = DNS_PAYLOAD_MAX;
        (*event).header.flags |= DNS_TRUNCATED;
    }
    // Masked so the verifier sees the bound.
    let copy = copy & DNS_PAYLOAD_MAX;
    let header_len = core::mem::size_of::<DnsEvent>();
    if bpf_probe_read_user(base.add(header_len).cast(), copy as u32, data as *const _) < 0 {
        return Ok(());
    }
    (*event).payload_len = copy as u32;
    (*event).received_len = received as u32;
    // The message: at the start, or after TCP's 2-byte length when that was read with it.
    let at = base.add(header_len);
    let from_asked = copy >= 4
        && cookie != 0
        && (answered(cookie, at, copy) || answered(cookie, at.add(2), copy - 2));
    if from_asked {
        (*event).header.flags |= DNS_FROM_ASKED;
    }

    submit(scratch, header_len + copy, EventKind::NetDns);
    // Block mode: allow an allowed name's addresses before the process can use them (the parse
    // lives in its own program: see `dns_block_answers`). Without it the call does nothing. A
    // forged answer (not from where the question went) allows nothing, once the packet
    // programs that tell are attached.
    let verifying = DNS_VERIFY.get(0).is_some_and(|on| *on != 0);
    if crate::block::enforced_slot().is_some() && (from_asked || !verifying) {
        let _ = crate::BLOCK_PARSER.tail_call(ctx, 0);
    }
    Ok(())
}

#[tracepoint(category = "syscalls", name = "sys_enter_recvfrom")]
pub fn sys_enter_recvfrom(ctx: TracePointContext) -> u32 {
    let _ = unsafe { on_read_enter(&ctx, DNS_READ_BUF) };
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_read")]
pub fn sys_enter_read(ctx: TracePointContext) -> u32 {
    let _ = unsafe { on_read_enter(&ctx, DNS_READ_BUF) };
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_recvmsg")]
pub fn sys_enter_recvmsg(ctx: TracePointContext) -> u32 {
    let _ = unsafe { on_read_enter(&ctx, DNS_READ_MSGHDR) };
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_recvmmsg")]
pub fn sys_enter_recvmmsg(ctx: TracePointContext) -> u32 {
    let _ = unsafe { on_read_enter(&ctx, DNS_READ_MMSGHDR) };
    0
}

/// One program serves every read exit (they share the record layout).
#[tracepoint(category = "syscalls", name = "sys_exit_read")]
pub fn sys_exit_dns_read(ctx: TracePointContext) -> u32 {
    // Only where a DNS answer was expected (the entry matched a DNS socket): other reads'
    // failures are the reader's own business.
    if unsafe { on_read_exit(&ctx) }.is_err() {
        count_error(EventKind::NetDns);
    }
    0
}

/// Whether the message of `len` bytes at `message` (in the scratch buffer) is the answer that
/// arrived from where its question went, on the socket with `cookie` (dns_question.rs).
#[inline(always)]
unsafe fn answered(cookie: u64, message: *const u8, len: usize) -> bool {
    let key = DnsAskedKey {
        socket_cookie: cookie,
        id: u16::from_be_bytes([*message, *message.add(1)]),
        _pad0: [0; 6],
    };
    let Some(asked) = DNS_ASKED.get(&key) else {
        return false;
    };
    let n = asked.answered as usize;
    let matches = n != 0
        && n <= len
        && (asked.answer_len == 0 || asked.answer_len as usize == len)
        && crate::dns_question::hash_head(message, n) == asked.answer_hash;
    if matches {
        // One answer per question: a second datagram with the same id and start, sent by
        // someone else after the real one arrived, is not vouched for.
        let _ = DNS_ASKED.remove(&key);
    }
    matches
}
