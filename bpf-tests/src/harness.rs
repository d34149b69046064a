//! Loads the real programs (private maps, Ethernet offset 14) and runs
//! frames through them with BPF_PROG_TEST_RUN.

use std::net::IpAddr;

use anyhow::{Context, Result};
use aya::programs::{TestRun, TestRunOptions};
use wgbpf::{
    dataplane::{slot::ApplyReport, Dataplane, LoadOptions},
    policy::{
        compile::compile,
        model::Policy,
        reference::{FlowTuple, PacketMeta},
    },
};
use wgbpf_common::{
    capacity, names, DenyKey, FlowKey, FragKey, FragValue, PeerCounters, DIR_INGRESS,
    ICMPV6_ECHO_REQUEST, ICMP_ECHO_REQUEST, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP,
};

use crate::{
    packets::{Expected, Frame, Parsed},
    reference_parse::reference,
};

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

    /// Forgets all traffic: the flow and fragment tables and the deny map
    /// are emptied, the counters of peers 0..=`peers` zeroed (the
    /// statistics stay), so that a run starts as on a fresh load without
    /// the cost of one.
    pub fn clear_traffic(&mut self, peers: u32) -> Result<()> {
        use aya::maps::{HashMap, PerCpuValues};
        let maps = &mut self.dp.maps;
        let keys: Vec<FlowKey> = maps.flows.keys().collect::<Result<_, _>>()?;
        for k in keys {
            maps.flows.remove(&k)?;
        }
        let keys: Vec<DenyKey> = maps.denies.keys().collect::<Result<_, _>>()?;
        for k in keys {
            maps.denies.remove(&k)?;
        }
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        for index in 0..=peers {
            let zero = PerCpuValues::try_from(vec![PeerCounters::default(); cpus])?;
            maps.peer_counters.set(index, zero, 0)?;
        }
        let mut frags: HashMap<_, FragKey, FragValue> = HashMap::try_from(
            self.dp
                .ebpf
                .map_mut(names::FRAGS)
                .context("the fragment table")?,
        )?;
        let keys: Vec<FragKey> = frags.keys().collect::<Result<_, _>>()?;
        for k in keys {
            frags.remove(&k)?;
        }
        Ok(())
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

/// The reference evaluator's view of a frame; `None` when the data plane
/// must drop it as malformed (including IPv4-mapped IPv6 addresses, which
/// the programs refuse). For ICMP errors the quoted packet's flow tuple is
/// read from the frame's bytes, by the same rules as the programs.
pub fn meta(frame: &Frame) -> Option<PacketMeta> {
    let Expected::Packet(p) = &frame.expected else {
        return None;
    };
    meta_of(p, &frame.bytes)
}

/// The reference's view of any bytes (an Ethernet header, then IP): what
/// [`crate::reference_parse`] parses out of them, as [`meta`] completes
/// it, and the IP length; `None` when the programs must drop the frame.
pub fn meta_of_bytes(frame: &[u8]) -> Option<(PacketMeta, u32)> {
    let Expected::Packet(p) = reference(frame) else {
        return None;
    };
    meta_of(&p, frame).map(|m| (m, p.len))
}

/// [`meta`] for a parse result `p` of `frame`.
pub fn meta_of(p: &Parsed, frame: &[u8]) -> Option<PacketMeta> {
    let mapped = |a: &IpAddr| matches!(a, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
    if p.src.is_ipv6() && (mapped(&p.src) || mapped(&p.dst)) {
        return None;
    }
    let mut m = to_meta(p);
    if m.is_icmp_error() && !p.fragment {
        m.quoted = quoted_tuple(&frame[14..], p.len as usize);
    }
    if p.proto == PROTO_TCP && !p.fragment {
        let ip = &frame[14..];
        m.tcp_flags = l4_offset(ip).and_then(|o| ip.get(o + 13)).copied()?;
    }
    Some(m)
}

/// The fields `Parsed` has (no TCP flags, no quoted tuple: see [`meta`]).
pub fn to_meta(p: &Parsed) -> PacketMeta {
    PacketMeta {
        src: p.src,
        dst: p.dst,
        proto: p.proto,
        fragment: p.fragment,
        frag: p.frag,
        sport: p.sport,
        dport: p.dport,
        icmp_type: p.icmp_type,
        icmp_id: p.icmp_id,
        tcp_flags: 0,
        quoted: None,
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Where the L4 header of a well-formed IP packet starts.
fn l4_offset(ip: &[u8]) -> Option<usize> {
    if ip.first()? >> 4 == 4 {
        return Some(((ip[0] & 0x0f) as usize) * 4);
    }
    let (mut nh, mut off) = (*ip.get(6)?, 40);
    // Six extension headers at most, then the L4 header.
    for _ in 0..=6 {
        match nh {
            0 | 43 | 60 => (nh, off) = (*ip.get(off)?, off + (*ip.get(off + 1)? as usize + 1) * 8),
            51 => (nh, off) = (*ip.get(off)?, off + (*ip.get(off + 1)? as usize + 2) * 4),
            // A first fragment's (the only kind whose L4 header is read).
            44 => (nh, off) = (*ip.get(off)?, off + 8),
            _ => return Some(off),
        }
    }
    None
}

/// The flow tuple of the packet an ICMP error quotes (see the programs'
/// `quoted()` in ebpf/src/parse.rs): its IP header in full, no fragment
/// offset, and 8 bytes of a TCP/UDP/SCTP header or an echo request.
fn quoted_tuple(ip: &[u8], ip_len: usize) -> Option<FlowTuple> {
    let ip = &ip[..ip_len.min(ip.len())];
    let q = l4_offset(ip)? + 8;
    let quoted = ip.get(q..)?;
    let (src, dst, proto, hlen): (IpAddr, IpAddr, u8, usize) = match quoted.first()? >> 4 {
        4 => {
            let ihl = ((quoted[0] & 0x0f) as usize) * 4;
            if ihl < 20 || quoted.len() < 20 || be16(quoted, 6)? & 0x1fff != 0 {
                return None;
            }
            let a = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&quoted[at..at + 4]).unwrap());
            (a(12), a(16), quoted[9], ihl)
        }
        6 if quoted.len() >= 40 => {
            let a = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&quoted[at..at + 16]).unwrap());
            (a(8), a(24), quoted[6], 40)
        }
        _ => return None,
    };
    let l4 = quoted.get(hlen..hlen + 8)?;
    let (sport, dport) = match proto {
        6 | 17 | 132 => (be16(l4, 0)?, be16(l4, 2)?),
        PROTO_ICMP if l4[0] == ICMP_ECHO_REQUEST => (be16(l4, 4)?, 0),
        PROTO_ICMPV6 if l4[0] == ICMPV6_ECHO_REQUEST => (be16(l4, 4)?, 0),
        _ => return None,
    };
    Some(FlowTuple {
        src,
        dst,
        sport,
        dport,
        proto,
    })
}
