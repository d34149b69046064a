//! The flow table against a dishonest peer: one entry per connection,
//! found from both directions, so no eviction can leave half a flow; a
//! budget of new flows per peer, so a flood of new flows cannot push other
//! peers' connections out of the table. The table is made small here
//! (`FLOWS` entries) so that a flood fills it many times over.

use std::net::IpAddr;

use wgbpf::dataplane::{Capacities, LoadOptions};
use wgbpf_bpf_tests::{
    fixtures::{accept, addr, policy, sel_gw, sel_peer, Fam, EG, FAMS, IN},
    harness::{Harness, DROP, PASS},
    packets::{Packet, TCP_ACK, TCP_FIN, TCP_RST},
};
use wgbpf_common::{FlowConfig, FlowKey, PROTO_TCP, PROTO_UDP};

/// Flow-table entries in these tests.
const FLOWS: u32 = 4096;
/// New flows a flood tries to open: many times the table.
const FLOOD: u16 = 20_000;

/// p1 may open tcp 22 on the gateway (the victim's connection); p2 may send
/// to udp 53 on the gateway (the flooder, cycling source ports).
fn harness(opts: LoadOptions) -> Harness {
    let mut h = Harness::with_options(LoadOptions {
        capacities: Capacities {
            flows: FLOWS,
            ..Default::default()
        },
        ..opts
    })
    .expect("load (are you root?)");
    h.apply(&policy(vec![
        accept(sel_peer(1), sel_gw(), PROTO_TCP, &[(22, 22)]),
        accept(sel_peer(2), sel_gw(), PROTO_UDP, &[(53, 53)]),
    ]))
    .expect("apply");
    h
}

fn run(h: &Harness, dir: usize, p: Packet) -> u32 {
    h.run(dir, &p.build().bytes).expect("test_run")
}

/// The victim's connection: SYN from p1, SYN-ACK from the gateway, ACK.
fn open_victim(h: &Harness, p1: IpAddr, gw: IpAddr) {
    assert_eq!(run(h, IN, Packet::tcp(p1, gw, 40000, 22)), PASS, "SYN");
    let synack = Packet::tcp_flags(gw, p1, 22, 40000, 0x12);
    assert_eq!(run(h, EG, synack), PASS, "SYN-ACK");
    let ack = Packet::tcp_flags(p1, gw, 40000, 22, TCP_ACK);
    assert_eq!(run(h, IN, ack), PASS, "ACK");
}

/// p2 floods new UDP flows (each asked, answered and asked again);
/// `during` runs after every 100 of them.
fn flood(h: &Harness, f: Fam, mut during: impl FnMut()) {
    let (p2, gw) = (f.peer(2), f.gw());
    for i in 0..FLOOD {
        // The policy allows every one of them.
        let got = run(h, IN, Packet::udp(p2, gw, 1024 + i, 53));
        assert_eq!(got, PASS, "flood packet {i}");
        // Answered, and asked again: entries in use, as a real flood's
        // (the kernel's LRU keeps entries never used again at the back).
        run(h, EG, Packet::udp(gw, p2, 53, 1024 + i));
        run(h, IN, Packet::udp(p2, gw, 1024 + i, 53));
        if i % 100 == 0 {
            during();
        }
    }
}

/// After the flood, the victim's connection works both ways, the server
/// (the gateway) speaking first.
fn victim_survives(h: &Harness, p1: IpAddr, gw: IpAddr, what: &str) {
    let data = Packet::tcp_flags(gw, p1, 22, 40000, TCP_ACK).with_payload(100);
    assert_eq!(
        run(h, EG, data),
        PASS,
        "{what}: server data after the flood"
    );
    let data = Packet::tcp_flags(p1, gw, 40000, 22, TCP_ACK).with_payload(10);
    assert_eq!(
        run(h, IN, data),
        PASS,
        "{what}: client data after the flood"
    );
    // The reply direction alone is still not allowed.
    let stranger = Packet::tcp_flags(gw, p1, 22, 40001, TCP_ACK);
    assert_eq!(run(h, EG, stranger), DROP, "{what}: a stranger tuple");
}

/// An idle connection outlives a flood of new flows from another peer.
#[test]
fn idle_connection_survives_a_flood_of_new_flows() {
    for f in FAMS {
        let h = harness(LoadOptions::default());
        let (p1, gw) = (f.peer(1), f.gw());
        open_victim(&h, p1, gw);
        flood(&h, f, || {});
        victim_survives(&h, p1, gw, &format!("{f:?} idle"));
    }
}

