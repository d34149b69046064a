//! The port-class array is BPF_F_MMAPABLE: the controller writes a slot's
//! 327,680 entries through shared memory instead of one syscall each.

use std::os::fd::{AsFd, AsRawFd};

use aya::maps::{Map, MapData};
use wgbpf_common::PORT_CLASS_ENTRIES;

use super::DataplaneError;

/// The kernel stores array elements 8-byte aligned.
const STRIDE: usize = 8;

pub struct MmapArray {
    _map: MapData,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by this value and only touched through &mut.
unsafe impl Send for MmapArray {}

impl MmapArray {
    pub fn new(name: &'static str, map: Map) -> Result<Self, DataplaneError> {
        let Map::Array(data) = map else {
            return Err(DataplaneError::Layout(format!("{name} is not an array")));
        };
        let len = 2 * PORT_CLASS_ENTRIES as usize * STRIDE;
        let fd = data.fd().as_fd().as_raw_fd();
        // SAFETY: a fresh shared mapping of the map's value area.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(DataplaneError::Layout(format!(
                "mmap of {name}: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(Self {
            _map: data,
            ptr: ptr.cast(),
            len,
        })
    }

    pub fn get(&self, index: usize) -> u16 {
        assert!(index * STRIDE < self.len);
        // SAFETY: in bounds, aligned, inside our mapping.
        unsafe { std::ptr::read_volatile(self.ptr.add(index * STRIDE).cast::<u16>()) }
    }

    /// Writes one slot's entries where they differ; returns how many did.
    pub fn write_slot(&mut self, slot: u32, values: &[u16]) -> usize {
        let base = (slot * PORT_CLASS_ENTRIES) as usize;
        let mut changed = 0;
        for (i, v) in values.iter().enumerate() {
            let i = base + i;
            if self.get(i) != *v {
                // SAFETY: as in get().
                unsafe { std::ptr::write_volatile(self.ptr.add(i * STRIDE).cast::<u16>(), *v) };
                changed += 1;
            }
        }
        changed
    }
}

impl Drop for MmapArray {
    fn drop(&mut self) {
        // SAFETY: unmapping what new() mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
