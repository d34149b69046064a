//! `wgbpf show`: the WireGuard device as `wg show` shows it, with peer
//! names and wgbpf's ACL counters. Never prints a private or preshared key.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use wgbpf::{
    dataplane::{self, counters::PeerTotals, replace, xdp_guard, Maps},
    source,
    wg::{self, Key, PeerState},
};
use wgbpf_common::xdp::xdp_stat;

/// Show the WireGuard interface and its peers (like `wg show`), with peer
/// names and the ACL counters of wgbpf's data plane when it is loaded.
#[derive(Args)]
pub struct ShowArgs {
    #[arg(short, long, value_parser = wgbpf::ifname::parse)]
    interface: String,
    /// The mesh file, to name peers by public key. Without it, peers are
    /// named from the loaded data plane (by their AllowedIPs), if any.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// What the data plane knows about one peer.
struct Acl {
    name: Option<String>,
    totals: Option<PeerTotals>,
}

pub fn run(a: ShowArgs) -> Result<()> {
    let backend = wg::open_backend(
        &a.interface,
        wg::BackendChoice::from_env().map_err(anyhow::Error::msg)?,
    )?;
    let state = backend.get()?;
    let mut names: BTreeMap<Key, String> = BTreeMap::new();
    let mut guards: Vec<xdp_guard::GuardStatus> = Vec::new();
    if let Some(c) = &a.config {
        let mesh = source::load(c)?;
        // The XDP guard of each underlay the file names, if pinned.
        for u in mesh.guard.iter().flat_map(|g| &g.underlay) {
            match xdp_guard::status(u, &xdp_guard::pin_dir(u)) {
                Ok(s) => guards.push(s),
                Err(xdp_guard::GuardError::NotLoaded(_)) => {}
                Err(e) => return Err(e).with_context(|| format!("the XDP guard on {u}")),
            }
        }
        for p in mesh.wg.peers {
            if let Some(k) = p.public_key {
                names.insert(k, p.name);
            }
        }
    }
    let maps = dataplane::open(&a.interface).context("the data plane")?;
    let pinned_build = replace::pinned_build(&a.interface);
    let version = match &maps {
        Some(m) => Some(m.active_slot()?.1.version),
        None => None,
    };
    let mut peers: Vec<(&PeerState, Acl)> = Vec::new();
    for p in &state.peers {
        let acl = match &maps {
            Some(m) => acl_of(m, p, names.get(&p.config.public_key))?,
            None => Acl {
                name: None,
                totals: None,
            },
        };
        peers.push((p, acl));
    }
    let name_of = |p: &PeerState, acl: &Acl| {
        names
            .get(&p.config.public_key)
            .cloned()
            .or_else(|| acl.name.clone())
    };
    peers.sort_by_key(|(p, acl)| {
        (
            name_of(p, acl).is_none(),
            name_of(p, acl),
            p.config.public_key.to_base64(),
        )
    });

    if a.json {
        let list: Vec<_> = peers
            .iter()
            .map(|(p, acl)| {
                json!({
                    "name": name_of(p, acl),
                    "public_key": p.config.public_key.to_base64(),
                    "preshared_key": p.config.preshared_key.is_some(),
                    "endpoint": p.config.endpoint,
                    "allowed_ips": p.config.allowed_ips,
                    "latest_handshake": p.last_handshake.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).map(|d| d.as_secs()),
                    "rx_bytes": p.rx_bytes,
                    "tx_bytes": p.tx_bytes,
                    "persistent_keepalive": p.config.persistent_keepalive,
                    "acl": acl.totals,
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "interface": state.interface,
                "backend": backend.kind(),
                "public_key": state.public_key.as_ref().map(Key::to_base64),
                "listen_port": state.listen_port,
                "fwmark": state.fwmark,
                "dataplane": version.map(|v| json!({
                    "policy_version": v,
                    "build": pinned_build,
                    "this_build": replace::build_id(),
                })),
                "peers": list,
                "xdp_guards": guards.iter().map(|g| json!({
                    "underlay": g.iface,
                    "mode": g.mode.as_str(),
                    "attached": g.attached,
                    "counters": g.counters.iter().map(|(n, c)| (n.to_string(), *c)).collect::<BTreeMap<_, _>>(),
                })).collect::<Vec<_>>(),
            })
        );
        return Ok(());
    }
    println!("interface: {}", state.interface);
    if let Some(k) = &state.public_key {
        println!("  public key: {}", k.to_base64());
    }
    println!("  private key: (hidden)");
    if state.listen_port != 0 {
        println!("  listen port: {}", state.listen_port);
    }
    if state.fwmark != 0 {
        println!("  fwmark: {:#x}", state.fwmark);
    }
    match version {
        Some(v) => {
            println!("  wgbpf: data plane loaded, policy version {v}");
            let this = replace::build_id();
            match pinned_build.as_deref() {
                Some(b) if b == this => println!("  wgbpf build: {b} (this binary's)"),
                Some(b) => println!(
                    "  wgbpf build: {b}, not this binary's ({this}): `wgbpf load` replaces it"
                ),
                None => println!(
                    "  wgbpf build: not recorded (an older wgbpf): `wgbpf load` replaces it"
                ),
            }
        }
        None => println!("  wgbpf: no data plane loaded"),
    }
    for g in &guards {
        let (passed, dropped) =
            g.counters
                .iter()
                .enumerate()
                .fold((0, 0), |(p, d), (i, (_, n))| {
                    if i < xdp_stat::FIRST_DROP as usize {
                        (p + n, d)
                    } else {
                        (p, d + n)
                    }
                });
        println!(
            "  XDP guard on {}: {} mode, {}; {passed} passed, {dropped} dropped",
            g.iface,
            g.mode.as_str(),
            if g.attached {
                "attached"
            } else {
                "NOT attached"
            }
        );
    }
    for (p, acl) in &peers {
        println!();
        let key = p.config.public_key.to_base64();
        match name_of(p, acl) {
            Some(n) => {
                println!("peer: {n}");
                println!("  public key: {key}");
            }
            None => println!("peer: {key}"),
        }
        if p.config.preshared_key.is_some() {
            println!("  preshared key: (hidden)");
        }
        if let Some(e) = p.config.endpoint {
            println!("  endpoint: {e}");
        }
        let ips: Vec<String> = p.config.allowed_ips.iter().map(|n| n.to_string()).collect();
        println!(
            "  allowed ips: {}",
            if ips.is_empty() {
                "(none)".into()
            } else {
                ips.join(", ")
            }
        );
        if let Some(t) = p.last_handshake {
            let ago = SystemTime::now().duration_since(t).unwrap_or_default();
            println!("  latest handshake: {} ago", human_duration(ago));
        }
        if p.rx_bytes != 0 || p.tx_bytes != 0 {
            println!(
                "  transfer: {} received, {} sent",
                human_bytes(p.rx_bytes),
                human_bytes(p.tx_bytes)
            );
        }
        if let Some(k) = p.config.persistent_keepalive {
            println!("  persistent keepalive: every {k} seconds");
        }
        if let Some(t) = &acl.totals {
            println!(
                "  acl: in {} allowed, {} denied, {} audited; out {} allowed, {} denied, {} audited (packets)",
                t.ingress.allowed_packets,
                t.ingress.denied_packets,
                t.ingress.audited_packets,
                t.egress.allowed_packets,
                t.egress.denied_packets,
                t.egress.audited_packets
            );
        }
    }
    Ok(())
}

/// The data plane's name and counters of `p`: its counter slot is found by
/// name (given by the mesh file), else by looking up its AllowedIPs in the
/// active policy's address map.
fn acl_of(maps: &Maps, p: &PeerState, name: Option<&String>) -> Result<Acl> {
    let slots = maps.counter_owners()?;
    let by_name = name.and_then(|n| slots.iter().find(|(_, s)| *s == n).map(|(i, _)| *i));
    let slot = match by_name {
        Some(s) => Some(s),
        None => {
            let mut found = None;
            for net in &p.config.allowed_ips {
                found = maps.peer_of_address(net.network())?;
                if found.is_some() {
                    break;
                }
            }
            found
        }
    };
    Ok(match slot {
        Some(s) => Acl {
            name: slots.get(&s).cloned(),
            totals: Some(maps.peer_totals(s)?),
        },
        None => Acl {
            name: None,
            totals: None,
        },
    })
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let parts = [
        (s / 86400, "day"),
        ((s / 3600) % 24, "hour"),
        ((s / 60) % 60, "minute"),
        (s % 60, "second"),
    ];
    let out: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n != 0)
        .map(|(n, u)| format!("{n} {u}{}", if *n == 1 { "" } else { "s" }))
        .collect();
    if out.is_empty() {
        "0 seconds".into()
    } else {
        out.join(", ")
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}
