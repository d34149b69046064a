//! wgbpf's XDP guard for the underlay: UDP to a WireGuard listen port passes
//! only as a well-formed WireGuard message, handshake initiations within
//! their source's token bucket (and, optionally, only from allowed source
//! prefixes). Everything else addressed to the port is dropped and counted
//! by reason; everything not addressed to it passes untouched.
//! docs/xdp-guard.md is the specification.
//!
//! A program of its own (its own object): it runs on another interface, at
//! another hook, and shares no map with the TC programs.
#![no_std]
#![no_main]

mod packet;
#[path = "../view.rs"]
mod view;

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{lpm_trie::Key, Array, LpmTrie, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use packet::{Bytes, Outcome};
use wgbpf_common::{
    xdp::{capacity, wire, xdp_stat, XdpAllowKey, XdpBucket, XdpConfig, XDP_FLAG_ALLOWLIST},
    Addr,
};

const BPF_F_NO_PREALLOC: u32 = 1;

#[map(name = "WGBPF_XDP_CONFIG")]
static CONFIG: Array<XdpConfig> = Array::with_max_entries(1, 0);
#[map(name = "WGBPF_XDP_STATS")]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(xdp_stat::COUNT, 0);
#[map(name = "WGBPF_XDP_BUCKETS")]
static BUCKETS: LruHashMap<Addr, XdpBucket> = LruHashMap::with_max_entries(capacity::BUCKETS, 0);
#[map(name = "WGBPF_XDP_ALLOW")]
static ALLOW: LpmTrie<XdpAllowKey, u8> =
    LpmTrie::with_max_entries(capacity::ALLOW, BPF_F_NO_PREALLOC);

/// Elapsed time credited to a bucket at most (the arithmetic stays within
/// u64 for rates up to [`MAX_RATE`]).
const MAX_ELAPSED_NS: u64 = 1_000_000_000_000;
const MAX_RATE: u64 = 1_000_000;

#[xdp]
pub fn wgbpf_xdp_guard(ctx: XdpContext) -> u32 {
    let Some(cfg) = CONFIG.get(0) else {
        return XDP_PASS;
    };
    let b = Bytes::of(&ctx);
    match packet::classify(&b, cfg) {
        Outcome::Other => XDP_PASS,
        Outcome::LongChain => {
            bump(xdp_stat::DROP_EXT_HEADERS);
            XDP_DROP
        }
        Outcome::Message(m) => {
            let reason = judge(cfg, &m);
            bump(reason);
            if reason >= xdp_stat::FIRST_DROP {
                XDP_DROP
            } else {
                XDP_PASS
            }
        }
    }
}

/// The benchmark's baseline: the cheapest possible XDP program.
#[xdp]
pub fn wgbpf_xdp_drop_all(_ctx: XdpContext) -> u32 {
    XDP_DROP
}

/// The benchmark's baseline for passed packets: what running any XDP
/// program costs a packet that goes on to the stack.
#[xdp]
pub fn wgbpf_xdp_pass_all(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

/// The statistic (pass by type, or drop reason) for a datagram to a listen
/// port. The order of the checks is the specification's (docs/xdp-guard.md):
/// allowlist, lengths, at least 4 bytes, type, reserved bytes, size, rate.
#[inline(always)]
fn judge(cfg: &XdpConfig, m: &packet::Message) -> u32 {
    if cfg.flags & XDP_FLAG_ALLOWLIST != 0 {
        let key = Key::new(128, m.src);
        if ALLOW.get(&key).is_none() {
            return xdp_stat::DROP_NOT_ALLOWED;
        }
    }
    if m.malformed {
        return xdp_stat::DROP_MALFORMED;
    }
    let len = m.len;
    if len < 4 {
        return xdp_stat::DROP_BAD_SIZE;
    }
    if m.kind < wire::INITIATION || m.kind > wire::DATA {
        return xdp_stat::DROP_BAD_TYPE;
    }
    if m.reserved != 0 {
        return xdp_stat::DROP_RESERVED;
    }
    match m.kind {
        wire::INITIATION if len == wire::INITIATION_LEN => {
            if take_token(cfg, &bucket_key(&m.src)) {
                xdp_stat::PASS_INITIATION
            } else {
                xdp_stat::DROP_RATE_LIMITED
            }
        }
        wire::RESPONSE if len == wire::RESPONSE_LEN => xdp_stat::PASS_RESPONSE,
        wire::COOKIE if len == wire::COOKIE_LEN => xdp_stat::PASS_COOKIE,
        wire::DATA if len >= wire::DATA_MIN_LEN => xdp_stat::PASS_DATA,
        _ => xdp_stat::DROP_BAD_SIZE,
    }
}

/// Whose bucket an initiation takes from: its IPv4 address, or its IPv6
/// /64 (one host can send from every address of its /64, as WireGuard's
/// own rate limiter assumes too).
#[inline(always)]
fn bucket_key(src: &Addr) -> Addr {
    let mut key = *src;
    let v4 = src[..10] == [0u8; 10] && src[10] == 0xff && src[11] == 0xff;
    if !v4 {
        key[8..].copy_from_slice(&[0u8; 8]);
    }
    key
}

/// Token bucket per source (IPv4 address or IPv6 /64): `handshake_rate` initiations per
/// second, at most `handshake_burst` at once. A new (or evicted) source
/// starts with a full bucket. Two CPUs updating one source at the same
/// instant may let an extra initiation through: a bound, not an exact count.
#[inline(always)]
fn take_token(cfg: &XdpConfig, src: &Addr) -> bool {
    let rate = cfg.handshake_rate as u64;
    if rate == 0 {
        return true;
    }
    let rate = if rate > MAX_RATE { MAX_RATE } else { rate };
    let burst = if cfg.handshake_burst == 0 {
        1
    } else {
        cfg.handshake_burst as u64
    };
    let cap = burst * 1000;
    let now = if cfg.clock_ns != 0 {
        cfg.clock_ns
    } else {
        unsafe { bpf_ktime_get_ns() }
    };
    match BUCKETS.get_ptr_mut(src) {
        Some(b) => {
            let b = unsafe { &mut *b };
            let mut elapsed = now.saturating_sub(b.last_ns);
            if elapsed > MAX_ELAPSED_NS {
                elapsed = MAX_ELAPSED_NS;
            }
            let mut tokens = b.tokens_milli + elapsed * rate / 1_000_000;
            if tokens > cap {
                tokens = cap;
            }
            b.last_ns = now;
            if tokens < 1000 {
                b.tokens_milli = tokens;
                false
            } else {
                b.tokens_milli = tokens - 1000;
                true
            }
        }
        None => {
            let fresh = XdpBucket {
                tokens_milli: cap - 1000,
                last_ns: now,
            };
            let _ = BUCKETS.insert(src, &fresh, 0);
            true
        }
    }
}

#[inline(always)]
fn bump(index: u32) {
    if let Some(v) = STATS.get_ptr_mut(index) {
        unsafe { *v += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
