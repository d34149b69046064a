//! Finding the UDP datagrams addressed to a listen port, by direct packet
//! access: each header is bounds-checked before it is read, and whatever
//! cannot be read far enough to see a destination port is not addressed to
//! the port (it passes; the kernel's own checks see to it).

use aya_ebpf::programs::XdpContext;
use wgbpf_common::{xdp::XdpConfig, Addr};

use crate::view::View;

const ETH_LEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
/// VLAN tags looked through (802.1Q, and 802.1ad outside it).
const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers walked; a longer chain is dropped (RFC 8200 lets
/// a packet carry six at most, and the port behind it cannot be seen).
const MAX_EXT_HEADERS: usize = 6;
const PROTO_UDP: u8 = 17;

/// What the guard decides on.
pub enum Outcome {
    /// Not a UDP datagram to a listen port (as far as it can be read).
    Other,
    /// IPv6 with more extension headers than the guard walks (and RFC 8200
    /// lets a packet carry): its port cannot be seen.
    LongChain,
    Message(Message),
}

/// A datagram to a listen port: its source, and the WireGuard header.
pub struct Message {
    /// Source address (IPv4 mapped into ::ffff:0:0/96).
    pub src: Addr,
    /// The IP and UDP lengths disagree with each other or with the frame.
    pub malformed: bool,
    /// UDP payload length (from the UDP header).
    pub len: usize,
    /// Message type (first payload byte); read only when `len >= 4`.
    pub kind: u8,
    /// The three reserved bytes; 0 when all are zero.
    pub reserved: u32,
}

#[derive(Clone, Copy)]
pub struct Bytes {
    start: usize,
    end: usize,
}

impl Bytes {
    #[inline(always)]
    pub fn of(ctx: &XdpContext) -> Self {
        Bytes {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }

    /// `N` bytes at `off`, checked once; fields are read at constant offsets.
    #[inline(always)]
    fn view<const N: usize>(&self, off: usize) -> Option<View<N>> {
        let p = self.start + off;
        if p + N > self.end {
            return None;
        }
        Some(View(p))
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.end - self.start
    }
}

#[inline(always)]
fn is_port(cfg: &XdpConfig, port: u16) -> bool {
    // Port 0 is never a listen port: it marks unused entries.
    port != 0
        && (port == cfg.ports[0]
            || port == cfg.ports[1]
            || port == cfg.ports[2]
            || port == cfg.ports[3])
}

#[inline(always)]
fn is_v4_mapped(a: &Addr) -> bool {
    a[..10] == [0u8; 10] && a[10] == 0xff && a[11] == 0xff
}

/// Ethernet, up to two VLAN tags, then IPv4 or IPv6.
#[inline(always)]
pub fn classify(b: &Bytes, cfg: &XdpConfig) -> Outcome {
    let Some(eth) = b.view::<ETH_LEN>(0) else {
        return Outcome::Other;
    };
    let mut proto = eth.be16(12);
    let mut off = ETH_LEN;
    for _ in 0..MAX_VLAN_TAGS {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        let Some(tag) = b.view::<4>(off) else {
            return Outcome::Other;
        };
        proto = tag.be16(2);
        off += 4;
    }
    match proto {
        ETH_P_IP => ipv4(b, cfg, off),
        ETH_P_IPV6 => ipv6(b, cfg, off),
        _ => Outcome::Other,
    }
}

#[inline(always)]
fn ipv4(b: &Bytes, cfg: &XdpConfig, off: usize) -> Outcome {
    let Some(h) = b.view::<20>(off) else {
        return Outcome::Other;
    };
    let ihl = ((h.u8(0) & 0x0f) as usize) * 4;
    if h.u8(0) >> 4 != 4 || ihl < 20 || h.u8(9) != PROTO_UDP {
        return Outcome::Other;
    }
    let frag = h.be16(6);
    if frag & 0x1fff != 0 {
        // A later fragment carries no UDP header: its port is unknown.
        return Outcome::Other;
    }
    let udp = off + ihl;
    let Some(u) = b.view::<8>(udp) else {
        return Outcome::Other;
    };
    if !is_port(cfg, u.be16(2)) {
        return Outcome::Other;
    }
    let total = h.be16(2) as usize;
    let ip_end = off + total;
    let malformed = total < ihl + 8 || ip_end > b.len();
    datagram(b, h.v4_addr(12), udp, ip_end, frag & 0x2000 != 0, malformed)
}

#[inline(always)]
fn ipv6(b: &Bytes, cfg: &XdpConfig, off: usize) -> Outcome {
    let Some(h) = b.view::<40>(off) else {
        return Outcome::Other;
    };
    if h.u8(0) >> 4 != 6 {
        return Outcome::Other;
    }
    let mut nh = h.u8(6);
    let mut l4 = off + 40;
    let mut first_fragment = false;
    for _ in 0..MAX_EXT_HEADERS {
        match nh {
            0 | 43 | 60 => {
                let Some(e) = b.view::<2>(l4) else {
                    return Outcome::Other;
                };
                nh = e.u8(0);
                l4 += (e.u8(1) as usize + 1) * 8;
            }
            51 => {
                let Some(e) = b.view::<2>(l4) else {
                    return Outcome::Other;
                };
                nh = e.u8(0);
                l4 += (e.u8(1) as usize + 2) * 4;
            }
            44 => {
                let Some(e) = b.view::<4>(l4) else {
                    return Outcome::Other;
                };
                let field = e.be16(2);
                if field >> 3 != 0 {
                    // A later fragment: no UDP header in it.
                    return Outcome::Other;
                }
                first_fragment = field & 1 != 0;
                nh = e.u8(0);
                l4 += 8;
            }
            _ => break,
        }
    }
    if matches!(nh, 0 | 43 | 60 | 51 | 44) {
        return Outcome::LongChain;
    }
    if nh != PROTO_UDP {
        return Outcome::Other;
    }
    let Some(u) = b.view::<8>(l4) else {
        return Outcome::Other;
    };
    if !is_port(cfg, u.be16(2)) {
        return Outcome::Other;
    }
    let payload = h.be16(4) as usize;
    let ip_end = off + 40 + payload;
    let src = h.v6_addr(8);
    // A zero payload length announces a jumbogram: never WireGuard. An
    // IPv4-mapped source never belongs on the wire (RFC 4291 2.5.5.2), and
    // would share an IPv4 source's bucket and allowlist entries.
    let malformed = payload == 0 || ip_end > b.len() || l4 + 8 > ip_end || is_v4_mapped(&src);
    datagram(b, src, l4, ip_end, first_fragment, malformed)
}

/// The UDP header at `udp` is in the frame and addressed to a listen port.
/// `ip_end` is where the IP packet ends by its length field. A first
/// fragment's datagram continues in later fragments, so only its header
/// is judged.
#[inline(always)]
fn datagram(
    b: &Bytes,
    src: Addr,
    udp: usize,
    ip_end: usize,
    first_fragment: bool,
    malformed: bool,
) -> Outcome {
    let mut m = Message {
        src,
        malformed,
        len: 0,
        kind: 0,
        reserved: 0,
    };
    if malformed {
        return Outcome::Message(m);
    }
    let Some(u) = b.view::<8>(udp) else {
        return Outcome::Other;
    };
    let udp_len = u.be16(4) as usize;
    if udp_len < 8 || (!first_fragment && udp + udp_len > ip_end) {
        m.malformed = true;
        return Outcome::Message(m);
    }
    m.len = udp_len - 8;
    // The message header must lie in this IP packet: a first fragment
    // could otherwise leave it to a later one (or to Ethernet padding).
    if m.len >= 4 && udp + 12 > ip_end {
        m.malformed = true;
        return Outcome::Message(m);
    }
    if m.len >= 4 {
        let Some(w) = b.view::<4>(udp + 8) else {
            m.malformed = true;
            return Outcome::Message(m);
        };
        m.kind = w.u8(0);
        m.reserved = (w.u8(1) as u32) << 16 | (w.u8(2) as u32) << 8 | w.u8(3) as u32;
    }
    Outcome::Message(m)
}
