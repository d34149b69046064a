//! Map keys, values and constants shared by wgbpf's eBPF programs and its
//! controller. Every layout the kernel sees is defined here once: both sides
//! compile this crate, so they cannot drift apart.
//!
//! All structs are `#[repr(C)]` with explicit padding fields (always zero):
//! the verifier refuses map keys built on the stack with uninitialised holes,
//! and the controller compares keys byte for byte.
#![no_std]

/// The one table of map names: `(constant in [`names`], name in the
/// object)`. [`names`] is made from it, and the eBPF crate declares its maps
/// through it (`wgbpf_common::for_each_map!(declare_maps)`), so a map's name
/// is written nowhere else. Order: pin order.
#[macro_export]
macro_rules! for_each_map {
    ($m:ident) => {
        $m! {
            ACTIVE = "WGBPF_ACTIVE",
            SLOT_CONFIG = "WGBPF_SLOT_CONFIG",
            IPCACHE = "WGBPF_IPCACHE",
            HOSTS = "WGBPF_HOSTS",
            POLICY = "WGBPF_POLICY",
            PORT_CLASS = "WGBPF_PORTCLASS",
            FLOWS = "WGBPF_FLOWS",
            PEER_COUNTERS = "WGBPF_PEER_COUNTERS",
            PEER_NAMES = "WGBPF_PEER_NAMES",
            DENIES = "WGBPF_DENIES",
            STATS = "WGBPF_STATS",
            EVENTS = "WGBPF_EVENTS",
            EVENT_BUCKET = "WGBPF_EVENT_BUCKET",
            EVENT_CONFIG = "WGBPF_EVENT_CONFIG",
            FLOW_BUDGET = "WGBPF_FLOW_BUDGET",
            FRAGS = "WGBPF_FRAGS",
            FRAG_PENDING = "WGBPF_FRAG_PENDING",
        }
    };
}

/// The XDP guard's layouts (a separate object from the TC programs).
pub mod xdp;

/// Map names, as the controller finds them in the object and pins them.
pub mod names {
    macro_rules! name_consts {
        ($($id:ident = $name:literal),* $(,)?) => {
            $(pub const $id: &str = $name;)*
            /// Every map the object defines, in pin order.
            pub const ALL_MAPS: &[&str] = &[$($name),*];
        };
    }
    for_each_map!(name_consts);

    /// Programs.
    pub const PROG_INGRESS: &str = "wgbpf_ingress";
    pub const PROG_EGRESS: &str = "wgbpf_egress";
    /// Global (in .rodata) set by the loader: bytes before the IP header.
    pub const L2_HDR_LEN: &str = "WGBPF_L2_HDR_LEN";
    /// The benchmark's reference program and its maps (ebpf/src/acl_probe.rs).
    pub const ACL_FLOOR: &str = "acl_floor";
    pub const ACL_PROBE: &str = "acl_probe";
    pub const ACL_PROBE_SOURCES: &str = "ACL_PROBE_SOURCES";
    pub const ACL_PROBE_PORTS: &str = "ACL_PROBE_PORTS";
    /// Global (in .rodata) set by the loader: flow lifetimes and budget.
    pub const FLOW_CONFIG: &str = "WGBPF_FLOW_CONFIG";
    /// aya-log's global (in .rodata) set by the loader: the programs' own
    /// log level, 0 = off (the verifier then drops the log calls as dead
    /// code), 1 error ... 5 trace; and the ring buffer the log goes to.
    pub const PROGRAM_LOG_LEVEL: &str = "AYA_LOG_LEVEL";
    pub const PROGRAM_LOG_RING: &str = "AYA_LOGS";
}

/// Default capacities, overridable by the loader.
pub mod capacity {
    /// Policy entries, both slots together (hash, not preallocated).
    pub const POLICY: u32 = 1 << 21;
    /// Prefixes in the address-to-identity trie, both slots together.
    pub const IPCACHE: u32 = 1 << 19;
    /// Single addresses (/32, /128), both slots together: a hash lookup is
    /// several times cheaper than the trie's walk.
    pub const HOSTS: u32 = 1 << 19;
    /// Tracked flows (LRU: the oldest are evicted, never refused).
    pub const FLOWS: u32 = 1 << 18;
    /// Peers with counters; index 0 is "not a peer".
    pub const PEERS: u32 = 1 << 14;
    /// Datagrams whose first fragment was seen (LRU: a flood of first
    /// fragments evicts the oldest entries; see `FlowConfig::fragment_ns`).
    pub const FRAGS: u32 = 1 << 14;
    /// Distinct (source peer, destination, protocol, port) deny keys (LRU).
    pub const DENIES: u32 = 1 << 16;
    /// Deny event ring buffer, bytes.
    pub const EVENTS_BYTES: u32 = 1 << 18;
}

