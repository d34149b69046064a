//! The reference evaluator: the policy's meaning, written plainly over the
//! rules (no identities, no port classes, no folding). bpf-tests compare the
//! kernel against it packet by packet, and `policy explain` answers with it.

use std::{collections::HashMap, net::IpAddr};

use wgbpf_common::{
    is_link_local_control, rule_id, severity, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST,
    ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP,
    TCP_RST,
};

use super::model::{Action, LinkLocal, Policy, Rule};

/// What the data plane knows of a packet after parsing its headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketMeta {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// A later fragment: its ports are unknown. (A first fragment is
    /// judged by its ports, as a whole packet is.)
    pub fragment: bool,
    pub sport: u16,
    pub dport: u16,
    pub icmp_type: u8,
    pub icmp_id: u16,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
    /// A fragment: its datagram and its place in it (None for a whole
    /// packet, IPv6 atomic fragments included).
    pub frag: Option<Fragment>,
    /// For an ICMP error: the flow tuple of the packet it quotes, as that
    /// packet travelled (echo requests as (id, 0)).
    pub quoted: Option<FlowTuple>,
}

impl PacketMeta {
    /// ICMP in IPv4 or ICMPv6 in IPv6. The other combinations are not ICMP:
    /// a protocol without ports or types, like GRE.
    pub fn is_icmp(&self) -> bool {
        match self.proto {
            PROTO_ICMP => self.src.is_ipv4(),
            PROTO_ICMPV6 => self.src.is_ipv6(),
            _ => false,
        }
    }

    /// Rules with ports (or ICMP types) can match: TCP, UDP, SCTP or the
    /// family's ICMP. (A fragment's port is unknown: see `rule_matches`.)
    pub fn has_port(&self) -> bool {
        matches!(self.proto, PROTO_TCP | PROTO_UDP | PROTO_SCTP) || self.is_icmp()
    }

    /// An ICMP error (of the packet's own family).
    pub fn is_icmp_error(&self) -> bool {
        self.is_icmp() && is_icmp_error(self.proto, self.icmp_type)
    }

    /// The "port" rules match: the destination port, or the ICMP type.
    pub fn policy_port(&self) -> u16 {
        match self.proto {
            PROTO_ICMP | PROTO_ICMPV6 => self.icmp_type as u16,
            _ => self.dport,
        }
    }
}

/// A fragment's datagram identification and place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// IPv4 identification (16 bits) or IPv6 fragment identification.
    pub id: u32,
    /// The first fragment (offset 0, more to come), or a later one.
    pub first: bool,
    /// A first fragment: the bytes of the datagram it carries; a later
    /// one: its offset in bytes.
    pub len: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub severity: u8,
    pub rule: u32,
}

impl Verdict {
    pub const NONE: Verdict = Verdict {
        severity: severity::NONE,
        rule: rule_id::DEFAULT,
    };
    pub fn passes(&self) -> bool {
        self.severity != severity::DENY
    }
    /// Deny wins over audit over accept; among equals the earlier rule.
    pub fn better(self, other: Verdict) -> Verdict {
        if other.severity > self.severity
            || (other.severity == self.severity && other.rule < self.rule)
        {
            other
        } else {
            self
        }
    }
}

pub fn rule_severity(rule: &Rule) -> u8 {
    match (rule.action, rule.audit) {
        (Action::Accept, _) => severity::ALLOW,
        (Action::Deny, true) => severity::AUDIT,
        (Action::Deny, false) => severity::DENY,
    }
}

/// Does the rule match a packet? A fragment's port is unknown, so it matches
/// rules for any port, and, to stay on the safe side, every deny or audit
/// rule of its protocol whatever the ports; port-specific accepts never
/// match it.
pub fn rule_matches(rule: &Rule, pkt: &PacketMeta) -> bool {
    if !rule.src.matches(pkt.src) || !rule.dst.matches(pkt.dst) {
        return false;
    }
    if let Some(p) = rule.proto {
        if p != pkt.proto {
            return false;
        }
    }
    if rule.ports.is_empty() {
        return true;
    }
    if pkt.fragment {
        return rule.action == Action::Deny;
    }
    if !pkt.has_port() {
        return false;
    }
    let port = pkt.policy_port();
    rule.ports.iter().any(|r| r.contains(port))
}

/// The stateless verdict: the policy alone, before flows and defaults.
pub fn evaluate_rules(policy: &Policy, pkt: &PacketMeta) -> Verdict {
    policy
        .rules
        .iter()
        .enumerate()
        .filter(|(_, r)| rule_matches(r, pkt))
        .fold(Verdict::NONE, |best, (i, r)| {
            best.better(Verdict {
                severity: rule_severity(r),
                rule: i as u32,
            })
        })
}

