//! Real packets against wgbpf, nftables and no filter: `cargo xtask bench
//! dataplane`. See docs/benchmarks.md for what is measured and how; the
//! parts are in `wgbpf_bpf_tests::dpbench` (the veth variant in `veth`,
//! the tunnel in `tunnel`).
//!
//! Results on stdout, one line per case; progress and samples on stderr.

use std::process::ExitCode;

use anyhow::Result;
use wgbpf_bpf_tests::dpbench::{args, cleanup, tunnel::run_wireguard, veth::run_veth};

fn run() -> Result<()> {
    let a = args::parse()?;
    cleanup::sweep_stale();
    if let Err(e) = testbed::sweep_stale() {
        eprintln!("bench-dataplane: sweeping stale meshes: {e:#}");
    }
    eprintln!(
        "bench-dataplane: {} repetitions of {:.1} s windows (after {:.1} s warm-up), rules {:?}",
        a.reps,
        a.window.as_secs_f64(),
        a.warmup.as_secs_f64(),
        a.rules
    );
    if a.veth {
        run_veth(&a)?;
    }
    if a.wireguard {
        run_wireguard(&a)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    if let Err(e) = cleanup::install() {
        eprintln!("bench-dataplane: error: {e:#}");
        return ExitCode::FAILURE;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-dataplane: error: {e:#}");
            if cleanup::stopped() {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
