//! Test frames for BPF_PROG_TEST_RUN, each paired with the exact parse result
//! the eBPF program must reach.
//!
//! A [`Packet`] is a structured description (addresses, L4 header, IPv4
//! options, IPv6 extension chain, length lies, truncation, padding); `build()`
//! serialises it and derives the [`Expected`] result from that structure (not by
//! re-parsing the bytes), so a separate byte-level parser can cross-check it.
//!
//! The parse rules mirrored here, in short: Ethernet (14 bytes) + IP; IPv4 needs
//! 20 bytes, ihl >= 20, ihl <= total <= avail; IPv6 needs 40 bytes and
//! 0 < payload, 40 + payload <= avail, then walks at most 6 extension headers
//! (0/43/60: (len+1)*8, 51: (len+2)*4, 44: 8, a fragment header stops the
//! walk, and one with offset 0 followed by another extension header is
//! malformed); L4 ports/ICMP fields are read for whole packets and first
//! fragments alike, with minimum sizes TCP 20, UDP 8, SCTP 12, ICMP/ICMPv6
//! 8; ICMP only in IPv4 and ICMPv6 only in IPv6 (the other combinations are
//! protocols without fields). A later fragment starting inside its
//! protocol's smallest header (TCP 20, SCTP 12 bytes) is malformed.

use rand::Rng;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
pub use wgbpf::policy::reference::Fragment;

/// What the data plane extracts from a well-formed packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Final L4 protocol (after IPv6 extension headers).
    pub proto: u8,
    /// A later fragment (its ports are unknown).
    pub fragment: bool,
    /// A first or later fragment: its datagram and place (None for whole
    /// packets, IPv6 atomic fragments included).
    pub frag: Option<Fragment>,
    /// TCP/UDP/SCTP only (and only for non-fragments), else 0.
    pub sport: u16,
    pub dport: u16,
    /// ICMP (1) / ICMPv6 (58) only (and only for non-fragments), else 0.
    pub icmp_type: u8,
    pub icmp_id: u16,
    /// IPv4 total length, or 40 + IPv6 payload length.
    pub len: u32,
}

/// The result the eBPF program must reach for a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    Malformed,
    Packet(Parsed),
}

/// An Ethernet frame ready for BPF_PROG_TEST_RUN, with its expected parse.
#[derive(Clone, Debug)]
pub struct Frame {
    pub bytes: Vec<u8>,
    pub expected: Expected,
    /// Short description for failure messages.
    pub label: String,
}

/// Ethernet header length.
pub const ETH_LEN: usize = 14;
const V4_HDR: usize = 20;
const V6_HDR: usize = 40;
/// The program walks at most this many IPv6 extension headers.
pub const MAX_V6_EXT: usize = 6;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_SCTP: u8 = 132;

pub use wgbpf_common::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

/// IPv6 extension header types the program walks.
pub const IPV6_EXT_TYPES: [u8; 5] = [0, 43, 60, 51, 44];

fn is_v6_ext(nh: u8) -> bool {
    IPV6_EXT_TYPES.contains(&nh)
}

/// Bytes of L4 header the program needs for `proto`, if it parses it.
fn l4_min(proto: u8) -> Option<usize> {
    match proto {
        PROTO_TCP => Some(20),
        PROTO_UDP | PROTO_ICMP | PROTO_ICMPV6 => Some(8),
        PROTO_SCTP => Some(12),
        _ => None,
    }
}

/// Deterministic filler so payloads are not all zeros.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed))
        .collect()
}

#[derive(Clone, Copy, Debug)]
struct Ext {
    kind: u8,
    /// Length byte (0/43/60/51); ignored for 44.
    len_byte: u8,
    /// Fragment header only: offset in 8-byte units and the M flag.
    frag_offset: u16,
    more: bool,
    /// Routing header only: routing type and segments left.
    route: (u8, u8),
    /// Fragment header only: the identification.
    frag_id: u32,
}

impl Ext {
    fn size(&self) -> usize {
        match self.kind {
            51 => (self.len_byte as usize + 2) * 4,
            44 => 8,
            _ => (self.len_byte as usize + 1) * 8,
        }
    }

    fn bytes(&self, next: u8) -> Vec<u8> {
        let mut b = vec![0u8; self.size()];
        b[0] = next;
        match self.kind {
            44 => {
                let field = (self.frag_offset << 3) | u16::from(self.more);
                b[2..4].copy_from_slice(&field.to_be_bytes());
                b[4..8].copy_from_slice(&self.frag_id.to_be_bytes());
            }
            51 => {
                b[1] = self.len_byte;
                b[4..8].copy_from_slice(&0x100u32.to_be_bytes()); // SPI
                if b.len() >= 12 {
                    b[8..12].copy_from_slice(&1u32.to_be_bytes()); // sequence
                }
            }
            43 => {
                b[1] = self.len_byte;
                (b[2], b[3]) = self.route;
            }
            _ => b[1] = self.len_byte, // options data: zeros (Pad1)
        }
        b
    }
}

