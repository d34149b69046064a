//! Header parsing by direct packet access: every read is bounds-checked
//! against the end of the packet's linear data (which the verifier
//! enforces), so a truncated header is an error, never a read of garbage.
//! Anything we cannot parse is dropped as malformed.

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_ktime_get_ns, bpf_skb_load_bytes},
    programs::TcContext,
};
use wgbpf_common::{
    Addr, FlowKey, FragPending, ICMPV6_ECHO_REQUEST, ICMP_ECHO_REQUEST, PROTO_ICMP, PROTO_ICMPV6,
    PROTO_SCTP, PROTO_TCP, PROTO_UDP,
};

use crate::view::View;

/// What the policy and the flow table need to know about a packet.
pub struct Packet {
    pub src: Addr,
    pub dst: Addr,
    pub proto: u8,
    /// A fragment other than the first: its ports are unknown. (A first
    /// fragment is parsed and judged as a whole packet is; what makes it
    /// one is in `FragPending`, out of the verifier's sight.)
    pub fragment: bool,
    pub sport: u16,
    pub dport: u16,
    /// The policy's "port" is known: TCP, UDP or SCTP ports, or the type of
    /// ICMP in IPv4 or ICMPv6 in IPv6 (the other combinations are not ICMP),
    /// in a packet that is no later fragment.
    pub ported: bool,
    /// ICMP/ICMPv6 message type (0 for other protocols).
    pub icmp_type: u8,
    /// ICMP echo identifier.
    pub icmp_id: u16,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
    /// Bytes from the IP header on.
    pub len: u32,
    /// For an ICMP error about a packet of a live flow, sent back to that
    /// packet's sender: the flow entry as parsing found it.
    pub related: bool,
    /// ... and the error comes from the quoted packet's destination (the
    /// flow's far end).
    pub related_far_end: bool,
    /// The related flow's policy version, verdict and rule.
    pub related_version: u32,
    pub related_rule: u32,
    pub related_severity: u8,
}

/// IPv6 extension headers walked before giving up (as malformed).
const MAX_EXT_HEADERS: usize = 6;

/// Headers must lie in the first bytes of a packet; a non-linear packet is
/// pulled this far (or whole, if shorter) before parsing.
const PULL: usize = 512;

pub struct Malformed;

/// Bounds-checked reads of the packet's linear data.
#[derive(Clone, Copy)]
struct Bytes {
    start: usize,
    end: usize,
}

