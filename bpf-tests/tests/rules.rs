//! One named scenario per rule kind, each on IPv4 and IPv6: the packets a
//! rule must let through and their closest neighbours that it must not
//! (the next port, another peer, another protocol, the address just outside
//! a CIDR). Every probe runs through both real programs (ingress and egress)
//! and through the reference evaluator, so each case documents the kernel
//! and the policy's written meaning at once.
//!
//! Each probe gets a fresh source port (and ICMP identifier), so no probe is
//! ever the reply to an earlier one: the verdicts here are the policy's, not
//! the flow table's.

use std::{
    cell::Cell,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use wgbpf::policy::{
    compile::{compile, CompileError},
    model::{Action, LinkLocal, Policy, Selector},
    reference::{evaluate, Verdict},
};
use wgbpf_bpf_tests::{
    fixtures::{
        accept, denies, deny, dir_name, peer_totals, policy, sel, sel_gw, sel_peer, v4_mapped, Fam,
        EG, ESP, FAMS, GRE, IN,
    },
    harness::{meta, Harness, DROP, PASS},
    packets::Packet,
};
use wgbpf_common::{capacity, rule_id, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP};

// ---------------------------------------------------------------------------
// Addresses (`fixtures::Fam`): gateway .1 / ::1, peer n at .(1+n) / ::(1+n),
// subnets 10.0.<net>.0/24 and fd00:0:0:<net>::/64, and a "world" address in
// no prefix.
// ---------------------------------------------------------------------------

/// The address `delta` away from `a` (to step just outside a prefix).
fn step(a: IpAddr, delta: i64) -> IpAddr {
    match a {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from((u32::from(a) as i64 + delta) as u32)),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(
            (u128::from(a) as i128 + delta as i128) as u128,
        )),
    }
}

// ---------------------------------------------------------------------------
// Policies.
// ---------------------------------------------------------------------------

/// Accepts everything (any source, destination and protocol).
fn permit_all() -> Policy {
    policy(vec![accept(Selector::Any, Selector::Any, None, &[])])
}

// ---------------------------------------------------------------------------
// The bench: one harness with one policy, probes checked against the kernel
// (both directions) and the reference evaluator.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    Pass,
    Drop,
    /// Unparseable: dropped whatever the policy, and outside the reference.
    Malformed,
}
use Want::{Drop, Malformed, Pass};

/// `Pass` when `cond`, else `Drop`.
fn pass_if(cond: bool) -> Want {
    if cond {
        Pass
    } else {
        Drop
    }
}

/// A probe builder of the bench: source, destination, destination port.
type Probe = fn(&Bench, IpAddr, IpAddr, u16) -> Packet;

struct Bench {
    h: Harness,
    policy: Policy,
    next: Cell<u16>,
    malformed: Cell<u64>,
}

impl Bench {
    fn new(policy: Policy) -> Bench {
        let mut h = Harness::new().expect("load the programs (are you root?)");
        h.apply(&policy).expect("apply");
        Bench {
            h,
            policy,
            next: Cell::new(40000),
            malformed: Cell::new(0),
        }
    }

    /// A source port (or ICMP identifier) no earlier probe used.
    fn fresh(&self) -> u16 {
        let n = self.next.get();
        self.next.set(n + 1);
        n
    }

    fn tcp(&self, s: IpAddr, d: IpAddr, dport: u16) -> Packet {
        Packet::tcp(s, d, self.fresh(), dport)
    }
    fn udp(&self, s: IpAddr, d: IpAddr, dport: u16) -> Packet {
        Packet::udp(s, d, self.fresh(), dport)
    }
    fn sctp(&self, s: IpAddr, d: IpAddr, dport: u16) -> Packet {
        Packet::sctp(s, d, self.fresh(), dport)
    }
    /// ICMP (v4) or ICMPv6 (v6) of the given type, fresh identifier.
    fn icmp(&self, s: IpAddr, d: IpAddr, icmp_type: u8) -> Packet {
        Packet::icmp(s, d, icmp_type, 0, u32::from(self.fresh()) << 16 | 1)
    }

    /// Checks a probe on the reference evaluator and on both programs;
    /// returns the reference verdict (None when malformed).
    fn expect(&self, want: Want, p: Packet) -> Option<Verdict> {
        let f = p.build();
        let verdict = match meta(&f) {
            None => {
                assert_eq!(want, Malformed, "{}: the packet is malformed", f.label);
                self.malformed.set(self.malformed.get() + 2);
                None
            }
            Some(m) => {
                assert_ne!(
                    want, Malformed,
                    "{}: the packet is well formed: {m:?}",
                    f.label
                );
                let v = evaluate(&self.policy, &m);
                assert_eq!(
                    v.passes(),
                    want == Pass,
                    "reference evaluator on {}: {v:?} for {m:?}",
                    f.label
                );
                Some(v)
            }
        };
        let code = if want == Pass { PASS } else { DROP };
        for dir in [IN, EG] {
            let got = self.h.run(dir, &f.bytes).expect("test_run");
            assert_eq!(
                got,
                code,
                "kernel, {} on {}: want {want:?}",
                f.label,
                dir_name(dir)
            );
        }
        verdict
    }

