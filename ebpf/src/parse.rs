//! Header parsing. Every read goes through `bpf_skb_load_bytes`, which fails
//! past the end of the packet, so a truncated header is an error, never a
//! read of garbage. Anything we cannot parse is dropped as malformed.

use aya_ebpf::programs::TcContext;
use wgbpf_common::{map_v4, Addr, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP};

/// What the policy and the flow table need to know about a packet.
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

#[inline(always)]
pub fn parse(ctx: &TcContext, l2: usize) -> Result<Packet, Malformed> {
    let first: u8 = ctx.load(l2).map_err(|_| Malformed)?;
    let avail = (ctx.len() as usize).checked_sub(l2).ok_or(Malformed)?;
    match first >> 4 {
        4 => parse_v4(ctx, l2, avail),
        6 => parse_v6(ctx, l2, avail),
        _ => Err(Malformed),
    }
}

#[inline(always)]
fn parse_v4(ctx: &TcContext, l2: usize, avail: usize) -> Result<Packet, Malformed> {
    let h: [u8; 20] = ctx.load(l2).map_err(|_| Malformed)?;
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    let total = be16(&h, 2) as usize;
    if ihl < 20 || total < ihl || total > avail {
        return Err(Malformed);
    }
    let frag = be16(&h, 6);
    let fragment = frag & 0x3fff != 0; // MF set or offset non-zero
    let mut p = Packet {
        src: map_v4([h[12], h[13], h[14], h[15]]),
        dst: map_v4([h[16], h[17], h[18], h[19]]),
        proto: h[9],
        fragment,
        sport: 0,
        dport: 0,
        icmp_type: 0,
        icmp_id: 0,
        len: total as u32,
    };
    if !fragment {
        // Options are skipped by the header length, never interpreted.
        parse_l4(ctx, l2 + ihl, total - ihl, &mut p)?;
    }
    Ok(p)
}

#[inline(always)]
fn parse_v6(ctx: &TcContext, l2: usize, avail: usize) -> Result<Packet, Malformed> {
    let h: [u8; 40] = ctx.load(l2).map_err(|_| Malformed)?;
    let payload = be16(&h, 4) as usize;
    // A zero payload length means a jumbogram: never valid on a tunnel.
    if payload == 0 || 40 + payload > avail {
        return Err(Malformed);
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    dst.copy_from_slice(&h[24..40]);
    // IPv4-mapped addresses never belong on the wire (RFC 4291 2.5.5.2), and
    // here they would alias IPv4 identities in the shared trie.
    if is_v4_mapped(&src) || is_v4_mapped(&dst) {
        return Err(Malformed);
    }
    let mut p = Packet {
        src,
        dst,
        proto: h[6],
        fragment: false,
        sport: 0,
        dport: 0,
        icmp_type: 0,
        icmp_id: 0,
        len: (40 + payload) as u32,
    };
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
        parse_l4(ctx, off, end - off, &mut p)?;
    }
    Ok(p)
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
        }
        _ => {}
    }
    Ok(())
}