impl Bytes {
    #[inline(always)]
    fn of(ctx: &TcContext) -> Self {
        Bytes {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }

    /// `N` bytes at `off`, checked once: fields are then read at constant
    /// offsets inside the view. (One check per header keeps the compiler
    /// from merging bounds in ways the verifier cannot follow.)
    #[inline(always)]
    fn view<const N: usize>(&self, off: usize) -> Result<View<N>, Malformed> {
        let p = self.start + off;
        if p + N > self.end {
            return Err(Malformed);
        }
        Ok(View(p))
    }
}

/// Writes the packet's headers at `l2` into `out`; on `false` (malformed)
/// `out` is left as it was. A separate BPF function writing into the
/// caller's frame keeps its locals off the caller's stack.
#[inline(always)]
pub fn parse(
    ctx: &TcContext,
    l2: usize,
    out: &mut core::mem::MaybeUninit<Packet>,
    frag: *mut FragPending,
) -> bool {
    let len = ctx.len() as usize;
    let want = if len < PULL { len } else { PULL };
    if ctx.data_end() - ctx.data() < want {
        // Non-linear: bring the headers into the linear part first.
        let _ = ctx.pull_data(want as u32);
    }
    let b = Bytes::of(ctx);
    // Bounded for the verifier (0 on WireGuard, 14 under test).
    let l2 = l2 & 0x3f;
    // From the skb's length, not from data_end - data: a bound the compiler
    // could derive from the pointers would let it drop checks the verifier
    // needs to see.
    let avail = len.wrapping_sub(l2);
    let Ok(first) = b.view::<2>(l2) else {
        return false;
    };
    let first = first.u8(0);
    let parsed = match first >> 4 {
        4 => parse_v4(ctx, &b, l2, avail, frag),
        6 => parse_v6(&b, l2, avail, frag),
        _ => Err(Malformed),
    };
    match parsed {
        Ok(p) => {
            out.write(p);
            true
        }
        Err(_) => false,
    }
}

#[inline(always)]
fn parse_v4(
    ctx: &TcContext,
    b: &Bytes,
    l2: usize,
    avail: usize,
    frag: *mut FragPending,
) -> Result<Packet, Malformed> {
    let h = b.view::<20>(l2)?;
    let ihl = ((h.u8(0) & 0x0f) as usize) * 4;
    let total = h.be16(2) as usize;
    if ihl < 20 || total < ihl || total > avail {
        return Err(Malformed);
    }
    let field = h.be16(6);
    // Stored whatever they are: no branch on them here (see FragPending).
    unsafe {
        (*frag).more = (field & 0x2000) as u32;
        (*frag).key.id = h.be16(4) as u32;
        (*frag).len = (total - ihl) as u32;
    }
    let mut p = Packet {
        src: h.v4_addr(12),
        dst: h.v4_addr(16),
        proto: h.u8(9),
        fragment: false,
        sport: 0,
        dport: 0,
        ported: false,
        icmp_type: 0,
        icmp_id: 0,
        tcp_flags: 0,
        len: total as u32,
        related: false,
        related_far_end: false,
        related_version: 0,
        related_rule: 0,
        related_severity: 0,
    };
    // Options were checked before parsing (`v4_options_ok`); here they are
    // skipped by the header length.
    let offset = field & 0x1fff;
    if offset != 0 {
        // A later fragment: what follows is payload, not headers.
        return later_fragment(p, (offset as u32) << 3, frag);
    }
    parse_l4(b, l2 + ihl, total - ihl, PROTO_ICMP, &mut p)?;
    Ok(p)
}

/// The options of an IPv4 packet at `l2` (true for anything else, and for
/// IPv4 without options): false for a loose or strict source route (a
/// packet judged as addressed to one host must not carry a route onward)
/// or an option length the kernel's own parser refuses. Called before
/// parsing, as a BPF function of its own that reads the header afresh and
/// walks a copy of the options on its own stack: whatever it learns stays
/// out of the parser's state, so the rest is verified once.
#[inline(never)]
pub fn v4_options_ok(ctx: &TcContext, l2: usize) -> bool {
    let l2 = l2 & 0x3f;
    // The same bounds check as the parser's (a form the verifier follows
    // for l2 = 0 as for 14).
    let Ok(first) = Bytes::of(ctx).view::<2>(l2) else {
        return true; // the parser refuses it
    };
    let vihl = first.u8(0);
    if vihl >> 4 != 4 {
        return true;
    }
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl <= 20 {
        return true;
    }
    let off = l2 + 20;
    let len = ihl - 20;
    // Re-read so the compiler keeps the bounds the verifier must see.
    let len = unsafe { core::ptr::read_volatile(&len) } & 0x3f;
    if len == 0 {
        return true;
    }
    if len > 40 {
        return false;
    }
    // 64 bytes so that every index below, masked, is in bounds.
    let mut buf = [0u8; 64];
    // The helper's length must be provably non-zero to 6.1's verifier,
    // which does not carry `len != 0` from the test above to the call (the
    // compiler merges the two tests). Re-derived from a value the compiler
    // cannot see through, it is 1..=64 to any verifier, and still `len`.
    let n = ((unsafe { core::ptr::read_volatile(&len) }.wrapping_sub(1)) & 63) + 1;
    let copied = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            off as u32,
            buf.as_mut_ptr() as *mut c_void,
            n as u32,
        )
    };
    if copied != 0 {
        return false;
    }
    // One option per round (the verifier walks each round on its own, so
    // the rounds are kept short and few): a header with more than
    // `V4_OPTION_ROUNDS` options (NOPs included) is refused as malformed;
    // real ones carry one or two.
    let mut i = 0usize;
    for _ in 0..V4_OPTION_ROUNDS {
        if i >= len {
            return true;
        }
        let kind = buf[i & 63];
        let olen = buf[(i + 1) & 63] as usize;
        let step = match kind {
            EOL => return true,
            NOP => 1,
            LSRR | SSRR => return false,
            _ if olen < 2 || i + 1 >= len => return false,
            _ => olen,
        };
        i += step;
        if i > len {
            return false;
        }
    }
    // Options left after the last round: too many to check.
    i >= len
}

/// IPv4 options checked per header at most (see `v4_options_ok`).
const V4_OPTION_ROUNDS: usize = 8;

/// IPv4 option kinds: end of list, no operation.
const EOL: u8 = 0;
const NOP: u8 = 1;
/// IPv4 loose and strict source route options.
const LSRR: u8 = 0x83;
const SSRR: u8 = 0x89;
/// IPv6 routing header type 2 (Mobile IPv6: one address, the node's own).
const ROUTING_TYPE_MOBILE: u8 = 2;