/// Verdict severities. Combining matches takes the maximum: deny wins over
/// audit, audit over allow, allow over no match.
pub mod severity {
    pub const NONE: u8 = 0;
    pub const ALLOW: u8 = 1;
    /// Would be denied, but passes: audit mode.
    pub const AUDIT: u8 = 2;
    pub const DENY: u8 = 3;
}

/// Rule numbers that are not rules.
pub mod rule_id {
    /// No rule matched: the default deny decided.
    pub const DEFAULT: u32 = u32::MAX;
    /// The packet could not be parsed (truncated or malformed headers).
    pub const MALFORMED: u32 = u32::MAX - 1;
    /// Passed because it belongs to an established flow (reply or repeat)
    /// whose first packet the rule in the flow entry allowed.
    pub const FLOW: u32 = u32::MAX - 2;
    /// IPv6 link-local control traffic allowed by the policy's default
    /// (`SLOT_LINK_LOCAL_ALLOW`).
    pub const LINK_LOCAL: u32 = u32::MAX - 3;
}

/// Identity 0 is the wildcard in policy keys; 1 is "world": an address that
/// lies in no known prefix. Real identities start at 2.
pub const ID_ANY: u32 = 0;
pub const ID_WORLD: u32 = 1;
pub const ID_FIRST: u32 = 2;

/// Protocol 0 in a policy key means any protocol.
pub const PROTO_ANY: u8 = 0;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_SCTP: u8 = 132;

/// TCP flags the flow table reads.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// ICMP echo message types: an echo request opens a flow, its reply
/// belongs to it (the identifier stands in for the ports).
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;

/// Port class 0 means any port; 1 is the class every fragment gets (its
/// ports are unknown); specific classes start at 2.
pub const PORT_CLASS_ANY: u16 = 0;
pub const PORT_CLASS_FRAG: u16 = 1;
pub const PORT_CLASS_FIRST: u16 = 2;

/// Protocols whose packets carry a "port" the policy can match: the
/// destination port for TCP/UDP/SCTP, the message type for ICMP/ICMPv6.
/// The port-class array has one 65536-entry block per protocol, in this order.
pub const PORTED_PROTOS: [u8; 5] = [PROTO_TCP, PROTO_UDP, PROTO_SCTP, PROTO_ICMP, PROTO_ICMPV6];
/// Port-class entries of one slot; the array holds both slots, slot 1 after
/// slot 0.
pub const PORT_CLASS_ENTRIES: u32 = 65536 * PORTED_PROTOS.len() as u32;

/// Block index of a protocol in the port-class array, if it has ports.
#[inline(always)]
pub fn ported_proto_block(proto: u8) -> Option<u32> {
    match proto {
        PROTO_TCP => Some(0),
        PROTO_UDP => Some(1),
        PROTO_SCTP => Some(2),
        PROTO_ICMP => Some(3),
        PROTO_ICMPV6 => Some(4),
        _ => None,
    }
}

/// Address as the kernel maps store it: IPv6, or IPv4 mapped into
/// ::ffff:0:0/96, so one trie serves both families.
pub type Addr = [u8; 16];

/// Data part of an LPM key in the address-to-identity trie: the policy slot
/// first, then the address. The `prefix_len` always covers the slot byte:
/// an IPv4 /24 is 8 + 96 + 24 bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpCacheKey {
    pub slot: u8,
    pub addr: Addr,
}

/// Prefix length of an LPM key for a prefix of `bits` mapped-address bits.
pub const fn ipcache_prefix_len(bits: u32) -> u32 {
    8 + bits
}

