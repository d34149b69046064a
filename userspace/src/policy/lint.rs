//! Over-broad and dead rules. Broadness is read from the rule (every port,
//! `*` sources); deadness is computed exactly: every packet kind of the cut
//! of [`super::space`] (first packets and fragments) is asked of the
//! reference evaluator, and a rule that matches some packet but decides
//! none is dead, named with the rules that decide instead.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::Serialize;
use wgbpf_common::{rule_id, severity, PROTO_ICMP, PROTO_ICMPV6};

use super::{
    model::{proto_has_ports, Action, Policy, Selector},
    reference::{evaluate_rules, rule_matches, rule_severity},
    space::{packet, pair_mask, regions_for, restricted, side_mask, unrestricted, Cell, Cells},
};

/// What is wrong with a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// An accept for every port of TCP, UDP or SCTP, or of every protocol
    /// (every ICMP type is not flagged: types are not services).
    AllPorts,
    /// An accept from `*`: any source address, peer or not.
    AnySource,
    /// `from` or `to` names nobody (an empty group, a tag no peer has).
    EmptyIdentities,
    /// Matches no packet at all (e.g. its sources and destinations share
    /// no address family).
    MatchesNothing,
    /// Matches packets but decides none: rules of the same severity earlier
    /// in the file, or more severe rules, decide all of them.
    Shadowed,
    /// An accept every packet of which a deny (or audit) rule decides; in
    /// this language a deny wins wherever it is in the file.
    CancelledByDeny,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// Index of the rule in the policy.
    pub rule: usize,
    pub kind: Kind,
    /// The rules that decide instead (shadowed, cancelled), by index.
    pub by: Vec<usize>,
    pub why: String,
}

/// Every warning for every rule, by rule then kind.
pub fn lint(policy: &Policy) -> Vec<Warning> {
    let mut out = Vec::new();
    let usage = usage(policy);
    for (i, r) in policy.rules.iter().enumerate() {
        let mut warn = |kind, by: Vec<usize>, why: String| {
            out.push(Warning {
                rule: i,
                kind,
                by,
                why,
            })
        };
        if r.action == Action::Accept && r.ports.is_empty() {
            match r.proto {
                None => warn(
                    Kind::AllPorts,
                    vec![],
                    "accepts every protocol and port".into(),
                ),
                // Every ICMP type is not a service listening: not flagged.
                Some(p) if proto_has_ports(p) && !matches!(p, PROTO_ICMP | PROTO_ICMPV6) => warn(
                    Kind::AllPorts,
                    vec![],
                    format!("accepts every {} port", super::model::proto_name(p)),
                ),
                Some(_) => {}
            }
        }
        if r.action == Action::Accept && r.src == Selector::Any {
            warn(
                Kind::AnySource,
                vec![],
                "accepts from `*`: any source address, peer or not".into(),
            );
        }
        let empty = |s: &Selector| matches!(s, Selector::Prefixes(p) if p.is_empty());
        if empty(&r.src) || empty(&r.dst) {
            let side = if empty(&r.src) { "from" } else { "to" };
            warn(
                Kind::EmptyIdentities,
                vec![],
                format!("`{side}` names no address: the rule matches nothing"),
            );
            continue;
        }
        let u = &usage[i];
        if !u.matched {
            warn(
                Kind::MatchesNothing,
                vec![],
                "matches no packet (its sources and destinations share no address family, \
                 or its protocol has no ports there)"
                    .into(),
            );
        } else if !u.decided {
            let by: Vec<usize> = u.deciders.iter().copied().collect();
            let names = by
                .iter()
                .map(|b| format!("`{}`", policy.rules[*b].name))
                .collect::<Vec<_>>()
                .join(", ");
            let cancelled = r.action == Action::Accept
                && by
                    .iter()
                    .all(|b| rule_severity(&policy.rules[*b]) > severity::ALLOW);
            if cancelled {
                warn(
                    Kind::CancelledByDeny,
                    by,
                    format!(
                        "never decides: deny rule(s) {names} override every flow it accepts \
                         (a deny wins wherever it is in the file)"
                    ),
                );
            } else {
                warn(
                    Kind::Shadowed,
                    by,
                    format!("never decides: {names} decide every packet it matches"),
                );
            }
        }
    }
    out
}

