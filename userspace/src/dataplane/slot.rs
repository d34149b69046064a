//! Atomic policy update. The programs read the active slot number once per
//! packet and use only that slot's maps, so writing the other slot cannot
//! disturb a packet; the switch is one 4-byte array write.

use std::{collections::BTreeMap, time::Duration};

use aya::maps::{lpm_trie::Key, IterableMap, MapData};
use wgbpf_common::{
    ipcache_prefix_len, names, Addr, Endpoint, IpCacheKey, PolicyKey, PolicyValue, SlotConfig,
    PORT_CLASS_ENTRIES, SLOT_VALID,
};

use super::{DataplaneError, Maps};
use crate::policy::compile::Compiled;

/// Prefix length of a single address in the mapped space.
const HOST_BITS: u32 = 128;

/// Programs run for microseconds under RCU; after a switch we wait this long
/// before anyone may rewrite the slot just left.
const GRACE: Duration = Duration::from_millis(5);

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ApplyReport {
    /// Policy version now active.
    pub version: u32,
    pub slot: u32,
    /// False when the active slot already held exactly this policy.
    pub changed: bool,
    pub ipcache_writes: usize,
    pub policy_writes: usize,
    pub port_class_writes: usize,
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

impl Maps {
    pub fn active_slot(&self) -> Result<(u32, SlotConfig), DataplaneError> {
        let slot = self.active.get(&0, 0).map_err(map_err(names::ACTIVE))? & 1;
        let cfg = self
            .slot_config
            .get(&slot, 0)
            .map_err(map_err(names::SLOT_CONFIG))?;
        Ok((slot, cfg))
    }

    /// One slot's trie entries, as (address, prefix bits over 128).
    fn read_ipcache(&self, slot: u32) -> Result<BTreeMap<(Addr, u32), Endpoint>, DataplaneError> {
        let mut out = BTreeMap::new();
        for item in self.ipcache.iter() {
            let (k, v) = item.map_err(map_err(names::IPCACHE))?;
            let data = k.data();
            if data.slot as u32 == slot {
                out.insert((data.addr, k.prefix_len() - ipcache_prefix_len(0)), v);
            }
        }
        for item in self.hosts.iter() {
            let (k, v) = item.map_err(map_err(names::HOSTS))?;
            if k.slot as u32 == slot {
                out.insert((k.addr, HOST_BITS), v);
            }
        }
        Ok(out)
    }

    /// One slot's policy entries, keyed as the compiler writes them (slot 0).
    fn read_policy(&self, slot: u32) -> Result<BTreeMap<PolicyKey, PolicyValue>, DataplaneError> {
        let mut out = BTreeMap::new();
        for item in self.policy.iter() {
            let (k, v) = item.map_err(map_err(names::POLICY))?;
            if k.slot as u32 == slot {
                out.insert(PolicyKey { slot: 0, ..k }, v);
            }
        }
        Ok(out)
    }

    fn slot_holds(
        &self,
        slot: u32,
        cfg: &SlotConfig,
        c: &Compiled,
    ) -> Result<bool, DataplaneError> {
        if cfg.flags != c.flags | SLOT_VALID {
            return Ok(false);
        }
        let ipcache: BTreeMap<_, _> = c.ipcache.iter().map(|(a, l, e)| ((*a, *l), *e)).collect();
        let base = (slot * PORT_CLASS_ENTRIES) as usize;
        Ok(self.read_policy(slot)? == c.policy
            && self.read_ipcache(slot)? == ipcache
            && c.port_classes
                .iter()
                .enumerate()
                .all(|(i, v)| self.port_class.get(base + i) == *v))
    }

    /// True when the active slot holds exactly `c` (what `apply` would
    /// leave unchanged).
    pub fn active_holds(&self, c: &Compiled) -> Result<bool, DataplaneError> {
        let (active, cfg) = self.active_slot()?;
        if cfg.flags & SLOT_VALID == 0 {
            return Ok(false);
        }
        self.slot_holds(active, &cfg, c)
    }

    /// The counter slot of the peer whose AllowedIPs hold `addr` under the
    /// active policy (as the programs look it up: the hosts hash, then the
    /// trie), `None` when no peer's do.
    pub fn peer_of_address(&self, addr: std::net::IpAddr) -> Result<Option<u32>, DataplaneError> {
        let (active, _) = self.active_slot()?;
        let mapped = match addr {
            std::net::IpAddr::V4(v4) => wgbpf_common::map_v4(v4.octets()),
            std::net::IpAddr::V6(v6) => v6.octets(),
        };
        let key = IpCacheKey {
            slot: active as u8,
            addr: mapped,
        };
        let endpoint = self.hosts.get(&key, 0).ok().or_else(|| {
            self.ipcache
                .get(&Key::new(ipcache_prefix_len(HOST_BITS), key), 0)
                .ok()
        });
        Ok(endpoint.filter(|e| e.peer != 0).map(|e| e.peer))
    }

    /// Refuses a policy that cannot fit, before anything is written: the
    /// maps hold both slots, and the active slot's entries stay, so the new
    /// policy gets what is left.
    pub fn check_room(&self, c: &Compiled) -> Result<(), DataplaneError> {
        let (active, _) = self.active_slot()?;
        let live_policy = self.read_policy(active)?.len();
        let live = self.read_ipcache(active)?;
        let live_hosts = live.keys().filter(|(_, bits)| *bits == HOST_BITS).count();
        let new_hosts = c
            .ipcache
            .iter()
            .filter(|(_, bits, _)| *bits == HOST_BITS)
            .count();
        check_fits(
            names::POLICY,
            self.policy.map(),
            live_policy,
            c.policy.len(),
        )?;
        check_fits(names::HOSTS, self.hosts.map(), live_hosts, new_hosts)?;
        check_fits(
            names::IPCACHE,
            self.ipcache.map(),
            live.len() - live_hosts,
            c.ipcache.len() - new_hosts,
        )
    }

    /// Writes `c` into the inactive slot and makes it active. On any error
    /// the active slot, and so enforcement, is untouched.
    pub fn apply(&mut self, c: &Compiled) -> Result<ApplyReport, DataplaneError> {
        self.apply_after(c, 0, |_| {})
    }

    /// As [`Maps::apply`], with the new version past `floor` too (the last
    /// one given on the interface, [`super::version`]: a data plane loaded
    /// afresh starts at 0), and `reserve` told the version before the slot
    /// is written with it.
    pub fn apply_after(
        &mut self,
        c: &Compiled,
        floor: u32,
        reserve: impl FnOnce(u32),
    ) -> Result<ApplyReport, DataplaneError> {
        let (active, active_cfg) = self.active_slot()?;
        let valid = active_cfg.flags & SLOT_VALID != 0;
        if valid && self.slot_holds(active, &active_cfg, c)? {
            return Ok(ApplyReport {
                version: active_cfg.version,
                slot: active,
                changed: false,
                ipcache_writes: 0,
                policy_writes: 0,
                port_class_writes: 0,
            });
        }
        let next = 1 - active;
        self.check_room(c)?;
        // Versions only grow: past the active one and past whatever the
        // other slot last held or was being written with, so an update
        // interrupted half way never gives its version to another policy.
        let other = self
            .slot_config
            .get(&next, 0)
            .map_err(map_err(names::SLOT_CONFIG))?;
        // A record at the top (corrupt, or written by hand) must not wrap
        // to a version flows of an older policy still carry.
        let version = active_cfg
            .version
            .max(other.version)
            .max(floor)
            .checked_add(1)
            .ok_or_else(|| {
                DataplaneError::Layout(
                    "policy versions are exhausted (the last one given is 4294967295): \
                     a corrupt /var/lib/wgbpf/IFACE.version? Remove it, `wgbpf unload`, \
                     then load again"
                        .into(),
                )
            })?;
        reserve(version);
        // Invalidate first: if we stop half way, the slot says so (and keeps
        // the version it was being written with).
        self.slot_config
            .set(next, SlotConfig { version, flags: 0 }, 0)
            .map_err(map_err(names::SLOT_CONFIG))?;

        let ipcache_writes = self.write_ipcache(next, c)?;
        let policy_writes = self.write_policy(next, c)?;
        let port_class_writes = self.port_class.write_slot(next, &c.port_classes);

        let cfg = SlotConfig {
            version,
            flags: c.flags | SLOT_VALID,
        };
        self.slot_config
            .set(next, cfg, 0)
            .map_err(map_err(names::SLOT_CONFIG))?;
        // Under the interface lock nobody else writes; should someone
        // without it have flipped meanwhile, do not flip back over them.
        if self.active_slot()?.0 != active {
            return Err(DataplaneError::Raced);
        }
        self.active
            .set(0, next, 0)
            .map_err(map_err(names::ACTIVE))?;
        std::thread::sleep(GRACE);
        Ok(ApplyReport {
            version,
            slot: next,
            changed: true,
            ipcache_writes,
            policy_writes,
            port_class_writes,
        })
    }

    /// Single addresses go to the hosts hash, prefixes to the trie.
    fn write_ipcache(&mut self, slot: u32, c: &Compiled) -> Result<usize, DataplaneError> {
        let old = self.read_ipcache(slot)?;
        let new: BTreeMap<_, _> = c.ipcache.iter().map(|(a, l, e)| ((*a, *l), *e)).collect();
        let key = |addr: &Addr| IpCacheKey {
            slot: slot as u8,
            addr: *addr,
        };
        let mut writes = 0;
        for (addr, bits) in old.keys().filter(|k| !new.contains_key(k)) {
            if *bits == HOST_BITS {
                self.hosts
                    .remove(&key(addr))
                    .map_err(map_err(names::HOSTS))?;
            } else {
                let k = Key::new(ipcache_prefix_len(*bits), key(addr));
                self.ipcache.remove(&k).map_err(map_err(names::IPCACHE))?;
            }
            writes += 1;
        }
        for ((addr, bits), ep) in &new {
            if old.get(&(*addr, *bits)) == Some(ep) {
                continue;
            }
            if *bits == HOST_BITS {
                self.hosts
                    .insert(key(addr), *ep, 0)
                    .map_err(map_err(names::HOSTS))?;
            } else {
                let k = Key::new(ipcache_prefix_len(*bits), key(addr));
                self.ipcache
                    .insert(&k, *ep, 0)
                    .map_err(map_err(names::IPCACHE))?;
            }
            writes += 1;
        }
        Ok(writes)
    }

    fn write_policy(&mut self, slot: u32, c: &Compiled) -> Result<usize, DataplaneError> {
        let name = names::POLICY;
        let old = self.read_policy(slot)?;
        let in_slot = |k: &PolicyKey| PolicyKey {
            slot: slot as u8,
            ..*k
        };
        let mut writes = 0;
        for k in old.keys().filter(|k| !c.policy.contains_key(k)) {
            self.policy.remove(&in_slot(k)).map_err(map_err(name))?;
            writes += 1;
        }
        for (k, v) in &c.policy {
            if old.get(k) != Some(v) {
                self.policy
                    .insert(in_slot(k), v, 0)
                    .map_err(map_err(name))?;
                writes += 1;
            }
        }
        Ok(writes)
    }
}

/// The map holds both slots: the live one's entries plus the new ones.
fn check_fits(
    name: &'static str,
    map: &MapData,
    live: usize,
    needed: usize,
) -> Result<(), DataplaneError> {
    let capacity = map.info().map_err(map_err(name))?.max_entries();
    if live + needed > capacity as usize {
        return Err(DataplaneError::Full {
            name,
            needed,
            capacity: capacity.saturating_sub(live as u32),
        });
    }
    Ok(())
}
