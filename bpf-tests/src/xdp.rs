//! The XDP guard under BPF_PROG_TEST_RUN: the loaded program with private
//! maps, frames built field by field, and a reference model of the guard's
//! rules (docs/xdp-guard.md) written from the specification, not from the
//! program, to check the kernel's verdicts and counters against.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{Context, Result};
use aya::programs::{TestRun, TestRunOptions};
use ipnet::IpNet;
use wgbpf::dataplane::xdp_guard::{GuardConfig, GuardLoadOptions, GuardStats, XdpGuard};
use wgbpf_common::xdp::{names, xdp_stat, XdpConfig};

/// XDP return values.
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

pub const PORT: u16 = 51820;

/// The guard loaded with private maps (nothing attached).
pub struct GuardHarness {
    pub guard: XdpGuard,
}

impl GuardHarness {
    /// Loaded and configured with `cfg`.
    pub fn new(cfg: &GuardConfig) -> Result<Self> {
        let mut guard = XdpGuard::load(&GuardLoadOptions::default())
            .context("loading the XDP guard (are you root?)")?;
        guard.maps.configure(cfg)?;
        Ok(Self { guard })
    }

    pub fn configure(&mut self, cfg: &GuardConfig) -> Result<()> {
        Ok(self.guard.maps.configure(cfg)?)
    }

    /// Sets the program's test clock (ns; 0 = the real clock).
    pub fn set_clock(&mut self, ns: u64) -> Result<()> {
        let mut raw: XdpConfig = self.guard.maps.read_raw()?;
        raw.clock_ns = ns;
        Ok(self.guard.maps.write_raw(raw)?)
    }

    /// Runs one frame; returns the program's verdict.
    pub fn run(&self, frame: &[u8]) -> Result<u32> {
        Ok(self.run_repeat(frame, 1)?.0)
    }

    /// Runs a frame `repeat` times; returns (verdict, mean ns per run).
    pub fn run_repeat(&self, frame: &[u8], repeat: u32) -> Result<(u32, u64)> {
        let prog = self.guard.program(names::PROG_GUARD)?;
        let mut out = vec![0u8; frame.len() + 256];
        let r = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        })?;
        // The guard never rewrites a packet.
        assert_eq!(
            &out[..frame.len()],
            frame,
            "the guard changed the frame's bytes"
        );
        Ok((r.return_value, r.duration.as_nanos() as u64))
    }

    pub fn stats(&self) -> Result<GuardStats> {
        Ok(self.guard.maps.stats()?)
    }

    /// Runs one frame and returns its verdict and the one counter it moved
    /// (`None` when it moved none), failing if it moved more than one.
    pub fn judge(&self, frame: &[u8]) -> Result<(u32, Option<u32>)> {
        let before = self.stats()?;
        let verdict = self.run(frame)?;
        let delta = self.stats()?.since(&before);
        let moved: Vec<u32> = (0..xdp_stat::COUNT)
            .filter(|i| delta.get(*i) != 0)
            .collect();
        anyhow::ensure!(
            moved.len() <= 1 && moved.iter().all(|i| delta.get(*i) == 1),
            "one frame moved counters {delta:?}"
        );
        Ok((verdict, moved.first().copied()))
    }
}

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

/// Which part of a fragmented datagram a frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frag {
    None,
    /// Offset 0, more fragments follow.
    First,
    /// Offset > 0: no UDP header.
    Later,
}

/// A UDP datagram in an Ethernet frame, every field settable, so tests can
/// build exactly the lie they want.
#[derive(Clone, Debug)]
pub struct UdpFrame {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub payload: Vec<u8>,
    /// VLAN TPIDs outermost first (0x8100 or 0x88a8), VLAN id 7 each.
    pub vlans: Vec<u16>,
    /// IPv4 options (bytes, a multiple of 4, up to 40).
    pub v4_options: usize,
    /// IPv6 extension headers before UDP (0, 43, 60: 8 bytes each).
    pub v6_ext: Vec<u8>,
    pub frag: Frag,
    /// IP protocol / final next header (17 = UDP).
    pub proto: u8,
    /// UDP length field; `None`: 8 + payload.
    pub udp_len: Option<u16>,
    /// Added to the IP length field (IPv4 total, IPv6 payload).
    pub ip_len_delta: i32,
    /// Bytes after the IP packet (Ethernet padding).
    pub trailer: usize,
    /// Keep only this many bytes of the frame.
    pub cut: Option<usize>,
    /// The EtherType after the tags (default by family).
    pub ethertype: Option<u16>,
}

