//! Compiles a [`Policy`] into the contents of the kernel's maps.
//!
//! 1. Atoms: every prefix the policy mentions (AllowedIPs, the gateway's
//!    addresses, rule CIDRs) goes into the LPM trie; an address's atom is its
//!    longest matching prefix.
//! 2. Identities: atoms that every rule selector treats alike share one
//!    identity (as Cilium's label sets), so the policy is keyed on a few
//!    identities rather than on every prefix.
//! 3. Port classes: per protocol, ports covered by the same set of rules
//!    share a class; an array maps each port to its class.
//! 4. Entries: per (source identity or any, destination identity or any),
//!    one entry per (protocol, class), already folded with the pair's
//!    protocol and port wildcards, so the kernel's first hit is the answer.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ipnet::IpNet;
use thiserror::Error;
use wgbpf_common::{
    proto_bit, severity, Addr, Endpoint, PolicyKey, PolicyValue, EP_GATEWAY, ID_ANY, ID_FIRST,
    ID_WORLD, PORTED_PROTOS, PORT_CLASS_ANY, PORT_CLASS_ENTRIES, PORT_CLASS_FIRST, PORT_CLASS_FRAG,
    PROTO_ANY, SLOT_AUDIT_ALL, SLOT_HAS_ANY_ANY, SLOT_HAS_ANY_DST, SLOT_HAS_ANY_SRC,
    SLOT_LINK_LOCAL_ALLOW,
};

use super::{
    model::{proto_has_ports, proto_name, Action, LinkLocal, Policy, Selector},
    reference::{rule_severity, Verdict},
};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CompileError {
    #[error("rule {rule}: ports need protocol tcp, udp, sctp, icmp or icmpv6 (got {proto})")]
    PortsWithoutPortedProto { rule: String, proto: String },
    #[error("rule {rule}: port range {first}-{last} is empty")]
    EmptyPortRange { rule: String, first: u16, last: u16 },
    #[error("rule {rule}: protocol 0 cannot be named (leave the protocol out for any)")]
    ProtocolZero { rule: String },
    #[error("rule {rule}: accept rules cannot be in audit mode (audit applies to denies)")]
    AuditAccept { rule: String },
    #[error("{what}: IPv4-mapped IPv6 prefix {prefix} is not supported (use the IPv4 form)")]
    MappedPrefix { what: String, prefix: IpNet },
    #[error("peers {a} and {b} both claim {prefix} in their AllowedIPs")]
    OverlappingPeers { a: String, b: String, prefix: IpNet },
    #[error("peer {peer}: counter index {index} is out of range 1..{max}")]
    PeerIndex { peer: String, index: u32, max: u32 },
    #[error("protocol {proto}: more than {max} distinct port classes")]
    TooManyPortClasses { proto: String, max: usize },
    #[error("{count} peers: the data plane holds at most {max} (one counter index each)")]
    TooManyPeers { count: usize, max: usize },
    #[error("too many identities ({0})")]
    TooManyIdentities(usize),
}

/// What goes into one policy slot.
#[derive(Clone, Debug, Default)]
pub struct Compiled {
    /// LPM trie entries: (mapped address, prefix length over 128 bits, value).
    pub ipcache: Vec<(Addr, u32, Endpoint)>,
    /// Policy entries, keyed with slot 0 (the writer sets the real slot).
    pub policy: BTreeMap<PolicyKey, PolicyValue>,
    /// One class per (ported protocol, port); see `wgbpf_common::PORTED_PROTOS`.
    pub port_classes: Vec<u16>,
    pub flags: u32,
    pub identities: u32,
}

impl Compiled {
    /// The same policy with each peer's counter slot replaced: `slots` maps
    /// the index a peer had when compiled to the slot it gets (only the
    /// trie's peer values change; identities and policy entries do not
    /// depend on the numbering).
    pub fn with_counter_indexes(&self, slots: &BTreeMap<u32, u32>) -> Compiled {
        let mut c = self.clone();
        for (_, _, e) in &mut c.ipcache {
            if e.peer != 0 {
                e.peer = slots.get(&e.peer).copied().unwrap_or(e.peer);
            }
        }
        c
    }
}

