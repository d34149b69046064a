//! Self-checks of the test-packet builder: its expected results are compared
//! with etherparse (well-formed packets), a hand-written table (edge cases)
//! and an independent byte-level reference parser (random frames).

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use rand::{rngs::StdRng, SeedableRng};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use wgbpf_bpf_tests::packets::{random_frame, Expected, Frame, Packet, Parsed, Pools};
use wgbpf_bpf_tests::reference_parse::{empty, reference};

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

fn v6(last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, last))
}

// ---------------------------------------------------------------------------
// etherparse cross-check of well-formed packets.
// ---------------------------------------------------------------------------

/// What etherparse sees, in the same shape as `Parsed`.
fn etherparse_view(frame: &[u8]) -> Parsed {
    let sp = SlicedPacket::from_ethernet(frame).expect("etherparse rejects the frame");
    let (src, dst, proto, fragment, len) = match sp.net.expect("no IP layer") {
        NetSlice::Ipv4(s) => {
            let h = s.header();
            let len = usize::from(h.total_len());
            let (s_, d_) = (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
            );
            (
                s_,
                d_,
                s.payload_ip_number().0,
                s.is_payload_fragmented(),
                len,
            )
        }
        NetSlice::Ipv6(s) => {
            let h = s.header();
            let len = 40 + usize::from(h.payload_length());
            let (s_, d_) = (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
            );
            (
                s_,
                d_,
                s.payload().ip_number.0,
                s.is_payload_fragmented(),
                len,
            )
        }
        NetSlice::Arp(_) => panic!("arp"),
    };
    let mut p = empty(src, dst, proto, len);
    p.fragment = fragment;
    match sp.transport {
        Some(TransportSlice::Tcp(t)) => {
            (p.sport, p.dport) = (t.source_port(), t.destination_port())
        }
        Some(TransportSlice::Udp(u)) => {
            (p.sport, p.dport) = (u.source_port(), u.destination_port())
        }
        // etherparse reads ICMP by protocol number; the data plane only in
        // its own family (the other combinations are not ICMP).
        Some(TransportSlice::Icmpv4(i)) if src.is_ipv4() => {
            p.icmp_type = i.type_u8();
            p.icmp_id = u16::from_be_bytes([i.bytes5to8()[0], i.bytes5to8()[1]]);
        }
        Some(TransportSlice::Icmpv6(i)) if src.is_ipv6() => {
            p.icmp_type = i.type_u8();
            p.icmp_id = u16::from_be_bytes([i.bytes5to8()[0], i.bytes5to8()[1]]);
        }
        _ => {} // none, or a protocol the data plane does not parse (IGMP)
    }
    p
}

/// What etherparse reads of a fragment: no L4 header (not even a first
/// fragment's), no identification.
fn etherparse_shape(p: &Parsed) -> Parsed {
    let mut p = p.clone();
    if p.frag.take().is_some() {
        p.fragment = true;
        (p.sport, p.dport, p.icmp_type, p.icmp_id) = (0, 0, 0, 0);
    }
    p
}

fn well_formed() -> Vec<Packet> {
    let mut out = Vec::new();
    for (s, d) in [(v4(1), v4(2)), (v6(1), v6(2))] {
        out.push(Packet::tcp(s, d, 40000, 443));
        out.push(Packet::tcp(s, d, 0, 65535).with_payload(100));
        out.push(Packet::udp(s, d, 51820, 53).with_payload(7));
        out.push(Packet::icmp_echo_request(s, d, 0xbeef));
        out.push(Packet::icmp_echo_reply(s, d, 7).with_payload(56));
        out.push(Packet::icmp(s, d, 3, 1, 0x0102_0304));
        out.push(Packet::raw_proto(s, d, 47));
        out.push(Packet::raw_proto(s, d, 50).with_padding(20));
        out.push(Packet::udp(s, d, 1, 2).with_padding(1));
        out.push(Packet::tcp(s, d, 5, 6).as_fragment(true));
        out.push(Packet::udp(s, d, 5, 6).as_fragment(false).with_payload(30));
    }
    let (s, d) = (v4(3), v4(4));
    out.push(Packet::tcp(s, d, 1, 2).with_ipv4_options(40));
    out.push(
        Packet::udp(s, d, 1, 2)
            .with_ipv4_options(4)
            .with_padding(10),
    );
    out.push(Packet::tcp(s, d, 1, 2).with_ipv4_frag_field(0x4000));
    let (s, d) = (v6(3), v6(4));
    out.push(Packet::tcp(s, d, 1, 2).with_ipv6_ext_headers(&[0, 43, 60, 51]));
    out.push(Packet::udp(s, d, 1, 2).with_ipv6_ext_headers(&[0, 60, 60, 43, 51]));
    out.push(Packet::icmp_echo_request(s, d, 9).with_ipv6_ext_headers(&[60]));
    out.push(
        Packet::tcp(s, d, 1, 2)
            .with_ipv6_ext_headers(&[0, 60])
            .as_fragment(false),
    );
    out.push(
        Packet::tcp(s, d, 1, 2)
            .with_ipv6_ext_headers(&[43])
            .as_fragment(true),
    );
    out
}