    /// Like `expect`, and the reference names `rule` as the deciding one.
    fn expect_rule(&self, want: Want, rule: u32, p: Packet) {
        let label = p.clone().build().label;
        let v = self.expect(want, p).expect("well formed");
        assert_eq!(v.rule, rule, "{label}: deciding rule ({v:?})");
    }
}

// ---------------------------------------------------------------------------
// Rule kinds.
// ---------------------------------------------------------------------------

/// accept p1 -> gateway tcp 22: only that peer, port, protocol and direction.
#[test]
fn peer_to_gateway_single_port() {
    let b = Bench::new(policy(vec![accept(
        sel_peer(1),
        sel_gw(),
        Some(PROTO_TCP),
        &[(22, 22)],
    )]));
    for f in FAMS {
        let (p1, p2, gw) = (f.peer(1), f.peer(2), f.gw());
        b.expect_rule(Pass, 0, b.tcp(p1, gw, 22));
        b.expect(Drop, b.tcp(p1, gw, 21));
        b.expect(Drop, b.tcp(p1, gw, 23));
        b.expect_rule(Drop, rule_id::DEFAULT, b.tcp(p2, gw, 22));
        b.expect(Drop, b.tcp(f.world(), gw, 22));
        b.expect(Drop, b.udp(p1, gw, 22));
        b.expect(Drop, b.sctp(p1, gw, 22));
        b.expect(Drop, b.tcp(p1, f.peer(2), 22));
        // The rule has a direction: the gateway may not open port 22 on p1.
        b.expect(Drop, b.tcp(gw, p1, 22));
    }
}

/// Ranges match their first and last port and nothing beside them; ranges
/// touching port 0 and 65535 included.
#[test]
fn port_ranges_and_their_boundaries() {
    let b = Bench::new(policy(vec![
        accept(sel_peer(1), sel_gw(), Some(PROTO_TCP), &[(1000, 2000)]),
        accept(
            sel_peer(1),
            sel_gw(),
            Some(PROTO_UDP),
            &[(0, 10), (65530, 65535)],
        ),
        accept(
            sel_peer(1),
            sel_gw(),
            Some(PROTO_SCTP),
            &[(0, 0), (65535, 65535)],
        ),
        accept(sel_peer(2), sel_gw(), Some(PROTO_SCTP), &[(0, 65535)]),
    ]));
    for f in FAMS {
        let (p1, p2, gw) = (f.peer(1), f.peer(2), f.gw());
        // p1 -> gateway on the ports that pass and those that do not.
        let ports = |probe: Probe, passing: &[u16], dropped: &[u16]| {
            for &port in passing {
                b.expect(Pass, probe(&b, p1, gw, port));
            }
            for &port in dropped {
                b.expect(Drop, probe(&b, p1, gw, port));
            }
        };
        ports(Bench::tcp, &[1000, 1500, 2000], &[999, 2001]);
        b.expect(Drop, b.tcp(p2, gw, 1500));
        b.expect(Drop, b.udp(p1, gw, 1500));
        ports(Bench::udp, &[0, 10, 65530, 65535], &[11, 65529]);
        b.expect(Drop, b.tcp(p1, gw, 0));
        b.expect(Drop, b.tcp(p1, gw, 65535));
        ports(Bench::sctp, &[0, 65535], &[1, 65534]);
        // 0-65535 is every port of its protocol, and only of it.
        for port in [0, 1, 22, 65534, 65535] {
            b.expect(Pass, b.sctp(p2, gw, port));
        }
        b.expect(Drop, b.udp(p2, gw, 0));
        b.expect(Drop, b.sctp(f.peer(3), gw, 0));
    }
}

/// No ports: every port of that protocol, no other protocol.
#[test]
fn any_port() {
    let b = Bench::new(policy(vec![accept(
        sel_peer(1),
        sel_gw(),
        Some(PROTO_UDP),
        &[],
    )]));
    for f in FAMS {
        let (p1, gw) = (f.peer(1), f.gw());
        for port in [0, 1, 53, 4500, 65535] {
            b.expect(Pass, b.udp(p1, gw, port));
        }
        b.expect(Drop, b.tcp(p1, gw, 53));
        b.expect(Drop, b.sctp(p1, gw, 53));
        b.expect(Drop, b.icmp(p1, gw, f.echo_request()));
        b.expect(Drop, b.udp(f.peer(2), gw, 53));
        b.expect(Drop, b.udp(gw, p1, 53));
    }
}