#[inline(always)]
fn parse_v6(
    b: &Bytes,
    l2: usize,
    avail: usize,
    frag: *mut FragPending,
) -> Result<Packet, Malformed> {
    let h = b.view::<40>(l2)?;
    let payload = h.be16(4) as usize;
    // A zero payload length means a jumbogram: never valid on a tunnel.
    if payload == 0 || 40 + payload > avail {
        return Err(Malformed);
    }
    let mut p = Packet {
        src: h.v6_addr(8),
        dst: h.v6_addr(24),
        proto: 0,
        fragment: false,
        sport: 0,
        dport: 0,
        ported: false,
        icmp_type: 0,
        icmp_id: 0,
        tcp_flags: 0,
        len: (40 + payload) as u32,
        related: false,
        related_far_end: false,
        related_version: 0,
        related_rule: 0,
        related_severity: 0,
    };
    // IPv4-mapped addresses never belong on the wire (RFC 4291 2.5.5.2), and
    // here they would alias IPv4 identities in the shared trie.
    if is_v4_mapped(&p.src) || is_v4_mapped(&p.dst) {
        return Err(Malformed);
    }
    let end = l2 + 40 + payload;
    let mut off = l2 + 40;
    let mut nh = h.u8(6);
    let mut done = false;
    unsafe { (*frag).more = 0 };
    for _ in 0..MAX_EXT_HEADERS {
        match nh {
            43 => {
                // A route still to follow is refused, as IPv4 source routes.
                let e = b.view::<4>(off)?;
                if e.u8(3) != 0 && e.u8(2) != ROUTING_TYPE_MOBILE {
                    return Err(Malformed);
                }
                nh = e.u8(0);
                off += (e.u8(1) as usize + 1) * 8;
            }
            0 | 60 => {
                let e = b.view::<2>(off)?;
                nh = e.u8(0);
                off += (e.u8(1) as usize + 1) * 8;
            }
            51 => {
                let e = b.view::<2>(off)?;
                nh = e.u8(0);
                off += (e.u8(1) as usize + 2) * 4;
            }
            44 => {
                let e = b.view::<8>(off)?;
                let field = e.be16(2);
                nh = e.u8(0);
                off += 8;
                if off > end {
                    return Err(Malformed);
                }
                unsafe {
                    (*frag).key.id = ((e.be16(4) as u32) << 16) | e.be16(6) as u32;
                    (*frag).len = (end - off) as u32;
                }
                if field >> 3 != 0 {
                    // A later fragment: what follows is payload, not headers.
                    p.fragment = true;
                    unsafe { (*frag).len = (field & 0xfff8) as u32 };
                    done = true;
                    break;
                }
                if !matches!(nh, 0 | 43 | 44 | 51 | 60) {
                    // The upper-layer header follows: judged by its ports
                    // as a whole packet is. M set: a first fragment; else
                    // an atomic fragment (RFC 6946), a whole packet.
                    unsafe { (*frag).more = (field & 1) as u32 };
                    done = true;
                    break;
                }
                // More extension headers after a first fragment's fragment
                // header (RFC 8200 allows destination options and AH
                // there): malformed. Walking them would give first
                // fragments paths of their own through the rest of the
                // program, beyond what the verifier allows on Linux 6.1.
                return Err(Malformed);
            }
            _ => {
                done = true;
                break;
            }
        }
        if off > end {
            return Err(Malformed);
        }
    }
    if !done {
        return Err(Malformed);
    }
    p.proto = nh;
    if p.fragment {
        let at = unsafe { (*frag).len };
        return later_fragment(p, at, frag);
    }
    parse_l4(b, off, end - off, PROTO_ICMPV6, &mut p)?;
    Ok(p)
}

/// A later fragment at byte `offset` of its datagram. One that starts
/// inside the smallest header its protocol can have (TCP 20 bytes, SCTP
/// 12) is malformed: it could only rewrite a header that was already
/// judged (RFC 1858's overlapping fragment attack); later fragments of
/// other protocols start at 8 bytes or more, past every port.
#[inline(always)]
fn later_fragment(mut p: Packet, offset: u32, frag: *mut FragPending) -> Result<Packet, Malformed> {
    let min = match p.proto {
        PROTO_TCP => 20,
        PROTO_SCTP => 12,
        _ => 0,
    };
    if offset < min {
        return Err(Malformed);
    }
    p.fragment = true;
    unsafe { (*frag).len = offset };
    Ok(p)
}

#[inline(always)]
fn is_v4_mapped(a: &Addr) -> bool {
    a[..10] == [0u8; 10] && a[10] == 0xff && a[11] == 0xff
}