pub fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, last))
}

pub fn v6(last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last))
}

/// The gateway's underlay address of the family of `src`.
pub fn gw_of(src: IpAddr) -> IpAddr {
    match src {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1)),
    }
}

/// A WireGuard-shaped message: type byte, zero reserved bytes, filler.
pub fn message(kind: u8, len: usize) -> Vec<u8> {
    let mut m: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(29) | 1).collect();
    if len > 0 {
        m[0] = kind;
    }
    for b in m.iter_mut().take(4).skip(1) {
        *b = 0;
    }
    m
}

impl UdpFrame {
    pub fn new(src: IpAddr, dport: u16, payload: Vec<u8>) -> Self {
        Self {
            src,
            dst: gw_of(src),
            sport: 40000,
            dport,
            payload,
            vlans: Vec::new(),
            v4_options: 0,
            v6_ext: Vec::new(),
            frag: Frag::None,
            proto: 17,
            udp_len: None,
            ip_len_delta: 0,
            trailer: 0,
            cut: None,
            ethertype: None,
        }
    }

    /// A WireGuard message of `kind` and `len` bytes to the listen port.
    pub fn wg(src: IpAddr, kind: u8, len: usize) -> Self {
        Self::new(src, PORT, message(kind, len))
    }

    pub fn with(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        for tpid in &self.vlans {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&7u16.to_be_bytes());
        }
        let fam_type: u16 = if self.src.is_ipv4() { 0x0800 } else { 0x86dd };
        f.extend_from_slice(&self.ethertype.unwrap_or(fam_type).to_be_bytes());
        let mut udp = Vec::new();
        if self.frag != Frag::Later {
            let len = self.udp_len.unwrap_or(8 + self.payload.len() as u16);
            udp.extend_from_slice(&self.sport.to_be_bytes());
            udp.extend_from_slice(&self.dport.to_be_bytes());
            udp.extend_from_slice(&len.to_be_bytes());
            udp.extend_from_slice(&[0, 0]);
        }
        udp.extend_from_slice(&self.payload);
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let hl = 20 + self.v4_options;
                let total = (hl + udp.len()) as i32 + self.ip_len_delta;
                let mut h = vec![0u8; hl];
                h[0] = 0x40 | (hl / 4) as u8;
                h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                let frag: u16 = match self.frag {
                    Frag::None => 0x4000,
                    Frag::First => 0x2000,
                    Frag::Later => 185,
                };
                h[6..8].copy_from_slice(&frag.to_be_bytes());
                h[8] = 64;
                h[9] = self.proto;
                h[12..16].copy_from_slice(&s.octets());
                h[16..20].copy_from_slice(&d.octets());
                for (i, b) in h[20..].iter_mut().enumerate() {
                    *b = u8::from(i + 1 != self.v4_options); // NOPs, then EOL
                }
                f.extend(h);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut chain = self.v6_ext.clone();
                if self.frag != Frag::None {
                    chain.push(44);
                }
                let ext_len = chain.len() * 8;
                let payload = (ext_len + udp.len()) as i32 + self.ip_len_delta;
                let mut h = vec![0u8; 40];
                h[0] = 0x60;
                h[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
                h[6] = chain.first().copied().unwrap_or(self.proto);
                h[7] = 64;
                h[8..24].copy_from_slice(&s.octets());
                h[24..40].copy_from_slice(&d.octets());
                for (i, kind) in chain.iter().enumerate() {
                    let next = chain.get(i + 1).copied().unwrap_or(self.proto);
                    let mut e = vec![0u8; 8];
                    e[0] = next;
                    if *kind == 44 {
                        let field: u16 = match self.frag {
                            Frag::Later => 185 << 3,
                            _ => 1,
                        };
                        e[2..4].copy_from_slice(&field.to_be_bytes());
                    } else {
                        // Two PadN-style bytes of options: zeros are Pad1.
                        e[1] = 0;
                    }
                    h.extend(e);
                }
                f.extend(h);
            }
            _ => panic!("mixed address families"),
        }
        f.extend(udp);
        f.extend(std::iter::repeat_n(0xeeu8, self.trailer));
        if let Some(n) = self.cut {
            f.truncate(n);
        }
        f
    }
}

