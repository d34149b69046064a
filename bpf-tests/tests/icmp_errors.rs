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
    harness::{to_meta, Harness, DROP, PASS},
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
        rules: vec![rule(PROTO_TCP, 443), rule(PROTO_UDP, 53)],
        peers: vec![alice, bob],
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
    let Expected::Packet(p) = &frame.expected else {
        panic!("{} must parse", frame.label)
    };
    let mut meta = to_meta(p);
    meta.quoted = quoted;
    let out = model.packet(&meta);
    let model_says = if out.verdict.passes() { PASS } else { DROP };
    let got = h.run(dir, &frame.bytes).unwrap();
    assert_eq!(model_says, want, "model on {meta:?}");
    assert_eq!(got, want, "kernel on {meta:?}");
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