/// No protocol: everything between that source and destination.
#[test]
fn any_protocol() {
    let b = Bench::new(policy(vec![accept(sel_peer(1), sel_gw(), None, &[])]));
    for f in FAMS {
        let (p1, gw) = (f.peer(1), f.gw());
        b.expect(Pass, b.tcp(p1, gw, 22));
        b.expect(Pass, b.tcp(p1, gw, 65535));
        b.expect(Pass, b.udp(p1, gw, 0));
        b.expect(Pass, b.sctp(p1, gw, 9));
        b.expect(Pass, b.icmp(p1, gw, f.echo_request()));
        b.expect(Pass, b.icmp(p1, gw, 3));
        b.expect(Pass, Packet::raw_proto(p1, gw, GRE));
        b.expect(Pass, Packet::raw_proto(p1, gw, ESP));
        b.expect(Drop, b.tcp(f.peer(2), gw, 22));
        b.expect(Drop, Packet::raw_proto(f.peer(2), gw, GRE));
        b.expect(Drop, b.tcp(p1, f.peer(2), 22));
        b.expect(Drop, b.tcp(gw, p1, 22));
    }
}

/// Any source: peers and unknown ("world") addresses alike.
#[test]
fn any_source() {
    let b = Bench::new(policy(vec![accept(
        Selector::Any,
        sel_gw(),
        Some(PROTO_TCP),
        &[(443, 443)],
    )]));
    for f in FAMS {
        let gw = f.gw();
        for src in [f.peer(1), f.peer(2), f.peer(3), f.world(), f.host(9, 9)] {
            b.expect(Pass, b.tcp(src, gw, 443));
            b.expect(Drop, b.tcp(src, gw, 80));
            b.expect(Drop, b.udp(src, gw, 443));
        }
        b.expect(Drop, b.tcp(f.peer(1), f.peer(2), 443));
        b.expect(Drop, b.tcp(gw, f.world(), 443));
    }
}

/// Any destination: the gateway, other peers, the world.
#[test]
fn any_destination() {
    let b = Bench::new(policy(vec![accept(
        sel_peer(1),
        Selector::Any,
        Some(PROTO_UDP),
        &[(53, 53)],
    )]));
    for f in FAMS {
        let p1 = f.peer(1);
        for dst in [f.gw(), f.peer(2), f.world(), f.host(9, 9)] {
            b.expect(Pass, b.udp(p1, dst, 53));
            b.expect(Drop, b.udp(p1, dst, 54));
            b.expect(Drop, b.tcp(p1, dst, 53));
        }
        b.expect(Drop, b.udp(f.peer(2), f.gw(), 53));
        b.expect(Drop, b.udp(f.world(), f.gw(), 53));
    }
}

/// A CIDR destination: its first, last and a middle host; the addresses
/// just outside it on both sides.
#[test]
fn cidr_destination() {
    let b = Bench::new(policy(vec![accept(
        sel_peer(1),
        sel(&["10.0.8.0/24", "fd00:0:0:8::/64"]),
        Some(PROTO_TCP),
        &[(80, 80)],
    )]));
    for f in FAMS {
        let p1 = f.peer(1);
        let n = f.subnet(8);
        for inside in [n.network(), step(n.network(), 77), n.broadcast()] {
            b.expect(Pass, b.tcp(p1, inside, 80));
            b.expect(Drop, b.tcp(p1, inside, 81));
            b.expect(Drop, b.tcp(f.peer(2), inside, 80));
        }
        for outside in [
            step(n.network(), -1),
            step(n.broadcast(), 1),
            f.gw(),
            f.world(),
        ] {
            b.expect(Drop, b.tcp(p1, outside, 80));
        }
    }
}

/// A /24 accept with a /32 (/128) deny inside it: the hole is denied, its
/// neighbours still accepted, whatever the rule order.
#[test]
fn overlapping_cidrs() {
    let wide = || sel(&["10.0.8.0/24", "fd00:0:0:8::/64"]);
    let hole = || sel(&["10.0.8.5/32", "fd00:0:0:8::5/128"]);
    for rules in [
        vec![
            accept(sel_peer(1), wide(), Some(PROTO_TCP), &[]),
            deny(sel_peer(1), hole(), Some(PROTO_TCP), &[]),
        ],
        vec![
            deny(sel_peer(1), hole(), Some(PROTO_TCP), &[]),
            accept(sel_peer(1), wide(), Some(PROTO_TCP), &[]),
        ],
    ] {
        let deny_index = rules.iter().position(|r| r.action == Action::Deny).unwrap() as u32;
        let b = Bench::new(policy(rules));
        for f in FAMS {
            let p1 = f.peer(1);
            let hole = f.host(8, 5);
            b.expect(Pass, b.tcp(p1, step(hole, -1), 22));
            b.expect_rule(Drop, deny_index, b.tcp(p1, hole, 22));
            b.expect(Pass, b.tcp(p1, step(hole, 1), 22));
            b.expect(Pass, b.tcp(p1, f.subnet(8).network(), 22));
            b.expect(Pass, b.tcp(p1, f.subnet(8).broadcast(), 22));
            // The deny is tcp only: the hole still has nothing else allowed.
            b.expect(Drop, b.udp(p1, hole, 22));
            b.expect(Drop, b.tcp(p1, step(f.subnet(8).broadcast(), 1), 22));
        }
    }
}

