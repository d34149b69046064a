//! The kernel side as the controller sees it: load the object, write
//! policies into the inactive slot and switch, attach to an interface and
//! pin everything so enforcement outlives the controller.

pub mod applied;
pub mod attach;
pub mod batch;
pub mod caps;
pub mod counters;
pub mod flow_settings;
pub mod flows;
pub mod hooks;
pub mod lock;
pub mod maps;
pub mod mmap;
pub mod peers;
pub mod program_log;
pub mod reattach;
pub mod repin;
pub mod replace;
pub mod slot;
mod state_file;
pub mod version;
pub mod xdp_guard;

use std::path::PathBuf;

use aya::{programs::SchedClassifier, Ebpf, EbpfLoader};
use thiserror::Error;
use wgbpf_common::{capacity, names, EventConfig, FlowConfig};

pub use maps::Maps;

/// The eBPF object built by build.rs from ../ebpf.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/wgbpf-ebpf.o"));

/// Programs the tests attach beside wgbpf's (the `test-programs` feature).
#[cfg(feature = "test-programs")]
pub mod test_programs {
    /// A classifier that accepts everything and ends the tcx chain.
    pub static TC_PASS_OBJECT: &[u8] =
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/wgbpf-tc-pass.o"));
    /// Its program name.
    pub const TC_PASS: &str = "wgbpf_test_pass";
}

/// The benchmark's yardsticks (ebpf/src/acl_probe.rs): a program that
/// returns at once and the least a per-peer-port ACL can do. Never loaded
/// by wgbpf itself; `cargo xtask bench acl` runs them.
pub static ACL_PROBE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/wgbpf-acl-probe.o"));

/// Where an interface's programs, maps and links are pinned. `iface` must
/// be a checked interface name ([`crate::ifname::check`] at every input),
/// so that the path stays inside `/sys/fs/bpf/wgbpf`.
pub fn pin_dir(iface: &str) -> PathBuf {
    PathBuf::from("/sys/fs/bpf/wgbpf").join(iface)
}

/// The maps of `iface`'s pinned data plane, `None` when nothing is pinned:
/// the one way the controller's commands open an interface's data plane.
pub fn open(iface: &str) -> Result<Option<Maps>, DataplaneError> {
    if attach::pinned_mode(iface).is_none() {
        return Ok(None);
    }
    Maps::open_pinned(&pin_dir(iface)).map(Some)
}

/// [`open`], where nothing pinned is an error.
pub fn open_loaded(iface: &str) -> Result<Maps, DataplaneError> {
    open(iface)?.ok_or_else(|| DataplaneError::NotLoaded(iface.to_string(), pin_dir(iface)))
}

/// The maps pinned for `iface`, whether or not its programs are (the
/// metrics read the counters of whatever is pinned).
pub fn open_maps(iface: &str) -> Result<Maps, DataplaneError> {
    let dir = pin_dir(iface);
    if !dir.join(names::ACTIVE).exists() {
        return Err(DataplaneError::NotLoaded(iface.to_string(), dir));
    }
    Maps::open_pinned(&dir)
}

#[derive(Debug, Error)]
pub enum DataplaneError {
    #[error(
        "this process lacks {0}: wgbpf needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN to load \
         and attach its programs (without CAP_PERFMON the verifier refuses them as untrusted; \
         deploy/wgbpf@.service grants exactly these); nothing was changed"
    )]
    Capabilities(String),
    #[error("loading the eBPF object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the kernel refused program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(
        "map {name} is too small: the new policy needs {needed} entries and {capacity} are free \
         beside the running policy (the map sizes are fixed when wgbpf is built: \
         wgbpf_common::capacity)"
    )]
    Full {
        name: &'static str,
        needed: usize,
        capacity: u32,
    },
    #[error("pin {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("attaching to {iface}: {message}")]
    Attach { iface: String, message: String },
    #[error("{0}")]
    Layout(String),
    #[error("{iface}: {message}")]
    Lock { iface: String, message: String },
    #[error(
        "the active policy slot changed while this update was written (another controller?); \
         the new policy was not made active"
    )]
    Raced,
    #[error(
        "the data plane pinned on {iface} has a flow table of {pinned} entries and the mesh file \
         asks for {wanted} ([interface.flows] table_size): a table cannot be resized in place. \
         Set table_size = {pinned} to keep it, or `wgbpf unload -i {iface}` then load again \
         (a gap: flows and counters start afresh)"
    )]
    FlowTableSize {
        iface: String,
        pinned: u32,
        wanted: u32,
    },
    #[error("no wgbpf data plane is loaded on {0} (nothing pinned at {1})")]
    NotLoaded(String, PathBuf),
}

/// Sizes of the maps, fixed when the data plane is first created.
#[derive(Clone, Copy, Debug)]
pub struct Capacities {
    pub policy: u32,
    pub ipcache: u32,
    pub hosts: u32,
    pub flows: u32,
    pub peers: u32,
    pub denies: u32,
}

