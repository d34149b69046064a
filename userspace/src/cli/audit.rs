//! `wgbpf audit -c FILE`: is the interface what the file says? Compares the
//! WireGuard device (keys, port, peers, AllowedIPs, endpoints, keepalive)
//! and the data plane (programs attached, policy) with the file, changing
//! nothing. Exit 0 when equal, 1 with a readable list of differences.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use wgbpf::{
    dataplane::{attach, pin_dir, Maps},
    mesh,
    policy::compile::compile,
    wg::plan_for_mesh,
};
use wgbpf_common::capacity;

/// Compare the interface with the mesh file, changing nothing.
///
/// Exit status 0 when they are equal, 1 when they differ (each difference
/// on a line), 2 when the comparison itself failed.
#[derive(Args)]
pub struct AuditArgs {
    /// The mesh file.
    #[arg(short, long)]
    config: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Audit {
    interface: String,
    /// WireGuard differences; empty when the file does not manage WireGuard.
    wireguard: Vec<String>,
    dataplane: Vec<String>,
    policy_version: Option<u32>,
}

pub fn run(a: AuditArgs) -> Result<()> {
    match compare(&a) {
        Ok(true) => Ok(()),
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("wgbpf: error: {e:#}");
            std::process::exit(2);
        }
    }
}

/// Prints the comparison; true when equal.
fn compare(a: &AuditArgs) -> Result<bool> {
    let mesh = mesh::load(&a.config)?;
    let mut audit = Audit {
        interface: mesh.interface.clone(),
        wireguard: Vec::new(),
        dataplane: Vec::new(),
        policy_version: None,
    };
    if let Some(plan) = plan_for_mesh(&mesh).context("reading the WireGuard device")? {
        let r = plan.report();
        if r.private_key_changed {
            audit.wireguard.push("private key differs".into());
        }
        if let Some(p) = r.listen_port {
            audit.wireguard.push(format!("listen port should be {p}"));
        }
        if let Some(m) = r.fwmark {
            audit.wireguard.push(format!("fwmark should be {m:#x}"));
        }
        for p in &r.peers_added {
            audit.wireguard.push(format!("peer {p} missing"));
        }
        for p in &r.peers_removed {
            audit.wireguard.push(format!("peer {p} not in the file"));
        }
        for u in &r.peers_updated {
            audit
                .wireguard
                .push(format!("peer {}: {} differ", u.peer, u.fields.join(", ")));
        }
    }
    match attach::pinned_mode(&mesh.interface) {
        None => audit.dataplane.push(format!(
            "no wgbpf programs are attached (nothing pinned at {})",
            pin_dir(&mesh.interface).display()
        )),
        Some(_) => {
            let maps = Maps::open_pinned(&pin_dir(&mesh.interface))?;
            let (_, cfg) = maps.active_slot()?;
            audit.policy_version = Some(cfg.version);
            let names: Vec<String> = mesh.policy.peers.iter().map(|p| p.name.clone()).collect();
            let plan = maps.plan_peer_slots(&names)?;
            let mut policy = mesh.policy.clone();
            for p in &mut policy.peers {
                p.index = plan.slots[&p.name];
            }
            let compiled = compile(&policy, capacity::PEERS).context("policy")?;
            if !maps.active_holds(&compiled)? {
                audit.dataplane.push(format!(
                    "the enforced policy (version {}) differs from the file's",
                    cfg.version
                ));
            }
        }
    }
    let equal = audit.wireguard.is_empty() && audit.dataplane.is_empty();
    if a.json {
        println!("{}", serde_json::json!({"equal": equal, "audit": audit}));
    } else if equal {
        println!("{}: matches {}", mesh.interface, a.config.display());
    } else {
        println!("{}: differs from {}:", mesh.interface, a.config.display());
        for line in audit.wireguard.iter().chain(&audit.dataplane) {
            println!("  {line}");
        }
    }
    Ok(equal)
}
