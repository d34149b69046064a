//! The stateful part: replies pass because their flow was opened by an
//! allowed packet, not because the policy allows them; the flow table is
//! shared by the ingress and egress programs; a policy change re-checks a
//! flow against its opening direction and revokes it (both directions) when
//! that is no longer allowed; flow-decided packets are counted per peer but
//! never logged as denies.
//!
//! Every packet also goes through the reference flow model
//! (`wgbpf::policy::reference::Model`), which must agree on the verdict and
//! on whether the flow table decided.

use std::net::IpAddr;

use wgbpf::{
    dataplane::{counters::PeerTotals, slot::ApplyReport},
    policy::{
        model::{Policy, Rule},
        reference::{Model, Outcome},
    },
};
use wgbpf_bpf_tests::{
    fixtures::{
        accept, addr, audit_deny, denies, dir_name, ip_len, peer_totals, policy, sel_gw, sel_peer,
        totals, Denies, Fam, Named, EG, FAMS, IN,
    },
    harness::{meta, Harness, DROP, PASS},
    packets::Packet,
};
use wgbpf_common::{
    severity, FlowKey, FlowValue, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP,
};

// ---------------------------------------------------------------------------
// Policies (addresses: `fixtures::LAN`).
// ---------------------------------------------------------------------------

/// p1 may open tcp 22, udp 53, sctp 9 and ping the gateway; the gateway
/// may open tcp 8080 on p1. Nothing else, in particular no reply direction.
fn flow_rules() -> Vec<Rule> {
    vec![
        accept(sel_peer(1), sel_gw(), PROTO_TCP, &[(22, 22)]),
        accept(sel_peer(1), sel_gw(), PROTO_UDP, &[(53, 53)]),
        accept(sel_peer(1), sel_gw(), PROTO_SCTP, &[(9, 9)]),
        accept(sel_peer(1), sel_gw(), PROTO_ICMP, &[(8, 8)]),
        accept(sel_peer(1), sel_gw(), PROTO_ICMPV6, &[(128, 128)]),
        accept(sel_gw(), sel_peer(1), PROTO_TCP, &[(8080, 8080)]),
    ]
}

// ---------------------------------------------------------------------------
// The bench: kernel and reference model fed the same packets in order.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum By {
    Policy,
    Flow,
}

struct Bench {
    h: Harness,
    model: Model,
    version: u32,
}

impl Bench {
    fn new(policy: Policy) -> Bench {
        let mut h = Harness::new().expect("load the programs (are you root?)");
        let version = h.apply(&policy).expect("apply").version;
        Bench {
            h,
            model: Model::new(policy, version),
            version,
        }
    }

    fn apply(&mut self, policy: Policy) -> ApplyReport {
        let r = self.h.apply(&policy).expect("apply");
        assert!(r.changed, "a different policy must change the slot");
        assert_eq!(r.version, self.version + 1, "versions count up");
        self.version = r.version;
        self.model.set_policy(policy, r.version);
        r
    }

    /// Runs one packet through the kernel and the model; both must reach
    /// `pass`, and the model must say who decided (`by`).
    fn send(&mut self, dir: usize, pass: bool, by: By, p: Packet) -> (Outcome, u64) {
        let f = p.build();
        let m = meta(&f).unwrap_or_else(|| panic!("{}: malformed", f.label));
        let out = self.model.packet(&m);
        let d = dir_name(dir);
        assert_eq!(
            out.verdict.passes(),
            pass,
            "model, {} on {d}: {out:?}",
            f.label
        );
        assert_eq!(
            out.from_flow,
            by == By::Flow,
            "model, {} on {d}: who decided ({out:?})",
            f.label
        );
        let got = self.h.run(dir, &f.bytes).expect("test_run");
        assert_eq!(
            got,
            if pass { PASS } else { DROP },
            "kernel, {} on {d}",
            f.label
        );
        (out, ip_len(&f))
    }

