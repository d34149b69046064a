//! The XDP guard in the kernel (BPF_PROG_TEST_RUN) on crafted frames: every
//! verdict and the counter it moves, and a randomized comparison with the
//! reference model (bpf-tests/src/xdp/model.rs). Needs root.

use std::net::IpAddr;

use ipnet::IpNet;
use rand::{rngs::StdRng, Rng, SeedableRng};
use wgbpf::dataplane::xdp_guard::GuardConfig;
use wgbpf_bpf_tests::xdp::{
    message, v4, v6, Frag, GuardHarness, Model, UdpFrame, PORT, XDP_DROP, XDP_PASS,
};
use wgbpf_common::xdp::xdp_stat::*;

const SIZES: [(u8, usize); 3] = [(1, 148), (2, 92), (3, 64)];

fn cfg() -> GuardConfig {
    GuardConfig::for_port(PORT)
}

fn harness() -> GuardHarness {
    GuardHarness::new(&cfg()).expect("load the guard (root?)")
}

fn srcs() -> [IpAddr; 2] {
    [v4(10), v6(10)]
}

/// Asserts verdict and counter for one frame, and that the model agrees.
#[track_caller]
fn expect(h: &GuardHarness, f: &UdpFrame, verdict: u32, stat: Option<u32>, what: &str) {
    let bytes = f.bytes();
    let got = h.judge(&bytes).expect("test run");
    assert_eq!(got, (verdict, stat), "{what}: kernel; frame {f:?}");
    let mut model = Model::new(cfg_of(h), 1);
    assert_eq!(model.judge(&bytes), (verdict, stat), "{what}: model");
}

/// The harness's configuration as the model needs it (rate limit off for
/// one-shot comparisons: the kernel's buckets are not the model's).
fn cfg_of(_h: &GuardHarness) -> GuardConfig {
    let mut c = cfg();
    c.handshake_rate = 0;
    c
}

#[test]
fn each_message_type_at_below_and_above_its_size() {
    let h = harness();
    for src in srcs() {
        // A fresh source per initiation size check keeps the buckets out of it.
        for (kind, size) in SIZES {
            let pass = [PASS_INITIATION, PASS_RESPONSE, PASS_COOKIE][kind as usize - 1];
            expect(
                &h,
                &UdpFrame::wg(src, kind, size),
                XDP_PASS,
                Some(pass),
                "exact",
            );
            for len in [4, size - 16, size - 1, size + 1, size + 16, 1400] {
                let f = UdpFrame::wg(src, kind, len);
                expect(
                    &h,
                    &f,
                    XDP_DROP,
                    Some(DROP_BAD_SIZE),
                    &format!("t{kind} len {len}"),
                );
            }
        }
        for len in [4, 16, 31] {
            let f = UdpFrame::wg(src, 4, len);
            expect(
                &h,
                &f,
                XDP_DROP,
                Some(DROP_BAD_SIZE),
                &format!("data len {len}"),
            );
        }
        // Data: any length from a keepalive up, multiple of 16 or not (a
        // full-size packet at MTU 1420 or 1280 is not padded to 16).
        // Every length up to a full 1500-byte underlay packet.
        let full = 1500 - 28 - if src.is_ipv4() { 0 } else { 20 };
        for len in 32..=full {
            let f = UdpFrame::wg(src, 4, len);
            expect(
                &h,
                &f,
                XDP_PASS,
                Some(PASS_DATA),
                &format!("data len {len}"),
            );
        }
        for len in [0, 1, 2, 3] {
            let f = UdpFrame::new(src, PORT, vec![4; len]);
            expect(
                &h,
                &f,
                XDP_DROP,
                Some(DROP_BAD_SIZE),
                &format!("payload {len}"),
            );
        }
    }
}

