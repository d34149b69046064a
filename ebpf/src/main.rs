//! wgbpf's TC programs for the WireGuard interface.
//!
//! Per packet: parse, look both addresses up in the identity trie, then
//! either hit the flow table (established flows and replies) or evaluate the
//! policy with a fixed number of hash lookups, whatever the size of the
//! policy. Two policy slots let the controller write a new policy beside the
//! running one and switch with a single 4-byte write.
#![no_std]
#![no_main]

mod parse;
mod policy;
mod view;

use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    helpers::bpf_ktime_get_ns,
    macros::{classifier, map},
    maps::{Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf},
    programs::TcContext,
};
use parse::Packet;
use wgbpf_common::*;

/// Pass to the next program (tcx) or filter (clsact), i.e. do not decide.
const TC_ACT_UNSPEC: i32 = -1;

/// Bytes before the IP header: 0 on a WireGuard device (L3), 14 under
/// BPF_PROG_TEST_RUN, which always builds an Ethernet frame. Set at load.
#[no_mangle]
static WGBPF_L2_HDR_LEN: u32 = 0;

/// Flow lifetimes and budget (`FlowConfig`), set at load.
#[no_mangle]
static WGBPF_FLOW_CONFIG: FlowConfig = FlowConfig::DEFAULT;

/// One field of the flow configuration (read where needed: a copy of the
/// whole would cost stack).
macro_rules! flow_config {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!(WGBPF_FLOW_CONFIG.$field)) }
    };
}

const BPF_F_NO_PREALLOC: u32 = 1;
/// The controller writes the port-class arrays through mmap.
const BPF_F_MMAPABLE: u32 = 1024;

/// One static per map of `wgbpf_common::for_each_map!`, named from it.
macro_rules! declare_maps {
    (@map ACTIVE $n:tt) => {
        #[map(name = $n)]
        static ACTIVE: Array<u32> = Array::with_max_entries(1, 0);
    };
    (@map SLOT_CONFIG $n:tt) => {
        #[map(name = $n)]
        static SLOT_CONFIG: Array<SlotConfig> = Array::with_max_entries(2, 0);
    };
    // Both policy slots live in the same maps, told apart by a slot field
    // in the key: one code path for both, half the work for the verifier.
    (@map IPCACHE $n:tt) => {
        #[map(name = $n)]
        static IPCACHE: LpmTrie<IpCacheKey, Endpoint> =
            LpmTrie::with_max_entries(capacity::IPCACHE, 0);
    };
    // The trie's full-length entries (/32, /128) live here instead: a hash
    // lookup costs a fraction of the trie's walk, and peers are mostly hosts.
    (@map HOSTS $n:tt) => {
        #[map(name = $n)]
        static HOSTS: HashMap<IpCacheKey, Endpoint> =
            HashMap::with_max_entries(capacity::HOSTS, BPF_F_NO_PREALLOC);
    };
    (@map POLICY $n:tt) => {
        #[map(name = $n)]
        static POLICY: HashMap<PolicyKey, PolicyValue> =
            HashMap::with_max_entries(capacity::POLICY, BPF_F_NO_PREALLOC);
    };
    (@map PORT_CLASS $n:tt) => {
        #[map(name = $n)]
        static PORT_CLASS: Array<u16> =
            Array::with_max_entries(2 * PORT_CLASS_ENTRIES, BPF_F_MMAPABLE);
    };
    (@map FLOWS $n:tt) => {
        #[map(name = $n)]
        pub static FLOWS: LruHashMap<FlowKey, FlowValue> =
            LruHashMap::with_max_entries(capacity::FLOWS, 0);
    };
    (@map PEER_COUNTERS $n:tt) => {
        #[map(name = $n)]
        static PEER_COUNTERS: PerCpuArray<PeerCounters> =
            PerCpuArray::with_max_entries(capacity::PEERS, 0);
    };
    (@map PEER_NAMES $n:tt) => {
        #[map(name = $n)]
        static PEER_NAMES: Array<PeerName> = Array::with_max_entries(capacity::PEERS, 0);
    };
    (@map DENIES $n:tt) => {
        #[map(name = $n)]
        static DENIES: LruPerCpuHashMap<DenyKey, DenyValue> =
            LruPerCpuHashMap::with_max_entries(capacity::DENIES, 0);
    };
    (@map STATS $n:tt) => {
        #[map(name = $n)]
        static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);
    };
    (@map EVENTS $n:tt) => {
        #[map(name = $n)]
        static EVENTS: RingBuf = RingBuf::with_byte_size(capacity::EVENTS_BYTES, 0);
    };
    (@map EVENT_BUCKET $n:tt) => {
        #[map(name = $n)]
        static EVENT_BUCKET: PerCpuArray<EventBucket> = PerCpuArray::with_max_entries(1, 0);
    };
    (@map EVENT_CONFIG $n:tt) => {
        #[map(name = $n)]
        static EVENT_CONFIG: Array<EventConfig> = Array::with_max_entries(1, 0);
    };
    // Shared by all CPUs: a peer's budget is the peer's, whichever CPU its
    // packets land on (races between CPUs only blur it by a few flows).
    (@map FLOW_BUDGET $n:tt) => {
        #[map(name = $n)]
        static FLOW_BUDGET: Array<FlowBucket> = Array::with_max_entries(capacity::PEERS, 0);
    };
    // Shared by both directions: a datagram's fragments are judged alike
    // on either hook (the key is the datagram's, as its receiver knows it).
    (@map FRAGS $n:tt) => {
        #[map(name = $n)]
        static FRAGS: LruHashMap<FragKey, FragValue> =
            LruHashMap::with_max_entries(capacity::FRAGS, 0);
    };
    (@map FRAG_PENDING $n:tt) => {
        #[map(name = $n)]
        static FRAG_PENDING: PerCpuArray<FragPending> = PerCpuArray::with_max_entries(1, 0);
    };
    ($($id:ident = $name:tt),* $(,)?) => {
        $(declare_maps!(@map $id $name);)*
    };
}
wgbpf_common::for_each_map!(declare_maps);

