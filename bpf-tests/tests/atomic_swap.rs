//! Policy updates are atomic: no packet is ever judged by a half-written
//! policy, a failed update leaves the running policy untouched, and
//! re-applying the running policy changes nothing.
//!
//! The swap test rests on three policies A, B and C that all allow the
//! probe p3 -> gateway tcp/22, each through a different rule kind (a single
//! port, a port range from any source, a CIDR destination), with different
//! identity numbers for p3 and the gateway and different port classes for
//! port 22. The test first proves, by evaluating the compiled maps the way
//! the kernel does, that any mix of their parts (one policy's identity trie
//! with another's policy entries, or one's port classes with another's
//! entries, or B's entries without B's wildcard flags) denies the probe, and
//! that some mix would pass the denied probe p3 -> gateway tcp/7. Then a
//! thread runs the probes through the real programs non-stop while the main
//! thread cycles through A, B, C hundreds of times: a single wrong verdict
//! would mean a packet saw such a mix.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
    time::{Duration, Instant},
};

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use wgbpf::{
    dataplane::{slot::ApplyReport, Capacities, Dataplane, DataplaneError, LoadOptions},
    policy::{
        compile::{compile, Compiled},
        model::{Policy, Rule, Selector},
        reference::{evaluate, PacketMeta},
    },
};
use wgbpf_bpf_tests::{
    fixtures::{accept, addr, deny, sel, Fam, Layout, Named, EG, FAMS, IN},
    harness::{meta, Harness, DROP, PASS},
    packets::Packet,
};
use wgbpf_common::{
    capacity, names, ported_proto_block, rule_id, severity, Endpoint, ID_ANY, ID_WORLD,
    PORT_CLASS_ANY, PROTO_ANY, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, SLOT_HAS_ANY_ANY,
    SLOT_HAS_ANY_DST, SLOT_HAS_ANY_SRC,
};

/// Policy switches while the probes run.
const SWAPS: usize = 300;

// ---------------------------------------------------------------------------
// Forty peers p1..p40 (10.1.0.i, fd01::i), the gateway 10.1.255.1 / fd01::ff:1.
// ---------------------------------------------------------------------------

const PEERS: u8 = 40;

const NET: Layout = Layout {
    v4: [10, 1, 0],
    v6: 0xfd01,
    first_peer: 0,
    gw_v4: Ipv4Addr::new(10, 1, 255, 1),
    gw_v6: Ipv6Addr::new(0xfd01, 0, 0, 0, 0, 0, 0xff, 1),
};

fn sel_peer(i: u8) -> Selector {
    NET.sel_peer(i)
}

fn sel_gw() -> Selector {
    NET.sel_gw()
}

/// Every peer may reach the gateway on its own UDP port: every peer gets
/// an identity of its own.
fn per_peer_udp(base: u16) -> Vec<Rule> {
    (1..=PEERS)
        .map(|i| {
            accept(
                sel_peer(i),
                sel_gw(),
                PROTO_UDP,
                &[(base + i as u16, base + i as u16)],
            )
            .named(&format!("p{i} udp"))
        })
        .collect()
}

/// `tag: net <n>`: 10.0.<n>.0/24 may reach the gateway on UDP port n, for
/// each n of `nets`; outside networks sort before the peers and shift every
/// identity by one each.
fn outside_nets(tag: &str, nets: impl IntoIterator<Item = u8>) -> Vec<Rule> {
    nets.into_iter()
        .map(|n| {
            let net = format!("10.0.{n}.0/24");
            let ports = [(n as u16, n as u16)];
            accept(sel(&[&net]), sel_gw(), PROTO_UDP, &ports).named(&format!("{tag}: net {n}"))
        })
        .collect()
}

/// The probes' protocols: TCP's port classes come first in the kernel's
/// port-class array, ICMP's and ICMPv6's (message types) last, so a slot
/// rewrite is watched at both ends of the array.
const PROTOS: [u8; 3] = [PROTO_TCP, PROTO_ICMP, PROTO_ICMPV6];

/// A: p3 -> gateway port (ICMP: type) 22, a single port (port class 2).
fn policy_a() -> Policy {
    let mut rules: Vec<Rule> = PROTOS
        .iter()
        .map(|&proto| accept(sel_peer(3), sel_gw(), proto, &[(22, 22)]).named("a: p3 22"))
        .collect();
    rules.extend(per_peer_udp(2000));
    NET.policy(1..=PEERS, rules)
}

