//! Fixtures shared by the kernel tests: address families and addressing
//! plans, policy and rule builders, and readers for the per-peer counters
//! and the deny map.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::IpNet;
use wgbpf::{
    dataplane::counters::{PeerTotals, Totals},
    policy::model::{Action, Peer, Policy, PortRange, Rule, Selector},
};
use wgbpf_common::{
    map_v4, Addr, DIR_EGRESS, DIR_INGRESS, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST, PROTO_ICMP, PROTO_ICMPV6,
};

use crate::{
    harness::Harness,
    packets::{Expected, Frame},
};

pub const IN: usize = DIR_INGRESS;
pub const EG: usize = DIR_EGRESS;
pub const GRE: u8 = 47;
pub const ESP: u8 = 50;

/// "ingress" or "egress", for messages.
pub fn dir_name(dir: usize) -> &'static str {
    if dir == IN {
        "ingress"
    } else {
        "egress"
    }
}

// ---------------------------------------------------------------------------
// Address families, on the LAN plan: gateway .1 / ::1, peer n at .(1+n) /
// ::(1+n), subnets 10.0.<net>.0/24 and fd00:0:0:<net>::/64, and a "world"
// address in no prefix.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fam {
    V4,
    V6,
}

pub const FAMS: [Fam; 2] = [Fam::V4, Fam::V6];

impl Fam {
    /// Host `host` of subnet `net`.
    pub fn host(self, net: u8, host: u16) -> IpAddr {
        match self {
            Fam::V4 => IpAddr::V4(Ipv4Addr::new(10, 0, net, host as u8)),
            Fam::V6 => IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, net as u16, 0, 0, 0, host)),
        }
    }
    pub fn gw(self) -> IpAddr {
        LAN.gw_addr(self)
    }
    pub fn peer(self, n: u8) -> IpAddr {
        LAN.peer_addr(self, n)
    }
    pub fn world(self) -> IpAddr {
        match self {
            Fam::V4 => "192.0.2.7".parse().unwrap(),
            Fam::V6 => "2001:db8::7".parse().unwrap(),
        }
    }
    /// 10.0.<net>.0/24 or fd00:0:0:<net>::/64.
    pub fn subnet(self, net: u8) -> IpNet {
        match self {
            Fam::V4 => format!("10.0.{net}.0/24").parse().unwrap(),
            Fam::V6 => format!("fd00:0:0:{net:x}::/64").parse().unwrap(),
        }
    }
    /// IP header length: what a TCP packet without payload adds to 20.
    pub fn ip_hdr(self) -> u64 {
        match self {
            Fam::V4 => 20,
            Fam::V6 => 40,
        }
    }
    /// ICMP (v4) or ICMPv6 (v6).
    pub fn icmp_proto(self) -> u8 {
        match self {
            Fam::V4 => PROTO_ICMP,
            Fam::V6 => PROTO_ICMPV6,
        }
    }
    pub fn echo_request(self) -> u8 {
        match self {
            Fam::V4 => ICMP_ECHO_REQUEST,
            Fam::V6 => ICMPV6_ECHO_REQUEST,
        }
    }
    pub fn echo_reply(self) -> u8 {
        match self {
            Fam::V4 => ICMP_ECHO_REPLY,
            Fam::V6 => ICMPV6_ECHO_REPLY,
        }
    }
}

/// The IPv4-mapped IPv6 address of an IPv4 address.
pub fn v4_mapped(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V4(a) => IpAddr::V6(a.to_ipv6_mapped()),
        IpAddr::V6(a) => panic!("{a} is no IPv4 address"),
    }
}

