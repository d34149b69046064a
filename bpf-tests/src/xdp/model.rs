//! The guard's rules over raw frame bytes, from docs/xdp-guard.md.

use std::{collections::HashMap, net::IpAddr};

use ipnet::IpNet;
use wgbpf::dataplane::xdp_guard::GuardConfig;
use wgbpf_common::xdp::xdp_stat;

use super::{XDP_DROP, XDP_PASS};

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
