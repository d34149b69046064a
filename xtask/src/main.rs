//! Project tasks: `cargo xtask setup | build | test | demo | bench | vm`.
//!
//! Every task first runs the idempotent set-up (scripts/setup.sh), so each
//! works on a fresh Debian 12 machine, as root.

mod bench;
mod vm;

use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    about = "wgbpf's build, test, demo and benchmark tasks"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build and the tests need (apt packages, bpf-linker).
    Setup,
    /// Build the eBPF programs and the `wgbpf` binary (release).
    Build,
    /// Check formatting and clippy (-D warnings) over the workspace.
    Lint,
    /// Run the whole test suite (needs root: it loads BPF, makes netns),
    /// after the lint, then the VM tests (`vm test`) on Debian's kernels.
    Test {
        /// Skip the VM tests (docs/vm-tests.md).
        #[arg(long)]
        no_vm: bool,
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build a three-host WireGuard mesh in network namespaces, enforce the
    /// example policy on the gateway, send allowed and denied traffic and
    /// print what happened and the deny counters.
    Demo,
    /// Benchmarks; see docs/benchmarks.md.
    Bench {
        #[command(subcommand)]
        which: bench::Bench,
    },
    /// wgbpf on Debian's 6.1 and 6.12 kernels with the real WireGuard
    /// module, under QEMU; see docs/vm-tests.md.
    Vm {
        #[command(subcommand)]
        which: vm::Vm,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    std::env::set_current_dir(workspace_root()).context("cd to the workspace")?;
    match cli.task {
        Task::Setup => setup(),
        Task::Build => {
            setup()?;
            cargo(&["build", "--release", "-p", "wgbpf"])
        }
        Task::Lint => {
            setup()?;
            lint()
        }
        Task::Test { no_vm, args } => {
            setup()?;
            lint()?;
            let mut a = vec!["test", "--workspace", "--no-fail-fast"];
            if !args.is_empty() {
                a.push("--");
                a.extend(args.iter().map(String::as_str));
            }
            let tests = cargo(&a);
            // The bounded fuzz run (fuzz/, docs/imports.md), whatever the
            // tests said: both verdicts in one run.
            let tests = match (tests, fuzz_smoke()) {
                (Ok(()), fuzz) => fuzz,
                (Err(t), Ok(())) => Err(t),
                (Err(t), Err(f)) => Err(anyhow::anyhow!("{t:#}; and {f:#}")),
            };
            if no_vm {
                return tests;
            }
            // The VM tests run even when `cargo test` failed: both verdicts
            // in one run.
            let vms = vm::test(vm::TestArgs::all());
            match (tests, vms) {
                (Ok(()), Ok(())) => Ok(()),
                (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
                (Err(t), Err(v)) => bail!("{t:#}; and {v:#}"),
            }
        }
        Task::Demo => {
            setup()?;
            cargo(&["build", "--release", "-p", "wgbpf", "-p", "testbed"])?;
            cargo(&[
                "run",
                "--release",
                "-q",
                "-p",
                "testbed",
                "--bin",
                "wgbpf-demo",
            ])
        }
        Task::Bench { which } => {
            setup()?;
            bench::run(which)
        }
        Task::Vm { which } => {
            setup()?;
            vm::run(which)
        }
    }
}

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn lint() -> Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    run(Command::new("rustfmt")
        .args(["--edition", "2021", "--check"])
        .args(glob_rs("ebpf/src")?)
        .args(glob_rs("ebpf/src/xdp_guard")?))?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])
}

/// The .rs files directly in `dir` (the eBPF crate is outside the
/// workspace, so `cargo fmt --all` does not reach it).
fn glob_rs(dir: &str) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {dir}"))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(out)
}

fn setup() -> Result<()> {
    run(Command::new("bash").arg("scripts/setup.sh"))
}

pub(crate) fn cargo(args: &[&str]) -> Result<()> {
    run(Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())).args(args))
}

pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

// ---- begin: bounded fuzz run (fuzz/, docs/imports.md) ----
/// Runs every cargo-fuzz target in fuzz/ for a bounded time (20 s each, or
/// WGBPF_FUZZ_SECONDS; 0 skips), seeded with fuzz/regressions/<target>/. A
/// crash, a panic or an input slower than 10 s fails the task; libFuzzer
/// leaves the input in fuzz/artifacts/<target>/ (add it to the regressions).
/// cargo-fuzz needs nightly flags: RUSTC_BOOTSTRAP=1 lets the stable
/// toolchain accept them. packet_diff (docs/reliability.md) loads the eBPF
/// programs (root) and runs up to 4,096 packets an input.
fn fuzz_smoke() -> Result<()> {
    let seconds: u64 = match std::env::var("WGBPF_FUZZ_SECONDS") {
        Ok(s) => s.parse().context("WGBPF_FUZZ_SECONDS")?,
        Err(_) => 20,
    };
    if seconds == 0 {
        eprintln!("xtask: fuzzing skipped (WGBPF_FUZZ_SECONDS=0)");
        return Ok(());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for target in [
        "mesh_parse",
        "tailscale_parse",
        "wgquick_parse",
        "packet_diff",
    ] {
        let corpus = format!("corpus/{target}");
        std::fs::create_dir_all(std::path::Path::new("fuzz").join(&corpus))?;
        run(Command::new(&cargo)
            .current_dir("fuzz")
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run", "-O", target, &corpus])
            .arg(format!("regressions/{target}"))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .args(["-timeout=10", "-max_len=16384", "-print_final_stats=1"]))
        .with_context(|| format!("fuzz target {target}: see fuzz/artifacts/{target}/"))?;
    }
    Ok(())
}
// ---- end: bounded fuzz run ----