/// A connection busy in one direction only (an upload: the client sends,
/// the server is silent) during a flood keeps both directions: the entry
/// its packets keep fresh is the one its replies need.
#[test]
fn one_way_busy_connection_keeps_its_reply_direction() {
    for f in FAMS {
        // No budget: here the table itself must keep the flow whole.
        let h = harness(LoadOptions {
            flows: FlowConfig {
                new_per_second: 0,
                ..FlowConfig::DEFAULT
            },
            ..Default::default()
        });
        let (p1, gw) = (f.peer(1), f.gw());
        open_victim(&h, p1, gw);
        flood(&h, f, || {
            let up = Packet::tcp_flags(p1, gw, 40000, 22, TCP_ACK).with_payload(500);
            assert_eq!(run(&h, IN, up), PASS, "upload during the flood");
        });
        victim_survives(&h, p1, gw, &format!("{f:?} busy"));
    }
}

/// The budget: a peer opens at most `new_burst` flows at once, then
/// `new_per_second`. Its packets over the budget still pass (the policy
/// allows them) but get no entry, so their replies meet the policy; other
/// peers' budgets are untouched.
#[test]
fn new_flows_over_the_peer_budget_pass_untracked() {
    const BURST: u16 = 50;
    for f in FAMS {
        let h = harness(LoadOptions {
            flows: FlowConfig {
                new_per_second: 10,
                new_burst: BURST as u32,
                ..FlowConfig::DEFAULT
            },
            ..Default::default()
        });
        let (p1, p2, gw) = (f.peer(1), f.peer(2), f.gw());
        let before = h.dp.maps.stats().expect("stats");
        for i in 0..200 {
            assert_eq!(run(&h, IN, Packet::udp(p2, gw, 2000 + i, 53)), PASS);
        }
        let answered = (0..200)
            .filter(|i| run(&h, EG, Packet::udp(gw, p2, 53, 2000 + i)) == PASS)
            .count() as u64;
        let after = h.dp.maps.stats().expect("stats");
        let made = after.flow_new - before.flow_new;
        // The first BURST, and the few the rate refilled meanwhile.
        assert!(
            (BURST as u64..BURST as u64 + 10).contains(&made),
            "{f:?}: {made} flows made"
        );
        assert_eq!(answered, made, "{f:?}: only tracked flows are answered");
        assert_eq!(after.flow_over_budget - before.flow_over_budget, 200 - made);
        // The first flows are the tracked ones.
        assert_eq!(run(&h, EG, Packet::udp(gw, p2, 53, 2000)), PASS);
        // Another peer has a budget of its own.
        assert_eq!(run(&h, IN, Packet::tcp(p1, gw, 40000, 22)), PASS);
        assert_eq!(run(&h, EG, Packet::tcp(gw, p1, 22, 40000)), PASS);
        // The budget refills at its rate.
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(run(&h, IN, Packet::udp(p2, gw, 3000, 53)), PASS);
        assert_eq!(run(&h, EG, Packet::udp(gw, p2, 53, 3000)), PASS);
    }
}

const MS: u64 = 1_000_000;

/// Short lifetimes, so expiry can be watched.
fn short_lifetimes() -> LoadOptions {
    LoadOptions {
        flows: FlowConfig {
            tcp_opening_ns: 200 * MS,
            tcp_established_ns: 3000 * MS,
            tcp_closing_ns: 200 * MS,
            other_opening_ns: 200 * MS,
            other_established_ns: 3000 * MS,
            ..FlowConfig::DEFAULT
        },
        ..Default::default()
    }
}

