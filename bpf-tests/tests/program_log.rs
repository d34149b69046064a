//! The programs' own log (aya-log, `[interface] program_log`): what each
//! level shows, read back from the log buffer after packets through the
//! real programs (BPF_PROG_TEST_RUN), and that with the log off the
//! verifier drops the log code (the translated programs are smaller and
//! nothing is written).

use wgbpf::dataplane::{
    program_log::{LogLine, ProgramLog, Reader},
    LoadOptions,
};
use wgbpf_bpf_tests::{
    fixtures::{accept, policy, sel_gw, sel_peer, Fam, IN, LAN},
    harness::{Harness, DROP, PASS},
    packets::Packet,
};
use wgbpf_common::{names, FlowConfig, PROTO_UDP};

/// Loads at `level`, with a budget of one new flow per peer (then one a
/// second), p1 allowed to query the gateway's udp 53.
fn load(level: ProgramLog) -> Harness {
    let mut h = Harness::with_options(LoadOptions {
        program_log: level,
        flows: FlowConfig {
            new_per_second: 1,
            new_burst: 1,
            ..FlowConfig::DEFAULT
        },
        ..Default::default()
    })
    .expect("load (are you root?)");
    h.apply(&policy(vec![accept(
        sel_peer(1),
        sel_gw(),
        PROTO_UDP,
        &[(53, 53)],
    )]))
    .expect("apply");
    h
}

/// The same packets at every level: a malformed one (IPv4 header length
/// 4), four new flows from p1 (three datagrams and a first fragment; all
/// but the first over its budget), and a later fragment overlapping its
/// first fragment. Returns the log.
fn traffic(h: &mut Harness) -> (Vec<LogLine>, usize) {
    let mut reader = Reader::of_object(&mut h.dp.ebpf).expect("the log buffer");
    let (p1, gw) = (Fam::V4.peer(1), Fam::V4.gw());
    let bad = Packet::udp(p1, gw, 1000, 53).with_ihl(4).build();
    assert_eq!(h.run(IN, &bad.bytes).unwrap(), DROP, "{}", bad.label);
    for sport in [2000, 2001, 2002] {
        let f = Packet::udp(p1, gw, sport, 53).build();
        assert_eq!(h.run(IN, &f.bytes).unwrap(), PASS, "{}", f.label);
    }
    let first = Packet::udp(p1, gw, 3000, 53)
        .with_payload(1400)
        .as_fragment_at(0, true)
        .with_frag_id(7)
        .build();
    assert_eq!(h.run(IN, &first.bytes).unwrap(), PASS);
    let overlap = Packet::udp(p1, gw, 3000, 53)
        .with_payload(64)
        .as_fragment_at(1, false)
        .with_frag_id(7)
        .build();
    assert_eq!(h.run(IN, &overlap.bytes).unwrap(), DROP);
    (reader.read(), bad.bytes.len())
}

fn count(lines: &[LogLine], level: &str, text: &str) -> usize {
    lines
        .iter()
        .filter(|l| l.level == level && l.message.contains(text))
        .count()
}

#[test]
fn each_level_shows_its_lines_and_off_shows_none() {
    let p1_slot = LAN.peer(1).index;
    for level in [
        ProgramLog::Off,
        ProgramLog::Error,
        ProgramLog::Warn,
        ProgramLog::Info,
        ProgramLog::Trace,
    ] {
        let mut h = load(level);
        let (lines, bad_len) = traffic(&mut h);
        let warn = level >= ProgramLog::Warn;
        let info = level >= ProgramLog::Info;
        assert_eq!(
            count(
                &lines,
                "warn",
                &format!("malformed packet dropped: dir 0, {bad_len} bytes")
            ),
            usize::from(warn),
            "{level}: {lines:?}"
        );
        assert_eq!(
            count(
                &lines,
                "warn",
                "fragment dropped: offset 8 overlaps its first fragment's"
            ),
            usize::from(warn),
            "{level}: {lines:?}"
        );
        assert_eq!(
            count(
                &lines,
                "info",
                &format!("flow not tracked: peer slot {p1_slot} over its new-flow budget")
            ),
            if info { 3 } else { 0 },
            "{level}: {lines:?}"
        );
        let expected = 2 * usize::from(warn) + 3 * usize::from(info);
        assert_eq!(lines.len(), expected, "{level}: {lines:?}");
    }
}

/// Off, the log calls are dead code to the verifier (the level is a
/// read-only constant it sees): they are gone from the translated
/// programs, which are smaller than the logging ones.
#[test]
fn off_the_log_code_is_dropped_by_the_verifier() {
    let size = |level| {
        let h = load(level);
        [names::PROG_INGRESS, names::PROG_EGRESS].map(|p| {
            let info = h.dp.program(p).unwrap().info().unwrap();
            (
                info.size_translated().unwrap(),
                info.verified_instruction_count().unwrap(),
            )
        })
    };
    let (off, trace) = (size(ProgramLog::Off), size(ProgramLog::Trace));
    for (o, t) in off.iter().zip(&trace) {
        assert!(o.0 < t.0, "translated bytes off {} vs trace {}", o.0, t.0);
        assert!(
            o.1 < t.1,
            "verified instructions off {} vs trace {}",
            o.1,
            t.1
        );
    }
    eprintln!("off {off:?} trace {trace:?}");
}

/// A peer that knows the log is on floods the gateway with malformed
/// packets, with nobody reading the log: every packet is still dropped and
/// counted, the log buffer (128 KiB) fills and further lines are dropped
/// rather than blocking or failing the program, and a reader afterwards
/// gets at most a buffer's worth.
#[test]
fn a_flood_with_the_log_on_fills_the_buffer_and_nothing_else() {
    let mut h = load(ProgramLog::Warn);
    let mut reader = Reader::of_object(&mut h.dp.ebpf).expect("the log buffer");
    let (p1, gw) = (Fam::V4.peer(1), Fam::V4.gw());
    let bad = Packet::udp(p1, gw, 1000, 53).with_ihl(4).build();
    let before = h.dp.maps.stats().unwrap().malformed;
    const FLOOD: u32 = 200_000;
    let (ret, _) = h.run_repeat(IN, &bad.bytes, FLOOD).unwrap();
    assert_eq!(ret, DROP);
    assert_eq!(
        h.dp.maps.stats().unwrap().malformed - before,
        u64::from(FLOOD),
        "every packet counted"
    );
    let lines = reader.read();
    assert!(!lines.is_empty(), "the buffer holds the first lines");
    assert!(
        lines.len() < FLOOD as usize / 10,
        "{} lines: the buffer is bounded, the rest dropped",
        lines.len()
    );
    assert!(lines
        .iter()
        .all(|l| l.message.starts_with("malformed packet dropped")));
    // Read, the buffer takes lines again.
    h.run(IN, &bad.bytes).unwrap();
    assert_eq!(reader.read().len(), 1);
}