    /// Passes because the policy allows it (and, if it may, opens a flow).
    fn allowed(&mut self, dir: usize, p: Packet) -> Outcome {
        self.send(dir, true, By::Policy, p).0
    }
    /// Passes because it belongs to a flow (a reply, or a repeat).
    fn by_flow(&mut self, dir: usize, p: Packet) -> Outcome {
        self.send(dir, true, By::Flow, p).0
    }
    /// Dropped by the policy.
    fn denied(&mut self, dir: usize, p: Packet) {
        self.send(dir, false, By::Policy, p);
    }
    /// Each dropped by the policy, in order.
    fn all_denied<const N: usize>(&mut self, dir: usize, ps: [Packet; N]) {
        for p in ps {
            self.denied(dir, p);
        }
    }
    /// `reply` (the other way) is dropped by the policy while unsolicited;
    /// `open` on `dir` is allowed and opens a flow; now `reply` passes by it.
    fn opens_flow(&mut self, dir: usize, open: Packet, reply: Packet) {
        let back = if dir == IN { EG } else { IN };
        self.denied(back, reply.clone());
        self.allowed(dir, open);
        self.by_flow(back, reply);
    }

    fn flow_entry(&self, key: FlowKey) -> Option<FlowValue> {
        self.h.dp.maps.flows.get(&key, 0).ok()
    }
}

/// The flow-table key of a packet (either direction finds the same).
fn flow_key(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, proto: u8) -> FlowKey {
    FlowKey::of(&addr(src), &addr(dst), sport, dport, proto).0
}

// ---------------------------------------------------------------------------
// Replies.
// ---------------------------------------------------------------------------

/// A TCP reply passes once an allowed packet opened its flow, and only the
/// exact reversed 5-tuple does.
#[test]
fn tcp_reply_passes_after_allowed_syn_only() {
    let mut b = Bench::new(policy(flow_rules()));
    for f in FAMS {
        let (p1, p2, gw) = (f.peer(1), f.peer(2), f.gw());
        // Unsolicited, the "reply" is judged by the policy: no rule.
        b.opens_flow(
            IN,
            Packet::tcp(p1, gw, 40000, 22),
            Packet::tcp(gw, p1, 22, 40000),
        );
        b.by_flow(EG, Packet::tcp(gw, p1, 22, 40000).with_payload(500));
        b.by_flow(IN, Packet::tcp(p1, gw, 40000, 22).with_payload(100));
        // Near misses of the reply tuple.
        b.all_denied(
            EG,
            [
                Packet::tcp(gw, p1, 22, 40001),
                Packet::tcp(gw, p1, 23, 40000),
                Packet::tcp(gw, p2, 22, 40000),
                Packet::udp(gw, p1, 22, 40000),
                Packet::sctp(gw, p1, 22, 40000),
            ],
        );
        b.denied(IN, Packet::tcp(p2, p1, 22, 40000));
        // A denied opening packet opens nothing.
        b.denied(IN, Packet::tcp(p1, gw, 40002, 23));
        b.denied(EG, Packet::tcp(gw, p1, 23, 40002));
    }
}

/// UDP and SCTP replies, like TCP's.
#[test]
fn udp_and_sctp_replies() {
    let mut b = Bench::new(policy(flow_rules()));
    for f in FAMS {
        let (p1, gw) = (f.peer(1), f.gw());
        b.denied(EG, Packet::udp(gw, p1, 53, 5353));
        b.allowed(IN, Packet::udp(p1, gw, 5353, 53).with_payload(30));
        b.by_flow(EG, Packet::udp(gw, p1, 53, 5353).with_payload(200));
        b.all_denied(
            EG,
            [
                Packet::udp(gw, p1, 53, 5354),
                Packet::udp(gw, p1, 54, 5353),
                Packet::tcp(gw, p1, 53, 5353),
            ],
        );

        b.opens_flow(
            IN,
            Packet::sctp(p1, gw, 7000, 9),
            Packet::sctp(gw, p1, 9, 7000),
        );
        b.all_denied(
            EG,
            [Packet::sctp(gw, p1, 9, 7001), Packet::udp(gw, p1, 9, 7000)],
        );
    }
}