#[derive(Clone, Copy, Debug)]
enum Trunc {
    /// Keep `n` IP bytes and make the length field agree.
    Fixup(usize),
    /// Keep `n` IP bytes, length fields still claim the full packet.
    Cut(usize),
}

impl Trunc {
    fn n(self) -> usize {
        match self {
            Trunc::Fixup(n) | Trunc::Cut(n) => n,
        }
    }
}

/// Structured description of a test packet; `build()` gives the [`Frame`].
///
/// Combinations whose result would depend on bytes the description does not
/// control panic in `build()`: truncating into the fixed IP header while
/// padding refills it, `cut_to` with padding, and truncation together with a
/// length-field override.
#[derive(Clone, Debug)]
pub struct Packet {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    l4: Vec<u8>,
    options: usize,
    /// The options' bytes when given (else NOPs closed by an EOL).
    option_bytes: Vec<u8>,
    exts: Vec<Ext>,
    frag_field: u16,
    /// IPv4 identification; IPv6 fragment headers carry their own.
    v4_id: u16,
    version: Option<u8>,
    ihl: Option<u8>,
    len_field: Option<u16>,
    trunc: Option<Trunc>,
    padding: Vec<u8>,
    label: String,
}

/// Constructors.
impl Packet {
    /// Any protocol with the given L4 bytes (header + payload) verbatim.
    pub fn raw_l4(src: IpAddr, dst: IpAddr, proto: u8, l4: Vec<u8>) -> Packet {
        assert_eq!(src.is_ipv4(), dst.is_ipv4(), "mixed address families");
        let fam = if src.is_ipv4() { "v4" } else { "v6" };
        Packet {
            src,
            dst,
            proto,
            l4,
            options: 0,
            option_bytes: Vec::new(),
            exts: Vec::new(),
            frag_field: 0,
            v4_id: 0x1234,
            version: None,
            ihl: None,
            len_field: None,
            trunc: None,
            padding: Vec::new(),
            label: format!("{fam} p{proto}"),
        }
    }

