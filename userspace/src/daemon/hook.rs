//! The daemon's hook for ongoing work between reloads.
//!
//! `enforce()` configures the device and the data plane from the plan of
//! the mesh file at start and at every reload. What a long-running daemon adds is
//! periodic work in between: repairing drift (someone ran `wg set` or `tc
//! filter del` by hand, set the link down, loaded another policy) and
//! re-resolving DNS names in endpoints. It plugs in here by implementing
//! [`Reconciler`]; `wgbpf run` uses [`super::drift::DriftRepair`], or
//! [`Unmanaged`] when drift repair is turned off. The daemon logs and counts
//! what a pass reports ([`Pass`]).

use std::time::Duration;

use crate::{dataplane::Maps, enforce::Enforced, plan::EnforcementPlan, wg::DeviceState};

/// What drifted, for `wgbpf_drift_repairs_total{kind}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RepairKind {
    /// A peer added, removed or updated on the WireGuard device.
    WireguardPeer,
    /// The device's private key, listen port or fwmark.
    WireguardDevice,
    /// A data-plane program re-attached (or the data plane reloaded).
    Program,
    /// The policy in the active slot replaced by the file's.
    Policy,
    /// The interface set up again.
    Link,
}

impl RepairKind {
    pub const ALL: [RepairKind; 5] = [
        RepairKind::WireguardPeer,
        RepairKind::WireguardDevice,
        RepairKind::Program,
        RepairKind::Policy,
        RepairKind::Link,
    ];

    /// The `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            RepairKind::WireguardPeer => "wireguard_peer",
            RepairKind::WireguardDevice => "wireguard_device",
            RepairKind::Program => "program",
            RepairKind::Policy => "policy",
            RepairKind::Link => "link",
        }
    }

    /// Position in [`RepairKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One repair: what drifted and what was done about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repair {
    pub kind: RepairKind,
    /// What was found, e.g. "peer bob is missing from the device".
    pub drift: String,
    /// What was done, e.g. "added it".
    pub action: String,
}

/// What one pass found and did.
#[derive(Default)]
pub struct Pass {
    pub repairs: Vec<Repair>,
    /// Checks or repairs that failed (each names what); the pass carried on
    /// with the rest.
    pub errors: Vec<String>,
    /// The WireGuard device as read at the start of the pass (for the
    /// handshake count of `wireguard_tunnel_handshakes_total`).
    pub device: Option<DeviceState>,
    /// The pass ran `enforce()` (the data plane was reloaded, or the
    /// policy re-applied): the daemon adopts the result as after a reload
    /// (deny-log reader, peer names).
    pub reenforced: Option<(Maps, Enforced)>,
}

/// Ongoing work for `wgbpf run`. Methods run on tokio's blocking pool,
/// never concurrently with each other or with an enforce.
pub trait Reconciler: Send + Sync + 'static {
    /// Called after every successful enforce (start and each SIGHUP
    /// reload), and then every [`Reconciler::interval`], with the plan
    /// last enforced. An error means the pass could not run at all;
    /// it is logged and the daemon keeps running, the policy stays.
    fn reconcile(&self, plan: &EnforcementPlan) -> anyhow::Result<Pass>;

    /// How often to call [`Reconciler::reconcile`] between reloads (drift
    /// repair, DNS re-resolution); `None`: only after enforces.
    fn interval(&self) -> Option<Duration> {
        None
    }
}

/// No ongoing work (`wgbpf run --repair-interval 0`).
#[derive(Debug, Default)]
pub struct Unmanaged;

impl Reconciler for Unmanaged {
    fn reconcile(&self, _plan: &EnforcementPlan) -> anyhow::Result<Pass> {
        Ok(Pass::default())
    }
}
