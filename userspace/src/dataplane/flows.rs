//! The controller's side of the flow table: a sweep that removes entries
//! past their lifetime. The programs expire entries lazily (a packet that
//! meets a dead entry removes it); entries never met again would stay until
//! the LRU evicts them, and a full table evicts the least recently used
//! first, which may be a live but idle connection. A periodic sweep keeps
//! the dead ones from filling the table.
//!
//! The sweep races the programs: between its read of the table and its
//! delete, a packet may meet a dead entry, remove it and open a fresh one
//! under the same key. A blind delete would cut that live flow (and for a
//! reply direction without a rule of its own, deny its next reply). So
//! each dead entry is read again just before it goes, and deleted with
//! BPF_MAP_LOOKUP_AND_DELETE_ELEM, which returns what it took: an entry
//! renewed in the instant between is put back at once (unless a packet
//! opened another meanwhile). What remains is a reply that arrives in the
//! microseconds between that delete and the put-back (docs/dataplane.md).

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
    /// Entries alive at the read.
    pub live: usize,
    /// Dead entries removed.
    pub removed: usize,
    /// Entries dead at the read but renewed by a packet before their
    /// delete: left alone.
    pub renewed: usize,
    /// Entries renewed between their last read and their delete: put back.
    pub restored: usize,
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
    /// ([`monotonic_ns`]), never one a packet renewed meanwhile (see the
    /// module's comment for the instant that remains).
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
        self.for_each_flow(|key, value| {
            if value.expires_ns < now_ns {
                dead.push(*key);
            } else {
                live += 1;
            }
        })?;
        hook(SweepPoint::Read);
        let fd = self.flows.map().fd().as_fd().as_raw_fd();
        let mut sweep = Sweep {
            live,
            ..Default::default()
        };
        let mut value = FlowValue::default();
        for key in &dead {
            // Read again: a packet may have renewed it since the batch read.
            match elem(fd, BPF_MAP_LOOKUP_ELEM, key, &mut value, 0) {
                Ok(()) if value.expires_ns >= now_ns => {
                    sweep.renewed += 1;
                    continue;
                }
                Ok(()) => {}
                // Gone already (a packet met it, or the LRU took it): fine.
                Err(_) => continue,
            }
            hook(SweepPoint::Delete(key));
            if elem(fd, BPF_MAP_LOOKUP_AND_DELETE_ELEM, key, &mut value, 0).is_err() {
                continue;
            }
            if value.expires_ns < now_ns {
                sweep.removed += 1;
                continue;
            }
            // Renewed in the instant between: put it back, unless a packet
            // has opened another since (that one is live too).
            match elem(fd, BPF_MAP_UPDATE_ELEM, key, &mut value, BPF_NOEXIST) {
                Ok(()) => sweep.restored += 1,
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => sweep.renewed += 1,
                Err(e) => return Err(io(e)),
            }
        }
        Ok(sweep)
    }
}

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
/// Linux 5.14+ for hash maps.
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
const BPF_NOEXIST: u64 = 1;

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
/// `&mut self` to delete, and has no lookup-and-delete for hash maps.
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

impl Maps {
    /// Calls `each` with every entry of the flow table (one batch read).
    pub fn for_each_flow(
        &self,
        mut each: impl FnMut(&FlowKey, &FlowValue),
    ) -> Result<(), DataplaneError> {
        super::batch::for_each(
            self.flows.map(),
            std::mem::size_of::<FlowKey>(),
            std::mem::size_of::<FlowValue>(),
            |k, v| {
                // SAFETY: the kernel wrote whole keys and values of these types.
                let (key, value): (FlowKey, FlowValue) = unsafe {
                    (
                        std::ptr::read_unaligned(k.as_ptr().cast()),
                        std::ptr::read_unaligned(v.as_ptr().cast()),
                    )
                };
                each(&key, &value)
            },
        )
        .map_err(|e| DataplaneError::Layout(format!("{}: {e}", names::FLOWS)))
    }

    /// Entries in the flow table now, live or not yet swept.
    pub fn flow_entries(&self) -> Result<usize, DataplaneError> {
        let mut n = 0;
        self.for_each_flow(|_, _| n += 1)?;
        Ok(n)
    }

    /// Every entry of the flow table now.
    pub fn flow_entries_all(&self) -> Result<Vec<(FlowKey, FlowValue)>, DataplaneError> {
        let mut out = Vec::new();
        self.for_each_flow(|k, v| out.push((*k, *v)))?;
        Ok(out)
    }
}