/// An atom: a prefix in the 128-bit mapped space, remembering its family so
/// that an IPv6 selector such as ::/0 never matches IPv4 addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Atom {
    addr: u128,
    len: u8,
    v4: bool,
}

impl Atom {
    fn of(net: &IpNet) -> Atom {
        let net = net.trunc();
        match net {
            IpNet::V4(n) => Atom {
                addr: u128::from_be_bytes(wgbpf_common::map_v4(n.network().octets())),
                len: 96 + n.prefix_len(),
                v4: true,
            },
            IpNet::V6(n) => Atom {
                addr: u128::from(n.network()),
                len: n.prefix_len(),
                v4: false,
            },
        }
    }
    fn last(&self) -> u128 {
        self.addr | u128::MAX.checked_shr(self.len as u32).unwrap_or(0)
    }
    fn contains(&self, other: &Atom) -> bool {
        self.v4 == other.v4
            && self.len <= other.len
            && other.addr >= self.addr
            && other.addr <= self.last()
    }
}

/// The whole IPv4 space: always an atom, so IPv4 addresses outside every
/// IPv4 prefix never fall into an IPv6 prefix such as ::/0.
const V4_SPACE: Atom = Atom {
    addr: 0xffff_0000_0000,
    len: 96,
    v4: true,
};
const MAPPED_V6: Atom = Atom {
    addr: 0xffff_0000_0000,
    len: 96,
    v4: false,
};

/// Compiles `policy` into the entries of one policy slot, in steps:
/// validate; cut the address space into atoms (every prefix any selector,
/// peer or gateway address names); give atoms contained in the same
/// selectors one identity; fold the rules into a verdict per (source
/// identity, destination identity, protocol, port class); write those as
/// policy entries with a marker per pair.
pub fn compile(policy: &Policy, max_peers: u32) -> Result<Compiled, CompileError> {
    validate(policy, max_peers)?;
    let atoms = Atoms::of(policy);
    let ids = Identities::of(&atoms)?;
    let (port_classes, rule_classes) = port_classes(policy)?;
    let pairs = fold_rules(
        policy,
        &atoms.rule_selectors,
        &ids.of_selector,
        &rule_classes,
    );
    let (policy_entries, flags) = policy_entries(policy.audit, policy.link_local, &pairs);
    Ok(Compiled {
        ipcache: ipcache_entries(&atoms, &ids, &policy.local),
        policy: policy_entries,
        port_classes,
        flags,
        identities: ids.count,
    })
}

/// The address space cut at every prefix the policy names, with the peer
/// owning each atom, and the rules' selectors as sets of atoms.
struct Atoms {
    /// Sorted by (address, length): enclosing atoms first.
    atoms: Vec<Atom>,
    /// The peer (counter index) of each atom, 0 for none.
    peer: Vec<u32>,
    /// Distinct selectors, each a sorted set of atoms.
    selectors: Vec<Vec<Atom>>,
    /// Per rule: its source and destination selector (`None`: any).
    rule_selectors: Vec<(Option<usize>, Option<usize>)>,
}