#[test]
fn well_formed_packets_match_etherparse() {
    for p in well_formed() {
        let f = p.build();
        let Expected::Packet(exp) = &f.expected else {
            panic!("{}: expected a parsed packet, got Malformed", f.label);
        };
        assert_eq!(
            etherparse_view(&f.bytes),
            etherparse_shape(exp),
            "{}",
            f.label
        );
        assert_eq!(reference(&f.bytes), f.expected, "{}", f.label);
    }
}

// ---------------------------------------------------------------------------
// Hand-written edge cases.
// ---------------------------------------------------------------------------

fn parsed(f: &Frame) -> &Parsed {
    match &f.expected {
        Expected::Packet(p) => p,
        Expected::Malformed => panic!("{}: unexpectedly Malformed", f.label),
    }
}

fn check(f: &Frame, malformed: bool) {
    assert_eq!(
        f.expected == Expected::Malformed,
        malformed,
        "{}: {:?}",
        f.label,
        f.expected
    );
    assert_eq!(reference(&f.bytes), f.expected, "{}", f.label);
}

#[test]
fn edge_case_table() {
    let (a, b) = (v4(1), v4(2));
    let (x, y) = (v6(1), v6(2));
    let m = |p: Packet| check(&p.build(), true);
    let ok = |p: Packet| {
        let f = p.build();
        check(&f, false);
        f
    };
    // Truncations of a 40-byte v4 TCP packet (self-consistent lengths).
    m(Packet::tcp(a, b, 1, 2).truncated_to(39));
    m(Packet::tcp(a, b, 1, 2).truncated_to(19));
    m(Packet::tcp(a, b, 1, 2).truncated_to(0));
    m(Packet::tcp(a, b, 1, 2).cut_to(39));
    assert_eq!(
        parsed(&ok(Packet::tcp(a, b, 1, 2).truncated_to(40))).sport,
        1
    );
    // v4 header fields.
    m(Packet::tcp(a, b, 1, 2).with_ihl(4));
    m(Packet::tcp(a, b, 1, 2).with_ihl(0));
    m(Packet::tcp(a, b, 1, 2).with_len_field(19));
    m(Packet::tcp(a, b, 1, 2).with_len_field(41));
    assert_eq!(
        parsed(&ok(Packet::tcp(a, b, 1, 2)
            .with_len_field(41)
            .with_padding(1)))
        .len,
        41
    );
    m(Packet::tcp(a, b, 1, 2).with_len_field(39).with_padding(5));
    m(Packet::tcp(a, b, 1, 2).with_version(5));
    m(Packet::tcp(x, y, 1, 2).with_version(0));
    m(Packet::udp(a, b, 1, 2)
        .with_ipv4_options(8)
        .truncated_to(35));
    assert_eq!(
        parsed(&ok(Packet::udp(a, b, 1, 2).with_ipv4_options(8))).len,
        36
    );
    m(Packet::raw_l4(a, b, 17, vec![0; 7]));
    m(Packet::raw_l4(a, b, 132, vec![0; 11]));
    m(Packet::raw_l4(a, b, 1, vec![8, 0, 0, 0, 0, 1, 0]));
    ok(Packet::raw_l4(a, b, 47, vec![]));
    // Later fragments: no L4 parsing, even when the L4 header is missing.
    let later = ok(Packet::tcp(a, b, 1, 2).as_fragment(false));
    assert!(parsed(&later).fragment && parsed(&later).sport == 0);
    let later6 = ok(Packet::raw_l4(x, y, 6, vec![]).as_fragment(false));
    assert_eq!((parsed(&later6).proto, parsed(&later6).sport), (6, 0));
    let later_at = |f: &Frame| parsed(f).frag.map(|f| (f.first, f.len, f.id));
    assert_eq!(later_at(&later), Some((false, 1480, 0x1234)));
    assert_eq!(later_at(&later6), Some((false, 1480, 0x0bad_f00d)));
    // ... unless they start inside the smallest TCP or SCTP header
    // (RFC 1858): a UDP one may start at 8 bytes.
    m(Packet::tcp(a, b, 1, 2).as_fragment_at(2, false));
    m(Packet::tcp(x, y, 1, 2).as_fragment_at(1, true));
    m(Packet::sctp(a, b, 1, 2).as_fragment_at(1, false));
    ok(Packet::tcp(a, b, 1, 2).as_fragment_at(3, false));
    ok(Packet::udp(x, y, 1, 2).as_fragment_at(1, false));
    // First fragments are parsed as whole packets, short L4 headers
    // (a tiny first fragment) included.
    let first6 = ok(Packet::udp(x, y, 1, 2)
        .with_ipv6_ext_headers(&[0])
        .as_fragment(true)
        .with_frag_id(77));
    assert_eq!(
        (
            parsed(&first6).proto,
            parsed(&first6).fragment,
            parsed(&first6).dport,
            later_at(&first6)
        ),
        (17, false, 2, Some((true, 8, 77)))
    );
    let first4 = ok(Packet::tcp(a, b, 1, 2).with_payload(100).as_fragment(true));
    assert_eq!(
        (parsed(&first4).dport, later_at(&first4)),
        (2, Some((true, 120, 0x1234)))
    );
    m(Packet::raw_l4(a, b, 6, vec![0, 1, 0, 2, 0, 0, 0, 0]).as_fragment(true));
    m(Packet::raw_l4(x, y, 17, vec![0, 1, 0, 2]).as_fragment(true));
    // An IPv6 first fragment with headers after its fragment header is
    // malformed; an atomic fragment (offset 0, M clear) is a whole packet.
    m(Packet::udp(x, y, 1, 2)
        .as_fragment(true)
        .with_ipv6_ext_headers(&[60]));
    let atomic = ok(Packet::udp(x, y, 1, 2).as_fragment_at(0, false));
    assert_eq!((parsed(&atomic).dport, parsed(&atomic).frag), (2, None));
    assert!(!parsed(&ok(Packet::tcp(a, b, 1, 2).with_ipv4_frag_field(0x4000))).fragment);
    // IPv6 payload length and extension chains.
    m(Packet::tcp(x, y, 1, 2).with_len_field(0));
    m(Packet::tcp(x, y, 1, 2).truncated_to(40));
    m(Packet::tcp(x, y, 1, 2).truncated_to(59));
    m(Packet::tcp(x, y, 1, 2).with_ipv6_ext_headers(&[0, 60, 60, 60, 43, 51]));
    let five = ok(Packet::tcp(x, y, 1, 2).with_ipv6_ext_headers(&[0, 60, 60, 43, 51]));
    assert_eq!((parsed(&five).proto, parsed(&five).dport), (6, 2));
    // Six headers whose sixth is a later fragment stop in time.
    let six = Packet::tcp(x, y, 1, 2).with_ipv6_ext_headers(&[0, 60, 60, 43, 51]);
    assert!(parsed(&ok(six.as_fragment(false))).fragment);
    m(Packet::tcp(x, y, 1, 2)
        .with_ipv6_ext_headers(&[0, 60])
        .truncated_to(55));
    // Chain ends exactly at the end of the packet: proto 6 but no room for TCP.
    m(Packet::tcp(x, y, 1, 2)
        .with_ipv6_ext_headers(&[0])
        .truncated_to(48));
    ok(Packet::raw_proto(x, y, 59).with_ipv6_ext_headers(&[60]));
    // ICMP (1) in IPv6 is not ICMP: no type, no identifier, no minimum.
    let cross = ok(Packet::raw_l4(x, y, 1, vec![8, 0, 0, 0, 0x12, 0x34, 0, 1]));
    assert_eq!((parsed(&cross).icmp_type, parsed(&cross).icmp_id), (0, 0));
    ok(Packet::raw_l4(x, y, 1, vec![8, 0]));
    // Padding after a fixed-up truncation never fills the chain's holes.
    m(Packet::tcp(x, y, 1, 2)
        .with_ipv6_ext_headers(&[60])
        .truncated_to(50)
        .with_padding(30));
}