/// B: any source -> gateway 20-30 (class 3; class 2 is a deny of 7); two
/// outside networks sort before the peers and shift every identity by
/// two; peers listed in reverse order.
fn policy_b() -> Policy {
    let mut rules = outside_nets("b", 9..=10);
    for proto in PROTOS {
        rules.push(deny(Selector::Any, sel_gw(), proto, &[(7, 7)]).named("b: no 7"));
        rules.push(accept(Selector::Any, sel_gw(), proto, &[(20, 30)]).named("b: 20-30"));
    }
    rules.extend(per_peer_udp(3000));
    NET.policy((1..=PEERS).rev(), rules)
}

/// C: p3 -> the gateway's /28 (/124) 22 (class 4; classes 2 and 3 are
/// denies of 5 and 10 from p3 to the gateway); three outside networks
/// shift identities by three, and the CIDR atom adds one before the
/// gateway.
fn policy_c() -> Policy {
    let mut rules = outside_nets("c", 11..=13);
    let gw_net = || sel(&["10.1.255.0/28", "fd01::ff:0/124"]);
    for proto in PROTOS {
        for port in [5, 10] {
            rules.push(
                deny(sel_peer(3), sel_gw(), proto, &[(port, port)]).named(&format!("c: no {port}")),
            );
        }
        rules.push(accept(sel_peer(3), gw_net(), proto, &[(22, 22)]).named("c: gw net 22"));
    }
    rules.extend(per_peer_udp(4000));
    NET.policy(1..=PEERS, rules)
}

fn compiled(p: &Policy) -> Compiled {
    compile(p, capacity::PEERS).expect("compile")
}

/// A probe: p3 -> gateway, TCP to `port`, or ICMP (ICMPv6 on v6) of type
/// `port`; these ICMP types open no flows.
#[derive(Clone, Copy, Debug)]
struct Probe {
    fam: Fam,
    icmp: bool,
    port: u16,
}

const ALLOWED: u16 = 22;
const DENIED: u16 = 7;

fn probes() -> Vec<Probe> {
    let mut out = Vec::new();
    for port in [ALLOWED, DENIED] {
        for icmp in [false, true] {
            for fam in FAMS {
                out.push(Probe { fam, icmp, port });
            }
        }
    }
    out
}

impl Probe {
    fn tcp(fam: Fam, port: u16) -> Probe {
        Probe {
            fam,
            icmp: false,
            port,
        }
    }
    fn proto(&self) -> u8 {
        if self.icmp {
            self.fam.icmp_proto()
        } else {
            PROTO_TCP
        }
    }
    /// The packet; `sport` is the TCP source port or the ICMP identifier.
    fn packet(&self, sport: u16) -> Packet {
        let (src, dst) = (NET.peer_addr(self.fam, 3), NET.gw_addr(self.fam));
        if self.icmp {
            Packet::icmp(src, dst, self.port as u8, 0, u32::from(sport) << 16 | 1)
        } else {
            Packet::tcp(src, dst, sport, self.port)
        }
    }
    /// Where the TCP source port is in the frame.
    fn sport_offset(&self) -> Option<usize> {
        (!self.icmp).then(|| 14 + self.fam.ip_hdr() as usize)
    }
    fn meta(&self) -> PacketMeta {
        meta(&self.packet(40000).build()).expect("well formed")
    }
    fn allowed(&self) -> bool {
        self.port == ALLOWED
    }
}

// ---------------------------------------------------------------------------
// The kernel's lookup (ebpf/src/main.rs, policy.rs), over compiled maps that
// may come from different policies.
// ---------------------------------------------------------------------------

fn lpm(trie: &Compiled, a: IpAddr) -> Endpoint {
    let a = u128::from_be_bytes(addr(a));
    trie.ipcache
        .iter()
        .filter(|(p, len, _)| {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            a & mask == u128::from_be_bytes(*p) & mask
        })
        .max_by_key(|(_, len, _)| *len)
        .map_or(
            Endpoint {
                identity: ID_WORLD,
                ..Default::default()
            },
            |(_, _, e)| *e,
        )
}

