//! `wgbpf counters`: what the data plane allowed, denied and audited.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;
use wgbpf::{
    dataplane::{self, peers::peer_label},
    policy::model::proto_name,
    source,
};

/// Show per-peer allowed, denied and audited counters and the top denies.
#[derive(Args)]
pub struct CountersArgs {
    /// The interface (or give the mesh file with -c).
    #[arg(short, long, required_unless_present = "config", value_parser = wgbpf::ifname::parse)]
    interface: Option<String>,
    /// The mesh file, to take the interface from.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: CountersArgs) -> Result<()> {
    let iface = interface_of(a.interface, a.config)?;
    show_counters(&iface, a.json)
}

fn interface_of(interface: Option<String>, config: Option<PathBuf>) -> Result<String> {
    match (interface, config) {
        (Some(i), _) => Ok(i),
        (None, Some(c)) => Ok(source::load(&c)?.interface),
        (None, None) => bail!("give the interface (-i) or the mesh file (-c)"),
    }
}

fn show_counters(iface: &str, json: bool) -> Result<()> {
    let maps = dataplane::open_loaded(iface)?;
    let (_, slot) = maps.active_slot()?;
    let slots = maps.counter_owners()?;
    let name_of = |idx: u32| peer_label(&slots, idx);
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
        let [ia, id, iu, ea, ed, eu] = t.packets();
        println!("{name:<16} {ia:>10} {id:>10} {iu:>10} {ea:>10} {ed:>10} {eu:>10}");
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