// ---------------------------------------------------------------------------
// Reference model
// ---------------------------------------------------------------------------

/// The model's token bucket of one source, in thousandths of a token.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    milli: u64,
    last_ns: u64,
}

/// The guard's rules over raw frame bytes, from docs/xdp-guard.md.
pub struct Model {
    pub cfg: GuardConfig,
    pub now_ns: u64,
    buckets: HashMap<[u8; 16], Bucket>,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

impl Model {
    pub fn new(cfg: GuardConfig, now_ns: u64) -> Self {
        Self {
            cfg,
            now_ns,
            buckets: HashMap::new(),
        }
    }

    /// (verdict, counter moved) for one frame, updating the buckets.
    pub fn judge(&mut self, f: &[u8]) -> (u32, Option<u32>) {
        match self.datagram(f) {
            Found::Other => (XDP_PASS, None),
            Found::LongChain => (XDP_DROP, Some(xdp_stat::DROP_EXT_HEADERS)),
            Found::Datagram(d) => {
                let stat = self.stat(&d);
                let verdict = if stat >= xdp_stat::FIRST_DROP {
                    XDP_DROP
                } else {
                    XDP_PASS
                };
                (verdict, Some(stat))
            }
        }
    }

    fn datagram(&self, f: &[u8]) -> Found {
        match self.find(f) {
            None => Found::Other,
            Some(found) => found,
        }
    }

    /// Finds a datagram to a listen port; `None` for anything else.
    fn find(&self, f: &[u8]) -> Option<Found> {
        let mut et = be16(f, 12)?;
        let mut off = 14;
        let mut tags = 0;
        while (et == 0x8100 || et == 0x88a8) && tags < 2 {
            et = be16(f, off + 2)?;
            off += 4;
            tags += 1;
        }
        let ip = off;
        let (src, udp, ip_end, first_frag, lengths_bad) = match et {
            0x0800 => {
                let h = f.get(ip..ip + 20)?;
                let ihl = (h[0] & 0xf) as usize * 4;
                if h[0] >> 4 != 4 || ihl < 20 || h[9] != 17 {
                    return None;
                }
                let frag = be16(h, 6)?;
                if frag & 0x1fff != 0 {
                    return None;
                }
                let total = be16(h, 2)? as usize;
                let src = IpAddr::from(<[u8; 4]>::try_from(&h[12..16]).ok()?);
                let bad = total < ihl + 8 || ip + total > f.len();
                (src, ip + ihl, ip + total, frag & 0x2000 != 0, bad)
            }
            0x86dd => {
                let h = f.get(ip..ip + 40)?;
                if h[0] >> 4 != 6 {
                    return None;
                }
                let (mut nh, mut l4, mut first) = (h[6], ip + 40, false);
                let mut n = 0;
                loop {
                    match nh {
                        0 | 43 | 60 | 51 | 44 if n == 6 => return Some(Found::LongChain),
                        0 | 43 | 60 => {
                            nh = *f.get(l4)?;
                            l4 += (*f.get(l4 + 1)? as usize + 1) * 8;
                        }
                        51 => {
                            nh = *f.get(l4)?;
                            l4 += (*f.get(l4 + 1)? as usize + 2) * 4;
                        }
                        44 => {
                            let field = be16(f, l4 + 2)?;
                            if field >> 3 != 0 {
                                return None;
                            }
                            first = field & 1 != 0;
                            nh = *f.get(l4)?;
                            l4 += 8;
                        }
                        _ => break,
                    }
                    n += 1;
                }
                if nh != 17 {
                    return None;
                }
                let payload = be16(h, 4)? as usize;
                let end = ip + 40 + payload;
                let src = IpAddr::from(<[u8; 16]>::try_from(&h[8..24]).ok()?);
                let mapped = matches!(src, IpAddr::V6(a) if a.to_ipv4_mapped().is_some());
                let bad = payload == 0 || end > f.len() || l4 + 8 > end || mapped;
                (src, l4, end, first, bad)
            }
            _ => return None,
        };
        let u = f.get(udp..udp + 8)?;
        let dport = be16(u, 2)?;
        if dport == 0 || !self.cfg.ports.contains(&dport) {
            return None;
        }
        let udp_len = be16(u, 4)? as usize;
        let malformed = lengths_bad || udp_len < 8 || (!first_frag && udp + udp_len > ip_end);
        let len = udp_len.saturating_sub(8);
        // The message's first four bytes, from this IP packet only (a first
        // fragment may end before them; padding is no part of it).
        let head = f
            .get(udp + 8..(udp + 12).min(ip_end))
            .filter(|w| w.len() == 4)
            .map(|w| (w[0], [w[1], w[2], w[3]]));
        let malformed = malformed || (len >= 4 && head.is_none());
        Some(Found::Datagram(Datagram {
            src,
            malformed,
            len,
            head,
        }))
    }

