//! Loads the real programs (private maps, Ethernet offset 14) and runs
//! frames through them with BPF_PROG_TEST_RUN.

use std::net::IpAddr;

use anyhow::{Context, Result};
use aya::programs::{TestRun, TestRunOptions};
use wgbpf::{
    dataplane::{slot::ApplyReport, Dataplane, LoadOptions},
    policy::{compile::compile, model::Policy, reference::PacketMeta},
};
use wgbpf_common::{capacity, names, DIR_INGRESS};

use crate::packets::{Expected, Parsed};

/// What TC returns for a packet that passes: TC_ACT_UNSPEC (-1).
pub const PASS: u32 = u32::MAX;
/// TC_ACT_SHOT.
pub const DROP: u32 = 2;

pub struct Harness {
    pub dp: Dataplane,
}

impl Harness {
    pub fn new() -> Result<Self> {
        Self::with_options(LoadOptions::default())
    }

    /// Loads with `opts`, except that the L2 header is always Ethernet.
    pub fn with_options(opts: LoadOptions) -> Result<Self> {
        let dp = Dataplane::load(&LoadOptions {
            l2_hdr_len: 14,
            ..opts
        })
        .context("loading the eBPF object (are you root?)")?;
        Ok(Self { dp })
    }

    pub fn apply(&mut self, policy: &Policy) -> Result<ApplyReport> {
        let compiled = compile(policy, capacity::PEERS)?;
        Ok(self.dp.maps.apply(&compiled)?)
    }

    /// Runs one frame through the ingress or egress program; returns the
    /// program's return value.
    pub fn run(&self, dir: usize, frame: &[u8]) -> Result<u32> {
        Ok(self.run_repeat(dir, frame, 1)?.0)
    }

    /// Runs a frame `repeat` times; returns (return value, mean ns per run).
    pub fn run_repeat(&self, dir: usize, frame: &[u8], repeat: u32) -> Result<(u32, u64)> {
        let name = if dir == DIR_INGRESS {
            names::PROG_INGRESS
        } else {
            names::PROG_EGRESS
        };
        let prog = self.dp.program(name)?;
        // The kernel refuses to test-run an IP-typed frame too short for
        // its IP header (EINVAL). The program never reads the EtherType (a
        // WireGuard device has none), so give such frames an experimental one.
        let mut relabelled;
        let frame = if frame.len() < 14 + 40 {
            relabelled = frame.to_vec();
            relabelled[12..14].copy_from_slice(&[0x88, 0xb5]);
            &relabelled[..]
        } else {
            frame
        };
        let r = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })?;
        Ok((r.return_value, r.duration.as_nanos() as u64))
    }
}

/// The reference evaluator's view of a parsed frame; `None` when the data
/// plane must drop it as malformed (including IPv4-mapped IPv6 addresses,
/// which the programs refuse).
pub fn meta(expected: &Expected) -> Option<PacketMeta> {
    let Expected::Packet(p) = expected else {
        return None;
    };
    let mapped = |a: &IpAddr| matches!(a, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
    if p.src.is_ipv6() && (mapped(&p.src) || mapped(&p.dst)) {
        return None;
    }
    Some(to_meta(p))
}

pub fn to_meta(p: &Parsed) -> PacketMeta {
    PacketMeta {
        src: p.src,
        dst: p.dst,
        proto: p.proto,
        fragment: p.fragment,
        sport: p.sport,
        dport: p.dport,
        icmp_type: p.icmp_type,
        icmp_id: p.icmp_id,
        // Random frames quote nothing that could match a live flow.
        quoted: None,
    }
}
