//! `cargo xtask bench ...`: each benchmark is a release binary of the crate
//! that owns the code under test; xtask only builds and runs it.

mod dataplane;
mod fleet;
mod xdp;

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum Bench {
    /// One scrape of the metrics collector with 10,000 peers and 100,000
    /// deny-map keys (real pinned maps, nothing attached).
    Scrape {
        /// Scrapes; the median is reported.
        #[arg(long, default_value_t = 5)]
        samples: usize,
    },
    /// Applying PEERS peers to a userspace WireGuard device with wgbpf
    /// versus `wg setconf`, and changing one of them.
    Wg {
        #[arg(long, default_value_t = 10_000)]
        peers: usize,
        /// Samples per figure; the median is reported.
        #[arg(long, default_value_t = 3)]
        samples: usize,
    },
    /// Per-packet cost of the ACL verdict (BPF_PROG_TEST_RUN on the JIT)
    /// for 10, 1000 and 100000 rules over 10000 peers.
    Acl {
        /// Repetitions per test run (the kernel's repeat count).
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        /// Samples per case; the median is reported.
        #[arg(long, default_value_t = 7)]
        samples: u32,
    },
    /// Real packets through veth and a wireguard-go tunnel: wgbpf against
    /// no filter and nftables (per rule, set) at several rule counts.
    Dataplane(dataplane::Dataplane),
    /// The XDP guard's packet rate on a veth against a bare XDP_DROP
    /// program (garbage, handshake flood, valid data).
    Xdp(xdp::XdpArgs),
    /// From a push to the last of N gateways enforcing it (a real etcd,
    /// real gateways), and M followers in one process for the fan-out.
    Fleet(fleet::FleetArgs),
}

pub fn run(which: Bench) -> Result<()> {
    match which {
        Bench::Dataplane(a) => dataplane::run(a),
        Bench::Xdp(args) => xdp::run(args),
        Bench::Fleet(args) => fleet::run(args),
        Bench::Scrape { samples } => release(
            &["-p", "wgbpf", "--example", "bench_scrape"],
            &[
                "--peers",
                "10000",
                "--deny-series",
                "100000",
                "--samples",
                &samples.to_string(),
            ],
        ),
        Bench::Wg { peers, samples } => release(
            &["-p", "wgbpf", "--example", "bench_wg"],
            &[
                "--peers",
                &peers.to_string(),
                "--samples",
                &samples.to_string(),
            ],
        ),
        Bench::Acl { repeat, samples } => bench_bin(
            "bench-acl",
            &[
                "--repeat",
                &repeat.to_string(),
                "--samples",
                &samples.to_string(),
            ],
        ),
    }
}

/// `cargo run --release -q TARGET -- ARGS`: every benchmark is a release
/// binary of the crate that owns the code under test.
fn release(target: &[&str], args: &[&str]) -> Result<()> {
    let mut a = vec!["run", "--release", "-q"];
    a.extend_from_slice(target);
    a.push("--");
    a.extend_from_slice(args);
    crate::cargo(&a)
}

/// A benchmark binary of the bpf-tests crate.
pub(crate) fn bench_bin(bin: &str, args: &[&str]) -> Result<()> {
    release(&["-p", "wgbpf-bpf-tests", "--bin", bin], args)
}
