//! `wgbpf audit -c FILE`: is the interface what the file says? Compares the
//! WireGuard device (keys, port, peers, AllowedIPs, endpoints, keepalive)
//! and the data plane (programs attached, policy) with the file, changing
//! nothing. Exit 0 when equal, 1 with a readable list of differences.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use wgbpf::{
    dataplane::{
        self, attach,
        hooks::{self, HOOKS},
        pin_dir,
    },
    plan::{EnforcementPlan, Settings},
    wg::{open_backend, BackendChoice, DeviceUpdate},
};

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
    let settings = Settings::new(
        attach::AttachMode::best(),
        BackendChoice::from_env().map_err(anyhow::Error::msg)?,
    );
    let plan = EnforcementPlan::from_file(&a.config, settings)?;
    let iface = plan.interface();
    let mut audit = Audit {
        interface: iface.to_string(),
        wireguard: Vec::new(),
        dataplane: Vec::new(),
        policy_version: None,
    };
    if let Some(w) = &plan.wireguard {
        let r = open_backend(iface, settings.wg_backend)
            .and_then(|b| DeviceUpdate::new(b, w.desired.clone()))
            .context("reading the WireGuard device")?
            .report();
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
    match dataplane::open(iface)? {
        None => audit.dataplane.push(format!(
            "no wgbpf programs are attached (nothing pinned at {})",
            pin_dir(iface).display()
        )),
        Some(maps) => {
            for (hook, state) in HOOKS.iter().zip(hooks::attachment(iface)?) {
                if !state.attached() {
                    audit
                        .dataplane
                        .push(format!("program {} is pinned but not attached", hook.prog));
                } else if !state.first {
                    audit.dataplane.push(format!(
                        "program {} is not first on the tcx {} hook (another program runs before it)",
                        hook.prog, state.direction
                    ));
                }
            }
            let (_, cfg) = maps.active_slot()?;
            audit.policy_version = Some(cfg.version);
            let slots = maps.plan_counter_indexes(&plan.peer_names())?;
            if !maps.active_holds(&plan.compiled_for(&slots))? {
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
        println!("{iface}: matches {}", a.config.display());
    } else {
        println!("{iface}: differs from {}:", a.config.display());
        for line in audit.wireguard.iter().chain(&audit.dataplane) {
            println!("  {line}");
        }
    }
    Ok(equal)
}
