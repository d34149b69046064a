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
        /// How to attach when nothing is pinned yet (default: tcx where the
        /// kernel has it, clsact otherwise).
        #[arg(long, value_enum)]
        attach: Option<attach::AttachMode>,
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
        /// The interface (or give the mesh file with -c).
        #[arg(short, long, required_unless_present = "config")]
        interface: Option<String>,
        /// The mesh file, to take the interface from.
        #[arg(short, long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Load {
            config,
            attach,
            json,
        } => load(
            &config,
            attach.unwrap_or_else(attach::AttachMode::best),
            json,
        ),
        Command::Unload { interface, json } => unload(&interface, json),
        Command::Counters {
            interface,
            config,
            json,
        } => interface_of(interface, config).and_then(|i| show_counters(&i, json)),
    };
    if let Err(e) = result {
        eprintln!("wgbpf: error: {e:#}");
        std::process::exit(1);
    }
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

fn interface_of(interface: Option<String>, config: Option<PathBuf>) -> Result<String> {
    match (interface, config) {
        (Some(i), _) => Ok(i),
        (None, Some(c)) => Ok(mesh::load(&c)?.interface),
        (None, None) => bail!("give the interface (-i) or the mesh file (-c)"),
    }
}

fn show_counters(iface: &str, json: bool) -> Result<()> {
    let dir = pin_dir(iface);
    if attach::pinned_mode(iface).is_none() {
        bail!(
            "no wgbpf data plane is loaded on {iface} ({})",
            dir.display()
        );
    }
    let maps = Maps::open_pinned(&dir)?;
    let (_, slot) = maps.active_slot()?;
    let slots = maps.peer_slots()?;
    let name_of = |idx: u32| {
        slots.get(&idx).cloned().unwrap_or_else(|| {
            if idx == 0 {
                "-".into()
            } else {
                format!("#{idx}")
            }
        })
    };
    let mut peers = Vec::new();
    for (idx, name) in &slots {
        peers.push((name.clone(), maps.peer_totals(*idx)?));
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
            json!({"interface": iface, "policy_version": slot.version,
                   "peers": peers, "denies": denies, "stats": stats})
        );
        return Ok(());
    }
    println!("{iface} (policy version {})", slot.version);
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
