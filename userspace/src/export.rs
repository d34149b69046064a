//! A peer's own WireGuard configuration, written from the gateway's mesh
//! file (`wgbpf export wg-quick`): its interface (address, DNS, MTU) and
//! the gateway as its one peer (public key, public endpoint, AllowedIPs,
//! keepalive). So peers' configs are not edited by hand, one by one.
//!
//! The gateway's AllowedIPs in the peer's config are what the policy lets
//! the peer reach (each accept rule whose source holds the peer: its
//! destinations; `*` is every address of the mesh) and the gateway's own
//! addresses, unless the peer's `export_allowed_ips` says otherwise.
//! Routing more than the policy allows would be harmless (the gateway
//! drops it); routing less would hide what is allowed.
//!
//! Secrets (the peer's private key, the preshared key) are written only
//! when the caller has them read from files ([`Secrets`]); otherwise their
//! lines are comments saying where they come from. Nothing is invented.

use std::net::IpAddr;

use ipnet::IpNet;
use thiserror::Error;

use crate::{
    mesh::{Mesh, WgPeerSpec},
    policy::model::{Action, Selector},
    wg::{model::normalize, Key},
};

/// Keepalive written for a peer the file gives no endpoint (it reaches
/// the gateway from behind NAT, or roams): wg-quick's usual 25 s.
pub const NAT_KEEPALIVE: u16 = 25;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ExportError {
    #[error("no peer `{0}` in the mesh file")]
    NoPeer(String),
    #[error("[interface] public_endpoint is not set: the address:port where peers reach the gateway (docs/mesh-file.md)")]
    NoPublicEndpoint,
    #[error("peer `{0}`: no address for its own interface: set `address` (its AllowedIPs on the gateway have no /32 or /128)")]
    NoAddress(String),
}

/// The keys the caller read: the gateway's public key (always), and the
/// secrets when the operator named their files.
#[derive(Debug, Clone)]
pub struct Secrets {
    pub gateway_public_key: Key,
    pub private_key: Option<Key>,
    pub preshared_key: Option<Key>,
}

/// An exported configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub text: String,
    /// True when `text` holds a private or preshared key.
    pub has_secrets: bool,
}

/// The peer's own addresses: `address`, or its host AllowedIPs.
pub fn peer_addresses(p: &WgPeerSpec) -> Vec<IpNet> {
    if !p.address.is_empty() {
        return p.address.clone();
    }
    p.allowed_ips
        .iter()
        .filter(|n| n.prefix_len() == n.max_prefix_len())
        .copied()
        .collect()
}

/// What the policy lets a peer at `addrs` reach, and the gateway.
pub fn reach(mesh: &Mesh, addrs: &[IpAddr]) -> Vec<IpNet> {
    let policy = &mesh.policy;
    let everything: Vec<IpNet> = policy
        .peers
        .iter()
        .flat_map(|p| p.allowed_ips.iter().copied())
        .chain(policy.local.iter().copied())
        .collect();
    let mut nets: Vec<IpNet> = policy
        .local
        .iter()
        .map(|l| IpNet::new(l.addr(), l.max_prefix_len()).expect("a host prefix"))
        .collect();
    for r in &policy.rules {
        if r.action != Action::Accept || !addrs.iter().any(|a| r.src.matches(*a)) {
            continue;
        }
        match &r.dst {
            Selector::Any => nets.extend(everything.iter().copied()),
            Selector::Prefixes(p) => nets.extend(p.iter().copied()),
        }
    }
    // The peer's own addresses route to itself, not to the gateway.
    nets.retain(|n| {
        !addrs
            .iter()
            .any(|a| n.prefix_len() == n.max_prefix_len() && n.addr() == *a)
    });
    let all: Vec<IpNet> = normalize(&nets).into_iter().collect();
    all.iter()
        .filter(|n| !all.iter().any(|w| w != *n && w.contains(*n)))
        .copied()
        .collect()
}

