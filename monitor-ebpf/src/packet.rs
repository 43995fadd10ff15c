//! The headers of a packet as the `cgroup_skb` programs see it (dns_question.rs on the way out,
//! dns_answer.rs on the way in), read once per packet, and the helpers those programs share.
//!
//! Kernel contract: in `BPF_CGROUP_INET_EGRESS` and `BPF_CGROUP_INET_INGRESS` programs
//! `skb->data` is at the network header (IPv4 or IPv6; IPv6 extension headers are not
//! followed), and `__sk_buff.data`/`data_end` bound the packet's linear part, which a program
//! loaded with `CAP_BPF` or `CAP_SYS_ADMIN` may read directly (cgroup skb direct packet access,
//! Linux 4.20). The IP and transport headers of a packet sent by a local socket, or delivered
//! to one (the transport has pulled its header by then), are in the linear part; where they are
//! not, the same fields are read with `bpf_skb_load_bytes`.

use aya_ebpf::{
    helpers::generated::{bpf_ktime_get_boot_ns, bpf_skb_load_bytes},
    programs::SkBuffContext,
};
use monitor_common::{EventHeader, EventKind, AF_INET, AF_INET6};

pub(crate) const IPPROTO_ICMP: u8 = 1;
pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;
pub(crate) const IPPROTO_ICMPV6: u8 = 58;

/// What the packet programs decide on. Read straight from the packet where its headers are in
/// the linear part: a load helper call per field cost the egress program nine calls per packet
/// (each of its three checks parsed the IP header again), most of its time on a connect storm.
#[derive(Clone, Copy)]
pub(crate) struct Headers {
    pub family: u16,
    pub protocol: u8,
    /// TCP and UDP: the ports, host byte order; 0 for other protocols.
    pub src_port: u16,
    pub dst_port: u16,
    /// Where the transport's data starts: after a TCP header's options, after UDP's 8 bytes;
    /// the transport header itself for other protocols.
    pub payload_at: usize,
    /// ICMP and ICMPv6: the message type; 0 for other protocols.
    pub icmp_type: u8,
    /// The whole packet's length (`skb->len`).
    pub len: usize,
}

/// The packet's headers: `None` when it is neither IPv4 nor IPv6, or too short to hold them.
#[inline(always)]
pub(crate) fn headers(ctx: &SkBuffContext) -> Option<Headers> {
    match read_direct(ctx) {
        Some(headers) => Some(headers),
        None => read_loaded(ctx),
    }
}

/// Transport header bytes read: TCP's data offset is its 13th byte.
const TRANSPORT_READ: usize = 14;

#[inline(always)]
fn read_direct(ctx: &SkBuffContext) -> Option<Headers> {
    // `__sk_buff.data` and `data_end` are 32-bit context fields the verifier rewrites into the
    // packet pointers (aya keeps its accessors to itself).
    let data = unsafe { (*ctx.skb.skb).data } as usize;
    let end = unsafe { (*ctx.skb.skb).data_end } as usize;
    if data + 40 > end {
        return None;
    }
    let first = unsafe { *(data as *const u8) };
    let (ip_len, protocol, family) = match first >> 4 {
        4 => (
            ((first & 0x0f) as usize) * 4,
            unsafe { *((data + 9) as *const u8) },
            AF_INET,
        ),
        6 => (40usize, unsafe { *((data + 6) as *const u8) }, AF_INET6),
        _ => return None,
    };
    if ip_len < 20 {
        return None;
    }
    let transport = data + ip_len;
    if transport + TRANSPORT_READ > end {
        return None;
    }
    let t = transport as *const [u8; TRANSPORT_READ];
    let bytes = unsafe { *t };
    Some(from_transport(ctx, family, protocol, ip_len, &bytes))
}