/// Echo replies pass after an allowed echo request with the same
/// identifier, from the address that was pinged; nothing else does.
#[test]
fn icmp_echo_reply_after_request() {
    let mut b = Bench::new(policy(flow_rules()));
    for f in FAMS {
        let (p1, p2, gw) = (f.peer(1), f.peer(2), f.gw());
        b.opens_flow(
            IN,
            Packet::icmp_echo_request(p1, gw, 0x1234),
            Packet::icmp_echo_reply(gw, p1, 0x1234),
        );
        b.by_flow(EG, Packet::icmp_echo_reply(gw, p1, 0x1234).with_payload(56));
        b.by_flow(IN, Packet::icmp_echo_request(p1, gw, 0x1234));
        // Another identifier, another replier, a reply the wrong way, and a
        // request the other way are not replies.
        b.denied(EG, Packet::icmp_echo_reply(gw, p1, 0x1235));
        b.denied(EG, Packet::icmp_echo_reply(p2, p1, 0x1234));
        b.denied(IN, Packet::icmp_echo_reply(p1, gw, 0x1234));
        b.denied(EG, Packet::icmp_echo_request(gw, p1, 0x1234));
        // Other ICMP types never belong to a flow.
        let unreachable = Packet::icmp(gw, p1, if f == Fam::V4 { 3 } else { 1 }, 0, 0x1234_0001);
        b.denied(EG, unreachable);
        // An echo reply opens no flow, even when the policy allows it.
        let mut allow_reply = flow_rules();
        allow_reply.push(accept(sel_peer(2), sel_gw(), PROTO_ICMP, &[(0, 0)]));
        allow_reply.push(accept(sel_peer(2), sel_gw(), PROTO_ICMPV6, &[(129, 129)]));
        let mut b2 = Bench::new(policy(allow_reply));
        b2.allowed(IN, Packet::icmp_echo_reply(p2, gw, 0x4321));
        b2.denied(EG, Packet::icmp_echo_request(gw, p2, 0x4321));
    }
}

/// Both programs use one flow table: a flow opened on ingress is answered
/// on egress, and one opened on egress is answered on ingress.
#[test]
fn ingress_and_egress_share_the_flow_table() {
    let mut b = Bench::new(policy(flow_rules()));
    for f in FAMS {
        let (p1, gw) = (f.peer(1), f.gw());
        // Peer opens (ingress), gateway answers (egress).
        b.allowed(IN, Packet::tcp(p1, gw, 41000, 22));
        b.by_flow(EG, Packet::tcp(gw, p1, 22, 41000));
        // Gateway opens (egress), peer answers (ingress).
        b.opens_flow(
            EG,
            Packet::tcp(gw, p1, 42000, 8080),
            Packet::tcp(p1, gw, 8080, 42000),
        );
        // Echo: requested on ingress, replied on egress.
        b.allowed(IN, Packet::icmp_echo_request(p1, gw, 77));
        b.by_flow(EG, Packet::icmp_echo_reply(gw, p1, 77));
    }
}

// ---------------------------------------------------------------------------
// Policy changes.
// ---------------------------------------------------------------------------

