//! The flows whose verdict two policies disagree on, by pair of named
//! address sets and protocol/port ranges: the cut of [`super::space`] made
//! at both policies' boundaries, each piece asked of the reference
//! evaluator under both. "Allowed" is accepted; an audited flow counts as
//! denied (it would be, once enforced).

use std::{collections::BTreeSet, rc::Rc};

use serde_json::json;

use super::{
    model::Policy,
    space::{regions_for, Cells, FlowSet, Named, PairVerdicts, Verdicts},
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub from: String,
    pub to: String,
    /// Accepted by the new policy, not by the old, for some address of
    /// `from` to some address of `to`.
    pub newly_allowed: FlowSet,
    /// Accepted by the old policy, not by the new.
    pub newly_denied: FlowSet,
}

#[derive(Clone, Debug)]
pub struct Diff {
    pub changes: Vec<Change>,
    /// The protocols either policy names (the others: "other protocols").
    pub named: BTreeSet<u8>,
}

/// The changes between every two names (a name to itself too: a network
/// reaching its own hosts through the gateway).
pub fn diff(old: &Policy, new: &Policy, names: &[Named]) -> Diff {
    let refs: Vec<&Named> = names.iter().collect();
    let regions = regions_for(&[old, new], &refs);
    let cells = Cells::of(&[old, new]);
    let mut before = Verdicts::new(old, &cells, &regions);
    let mut after = Verdicts::new(new, &cells, &regions);
    let inside: Vec<Vec<usize>> = names
        .iter()
        .map(|n| {
            (0..regions.len())
                .filter(|i| n.holds(&regions[*i]))
                .collect()
        })
        .collect();
    let mut changes = Vec::new();
    for (fi, from) in names.iter().enumerate() {
        for (ti, to) in names.iter().enumerate() {
            // The distinct (old, new) verdict tables of the pair's regions.
            let mut seen: Vec<(Rc<PairVerdicts>, Rc<PairVerdicts>)> = Vec::new();
            for &s in &inside[fi] {
                let v6 = regions[s].rep.is_ipv6();
                for &d in inside[ti]
                    .iter()
                    .filter(|d| regions[**d].rep.is_ipv6() == v6)
                {
                    let (o, n) = (before.pair(s, d), after.pair(s, d));
                    if o.accepted != n.accepted
                        && !seen
                            .iter()
                            .any(|(a, b)| Rc::ptr_eq(a, &o) && Rc::ptr_eq(b, &n))
                    {
                        seen.push((o, n));
                    }
                }
            }
            let mut allowed = FlowSet::default();
            let mut denied = FlowSet::default();
            for (o, n) in &seen {
                allowed = allowed.union(&n.accepted.minus(&o.accepted));
                denied = denied.union(&o.accepted.minus(&n.accepted));
            }
            if !allowed.is_empty() || !denied.is_empty() {
                changes.push(Change {
                    from: from.name.clone(),
                    to: to.name.clone(),
                    newly_allowed: allowed,
                    newly_denied: denied,
                });
            }
        }
    }
    Diff {
        changes,
        named: cells.named,
    }
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// One line per change: `+ alice -> server: tcp 22` (newly allowed),
    /// `- …` (newly denied).
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.changes {
            if !c.newly_allowed.is_empty() {
                out.push(format!(
                    "+ {} -> {}: {}",
                    c.from,
                    c.to,
                    c.newly_allowed.describe(&self.named)
                ));
            }
            if !c.newly_denied.is_empty() {
                out.push(format!(
                    "- {} -> {}: {}",
                    c.from,
                    c.to,
                    c.newly_denied.describe(&self.named)
                ));
            }
        }
        out
    }

    /// `[{"from", "to", "newly_allowed": [{"proto", "ports"}], "newly_denied"}]`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.changes
                .iter()
                .map(|c| {
                    json!({
                        "from": c.from, "to": c.to,
                        "newly_allowed": c.newly_allowed.json(),
                        "newly_denied": c.newly_denied.json(),
                    })
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{
        model::{Action, PortRange, Rule, Selector},
        reference::{evaluate, PacketMeta},
        space::Proto,
    };
    use rand::{Rng, SeedableRng};
    use wgbpf_common::severity;

    fn sel(s: &[&str]) -> Selector {
        Selector::Prefixes(s.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn accept(src: &[&str], dst: &[&str], proto: u8, ports: &[(u16, u16)]) -> Rule {
        Rule {
            name: "r".into(),
            action: Action::Accept,
            audit: false,
            src: sel(src),
            dst: sel(dst),
            proto: Some(proto),
            ports: ports.iter().map(|(a, b)| PortRange::new(*a, *b)).collect(),
        }
    }

    #[test]
    fn changes_are_what_the_evaluator_says_on_random_packets() {
        let old = Policy {
            rules: vec![
                accept(&["10.0.0.2/32"], &["10.0.1.0/24"], 6, &[(20, 30)]),
                accept(&["10.0.0.3/32"], &["10.0.1.0/24"], 17, &[(53, 53)]),
            ],
            ..Default::default()
        };
        let mut new = old.clone();
        new.rules[0].ports = vec![PortRange::new(25, 40)];
        new.rules.push(Rule {
            action: Action::Deny,
            ..accept(&["10.0.0.0/24"], &["10.0.1.7/32"], 6, &[(28, 28)])
        });
        let names = vec![
            Named::new("a", vec!["10.0.0.2/32".parse().unwrap()]),
            Named::new("b", vec!["10.0.0.3/32".parse().unwrap()]),
            Named::new("net", vec!["10.0.1.0/24".parse().unwrap()]),
        ];
        let d = diff(&old, &new, &names);
        assert_eq!(
            d.lines(),
            vec!["+ a -> net: tcp 31-40", "- a -> net: tcp 20-24,28"]
        );
        // Every change it reports is a real change, every real change is in it.
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let c = &d.changes[0];
        for _ in 0..5000 {
            let dst = std::net::IpAddr::V4([10, 0, 1, rng.gen()].into());
            let port = rng.gen_range(0..100);
            let proto = if rng.gen() { 6 } else { 17 };
            let pkt = PacketMeta {
                src: "10.0.0.2".parse().unwrap(),
                dst,
                proto,
                fragment: false,
                sport: 1,
                dport: port,
                icmp_type: 0,
                icmp_id: 0,
                tcp_flags: 2,
                frag: None,
                quoted: None,
            };
            let (o, n) = (evaluate(&old, &pkt).severity, evaluate(&new, &pkt).severity);
            let key = if proto == 6 {
                Proto::Num(6)
            } else {
                Proto::Num(17)
            };
            let a = n == severity::ALLOW && o != severity::ALLOW;
            let r = o == severity::ALLOW && n != severity::ALLOW;
            if a {
                assert!(c.newly_allowed.contains(key, port), "{pkt:?}");
            }
            if r {
                assert!(c.newly_denied.contains(key, port), "{pkt:?}");
            }
            // Outside 10.0.1.7 port 28 is the only per-address difference.
            if !(a || r || (port == 28 && proto == 6)) {
                assert!(
                    !c.newly_allowed.contains(key, port) && !c.newly_denied.contains(key, port),
                    "{pkt:?}"
                );
            }
        }
        assert!(diff(&old, &old, &names).is_empty());
    }
}
