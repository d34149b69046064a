//! The XDP guard on the underlay (docs/xdp-guard.md): loading its object,
//! configuring it, attaching it to an interface in native (driver) mode or,
//! where the driver has none, generic (skb) mode, pinning it so it outlives
//! the controller, adopting and repairing a pinned guard, removing it, and
//! reading its counters.
//!
//! Pins, per interface, under [`pin_dir`]: the program, its four maps, and
//! the XDP link as `link_native` or `link_generic` (the name records the
//! mode, which the kernel's link info does not tell).

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
};

use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, Map, MapData, PerCpuArray},
    programs::{
        links::{FdLink, PinnedLink},
        ProgramInfo, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use ipnet::IpNet;
use serde::Serialize;
use thiserror::Error;
use wgbpf_common::{
    map_v4,
    xdp::{
        capacity, names, xdp_stat, XdpBucket, XdpConfig, DEFAULT_HANDSHAKE_BURST,
        DEFAULT_HANDSHAKE_RATE, XDP_FLAG_ALLOWLIST, XDP_MAX_PORTS,
    },
    Addr,
};

/// The guard's eBPF object, built by build.rs from ../ebpf.
pub static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/wgbpf-xdp-guard.o"));

/// Where guards are pinned, one directory per underlay interface.
pub const PIN_ROOT: &str = "/sys/fs/bpf/wgbpf-xdp";

/// Where the guard of an underlay interface is pinned.
pub fn pin_dir(iface: &str) -> PathBuf {
    PathBuf::from(PIN_ROOT).join(iface)
}

/// The interfaces with a guard pinned under `root` (normally [`PIN_ROOT`]),
/// sorted: what `unload` removes, and what a reload compares with the
/// interfaces it wants guarded.
pub fn pinned_interfaces(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| pinned_mode(&e.path()).is_some())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    out.sort();
    out
}

/// The guard's maps, in pin order.
pub const ALL_MAPS: [&str; 4] = [names::CONFIG, names::STATS, names::BUCKETS, names::ALLOW];

/// The highest handshake rate the program honours (per second per source).
pub const MAX_HANDSHAKE_RATE: u32 = 1_000_000;

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

/// What the guard enforces. Rewritten in place on reload (no detach).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GuardConfig {
    /// WireGuard listen ports behind this underlay (1 to 4).
    pub ports: Vec<u16>,
    /// Handshake initiations per second per source address; 0 = no limit.
    pub handshake_rate: u32,
    /// Initiations one source may send at once (bucket size).
    pub handshake_burst: u32,
    /// `Some`: packets to the ports only from these prefixes.
    pub allowlist: Option<Vec<IpNet>>,
}

impl GuardConfig {
    /// The defaults for one listen port.
    pub fn for_port(port: u16) -> Self {
        Self {
            ports: vec![port],
            handshake_rate: DEFAULT_HANDSHAKE_RATE,
            handshake_burst: DEFAULT_HANDSHAKE_BURST,
            allowlist: None,
        }
    }

    /// The kernel's form, after checking the settings.
    pub fn to_kernel(&self) -> Result<XdpConfig, GuardError> {
        let bad = |m: String| Err(GuardError::Config(m));
        if self.ports.is_empty() || self.ports.len() > XDP_MAX_PORTS {
            return bad(format!(
                "1 to {XDP_MAX_PORTS} listen ports, not {}",
                self.ports.len()
            ));
        }
        if self.ports.contains(&0) {
            return bad("listen port 0".into());
        }
        if self.handshake_rate > MAX_HANDSHAKE_RATE {
            return bad(format!(
                "handshake rate {} is above {MAX_HANDSHAKE_RATE} per second",
                self.handshake_rate
            ));
        }
        if self.handshake_rate > 0 && self.handshake_burst == 0 {
            return bad("a handshake burst of 0 would refuse every initiation".into());
        }
        let mut ports = [0u16; XDP_MAX_PORTS];
        ports[..self.ports.len()].copy_from_slice(&self.ports);
        Ok(XdpConfig {
            clock_ns: 0,
            ports,
            handshake_rate: self.handshake_rate,
            handshake_burst: self.handshake_burst,
            flags: if self.allowlist.is_some() {
                XDP_FLAG_ALLOWLIST
            } else {
                0
            },
            _pad: 0,
        })
    }
}

