//! Header parsing. Every read goes through `bpf_skb_load_bytes`, which fails
//! past the end of the packet, so a truncated header is an error, never a
//! read of garbage. Anything we cannot parse is dropped as malformed.

use aya_ebpf::programs::TcContext;
use wgbpf_common::{
    map_v4, Addr, FlowKey, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP,
};

/// What the policy and the flow table need to know about a packet.
#[derive(Default)]
pub struct Packet {
    pub src: Addr,
    pub dst: Addr,
    pub proto: u8,
    /// Any fragment (first or later): its ports are not trusted.
    pub fragment: bool,
    pub sport: u16,
    pub dport: u16,
    /// ICMP/ICMPv6 message type (0 for other protocols).
    pub icmp_type: u8,
    /// ICMP echo identifier.
    pub icmp_id: u16,
    /// Bytes from the IP header on.
    pub len: u32,
    /// For ICMP errors: the flow key of the packet the error is about, as
    /// that packet travelled (taken from the quoted headers).
    pub has_inner: bool,
    pub inner: FlowKey,
}

pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;

/// IPv6 extension headers walked before giving up (as malformed).
const MAX_EXT_HEADERS: usize = 6;

pub struct Malformed;

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u16 {
    ((b[at] as u16) << 8) | b[at + 1] as u16
}

/// Fills `p` from the headers at `l2`. A separate BPF function: its
/// buffers do not weigh on the caller's stack.
#[inline(never)]
pub fn parse(ctx: &TcContext, l2: usize, p: &mut Packet) -> Result<(), Malformed> {
    let first: u8 = ctx.load(l2).map_err(|_| Malformed)?;
    let avail = (ctx.len() as usize).checked_sub(l2).ok_or(Malformed)?;
    match first >> 4 {
        4 => parse_v4(ctx, l2, avail, p),
        6 => parse_v6(ctx, l2, avail, p),
        _ => Err(Malformed),
    }
}

#[inline(always)]
fn parse_v4(ctx: &TcContext, l2: usize, avail: usize, p: &mut Packet) -> Result<(), Malformed> {
    let h: [u8; 20] = ctx.load(l2).map_err(|_| Malformed)?;
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    let total = be16(&h, 2) as usize;
    if ihl < 20 || total < ihl || total > avail {
        return Err(Malformed);
    }
    let frag = be16(&h, 6);
    p.fragment = frag & 0x3fff != 0; // MF set or offset non-zero
    p.src = map_v4([h[12], h[13], h[14], h[15]]);
    p.dst = map_v4([h[16], h[17], h[18], h[19]]);
    p.proto = h[9];
    p.len = total as u32;
    if !p.fragment {
        // Options are skipped by the header length, never interpreted.
        parse_l4(ctx, l2 + ihl, total - ihl, p)?;
    }
    Ok(())
}

#[inline(always)]
fn parse_v6(ctx: &TcContext, l2: usize, avail: usize, p: &mut Packet) -> Result<(), Malformed> {
    let h: [u8; 8] = ctx.load(l2).map_err(|_| Malformed)?;
    let payload = be16(&h, 4) as usize;
    // A zero payload length means a jumbogram: never valid on a tunnel.
    if payload == 0 || 40 + payload > avail {
        return Err(Malformed);
    }
    p.src = ctx.load(l2 + 8).map_err(|_| Malformed)?;
    p.dst = ctx.load(l2 + 24).map_err(|_| Malformed)?;
    // IPv4-mapped addresses never belong on the wire (RFC 4291 2.5.5.2), and
    // here they would alias IPv4 identities in the shared trie.
    if is_v4_mapped(&p.src) || is_v4_mapped(&p.dst) {
        return Err(Malformed);
    }
    p.len = (40 + payload) as u32;
    let end = l2 + 40 + payload;
    let mut off = l2 + 40;
    let mut nh = h[6];
    let mut done = false;
    for _ in 0..MAX_EXT_HEADERS {
        match nh {
            0 | 43 | 60 => {
                let e: [u8; 2] = ctx.load(off).map_err(|_| Malformed)?;
                nh = e[0];
                off += (e[1] as usize + 1) * 8;
            }
            51 => {
                let e: [u8; 2] = ctx.load(off).map_err(|_| Malformed)?;
                nh = e[0];
                off += (e[1] as usize + 2) * 4;
            }
            44 => {
                let e: [u8; 4] = ctx.load(off).map_err(|_| Malformed)?;
                nh = e[0];
                off += 8;
                p.fragment = true;
                if off > end {
                    return Err(Malformed);
                }
                if be16(&e, 2) >> 3 != 0 {
                    // A later fragment: what follows is payload, not headers.
                    done = true;
                    break;
                }
            }
            _ => {
                done = true;
                break;
            }
        }
        if off > end {
            return Err(Malformed);
        }
    }
    if !done {
        return Err(Malformed);
    }
    p.proto = nh;
    if !p.fragment {
        parse_l4(ctx, off, end - off, p)?;
    }
    Ok(())
}

