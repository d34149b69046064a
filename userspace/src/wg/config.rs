//! From a mesh file to the device's wanted configuration, and the
//! WireGuard step of `wgbpf load`: validate everything (key files, peers,
//! AllowedIPs, endpoints) and read the device, then — only once the caller
//! has checked the rest too — send the least change set.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{SocketAddr, ToSocketAddrs},
};

use ipnet::IpNet;
use serde::Serialize;

use super::{
    diff::reconcile,
    key::{read_key_file, Key},
    model::{ChangeSet, DeviceConfig, PeerChange, PeerConfig},
    open_backend, Backend, WgError,
};
use crate::mesh::{Mesh, WgSpec};

/// The wanted configuration, and the mesh's name of each peer.
#[derive(Debug, Clone)]
pub struct Desired {
    pub config: DeviceConfig,
    pub names: BTreeMap<Key, String>,
}

/// Validates `spec` and builds the device configuration: reads the private
/// and preshared key files, checks every peer's public key, refuses
/// AllowedIPs that two peers claim, resolves endpoints (DNS names too).
/// Errors name the file, or the peer and the field.
pub fn desired(iface: &str, spec: &WgSpec) -> Result<Desired, WgError> {
    let cfg_err = |message: String| WgError::Config {
        iface: iface.to_string(),
        message,
    };
    let key_file = spec
        .private_key_file
        .as_ref()
        .ok_or_else(|| cfg_err("private_key_file is not set".into()))?;
    // Clamped, as the device stores it, so that equal keys compare equal.
    let private_key = read_key_file(key_file)?.clamped();
    let own_public = private_key.public_key();
    let mut config = DeviceConfig {
        private_key: Some(private_key),
        listen_port: spec.listen_port,
        fwmark: spec.fwmark,
        peers: Vec::new(),
    };
    let mut names: BTreeMap<Key, String> = BTreeMap::new();
    for p in &spec.peers {
        let perr = |field: &'static str, message: String| WgError::Peer {
            peer: p.name.clone(),
            field,
            message,
        };
        let text = p.public_key.as_deref().ok_or_else(|| {
            perr(
                "public_key",
                "missing: every peer needs one when the interface has private_key_file".into(),
            )
        })?;
        let public_key = Key::from_base64(text).map_err(|w| perr("public_key", w.into()))?;
        if public_key == own_public {
            return Err(perr(
                "public_key",
                "is the interface's own public key".into(),
            ));
        }
        if let Some(other) = names.get(&public_key) {
            return Err(perr(
                "public_key",
                format!("the same key as peer `{other}`"),
            ));
        }
        let preshared_key = match &p.preshared_key_file {
            Some(f) => {
                Some(read_key_file(f).map_err(|e| perr("preshared_key_file", e.to_string()))?)
            }
            None => None,
        };
        let endpoint = match &p.endpoint {
            Some(e) => Some(resolve(e).map_err(|m| perr("endpoint", m))?),
            None => None,
        };
        names.insert(public_key.clone(), p.name.clone());
        config.peers.push(PeerConfig {
            public_key,
            preshared_key,
            endpoint,
            persistent_keepalive: p.persistent_keepalive.filter(|k| *k != 0),
            allowed_ips: p.allowed_ips.clone(),
        });
    }
    check_overlaps(spec)?;
    Ok(Desired { config, names })
}

