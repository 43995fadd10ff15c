//! Outbound connect(2) to IPv4/IPv6 addresses, with the syscall's result; and unix connects
//! that reach a container runtime's API socket the agent watches (`RuntimeClient`: who asks the
//! runtime, taken when they ask, not when the agent gets to the container's programs).
//!
//! Kernel contract (unix): a connected unix stream socket's `unix_sock.peer` is the socket the
//! listener accepted for it, whose `unix_sock.path` is the listener's bound name
//! (`unix_stream_connect` copies it), so its dentry's inode is the socket file's, whatever name
//! or mount the client connected through.
//!
//! Where the egress hooks are attached (`EGRESS_HOOKS_ON`, the usual case), an IPv4/IPv6
//! connect(2) costs its entry a mark on the thread's in-flight slot (`InFlightConnect`): the
//! hook builds the record there from the destination it is given (egress.rs), and the exit adds
//! the result and sends it. No user memory is read and no hash map is touched for it. Without
//! the hooks, the entry copies the `sockaddr` and the exit builds the record from it.
//!
//! Kernel contract: `syscalls/sys_enter_connect` record: `fd` at 16, `uservaddr` at 24, `addrlen`
//! at 32 (each 8 bytes wide); `syscalls/sys_exit_connect`: `ret` at 16. The socket type comes from
//! `file->private_data` (a `struct socket`, `type` field) of the descriptor (without the hooks).

use aya_ebpf::{
    helpers::generated::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use monitor_common::{
    ConnectEvent, EventKind, InodeKey, RuntimeClientEvent, AF_INET, AF_INET6, CONNECT_VIA_PING,
    CONNECT_VIA_SYSCALL,
};

use crate::{
    kernel::{
        count_error, current_task, event_scratch, file_of_fd, fill_header, is_agent, off,
        offsets_present, read, read_ptr, submit, tracepoint_word,
    },
    InFlightConnect, PendingConnect, CONNECTS_IN_FLIGHT, CONNECT_ENTERED, CONNECT_RECORDED,
    CONNECT_SLOTS, CONNECT_UNIX_PENDING, EGRESS_HOOKS_ON, PENDING_CONNECTS, RUNTIME_SOCKETS,
    RUNTIME_SOCKETS_ON,
};

const AF_UNIX: u16 = 1;

#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    if unsafe { try_enter(&ctx) }.is_err() {
        count_error(EventKind::NetConnect);
    }
    0
}

unsafe fn try_enter(ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_agent((pid_tgid >> 32) as u32) {
        return Ok(());
    }
    let fd = tracepoint_word(ctx, 16) as i32;
    let uaddr = tracepoint_word(ctx, 24);
    let tid = pid_tgid as u32;
    if egress_hooks_on() {
        // The hook sees the destination (egress.rs): only mark the thread, and look at the
        // family only when a unix connect could reach a runtime's socket.
        let unix = watching_runtime_sockets()
            && match family_at(uaddr) {
                Ok(family) => family == AF_UNIX,
                Err(_) => {
                    count_error(EventKind::NetConnect);
                    false
                }
            };
        if let Some(slot) = in_flight_slot(tid) {
            (*slot).tid = tid;
            (*slot).fd = fd;
            (*slot).state = if unix {
                CONNECT_UNIX_PENDING
            } else {
                CONNECT_ENTERED
            };
        }
        if unix {
            let mut pending = PendingConnect {
                fd,
                addr_len: 0,
                sockaddr: [0; 28],
                blocked: 0,
                via: CONNECT_VIA_SYSCALL as u32,
            };
            pending.sockaddr[0..2].copy_from_slice(&AF_UNIX.to_ne_bytes());
            PENDING_CONNECTS
                .insert(&tid, &pending, 0)
                .map_err(|e| e as i64)?;
        }
        return Ok(());
    }
    let addr_len = tracepoint_word(ctx, 32) as u32;
    let mut pending = PendingConnect {
        fd,
        addr_len,
        sockaddr: [0; 28],
        blocked: 0,
        via: CONNECT_VIA_SYSCALL as u32,
    };
    // Read the family first: most connects on a build machine are AF_UNIX, skip them cheaply.
    let family = family_at(uaddr)?;
    let copy_len = match family {
        AF_INET => 16u32,
        AF_INET6 => 28u32,
        AF_UNIX if watching_runtime_sockets() => {
            // Only the family: the socket it reaches is read at the exit, by identity.
            pending.sockaddr[0..2].copy_from_slice(&family.to_ne_bytes());
            PENDING_CONNECTS
                .insert(&tid, &pending, 0)
                .map_err(|e| e as i64)?;
            return Ok(());
        }
        _ => return Ok(()),
    };
    if addr_len < copy_len {
        return Ok(()); // the kernel will refuse it with EINVAL
    }
    let ret = bpf_probe_read_user(
        pending.sockaddr.as_mut_ptr().cast(),
        copy_len,
        uaddr as *const _,
    );
    if ret < 0 {
        return Err(ret);
    }
    PENDING_CONNECTS
        .insert(&tid, &pending, 0)
        .map_err(|e| e as i64)?;
    Ok(())
}