#[classifier]
pub fn wgbpf_ingress(ctx: TcContext) -> i32 {
    handle(&ctx, DIR_INGRESS)
}

#[classifier]
pub fn wgbpf_egress(ctx: TcContext) -> i32 {
    handle(&ctx, DIR_EGRESS)
}

/// A decision: its severity and the rule (or `rule_id::*`) behind it.
#[derive(Clone, Copy)]
pub struct Verdict {
    pub severity: u8,
    pub rule: u32,
}

#[inline(always)]
fn handle(ctx: &TcContext, dir: usize) -> i32 {
    let l2 = unsafe { core::ptr::read_volatile(&WGBPF_L2_HDR_LEN) } as usize;
    let mut slot_for_pkt = core::mem::MaybeUninit::<Packet>::uninit();
    let Some(frag) = FRAG_PENDING.get_ptr_mut(0) else {
        return TC_ACT_SHOT; // never: a one-entry array
    };
    // IPv4 source routes first (malformed, like headers that do not parse).
    if !parse::v4_options_ok(ctx, l2) || !parse::parse(ctx, l2, &mut slot_for_pkt, frag) {
        bump_stat(stat::MALFORMED);
        wgbpf_log_malformed(dir as u32, ctx.len());
        return TC_ACT_SHOT;
    }
    // SAFETY: parse() wrote the whole packet when it returned true.
    let pkt = unsafe { slot_for_pkt.assume_init_ref() };
    let slot = match ACTIVE.get(0) {
        Some(s) => *s & 1,
        None => 0,
    };
    let cfg = match SLOT_CONFIG.get(slot) {
        Some(c) => *c,
        None => SlotConfig::default(),
    };
    if pkt.fragment {
        let ret = later_fragment(pkt, frag, dir, cfg.version);
        if ret != FIRST_NOT_SEEN {
            return ret;
        }
    }
    // Fast path: a packet of a live flow allowed under the current policy
    // needs neither identities nor policy.
    let (tracked, key, from_a) = flow_key(pkt);
    let mut stale = Stale::No;
    let mut now = 0;
    if tracked {
        now = unsafe { bpf_ktime_get_ns() };
        if let Some(entry) = FLOWS.get_ptr_mut(&key) {
            let entry = unsafe { &mut *entry };
            let from_opener = from_a == (entry.opener == 0);
            if now > entry.expires_ns {
                // Lazy expiry: a dead entry is removed when met.
                let _ = FLOWS.remove(&key);
                bump_stat(stat::FLOW_EXPIRED);
            } else if entry.version == cfg.version {
                bump_stat(stat::FLOW_HITS);
                advance(entry, pkt, from_opener, now);
                // Ingress counts the source's peer, egress the destination's.
                let peer = if (dir == DIR_INGRESS) == from_a {
                    entry.peer_a
                } else {
                    entry.peer_b
                };
                count_peer(peer, dir, entry.severity, pkt.len);
                if unsafe { (*frag).more } != 0 {
                    let peers = if from_a {
                        (entry.peer_a, entry.peer_b)
                    } else {
                        (entry.peer_b, entry.peer_a)
                    };
                    first_fragment(
                        frag,
                        pkt,
                        cfg.version,
                        verdict_bits(entry.severity, entry.rule),
                        pair(peers),
                    );
                }
                return TC_ACT_UNSPEC;
            } else {
                // The policy changed since the flow began: the flow lives
                // on only if its opening direction is still allowed.
                bump_stat(stat::FLOW_RECHECKS);
                stale = if from_opener {
                    Stale::Forward
                } else {
                    Stale::Reply
                };
            }
        }
    }

    let src_ep = lookup_ep(slot, &pkt.src);
    let dst_ep = lookup_ep(slot, &pkt.dst);
    let flow = FlowCtx {
        key: &key,
        tracked,
        from_a,
        stale,
        now,
        dir,
    };
    let (verdict, from_flow) = decide(pkt, &flow, slot, &cfg, &src_ep, &dst_ep);

    let peer = if dir == DIR_INGRESS {
        src_ep.peer
    } else {
        dst_ep.peer
    };
    count_peer(peer, dir, verdict.severity, pkt.len);
    if unsafe { (*frag).more } != 0 {
        first_fragment(
            frag,
            pkt,
            cfg.version,
            verdict_bits(verdict.severity, verdict.rule),
            pair((src_ep.peer, dst_ep.peer)),
        );
    }
    if verdict.severity >= severity::AUDIT && !from_flow {
        report_deny(pkt, src_ep.peer, &verdict, dir);
    }
    if verdict.severity == severity::DENY {
        TC_ACT_SHOT
    } else {
        TC_ACT_UNSPEC
    }
}