/// Deny wins over accept, wherever the accept is in the rule list.
#[test]
fn deny_wins_over_earlier_and_later_accept() {
    let acc = || accept(sel_peer(1), sel_gw(), Some(PROTO_TCP), &[(22, 22)]);
    let den = || deny(sel_peer(1), sel_gw(), Some(PROTO_TCP), &[]);
    for (rules, deny_index) in [(vec![acc(), den()], 1), (vec![den(), acc()], 0)] {
        let b = Bench::new(policy(rules));
        for f in FAMS {
            b.expect_rule(Drop, deny_index, b.tcp(f.peer(1), f.gw(), 22));
            b.expect(Drop, b.tcp(f.peer(1), f.gw(), 23));
        }
    }
    // A broad accept with a narrow deny: only the narrow case drops.
    let b = Bench::new(policy(vec![
        accept(Selector::Any, Selector::Any, None, &[]),
        deny(sel_peer(1), sel_gw(), Some(PROTO_TCP), &[(22, 22)]),
    ]));
    for f in FAMS {
        b.expect_rule(Drop, 1, b.tcp(f.peer(1), f.gw(), 22));
        b.expect_rule(Pass, 0, b.tcp(f.peer(1), f.gw(), 23));
        b.expect_rule(Pass, 0, b.tcp(f.peer(1), f.gw(), 21));
        b.expect(Pass, b.udp(f.peer(1), f.gw(), 22));
        b.expect(Pass, b.tcp(f.peer(2), f.gw(), 22));
        b.expect(Pass, b.tcp(f.peer(1), f.peer(2), 22));
    }
}

/// ICMP rules match message types: echo request (8, ICMPv6 128) only, and
/// ICMP (1) and ICMPv6 (58) are distinct protocols.
#[test]
fn icmp_echo_by_type() {
    let b = Bench::new(policy(vec![
        accept(sel_peer(1), sel_gw(), Some(PROTO_ICMP), &[(8, 8)]),
        accept(sel_peer(1), sel_gw(), Some(PROTO_ICMPV6), &[(128, 128)]),
        accept(sel_peer(2), sel_gw(), Some(PROTO_ICMP), &[(8, 8)]),
    ]));
    for f in FAMS {
        let (p1, p2, gw) = (f.peer(1), f.peer(2), f.gw());
        b.expect(Pass, b.icmp(p1, gw, f.echo_request()));
        // An echo reply nobody asked for, and other message types.
        b.expect(Drop, b.icmp(p1, gw, f.echo_reply()));
        for t in [3, 11, 13, 135, 136] {
            b.expect(Drop, b.icmp(p1, gw, t));
        }
        b.expect(Drop, b.icmp(f.peer(3), gw, f.echo_request()));
        b.expect(Drop, b.icmp(gw, p1, f.echo_request()));
        // "Port" 8 of an ICMP rule is a type, not a TCP or UDP port.
        b.expect(Drop, b.tcp(p1, gw, 8));
        b.expect(Drop, b.udp(p1, gw, 128));
        // p2 only has the ICMP (v4) rule.
        b.expect(pass_if(f == Fam::V4), b.icmp(p2, gw, f.echo_request()));
    }
    // The wrong ICMP for the family: protocol 58 over IPv4, 1 over IPv6,
    // with the other family's echo type, is not ICMP: it has no type, so
    // rules with types never match it.
    for f in FAMS {
        let (proto, t) = match f {
            Fam::V4 => (PROTO_ICMPV6, 128),
            Fam::V6 => (PROTO_ICMP, 8),
        };
        let body = vec![t, 0, 0, 0, 0x12, 0x34, 0, 1];
        b.expect(Drop, Packet::raw_l4(f.peer(1), f.gw(), proto, body.clone()));
        b.expect(Drop, Packet::raw_l4(f.peer(2), f.gw(), proto, body));
    }
}

/// Portless protocols (GRE) match protocol rules and any-protocol rules,
/// never rules of another protocol, and cannot be given ports.
#[test]
fn portless_protocol() {
    let b = Bench::new(policy(vec![
        accept(sel_peer(1), sel_gw(), Some(GRE), &[]),
        accept(sel_peer(2), sel_gw(), None, &[]),
        accept(sel_peer(3), sel_gw(), Some(PROTO_TCP), &[]),
        accept(sel_peer(3), sel_gw(), Some(PROTO_UDP), &[(0, 65535)]),
    ]));
    for f in FAMS {
        let gw = f.gw();
        b.expect_rule(Pass, 0, Packet::raw_proto(f.peer(1), gw, GRE));
        b.expect(Drop, Packet::raw_proto(f.peer(1), gw, ESP));
        b.expect(Drop, b.tcp(f.peer(1), gw, 47));
        b.expect(Drop, Packet::raw_proto(gw, f.peer(1), GRE));
        b.expect_rule(Pass, 1, Packet::raw_proto(f.peer(2), gw, GRE));
        b.expect(Pass, Packet::raw_proto(f.peer(2), gw, ESP));
        b.expect(Drop, Packet::raw_proto(f.peer(3), gw, GRE));
        b.expect(Pass, b.tcp(f.peer(3), gw, 47));
    }
    let with_ports = policy(vec![accept(sel_peer(1), sel_gw(), Some(GRE), &[(1, 1)])]);
    assert!(matches!(
        compile(&with_ports, capacity::PEERS),
        Err(CompileError::PortsWithoutPortedProto { .. })
    ));
}

