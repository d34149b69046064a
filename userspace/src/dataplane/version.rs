//! The last policy version given on an interface, kept in
//! `/var/lib/wgbpf/IFACE.version`, so that versions only grow even when
//! the data plane is loaded afresh: after `wgbpf unload`, after the pins
//! were removed with nothing holding the maps, after a reboot. The slots
//! alone cannot do it: a fresh data plane's maps start at version 0.
//!
//! Not under `/run/wgbpf` with the lock: a tmpfs is emptied by a reboot,
//! and `wgbpf_policy_version` would go back then. A version is reserved
//! (written here) before the slot is written with it, so a controller
//! killed after the switch never leaves a version that the next fresh load
//! gives again; one killed before it only leaves a gap.
//!
//! The record is a floor, not the truth: the maps' own versions still
//! count (a pinned data plane ahead of the record, say after the file was
//! lost, keeps its lead). A record that cannot be read or written costs
//! only this guarantee, never an apply.

use std::path::PathBuf;

/// Survives reboots (the unit's `StateDirectory=wgbpf`).
pub const STATE_DIR: &str = "/var/lib/wgbpf";

/// `iface` must be a checked interface name ([`crate::ifname::check`]).
pub fn path(iface: &str) -> PathBuf {
    PathBuf::from(STATE_DIR).join(format!("{iface}.version"))
}

/// The last version reserved on `iface`: 0 when none was, or the record
/// is unreadable (then the maps' versions alone decide).
pub fn last(iface: &str) -> u32 {
    std::fs::read_to_string(path(iface))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Records `version` as `iface`'s last (a new file renamed over the old,
/// synced: a crash leaves one or the other whole).
pub fn reserve(iface: &str, version: u32) -> std::io::Result<()> {
    super::state_file::write_atomically(&path(iface), format!("{version}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserved_version_is_read_back_and_a_missing_one_is_zero() {
        let iface = format!("wgbver{}", std::process::id() % 100_000);
        let _ = std::fs::remove_file(path(&iface));
        assert_eq!(last(&iface), 0);
        reserve(&iface, 41).unwrap();
        reserve(&iface, 42).unwrap();
        assert_eq!(last(&iface), 42);
        std::fs::write(path(&iface), "not a number").unwrap();
        assert_eq!(last(&iface), 0);
        std::fs::remove_file(path(&iface)).unwrap();
    }
}