    pub fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Packet {
        let mut h = vec![0u8; 20];
        h[0..2].copy_from_slice(&sport.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        h[4..8].copy_from_slice(&0x1000_0001u32.to_be_bytes()); // seq
        h[12] = 5 << 4; // data offset
        h[13] = 0x02; // SYN
        h[14..16].copy_from_slice(&64240u16.to_be_bytes());
        Packet::raw_l4(src, dst, PROTO_TCP, h).named(format!("tcp {sport}>{dport}"))
    }

    pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Packet {
        let mut h = vec![0u8; 8];
        h[0..2].copy_from_slice(&sport.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        h[4..6].copy_from_slice(&8u16.to_be_bytes()); // grown by with_payload
        Packet::raw_l4(src, dst, PROTO_UDP, h).named(format!("udp {sport}>{dport}"))
    }

    pub fn sctp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Packet {
        let mut h = vec![0u8; 12];
        h[0..2].copy_from_slice(&sport.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        h[4..8].copy_from_slice(&0xfeed_beefu32.to_be_bytes()); // verification tag
        Packet::raw_l4(src, dst, PROTO_SCTP, h).named(format!("sctp {sport}>{dport}"))
    }

    /// TCP with the given flags (`TCP_SYN`, `TCP_ACK`, ...).
    pub fn tcp_flags(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8) -> Packet {
        let mut p = Packet::tcp(src, dst, sport, dport);
        p.l4[13] = flags;
        p.note(format!("flags={flags:#04x}"))
    }

    /// ICMP (v4 addresses, proto 1) or ICMPv6 (v6 addresses, proto 58);
    /// `rest` is the 4 bytes after the checksum (id is its upper half).
    pub fn icmp(src: IpAddr, dst: IpAddr, icmp_type: u8, code: u8, rest: u32) -> Packet {
        let proto = if src.is_ipv4() {
            PROTO_ICMP
        } else {
            PROTO_ICMPV6
        };
        let mut h = vec![icmp_type, code, 0, 0];
        h.extend_from_slice(&rest.to_be_bytes());
        Packet::raw_l4(src, dst, proto, h).named(format!("icmp t={icmp_type}"))
    }

    /// Echo request: type 8 (v4) or 128 (v6), sequence 1.
    pub fn icmp_echo_request(src: IpAddr, dst: IpAddr, id: u16) -> Packet {
        let t = if src.is_ipv4() { 8 } else { 128 };
        Packet::icmp(src, dst, t, 0, u32::from(id) << 16 | 1)
    }

    /// Echo reply: type 0 (v4) or 129 (v6), sequence 1.
    pub fn icmp_echo_reply(src: IpAddr, dst: IpAddr, id: u16) -> Packet {
        let t = if src.is_ipv4() { 0 } else { 129 };
        Packet::icmp(src, dst, t, 0, u32::from(id) << 16 | 1)
    }

    /// A protocol the program does not parse (GRE, ESP, ...) with 16 bytes of
    /// body. On IPv6, extension header numbers are refused: use
    /// `with_ipv6_ext_headers`.
    pub fn raw_proto(src: IpAddr, dst: IpAddr, proto: u8) -> Packet {
        Packet::raw_l4(src, dst, proto, pattern(16, proto))
    }
}

/// Modifiers.
impl Packet {
    fn named(mut self, what: String) -> Packet {
        let fam = if self.src.is_ipv4() { "v4" } else { "v6" };
        self.label = format!("{fam} {what}");
        self
    }

    fn note(mut self, what: String) -> Packet {
        self.label.push(' ');
        self.label.push_str(&what);
        self
    }

    fn is_v4(&self) -> bool {
        self.src.is_ipv4()
    }

    /// Appends `n` bytes of L4 payload (UDP length follows).
    pub fn with_payload(mut self, n: usize) -> Packet {
        self.l4.extend(pattern(n, 0x40));
        if self.proto == PROTO_UDP && self.l4.len() >= 8 {
            let len = self.l4.len() as u16;
            self.l4[4..6].copy_from_slice(&len.to_be_bytes());
        }
        self.note(format!("pay={n}"))
    }

    /// IPv4 options (one option of `n` bytes): `n` is a multiple of 4 up to
    /// 40 (IHL 6..15).
    pub fn with_ipv4_options(mut self, n: usize) -> Packet {
        assert!(self.is_v4(), "IPv4 options on an IPv6 packet");
        assert!(
            n.is_multiple_of(4) && n <= 40,
            "IPv4 options must be 0..=40 in steps of 4"
        );
        self.options = n;
        self.note(format!("opts={n}"))
    }

    /// IPv4 options given byte for byte (padded with EOLs to a multiple of 4).
    pub fn with_ipv4_option_bytes(mut self, bytes: &[u8]) -> Packet {
        assert!(self.is_v4(), "IPv4 options on an IPv6 packet");
        let mut b = bytes.to_vec();
        b.resize(bytes.len().next_multiple_of(4), 0);
        assert!(b.len() <= 40, "IPv4 options are at most 40 bytes");
        self.options = b.len();
        self.option_bytes = b;
        self.note(format!("opts={bytes:02x?}"))
    }

    /// Appends an IPv6 routing header (8 bytes) of routing type `rtype`
    /// with `segments_left`.
    pub fn with_ipv6_routing_header(mut self, rtype: u8, segments_left: u8) -> Packet {
        self = self.with_ipv6_ext_header(43, 0);
        self.exts.last_mut().unwrap().route = (rtype, segments_left);
        self.note(format!("rt{rtype}/sl{segments_left}"))
    }

    /// Appends IPv6 extension headers of the given types with minimal sizes
    /// (8 bytes; AH 24 bytes; 44 = fragment header with offset 0 and M=1).
    pub fn with_ipv6_ext_headers(self, kinds: &[u8]) -> Packet {
        kinds.iter().fold(self, |p, &k| {
            let len_byte = if k == 51 { 4 } else { 0 };
            p.with_ipv6_ext_header(k, len_byte)
        })
    }

    /// Appends one IPv6 extension header with an explicit length byte
    /// (ignored for the fragment header 44).
    pub fn with_ipv6_ext_header(mut self, kind: u8, len_byte: u8) -> Packet {
        assert!(!self.is_v4(), "IPv6 extension header on an IPv4 packet");
        assert!(
            is_v6_ext(kind),
            "{kind} is not an IPv6 extension header type"
        );
        let more = kind == 44;
        self.exts.push(Ext {
            kind,
            len_byte,
            frag_offset: 0,
            more,
            route: (0, 0),
            frag_id: V6_FRAG_ID,
        });
        self.note(format!("x{kind}/{len_byte}"))
    }

    /// Makes the packet a first fragment (offset 0, MF) or a later one
    /// (offset 185). On IPv6 this appends a fragment header to the chain.
    pub fn as_fragment(self, first: bool) -> Packet {
        let offset = if first { 0 } else { 185 };
        self.as_fragment_at(offset, first)
    }

    /// Fragment with an explicit offset (8-byte units, < 8192) and MF flag.
    pub fn as_fragment_at(mut self, offset: u16, more: bool) -> Packet {
        assert!(offset < 8192, "fragment offset is 13 bits");
        if self.is_v4() {
            self.frag_field = (self.frag_field & 0x4000) | offset | (u16::from(more) << 13);
        } else {
            let e = Ext {
                kind: 44,
                len_byte: 0,
                frag_offset: offset,
                more,
                route: (0, 0),
                frag_id: V6_FRAG_ID,
            };
            self.exts.push(e);
        }
        self.note(format!("frag@{offset}{}", if more { "+M" } else { "" }))
    }

    /// The datagram identification: the IPv4 header's (16 bits), or the
    /// last IPv6 fragment header's.
    pub fn with_frag_id(mut self, id: u32) -> Packet {
        if self.is_v4() {
            self.v4_id = u16::try_from(id).expect("IPv4 identifications are 16 bits");
        } else {
            let e = self.exts.iter_mut().rev().find(|e| e.kind == 44);
            e.expect("no fragment header").frag_id = id;
        }
        self.note(format!("id={id:#x}"))
    }

    /// Raw IPv4 flags + fragment offset field (e.g. 0x4000 = DF only, which
    /// is NOT a fragment).
    pub fn with_ipv4_frag_field(mut self, field: u16) -> Packet {
        assert!(self.is_v4(), "IPv4 flags on an IPv6 packet");
        self.frag_field = field;
        self.note(format!("ff={field:#x}"))
    }

    /// Keeps only `n` IP bytes and sets the length field to match (IPv4 total
    /// = n, IPv6 payload = n - 40), as a short but self-consistent packet.
    pub fn truncated_to(mut self, n: usize) -> Packet {
        self.trunc = Some(Trunc::Fixup(n));
        self.note(format!("trunc={n}"))
    }

    /// Keeps only `n` IP bytes; the length fields still claim the full size.
    pub fn cut_to(mut self, n: usize) -> Packet {
        self.trunc = Some(Trunc::Cut(n));
        self.note(format!("cut={n}"))
    }

    /// `n` bytes of garbage after the IP packet (like Ethernet padding).
    pub fn with_padding(self, n: usize) -> Packet {
        self.with_padding_bytes(pattern(n, 0xa5))
    }

    /// Specific garbage after the IP packet.
    pub fn with_padding_bytes(mut self, pad: Vec<u8>) -> Packet {
        let n = pad.len();
        self.padding = pad;
        self.note(format!("pad={n}"))
    }

    /// A version nibble other than 4 or 6 (always Malformed).
    pub fn with_version(mut self, v: u8) -> Packet {
        assert!(
            v < 16 && v != 4 && v != 6,
            "with_version is for bad nibbles"
        );
        self.version = Some(v);
        self.note(format!("ver={v}"))
    }

    /// IPv4 IHL field (0..=15) regardless of the options actually present.
    pub fn with_ihl(mut self, ihl: u8) -> Packet {
        assert!(self.is_v4() && ihl < 16, "IHL is a 4-bit IPv4 field");
        self.ihl = Some(ihl);
        self.note(format!("ihl={ihl}"))
    }

    /// IPv4 total length / IPv6 payload length field, lying as wished.
    pub fn with_len_field(mut self, len: u16) -> Packet {
        self.len_field = Some(len);
        self.note(format!("lenf={len}"))
    }
}

/// Serialisation.
impl Packet {
    fn fixed_hdr(&self) -> usize {
        if self.is_v4() {
            V4_HDR
        } else {
            V6_HDR
        }
    }

    /// Offset of the L4 header in the untruncated IP packet.
    fn l4_offset(&self) -> usize {
        if self.is_v4() {
            V4_HDR + self.options
        } else {
            V6_HDR + self.exts.iter().map(Ext::size).sum::<usize>()
        }
    }

    fn real_len(&self) -> usize {
        self.l4_offset() + self.l4.len()
    }

    /// The length field as written (IPv4 total / IPv6 payload).
    fn len_value(&self) -> usize {
        if let Some(v) = self.len_field {
            return v as usize;
        }
        let n = match self.trunc {
            Some(Trunc::Fixup(n)) => n.min(self.real_len()),
            _ => self.real_len(),
        };
        if self.is_v4() {
            n
        } else {
            n.saturating_sub(V6_HDR)
        }
    }

    fn ihl_value(&self) -> u8 {
        self.ihl.unwrap_or((5 + self.options / 4) as u8)
    }

    /// IP bytes present in the frame (before padding).
    fn ip_present(&self) -> usize {
        self.trunc
            .map_or(self.real_len(), |t| t.n().min(self.real_len()))
    }

    /// Refuses descriptions whose expected result would hinge on bytes the
    /// model does not control (padding standing in for header bytes).
    fn unmodelled(&self) -> Option<&'static str> {
        let fixed = self.fixed_hdr();
        let present = self.ip_present();
        let truncated = present < self.real_len();
        let padded = !self.padding.is_empty();
        // With no IP byte left, padding supplies the version nibble too, and
        // could pass for an IPv4 header from 20 bytes on.
        let refill = if present == 0 { V4_HDR } else { fixed };
        if truncated && present < fixed && present + self.padding.len() >= refill {
            return Some("padding would refill a truncated fixed header");
        }
        if truncated && padded && matches!(self.trunc, Some(Trunc::Cut(_))) {
            return Some("cut_to with padding is not modelled");
        }
        if self.trunc.is_some() && self.len_field.is_some() {
            return Some("truncation with a length override is not modelled");
        }
        if !self.is_v4() && is_v6_ext(self.proto) {
            return Some("extension header numbers as L4 protocol on v6");
        }
        if self.real_len() > 65535 {
            return Some("packet too long");
        }
        None
    }

    fn version_value(&self) -> u8 {
        self.version.unwrap_or(if self.is_v4() { 4 } else { 6 })
    }

    fn v4_header(&self) -> Vec<u8> {
        let (IpAddr::V4(s), IpAddr::V4(d)) = (self.src, self.dst) else {
            unreachable!("v4 header for v6 addresses")
        };
        let mut h = vec![0u8; V4_HDR];
        h[0] = (self.version_value() << 4) | (self.ihl_value() & 0xf);
        h[2..4].copy_from_slice(&(self.len_value() as u16).to_be_bytes());
        h[4..6].copy_from_slice(&self.v4_id.to_be_bytes());
        h[6..8].copy_from_slice(&self.frag_field.to_be_bytes());
        h[8] = 64;
        h[9] = self.proto;
        h[12..16].copy_from_slice(&s.octets());
        h[16..20].copy_from_slice(&d.octets());
        // Options: as given, else one option of that size.
        if self.option_bytes.is_empty() {
            // One option filling them all (an experimental kind, RFC 4727).
            h.extend((0..self.options).map(|i| match i {
                0 => 0x9e,
                1 => self.options as u8,
                _ => 0,
            }));
        } else {
            h.extend_from_slice(&self.option_bytes);
        }
        let csum = ipv4_checksum(&h);
        h[10..12].copy_from_slice(&csum.to_be_bytes());
        h
    }

    fn v6_header(&self) -> Vec<u8> {
        let (IpAddr::V6(s), IpAddr::V6(d)) = (self.src, self.dst) else {
            unreachable!("v6 header for v4 addresses")
        };
        let mut h = vec![0u8; V6_HDR];
        h[0] = self.version_value() << 4;
        h[1..4].copy_from_slice(&[0x0a, 0xbc, 0xde]); // flow label
        h[4..6].copy_from_slice(&(self.len_value() as u16).to_be_bytes());
        h[6] = self.exts.first().map_or(self.proto, |e| e.kind);
        h[7] = 64;
        h[8..24].copy_from_slice(&s.octets());
        h[24..40].copy_from_slice(&d.octets());
        for (i, e) in self.exts.iter().enumerate() {
            let next = self.exts.get(i + 1).map_or(self.proto, |n| n.kind);
            h.extend(e.bytes(next));
        }
        h
    }

    fn frame_bytes(&self) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
        let ethertype: u16 = if self.is_v4() { 0x0800 } else { 0x86dd };
        f.extend_from_slice(&ethertype.to_be_bytes());
        let mut ip = if self.is_v4() {
            self.v4_header()
        } else {
            self.v6_header()
        };
        ip.extend_from_slice(&self.l4);
        ip.truncate(self.ip_present());
        f.extend(ip);
        f.extend_from_slice(&self.padding);
        f
    }

    /// Serialises the packet and derives its expected parse result.
    pub fn build(&self) -> Frame {
        if let Some(why) = self.unmodelled() {
            panic!("{}: {why}", self.label);
        }
        let bytes = self.frame_bytes();
        let expected = self.expected(&bytes);
        Frame {
            bytes,
            expected,
            label: self.label.clone(),
        }
    }
}

impl From<Packet> for Frame {
    fn from(p: Packet) -> Frame {
        p.build()
    }
}

fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Expected result, from the description's own bookkeeping: header values
/// and positions come from the model; only the L4 fields are read back from
/// the frame (at the model's offset) because lying lengths can move them.
impl Packet {
    fn expected(&self, frame: &[u8]) -> Expected {
        let avail = frame.len() - ETH_LEN;
        let v = self.version_value();
        if avail == 0 || (v != 4 && v != 6) || avail < self.fixed_hdr() {
            return Expected::Malformed;
        }
        let base = crate::reference_parse::empty(
            self.src,
            self.dst,
            self.proto,
            self.len_value() + if self.is_v4() { 0 } else { V6_HDR },
        );
        if self.is_v4() {
            self.expected_v4(frame, avail, base)
        } else {
            self.expected_v6(frame, avail, base)
        }
    }