#[test]
fn wrong_types_and_nonzero_reserved_bytes_are_dropped() {
    let h = harness();
    for src in srcs() {
        for kind in [0u8, 5, 6, 0x11, 0x80, 0xff] {
            for len in [32, 64, 92, 148] {
                let f = UdpFrame::wg(src, kind, len);
                expect(
                    &h,
                    &f,
                    XDP_DROP,
                    Some(DROP_BAD_TYPE),
                    &format!("type {kind}"),
                );
            }
        }
        for (kind, size) in SIZES.into_iter().chain([(4, 32), (4, 200)]) {
            for at in 1..4 {
                let mut m = message(kind, size);
                m[at] = 0x40;
                let f = UdpFrame::new(src, PORT, m);
                expect(
                    &h,
                    &f,
                    XDP_DROP,
                    Some(DROP_RESERVED),
                    &format!("t{kind} r{at}"),
                );
            }
        }
        // Type is checked before size, reserved before size.
        let mut m = message(1, 149);
        m[2] = 1;
        expect(
            &h,
            &UdpFrame::new(src, PORT, m),
            XDP_DROP,
            Some(DROP_RESERVED),
            "order",
        );
    }
}

#[test]
fn ipv4_options_ipv6_extension_headers_and_vlans_are_looked_through() {
    let h = harness();
    for opts in (4..=40).step_by(4) {
        let f = UdpFrame::wg(v4(1), 2, 92).with(|f| f.v4_options = opts);
        expect(
            &h,
            &f,
            XDP_PASS,
            Some(PASS_RESPONSE),
            &format!("opts {opts}"),
        );
        let f = UdpFrame::wg(v4(1), 2, 91).with(|f| f.v4_options = opts);
        expect(
            &h,
            &f,
            XDP_DROP,
            Some(DROP_BAD_SIZE),
            &format!("opts {opts}"),
        );
    }
    for chain in [vec![0], vec![60], vec![0, 43, 60], vec![60; 6]] {
        let f = UdpFrame::wg(v6(1), 3, 64).with(|f| f.v6_ext = chain.clone());
        expect(
            &h,
            &f,
            XDP_PASS,
            Some(PASS_COOKIE),
            &format!("ext {chain:?}"),
        );
        let f = UdpFrame::wg(v6(1), 7, 64).with(|f| f.v6_ext = chain.clone());
        expect(
            &h,
            &f,
            XDP_DROP,
            Some(DROP_BAD_TYPE),
            &format!("ext {chain:?}"),
        );
    }
    // Beyond six extension headers (more than RFC 8200 lets a packet
    // carry) the port cannot be seen: an initiation hidden there must not
    // slip past its bucket, so such packets are dropped whatever their port.
    for (kind, len, port) in [(1, 148, PORT), (7, 64, PORT), (4, 64, 53)] {
        let f = UdpFrame::new(v6(1), port, message(kind, len)).with(|f| f.v6_ext = vec![60; 7]);
        expect(
            &h,
            &f,
            XDP_DROP,
            Some(DROP_EXT_HEADERS),
            "seven extension headers",
        );
    }
    for src in srcs() {
        for tags in [vec![0x8100], vec![0x88a8, 0x8100], vec![0x8100, 0x8100]] {
            let f = UdpFrame::wg(src, 4, 64).with(|f| f.vlans = tags.clone());
            expect(
                &h,
                &f,
                XDP_PASS,
                Some(PASS_DATA),
                &format!("vlan {tags:x?}"),
            );
            let f = UdpFrame::wg(src, 9, 64).with(|f| f.vlans = tags.clone());
            expect(
                &h,
                &f,
                XDP_DROP,
                Some(DROP_BAD_TYPE),
                &format!("vlan {tags:x?}"),
            );
        }
        // A third tag is not looked through.
        let f = UdpFrame::wg(src, 9, 64).with(|f| f.vlans = vec![0x88a8, 0x8100, 0x8100]);
        expect(&h, &f, XDP_PASS, None, "three tags");
    }
}

