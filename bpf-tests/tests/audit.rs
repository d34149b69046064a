//! Audit mode, per rule and for the whole interface: what would be denied
//! passes, is counted as audited (packets, and bytes = IP length) for the
//! peer, and lands in the deny map with audit = true; a real deny still
//! wins over an audited one; malformed packets are dropped regardless.
//!
//! Counters are checked exactly (`peer_totals`, `denies`), per family, each
//! family on its own data plane.

use wgbpf::{
    dataplane::counters::PeerTotals,
    policy::{
        model::{Policy, Selector},
        reference::{evaluate, Verdict},
    },
};
use wgbpf_bpf_tests::{
    fixtures::{
        accept, audit_deny, denies, deny, egress, ingress, ip_len, peer_totals, policy, sel_gw,
        sel_peer, totals, v4_mapped, Denies, Fam, EG, FAMS, GRE, IN,
    },
    harness::{meta, Harness, DROP, PASS},
    packets::Packet,
};
use wgbpf_common::{rule_id, severity, PROTO_TCP, PROTO_UDP};

// ---------------------------------------------------------------------------
// The bench.
// ---------------------------------------------------------------------------

struct Bench {
    h: Harness,
    policy: Policy,
}

impl Bench {
    fn new(policy: Policy) -> Bench {
        let mut h = Harness::new().expect("load the programs (are you root?)");
        h.apply(&policy).expect("apply");
        Bench { h, policy }
    }

    /// Runs a well-formed packet that no flow knows; the kernel must pass
    /// it iff the reference verdict (returned, with the IP length) does,
    /// and that verdict must have severity `want`.
    fn send(&self, dir: usize, want: u8, p: Packet) -> (Verdict, u64) {
        let f = p.build();
        let len = ip_len(&f);
        let m = meta(&f).expect("not malformed");
        let v = evaluate(&self.policy, &m);
        assert_eq!(v.severity, want, "reference verdict for {}: {v:?}", f.label);
        let got = self.h.run(dir, &f.bytes).expect("test_run");
        let code = if v.passes() { PASS } else { DROP };
        assert_eq!(got, code, "kernel, {} (reference: {v:?})", f.label);
        (v, len)
    }

    /// Runs a malformed packet: dropped.
    fn malformed(&self, dir: usize, p: Packet) {
        let f = p.build();
        assert!(meta(&f).is_none(), "{} must be malformed", f.label);
        assert_eq!(
            self.h.run(dir, &f.bytes).expect("test_run"),
            DROP,
            "kernel, {}",
            f.label
        );
    }

    fn peer(&self, index: u32) -> PeerTotals {
        peer_totals(&self.h, index)
    }

    fn denies(&self) -> Denies {
        denies(&self.h)
    }
}

// ---------------------------------------------------------------------------
// Per-rule audit.
// ---------------------------------------------------------------------------

/// An audited deny passes what it matches (over an accept), counts it as
/// audited for the source peer (bytes = IP length), and logs it in the deny
/// map with audit = true; one deny-map entry per (dst, src peer, proto,
/// port), whatever the source port.
#[test]
fn audited_deny_rule_passes_counts_and_logs() {
    for f in FAMS {
        let b = Bench::new(policy(vec![
            accept(Selector::Any, sel_gw(), Some(PROTO_TCP), &[]),
            audit_deny(sel_peer(2), sel_gw(), Some(PROTO_TCP), &[(22, 22)]),
        ]));
        let (p1, p2, gw) = (f.peer(1), f.peer(2), f.gw());
        let (v, l1) = b.send(
            IN,
            severity::AUDIT,
            Packet::tcp(p2, gw, 40000, 22).with_payload(100),
        );
        assert_eq!(v.rule, 1);
        assert_eq!(l1, f.ip_hdr() + 20 + 100, "bytes count the IP packet");
        let (_, l2) = b.send(IN, severity::AUDIT, Packet::tcp(p2, gw, 40001, 22));
        let (_, l3) = b.send(IN, severity::ALLOW, Packet::tcp(p2, gw, 40002, 23));
        let (_, l4) = b.send(IN, severity::ALLOW, Packet::tcp(p1, gw, 40000, 22));

        assert_eq!(
            b.peer(2),
            ingress(totals((1, l3), (0, 0), (2, l1 + l2))),
            "p2"
        );
        assert_eq!(b.peer(1), ingress(totals((1, l4), (0, 0), (0, 0))), "p1");
        assert_eq!(b.peer(0), PeerTotals::default());
        assert_eq!(
            b.denies(),
            [((gw, 2, PROTO_TCP, 22, true), (2, l1 + l2))].into()
        );
    }
}

