//! Support for running wgbpf's programs in the kernel with BPF_PROG_TEST_RUN.
pub mod bench_policies;
pub mod differential;
pub mod dpbench;
pub mod fixtures;
pub mod harness;
pub mod packet_diff;
pub mod packets;
pub mod policies;
pub mod reference_parse;
pub mod traffic;
pub mod xdp;

/// The random generator of a randomized test: seeded from `WGBPF_SEED`, or
/// at random with the seed printed, so that a failure can be replayed.
pub fn seeded_rng() -> rand::rngs::StdRng {
    use rand::{Rng, SeedableRng};
    let seed: u64 = std::env::var("WGBPF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("seed {seed} (rerun with WGBPF_SEED={seed})");
    rand::rngs::StdRng::seed_from_u64(seed)
}
