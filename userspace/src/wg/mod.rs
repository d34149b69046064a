//! WireGuard control: read and configure the device a mesh file describes.
//!
//! One model ([`model`]), one [`Backend`] trait, one implementation per way
//! of reaching a device: the cross-platform userspace API ([`uapi`], for
//! wireguard-go and boringtun) and the kernel's generic netlink family
//! ([`kernel`]). [`diff::reconcile`] computes the least change set from the
//! current state to the wanted one; [`config`] turns a mesh file into the
//! wanted configuration, validating everything before anything is sent.
//! See docs/wireguard.md.

pub mod config;
pub mod diff;
pub mod kernel;
pub mod key;
pub mod link;
pub mod model;
pub mod repair;
pub mod rotate;
pub mod uapi;

use std::path::PathBuf;

use thiserror::Error;

pub use config::{plan_for_mesh, Desired, Plan, WgReport};
pub use diff::reconcile;
pub use kernel::KernelBackend;
pub use key::{read_key_file, Key};
pub use model::{ChangeSet, DeviceConfig, DeviceState, PeerChange, PeerConfig, PeerState};
pub use uapi::UapiBackend;

#[derive(Debug, Error)]
pub enum WgError {
    /// Never carries the file's contents.
    #[error("key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("peer `{peer}`: {field}: {message}")]
    Peer {
        peer: String,
        field: &'static str,
        message: String,
    },
    #[error("interface {iface}: {message}")]
    Config { iface: String, message: String },
    #[error("WireGuard device {iface} ({backend}): {message}")]
    Device {
        iface: String,
        backend: &'static str,
        message: String,
    },
    #[error(
        "no WireGuard for {0}: no userspace WireGuard socket for {0} ({path}) and the kernel \
         has no WireGuard (no generic netlink family `wireguard`: load the module with \
         `modprobe wireguard`, or start wireguard-go)",
        path = uapi::socket_path(.0).display()
    )]
    NoBackend(String),
}

/// One way of reaching a WireGuard device. The UAPI implementation speaks
/// to wireguard-go or boringtun; a kernel implementation (generic netlink,
/// `WG_CMD_GET_DEVICE` / `WG_CMD_SET_DEVICE`) fits the same two calls: a
/// [`ChangeSet`] maps onto its flags (`WGPEER_F_REMOVE_ME`,
/// `WGPEER_F_REPLACE_ALLOWEDIPS`, `WGPEER_F_UPDATE_ONLY`) just as onto the
/// UAPI's keys, and neither ever needs `replace_peers`.
pub trait Backend: std::fmt::Debug + Send + Sync {
    /// "uapi" or "kernel".
    fn kind(&self) -> &'static str;
    fn interface(&self) -> &str;
    /// Where the device is reached, for people (e.g. the socket's path).
    fn describe(&self) -> String {
        self.kind().to_string()
    }
    /// The device's configuration and per-peer statistics.
    fn get(&self) -> Result<DeviceState, WgError>;
    /// Sends `changes`; an empty change set sends nothing at all.
    fn apply(&self, changes: &ChangeSet) -> Result<(), WgError>;
}

/// The backend for `iface`: its UAPI socket when there is one (wireguard-go,
/// boringtun), else the kernel's WireGuard when the kernel has the
/// `wireguard` generic netlink family, else [`WgError::NoBackend`].
/// `WGBPF_WG_BACKEND=uapi|kernel` forces one (`auto`, the default, chooses).
/// The caller prints [`Backend::describe`].
pub fn open_backend(iface: &str) -> Result<Box<dyn Backend>, WgError> {
    let choice = std::env::var("WGBPF_WG_BACKEND").unwrap_or_default();
    let (uapi, kernel) = match choice.as_str() {
        "uapi" => (true, false),
        "kernel" => (false, true),
        _ => (true, true),
    };
    if uapi {
        if let Some(b) = UapiBackend::open(iface) {
            tracing::debug!(iface, via = %b.describe(), "WireGuard backend: uapi");
            return Ok(Box::new(b));
        }
    }
    if kernel {
        if let Some(b) = KernelBackend::open(iface) {
            tracing::debug!(iface, via = %b.describe(), "WireGuard backend: kernel");
            return Ok(Box::new(b));
        }
    }
    Err(WgError::NoBackend(iface.to_string()))
}
