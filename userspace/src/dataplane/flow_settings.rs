//! The flow table's settings a pinned data plane was loaded with, checked
//! when it is adopted. The table's size is the map's `max_entries`, fixed
//! at creation: a pinned table of another size is refused (resizing would
//! mean a new, empty table: every flow lost). The lifetimes and budget are
//! the programs' read-only global: they are recorded beside the pins as an
//! empty directory `flows_<hex of FlowConfig>` (the bpf filesystem holds
//! only pins and directories), and programs loaded with others are
//! replaced gap-free by ones with the file's ([`super::replace`]).

use std::path::Path;

use anyhow::{Context, Result};
use aya::maps::IterableMap;
use wgbpf_common::FlowConfig;

use super::{pin_dir, DataplaneError, Maps};

const MARK: &str = "flows_";

fn encode(c: &FlowConfig) -> String {
    // SAFETY: FlowConfig is plain data without padding (its size is asserted
    // in common).
    let bytes: [u8; std::mem::size_of::<FlowConfig>()] = unsafe { std::mem::transmute(*c) };
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode(s: &str) -> Option<FlowConfig> {
    let mut bytes = [0u8; std::mem::size_of::<FlowConfig>()];
    if s.len() != bytes.len() * 2 {
        return None;
    }
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    // SAFETY: every bit pattern is a valid FlowConfig (integers only), and
    // `bytes` is exactly its size.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<FlowConfig>()) })
}

/// The flow settings `iface`'s pinned programs run with. A data plane
/// pinned before they were recorded ran with the defaults, the only ones
/// there were.
pub fn pinned(iface: &str) -> FlowConfig {
    std::fs::read_dir(pin_dir(iface))
        .ok()
        .and_then(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .find_map(|n| decode(n.strip_prefix(MARK)?))
        })
        .unwrap_or(FlowConfig::DEFAULT)
}

/// Records `c` as the pinned programs' flow settings.
pub(crate) fn mark(dir: &Path, c: &FlowConfig) -> Result<()> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(MARK) {
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
    let mark = dir.join(format!("{MARK}{}", encode(c)));
    std::fs::create_dir(&mark)
        .with_context(|| format!("recording the flow settings at {}", mark.display()))
}

/// Refuses to adopt a pinned flow table whose size is not `wanted`.
pub fn check_table_size(iface: &str, maps: &Maps, wanted: u32) -> Result<(), DataplaneError> {
    let pinned = maps
        .flows
        .map()
        .info()
        .map_err(|source| DataplaneError::Map {
            name: wgbpf_common::names::FLOWS,
            source,
        })?
        .max_entries();
    if pinned == wanted {
        return Ok(());
    }
    Err(DataplaneError::FlowTableSize {
        iface: iface.to_string(),
        pinned,
        wanted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_survive_their_directory_name() {
        let c = FlowConfig {
            tcp_opening_ns: 1,
            tcp_established_ns: u64::MAX,
            tcp_closing_ns: 3_000_000_000,
            other_opening_ns: 4,
            other_established_ns: 5,
            new_per_second: 6,
            new_burst: u32::MAX,
            fragment_ns: 7,
        };
        let name = encode(&c);
        assert!(MARK.len() + name.len() < 255, "fits a file name");
        assert_eq!(decode(&name), Some(c));
        assert_eq!(
            decode(&encode(&FlowConfig::DEFAULT)),
            Some(FlowConfig::DEFAULT)
        );
        assert_eq!(decode(&name[2..]), None, "a truncated name is no setting");
        assert_eq!(decode(&name.replace('0', "g")), None);
    }
}
