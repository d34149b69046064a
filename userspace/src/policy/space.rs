//! The packet space cut where a policy's verdict can change, so that a few
//! representative packets answer for all of it.
//!
//! - Addresses: every prefix the policy (or a caller) names, plus both
//!   families' whole space, is an atom; an atom's *region* is the atom minus
//!   the longer atoms inside it. Every selector is a union of atoms, so it
//!   either holds a whole region or none of it.
//! - Protocols and ports, per family: each protocol a rule names, with its
//!   ports cut at the boundaries of the ranges rules name (ICMP types: 0–255),
//!   and one cell for every protocol no rule names ("other").
//!
//! On a region × region × cell the set of matching rules is constant, so the
//! reference evaluator's verdict on one packet is the verdict of all of
//! them. The matrix, the lint and the diff all stand on this.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    rc::Rc,
};

use ipnet::IpNet;
use serde::Serialize;
use wgbpf_common::{severity, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP, TCP_SYN};

use super::{
    model::{proto_name, Policy, PortRange, Selector},
    reference::{evaluate_rules, finish, PacketMeta, Verdict},
};

/// Addresses whose longest named prefix is `net`: they all match the same
/// selectors. `rep` is one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub net: IpNet,
    pub rep: IpAddr,
}

impl Region {
    /// The addresses inside no named prefix but the family's whole space.
    pub fn is_world(&self) -> bool {
        self.net.prefix_len() == 0
    }
}

/// Every prefix a policy names: rule selectors, peers, the gateway.
pub fn policy_prefixes(policy: &Policy) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = policy.local.clone();
    for p in &policy.peers {
        out.extend(&p.allowed_ips);
    }
    for r in &policy.rules {
        for s in [&r.src, &r.dst] {
            if let Selector::Prefixes(ps) = s {
                out.extend(ps);
            }
        }
    }
    out
}

/// The non-empty regions of `prefixes` and of both families' whole space.
pub fn regions(prefixes: impl IntoIterator<Item = IpNet>) -> Vec<Region> {
    let mut set: BTreeSet<IpNet> = prefixes.into_iter().map(|n| n.trunc()).collect();
    set.insert("0.0.0.0/0".parse().unwrap());
    set.insert("::/0".parse().unwrap());
    // (v6?, first, last, net), sorted by first address then shortest first.
    let mut spans: Vec<(bool, u128, u128, IpNet)> = set.iter().map(span).collect();
    spans.sort_by_key(|(v6, first, last, _)| (*v6, *first, std::cmp::Reverse(*last)));
    let mut out = Vec::new();
    for &(v6, first, last, net) in &spans {
        // The first address of the atom inside none of the longer atoms in
        // it; candidates only grow, so one pass over the atoms inside.
        let mut idx = spans.partition_point(|s| (s.0, s.1) < (v6, first));
        let mut candidate = first;
        let mut empty = false;
        loop {
            let mut inner: Option<u128> = None;
            while idx < spans.len() && spans[idx].0 == v6 && spans[idx].1 <= candidate {
                let s = spans[idx];
                idx += 1;
                if s.3 != net && s.2 <= last && s.2 >= candidate {
                    inner = inner.max(Some(s.2));
                }
            }
            match inner {
                None => break,
                Some(end) if end >= last => {
                    empty = true;
                    break;
                }
                Some(end) => candidate = end + 1,
            }
        }
        if !empty {
            let rep = if v6 {
                IpAddr::V6(candidate.into())
            } else {
                IpAddr::V4((candidate as u32).into())
            };
            out.push(Region { net, rep });
        }
    }
    out
}

fn span(n: &IpNet) -> (bool, u128, u128, IpNet) {
    match n {
        IpNet::V4(v) => (
            false,
            u32::from(v.network()) as u128,
            u32::from(v.broadcast()) as u128,
            *n,
        ),
        IpNet::V6(v) => (true, u128::from(v.network()), u128::from(v.broadcast()), *n),
    }
}

/// A protocol as the analysis tells them apart: one a rule names, or any
/// of those no rule names (all alike to the policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Num(u8),
    Other,
}

