//! An independent byte-level parser of the frames the programs see: the
//! parse rules of ebpf/src/parse.rs (summarised in [`crate::packets`]),
//! written directly over the bytes. The builder's self-check compares its
//! expected results with it, and the packet fuzzer (fuzz/, `packet_diff`)
//! judges arbitrary bytes with it before the reference evaluator does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::packets::{v4_options_acceptable, Expected, Fragment, Parsed};

fn be16(b: &[u8], i: usize) -> usize {
    usize::from(u16::from_be_bytes([b[i], b[i + 1]]))
}

/// What the programs must make of an Ethernet frame (14 bytes, then IP).
pub fn reference(frame: &[u8]) -> Expected {
    reference_opt(frame).map_or(Expected::Malformed, Expected::Packet)
}

fn reference_opt(frame: &[u8]) -> Option<Parsed> {
    let ip = frame.get(14..)?;
    match ip.first()? >> 4 {
        4 => ref_v4(ip),
        6 => ref_v6(ip),
        _ => None,
    }
}

pub fn empty(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> Parsed {
    Parsed {
        src,
        dst,
        proto,
        fragment: false,
        frag: None,
        sport: 0,
        dport: 0,
        icmp_type: 0,
        icmp_id: 0,
        len: len as u32,
    }
}

fn ref_v4(ip: &[u8]) -> Option<Parsed> {
    if ip.len() < 20 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0xf) * 4;
    let total = be16(ip, 2);
    if ihl < 20 || total < ihl || total > ip.len() {
        return None;
    }
    if !v4_options_acceptable(&ip[20..ihl]) {
        return None;
    }
    let a = |i: usize| IpAddr::V4(Ipv4Addr::new(ip[i], ip[i + 1], ip[i + 2], ip[i + 3]));
    let mut p = empty(a(12), a(16), ip[9], total);
    let (field, id) = (be16(ip, 6), be16(ip, 4) as u32);
    if field & 0x1fff != 0 {
        return ref_later(p, id, (field & 0x1fff) * 8);
    }
    ref_l4(ip, ihl, total - ihl, &mut p)?;
    if field & 0x2000 != 0 {
        p.frag = Some(Fragment {
            id,
            first: true,
            len: (total - ihl) as u32,
        });
    }
    Some(p)
}

/// A later fragment: malformed if it starts inside the smallest TCP (20)
/// or SCTP (12) header.
fn ref_later(mut p: Parsed, id: u32, offset: usize) -> Option<Parsed> {
    let min = match p.proto {
        6 => 20,
        132 => 12,
        _ => 0,
    };
    if offset < min {
        return None;
    }
    p.fragment = true;
    p.frag = Some(Fragment {
        id,
        first: false,
        len: offset as u32,
    });
    Some(p)
}

fn ref_v6(ip: &[u8]) -> Option<Parsed> {
    if ip.len() < 40 {
        return None;
    }
    let payload = be16(ip, 4);
    if payload == 0 || 40 + payload > ip.len() {
        return None;
    }
    let a = |i: usize| {
        IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(&ip[i..i + 16]).unwrap(),
        ))
    };
    let end = 40 + payload;
    let mut p = empty(a(8), a(24), 0, end);
    let (mut off, mut nh) = (40, ip[6]);
    let mut stopped = false;
    // The fragment header that ended the walk: (offset, M, id).
    let mut frag = None;
    for _ in 0..6 {
        let later;
        match nh {
            0 | 43 | 60 | 51 => {
                let need = if nh == 43 { 4 } else { 2 };
                if off + need > ip.len() {
                    return None;
                }
                // Routing header with segments left, type 2 excepted.
                if nh == 43 && ip[off + 3] != 0 && ip[off + 2] != 2 {
                    return None;
                }
                let unit = if nh == 51 { 4 } else { 8 };
                let extra = if nh == 51 { 2 } else { 1 };
                nh = ip[off];
                off += (usize::from(ip[off + 1]) + extra) * unit;
                later = false;
            }
            44 => {
                if off + 8 > ip.len() {
                    return None;
                }
                let field = be16(ip, off + 2);
                let id = (be16(ip, off + 4) << 16 | be16(ip, off + 6)) as u32;
                frag = Some((field >> 3, field & 1 != 0, id));
                nh = ip[off];
                off += 8;
                if off > end {
                    return None;
                }
                // Headers after a first fragment's fragment header: malformed.
                if field >> 3 == 0 && matches!(nh, 0 | 43 | 44 | 51 | 60) {
                    return None;
                }
                stopped = true;
                break;
            }
            _ => {
                stopped = true;
                break;
            }
        }
        if off > end {
            return None;
        }
        if later {
            stopped = true;
            break;
        }
    }
    if !stopped {
        return None;
    }
    p.proto = nh;
    match frag {
        Some((offset, _, id)) if offset != 0 => ref_later(p, id, offset * 8),
        Some((_, more, id)) => {
            ref_l4(ip, off, end - off, &mut p)?;
            p.frag = more.then_some(Fragment {
                id,
                first: true,
                len: (end - off) as u32,
            });
            Some(p)
        }
        None => {
            ref_l4(ip, off, end - off, &mut p)?;
            Some(p)
        }
    }
}

fn ref_l4(ip: &[u8], off: usize, room: usize, p: &mut Parsed) -> Option<()> {
    let v4 = p.src.is_ipv4();
    let (min, icmp) = match p.proto {
        6 => (20, false),
        17 => (8, false),
        132 => (12, false),
        1 if v4 => (8, true),
        58 if !v4 => (8, true),
        _ => return Some(()),
    };
    let need = if icmp { 8 } else { 4 };
    if room < min || off + need > ip.len() {
        return None;
    }
    if icmp {
        p.icmp_type = ip[off];
        p.icmp_id = be16(ip, off + 4) as u16;
    } else {
        p.sport = be16(ip, off) as u16;
        p.dport = be16(ip, off + 2) as u16;
    }
    Some(())
}
