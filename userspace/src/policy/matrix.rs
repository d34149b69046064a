//! Who may reach whom, on what: per (row, column) of named address sets,
//! the flows the policy accepts, computed over the cut of [`super::space`]
//! with the reference evaluator (first packets of flows, not fragments;
//! replies ride on their flow).

use std::rc::Rc;

use serde::Serialize;

use super::{
    model::Policy,
    space::{regions_for, Cells, FlowSet, Named, PairVerdicts, Region, Verdicts},
};

/// One cell: what the row's addresses may open towards the column's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reach {
    /// Accepted from every address of the row to every address of the
    /// column (of the same family).
    pub allowed: FlowSet,
    /// Accepted for some of those address pairs only.
    pub partly: FlowSet,
    /// Passed but counted as audited (an audit rule, or interface audit
    /// mode) for some or all pairs: denied once enforced.
    pub audited: FlowSet,
    /// The row and the column share no address family: nothing to say.
    pub no_common_family: bool,
}

#[derive(Clone, Debug)]
pub struct Matrix {
    pub rows: Vec<Named>,
    pub columns: Vec<Named>,
    /// `cells[row][column]`.
    pub cells: Vec<Vec<Reach>>,
    /// The protocols rules name (the others are "other protocols").
    pub cells_space: Cells,
}

/// Computes the matrix of `rows` × `columns`.
pub fn matrix(policy: &Policy, rows: Vec<Named>, columns: Vec<Named>) -> Matrix {
    let names: Vec<&Named> = rows.iter().chain(&columns).collect();
    let regions = regions_for(&[policy], &names);
    let cells_space = Cells::of(&[policy]);
    let mut verdicts = Verdicts::new(policy, &cells_space, &regions);
    let inside = |n: &Named| -> Vec<usize> {
        (0..regions.len())
            .filter(|i| n.holds(&regions[*i]))
            .collect()
    };
    let col_regions: Vec<Vec<usize>> = columns.iter().map(inside).collect();
    let mut cells = Vec::with_capacity(rows.len());
    for row in &rows {
        let row_regions = inside(row);
        let mut line = Vec::with_capacity(columns.len());
        for cr in &col_regions {
            line.push(reach(&mut verdicts, &regions, &row_regions, cr));
        }
        cells.push(line);
    }
    Matrix {
        rows,
        columns,
        cells,
        cells_space,
    }
}

/// One cell: over the distinct verdict tables of its region pairs.
fn reach(verdicts: &mut Verdicts, regions: &[Region], srcs: &[usize], dsts: &[usize]) -> Reach {
    let mut distinct: Vec<Rc<PairVerdicts>> = Vec::new();
    for &s in srcs {
        let v6 = regions[s].rep.is_ipv6();
        for &d in dsts.iter().filter(|d| regions[**d].rep.is_ipv6() == v6) {
            let v = verdicts.pair(s, d);
            if !distinct.iter().any(|x| Rc::ptr_eq(x, &v)) {
                distinct.push(v);
            }
        }
    }
    let mut every: Option<FlowSet> = None;
    let mut some = FlowSet::default();
    let mut audited = FlowSet::default();
    for v in &distinct {
        audited = audited.union(&v.audited);
        some = some.union(&v.accepted);
        every = Some(every.map_or_else(|| v.accepted.clone(), |e| e.intersect(&v.accepted)));
    }
    let no_common_family = every.is_none();
    let allowed = every.unwrap_or_default();
    Reach {
        partly: some.minus(&allowed),
        allowed,
        audited,
        no_common_family,
    }
}

impl Reach {
    /// `tcp 22; icmp`, with `(some addresses: …)` and `(audited: …)`.
    pub fn describe(&self, named: &std::collections::BTreeSet<u8>) -> String {
        if self.no_common_family {
            return "n/a".into();
        }
        let mut s = self.allowed.describe(named);
        if !self.partly.is_empty() {
            s += &format!(" (some addresses: {})", self.partly.describe(named));
        }
        if !self.audited.is_empty() {
            s += &format!(" (audited: {})", self.audited.describe(named));
        }
        s
    }
}

#[derive(Serialize)]
struct JsonCell<'a> {
    from: &'a str,
    to: &'a str,
    allowed: serde_json::Value,
    partly: serde_json::Value,
    audited: serde_json::Value,
    no_common_family: bool,
}