/// What an address is: its policy identity, the peer whose AllowedIPs
/// contain it (0 when it belongs to no peer), and `EP_*` flags.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub identity: u32,
    pub peer: u32,
    pub flags: u32,
}

/// The address is one of the gateway's own (in the policy's `local`
/// prefixes and in no peer's AllowedIPs): its ICMP errors about a flow
/// belong to the flow (the gateway is the router on every tunnel path).
pub const EP_GATEWAY: u32 = 1;

/// Key of the policy hash map. Wildcards: `src_id`/`dst_id` = [`ID_ANY`],
/// `proto` = [`PROTO_ANY`], `port_class` = [`PORT_CLASS_ANY`]. Both policy
/// slots share the map; `slot` says whose entry it is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub src_id: u32,
    pub dst_id: u32,
    pub port_class: u16,
    pub proto: u8,
    pub slot: u8,
}

/// Value of the policy hash map: the verdict already resolved by the compiler
/// for everything the key covers (folded with the key's wildcards), and the
/// rule that decided it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyValue {
    pub severity: u8,
    /// Marker entries only: protocols (see [`proto_bit`]) for which the pair
    /// has port-class entries, so lookups that must miss are skipped.
    pub class_protos: u8,
    /// Marker entries only: protocols for which the pair has a
    /// (protocol, any port) entry.
    pub any_port_protos: u8,
    pub _pad: u8,
    pub rule: u32,
}

/// A protocol's bit in [`PolicyValue::class_protos`] and
/// [`PolicyValue::any_port_protos`]; protocols without a bit of their own
/// share the last one.
#[inline(always)]
pub fn proto_bit(proto: u8) -> u8 {
    match proto {
        PROTO_TCP => 1,
        PROTO_UDP => 2,
        PROTO_SCTP => 4,
        PROTO_ICMP => 8,
        PROTO_ICMPV6 => 16,
        _ => 32,
    }
}

/// Per-slot settings, written before the slot becomes active.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotConfig {
    /// Policy version; flow entries from another version are re-checked.
    pub version: u32,
    /// `SLOT_*` flags.
    pub flags: u32,
}

/// The whole interface is in audit mode: every deny passes, counted as audited.
pub const SLOT_AUDIT_ALL: u32 = 1;
/// The slot has policy entries keyed on a wildcard source (any source).
pub const SLOT_HAS_ANY_SRC: u32 = 2;
/// The slot has policy entries keyed on a wildcard destination.
pub const SLOT_HAS_ANY_DST: u32 = 4;
/// The slot has policy entries keyed on wildcard source and destination.
pub const SLOT_HAS_ANY_ANY: u32 = 8;
/// The slot holds a loaded policy (an all-zero slot denies everything).
pub const SLOT_VALID: u32 = 16;
/// IPv6 link-local control traffic no rule matches is allowed (see
/// `is_link_local_control`) instead of falling to the default deny.
pub const SLOT_LINK_LOCAL_ALLOW: u32 = 32;

/// IPv6 link-local control traffic: ICMPv6 router and neighbour discovery
/// and multicast listener messages (types 130–137, 143) from fe80::/10 or
/// :: to fe80::/10 or ff02::/16. Shared by the programs and the reference.
#[inline(always)]
pub fn is_link_local_control(src: &Addr, dst: &Addr, icmpv6_type: u8) -> bool {
    let link_local = |a: &Addr| a[0] == 0xfe && a[1] & 0xc0 == 0x80;
    let unspecified = |a: &Addr| {
        let (hi, lo) = addr_order(a);
        hi == 0 && lo == 0
    };
    let ll_multicast = |a: &Addr| a[0] == 0xff && a[1] == 0x02;
    matches!(icmpv6_type, 130..=137 | 143)
        && (link_local(src) || unspecified(src))
        && (link_local(dst) || ll_multicast(dst))
}