/// The address family of the `sockaddr` a process gave. A read fails on a bad pointer, and also
/// on memory the process has not touched yet (a file mapping whose page is not mapped: the
/// syscall's own copy faults it in, this read may not). Counted; the egress hook (egress.rs)
/// still reports an IPv4/IPv6 destination.
#[inline(always)]
unsafe fn family_at(uaddr: u64) -> Result<u16, i64> {
    let mut family = 0u16;
    let ret = bpf_probe_read_user((&raw mut family).cast(), 2, uaddr as *const _);
    if ret < 0 {
        return Err(ret);
    }
    Ok(family)
}

/// Whether every egress hook is attached (egress.rs reports connect(2) then).
#[inline(always)]
pub fn egress_hooks_on() -> bool {
    EGRESS_HOOKS_ON.get(0).is_some_and(|on| *on != 0)
}

/// The in-flight slot of thread `tid` (see `InFlightConnect`).
#[inline(always)]
pub fn in_flight_slot(tid: u32) -> Option<*mut InFlightConnect> {
    CONNECTS_IN_FLIGHT.get_ptr_mut(tid & (CONNECT_SLOTS - 1))
}

#[tracepoint(category = "syscalls", name = "sys_exit_connect")]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    if unsafe { try_exit(&ctx) }.is_err() {
        count_error(EventKind::NetConnect);
    }
    0
}