impl Atoms {
    fn of(policy: &Policy) -> Atoms {
        let mut owner: BTreeMap<Atom, u32> = BTreeMap::new();
        owner.insert(V4_SPACE, 0);
        for net in &policy.local {
            owner.entry(Atom::of(net)).or_insert(0);
        }
        let mut selectors: Vec<Vec<Atom>> = Vec::new();
        let mut selector_ids: HashMap<Vec<Atom>, usize> = HashMap::new();
        let mut rule_selectors = Vec::with_capacity(policy.rules.len());
        for rule in &policy.rules {
            let mut side = |sel: &Selector, owner: &mut BTreeMap<Atom, u32>| match sel {
                Selector::Any => None,
                Selector::Prefixes(ps) => {
                    let mut atoms: Vec<Atom> = ps.iter().map(Atom::of).collect();
                    atoms.sort();
                    atoms.dedup();
                    for a in &atoms {
                        owner.entry(*a).or_insert(0);
                    }
                    let next = selectors.len();
                    let id = *selector_ids.entry(atoms.clone()).or_insert(next);
                    if id == next {
                        selectors.push(atoms);
                    }
                    Some(id)
                }
            };
            let s = side(&rule.src, &mut owner);
            let d = side(&rule.dst, &mut owner);
            rule_selectors.push((s, d));
        }
        // Peers last so that an atom equal to a peer's prefix is owned by
        // it; atoms inside a peer's prefix are the peer's too.
        for peer in &policy.peers {
            for net in &peer.allowed_ips {
                owner.insert(Atom::of(net), peer.index);
            }
        }
        let atoms: Vec<Atom> = owner.keys().copied().collect();
        let peer = inherit_owners(&atoms, &owner);
        Atoms {
            atoms,
            peer,
            selectors,
            rule_selectors,
        }
    }
}

/// One identity per distinct set of selectors an atom is in (its
/// signature); atoms in no selector are the world.
struct Identities {
    of_atom: Vec<u32>,
    of_selector: Vec<BTreeSet<u32>>,
    count: u32,
}

impl Identities {
    fn of(atoms: &Atoms) -> Result<Identities, CompileError> {
        let (list, selectors) = (&atoms.atoms, &atoms.selectors);
        let mut signature: Vec<Vec<usize>> = vec![Vec::new(); list.len()];
        for (sel_id, prefixes) in selectors.iter().enumerate() {
            let mut hit = BTreeSet::new();
            for p in prefixes {
                // Atoms are sorted by address: those inside p are contiguous.
                let start = list.partition_point(|a| a.addr < p.addr);
                for (i, a) in list.iter().enumerate().skip(start) {
                    if a.addr > p.last() {
                        break;
                    }
                    if p.contains(a) {
                        hit.insert(i);
                    }
                }
            }
            for i in hit {
                signature[i].push(sel_id);
            }
        }
        let mut identity_of_sig: HashMap<&Vec<usize>, u32> = HashMap::new();
        let mut next_id = ID_FIRST;
        let mut of_atom = Vec::with_capacity(list.len());
        for sig in &signature {
            let id = if sig.is_empty() {
                ID_WORLD
            } else {
                *identity_of_sig.entry(sig).or_insert_with(|| {
                    next_id += 1;
                    next_id - 1
                })
            };
            of_atom.push(id);
        }
        if next_id == u32::MAX {
            return Err(CompileError::TooManyIdentities(next_id as usize));
        }
        let mut of_selector: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); selectors.len()];
        for (i, sig) in signature.iter().enumerate() {
            for s in sig {
                of_selector[*s].insert(of_atom[i]);
            }
        }
        Ok(Identities {
            of_atom,
            of_selector,
            count: next_id - ID_FIRST,
        })
    }
}

/// The trie's entries: every atom with its identity and peer, and whether
/// it is one of the gateway's own addresses (`local`).
fn ipcache_entries(atoms: &Atoms, ids: &Identities, local: &[IpNet]) -> Vec<(Addr, u32, Endpoint)> {
    atoms
        .atoms
        .iter()
        .zip(ids.of_atom.iter().zip(&atoms.peer))
        .map(|(a, (id, peer))| {
            (
                a.addr.to_be_bytes(),
                a.len as u32,
                Endpoint {
                    identity: *id,
                    peer: *peer,
                    flags: if *peer == 0 && local.iter().any(|l| Atom::of(l).contains(a)) {
                        EP_GATEWAY
                    } else {
                        0
                    },
                },
            )
        })
        .collect()
}

/// One protocol's verdicts for a pair, before folding.
#[derive(Default)]
struct ProtoTable {
    any: Option<Verdict>,
    frag: Option<Verdict>,
    classes: BTreeMap<u16, Verdict>,
}