/// Flow-table key: a connection's 5-tuple, normalised so that both
/// directions find the one entry: side `a` is the (address, port) that
/// sorts first. For ICMP echo the identifier stands in the source port of
/// requests and the destination port of replies, so a reply's tuple is the
/// request's reversed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub a: Addr,
    pub b: Addr,
    pub a_port: u16,
    pub b_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl FlowKey {
    /// The key of a packet from `src`:`sport` to `dst`:`dport`, and whether
    /// the packet's source is side `a`.
    #[inline(always)]
    pub fn of(src: &Addr, dst: &Addr, sport: u16, dport: u16, proto: u8) -> (FlowKey, bool) {
        let (s, d) = (addr_order(src), addr_order(dst));
        let src_first = s < d || (s == d && sport <= dport);
        let key = if src_first {
            FlowKey {
                a: *src,
                b: *dst,
                a_port: sport,
                b_port: dport,
                proto,
                _pad: [0; 3],
            }
        } else {
            FlowKey {
                a: *dst,
                b: *src,
                a_port: dport,
                b_port: sport,
                proto,
                _pad: [0; 3],
            }
        };
        (key, src_first)
    }
}

/// A total order on addresses that costs two 8-byte loads.
#[inline(always)]
fn addr_order(a: &Addr) -> (u64, u64) {
    let hi = [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]];
    let lo = [a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]];
    (u64::from_ne_bytes(hi), u64::from_ne_bytes(lo))
}

/// Flow-table value: one per connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    /// Monotonic time (ns, `bpf_ktime_get_ns`) after which the entry is
    /// dead; every packet of the flow pushes it on by its state's lifetime.
    pub expires_ns: u64,
    /// Policy version that allowed the flow.
    pub version: u32,
    /// The rule that allowed the flow's opening packet.
    pub rule: u32,
    /// Counter slots of the key's sides `a` and `b`, so packets of a flow
    /// are counted without looking their addresses up again.
    pub peer_a: u32,
    pub peer_b: u32,
    /// [`severity::ALLOW`] or [`severity::AUDIT`]: how packets of the flow count.
    pub severity: u8,
    /// The side that opened the flow: 0 for `a`, 1 for `b`.
    pub opener: u8,
    /// `FLOW_*` state.
    pub state: u8,
    pub _pad: [u8; 5],
}

/// Flow states. Opening: only the opener has spoken (a SYN, or a first
/// UDP/SCTP packet or echo request). Established: the other side answered.
/// Closing: a TCP FIN or RST was seen.
pub const FLOW_OPENING: u8 = 0;
pub const FLOW_ESTABLISHED: u8 = 1;
pub const FLOW_CLOSING: u8 = 2;

/// Flow lifetimes and the budget of new flows, set by the loader as a
/// read-only global (`names::FLOW_CONFIG`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowConfig {
    /// TCP: opened, not yet answered.
    pub tcp_opening_ns: u64,
    pub tcp_established_ns: u64,
    /// TCP after a FIN or RST.
    pub tcp_closing_ns: u64,
    /// UDP, SCTP, ICMP echo: opened, not yet answered; and answered.
    pub other_opening_ns: u64,
    pub other_established_ns: u64,
    /// How long a first fragment's verdict waits for the rest of its
    /// datagram (fragments of one datagram travel back to back).
    pub fragment_ns: u64,
    /// New flows each peer may open per second (0: no budget) and the
    /// largest burst.
    pub new_per_second: u32,
    pub new_burst: u32,
}

impl FlowConfig {
    /// Defaults: TCP 30 s unanswered, 6 h established, 10 s after FIN or
    /// RST; others 30 s unanswered, 120 s answered; a first fragment's
    /// verdict 2 s; 1,000 new flows per peer per second, bursts of 2,000.
    pub const DEFAULT: FlowConfig = {
        const S: u64 = 1_000_000_000;
        FlowConfig {
            tcp_opening_ns: 30 * S,
            tcp_established_ns: 6 * 3600 * S,
            tcp_closing_ns: 10 * S,
            other_opening_ns: 30 * S,
            other_established_ns: 120 * S,
            fragment_ns: 2 * S,
            new_per_second: 1000,
            new_burst: 2000,
        }
    };
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Key of the fragment table: a datagram as its receiver reassembles it
/// (RFC 791, RFC 8200): addresses, identification, protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: Addr,
    pub dst: Addr,
    /// IPv4 identification (16 bits) or IPv6 fragment identification.
    pub id: u32,
    pub proto: u8,
    // Integers, not an array: the programs write them one by one (an
    // array of 3 becomes a memset call, a BPF function of its own).
    pub _pad: u8,
    pub _pad2: u16,
}