#[test]
#[should_panic(expected = "refill")]
fn unmodelled_combination_panics() {
    let _ = Packet::tcp(v4(1), v4(2), 1, 2)
        .truncated_to(10)
        .with_padding(30)
        .build();
}

#[test]
#[should_panic(expected = "refill")]
fn padding_posing_as_ipv4_header_panics() {
    let _ = Packet::udp(v6(1), v6(2), 1, 2)
        .truncated_to(0)
        .with_padding(20)
        .build();
}

// ---------------------------------------------------------------------------
// Random frames.
// ---------------------------------------------------------------------------

fn pools() -> Pools {
    Pools {
        v4: (1..=8).map(|i| Ipv4Addr::new(192, 168, 1, i)).collect(),
        v6: (1..=8)
            .map(|i| Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i))
            .collect(),
        ports: vec![22, 53, 80, 443, 51820],
    }
}

fn category(f: &Frame) -> Vec<String> {
    let Expected::Packet(p) = &f.expected else {
        return vec!["malformed".into()];
    };
    let fam = if p.src.is_ipv4() { "v4" } else { "v6" };
    let mut c = vec![
        fam.to_string(),
        format!("proto{}", p.proto),
        format!("{fam}-proto{}", p.proto),
    ];
    if p.fragment {
        c.push(format!("{fam}-fragment"));
    }
    if f.bytes.len() > 14 + p.len as usize {
        c.push("padded".into());
    }
    c
}