/// Typed handles on the guard's maps.
pub struct GuardMaps {
    pub config: Array<MapData, XdpConfig>,
    pub stats: PerCpuArray<MapData, u64>,
    pub buckets: HashMap<MapData, Addr, XdpBucket>,
    pub allow: LpmTrie<MapData, Addr, u8>,
}

impl GuardMaps {
    fn from_source(
        mut take: impl FnMut(&'static str) -> Result<Map, GuardError>,
    ) -> Result<Self, GuardError> {
        fn conv<T: TryFrom<Map, Error = aya::maps::MapError>>(
            name: &'static str,
            map: Map,
        ) -> Result<T, GuardError> {
            T::try_from(map).map_err(map_err(name))
        }
        Ok(Self {
            config: conv(names::CONFIG, take(names::CONFIG)?)?,
            stats: conv(names::STATS, take(names::STATS)?)?,
            buckets: conv(names::BUCKETS, take(names::BUCKETS)?)?,
            allow: conv(names::ALLOW, take(names::ALLOW)?)?,
        })
    }

    /// Opens the maps pinned in `dir`.
    pub fn open_pinned(dir: &Path) -> Result<Self, GuardError> {
        Self::from_source(|name| {
            let path = dir.join(name);
            let data = MapData::from_pin(&path).map_err(|e| GuardError::Pin {
                path: path.clone(),
                message: e.to_string(),
            })?;
            Map::from_map_data(data).map_err(map_err(name))
        })
    }

    /// Writes `cfg`: the allowlist first (so enabling it never meets an
    /// empty trie), then the settings in one write.
    pub fn configure(&mut self, cfg: &GuardConfig) -> Result<(), GuardError> {
        let mut kernel = cfg.to_kernel()?;
        self.sync_allowlist(cfg.allowlist.as_deref().unwrap_or(&[]))?;
        // Keep a test clock a test has set (always 0 in production).
        if let Ok(old) = self.config.get(&0, 0) {
            kernel.clock_ns = old.clock_ns;
        }
        self.write_raw(kernel)
    }

    /// Writes the kernel settings as they are (tests set the clock here).
    pub fn write_raw(&mut self, cfg: XdpConfig) -> Result<(), GuardError> {
        self.config.set(0, cfg, 0).map_err(map_err(names::CONFIG))
    }

    pub fn read_raw(&self) -> Result<XdpConfig, GuardError> {
        self.config.get(&0, 0).map_err(map_err(names::CONFIG))
    }

    /// Makes the allowlist trie hold exactly `prefixes`.
    fn sync_allowlist(&mut self, prefixes: &[IpNet]) -> Result<(), GuardError> {
        let want: Vec<(u32, Addr)> = prefixes.iter().map(allow_key).collect();
        let have: Vec<Key<Addr>> = self
            .allow
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err(names::ALLOW))?;
        for k in &want {
            self.allow
                .insert(&Key::new(k.0, k.1), 1, 0)
                .map_err(map_err(names::ALLOW))?;
        }
        for k in have {
            if !want.contains(&(k.prefix_len(), k.data())) {
                self.allow.remove(&k).map_err(map_err(names::ALLOW))?;
            }
        }
        Ok(())
    }

    /// The counters, summed over CPUs.
    pub fn stats(&self) -> Result<GuardStats, GuardError> {
        let mut s = GuardStats::default();
        for i in 0..xdp_stat::COUNT {
            let per_cpu = self.stats.get(&i, 0).map_err(map_err(names::STATS))?;
            s.0[i as usize] = per_cpu.iter().sum();
        }
        Ok(s)
    }
}

/// The trie key of a prefix: IPv4 mapped into ::ffff:0:0/96, host bits
/// cleared.
fn allow_key(net: &IpNet) -> (u32, Addr) {
    let net = net.trunc();
    match net.addr() {
        IpAddr::V4(a) => (96 + u32::from(net.prefix_len()), map_v4(a.octets())),
        IpAddr::V6(a) => (u32::from(net.prefix_len()), a.octets()),
    }
}