impl Default for Capacities {
    fn default() -> Self {
        Self {
            policy: capacity::POLICY,
            ipcache: capacity::IPCACHE,
            hosts: capacity::HOSTS,
            flows: capacity::FLOWS,
            peers: capacity::PEERS,
            denies: capacity::DENIES,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Bytes before the IP header: 0 on WireGuard, 14 for BPF_PROG_TEST_RUN.
    pub l2_hdr_len: u32,
    /// Pin (and reuse) the maps here; `None` for private maps (tests).
    pub pin_dir: Option<PathBuf>,
    pub capacities: Capacities,
    /// Deny events per second per CPU, and burst.
    pub events: Option<EventConfig>,
    /// Flow lifetimes and the budget of new flows per peer.
    pub flows: FlowConfig,
    /// The programs' own log level (aya-log; [`program_log`]).
    pub program_log: program_log::ProgramLog,
}

/// The programs' load-time settings a pinned data plane runs with and a
/// mesh file may change (read-only globals, recorded beside the pins):
/// adopted programs with others are replaced gap-free ([`replace`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramSettings {
    pub flows: FlowConfig,
    pub log: program_log::ProgramLog,
}

impl ProgramSettings {
    pub fn of(opts: &LoadOptions) -> Self {
        Self {
            flows: opts.flows,
            log: opts.program_log,
        }
    }

    /// What `iface`'s pinned programs were loaded with.
    pub fn pinned(iface: &str) -> Self {
        Self {
            flows: flow_settings::pinned(iface),
            log: program_log::pinned(iface),
        }
    }

    pub(crate) fn mark(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        flow_settings::mark(dir, &self.flows)?;
        program_log::mark(dir, self.log)
    }
}

/// A loaded object: its programs and its maps.
pub struct Dataplane {
    pub ebpf: Ebpf,
    pub maps: Maps,
}

impl Dataplane {
    /// Loads the programs into the kernel (not attached). With a pin
    /// directory, maps already pinned there are reused, counters and all.
    pub fn load(opts: &LoadOptions) -> Result<Self, DataplaneError> {
        let caps = opts.capacities;
        let log_level = opts.program_log.as_global();
        let mut loader = EbpfLoader::new();
        loader
            .override_global(names::L2_HDR_LEN, &opts.l2_hdr_len, true)
            .override_global(names::FLOW_CONFIG, &opts.flows, true)
            .override_global(names::PROGRAM_LOG_LEVEL, &log_level, true)
            .map_max_entries(names::FLOW_BUDGET, caps.peers)
            .map_max_entries(names::POLICY, caps.policy)
            .map_max_entries(names::IPCACHE, caps.ipcache)
            .map_max_entries(names::HOSTS, caps.hosts)
            .map_max_entries(names::FLOWS, caps.flows)
            .map_max_entries(names::PEER_COUNTERS, caps.peers)
            .map_max_entries(names::DENIES, caps.denies);
        let pins: Vec<(&str, PathBuf)> = match &opts.pin_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| DataplaneError::Pin {
                    path: dir.clone(),
                    source: e.into(),
                })?;
                maps::ALL_MAPS.iter().map(|n| (*n, dir.join(n))).collect()
            }
            None => Vec::new(),
        };
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        if OBJECT.is_empty() {
            return Err(DataplaneError::Layout(
                "this wgbpf was built without its eBPF programs (WGBPF_SKIP_EBPF=1)".into(),
            ));
        }
        let mut ebpf = loader
            .load(OBJECT)
            .map_err(|e| DataplaneError::Load(Box::new(e)))?;
        for name in hooks::HOOKS.map(|h| h.prog) {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| DataplaneError::Layout(format!("program {name} missing")))?
                .try_into()
                .map_err(|e| DataplaneError::Program {
                    name,
                    source: Box::new(e),
                })?;
            prog.load().map_err(|e| DataplaneError::Program {
                name,
                source: Box::new(e),
            })?;
        }
        let mut maps = Maps::from_source(|name| {
            ebpf.take_map(name)
                .ok_or_else(|| DataplaneError::Layout(format!("map {name} missing")))
        })?;
        if let Some(ev) = opts.events {
            maps.event_config
                .set(0, ev, 0)
                .map_err(|source| DataplaneError::Map {
                    name: names::EVENT_CONFIG,
                    source,
                })?;
        }
        Ok(Self { ebpf, maps })
    }

    pub fn program(&self, name: &'static str) -> Result<&SchedClassifier, DataplaneError> {
        self.ebpf
            .program(name)
            .ok_or_else(|| DataplaneError::Layout(format!("program {name} missing")))?
            .try_into()
            .map_err(|e| DataplaneError::Program {
                name,
                source: Box::new(e),
            })
    }
}