/// `host:port` to an address, now (the daemon will re-resolve later).
fn resolve(endpoint: &str) -> Result<SocketAddr, String> {
    let mut addrs = endpoint
        .to_socket_addrs()
        .map_err(|e| format!("`{endpoint}` does not resolve: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("`{endpoint}` resolves to no address"))
}

/// No prefix of one peer may contain or equal a prefix of another: the
/// AllowedIPs are the peers' identities. Sorted by start address (wider
/// first), prefixes are nested or disjoint, so a stack of the enclosing
/// ones finds every overlap in one pass.
fn check_overlaps(spec: &WgSpec) -> Result<(), WgError> {
    let mut all: Vec<(IpNet, usize)> = Vec::new();
    for (i, p) in spec.peers.iter().enumerate() {
        let mine: BTreeSet<IpNet> = p.allowed_ips.iter().map(IpNet::trunc).collect();
        all.extend(mine.into_iter().map(|n| (n, i)));
    }
    all.sort_by(|(a, _), (b, _)| {
        (a.addr().is_ipv6(), a.network(), a.prefix_len()).cmp(&(
            b.addr().is_ipv6(),
            b.network(),
            b.prefix_len(),
        ))
    });
    let mut stack: Vec<(IpNet, usize)> = Vec::new();
    for (net, i) in all {
        while stack.last().is_some_and(|(top, _)| !top.contains(&net)) {
            stack.pop();
        }
        if let Some((top, j)) = stack.last() {
            if *j != i {
                return Err(WgError::Peer {
                    peer: spec.peers[i].name.clone(),
                    field: "allowed_ips",
                    message: format!(
                        "{net} overlaps {top} of peer `{}` (AllowedIPs must not overlap)",
                        spec.peers[*j].name
                    ),
                });
            }
        }
        stack.push((net, i));
    }
    Ok(())
}

/// Everything checked and the device read; nothing sent yet.
#[derive(Debug)]
pub struct Plan {
    backend: Box<dyn Backend>,
    pub desired: Desired,
    pub changes: ChangeSet,
}

/// What the WireGuard step did, for `wgbpf load`'s report. Public keys of
/// peers no longer in the mesh stand for their names; no private or
/// preshared key ever appears.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WgReport {
    /// "uapi" (later "kernel").
    pub backend: &'static str,
    /// Where the backend reached the device.
    pub via: String,
    /// False when the device already had this configuration: nothing sent.
    pub changed: bool,
    pub private_key_changed: bool,
    pub listen_port: Option<u16>,
    pub fwmark: Option<u32>,
    pub peers_added: Vec<String>,
    pub peers_removed: Vec<String>,
    pub peers_updated: Vec<PeerUpdated>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PeerUpdated {
    pub peer: String,
    pub fields: Vec<&'static str>,
}

impl WgReport {
    /// One line for people.
    pub fn summary(&self) -> String {
        if !self.changed {
            return "unchanged".into();
        }
        let mut parts = Vec::new();
        if self.private_key_changed {
            parts.push("private key set".to_string());
        }
        if let Some(p) = self.listen_port {
            parts.push(format!("listen port {p}"));
        }
        if let Some(m) = self.fwmark {
            parts.push(format!("fwmark {m:#x}"));
        }
        let list = |v: &[String]| v.join(", ");
        if !self.peers_added.is_empty() {
            parts.push(format!("added {}", list(&self.peers_added)));
        }
        if !self.peers_removed.is_empty() {
            parts.push(format!("removed {}", list(&self.peers_removed)));
        }
        for u in &self.peers_updated {
            parts.push(format!("{}: {}", u.peer, u.fields.join(", ")));
        }
        parts.join("; ")
    }
}

impl Plan {
    /// Validates `desired` against the device behind `backend` and computes
    /// the change set. Sends nothing.
    pub fn new(backend: Box<dyn Backend>, desired: Desired) -> Result<Plan, WgError> {
        let current = backend.get()?;
        let changes = reconcile(&desired.config, &current);
        Ok(Plan {
            backend,
            desired,
            changes,
        })
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    pub fn report(&self) -> WgReport {
        let label = |k: &Key| {
            self.desired
                .names
                .get(k)
                .cloned()
                .unwrap_or_else(|| k.to_base64())
        };
        let mut r = WgReport {
            backend: self.backend.kind(),
            via: self.backend.describe(),
            changed: !self.changes.is_empty(),
            private_key_changed: self.changes.private_key.is_some(),
            listen_port: self.changes.listen_port,
            fwmark: self.changes.fwmark,
            peers_added: Vec::new(),
            peers_removed: Vec::new(),
            peers_updated: Vec::new(),
        };
        for c in &self.changes.peers {
            match c {
                PeerChange::Add(p) => r.peers_added.push(label(&p.public_key)),
                PeerChange::Remove(k) => r.peers_removed.push(label(k)),
                PeerChange::Update(u) => r.peers_updated.push(PeerUpdated {
                    peer: label(&u.public_key),
                    fields: u.fields(),
                }),
            }
        }
        r
    }

    /// Sends the change set (nothing when it is empty).
    pub fn apply(self) -> Result<WgReport, WgError> {
        let report = self.report();
        self.backend.apply(&self.changes)?;
        Ok(report)
    }
}

/// The WireGuard step of `wgbpf load`, first half: `None` when the mesh
/// file has no `private_key_file` (the interface is managed elsewhere and
/// only the policy is enforced). Otherwise everything is validated and the
/// device read, and nothing is sent.
pub fn plan_for_mesh(mesh: &Mesh) -> Result<Option<Plan>, WgError> {
    if mesh.wg.private_key_file.is_none() {
        return Ok(None);
    }
    let desired = desired(&mesh.interface, &mesh.wg)?;
    let backend = open_backend(&mesh.interface)?;
    Plan::new(backend, desired).map(Some)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::OpenOptionsExt;

    use super::*;
    use crate::mesh::WgPeerSpec;

    fn key_file(dir: &std::path::Path, name: &str, mode: u32) -> (std::path::PathBuf, Key) {
        let k = Key::from_bytes([name.len() as u8 + 1; 32]);
        let p = dir.join(name);
        std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(mode)
            .open(&p)
            .and_then(|mut f| std::io::Write::write_all(&mut f, k.to_base64().as_bytes()))
            .unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        (p, k)
    }

    fn peer(name: &str, key: u8, ips: &[&str]) -> WgPeerSpec {
        WgPeerSpec {
            name: name.into(),
            public_key: Some(Key::from_bytes([key; 32]).to_base64()),
            allowed_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            endpoint: None,
            persistent_keepalive: None,
            preshared_key_file: None,
        }
    }

    #[test]
    fn validation_names_peer_and_field() {
        let dir = std::env::temp_dir().join(format!("wgbpf-cfgtest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (priv_file, private) = key_file(&dir, "gw.key", 0o600);
        let (psk_file, psk) = key_file(&dir, "alice.psk", 0o600);
        let mut spec = WgSpec {
            private_key_file: Some(priv_file.clone()),
            listen_port: Some(51820),
            peers: vec![
                peer("alice", 10, &["10.0.0.2/32", "fd00::2/128"]),
                peer("bob", 11, &["10.0.1.0/24"]),
            ],
            ..Default::default()
        };
        spec.peers[0].endpoint = Some("localhost:51820".into());
        spec.peers[0].preshared_key_file = Some(psk_file);
        spec.peers[0].persistent_keepalive = Some(25);
        let d = desired("wg0", &spec).unwrap();
        assert!(d.config.private_key == Some(private.clamped()));
        assert_eq!(d.config.peers.len(), 2);
        assert_eq!(d.config.peers[0].preshared_key, Some(psk));
        assert_eq!(d.config.peers[0].endpoint.unwrap().port(), 51820);
        assert_eq!(d.names[&Key::from_bytes([11; 32])], "bob");

        let err = |spec: &WgSpec| desired("wg0", spec).unwrap_err().to_string();
        let mut s = spec.clone();
        s.peers[1].allowed_ips.push("10.0.0.0/16".parse().unwrap());
        let e = err(&s);
        assert!(
            e.contains("allowed_ips") && e.contains("10.0.0.0/16"),
            "{e}"
        );
        assert!(e.contains("`alice`") && e.contains("`bob`"), "{e}");

        let mut s = spec.clone();
        s.peers[1].allowed_ips = vec!["10.0.0.2/32".parse().unwrap()];
        assert!(err(&s).contains("overlaps"));

        let mut s = spec.clone();
        s.peers[1].endpoint = Some("no-such-host.invalid:51820".into());
        let e = err(&s);
        assert!(e.starts_with("peer `bob`: endpoint:"), "{e}");

        let mut s = spec.clone();
        s.peers[1].public_key = Some("x".repeat(43) + "=");
        assert!(err(&s).starts_with("peer `bob`: public_key:"));
        s.peers[1].public_key = None;
        assert!(err(&s).starts_with("peer `bob`: public_key: missing"));
        s.peers[1].public_key = spec.peers[0].public_key.clone();
        assert!(err(&s).contains("same key as peer `alice`"));

        let (open_psk, _) = key_file(&dir, "open.psk", 0o644);
        let mut s = spec.clone();
        s.peers[1].preshared_key_file = Some(open_psk);
        let e = err(&s);
        assert!(
            e.contains("preshared_key_file") && e.contains("open.psk"),
            "{e}"
        );

        let (open_key, _) = key_file(&dir, "open.key", 0o640);
        let mut s = spec.clone();
        s.private_key_file = Some(open_key);
        let e = err(&s);
        assert!(e.starts_with("key file ") && e.contains("open.key"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