/// The guard's counters: passes by message type and drops by reason,
/// indexed as `xdp_stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardStats(pub [u64; xdp_stat::COUNT as usize]);

impl GuardStats {
    pub fn get(&self, index: u32) -> u64 {
        self.0[index as usize]
    }

    /// (name, count) for every counter, as `xdp_stat::NAMES`.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        xdp_stat::NAMES.iter().copied().zip(self.0.iter().copied())
    }

    pub fn dropped(&self) -> u64 {
        self.0[xdp_stat::FIRST_DROP as usize..].iter().sum()
    }

    pub fn passed(&self) -> u64 {
        self.0[..xdp_stat::FIRST_DROP as usize].iter().sum()
    }

    /// What happened since `earlier`.
    pub fn since(&self, earlier: &GuardStats) -> GuardStats {
        let mut d = *self;
        for (a, b) in d.0.iter_mut().zip(earlier.0) {
            *a = a.saturating_sub(b);
        }
        d
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

/// How the guard runs on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GuardMode {
    /// In the driver, before any socket buffer exists.
    Native,
    /// Generic XDP in the network stack (drivers without XDP support).
    Generic,
}

impl GuardMode {
    fn link_pin(self) -> &'static str {
        match self {
            GuardMode::Native => "link_native",
            GuardMode::Generic => "link_generic",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GuardMode::Native => "native",
            GuardMode::Generic => "generic",
        }
    }
}

/// The result of [`install`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GuardInstalled {
    pub iface: String,
    pub mode: GuardMode,
    /// A pinned guard was found and kept (its counters and buckets too).
    pub adopted: bool,
    /// The adopted guard was pinned but no longer attached, and was
    /// attached again.
    pub reattached: bool,
}

/// What is pinned in `dir`: the mode of its link, if any.
pub fn pinned_mode(dir: &Path) -> Option<GuardMode> {
    [GuardMode::Native, GuardMode::Generic]
        .into_iter()
        .find(|m| dir.join(m.link_pin()).exists())
}

/// Attaches the guard to `iface` with `cfg`, pinned in `dir` (normally
/// [`pin_dir`]`(iface)`), or adopts the guard pinned there: its settings are
/// rewritten in place, and if it was detached (its interface's XDP program
/// is another, or none) it is attached again in its mode. A fresh guard
/// tries native mode first and falls back to generic mode.
pub fn install(
    iface: &str,
    dir: &Path,
    cfg: &GuardConfig,
    buckets: Option<u32>,
) -> Result<GuardInstalled, GuardError> {
    cfg.to_kernel()?;
    if let Some(mode) = pinned_mode(dir) {
        let mut maps = GuardMaps::open_pinned(dir)?;
        maps.configure(cfg)?;
        let reattached = !is_attached(iface, dir)?;
        if reattached {
            reattach(iface, dir, mode)?;
        }
        return Ok(GuardInstalled {
            iface: iface.to_string(),
            mode,
            adopted: true,
            reattached,
        });
    }
    let result = install_fresh(iface, dir, cfg, buckets);
    if result.is_err() {
        // Leave nothing half-installed behind.
        let _ = remove(iface, dir);
    }
    result
}

fn install_fresh(
    iface: &str,
    dir: &Path,
    cfg: &GuardConfig,
    buckets: Option<u32>,
) -> Result<GuardInstalled, GuardError> {
    let mut guard = XdpGuard::load(&GuardLoadOptions {
        pin_dir: Some(dir.to_path_buf()),
        buckets,
        with_baselines: false,
    })?;
    // Configured before it sees a packet.
    guard.maps.configure(cfg)?;
    let prog = guard.program_mut(names::PROG_GUARD)?;
    let mode = attach_and_pin(prog, iface, dir)?;
    let prog_pin = dir.join(names::PROG_GUARD);
    prog.pin(&prog_pin).map_err(|e| GuardError::Pin {
        path: prog_pin.clone(),
        message: e.to_string(),
    })?;
    Ok(GuardInstalled {
        iface: iface.to_string(),
        mode,
        adopted: false,
        reattached: false,
    })
}