#[inline(always)]
fn lookup_ep(slot: u32, addr: &Addr) -> Endpoint {
    let host = IpCacheKey {
        slot: slot as u8,
        addr: *addr,
    };
    if let Some(ep) = unsafe { HOSTS.get(&host) } {
        return *ep;
    }
    let key = aya_ebpf::maps::lpm_trie::Key::new(ipcache_prefix_len(128), host);
    match IPCACHE.get(&key) {
        Some(ep) => *ep,
        None => Endpoint {
            identity: ID_WORLD,
            peer: 0,
            flags: 0,
        },
    }
}

/// What the flow table knew of a packet's flow before the policy is asked.
#[derive(PartialEq, Eq)]
enum Stale {
    No,
    /// An entry from an older policy for the packet's own direction.
    Forward,
    /// An entry from an older policy letting replies in.
    Reply,
}

/// The packet's flow key, and what the fast path learnt of its entry.
struct FlowCtx<'a> {
    key: &'a FlowKey,
    tracked: bool,
    /// The packet's source is the key's side `a`.
    from_a: bool,
    stale: Stale,
    /// bpf_ktime_get_ns() when tracked.
    now: u64,
    dir: usize,
}

/// The verdict for a packet the fast path did not settle, and whether the
/// flow table gave it.
#[inline(always)]
fn decide(
    pkt: &Packet,
    flow: &FlowCtx,
    slot: u32,
    cfg: &SlotConfig,
    src: &Endpoint,
    dst: &Endpoint,
) -> (Verdict, bool) {
    // An ICMP error about a packet of a live flow, sent back to that
    // packet's sender by the flow's far end or by the gateway, belongs to
    // the flow. Anyone else (a peer, a router) is judged by the policy.
    if pkt.related
        && (pkt.related_far_end || src.flags & EP_GATEWAY != 0)
        && pkt.related_version == cfg.version
    {
        bump_stat(stat::FLOW_HITS);
        return (
            Verdict {
                severity: pkt.related_severity,
                rule: pkt.related_rule,
            },
            true,
        );
    }
    let peers = (src.peer, dst.peer);
    if flow.stale == Stale::Reply {
        let origin = finish(
            policy::evaluate(
                slot,
                cfg,
                dst,
                src,
                pkt.proto,
                reversed_policy_port(pkt),
                false,
                pkt.ported,
            ),
            cfg,
        );
        if origin.severity != severity::DENY {
            refresh(flow, cfg.version, &origin, peers, pkt);
            return (origin, true);
        }
        let _ = FLOWS.remove(flow.key);
    }
    let mut v = policy::evaluate(
        slot,
        cfg,
        src,
        dst,
        pkt.proto,
        policy_port(pkt),
        pkt.fragment,
        pkt.ported,
    );
    // Link-local control traffic no rule matches: allowed by default.
    if v.severity == severity::NONE
        && cfg.flags & SLOT_LINK_LOCAL_ALLOW != 0
        && pkt.proto == PROTO_ICMPV6
        && pkt.ported
        && is_link_local_control(&pkt.src, &pkt.dst, pkt.icmp_type)
    {
        v = Verdict {
            severity: severity::ALLOW,
            rule: rule_id::LINK_LOCAL,
        };
    }
    let v = finish(v, cfg);
    if flow.stale == Stale::Forward {
        if v.severity != severity::DENY {
            refresh(flow, cfg.version, &v, peers, pkt);
            return (v, true);
        }
        let _ = FLOWS.remove(flow.key);
        return (v, false);
    }
    if v.severity != severity::DENY && flow.tracked && opens_flow(pkt) {
        // The opener's peer pays: the source's on ingress, the
        // destination's on egress (the peer the packet is counted for).
        let payer = if flow.dir == DIR_INGRESS {
            src.peer
        } else {
            dst.peer
        };
        if take_budget(payer, flow.now) {
            let value = FlowValue {
                expires_ns: flow.now + lifetime(pkt.proto, FLOW_OPENING),
                version: cfg.version,
                rule: v.rule,
                peer_a: if flow.from_a { src.peer } else { dst.peer },
                peer_b: if flow.from_a { dst.peer } else { src.peer },
                severity: v.severity,
                opener: if flow.from_a { 0 } else { 1 },
                state: FLOW_OPENING,
                _pad: [0; 5],
            };
            track(flow.key, &value, pkt);
        } else {
            bump_stat(stat::FLOW_OVER_BUDGET);
            wgbpf_log_over_budget(payer);
        }
    }
    (v, false)
}