/// A new policy that no longer allows a flow's opening packet revokes the
/// flow: its next packet is dropped whichever direction comes first, the
/// other direction is dropped too, and both entries leave the flow table,
/// so restoring the policy brings back no reply, only new openings.
#[test]
fn policy_update_removing_the_allow_revokes_the_flow_both_ways() {
    for f in FAMS {
        let mut b = Bench::new(policy(flow_rules()));
        let (p1, gw) = (f.peer(1), f.gw());
        // Flows a and b (tcp 22), c (udp 53).
        for sport in [41000, 41001] {
            b.allowed(IN, Packet::tcp(p1, gw, sport, 22));
            b.by_flow(EG, Packet::tcp(gw, p1, 22, sport));
        }
        b.allowed(IN, Packet::udp(p1, gw, 5353, 53));
        b.by_flow(EG, Packet::udp(gw, p1, 53, 5353));
        let keys = [
            flow_key(p1, gw, 41000, 22, PROTO_TCP),
            flow_key(gw, p1, 22, 41000, PROTO_TCP),
            flow_key(p1, gw, 41001, 22, PROTO_TCP),
            flow_key(gw, p1, 22, 41001, PROTO_TCP),
        ];
        for k in keys {
            assert!(
                b.flow_entry(k).is_some(),
                "flow entry {k:?} before the update"
            );
        }
        let denies_before = denies(&b.h);

        // tcp 22 no longer allowed; udp 53 still is.
        let without_ssh: Vec<Rule> = flow_rules().into_iter().skip(1).collect();
        b.apply(policy(without_ssh));
        // a: opening direction first, then the reply.
        b.denied(IN, Packet::tcp(p1, gw, 41000, 22));
        b.denied(EG, Packet::tcp(gw, p1, 22, 41000));
        // b: the reply first, then the opening direction.
        b.denied(EG, Packet::tcp(gw, p1, 22, 41001));
        b.denied(IN, Packet::tcp(p1, gw, 41001, 22));
        // c: still allowed, so it lives on (reply first).
        b.by_flow(EG, Packet::udp(gw, p1, 53, 5353));
        b.by_flow(IN, Packet::udp(p1, gw, 5353, 53));
        for k in keys {
            assert!(b.flow_entry(k).is_none(), "flow entry {k:?} must be gone");
        }
        // Revoked packets are the policy's denies: logged as such.
        let after = denies(&b.h);
        let len = f.ip_hdr() + 20;
        let opened = (gw, 1, PROTO_TCP, 22, false);
        let old = denies_before.get(&opened).copied().unwrap_or_default();
        assert_eq!(
            after.get(&opened),
            Some(&(old.0 + 2, old.1 + 2 * len)),
            "{after:?}"
        );
        assert_eq!(
            after.get(&(p1, 0, PROTO_TCP, 41000, false)),
            Some(&(1, len))
        );
        assert_eq!(
            after.get(&(p1, 0, PROTO_TCP, 41001, false)),
            Some(&(1, len))
        );

        // Restore the allow: the old replies stay unsolicited.
        b.apply(policy(flow_rules()));
        b.denied(EG, Packet::tcp(gw, p1, 22, 41000));
        b.denied(EG, Packet::tcp(gw, p1, 22, 41001));
        b.allowed(IN, Packet::tcp(p1, gw, 41000, 22));
        b.by_flow(EG, Packet::tcp(gw, p1, 22, 41000));
    }
}