#[inline(always)]
fn read_loaded(ctx: &SkBuffContext) -> Option<Headers> {
    let first: u8 = ctx.load(0).ok()?;
    let (ip_len, protocol, family) = match first >> 4 {
        4 => (
            ((first & 0x0f) as usize) * 4,
            ctx.load::<u8>(9).ok()?,
            AF_INET,
        ),
        6 => (40usize, ctx.load::<u8>(6).ok()?, AF_INET6),
        _ => return None,
    };
    if ip_len < 20 {
        return None;
    }
    // A UDP datagram's header is 8 bytes, an ICMP echo's too: read what is there.
    let mut bytes = [0u8; TRANSPORT_READ];
    if protocol == IPPROTO_TCP {
        bytes = ctx.load(ip_len).ok()?;
    } else {
        let eight: [u8; 8] = ctx.load(ip_len).ok()?;
        bytes[..8].copy_from_slice(&eight);
    }
    Some(from_transport(ctx, family, protocol, ip_len, &bytes))
}

#[inline(always)]
fn from_transport(
    ctx: &SkBuffContext,
    family: u16,
    protocol: u8,
    ip_len: usize,
    t: &[u8; TRANSPORT_READ],
) -> Headers {
    let ports = protocol == IPPROTO_TCP || protocol == IPPROTO_UDP;
    let payload_at = match protocol {
        IPPROTO_TCP => ip_len + ((t[12] >> 4) as usize) * 4,
        IPPROTO_UDP => ip_len + 8,
        _ => ip_len,
    };
    Headers {
        family,
        protocol,
        src_port: if ports {
            u16::from_be_bytes([t[0], t[1]])
        } else {
            0
        },
        dst_port: if ports {
            u16::from_be_bytes([t[2], t[3]])
        } else {
            0
        },
        payload_at,
        icmp_type: if ports { 0 } else { t[0] },
        len: ctx.len() as usize,
    }
}

/// The packet's peer address: the destination going out (`outgoing`), the source coming in
/// (IPv4 in the first 4 bytes).
#[inline(always)]
pub(crate) fn peer(ctx: &SkBuffContext, headers: &Headers, outgoing: bool) -> Option<[u8; 16]> {
    // Fixed-size loads: a length the verifier must bound from `skb->len` (as `load_bytes`
    // computes it) can lose its bound across a map lookup and fail the program's load.
    let mut peer = [0u8; 16];
    if headers.family == AF_INET {
        let at = if outgoing { 16 } else { 12 };
        let v4: [u8; 4] = ctx.load(at).ok()?;
        peer[..4].copy_from_slice(&v4);
    } else {
        let at = if outgoing { 24 } else { 8 };
        peer = ctx.load(at).ok()?;
    }
    Some(peer)
}

/// Copies the packet from offset `from` to its end to `to`, at most `max` bytes (`max` one
/// short of a power of two: the mask that bounds the length for the verifier): `(copied, whole
/// length)`, `None` when nothing could be copied. The mask leaves the value unchanged; it only
/// shows the verifier the bound [1, max + 1] (verifiers before ~6.8, 6.1's, do not learn
/// `copy >= 1` from `copy != 0`, and the helper refuses a length that may be 0).
#[inline(always)]
pub(crate) unsafe fn copy_tail(
    ctx: &SkBuffContext,
    from: usize,
    to: *mut u8,
    max: usize,
) -> Option<(usize, usize)> {
    let whole = (ctx.len() as usize).checked_sub(from)?;
    let mut copy = whole;
    if copy > max {
        copy = max;
    }
    if copy == 0 {
        return None;
    }
    let copy = ((crate::kernel::opaque(copy) - 1) & max) + 1;
    if bpf_skb_load_bytes(ctx.skb.skb.cast(), from as u32, to.cast(), copy as u32) < 0 {
        return None;
    }
    Some((copy, whole))
}

/// Starts a record at `header` on behalf of the process that owns the socket (a packet
/// program runs where that process is not current): the owner's header, the time now, `kind`
/// and `flags`.
#[inline(always)]
pub(crate) unsafe fn header_from_owner(
    header: *mut EventHeader,
    owner: *const EventHeader,
    kind: EventKind,
    flags: u32,
) {
    crate::kernel::copy_header(header, owner);
    (*header).kind = kind as u32;
    (*header).ts_ns = bpf_ktime_get_boot_ns();
    (*header).flags = flags;
}
