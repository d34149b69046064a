//! The body of the packet-level differential fuzzer (fuzz/, target
//! `packet_diff`): one input is a policy and a sequence of packets, each
//! run through the real ingress or egress program with BPF_PROG_TEST_RUN
//! and judged by the reference parser ([`crate::reference_parse`]) and
//! evaluator ([`Differential`]); any disagreement (verdict, counters, deny
//! entries, malformed count) panics. bpf-tests/tests/packet_diff_regressions.rs
//! replays fuzz/regressions/packet_diff/ through the same function.
//!
//! Input layout (bytes missing at the end read as the input's end):
//! - 1 byte: the policy's seed, bit 0 of the next byte: link-local control
//!   traffic judged by the policy (else allowed), bits 1..7 the number of
//!   rules (1 + n % 60): 256 × 120 first policies, so that most inputs the
//!   fuzzer derives from another keep its policy, which then stays applied
//!   (an apply costs as much as a few thousand packets);
//! - 8 bytes: the seed of everything else drawn at random (packets, later
//!   policies);
//! - then operations, one byte each (bit 0: ingress or egress; bits 1..7
//!   the kind, see [`op_of`]) with the operands some kinds read.

use std::{
    cell::RefCell,
    net::{IpAddr, Ipv6Addr},
    sync::atomic::{AtomicU64, Ordering},
};

use rand::{rngs::StdRng, Rng, SeedableRng};
use wgbpf::policy::model::{LinkLocal, Policy};
use wgbpf_common::{DIR_EGRESS, DIR_INGRESS, PROTO_ICMP, PROTO_ICMPV6};

use crate::{
    differential::{load_options, Differential},
    harness::{meta_of_bytes, Harness},
    packets::{random_frame, Packet, Pools},
    policies::{pools_for, random_policy},
    traffic::{random_frame_addr, Related},
};

/// Packets one input may send at most (keeps an input's time bounded).
pub const MAX_PACKETS: usize = 4096;
/// Packets of a burst.
const BURST: usize = 16;
/// New policies one input may apply at most.
const MAX_POLICIES: usize = 2;
/// IP bytes of a raw packet at most.
const MAX_RAW: usize = 1500;
/// Peers of every policy (indexes 1..=PEERS).
const PEERS: usize = 12;

/// Packets run through the programs by this process (the long run reports
/// packets, not inputs).
pub static PACKETS: AtomicU64 = AtomicU64::new(0);

/// The programs, and the first policy an input asked for with the version
/// it was applied as, while it is still the active one.
struct Loaded {
    h: Harness,
    applied: Option<((u8, u8), u32)>,
}

thread_local! {
    static LOADED: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

/// What an operation byte asks for (bits 1..7, see [`op_of`]).
#[derive(Clone, Copy, Debug)]
enum Op {
    /// A packet of the random generator (well formed ~70 %, the rest edge
    /// cases: options, extension chains, fragments, truncations, lies).
    Fresh,
    /// [`BURST`] packets, each fresh or related, drawn at random.
    Burst,
    /// Related to an earlier one: a reply, a retransmission, an ICMP error
    /// about it, fragments of a datagram like it.
    Related,
    /// A fresh or related packet with bytes overwritten or cut by the input.
    Mutated,
    /// IP bytes straight from the input.
    Raw,
    /// IP bytes from the input with addresses of the policy written in.
    RawPooled,
    /// An IPv6 packet behind an extension chain the input spells out.
    ExtChain,
    /// An ICMP or ICMPv6 error quoting the input's choice of packet.
    IcmpError,
    /// A new policy over the same peers (flows are re-checked).
    NewPolicy,
    /// The previous frame again.
    Again,
}

/// Mostly generated packets (one byte each), now and then raw bytes.
fn op_of(byte: u8) -> Op {
    match byte >> 1 {
        0..=19 => Op::Burst,
        20..=59 => Op::Fresh,
        60..=89 => Op::Related,
        90..=104 => Op::Mutated,
        105..=108 => Op::Raw,
        109..=112 => Op::RawPooled,
        113..=118 => Op::ExtChain,
        119..=124 => Op::IcmpError,
        125 => Op::NewPolicy,
        _ => Op::Again,
    }
}

/// A raw packet's length from one byte: mostly short (up to 191 bytes),
/// sometimes up to [`MAX_RAW`].
fn raw_len(b: u8) -> usize {
    match b {
        0..=191 => usize::from(b),
        _ => (usize::from(b - 192) * 24).min(MAX_RAW),
    }
}

/// The input, read front to back.
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }
    fn byte_or0(&mut self) -> u8 {
        self.byte().unwrap_or(0)
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte_or0(), self.byte_or0()])
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let (b, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        b
    }
}