fn entry(pol: &Compiled, src: u32, dst: u32, proto: u8, class: u16) -> Option<(u8, u32)> {
    pol.policy
        .iter()
        .find(|(k, _)| {
            k.src_id == src && k.dst_id == dst && k.proto == proto && k.port_class == class
        })
        .map(|(_, v)| (v.severity, v.rule))
}

fn layer(pol: &Compiled, src: u32, dst: u32, proto: u8, class: u16) -> (u8, u32) {
    let Some(marker) = entry(pol, src, dst, PROTO_ANY, PORT_CLASS_ANY) else {
        return (severity::NONE, rule_id::DEFAULT);
    };
    if class != PORT_CLASS_ANY {
        if let Some(v) = entry(pol, src, dst, proto, class) {
            return v;
        }
    }
    if proto != PROTO_ANY {
        if let Some(v) = entry(pol, src, dst, proto, PORT_CLASS_ANY) {
            return v;
        }
    }
    marker
}

fn better(a: (u8, u32), b: (u8, u32)) -> (u8, u32) {
    if b.0 > a.0 || (b.0 == a.0 && b.1 < a.1) {
        b
    } else {
        a
    }
}

/// Does the probe pass with the identity trie of `trie`, the policy entries
/// of `pol`, the port classes of `classes` and the flags of `flags`?
fn mixed_passes(
    trie: &Compiled,
    pol: &Compiled,
    classes: &Compiled,
    flags: &Compiled,
    probe: Probe,
) -> bool {
    let (src, dst) = (
        lpm(trie, NET.peer_addr(probe.fam, 3)),
        lpm(trie, NET.gw_addr(probe.fam)),
    );
    let proto = probe.proto();
    let block = ported_proto_block(proto).unwrap() as usize;
    let class = classes.port_classes[block * 65536 + probe.port as usize];
    let (s, d) = (src.identity, dst.identity);
    let mut best = layer(pol, s, d, proto, class);
    let f = flags.flags;
    if f & SLOT_HAS_ANY_SRC != 0 {
        best = better(best, layer(pol, ID_ANY, d, proto, class));
    }
    if f & SLOT_HAS_ANY_DST != 0 {
        best = better(best, layer(pol, s, ID_ANY, proto, class));
    }
    if f & SLOT_HAS_ANY_ANY != 0 {
        best = better(best, layer(pol, ID_ANY, ID_ANY, proto, class));
    }
    best.0 == severity::ALLOW || best.0 == severity::AUDIT
}

/// The premise of the swap test, checked on the compiled maps.
#[test]
fn premise_mixed_slot_parts_would_change_verdicts() {
    let policies = [policy_a(), policy_b(), policy_c()];
    let c: Vec<Compiled> = policies.iter().map(compiled).collect();
    const NAMES: [&str; 3] = ["A", "B", "C"];

    // Different numbering: p3's identity, the gateway's, port 22's class.
    for fam in FAMS {
        let p3: Vec<u32> = c
            .iter()
            .map(|c| lpm(c, NET.peer_addr(fam, 3)).identity)
            .collect();
        let gw: Vec<u32> = c
            .iter()
            .map(|c| lpm(c, NET.gw_addr(fam)).identity)
            .collect();
        for (i, j) in [(0, 1), (0, 2), (1, 2)] {
            assert_ne!(
                p3[i], p3[j],
                "p3's identity in {} and {}",
                NAMES[i], NAMES[j]
            );
            assert_ne!(
                gw[i], gw[j],
                "the gateway's identity in {} and {}",
                NAMES[i], NAMES[j]
            );
        }
        // Peer numbering is the counter index, whatever the list order.
        assert!(c.iter().all(|c| lpm(c, NET.peer_addr(fam, 3)).peer == 3));
    }
    for proto in PROTOS {
        let at = ported_proto_block(proto).unwrap() as usize * 65536 + ALLOWED as usize;
        let class22: Vec<u16> = c.iter().map(|c| c.port_classes[at]).collect();
        assert!(
            class22[0] != class22[1] && class22[0] != class22[2] && class22[1] != class22[2],
            "proto {proto}: {class22:?}"
        );
    }
    assert_ne!(
        c[0].flags, c[1].flags,
        "B has wildcard-source entries, A does not"
    );

    for probe in probes() {
        for (i, p) in policies.iter().enumerate() {
            assert_eq!(
                evaluate(p, &probe.meta()).passes(),
                probe.allowed(),
                "reference, {probe:?} under {}",
                NAMES[i]
            );
        }
        let mut mixes_passing = 0;
        for t in 0..3 {
            for p in 0..3 {
                for k in 0..3 {
                    for f in 0..3 {
                        let passes = mixed_passes(&c[t], &c[p], &c[k], &c[f], probe);
                        let what = format!(
                            "{probe:?}: trie {}, entries {}, classes {}, flags {}",
                            NAMES[t], NAMES[p], NAMES[k], NAMES[f]
                        );
                        let pure = t == p && p == k;
                        if pure && f == p {
                            assert_eq!(passes, probe.allowed(), "{what}");
                        }
                        if probe.allowed() && !pure {
                            assert!(!passes, "{what} would pass: no proof");
                        }
                        if probe.allowed() && pure && p == 1 && f != 1 {
                            assert!(!passes, "{what}: B without its wildcard flag would pass");
                        }
                        if !probe.allowed() && passes {
                            mixes_passing += 1;
                        }
                    }
                }
            }
        }
        if !probe.allowed() {
            assert!(mixes_passing > 0, "{probe:?}: no mix would pass it");
        }
    }
}

