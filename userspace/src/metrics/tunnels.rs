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
//!
//! The same observations follow each peer's endpoint, the stolen-key
//! signal: one key used from two places makes the endpoint alternate
//! between them (WireGuard moves it to the source of every authenticated
//! packet), which roaming rarely does. [`Tunnels`] counts the endpoint's
//! changes and the distinct endpoints of the last [`ENDPOINT_WINDOW`].

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::Mutex,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// How long an endpoint counts as recent for `wgbpf_peer_endpoints_recent`.
pub const ENDPOINT_WINDOW: Duration = Duration::from_secs(600);

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
    /// Changes of the peer's endpoint observed since this process started.
    pub endpoint_changes: u64,
    /// Distinct endpoints observed in the last [`ENDPOINT_WINDOW`].
    pub endpoints_recent: u64,
}

#[derive(Debug, Default)]
struct Seen {
    last: Option<SystemTime>,
    count: u64,
    endpoint: Option<SocketAddr>,
    endpoint_changes: u64,
    /// Each endpoint observed, with when it was last observed.
    recent: BTreeMap<SocketAddr, Instant>,
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
        self.observe_at(state, Instant::now())
    }

    /// [`Self::observe`] at `now`. An endpoint that differs from the one
    /// observed before counts as a change (a first endpoint does not).
    pub fn observe_at(&self, state: &DeviceState, now: Instant) -> Vec<TunnelSample> {
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
            if let Some(e) = p.config.endpoint {
                if seen.endpoint.is_some_and(|before| before != e) {
                    seen.endpoint_changes += 1;
                }
                seen.endpoint = Some(e);
                seen.recent.insert(e, now);
            }
            seen.recent
                .retain(|_, at| now.saturating_duration_since(*at) <= ENDPOINT_WINDOW);
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
                endpoint_changes: seen.endpoint_changes,
                endpoints_recent: seen.recent.len() as u64,
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

    #[test]
    fn endpoints_alternating_are_counted_and_old_ones_age_out() {
        let t = Tunnels::default();
        let at = |e: &str| {
            let mut s = state(&[(1, Some(100))]);
            s.peers[0].config.endpoint = Some(e.parse().unwrap());
            s
        };
        let t0 = Instant::now();
        let seen = |s: Vec<TunnelSample>| (s[0].endpoint_changes, s[0].endpoints_recent);
        assert_eq!(seen(t.observe_at(&at("192.0.2.1:51820"), t0)), (0, 1));
        // The same endpoint: no change. Roaming once: one change.
        assert_eq!(seen(t.observe_at(&at("192.0.2.1:51820"), t0)), (0, 1));
        let later = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(
            seen(t.observe_at(&at("198.51.100.7:4000"), later(5))),
            (1, 2)
        );
        // Two places with one key: every observation alternates.
        for i in 0..6u64 {
            let e = if i % 2 == 0 {
                "192.0.2.1:51820"
            } else {
                "198.51.100.7:4000"
            };
            t.observe_at(&at(e), later(10 + i * 5));
        }
        assert_eq!(
            seen(t.observe_at(&at("198.51.100.7:4000"), later(45))),
            (7, 2)
        );
        // Ten minutes on the second address only: the first ages out.
        assert_eq!(
            seen(t.observe_at(&at("198.51.100.7:4000"), later(700))),
            (7, 1)
        );
    }
}
