//! `wgbpf load`: compile the mesh file's policy and enforce it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use wgbpf::{
    dataplane::{attach, LoadOptions},
    mesh,
    policy::compile::compile,
};
use wgbpf_common::{capacity, EventConfig};

/// Compile the mesh file's policy and enforce it on its interface.
///
/// Attaches the programs (tcx, or clsact on kernels before 6.6) and pins
/// them under /sys/fs/bpf/wgbpf/IFACE/ the first time; afterwards adopts
/// what is pinned and swaps the policy atomically. A policy that fails to
/// compile or does not fit leaves the running one in place.
#[derive(Args)]
pub struct LoadArgs {
    /// The mesh file (TOML).
    #[arg(short, long)]
    config: PathBuf,
    /// How to attach when nothing is pinned yet (default: tcx where the
    /// kernel has it, clsact otherwise).
    #[arg(long, value_enum)]
    attach: Option<attach::AttachMode>,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: LoadArgs) -> Result<()> {
    load(
        &a.config,
        a.attach.unwrap_or_else(attach::AttachMode::best),
        a.json,
    )
}

fn load(config: &std::path::Path, mode: attach::AttachMode, json: bool) -> Result<()> {
    let mesh = mesh::load(config)?;
    // Validate and compile before touching the kernel.
    compile(&mesh.policy, capacity::PEERS)
        .with_context(|| format!("{}: policy", config.display()))?;
    let opts = LoadOptions {
        events: Some(EventConfig {
            per_second: 100,
            burst: 200,
        }),
        ..Default::default()
    };
    let (mut maps, installed) = attach::install(&mesh.interface, &opts, mode)
        .with_context(|| format!("installing on {}", mesh.interface))?;
    // Peers keep the counter slots they had; compile again with them.
    let names: Vec<String> = mesh.policy.peers.iter().map(|p| p.name.clone()).collect();
    let plan = maps.plan_peer_slots(&names)?;
    let mut policy = mesh.policy.clone();
    for p in &mut policy.peers {
        p.index = plan.slots[&p.name];
    }
    let compiled = compile(&policy, capacity::PEERS)?;
    maps.commit_peer_slots(&plan)?;
    let report = maps.apply(&compiled).context("writing the policy")?;
    if json {
        println!(
            "{}",
            json!({
                "interface": mesh.interface,
                "attach": installed,
                "policy": report,
                "rules": mesh.policy.rules.len(),
                "identities": compiled.identities,
                "policy_entries": compiled.policy.len(),
            })
        );
    } else {
        let how = if installed.adopted {
            "adopted the pinned data plane"
        } else {
            "attached"
        };
        println!(
            "{}: {how} ({:?}); policy version {} {} ({} rules, {} identities, {} entries)",
            mesh.interface,
            installed.mode,
            report.version,
            if report.changed {
                "active"
            } else {
                "unchanged"
            },
            mesh.policy.rules.len(),
            compiled.identities,
            compiled.policy.len()
        );
    }
    Ok(())
}