#[derive(Clone, Debug, Default)]
struct Usage {
    matched: bool,
    decided: bool,
    /// The rules deciding the packets it matches but does not decide.
    deciders: BTreeSet<usize>,
}

/// For every rule: does it match any packet, does it decide any, and who
/// decides the rest. One representative packet per distinct set of rules
/// selecting the address pair, per cell and per fragment of each protocol.
fn usage(policy: &Policy) -> Vec<Usage> {
    let mut usage = vec![Usage::default(); policy.rules.len()];
    let regions = regions_for(&[policy], &[]);
    let cells = Cells::of(&[policy]);
    for v6 in [false, true] {
        let reps: Vec<std::net::IpAddr> = regions
            .iter()
            .filter(|r| r.rep.is_ipv6() == v6)
            .map(|r| r.rep)
            .collect();
        // Sources (destinations) alike to every rule are one.
        let srcs = distinct_by(policy, &reps, true);
        let dsts = distinct_by(policy, &reps, false);
        let family_cells = cells.family(v6);
        let mut fragments: Vec<Cell> = Vec::new();
        for c in family_cells {
            if !fragments.iter().any(|f| f.proto == c.proto) {
                fragments.push(*c);
            }
        }
        let mut done: HashSet<Vec<u64>> = HashSet::new();
        for (s, sm) in &srcs {
            for (d, dm) in &dsts {
                let (s, d) = (*s, *d);
                let m = pair_mask(sm, dm);
                // No rule selects the pair: nothing to learn about rules.
                if m.iter().all(|w| *w == 0) || !done.insert(m.clone()) {
                    continue;
                }
                let packets = family_cells
                    .iter()
                    .map(|c| packet(s, d, c, false))
                    .chain(fragments.iter().map(|c| packet(s, d, c, true)));
                // The rules selecting the pair, alone (same answers).
                let (sub, index) = restricted(policy, &m);
                for pkt in packets {
                    let winner = unrestricted(evaluate_rules(&sub, &pkt), &index).rule;
                    for (r, &i) in sub.rules.iter().zip(&index) {
                        if !rule_matches(r, &pkt) {
                            continue;
                        }
                        let u = &mut usage[i];
                        u.matched = true;
                        if winner == i as u32 {
                            u.decided = true;
                        } else if winner != rule_id::DEFAULT {
                            u.deciders.insert(winner as usize);
                        }
                    }
                }
            }
        }
    }
    usage
}

