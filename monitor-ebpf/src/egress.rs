//! Every route out, in one place: cgroup socket-address programs at the cgroup v2 root see each
//! IPv4/IPv6 connect and each datagram sent with a destination, whatever made it (`connect(2)`,
//! io_uring, a 32-bit syscall, TCP Fast Open, `sendto`/`sendmsg`/`sendmmsg`). They always run:
//! in audit mode they only report; in block mode they also refuse (block.rs decides).
//!
//! Kernel contract: `BPF_CGROUP_INET{4,6}_CONNECT` runs from the protocol's `pre_connect` for
//! every connect of a TCP or UDP socket (inet_stream_connect, inet_dgram_connect, TCP Fast Open's
//! `tcp_sendmsg_fastopen`, io_uring's connect), in the connecting task's context;
//! `BPF_CGROUP_UDP{4,6}_SENDMSG` runs in `udp_sendmsg`/`udpv6_sendmsg` when the message names a
//! destination and the socket is not connected. `user_ip4`, `user_ip6` and `user_port` are in
//! network byte order. Attached as bpf links, so programs that systemd or a container runtime
//! attach below the root still run.
//!
//! What is reported, so a stream is one record and `connect(2)` is not reported twice:
//! - a connect inside `connect(2)` (connect.rs marked its thread's in-flight slot at the
//!   syscall's entry) is built here, in that slot, and sent by the syscall's exit, which adds
//!   the result; without every hook attached the entry copies the address instead
//!   (`PENDING_CONNECTS`) and a refusal here is marked on that entry;
//! - anything else once per socket and destination (`EGRESS_SEEN`, LRU).

