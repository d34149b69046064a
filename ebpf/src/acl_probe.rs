//! The benchmark's yardsticks, built beside wgbpf's programs but never
//! loaded by wgbpf: `acl_floor` returns at once (the cost of running any
//! program), and `acl_probe` is the least a per-peer-port ACL can do (one
//! LPM lookup on the IPv4 source, one hash lookup on (identity, protocol,
//! destination port)). `cargo xtask bench acl` measures wgbpf against them.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    macros::{classifier, map},
    maps::{lpm_trie::Key, HashMap, LpmTrie},
    programs::TcContext,
};
use wgbpf_common::AclProbeKey;

const TC_ACT_UNSPEC: i32 = -1;
const BPF_F_NO_PREALLOC: u32 = 1;
/// BPF_PROG_TEST_RUN frames carry an Ethernet header.
const L2: usize = 14;

#[map]
static ACL_PROBE_SOURCES: LpmTrie<[u8; 4], u32> =
    LpmTrie::with_max_entries(1 << 17, BPF_F_NO_PREALLOC);
#[map]
static ACL_PROBE_PORTS: HashMap<AclProbeKey, u32> =
    HashMap::with_max_entries(1 << 17, BPF_F_NO_PREALLOC);

#[classifier]
pub fn acl_floor(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

#[classifier]
pub fn acl_probe(ctx: TcContext) -> i32 {
    match verdict(&ctx) {
        Some(true) => TC_ACT_UNSPEC,
        _ => TC_ACT_SHOT,
    }
}

#[inline(always)]
fn verdict(ctx: &TcContext) -> Option<bool> {
    let (start, end) = (ctx.data(), ctx.data_end());
    let ip = start + L2;
    if ip + 20 > end {
        return None;
    }
    let vihl = unsafe { *(ip as *const u8) };
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return None;
    }
    let proto = unsafe { *((ip + 9) as *const u8) };
    let src = unsafe { core::ptr::read_unaligned((ip + 12) as *const [u8; 4]) };
    let l4 = ip + ihl;
    if l4 + 4 > end {
        return None;
    }
    let port = u16::from_be(unsafe { core::ptr::read_unaligned((l4 + 2) as *const u16) });
    let identity = *ACL_PROBE_SOURCES.get(&Key::new(32, src))?;
    let key = AclProbeKey {
        identity,
        port,
        proto,
        _pad: 0,
    };
    Some(unsafe { ACL_PROBE_PORTS.get(&key) }.is_some())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