/// Default deny, and audit mode for the whole interface.
pub fn finish(policy: &Policy, v: Verdict) -> Verdict {
    let v = if v.severity == severity::NONE {
        Verdict {
            severity: severity::DENY,
            rule: rule_id::DEFAULT,
        }
    } else {
        v
    };
    if v.severity == severity::DENY && policy.audit {
        Verdict {
            severity: severity::AUDIT,
            ..v
        }
    } else {
        v
    }
}

/// The verdict of a packet that belongs to no flow. Link-local control
/// traffic no rule matches is allowed when the policy says so.
pub fn evaluate(policy: &Policy, pkt: &PacketMeta) -> Verdict {
    let v = evaluate_rules(policy, pkt);
    if v.severity == severity::NONE
        && policy.link_local == LinkLocal::Allow
        && pkt.proto == PROTO_ICMPV6
        && pkt.is_icmp()
        && !pkt.fragment
        && is_link_local_control(&kernel_addr(pkt.src), &kernel_addr(pkt.dst), pkt.icmp_type)
    {
        return Verdict {
            severity: severity::ALLOW,
            rule: rule_id::LINK_LOCAL,
        };
    }
    finish(policy, v)
}

fn kernel_addr(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => wgbpf_common::map_v4(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

/// A flow as the model tracks it (see `ebpf/src/main.rs` for the kernel's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

/// ICMP errors that quote the packet they are about (when `proto` is the
/// packet's family's ICMP).
pub fn is_icmp_error(proto: u8, icmp_type: u8) -> bool {
    match proto {
        PROTO_ICMP => matches!(icmp_type, 3 | 11 | 12),
        PROTO_ICMPV6 => matches!(icmp_type, 1..=4),
        _ => false,
    }
}

#[derive(Clone, Copy, Debug)]
struct FlowState {
    version: u32,
    verdict: Verdict,
    /// The tuple of the packet that opened the flow, as it travelled.
    opened_by: FlowTuple,
}

/// The outcome for one packet through the stateful model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    /// The flow table decided (an established flow or a reply), or the
    /// fragment table (a later fragment got its first fragment's verdict).
    pub from_flow: bool,
    /// Dropped as malformed (a later fragment overlapping its first
    /// fragment): no verdict, counted as malformed only.
    pub malformed: bool,
}

impl Outcome {
    fn judged(verdict: Verdict, from_flow: bool) -> Outcome {
        Outcome {
            verdict,
            from_flow,
            malformed: false,
        }
    }
}

/// A first fragment's verdict, kept for its datagram's later fragments.
#[derive(Clone, Copy, Debug)]
struct FragState {
    version: u32,
    verdict: Verdict,
    first_len: u32,
}

/// The data plane as a state machine: a policy (with a version) and a flow
/// table without capacity limits, budgets or clock (the kernel's lifetimes
/// and budget are tested on their own, against the documented behaviour).
/// Drive it with the same packets as the kernel, in the same order.
pub struct Model {
    policy: Policy,
    version: u32,
    /// One entry per connection, found from both directions.
    flows: HashMap<FlowTuple, FlowState>,
    /// Passing first fragments' verdicts by datagram (source, destination,
    /// identification, protocol); the latest such first fragment's counts.
    frags: HashMap<(IpAddr, IpAddr, u32, u8), FragState>,
}

impl FlowTuple {
    /// The tuple the other way.
    pub fn reversed(&self) -> FlowTuple {
        FlowTuple {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
        }
    }

    /// One key for both directions: the lower (address, port) first.
    fn normalised(&self) -> FlowTuple {
        if (self.src, self.sport) <= (self.dst, self.dport) {
            *self
        } else {
            self.reversed()
        }
    }
}

impl Model {
    pub fn new(policy: Policy, version: u32) -> Self {
        Self {
            policy,
            version,
            flows: HashMap::new(),
            frags: HashMap::new(),
        }
    }

    /// A new policy version; flows stay but are re-checked when next seen.
    pub fn set_policy(&mut self, policy: Policy, version: u32) {
        self.policy = policy;
        self.version = version;
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// One of the gateway's own addresses (and no peer's).
    fn is_gateway(&self, a: IpAddr) -> bool {
        self.policy.local.iter().any(|n| n.contains(&a))
            && !self
                .policy
                .peers
                .iter()
                .any(|p| p.allowed_ips.iter().any(|n| n.contains(&a)))
    }

    /// A packet through the model. A later fragment whose first fragment
    /// passed under the current policy gets that verdict (one that
    /// overlaps it is malformed); a passing first fragment's verdict is
    /// kept for the rest of its datagram (no lifetime, no capacity here).
    pub fn packet(&mut self, pkt: &PacketMeta) -> Outcome {
        let key = pkt.frag.map(|f| (pkt.src, pkt.dst, f.id, pkt.proto));
        match (pkt.frag, key) {
            (Some(f), Some(key)) if !f.first => {
                if let Some(st) = self.frags.get(&key).filter(|s| s.version == self.version) {
                    if f.len < st.first_len {
                        return Outcome {
                            verdict: Verdict {
                                severity: severity::DENY,
                                rule: rule_id::MALFORMED,
                            },
                            from_flow: false,
                            malformed: true,
                        };
                    }
                    return Outcome::judged(st.verdict, true);
                }
                self.judge(pkt)
            }
            (Some(f), Some(key)) => {
                let out = self.judge(pkt);
                if out.verdict.passes() {
                    let st = FragState {
                        version: self.version,
                        verdict: out.verdict,
                        first_len: f.len,
                    };
                    self.frags.insert(key, st);
                }
                out
            }
            _ => self.judge(pkt),
        }
    }

    /// A packet no fragment entry decided.
    fn judge(&mut self, pkt: &PacketMeta) -> Outcome {
        // An error about a packet of a live flow, back to its sender, from
        // the flow's far end or from the gateway, is part of that flow
        // (path MTU discovery needs it).
        if let Some(q) = pkt.quoted.filter(|q| {
            pkt.is_icmp_error()
                && q.src == pkt.dst
                && (q.dst == pkt.src || self.is_gateway(pkt.src))
        }) {
            if let Some(state) = self
                .flows
                .get(&q.normalised())
                .filter(|s| s.version == self.version)
            {
                return Outcome::judged(state.verdict, true);
            }
        }
        let tuple = flow_tuple(pkt);
        if let Some(t) = tuple {
            let key = t.normalised();
            if let Some(state) = self.flows.get(&key).copied() {
                if state.version == self.version {
                    return Outcome::judged(state.verdict, true);
                }
                // The policy changed: the flow survives if its opening
                // direction is still allowed.
                let origin = if t == state.opened_by {
                    evaluate(&self.policy, &unfragmented(pkt))
                } else {
                    evaluate(&self.policy, &reversed(pkt))
                };
                if origin.passes() {
                    self.flows.insert(
                        key,
                        FlowState {
                            version: self.version,
                            verdict: origin,
                            ..state
                        },
                    );
                    return Outcome::judged(origin, true);
                }
                self.flows.remove(&key);
            }
        }
        let v = evaluate(&self.policy, pkt);
        if v.passes() && opens_flow(pkt) {
            if let Some(t) = tuple {
                self.flows.insert(
                    t.normalised(),
                    FlowState {
                        version: self.version,
                        verdict: v,
                        opened_by: t,
                    },
                );
            }
        }
        Outcome::judged(v, false)
    }
}

fn flow_tuple(pkt: &PacketMeta) -> Option<FlowTuple> {
    if pkt.fragment || !pkt.has_port() {
        return None;
    }
    let (sport, dport) = match (pkt.proto, pkt.icmp_type) {
        (PROTO_TCP | PROTO_UDP | PROTO_SCTP, _) => (pkt.sport, pkt.dport),
        (PROTO_ICMP, ICMP_ECHO_REQUEST) | (PROTO_ICMPV6, ICMPV6_ECHO_REQUEST) => (pkt.icmp_id, 0),
        (PROTO_ICMP, ICMP_ECHO_REPLY) | (PROTO_ICMPV6, ICMPV6_ECHO_REPLY) => (0, pkt.icmp_id),
        _ => return None,
    };
    Some(FlowTuple {
        src: pkt.src,
        dst: pkt.dst,
        sport,
        dport,
        proto: pkt.proto,
    })
}

/// Packets that, once allowed, let their replies in: not echo replies,
/// not TCP resets.
fn opens_flow(pkt: &PacketMeta) -> bool {
    match pkt.proto {
        PROTO_ICMP => pkt.icmp_type == ICMP_ECHO_REQUEST,
        PROTO_ICMPV6 => pkt.icmp_type == ICMPV6_ECHO_REQUEST,
        PROTO_TCP => pkt.tcp_flags & TCP_RST == 0,
        _ => true,
    }
}

fn unfragmented(pkt: &PacketMeta) -> PacketMeta {
    PacketMeta {
        fragment: false,
        ..pkt.clone()
    }
}

/// The packet that opened the flow a reply belongs to.
fn reversed(pkt: &PacketMeta) -> PacketMeta {
    let icmp_type = match pkt.proto {
        PROTO_ICMP => ICMP_ECHO_REQUEST,
        PROTO_ICMPV6 => ICMPV6_ECHO_REQUEST,
        _ => pkt.icmp_type,
    };
    PacketMeta {
        src: pkt.dst,
        dst: pkt.src,
        sport: pkt.dport,
        dport: pkt.sport,
        icmp_type,
        fragment: false,
        quoted: None,
        ..pkt.clone()
    }
}
