//! The kernel against the reference evaluator: random policies, thousands
//! of random, edge-case and malformed packets plus replies to earlier ones
//! and fragments of them (first fragments, later fragments after them,
//! overlapping ones), through the real programs with BPF_PROG_TEST_RUN. Every verdict, every
//! per-peer counter and every deny-map entry must agree with the model.

use std::{collections::HashMap, net::IpAddr};

use rand::{rngs::StdRng, Rng, SeedableRng};
use wgbpf::{
    dataplane::{
        counters::{unmap, PeerTotals, Totals},
        LoadOptions,
    },
    policy::{
        model::Policy,
        reference::{Model, PacketMeta},
    },
};
use wgbpf_bpf_tests::{
    harness::{meta, Harness, DROP, PASS},
    packets::{random_frame, Frame, Packet, Pools},
    policies::{pools_for, random_policy},
};
use wgbpf_common::{
    severity, FlowConfig, DIR_EGRESS, DIR_INGRESS, ICMPV6_ECHO_REQUEST, ICMP_ECHO_REQUEST,
    PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP,
};

fn peer_of(policy: &Policy, addr: IpAddr) -> u32 {
    policy
        .peers
        .iter()
        .find(|p| p.allowed_ips.iter().any(|n| n.contains(&addr)))
        .map_or(0, |p| p.index)
}

/// TCP flags of a later packet of a flow: a handshake answer, data, a
/// reset, a close, a new SYN.
fn random_tcp_flags(rng: &mut impl Rng) -> u8 {
    [0x12, 0x10, 0x10, 0x14, 0x04, 0x11, 0x02][rng.gen_range(0..7)]
}

/// A reply to a packet that passed: addresses and ports swapped, echo
/// request answered by echo reply.
fn reply_to(rng: &mut impl Rng, m: &PacketMeta) -> Option<Frame> {
    let p = match m.proto {
        PROTO_TCP => Packet::tcp_flags(m.dst, m.src, m.dport, m.sport, random_tcp_flags(rng)),
        PROTO_UDP => Packet::udp(m.dst, m.src, m.dport, m.sport),
        PROTO_SCTP => Packet::sctp(m.dst, m.src, m.dport, m.sport),
        PROTO_ICMP | PROTO_ICMPV6 => Packet::icmp_echo_reply(m.dst, m.src, m.icmp_id),
        _ => return None,
    };
    Some(p.build())
}

/// The packet a meta describes (well formed, no options), as sent.
fn rebuild(m: &PacketMeta) -> Option<Packet> {
    Some(match m.proto {
        PROTO_TCP => Packet::tcp_flags(m.src, m.dst, m.sport, m.dport, m.tcp_flags),
        PROTO_UDP => Packet::udp(m.src, m.dst, m.sport, m.dport),
        PROTO_SCTP => Packet::sctp(m.src, m.dst, m.sport, m.dport),
        PROTO_ICMP | PROTO_ICMPV6 if m.is_icmp() && m.icmp_type == echo_request(m) => {
            Packet::icmp_echo_request(m.src, m.dst, m.icmp_id)
        }
        _ => return None,
    })
}

fn echo_request(m: &PacketMeta) -> u8 {
    if m.src.is_ipv4() {
        ICMP_ECHO_REQUEST
    } else {
        ICMPV6_ECHO_REQUEST
    }
}

/// An ICMP error about a packet that passed, quoting it: from its far end,
/// from the gateway, or from anyone in the pools; mostly to its sender.
fn error_about(rng: &mut impl Rng, m: &PacketMeta, gw: &[IpAddr], pools: &Pools) -> Option<Frame> {
    let quoted = rebuild(m)?.build();
    let v4 = m.src.is_ipv4();
    let same_family = |a: &&IpAddr| a.is_ipv4() == v4;
    let from = match rng.gen_range(0..3) {
        0 => m.dst,
        1 => *gw.iter().find(same_family)?,
        _ => random_frame_addr(rng, pools, v4),
    };
    let to = if rng.gen_bool(0.8) {
        m.src
    } else {
        random_frame_addr(rng, pools, v4)
    };
    let (proto, hdr, types): (u8, usize, &[u8]) = if v4 {
        (PROTO_ICMP, 20, &[3, 11, 12])
    } else {
        (PROTO_ICMPV6, 40, &[1, 2, 3, 4])
    };
    let mut l4 = vec![types[rng.gen_range(0..types.len())], 0, 0, 0, 0, 0, 5, 0];
    l4.extend_from_slice(&quoted.bytes[14..14 + hdr + 8]);
    l4.extend((0..rng.gen_range(0..24)).map(|_| rng.gen::<u8>()));
    Some(Packet::raw_l4(from, to, proto, l4).build())
}

/// The first fragment of a packet like `m`, as datagram `id`.
fn first_fragment(m: &PacketMeta, id: u32) -> Option<Frame> {
    Some(
        rebuild(m)?
            .with_payload(FRAG_PAYLOAD)
            .as_fragment_at(0, true)
            .with_frag_id(id)
            .build(),
    )
}

