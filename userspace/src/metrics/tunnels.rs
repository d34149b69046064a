//! WireGuard tunnel metrics: per-peer transfer and handshakes, read from
//! the device (`crate::wg::open_backend(iface).get()`) at scrape time.
//!
//! Neither the kernel nor the UAPI reports how many handshakes a peer has
//! made, only the time of the latest one. [`Tunnels`] derives
//! `wireguard_tunnel_handshakes_total` by counting the changes of that time
//! it observes — at every scrape and at every drift-repair pass. Two
//! handshakes between two observations count as one, so the count is a
//! lower bound whenever handshakes come more often than observations (an
//! active peer re-handshakes about every two minutes; scrapes every 15 s
//! and passes every 5 s see each one). See docs/metrics.md.

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use crate::{
    mesh::Mesh,
    wg::{DeviceState, Key},
};

/// One peer's figures at one observation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelSample {
    /// The peer's name in the mesh file, or its public key (base64).
    pub peer: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Unix seconds of the latest handshake; 0 when never.
    pub last_handshake_seconds: u64,
    /// Changes of the latest-handshake time observed (a lower bound of the
    /// handshakes made), since this process started.
    pub handshakes: u64,
}

#[derive(Debug, Default)]
struct Seen {
    last: Option<SystemTime>,
    count: u64,
}

#[derive(Debug, Default)]
struct Inner {
    /// Public key → name, from the mesh file last enforced.
    names: BTreeMap<Key, String>,
    seen: BTreeMap<Key, Seen>,
}

/// Peer names and handshake observations, shared by the collector (each
/// scrape) and the drift repair (each pass).
#[derive(Debug, Default)]
pub struct Tunnels {
    inner: Mutex<Inner>,
}

impl Tunnels {
    /// Takes the peers' names from the mesh file being enforced (peers
    /// without a valid public key are left out; they fall back to their
    /// key, which they do not have).
    pub fn set_names(&self, mesh: &Mesh) {
        let names = mesh
            .wg
            .peers
            .iter()
            .filter_map(|p| Some((p.public_key.clone()?, p.name.clone())))
            .collect();
        if let Ok(mut i) = self.inner.lock() {
            i.names = names;
        }
    }

    /// Records one observation of the device and returns every peer's
    /// figures, sorted by label. A peer seen for the first time with a
    /// handshake counts 1 (there was at least that one); each later change
    /// of its latest-handshake time counts 1 more. Peers no longer on the
    /// device are forgotten (their series end; re-added, they start at 0).
    pub fn observe(&self, state: &DeviceState) -> Vec<TunnelSample> {
        let Ok(mut guard) = self.inner.lock() else {
            return Vec::new();
        };
        let inner = &mut *guard;
        inner
            .seen
            .retain(|k, _| state.peers.iter().any(|p| &p.config.public_key == k));
        let mut out = Vec::with_capacity(state.peers.len());
        for p in &state.peers {
            let key = &p.config.public_key;
            let seen = inner.seen.entry(key.clone()).or_default();
            if p.last_handshake.is_some() && p.last_handshake != seen.last {
                seen.count += 1;
            }
            if p.last_handshake.is_some() {
                seen.last = p.last_handshake;
            }
            out.push(TunnelSample {
                peer: inner
                    .names
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| key.to_base64()),
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
                last_handshake_seconds: p
                    .last_handshake
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs()),
                handshakes: seen.count,
            });
        }
        out.sort_by(|a, b| a.peer.cmp(&b.peer));
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::wg::{PeerConfig, PeerState};

    fn state(peers: &[(u8, Option<u64>)]) -> DeviceState {
        DeviceState {
            peers: peers
                .iter()
                .map(|(k, t)| PeerState {
                    config: PeerConfig::new(Key::from_bytes([*k; 32])),
                    last_handshake: t.map(|s| UNIX_EPOCH + Duration::from_secs(s)),
                    rx_bytes: 10,
                    tx_bytes: 20,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn handshakes_count_changes_observed() {
        let t = Tunnels::default();
        let mesh = crate::source::parse(
            "m.toml",
            &format!(
                "[interface]\nname = \"wg0\"\n[[peer]]\nname = \"alice\"\npublic_key = \"{}\"\n\
                 allowed_ips = [\"10.0.0.2/32\"]\n",
                Key::from_bytes([1; 32]).to_base64()
            ),
        )
        .unwrap();
        t.set_names(&mesh);
        let s = t.observe(&state(&[(1, None), (2, Some(100))]));
        assert_eq!(s.len(), 2);
        let alice = s.iter().find(|x| x.peer == "alice").unwrap();
        assert_eq!((alice.handshakes, alice.last_handshake_seconds), (0, 0));
        let other = s.iter().find(|x| x.peer != "alice").unwrap();
        assert_eq!(other.peer, Key::from_bytes([2; 32]).to_base64());
        assert_eq!((other.handshakes, other.last_handshake_seconds), (1, 100));
        // Same time again: no new handshake. A new time: one more.
        let counts = |s: Vec<TunnelSample>| {
            let get = |alice: bool| {
                s.iter()
                    .find(|x| (x.peer == "alice") == alice)
                    .map(|x| x.handshakes)
            };
            (get(true), get(false))
        };
        let s = t.observe(&state(&[(1, Some(200)), (2, Some(100))]));
        assert_eq!(counts(s), (Some(1), Some(1)));
        let s = t.observe(&state(&[(1, Some(200)), (2, Some(300))]));
        assert_eq!(counts(s), (Some(1), Some(2)));
        // Gone from the device: forgotten; back: starts again.
        t.observe(&state(&[(1, Some(200))]));
        let s = t.observe(&state(&[(1, Some(200)), (2, None)]));
        assert_eq!(counts(s), (Some(1), Some(0)));
    }
}
