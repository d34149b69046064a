//! `wgbpf show`: the WireGuard device as `wg show` shows it, with peer
//! names and wgbpf's ACL counters. Never prints a private or preshared key.

use std::{
    collections::BTreeMap,
    io::IsTerminal,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use wgbpf::{
    dataplane::{self, counters::PeerTotals, replace, xdp_guard, Maps},
    source,
    wg::{self, Key, PeerState},
};
use wgbpf_common::xdp::xdp_stat;

/// Show WireGuard interfaces and their peers as `wg show` does, with peer
/// names and the ACL counters of wgbpf's data plane where it is loaded.
///
/// `wgbpf show` shows every WireGuard interface of this network namespace;
/// `wgbpf show IFACE` (or `-i IFACE`) one; `wgbpf show [IFACE|all] dump`
/// prints wg(8)'s tab-separated dump with wgbpf's columns appended (the
/// private and preshared keys as `(hidden)`).
#[derive(Args)]
pub struct ShowArgs {
    /// `[IFACE | all] [dump]`, as `wg show` takes them.
    #[arg(value_name = "IFACE|all|dump", num_args = 0..=2)]
    what: Vec<String>,
    /// The interface (the same as naming it first).
    #[arg(short, long, value_parser = wgbpf::ifname::parse)]
    interface: Option<String>,
    /// The mesh file, to name peers by public key. Without it, peers are
    /// named from the loaded data plane (by their AllowedIPs), if any.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Print JSON instead of text (an object for one interface, an array
    /// for all).
    #[arg(long, conflicts_with = "color")]
    json: bool,
    /// Colour: on a terminal unless NO_COLOR is set (auto), always, never.
    #[arg(long, value_enum, default_value_t = ColorMode::Auto)]
    color: ColorMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorMode {
    Auto,
    Always,
    Never,
}

/// What the data plane knows about one peer.
struct Acl {
    name: Option<String>,
    totals: Option<PeerTotals>,
}

/// One interface, read.
struct View {
    backend: &'static str,
    state: wg::DeviceState,
    /// Peers in the device's order, with their names and counters.
    peers: Vec<(PeerState, Option<String>, Option<PeerTotals>)>,
    version: Option<u32>,
    pinned_build: Option<String>,
    guards: Vec<xdp_guard::GuardStatus>,
}

/// The interfaces to show and whether as a dump.
fn targets(a: &ShowArgs) -> Result<(Vec<String>, bool, bool)> {
    let mut words = a.what.iter().map(String::as_str).collect::<Vec<_>>();
    let dump = words.last() == Some(&"dump");
    if dump {
        words.pop();
    }
    let named = match (words.as_slice(), &a.interface) {
        ([], None) | (["all"], None) => None,
        ([], Some(i)) => Some(i.clone()),
        ([w], None) => Some(wgbpf::ifname::parse(w).map_err(anyhow::Error::msg)?),
        ([_], Some(_)) => bail!("name the interface once (-i or first word)"),
        _ => bail!("expected `[IFACE | all] [dump]`"),
    };
    Ok(match named {
        Some(i) => (vec![i], dump, true),
        None => (wg::list_interfaces(), dump, false),
    })
}

pub fn run(a: ShowArgs) -> Result<()> {
    let (ifaces, dump, single) = targets(&a)?;
    let mesh = a.config.as_deref().map(source::load).transpose()?;
    let views = ifaces
        .iter()
        .map(|i| {
            // One interface named: the file names its peers. All: each
            // file applies to the interface it names.
            let m = mesh.as_ref().filter(|m| single || m.interface == *i);
            read_view(i, m).with_context(|| i.clone())
        })
        .collect::<Result<Vec<_>>>()?;
    if a.json {
        let list: Vec<_> = views.iter().map(json_of).collect();
        match (single, list.as_slice()) {
            (true, [one]) => println!("{one}"),
            _ => println!("{}", serde_json::Value::Array(list)),
        }
        return Ok(());
    }
    if dump {
        for v in &views {
            print!("{}", dump_of(v, !single));
        }
        return Ok(());
    }
    let style = Style::new(a.color);
    let texts: Vec<String> = views.iter().map(|v| text_of(v, &style)).collect();
    print!("{}", texts.join("\n"));
    Ok(())
}

fn read_view(iface: &str, mesh: Option<&wgbpf::mesh::Mesh>) -> Result<View> {
    let backend = wg::open_backend(
        iface,
        wg::BackendChoice::from_env().map_err(anyhow::Error::msg)?,
    )?;
    let state = backend.get()?;
    let mut names: BTreeMap<Key, String> = BTreeMap::new();
    let mut guards: Vec<xdp_guard::GuardStatus> = Vec::new();
    if let Some(mesh) = mesh {
        // The XDP guard of each underlay the file names, if pinned.
        for u in mesh.guard.iter().flat_map(|g| &g.underlay) {
            match xdp_guard::status(u, &xdp_guard::pin_dir(u)) {
                Ok(s) => guards.push(s),
                Err(xdp_guard::GuardError::NotLoaded(_)) => {}
                Err(e) => return Err(e).with_context(|| format!("the XDP guard on {u}")),
            }
        }
        for p in &mesh.wg.peers {
            if let Some(k) = &p.public_key {
                names.insert(k.clone(), p.name.clone());
            }
            if let Some(r) = &p.rotation {
                names.insert(
                    r.previous_public_key.clone(),
                    format!("{} (previous key)", p.name),
                );
            }
        }
    }
    let maps = dataplane::open(iface).context("the data plane")?;
    let version = match &maps {
        Some(m) => Some(m.active_slot()?.1.version),
        None => None,
    };
    let mut peers = Vec::new();
    for p in &state.peers {
        let named = names.get(&p.config.public_key);
        let acl = match &maps {
            Some(m) => acl_of(m, p, named)?,
            None => Acl {
                name: None,
                totals: None,
            },
        };
        peers.push((p.clone(), named.cloned().or(acl.name), acl.totals));
    }
    Ok(View {
        backend: backend.kind(),
        state,
        peers,
        version,
        pinned_build: replace::pinned_build(iface),
        guards,
    })
}

fn unix(t: Option<SystemTime>) -> u64 {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

fn json_of(v: &View) -> serde_json::Value {
    let list: Vec<_> = v
        .peers
        .iter()
        .map(|(p, name, totals)| {
            json!({
                "name": name,
                "public_key": p.config.public_key.to_base64(),
                "preshared_key": p.config.preshared_key.is_some(),
                "endpoint": p.config.endpoint,
                "allowed_ips": p.config.allowed_ips,
                "latest_handshake": p.last_handshake.map(|t| unix(Some(t))),
                "rx_bytes": p.rx_bytes,
                "tx_bytes": p.tx_bytes,
                "persistent_keepalive": p.config.persistent_keepalive,
                "acl": totals,
            })
        })
        .collect();
    json!({
        "interface": v.state.interface,
        "backend": v.backend,
        "public_key": v.state.public_key.as_ref().map(Key::to_base64),
        "listen_port": v.state.listen_port,
        "fwmark": v.state.fwmark,
        "dataplane": v.version.map(|ver| json!({
            "policy_version": ver,
            "build": v.pinned_build,
            "this_build": replace::build_id(),
        })),
        "peers": list,
        "xdp_guards": v.guards.iter().map(|g| json!({
            "underlay": g.iface,
            "mode": g.mode.as_str(),
            "attached": g.attached,
            "counters": g.counters.iter().map(|(n, c)| (n.to_string(), *c)).collect::<BTreeMap<_, _>>(),
        })).collect::<Vec<_>>(),
    })
}

/// wg(8)'s dump, keys hidden, with wgbpf's columns appended to each peer
/// line: name, then allowed/denied/audited packets in, then out (`-`
/// without a data plane). `prefix`: each line starts with the interface,
/// as `wg show all dump` does.
fn dump_of(v: &View, prefix: bool) -> String {
    let mut out = String::new();
    let pre = if prefix {
        format!("{}\t", v.state.interface)
    } else {
        String::new()
    };
    let or = |s: Option<String>, none: &str| s.unwrap_or_else(|| none.to_string());
    out.push_str(&format!(
        "{pre}(hidden)\t{}\t{}\t{}\n",
        or(v.state.public_key.as_ref().map(Key::to_base64), "(none)"),
        v.state.listen_port,
        if v.state.fwmark == 0 {
            "off".to_string()
        } else {
            format!("0x{:x}", v.state.fwmark)
        }
    ));
    for (p, name, totals) in &v.peers {
        let ips: Vec<String> = p.config.allowed_ips.iter().map(|n| n.to_string()).collect();
        let acl = match totals {
            Some(t) => t.packets().map(|n| n.to_string()).join("\t"),
            None => ["-"; 6].join("\t"),
        };
        out.push_str(&format!(
            "{pre}{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{acl}\n",
            p.config.public_key.to_base64(),
            if p.config.preshared_key.is_some() {
                "(hidden)"
            } else {
                "(none)"
            },
            or(p.config.endpoint.map(|e| e.to_string()), "(none)"),
            if ips.is_empty() {
                "(none)".to_string()
            } else {
                ips.join(",")
            },
            unix(p.last_handshake),
            p.rx_bytes,
            p.tx_bytes,
            p.config
                .persistent_keepalive
                .filter(|k| *k != 0)
                .map_or_else(|| "off".to_string(), |k| k.to_string()),
            name.as_deref().unwrap_or("-"),
        ));
    }
    out
}

/// wg(8)'s colours: the interface green, peers yellow, labels bold.
struct Style {
    on: bool,
}

impl Style {
    fn new(mode: ColorMode) -> Style {
        let on = match mode {
            ColorMode::Always => true,
            ColorMode::Never => false,
            ColorMode::Auto => {
                std::io::stdout().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none()
                    && std::env::var("WG_COLOR_MODE").as_deref() != Ok("never")
                    && std::env::var("TERM").as_deref() != Ok("dumb")
            }
        };
        Style { on }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// `  label: value`, the label bold.
    fn field(&self, label: &str, value: impl std::fmt::Display) -> String {
        format!("  {}: {value}\n", self.paint("1", label))
    }

    fn head(&self, colour: &str, label: &str, value: &str) -> String {
        format!(
            "{}: {}\n",
            self.paint(&format!("1;{colour}"), label),
            self.paint(colour, value)
        )
    }
}

fn text_of(v: &View, st: &Style) -> String {
    let s = &v.state;
    let mut out = st.head("32", "interface", &s.interface);
    if let Some(k) = &s.public_key {
        out += &st.field("public key", k.to_base64());
    }
    out += &st.field("private key", "(hidden)");
    if s.listen_port != 0 {
        out += &st.field("listening port", s.listen_port);
    }
    if s.fwmark != 0 {
        out += &st.field("fwmark", format!("0x{:x}", s.fwmark));
    }
    match v.version {
        Some(ver) => {
            out += &st.field("wgbpf", format!("data plane loaded, policy version {ver}"));
            let this = replace::build_id();
            out += &st.field(
                "wgbpf build",
                match v.pinned_build.as_deref() {
                    Some(b) if b == this => format!("{b} (this binary's)"),
                    Some(b) => format!("{b}, not this binary's ({this}): `wgbpf load` replaces it"),
                    None => "not recorded (an older wgbpf): `wgbpf load` replaces it".to_string(),
                },
            );
        }
        None => out += &st.field("wgbpf", "no data plane loaded"),
    }
    for g in &v.guards {
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
        out += &st.field(
            &format!("XDP guard on {}", g.iface),
            format!(
                "{} mode, {}; {passed} passed, {dropped} dropped",
                g.mode.as_str(),
                if g.attached {
                    "attached"
                } else {
                    "NOT attached"
                }
            ),
        );
    }
    // As wg(8): the most recent handshake first, peers without one last.
    let mut peers: Vec<_> = v.peers.iter().collect();
    peers.sort_by_key(|(p, name, _)| {
        (
            std::cmp::Reverse(p.last_handshake),
            name.clone(),
            p.config.public_key.to_base64(),
        )
    });
    for (p, name, totals) in peers {
        out.push('\n');
        out += &st.head("33", "peer", &p.config.public_key.to_base64());
        if let Some(n) = name {
            out += &st.field("name", n);
        }
        if p.config.preshared_key.is_some() {
            out += &st.field("preshared key", "(hidden)");
        }
        if let Some(e) = p.config.endpoint {
            out += &st.field("endpoint", e);
        }
        let ips: Vec<String> = p.config.allowed_ips.iter().map(|n| n.to_string()).collect();
        out += &st.field(
            "allowed ips",
            if ips.is_empty() {
                "(none)".into()
            } else {
                ips.join(", ")
            },
        );
        if let Some(t) = p.last_handshake {
            let ago = SystemTime::now().duration_since(t).unwrap_or_default();
            out += &st.field("latest handshake", format!("{} ago", human_duration(ago)));
        }
        if p.rx_bytes != 0 || p.tx_bytes != 0 {
            out += &st.field(
                "transfer",
                format!(
                    "{} received, {} sent",
                    human_bytes(p.rx_bytes),
                    human_bytes(p.tx_bytes)
                ),
            );
        }
        if let Some(k) = p.config.persistent_keepalive.filter(|k| *k != 0) {
            out += &st.field("persistent keepalive", format!("every {k} seconds"));
        }
        if let Some(t) = totals {
            let [ia, id, iu, ea, ed, eu] = t.packets();
            out += &st.field(
                "acl",
                format!(
                    "in {ia} allowed, {id} denied, {iu} audited; out {ea} allowed, {ed} denied, {eu} audited (packets)"
                ),
            );
        }
    }
    out
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
