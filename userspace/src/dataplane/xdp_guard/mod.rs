//! The XDP guard on the underlay (docs/xdp-guard.md): loading its object,
//! configuring it, attaching it to an interface in native (driver) mode or,
//! where the driver has none, generic (skb) mode, pinning it so it outlives
//! the controller, adopting and repairing a pinned guard, removing it, and
//! reading its counters.
//!
//! Pins, per interface, under [`pin_dir`]: the program, its four maps, and
//! the XDP link as `link_native` or `link_generic` (the name records the
//! mode, which the kernel's link info does not tell).
//!
//! Here: the object and its loading; `config` the settings, `maps` the
//! typed maps and counters, `attach` attaching, pinning and status.

mod attach;
mod config;
mod maps;

use std::path::{Path, PathBuf};

use aya::{programs::Xdp, Ebpf, EbpfLoader};
use thiserror::Error;
use wgbpf_common::xdp::{capacity, names};

pub use attach::{
    attached_prog, install, is_attached, pinned_interfaces, pinned_mode, read_stats, remove,
    status, GuardInstalled, GuardMode, GuardStatus,
};
pub use config::{GuardConfig, MAX_HANDSHAKE_RATE};
pub use maps::{GuardMaps, GuardStats};

/// The guard's eBPF object, built by build.rs from ../ebpf.
pub static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/wgbpf-xdp-guard.o"));

/// Where guards are pinned, one directory per underlay interface.
pub const PIN_ROOT: &str = "/sys/fs/bpf/wgbpf-xdp";

/// Where the guard of an underlay interface is pinned.
pub fn pin_dir(iface: &str) -> PathBuf {
    PathBuf::from(PIN_ROOT).join(iface)
}

/// The guard's maps, in pin order.
pub const ALL_MAPS: [&str; 4] = [names::CONFIG, names::STATS, names::BUCKETS, names::ALLOW];

#[derive(Debug, Error)]
pub enum GuardError {
    #[error("XDP guard settings: {0}")]
    Config(String),
    #[error("loading the XDP guard: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the kernel refused the XDP guard: {0}")]
    Program(#[source] Box<aya::programs::ProgramError>),
    #[error("XDP guard map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("pin {path}: {message}")]
    Pin { path: PathBuf, message: String },
    #[error("attaching the XDP guard to {iface}: {message}")]
    Attach { iface: String, message: String },
    #[error("no XDP guard is pinned for {0}")]
    NotLoaded(String),
}

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> GuardError {
    move |source| GuardError::Map { name, source }
}

fn pin_err(path: &Path) -> impl FnOnce(String) -> GuardError + '_ {
    move |message| GuardError::Pin {
        path: path.to_path_buf(),
        message,
    }
}

/// A loaded guard object (programs loaded, not attached).
pub struct XdpGuard {
    pub ebpf: Ebpf,
    pub maps: GuardMaps,
}

#[derive(Clone, Debug, Default)]
pub struct GuardLoadOptions {
    /// Pin (and reuse) the maps here; `None` for private maps (tests).
    pub pin_dir: Option<PathBuf>,
    /// Sources with a token bucket; default [`capacity::BUCKETS`].
    pub buckets: Option<u32>,
    /// Also load the bare XDP_DROP and XDP_PASS programs (the benchmark's
    /// baselines).
    pub with_baselines: bool,
}

impl XdpGuard {
    pub fn load(opts: &GuardLoadOptions) -> Result<Self, GuardError> {
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(names::BUCKETS, opts.buckets.unwrap_or(capacity::BUCKETS));
        let pins: Vec<(&str, PathBuf)> = match &opts.pin_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| GuardError::Pin {
                    path: dir.clone(),
                    message: e.to_string(),
                })?;
                ALL_MAPS.iter().map(|n| (*n, dir.join(n))).collect()
            }
            None => Vec::new(),
        };
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(OBJECT)
            .map_err(|e| GuardError::Load(Box::new(e)))?;
        let mut progs = vec![names::PROG_GUARD];
        if opts.with_baselines {
            progs.extend([names::PROG_DROP_ALL, names::PROG_PASS_ALL]);
        }
        for name in progs {
            program_mut(&mut ebpf, name)?
                .load()
                .map_err(|e| GuardError::Program(Box::new(e)))?;
        }
        let maps = GuardMaps::from_source(|name| {
            ebpf.take_map(name)
                .ok_or_else(|| GuardError::Config(format!("map {name} missing from the object")))
        })?;
        Ok(Self { ebpf, maps })
    }

    /// A loaded program of the object, for BPF_PROG_TEST_RUN or attaching.
    pub fn program(&self, name: &'static str) -> Result<&Xdp, GuardError> {
        self.ebpf
            .program(name)
            .ok_or_else(|| GuardError::Config(format!("program {name} missing")))?
            .try_into()
            .map_err(|e| GuardError::Program(Box::new(e)))
    }

    pub fn program_mut(&mut self, name: &'static str) -> Result<&mut Xdp, GuardError> {
        program_mut(&mut self.ebpf, name)
    }
}

fn program_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, GuardError> {
    ebpf.program_mut(name)
        .ok_or_else(|| GuardError::Config(format!("program {name} missing")))?
        .try_into()
        .map_err(|e| GuardError::Program(Box::new(e)))
}