/// A packet of a live flow moves its state on and pushes its expiry.
#[inline(always)]
fn advance(entry: &mut FlowValue, pkt: &Packet, from_opener: bool, now: u64) {
    let mut state = entry.state;
    if pkt.proto == PROTO_TCP && pkt.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        state = FLOW_CLOSING;
    } else if !from_opener && state == FLOW_OPENING {
        state = FLOW_ESTABLISHED;
    } else if from_opener && state == FLOW_CLOSING && pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    {
        // The opener reuses the tuple for a new connection.
        state = FLOW_OPENING;
    }
    entry.state = state;
    entry.expires_ns = now + lifetime(pkt.proto, state);
}

/// How long an entry lives after its last packet, by protocol and state.
#[inline(always)]
fn lifetime(proto: u8, state: u8) -> u64 {
    match (proto == PROTO_TCP, state) {
        (true, FLOW_OPENING) => flow_config!(tcp_opening_ns),
        (true, FLOW_ESTABLISHED) => flow_config!(tcp_established_ns),
        (true, _) => flow_config!(tcp_closing_ns),
        (false, FLOW_OPENING) => flow_config!(other_opening_ns),
        (false, _) => flow_config!(other_established_ns),
    }
}

/// Takes one new flow from `peer`'s budget (token bucket); false when the
/// peer has used it up.
#[inline(always)]
fn take_budget(peer: u32, now: u64) -> bool {
    let rate = flow_config!(new_per_second) as u64;
    if rate == 0 {
        return true;
    }
    let Some(bucket) = FLOW_BUDGET.get_ptr_mut(peer) else {
        return true;
    };
    let bucket = unsafe { &mut *bucket };
    let mut elapsed = now.wrapping_sub(bucket.last_ns);
    if elapsed > 10_000_000_000 {
        elapsed = 10_000_000_000;
    }
    bucket.last_ns = now;
    let cap = flow_config!(new_burst) as u64 * 1000;
    let mut tokens = bucket.tokens_milli + elapsed * rate / 1_000_000;
    if tokens > cap {
        tokens = cap;
    }
    if tokens < 1000 {
        bucket.tokens_milli = tokens;
        return false;
    }
    bucket.tokens_milli = tokens - 1000;
    true
}

