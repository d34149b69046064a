//! Atomic policy update. The programs read the active slot number once per
//! packet and use only that slot's maps, so writing the other slot cannot
//! disturb a packet; the switch is one 4-byte array write.

use std::{collections::BTreeMap, time::Duration};

use aya::maps::{lpm_trie::Key, IterableMap, MapData};
use wgbpf_common::{names, Addr, Endpoint, PolicyKey, PolicyValue, SlotConfig, SLOT_VALID};

use super::{DataplaneError, Maps};
use crate::policy::compile::Compiled;

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

    fn read_ipcache(&self, slot: usize) -> Result<BTreeMap<(Addr, u32), Endpoint>, DataplaneError> {
        let name = names::IPCACHE[slot];
        let mut out = BTreeMap::new();
        for item in self.ipcache[slot].iter() {
            let (k, v) = item.map_err(map_err(name))?;
            out.insert((k.data(), k.prefix_len()), v);
        }
        Ok(out)
    }

    fn read_policy(&self, slot: usize) -> Result<BTreeMap<PolicyKey, PolicyValue>, DataplaneError> {
        let name = names::POLICY[slot];
        let mut out = BTreeMap::new();
        for item in self.policy[slot].iter() {
            let (k, v) = item.map_err(map_err(name))?;
            out.insert(k, v);
        }
        Ok(out)
    }

    fn slot_holds(
        &self,
        slot: u32,
        cfg: &SlotConfig,
        c: &Compiled,
    ) -> Result<bool, DataplaneError> {
        let s = slot as usize;
        if cfg.flags != c.flags | SLOT_VALID {
            return Ok(false);
        }
        let ipcache: BTreeMap<_, _> = c.ipcache.iter().map(|(a, l, e)| ((*a, *l), *e)).collect();
        Ok(self.read_policy(s)? == c.policy
            && self.read_ipcache(s)? == ipcache
            && c.port_classes
                .iter()
                .enumerate()
                .all(|(i, v)| self.port_class[s].get(i) == *v))
    }

    /// Writes `c` into the inactive slot and makes it active. On any error
    /// the active slot, and so enforcement, is untouched.
    pub fn apply(&mut self, c: &Compiled) -> Result<ApplyReport, DataplaneError> {
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
        let s = next as usize;
        // Refuse a policy that cannot fit before touching anything.
        check_fits(names::POLICY[s], self.policy[s].map(), c.policy.len())?;
        check_fits(names::IPCACHE[s], self.ipcache[s].map(), c.ipcache.len())?;
        let version = if valid { active_cfg.version + 1 } else { 1 };
        // Invalidate first: if we stop half way, the slot says so.
        self.slot_config
            .set(next, SlotConfig::default(), 0)
            .map_err(map_err(names::SLOT_CONFIG))?;

        let ipcache_writes = self.write_ipcache(s, c)?;
        let policy_writes = self.write_policy(s, c)?;
        let port_class_writes = self.port_class[s].write_all(&c.port_classes);

        let cfg = SlotConfig {
            version,
            flags: c.flags | SLOT_VALID,
        };
        self.slot_config
            .set(next, cfg, 0)
            .map_err(map_err(names::SLOT_CONFIG))?;
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

    fn write_ipcache(&mut self, s: usize, c: &Compiled) -> Result<usize, DataplaneError> {
        let name = names::IPCACHE[s];
        let old = self.read_ipcache(s)?;
        let new: BTreeMap<_, _> = c.ipcache.iter().map(|(a, l, e)| ((*a, *l), *e)).collect();
        let mut writes = 0;
        for (addr, len) in old.keys().filter(|k| !new.contains_key(k)) {
            self.ipcache[s]
                .remove(&Key::new(*len, *addr))
                .map_err(map_err(name))?;
            writes += 1;
        }
        for ((addr, len), ep) in &new {
            if old.get(&(*addr, *len)) != Some(ep) {
                self.ipcache[s]
                    .insert(&Key::new(*len, *addr), *ep, 0)
                    .map_err(map_err(name))?;
                writes += 1;
            }
        }
        Ok(writes)
    }

    fn write_policy(&mut self, s: usize, c: &Compiled) -> Result<usize, DataplaneError> {
        let name = names::POLICY[s];
        let old = self.read_policy(s)?;
        let mut writes = 0;
        for k in old.keys().filter(|k| !c.policy.contains_key(k)) {
            self.policy[s].remove(k).map_err(map_err(name))?;
            writes += 1;
        }
        for (k, v) in &c.policy {
            if old.get(k) != Some(v) {
                self.policy[s].insert(k, v, 0).map_err(map_err(name))?;
                writes += 1;
            }
        }
        Ok(writes)
    }
}

fn check_fits(name: &'static str, map: &MapData, needed: usize) -> Result<(), DataplaneError> {
    let capacity = map.info().map_err(map_err(name))?.max_entries();
    if needed > capacity as usize {
        return Err(DataplaneError::Full {
            name,
            needed,
            capacity,
        });
    }
    Ok(())
}