#[test]
fn inconsistent_lengths_and_truncated_frames() {
    let h = harness();
    for src in srcs() {
        let base = UdpFrame::wg(src, 4, 64);
        let full = base.bytes().len();
        // The IP length claims more than the frame holds.
        let f = base.clone().with(|f| f.ip_len_delta = 1);
        expect(&h, &f, XDP_DROP, Some(DROP_MALFORMED), "ip len + 1");
        let f = base.clone().with(|f| f.cut = Some(full - 1));
        expect(
            &h,
            &f,
            XDP_DROP,
            Some(DROP_MALFORMED),
            "frame cut in payload",
        );
        // UDP length beyond the IP packet, or below its own header.
        let f = base.clone().with(|f| f.udp_len = Some(8 + 65));
        expect(&h, &f, XDP_DROP, Some(DROP_MALFORMED), "udp len > ip");
        for l in [0, 7] {
            let f = base.clone().with(|f| f.udp_len = Some(l));
            expect(
                &h,
                &f,
                XDP_DROP,
                Some(DROP_MALFORMED),
                &format!("udp len {l}"),
            );
        }
        // The IP packet too short for its UDP header.
        let f = base.clone().with(|f| f.ip_len_delta = -70);
        expect(
            &h,
            &f,
            XDP_DROP,
            Some(DROP_MALFORMED),
            "ip shorter than udp",
        );
        // A shorter UDP length than the IP payload: the datagram is what
        // UDP says (the kernel trims the rest), so a 32-byte message with
        // 32 bytes of trailing garbage is a keepalive.
        let f = base.clone().with(|f| f.udp_len = Some(8 + 32));
        expect(&h, &f, XDP_PASS, Some(PASS_DATA), "udp trims ip");
        let f = base.clone().with(|f| f.udp_len = Some(8 + 31));
        expect(&h, &f, XDP_DROP, Some(DROP_BAD_SIZE), "udp trims below 32");
        // Ethernet padding after the IP packet is not part of it.
        let f = UdpFrame::wg(src, 3, 64).with(|f| f.trailer = 18);
        expect(&h, &f, XDP_PASS, Some(PASS_COOKIE), "trailer");
        // Frames cut inside the headers: no port to see, so they pass.
        let hdr = full - 64 - 8;
        for n in [14, 15, 20, hdr - 1, hdr + 7] {
            let f = base.clone().with(|f| f.cut = Some(n));
            expect(&h, &f, XDP_PASS, None, &format!("cut at {n}"));
        }
        // The UDP header is there but nothing after it.
        let f = base.clone().with(|f| f.cut = Some(hdr + 8));
        expect(&h, &f, XDP_DROP, Some(DROP_MALFORMED), "cut after udp");
    }
    // IPv4 header length below 20, and an IPv6 jumbogram (payload 0).
    let mut bad_ihl = UdpFrame::wg(v4(1), 9, 64).bytes();
    bad_ihl[14] = 0x44;
    assert_eq!(h.judge(&bad_ihl).unwrap(), (XDP_PASS, None), "ihl 16");
    let f = UdpFrame::wg(v6(1), 4, 64).with(|f| f.ip_len_delta = -(64 + 8));
    expect(&h, &f, XDP_DROP, Some(DROP_MALFORMED), "jumbogram");
    // IPv4-mapped IPv6 source.
    let mapped: IpAddr = "::ffff:198.51.100.1".parse().unwrap();
    let f = UdpFrame::wg(mapped, 4, 64).with(|f| f.dst = v6(99));
    expect(&h, &f, XDP_DROP, Some(DROP_MALFORMED), "v4-mapped source");
}