/// Reads ports or the ICMP type; `room` is what the IP header says is left,
/// `icmp` the family's ICMP (the other one is a portless protocol here).
/// A header shorter than its protocol's minimum is malformed.
#[inline(always)]
fn parse_l4(b: &Bytes, off: usize, room: usize, icmp: u8, p: &mut Packet) -> Result<(), Malformed> {
    match p.proto {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => {
            let min = match p.proto {
                PROTO_TCP => 20,
                PROTO_UDP => 8,
                _ => 12,
            };
            if room < min {
                return Err(Malformed);
            }
            let ports = b.view::<4>(off)?;
            p.sport = ports.be16(0);
            p.dport = ports.be16(2);
            p.ported = true;
            if p.proto == PROTO_TCP {
                // Within the 20 bytes `room` vouches for.
                p.tcp_flags = b.view::<14>(off)?.u8(13);
            }
        }
        proto if proto == icmp => {
            if room < 8 {
                return Err(Malformed);
            }
            let h = b.view::<8>(off)?;
            p.icmp_type = h.u8(0);
            p.icmp_id = h.be16(4);
            p.ported = true;
            if is_icmp_error(p.proto, p.icmp_type) {
                related(b, off + 8, room - 8, p);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Destination unreachable (incl. fragmentation needed / packet too big),
/// time exceeded, parameter problem: errors that quote the packet they are
/// about, and that a flow's sender needs (path MTU discovery among others).
#[inline(always)]
pub fn is_icmp_error(proto: u8, icmp_type: u8) -> bool {
    match proto {
        PROTO_ICMP => matches!(icmp_type, 3 | 11 | 12),
        PROTO_ICMPV6 => matches!(icmp_type, 1..=4),
        _ => false,
    }
}

/// Looks up the flow of the packet an ICMP error quotes, when the error
/// goes back to that packet's sender. The caller checks the version and
/// who sent the error.
#[inline(always)]
fn related(b: &Bytes, off: usize, room: usize, p: &mut Packet) {
    // The quoted tuple as it travelled: `a` its source, `b` its destination.
    let mut q = FlowKey {
        a: [0; 16],
        b: [0; 16],
        a_port: 0,
        b_port: 0,
        proto: 0,
        _pad: [0; 3],
    };
    if quoted(b, off, room, &mut q).is_err() || q.a != p.dst {
        return;
    }
    let (key, _) = FlowKey::of(&q.a, &q.b, q.a_port, q.b_port, q.proto);
    if let Some(entry) = crate::FLOWS.get_ptr(&key) {
        let entry = unsafe { &*entry };
        if unsafe { bpf_ktime_get_ns() } > entry.expires_ns {
            return;
        }
        p.related = true;
        p.related_far_end = q.b == p.src;
        p.related_version = entry.version;
        p.related_rule = entry.rule;
        p.related_severity = entry.severity;
    }
}

/// The tuple of the packet quoted in an ICMP error (`a` its source, `b` its
/// destination, not normalised), if its headers are there in full (IPv4 with options allowed; IPv6 without extension
/// headers). Anything else is simply not related to a flow.
#[inline(always)]
fn quoted(b: &Bytes, off: usize, room: usize, key: &mut FlowKey) -> Result<(), Malformed> {
    let first = b.view::<2>(off)?.u8(0);
    let (proto, hlen) = match first >> 4 {
        4 => {
            let h = b.view::<20>(off)?;
            let ihl = ((first & 0x0f) as usize) * 4;
            if ihl < 20 || h.be16(6) & 0x1fff != 0 {
                return Err(Malformed);
            }
            key.a = h.v4_addr(12);
            key.b = h.v4_addr(16);
            (h.u8(9), ihl)
        }
        6 => {
            let h = b.view::<40>(off)?;
            key.a = h.v6_addr(8);
            key.b = h.v6_addr(24);
            (h.u8(6), 40)
        }
        _ => return Err(Malformed),
    };
    if room < hlen + 8 {
        return Err(Malformed);
    }
    let l4 = b.view::<8>(off + hlen)?;
    let (sport, dport) = match proto {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => (l4.be16(0), l4.be16(2)),
        PROTO_ICMP if l4.u8(0) == ICMP_ECHO_REQUEST => (l4.be16(4), 0),
        PROTO_ICMPV6 if l4.u8(0) == ICMPV6_ECHO_REQUEST => (l4.be16(4), 0),
        _ => return Err(Malformed),
    };
    key.a_port = sport;
    key.b_port = dport;
    key.proto = proto;
    Ok(())
}
