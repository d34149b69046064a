//! `cargo xtask bench fleet`: the time from a push to the last of N
//! gateways enforcing it, on a real etcd (userspace/examples/bench_fleet.rs;
//! docs/benchmarks.md).

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct FleetArgs {
    /// Real gateways (each a testbed with its own daemon and data plane).
    #[arg(long, default_value_t = 3)]
    gateways: usize,
    /// Pushes per figure; medians are reported.
    #[arg(long, default_value_t = 7)]
    samples: usize,
    /// Followers in one process (of one gateway's keys), for how the
    /// watch fan-out and the reads grow with the fleet.
    #[arg(long, default_value = "3,30,300")]
    watchers: String,
}

pub fn run(a: FleetArgs) -> Result<()> {
    // The daemons are the release binary next to the example.
    crate::cargo(&["build", "--release", "-q", "-p", "wgbpf", "--bin", "wgbpf"])?;
    super::release(
        &["-p", "wgbpf", "--example", "bench_fleet"],
        &[
            "--gateways",
            &a.gateways.to_string(),
            "--samples",
            &a.samples.to_string(),
            "--watchers",
            &a.watchers,
        ],
    )
}