/// A (source, destination) identity pair's verdicts, before folding.
#[derive(Default)]
struct PairTable {
    any: Option<Verdict>,
    protos: BTreeMap<u8, ProtoTable>,
}

fn merge(slot: &mut Option<Verdict>, v: Verdict) {
    *slot = Some(slot.map_or(v, |old| old.better(v)));
}

/// Every rule's verdict, merged into the tables of the identity pairs it
/// covers (the most severe wins; among equals the first rule).
fn fold_rules(
    policy: &Policy,
    rule_selectors: &[(Option<usize>, Option<usize>)],
    sel_identities: &[BTreeSet<u32>],
    rule_classes: &[Vec<u16>],
) -> BTreeMap<(u32, u32), PairTable> {
    let any_set: BTreeSet<u32> = [ID_ANY].into();
    let mut pairs: BTreeMap<(u32, u32), PairTable> = BTreeMap::new();
    for (i, rule) in policy.rules.iter().enumerate() {
        let v = Verdict {
            severity: rule_severity(rule),
            rule: i as u32,
        };
        let (s, d) = rule_selectors[i];
        let srcs = s.map_or(&any_set, |s| &sel_identities[s]);
        let dsts = d.map_or(&any_set, |d| &sel_identities[d]);
        for &src in srcs {
            for &dst in dsts {
                let pair = pairs.entry((src, dst)).or_default();
                let Some(proto) = rule.proto else {
                    merge(&mut pair.any, v);
                    continue;
                };
                let table = pair.protos.entry(proto).or_default();
                if rule.ports.is_empty() {
                    merge(&mut table.any, v);
                    continue;
                }
                for &c in &rule_classes[i] {
                    let e = table.classes.entry(c).or_insert(v);
                    *e = e.better(v);
                }
                if v.severity >= severity::AUDIT {
                    merge(&mut table.frag, v);
                }
            }
        }
    }
    pairs
}

/// The policy map's entries (keyed with slot 0; the writer sets the real
/// slot) and the slot's flags: per pair a marker telling the kernel which
/// other lookups can hit, then the folded verdicts.
fn policy_entries(
    audit_all: bool,
    link_local: LinkLocal,
    pairs: &BTreeMap<(u32, u32), PairTable>,
) -> (BTreeMap<PolicyKey, PolicyValue>, u32) {
    let mut entries = BTreeMap::new();
    let mut flags = if audit_all { SLOT_AUDIT_ALL } else { 0 };
    if link_local == LinkLocal::Allow {
        flags |= SLOT_LINK_LOCAL_ALLOW;
    }
    let none = Verdict::NONE;
    for ((src, dst), pair) in pairs {
        flags |= match (*src == ID_ANY, *dst == ID_ANY) {
            (true, true) => SLOT_HAS_ANY_ANY,
            (true, false) => SLOT_HAS_ANY_SRC,
            (false, true) => SLOT_HAS_ANY_DST,
            (false, false) => 0,
        };
        let key = |proto: u8, port_class: u16| PolicyKey {
            src_id: *src,
            dst_id: *dst,
            port_class,
            proto,
            slot: 0,
        };
        let val = |v: Verdict| PolicyValue {
            severity: v.severity,
            rule: v.rule,
            ..Default::default()
        };
        let pair_any = pair.any.unwrap_or(none);
        let mut marker = val(pair_any);
        for (proto, table) in &pair.protos {
            if table.frag.is_some() || !table.classes.is_empty() {
                marker.class_protos |= proto_bit(*proto);
            }
            if table.any.is_some() {
                marker.any_port_protos |= proto_bit(*proto);
            }
        }
        entries.insert(key(PROTO_ANY, PORT_CLASS_ANY), marker);
        for (proto, table) in &pair.protos {
            let proto_any = table.any.map_or(pair_any, |v| pair_any.better(v));
            if table.any.is_some() {
                entries.insert(key(*proto, PORT_CLASS_ANY), val(proto_any));
            }
            if let Some(f) = table.frag {
                entries.insert(key(*proto, PORT_CLASS_FRAG), val(proto_any.better(f)));
            }
            for (class, v) in &table.classes {
                entries.insert(key(*proto, *class), val(proto_any.better(*v)));
            }
        }
    }
    (entries, flags)
}