/// No rules: everything is denied, in both directions, and so is everything
/// before any policy was ever applied.
#[test]
fn default_deny() {
    let probes = |b: &Bench| {
        for f in FAMS {
            let (p1, gw) = (f.peer(1), f.gw());
            for (s, d) in [(p1, gw), (gw, p1), (p1, f.peer(2)), (f.world(), gw)] {
                b.expect_rule(Drop, rule_id::DEFAULT, b.tcp(s, d, 22));
                b.expect(Drop, b.udp(s, d, 53));
                b.expect(Drop, b.sctp(s, d, 9));
                b.expect(Drop, b.icmp(s, d, f.echo_request()));
                b.expect(Drop, Packet::raw_proto(s, d, GRE));
            }
        }
    };
    probes(&Bench::new(policy(vec![])));
    probes(&Bench::new(Policy::default()));
    // A fresh data plane, no policy applied at all.
    let unapplied = Bench {
        h: Harness::new().expect("load"),
        policy: Policy::default(),
        next: Cell::new(40000),
        malformed: Cell::new(0),
    };
    probes(&unapplied);
}

/// ::/0 is IPv6 only and 0.0.0.0/0 IPv4 only, as sources and destinations,
/// although the kernel keeps both families in one (mapped) address space.
#[test]
fn family_wildcard_prefixes_do_not_cross_families() {
    let b = Bench::new(policy(vec![
        accept(sel(&["::/0"]), sel_gw(), Some(PROTO_TCP), &[(22, 22)]),
        accept(sel(&["0.0.0.0/0"]), sel_gw(), Some(PROTO_UDP), &[(53, 53)]),
        accept(sel_peer(1), sel(&["::/0"]), Some(PROTO_SCTP), &[(9, 9)]),
        accept(
            sel_peer(1),
            sel(&["0.0.0.0/0"]),
            Some(PROTO_SCTP),
            &[(10, 10)],
        ),
    ]));
    for f in FAMS {
        let v6 = f == Fam::V6;
        for src in [f.peer(1), f.peer(2), f.world()] {
            b.expect(pass_if(v6), b.tcp(src, f.gw(), 22));
            b.expect(pass_if(!v6), b.udp(src, f.gw(), 53));
        }
        for dst in [f.gw(), f.peer(2), f.world()] {
            b.expect(pass_if(v6), b.sctp(f.peer(1), dst, 9));
            b.expect(pass_if(!v6), b.sctp(f.peer(1), dst, 10));
        }
    }
}

/// Later fragments whose first fragment was not seen carry no trustworthy
/// ports: they match port-wildcard rules only, and any port-specific deny
/// of their protocol drops them. A first fragment is judged by its ports,
/// as a whole packet is (its datagram's later fragments then follow it:
/// `fragments.rs`; here they never share its identification).
#[test]
fn fragments() {
    let later = |p: Packet| p.as_fragment(false).with_frag_id(0x4242);
    let frags = |b: &Bench, s: IpAddr, d: IpAddr, want: Want| {
        b.expect(want, later(b.tcp(s, d, 22)));
        b.expect(want, later(b.tcp(s, d, 9999)));
    };
    // A port-wildcard accept lets later fragments through; a port-specific
    // accept does not, though it lets the first fragment through.
    let b = Bench::new(policy(vec![
        accept(sel_peer(1), sel_gw(), Some(PROTO_TCP), &[]),
        accept(sel_peer(2), sel_gw(), Some(PROTO_TCP), &[(22, 22)]),
        accept(sel_peer(3), sel_gw(), None, &[]),
    ]));
    for f in FAMS {
        let gw = f.gw();
        frags(&b, f.peer(1), gw, Pass);
        b.expect(Pass, b.tcp(f.peer(1), gw, 22));
        frags(&b, f.peer(2), gw, Drop);
        b.expect(Pass, b.tcp(f.peer(2), gw, 22));
        b.expect(Pass, b.tcp(f.peer(2), gw, 22).as_fragment(true));
        b.expect(Drop, b.tcp(f.peer(2), gw, 23).as_fragment(true));
        frags(&b, f.peer(3), gw, Pass);
        b.expect(Pass, b.udp(f.peer(3), gw, 53).as_fragment(true));
        b.expect(Pass, later(b.udp(f.peer(3), gw, 53)));
        // p1's accept is tcp only.
        b.expect(Drop, b.udp(f.peer(1), gw, 53).as_fragment(true));
        frags(&b, f.world(), gw, Drop);
    }
    // A port-specific deny of the same protocol drops every later
    // fragment, even one whose (untrusted) port is another; a deny of
    // another protocol does not. A first fragment meets only the rules of
    // its port.
    let b = Bench::new(policy(vec![
        accept(sel_peer(1), sel_gw(), None, &[]),
        deny(sel_peer(1), sel_gw(), Some(PROTO_TCP), &[(23, 23)]),
        accept(sel_peer(2), sel_gw(), None, &[]),
        deny(sel_peer(2), sel_gw(), Some(PROTO_UDP), &[(53, 53)]),
    ]));
    for f in FAMS {
        let gw = f.gw();
        b.expect(Pass, b.tcp(f.peer(1), gw, 22));
        b.expect(Drop, b.tcp(f.peer(1), gw, 23));
        frags(&b, f.peer(1), gw, Drop);
        b.expect(Pass, b.tcp(f.peer(1), gw, 22).as_fragment(true));
        b.expect(Drop, b.tcp(f.peer(1), gw, 23).as_fragment(true));
        b.expect(Pass, b.udp(f.peer(1), gw, 23).as_fragment(true));
        frags(&b, f.peer(2), gw, Pass);
        b.expect(Drop, later(b.udp(f.peer(2), gw, 9999)));
        b.expect(Pass, b.udp(f.peer(2), gw, 9999).as_fragment(true));
        b.expect(Pass, b.udp(f.peer(2), gw, 9999));
    }
}