#[test]
fn fragments_first_judged_on_their_header_later_pass() {
    let h = harness();
    for src in srcs() {
        // A first fragment of a 1400-byte data message, 500 bytes of it here.
        let f = UdpFrame::new(src, PORT, message(4, 500)).with(|f| {
            f.frag = Frag::First;
            f.udp_len = Some(8 + 1400);
        });
        expect(&h, &f, XDP_PASS, Some(PASS_DATA), "first fragment");
        let f = UdpFrame::new(src, PORT, message(9, 500)).with(|f| {
            f.frag = Frag::First;
            f.udp_len = Some(8 + 1400);
        });
        expect(
            &h,
            &f,
            XDP_DROP,
            Some(DROP_BAD_TYPE),
            "first fragment, bad type",
        );
        let f = UdpFrame::new(src, PORT, vec![0xff; 300]).with(|f| f.frag = Frag::Later);
        expect(&h, &f, XDP_PASS, None, "later fragment");
        // A first fragment that ends before the message's type and reserved
        // bytes hides them in a later fragment: it is dropped, even when
        // bytes after the IP packet (Ethernet padding) could be read as them.
        for pad in [0, 18] {
            let f = UdpFrame::new(src, PORT, vec![]).with(|f| {
                f.frag = Frag::First;
                f.udp_len = Some(8 + 148);
                f.trailer = pad;
            });
            let mut bytes = f.bytes();
            if pad > 0 {
                let n = bytes.len();
                bytes[n - pad..n - pad + 4].copy_from_slice(&[4, 0, 0, 0]);
            }
            let got = h.judge(&bytes).unwrap();
            assert_eq!(got, (XDP_DROP, Some(DROP_MALFORMED)), "{src} pad {pad}");
            assert_eq!(Model::new(cfg(), 1).judge(&bytes), got, "model, pad {pad}");
        }
    }
}

#[test]
fn traffic_not_to_the_port_passes_untouched() {
    let h = harness();
    for src in srcs() {
        for port in [PORT - 1, PORT + 1, 53, 443, 0] {
            for payload in [message(9, 3), message(1, 148), vec![0xff; 1000], vec![]] {
                let f = UdpFrame::new(src, port, payload);
                expect(&h, &f, XDP_PASS, None, &format!("port {port}"));
            }
        }
        // From the port, not to it.
        let f = UdpFrame::new(src, 9999, vec![0xff; 5]).with(|f| f.sport = PORT);
        expect(&h, &f, XDP_PASS, None, "source port");
        // TCP, and other protocols, to the port number.
        for proto in [6, 132, 47] {
            let f = UdpFrame::new(src, PORT, vec![0xff; 40]).with(|f| f.proto = proto);
            expect(&h, &f, XDP_PASS, None, &format!("proto {proto}"));
        }
        // Malformed, but to another port.
        let f = UdpFrame::new(src, 53, vec![1; 40]).with(|f| f.ip_len_delta = 100);
        expect(&h, &f, XDP_PASS, None, "malformed elsewhere");
        // Not IP at all (ARP), and an unknown EtherType.
        for et in [0x0806, 0x88b5] {
            let f = UdpFrame::wg(src, 9, 64).with(|f| f.ethertype = Some(et));
            expect(&h, &f, XDP_PASS, None, &format!("ethertype {et:#x}"));
        }
    }
    assert_eq!(
        h.stats().unwrap().passed() + h.stats().unwrap().dropped(),
        0
    );
}

#[test]
fn several_ports_and_reconfiguration() {
    let mut h = harness();
    let mut c = cfg();
    c.ports = vec![PORT, 51900];
    h.configure(&c).unwrap();
    for port in [PORT, 51900] {
        let f = UdpFrame::new(v4(1), port, message(9, 32));
        assert_eq!(
            h.judge(&f.bytes()).unwrap(),
            (XDP_DROP, Some(DROP_BAD_TYPE))
        );
    }
    c.ports = vec![51900];
    h.configure(&c).unwrap();
    let f = UdpFrame::new(v4(1), PORT, message(9, 32));
    assert_eq!(h.judge(&f.bytes()).unwrap(), (XDP_PASS, None));
}