/// Attaches `prog` natively, else generically, and pins the link under the
/// mode's name.
fn attach_and_pin(prog: &mut Xdp, iface: &str, dir: &Path) -> Result<GuardMode, GuardError> {
    let attach_err = |message: String| GuardError::Attach {
        iface: iface.to_string(),
        message,
    };
    let (id, mode) = match prog.attach(iface, XdpMode::Driver) {
        Ok(id) => (id, GuardMode::Native),
        Err(native) => match prog.attach(iface, XdpMode::Skb) {
            Ok(id) => (id, GuardMode::Generic),
            Err(generic) => {
                return Err(attach_err(format!(
                    "native mode: {native}; generic mode: {generic}"
                )))
            }
        },
    };
    pin_link(prog, id, iface, dir, mode)?;
    Ok(mode)
}

/// Pins the link `id` of `prog` under the mode's name (through a temporary
/// name, so an existing pin is replaced, never missing).
fn pin_link(
    prog: &mut Xdp,
    id: aya::programs::xdp::XdpLinkId,
    iface: &str,
    dir: &Path,
    mode: GuardMode,
) -> Result<(), GuardError> {
    let attach_err = |message: String| GuardError::Attach {
        iface: iface.to_string(),
        message,
    };
    let link = prog.take_link(id).map_err(|e| attach_err(e.to_string()))?;
    let link: FdLink = link.try_into().map_err(|e| {
        attach_err(format!(
            "the kernel gave no bpf_link (needs Linux 5.9 or later): {e}"
        ))
    })?;
    let path = dir.join(mode.link_pin());
    // bpffs refuses dots in names.
    let tmp = dir.join(format!("{}_new", mode.link_pin()));
    let _ = std::fs::remove_file(&tmp);
    link.pin(&tmp).map_err(|e| GuardError::Pin {
        path: tmp.clone(),
        message: e.to_string(),
    })?;
    std::fs::rename(&tmp, &path).map_err(|e| pin_err(&path)(e.to_string()))
}

/// Attaches the guard again in `mode`: the object is loaded anew over the
/// pinned maps (settings, counters and buckets are kept), and its program
/// and link pins replace the old ones.
fn reattach(iface: &str, dir: &Path, mode: GuardMode) -> Result<(), GuardError> {
    let mut guard = XdpGuard::load(&GuardLoadOptions {
        pin_dir: Some(dir.to_path_buf()),
        buckets: None,
        with_baselines: false,
    })?;
    let prog = guard.program_mut(names::PROG_GUARD)?;
    let xdp_mode = match mode {
        GuardMode::Native => XdpMode::Driver,
        GuardMode::Generic => XdpMode::Skb,
    };
    let id = prog
        .attach(iface, xdp_mode)
        .map_err(|e| GuardError::Attach {
            iface: iface.to_string(),
            message: format!("{} mode: {e}", mode.as_str()),
        })?;
    pin_link(prog, id, iface, dir, mode)?;
    let prog_pin = dir.join(names::PROG_GUARD);
    let _ = std::fs::remove_file(&prog_pin);
    prog.pin(&prog_pin)
        .map_err(|e| pin_err(&prog_pin)(e.to_string()))
}

/// Whether the program pinned in `dir` is the XDP program of `iface` (in
/// the caller's network namespace), by program id.
pub fn is_attached(iface: &str, dir: &Path) -> Result<bool, GuardError> {
    let path = dir.join(names::PROG_GUARD);
    let pinned = ProgramInfo::from_pin(&path)
        .map_err(|e| pin_err(&path)(e.to_string()))?
        .id();
    Ok(attached_prog_id(iface)? == Some(pinned))
}

/// The id of `iface`'s XDP program and the mode it runs in, from
/// `ip -d -j link show` (the kernel's IFLA_XDP attributes).
pub fn attached_prog(iface: &str) -> Result<Option<(u32, GuardMode)>, GuardError> {
    let err = |message: String| GuardError::Attach {
        iface: iface.to_string(),
        message,
    };
    let out = Command::new("ip")
        .args(["-d", "-j", "link", "show", "dev", iface])
        .output()
        .map_err(|e| err(format!("running ip: {e}")))?;
    if !out.status.success() {
        return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| err(format!("ip's JSON: {e}")))?;
    let xdp = &v[0]["xdp"];
    // IFLA_XDP_ATTACHED: 1 driver, 2 generic (skb), 3 offload.
    let mode = match xdp["mode"].as_u64() {
        Some(1) => GuardMode::Native,
        Some(2) => GuardMode::Generic,
        _ => return Ok(None),
    };
    Ok(xdp["prog"]["id"].as_u64().map(|id| (id as u32, mode)))
}