/// The peer of each atom: its own if it is one of a peer's prefixes, else
/// that of the nearest enclosing atom of its family. Atoms are sorted by
/// (address, length), so enclosing atoms come first: a stack sweep.
fn inherit_owners(atoms: &[Atom], owner: &BTreeMap<Atom, u32>) -> Vec<u32> {
    let mut result = Vec::with_capacity(atoms.len());
    let mut stack: Vec<(Atom, u32)> = Vec::new();
    for a in atoms {
        while stack.last().is_some_and(|(s, _)| s.last() < a.addr) {
            stack.pop();
        }
        let own = owner[a];
        let peer = if own != 0 {
            own
        } else {
            stack
                .iter()
                .rev()
                .find(|(s, _)| s.contains(a))
                .map_or(0, |(_, p)| *p)
        };
        result.push(peer);
        stack.push((*a, peer));
    }
    result
}

/// Port classes per ported protocol: ports with the same set of covering
/// rules share a class. Returns the port-class array and, per rule, the
/// classes its ports cover.
#[allow(clippy::type_complexity)]
fn port_classes(policy: &Policy) -> Result<(Vec<u16>, Vec<Vec<u16>>), CompileError> {
    let mut array = vec![PORT_CLASS_ANY; PORT_CLASS_ENTRIES as usize];
    let mut rule_classes: Vec<Vec<u16>> = vec![Vec::new(); policy.rules.len()];
    for (block, &proto) in PORTED_PROTOS.iter().enumerate() {
        // Sweep over range boundaries; the coverage set only changes there.
        let mut events: BTreeMap<u32, Vec<(usize, bool)>> = BTreeMap::new();
        for (i, rule) in policy.rules.iter().enumerate() {
            if rule.proto != Some(proto) {
                continue;
            }
            for r in &rule.ports {
                events.entry(r.first as u32).or_default().push((i, true));
                events
                    .entry(r.last as u32 + 1)
                    .or_default()
                    .push((i, false));
            }
        }
        let mut active: BTreeMap<usize, usize> = BTreeMap::new();
        let mut class_of: HashMap<Vec<usize>, u16> = HashMap::new();
        let mut next = PORT_CLASS_FIRST as u32;
        let points: Vec<u32> = events.keys().copied().collect();
        for (k, &at) in points.iter().enumerate() {
            for &(rule, start) in &events[&at] {
                let n = active.entry(rule).or_insert(0);
                if start {
                    *n += 1;
                } else {
                    *n -= 1;
                    if *n == 0 {
                        active.remove(&rule);
                    }
                }
            }
            if active.is_empty() || at > 65535 {
                continue;
            }
            let end = points.get(k + 1).copied().unwrap_or(65536).min(65536);
            let covering: Vec<usize> = active.keys().copied().collect();
            let class = match class_of.get(&covering) {
                Some(c) => *c,
                None => {
                    if next > u16::MAX as u32 {
                        return Err(CompileError::TooManyPortClasses {
                            proto: proto_name(proto),
                            max: (u16::MAX - PORT_CLASS_FIRST) as usize,
                        });
                    }
                    let c = next as u16;
                    next += 1;
                    for &r in &covering {
                        rule_classes[r].push(c);
                    }
                    class_of.insert(covering, c);
                    c
                }
            };
            let base = block * 65536;
            array[base + at as usize..base + end as usize].fill(class);
        }
    }
    Ok((array, rule_classes))
}