    fn expected_v4(&self, frame: &[u8], avail: usize, p: Parsed) -> Expected {
        let ihl = self.ihl_value() as usize * 4;
        let total = self.len_value();
        if ihl < V4_HDR || total < ihl || total > avail {
            return Expected::Malformed;
        }
        if !v4_options_acceptable(&frame[ETH_LEN + V4_HDR..ETH_LEN + ihl.min(avail)]) {
            return Expected::Malformed;
        }
        let (offset, more) = (self.frag_field & 0x1fff, self.frag_field & 0x2000 != 0);
        let id = u32::from(self.v4_id);
        if offset != 0 {
            return later_fragment(p, id, usize::from(offset) * 8);
        }
        let first = more.then_some(Fragment {
            id,
            first: true,
            len: (total - ihl) as u32,
        });
        with_frag(l4_fields(frame, ihl, total - ihl, p), first)
    }

    fn expected_v6(&self, frame: &[u8], avail: usize, mut p: Parsed) -> Expected {
        let payload = self.len_value();
        if payload == 0 || V6_HDR + payload > avail {
            return Expected::Malformed;
        }
        let end = V6_HDR + payload;
        let Some((off, consumed, frag)) = self.walk_exts(avail, end) else {
            return Expected::Malformed;
        };
        p.proto = self.exts.get(consumed).map_or(self.proto, |e| e.kind);
        match frag {
            Some(f) if f.frag_offset != 0 => {
                later_fragment(p, f.frag_id, usize::from(f.frag_offset) * 8)
            }
            Some(f) => {
                // M clear: an atomic fragment, a whole packet (RFC 6946).
                let first = f.more.then_some(Fragment {
                    id: f.frag_id,
                    first: true,
                    len: (end - off) as u32,
                });
                with_frag(l4_fields(frame, off, end - off, p), first)
            }
            None => l4_fields(frame, off, end - off, p),
        }
    }