/// A flow entry re-checked under the current policy: keep it, renewed.
#[inline(always)]
fn refresh(
    flow: &FlowCtx,
    version: u32,
    v: &Verdict,
    (src_peer, dst_peer): (u32, u32),
    pkt: &Packet,
) {
    if let Some(entry) = FLOWS.get_ptr_mut(flow.key) {
        let entry = unsafe { &mut *entry };
        entry.version = version;
        entry.severity = v.severity;
        entry.rule = v.rule;
        (entry.peer_a, entry.peer_b) = if flow.from_a {
            (src_peer, dst_peer)
        } else {
            (dst_peer, src_peer)
        };
        let from_opener = flow.from_a == (entry.opener == 0);
        advance(entry, pkt, from_opener, flow.now);
    }
}

/// Default deny, and audit mode for the whole interface.
#[inline(always)]
fn finish(v: Verdict, cfg: &SlotConfig) -> Verdict {
    let v = if v.severity == severity::NONE {
        Verdict {
            severity: severity::DENY,
            rule: rule_id::DEFAULT,
        }
    } else {
        v
    };
    if v.severity == severity::DENY && cfg.flags & SLOT_AUDIT_ALL != 0 {
        Verdict {
            severity: severity::AUDIT,
            rule: v.rule,
        }
    } else {
        v
    }
}

/// The "port" the policy matches: destination port, or ICMP type.
#[inline(always)]
fn policy_port(pkt: &Packet) -> u16 {
    match pkt.proto {
        PROTO_ICMP | PROTO_ICMPV6 => pkt.icmp_type as u16,
        _ => pkt.dport,
    }
}

/// The policy port of the packet that opened the flow this reply belongs to.
#[inline(always)]
fn reversed_policy_port(pkt: &Packet) -> u16 {
    match pkt.proto {
        PROTO_ICMP => ICMP_ECHO_REQUEST as u16,
        PROTO_ICMPV6 => ICMPV6_ECHO_REQUEST as u16,
        _ => pkt.sport,
    }
}

/// The packet's flow-table key, whether it has one (later fragments, portless
/// protocols and ICMP other than echo belong to no flow; their key is
/// never looked up), and whether its source is the key's side `a`.
#[inline(always)]
fn flow_key(pkt: &Packet) -> (bool, FlowKey, bool) {
    let (tracked, sport, dport) = match pkt.proto {
        // Fragments, and ICMP of the other family (not ICMP), have no ports.
        _ if !pkt.ported => (false, 0, 0),
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => (true, pkt.sport, pkt.dport),
        PROTO_ICMP => match pkt.icmp_type {
            ICMP_ECHO_REQUEST => (true, pkt.icmp_id, 0),
            ICMP_ECHO_REPLY => (true, 0, pkt.icmp_id),
            _ => (false, 0, 0),
        },
        PROTO_ICMPV6 => match pkt.icmp_type {
            ICMPV6_ECHO_REQUEST => (true, pkt.icmp_id, 0),
            ICMPV6_ECHO_REPLY => (true, 0, pkt.icmp_id),
            _ => (false, 0, 0),
        },
        _ => (false, 0, 0),
    };
    let (key, from_a) = FlowKey::of(&pkt.src, &pkt.dst, sport, dport, pkt.proto);
    (tracked, key, from_a)
}

/// Packets that, once allowed, let their replies in. Echo replies do not,
/// nor does a TCP reset.
#[inline(always)]
fn opens_flow(pkt: &Packet) -> bool {
    match pkt.proto {
        PROTO_ICMP => pkt.icmp_type == ICMP_ECHO_REQUEST,
        PROTO_ICMPV6 => pkt.icmp_type == ICMPV6_ECHO_REQUEST,
        PROTO_TCP => pkt.tcp_flags & TCP_RST == 0,
        _ => true,
    }
}

// Separate BPF functions from here on keep the main frame's stack small.
/// Inserts a new flow, checking the result: a refused insert leaves the
/// packet judged alone (its replies meet the policy), counted.
#[inline(never)]
fn track(key: &FlowKey, value: &FlowValue, pkt: &Packet) {
    match FLOWS.insert(key, value, 0) {
        Ok(()) => {
            bump_stat(stat::FLOW_NEW);
            if pkt.proto == PROTO_TCP && pkt.tcp_flags & TCP_SYN == 0 {
                bump_stat(stat::FLOW_PICKUPS);
            }
        }
        Err(_) => bump_stat(stat::FLOW_INSERT_FAILED),
    }
}