impl Proto {
    pub fn name(&self) -> String {
        match self {
            Proto::Num(p) => proto_name(*p),
            Proto::Other => "other".into(),
        }
    }
    /// Ports (ICMP: types) that exist for it: 0–255 for the ICMPs.
    pub fn full(&self) -> PortRange {
        match self {
            Proto::Num(PROTO_ICMP | PROTO_ICMPV6) => PortRange::new(0, 255),
            _ => PortRange::new(0, u16::MAX),
        }
    }
}

/// A piece of one family's protocol/port space on which no rule's match
/// changes. For a protocol without ports in the family, `ports` is all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    pub proto: Proto,
    /// The protocol number the representative packet carries.
    pub number: u8,
    pub ports: PortRange,
}

/// The cells of both families, for one or more policies (a diff cuts at
/// the boundaries of both).
#[derive(Clone, Debug)]
pub struct Cells {
    pub named: BTreeSet<u8>,
    pub v4: Vec<Cell>,
    pub v6: Vec<Cell>,
}

/// Whether `proto` has ports (ICMP: types) in the family, as the data plane
/// parses it.
fn ported(proto: u8, v6: bool) -> bool {
    match proto {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => true,
        PROTO_ICMP => !v6,
        PROTO_ICMPV6 => v6,
        _ => false,
    }
}

impl Cells {
    pub fn of(policies: &[&Policy]) -> Cells {
        let mut named = BTreeSet::new();
        let mut cuts: BTreeMap<u8, BTreeSet<u32>> = BTreeMap::new();
        for r in policies.iter().flat_map(|p| &p.rules) {
            if let Some(p) = r.proto {
                named.insert(p);
                let c = cuts.entry(p).or_default();
                for range in &r.ports {
                    c.insert(range.first as u32);
                    c.insert(range.last as u32 + 1);
                }
            }
        }
        let other = (1..=255u8).find(|p| !named.contains(p));
        let family = |v6: bool| {
            let mut cells = Vec::new();
            for &p in &named {
                let proto = Proto::Num(p);
                if !ported(p, v6) {
                    cells.push(Cell {
                        proto,
                        number: p,
                        ports: PortRange::new(0, u16::MAX),
                    });
                    continue;
                }
                let full = proto.full();
                let mut bounds: Vec<u32> = vec![full.first as u32];
                bounds.extend(
                    cuts[&p]
                        .iter()
                        .filter(|c| **c > full.first as u32 && **c <= full.last as u32),
                );
                bounds.push(full.last as u32 + 1);
                for w in bounds.windows(2) {
                    cells.push(Cell {
                        proto,
                        number: p,
                        ports: PortRange::new(w[0] as u16, (w[1] - 1) as u16),
                    });
                }
            }
            if let Some(o) = other {
                cells.push(Cell {
                    proto: Proto::Other,
                    number: o,
                    ports: PortRange::new(0, u16::MAX),
                });
            }
            cells
        };
        Cells {
            v4: family(false),
            v6: family(true),
            named,
        }
    }

    pub fn family(&self, v6: bool) -> &[Cell] {
        if v6 {
            &self.v6
        } else {
            &self.v4
        }
    }

    /// Which of the analysis's protocols `proto` is.
    pub fn proto(&self, proto: u8) -> Proto {
        if self.named.contains(&proto) {
            Proto::Num(proto)
        } else {
            Proto::Other
        }
    }
}

/// The first packet of a flow in `cell` (the cell's first port), or a
/// fragment of its protocol.
pub fn packet(src: IpAddr, dst: IpAddr, cell: &Cell, fragment: bool) -> PacketMeta {
    let icmp =
        ported(cell.number, src.is_ipv6()) && matches!(cell.number, PROTO_ICMP | PROTO_ICMPV6);
    let port = cell.ports.first;
    PacketMeta {
        src,
        dst,
        proto: cell.number,
        fragment,
        sport: 40000,
        dport: if icmp { 0 } else { port },
        icmp_type: if icmp { port as u8 } else { 0 },
        icmp_id: 0,
        tcp_flags: if cell.number == PROTO_TCP { TCP_SYN } else { 0 },
        // A later fragment of no datagram seen: the any-port rule.
        frag: None,
        quoted: None,
    }
}