impl Matrix {
    /// `{"rows": [...], "columns": [...], "cells": [{"from", "to",
    /// "allowed": [{"proto", "ports"}], "partly", "audited"}]}`.
    pub fn json(&self) -> serde_json::Value {
        let mut cells = Vec::new();
        for (row, line) in self.rows.iter().zip(&self.cells) {
            for (col, c) in self.columns.iter().zip(line) {
                cells.push(JsonCell {
                    from: &row.name,
                    to: &col.name,
                    allowed: c.allowed.json(),
                    partly: c.partly.json(),
                    audited: c.audited.json(),
                    no_common_family: c.no_common_family,
                });
            }
        }
        serde_json::json!({
            "rows": self.rows.iter().map(|r| &r.name).collect::<Vec<_>>(),
            "columns": self.columns.iter().map(|c| &c.name).collect::<Vec<_>>(),
            "cells": cells,
        })
    }

    /// A table per row: `row -> column: flows`, cells with nothing left out.
    pub fn text(&self) -> String {
        let named = &self.cells_space.named;
        let width = self.columns.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (row, line) in self.rows.iter().zip(&self.cells) {
            out += &format!("{}\n", row.name);
            let mut any = false;
            for (col, c) in self.columns.iter().zip(line) {
                if c.allowed.is_empty() && c.partly.is_empty() && c.audited.is_empty() {
                    continue;
                }
                any = true;
                out += &format!("  -> {:width$}  {}\n", col.name, c.describe(named));
            }
            if !any {
                out += "  (reaches nothing)\n";
            }
        }
        out
    }

    /// A standalone HTML page (no external assets): a table, names escaped.
    pub fn html(&self, title: &str) -> String {
        let named = &self.cells_space.named;
        let mut h = String::new();
        h += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
        h += &format!("<title>{}</title>\n", escape(title));
        h += "<style>\nbody{font-family:sans-serif;margin:1em}\
table{border-collapse:collapse}\
th,td{border:1px solid #999;padding:4px 8px;text-align:left;vertical-align:top}\
th{background:#eee}td.none{color:#999}td.open{background:#e8f5e9}\
td.audit{background:#fff3e0}\n</style>\n</head>\n<body>\n";
        h += &format!("<h1>{}</h1>\n", escape(title));
        h += "<p>Rows: sources; columns: destinations; a cell: the protocols and ports \
the policy accepts from every address of the row to every address of the column \
(first packets; replies follow their flow). <q>some addresses</q>: accepted \
between some of their addresses only; <q>audited</q>: passed and counted, denied once \
enforced; <q>other protocols</q>: every protocol no rule names; <q>-</q>: nothing.</p>\n";
        h += "<table>\n<thead>\n<tr><th>from \\ to</th>";
        for c in &self.columns {
            h += &format!("<th>{}</th>", escape(&c.name));
        }
        h += "</tr>\n</thead>\n<tbody>\n";
        for (row, line) in self.rows.iter().zip(&self.cells) {
            h += &format!("<tr><th>{}</th>", escape(&row.name));
            for c in line {
                let class = if !c.audited.is_empty() {
                    "audit"
                } else if c.allowed.is_empty() && c.partly.is_empty() {
                    "none"
                } else {
                    "open"
                };
                h += &format!("<td class=\"{class}\">{}</td>", escape(&c.describe(named)));
            }
            h += "</tr>\n";
        }
        h += "</tbody>\n</table>\n</body>\n</html>\n";
        h
    }
}

