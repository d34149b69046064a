//! One frame at a time through the real program and the reference
//! evaluator, with the state both keep (flows, fragments, counters, deny
//! entries). The differential test (tests/differential.rs) and the packet
//! fuzzer (fuzz/, [`crate::packet_diff`]) share it: a disagreement panics
//! with both sides' view.

use std::{collections::HashMap, net::IpAddr};

use anyhow::Result;
use wgbpf::{
    dataplane::counters::{PeerTotals, Totals},
    policy::{
        model::Policy,
        reference::{Model, Outcome, PacketMeta},
    },
};
use wgbpf_common::{severity, DIR_INGRESS};

use crate::harness::{Harness, DROP, PASS};

/// A deny-map key as the test reads it: destination, source peer,
/// protocol, port, audit.
pub type DenyKey = (IpAddr, u32, u8, u16, bool);

/// What the run went through, to tell a weak mix from a strong one.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mix {
    pub total: u64,
    pub malformed: u64,
    pub denied: u64,
    /// Decided by the flow or fragment table.
    pub flow_decided: u64,
    /// ICMP errors the flow table decided.
    pub related: u64,
    pub frag_matched: u64,
    pub frag_overlaps: u64,
}

/// The model beside the kernel, and what the kernel's counters and deny
/// map must hold.
pub struct Differential {
    pub model: Model,
    peers: HashMap<u32, PeerTotals>,
    denies: HashMap<DenyKey, (u64, u64)>,
    /// The kernel's malformed count when this run started.
    malformed_before: u64,
    /// Highest peer index of any policy applied.
    max_index: u32,
    pub mix: Mix,
}

/// The owning peer of an address under `policy` (0: none).
pub fn peer_of(policy: &Policy, addr: IpAddr) -> u32 {
    policy
        .peers
        .iter()
        .find(|p| p.allowed_ips.iter().any(|n| n.contains(&addr)))
        .map_or(0, |p| p.index)
}

fn add(t: &mut Totals, sev: u8, len: u64) {
    match sev {
        severity::DENY => {
            t.denied_packets += 1;
            t.denied_bytes += len;
        }
        severity::AUDIT => {
            t.audited_packets += 1;
            t.audited_bytes += len;
        }
        _ => {
            t.allowed_packets += 1;
            t.allowed_bytes += len;
        }
    }
}

fn max_index(policy: &Policy) -> u32 {
    policy.peers.iter().map(|p| p.index).max().unwrap_or(0)
}

impl Differential {
    /// Applies `policy` and starts the model with its version. The kernel's
    /// flow and fragment tables, counters and deny map must hold nothing of
    /// earlier traffic ([`Harness::clear_traffic`]), except the malformed
    /// count, which is taken as the start.
    pub fn start(h: &mut Harness, policy: Policy) -> Result<Self> {
        let v = h.apply(&policy)?.version;
        Self::resume(h, policy, v)
    }

    /// [`Differential::start`] with `policy` already applied as `version`.
    pub fn resume(h: &Harness, policy: Policy, v: u32) -> Result<Self> {
        Ok(Self {
            max_index: max_index(&policy),
            model: Model::new(policy, v),
            peers: HashMap::new(),
            denies: HashMap::new(),
            malformed_before: h.dp.maps.stats()?.malformed,
            mix: Mix::default(),
        })
    }

    /// A new policy: flows stay, and are re-checked.
    pub fn set_policy(&mut self, h: &mut Harness, policy: Policy) -> Result<u32> {
        let v = h.apply(&policy)?.version;
        self.max_index = self.max_index.max(max_index(&policy));
        self.model.set_policy(policy, v);
        Ok(v)
    }