#[test]
fn allowlist_drops_sources_outside_it_when_enabled() {
    let mut h = harness();
    let mut c = cfg();
    c.allowlist = Some(vec![
        "198.51.100.0/28".parse().unwrap(),
        "2001:db8::/126".parse().unwrap(),
    ]);
    h.configure(&c).unwrap();
    let cases: [(IpAddr, bool); 6] = [
        (v4(1), true),
        (v4(15), true),
        (v4(16), false),
        (v6(3), true),
        (v6(4), false),
        ("10.0.0.1".parse().unwrap(), false),
    ];
    for (src, allowed) in cases {
        let good = UdpFrame::wg(src, 4, 48);
        let want = if allowed {
            (XDP_PASS, Some(PASS_DATA))
        } else {
            (XDP_DROP, Some(DROP_NOT_ALLOWED))
        };
        assert_eq!(h.judge(&good.bytes()).unwrap(), want, "{src}");
        // Outside the list, even garbage counts as not allowed; inside, as
        // garbage. Other ports are not the allowlist's business.
        let bad = UdpFrame::wg(src, 9, 48);
        let want = if allowed {
            DROP_BAD_TYPE
        } else {
            DROP_NOT_ALLOWED
        };
        assert_eq!(
            h.judge(&bad.bytes()).unwrap(),
            (XDP_DROP, Some(want)),
            "{src}"
        );
        let other = UdpFrame::wg(src, 9, 48).with(|f| f.dport = 53);
        assert_eq!(h.judge(&other.bytes()).unwrap(), (XDP_PASS, None), "{src}");
    }
    // Shrinking the list removes entries; disabling it lets all in again.
    c.allowlist = Some(vec!["198.51.100.15/32".parse().unwrap()]);
    h.configure(&c).unwrap();
    let f = UdpFrame::wg(v4(1), 4, 48);
    assert_eq!(
        h.judge(&f.bytes()).unwrap(),
        (XDP_DROP, Some(DROP_NOT_ALLOWED))
    );
    let f = UdpFrame::wg(v4(15), 4, 48);
    assert_eq!(h.judge(&f.bytes()).unwrap(), (XDP_PASS, Some(PASS_DATA)));
    assert_eq!(h.guard.maps.allow.keys().count(), 1);
    c.allowlist = None;
    h.configure(&c).unwrap();
    let f = UdpFrame::wg(v4(1), 4, 48);
    assert_eq!(h.judge(&f.bytes()).unwrap(), (XDP_PASS, Some(PASS_DATA)));
    // An empty list admits nobody.
    c.allowlist = Some(vec![]);
    h.configure(&c).unwrap();
    assert_eq!(
        h.judge(&f.bytes()).unwrap(),
        (XDP_DROP, Some(DROP_NOT_ALLOWED))
    );
}

/// Counts how many of `n` initiations from `src` pass.
fn initiations_passing(h: &GuardHarness, src: IpAddr, n: u32) -> u32 {
    let frame = UdpFrame::wg(src, 1, 148).bytes();
    (0..n)
        .filter(|_| h.run(&frame).unwrap() == XDP_PASS)
        .count() as u32
}