fn join(nets: &[IpNet]) -> String {
    nets.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The wg-quick file of peer `name`.
pub fn wg_quick(
    mesh: &Mesh,
    source: &str,
    name: &str,
    keys: &Secrets,
) -> Result<Exported, ExportError> {
    let p = mesh
        .wg
        .peers
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ExportError::NoPeer(name.to_string()))?;
    let endpoint = mesh
        .wg
        .public_endpoint
        .as_ref()
        .ok_or(ExportError::NoPublicEndpoint)?;
    let addresses = peer_addresses(p);
    if addresses.is_empty() {
        return Err(ExportError::NoAddress(name.to_string()));
    }
    let (allowed, why) = match &p.export_allowed_ips {
        Some(set) => (set.clone(), "the peer's export_allowed_ips"),
        None => (
            reach(
                mesh,
                &addresses.iter().map(|a| a.addr()).collect::<Vec<_>>(),
            ),
            "what the policy lets it reach, and the gateway",
        ),
    };
    let keepalive = match (p.persistent_keepalive, &p.endpoint) {
        (Some(k), _) => Some(k).filter(|k| *k != 0),
        (None, None) => Some(NAT_KEEPALIVE),
        (None, Some(_)) => None,
    };
    let mut t = String::new();
    t += &format!(
        "# wg-quick configuration of peer `{name}` of the gateway's {}, written by wgbpf\n\
         # export from {source}. Gateway AllowedIPs: {why}.\n",
        mesh.interface
    );
    t += "[Interface]\n";
    match &keys.private_key {
        Some(k) => t += &format!("PrivateKey = {}\n", k.to_base64()),
        None => {
            t += &format!(
                "# PrivateKey = (the private key of `{name}`: on its device, `wg genkey`; or give wgbpf export --private-key-file)\n"
            )
        }
    }
    t += &format!("Address = {}\n", join(&addresses));
    if !mesh.wg.dns.is_empty() {
        t += &format!("DNS = {}\n", mesh.wg.dns.join(", "));
    }
    if let Some(m) = mesh.wg.mtu {
        t += &format!("MTU = {m}\n");
    }
    t += "\n[Peer]\n";
    t += &format!("# the gateway ({})\n", mesh.interface);
    t += &format!("PublicKey = {}\n", keys.gateway_public_key.to_base64());
    match (&keys.preshared_key, &p.preshared_key_file) {
        (Some(k), _) => t += &format!("PresharedKey = {}\n", k.to_base64()),
        (None, Some(f)) => {
            t += &format!(
                "# PresharedKey = (the contents of {} on the gateway; or give wgbpf export --private-key-file)\n",
                f.display()
            )
        }
        (None, None) => {}
    }
    t += &format!("Endpoint = {endpoint}\n");
    t += &format!("AllowedIPs = {}\n", join(&allowed));
    if let Some(k) = keepalive {
        t += &format!("PersistentKeepalive = {k}\n");
    }
    Ok(Exported {
        text: t,
        has_secrets: keys.private_key.is_some() || keys.preshared_key.is_some(),
    })
}

/// The text as a QR code drawn with Unicode half blocks (two modules per
/// character cell), dark on light, with the quiet zone: what a phone's
/// WireGuard app scans from a terminal.
pub fn qr_terminal(text: &str) -> Result<String, qrcode::types::QrError> {
    let code = qrcode::QrCode::new(text.as_bytes())?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .build())
}