    /// Runs `frame` through the `dir` program and the model. `view` is
    /// what the programs must parse out of it (`None`: malformed, dropped)
    /// and its IP length. Panics when the kernel's verdict differs; returns
    /// the model's outcome for a judged packet.
    pub fn packet(
        &mut self,
        h: &Harness,
        dir: usize,
        frame: &[u8],
        view: Option<(PacketMeta, u32)>,
        label: &str,
    ) -> Option<Outcome> {
        let got = h
            .run(dir, frame)
            .unwrap_or_else(|e| panic!("test_run {label} ({} bytes): {e}", frame.len()));
        self.mix.total += 1;
        let Some((m, len)) = view else {
            self.mix.malformed += 1;
            assert_eq!(got, DROP, "malformed frame must drop: {label} {frame:02x?}");
            return None;
        };
        let out = self.model.packet(&m);
        if out.malformed {
            // A later fragment overlapping its first fragment.
            self.mix.frag_overlaps += 1;
            self.mix.malformed += 1;
            assert_eq!(got, DROP, "overlapping fragment: {label} {m:?}");
            return None;
        }
        if out.from_flow && m.fragment {
            self.mix.frag_matched += 1;
        }
        let want = if out.verdict.passes() { PASS } else { DROP };
        assert_eq!(
            got,
            want,
            "{} {label}: {m:?}\nframe: {frame:02x?}\nmodel: {out:?}\nkernel: {:?}\npolicy: {:#?}",
            if dir == DIR_INGRESS {
                "ingress"
            } else {
                "egress"
            },
            h.dp.maps.stats(),
            self.model.policy()
        );
        let len = u64::from(len);
        let policy = self.model.policy();
        let peer = if dir == DIR_INGRESS {
            peer_of(policy, m.src)
        } else {
            peer_of(policy, m.dst)
        };
        let t = self.peers.entry(peer).or_default();
        add(
            if dir == DIR_INGRESS {
                &mut t.ingress
            } else {
                &mut t.egress
            },
            out.verdict.severity,
            len,
        );
        if out.from_flow && m.is_icmp_error() {
            self.mix.related += 1;
        }
        if out.from_flow {
            self.mix.flow_decided += 1;
        } else if out.verdict.severity >= severity::AUDIT {
            let port = if m.fragment { 0 } else { m.policy_port() };
            let key = (
                m.dst,
                peer_of(policy, m.src),
                m.proto,
                port,
                out.verdict.severity == severity::AUDIT,
            );
            let e = self.denies.entry(key).or_default();
            e.0 += 1;
            e.1 += len;
        }
        if !out.verdict.passes() {
            self.mix.denied += 1;
        }
        Some(out)
    }

    /// Every per-peer counter, every deny-map entry and the malformed count
    /// must be what the model says.
    pub fn check_maps(&self, h: &Harness) {
        for index in 0..=self.max_index {
            let got = h.dp.maps.peer_totals(index).expect("counters");
            let want = self.peers.get(&index).copied().unwrap_or_default();
            assert_eq!(got, want, "counters of peer {index}");
        }
        let got: HashMap<DenyKey, (u64, u64)> =
            h.dp.maps
                .denies()
                .expect("denies")
                .into_iter()
                .map(|d| {
                    (
                        (d.dst, d.src_peer, d.proto, d.port, d.audit),
                        (d.packets, d.bytes),
                    )
                })
                .collect();
        assert_eq!(got, self.denies, "deny map");
        let stats = h.dp.maps.stats().expect("stats");
        assert_eq!(
            stats.malformed - self.malformed_before,
            self.mix.malformed,
            "malformed count"
        );
    }
}

/// How the differential runs load the programs: the model has no clock
/// and no flow budget, so neither has the kernel here (lifetimes of an
/// hour, no budget; both are tested on their own in flow_table.rs and
/// fragments.rs).
pub fn load_options() -> wgbpf::dataplane::LoadOptions {
    const HOUR: u64 = 3600 * 1_000_000_000;
    wgbpf::dataplane::LoadOptions {
        flows: wgbpf_common::FlowConfig {
            tcp_opening_ns: HOUR,
            tcp_established_ns: HOUR,
            tcp_closing_ns: HOUR,
            other_opening_ns: HOUR,
            other_established_ns: HOUR,
            fragment_ns: HOUR,
            new_per_second: 0,
            ..wgbpf_common::FlowConfig::DEFAULT
        },
        ..Default::default()
    }
}
