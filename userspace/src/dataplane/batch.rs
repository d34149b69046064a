//! Reading a whole hash map in a few syscalls (BPF_MAP_LOOKUP_BATCH, Linux
//! 5.6+) instead of two per key: a scrape of 100,000 deny keys is then
//! bounded by copying, not by syscalls. aya 0.14 has no batch API, so this
//! speaks to bpf(2) directly.

use std::os::fd::{AsFd, AsRawFd};

use aya::maps::MapData;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Keys per syscall.
const CHUNK: usize = 4096;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Calls `each(key bytes, value bytes)` for every entry of a map; for a
/// per-CPU map each value is `cpus` slots of `value_size` rounded up to 8
/// bytes, one after the other.
pub fn for_each(
    map: &MapData,
    key_size: usize,
    value_stride: usize,
    mut each: impl FnMut(&[u8], &[u8]),
) -> std::io::Result<()> {
    let fd = map.fd().as_fd().as_raw_fd();
    // Hash maps use a 4-byte bucket index as the batch token.
    let (mut in_batch, mut out_batch) = (0u32, 0u32);
    let mut first = true;
    let mut keys = vec![0u8; CHUNK * key_size];
    let mut values = vec![0u8; CHUNK * value_stride];
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &in_batch as *const u32 as u64
            },
            out_batch: &mut out_batch as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd as u32,
            ..Default::default()
        };
        // SAFETY: attr points at live buffers sized for `count` elements.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        let err = (rc < 0).then(std::io::Error::last_os_error);
        // ENOENT: this was the last batch; `count` still says what it held.
        if let Some(e) = &err {
            if e.raw_os_error() != Some(libc::ENOENT) {
                return Err(err.unwrap());
            }
        }
        for i in 0..attr.count as usize {
            each(
                &keys[i * key_size..(i + 1) * key_size],
                &values[i * value_stride..(i + 1) * value_stride],
            );
        }
        if err.is_some() {
            return Ok(());
        }
        in_batch = out_batch;
        first = false;
    }
}