/// IPv4 options and IPv6 extension headers are skipped, not judged: the
/// verdict is that of the same packet without them.
#[test]
fn ipv4_options_and_ipv6_extension_headers_keep_the_verdict() {
    let b = Bench::new(policy(vec![
        accept(sel_peer(1), sel_gw(), Some(PROTO_TCP), &[(22, 22)]),
        accept(sel_peer(1), sel_gw(), Some(PROTO_ICMPV6), &[(128, 128)]),
    ]));
    let (p1, gw) = (Fam::V4.peer(1), Fam::V4.gw());
    for n in [4, 8, 20, 40] {
        b.expect(Pass, b.tcp(p1, gw, 22).with_ipv4_options(n));
        b.expect(Drop, b.tcp(p1, gw, 23).with_ipv4_options(n));
        b.expect(Drop, b.tcp(Fam::V4.peer(2), gw, 22).with_ipv4_options(n));
    }
    let (p1, gw) = (Fam::V6.peer(1), Fam::V6.gw());
    let chains: [&[u8]; 6] = [
        &[0],
        &[60],
        &[43],
        &[51],
        &[0, 60, 43],
        &[0, 43, 60, 51, 60],
    ];
    for chain in chains {
        b.expect(Pass, b.tcp(p1, gw, 22).with_ipv6_ext_headers(chain));
        b.expect(Drop, b.tcp(p1, gw, 23).with_ipv6_ext_headers(chain));
        b.expect(
            Drop,
            b.tcp(Fam::V6.peer(2), gw, 22).with_ipv6_ext_headers(chain),
        );
        b.expect(Pass, b.icmp(p1, gw, 128).with_ipv6_ext_headers(chain));
        b.expect(Drop, b.icmp(p1, gw, 129).with_ipv6_ext_headers(chain));
    }
    // Longer extension headers (len byte > 0) move the L4 header further.
    for (kind, len) in [(0, 3), (60, 1), (51, 6)] {
        b.expect(Pass, b.tcp(p1, gw, 22).with_ipv6_ext_header(kind, len));
        b.expect(Drop, b.tcp(p1, gw, 23).with_ipv6_ext_header(kind, len));
    }
}

