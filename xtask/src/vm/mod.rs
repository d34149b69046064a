//! `cargo xtask vm test`: wgbpf on Debian's own kernels (6.1: clsact, 6.12:
//! tcx) with the real WireGuard module, each booted under QEMU (TCG). See
//! docs/vm-tests.md.

mod initramfs;
mod kernel;
mod qemu;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::Value;

use kernel::{KernelSpec, KERNELS};

#[derive(Subcommand)]
pub enum Vm {
    /// Boot each kernel, run the guest's checks, report; fails if any kernel
    /// fails.
    Test(TestArgs),
    /// Download and extract the kernels into the cache only.
    Fetch,
}

#[derive(clap::Args, Default)]
pub struct TestArgs {
    /// Only these kernels (6.1, 6.12); repeatable. Default: all.
    #[arg(long = "kernel")]
    kernels: Vec<String>,
    /// Per-kernel limit for the whole boot, in seconds.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_SECS)]
    timeout: u64,
    /// Echo the whole serial console, not only the checks.
    #[arg(short, long)]
    verbose: bool,
    /// Test this wgbpf binary instead of building the release one.
    #[arg(long)]
    wgbpf: Option<PathBuf>,
}

/// A guest takes about 2–4 minutes under TCG (the BPF verifier and the
/// 10,000-peer checks most of it);
/// this leaves room for a slow, busy CI machine and still ends a hung guest.
const DEFAULT_TIMEOUT_SECS: u64 = 600;

impl TestArgs {
    pub fn all() -> Self {
        TestArgs {
            timeout: DEFAULT_TIMEOUT_SECS,
            ..Default::default()
        }
    }
}

pub fn run(which: Vm) -> Result<()> {
    match which {
        Vm::Test(a) => test(a),
        Vm::Fetch => {
            for spec in &KERNELS {
                let k = kernel::obtain(spec)?;
                println!(
                    "{}: {} {} in {}",
                    spec.label,
                    k.package,
                    k.version,
                    k.root.display()
                );
            }
            Ok(())
        }
    }
}

struct Outcome {
    label: &'static str,
    kernel: String,
    pass: bool,
    lines: Vec<String>,
}

pub fn test(a: TestArgs) -> Result<()> {
    let specs: Vec<&KernelSpec> = if a.kernels.is_empty() {
        KERNELS.iter().collect()
    } else {
        a.kernels
            .iter()
            .map(|l| {
                KERNELS
                    .iter()
                    .find(|s| s.label == l)
                    .with_context(|| format!("unknown kernel {l} (known: 6.1, 6.12)"))
            })
            .collect::<Result<_>>()?
    };
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let wgbpf = match &a.wgbpf {
        Some(p) => p.clone(),
        None => {
            // The smoke example (verifier instruction counts) is optional.
            let both = ["build", "--release", "-p", "wgbpf", "--bin", "wgbpf"];
            if crate::cargo(&[&both[..], &["--example", "smoke"]].concat()).is_err() {
                let _ = std::fs::remove_file(target.join("release/examples/smoke"));
                crate::cargo(&both)?;
            }
            target.join("release/wgbpf")
        }
    };
    let wgbpf = std::fs::canonicalize(&wgbpf).with_context(|| wgbpf.display().to_string())?;
    let smoke = std::fs::canonicalize(target.join("release/examples/smoke")).ok();
    let init = std::fs::canonicalize("vmtest/init.sh")?;
    let out_dir = target.join("vm-tests");

    let mut outcomes = Vec::new();
    for spec in specs {
        let dir = out_dir.join(spec.label);
        std::fs::create_dir_all(&dir)?;
        let o = match one(spec, &wgbpf, smoke.as_deref(), &init, &dir, &a) {
            Ok(o) => o,
            Err(e) => Outcome {
                label: spec.label,
                kernel: "?".into(),
                pass: false,
                lines: vec![format!("error: {e:#}")],
            },
        };
        outcomes.push(o);
    }

    println!("\nVM tests (serial logs in {}):", out_dir.display());
    for o in &outcomes {
        println!(
            "  {:<5} {:<48} {}",
            o.label,
            o.kernel,
            if o.pass { "PASS" } else { "FAIL" }
        );
        for l in &o.lines {
            println!("        {l}");
        }
    }
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|o| !o.pass)
        .map(|o| o.label)
        .collect();
    if !failed.is_empty() {
        bail!("VM tests failed on kernel(s) {}", failed.join(", "));
    }
    Ok(())
}