/// On egress the packet counts for the destination peer, and the deny map
/// still records the source peer (0: the gateway is no peer).
#[test]
fn audited_deny_on_egress_counts_the_destination_peer() {
    for f in FAMS {
        let b = Bench::new(policy(vec![
            accept(sel_gw(), Selector::Any, Some(PROTO_UDP), &[]),
            audit_deny(sel_gw(), sel_peer(3), Some(PROTO_UDP), &[(514, 514)]),
        ]));
        let (p3, gw) = (f.peer(3), f.gw());
        let (_, l) = b.send(
            EG,
            severity::AUDIT,
            Packet::udp(gw, p3, 5000, 514).with_payload(64),
        );
        assert_eq!(l, f.ip_hdr() + 8 + 64);
        assert_eq!(b.peer(3), egress(totals((0, 0), (0, 0), (1, l))));
        assert_eq!(b.peer(0), PeerTotals::default());
        assert_eq!(b.denies(), [((p3, 0, PROTO_UDP, 514, true), (1, l))].into());
    }
}

/// A plain deny wins over an audited one on the same traffic, in either
/// rule order: dropped, counted denied, logged with audit = false.
#[test]
fn plain_deny_wins_over_audited_deny() {
    for f in FAMS {
        for plain_first in [false, true] {
            let audited = audit_deny(sel_peer(2), sel_gw(), Some(PROTO_TCP), &[(22, 22)]);
            let plain = deny(sel_peer(2), sel_gw(), Some(PROTO_TCP), &[(20, 30)]);
            let mut rules = vec![accept(sel_peer(2), sel_gw(), Some(PROTO_TCP), &[])];
            if plain_first {
                rules.extend([plain, audited]);
            } else {
                rules.extend([audited, plain]);
            }
            let plain_index = if plain_first { 1 } else { 2 };
            let b = Bench::new(policy(rules));
            let (p2, gw) = (f.peer(2), f.gw());
            let (v, l) = b.send(IN, severity::DENY, Packet::tcp(p2, gw, 40000, 22));
            assert_eq!(v.rule, plain_index);
            let (_, l25) = b.send(IN, severity::DENY, Packet::tcp(p2, gw, 40001, 25));
            let (_, l80) = b.send(IN, severity::ALLOW, Packet::tcp(p2, gw, 40002, 80));
            assert_eq!(b.peer(2), ingress(totals((1, l80), (2, l + l25), (0, 0))));
            assert_eq!(
                b.denies(),
                [
                    ((gw, 2, PROTO_TCP, 22, false), (1, l)),
                    ((gw, 2, PROTO_TCP, 25, false), (1, l25)),
                ]
                .into()
            );
        }
    }
}

/// A later fragment whose first fragment was not seen matches a
/// port-specific audited deny of its protocol (its port is unknown): it
/// passes, audited, logged under port 0. A first fragment is judged by its
/// port (80 here: allowed).
#[test]
fn fragment_against_port_specific_audited_deny() {
    for f in FAMS {
        let b = Bench::new(policy(vec![
            accept(sel_peer(1), sel_gw(), Some(PROTO_TCP), &[]),
            audit_deny(sel_peer(1), sel_gw(), Some(PROTO_TCP), &[(22, 22)]),
        ]));
        let (p1, gw) = (f.peer(1), f.gw());
        let (_, l1) = b.send(
            IN,
            severity::ALLOW,
            Packet::tcp(p1, gw, 40000, 80).as_fragment(true),
        );
        let (_, l2) = b.send(
            IN,
            severity::AUDIT,
            Packet::tcp(p1, gw, 40000, 80)
                .as_fragment(false)
                .with_frag_id(0x4242),
        );
        let (_, l3) = b.send(IN, severity::ALLOW, Packet::tcp(p1, gw, 40000, 80));
        assert_eq!(b.peer(1), ingress(totals((2, l1 + l3), (0, 0), (1, l2))));
        assert_eq!(b.denies(), [((gw, 1, PROTO_TCP, 0, true), (1, l2))].into());
        assert_eq!(b.h.dp.maps.stats().unwrap().fragments, 2);
    }
}

// ---------------------------------------------------------------------------
// Interface audit mode.
// ---------------------------------------------------------------------------