/// Source routes: a packet judged as addressed to one host must not carry
/// a route onward. IPv4 loose and strict source route options and IPv6
/// routing headers with segments left (Mobile IPv6's type 2 excepted) are
/// dropped as malformed, even when everything is allowed; options and
/// routing headers that route nowhere pass.
#[test]
fn source_routes_drop_as_malformed() {
    let b = Bench::new(permit_all());
    let (p1, gw) = (Fam::V4.peer(1), Fam::V4.gw());
    let lsrr = [0x83, 7, 4, 10, 0, 9, 9];
    let ssrr = [0x89, 7, 4, 10, 0, 9, 9];
    for opts in [&lsrr[..], &ssrr[..], &[1, 1, 1, 0x83, 3, 4][..]] {
        b.expect(Malformed, b.tcp(p1, gw, 22).with_ipv4_option_bytes(opts));
        b.expect(Malformed, b.udp(p1, gw, 53).with_ipv4_option_bytes(opts));
    }
    // Option lengths the kernel's own parser refuses.
    for opts in [&[0x07, 0][..], &[0x07, 1][..], &[1, 0x07, 40, 4][..]] {
        b.expect(Malformed, b.tcp(p1, gw, 22).with_ipv4_option_bytes(opts));
    }
    // Record route, timestamp, router alert: no route onward.
    for opts in [
        &[0x07, 7, 4, 0, 0, 0, 0][..],
        &[0x44, 8, 5, 0, 0, 0, 0, 0][..],
        &[0x94, 4, 0, 0][..],
        &[0, 0x83, 7][..], // after the end of the list: not an option
    ] {
        b.expect(Pass, b.tcp(p1, gw, 22).with_ipv4_option_bytes(opts));
    }
    let (p1, gw) = (Fam::V6.peer(1), Fam::V6.gw());
    for (rtype, segs) in [(0, 1), (3, 1), (4, 2), (253, 255)] {
        b.expect(
            Malformed,
            b.tcp(p1, gw, 22).with_ipv6_routing_header(rtype, segs),
        );
        b.expect(
            Malformed,
            b.udp(p1, gw, 53)
                .with_ipv6_ext_headers(&[0])
                .with_ipv6_routing_header(rtype, segs),
        );
    }
    for (rtype, segs) in [(0, 0), (4, 0), (2, 1)] {
        b.expect(
            Pass,
            b.tcp(p1, gw, 22).with_ipv6_routing_header(rtype, segs),
        );
    }
    let before = b.h.dp.maps.stats().expect("stats").malformed;
    assert_eq!(before, b.malformed.get(), "counted as malformed");
}

/// Headers that cannot be parsed are dropped even when everything is
/// allowed: truncated L4 headers, bad IHL, lengths that lie, bad versions,
/// extension chains that run off the packet or never end.
#[test]
fn malformed_packets_drop_under_permit_all() {
    let b = Bench::new(permit_all());
    for f in FAMS {
        let (p1, gw) = (f.peer(1), f.gw());
        let hdr = f.ip_hdr() as usize;
        // Controls: the well-formed packets pass.
        b.expect(Pass, b.tcp(p1, gw, 22));
        b.expect(Pass, b.udp(p1, gw, 53));
        // L4 headers shorter than their protocol's minimum.
        b.expect(Malformed, b.tcp(p1, gw, 22).truncated_to(hdr + 19));
        b.expect(Malformed, b.tcp(p1, gw, 22).truncated_to(hdr + 4));
        b.expect(Malformed, b.tcp(p1, gw, 22).truncated_to(hdr));
        b.expect(Malformed, b.udp(p1, gw, 53).truncated_to(hdr + 7));
        b.expect(Malformed, b.sctp(p1, gw, 9).truncated_to(hdr + 11));
        b.expect(
            Malformed,
            b.icmp(p1, gw, f.echo_request()).truncated_to(hdr + 7),
        );
        // Bytes missing that the length field claims.
        b.expect(Malformed, b.tcp(p1, gw, 22).cut_to(hdr + 10));
        b.expect(Malformed, b.tcp(p1, gw, 22).cut_to(hdr - 1));
        // Length fields that lie: longer than the packet, or too short for
        // the TCP header they announce.
        let real = if f == Fam::V4 { 40 } else { 20 };
        b.expect(Malformed, b.tcp(p1, gw, 22).with_len_field(real + 1));
        b.expect(Malformed, b.tcp(p1, gw, 22).with_len_field(65535));
        b.expect(Malformed, b.tcp(p1, gw, 22).with_len_field(real - 10));
        b.expect(
            Malformed,
            b.tcp(p1, gw, 22).with_padding(30).with_len_field(real + 31),
        );
        // Padding after an honest length is fine.
        b.expect(Pass, b.tcp(p1, gw, 22).with_padding(30));
        b.expect(Malformed, b.tcp(p1, gw, 22).with_version(5));
        b.expect(Malformed, b.tcp(p1, gw, 22).with_version(0));
        match f {
            Fam::V4 => {
                b.expect(Malformed, b.tcp(p1, gw, 22).with_len_field(19));
                for ihl in [0, 4] {
                    b.expect(Malformed, b.tcp(p1, gw, 22).with_ihl(ihl));
                }
                // 60 header bytes announced in a 40-byte packet.
                b.expect(Malformed, b.tcp(p1, gw, 22).with_ihl(15));
                // 24 header bytes leave 16 for a 20-byte TCP header.
                b.expect(Malformed, b.tcp(p1, gw, 22).with_ihl(6));
            }
            Fam::V6 => {
                // Zero payload length: a jumbogram, never valid here.
                b.expect(Malformed, b.tcp(p1, gw, 22).with_len_field(0));
                // An extension header (24 bytes) longer than the payload
                // length says the packet is (16).
                b.expect(
                    Malformed,
                    b.tcp(p1, gw, 22)
                        .with_ipv6_ext_header(0, 2)
                        .with_len_field(16),
                );
                // More extension headers than the program walks.
                b.expect(
                    Malformed,
                    b.tcp(p1, gw, 22)
                        .with_ipv6_ext_headers(&[0, 60, 43, 60, 43, 60]),
                );
            }
        }
    }
    let stats = b.h.dp.maps.stats().expect("stats");
    assert_eq!(stats.malformed, b.malformed.get(), "malformed counter");
    for index in 0..=3 {
        let t = peer_totals(&b.h, index);
        assert_eq!(
            t.ingress.denied_packets + t.egress.denied_packets,
            0,
            "malformed packets are not counted per peer"
        );
    }
}