/// `later_fragment`'s answer for a fragment whose first fragment was not
/// seen (or not lately, or under another policy): the policy judges it.
const FIRST_NOT_SEEN: i32 = -2;

/// A severity and a rule in one argument (BPF functions take five).
#[inline(always)]
fn verdict_bits(severity: u8, rule: u32) -> u64 {
    ((severity as u64) << 32) | rule as u64
}

/// Two peers' counter slots in one argument.
#[inline(always)]
fn pair((src, dst): (u32, u32)) -> u64 {
    ((src as u64) << 32) | dst as u64
}

/// Records a first fragment's verdict for the rest of its datagram, if it
/// passes. A denied one records nothing (the rest of its datagram meets
/// the policy as if it could be any port, which denies it too), so a peer
/// allowed nothing cannot fill the table. Another first fragment of the
/// same datagram that passes (a duplicate, or one with other ports) was
/// judged by its own ports and replaces the entry.
#[inline(never)]
fn first_fragment(frag: *mut FragPending, pkt: &Packet, version: u32, verdict: u64, peers: u64) {
    bump_stat(stat::FRAGMENTS);
    let frag = unsafe { &mut *frag };
    // Tested as read back from the map: a test of the argument would make
    // the verifier track the verdict exactly on every path to here, and
    // explore about a third more of the program.
    let v = &mut frag.value;
    v.severity = (verdict >> 32) as u8;
    if unsafe { core::ptr::read_volatile(&v.severity) } == severity::DENY {
        return;
    }
    v.expires_ns = unsafe { bpf_ktime_get_ns() } + flow_config!(fragment_ns);
    v.version = version;
    v.rule = verdict as u32;
    v.src_peer = (peers >> 32) as u32;
    v.dst_peer = peers as u32;
    v.first_len = frag.len as u16;
    v._pad = 0;
    v._pad2 = 0;
    fill_key(&mut frag.key, pkt);
    if FRAGS.insert(&frag.key, &frag.value, 0).is_ok() {
        bump_stat(stat::FRAGMENTS_TRACKED);
    }
}

/// The datagram's key, its identification written by the parser.
#[inline(always)]
fn fill_key(key: &mut FragKey, pkt: &Packet) {
    key.src = pkt.src;
    key.dst = pkt.dst;
    key.proto = pkt.proto;
    key._pad = 0;
    key._pad2 = 0;
}

/// A later fragment: its first fragment's verdict, if that was seen lately
/// under the current policy (counted like it, never logged), or
/// `FIRST_NOT_SEEN`. One that overlaps its first fragment is malformed:
/// it could rewrite the ports that were judged.
#[inline(never)]
fn later_fragment(pkt: &Packet, frag: *mut FragPending, dir: usize, version: u32) -> i32 {
    bump_stat(stat::FRAGMENTS);
    let frag = unsafe { &mut *frag };
    // A middle fragment's MF (IPv4): it is no first fragment.
    frag.more = 0;
    fill_key(&mut frag.key, pkt);
    let Some(entry) = (unsafe { FRAGS.get(&frag.key) }) else {
        return FIRST_NOT_SEEN;
    };
    if entry.version != version || unsafe { bpf_ktime_get_ns() } > entry.expires_ns {
        return FIRST_NOT_SEEN;
    }
    if frag.len < entry.first_len as u32 {
        bump_stat(stat::MALFORMED);
        wgbpf_log_overlap(frag.len, entry.first_len as u32);
        return TC_ACT_SHOT;
    }
    bump_stat(stat::FRAGMENTS_MATCHED);
    let peer = if dir == DIR_INGRESS {
        entry.src_peer
    } else {
        entry.dst_peer
    };
    count_peer(peer, dir, entry.severity, pkt.len);
    if entry.severity == severity::DENY {
        TC_ACT_SHOT
    } else {
        TC_ACT_UNSPEC
    }
}

/// The programs' own log (aya-log, `[interface] program_log`). Each call
/// site is a global function with scalar arguments: the kernel verifies it
/// once, on its own, rather than again from every state of the caller that
/// reaches it (that took 6.1 past its budget), and with the log off (a
/// constant the verifier sees) its body is dead code. aya-log writes to its
/// ring buffer without the context, so none is passed.
#[no_mangle]
#[inline(never)]
pub extern "C" fn wgbpf_log_malformed(dir: u32, len: u32) -> i32 {
    aya_log_ebpf::warn!(&(), "malformed packet dropped: dir {}, {} bytes", dir, len);
    0
}

