//! Small UDP/IPv4 packets, with an Ethernet header (veth) or without one
//! (a WireGuard/TUN device is L3).

use std::net::Ipv4Addr;

/// UDP payload bytes: with an Ethernet header the frame is 60 bytes, the
/// smallest Ethernet frame.
pub const PAYLOAD: usize = 18;

pub struct Ethernet {
    pub dst: [u8; 6],
    pub src: [u8; 6],
}

/// One UDP packet (checksum 0: none, legal over IPv4).
pub fn udp(
    eth: Option<&Ethernet>,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 28 + PAYLOAD);
    if let Some(e) = eth {
        f.extend_from_slice(&e.dst);
        f.extend_from_slice(&e.src);
        f.extend_from_slice(&0x0800u16.to_be_bytes());
    }
    let ip_at = f.len();
    let total = (20 + 8 + PAYLOAD) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]); // id, DF, ttl, udp, csum
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    let csum = checksum(&f[ip_at..ip_at + 20]);
    f[ip_at + 10..ip_at + 12].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + PAYLOAD) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&[0x5a; PAYLOAD]);
    f
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Source ports per (source, destination port) pair: many flows, so that
/// flow and set lookups are not all the same entry.
pub const SOURCE_PORTS: u16 = 16;

/// The frames for `pairs`: every pair from `SOURCE_PORTS` source ports,
/// interleaved so consecutive frames belong to different pairs.
pub fn for_pairs(eth: Option<&Ethernet>, pairs: &[(Ipv4Addr, u16)], dst: Ipv4Addr) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(pairs.len() * SOURCE_PORTS as usize);
    for sp in 0..SOURCE_PORTS {
        for &(src, dport) in pairs {
            out.push(udp(eth, src, dst, 40_000 + sp, dport));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_checksum_verifies() {
        let f = udp(
            None,
            Ipv4Addr::new(10, 64, 0, 2),
            Ipv4Addr::new(10, 63, 0, 1),
            1,
            2,
        );
        // A correct header sums to 0xffff, i.e. its checksum over itself is 0.
        assert_eq!(checksum(&f[..20]), 0);
        assert_eq!(f.len(), 46);
        let e = Ethernet {
            dst: [2; 6],
            src: [4; 6],
        };
        assert_eq!(
            udp(Some(&e), Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, 1, 2).len(),
            60
        );
    }
}