// ---------------------------------------------------------------------------
// The swap.
// ---------------------------------------------------------------------------

fn program<'a>(h: &'a aya::Ebpf, name: &str) -> &'a SchedClassifier {
    h.program(name)
        .expect("program")
        .try_into()
        .expect("a classifier")
}

/// Probes run through both programs without pause while the policy cycles
/// A -> B -> C -> A ... (each switch rewrites the inactive slot, which held
/// another of the three): the allowed probes always pass, the denied ones
/// never do.
#[test]
fn no_packet_sees_a_half_written_policy() {
    let c = [
        compiled(&policy_a()),
        compiled(&policy_b()),
        compiled(&policy_c()),
    ];
    let mut h = Harness::new().expect("load the programs (are you root?)");
    let first = h.dp.maps.apply(&c[0]).expect("apply A");
    let dp = &mut h.dp;
    let (ebpf, maps) = (&dp.ebpf, &mut dp.maps);
    let progs = [
        program(ebpf, names::PROG_INGRESS),
        program(ebpf, names::PROG_EGRESS),
    ];

    let stop = AtomicBool::new(false);
    let probed = AtomicU64::new(0);
    let swaps = AtomicUsize::new(0);
    // (probe, swap count, verdict) of every wrong verdict.
    let (bad, total, busy_intervals) = std::thread::scope(|s| {
        let prober = s.spawn(|| {
            let mut frames: Vec<(Probe, Vec<u8>)> = probes()
                .into_iter()
                .map(|p| (p, p.packet(1024).build().bytes))
                .collect();
            let mut bad = Vec::new();
            let mut n: u64 = 0;
            while !stop.load(Relaxed) {
                for (probe, bytes) in frames.iter_mut() {
                    // A new source port each time: a new flow, so the policy
                    // decides, not the flow table.
                    if let Some(at) = probe.sport_offset() {
                        let sport = 1024 + (n % 64000) as u16;
                        bytes[at..at + 2].copy_from_slice(&sport.to_be_bytes());
                    }
                    let r = progs[(n / 8 % 2) as usize]
                        .test_run(TestRunOptions {
                            data_in: Some(bytes),
                            repeat: 1,
                            ..Default::default()
                        })
                        .expect("test_run");
                    let want = if probe.allowed() { PASS } else { DROP };
                    if r.return_value != want {
                        bad.push((*probe, swaps.load(Relaxed), r.return_value));
                    }
                    n += 1;
                    probed.store(n, Relaxed);
                }
            }
            (bad, n)
        });
        // Let the prober get going, then swap for its whole run.
        let t0 = Instant::now();
        while probed.load(Relaxed) < 100 {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the prober does not run"
            );
            std::thread::yield_now();
        }
        let mut busy = 0;
        let mut version = first.version;
        for i in 1..=SWAPS {
            let before = probed.load(Relaxed);
            let r = maps.apply(&c[i % 3]).expect("apply");
            assert!(r.changed);
            assert_eq!(r.version, version + 1);
            version = r.version;
            swaps.store(i, Relaxed);
            if probed.load(Relaxed) > before {
                busy += 1;
            }
        }
        // A few more probes after the last switch.
        let end = probed.load(Relaxed) + 100;
        while probed.load(Relaxed) < end {
            std::thread::yield_now();
        }
        stop.store(true, Relaxed);
        let (bad, total) = prober.join().expect("prober");
        (bad, total, busy)
    });
    let stats = maps.stats().expect("stats");
    eprintln!(
        "{total} probes over {SWAPS} switches ({busy_intervals} switches with probes running), \
         {} decided by the flow table, {} flow re-checks",
        stats.flow_hits, stats.flow_rechecks
    );
    assert!(
        bad.is_empty(),
        "{} wrong verdicts, first ones: {:?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
    assert!(total >= 4000, "only {total} probes");
    assert!(
        total - stats.flow_hits >= 4000,
        "too few probes judged by the policy"
    );
    assert!(
        busy_intervals >= SWAPS / 2,
        "probes ran during only {busy_intervals} of {SWAPS} switches"
    );
}