/// The rules whose source (`src`) or destination selector holds `addr`,
/// as a bitset.
pub fn side_mask(policy: &Policy, addr: IpAddr, src: bool) -> Vec<u64> {
    let mut mask = vec![0u64; policy.rules.len().div_ceil(64)];
    for (i, r) in policy.rules.iter().enumerate() {
        let sel = if src { &r.src } else { &r.dst };
        if sel.matches(addr) {
            mask[i / 64] |= 1 << (i % 64);
        }
    }
    mask
}

/// The rules whose selectors hold both addresses: all the evaluator's
/// verdict depends on besides the protocol and port.
pub fn pair_mask(src: &[u64], dst: &[u64]) -> Vec<u64> {
    src.iter().zip(dst).map(|(a, b)| a & b).collect()
}

/// The policy as the evaluator sees it for one address pair: the rules
/// selecting the pair (`mask`), in their order, their selectors made `*`
/// (they hold both addresses), and each one's index in `policy`. For
/// packets of that pair the evaluator answers exactly as on `policy`, rule
/// indexes mapped back, without testing the selectors' prefixes again per
/// packet.
pub fn restricted(policy: &Policy, mask: &[u64]) -> (Policy, Vec<usize>) {
    let mut rules = Vec::new();
    let mut index = Vec::new();
    for (i, r) in policy.rules.iter().enumerate() {
        if mask[i / 64] & (1 << (i % 64)) != 0 {
            rules.push(super::model::Rule {
                src: Selector::Any,
                dst: Selector::Any,
                ..r.clone()
            });
            index.push(i);
        }
    }
    let p = Policy {
        rules,
        audit: policy.audit,
        link_local: policy.link_local,
        ..Default::default()
    };
    (p, index)
}

/// A verdict of a [`restricted`] policy, with the rule's index in the whole.
pub fn unrestricted(v: Verdict, index: &[usize]) -> Verdict {
    match index.get(v.rule as usize) {
        Some(i) => Verdict {
            rule: *i as u32,
            ..v
        },
        None => v,
    }
}

/// What a policy decides for one address pair, per cell of its family.
#[derive(Debug, PartialEq, Eq)]
pub struct PairVerdicts {
    pub verdicts: Vec<Verdict>,
    /// The flows accepted, and those passed as audited.
    pub accepted: FlowSet,
    pub audited: FlowSet,
}

/// A policy's verdicts over pairs of regions, asked of the reference
/// evaluator once per distinct set of rules selecting the pair.
pub struct Verdicts<'a> {
    pub policy: &'a Policy,
    pub cells: &'a Cells,
    regions: &'a [Region],
    /// Per region: the rules whose sources, and whose destinations, hold it.
    src_masks: Vec<Vec<u64>>,
    dst_masks: Vec<Vec<u64>>,
    cache: HashMap<(bool, Vec<u64>), Rc<PairVerdicts>>,
}

impl<'a> Verdicts<'a> {
    pub fn new(policy: &'a Policy, cells: &'a Cells, regions: &'a [Region]) -> Self {
        Self {
            policy,
            cells,
            regions,
            src_masks: regions
                .iter()
                .map(|r| side_mask(policy, r.rep, true))
                .collect(),
            dst_masks: regions
                .iter()
                .map(|r| side_mask(policy, r.rep, false))
                .collect(),
            cache: HashMap::new(),
        }
    }

    /// Regions `src` to `dst` (indexes into the regions; the same family):
    /// default deny and interface audit mode applied.
    pub fn pair(&mut self, src: usize, dst: usize) -> Rc<PairVerdicts> {
        let (s, d) = (self.regions[src].rep, self.regions[dst].rep);
        let v6 = s.is_ipv6();
        let key = (v6, pair_mask(&self.src_masks[src], &self.dst_masks[dst]));
        if let Some(v) = self.cache.get(&key) {
            return v.clone();
        }
        let cells = self.cells.family(v6);
        let (sub, index) = restricted(self.policy, &key.1);
        let verdicts: Vec<Verdict> = cells
            .iter()
            .map(|c| {
                let v = finish(&sub, evaluate_rules(&sub, &packet(s, d, c, false)));
                unrestricted(v, &index)
            })
            .collect();
        let with = |sev: u8| {
            FlowSet::of(
                cells
                    .iter()
                    .zip(&verdicts)
                    .filter(|(_, v)| v.severity == sev)
                    .map(|(c, _)| (c.proto, c.ports)),
            )
        };
        let v = Rc::new(PairVerdicts {
            accepted: with(severity::ALLOW),
            audited: with(severity::AUDIT),
            verdicts,
        });
        self.cache.insert(key, v.clone());
        v
    }
}