#[inline(always)]
fn is_v4_mapped(a: &Addr) -> bool {
    a[..10] == [0u8; 10] && a[10] == 0xff && a[11] == 0xff
}

/// Reads ports or the ICMP type; `room` is what the IP header says is left.
/// A header shorter than its protocol's minimum is malformed.
#[inline(always)]
fn parse_l4(ctx: &TcContext, off: usize, room: usize, p: &mut Packet) -> Result<(), Malformed> {
    match p.proto {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => {
            let min = match p.proto {
                PROTO_TCP => 20,
                PROTO_UDP => 8,
                _ => 12,
            };
            if room < min {
                return Err(Malformed);
            }
            let ports: [u8; 4] = ctx.load(off).map_err(|_| Malformed)?;
            p.sport = be16(&ports, 0);
            p.dport = be16(&ports, 2);
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            if room < 8 {
                return Err(Malformed);
            }
            let icmp: [u8; 8] = ctx.load(off).map_err(|_| Malformed)?;
            p.icmp_type = icmp[0];
            p.icmp_id = be16(&icmp, 4);
            if is_icmp_error(p.proto, p.icmp_type) {
                p.has_inner = quoted_flow(ctx, off + 8, room - 8, &mut p.inner);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Destination unreachable (incl. fragmentation needed / packet too big),
/// time exceeded, parameter problem: errors that quote the packet they are
/// about, and that a flow's sender needs (path MTU discovery among others).
#[inline(always)]
pub fn is_icmp_error(proto: u8, icmp_type: u8) -> bool {
    match proto {
        PROTO_ICMP => matches!(icmp_type, 3 | 11 | 12),
        PROTO_ICMPV6 => matches!(icmp_type, 1..=4),
        _ => false,
    }
}

/// The flow key of the packet quoted in an ICMP error, if its headers are
/// there in full (IPv4 with options allowed; IPv6 without extension
/// headers). Anything else is simply not related to a flow.
#[inline(always)]
fn quoted_flow(ctx: &TcContext, off: usize, room: usize, key: &mut FlowKey) -> bool {
    let Ok(first) = ctx.load::<u8>(off) else {
        return false;
    };
    let (proto, hlen) = match first >> 4 {
        4 => {
            let Ok(h) = ctx.load::<[u8; 20]>(off) else {
                return false;
            };
            let ihl = ((h[0] & 0x0f) as usize) * 4;
            if ihl < 20 || be16(&h, 6) & 0x1fff != 0 {
                return false;
            }
            key.src = map_v4([h[12], h[13], h[14], h[15]]);
            key.dst = map_v4([h[16], h[17], h[18], h[19]]);
            (h[9], ihl)
        }
        6 => {
            let Ok(h) = ctx.load::<[u8; 8]>(off) else {
                return false;
            };
            let (Ok(src), Ok(dst)) = (ctx.load(off + 8), ctx.load(off + 24)) else {
                return false;
            };
            key.src = src;
            key.dst = dst;
            (h[6], 40)
        }
        _ => return false,
    };
    if room < hlen + 8 {
        return false;
    }
    let Ok(b) = ctx.load::<[u8; 8]>(off + hlen) else {
        return false;
    };
    let (sport, dport) = match proto {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => (be16(&b, 0), be16(&b, 2)),
        PROTO_ICMP if b[0] == 8 => (be16(&b, 4), 0),
        PROTO_ICMPV6 if b[0] == 128 => (be16(&b, 4), 0),
        _ => return false,
    };
    key.sport = sport;
    key.dport = dport;
    key.proto = proto;
    true
}