/// The verdict of a datagram's first fragment, for its later fragments.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragValue {
    pub expires_ns: u64,
    /// Policy version of the verdict: another version's is not used.
    pub version: u32,
    pub rule: u32,
    /// Counter slots of the source's and the destination's peers.
    pub src_peer: u32,
    pub dst_peer: u32,
    /// Bytes of the datagram the first fragment carries: a later fragment
    /// starting before their end overlaps it (and could rewrite its ports).
    pub first_len: u16,
    pub severity: u8,
    pub _pad: u8,
    pub _pad2: u32,
}

/// The fragment facts of the packet being judged (per CPU, one entry):
/// the parser writes them, the verdict's recording and a later fragment's
/// lookup read them. Kept in a map rather than in the program's state so
/// that first fragments and whole packets are one path to the verifier;
/// the table's key and value are built here too, not on the BPF stack
/// (the deepest call chain is at Linux 6.1's 512 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragPending {
    /// The datagram's key; the parser writes the identification (IPv4: 16
    /// bits), the rest is filled where the table is used.
    pub key: FragKey,
    /// The verdict being recorded.
    pub value: FragValue,
    /// Non-zero for a first fragment (IPv4 MF, IPv6 M, offset 0).
    pub more: u32,
    /// A first fragment: the bytes of the datagram it carries (from the
    /// end of the IP header, or of the IPv6 fragment header, on); a later
    /// fragment: its offset in bytes.
    pub len: u32,
}

/// A peer's budget of new flows (token bucket, in thousandths of a flow).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowBucket {
    pub tokens_milli: u64,
    pub last_ns: u64,
}

/// Per-peer counters, one slot per direction: ingress counts packets from the
/// peer (decrypted), egress packets to it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerCounters {
    pub dir: [DirCounters; 2],
}

pub const DIR_INGRESS: usize = 0;
pub const DIR_EGRESS: usize = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirCounters {
    pub allowed_packets: u64,
    pub allowed_bytes: u64,
    pub denied_packets: u64,
    pub denied_bytes: u64,
    pub audited_packets: u64,
    pub audited_bytes: u64,
}

/// Key of the deny map: who was refused what. Bounded (LRU) so that a port
/// scan evicts old keys instead of exhausting memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DenyKey {
    pub dst: Addr,
    pub src_peer: u32,
    pub dport: u16,
    pub proto: u8,
    /// [`severity::DENY`] or [`severity::AUDIT`] (would have been denied).
    pub severity: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DenyValue {
    pub packets: u64,
    pub bytes: u64,
}

/// Data-plane statistics that belong to no peer (index into the stats array).
pub mod stat {
    pub const MALFORMED: u32 = 0;
    pub const FRAGMENTS: u32 = 1;
    pub const EVENTS_SENT: u32 = 2;
    pub const EVENTS_SUPPRESSED: u32 = 3;
    pub const EVENTS_LOST: u32 = 4;
    pub const FLOW_HITS: u32 = 5;
    pub const FLOW_RECHECKS: u32 = 6;
    /// Flow entries created.
    pub const FLOW_NEW: u32 = 7;
    /// New flows the table refused (the insert failed): judged alone.
    pub const FLOW_INSERT_FAILED: u32 = 8;
    /// New flows over their peer's budget: passed, but no entry made.
    pub const FLOW_OVER_BUDGET: u32 = 9;
    /// Entries found past their lifetime (removed when met).
    pub const FLOW_EXPIRED: u32 = 10;
    /// TCP packets other than a SYN that opened a flow: a connection whose
    /// entry was lost (evicted, expired, or older than the table). The
    /// table-pressure signal: evictions seen.
    pub const FLOW_PICKUPS: u32 = 11;
    /// First fragments whose verdict was recorded for their datagram.
    pub const FRAGMENTS_TRACKED: u32 = 12;
    /// Later fragments given their first fragment's verdict.
    pub const FRAGMENTS_MATCHED: u32 = 13;
    pub const COUNT: u32 = 14;
}

/// A deny (or audit) event, sent to userspace through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DenyEvent {
    pub timestamp_ns: u64,
    pub src: Addr,
    pub dst: Addr,
    pub src_peer: u32,
    pub rule: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub severity: u8,
    /// [`DIR_INGRESS`] or [`DIR_EGRESS`].
    pub direction: u8,
    pub _pad: u8,
}

