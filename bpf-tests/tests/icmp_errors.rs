//! ICMP errors (fragmentation needed / packet too big, port unreachable,
//! time exceeded) about a packet of a live flow pass back to that packet's
//! sender, as part of the flow; unrelated or spoofed ones are judged by the
//! policy. Checked in the kernel and in the reference model, side by side.

use std::net::IpAddr;

use wgbpf::policy::{
    model::{Action, Peer, Policy, PortRange, Rule, Selector},
    reference::{FlowTuple, Model},
};
use wgbpf_bpf_tests::{
    harness::{meta, Harness, DROP, PASS},
    packets::{Expected, Frame, Packet},
};
use wgbpf_common::{DIR_EGRESS, DIR_INGRESS, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// alice may reach bob on tcp/443 and udp/53; nothing else, and no ICMP.
fn policy() -> Policy {
    let peer = |name: &str, index, v4: &str, v6: &str| Peer {
        name: name.into(),
        index,
        allowed_ips: vec![v4.parse().unwrap(), v6.parse().unwrap()],
    };
    let alice = peer("alice", 1, "10.77.0.2/32", "fd77::2/128");
    let bob = peer("bob", 2, "10.77.0.3/32", "fd77::3/128");
    // carol has no rule at all.
    let carol = peer("carol", 3, "10.77.0.4/32", "fd77::4/128");
    let rule = |proto, port| Rule {
        name: format!("alice-bob-{port}"),
        action: Action::Accept,
        audit: false,
        src: Selector::Prefixes(alice.allowed_ips.clone()),
        dst: Selector::Prefixes(bob.allowed_ips.clone()),
        proto: Some(proto),
        ports: vec![PortRange::single(port)],
    };
    Policy {
        link_local: Default::default(),
        rules: vec![rule(PROTO_TCP, 443), rule(PROTO_UDP, 53)],
        peers: vec![alice, bob, carol],
        local: vec![
            "10.77.0.1/32".parse().unwrap(),
            "fd77::1/128".parse().unwrap(),
        ],
        audit: false,
    }
}

/// An ICMP error from `from` to `to` quoting the first 8 L4 bytes of `quoted`.
fn icmp_error(from: IpAddr, to: IpAddr, icmp_type: u8, code: u8, quoted: &Frame) -> Frame {
    let proto = if from.is_ipv4() {
        PROTO_ICMP
    } else {
        PROTO_ICMPV6
    };
    let ip_hdr = if from.is_ipv4() { 20 } else { 40 };
    let mut l4 = vec![icmp_type, code, 0, 0, 0, 0, 0x05, 0x00];
    l4.extend_from_slice(&quoted.bytes[14..14 + ip_hdr + 8]);
    Packet::raw_l4(from, to, proto, l4).build()
}

/// The kernel's verdict and the model's must agree, and equal `want`.
fn check(
    h: &Harness,
    model: &mut Model,
    dir: usize,
    frame: &Frame,
    quoted: Option<FlowTuple>,
    want: u32,
) {
    let Expected::Packet(_) = &frame.expected else {
        panic!("{} must parse", frame.label)
    };
    let mut meta = meta(frame).expect("well formed");
    meta.quoted = quoted;
    let out = model.packet(&meta);
    let model_says = if out.verdict.passes() { PASS } else { DROP };
    let got = h.run(dir, &frame.bytes).unwrap();
    assert_eq!(got, want, "kernel on {meta:?}");
    assert_eq!(model_says, want, "model on {meta:?}");
}

fn tuple(src: &str, dst: &str, proto: u8, sport: u16, dport: u16) -> Option<FlowTuple> {
    Some(FlowTuple {
        src: ip(src),
        dst: ip(dst),
        sport,
        dport,
        proto,
    })
}

#[test]
fn errors_about_live_flows_pass_others_do_not() {
    for (a, b, router, frag_needed) in [
        ("10.77.0.2", "10.77.0.3", "10.77.0.1", (3u8, 4u8)),
        ("fd77::2", "fd77::3", "fd77::1", (2, 0)),
    ] {
        let mut h = Harness::new().unwrap();
        let version = h.apply(&policy()).unwrap().version;
        let mut model = Model::new(policy(), version);
        let unreachable = if ip(a).is_ipv4() { (3, 3) } else { (1, 4) };
        let time_exceeded = if ip(a).is_ipv4() { (11, 0) } else { (3, 0) };

        let syn = Packet::tcp(ip(a), ip(b), 40000, 443).build();
        check(&h, &mut model, DIR_INGRESS, &syn, None, PASS);
        let t = tuple(a, b, PROTO_TCP, 40000, 443);

        // Packet too big from the gateway (a router on the path), to alice.
        let ptb = icmp_error(ip(router), ip(a), frag_needed.0, frag_needed.1, &syn);
        check(&h, &mut model, DIR_EGRESS, &ptb, t, PASS);
        // Time exceeded from bob himself.
        let te = icmp_error(ip(b), ip(a), time_exceeded.0, time_exceeded.1, &syn);
        check(&h, &mut model, DIR_INGRESS, &te, t, PASS);

        // Port unreachable about a UDP query that was allowed.
        let query = Packet::udp(ip(a), ip(b), 5353, 53).build();
        check(&h, &mut model, DIR_INGRESS, &query, None, PASS);
        let pu = icmp_error(ip(b), ip(a), unreachable.0, unreachable.1, &query);
        check(
            &h,
            &mut model,
            DIR_INGRESS,
            &pu,
            tuple(a, b, PROTO_UDP, 5353, 53),
            PASS,
        );

        // Quoting a packet that never passed: judged by policy (no ICMP rule).
        let never = Packet::tcp(ip(a), ip(b), 40001, 22).build();
        let e = icmp_error(ip(b), ip(a), unreachable.0, unreachable.1, &never);
        check(
            &h,
            &mut model,
            DIR_INGRESS,
            &e,
            tuple(a, b, PROTO_TCP, 40001, 22),
            DROP,
        );

        // Sent to someone other than the quoted packet's sender: spoofed.
        let gw = ip(router);
        let spoofed = icmp_error(ip(b), gw, unreachable.0, unreachable.1, &syn);
        check(&h, &mut model, DIR_INGRESS, &spoofed, t, DROP);

        // A new policy that no longer allows the flow: its errors stop too.
        let mut closed = policy();
        closed.rules.clear();
        let v = h.apply(&closed).unwrap().version;
        model.set_policy(closed, v);
        check(&h, &mut model, DIR_EGRESS, &ptb, t, DROP);
    }
}

/// Hole: an error belongs to a flow only when it comes from the flow's far
/// end or from the gateway itself. A peer with no rule toward a host (carol)
/// must not reach it by quoting the host's live flow, whatever the message
/// type and whatever bytes follow the quote; a router on the path reaches
/// the host only where the policy lets it (then as the policy's verdict,
/// logged, not as part of the flow).
#[test]
fn errors_from_third_parties_are_judged_by_the_policy() {
    for (a, b, carol, gw, errors) in [
        (
            "10.77.0.2",
            "10.77.0.3",
            "10.77.0.4",
            "10.77.0.1",
            [(3u8, 4u8), (3, 3), (11, 0), (12, 0)],
        ),
        (
            "fd77::2",
            "fd77::3",
            "fd77::4",
            "fd77::1",
            [(2, 0), (1, 4), (3, 0), (4, 0)],
        ),
    ] {
        let mut h = Harness::new().unwrap();
        let version = h.apply(&policy()).unwrap().version;
        let mut model = Model::new(policy(), version);
        let syn = Packet::tcp(ip(a), ip(b), 40000, 443).build();
        check(&h, &mut model, DIR_INGRESS, &syn, None, PASS);
        let t = tuple(a, b, PROTO_TCP, 40000, 443);
        for (ty, code) in errors {
            // From carol, to alice: carol is neither bob nor the gateway.
            let e = icmp_error(ip(carol), ip(a), ty, code, &syn);
            check(&h, &mut model, DIR_EGRESS, &e, t, DROP);
            // With trailing garbage after the quote.
            let mut l4 = e.bytes[14 + if ip(a).is_ipv4() { 20 } else { 40 }..].to_vec();
            l4.extend_from_slice(&[0xde; 37]);
            let proto = if ip(a).is_ipv4() {
                PROTO_ICMP
            } else {
                PROTO_ICMPV6
            };
            let e = Packet::raw_l4(ip(carol), ip(a), proto, l4).build();
            check(&h, &mut model, DIR_EGRESS, &e, t, DROP);
            // The flow's far end and the gateway are heard.
            let e = icmp_error(ip(b), ip(a), ty, code, &syn);
            check(&h, &mut model, DIR_EGRESS, &e, t, PASS);
            let e = icmp_error(ip(gw), ip(a), ty, code, &syn);
            check(&h, &mut model, DIR_EGRESS, &e, t, PASS);
        }
        // A policy that lets carol send ICMP errors to alice: carol is then a
        // router the policy lets reach her.
        let mut open = policy();
        let (icmp, ty) = if ip(a).is_ipv4() {
            (PROTO_ICMP, 3)
        } else {
            (PROTO_ICMPV6, 2)
        };
        open.rules.push(Rule {
            name: "carol-may-report".into(),
            action: Action::Accept,
            audit: false,
            src: Selector::Prefixes(vec![format!(
                "{carol}/{}",
                if ip(a).is_ipv4() { 32 } else { 128 }
            )
            .parse()
            .unwrap()]),
            dst: Selector::Any,
            proto: Some(icmp),
            ports: vec![PortRange::single(ty)],
        });
        let v = h.apply(&open).unwrap().version;
        model.set_policy(open, v);
        check(&h, &mut model, DIR_EGRESS, &syn, None, PASS);
        let e = icmp_error(ip(carol), ip(a), ty as u8, 0, &syn);
        check(&h, &mut model, DIR_EGRESS, &e, t, PASS);
    }
}

/// Hole: ICMP belongs to IPv4 and ICMPv6 to IPv6. Protocol 58 in an IPv4
/// packet (or 1 in IPv6) is not ICMP: it has no message type, quotes no
/// flow and matches no rule with types; only rules for its protocol number
/// without types (or for any protocol) match it.
#[test]
fn icmp_of_the_other_family_is_not_icmp() {
    for (a, b, v4) in [
        ("10.77.0.2", "10.77.0.3", true),
        ("fd77::2", "fd77::3", false),
    ] {
        let mut h = Harness::new().unwrap();
        let mut pol = policy();
        // Types 3 and 1 (errors) and echo requests of both ICMPs open to alice.
        for (proto, types) in [(PROTO_ICMP, [3u16, 8]), (PROTO_ICMPV6, [1, 128])] {
            pol.rules.push(Rule {
                name: format!("icmp-{proto}"),
                action: Action::Accept,
                audit: false,
                src: Selector::Any,
                dst: Selector::Any,
                proto: Some(proto),
                ports: types.iter().map(|t| PortRange::single(*t)).collect(),
            });
        }
        let version = h.apply(&pol).unwrap().version;
        let mut model = Model::new(pol.clone(), version);
        let syn = Packet::tcp(ip(a), ip(b), 40000, 443).build();
        check(&h, &mut model, DIR_INGRESS, &syn, None, PASS);
        let other = if v4 { PROTO_ICMPV6 } else { PROTO_ICMP };
        let (err, echo) = if v4 { (1u8, 128u8) } else { (3, 8) };
        // An "error" of the other family quoting alice's flow, from bob.
        let ip_hdr = if v4 { 20 } else { 40 };
        let mut l4 = vec![err, 4, 0, 0, 0, 0, 0, 0];
        l4.extend_from_slice(&syn.bytes[14..14 + ip_hdr + 8]);
        let e = Packet::raw_l4(ip(b), ip(a), other, l4).build();
        check(&h, &mut model, DIR_INGRESS, &e, None, DROP);
        // An "echo request" of the other family.
        let ping = Packet::raw_l4(ip(b), ip(a), other, vec![echo, 0, 0, 0, 0, 9, 0, 1]).build();
        check(&h, &mut model, DIR_INGRESS, &ping, None, DROP);
        // A rule for protocol `other` without types does match it.
        pol.rules.push(Rule {
            name: "proto-only".into(),
            action: Action::Accept,
            audit: false,
            src: Selector::Any,
            dst: Selector::Any,
            proto: Some(other),
            ports: vec![],
        });
        let v = h.apply(&pol).unwrap().version;
        model.set_policy(pol, v);
        check(&h, &mut model, DIR_INGRESS, &ping, None, PASS);
        // ... and opens no echo flow: the "reply" is judged on its own.
        let reply =
            Packet::raw_l4(ip(a), ip(b), other, vec![echo + 1, 0, 0, 0, 0, 9, 0, 1]).build();
        check(&h, &mut model, DIR_EGRESS, &reply, None, PASS);
    }
}
