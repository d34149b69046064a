//! Counter indexes per peer (a peer's row in the per-peer counter map; not
//! to be confused with the policy's double-buffer slots), stable across
//! reloads: the owner of each index is recorded in a pinned map beside the
//! counters. A peer keeps its index as long as it stays in the mesh; a new
//! peer gets a free index, zeroed first, so it never inherits a departed
//! peer's counts — and not the index of a peer leaving in the same apply,
//! which the old policy counts until the switch (released only after it).

use std::collections::BTreeMap;

use aya::maps::PerCpuValues;
use wgbpf_common::{names, PeerCounters, PeerName, PEER_NAME_MAX};

use super::{counters::PeerTotals, DataplaneError, Maps};

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

pub fn encode(name: &str) -> Option<PeerName> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > PEER_NAME_MAX {
        return None;
    }
    let mut out = PeerName {
        len: b.len() as u8,
        ..Default::default()
    };
    out.bytes[..b.len()].copy_from_slice(b);
    Some(out)
}

fn decode(n: &PeerName) -> Option<String> {
    let len = (n.len as usize).min(PEER_NAME_MAX);
    (len > 0).then(|| String::from_utf8_lossy(&n.bytes[..len]).into_owned())
}

/// The label of a counter index for people and metrics: its peer's name,
/// "-" for slot 0 (no peer), "#N" for a slot whose owner has left the mesh.
pub fn peer_label(slots: &BTreeMap<u32, String>, idx: u32) -> String {
    match slots.get(&idx) {
        Some(n) => n.clone(),
        None if idx == 0 => "-".into(),
        None => format!("#{idx}"),
    }
}

/// Counter indexes to write for a new set of peers: every name with its index.
#[derive(Debug, Default)]
pub struct CounterIndexPlan {
    pub indexes: BTreeMap<String, u32>,
    /// Slots newly given to a peer (their counters are zeroed on commit).
    fresh: Vec<u32>,
    /// Slots whose peer left the mesh.
    freed: Vec<u32>,
}

impl Maps {
    /// Who owns which counter index now (one batch read of the name map).
    pub fn counter_owners(&self) -> Result<BTreeMap<u32, String>, DataplaneError> {
        use aya::maps::IterableMap;
        let mut out = BTreeMap::new();
        super::batch::for_each(
            self.peer_names.map(),
            4,
            std::mem::size_of::<PeerName>().next_multiple_of(8),
            |k, v| {
                let slot = u32::from_ne_bytes(k[..4].try_into().unwrap());
                // SAFETY: the kernel wrote a whole PeerName.
                let name: PeerName = unsafe { std::ptr::read_unaligned(v.as_ptr().cast()) };
                if let Some(name) = decode(&name) {
                    out.insert(slot, name);
                }
            },
        )
        .map_err(|e| DataplaneError::Layout(format!("{}: {e}", names::PEER_NAMES)))?;
        Ok(out)
    }

    /// Every peer's counters, slot 0 included (one batch read).
    pub fn all_peer_totals(&self) -> Result<BTreeMap<u32, PeerTotals>, DataplaneError> {
        use aya::maps::IterableMap;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::Layout(e.to_string()))?;
        let slot = std::mem::size_of::<PeerCounters>().next_multiple_of(8);
        let mut out = BTreeMap::new();
        super::batch::for_each(self.peer_counters.map(), 4, slot * cpus, |k, v| {
            let idx = u32::from_ne_bytes(k[..4].try_into().unwrap());
            let per_cpu = (0..cpus).map(|cpu| {
                // SAFETY: the kernel wrote whole per-CPU values.
                unsafe { std::ptr::read_unaligned(v[cpu * slot..].as_ptr().cast::<PeerCounters>()) }
            });
            out.insert(idx, PeerTotals::sum(per_cpu));
        })
        .map_err(|e| DataplaneError::Layout(format!("{}: {e}", names::PEER_COUNTERS)))?;
        Ok(out)
    }

    /// Plans counter indexes for `peers` (names, in mesh order) without writing.
    pub fn plan_counter_indexes(
        &self,
        peers: &[String],
    ) -> Result<CounterIndexPlan, DataplaneError> {
        let capacity = self.peer_names.len();
        let current = self.counter_owners()?;
        let by_name: BTreeMap<&str, u32> = current.iter().map(|(i, n)| (n.as_str(), *i)).collect();
        let mut plan = CounterIndexPlan::default();
        // Slots owned now, by peers that stay or not: a newcomer takes a
        // slot nobody owns, so that it never shares one with a peer that
        // leaves in the same apply (the old policy counts the leaver there
        // until the switch). Only when no other is free does it take a
        // leaver's slot.
        let mut used: Vec<bool> = vec![false; capacity as usize];
        used[0] = true;
        for &slot in current.keys() {
            if let Some(u) = used.get_mut(slot as usize) {
                *u = true;
            }
        }
        for name in peers {
            if let Some(&slot) = by_name.get(name.as_str()) {
                plan.indexes.insert(name.clone(), slot);
            }
        }
        plan.freed = current
            .iter()
            .filter(|(_, n)| !plan.indexes.contains_key(*n))
            .map(|(i, _)| *i)
            .collect();
        let mut leavers = plan.freed.iter().copied();
        let mut next = 1usize;
        for name in peers {
            if plan.indexes.contains_key(name) {
                continue;
            }
            while next < used.len() && used[next] {
                next += 1;
            }
            let slot = if next < used.len() {
                used[next] = true;
                next as u32
            } else {
                leavers.next().ok_or(DataplaneError::Full {
                    name: names::PEER_COUNTERS,
                    needed: peers.len(),
                    capacity: capacity - 1,
                })?
            };
            plan.indexes.insert(name.clone(), slot);
            plan.fresh.push(slot);
        }
        Ok(plan)
    }

    /// Records the plan before the switch: fresh indexes get zeroed
    /// counters and their owner ([`Maps::release_counter_indexes`] after).
    pub fn commit_counter_indexes(
        &mut self,
        plan: &CounterIndexPlan,
    ) -> Result<(), DataplaneError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::Layout(e.to_string()))?;
        for (name, &slot) in &plan.indexes {
            if !plan.fresh.contains(&slot) {
                continue;
            }
            let zero = PerCpuValues::try_from(vec![PeerCounters::default(); cpus])
                .map_err(|e| DataplaneError::Layout(e.to_string()))?;
            self.peer_counters
                .set(slot, zero, 0)
                .map_err(map_err(names::PEER_COUNTERS))?;
            let encoded = encode(name)
                .ok_or_else(|| DataplaneError::Layout(format!("peer name `{name}` too long")))?;
            self.peer_names
                .set(slot, encoded, 0)
                .map_err(map_err(names::PEER_NAMES))?;
        }
        Ok(())
    }

    /// After the switch: the slots of peers that left lose their owner
    /// (free for a later apply). A slot given to a newcomer meanwhile (the
    /// map was full) keeps its new owner.
    pub fn release_counter_indexes(
        &mut self,
        plan: &CounterIndexPlan,
    ) -> Result<(), DataplaneError> {
        for &slot in plan.freed.iter().filter(|s| !plan.fresh.contains(s)) {
            self.peer_names
                .set(slot, PeerName::default(), 0)
                .map_err(map_err(names::PEER_NAMES))?;
        }
        Ok(())
    }
}
