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

use aya_ebpf::{
    helpers::generated::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use monitor_common::{
    DnsEvent, DnsSocketKey, EventKind, AF_INET, AF_INET6, DNS_PAYLOAD_MAX, DNS_READ_BUF,
    DNS_READ_MMSGHDR, DNS_READ_MSGHDR, DNS_TRUNCATED,
};

use crate::{
    kernel::{
        current_task, event_scratch, file_of_fd, fill_header, is_agent, off, offsets_present, read,
        read_ptr, submit,
    },
    PendingDnsRead, DNS_SOCKETS, PENDING_DNS_READS,
};

const DNS_PORT: u16 = 53;

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
    (*event).sock_type = match file_of_fd(task, pending.fd as i64) {
        Ok(file) => match read_ptr(file, off!(file_private_data)) {
            Ok(socket) => read::<u16>(socket, off!(socket_type)).unwrap_or(0),
            Err(_) => 0,
        },
        Err(_) => 0,
    };
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
    submit(scratch, header_len + copy, EventKind::NetDns);
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
    let _ = unsafe { on_read_exit(&ctx) };
    0
}