/// Payload of first fragments; their later fragments start at or after
/// `LATER_AT` (8-byte units), or overlap them now and then.
const FRAG_PAYLOAD: usize = 96;
const LATER_AT: u16 = 15;

/// A later fragment of datagram `id` of a packet like `m`: mostly right
/// after its first fragment, sometimes further, sometimes overlapping it.
fn later_fragment(rng: &mut impl Rng, m: &PacketMeta, id: u32) -> Option<Frame> {
    let offset = match rng.gen_range(0..10) {
        0 => rng.gen_range(1..LATER_AT),
        1 => rng.gen_range(LATER_AT..8192),
        _ => LATER_AT,
    };
    Some(
        rebuild(m)?
            .with_payload(32)
            .as_fragment_at(offset, rng.gen())
            .with_frag_id(id)
            .build(),
    )
}

fn random_frame_addr(rng: &mut impl Rng, pools: &Pools, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(pools.v4[rng.gen_range(0..pools.v4.len())])
    } else {
        IpAddr::V6(pools.v6[rng.gen_range(0..pools.v6.len())])
    }
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
    // The model has no flow budget: none in the kernel either (the budget
    // is tested in flow_table.rs).
    let mut h = Harness::with_options(LoadOptions {
        // Nor lifetimes for fragments: they must outlive the run.
        flows: FlowConfig {
            new_per_second: 0,
            fragment_ns: 3600 * 1_000_000_000,
            ..FlowConfig::DEFAULT
        },
        ..Default::default()
    })
    .expect("load");

    let first = random_policy(&mut rng, 12, 30);
    let v = h.apply(&first).expect("apply").version;
    let mut model = Model::new(first, v);
    let mut expected_peers: HashMap<u32, PeerTotals> = HashMap::new();
    let mut expected_denies: HashMap<DenyKey, (u64, u64)> = HashMap::new();
    let mut passed: Vec<PacketMeta> = Vec::new();
    let (mut total, mut malformed, mut flow_decided, mut denied) = (0, 0, 0, 0);
    let mut related = 0;
    // First fragments sent (passed or not), with their identification.
    let mut firsts: Vec<(PacketMeta, u32)> = Vec::new();
    let (mut frag_matched, mut frag_overlaps) = (0, 0);

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
            let gw = model
                .policy()
                .local
                .iter()
                .map(|n| n.addr())
                .collect::<Vec<_>>();
            let later = match passed.len() {
                0 => None,
                n => {
                    let m = passed[rng.gen_range(0..n)].clone();
                    match rng.gen_range(0..100) {
                        0..25 => reply_to(&mut rng, &m),
                        25..33 => error_about(&mut rng, &m, &gw, &pools),
                        38..44 => {
                            // Few ids, so that datagrams meet.
                            let id = rng.gen_range(1..6);
                            let f = first_fragment(&m, id);
                            if f.is_some() {
                                firsts.push((m.clone(), id));
                            }
                            f
                        }
                        44..52 if !firsts.is_empty() => {
                            let (m, id) = firsts[rng.gen_range(0..firsts.len())].clone();
                            later_fragment(&mut rng, &m, id)
                        }
                        33..38 => rebuild(&m).map(|p| {
                            let p = match m.proto {
                                PROTO_TCP => Packet::tcp_flags(
                                    m.src,
                                    m.dst,
                                    m.sport,
                                    m.dport,
                                    random_tcp_flags(&mut rng),
                                ),
                                _ => p,
                            };
                            p.build()
                        }),
                        _ => None,
                    }
                }
            };
            let frame = later.unwrap_or_else(|| random_frame(&mut rng, &pools));
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
            if out.malformed {
                // A later fragment overlapping its first fragment.
                frag_overlaps += 1;
                malformed += 1;
                assert_eq!(got, DROP, "overlapping fragment: {} {m:?}", frame.label);
                continue;
            }
            if out.from_flow && m.fragment {
                frag_matched += 1;
            }
            let want = if out.verdict.passes() { PASS } else { DROP };
            assert_eq!(
                got,
                want,
                "round {round}, {}: {m:?}\nmodel: {out:?}\nkernel: {:?}\npolicy: {:#?}",
                frame.label,
                h.dp.maps.stats(),
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
            if out.from_flow && m.is_icmp_error() {
                related += 1;
            }
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
        "{total} packets: {malformed} malformed, {denied} denied, {flow_decided} by the flow table, \
         {related} ICMP errors related to a flow, {frag_matched} later fragments matched to \
         their first, {frag_overlaps} overlapping it"
    );
    // The run must have exercised every path, or it proves little.
    assert!(
        malformed > 500
            && denied > 1000
            && flow_decided > 500
            && related > 50
            && frag_matched > 100
            && frag_overlaps > 10,
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