unsafe fn try_exit(ctx: &TracePointContext) -> Result<(), i64> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let ret = tracepoint_word(ctx, 16) as i64;
    if egress_hooks_on() {
        let Some(slot) = in_flight_slot(tid) else {
            return Ok(());
        };
        if (*slot).tid != tid {
            return Ok(());
        }
        (*slot).tid = 0;
        match (*slot).state {
            CONNECT_RECORDED => {
                (*slot).record.result = ret as i32;
                submit(
                    (&raw mut (*slot).record).cast(),
                    core::mem::size_of::<ConnectEvent>(),
                    EventKind::NetConnect,
                );
                return Ok(());
            }
            CONNECT_UNIX_PENDING => {}
            // Refused before the hook (a bad address, a socket already connected), or not an
            // IPv4/IPv6 socket: nothing left the machine.
            _ => return Ok(()),
        }
    }
    let Some(pending) = PENDING_CONNECTS.get_ptr(&tid) else {
        return Ok(());
    };
    let pending = *pending;
    let _ = PENDING_CONNECTS.remove(&tid);
    if !offsets_present() {
        return Ok(());
    }
    let task = current_task();
    let sa = pending.sockaddr;
    if u16::from_ne_bytes([sa[0], sa[1]]) == AF_UNIX {
        if ret == 0 {
            runtime_client(task, pending.fd);
        }
        return Ok(());
    }
    // Built in the per-CPU scratch, not on the stack: with `fill_header`'s frame the record
    // took the program past the 512 bytes of stack that kernels before 6.13 allow for a call
    // chain (6.1's verifier refused it; newer ones give such programs a private stack).
    let scratch = event_scratch().ok_or(-1i64)?;
    let event = &mut *(*scratch).bytes.as_mut_ptr().cast::<ConnectEvent>();
    fill_header(&raw mut event.header, EventKind::NetConnect, task);
    event.fd = pending.fd;
    event.result = ret as i32;
    event.via = pending.via as u8;
    event.blocked = pending.blocked as u8;
    event.sock_type = 0;
    let sa = pending.sockaddr;
    event.family = u16::from_ne_bytes([sa[0], sa[1]]);
    // A ping socket's "port" is its echo identifier, not a destination port.
    event.port = if pending.via == CONNECT_VIA_PING as u32 {
        0
    } else {
        u16::from_be_bytes([sa[2], sa[3]])
    };
    event.addr = [0; 16];
    if event.family == AF_INET {
        event.addr[0] = sa[4];
        event.addr[1] = sa[5];
        event.addr[2] = sa[6];
        event.addr[3] = sa[7];
    } else {
        // sockaddr_in6: port at 2, flowinfo at 4, address at 8..24.
        let mut i = 0;
        while i < 16 {
            event.addr[i] = sa[8 + i];
            i += 1;
        }
    }
    if let Ok(file) = file_of_fd(task, pending.fd as i64) {
        if let Ok(socket) = read_ptr(file, off!(file_private_data)) {
            event.sock_type = read::<u16>(socket, off!(socket_type)).unwrap_or(0);
        }
    }
    submit(
        scratch,
        core::mem::size_of::<ConnectEvent>(),
        EventKind::NetConnect,
    );
    Ok(())
}

/// Whether the agent watches a runtime socket, and the kernel's layout lets a unix socket be
/// followed to its peer's name.
#[inline(always)]
fn watching_runtime_sockets() -> bool {
    off!(unix_sock_peer) != 0
        && off!(unix_sock_path) != 0
        && RUNTIME_SOCKETS_ON.get(0).is_some_and(|on| *on != 0)
}

/// Sends a `RuntimeClient` record when the unix socket at `fd`, just connected, reaches a
/// watched runtime socket: its peer's bound name's inode is one of `RUNTIME_SOCKETS`.
#[inline(always)]
unsafe fn runtime_client(task: *const u8, fd: i32) {
    let Some(key) = peer_identity(task, fd) else {
        return;
    };
    let Some(socket) = RUNTIME_SOCKETS.get(&key) else {
        return;
    };
    let Some(scratch) = event_scratch() else {
        return;
    };
    let event = (*scratch).bytes.as_mut_ptr().cast::<RuntimeClientEvent>();
    fill_header(&raw mut (*event).header, EventKind::RuntimeClient, task);
    (*event).fd = fd;
    (*event).socket = *socket;
    submit(
        scratch,
        core::mem::size_of::<RuntimeClientEvent>(),
        EventKind::RuntimeClient,
    );
}

/// The identity (device, inode) of the name the peer of the unix socket at `fd` is bound to.
#[inline(always)]
unsafe fn peer_identity(task: *const u8, fd: i32) -> Option<InodeKey> {
    let file = file_of_fd(task, fd as i64).ok()?;
    let socket = read_ptr(file, off!(file_private_data)).ok()?;
    let sk = read_ptr(socket, off!(socket_sk)).ok()?;
    let peer = read_ptr(sk, off!(unix_sock_peer)).ok()?;
    let dentry = read_ptr(peer, off!(unix_sock_path) + off!(path_dentry)).ok()?;
    let inode = read_ptr(dentry, off!(dentry_d_inode)).ok()?;
    let sb = read_ptr(inode, off!(inode_i_sb)).ok()?;
    Some(InodeKey {
        ino: read::<u64>(inode, off!(inode_i_ino)).ok()?,
        dev: read::<u32>(sb, off!(sb_s_dev)).ok()?,
        _pad0: 0,
    })
}