/// A set of (protocol, port) flows: per protocol, sorted disjoint ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowSet {
    map: BTreeMap<Proto, Vec<PortRange>>,
}

fn merge_ranges(mut v: Vec<PortRange>) -> Vec<PortRange> {
    v.sort();
    let mut out: Vec<PortRange> = Vec::new();
    for r in v {
        match out.last_mut() {
            Some(l) if r.first as u32 <= l.last as u32 + 1 => l.last = l.last.max(r.last),
            _ => out.push(r),
        }
    }
    out
}

impl FlowSet {
    pub fn of(items: impl IntoIterator<Item = (Proto, PortRange)>) -> FlowSet {
        let mut map: BTreeMap<Proto, Vec<PortRange>> = BTreeMap::new();
        for (p, r) in items {
            // A protocol without ports in one family (ICMP in IPv6) and with
            // types in the other: all of it is its types.
            let f = p.full();
            if r.first <= f.last {
                map.entry(p)
                    .or_default()
                    .push(PortRange::new(r.first, r.last.min(f.last)));
            }
        }
        FlowSet {
            map: map.into_iter().map(|(p, v)| (p, merge_ranges(v))).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Proto, &Vec<PortRange>)> {
        self.map.iter()
    }

    pub fn contains(&self, proto: Proto, port: u16) -> bool {
        self.map
            .get(&proto)
            .is_some_and(|rs| rs.iter().any(|r| r.contains(port)))
    }

    pub fn union(&self, o: &FlowSet) -> FlowSet {
        FlowSet::of(
            self.map
                .iter()
                .chain(o.map.iter())
                .flat_map(|(p, rs)| rs.iter().map(move |r| (*p, *r))),
        )
    }

    pub fn intersect(&self, o: &FlowSet) -> FlowSet {
        let mut items = Vec::new();
        for (p, a) in &self.map {
            let Some(b) = o.map.get(p) else { continue };
            for x in a {
                for y in b {
                    let (f, l) = (x.first.max(y.first), x.last.min(y.last));
                    if f <= l {
                        items.push((*p, PortRange::new(f, l)));
                    }
                }
            }
        }
        FlowSet::of(items)
    }

    pub fn minus(&self, o: &FlowSet) -> FlowSet {
        let mut items = Vec::new();
        for (p, a) in &self.map {
            let holes = o.map.get(p).cloned().unwrap_or_default();
            for x in a {
                let mut at = x.first as u32;
                for h in &holes {
                    if (h.last as u32) < at || h.first > x.last {
                        continue;
                    }
                    if (h.first as u32) > at {
                        items.push((*p, PortRange::new(at as u16, h.first - 1)));
                    }
                    at = h.last as u32 + 1;
                }
                if at <= x.last as u32 {
                    items.push((*p, PortRange::new(at as u16, x.last)));
                }
            }
        }
        FlowSet::of(items)
    }

    /// Every port (ICMP type) of the protocol.
    fn full(&self, p: Proto) -> bool {
        let f = p.full();
        self.map
            .get(&p)
            .is_some_and(|rs| rs.iter().any(|r| r.first <= f.first && r.last >= f.last))
    }

    /// `tcp 22,80-81; icmp; other protocols`, `any` (`named`: the protocols
    /// the analysis tells apart), or `-` when empty.
    pub fn describe(&self, named: &BTreeSet<u8>) -> String {
        if self.map.is_empty() {
            return "-".into();
        }
        if self.full(Proto::Other) && named.iter().all(|p| self.full(Proto::Num(*p))) {
            return "any".into();
        }
        self.parts().join("; ")
    }

    fn parts(&self) -> Vec<String> {
        self.map
            .iter()
            .map(|(p, rs)| match p {
                Proto::Other => "other protocols".to_string(),
                _ if self.full(*p) => p.name(),
                _ => format!(
                    "{} {}",
                    p.name(),
                    rs.iter()
                        .map(|r| r.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            })
            .collect()
    }

    /// `[{"proto": "tcp", "ports": ["22", "80-81"]}, {"proto": "other", ...}]`;
    /// `ports` is empty for every port.
    pub fn json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.map
                .iter()
                .map(|(p, rs)| {
                    let ports: Vec<String> = if self.full(*p) {
                        Vec::new()
                    } else {
                        rs.iter().map(|r| r.to_string()).collect()
                    };
                    serde_json::json!({ "proto": p.name(), "ports": ports })
                })
                .collect(),
        )
    }
}

/// A named set of addresses: a row or column of the matrix, one side of a
/// diff. `world` also takes the addresses inside no named prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Named {
    pub name: String,
    pub nets: Vec<IpNet>,
    pub world: bool,
}