    /// Walks the model's extension chain like the program walks the bytes:
    /// returns (L4 offset, headers consumed, the fragment header that ended
    /// the walk) or None if Malformed.
    fn walk_exts(&self, avail: usize, end: usize) -> Option<(usize, usize, Option<Ext>)> {
        let mut off = V6_HDR;
        for i in 0..MAX_V6_EXT {
            let Some(e) = self.exts.get(i) else {
                return Some((off, i, None)); // L4 proto: stop
            };
            let need = match e.kind {
                44 => 8,
                43 => 4,
                _ => 2,
            };
            if off + need > avail {
                return None;
            }
            // A route still to follow (Mobile IPv6's type 2 excepted).
            if e.kind == 43 && e.route.1 != 0 && e.route.0 != 2 {
                return None;
            }
            off += e.size();
            if off > end {
                return None;
            }
            if e.kind == 44 {
                let next_is_ext = self.exts.get(i + 1).is_some();
                if e.frag_offset == 0 && next_is_ext {
                    return None; // headers after a first fragment's
                }
                return Some((off, i + 1, Some(*e)));
            }
        }
        None // six headers consumed without reaching the end of the chain
    }
}

/// IPv4 options as the program walks them: EOL ends them, NOP is one byte,
/// any other option has a length byte of at least 2 that stays inside the
/// header; loose and strict source routes (131, 137) are refused, and so is
/// a header with more than [`V4_OPTION_ROUNDS`] options (NOPs included).
pub fn v4_options_acceptable(opts: &[u8]) -> bool {
    let mut i = 0;
    let mut rounds = 0;
    while i < opts.len() {
        if rounds == V4_OPTION_ROUNDS {
            return false;
        }
        rounds += 1;
        match opts[i] {
            0 => return true,
            1 => i += 1,
            0x83 | 0x89 => return false,
            _ => {
                let Some(&len) = opts.get(i + 1) else {
                    return false;
                };
                if len < 2 {
                    return false;
                }
                i += len as usize;
                if i > opts.len() {
                    return false;
                }
            }
        }
    }
    true
}

/// A random IPv4 option list of at most 40 bytes: NOPs, options of 2..=6
/// bytes, now and then a source route; often more options than the program
/// checks (`V4_OPTION_ROUNDS`).
fn random_v4_options(rng: &mut impl Rng) -> Vec<u8> {
    let mut b = Vec::new();
    for _ in 0..rng.gen_range(1..=14) {
        let item: Vec<u8> = match rng.gen_range(0..10) {
            0..=3 => vec![1],
            4 => vec![if rng.gen_bool(0.5) { 0x83 } else { 0x89 }, 3, 4],
            _ => {
                let len = rng.gen_range(2..=6u8);
                let mut o = vec![[0x44, 0x94, 0x9e][rng.gen_range(0..3)], len];
                o.resize(len as usize, 0);
                o
            }
        };
        if b.len() + item.len() > 40 {
            break;
        }
        b.extend(item);
    }
    b
}

/// IPv4 options the program checks per header at most (ebpf/src/parse.rs).
pub const V4_OPTION_ROUNDS: usize = 8;

/// The identification the builder gives IPv6 fragment headers.
const V6_FRAG_ID: u32 = 0x0bad_f00d;

/// A later fragment at byte `offset`: malformed inside its protocol's
/// smallest header (TCP 20, SCTP 12 bytes), else ports unknown.
fn later_fragment(mut p: Parsed, id: u32, offset: usize) -> Expected {
    let min = match p.proto {
        PROTO_TCP => 20,
        PROTO_SCTP => 12,
        _ => 0,
    };
    if offset < min {
        return Expected::Malformed;
    }
    p.fragment = true;
    p.frag = Some(Fragment {
        id,
        first: false,
        len: offset as u32,
    });
    Expected::Packet(p)
}

fn with_frag(e: Expected, frag: Option<Fragment>) -> Expected {
    match e {
        Expected::Packet(p) => Expected::Packet(Parsed { frag, ..p }),
        m => m,
    }
}

/// L4 fields at IP offset `off` with `room` bytes left of the IP packet.
/// ICMP of the other family (1 in IPv6, 58 in IPv4) is not ICMP: no fields.
fn l4_fields(frame: &[u8], off: usize, room: usize, mut p: Parsed) -> Expected {
    let cross_family = match p.proto {
        PROTO_ICMP => p.src.is_ipv6(),
        PROTO_ICMPV6 => p.src.is_ipv4(),
        _ => false,
    };
    let Some(min) = l4_min(p.proto).filter(|_| !cross_family) else {
        return Expected::Packet(p);
    };
    let at = ETH_LEN + off;
    let icmp = p.proto == PROTO_ICMP || p.proto == PROTO_ICMPV6;
    let need = if icmp { 8 } else { 4 };
    if room < min || at + need > frame.len() {
        return Expected::Malformed;
    }
    let be16 = |i: usize| u16::from_be_bytes([frame[i], frame[i + 1]]);
    if icmp {
        p.icmp_type = frame[at];
        p.icmp_id = be16(at + 4);
    } else {
        p.sport = be16(at);
        p.dport = be16(at + 2);
    }
    Expected::Packet(p)
}

/// Address and port pools the random generator draws from.
#[derive(Clone, Debug, Default)]
pub struct Pools {
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
    pub ports: Vec<u16>,
}

/// A random frame: ~70% plain well-formed packets over the pools, the rest
/// with edge cases (options, extension chains, fragments, truncations, lying
/// lengths, bad IHL/version, short L4, padding), many of them Malformed.
pub fn random_frame(rng: &mut impl Rng, pools: &Pools) -> Frame {
    let p = random_packet(rng, pools);
    if rng.gen_bool(0.7) {
        return p.build();
    }
    edge_case(rng, p).build()
}

fn pick_addr(rng: &mut impl Rng, pools: &Pools, v4: bool) -> IpAddr {
    let pooled = rng.gen_bool(0.9);
    if v4 {
        match pools.v4.get(rng.gen_range(0..pools.v4.len().max(1))) {
            Some(a) if pooled => IpAddr::V4(*a),
            _ => IpAddr::V4(Ipv4Addr::from(rng.gen::<u32>())),
        }
    } else {
        match pools.v6.get(rng.gen_range(0..pools.v6.len().max(1))) {
            Some(a) if pooled => IpAddr::V6(*a),
            _ => IpAddr::V6(Ipv6Addr::from(rng.gen::<u128>())),
        }
    }
}

fn pick_port(rng: &mut impl Rng, pools: &Pools) -> u16 {
    match rng.gen_range(0..100) {
        0..=5 => 0,
        6..=11 => 65535,
        12..=19 => rng.gen(),
        _ if pools.ports.is_empty() => rng.gen(),
        _ => pools.ports[rng.gen_range(0..pools.ports.len())],
    }
}

fn payload_len(rng: &mut impl Rng) -> usize {
    match rng.gen_range(0..100) {
        0..=69 => rng.gen_range(0..32),
        70..=94 => rng.gen_range(32..512),
        _ => rng.gen_range(512..1400),
    }
}

/// A well-formed packet of a weighted random protocol.
fn random_packet(rng: &mut impl Rng, pools: &Pools) -> Packet {
    let v4 = rng.gen_bool(0.5);
    let (s, d) = (pick_addr(rng, pools, v4), pick_addr(rng, pools, v4));
    let (sp, dp) = (pick_port(rng, pools), pick_port(rng, pools));
    let p = match rng.gen_range(0..100) {
        0..=29 => Packet::tcp(s, d, sp, dp),
        30..=54 => Packet::udp(s, d, sp, dp),
        55..=62 => Packet::icmp_echo_request(s, d, rng.gen()),
        63..=68 => Packet::icmp_echo_reply(s, d, rng.gen()),
        69..=75 => random_icmp_other(rng, s, d),
        76..=84 => Packet::sctp(s, d, sp, dp),
        _ => Packet::raw_proto(s, d, random_portless(rng, v4)),
    };
    let p = p.with_payload(payload_len(rng));
    if v4 && rng.gen_bool(0.3) {
        return p.with_ipv4_frag_field(0x4000); // DF alone is not a fragment
    }
    p
}

fn random_icmp_other(rng: &mut impl Rng, s: IpAddr, d: IpAddr) -> Packet {
    const V4: [u8; 9] = [3, 4, 5, 11, 12, 13, 14, 9, 10];
    const V6: [u8; 10] = [1, 2, 3, 4, 130, 131, 133, 134, 135, 136];
    let types: &[u8] = if s.is_ipv4() { &V4 } else { &V6 };
    let t = types[rng.gen_range(0..types.len())];
    Packet::icmp(s, d, t, rng.gen_range(0..4), rng.gen())
}

fn random_portless(rng: &mut impl Rng, v4: bool) -> u8 {
    // 0 is only a protocol on v4 (on v6 it is hop-by-hop); 59 = no next header.
    const V4: [u8; 8] = [0, 4, 41, 47, 50, 89, 103, 255];
    const V6: [u8; 8] = [4, 41, 47, 50, 59, 89, 103, 255];
    let list = if v4 { V4 } else { V6 };
    list[rng.gen_range(0..list.len())]
}

/// Adds a structural twist, then a length trick, padding and/or a bad version.
fn edge_case(rng: &mut impl Rng, p: Packet) -> Packet {
    let p = structural_twist(rng, p);
    let p = length_trick(rng, p);
    let p = maybe_padding(rng, p);
    if rng.gen_bool(0.05) {
        let v = [0u8, 1, 2, 3, 5, 7, 8, 9, 15][rng.gen_range(0..9)];
        return p.with_version(v);
    }
    p
}

fn structural_twist(rng: &mut impl Rng, p: Packet) -> Packet {
    match rng.gen_range(0..10) {
        0..=2 if p.is_v4() && rng.gen_bool(0.5) => p.with_ipv4_options(4 * rng.gen_range(1..=10)),
        0..=2 if p.is_v4() => p.with_ipv4_option_bytes(&random_v4_options(rng)),
        0..=2 => random_ext_chain(rng, p),
        3 | 4 => random_fragment(rng, p),
        5 => short_l4(rng, p),
        6 => cross_family_icmp(rng, p),
        _ => p,
    }
}

/// 1..8 extension headers, sometimes a fragment header last.
fn random_ext_chain(rng: &mut impl Rng, mut p: Packet) -> Packet {
    for _ in 0..rng.gen_range(1..=8) {
        p = match rng.gen_range(0..5) {
            0 => p.with_ipv6_ext_header(0, rng.gen_range(0..=3)),
            1 => p.with_ipv6_ext_header(43, rng.gen_range(0..=3)),
            2 => p.with_ipv6_ext_header(60, rng.gen_range(0..=3)),
            3 => p.with_ipv6_ext_header(51, rng.gen_range(1..=6)),
            _ => p.with_ipv6_ext_header(44, 0),
        };
    }
    if rng.gen_bool(0.2) {
        return random_fragment(rng, p);
    }
    p
}

fn random_fragment(rng: &mut impl Rng, p: Packet) -> Packet {
    if rng.gen_bool(0.4) {
        return p.as_fragment_at(0, true);
    }
    p.as_fragment_at(rng.gen_range(1..8192), rng.gen())
}

/// An L4 header shorter than the protocol's minimum, lengths consistent.
fn short_l4(rng: &mut impl Rng, mut p: Packet) -> Packet {
    let keep = rng.gen_range(0..l4_min(p.proto).unwrap_or(8));
    p.l4.truncate(keep);
    p.note(format!("l4={keep}"))
}

/// ICMP of the other family (1 over v6, 58 over v4): not ICMP, no fields.
fn cross_family_icmp(rng: &mut impl Rng, p: Packet) -> Packet {
    let proto = if p.is_v4() { PROTO_ICMPV6 } else { PROTO_ICMP };
    let mut body = vec![rng.gen(), 0, 0, 0];
    body.extend(rng.gen::<u32>().to_be_bytes());
    Packet::raw_l4(p.src, p.dst, proto, body).with_payload(rng.gen_range(0..16))
}

fn length_trick(rng: &mut impl Rng, p: Packet) -> Packet {
    let real = p.real_len();
    match rng.gen_range(0..10) {
        0..=2 => {
            let n = pick_boundary(rng, &p);
            p.truncated_to(n)
        }
        3 => {
            let n = pick_boundary(rng, &p);
            p.cut_to(n)
        }
        4 if p.is_v4() => p.with_ihl(rng.gen_range(0..16)),
        5 => {
            let v = match rng.gen_range(0..4) {
                0 => 0,
                1 => rng.gen_range(0..real.min(65535)) as u16,
                2 => (real + rng.gen_range(1..64)).min(65535) as u16,
                _ => 65535,
            };
            p.with_len_field(v)
        }
        _ => p,
    }
}

/// A truncation point at an interesting boundary (header ends +-1, L4 minimums).
fn pick_boundary(rng: &mut impl Rng, p: &Packet) -> usize {
    let fixed = p.fixed_hdr();
    let mut b = vec![0, 1, fixed - 1, fixed, fixed + 1];
    let mut off = V6_HDR;
    for e in p.exts.iter().filter(|_| !p.is_v4()) {
        b.extend([off + 1, off + 2, off + 3, off + 4, off + e.size() - 1]);
        off += e.size();
    }
    let l4 = p.l4_offset();
    b.extend([l4 - 1, l4]);
    b.extend([1, 3, 4, 7, 8, 11, 12, 19].map(|k| l4 + k));
    b.push(p.real_len() - 1);
    let real = p.real_len();
    b.retain(|&n| n < real);
    if b.is_empty() || rng.gen_bool(0.1) {
        return rng.gen_range(0..real);
    }
    b[rng.gen_range(0..b.len())]
}

/// Trailing garbage, when the description can still model the result.
fn maybe_padding(rng: &mut impl Rng, p: Packet) -> Packet {
    if !rng.gen_bool(0.35) {
        return p;
    }
    let n = rng.gen_range(1..=64);
    let candidate = p
        .clone()
        .with_padding_bytes((0..n).map(|_| rng.gen()).collect());
    if candidate.unmodelled().is_none() {
        return candidate;
    }
    p
}