#[test]
fn handshake_bucket_over_simulated_time() {
    let mut h = harness();
    let mut c = cfg();
    c.handshake_rate = 4;
    c.handshake_burst = 10;
    h.configure(&c).unwrap();
    let s = 1_000_000_000u64;
    let t0 = 1000 * s;
    h.set_clock(t0).unwrap();
    for src in srcs() {
        // A new source: the burst, then nothing while the clock stands.
        assert_eq!(initiations_passing(&h, src, 25), 10, "{src} burst");
        assert_eq!(initiations_passing(&h, src, 5), 0, "{src} frozen clock");
    }
    let before = h.stats().unwrap();
    // Other sources have their own bucket; other messages no bucket at all.
    assert_eq!(initiations_passing(&h, v4(77), 10), 10);
    for kind_len in [(2, 92), (3, 64), (4, 32)] {
        let f = UdpFrame::wg(v4(10), kind_len.0, kind_len.1).bytes();
        for _ in 0..50 {
            assert_eq!(h.run(&f).unwrap(), XDP_PASS);
        }
    }
    let d = h.stats().unwrap().since(&before);
    assert_eq!(d.get(DROP_RATE_LIMITED), 0);
    // A quarter second refills one token; 0.2 s none yet (0.8 of one).
    h.set_clock(t0 + s / 4).unwrap();
    assert_eq!(initiations_passing(&h, v4(10), 3), 1);
    h.set_clock(t0 + s / 4 + s / 5).unwrap();
    assert_eq!(initiations_passing(&h, v4(10), 3), 0);
    // Another 0.05 s completes the token (the 0.8 was kept).
    h.set_clock(t0 + s / 2).unwrap();
    assert_eq!(initiations_passing(&h, v4(10), 3), 1);
    // Ten seconds refill 40, capped at the burst.
    h.set_clock(t0 + 11 * s).unwrap();
    assert_eq!(initiations_passing(&h, v4(10), 50), 10);
    // A sustained flood at 100 per second for 5 s gets rate x time + burst.
    let src = v6(500);
    let mut passed = 0;
    for tick in 0..500u64 {
        h.set_clock(t0 + 20 * s + tick * s / 100).unwrap();
        passed += initiations_passing(&h, src, 1);
    }
    assert_eq!(passed, 10 + 4 * 5 - 1, "burst + rate x (4.99 s)");
    // The counters saw all of it.
    let st = h.stats().unwrap();
    assert_eq!(
        st.get(PASS_INITIATION) + st.get(DROP_RATE_LIMITED),
        25 * 2 + 5 * 2 + 10 + 3 + 3 + 3 + 50 + 500
    );
    // An IPv6 host has a /64 of addresses to send from: the bucket is the
    // /64's, so rotating through its addresses gains nothing.
    h.set_clock(t0 + 100 * s).unwrap();
    let one_net: u32 = (1..=40u16)
        .map(|i| {
            let a: IpAddr = format!("2001:db8:0:77::{i:x}").parse().unwrap();
            initiations_passing(&h, a, 1)
        })
        .sum();
    assert_eq!(one_net, 10, "one /64, one bucket");
    let next_net: IpAddr = "2001:db8:0:78::1".parse().unwrap();
    assert_eq!(initiations_passing(&h, next_net, 1), 1, "another /64");
    // Rate 0: no limit.
    c.handshake_rate = 0;
    h.configure(&c).unwrap();
    assert_eq!(initiations_passing(&h, v4(10), 100), 100);
}

#[test]
fn handshake_bucket_with_the_real_clock() {
    // No test clock: the defaults let one source's burst through at once,
    // then only the rate over the time the flood took.
    let h = harness();
    let c = cfg();
    let started = std::time::Instant::now();
    let n = initiations_passing(&h, v4(3), 1000);
    let refill = (f64::from(c.handshake_rate) * started.elapsed().as_secs_f64()).ceil() as u32;
    assert!(
        n >= c.handshake_burst && n <= c.handshake_burst + refill,
        "{n} of 1000 passed (burst {}, {refill} refilled)",
        c.handshake_burst
    );
    assert!(
        n < 1000 / 2,
        "the flood was not limited: {n} of 1000 passed"
    );
}