    fn stat(&mut self, d: &Datagram) -> u32 {
        if let Some(allow) = &self.cfg.allowlist {
            // The kernel keys IPv4 as ::ffff:a.b.c.d: a mapped IPv6 source
            // meets the IPv4 prefixes (and is then dropped as malformed).
            let src = match d.src {
                IpAddr::V6(a) => a.to_ipv4_mapped().map_or(d.src, IpAddr::V4),
                v4 => v4,
            };
            if !allow.iter().any(|n: &IpNet| n.contains(&src)) {
                return xdp_stat::DROP_NOT_ALLOWED;
            }
        }
        if d.malformed {
            return xdp_stat::DROP_MALFORMED;
        }
        if d.len < 4 {
            return xdp_stat::DROP_BAD_SIZE;
        }
        let (kind, reserved) = d.head.expect("read when len >= 4");
        if !(1..=4).contains(&kind) {
            return xdp_stat::DROP_BAD_TYPE;
        }
        if reserved != [0, 0, 0] {
            return xdp_stat::DROP_RESERVED;
        }
        match (kind, d.len) {
            (1, 148) => {
                if self.take_token(d.src) {
                    xdp_stat::PASS_INITIATION
                } else {
                    xdp_stat::DROP_RATE_LIMITED
                }
            }
            (2, 92) => xdp_stat::PASS_RESPONSE,
            (3, 64) => xdp_stat::PASS_COOKIE,
            (4, n) if n >= 32 => xdp_stat::PASS_DATA,
            _ => xdp_stat::DROP_BAD_SIZE,
        }
    }

    /// `rate` tokens per second, `burst` at most; a new source starts full.
    /// An IPv6 source's bucket is its /64's.
    fn take_token(&mut self, src: IpAddr) -> bool {
        let rate = u64::from(self.cfg.handshake_rate);
        if rate == 0 {
            return true;
        }
        let cap = u64::from(self.cfg.handshake_burst.max(1)) * 1000;
        // IPv4: the address; IPv6: its /64.
        let key = match src {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => (u128::from(a) & !((1u128 << 64) - 1)).to_be_bytes(),
        };
        let now = self.now_ns;
        let b = self.buckets.entry(key).or_insert(Bucket {
            milli: cap,
            last_ns: now,
        });
        let elapsed = now.saturating_sub(b.last_ns).min(1_000_000_000_000);
        let tokens = (b.milli + elapsed * rate / 1_000_000).min(cap);
        b.last_ns = now;
        if tokens < 1000 {
            b.milli = tokens;
            false
        } else {
            b.milli = tokens - 1000;
            true
        }
    }
}

enum Found {
    Other,
    LongChain,
    Datagram(Datagram),
}

struct Datagram {
    src: IpAddr,
    malformed: bool,
    len: usize,
    head: Option<(u8, [u8; 3])>,
}
