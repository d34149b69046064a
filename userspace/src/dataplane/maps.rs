//! Typed handles on the data plane's maps, taken from a freshly loaded
//! object or opened from their pins (when adopting a running data plane).

use std::path::Path;

use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, PerCpuHashMap};
use wgbpf_common::{
    names, DenyKey, DenyValue, Endpoint, EventConfig, FlowKey, FlowValue, IpCacheKey, PeerCounters,
    PeerName, PolicyKey, PolicyValue, SlotConfig,
};

use super::{mmap::MmapArray, DataplaneError};

/// Every map the controller reads or writes.
pub struct Maps {
    pub active: Array<MapData, u32>,
    pub slot_config: Array<MapData, SlotConfig>,
    pub ipcache: LpmTrie<MapData, IpCacheKey, Endpoint>,
    pub hosts: HashMap<MapData, IpCacheKey, Endpoint>,
    pub policy: HashMap<MapData, PolicyKey, PolicyValue>,
    pub port_class: MmapArray,
    pub flows: HashMap<MapData, FlowKey, FlowValue>,
    pub peer_counters: PerCpuArray<MapData, PeerCounters>,
    pub peer_names: Array<MapData, PeerName>,
    pub denies: PerCpuHashMap<MapData, DenyKey, DenyValue>,
    pub stats: PerCpuArray<MapData, u64>,
    pub event_config: Array<MapData, EventConfig>,
    /// Kept open for the deny-log reader; taken by whoever consumes events.
    pub events: Option<Map>,
}

/// Every map the object defines, in pin order.
pub use wgbpf_common::names::ALL_MAPS;

impl Maps {
    /// Builds the handles from a source of maps by name.
    pub fn from_source(
        mut take: impl FnMut(&'static str) -> Result<Map, DataplaneError>,
    ) -> Result<Self, DataplaneError> {
        fn conv<T: TryFrom<Map, Error = aya::maps::MapError>>(
            name: &'static str,
            map: Map,
        ) -> Result<T, DataplaneError> {
            T::try_from(map).map_err(|source| DataplaneError::Map { name, source })
        }
        macro_rules! typed {
            ($name:expr) => {{
                let n = $name;
                conv(n, take(n)?)?
            }};
        }
        Ok(Maps {
            active: typed!(names::ACTIVE),
            slot_config: typed!(names::SLOT_CONFIG),
            ipcache: typed!(names::IPCACHE),
            hosts: typed!(names::HOSTS),
            policy: typed!(names::POLICY),
            port_class: MmapArray::new(names::PORT_CLASS, take(names::PORT_CLASS)?)?,
            flows: typed!(names::FLOWS),
            peer_counters: typed!(names::PEER_COUNTERS),
            peer_names: typed!(names::PEER_NAMES),
            denies: {
                // An LRU per-CPU hash: aya's PerCpuHashMap reads it too.
                let map = match take(names::DENIES)? {
                    Map::PerCpuLruHashMap(d) => Map::PerCpuHashMap(d),
                    other => other,
                };
                conv(names::DENIES, map)?
            },
            stats: typed!(names::STATS),
            event_config: typed!(names::EVENT_CONFIG),
            events: Some(take(names::EVENTS)?),
        })
    }

    /// Opens the maps pinned in `dir`.
    pub fn open_pinned(dir: &Path) -> Result<Self, DataplaneError> {
        Self::from_source(|name| {
            let path = dir.join(name);
            let data = MapData::from_pin(&path).map_err(|source| DataplaneError::Pin {
                path: path.clone(),
                source: source.into(),
            })?;
            Map::from_map_data(data).map_err(|source| DataplaneError::Map { name, source })
        })
    }
}