/// A random frame: mostly WireGuard-shaped messages to the port around the
/// legal sizes, mutated in the ways the guard must notice (and some it must
/// not).
fn random_frame(rng: &mut StdRng) -> Vec<u8> {
    let src = match rng.gen_range(0..5) {
        0 => v6(rng.gen_range(1..4)),
        1 => "::ffff:198.51.100.2".parse().unwrap(),
        _ => v4(rng.gen_range(1..6)),
    };
    let kind = if rng.gen_bool(0.85) {
        rng.gen_range(1..=4)
    } else {
        rng.gen()
    };
    let size = match kind {
        1 => 148,
        2 => 92,
        3 => 64,
        _ => rng.gen_range(32..400),
    };
    let len = if rng.gen_bool(0.7) {
        size
    } else {
        (size as i64 + rng.gen_range(-40i64..40)).max(0) as usize
    };
    let mut f = UdpFrame::wg(src, kind, len);
    if src.is_ipv6() && matches!(src, IpAddr::V6(a) if a.to_ipv4_mapped().is_some()) {
        f.dst = v6(99);
    }
    if rng.gen_bool(0.1) {
        f.dport = [PORT + 1, 53, 51900][rng.gen_range(0..3)];
    }
    if rng.gen_bool(0.05) {
        f.sport = PORT;
    }
    if rng.gen_bool(0.1) {
        f.vlans = (0..rng.gen_range(1..=3))
            .map(|_| [0x8100, 0x88a8][rng.gen_range(0..2)])
            .collect();
    }
    if f.src.is_ipv4() && rng.gen_bool(0.1) {
        f.v4_options = 4 * rng.gen_range(1..=10);
    }
    if f.src.is_ipv6() && rng.gen_bool(0.1) {
        f.v6_ext = (0..rng.gen_range(1..=7))
            .map(|_| [0, 43, 60][rng.gen_range(0..3)])
            .collect();
    }
    if rng.gen_bool(0.05) {
        f.frag = [Frag::First, Frag::Later][rng.gen_range(0..2)];
    }
    if rng.gen_bool(0.05) {
        f.proto = [6, 1, 132][rng.gen_range(0..3)];
    }
    if rng.gen_bool(0.08) {
        f.udp_len = Some(rng.gen_range(0..600));
    }
    if rng.gen_bool(0.08) {
        f.ip_len_delta = rng.gen_range(-80..80);
    }
    if rng.gen_bool(0.1) {
        f.trailer = rng.gen_range(1..40);
    }
    let mut bytes = f.bytes();
    if rng.gen_bool(0.08) {
        let n = rng.gen_range(14..=bytes.len().max(14));
        bytes.truncate(n);
    }
    if rng.gen_bool(0.08) && bytes.len() > 14 {
        // A random byte anywhere, headers included.
        let at = rng.gen_range(12..bytes.len());
        bytes[at] = rng.gen();
    }
    if rng.gen_bool(0.1) && !f.payload.is_empty() {
        // A reserved byte, the type, or a later byte.
        let start = bytes.len().saturating_sub(f.payload.len());
        let at = start + rng.gen_range(0..5.min(f.payload.len()));
        if at < bytes.len() {
            bytes[at] ^= 1 << rng.gen_range(0..8);
        }
    }
    bytes
}

#[test]
fn randomized_frames_agree_with_the_model() {
    let seed: u64 = std::env::var("WGBPF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("seed {seed} (WGBPF_SEED to repeat)");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut c = cfg();
    c.ports = vec![PORT, 51900];
    c.handshake_rate = 2;
    c.handshake_burst = 3;
    let allow: Vec<IpNet> = vec![
        "198.51.100.0/30".parse().unwrap(),
        "2001:db8::/127".parse().unwrap(),
    ];
    let mut h = GuardHarness::new(&c).unwrap();
    let t0 = 5_000_000_000_000u64;
    h.set_clock(t0).unwrap();
    let mut model = Model::new(c.clone(), t0);
    let mut seen = [0u64; COUNT as usize];
    let mut others = 0;
    for i in 0..20_000u64 {
        if i % 5000 == 2500 {
            // Half the time with the allowlist on.
            c.allowlist = if c.allowlist.is_some() {
                None
            } else {
                Some(allow.clone())
            };
            h.configure(&c).unwrap();
            model.cfg = c.clone();
        }
        // Time moves in uneven steps, sometimes not at all.
        let now = t0 + i * 3_000_000 + rng.gen_range(0..2_000_000);
        h.set_clock(now).unwrap();
        model.now_ns = now;
        let bytes = random_frame(&mut rng);
        let want = model.judge(&bytes);
        let got = h.judge(&bytes).unwrap();
        assert_eq!(got, want, "frame {i} (seed {seed}): {bytes:02x?}");
        match got.1 {
            Some(s) => seen[s as usize] += 1,
            None => others += 1,
        }
    }
    eprintln!("outcomes: {seen:?}, not to the port: {others}");
    // The generator reaches every outcome, so the comparison means something.
    for (i, n) in seen.iter().enumerate() {
        assert!(*n > 0, "no frame ended as {}", NAMES[i]);
    }
    assert!(others > 0);
}
