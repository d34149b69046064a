//! WireGuard control, a library that knows nothing of the rest of wgbpf
//! (no mesh file, policy, data plane or daemon; a test enforces it).
//!
//! One model ([`model`]), one [`Backend`] trait, one implementation per way
//! of reaching a device: the cross-platform userspace API ([`uapi`], for
//! wireguard-go and boringtun) and the kernel's generic netlink family
//! ([`kernel`], which also creates the interface over rtnetlink).
//! [`diff::changes_between`] computes the least change set from the current
//! state to the wanted one; [`update`] reads the device, then sends it.
//! Keys ([`key`]) and endpoints ([`endpoint`]) have one parser each.
//! [`rotate`] changes a peer's key with a transition window. See
//! docs/wireguard.md.

pub mod diff;
pub mod endpoint;
pub mod kernel;
pub mod key;
pub mod model;
pub mod rotate;
pub mod uapi;
pub mod update;

use std::{path::PathBuf, str::FromStr};

use ipnet::IpNet;
use thiserror::Error;

pub use diff::changes_between;
pub use endpoint::Endpoint;
pub use kernel::{
    link::{link_is_up, set_link_up, LinkReport},
    KernelBackend,
};
pub use key::{read_key_file, Key};
pub use model::{ChangeSet, DeviceConfig, DeviceState, PeerChange, PeerConfig, PeerState};
pub use uapi::UapiBackend;
pub use update::{Desired, DeviceUpdate, PeerUpdated, WgReport};

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
    /// Makes the interface exist with `spec`'s addresses, MTU and routes,
    /// adding what is missing. `None` where the backend does not own the
    /// interface (a userspace implementation creates its own TUN device).
    fn ensure_interface(&self, _spec: &InterfaceSpec) -> Result<Option<LinkReport>, WgError> {
        Ok(None)
    }
}

/// The WireGuard interfaces of this network namespace, as `wg show all`
/// finds them: kernel links of kind `wireguard`, and userspace devices
/// whose UAPI socket is in [`uapi::SOCKET_DIR`] and whose interface exists
/// here (the socket directory is shared by every namespace). Sorted, each
/// once.
pub fn list_interfaces() -> Vec<String> {
    let mut names = kernel::link::wireguard_links().unwrap_or_default();
    if let Ok(dir) = std::fs::read_dir(uapi::SOCKET_DIR) {
        for e in dir.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            let Some(name) = file.strip_suffix(".sock") else {
                continue;
            };
            let Ok(c) = std::ffi::CString::new(name) else {
                continue;
            };
            // SAFETY: a NUL-terminated name.
            if unsafe { libc::if_nametoindex(c.as_ptr()) } != 0 {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// The interface around the device, as wg-quick sets it up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceSpec {
    /// Addresses with their prefix length, as written.
    pub addresses: Vec<IpNet>,
    pub mtu: Option<u32>,
    /// Routes through the interface (see [`kernel::link::routes_for`]).
    pub routes: Vec<IpNet>,
}

/// Which backend reaches a device: chosen once by the caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// The device's UAPI socket when there is one, else the kernel's
    /// WireGuard when the kernel has it.
    #[default]
    Auto,
    Uapi,
    Kernel,
}

/// The environment variable that forces a backend (tests use it).
pub const BACKEND_ENV: &str = "WGBPF_WG_BACKEND";

impl BackendChoice {
    /// [`BACKEND_ENV`] (`auto`, `uapi` or `kernel`), [`BackendChoice::Auto`]
    /// when unset. The only place the variable is read.
    pub fn from_env() -> Result<BackendChoice, String> {
        match std::env::var(BACKEND_ENV) {
            Ok(v) => v.parse().map_err(|e| format!("{BACKEND_ENV}: {e}")),
            Err(_) => Ok(BackendChoice::Auto),
        }
    }
}

impl FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" | "auto" => Ok(BackendChoice::Auto),
            "uapi" => Ok(BackendChoice::Uapi),
            "kernel" => Ok(BackendChoice::Kernel),
            other => Err(format!("`{other}`: expected auto, uapi or kernel")),
        }
    }
}

/// The backend for `iface`: with [`BackendChoice::Auto`], its UAPI socket
/// when there is one (wireguard-go, boringtun), else the kernel's WireGuard
/// when the kernel has the `wireguard` generic netlink family, else
/// [`WgError::NoBackend`]. The caller prints [`Backend::describe`].
pub fn open_backend(iface: &str, choice: BackendChoice) -> Result<Box<dyn Backend>, WgError> {
    let (uapi, kernel) = match choice {
        BackendChoice::Uapi => (true, false),
        BackendChoice::Kernel => (false, true),
        BackendChoice::Auto => (true, true),
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