fn validate(policy: &Policy, max_peers: u32) -> Result<(), CompileError> {
    for rule in &policy.rules {
        // Protocol 0 in a key is the wildcard: a rule naming it would
        // collide with the pair's marker.
        if rule.proto == Some(PROTO_ANY) {
            return Err(CompileError::ProtocolZero {
                rule: rule.name.clone(),
            });
        }
        if rule.audit && rule.action == Action::Accept {
            return Err(CompileError::AuditAccept {
                rule: rule.name.clone(),
            });
        }
        if !rule.ports.is_empty() {
            match rule.proto {
                Some(p) if proto_has_ports(p) => {}
                other => {
                    return Err(CompileError::PortsWithoutPortedProto {
                        rule: rule.name.clone(),
                        proto: other.map_or("any".into(), proto_name),
                    })
                }
            }
        }
        for r in &rule.ports {
            if r.first > r.last {
                return Err(CompileError::EmptyPortRange {
                    rule: rule.name.clone(),
                    first: r.first,
                    last: r.last,
                });
            }
        }
        for sel in [&rule.src, &rule.dst] {
            if let Selector::Prefixes(ps) = sel {
                check_mapped(&rule.name, ps)?;
            }
        }
    }
    check_mapped("gateway addresses", &policy.local)?;
    // Index 0 means "no peer".
    let most = max_peers.saturating_sub(1) as usize;
    if policy.peers.len() > most {
        return Err(CompileError::TooManyPeers {
            count: policy.peers.len(),
            max: most,
        });
    }
    let mut claimed: Vec<(Atom, &str, &IpNet)> = Vec::new();
    for peer in &policy.peers {
        if peer.index == 0 || peer.index >= max_peers {
            return Err(CompileError::PeerIndex {
                peer: peer.name.clone(),
                index: peer.index,
                max: max_peers,
            });
        }
        check_mapped(&format!("peer {}", peer.name), &peer.allowed_ips)?;
        claimed.extend(
            peer.allowed_ips
                .iter()
                .map(|n| (Atom::of(n), peer.name.as_str(), n)),
        );
    }
    // Sorted by (address, length), an overlap is an enclosing prefix still
    // on the stack when a prefix of another peer arrives.
    claimed.sort_by_key(|(a, _, _)| *a);
    let mut stack: Vec<(Atom, &str)> = Vec::new();
    for (a, name, net) in &claimed {
        while stack.last().is_some_and(|(s, _)| s.last() < a.addr) {
            stack.pop();
        }
        if let Some((_, other)) = stack
            .iter()
            .find(|(s, other)| s.contains(a) && other != name)
        {
            return Err(CompileError::OverlappingPeers {
                a: other.to_string(),
                b: name.to_string(),
                prefix: **net,
            });
        }
        stack.push((*a, name));
    }
    Ok(())
}

