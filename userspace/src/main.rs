//! The `wgbpf` command.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::json;
use wgbpf::{
    dataplane::{attach, pin_dir, LoadOptions, Maps},
    mesh,
    policy::{compile::compile, model::proto_name},
};
use wgbpf_common::{capacity, EventConfig};

#[derive(Parser)]
#[command(
    name = "wgbpf",
    version,
    about = "eBPF access control for WireGuard gateways",
    long_about = "wgbpf enforces per-peer and per-port ACLs on a WireGuard interface with eBPF \
                  programs pinned in the kernel, and counts what they deny. Enforcement \
                  outlives this command: `load` installs or updates it, `unload` removes it."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile the mesh file's policy and enforce it on its interface.
    ///
    /// Attaches the programs (tcx, or clsact on kernels before 6.6) and pins
    /// them under /sys/fs/bpf/wgbpf/IFACE/ the first time; afterwards
    /// adopts what is pinned and swaps the policy atomically. A policy that
    /// fails to compile or does not fit leaves the running one in place.
    Load {
        /// The mesh file (TOML).
        #[arg(short, long)]
        config: PathBuf,
        /// Print a JSON report instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Detach the programs from IFACE and remove their pins and maps.
    Unload {
        #[arg(short, long)]
        interface: String,
        #[arg(long)]
        json: bool,
    },
    /// Show per-peer allowed, denied and audited counters and the top denies.
    Counters {
        /// The mesh file, for the interface and the peers' names.
        #[arg(short, long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Load { config, json } => load(&config, json),
        Command::Unload { interface, json } => unload(&interface, json),
        Command::Counters { config, json } => show_counters(&config, json),
    };
    if let Err(e) = result {
        eprintln!("wgbpf: error: {e:#}");
        std::process::exit(1);
    }
}

fn load(config: &PathBuf, json: bool) -> Result<()> {
    let mesh = mesh::load(config)?;
    let compiled = compile(&mesh.policy, capacity::PEERS)
        .with_context(|| format!("{}: policy", config.display()))?;
    let opts = LoadOptions {
        events: Some(EventConfig {
            per_second: 100,
            burst: 200,
        }),
        ..Default::default()
    };
    let (mut maps, installed) = attach::install(&mesh.interface, &opts)
        .with_context(|| format!("installing on {}", mesh.interface))?;
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

fn unload(iface: &str, json: bool) -> Result<()> {
    let removed = attach::remove(iface)?;
    if json {
        println!("{}", json!({"interface": iface, "removed": removed}));
    } else if removed {
        println!("{iface}: programs detached, pins removed");
    } else {
        println!("{iface}: nothing loaded");
    }
    Ok(())
}

fn show_counters(config: &PathBuf, json: bool) -> Result<()> {
    let mesh = mesh::load(config)?;
    let dir = pin_dir(&mesh.interface);
    if attach::pinned_mode(&mesh.interface).is_none() {
        bail!(
            "no wgbpf data plane is loaded on {} ({})",
            mesh.interface,
            dir.display()
        );
    }
    let maps = Maps::open_pinned(&dir)?;
    let (_, slot) = maps.active_slot()?;
    let name_of = |idx: u32| {
        mesh.policy
            .peer_by_index(idx)
            .map_or_else(|| format!("#{idx}"), |p| p.name.clone())
    };
    let mut peers = Vec::new();
    for p in &mesh.policy.peers {
        peers.push((p.name.clone(), maps.peer_totals(p.index)?));
    }
    let denies = maps.denies()?;
    let stats = maps.stats()?;
    if json {
        let peers: Vec<_> = peers
            .iter()
            .map(|(n, t)| json!({"peer": n, "ingress": t.ingress, "egress": t.egress}))
            .collect();
        let denies: Vec<_> = denies
            .iter()
            .map(|d| {
                json!({"src": name_of(d.src_peer), "dst": d.dst, "proto": proto_name(d.proto),
                       "port": d.port, "audit": d.audit, "packets": d.packets, "bytes": d.bytes})
            })
            .collect();
        println!(
            "{}",
            json!({"interface": mesh.interface, "policy_version": slot.version,
                   "peers": peers, "denies": denies, "stats": stats})
        );
        return Ok(());
    }
    println!("{} (policy version {})", mesh.interface, slot.version);
    println!(
        "{:<16} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "peer", "in:allow", "in:deny", "in:audit", "out:allow", "out:deny", "out:audit"
    );
    for (name, t) in &peers {
        println!(
            "{:<16} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            name,
            t.ingress.allowed_packets,
            t.ingress.denied_packets,
            t.ingress.audited_packets,
            t.egress.allowed_packets,
            t.egress.denied_packets,
            t.egress.audited_packets
        );
    }
    println!("denies (source peer -> destination proto/port: packets)");
    for d in denies.iter().take(20) {
        println!(
            "  {} -> {} {}/{}: {}{}",
            name_of(d.src_peer),
            d.dst,
            proto_name(d.proto),
            d.port,
            d.packets,
            if d.audit { " (audit)" } else { "" }
        );
    }
    println!(
        "malformed {}  fragments {}  events sent {} suppressed {}",
        stats.malformed, stats.fragments, stats.events_sent, stats.events_suppressed
    );
    Ok(())
}