fn one(
    spec: &KernelSpec,
    wgbpf: &Path,
    smoke: Option<&Path>,
    init: &Path,
    dir: &Path,
    a: &TestArgs,
) -> Result<Outcome> {
    let t = Instant::now();
    let k = kernel::obtain(spec)?;
    let initrd = dir.join("initrd.cpio");
    let cpio = initramfs::build(&initramfs::Contents {
        kernel: &k,
        wgbpf,
        smoke,
        init,
        label: spec.label,
        expect_attach: spec.expect_attach,
    })?;
    std::fs::write(&initrd, &cpio)?;
    println!(
        "[{}] booting {} {} ({}), initramfs {} MiB, timeout {} s",
        spec.label,
        k.package,
        k.version,
        k.release,
        cpio.len() >> 20,
        a.timeout
    );
    let vmlinuz = k.vmlinuz();
    let boot = |log: &Path| {
        qemu::boot(&qemu::Boot {
            label: spec.label,
            vmlinuz: &vmlinuz,
            initrd: &initrd,
            log,
            timeout: Duration::from_secs(a.timeout),
            verbose: a.verbose,
        })
    };
    let mut lines = Vec::new();
    let mut r = boot(&dir.join("console.log"))?;
    if !r.reached_init() && !r.timed_out {
        // The kernel died before /init ran: emulation, not wgbpf. Once more.
        let first = dir.join("console-first-boot.log");
        std::fs::rename(dir.join("console.log"), &first)?;
        println!(
            "[{}] the kernel died before /init ({}); booting again",
            spec.label,
            first.display()
        );
        lines.push(format!(
            "first boot died before /init, see {}",
            first.display()
        ));
        r = boot(&dir.join("console.log"))?;
    }

    let mut pass = r.result == Some(true) && !r.timed_out;
    // The counters the guest printed, checked here.
    match r
        .json
        .get("counters")
        .map(|j| serde_json::from_str::<Value>(j))
    {
        Some(Ok(c)) => {
            for (name, ok) in counter_checks(&c) {
                println!(
                    "[{}] {:<4} {name}",
                    spec.label,
                    if ok { "ok" } else { "FAIL" }
                );
                if !ok {
                    pass = false;
                    lines.push(format!("failed check: {name}; counters: {c}"));
                }
            }
        }
        Some(Err(e)) => {
            pass = false;
            lines.push(format!("counters JSON unreadable: {e}"));
        }
        None if r.result.is_some() && r.load_error.is_none() => {
            pass = false;
            lines.push("the guest printed no counters".into());
        }
        None => {}
    }
    let total = r.checks.len();
    let failed: Vec<&str> = r
        .checks
        .iter()
        .filter(|c| !c.1)
        .map(|c| c.0.as_str())
        .collect();
    let info = |k: &str| r.info.get(k).map(String::as_str).unwrap_or("n/a");
    lines.push(format!(
        "guest checks: {}/{} ok{}; attach {}; wgbpf load {} s; verifier: {} instructions \
         (ingress), {} (egress), smoke load {}; with the programs' log at trace: {} / {}",
        total - failed.len(),
        total,
        if failed.is_empty() {
            String::new()
        } else {
            format!(" (failed: {})", failed.join(", "))
        },
        info("attach"),
        info("load_seconds"),
        info("verified_insns_wgbpf_ingress"),
        info("verified_insns_wgbpf_egress"),
        info("smoke_load"),
        info("verified_insns_log_wgbpf_ingress"),
        info("verified_insns_log_wgbpf_egress"),
    ));
    if let Some(l) = scale_line(&r.info) {
        lines.push(l);
    }
    lines.push(format!(
        "boot to power-off {:.0} s under TCG ({:.0} s with download and initramfs)",
        r.elapsed.as_secs_f64(),
        t.elapsed().as_secs_f64()
    ));
    if r.timed_out {
        lines.push(format!(
            "TIMED OUT after {} s; last console lines:",
            a.timeout
        ));
        lines.extend(r.tail.iter().map(|l| format!("  | {l}")));
    } else if r.result.is_none() {
        lines.push("the guest stopped without a result; last console lines:".into());
        lines.extend(r.tail.iter().map(|l| format!("  | {l}")));
    }
    if let Some(err) = &r.load_error {
        let path = dir.join("load-error.log");
        std::fs::write(&path, err.join("\n") + "\n")?;
        lines.push(format!(
            "wgbpf load failed ({} lines in {}); first lines:",
            err.len(),
            path.display()
        ));
        lines.extend(err.iter().take(8).map(|l| format!("  | {l}")));
        lines.push("last 30 lines:".into());
        lines.extend(
            err.iter()
                .skip(err.len().saturating_sub(30))
                .map(|l| format!("  | {l}")),
        );
    }
    Ok(Outcome {
        label: spec.label,
        kernel: format!("{} (Debian {})", k.release, k.version),
        pass,
        lines,
    })
}

