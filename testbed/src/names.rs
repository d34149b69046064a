//! Names of everything a mesh creates, all derived from one short run id.
//!
//! Network namespaces are per machine, and wireguard-go's UAPI sockets
//! (/var/run/wireguard/IF.sock) live in one directory shared by all
//! namespaces, so both must be unique machine-wide. Veth names live inside
//! our own namespaces and need not be.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Every namespace of ours starts with this, so leftovers are recognisable
/// (see `sweep_stale`).
pub(crate) const NETNS_PREFIX: &str = "wgbpf-tb-";
/// Every tunnel interface of ours starts with this.
pub(crate) const IF_PREFIX: &str = "wgb";
/// Directory of wireguard-go's UAPI sockets, shared by all namespaces.
pub(crate) const WG_SOCK_DIR: &str = "/var/run/wireguard";

/// A candidate run id: 5 hex digits mixed from pid, time, a process-wide
/// counter and randomness. Collisions are still possible across processes,
/// so `Testbed::up` claims the id atomically (`ip netns add` fails on an
/// existing name) and draws again on a clash.
pub(crate) fn new_run_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.write_u128(nanos);
    h.write_u64(rand::random());
    format!("{:05x}", h.finish() & 0xf_ffff)
}

/// Namespace of role `role` ("gw" or a peer name). The pid lets
/// `sweep_stale` tell whether the owning process is still alive.
pub(crate) fn netns_name(run_id: &str, role: &str) -> String {
    format!("{NETNS_PREFIX}{run_id}-{}-{role}", std::process::id())
}

/// Tunnel interface of the gateway (`index` 0) or of peer `index` (1-based):
/// at most 3 + 5 + 1 + 3 = 12 characters, below IFNAMSIZ - 1 = 15.
pub(crate) fn wg_if_name(run_id: &str, index: usize) -> String {
    match index {
        0 => format!("{IF_PREFIX}{run_id}g"),
        i => format!("{IF_PREFIX}{run_id}p{i}"),
    }
}

pub(crate) fn wg_sock_path(ifname: &str) -> PathBuf {
    PathBuf::from(WG_SOCK_DIR).join(format!("{ifname}.sock"))
}

/// Splits one of our namespace names into (run id, owner pid).
pub(crate) fn parse_netns_name(name: &str) -> Option<(&str, u32)> {
    let rest = name.strip_prefix(NETNS_PREFIX)?;
    let mut parts = rest.splitn(3, '-');
    let run_id = parts.next()?;
    let pid = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((run_id, pid))
}

/// Peer names become part of namespace names: keep them short and tame.
pub(crate) fn valid_peer_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name != "gateway"
        && name != "gw"
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_parse_back() {
        let id = new_run_id();
        assert_eq!(id.len(), 5);
        assert!(wg_if_name(&id, 250).len() <= 15);
        let ns = netns_name(&id, "alice");
        assert_eq!(
            parse_netns_name(&ns),
            Some((id.as_str(), std::process::id()))
        );
        assert_eq!(parse_netns_name("wgbpf-tb-x"), None);
    }

    #[test]
    fn peer_names_are_checked() {
        assert!(valid_peer_name("alice"));
        assert!(valid_peer_name("peer_2"));
        assert!(!valid_peer_name("gateway"));
        assert!(!valid_peer_name("Bob"));
        assert!(!valid_peer_name("a-b"));
        assert!(!valid_peer_name(""));
    }
}