/// Key of the benchmark's reference ACL (ebpf/src/acl_probe.rs): the
/// source's identity, the destination port and the protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AclProbeKey {
    pub identity: u32,
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Rate limit of deny events, per CPU (token bucket in the kernel).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventConfig {
    /// Events per second allowed per CPU; 0 disables events.
    pub per_second: u32,
    /// Largest burst per CPU.
    pub burst: u32,
}

/// Which peer owns a counter slot: kept beside the counters (and pinned with
/// them) so that a peer keeps its slot, and its counts, across reloads, even
/// when other peers come and go. Unused by the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerName {
    pub len: u8,
    pub bytes: [u8; PEER_NAME_MAX],
}

pub const PEER_NAME_MAX: usize = 63;

impl Default for PeerName {
    fn default() -> Self {
        Self {
            len: 0,
            bytes: [0; PEER_NAME_MAX],
        }
    }
}

/// Token bucket state, per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventBucket {
    pub tokens_milli: u64,
    pub last_ns: u64,
}

/// Maps an IPv4 address into the shared IPv6 key space.
#[inline(always)]
pub const fn map_v4(octets: [u8; 4]) -> Addr {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3],
    ]
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all these are repr(C) plain data without implicit padding.
    unsafe impl aya::Pod for Endpoint {}
    unsafe impl aya::Pod for IpCacheKey {}
    unsafe impl aya::Pod for PolicyKey {}
    unsafe impl aya::Pod for PolicyValue {}
    unsafe impl aya::Pod for SlotConfig {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowValue {}
    unsafe impl aya::Pod for PeerCounters {}
    unsafe impl aya::Pod for DirCounters {}
    unsafe impl aya::Pod for DenyKey {}
    unsafe impl aya::Pod for DenyValue {}
    unsafe impl aya::Pod for DenyEvent {}
    unsafe impl aya::Pod for EventConfig {}
    unsafe impl aya::Pod for EventBucket {}
    unsafe impl aya::Pod for PeerName {}
    unsafe impl aya::Pod for FlowConfig {}
    unsafe impl aya::Pod for FlowBucket {}
    unsafe impl aya::Pod for AclProbeKey {}
    unsafe impl aya::Pod for FragKey {}
    unsafe impl aya::Pod for FragValue {}
    unsafe impl aya::Pod for FragPending {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::mem::size_of;

    #[test]
    fn both_directions_of_a_flow_share_one_key() {
        let (x, y) = (map_v4([10, 0, 0, 2]), map_v4([10, 0, 0, 1]));
        let v6 = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
        for (s, d, sp, dp) in [
            (x, y, 40000, 22),
            (y, x, 22, 40000),
            (x, x, 1, 2),
            (v6, x, 7, 7),
        ] {
            let (k1, a1) = FlowKey::of(&s, &d, sp, dp, PROTO_TCP);
            let (k2, a2) = FlowKey::of(&d, &s, dp, sp, PROTO_TCP);
            assert_eq!(k1, k2);
            assert!(a1 != a2 || (s == d && sp == dp));
        }
        // Same addresses, ports differ: still two sides.
        let (k, a) = FlowKey::of(&x, &x, 2, 1, PROTO_UDP);
        assert_eq!((k.a_port, k.b_port, a), (1, 2, false));
    }

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<PolicyKey>(), 12);
        assert_eq!(size_of::<Endpoint>(), 12);
        assert_eq!(size_of::<IpCacheKey>(), 17);
        assert_eq!(size_of::<PolicyValue>(), 8);
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<FlowValue>(), 32);
        assert_eq!(size_of::<FlowConfig>(), 56);
        assert_eq!(size_of::<FragKey>(), 40);
        assert_eq!(size_of::<FragValue>(), 32);
        assert_eq!(size_of::<FragPending>(), 80);
        assert_eq!(size_of::<DenyKey>(), 24);
        assert_eq!(size_of::<DenyEvent>(), 8 + 32 + 8 + 4 + 4);
        assert_eq!(size_of::<PeerCounters>(), 2 * 6 * 8);
    }
}
