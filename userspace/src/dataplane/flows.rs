//! The controller's side of the flow table: a sweep that removes entries
//! past their lifetime. The programs expire entries lazily (a packet that
//! meets a dead entry removes it); entries never met again would stay until
//! the LRU evicts them, and a full table evicts the least recently used
//! first, which may be a live but idle connection. A periodic sweep keeps
//! the dead ones from filling the table.

use aya::maps::IterableMap;
use wgbpf_common::{names, FlowKey, FlowValue};

use super::{DataplaneError, Maps};

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec for the kernel to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What a sweep saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    pub live: usize,
    pub removed: usize,
}

impl Maps {
    /// Removes the flow entries whose expiry lies before `now_ns`
    /// ([`monotonic_ns`]). One batch read of the table, one delete per dead
    /// entry; an entry a packet renews meanwhile may be removed with it (its
    /// next packet then opens it again, as after an eviction).
    pub fn sweep_flows(&mut self, now_ns: u64) -> Result<Sweep, DataplaneError> {
        let io = |e: std::io::Error| DataplaneError::Layout(format!("{}: {e}", names::FLOWS));
        let mut dead = Vec::new();
        let mut live = 0;
        super::batch::for_each(
            self.flows.map(),
            std::mem::size_of::<FlowKey>(),
            std::mem::size_of::<FlowValue>(),
            |k, v| {
                // SAFETY: the kernel wrote whole keys and values of these types.
                let key: FlowKey = unsafe { std::ptr::read_unaligned(k.as_ptr().cast()) };
                let value: FlowValue = unsafe { std::ptr::read_unaligned(v.as_ptr().cast()) };
                if value.expires_ns < now_ns {
                    dead.push(key);
                } else {
                    live += 1;
                }
            },
        )
        .map_err(io)?;
        let mut removed = 0;
        for key in &dead {
            // Gone already (a packet met it, or the LRU took it): fine.
            if self.flows.remove(key).is_ok() {
                removed += 1;
            }
        }
        Ok(Sweep { live, removed })
    }
}