fn attached_prog_id(iface: &str) -> Result<Option<u32>, GuardError> {
    Ok(attached_prog(iface)?.map(|(id, _)| id))
}

/// Detaches the guard pinned in `dir` from its interface and removes every
/// pin. Returns false when nothing was pinned there.
pub fn remove(_iface: &str, dir: &Path) -> Result<bool, GuardError> {
    if !dir.exists() {
        return Ok(false);
    }
    for mode in [GuardMode::Native, GuardMode::Generic] {
        let path = dir.join(mode.link_pin());
        if path.exists() {
            // Unpinning and dropping the last reference detaches the link.
            let link = PinnedLink::from_pin(&path).map_err(|e| pin_err(&path)(e.to_string()))?;
            drop(link.unpin());
        }
    }
    std::fs::remove_dir_all(dir).map_err(|e| pin_err(dir)(e.to_string()))?;
    Ok(true)
}

/// What `show` and the metrics report for one underlay interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GuardStatus {
    pub iface: String,
    /// The mode it was attached in.
    pub mode: GuardMode,
    /// Whether it is still the interface's XDP program.
    pub attached: bool,
    /// Every counter by name (`xdp_stat::NAMES`), summed over CPUs.
    pub counters: Vec<(&'static str, u64)>,
}

/// The status of the guard pinned in `dir` for `iface` (looked up in the
/// caller's network namespace).
pub fn status(iface: &str, dir: &Path) -> Result<GuardStatus, GuardError> {
    let mode = pinned_mode(dir).ok_or_else(|| GuardError::NotLoaded(iface.to_string()))?;
    Ok(GuardStatus {
        iface: iface.to_string(),
        mode,
        attached: is_attached(iface, dir)?,
        counters: read_stats(dir)?.named().collect(),
    })
}

/// The counters of the guard pinned in `dir`.
pub fn read_stats(dir: &Path) -> Result<GuardStats, GuardError> {
    if pinned_mode(dir).is_none() {
        return Err(GuardError::NotLoaded(dir.display().to_string()));
    }
    GuardMaps::open_pinned(dir)?.stats()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let ok = GuardConfig::for_port(51820);
        let k = ok.to_kernel().unwrap();
        assert_eq!(k.ports, [51820, 0, 0, 0]);
        assert_eq!(k.flags, 0);
        let bad = |f: &dyn Fn(&mut GuardConfig)| {
            let mut c = ok.clone();
            f(&mut c);
            c.to_kernel().is_err()
        };
        assert!(bad(&|c| c.ports.clear()));
        assert!(bad(&|c| c.ports = vec![1, 2, 3, 4, 5]));
        assert!(bad(&|c| c.ports = vec![0]));
        assert!(bad(&|c| c.handshake_burst = 0));
        assert!(bad(&|c| c.handshake_rate = MAX_HANDSHAKE_RATE + 1));
        let mut no_limit = ok.clone();
        no_limit.handshake_rate = 0;
        no_limit.handshake_burst = 0;
        assert!(no_limit.to_kernel().is_ok());
        let mut allow = ok.clone();
        allow.allowlist = Some(vec![]);
        assert_eq!(allow.to_kernel().unwrap().flags, XDP_FLAG_ALLOWLIST);
    }

    #[test]
    fn allowlist_keys_map_ipv4_and_clear_host_bits() {
        let (len, addr) = allow_key(&"192.0.2.77/24".parse().unwrap());
        assert_eq!(len, 120);
        assert_eq!(addr, map_v4([192, 0, 2, 0]));
        let (len, addr) = allow_key(&"2001:db8::1/32".parse().unwrap());
        assert_eq!(len, 32);
        assert_eq!(addr[..4], [0x20, 0x01, 0x0d, 0xb8]);
        assert!(addr[4..].iter().all(|b| *b == 0));
    }
}
