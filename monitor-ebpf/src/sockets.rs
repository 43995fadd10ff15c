//! Sockets that bypass addresses and ports, so no egress rule can judge what they send:
//! raw IPv4/IPv6 sockets (`SOCK_RAW`, any protocol) and packet sockets (`AF_PACKET`). Both need
//! CAP_NET_RAW, which a job running as root has. Reported as a connect record with
//! `CONNECT_VIA_RAW_SOCKET`; in block mode a judged process's raw socket is refused.
//! Ping sockets (`SOCK_DGRAM` with ICMP, which unprivileged users may open) have addresses but
//! no socket-address hook for their sends: their makers are kept here for the packet-level
//! hook that names each echo's destination (dns_question.rs `try_ping`).
//!
//! Kernel contract: `BPF_CGROUP_INET_SOCK_CREATE` runs in `inet_create`/`inet6_create` for every
//! IPv4/IPv6 socket, whatever made it (socket(2), the 32-bit entry, io_uring), with `family`,
//! `type` and `protocol` in `struct bpf_sock`; returning 0 fails the creation with EPERM.
//! `AF_PACKET` has no cgroup hook: `syscalls/sys_enter_socket` (family at 16, type at 24,
//! protocol at 32) sees the 64-bit syscall.

use aya_ebpf::{
    helpers::generated::bpf_get_socket_cookie,
    macros::{cgroup_sock, tracepoint},
    programs::{SockContext, TracePointContext},
};
use monitor_common::{
    ConnectEvent, EventHeader, EventKind, AF_PACKET, CONNECT_VIA_RAW_SOCKET, SOCK_DGRAM, SOCK_RAW,
};

use crate::{
    block::enforced_slot,
    kernel::{current_task, fill_header, is_agent, offsets_present, submit_fixed, tracepoint_word},
    PING_SOCKET_OWNERS,
};

/// `type` carries flags (SOCK_NONBLOCK, SOCK_CLOEXEC) above the type itself.
const SOCK_TYPE_MASK: u32 = 0xf;

#[inline(always)]
fn report(family: u16, protocol: u16, blocked: bool) {
    let pid_tgid = unsafe { aya_ebpf::helpers::generated::bpf_get_current_pid_tgid() };
    if is_agent((pid_tgid >> 32) as u32) || !offsets_present() {
        return;
    }
    let mut event = ConnectEvent::default();
    unsafe { fill_header(&raw mut event.header, EventKind::NetConnect, current_task()) };
    event.fd = -1;
    event.result = if blocked { -1 } else { 0 };
    event.family = family;
    event.sock_type = SOCK_RAW;
    event.port = protocol;
    event.via = CONNECT_VIA_RAW_SOCKET;
    event.blocked = blocked as u8;
    unsafe { submit_fixed(&event, EventKind::NetConnect) };
}

#[cgroup_sock(sock_create)]
pub fn raw_sockets(ctx: SockContext) -> i32 {
    let sock = ctx.sock;
    let kind = unsafe { (*sock).type_ } & SOCK_TYPE_MASK;
    if kind == SOCK_DGRAM as u32 {
        let protocol = unsafe { (*sock).protocol };
        if protocol == IPPROTO_ICMP || protocol == IPPROTO_ICMPV6 {
            keep_ping_owner(&ctx);
        }
        return 1;
    }
    if kind != SOCK_RAW as u32 {
        return 1;
    }
    let family = unsafe { (*sock).family } as u16;
    let protocol = unsafe { (*sock).protocol } as u16;
    let refuse = enforced_slot().is_some();
    report(family, protocol, refuse);
    if refuse {
        0
    } else {
        1
    }
}

const IPPROTO_ICMP: u32 = 1;
const IPPROTO_ICMPV6: u32 = 58;

/// A ping socket's maker, kept under the socket's cookie for its echo requests, which are seen
/// only as packets (dns_question.rs `try_ping`), where the sender is not always current.
#[inline(always)]
fn keep_ping_owner(ctx: &SockContext) {
    let pid_tgid = unsafe { aya_ebpf::helpers::generated::bpf_get_current_pid_tgid() };
    if is_agent((pid_tgid >> 32) as u32) || !offsets_present() {
        return;
    }
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock.cast()) };
    let mut owner = EventHeader::default();
    unsafe { fill_header(&raw mut owner, EventKind::NetConnect, current_task()) };
    let _ = PING_SOCKET_OWNERS.insert(&cookie, &owner, 0);
}

#[tracepoint(category = "syscalls", name = "sys_enter_socket")]
pub fn sys_enter_socket(ctx: TracePointContext) -> u32 {
    // Every socket(2) of every process passes here: the family is read in place.
    let family = tracepoint_word(&ctx, 16);
    if family as u16 != AF_PACKET {
        return 0;
    }
    let protocol = tracepoint_word(&ctx, 32) as u16;
    // ETH_P_* in network byte order: shown as the host's number.
    report(AF_PACKET, u16::from_be(protocol), false);
    0
}
