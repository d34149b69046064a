//! Traffic that relates to earlier packets, as a gateway sees it: replies,
//! retransmissions, ICMP errors quoting a packet, first and later fragments
//! of a datagram. The differential test and the packet fuzzer draw from it.

use std::net::IpAddr;

use rand::Rng;
use wgbpf::policy::reference::PacketMeta;
use wgbpf_common::{
    ICMPV6_ECHO_REQUEST, ICMP_ECHO_REQUEST, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP,
    PROTO_UDP,
};

use crate::packets::{Frame, Packet, Pools};

/// TCP flags of a later packet of a flow: a handshake answer, data, a
/// reset, a close, a new SYN.
pub fn random_tcp_flags(rng: &mut impl Rng) -> u8 {
    [0x12, 0x10, 0x10, 0x14, 0x04, 0x11, 0x02][rng.gen_range(0..7)]
}

/// A reply to a packet that passed: addresses and ports swapped, echo
/// request answered by echo reply.
pub fn reply_to(rng: &mut impl Rng, m: &PacketMeta) -> Option<Frame> {
    let p = match m.proto {
        PROTO_TCP => Packet::tcp_flags(m.dst, m.src, m.dport, m.sport, random_tcp_flags(rng)),
        PROTO_UDP => Packet::udp(m.dst, m.src, m.dport, m.sport),
        PROTO_SCTP => Packet::sctp(m.dst, m.src, m.dport, m.sport),
        PROTO_ICMP | PROTO_ICMPV6 => Packet::icmp_echo_reply(m.dst, m.src, m.icmp_id),
        _ => return None,
    };
    Some(p.build())
}

/// The packet a meta describes (well formed, no options), as sent.
pub fn rebuild(m: &PacketMeta) -> Option<Packet> {
    Some(match m.proto {
        PROTO_TCP => Packet::tcp_flags(m.src, m.dst, m.sport, m.dport, m.tcp_flags),
        PROTO_UDP => Packet::udp(m.src, m.dst, m.sport, m.dport),
        PROTO_SCTP => Packet::sctp(m.src, m.dst, m.sport, m.dport),
        PROTO_ICMP | PROTO_ICMPV6 if m.is_icmp() && m.icmp_type == echo_request(m) => {
            Packet::icmp_echo_request(m.src, m.dst, m.icmp_id)
        }
        _ => return None,
    })
}

pub fn echo_request(m: &PacketMeta) -> u8 {
    if m.src.is_ipv4() {
        ICMP_ECHO_REQUEST
    } else {
        ICMPV6_ECHO_REQUEST
    }
}

/// An ICMP error about a packet that passed, quoting it: from its far end,
/// from the gateway, or from anyone in the pools; mostly to its sender.
pub fn error_about(
    rng: &mut impl Rng,
    m: &PacketMeta,
    gw: &[IpAddr],
    pools: &Pools,
) -> Option<Frame> {
    let quoted = rebuild(m)?.build();
    let v4 = m.src.is_ipv4();
    let same_family = |a: &&IpAddr| a.is_ipv4() == v4;
    let from = match rng.gen_range(0..3) {
        0 => m.dst,
        1 => *gw.iter().find(same_family)?,
        _ => random_frame_addr(rng, pools, v4),
    };
    let to = if rng.gen_bool(0.8) {
        m.src
    } else {
        random_frame_addr(rng, pools, v4)
    };
    let (proto, hdr, types): (u8, usize, &[u8]) = if v4 {
        (PROTO_ICMP, 20, &[3, 11, 12])
    } else {
        (PROTO_ICMPV6, 40, &[1, 2, 3, 4])
    };
    let mut l4 = vec![types[rng.gen_range(0..types.len())], 0, 0, 0, 0, 0, 5, 0];
    l4.extend_from_slice(&quoted.bytes[14..14 + hdr + 8]);
    l4.extend((0..rng.gen_range(0..24)).map(|_| rng.gen::<u8>()));
    Some(Packet::raw_l4(from, to, proto, l4).build())
}

/// The first fragment of a packet like `m`, as datagram `id`.
pub fn first_fragment(m: &PacketMeta, id: u32) -> Option<Frame> {
    Some(
        rebuild(m)?
            .with_payload(FRAG_PAYLOAD)
            .as_fragment_at(0, true)
            .with_frag_id(id)
            .build(),
    )
}

/// Payload of first fragments; their later fragments start at or after
/// `LATER_AT` (8-byte units), or overlap them now and then.
pub const FRAG_PAYLOAD: usize = 96;
pub const LATER_AT: u16 = 15;

/// A later fragment of datagram `id` of a packet like `m`: mostly right
/// after its first fragment, sometimes further, sometimes overlapping it.
pub fn later_fragment(rng: &mut impl Rng, m: &PacketMeta, id: u32) -> Option<Frame> {
    let offset = match rng.gen_range(0..10) {
        0 => rng.gen_range(1..LATER_AT),
        1 => rng.gen_range(LATER_AT..8192),
        _ => LATER_AT,
    };
    Some(
        rebuild(m)?
            .with_payload(32)
            .as_fragment_at(offset, rng.gen())
            .with_frag_id(id)
            .build(),
    )
}

pub fn random_frame_addr(rng: &mut impl Rng, pools: &Pools, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(pools.v4[rng.gen_range(0..pools.v4.len())])
    } else {
        IpAddr::V6(pools.v6[rng.gen_range(0..pools.v6.len())])
    }
}

/// Packets that passed and first fragments sent, to draw related traffic
/// from.
#[derive(Default)]
pub struct Related {
    pub passed: Vec<PacketMeta>,
    /// First fragments sent (passed or not), with their identification.
    pub firsts: Vec<(PacketMeta, u32)>,
}

impl Related {
    /// A packet related to one that passed: a reply (25 %), an ICMP error
    /// about it (8 %), a retransmission (5 %), a first fragment of a
    /// datagram like it (6 %), a later fragment of a datagram whose first
    /// fragment was sent (8 %); `None` otherwise (the caller draws a fresh
    /// packet).
    pub fn next(&mut self, rng: &mut impl Rng, gw: &[IpAddr], pools: &Pools) -> Option<Frame> {
        if self.passed.is_empty() {
            return None;
        }
        let m = self.passed[rng.gen_range(0..self.passed.len())].clone();
        match rng.gen_range(0..100) {
            0..25 => reply_to(rng, &m),
            25..33 => error_about(rng, &m, gw, pools),
            38..44 => {
                // Few ids, so that datagrams meet.
                let id = rng.gen_range(1..6);
                let f = first_fragment(&m, id);
                if f.is_some() {
                    self.firsts.push((m.clone(), id));
                }
                f
            }
            44..52 if !self.firsts.is_empty() => {
                let (m, id) = self.firsts[rng.gen_range(0..self.firsts.len())].clone();
                later_fragment(rng, &m, id)
            }
            33..38 => rebuild(&m).map(|p| {
                let p = match m.proto {
                    PROTO_TCP => {
                        Packet::tcp_flags(m.src, m.dst, m.sport, m.dport, random_tcp_flags(rng))
                    }
                    _ => p,
                };
                p.build()
            }),
            _ => None,
        }
    }
}