/// The kernel's form of an address (IPv4 mapped into IPv6).
pub fn addr(a: IpAddr) -> Addr {
    match a {
        IpAddr::V4(a) => map_v4(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

// ---------------------------------------------------------------------------
// Addressing plans: where the peers and the gateway live.
// ---------------------------------------------------------------------------

/// Peer n at host `first_peer + n` of the IPv4 /24 `v4` and of the IPv6
/// network `v6`::/64 (one /32 and one /128 each); the gateway at `gw_v4` and
/// `gw_v6`, which are also the local addresses.
pub struct Layout {
    pub v4: [u8; 3],
    pub v6: u16,
    pub first_peer: u8,
    pub gw_v4: Ipv4Addr,
    pub gw_v6: Ipv6Addr,
}

/// Gateway 10.0.0.1 / fd00::1, peer n at 10.0.0.(1+n) / fd00::(1+n).
pub const LAN: Layout = Layout {
    v4: [10, 0, 0],
    v6: 0xfd00,
    first_peer: 1,
    gw_v4: Ipv4Addr::new(10, 0, 0, 1),
    gw_v6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1),
};

impl Layout {
    pub fn peer_addr(&self, fam: Fam, n: u8) -> IpAddr {
        let host = self.first_peer + n;
        match fam {
            Fam::V4 => IpAddr::V4(Ipv4Addr::new(self.v4[0], self.v4[1], self.v4[2], host)),
            Fam::V6 => IpAddr::V6(Ipv6Addr::new(self.v6, 0, 0, 0, 0, 0, 0, host as u16)),
        }
    }
    pub fn gw_addr(&self, fam: Fam) -> IpAddr {
        match fam {
            Fam::V4 => IpAddr::V4(self.gw_v4),
            Fam::V6 => IpAddr::V6(self.gw_v6),
        }
    }
    /// Peer `n`, named "p<n>", counter index `n`.
    pub fn peer(&self, n: u8) -> Peer {
        Peer {
            name: format!("p{n}"),
            index: n as u32,
            allowed_ips: FAMS.map(|f| IpNet::from(self.peer_addr(f, n))).to_vec(),
        }
    }
    pub fn sel_peer(&self, n: u8) -> Selector {
        Selector::Prefixes(self.peer(n).allowed_ips)
    }
    fn gw_nets(&self) -> Vec<IpNet> {
        FAMS.map(|f| IpNet::from(self.gw_addr(f))).to_vec()
    }
    pub fn sel_gw(&self) -> Selector {
        Selector::Prefixes(self.gw_nets())
    }
    /// The gateway and `peers`, with these rules; not in audit mode.
    pub fn policy(&self, peers: impl IntoIterator<Item = u8>, rules: Vec<Rule>) -> Policy {
        Policy {
            link_local: Default::default(),
            peers: peers.into_iter().map(|n| self.peer(n)).collect(),
            local: self.gw_nets(),
            rules,
            audit: false,
        }
    }
}

/// A LAN peer's addresses.
pub fn sel_peer(n: u8) -> Selector {
    LAN.sel_peer(n)
}

/// The LAN gateway's addresses.
pub fn sel_gw() -> Selector {
    LAN.sel_gw()
}

/// Peers p1..p3 and the gateway of the LAN, with these rules.
pub fn policy(rules: Vec<Rule>) -> Policy {
    LAN.policy(1..=3, rules)
}

// ---------------------------------------------------------------------------
// Rules.
// ---------------------------------------------------------------------------

pub fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

pub fn sel(nets: &[&str]) -> Selector {
    Selector::Prefixes(nets.iter().map(|s| net(s)).collect())
}

/// A rule named after what it does; `proto` is a protocol number, or
/// `None` (any protocol).
pub fn rule(
    action: Action,
    audit: bool,
    src: Selector,
    dst: Selector,
    proto: impl Into<Option<u8>>,
    ports: &[(u16, u16)],
) -> Rule {
    let proto = proto.into();
    Rule {
        name: format!(
            "{action:?}{} {src:?} -> {dst:?} {proto:?} {ports:?}",
            if audit { " audit" } else { "" }
        ),
        action,
        audit,
        src,
        dst,
        proto,
        ports: ports.iter().map(|&(a, b)| PortRange::new(a, b)).collect(),
    }
}

pub fn accept(
    src: Selector,
    dst: Selector,
    proto: impl Into<Option<u8>>,
    ports: &[(u16, u16)],
) -> Rule {
    rule(Action::Accept, false, src, dst, proto, ports)
}

pub fn deny(
    src: Selector,
    dst: Selector,
    proto: impl Into<Option<u8>>,
    ports: &[(u16, u16)],
) -> Rule {
    rule(Action::Deny, false, src, dst, proto, ports)
}

pub fn audit_deny(
    src: Selector,
    dst: Selector,
    proto: impl Into<Option<u8>>,
    ports: &[(u16, u16)],
) -> Rule {
    rule(Action::Deny, true, src, dst, proto, ports)
}

/// `accept(...).named("...")`: a rule under a name of the test's choosing.
pub trait Named {
    fn named(self, name: &str) -> Self;
}

impl Named for Rule {
    fn named(self, name: &str) -> Rule {
        Rule {
            name: name.into(),
            ..self
        }
    }
}

// ---------------------------------------------------------------------------
// Frames, counters and the deny map.
// ---------------------------------------------------------------------------

/// The IP length of a well-formed frame (what the byte counters count).
pub fn ip_len(f: &Frame) -> u64 {
    match &f.expected {
        Expected::Packet(p) => p.len as u64,
        Expected::Malformed => panic!("{}: malformed", f.label),
    }
}

pub fn totals(allowed: (u64, u64), denied: (u64, u64), audited: (u64, u64)) -> Totals {
    Totals {
        allowed_packets: allowed.0,
        allowed_bytes: allowed.1,
        denied_packets: denied.0,
        denied_bytes: denied.1,
        audited_packets: audited.0,
        audited_bytes: audited.1,
    }
}

/// A peer's counters with `t` on ingress, nothing on egress.
pub fn ingress(t: Totals) -> PeerTotals {
    PeerTotals {
        ingress: t,
        egress: Totals::default(),
    }
}

/// A peer's counters with `t` on egress, nothing on ingress.
pub fn egress(t: Totals) -> PeerTotals {
    PeerTotals {
        ingress: Totals::default(),
        egress: t,
    }
}

/// Peer `index`'s counters.
pub fn peer_totals(h: &Harness, index: u32) -> PeerTotals {
    h.dp.maps.peer_totals(index).expect("peer counters")
}

/// (destination, source peer, protocol, port, audit).
pub type DenyKey = (IpAddr, u32, u8, u16, bool);

/// The deny map: (packets, bytes) by key.
pub type Denies = BTreeMap<DenyKey, (u64, u64)>;

pub fn denies(h: &Harness) -> Denies {
    h.dp.maps
        .denies()
        .expect("deny map")
        .into_iter()
        .map(|d| {
            (
                (d.dst, d.src_peer, d.proto, d.port, d.audit),
                (d.packets, d.bytes),
            )
        })
        .collect()
}
