//! The XDP guard on the underlay (see docs/xdp-guard.md): map names, keys,
//! values and constants shared by `ebpf/src/xdp_guard/` and the loader in
//! `userspace/src/dataplane/xdp_guard/`. Kept apart from the TC programs'
//! layouts in `lib.rs`: the two objects share nothing.

use crate::Addr;

/// Map and program names in the guard's object, also their pin names.
pub mod names {
    pub const CONFIG: &str = "WGBPF_XDP_CONFIG";
    pub const STATS: &str = "WGBPF_XDP_STATS";
    pub const BUCKETS: &str = "WGBPF_XDP_BUCKETS";
    pub const ALLOW: &str = "WGBPF_XDP_ALLOW";
    /// The guard.
    pub const PROG_GUARD: &str = "wgbpf_xdp_guard";
    /// Returns XDP_DROP and nothing else: the benchmark's baseline.
    pub const PROG_DROP_ALL: &str = "wgbpf_xdp_drop_all";
    /// Returns XDP_PASS and nothing else: the baseline for passed packets.
    pub const PROG_PASS_ALL: &str = "wgbpf_xdp_pass_all";
}

/// Default sizes.
pub mod capacity {
    /// Sources with a handshake token bucket (LRU: the oldest are evicted).
    pub const BUCKETS: u32 = 1 << 16;
    /// Prefixes in the source allowlist.
    pub const ALLOW: u32 = 1 << 14;
}

/// Listen ports one guard protects (one per WireGuard interface behind the
/// underlay); unused entries are 0.
pub const XDP_MAX_PORTS: usize = 4;

/// Handshake initiations per second per source address, by default.
pub const DEFAULT_HANDSHAKE_RATE: u32 = 10;
/// Largest burst of initiations from one source, by default.
pub const DEFAULT_HANDSHAKE_BURST: u32 = 50;

/// The guard's settings: element 0 of an array map, written by the loader
/// (and rewritten on reload without detaching).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpConfig {
    /// Test clock: when non-zero, the token buckets take this as the time
    /// (ns) instead of `bpf_ktime_get_ns`. Always 0 outside tests.
    pub clock_ns: u64,
    /// WireGuard listen ports (host order); 0 = unused. All 0: the guard
    /// passes everything.
    pub ports: [u16; XDP_MAX_PORTS],
    /// Handshake initiations per second per source (IPv4 address or IPv6
    /// /64); 0 = no limit.
    pub handshake_rate: u32,
    /// Burst of initiations per source (bucket size); at least 1 when
    /// `handshake_rate` is set.
    pub handshake_burst: u32,
    /// `XDP_FLAG_*`.
    pub flags: u32,
    pub _pad: u32,
}

/// Packets to a listen port must come from a source in the allowlist.
pub const XDP_FLAG_ALLOWLIST: u32 = 1;

/// A source's handshake token bucket (LRU hash keyed by [`Addr`]: an IPv4
/// address mapped into ::ffff:0:0/96, or an IPv6 /64 with the low 64 bits
/// zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpBucket {
    /// Tokens in thousandths of an initiation.
    pub tokens_milli: u64,
    pub last_ns: u64,
}

/// Data part of an allowlist LPM key: the address (IPv4 mapped), so an
/// IPv4 /24 has prefix length 96 + 24.
pub type XdpAllowKey = Addr;

/// Indices into the per-CPU statistics array. The `PASS_*` count packets to
/// a listen port that were passed, by message type; the `DROP_*` count
/// drops by reason. Traffic to other ports is not counted.
pub mod xdp_stat {
    pub const PASS_INITIATION: u32 = 0;
    pub const PASS_RESPONSE: u32 = 1;
    pub const PASS_COOKIE: u32 = 2;
    pub const PASS_DATA: u32 = 3;
    /// IP or UDP lengths inconsistent with each other or with the frame.
    pub const DROP_MALFORMED: u32 = 4;
    /// Message type not 1..=4.
    pub const DROP_BAD_TYPE: u32 = 5;
    /// Reserved bytes (1..4 of the message) not zero.
    pub const DROP_RESERVED: u32 = 6;
    /// Length wrong for the type (or under 4 bytes).
    pub const DROP_BAD_SIZE: u32 = 7;
    /// Handshake initiation over its source's token bucket.
    pub const DROP_RATE_LIMITED: u32 = 8;
    /// Source not in the allowlist (allowlist enabled).
    pub const DROP_NOT_ALLOWED: u32 = 9;
    /// IPv6 with more than six extension headers, whatever its port: the
    /// port cannot be seen, and the chain could hide an initiation.
    pub const DROP_EXT_HEADERS: u32 = 10;
    pub const COUNT: u32 = 11;

    /// Names for reports and metrics, by index.
    pub const NAMES: [&str; COUNT as usize] = [
        "pass_initiation",
        "pass_response",
        "pass_cookie",
        "pass_data",
        "malformed",
        "bad_type",
        "reserved",
        "bad_size",
        "rate_limited",
        "not_allowed",
        "ext_headers",
    ];
    /// The first drop reason; earlier indices are passes.
    pub const FIRST_DROP: u32 = DROP_MALFORMED;
}

/// WireGuard message types and their sizes (the UDP payload).
pub mod wire {
    pub const INITIATION: u8 = 1;
    pub const RESPONSE: u8 = 2;
    pub const COOKIE: u8 = 3;
    pub const DATA: u8 = 4;
    pub const INITIATION_LEN: usize = 148;
    pub const RESPONSE_LEN: usize = 92;
    pub const COOKIE_LEN: usize = 64;
    /// Header (16) + an empty payload's tag (16): a keepalive.
    pub const DATA_MIN_LEN: usize = 32;
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: repr(C) plain data without implicit padding.
    unsafe impl aya::Pod for XdpConfig {}
    unsafe impl aya::Pod for XdpBucket {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<XdpConfig>(), 8 + 2 * XDP_MAX_PORTS + 4 * 4);
        assert_eq!(size_of::<XdpBucket>(), 16);
    }
}