#[test]
fn random_frames_are_consistent_and_mixed() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let pools = pools();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut etherparse_checked = 0;
    for _ in 0..20_000 {
        let f = random_frame(&mut rng, &pools);
        assert!(f.bytes.len() >= 14, "{}", f.label);
        assert_eq!(
            reference(&f.bytes),
            f.expected,
            "{}: {:02x?}",
            f.label,
            f.bytes
        );
        etherparse_checked += cross_check_if_clean(&f);
        for c in category(&f) {
            *counts.entry(c).or_default() += 1;
        }
    }
    let need = [
        "malformed",
        "v4",
        "v6",
        "v4-fragment",
        "v6-fragment",
        "proto6",
        "proto17",
        "proto132",
        "v4-proto1",
        "v6-proto58",
        "v4-proto0",
        "v6-proto59",
        "proto47",
        "proto50",
        "padded",
    ];
    for k in need {
        assert!(
            counts.get(k).copied().unwrap_or(0) >= 50,
            "too few {k}: {counts:?}"
        );
    }
    let bad = counts["malformed"];
    assert!((1_500..8_000).contains(&bad), "malformed share off: {bad}");
    assert!(
        etherparse_checked > 10_000,
        "etherparse checked only {etherparse_checked}"
    );
}

/// Compares with etherparse when both consider the frame fine; returns 1 if
/// compared. Skips shapes etherparse reads differently by design: v6 L4
/// numbers it treats as extension headers, non-leading hop-by-hop, lengths
/// shorter than the headers it insists on, v6 atomic fragments, SCTP ports.
fn cross_check_if_clean(f: &Frame) -> usize {
    let Expected::Packet(exp) = &f.expected else {
        return 0;
    };
    if SlicedPacket::from_ethernet(&f.bytes).is_err() {
        return 0;
    }
    let got = etherparse_view(&f.bytes);
    let mut exp = etherparse_shape(exp);
    if exp.proto == 132 {
        (exp.sport, exp.dport) = (0, 0); // etherparse does not decode SCTP
    }
    // An atomic v6 fragment header (offset 0, M=0) is no fragmentation to
    // either, but etherparse reads no L4 header after it.
    if got.fragment != exp.fragment {
        return 0;
    }
    assert_eq!(got, exp, "{}: {:02x?}", f.label, f.bytes);
    1
}
