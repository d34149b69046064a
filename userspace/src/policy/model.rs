//! The resolved policy: what the mesh file (or an import) means once names
//! are resolved to prefixes. Both the compiler (to kernel maps) and the
//! reference evaluator start from this, and nothing else.

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// A peer of the gateway: its kernel counter slot and its AllowedIPs, which
/// are its identity (WireGuard only accepts a source inside them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub name: String,
    /// Slot in the per-peer counter map, 1-based (0 is "not a peer").
    pub index: u32,
    pub allowed_ips: Vec<IpNet>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    Accept,
    Deny,
}

/// Who a rule applies to: anyone, or the addresses inside some prefixes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Selector {
    Any,
    Prefixes(Vec<IpNet>),
}

impl Selector {
    pub fn matches(&self, addr: std::net::IpAddr) -> bool {
        match self {
            Selector::Any => true,
            Selector::Prefixes(ps) => ps.iter().any(|p| p.contains(&addr)),
        }
    }
}

/// An inclusive port range (or ICMP type range, for ICMP rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn new(first: u16, last: u16) -> Self {
        Self { first, last }
    }
    pub fn single(port: u16) -> Self {
        Self::new(port, port)
    }
    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// For messages and `explain`: where the rule came from.
    pub name: String,
    pub action: Action,
    /// A deny rule in audit mode: what it matches passes, counted as audited.
    pub audit: bool,
    pub src: Selector,
    pub dst: Selector,
    /// IP protocol number; `None` is any protocol (and then any port).
    pub proto: Option<u8>,
    /// Destination ports (ICMP: message types); empty is any.
    pub ports: Vec<PortRange>,
}

/// A whole policy for one interface. Rule order matters only to name the
/// deciding rule: among the matching rules the most severe wins (deny over
/// audit over accept), and among equals the first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub peers: Vec<Peer>,
    /// The gateway's own tunnel addresses.
    pub local: Vec<IpNet>,
    pub rules: Vec<Rule>,
    /// Audit mode for the whole interface: nothing is denied, would-be
    /// denies are counted as audited.
    pub audit: bool,
    /// What becomes of IPv6 link-local control traffic no rule matches.
    pub link_local: LinkLocal,
}

/// IPv6 link-local control traffic: ICMPv6 router and neighbour discovery
/// and multicast listener messages (types 130–137 and 143) from a
/// link-local or unspecified source to a link-local or link-local
/// multicast destination — what the kernel itself sends on a fresh
/// interface. Routing protocols over link-local addresses (BGP, OSPFv3) are
/// not in it: they are ordinary traffic that rules allow (fe80::/10).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkLocal {
    /// Allowed when no rule matches (an explicit deny still denies),
    /// counted as allowed, never as a deny.
    #[default]
    Allow,
    /// Judged like anything else (default deny).
    Policy,
}

/// Protocols whose rules may name ports (ICMP: types).
pub fn proto_has_ports(proto: u8) -> bool {
    wgbpf_common::ported_proto_block(proto).is_some()
}

pub fn proto_name(proto: u8) -> String {
    match proto {
        wgbpf_common::PROTO_TCP => "tcp".into(),
        wgbpf_common::PROTO_UDP => "udp".into(),
        wgbpf_common::PROTO_ICMP => "icmp".into(),
        wgbpf_common::PROTO_ICMPV6 => "icmpv6".into(),
        wgbpf_common::PROTO_SCTP => "sctp".into(),
        other => other.to_string(),
    }
}

/// A `[[policy.test]]` block, resolved to addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTest {
    /// `file:line` of the block.
    pub at: String,
    pub src: String,
    pub src_addrs: Vec<std::net::IpAddr>,
    pub proto: u8,
    pub expect: Vec<Expectation>,
}

/// One `destination:port` of a test that must be reachable (`accept`) or
/// must not (`deny`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// `file:line:column` of the entry.
    pub at: String,
    pub accept: bool,
    pub target: String,
    pub addrs: Vec<std::net::IpAddr>,
    pub port: u16,
}
