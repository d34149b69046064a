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
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/packet_diff");
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
    let seed: u64 = std::env::var("WGBPF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("seed {seed} (rerun with WGBPF_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
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
    eprintln!("{inputs} inputs, {packets} packets in {:?}", start.elapsed());
}
