//! Bringing a device to a wanted configuration in two steps: read the
//! device and compute the least change set ([`DeviceUpdate::new`], nothing
//! sent), then, once the caller has checked everything else too, send it
//! ([`DeviceUpdate::apply`]).

use std::{collections::BTreeMap, time::SystemTime};

use serde::Serialize;

use super::{
    diff::changes_between,
    key::Key,
    model::{ChangeSet, DeviceConfig, DeviceState, PeerChange},
    rotate::{with_windows, RotationWindow},
    Backend, WgError,
};

/// The wanted configuration, and a name for each peer (for reports).
#[derive(Debug, Clone)]
pub struct Desired {
    pub config: DeviceConfig,
    pub names: BTreeMap<Key, String>,
    /// Key rotations declared in the file: each peer's old key is wanted
    /// too until its window ends ([`super::rotate::with_windows`]).
    pub rotations: Vec<RotationWindow>,
}

impl Desired {
    /// The configuration to want from a device in state `current` at
    /// `now`: [`Self::config`] with the rotations in progress applied.
    pub fn config_for(&self, current: &DeviceState, now: SystemTime) -> DeviceConfig {
        with_windows(&self.config, &self.rotations, current, now)
    }
}

/// Everything checked and the device read; nothing sent yet.
#[derive(Debug)]
pub struct DeviceUpdate {
    backend: Box<dyn Backend>,
    pub desired: Desired,
    pub changes: ChangeSet,
}

/// What the WireGuard step did, for `wgbpf load`'s report. Public keys of
/// peers no longer in the mesh stand for their names; no private or
/// preshared key ever appears.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WgReport {
    /// "uapi" or "kernel".
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

impl DeviceUpdate {
    /// Validates `desired` against the device behind `backend` and computes
    /// the change set. Sends nothing.
    pub fn new(backend: Box<dyn Backend>, desired: Desired) -> Result<DeviceUpdate, WgError> {
        let current = backend.get()?;
        let changes = changes_between(&desired.config_for(&current, SystemTime::now()), &current);
        Ok(DeviceUpdate {
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