/// HTML text escaping (names come from the mesh file).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out += "&amp;",
            '<' => out += "&lt;",
            '>' => out += "&gt;",
            '"' => out += "&quot;",
            '\'' => out += "&#39;",
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{
        model::{Action, Peer, PortRange, Rule, Selector},
        reference::{evaluate, PacketMeta},
        space::Proto,
    };
    use rand::{Rng, SeedableRng};
    use std::net::IpAddr;
    use wgbpf_common::severity;

    fn net(s: &str) -> ipnet::IpNet {
        s.parse().unwrap()
    }

    fn rule(
        action: Action,
        src: Selector,
        dst: Selector,
        proto: Option<u8>,
        ports: &[(u16, u16)],
    ) -> Rule {
        Rule {
            name: "r".into(),
            action,
            audit: false,
            src,
            dst,
            proto,
            ports: ports.iter().map(|(a, b)| PortRange::new(*a, *b)).collect(),
        }
    }

    fn pfx(s: &[&str]) -> Selector {
        Selector::Prefixes(s.iter().map(|n| net(n)).collect())
    }

    /// Deny over accept whatever the order, audit rules, `*` sources, a
    /// peer with a network containing a named host.
    pub(crate) fn tricky() -> Policy {
        let peers = vec![
            Peer {
                name: "a".into(),
                index: 1,
                allowed_ips: vec![net("10.0.0.2/32"), net("fd00::2/128")],
            },
            Peer {
                name: "b".into(),
                index: 2,
                allowed_ips: vec![net("10.0.0.3/32")],
            },
            Peer {
                name: "lan".into(),
                index: 3,
                allowed_ips: vec![net("192.168.1.0/24")],
            },
        ];
        let mut audit = rule(
            Action::Deny,
            pfx(&["10.0.0.3/32"]),
            Selector::Any,
            Some(17),
            &[(53, 53)],
        );
        audit.audit = true;
        Policy {
            peers,
            local: vec![net("10.0.0.1/32")],
            rules: vec![
                rule(
                    Action::Accept,
                    pfx(&["10.0.0.2/32"]),
                    pfx(&["192.168.1.0/24"]),
                    Some(6),
                    &[(20, 30), (80, 81)],
                ),
                rule(
                    Action::Deny,
                    pfx(&["10.0.0.2/32"]),
                    pfx(&["192.168.1.0/32"]),
                    Some(6),
                    &[(25, 25)],
                ),
                rule(
                    Action::Accept,
                    Selector::Any,
                    pfx(&["10.0.0.1/32"]),
                    Some(1),
                    &[],
                ),
                rule(
                    Action::Accept,
                    pfx(&["10.0.0.3/32"]),
                    Selector::Any,
                    Some(17),
                    &[],
                ),
                audit,
                rule(
                    Action::Accept,
                    pfx(&["fd00::2/128"]),
                    pfx(&["10.0.0.1/32", "fd00::1/128"]),
                    None,
                    &[],
                ),
            ],
            ..Default::default()
        }
    }

    fn named(p: &Policy) -> Vec<Named> {
        let mut v: Vec<Named> = p
            .peers
            .iter()
            .map(|p| Named::new(&p.name, p.allowed_ips.clone()))
            .collect();
        v.push(Named::new(
            "gateway",
            vec![net("10.0.0.1/32"), net("fd00::1/128")],
        ));
        v.push(Named::new("printer", vec![net("192.168.1.0/32")]));
        v.push(Named::world("other"));
        v
    }

    fn random_in(rng: &mut impl Rng, n: &ipnet::IpNet) -> IpAddr {
        match n {
            ipnet::IpNet::V4(v) => {
                let host = !u32::MAX
                    .checked_shl(32 - v.prefix_len() as u32)
                    .unwrap_or(0);
                IpAddr::V4((u32::from(v.network()) | (rng.gen::<u32>() & host)).into())
            }
            ipnet::IpNet::V6(v) => {
                let host = !u128::MAX
                    .checked_shl(128 - v.prefix_len() as u32)
                    .unwrap_or(0);
                IpAddr::V6((u128::from(v.network()) | (rng.gen::<u128>() & host)).into())
            }
        }
    }

    #[test]
    fn cells_agree_with_the_reference_evaluator_on_random_packets() {
        let p = tricky();
        let m = matrix(&p, named(&p), named(&p));
        let mut rng = rand::rngs::StdRng::seed_from_u64(14);
        let protos = [6u8, 17, 1, 58, 132, 47];
        let (mut checked, mut allowed_hits) = (0, 0);
        for (ri, row) in m.rows.iter().enumerate() {
            for (ci, col) in m.columns.iter().enumerate() {
                let cell = &m.cells[ri][ci];
                if row.world || col.world {
                    continue;
                }
                for _ in 0..300 {
                    let (i, j) = (
                        rng.gen_range(0..row.nets.len()),
                        rng.gen_range(0..col.nets.len()),
                    );
                    let s = random_in(&mut rng, &row.nets[i]);
                    let d = random_in(&mut rng, &col.nets[j]);
                    if s.is_ipv4() != d.is_ipv4() {
                        continue;
                    }
                    let proto = protos[rng.gen_range(0..protos.len())];
                    let icmp = (proto == 1 && s.is_ipv4()) || (proto == 58 && s.is_ipv6());
                    let port: u16 = if icmp {
                        rng.gen_range(0..256)
                    } else if rng.gen() {
                        rng.gen_range(0..100)
                    } else {
                        rng.gen()
                    };
                    let pkt = PacketMeta {
                        src: s,
                        dst: d,
                        proto,
                        fragment: false,
                        sport: 1234,
                        dport: if icmp { 0 } else { port },
                        icmp_type: if icmp { port as u8 } else { 0 },
                        icmp_id: 0,
                        tcp_flags: 2,
                        frag: None,
                        quoted: None,
                    };
                    let v = evaluate(&p, &pkt);
                    let key = m.cells_space.proto(proto);
                    let port = if icmp || matches!(proto, 6 | 17 | 132) {
                        port
                    } else {
                        0
                    };
                    if cell.allowed.contains(key, port) {
                        allowed_hits += 1;
                        assert_eq!(
                            v.severity,
                            severity::ALLOW,
                            "{} -> {} {pkt:?}",
                            row.name,
                            col.name
                        );
                    }
                    if v.severity == severity::ALLOW {
                        assert!(
                            cell.allowed.contains(key, port) || cell.partly.contains(key, port),
                            "{} -> {} {pkt:?}",
                            row.name,
                            col.name
                        );
                    } else {
                        assert!(!cell.allowed.contains(key, port));
                    }
                    if v.severity == severity::AUDIT {
                        assert!(cell.audited.contains(key, port));
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 5000, "{checked}");
        assert!(allowed_hits > 200, "{allowed_hits}");
    }

    #[test]
    fn cells_read_as_the_rules_say() {
        let p = tricky();
        let m = matrix(&p, named(&p), named(&p));
        let cell = |r: &str, c: &str| {
            let ri = m.rows.iter().position(|x| x.name == r).unwrap();
            let ci = m.columns.iter().position(|x| x.name == c).unwrap();
            m.cells[ri][ci].describe(&m.cells_space.named)
        };
        // The deny on 25 to the printer leaves a hole only there.
        assert_eq!(cell("a", "printer"), "tcp 20-24,26-30,80-81");
        assert_eq!(
            cell("a", "lan"),
            "tcp 20-24,26-30,80-81 (some addresses: tcp 25)"
        );
        // a's IPv6 address may reach the gateway's on anything; its IPv4
        // address only by the `*` ICMP rule.
        assert_eq!(
            cell("a", "gateway"),
            "icmp (some addresses: tcp; udp; other protocols)"
        );
        assert_eq!(cell("b", "other"), "udp 0-52,54-65535 (audited: udp 53)");
        assert_eq!(cell("lan", "gateway"), "icmp");
        assert_eq!(cell("lan", "a"), "-");
        assert!(!m.cells[0][0].allowed.contains(Proto::Other, 0));
    }

    /// Every element but the void ones closes, in order.
    pub(crate) fn assert_balanced(h: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = h;
        while let Some(i) = rest.find('<') {
            let end = rest[i..].find('>').expect("unclosed tag") + i;
            let tag = &rest[i + 1..end];
            rest = &rest[end + 1..];
            if tag.starts_with('!') {
                continue;
            }
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            if name == "meta" {
                continue;
            }
            if tag.starts_with('/') {
                assert_eq!(stack.pop().as_deref(), Some(name.as_str()), "{h}");
            } else {
                stack.push(name);
            }
        }
        assert!(stack.is_empty(), "{stack:?}");
    }

    #[test]
    fn html_is_balanced_and_escapes_names() {
        let p = tricky();
        let mut rows = named(&p);
        rows[0].name = "<script>alert('x')</script>&\"".into();
        let m = matrix(&p, rows.clone(), rows);
        let h = m.html("t");
        assert!(!h.contains("<script>"));
        assert_balanced(&h);
        assert!(h.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"));
    }
}