fn wait_ms(ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

/// Lifetimes by protocol and state: an unanswered opening lives briefly,
/// an answered flow long, a closed TCP connection briefly again; every
/// packet of a flow pushes its expiry on; a dead entry is removed when met
/// (lazy expiry) and counted.
#[test]
fn lifetimes_by_protocol_and_state() {
    for f in FAMS {
        let h = harness(short_lifetimes());
        let (p1, p2, gw) = (f.peer(1), f.peer(2), f.gw());
        // Unanswered UDP and TCP openings die after their short lifetime.
        assert_eq!(run(&h, IN, Packet::udp(p2, gw, 5000, 53)), PASS);
        assert_eq!(run(&h, IN, Packet::tcp(p1, gw, 41000, 22)), PASS);
        // Answered ones live on.
        assert_eq!(run(&h, IN, Packet::udp(p2, gw, 5001, 53)), PASS);
        assert_eq!(run(&h, EG, Packet::udp(gw, p2, 53, 5001)), PASS);
        open_victim(&h, p1, gw);
        // A connection reset, and one closed by FIN.
        assert_eq!(run(&h, IN, Packet::tcp(p1, gw, 41001, 22)), PASS);
        let rst = Packet::tcp_flags(gw, p1, 22, 41001, TCP_RST | TCP_ACK);
        assert_eq!(run(&h, EG, rst), PASS, "the reset is part of the flow");
        assert_eq!(run(&h, IN, Packet::tcp(p1, gw, 41002, 22)), PASS);
        assert_eq!(
            run(&h, EG, Packet::tcp_flags(gw, p1, 22, 41002, 0x12)),
            PASS
        );
        let fin = Packet::tcp_flags(p1, gw, 41002, 22, TCP_FIN | TCP_ACK);
        assert_eq!(run(&h, IN, fin), PASS);

        let expired = h.dp.maps.stats().expect("stats").flow_expired;
        wait_ms(400);
        assert_eq!(
            run(&h, EG, Packet::udp(gw, p2, 53, 5000)),
            DROP,
            "{f:?} udp"
        );
        let synack = Packet::tcp_flags(gw, p1, 22, 41000, 0x12);
        assert_eq!(run(&h, EG, synack), DROP, "{f:?} tcp opening");
        let after_rst = Packet::tcp_flags(gw, p1, 22, 41001, TCP_ACK);
        assert_eq!(run(&h, EG, after_rst), DROP, "{f:?} after reset");
        let after_fin = Packet::tcp_flags(gw, p1, 22, 41002, TCP_ACK);
        assert_eq!(run(&h, EG, after_fin), DROP, "{f:?} after FIN");
        let met = h.dp.maps.stats().expect("stats").flow_expired - expired;
        assert_eq!(met, 4, "{f:?}: dead entries met");
        for (s, d, sp, dp, proto) in [
            (p2, gw, 5000, 53, PROTO_UDP),
            (p1, gw, 41000, 22, PROTO_TCP),
            (p1, gw, 41001, 22, PROTO_TCP),
        ] {
            let key = FlowKey::of(&addr(s), &addr(d), sp, dp, proto).0;
            assert!(h.dp.maps.flows.get(&key, 0).is_err(), "{key:?} removed");
        }
        // The answered flows are alive, and each packet renews them.
        for _ in 0..3 {
            assert_eq!(run(&h, EG, Packet::udp(gw, p2, 53, 5001)), PASS);
            let data = Packet::tcp_flags(gw, p1, 22, 40000, TCP_ACK);
            assert_eq!(run(&h, EG, data), PASS);
            wait_ms(150);
        }
        // A FIN moves even a busy connection to the short lifetime.
        let fin = Packet::tcp_flags(gw, p1, 22, 40000, TCP_FIN | TCP_ACK);
        assert_eq!(run(&h, EG, fin), PASS);
        wait_ms(400);
        let late = Packet::tcp_flags(gw, p1, 22, 40000, TCP_ACK);
        assert_eq!(run(&h, EG, late), DROP, "{f:?}: closed connection");
    }
}

/// Which packets open a flow: a reset never does; a TCP packet other than
/// a SYN that the policy allows does (a connection whose entry was lost is
/// picked up, counted as a pickup), with the short lifetime of an
/// unanswered opening.
#[test]
fn resets_open_nothing_and_mid_stream_packets_are_picked_up() {
    for f in FAMS {
        let h = harness(short_lifetimes());
        let (p1, gw) = (f.peer(1), f.gw());
        let rst = Packet::tcp_flags(p1, gw, 42000, 22, TCP_RST);
        assert_eq!(run(&h, IN, rst), PASS, "the policy allows it");
        let back = Packet::tcp_flags(gw, p1, 22, 42000, TCP_ACK);
        assert_eq!(run(&h, EG, back), DROP, "a reset opens nothing");

        let before = h.dp.maps.stats().expect("stats");
        let ack = Packet::tcp_flags(p1, gw, 42001, 22, TCP_ACK).with_payload(20);
        assert_eq!(run(&h, IN, ack), PASS);
        let back = Packet::tcp_flags(gw, p1, 22, 42001, TCP_ACK);
        assert_eq!(run(&h, EG, back.clone()), PASS, "picked up");
        let after = h.dp.maps.stats().expect("stats");
        assert_eq!(after.flow_pickups - before.flow_pickups, 1);
        assert_eq!(after.flow_new - before.flow_new, 1);
        // A pickup the other side never answers dies young.
        let ack = Packet::tcp_flags(p1, gw, 42002, 22, TCP_ACK);
        assert_eq!(run(&h, IN, ack), PASS);
        wait_ms(400);
        let back = Packet::tcp_flags(gw, p1, 22, 42002, TCP_ACK);
        assert_eq!(run(&h, EG, back), DROP);
    }
}

/// The controller's sweep removes entries past their lifetime (those no
/// packet meets again, which lazy expiry never reaches) and keeps the live.
#[test]
fn sweep_removes_dead_entries_and_keeps_live_ones() {
    use wgbpf::dataplane::flows::monotonic_ns;
    let h = harness(short_lifetimes());
    let (p1, p2, gw) = (Fam::V4.peer(1), Fam::V4.peer(2), Fam::V4.gw());
    for i in 0..100 {
        assert_eq!(run(&h, IN, Packet::udp(p2, gw, 7000 + i, 53)), PASS);
    }
    open_victim(&h, p1, gw);
    let s = h.dp.maps.sweep_flows(monotonic_ns()).expect("sweep");
    assert_eq!((s.live, s.removed), (101, 0), "all alive at first");
    wait_ms(400);
    let s = h.dp.maps.sweep_flows(monotonic_ns()).expect("sweep");
    assert_eq!((s.live, s.removed), (1, 100), "the unanswered openings go");
    let key = FlowKey::of(&addr(p2), &addr(gw), 7000, 53, PROTO_UDP).0;
    assert!(h.dp.maps.flows.get(&key, 0).is_err());
    victim_survives(&h, p1, gw, "after the sweep");
}

/// Makes the entry of `key` dead (its expiry in the past), as if its
/// lifetime had run out.
fn kill(h: &mut Harness, key: &FlowKey) {
    let mut v = h.dp.maps.flows.get(key, 0).expect("entry");
    v.expires_ns = 1;
    h.dp.maps.flows.insert(key, v, 0).expect("kill");
}

/// The sweep races the programs: between the sweep's read of the table and
/// its delete, a packet may meet a dead entry, remove it and open a fresh
/// one with the same key. Deleting that fresh entry would cut a live flow,
/// and for a flow whose reply direction has no rule of its own (a UDP
/// reply) the next reply would be denied. Each point of the sweep where a
/// packet can come is tried: the renewed flow keeps working, the dead ones
/// go.
#[test]
fn sweep_never_removes_an_entry_renewed_while_it_works() {
    use wgbpf::dataplane::flows::{monotonic_ns, SweepPoint};
    for f in FAMS {
        for renew_at in ["read", "delete"] {
            let what = format!("{f:?}, renewed at {renew_at}");
            let mut h = harness(LoadOptions::default());
            let (p2, gw) = (f.peer(2), f.gw());
            // Three flows of p2's, all answered once, then all dead.
            let ports = [7100u16, 7101, 7102];
            for &sp in &ports {
                assert_eq!(run(&h, IN, Packet::udp(p2, gw, sp, 53)), PASS);
                assert_eq!(run(&h, EG, Packet::udp(gw, p2, 53, sp)), PASS);
                kill(
                    &mut h,
                    &FlowKey::of(&addr(p2), &addr(gw), sp, 53, PROTO_UDP).0,
                );
            }
            let renewed = FlowKey::of(&addr(p2), &addr(gw), 7101, 53, PROTO_UDP).0;
            let expired = h.dp.maps.stats().expect("stats").flow_expired;
            let mut met = 0;
            let s =
                h.dp.maps
                    .sweep_flows_hooked(monotonic_ns(), &mut |point| {
                        let now = match point {
                            SweepPoint::Read => renew_at == "read",
                            SweepPoint::Delete(k) => renew_at == "delete" && *k == renewed,
                        };
                        if now {
                            // p2 asks again: the packet meets the dead entry,
                            // removes it and opens a fresh one.
                            assert_eq!(run(&h, IN, Packet::udp(p2, gw, 7101, 53)), PASS);
                            met += 1;
                        }
                    })
                    .expect("sweep");
            assert_eq!(met, 1, "{what}: the hook ran");
            let after = h.dp.maps.stats().expect("stats");
            assert_eq!(
                after.flow_expired - expired,
                1,
                "{what}: the packet met the dead entry"
            );
            // The renewed flow is whole: its reply passes.
            assert!(
                h.dp.maps.flows.get(&renewed, 0).is_ok(),
                "{what}: entry kept"
            );
            assert_eq!(
                run(&h, EG, Packet::udp(gw, p2, 53, 7101)),
                PASS,
                "{what}: the reply of the renewed flow"
            );
            assert_eq!(s.removed, 2, "{what}: the two dead flows go, {s:?}");
            // Seen as renewed at the second read, or put back after the
            // delete took it.
            let expect = if renew_at == "read" { (1, 0) } else { (0, 1) };
            assert_eq!((s.renewed, s.restored), expect, "{what}: {s:?}");
            // The dead ones are gone: their replies meet the policy.
            for sp in [7100, 7102] {
                assert_eq!(
                    run(&h, EG, Packet::udp(gw, p2, 53, sp)),
                    DROP,
                    "{what}: {sp}"
                );
            }
        }
    }
}
