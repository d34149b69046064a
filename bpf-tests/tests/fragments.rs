//! Fragments belong to their datagram: a first fragment is judged by its
//! ports as a whole packet is (so it can belong to a flow), and the
//! datagram's later fragments, found by (addresses, identification,
//! protocol), get its verdict for a short while. Later fragments whose
//! first fragment was not seen keep the older rule (judged as if they could
//! be any port). And none of it opens a way past a port rule.
//!
//! Every packet goes through the kernel and the reference model
//! (`wgbpf::policy::reference::Model`), which must agree.

use wgbpf::{
    dataplane::{counters::Stats, LoadOptions},
    policy::{model::Policy, reference::Model},
};
use wgbpf_bpf_tests::{
    fixtures::{accept, policy, sel_gw, sel_peer, Fam, EG, FAMS, IN},
    harness::{meta, Harness, DROP, PASS},
    packets::Packet,
};
use wgbpf_common::{capacity, FlowConfig, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

/// p1 may query the gateway's DNS (udp 53), open tcp 22 and ping it; p2 may
/// query udp 53 too. Nothing comes back but by a flow.
fn rules_policy() -> Policy {
    policy(vec![
        accept(sel_peer(1), sel_gw(), PROTO_UDP, &[(53, 53)]),
        accept(sel_peer(1), sel_gw(), PROTO_TCP, &[(22, 22)]),
        accept(sel_peer(1), sel_gw(), PROTO_ICMP, &[(8, 8)]),
        accept(sel_peer(1), sel_gw(), PROTO_ICMPV6, &[(128, 128)]),
        accept(sel_peer(2), sel_gw(), PROTO_UDP, &[(53, 53)]),
        accept(sel_peer(3), sel_gw(), PROTO_UDP, &[]),
    ])
}

/// The kernel and the model, fed the same packets in order.
struct Bench {
    h: Harness,
    model: Model,
}

impl Bench {
    fn new(opts: LoadOptions) -> Bench {
        let mut h = Harness::with_options(opts).expect("load (are you root?)");
        let v = h.apply(&rules_policy()).expect("apply").version;
        Bench {
            h,
            model: Model::new(rules_policy(), v),
        }
    }

    /// One packet: the kernel's verdict must be `pass`, and the model's.
    fn expect(&mut self, dir: usize, pass: bool, p: Packet) {
        let f = p.build();
        let got = self.h.run(dir, &f.bytes).expect("test_run");
        let want = if pass { PASS } else { DROP };
        assert_eq!(got, want, "kernel: {}", f.label);
        let m = meta(&f).unwrap_or_else(|| panic!("{}: malformed", f.label));
        let out = self.model.packet(&m);
        assert!(!out.malformed, "model: {} malformed", f.label);
        assert_eq!(out.verdict.passes(), pass, "model: {} {m:?}", f.label);
    }

    /// One packet the kernel must drop as malformed: by its headers (the
    /// model never sees it) or, for a later fragment overlapping its first,
    /// by the fragment table (the model says so too).
    fn malformed(&mut self, dir: usize, p: Packet) {
        let f = p.build();
        let before = self.stats().malformed;
        assert_eq!(
            self.h.run(dir, &f.bytes).expect("test_run"),
            DROP,
            "{}",
            f.label
        );
        assert_eq!(self.stats().malformed, before + 1, "{}: counted", f.label);
        if let Some(m) = meta(&f) {
            assert!(self.model.packet(&m).malformed, "model: {} {m:?}", f.label);
        }
    }

    fn stats(&self) -> Stats {
        self.h.dp.maps.stats().expect("stats")
    }
}

/// The first fragment of datagram `id`: offset 0, more to come, 1,400
/// bytes of payload after the L4 header.
fn first(p: Packet, id: u32) -> Packet {
    p.with_payload(1400)
        .as_fragment_at(0, true)
        .with_frag_id(id)
}

/// A later fragment of datagram `id` at `offset` (8-byte units).
fn later_at(p: Packet, id: u32, offset: u16) -> Packet {
    p.with_payload(64)
        .as_fragment_at(offset, false)
        .with_frag_id(id)
}

/// A later fragment right after a `first` one (1,400 bytes + an 8-byte UDP
/// or ICMP header = 176 units; TCP's 20 bytes round up to 178).
fn later(p: Packet, id: u32) -> Packet {
    later_at(p, id, 178)
}

/// The hole: a fragmented answer to an allowed query (DNS over UDP, a big
/// ping) was dropped when the reply direction has no rule of its own.
#[test]
fn later_fragments_get_their_first_fragments_verdict() {
    for f in FAMS {
        let mut b = Bench::new(LoadOptions::default());
        let (p1, gw) = (f.peer(1), f.gw());
        // A large DNS answer: the query opens the flow; the answer's first
        // fragment belongs to it, and so do the later ones.
        b.expect(IN, true, Packet::udp(p1, gw, 5353, 53));
        b.expect(EG, true, first(Packet::udp(gw, p1, 53, 5353), 0x77));
        b.expect(EG, true, later(Packet::udp(gw, p1, 53, 5353), 0x77));
        b.expect(EG, true, later_at(Packet::udp(gw, p1, 53, 5353), 0x77, 400));
        // A big ping's reply.
        b.expect(IN, true, Packet::icmp_echo_request(p1, gw, 9));
        b.expect(EG, true, first(Packet::icmp_echo_reply(gw, p1, 9), 0x99));
        b.expect(EG, true, later(Packet::icmp_echo_reply(gw, p1, 9), 0x99));
        // A fragmented query: the first fragment is judged by its port (a
        // port-specific accept matches no later fragment on its own) and
        // opens the flow its answer then belongs to.
        b.expect(IN, true, first(Packet::udp(p1, gw, 5354, 53), 0x55));
        b.expect(IN, true, later(Packet::udp(p1, gw, 5354, 53), 0x55));
        b.expect(EG, true, Packet::udp(gw, p1, 53, 5354));
        // A fragmented TCP segment.
        b.expect(IN, true, first(Packet::tcp(p1, gw, 4000, 22), 0x66));
        b.expect(IN, true, later(Packet::tcp(p1, gw, 4000, 22), 0x66));
        let st = b.stats();
        assert_eq!(
            (st.fragments, st.fragments_tracked, st.fragments_matched),
            (9, 4, 5),
            "{f:?}"
        );
    }
}

/// Fragment tracking opens no way past a port rule.
#[test]
fn fragment_tracking_gives_no_way_past_a_port_rule() {
    for f in FAMS {
        let mut b = Bench::new(LoadOptions::default());
        let (p1, p2, gw) = (f.peer(1), f.peer(2), f.gw());
        let udp = |s, d, dport| Packet::udp(s, d, 5000, dport);
        // Later fragments whose first fragment was not seen: any port
        // (none here).
        b.expect(IN, false, later(udp(p1, gw, 53), 1));
        // A first fragment to a port the policy denies is dropped, records
        // nothing, and its datagram's later fragments are denied.
        b.expect(IN, false, first(udp(p1, gw, 54), 2));
        b.expect(IN, false, later(udp(p1, gw, 54), 2));
        // An allowed datagram's id does not carry over to another source,
        // destination, protocol or id.
        b.expect(IN, true, first(udp(p1, gw, 53), 3));
        b.expect(IN, false, later(udp(p2, gw, 53), 3));
        b.expect(IN, false, later(udp(p1, f.world(), 53), 3));
        b.expect(IN, false, later(Packet::sctp(p1, gw, 5000, 53), 3));
        b.expect(IN, false, later(udp(p1, gw, 53), 4));
        // p2 reusing p1's id: its own first fragment decides for it.
        b.expect(IN, true, first(udp(p2, gw, 53), 3));
        b.expect(IN, true, later(udp(p2, gw, 53), 3));
        // Another "first fragment" of an allowed datagram with other ports
        // is judged by them (dropped) and leaves the datagram as it was.
        b.expect(IN, false, first(udp(p1, gw, 54), 3));
        b.expect(IN, true, later(udp(p1, gw, 53), 3));
        // A later fragment overlapping its first fragment (it could rewrite
        // the judged ports at the receiver) is malformed; one right after
        // it is not.
        b.malformed(IN, later_at(udp(p1, gw, 53), 3, 1));
        b.malformed(IN, later_at(udp(p1, gw, 53), 3, 175));
        b.expect(IN, true, later_at(udp(p1, gw, 53), 3, 176));
        // A middle fragment (more to come) that the older rule passes is
        // no first fragment: it records nothing.
        let p3 = f.peer(3);
        b.expect(
            IN,
            true,
            udp(p3, gw, 53)
                .with_payload(64)
                .as_fragment_at(200, true)
                .with_frag_id(9),
        );
        b.expect(IN, true, later_at(udp(p3, gw, 53), 9, 10));
        assert_eq!(b.stats().fragments_tracked, 2, "{f:?}");
        // Tiny fragments (RFC 1858): a TCP or UDP first fragment too short
        // for its header, a TCP later fragment inside the header.
        b.malformed(
            IN,
            Packet::raw_l4(p1, gw, PROTO_TCP, vec![0x0f, 0xa0, 0, 22, 0, 0, 0, 0])
                .as_fragment_at(0, true)
                .with_frag_id(5),
        );
        b.malformed(
            IN,
            Packet::raw_l4(p1, gw, PROTO_UDP, vec![0x13, 0x88, 0, 53])
                .as_fragment_at(0, true)
                .with_frag_id(6),
        );
        b.expect(IN, true, first(Packet::tcp(p1, gw, 4000, 22), 7));
        b.malformed(IN, later_at(Packet::tcp(p1, gw, 4000, 22), 7, 2));
        if f == Fam::V6 {
            // Headers after a first fragment's fragment header: malformed.
            b.malformed(IN, first(udp(p1, gw, 53), 8).with_ipv6_ext_headers(&[60]));
            // An atomic fragment (offset 0, no more) is a whole packet.
            b.expect(IN, true, udp(p1, gw, 53).as_fragment_at(0, false));
            b.expect(IN, false, udp(p1, gw, 54).as_fragment_at(0, false));
        }
    }
}

/// A first fragment's verdict lasts `fragment_ns`, and only under the
/// policy version that gave it; then later fragments meet the older rule.
#[test]
fn fragment_verdicts_expire_and_follow_the_policy_version() {
    let opts = LoadOptions {
        flows: FlowConfig {
            fragment_ns: 200_000_000,
            ..FlowConfig::DEFAULT
        },
        ..Default::default()
    };
    for f in FAMS {
        let mut h = Harness::with_options(opts.clone()).expect("load");
        h.apply(&rules_policy()).expect("apply");
        let (p1, gw) = (f.peer(1), f.gw());
        let run = |h: &Harness, p: Packet| h.run(IN, &p.build().bytes).expect("test_run");
        let udp = || Packet::udp(p1, gw, 6000, 53);
        assert_eq!(run(&h, first(udp(), 1)), PASS);
        assert_eq!(run(&h, later(udp(), 1)), PASS);
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(run(&h, later(udp(), 1)), DROP, "{f:?}: expired");
        assert_eq!(run(&h, first(udp(), 2)), PASS);
        let mut other = rules_policy();
        other
            .rules
            .push(accept(sel_peer(2), sel_gw(), PROTO_UDP, &[(123, 123)]));
        h.apply(&other).expect("apply");
        assert_eq!(run(&h, later(udp(), 2)), DROP, "{f:?}: another policy");
    }
}

/// The table is an LRU of `capacity::FRAGS` entries: a peer flooding it
/// with first fragments evicts the oldest entries (their later fragments
/// then meet the older rule: dropped here), but a datagram whose fragments
/// travel together, as they do, keeps working during the flood, and a peer
/// whose first fragments are denied records nothing.
#[test]
fn a_flood_of_first_fragments_evicts_only_old_entries() {
    let f = Fam::V4;
    let mut b = Bench::new(LoadOptions::default());
    let (p1, p2, gw) = (f.peer(1), f.peer(2), f.gw());
    let victim = |id| Packet::udp(p1, gw, 7000, 53).with_frag_id(id);
    let flood = |i: u32| first(Packet::udp(p2, gw, 9, 53), i & 0xffff).build().bytes;
    b.expect(IN, true, first(Packet::udp(p1, gw, 7000, 53), 1));
    let denied = first(Packet::udp(p2, gw, 9, 54), 0).build().bytes;
    let tracked = b.stats().fragments_tracked;
    for _ in 0..100 {
        assert_eq!(b.h.run(IN, &denied).unwrap(), DROP);
    }
    assert_eq!(
        b.stats().fragments_tracked,
        tracked,
        "denied: nothing recorded"
    );
    let n = 2 * capacity::FRAGS;
    for i in 0..n {
        assert_eq!(b.h.run(IN, &flood(i)).unwrap(), PASS);
        if i % 4096 == 0 {
            // The victim's datagram during the flood.
            let id = 100 + i / 4096;
            b.expect(IN, true, first(victim(id), id));
            for j in 0..64 {
                assert_eq!(b.h.run(IN, &flood(n + i + j)).unwrap(), PASS);
            }
            b.expect(IN, true, later(victim(id), id));
        }
    }
    // The entry from before the flood is gone: the older rule denies.
    let out = b.h.run(IN, &later(victim(1), 1).build().bytes).unwrap();
    assert_eq!(out, DROP, "evicted");
    let st = b.stats();
    assert!(st.fragments_tracked > u64::from(n), "{st:?}");
}