/// The text as a QR code in a greyscale PNG, `scale` pixels per module,
/// with a four-module quiet zone.
pub fn qr_png(text: &str, scale: u32) -> Result<Vec<u8>, String> {
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(|e| e.to_string())?;
    let width = code.width() as u32;
    let colors = code.to_colors();
    let side = (width + 8) * scale;
    let mut pixels = vec![255u8; (side * side) as usize];
    for (i, c) in colors.iter().enumerate() {
        if *c != qrcode::Color::Dark {
            continue;
        }
        let (mx, my) = (i as u32 % width + 4, i as u32 / width + 4);
        for y in my * scale..(my + 1) * scale {
            let row = (y * side) as usize;
            pixels[row + (mx * scale) as usize..row + ((mx + 1) * scale) as usize].fill(0);
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, side, side);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| e.to_string())?;
        w.write_image_data(&pixels).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESH: &str = r#"
[interface]
name = "wg0"
addresses = ["10.9.0.1/24", "fd09::1/64"]
public_endpoint = "vpn.example.com:51820"
dns = ["10.9.0.1", "corp.example"]

[[peer]]
name = "alice"
public_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
allowed_ips = ["10.9.0.2/32", "fd09::2/128"]

[[peer]]
name = "bob"
public_key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
allowed_ips = ["10.9.0.3/32"]
endpoint = "192.0.2.3:51820"

[[peer]]
name = "carol"
public_key = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="
allowed_ips = ["10.9.0.4/32", "10.50.0.0/16"]
address = ["10.9.0.4/32"]
export_allowed_ips = ["10.9.0.0/24"]

[policy]
[[policy.rule]]
action = "accept"
from = ["alice"]
to = ["bob"]
proto = "udp"
ports = [53]

[[policy.rule]]
action = "accept"
from = ["bob"]
to = ["*"]
proto = "tcp"

[[policy.rule]]
action = "deny"
from = ["alice"]
to = ["carol"]
"#;

    fn keys() -> Secrets {
        Secrets {
            gateway_public_key: Key::from_bytes([9; 32]),
            private_key: None,
            preshared_key: None,
        }
    }

    #[test]
    fn allowed_ips_follow_the_policy_and_the_settings() {
        let mesh = crate::source::parse("m.toml", MESH).unwrap();
        let a = wg_quick(&mesh, "m.toml", "alice", &keys()).unwrap();
        assert!(!a.has_secrets);
        assert!(a.text.contains("# PrivateKey = "), "{}", a.text);
        assert!(a.text.contains("Address = 10.9.0.2/32, fd09::2/128\n"));
        assert!(a.text.contains("DNS = 10.9.0.1, corp.example\n"));
        assert!(a.text.contains("Endpoint = vpn.example.com:51820\n"));
        // The gateway, and bob (udp/53); not carol (denied), not herself.
        assert!(
            a.text
                .contains("AllowedIPs = 10.9.0.1/32, 10.9.0.3/32, fd09::1/128\n"),
            "{}",
            a.text
        );
        // No endpoint in the file: behind NAT, keepalive.
        assert!(a.text.contains("PersistentKeepalive = 25\n"));
        // bob may reach everything: the whole mesh, aggregated; he has an
        // endpoint, so no keepalive unless set.
        let b = wg_quick(&mesh, "m.toml", "bob", &keys()).unwrap();
        assert!(
            b.text.contains(
                "AllowedIPs = 10.9.0.1/32, 10.9.0.2/32, 10.9.0.4/32, 10.50.0.0/16, fd09::1/128, fd09::2/128\n"
            ),
            "{}",
            b.text
        );
        assert!(!b.text.contains("PersistentKeepalive"));
        // carol: her settings win.
        let c = wg_quick(&mesh, "m.toml", "carol", &keys()).unwrap();
        assert!(c.text.contains("Address = 10.9.0.4/32\n"));
        assert!(c.text.contains("AllowedIPs = 10.9.0.0/24\n"));
        // Secrets only when given.
        let mut k = keys();
        k.private_key = Some(Key::from_bytes([7; 32]));
        let s = wg_quick(&mesh, "m.toml", "alice", &k).unwrap();
        assert!(s.has_secrets);
        assert!(s.text.contains(&format!(
            "PrivateKey = {}\n",
            Key::from_bytes([7; 32]).to_base64()
        )));
        assert_eq!(
            wg_quick(&mesh, "m.toml", "dave", &keys()),
            Err(ExportError::NoPeer("dave".into()))
        );
        let none = crate::source::parse(
            "m.toml",
            &MESH.replace("public_endpoint = \"vpn.example.com:51820\"\n", ""),
        )
        .unwrap();
        assert_eq!(
            wg_quick(&none, "m.toml", "alice", &keys()),
            Err(ExportError::NoPublicEndpoint)
        );
    }
}
