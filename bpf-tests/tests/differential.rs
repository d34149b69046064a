//! The kernel against the reference evaluator: random policies, thousands
//! of random, edge-case and malformed packets plus replies to earlier ones,
//! through the real programs with BPF_PROG_TEST_RUN. Every verdict, every
//! per-peer counter and every deny-map entry must agree with the model.

use std::{collections::HashMap, net::IpAddr};

use rand::{rngs::StdRng, Rng, SeedableRng};
use wgbpf::{
    dataplane::counters::{unmap, PeerTotals, Totals},
    policy::{
        model::Policy,
        reference::{Model, PacketMeta},
    },
};
use wgbpf_bpf_tests::{
    harness::{meta, Harness, DROP, PASS},
    packets::{random_frame, Frame, Packet},
    policies::{pools_for, random_policy},
};
use wgbpf_common::{
    severity, DIR_EGRESS, DIR_INGRESS, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP,
};

fn peer_of(policy: &Policy, addr: IpAddr) -> u32 {
    policy
        .peers
        .iter()
        .find(|p| p.allowed_ips.iter().any(|n| n.contains(&addr)))
        .map_or(0, |p| p.index)
}

/// A reply to a packet that passed: addresses and ports swapped, echo
/// request answered by echo reply.
fn reply_to(m: &PacketMeta) -> Option<Frame> {
    let p = match m.proto {
        PROTO_TCP => Packet::tcp(m.dst, m.src, m.dport, m.sport),
        PROTO_UDP => Packet::udp(m.dst, m.src, m.dport, m.sport),
        PROTO_SCTP => Packet::sctp(m.dst, m.src, m.dport, m.sport),
        PROTO_ICMP | PROTO_ICMPV6 => Packet::icmp_echo_reply(m.dst, m.src, m.icmp_id),
        _ => return None,
    };
    Some(p.build())
}

fn add(t: &mut Totals, sev: u8, len: u64) {
    match sev {
        severity::DENY => {
            t.denied_packets += 1;
            t.denied_bytes += len;
        }
        severity::AUDIT => {
            t.audited_packets += 1;
            t.audited_bytes += len;
        }
        _ => {
            t.allowed_packets += 1;
            t.allowed_bytes += len;
        }
    }
}

type DenyKey = (IpAddr, u32, u8, u16, bool);

#[test]
fn kernel_agrees_with_reference_on_random_traffic() {
    let seed: u64 = std::env::var("WGBPF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("seed {seed} (rerun with WGBPF_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut h = Harness::new().expect("load");

    let first = random_policy(&mut rng, 12, 30);
    let v = h.apply(&first).expect("apply").version;
    let mut model = Model::new(first, v);
    let mut expected_peers: HashMap<u32, PeerTotals> = HashMap::new();
    let mut expected_denies: HashMap<DenyKey, (u64, u64)> = HashMap::new();
    let mut passed: Vec<PacketMeta> = Vec::new();
    let (mut total, mut malformed, mut flow_decided, mut denied) = (0, 0, 0, 0);

    for round in 0..10 {
        if round > 0 {
            // A new policy over the same peers: flows from the old one are
            // re-checked, not trusted.
            let rules = rng.gen_range(1..60);
            let policy = random_policy(&mut rng, 12, rules);
            let v = h.apply(&policy).expect("apply").version;
            model.set_policy(policy, v);
        }
        let pools = pools_for(model.policy());
        for _ in 0..2000 {
            let frame = match passed.len() {
                n if n > 0 && rng.gen_bool(0.25) => {
                    let m = passed[rng.gen_range(0..n)].clone();
                    match reply_to(&m) {
                        Some(f) => f,
                        None => random_frame(&mut rng, &pools),
                    }
                }
                _ => random_frame(&mut rng, &pools),
            };
            let dir = if rng.gen_bool(0.5) {
                DIR_INGRESS
            } else {
                DIR_EGRESS
            };
            let got = h.run(dir, &frame.bytes).unwrap_or_else(|e| {
                panic!(
                    "test_run {} ({} bytes): {e}",
                    frame.label,
                    frame.bytes.len()
                )
            });
            total += 1;
            let Some(m) = meta(&frame) else {
                malformed += 1;
                assert_eq!(
                    got, DROP,
                    "malformed frame must drop: {} {:02x?}",
                    frame.label, frame.bytes
                );
                continue;
            };
            let out = model.packet(&m);
            let want = if out.verdict.passes() { PASS } else { DROP };
            assert_eq!(
                got,
                want,
                "round {round}, {}: {m:?}\nmodel: {out:?}\npolicy: {:#?}",
                frame.label,
                model.policy()
            );
            let len = match &frame.expected {
                wgbpf_bpf_tests::packets::Expected::Packet(p) => p.len as u64,
                _ => unreachable!(),
            };
            let peer = if dir == DIR_INGRESS {
                peer_of(model.policy(), m.src)
            } else {
                peer_of(model.policy(), m.dst)
            };
            let t = expected_peers.entry(peer).or_default();
            add(
                if dir == DIR_INGRESS {
                    &mut t.ingress
                } else {
                    &mut t.egress
                },
                out.verdict.severity,
                len,
            );
            if out.from_flow {
                flow_decided += 1;
            } else if out.verdict.severity >= severity::AUDIT {
                let port = if m.fragment { 0 } else { m.policy_port() };
                let key = (
                    m.dst,
                    peer_of(model.policy(), m.src),
                    m.proto,
                    port,
                    out.verdict.severity == severity::AUDIT,
                );
                let e = expected_denies.entry(key).or_default();
                e.0 += 1;
                e.1 += len;
            }
            if out.verdict.passes() {
                passed.push(m);
            } else {
                denied += 1;
            }
        }
    }
    eprintln!(
        "{total} packets: {malformed} malformed, {denied} denied, {flow_decided} by the flow table"
    );
    // The run must have exercised every path, or it proves little.
    assert!(
        malformed > 500 && denied > 1000 && flow_decided > 500,
        "weak mix"
    );

    for index in 0..=12u32 {
        let got = h.dp.maps.peer_totals(index).expect("counters");
        let want = expected_peers.get(&index).copied().unwrap_or_default();
        assert_eq!(got, want, "counters of peer {index}");
    }
    let got: HashMap<DenyKey, (u64, u64)> =
        h.dp.maps
            .denies()
            .expect("denies")
            .into_iter()
            .map(|d| {
                (
                    (d.dst, d.src_peer, d.proto, d.port, d.audit),
                    (d.packets, d.bytes),
                )
            })
            .collect();
    assert_eq!(got, expected_denies, "deny map");
    let stats = h.dp.maps.stats().expect("stats");
    assert_eq!(stats.malformed, malformed as u64);
    let _ = unmap;
}
