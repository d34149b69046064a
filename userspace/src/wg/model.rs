//! What a WireGuard device is configured with, what it reports back, and a
//! change between two configurations. Shared by every backend.

use std::{collections::BTreeSet, net::SocketAddr, time::SystemTime};

use ipnet::IpNet;

use super::key::Key;

/// A device's configuration as wanted. `None` for `listen_port` and
/// `fwmark` means "leave it as it is"; an absent private key likewise.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceConfig {
    pub private_key: Option<Key>,
    pub listen_port: Option<u16>,
    /// `Some(0)` turns the mark off.
    pub fwmark: Option<u32>,
    pub peers: Vec<PeerConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    pub public_key: Key,
    pub preshared_key: Option<Key>,
    /// `None` leaves whatever endpoint the device has (or learns by
    /// roaming).
    pub endpoint: Option<SocketAddr>,
    /// Seconds; `None` (or 0) is off.
    pub persistent_keepalive: Option<u16>,
    pub allowed_ips: Vec<IpNet>,
}

impl PeerConfig {
    pub fn new(public_key: Key) -> Self {
        PeerConfig {
            public_key,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            allowed_ips: Vec::new(),
        }
    }

    /// The AllowedIPs as a device holds them: host bits cleared, each once.
    pub fn allowed_set(&self) -> BTreeSet<IpNet> {
        normalize(&self.allowed_ips)
    }
}

pub fn normalize(nets: &[IpNet]) -> BTreeSet<IpNet> {
    nets.iter().map(IpNet::trunc).collect()
}

/// A device as read back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceState {
    pub interface: String,
    pub private_key: Option<Key>,
    /// Derived from the private key.
    pub public_key: Option<Key>,
    /// 0 while the device has no port.
    pub listen_port: u16,
    /// 0 is off.
    pub fwmark: u32,
    pub peers: Vec<PeerState>,
}

impl DeviceState {
    pub fn peer(&self, key: &Key) -> Option<&PeerState> {
        self.peers.iter().find(|p| &p.config.public_key == key)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerState {
    /// `preshared_key` is `None` when the device holds none (all zero),
    /// `persistent_keepalive` `None` when off.
    pub config: PeerConfig,
    /// `None`: no handshake yet.
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// The least a device must be told to go from one configuration to another.
/// Peers not mentioned are left alone: their sessions, handshake times and
/// counters stay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeSet {
    pub private_key: Option<Key>,
    pub listen_port: Option<u16>,
    pub fwmark: Option<u32>,
    pub peers: Vec<PeerChange>,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        self.private_key.is_none()
            && self.listen_port.is_none()
            && self.fwmark.is_none()
            && self.peers.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerChange {
    Add(PeerConfig),
    Remove(Key),
    Update(PeerUpdate),
}

impl PeerChange {
    pub fn public_key(&self) -> &Key {
        match self {
            PeerChange::Add(p) => &p.public_key,
            PeerChange::Remove(k) => k,
            PeerChange::Update(u) => &u.public_key,
        }
    }
}

/// Fields of an existing peer to change; `None` leaves a field alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerUpdate {
    pub public_key: Key,
    /// `Some(None)` removes the preshared key.
    pub preshared_key: Option<Option<Key>>,
    pub endpoint: Option<SocketAddr>,
    /// `Some(0)` turns keepalives off.
    pub persistent_keepalive: Option<u16>,
    /// Replaces this peer's AllowedIPs (and only this peer's).
    pub allowed_ips: Option<Vec<IpNet>>,
}

impl PeerUpdate {
    /// Names of the fields that change, for reports.
    pub fn fields(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.preshared_key.is_some() {
            out.push("preshared_key");
        }
        if self.endpoint.is_some() {
            out.push("endpoint");
        }
        if self.persistent_keepalive.is_some() {
            out.push("persistent_keepalive");
        }
        if self.allowed_ips.is_some() {
            out.push("allowed_ips");
        }
        out
    }
}
