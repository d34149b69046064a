//! `cargo xtask bench dataplane`: real packets through a veth pair and a
//! wireguard-go tunnel against no filter, wgbpf and nftables
//! (bpf-tests/src/bin/bench-dataplane.rs; docs/benchmarks.md).

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct Dataplane {
    /// Repetitions of every case (interleaved); medians are reported.
    #[arg(long, default_value_t = 7)]
    reps: usize,
    /// Length of each measurement window, seconds.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Traffic before each window, seconds.
    #[arg(long, default_value_t = 0.3)]
    warmup: f64,
    /// Rule counts.
    #[arg(long, default_value = "10,1000,10000,100000")]
    rules: String,
    /// veth, wireguard or both.
    #[arg(long, default_value = "veth,wireguard")]
    variants: String,
    /// An nftables ruleset that does not load within this many seconds is
    /// reported as not loaded.
    #[arg(long, default_value_t = 120.0)]
    nft_timeout: f64,
}

pub fn run(a: Dataplane) -> Result<()> {
    super::bench_bin(
        "bench-dataplane",
        &[
            "--reps",
            &a.reps.to_string(),
            "--seconds",
            &a.seconds.to_string(),
            "--warmup",
            &a.warmup.to_string(),
            "--rules",
            &a.rules,
            "--variants",
            &a.variants,
            "--nft-timeout",
            &a.nft_timeout.to_string(),
        ],
    )
}