use aya_ebpf::{
    helpers::generated::{bpf_get_current_pid_tgid, bpf_get_socket_cookie},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use monitor_common::{
    ConnectEvent, EgressSeenKey, EventKind, AF_INET, AF_INET6, CONNECT_VIA_OTHER, CONNECT_VIA_PING,
    CONNECT_VIA_SEND, CONNECT_VIA_SYSCALL, SOCK_DGRAM, SOCK_STREAM,
};

use crate::{
    block::{allows_v4, allows_v6, enforced_slot},
    connect::{egress_hooks_on, in_flight_slot},
    kernel::{
        copy_header, event_scratch, fill_current_header, is_agent, offsets_present,
        sock_addr_types_task, submit,
    },
    InFlightConnect, CONNECT_ENTERED, CONNECT_RECORDED, DNS_SOCKET_OWNERS, EGRESS_SEEN,
    PENDING_CONNECTS,
};

const ALLOW: i32 = 1;
const DENY: i32 = 0;

/// A destination as the hooks see it: family, address bytes (IPv4 in the first 4), port in
/// host byte order.
struct Destination {
    family: u16,
    addr: [u8; 16],
    port: u16,
}

#[inline(always)]
fn destination4(ctx: &SockAddrContext) -> Destination {
    let sa = ctx.sock_addr;
    let ip = unsafe { (*sa).user_ip4 }.to_ne_bytes();
    let mut addr = [0u8; 16];
    addr[0] = ip[0];
    addr[1] = ip[1];
    addr[2] = ip[2];
    addr[3] = ip[3];
    Destination {
        family: AF_INET,
        addr,
        port: u16::from_be(unsafe { (*sa).user_port } as u16),
    }
}

#[inline(always)]
fn destination6(ctx: &SockAddrContext) -> Destination {
    let sa = ctx.sock_addr;
    let words = unsafe {
        [
            (*sa).user_ip6[0],
            (*sa).user_ip6[1],
            (*sa).user_ip6[2],
            (*sa).user_ip6[3],
        ]
    };
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
    Destination {
        family: AF_INET6,
        addr,
        port: u16::from_be(unsafe { (*sa).user_port } as u16),
    }
}

/// Block mode's verdict for the current process (allowed unless it is judged and the
/// destination is not its job's).
#[inline(always)]
fn verdict(dest: &Destination) -> i32 {
    let Some(slot) = enforced_slot() else {
        return ALLOW;
    };
    let allowed = if dest.family == AF_INET {
        allows_v4(
            slot,
            [dest.addr[0], dest.addr[1], dest.addr[2], dest.addr[3]],
            dest.port,
        )
    } else {
        allows_v6(slot, &dest.addr, dest.port)
    };
    if allowed {
        ALLOW
    } else {
        DENY
    }
}

/// Whether the current thread is inside `connect(2)` to this destination (connect.rs reports
/// it at the syscall's exit); a refusal, and a ping socket, are marked there.
#[inline(always)]
fn inside_connect_syscall(tid: u32, dest: &Destination, refused: bool, ping: bool) -> bool {
    let Some(pending) = PENDING_CONNECTS.get_ptr_mut(&tid) else {
        return false;
    };
    let sa = unsafe { (*pending).sockaddr };
    let same_port = u16::from_be_bytes([sa[2], sa[3]]) == dest.port;
    let same_family = u16::from_ne_bytes([sa[0], sa[1]]) == dest.family;
    // sockaddr_in: address at 4; sockaddr_in6: at 8.
    let same_addr = if dest.family == AF_INET {
        sa[4] == dest.addr[0]
            && sa[5] == dest.addr[1]
            && sa[6] == dest.addr[2]
            && sa[7] == dest.addr[3]
    } else {
        let mut i = 0;
        let mut same = true;
        while i < 16 {
            if sa[8 + i] != dest.addr[i] {
                same = false;
            }
            i += 1;
        }
        same
    };
    if !(same_port && same_family && same_addr) {
        return false;
    }
    if refused {
        unsafe { (*pending).blocked = 1 };
    }
    if ping {
        unsafe { (*pending).via = CONNECT_VIA_PING as u32 };
    }
    true
}

const IPPROTO_ICMP: u32 = 1;
const IPPROTO_ICMPV6: u32 = 58;

/// Whether the socket is a ping socket (`SOCK_DGRAM` with ICMP: Linux 6.0+ runs the connect
/// hooks for them). Its destination has no port (the "port" is its echo identifier), and its
/// echoes are seen as packets too (dns_question.rs `try_ping`), which this one report covers.
#[inline(always)]
fn is_ping_socket(ctx: &SockAddrContext) -> bool {
    let sa = ctx.sock_addr;
    unsafe {
        (*sa).type_ == SOCK_DGRAM as u32
            && ((*sa).protocol == IPPROTO_ICMP || (*sa).protocol == IPPROTO_ICMPV6)
    }
}

/// Reports the destination unless it was reported already (see the module comment), then
/// returns the verdict.
#[inline(always)]
fn observe(ctx: &SockAddrContext, dest: Destination, via: u8) -> i32 {
    let ping = is_ping_socket(ctx);
    let asked_port = dest.port;
    let (dest, via) = if ping {
        (Destination { port: 0, ..dest }, CONNECT_VIA_PING)
    } else {
        (dest, via)
    };
    let verdict = verdict(&dest);
    let pid_tgid = unsafe { bpf_get_current_pid_tgid() };
    if is_agent((pid_tgid >> 32) as u32) || !offsets_present() {
        return verdict;
    }
    let refused = verdict == DENY;
    let socket_cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    // Records are built in the per-CPU scratch, not on the stack: 6.1's verifier refuses this
    // program's stack with them there (over 512 bytes with the block-mode lookups' own).
    let Some(scratch) = event_scratch() else {
        return verdict;
    };
    let event = unsafe { (*scratch).bytes.as_mut_ptr() }.cast::<ConnectEvent>();
    // The header is built once, on first need: the socket's owner and the record share it.
    let mut header_built = false;
    let header = unsafe { &raw mut (*event).header };
    let sock_type = unsafe { (*ctx.sock_addr).type_ };
    if dest.port == 53 {
        // Its questions and answers are captured as packets (dns_question.rs, dns_answer.rs),
        // where the sender is not known.
        unsafe {
            fill_current_header(header, EventKind::NetDns, sock_addr_types_task());
            let _ = DNS_SOCKET_OWNERS.insert(&socket_cookie, &*header, 0);
        }
        header_built = true;
    } else if via != CONNECT_VIA_SEND && sock_type == SOCK_STREAM as u32 {
        // Its first TLS hello is read as a packet (dns_question.rs), where the sender is not
        // known either.
        unsafe {
            fill_current_header(header, EventKind::NetTls, sock_addr_types_task());
            crate::tls_owner::keep(socket_cookie, header);
        }
        header_built = true;
    }
    let key = EgressSeenKey {
        socket_cookie,
        addr: dest.addr,
        port: dest.port,
        family: dest.family,
        _pad0: 0,
    };
    if via != CONNECT_VIA_SEND {
        // Inside connect(2): the record waits in the thread's slot for the syscall's result.
        if let Some(slot) = connect_syscall_slot(pid_tgid as u32) {
            unsafe {
                if !header_built {
                    fill_current_header(header, EventKind::NetConnect, sock_addr_types_task());
                }
                let record = &raw mut (*slot).record;
                copy_header(&raw mut (*record).header, header);
                (*record).header.kind = EventKind::NetConnect as u32;
                (*record).fd = (*slot).fd;
                (*record).result = 0;
                (*record).family = dest.family;
                (*record).sock_type = sock_type as u16;
                (*record).port = dest.port;
                (*record).via = if ping {
                    CONNECT_VIA_PING
                } else {
                    CONNECT_VIA_SYSCALL
                };
                (*record).blocked = refused as u8;
                (*record).addr = dest.addr;
                (*slot).state = CONNECT_RECORDED;
            }
            if ping {
                let _ = EGRESS_SEEN.insert(&key, &0u8, 0);
            }
            return verdict;
        }
        let asked = Destination {
            port: asked_port,
            ..dest
        };
        if inside_connect_syscall(pid_tgid as u32, &asked, refused, ping) {
            if ping {
                let _ = EGRESS_SEEN.insert(&key, &0u8, 0);
            }
            return verdict;
        }
    }
    if EGRESS_SEEN.get_ptr(&key).is_some() {
        return verdict;
    }
    let _ = EGRESS_SEEN.insert(&key, &0u8, 0);
    unsafe {
        if !header_built {
            fill_current_header(header, EventKind::NetConnect, sock_addr_types_task());
        }
        (*event).header.kind = EventKind::NetConnect as u32;
        (*event).fd = -1;
        // EPERM, as the process sees it; otherwise not known here.
        (*event).result = if refused { -1 } else { 0 };
        (*event).family = dest.family;
        (*event).sock_type = sock_type as u16;
        (*event).port = dest.port;
        (*event).via = via;
        (*event).blocked = refused as u8;
        (*event).addr = dest.addr;
        submit(
            scratch,
            core::mem::size_of::<ConnectEvent>(),
            EventKind::NetConnect,
        );
    }
    verdict
}

/// The in-flight slot of thread `tid` when it is inside connect(2) and its destination is not
/// recorded yet (connect.rs marked it at the syscall's entry).
#[inline(always)]
fn connect_syscall_slot(tid: u32) -> Option<*mut InFlightConnect> {
    if !egress_hooks_on() {
        return None;
    }
    let slot = in_flight_slot(tid)?;
    unsafe { ((*slot).tid == tid && (*slot).state == CONNECT_ENTERED).then_some(slot) }
}

#[cgroup_sock_addr(connect4)]
pub fn egress_connect4(ctx: SockAddrContext) -> i32 {
    observe(&ctx, destination4(&ctx), CONNECT_VIA_OTHER)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn egress_sendmsg4(ctx: SockAddrContext) -> i32 {
    observe(&ctx, destination4(&ctx), CONNECT_VIA_SEND)
}

#[cgroup_sock_addr(connect6)]
pub fn egress_connect6(ctx: SockAddrContext) -> i32 {
    observe(&ctx, destination6(&ctx), CONNECT_VIA_OTHER)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn egress_sendmsg6(ctx: SockAddrContext) -> i32 {
    observe(&ctx, destination6(&ctx), CONNECT_VIA_SEND)
}