/// A new policy that still allows the opening packet (here through another
/// rule) keeps the flow, both directions, though it still does not allow
/// the reply direction itself; the entries move to the new version and rule.
#[test]
fn policy_update_keeping_the_allow_keeps_the_flow() {
    for f in FAMS {
        let mut b = Bench::new(policy(flow_rules()));
        let (p1, gw) = (f.peer(1), f.gw());
        b.allowed(IN, Packet::tcp(p1, gw, 41000, 22));
        b.by_flow(EG, Packet::tcp(gw, p1, 22, 41000));
        b.allowed(IN, Packet::icmp_echo_request(p1, gw, 9));
        b.by_flow(EG, Packet::icmp_echo_reply(gw, p1, 9));

        // An unrelated change: the flow is re-checked and survives.
        let mut rules = flow_rules();
        rules.push(accept(sel_peer(2), sel_gw(), PROTO_UDP, &[(123, 123)]));
        b.apply(policy(rules));
        let before = b.h.dp.maps.stats().expect("stats").flow_rechecks;
        let out = b.by_flow(EG, Packet::tcp(gw, p1, 22, 41000));
        assert_eq!(out.verdict.rule, 0);
        b.by_flow(IN, Packet::tcp(p1, gw, 41000, 22));
        b.by_flow(EG, Packet::icmp_echo_reply(gw, p1, 9));
        let stats = b.h.dp.maps.stats().expect("stats");
        assert_eq!(
            stats.flow_rechecks - before,
            2,
            "one re-check per flow (one entry for both directions) and version"
        );

        // The allow moves to a port range at another index: still allowed.
        let mut rules: Vec<Rule> = flow_rules().into_iter().skip(1).collect();
        rules.push(accept(sel_peer(1), sel_gw(), PROTO_TCP, &[(20, 30)]));
        let range_rule = rules.len() as u32 - 1;
        let version = b.apply(policy(rules)).version;
        let out = b.by_flow(EG, Packet::tcp(gw, p1, 22, 41000));
        assert_eq!(
            out.verdict.rule, range_rule,
            "re-checked against the new rule"
        );
        let out = b.by_flow(IN, Packet::tcp(p1, gw, 41000, 22));
        assert_eq!(out.verdict.rule, range_rule);
        for k in [
            flow_key(p1, gw, 41000, 22, PROTO_TCP),
            flow_key(gw, p1, 22, 41000, PROTO_TCP),
        ] {
            let v = b.flow_entry(k).expect("flow entry kept");
            assert_eq!(
                (v.version, v.rule, v.severity),
                (version, range_rule, severity::ALLOW),
                "{k:?}"
            );
        }
        // The reply direction on its own is still refused.
        b.denied(EG, Packet::tcp(gw, p1, 22, 41999));
        b.by_flow(IN, Packet::tcp(p1, gw, 41000, 22));
        b.by_flow(EG, Packet::tcp(gw, p1, 22, 41000));
    }
}

// ---------------------------------------------------------------------------
// Counters.
// ---------------------------------------------------------------------------

/// Flow-decided packets count as allowed, or as audited when the flow was
/// opened by an audited packet; they never enter the deny map (only the
/// audited opening packet and real denies do). Ingress counts the source
/// peer, egress the destination peer.
#[test]
fn flow_decided_packets_are_counted_but_never_logged() {
    for f in FAMS {
        let audit_ssh =
            audit_deny(sel_peer(2), sel_gw(), PROTO_TCP, &[(22, 22)]).named("audit ssh");
        let mut b = Bench::new(policy(vec![
            accept(sel_peer(1), sel_gw(), PROTO_TCP, &[(22, 22)]),
            audit_ssh,
        ]));
        let (p1, p2, gw) = (f.peer(1), f.peer(2), f.gw());
        let l = f.ip_hdr() + 20;

        let (o, n) = b.send(IN, true, By::Policy, Packet::tcp(p1, gw, 40000, 22));
        assert_eq!((o.verdict.severity, n), (severity::ALLOW, l));
        b.by_flow(EG, Packet::tcp(gw, p1, 22, 40000));
        b.by_flow(IN, Packet::tcp(p1, gw, 40000, 22).with_payload(100));

        let o = b.allowed(IN, Packet::tcp(p2, gw, 40000, 22));
        assert_eq!((o.verdict.severity, o.verdict.rule), (severity::AUDIT, 1));
        let o = b.by_flow(EG, Packet::tcp(gw, p2, 22, 40000));
        assert_eq!(o.verdict.severity, severity::AUDIT);
        b.by_flow(IN, Packet::tcp(p2, gw, 40000, 22).with_payload(50));

        b.denied(EG, Packet::tcp(gw, p1, 22, 40001));

        assert_eq!(
            peer_totals(&b.h, 1),
            PeerTotals {
                ingress: totals((2, 2 * l + 100), (0, 0), (0, 0)),
                egress: totals((1, l), (1, l), (0, 0)),
            },
            "p1"
        );
        assert_eq!(
            peer_totals(&b.h, 2),
            PeerTotals {
                ingress: totals((0, 0), (0, 0), (2, 2 * l + 50)),
                egress: totals((0, 0), (0, 0), (1, l)),
            },
            "p2"
        );
        assert_eq!(peer_totals(&b.h, 0), PeerTotals::default(), "not a peer");
        assert_eq!(peer_totals(&b.h, 3), PeerTotals::default(), "p3");
        let want: Denies = [
            ((gw, 2, PROTO_TCP, 22, true), (1, l)),
            ((p1, 0, PROTO_TCP, 40001, false), (1, l)),
        ]
        .into();
        assert_eq!(denies(&b.h), want, "deny map");
        assert_eq!(b.h.dp.maps.stats().unwrap().flow_hits, 4);
    }
}