/// An Ethernet frame around `ip`, typed by its version nibble.
fn ether(ip: &[u8]) -> Vec<u8> {
    let ethertype: u16 = match ip.first().map(|b| b >> 4) {
        Some(4) => 0x0800,
        Some(6) => 0x86dd,
        _ => 0x88b5,
    };
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(ip);
    f
}

fn policy(rng: &mut StdRng, rules: usize, link_local: LinkLocal) -> Policy {
    let mut p = random_policy(rng, PEERS, rules);
    p.link_local = link_local;
    p
}

/// The policy's pools, and link-local and multicast addresses for the
/// control traffic the policy may let through.
fn pools(policy: &Policy) -> Pools {
    let mut pools = pools_for(policy);
    pools.v6.extend(
        ["fe80::1", "fe80::2", "ff02::1", "ff02::1:ff00:2", "::"]
            .map(|a| a.parse::<Ipv6Addr>().unwrap()),
    );
    pools
}

/// Loads the programs for [`run`] on this thread, if not yet loaded (the
/// verifier takes seconds: the fuzz target does it before its first input).
pub fn load() {
    LOADED.with(|cell| {
        cell.borrow_mut().get_or_insert_with(|| Loaded {
            h: Harness::with_options(load_options()).expect("loading the programs (root?)"),
            applied: None,
        });
    });
}

/// Runs one input through the programs loaded by [`load`] (at the first
/// call if need be).
pub fn run(data: &[u8]) {
    load();
    LOADED.with(|cell| {
        let mut cell = cell.borrow_mut();
        let l = cell.as_mut().expect("loaded");
        l.applied = run_applied(&mut l.h, data, l.applied);
    });
}

/// Runs one input through `h`, whose traffic state it clears first.
pub fn run_with(h: &mut Harness, data: &[u8]) {
    run_applied(h, data, None);
}