/// One address per distinct set of rules whose sources (or destinations)
/// hold it, with that set.
fn distinct_by(
    policy: &Policy,
    reps: &[std::net::IpAddr],
    src: bool,
) -> Vec<(std::net::IpAddr, Vec<u64>)> {
    let mut seen: BTreeMap<Vec<u64>, std::net::IpAddr> = BTreeMap::new();
    for &a in reps {
        seen.entry(side_mask(policy, a, src)).or_insert(a);
    }
    seen.into_iter().map(|(m, a)| (a, m)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::{PortRange, Rule};

    fn net(s: &str) -> ipnet::IpNet {
        s.parse().unwrap()
    }

    fn rule(
        name: &str,
        action: Action,
        src: &[&str],
        dst: &[&str],
        proto: Option<u8>,
        ports: &[(u16, u16)],
    ) -> Rule {
        let sel = |s: &[&str]| {
            if s == ["*"] {
                Selector::Any
            } else {
                Selector::Prefixes(s.iter().map(|n| net(n)).collect())
            }
        };
        Rule {
            name: name.into(),
            action,
            audit: false,
            src: sel(src),
            dst: sel(dst),
            proto,
            ports: ports.iter().map(|(a, b)| PortRange::new(*a, *b)).collect(),
        }
    }

    fn kinds(p: &Policy) -> Vec<(usize, Kind, Vec<usize>)> {
        lint(p)
            .into_iter()
            .map(|w| (w.rule, w.kind, w.by))
            .collect()
    }

    #[test]
    fn each_warning_for_its_rule() {
        use Action::*;
        let p = Policy {
            rules: vec![
                // 0: ssh to the /24, fine.
                rule(
                    "ssh",
                    Accept,
                    &["10.0.0.2/32"],
                    &["10.0.1.0/24"],
                    Some(6),
                    &[(22, 22)],
                ),
                // 1: inside 0 on every point: shadowed by the earlier 0.
                rule(
                    "ssh-one",
                    Accept,
                    &["10.0.0.2/32"],
                    &["10.0.1.5/32"],
                    Some(6),
                    &[(22, 22)],
                ),
                // 2: not shadowed: port 23 is its own.
                rule(
                    "ssh-telnet",
                    Accept,
                    &["10.0.0.2/32"],
                    &["10.0.1.5/32"],
                    Some(6),
                    &[(22, 23)],
                ),
                // 3: every port, cancelled by the deny after it (4).
                rule(
                    "all-db",
                    Accept,
                    &["10.0.0.3/32"],
                    &["10.0.2.1/32"],
                    Some(6),
                    &[],
                ),
                rule(
                    "no-db",
                    Deny,
                    &["10.0.0.0/24"],
                    &["10.0.2.0/24"],
                    Some(6),
                    &[],
                ),
                // 5: `*` source, every protocol.
                rule("world-web", Accept, &["*"], &["10.0.3.1/32"], None, &[]),
                // 6: empty.
                rule(
                    "nobody",
                    Accept,
                    &[],
                    &["10.0.3.1/32"],
                    Some(6),
                    &[(80, 80)],
                ),
                // 7: IPv4 to IPv6: matches nothing.
                rule(
                    "mixed",
                    Accept,
                    &["10.0.0.2/32"],
                    &["fd00::1/128"],
                    Some(6),
                    &[(80, 80)],
                ),
                // 8: a deny inside an earlier deny (4) for the fragments too.
                rule(
                    "no-db-again",
                    Deny,
                    &["10.0.0.3/32"],
                    &["10.0.2.1/32"],
                    Some(6),
                    &[(5432, 5432)],
                ),
            ],
            ..Default::default()
        };
        assert_eq!(
            kinds(&p),
            vec![
                (1, Kind::Shadowed, vec![0]),
                (3, Kind::AllPorts, vec![]),
                (3, Kind::CancelledByDeny, vec![4]),
                (5, Kind::AllPorts, vec![]),
                (5, Kind::AnySource, vec![]),
                (6, Kind::EmptyIdentities, vec![]),
                (7, Kind::MatchesNothing, vec![]),
                (8, Kind::Shadowed, vec![4]),
            ]
        );
    }

    /// On random policies over a space small enough to try every packet,
    /// the lint's dead and never-matching rules are exactly those the
    /// evaluator shows.
    #[test]
    fn deadness_equals_brute_force_on_random_policies() {
        use crate::policy::reference::PacketMeta;
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(99);
        let prefixes: Vec<ipnet::IpNet> = [
            "10.0.0.0/28",
            "10.0.0.0/30",
            "10.0.0.4/30",
            "10.0.0.1/32",
            "10.0.0.5/32",
            "10.0.0.8/29",
            "10.0.0.9/32",
            "10.0.0.14/31",
        ]
        .iter()
        .map(|p| net(p))
        .collect();
        let addrs: Vec<std::net::IpAddr> = (0..16u8)
            .map(|i| std::net::IpAddr::V4([10, 0, 0, i].into()))
            .chain(["192.0.2.1".parse().unwrap()])
            .collect();
        let (mut dead_seen, mut alive_seen) = (0, 0);
        for _ in 0..70 {
            let n = rng.gen_range(2..9);
            let rules: Vec<Rule> = (0..n)
                .map(|i| {
                    let mut sel = || {
                        if rng.gen_bool(0.2) {
                            Selector::Any
                        } else {
                            let k = rng.gen_range(0..3);
                            Selector::Prefixes(
                                (0..k)
                                    .map(|_| prefixes[rng.gen_range(0..prefixes.len())])
                                    .collect(),
                            )
                        }
                    };
                    let (src, dst) = (sel(), sel());
                    let proto = [None, Some(6), Some(17), Some(47)][rng.gen_range(0..4)];
                    let ports = if matches!(proto, Some(6 | 17)) && rng.gen_bool(0.7) {
                        (0..rng.gen_range(1..3))
                            .map(|_| {
                                let a = rng.gen_range(0..20);
                                PortRange::new(a, a + rng.gen_range(0..6))
                            })
                            .collect()
                    } else {
                        vec![]
                    };
                    let action = if rng.gen_bool(0.35) {
                        Action::Deny
                    } else {
                        Action::Accept
                    };
                    Rule {
                        name: format!("r{i}"),
                        action,
                        audit: action == Action::Deny && rng.gen_bool(0.3),
                        src,
                        dst,
                        proto,
                        ports,
                    }
                })
                .collect();
            let p = Policy {
                rules,
                ..Default::default()
            };
            let mut matched = vec![false; n];
            let mut decided = vec![false; n];
            for &s in &addrs {
                for &d in &addrs {
                    for proto in [6u8, 17, 47, 1] {
                        for port in (0..=26).chain([65535]) {
                            for fragment in [false, true] {
                                let pkt = PacketMeta {
                                    src: s,
                                    dst: d,
                                    proto,
                                    fragment,
                                    sport: 1,
                                    dport: port,
                                    icmp_type: 0,
                                    icmp_id: 0,
                                    tcp_flags: 2,
                                    frag: None,
                                    quoted: None,
                                };
                                let w = evaluate_rules(&p, &pkt).rule;
                                for (i, r) in p.rules.iter().enumerate() {
                                    if rule_matches(r, &pkt) {
                                        matched[i] = true;
                                        decided[i] |= w == i as u32;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            let warnings = lint(&p);
            for i in 0..n {
                let has = |k: Kind| warnings.iter().any(|w| w.rule == i && w.kind == k);
                let dead = has(Kind::Shadowed) || has(Kind::CancelledByDeny);
                let nothing = has(Kind::MatchesNothing) || has(Kind::EmptyIdentities);
                assert_eq!(nothing, !matched[i], "rule {i} of {p:#?}");
                assert_eq!(dead, matched[i] && !decided[i], "rule {i} of {p:#?}");
                if dead {
                    dead_seen += 1;
                } else if matched[i] {
                    alive_seen += 1;
                }
            }
        }
        assert!(
            dead_seen > 10 && alive_seen > 100,
            "{dead_seen} dead, {alive_seen} alive"
        );
    }

    #[test]
    fn an_accept_deciding_only_where_no_deny_reaches_is_alive() {
        use Action::*;
        // The deny covers the accept's ports but not one of its sources;
        // a deny covering every source but a single port leaves it alive.
        let p = Policy {
            rules: vec![
                rule(
                    "web",
                    Accept,
                    &["10.0.0.0/30"],
                    &["10.0.1.1/32"],
                    Some(6),
                    &[(80, 81)],
                ),
                rule(
                    "no-web",
                    Deny,
                    &["10.0.0.1/32", "10.0.0.2/32", "10.0.0.3/32"],
                    &["10.0.1.1/32"],
                    Some(6),
                    &[(80, 81)],
                ),
                rule(
                    "web2",
                    Accept,
                    &["10.0.0.9/32"],
                    &["10.0.1.1/32"],
                    Some(6),
                    &[(80, 81)],
                ),
                rule(
                    "no-80",
                    Deny,
                    &["*"],
                    &["10.0.1.1/32"],
                    Some(6),
                    &[(80, 80)],
                ),
            ],
            ..Default::default()
        };
        assert_eq!(kinds(&p), vec![]);
        // With 10.0.0.0 denied too, `web` is cancelled, by both denies.
        let mut q = p.clone();
        q.rules[1].src = Selector::Prefixes(vec![net("10.0.0.0/30")]);
        assert_eq!(kinds(&q), vec![(0, Kind::CancelledByDeny, vec![1])]);
    }
}