/// A policy change that turns a flow's opening packet into an audited
/// deny keeps the flow, now counted as audited, still not logged.
#[test]
fn flow_turned_audited_by_policy_change_is_counted_audited() {
    for f in FAMS {
        let mut b = Bench::new(policy(flow_rules()));
        let (p1, gw) = (f.peer(1), f.gw());
        let l = f.ip_hdr() + 20;
        b.allowed(IN, Packet::tcp(p1, gw, 40000, 22));
        b.by_flow(EG, Packet::tcp(gw, p1, 22, 40000));

        let mut rules = flow_rules();
        rules.push(audit_deny(sel_peer(1), sel_gw(), PROTO_TCP, &[(22, 22)]));
        b.apply(policy(rules));
        let o = b.by_flow(EG, Packet::tcp(gw, p1, 22, 40000));
        assert_eq!(o.verdict.severity, severity::AUDIT);
        let o = b.by_flow(IN, Packet::tcp(p1, gw, 40000, 22));
        assert_eq!(o.verdict.severity, severity::AUDIT);

        assert_eq!(
            peer_totals(&b.h, 1),
            PeerTotals {
                ingress: totals((1, l), (0, 0), (1, l)),
                egress: totals((1, l), (0, 0), (1, l)),
            }
        );
        assert!(
            denies(&b.h).is_empty(),
            "flow packets are never logged: {:?}",
            denies(&b.h)
        );
        // A new opening packet is judged by the policy: audited and logged.
        b.allowed(IN, Packet::tcp(p1, gw, 40001, 22));
        assert_eq!(
            denies(&b.h),
            [((gw, 1, PROTO_TCP, 22, true), (1, l))].into()
        );
    }
}

// ---------------------------------------------------------------------------
// ICMP errors (docs/dataplane.md, "ICMP errors").
// ---------------------------------------------------------------------------

/// The first `hdr + 8` bytes of a packet, as an ICMP error quotes them.
fn quote(p: Packet, hdr: usize) -> Vec<u8> {
    p.build().bytes[14..14 + hdr + 8].to_vec()
}

/// An ICMP (v4) or ICMPv6 (v6) error of type and code `error` from `src`
/// to `dst`, quoting `quoted`.
fn icmp_error(src: IpAddr, dst: IpAddr, error: (u8, u8), quoted: &[u8]) -> Packet {
    let (icmp_type, code) = error;
    let proto = if src.is_ipv4() {
        PROTO_ICMP
    } else {
        PROTO_ICMPV6
    };
    // Type, code, checksum, then unused / MTU (1280).
    let mut body = vec![icmp_type, code, 0, 0, 0, 0, 0x05, 0x00];
    body.extend_from_slice(quoted);
    Packet::raw_l4(src, dst, proto, body)
}

