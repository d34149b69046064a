//! The daemon's hook for the WireGuard side's ongoing work.
//!
//! `enforce()` already configures the device from the mesh file at start
//! and at every reload (its WireGuard step). What a long-running daemon
//! adds is periodic work between reloads: repairing drift (someone ran
//! `wg set` by hand, wireguard-go restarted) and re-resolving DNS names in
//! endpoints. That belongs to the WireGuard backend; it plugs in here by
//! implementing [`Reconciler`]. Until then `wgbpf run` uses [`Unmanaged`].

use std::time::Duration;

use crate::mesh::Mesh;

/// Ongoing WireGuard work for `wgbpf run`. Methods run on tokio's blocking
/// pool, never concurrently with each other or with an enforce.
pub trait Reconciler: Send + Sync + 'static {
    /// Called after every successful enforce (start and each SIGHUP
    /// reload), and then every [`Reconciler::interval`], with the mesh
    /// file last enforced. Errors are logged; the daemon keeps running and
    /// the policy stays.
    fn reconcile(&self, mesh: &Mesh) -> anyhow::Result<()>;

    /// How often to call [`Reconciler::reconcile`] between reloads (drift
    /// repair, DNS re-resolution); `None`: only after enforces.
    fn interval(&self) -> Option<Duration> {
        None
    }
}

/// No ongoing WireGuard work (what `wgbpf run` does today).
#[derive(Debug, Default)]
pub struct Unmanaged;

impl Reconciler for Unmanaged {
    fn reconcile(&self, _mesh: &Mesh) -> anyhow::Result<()> {
        Ok(())
    }
}
