//! The controller's side of the flow table: a sweep that removes entries
//! past their lifetime. The programs expire entries lazily (a packet that
//! meets a dead entry removes it); entries never met again would stay until
//! the LRU evicts them, and a full table evicts the least recently used
//! first, which may be a live but idle connection. A periodic sweep keeps
//! the dead ones from filling the table.

use std::os::fd::{AsFd, AsRawFd};

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

/// Points inside a sweep where [`Maps::sweep_flows_hooked`] calls its hook:
/// where packets may meet the table while the sweep works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SweepPoint<'a> {
    /// The table was read; nothing is deleted yet.
    Read,
    /// Right before this entry, found dead, is deleted.
    Delete(&'a FlowKey),
}

impl Maps {
    /// Removes the flow entries whose expiry lies before `now_ns`
    /// ([`monotonic_ns`]).
    pub fn sweep_flows(&self, now_ns: u64) -> Result<Sweep, DataplaneError> {
        self.sweep_flows_hooked(now_ns, &mut |_| {})
    }

    /// [`Maps::sweep_flows`], calling `hook` at each [`SweepPoint`] (tests
    /// run packets there to show the races).
    pub fn sweep_flows_hooked(
        &self,
        now_ns: u64,
        hook: &mut dyn FnMut(SweepPoint),
    ) -> Result<Sweep, DataplaneError> {
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
        hook(SweepPoint::Read);
        let fd = self.flows.map().fd().as_fd().as_raw_fd();
        let mut removed = 0;
        for key in &dead {
            hook(SweepPoint::Delete(key));
            // Gone already (a packet met it, or the LRU took it): fine.
            if elem(fd, BPF_MAP_DELETE_ELEM, key, std::ptr::null_mut(), 0).is_ok() {
                removed += 1;
            }
        }
        Ok(Sweep { live, removed })
    }
}

const BPF_MAP_DELETE_ELEM: libc::c_long = 3;

/// The element member of `union bpf_attr`.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// One element command of bpf(2) on the flow table. aya's `HashMap` wants
/// `&mut self` to delete, and has no lookup-and-delete.
fn elem(
    fd: i32,
    cmd: libc::c_long,
    key: &FlowKey,
    value: *mut FlowValue,
    flags: u64,
) -> std::io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: fd as u32,
        _pad: 0,
        key: key as *const FlowKey as u64,
        value: value as u64,
        flags,
    };
    // SAFETY: attr points at a whole key and, where the command writes or
    // reads one, a whole value.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            &mut attr as *mut ElemAttr,
            std::mem::size_of::<ElemAttr>(),
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}