fn check_mapped(what: &str, nets: &[IpNet]) -> Result<(), CompileError> {
    for n in nets {
        if let IpNet::V6(_) = n {
            let a = Atom::of(n);
            if MAPPED_V6.contains(&a) {
                return Err(CompileError::MappedPrefix {
                    what: what.to_string(),
                    prefix: *n,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::{Peer, PortRange, Rule};

    fn peer(i: u32) -> Peer {
        Peer {
            name: format!("p{i}"),
            index: i,
            allowed_ips: vec![format!("10.1.{}.{}/32", i / 250, i % 250 + 1)
                .parse()
                .unwrap()],
        }
    }

    fn rule(src: Selector, dst: Selector) -> Rule {
        Rule {
            name: "r".into(),
            action: Action::Accept,
            audit: false,
            src,
            dst,
            proto: Some(6),
            ports: vec![PortRange::single(22)],
        }
    }

    #[test]
    fn renumbering_peers_equals_compiling_with_their_slots() {
        let peers: Vec<Peer> = (1..=20).map(peer).collect();
        let half = Selector::Prefixes(
            peers[..10]
                .iter()
                .flat_map(|p| p.allowed_ips.clone())
                .collect(),
        );
        let one = Selector::Prefixes(peers[3].allowed_ips.clone());
        let policy = Policy {
            rules: vec![
                rule(half, Selector::Any),
                Rule {
                    action: Action::Deny,
                    proto: None,
                    ports: vec![],
                    ..rule(one, Selector::Any)
                },
            ],
            peers,
            ..Default::default()
        };
        // Slots as a pinned data plane may hand them out: any permutation.
        let slots: BTreeMap<u32, u32> = (1..=20).map(|i| (i, 1 + (i * 7) % 23)).collect();
        let mut renumbered = policy.clone();
        for p in &mut renumbered.peers {
            p.index = slots[&p.index];
        }
        let direct = compile(&renumbered, 64).unwrap();
        let remapped = compile(&policy, 64).unwrap().with_counter_indexes(&slots);
        assert_eq!(
            format!("{:?}", direct.ipcache),
            format!("{:?}", remapped.ipcache)
        );
        assert_eq!(
            format!("{:?}", direct.policy),
            format!("{:?}", remapped.policy)
        );
        assert_eq!(direct.identities, remapped.identities);
        assert!(remapped.ipcache.iter().any(|(_, _, e)| e.peer == slots[&5]));
    }

    #[test]
    fn peers_treated_alike_share_one_identity() {
        let peers: Vec<Peer> = (1..=100).map(peer).collect();
        let group = Selector::Prefixes(peers.iter().flat_map(|p| p.allowed_ips.clone()).collect());
        let server = Selector::Prefixes(vec!["192.0.2.10/32".parse().unwrap()]);
        let policy = Policy {
            peers,
            rules: vec![rule(group, server)],
            ..Default::default()
        };
        let c = compile(&policy, 1000).unwrap();
        // The group, the server; every peer is in the trie with its own slot.
        assert_eq!(c.identities, 2);
        assert_eq!(
            c.ipcache.iter().filter(|(_, _, e)| e.peer != 0).count(),
            100
        );
        // One pair: its marker, (tcp, any) is not needed, one port class.
        assert_eq!(c.policy.len(), 2);
    }

    #[test]
    fn overlapping_allowed_ips_are_refused_naming_both_peers() {
        let mut b = peer(2);
        b.allowed_ips = vec!["10.1.0.0/24".parse().unwrap()];
        let policy = Policy {
            peers: vec![peer(1), b],
            ..Default::default()
        };
        let e = compile(&policy, 1000).unwrap_err();
        assert!(matches!(e, CompileError::OverlappingPeers { .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains("p1") && text.contains("p2"), "{text}");
    }

    #[test]
    fn mapped_prefixes_and_bad_ports_are_refused() {
        let mapped = Selector::Prefixes(vec!["::ffff:10.0.0.0/104".parse().unwrap()]);
        let policy = Policy {
            rules: vec![rule(mapped, Selector::Any)],
            ..Default::default()
        };
        assert!(matches!(
            compile(&policy, 10),
            Err(CompileError::MappedPrefix { .. })
        ));
        let mut r = rule(Selector::Any, Selector::Any);
        r.proto = Some(47);
        let policy = Policy {
            rules: vec![r],
            ..Default::default()
        };
        assert!(matches!(
            compile(&policy, 10),
            Err(CompileError::PortsWithoutPortedProto { .. })
        ));
    }

    #[test]
    fn port_classes_follow_rule_coverage() {
        let mut a = rule(Selector::Any, Selector::Any);
        a.ports = vec![PortRange::new(1000, 2000)];
        let mut b = rule(Selector::Any, Selector::Any);
        b.ports = vec![PortRange::new(1500, 1500), PortRange::new(3000, 3000)];
        let policy = Policy {
            rules: vec![a, b],
            ..Default::default()
        };
        let c = compile(&policy, 10).unwrap();
        let tcp = |p: usize| c.port_classes[p];
        assert_eq!(tcp(999), PORT_CLASS_ANY);
        assert_eq!(tcp(1000), tcp(1499));
        assert_eq!(tcp(1000), tcp(2000));
        assert_ne!(tcp(1500), tcp(1000));
        assert_ne!(tcp(3000), tcp(1500));
        assert_eq!(tcp(2001), PORT_CLASS_ANY);
        // UDP's block is untouched.
        assert!(c.port_classes[65536..2 * 65536]
            .iter()
            .all(|c| *c == PORT_CLASS_ANY));
    }
}
