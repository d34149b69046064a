//! Ethernet frames carrying UDP datagrams, every field settable.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::PORT;

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