// ---------------------------------------------------------------------------
// Failed and repeated updates.
// ---------------------------------------------------------------------------

/// Runs probe `port` (fresh source port) on both programs.
fn verdicts(h: &Harness, port: u16, sport: &mut u16) -> Vec<u32> {
    let mut out = Vec::new();
    for fam in FAMS {
        for dir in [IN, EG] {
            *sport += 1;
            let f = Probe::tcp(fam, port).packet(*sport).build();
            out.push(h.run(dir, &f.bytes).expect("test_run"));
        }
    }
    out
}

/// Only p3 and the gateway (few trie entries), p3 -> gateway tcp `ports`.
fn small(ports: (u16, u16)) -> Policy {
    NET.policy(
        3..=3,
        vec![accept(sel_peer(3), sel_gw(), PROTO_TCP, &[ports]).named("small")],
    )
}

/// Which map an update overflows, and how many entries of it a compiled
/// policy needs: single addresses go to the hosts hash, prefixes to the
/// trie.
#[derive(Clone, Copy, Debug)]
enum Overflow {
    Policy,
    Hosts,
    Trie,
}

impl Overflow {
    fn name(self) -> &'static str {
        match self {
            Overflow::Policy => names::POLICY,
            Overflow::Hosts => names::HOSTS,
            Overflow::Trie => names::IPCACHE,
        }
    }
    fn needs(self, c: &Compiled) -> usize {
        match self {
            Overflow::Policy => c.policy.len(),
            Overflow::Hosts => c.ipcache.iter().filter(|(_, bits, _)| *bits == 128).count(),
            Overflow::Trie => c.ipcache.iter().filter(|(_, bits, _)| *bits < 128).count(),
        }
    }
    fn capacities(self, n: u32) -> Capacities {
        let mut caps = Capacities::default();
        match self {
            Overflow::Policy => caps.policy = n,
            Overflow::Hosts => caps.hosts = n,
            Overflow::Trie => caps.ipcache = n,
        }
        caps
    }
    /// A policy (allowing p4 -> gateway udp 2004) too big for the map.
    fn big(self) -> Policy {
        let mut p = policy_a();
        if let Overflow::Trie = self {
            for i in 0..20u8 {
                let net = format!("10.2.{i}.0/24");
                p.rules
                    .push(accept(sel(&[&net]), sel_gw(), PROTO_UDP, &[(53, 53)]).named("cidr"));
            }
        }
        p
    }
}

