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
    /// Run the whole test suite (needs root: it loads BPF, makes netns).
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
        Task::Test { args } => {
            setup()?;
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