/// [`run_with`], knowing which first policy `h` has applied (if any) and
/// as which version; returns what is applied after the input.
fn run_applied(
    h: &mut Harness,
    data: &[u8],
    applied: Option<((u8, u8), u32)>,
) -> Option<((u8, u8), u32)> {
    let mut input = Input { data };
    let (policy_seed, flags) = (input.byte_or0(), input.byte_or0());
    let seed = u64::from_le_bytes(std::array::from_fn(|_| input.byte_or0()));
    let mut rng = StdRng::seed_from_u64(seed);
    let link_local = if flags & 1 == 1 {
        LinkLocal::Policy
    } else {
        LinkLocal::Allow
    };
    let rules = 1 + usize::from(flags >> 1) % 60;
    h.clear_traffic(PEERS as u32).expect("clearing the tables");
    let first = policy(
        &mut StdRng::seed_from_u64(policy_seed.into()),
        rules,
        link_local,
    );
    let mut pools = pools(&first);
    let key = (policy_seed, flags);
    let version = match applied {
        Some((k, version)) if k == key => version,
        _ => h.apply(&first).expect("apply").version,
    };
    let mut diff = Differential::resume(h, first, version).expect("counters");
    let mut now_applied = Some((key, version));
    let mut policies = 0;
    let mut related = Related::default();
    let mut last: Option<Vec<u8>> = None;
    while let Some(op) = input.byte() {
        if diff.mix.total as usize >= MAX_PACKETS {
            break;
        }
        let dir = if op & 1 == 0 { DIR_INGRESS } else { DIR_EGRESS };
        let gw: Vec<IpAddr> = diff.model.policy().local.iter().map(|n| n.addr()).collect();
        let (frame, label) = match op_of(op) {
            Op::Burst => {
                for _ in 0..BURST {
                    let frame = match rng.gen_bool(0.5) {
                        true => related.next(&mut rng, &gw, &pools),
                        false => None,
                    }
                    .unwrap_or_else(|| random_frame(&mut rng, &pools));
                    let dir = if rng.gen() { DIR_INGRESS } else { DIR_EGRESS };
                    one(h, &mut diff, &mut related, dir, frame.bytes, "burst");
                }
                continue;
            }
            Op::Fresh => (random_frame(&mut rng, &pools).bytes, "fresh"),
            Op::Related => match related.next(&mut rng, &gw, &pools) {
                Some(f) => (f.bytes, "related"),
                None => (random_frame(&mut rng, &pools).bytes, "fresh"),
            },
            Op::Mutated => {
                let base = match rng.gen_bool(0.5) {
                    true => related.next(&mut rng, &gw, &pools),
                    false => None,
                }
                .unwrap_or_else(|| random_frame(&mut rng, &pools));
                (mutate(base.bytes, &mut input), "mutated")
            }
            Op::Raw => {
                let n = raw_len(input.byte_or0());
                (ether(input.bytes(n)), "raw")
            }
            Op::RawPooled => {
                let n = raw_len(input.byte_or0());
                let mut ip = input.bytes(n).to_vec();
                pooled_addresses(&mut ip, &mut rng, &pools);
                (ether(&ip), "raw, pooled addresses")
            }
            Op::ExtChain => (ext_chain(&mut input, &mut rng, &pools), "extension chain"),
            Op::IcmpError => {
                let quoted = match input.byte_or0() % 3 {
                    0 => last.clone(),
                    1 => related.next(&mut rng, &gw, &pools).map(|f| f.bytes),
                    _ => None,
                }
                .unwrap_or_else(|| random_frame(&mut rng, &pools).bytes);
                (
                    icmp_error(&quoted, &mut input, &mut rng, &pools),
                    "ICMP error",
                )
            }
            // Rarely (the next byte 0xa5), at most twice an input: an apply
            // costs as much as thousands of packets.
            Op::NewPolicy if input.byte_or0() == 0xa5 && policies < MAX_POLICIES => {
                policies += 1;
                let rules = rng.gen_range(1..60);
                let p = policy(&mut rng, rules, link_local);
                pools = self::pools(&p);
                diff.set_policy(h, p).expect("apply");
                now_applied = None;
                continue;
            }
            Op::NewPolicy => (random_frame(&mut rng, &pools).bytes, "fresh"),
            Op::Again => match &last {
                Some(f) => (f.clone(), "again"),
                None => continue,
            },
        };
        one(h, &mut diff, &mut related, dir, frame.clone(), label);
        last = Some(frame);
    }
    diff.check_maps(h);
    now_applied
}

/// One frame through the kernel and the model; what passed and first
/// fragments are kept to draw related traffic from.
fn one(
    h: &Harness,
    diff: &mut Differential,
    related: &mut Related,
    dir: usize,
    frame: Vec<u8>,
    label: &str,
) {
    let view = meta_of_bytes(&frame);
    PACKETS.fetch_add(1, Ordering::Relaxed);
    if let Some(out) = diff.packet(h, dir, &frame, view.clone(), label) {
        let (m, _) = view.expect("judged packets have a view");
        if let Some(f) = m.frag.filter(|f| f.first) {
            related.firsts.push((m.clone(), f.id));
        }
        if out.verdict.passes() {
            related.passed.push(m);
        }
    }
}

/// Up to 8 edits, 3 bytes each: a position (high bit: cut the frame there
/// instead) and a byte to write at it, inside the IP packet.
fn mutate(mut frame: Vec<u8>, input: &mut Input) -> Vec<u8> {
    let edits = 1 + input.byte_or0() % 8;
    for _ in 0..edits {
        let (pos, value) = (input.u16(), input.byte_or0());
        let ip_len = frame.len() - 14;
        if ip_len == 0 {
            break;
        }
        let at = 14 + usize::from(pos & 0x7fff) % ip_len;
        if pos & 0x8000 != 0 {
            frame.truncate(at);
        } else {
            frame[at] = value;
        }
    }
    frame
}