impl Named {
    pub fn new(name: impl Into<String>, nets: Vec<IpNet>) -> Named {
        Named {
            name: name.into(),
            nets,
            world: false,
        }
    }

    /// The addresses no prefix of the policy names.
    pub fn world(name: impl Into<String>) -> Named {
        Named {
            name: name.into(),
            nets: Vec::new(),
            world: true,
        }
    }

    /// A region is wholly inside or wholly outside (the names' prefixes are
    /// atoms of the cut).
    pub fn holds(&self, r: &Region) -> bool {
        if self.world {
            return r.is_world();
        }
        self.nets.iter().any(|n| n.contains(&r.rep))
    }
}

/// The regions of a policy (or two) with the names' prefixes cut in too.
pub fn regions_for(policies: &[&Policy], names: &[&Named]) -> Vec<Region> {
    regions(
        policies
            .iter()
            .flat_map(|p| policy_prefixes(p))
            .chain(names.iter().flat_map(|n| n.nets.iter().copied())),
    )
}

/// Is `v` accepted (not deny, not audit)?
pub fn accepted(v: &Verdict) -> bool {
    v.severity == severity::ALLOW
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn regions_skip_inner_prefixes_and_drop_covered_ones() {
        let r = regions(nets(&[
            "10.0.0.0/8",
            "10.0.0.0/24",
            "10.0.0.0/31",
            "10.0.0.0/32",
            "10.0.0.1/32",
        ]));
        let rep = |n: &str| {
            r.iter()
                .find(|x| x.net == n.parse::<IpNet>().unwrap())
                .map(|x| x.rep.to_string())
        };
        assert_eq!(rep("10.0.0.0/8").as_deref(), Some("10.0.1.0"));
        assert_eq!(rep("10.0.0.0/24").as_deref(), Some("10.0.0.2"));
        // Wholly covered by its two halves: no address of its own.
        assert_eq!(rep("10.0.0.0/31"), None);
        assert_eq!(rep("10.0.0.1/32").as_deref(), Some("10.0.0.1"));
        assert_eq!(rep("0.0.0.0/0").as_deref(), Some("0.0.0.0"));
        assert_eq!(rep("::/0").as_deref(), Some("::"));
        // Every region's representative's longest named prefix is its own.
        for x in &r {
            let longest = r
                .iter()
                .map(|y| y.net)
                .chain(["10.0.0.0/31".parse().unwrap()])
                .filter(|n| n.contains(&x.rep))
                .max_by_key(|n| n.prefix_len())
                .unwrap();
            assert_eq!(longest, x.net, "{x:?}");
        }
    }

    #[test]
    fn flow_sets_merge_intersect_and_subtract() {
        let tcp = Proto::Num(6);
        let a = FlowSet::of([(tcp, PortRange::new(20, 30)), (tcp, PortRange::new(31, 40))]);
        assert_eq!(a.describe(&[6].into()), "tcp 20-40");
        let b = FlowSet::of([
            (tcp, PortRange::new(25, 50)),
            (Proto::Other, Proto::Other.full()),
        ]);
        assert_eq!(a.intersect(&b).describe(&[6].into()), "tcp 25-40");
        assert_eq!(a.minus(&b).describe(&[6].into()), "tcp 20-24");
        assert_eq!(
            b.minus(&a).describe(&[6].into()),
            "tcp 41-50; other protocols"
        );
        let all = FlowSet::of([(tcp, tcp.full()), (Proto::Other, Proto::Other.full())]);
        assert_eq!(all.describe(&[6].into()), "any");
        assert_eq!(FlowSet::default().describe(&[6].into()), "-");
    }
}
