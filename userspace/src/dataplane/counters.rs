//! Reading the kernel's counters: per-CPU values summed.

use std::net::IpAddr;

use serde::Serialize;
use wgbpf_common::{names, stat, DenyKey, DenyValue, DirCounters, PeerCounters};

use super::{DataplaneError, Maps};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub allowed_packets: u64,
    pub allowed_bytes: u64,
    pub denied_packets: u64,
    pub denied_bytes: u64,
    pub audited_packets: u64,
    pub audited_bytes: u64,
}

impl Totals {
    fn add(&mut self, c: &DirCounters) {
        self.allowed_packets += c.allowed_packets;
        self.allowed_bytes += c.allowed_bytes;
        self.denied_packets += c.denied_packets;
        self.denied_bytes += c.denied_bytes;
        self.audited_packets += c.audited_packets;
        self.audited_bytes += c.audited_bytes;
    }
}

/// One peer's counters: ingress = from the peer, egress = to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PeerTotals {
    pub ingress: Totals,
    pub egress: Totals,
}

impl PeerTotals {
    /// Allowed, denied and audited packets in, then out: the order `wgbpf
    /// counters` and `wgbpf show` print them in.
    pub fn packets(&self) -> [u64; 6] {
        let (i, e) = (&self.ingress, &self.egress);
        [
            i.allowed_packets,
            i.denied_packets,
            i.audited_packets,
            e.allowed_packets,
            e.denied_packets,
            e.audited_packets,
        ]
    }

    /// The sum of a peer's per-CPU counters.
    pub fn sum(per_cpu: impl IntoIterator<Item = PeerCounters>) -> Self {
        let mut t = PeerTotals::default();
        for v in per_cpu {
            t.ingress.add(&v.dir[0]);
            t.egress.add(&v.dir[1]);
        }
        t
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DenyEntry {
    pub src_peer: u32,
    pub dst: IpAddr,
    pub proto: u8,
    pub port: u16,
    /// True for would-be denies passed in audit mode.
    pub audit: bool,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub malformed: u64,
    pub fragments: u64,
    pub events_sent: u64,
    pub events_suppressed: u64,
    pub events_lost: u64,
    pub flow_hits: u64,
    pub flow_rechecks: u64,
    /// Flow-table pressure: entries made, inserts refused, new flows over
    /// their peer's budget, dead entries met, and TCP connections picked up
    /// mid-stream (their entry was lost: evictions seen).
    pub flow_new: u64,
    pub flow_insert_failed: u64,
    pub flow_over_budget: u64,
    pub flow_expired: u64,
    pub flow_pickups: u64,
    /// First fragments whose verdict was recorded for their datagram, and
    /// later fragments that got it.
    pub fragments_tracked: u64,
    pub fragments_matched: u64,
}

/// Turns a mapped kernel address back into an IPv4 or IPv6 address.
pub fn unmap(addr: &[u8; 16]) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(*addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

impl Maps {
    pub fn peer_totals(&self, index: u32) -> Result<PeerTotals, DataplaneError> {
        let values = self
            .peer_counters
            .get(&index, 0)
            .map_err(|source| DataplaneError::Map {
                name: names::PEER_COUNTERS,
                source,
            })?;
        Ok(PeerTotals::sum(values.iter().copied()))
    }

    /// Every deny-map entry, per-CPU values summed, busiest first. One
    /// batch syscall per few thousand keys (see [`super::batch`]).
    pub fn denies(&self) -> Result<Vec<DenyEntry>, DataplaneError> {
        use aya::maps::IterableMap;
        let io = |e: std::io::Error| DataplaneError::Layout(format!("{}: {e}", names::DENIES));
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| io(e))?;
        let slot = std::mem::size_of::<DenyValue>().next_multiple_of(8);
        let mut out = Vec::new();
        super::batch::for_each(
            self.denies.map(),
            std::mem::size_of::<DenyKey>(),
            slot * cpus,
            |k, v| {
                // SAFETY: the kernel wrote whole keys and values of these types.
                let k: DenyKey = unsafe { std::ptr::read_unaligned(k.as_ptr().cast()) };
                let (packets, bytes) = (0..cpus).fold((0, 0), |(p, b), cpu| {
                    let v: DenyValue =
                        unsafe { std::ptr::read_unaligned(v[cpu * slot..].as_ptr().cast()) };
                    (p + v.packets, b + v.bytes)
                });
                out.push(DenyEntry {
                    src_peer: k.src_peer,
                    dst: unmap(&k.dst),
                    proto: k.proto,
                    port: k.dport,
                    audit: k.severity == wgbpf_common::severity::AUDIT,
                    packets,
                    bytes,
                });
            },
        )
        .map_err(io)?;
        out.sort_by_key(|d| std::cmp::Reverse(d.packets));
        Ok(out)
    }

    pub fn stats(&self) -> Result<Stats, DataplaneError> {
        let read = |i: u32| -> Result<u64, DataplaneError> {
            let v = self
                .stats
                .get(&i, 0)
                .map_err(|source| DataplaneError::Map {
                    name: names::STATS,
                    source,
                })?;
            Ok(v.iter().sum())
        };
        Ok(Stats {
            malformed: read(stat::MALFORMED)?,
            fragments: read(stat::FRAGMENTS)?,
            events_sent: read(stat::EVENTS_SENT)?,
            events_suppressed: read(stat::EVENTS_SUPPRESSED)?,
            events_lost: read(stat::EVENTS_LOST)?,
            flow_hits: read(stat::FLOW_HITS)?,
            flow_rechecks: read(stat::FLOW_RECHECKS)?,
            // A stats map pinned by an older build is shorter: 0 there.
            flow_new: read(stat::FLOW_NEW).unwrap_or(0),
            flow_insert_failed: read(stat::FLOW_INSERT_FAILED).unwrap_or(0),
            flow_over_budget: read(stat::FLOW_OVER_BUDGET).unwrap_or(0),
            flow_expired: read(stat::FLOW_EXPIRED).unwrap_or(0),
            flow_pickups: read(stat::FLOW_PICKUPS).unwrap_or(0),
            fragments_tracked: read(stat::FRAGMENTS_TRACKED).unwrap_or(0),
            fragments_matched: read(stat::FRAGMENTS_MATCHED).unwrap_or(0),
        })
    }
}
