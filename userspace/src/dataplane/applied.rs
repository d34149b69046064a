//! The policy last applied to an interface, recorded with the version it
//! became in `/run/wgbpf/IFACE.policy.json`, so that `wgbpf load --dry-run`
//! can list the flows a file would change. The kernel's maps hold the
//! policy compiled (identities, port classes), which cannot be read back as
//! rules; the record can, and is trusted only while the active slot holds
//! exactly its compilation (checked by the reader with
//! [`super::Maps::active_holds`]), so a policy applied by anything else is
//! never mistaken for it. On a tmpfs, like the pins it describes.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::lock::LOCK_DIR;
use crate::policy::model::Policy;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Applied {
    /// The policy version it became.
    pub version: u32,
    pub policy: Policy,
}

pub fn path(iface: &str) -> PathBuf {
    PathBuf::from(LOCK_DIR).join(format!("{iface}.policy.json"))
}

/// Records `policy` as `iface`'s active one (a new file renamed over the
/// old: a reader sees one or the other whole).
pub fn record(iface: &str, version: u32, policy: &Policy) -> std::io::Result<()> {
    let text = serde_json::to_vec(&Applied {
        version,
        policy: policy.clone(),
    })?;
    super::state_file::write_atomically(&path(iface), &text)
}

/// The record, if there is one that parses.
pub fn recorded(iface: &str) -> Option<Applied> {
    let text = std::fs::read(path(iface)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Forgets it (with the pins, on unload).
pub fn forget(iface: &str) {
    let _ = std::fs::remove_file(path(iface));
}
