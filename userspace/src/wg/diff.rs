//! Reconcile: from the device's current state and the wanted configuration,
//! the least change set. Never `replace_peers`: a peer whose configuration
//! is already right is not mentioned, so its session, handshake time and
//! counters stay; a changed peer gets only its changed fields; AllowedIPs
//! are replaced for that peer alone.

use std::collections::BTreeMap;

use super::{
    key::Key,
    model::{normalize, ChangeSet, DeviceConfig, DeviceState, PeerChange, PeerUpdate},
};

/// The change set that takes `current` to `desired`. Empty when nothing
/// differs. Order: device fields, removed peers (their AllowedIPs become
/// free), changed peers, new peers.
pub fn changes_between(desired: &DeviceConfig, current: &DeviceState) -> ChangeSet {
    let mut cs = ChangeSet {
        private_key: desired
            .private_key
            .as_ref()
            .filter(|k| current.private_key.as_ref() != Some(*k))
            .cloned(),
        listen_port: desired.listen_port.filter(|p| *p != current.listen_port),
        fwmark: desired.fwmark.filter(|m| *m != current.fwmark),
        peers: Vec::new(),
    };
    let wanted: BTreeMap<&Key, usize> = desired
        .peers
        .iter()
        .enumerate()
        .map(|(i, p)| (&p.public_key, i))
        .collect();
    let mut removed: Vec<&Key> = current
        .peers
        .iter()
        .map(|p| &p.config.public_key)
        .filter(|k| !wanted.contains_key(k))
        .collect();
    removed.sort();
    cs.peers
        .extend(removed.into_iter().map(|k| PeerChange::Remove(k.clone())));
    let mut added = Vec::new();
    for want in &desired.peers {
        let Some(have) = current.peer(&want.public_key) else {
            let mut p = want.clone();
            p.allowed_ips = want.allowed_set().into_iter().collect();
            added.push(PeerChange::Add(p));
            continue;
        };
        let have = &have.config;
        let ips = want.allowed_set();
        let update = PeerUpdate {
            public_key: want.public_key.clone(),
            preshared_key: (want.preshared_key != have.preshared_key)
                .then(|| want.preshared_key.clone()),
            endpoint: want.endpoint.filter(|e| have.endpoint != Some(*e)),
            persistent_keepalive: Some(want.persistent_keepalive.unwrap_or(0))
                .filter(|k| *k != have.persistent_keepalive.unwrap_or(0)),
            allowed_ips: (ips != normalize(&have.allowed_ips)).then(|| ips.into_iter().collect()),
        };
        if !update.fields().is_empty() {
            cs.peers.push(PeerChange::Update(update));
        }
    }
    cs.peers.extend(added);
    cs
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::wg::model::{PeerConfig, PeerState};

    fn k(b: u8) -> Key {
        Key::from_bytes([b; 32])
    }

    fn peer(b: u8, ips: &[&str]) -> PeerConfig {
        PeerConfig {
            allowed_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            ..PeerConfig::new(k(b))
        }
    }

    fn state(dev: &DeviceConfig) -> DeviceState {
        DeviceState {
            interface: "wg0".into(),
            private_key: dev.private_key.clone(),
            public_key: dev.private_key.as_ref().map(Key::public_key),
            listen_port: dev.listen_port.unwrap_or(0),
            fwmark: dev.fwmark.unwrap_or(0),
            peers: dev
                .peers
                .iter()
                .map(|p| PeerState {
                    config: p.clone(),
                    last_handshake: Some(SystemTime::now()),
                    rx_bytes: 1,
                    tx_bytes: 2,
                })
                .collect(),
        }
    }

    fn base() -> DeviceConfig {
        DeviceConfig {
            private_key: Some(k(1)),
            listen_port: Some(51820),
            fwmark: None,
            peers: vec![
                peer(2, &["10.0.0.2/32", "fd00::2/128"]),
                peer(3, &["10.0.0.3/32"]),
            ],
        }
    }

    #[test]
    fn unchanged_configuration_sends_nothing() {
        let d = base();
        assert!(changes_between(&d, &state(&d)).is_empty());
        // Same AllowedIPs in another order, with host bits, twice: same set.
        let mut again = d.clone();
        again.peers[0].allowed_ips = ["fd00::2/128", "10.0.0.2/32", "10.0.0.2/32"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert!(changes_between(&again, &state(&d)).is_empty());
        let mut host_bits = d.clone();
        host_bits.peers[1].allowed_ips = vec!["10.0.1.7/24".parse().unwrap()];
        let mut cur = d.clone();
        cur.peers[1].allowed_ips = vec!["10.0.1.0/24".parse().unwrap()];
        assert!(changes_between(&host_bits, &state(&cur)).is_empty());
        // Unmanaged fields (None) never cause a change.
        let loose = DeviceConfig {
            private_key: None,
            listen_port: None,
            fwmark: None,
            ..d.clone()
        };
        let mut cur = state(&d);
        cur.fwmark = 9;
        // A learned endpoint of a peer without a configured one stays.
        cur.peers[0].config.endpoint = Some("192.0.2.1:1000".parse().unwrap());
        assert!(changes_between(&loose, &cur).is_empty());
    }

    #[test]
    fn allowed_ips_change_touches_that_peer_only() {
        let d = base();
        let mut want = d.clone();
        want.peers[1].allowed_ips = vec![
            "10.0.0.3/32".parse().unwrap(),
            "10.9.0.0/16".parse().unwrap(),
        ];
        let cs = changes_between(&want, &state(&d));
        assert_eq!(
            cs,
            ChangeSet {
                peers: vec![PeerChange::Update(PeerUpdate {
                    public_key: k(3),
                    preshared_key: None,
                    endpoint: None,
                    persistent_keepalive: None,
                    allowed_ips: Some(vec![
                        "10.0.0.3/32".parse().unwrap(),
                        "10.9.0.0/16".parse().unwrap()
                    ]),
                })],
                ..Default::default()
            }
        );
    }

    #[test]
    fn peers_added_removed_and_fields_updated_individually() {
        let d = base();
        let mut want = d.clone();
        want.peers.remove(0);
        want.peers[0].endpoint = Some("198.51.100.1:51820".parse().unwrap());
        want.peers[0].persistent_keepalive = Some(25);
        want.peers[0].preshared_key = Some(k(9));
        want.peers.push(peer(4, &["10.0.0.4/32"]));
        want.listen_port = Some(4000);
        want.fwmark = Some(0x51);
        want.private_key = Some(k(8));
        let cs = changes_between(&want, &state(&d));
        assert_eq!(cs.private_key, Some(k(8)));
        assert_eq!(cs.listen_port, Some(4000));
        assert_eq!(cs.fwmark, Some(0x51));
        assert_eq!(cs.peers.len(), 3);
        assert_eq!(cs.peers[0], PeerChange::Remove(k(2)));
        let PeerChange::Update(u) = &cs.peers[1] else {
            panic!("{:?}", cs.peers[1])
        };
        assert_eq!(
            u.fields(),
            ["preshared_key", "endpoint", "persistent_keepalive"]
        );
        assert_eq!(u.preshared_key, Some(Some(k(9))));
        assert_eq!(cs.peers[2], PeerChange::Add(peer(4, &["10.0.0.4/32"])));

        // And back: the psk and keepalive are removed, the endpoint stays
        // (nothing to say about it), the port is unmanaged.
        let mut cur = state(&want);
        cur.peers[0].config.endpoint = Some("198.51.100.1:51820".parse().unwrap());
        let mut back = d.clone();
        back.listen_port = None;
        back.private_key = Some(k(8));
        back.fwmark = Some(0x51);
        back.peers.retain(|p| p.public_key == k(3));
        let cs = changes_between(&back, &cur);
        let PeerChange::Update(u) = &cs.peers[1] else {
            panic!("{cs:?}")
        };
        assert_eq!(cs.peers[0], PeerChange::Remove(k(4)));
        assert_eq!(u.preshared_key, Some(None));
        assert_eq!(u.persistent_keepalive, Some(0));
        assert_eq!(u.endpoint, None);
        assert_eq!(cs.listen_port, None);
        assert_eq!(cs.private_key, None);
    }
}