/// policy.audit: nothing well formed is dropped; default denies and
/// explicit denies become audits (counted, logged with audit = true), what
/// the rules allow is still counted as allowed; replies to an audited
/// opening packet pass through the flow, counted audited, not logged.
#[test]
fn interface_audit_mode_passes_and_counts_would_be_denies() {
    for f in FAMS {
        let b = Bench::new(Policy {
            audit: true,
            ..policy(vec![
                accept(sel_peer(1), sel_gw(), Some(PROTO_TCP), &[(22, 22)]),
                deny(sel_peer(1), sel_gw(), Some(PROTO_TCP), &[(23, 23)]),
            ])
        });
        let (p1, p3, gw) = (f.peer(1), f.peer(3), f.gw());
        let (_, l_ssh) = b.send(IN, severity::ALLOW, Packet::tcp(p1, gw, 40000, 22));
        let (v, l_telnet) = b.send(IN, severity::AUDIT, Packet::tcp(p1, gw, 40001, 23));
        assert_eq!(v.rule, 1, "the explicit deny, audited");
        let (v, l_dns) = b.send(
            IN,
            severity::AUDIT,
            Packet::udp(p1, gw, 5353, 53).with_payload(20),
        );
        assert_eq!(v.rule, rule_id::DEFAULT, "the default deny, audited");
        let (_, l_gre) = b.send(IN, severity::AUDIT, Packet::raw_proto(p3, gw, GRE));
        let (_, l_out) = b.send(EG, severity::AUDIT, Packet::tcp(gw, p1, 50000, 9999));
        // The reply to the audited DNS query: from the flow, audited, not logged.
        let reply = Packet::udp(gw, p1, 53, 5353).with_payload(80).build();
        assert_eq!(b.h.run(EG, &reply.bytes).unwrap(), PASS);
        let l_reply = ip_len(&reply);

        assert_eq!(
            b.peer(1),
            PeerTotals {
                ingress: totals((1, l_ssh), (0, 0), (2, l_telnet + l_dns)),
                egress: totals((0, 0), (0, 0), (2, l_out + l_reply)),
            },
            "p1"
        );
        assert_eq!(b.peer(3), ingress(totals((0, 0), (0, 0), (1, l_gre))), "p3");
        assert_eq!(b.peer(0), PeerTotals::default());
        let want: Denies = [
            ((gw, 1, PROTO_TCP, 23, true), (1, l_telnet)),
            ((gw, 1, PROTO_UDP, 53, true), (1, l_dns)),
            ((gw, 3, GRE, 0, true), (1, l_gre)),
            ((p1, 0, PROTO_TCP, 9999, true), (1, l_out)),
        ]
        .into();
        assert_eq!(b.denies(), want);
    }
}

/// Malformed packets are dropped in audit mode too (interface-wide, and
/// under an audited deny-everything rule), and are counted as malformed,
/// not per peer, not in the deny map.
#[test]
fn malformed_packets_still_drop_in_audit_mode() {
    let everything_audited = vec![audit_deny(Selector::Any, Selector::Any, None, &[])];
    for (rules, interface_audit) in [(vec![], true), (everything_audited, false)] {
        let b = Bench::new(Policy {
            audit: interface_audit,
            ..policy(rules)
        });
        let mut malformed = 0;
        for f in FAMS {
            let (p1, gw) = (f.peer(1), f.gw());
            let hdr = f.ip_hdr() as usize;
            for dir in [IN, EG] {
                b.malformed(dir, Packet::tcp(p1, gw, 40000, 22).truncated_to(hdr + 10));
                b.malformed(dir, Packet::udp(p1, gw, 40000, 53).truncated_to(hdr + 4));
                b.malformed(dir, Packet::tcp(p1, gw, 40000, 22).cut_to(hdr + 8));
                b.malformed(dir, Packet::tcp(p1, gw, 40000, 22).with_len_field(1000));
                b.malformed(dir, Packet::tcp(p1, gw, 40000, 22).with_version(7));
                malformed += 5;
                match f {
                    Fam::V4 => b.malformed(dir, Packet::tcp(p1, gw, 40000, 22).with_ihl(3)),
                    Fam::V6 => {
                        let mapped = v4_mapped(Fam::V4.peer(1));
                        b.malformed(dir, Packet::tcp(mapped, gw, 40000, 22));
                    }
                }
                malformed += 1;
            }
        }
        assert_eq!(b.h.dp.maps.stats().unwrap().malformed, malformed);
        for index in 0..=3 {
            assert_eq!(b.peer(index), PeerTotals::default(), "peer {index}");
        }
        assert!(b.denies().is_empty(), "{:?}", b.denies());
        // The well-formed packet passes, audited.
        for f in FAMS {
            let (_, l) = b.send(
                IN,
                severity::AUDIT,
                Packet::tcp(f.peer(1), f.gw(), 40000, 22),
            );
            assert_eq!(l, f.ip_hdr() + 20);
        }
        let l4 = Fam::V4.ip_hdr() + 20;
        let l6 = Fam::V6.ip_hdr() + 20;
        assert_eq!(b.peer(1), ingress(totals((0, 0), (0, 0), (2, l4 + l6))));
    }
}