/// An ICMP error quoting a packet of a live flow, sent to that packet's
/// sender by the flow's far end or the gateway, passes as part of the flow
/// (counted, never logged); errors about no flow, sent elsewhere, from
/// anyone else, or about a flow the policy has since revoked, are judged by
/// the policy. The kernel is checked against the documented
/// behaviour first, then the reference model against the kernel.
#[test]
fn icmp_errors_about_live_flows_pass_with_the_flow() {
    for f in FAMS {
        let mut b = Bench::new(policy(flow_rules()));
        let (p1, p2, gw) = (f.peer(1), f.peer(2), f.gw());
        let hdr = f.ip_hdr() as usize;
        let router = match f {
            Fam::V4 => "192.0.2.1".parse().unwrap(),
            Fam::V6 => "2001:db8::1".parse().unwrap(),
        };
        let (unreachable, port_unreachable, too_big, time_exceeded) = match f {
            Fam::V4 => ((3, 1), (3, 3), (3, 4), (11, 0)),
            Fam::V6 => ((1, 3), (1, 4), (2, 0), (3, 0)),
        };
        b.allowed(IN, Packet::tcp(p1, gw, 40000, 22));
        b.allowed(IN, Packet::icmp_echo_request(p1, gw, 77));
        let syn = quote(Packet::tcp(p1, gw, 40000, 22), hdr);
        let ping = quote(Packet::icmp_echo_request(p1, gw, 77), hdr);
        let stranger = quote(Packet::tcp(p1, gw, 40001, 22), hdr);

        // (what, source, destination, error, quoted packet, passes per
        // docs/dataplane.md)
        let cases = [
            (
                "port unreachable from the gateway",
                gw,
                p1,
                port_unreachable,
                &syn,
                true,
            ),
            ("too big from the gateway", gw, p1, too_big, &syn, true),
            (
                "time exceeded about the ping",
                gw,
                p1,
                time_exceeded,
                &ping,
                true,
            ),
            // A router that is neither the far end nor the gateway: the
            // policy's (no ICMP rule here).
            ("too big from a router", router, p1, too_big, &syn, false),
            (
                "time exceeded from a router",
                router,
                p1,
                time_exceeded,
                &ping,
                false,
            ),
            ("about no flow", gw, p1, unreachable, &stranger, false),
            ("not to the quoted sender", gw, p2, unreachable, &syn, false),
        ];
        let mut kernel = Vec::new();
        let mut model = Vec::new();
        for (what, src, dst, error, quoted, want) in cases {
            let fr = icmp_error(src, dst, error, quoted).build();
            let got = b.h.run(EG, &fr.bytes).expect("test_run") == PASS;
            assert_eq!(got, want, "kernel, {f:?}: ICMP error {what}");
            kernel.push((what, got));
            let m = meta(&fr).expect("well formed");
            model.push((what, b.model.packet(&m).verdict.passes()));
        }
        // Passed errors are flow packets: counted for p1, not logged; only
        // the two the policy denied are.
        let totals = peer_totals(&b.h, 1);
        assert_eq!(totals.egress.allowed_packets, 3, "{totals:?}");
        let icmp = f.icmp_proto();
        let l = 2 * f.ip_hdr() + 16;
        let mut want = Denies::new();
        for (dst, ty) in [
            (p1, unreachable.0),
            (p2, unreachable.0),
            (p1, too_big.0),
            (p1, time_exceeded.0),
        ] {
            let e = want.entry((dst, 0, icmp, ty as u16, false)).or_default();
            *e = (e.0 + 1, e.1 + l);
        }
        assert_eq!(denies(&b.h), want, "deny map");
        // Revoked flow: the error is the policy's again.
        let without_ssh: Vec<Rule> = flow_rules().into_iter().skip(1).collect();
        b.apply(policy(without_ssh));
        let revoked = icmp_error(gw, p1, port_unreachable, &syn).build();
        assert_eq!(
            b.h.run(EG, &revoked.bytes).unwrap(),
            DROP,
            "kernel, {f:?}: error about a revoked flow"
        );

        assert_eq!(
            model, kernel,
            "reference model vs kernel on ICMP errors ({f:?})"
        );
    }
}