/// The guest's 10,000-peer figures (vmtest/init.sh, `scale`), each time as
/// a ratio to `wg setconf` of the same peers in the same guest (emulated:
/// only the ratios carry over).
fn scale_line(info: &std::collections::BTreeMap<String, String>) -> Option<String> {
    let num = |k: &str| info.get(&format!("scale_{k}"))?.parse::<f64>().ok();
    let text = |k: &str| {
        info.get(&format!("scale_{k}"))
            .map_or("n/a", String::as_str)
    };
    let setconf = num("setconf_seconds")?;
    let setconf_span = num("setconf_span");
    let time = |k: &str| match num(&format!("{k}_seconds")) {
        Some(t) => format!("{t:.2} s ({:.2}x)", t / setconf),
        None => "n/a".into(),
    };
    let span = |k: &str| match (num(&format!("{k}_span")), setconf_span) {
        (Some(t), Some(w)) if w > 0.0 => format!("{t:.2} s ({:.2}x)", t / w),
        _ => "n/a".into(),
    };
    Some(format!(
        "10,000 peers: wg setconf {setconf:.2} s (SET span {}, {} messages); wgbpf load: \
         fresh {}, again unchanged {} ({} messages), re-adding the peers {} (SET span {}, \
         {} messages), one peer changed {} ({} message); the scale checks took {} s",
        text("setconf_span"),
        text("setconf_messages"),
        time("load"),
        time("noop"),
        text("noop_messages"),
        time("readd"),
        span("readd"),
        text("readd_messages"),
        time("one"),
        text("one_messages"),
        text("seconds"),
    ))
}

/// Host-side checks of `wgbpf counters --json` after the guest's traffic.
fn counter_checks(c: &Value) -> Vec<(&'static str, bool)> {
    let peer = |name: &str, dir: &str, key: &str| {
        c["peers"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["peer"] == name))
            .and_then(|p| p[dir][key].as_u64())
            .unwrap_or(0)
    };
    let denied = |src: &str, dst: &str, proto: &str, port: u64| {
        c["denies"].as_array().is_some_and(|ds| {
            ds.iter().any(|d| {
                d["src"] == src
                    && d["dst"] == dst
                    && d["proto"] == proto
                    && d["port"] == port
                    && d["packets"].as_u64().unwrap_or(0) >= 1
            })
        })
    };
    vec![
        (
            "counters-bob-ingress-denied",
            peer("bob", "ingress", "denied_packets") >= 1,
        ),
        (
            "counters-alice-ingress-denied",
            peer("alice", "ingress", "denied_packets") >= 1,
        ),
        (
            "counters-alice-ingress-allowed",
            peer("alice", "ingress", "allowed_packets") >= 1,
        ),
        (
            "counters-bob-egress-allowed",
            peer("bob", "egress", "allowed_packets") >= 1,
        ),
        (
            "deny-map-bob-tcp-gw-22",
            denied("bob", "10.77.0.1", "tcp", 22),
        ),
        (
            "deny-map-alice-tcp-gw-2222",
            denied("alice", "10.77.0.1", "tcp", 2222),
        ),
        (
            "deny-map-bob-tcp-alice-8080",
            denied("bob", "10.77.0.2", "tcp", 8080),
        ),
    ]
}