/// Writes pool addresses over the source and destination of an IPv4 or
/// IPv6 header long enough to hold them.
fn pooled_addresses(ip: &mut [u8], rng: &mut StdRng, pools: &Pools) {
    let (v4, at) = match ip.first().map(|b| b >> 4) {
        Some(4) if ip.len() >= 20 => (true, [12, 16]),
        Some(6) if ip.len() >= 40 => (false, [8, 24]),
        _ => return,
    };
    for at in at {
        match random_frame_addr(rng, pools, v4) {
            IpAddr::V4(a) => ip[at..at + 4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => ip[at..at + 16].copy_from_slice(&a.octets()),
        }
    }
}

/// An IPv6 packet (TCP, UDP, SCTP, ICMPv6 or a protocol without ports)
/// behind 0..8 extension headers the input chooses: hop-by-hop, routing
/// (with or without segments left), destination options, AH, fragment;
/// now and then a fragment header last, at an offset the input chooses.
fn ext_chain(input: &mut Input, rng: &mut StdRng, pools: &Pools) -> Vec<u8> {
    let src = random_frame_addr(rng, pools, false);
    let dst = random_frame_addr(rng, pools, false);
    let port = |rng: &mut StdRng| pools.ports[rng.gen_range(0..pools.ports.len())];
    let mut p = match input.byte_or0() % 6 {
        0 => Packet::tcp_flags(src, dst, port(rng), port(rng), rng.gen()),
        1 => Packet::udp(src, dst, port(rng), port(rng)),
        2 => Packet::sctp(src, dst, port(rng), port(rng)),
        3 => Packet::icmp_echo_request(src, dst, rng.gen()),
        4 => Packet::icmp(src, dst, rng.gen_range(128..=143), 0, rng.gen()),
        _ => Packet::raw_proto(src, dst, [59, 4, 47, 50, 17][rng.gen_range(0..5)]),
    }
    .with_payload(usize::from(input.byte_or0()) % 64);
    let n = input.byte_or0() % 9;
    for _ in 0..n {
        let b = input.byte_or0();
        let len = (b >> 3) % 4;
        p = match b % 6 {
            0 => p.with_ipv6_ext_header(0, len),
            1 => p.with_ipv6_ext_header(43, len),
            2 => p.with_ipv6_routing_header(b >> 5, (b >> 3) & 3),
            3 => p.with_ipv6_ext_header(60, len),
            4 => p.with_ipv6_ext_header(51, len + 1),
            _ => p.with_ipv6_ext_header(44, 0),
        };
    }
    if input.byte_or0().is_multiple_of(4) {
        let field = input.u16();
        p = p
            .as_fragment_at(field >> 3, field & 1 == 1)
            .with_frag_id(u32::from(input.byte_or0() % 6));
    }
    p.build().bytes
}

/// An ICMP (IPv4) or ICMPv6 error whose body quotes the IP bytes of
/// `quoted` (cut to the input's length), from and to the quoted packet's
/// ends (so that it may belong to its flow) or pool addresses; error types
/// and, now and then, other types.
fn icmp_error(quoted: &[u8], input: &mut Input, rng: &mut StdRng, pools: &Pools) -> Vec<u8> {
    let ip = &quoted[14.min(quoted.len())..];
    let v4 = match ip.first().map(|b| b >> 4) {
        Some(4) if ip.len() >= 20 => true,
        Some(6) if ip.len() >= 40 => false,
        _ => rng.gen(),
    };
    let addr = |at: usize, n: usize| -> Option<IpAddr> {
        let b = ip.get(at..at + n)?;
        Some(match n {
            4 => IpAddr::from(<[u8; 4]>::try_from(b).unwrap()),
            _ => IpAddr::from(<[u8; 16]>::try_from(b).unwrap()),
        })
    };
    let (qsrc, qdst) = if v4 {
        (addr(12, 4), addr(16, 4))
    } else {
        (addr(8, 16), addr(24, 16))
    };
    let choice = input.byte_or0();
    let mut pick = |quoted_end: Option<IpAddr>, bit: u8| match quoted_end {
        Some(a) if choice & bit == 0 && a.is_ipv4() == v4 => a,
        _ => random_frame_addr(rng, pools, v4),
    };
    // An error about a packet goes from its destination (or a router) back
    // to its source.
    let from = pick(qdst, 1);
    let to = pick(qsrc, 2);
    let (proto, types): (u8, &[u8]) = if v4 {
        (PROTO_ICMP, &[3, 11, 12, 3, 11, 12, 0, 8, 5])
    } else {
        (PROTO_ICMPV6, &[1, 2, 3, 4, 1, 2, 3, 4, 128, 129, 135])
    };
    let icmp_type = types[usize::from(choice >> 2) % types.len()];
    let cut = usize::from(input.u16()) % (ip.len() + 1);
    let mut l4 = vec![icmp_type, input.byte_or0(), 0, 0, 0, 0, 5, 0];
    l4.extend_from_slice(&ip[..cut]);
    Packet::raw_l4(from, to, proto, l4).build().bytes
}
