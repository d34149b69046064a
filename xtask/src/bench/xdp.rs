//! `cargo xtask bench xdp`: the XDP guard's throughput on a veth against a
//! bare XDP_DROP program in the same run (bpf-tests/src/bin/bench-xdp.rs;
//! method and figures in docs/benchmarks.md).

use anyhow::Result;

#[derive(clap::Args)]
pub struct XdpArgs {
    /// Seconds per sample.
    #[arg(long, default_value_t = 0.5)]
    seconds: f64,
    /// Samples per program and case; medians are reported (ratios: the
    /// median of the per-sample ratios).
    #[arg(long, default_value_t = 15)]
    samples: usize,
    /// Sender threads writing to the veth.
    #[arg(long, default_value_t = 1)]
    senders: usize,
}

pub fn run(a: XdpArgs) -> Result<()> {
    super::bench_bin(
        "bench-xdp",
        &[
            "--seconds",
            &a.seconds.to_string(),
            "--samples",
            &a.samples.to_string(),
            "--senders",
            &a.senders.to_string(),
        ],
    )
}
