//! Project tasks: `cargo xtask setup | build | test | demo | bench`.
//!
//! Every task first runs the idempotent set-up (scripts/setup.sh), so each
//! works on a fresh Debian 12 machine, as root.

mod bench;

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
    /// after the lint.
    Test {
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
        Task::Test { args } => {
            setup()?;
            lint()?;
            let mut a = vec!["test", "--workspace", "--no-fail-fast"];
            if !args.is_empty() {
                a.push("--");
                a.extend(args.iter().map(String::as_str));
            }
            cargo(&a)
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
        .args(glob_rs("ebpf/src")?))?;
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