/// IPv6 packets with an IPv4-mapped source or destination would alias IPv4
/// identities in the kernel's shared address space: always dropped.
#[test]
fn ipv4_mapped_ipv6_addresses_drop() {
    let (p1, gw) = (Fam::V4.peer(1), Fam::V4.gw());
    let (p1_6, gw_6) = (Fam::V6.peer(1), Fam::V6.gw());
    for b in [
        Bench::new(permit_all()),
        Bench::new(policy(vec![accept(
            sel_peer(1),
            sel_gw(),
            Some(PROTO_TCP),
            &[(22, 22)],
        )])),
    ] {
        // The IPv4 packet itself passes under both policies.
        b.expect(Pass, b.tcp(p1, gw, 22));
        b.expect(Pass, b.tcp(p1_6, gw_6, 22));
        b.expect(Malformed, b.tcp(v4_mapped(p1), v4_mapped(gw), 22));
        b.expect(Malformed, b.tcp(v4_mapped(p1), gw_6, 22));
        b.expect(Malformed, b.tcp(p1_6, v4_mapped(gw), 22));
        b.expect(Malformed, b.udp(v4_mapped(p1), gw_6, 53));
        b.expect(Malformed, b.icmp(p1_6, v4_mapped(gw), 128));
        b.expect(Malformed, Packet::raw_proto(v4_mapped(p1), gw_6, GRE));
        b.expect(
            Malformed,
            b.tcp(v4_mapped("0.0.0.0".parse().unwrap()), gw_6, 22),
        );
    }
}

/// IPv6 link-local control traffic (router and neighbour discovery, MLD:
/// what the kernel sends on a fresh interface) passes by the policy's
/// default, counted as allowed and never as a deny; anything else between
/// link-local addresses (echo, BGP) is ordinary traffic for the rules; an
/// explicit deny still wins; `LinkLocal::Policy` turns the default off.
#[test]
fn link_local_control_traffic_passes_by_default() {
    let ll = |s: &str| -> IpAddr { s.parse().unwrap() };
    let (a, b_) = (ll("fe80::1"), ll("fe80::2"));
    let control = [
        (a, ll("ff02::2"), 133u8),             // router solicitation
        (b_, ll("ff02::1"), 134),              // router advertisement
        (b_, ll("ff02::1:ff00:1"), 135),       // neighbour solicitation
        (ll("::"), ll("ff02::1:ff00:2"), 135), // duplicate address detection
        (b_, a, 136),                          // neighbour advertisement
        (a, ll("ff02::16"), 143),              // MLDv2 report
    ];
    let b = Bench::new(policy(vec![]));
    for (s, d, t) in control {
        b.expect(Pass, b.icmp(s, d, t));
    }
    assert!(
        denies(&b.h).is_empty(),
        "no deny logged: {:?}",
        denies(&b.h)
    );
    let zero = peer_totals(&b.h, 0);
    assert_eq!(zero.egress.allowed_packets, control.len() as u64);
    assert_eq!(zero.egress.denied_packets, 0);
    // Not control traffic: other types, global sources or destinations,
    // and routing protocols.
    b.expect(Drop, b.icmp(b_, a, 128));
    b.expect(Drop, b.icmp(ll("fd00::2"), ll("ff02::1"), 135));
    b.expect(Drop, b.icmp(a, ll("fd00::9"), 133));
    b.expect(Drop, b.icmp(a, ll("ff05::2"), 133));
    b.expect(Drop, b.tcp(b_, a, 179));
    // BGP between gateways is allowed by a rule, like anything else.
    let b = Bench::new(policy(vec![accept(
        sel(&["fe80::/10"]),
        sel(&["fe80::/10"]),
        Some(PROTO_TCP),
        &[(179, 179)],
    )]));
    b.expect(Pass, b.tcp(b_, a, 179));
    // An explicit deny wins over the default.
    let b = Bench::new(policy(vec![deny(
        Selector::Any,
        Selector::Any,
        Some(PROTO_ICMPV6),
        &[(133, 133)],
    )]));
    b.expect(Drop, b.icmp(a, ll("ff02::2"), 133));
    b.expect(Pass, b.icmp(b_, a, 136));
    // The default turned off: judged like anything else.
    let mut off = policy(vec![]);
    off.link_local = LinkLocal::Policy;
    let b = Bench::new(off);
    for (s, d, t) in control {
        b.expect(Drop, b.icmp(s, d, t));
    }
}