/// An update too big for a map fails, naming the map and what is left of
/// it beside the running policy, before touching anything: the running
/// policy keeps deciding, same slot, same version; the next update that
/// fits applies.
#[test]
fn failed_apply_keeps_the_previous_policy() {
    for (overflow, cap) in [
        (Overflow::Policy, 8),
        (Overflow::Hosts, 16),
        (Overflow::Trie, 8),
    ] {
        let dp = Dataplane::load(&LoadOptions {
            l2_hdr_len: 14,
            capacities: overflow.capacities(cap),
            ..Default::default()
        })
        .expect("load");
        let mut h = Harness { dp };
        let mut sport = 2000;
        let small_22 = small((22, 22));
        let first = h.apply(&small_22).expect("the small policy fits");
        let active = h.dp.maps.active_slot().expect("active slot");
        assert_eq!(active.1.version, first.version);
        assert_eq!(verdicts(&h, ALLOWED, &mut sport), [PASS; 4]);
        assert_eq!(verdicts(&h, DENIED, &mut sport), [DROP; 4]);

        let big = overflow.big();
        let needed = overflow.needs(&compiled(&big));
        let left = cap as usize - overflow.needs(&compiled(&small_22));
        assert!(needed > left, "{overflow:?}: the premise");
        let err = h.apply(&big).expect_err("the big policy does not fit");
        match err.downcast_ref::<DataplaneError>() {
            Some(DataplaneError::Full {
                name,
                needed: n,
                capacity,
            }) => {
                assert_eq!(*name, overflow.name());
                assert_eq!((*n, *capacity as usize), (needed, left), "{err}");
            }
            other => panic!("{overflow:?}: want DataplaneError::Full, got {other:?} ({err})"),
        }
        assert!(
            err.to_string().contains(overflow.name()),
            "the message names the map: {err}"
        );

        assert_eq!(
            h.dp.maps.active_slot().expect("active slot"),
            active,
            "slot and version unchanged"
        );
        assert_eq!(verdicts(&h, ALLOWED, &mut sport), [PASS; 4]);
        assert_eq!(verdicts(&h, DENIED, &mut sport), [DROP; 4]);
        // What only the big policy allows is still denied.
        let (p4, gw) = (NET.peer_addr(Fam::V4, 4), NET.gw_addr(Fam::V4));
        let p4 = Packet::udp(p4, gw, 5000, 2004).build();
        assert_eq!(h.run(IN, &p4.bytes).unwrap(), DROP);

        // The data plane is not wedged: the next update that fits applies.
        let next = h.apply(&small((5, 6))).expect("a fitting policy applies");
        assert!(next.changed);
        assert_eq!(next.version, first.version + 1);
        assert_eq!(verdicts(&h, ALLOWED, &mut sport), [DROP; 4]);
        assert_eq!(verdicts(&h, 5, &mut sport), [PASS; 4]);
        // And back, over the slot the first policy left.
        let back = h.apply(&small_22).expect("apply again");
        assert_eq!(back.version, first.version + 2);
        assert_eq!(verdicts(&h, ALLOWED, &mut sport), [PASS; 4]);
    }
}

/// Applying the policy that is already running reports no change, writes
/// nothing and keeps slot and version; a different policy (even one that
/// only flips interface audit mode) is a change.
#[test]
fn reapplying_the_running_policy_is_a_no_op() {
    let mut h = Harness::new().expect("load the programs (are you root?)");
    let mut sport = 3000;
    let a = policy_a();
    let first = h.apply(&a).expect("apply");
    assert!(first.changed);
    let active = h.dp.maps.active_slot().unwrap();
    let no_op = |r: &ApplyReport| ApplyReport {
        version: r.version,
        slot: r.slot,
        changed: false,
        ipcache_writes: 0,
        policy_writes: 0,
        port_class_writes: 0,
    };
    for _ in 0..3 {
        let again = h.apply(&a).expect("apply again");
        assert_eq!(again, no_op(&first));
        assert_eq!(h.dp.maps.active_slot().unwrap(), active);
        assert_eq!(verdicts(&h, ALLOWED, &mut sport), [PASS; 4]);
    }

    let b = h.apply(&policy_b()).expect("apply B");
    assert!(
        b.changed && b.version == first.version + 1 && b.slot != first.slot,
        "{b:?}"
    );
    assert_eq!(h.apply(&policy_b()).unwrap(), no_op(&b));
    assert_eq!(h.dp.maps.active_slot().unwrap().1.version, b.version);

    let audit_b = Policy {
        audit: true,
        ..policy_b()
    };
    let r = h.apply(&audit_b).expect("apply B in audit mode");
    assert!(r.changed && r.version == b.version + 1, "{r:?}");
    assert_eq!(h.apply(&audit_b).unwrap(), no_op(&r));
    // Audit mode for the interface: the denied probe passes now.
    assert_eq!(verdicts(&h, DENIED, &mut sport), [PASS; 4]);

    let back = h.apply(&a).expect("apply A again");
    assert!(back.changed && back.version == r.version + 1, "{back:?}");
    assert_eq!(h.apply(&a).unwrap(), no_op(&back));
    assert_eq!(verdicts(&h, DENIED, &mut sport), [DROP; 4]);
}
