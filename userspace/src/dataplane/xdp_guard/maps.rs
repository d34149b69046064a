//! Typed handles on the guard's maps: writing its settings and allowlist,
//! reading its counters.

use std::path::Path;

use ipnet::IpNet;

use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie, Map, MapData, PerCpuArray};
use wgbpf_common::{
    xdp::{names, xdp_stat, XdpBucket, XdpConfig},
    Addr,
};

use super::{config::allow_key, map_err, GuardConfig, GuardError};

/// Typed handles on the guard's maps.
pub struct GuardMaps {
    pub config: Array<MapData, XdpConfig>,
    pub stats: PerCpuArray<MapData, u64>,
    pub buckets: HashMap<MapData, Addr, XdpBucket>,
    pub allow: LpmTrie<MapData, Addr, u8>,
}

impl GuardMaps {
    pub(super) fn from_source(
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