/// A new flow refused a place in the table: its opener's peer is over its
/// budget (`[interface.flows] new_per_second`).
#[no_mangle]
#[inline(never)]
pub extern "C" fn wgbpf_log_over_budget(peer: u32) -> i32 {
    aya_log_ebpf::info!(
        &(),
        "flow not tracked: peer slot {} over its new-flow budget",
        peer
    );
    0
}

/// A later fragment that reaches into its first fragment's bytes.
#[no_mangle]
#[inline(never)]
pub extern "C" fn wgbpf_log_overlap(offset: u32, first_len: u32) -> i32 {
    aya_log_ebpf::warn!(
        &(),
        "fragment dropped: offset {} overlaps its first fragment's {} bytes",
        offset,
        first_len
    );
    0
}

#[inline(always)]
fn bump_stat(index: u32) {
    if let Some(v) = STATS.get_ptr_mut(index) {
        unsafe { *v += 1 };
    }
}

#[inline(always)]
fn count_peer(peer: u32, dir: usize, sev: u8, len: u32) {
    let Some(c) = PEER_COUNTERS.get_ptr_mut(peer) else {
        return;
    };
    let c = unsafe { &mut (*c).dir[dir & 1] };
    let len = len as u64;
    match sev {
        severity::DENY => {
            c.denied_packets += 1;
            c.denied_bytes += len;
        }
        severity::AUDIT => {
            c.audited_packets += 1;
            c.audited_bytes += len;
        }
        _ => {
            c.allowed_packets += 1;
            c.allowed_bytes += len;
        }
    }
}

/// Counts a deny (or audit) in the deny map and sends a deny event.
#[inline(never)]
fn report_deny(pkt: &Packet, src_peer: u32, v: &Verdict, dir: usize) {
    count_deny(pkt, src_peer, v.severity);
    send_event(pkt, src_peer, v, dir);
}

#[inline(always)]
fn count_deny(pkt: &Packet, src_peer: u32, sev: u8) {
    let key = DenyKey {
        dst: pkt.dst,
        src_peer,
        dport: if pkt.fragment { 0 } else { policy_port(pkt) },
        proto: pkt.proto,
        severity: sev,
    };
    if let Some(v) = DENIES.get_ptr_mut(&key) {
        let v = unsafe { &mut *v };
        v.packets += 1;
        v.bytes += pkt.len as u64;
    } else {
        let v = DenyValue {
            packets: 1,
            bytes: pkt.len as u64,
        };
        let _ = DENIES.insert(&key, &v, 0);
    }
}

/// Token bucket per CPU, so a flood of denied packets cannot flood the ring.
#[inline(always)]
fn send_event(pkt: &Packet, src_peer: u32, v: &Verdict, dir: usize) {
    let Some(cfg) = EVENT_CONFIG.get(0) else {
        return;
    };
    if cfg.per_second == 0 {
        return;
    }
    let Some(bucket) = EVENT_BUCKET.get_ptr_mut(0) else {
        return;
    };
    let bucket = unsafe { &mut *bucket };
    let now = unsafe { bpf_ktime_get_ns() };
    let mut elapsed = now.wrapping_sub(bucket.last_ns);
    if elapsed > 10_000_000_000 {
        elapsed = 10_000_000_000;
    }
    bucket.last_ns = now;
    let cap = cfg.burst as u64 * 1000;
    let mut tokens = bucket.tokens_milli + elapsed * cfg.per_second as u64 / 1_000_000;
    if tokens > cap {
        tokens = cap;
    }
    if tokens < 1000 {
        bucket.tokens_milli = tokens;
        bump_stat(stat::EVENTS_SUPPRESSED);
        return;
    }
    bucket.tokens_milli = tokens - 1000;
    match EVENTS.reserve::<DenyEvent>(0) {
        Some(mut entry) => {
            entry.write(DenyEvent {
                timestamp_ns: now,
                src: pkt.src,
                dst: pkt.dst,
                src_peer,
                rule: v.rule,
                sport: pkt.sport,
                dport: policy_port(pkt),
                proto: pkt.proto,
                severity: v.severity,
                direction: dir as u8,
                _pad: 0,
            });
            entry.submit(0);
            bump_stat(stat::EVENTS_SENT);
        }
        None => bump_stat(stat::EVENTS_LOST),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
