//! The packet fuzzer's body (fuzz/, target `packet_diff`) in a normal test
//! run: every input kept in fuzz/regressions/packet_diff/ (each a finding
//! of the fuzzer, fixed) and a few hundred random inputs, through the real
//! programs and the reference parser and evaluator.

use rand::{rngs::StdRng, Rng, SeedableRng};
use wgbpf_bpf_tests::{
    differential::load_options,
    harness::Harness,
    packet_diff::{run_with, PACKETS},
};

fn harness() -> Harness {
    Harness::with_options(load_options()).expect("load")
}

#[test]
fn regression_inputs_agree() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/packet_diff");
    let mut h = harness();
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .expect("fuzz/regressions/packet_diff")
        .map(|e| e.expect("entry").path())
        .collect();
    inputs.sort();
    for path in &inputs {
        eprintln!("{}", path.display());
        run_with(&mut h, &std::fs::read(path).expect("read"));
    }
}

#[test]
fn random_inputs_agree() {
    let mut rng = wgbpf_bpf_tests::seeded_rng();
    let inputs: usize = std::env::var("WGBPF_PACKET_DIFF_INPUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let mut h = harness();
    let start = std::time::Instant::now();
    for _ in 0..inputs {
        let len = rng.gen_range(0..4096);
        let input: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        run_with(&mut h, &input);
    }
    let packets = PACKETS.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "{inputs} inputs, {packets} packets in {:?}",
        start.elapsed()
    );
}

/// The comparison is not blind: a model holding another policy than the
/// kernel (no rules: everything denied) is caught on the first packet the
/// kernel lets through.
#[test]
#[should_panic(expected = "assertion `left == right` failed")]
fn a_model_of_another_policy_is_caught() {
    use wgbpf_bpf_tests::{
        differential::Differential,
        harness::meta_of_bytes,
        packets::random_frame,
        policies::{pools_for, random_policy},
    };
    let mut rng = StdRng::seed_from_u64(1);
    let mut h = harness();
    h.clear_traffic(12).expect("clear");
    let enforced = random_policy(&mut rng, 12, 40);
    let v = h.apply(&enforced).expect("apply").version;
    let pools = pools_for(&enforced);
    let mut nothing = enforced;
    nothing.rules.clear();
    nothing.audit = false;
    let mut diff = Differential::resume(&h, nothing, v).expect("counters");
    for _ in 0..5000 {
        let frame = random_frame(&mut rng, &pools);
        let view = meta_of_bytes(&frame.bytes);
        diff.packet(&h, 0, &frame.bytes, view, &frame.label);
    }
}
