//! The mesh file's names as the rows and columns of the reachability
//! matrix and the sides of a policy diff.

use std::collections::BTreeMap;

use ipnet::IpNet;

use super::{Mesh, Resolved};
use crate::policy::{model::Selector, space::Named};

/// What the matrix's rows are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowsBy {
    /// Every peer, and the gateway (its own traffic to peers is judged too).
    Peer,
    /// Every `group:G`.
    Group,
    /// Every `tag:T`.
    Tag,
}

/// The name for the addresses no peer, host or rule names.
pub const OTHER: &str = "(other addresses)";

fn peers(mesh: &Mesh) -> Vec<Named> {
    mesh.policy
        .peers
        .iter()
        .map(|p| Named::new(&p.name, p.allowed_ips.clone()))
        .collect()
}

fn gateway(mesh: &Mesh) -> Named {
    Named::new("gateway", mesh.directory.gateway.clone())
}

/// The matrix's rows.
pub fn rows(mesh: &Mesh, by: RowsBy) -> Vec<Named> {
    let d = &mesh.directory;
    let resolved = |name: String| -> Option<Named> {
        match d.resolve(&name) {
            Ok(Resolved::Prefixes(p)) => Some(Named::new(name, p)),
            _ => None,
        }
    };
    match by {
        RowsBy::Peer => {
            let mut v = peers(mesh);
            v.push(gateway(mesh));
            v
        }
        RowsBy::Group => d
            .groups
            .keys()
            .filter_map(|g| resolved(format!("group:{g}")))
            .collect(),
        RowsBy::Tag => d
            .tags
            .keys()
            .filter_map(|t| resolved(format!("tag:{t}")))
            .collect(),
    }
}

/// The matrix's columns: peers, the gateway, named hosts, the addresses
/// and networks rules name literally, and the other addresses when a rule
/// reaches `*`.
pub fn columns(mesh: &Mesh) -> Vec<Named> {
    let mut v = peers(mesh);
    v.push(gateway(mesh));
    for (h, net) in &mesh.directory.hosts {
        v.push(Named::new(h, vec![*net]));
    }
    let mut literals: BTreeMap<String, IpNet> = BTreeMap::new();
    for src in &mesh.rule_sources {
        for name in src.from.iter().chain(&src.to) {
            let net = name
                .parse::<IpNet>()
                .ok()
                .or_else(|| name.parse::<std::net::IpAddr>().ok().map(IpNet::from));
            if let Some(n) = net {
                literals.insert(name.clone(), n);
            }
        }
    }
    for (name, net) in literals {
        if !v.iter().any(|c| c.name == name) {
            v.push(Named::new(name, vec![net]));
        }
    }
    if mesh.policy.rules.iter().any(|r| r.dst == Selector::Any) {
        v.push(Named::world(OTHER));
    }
    v
}

/// The peers and the gateway of a policy alone (a policy recorded
/// without its mesh file).
pub fn policy_names(p: &crate::policy::model::Policy) -> Vec<Named> {
    let mut v: Vec<Named> = p
        .peers
        .iter()
        .map(|p| Named::new(&p.name, p.allowed_ips.clone()))
        .collect();
    v.push(Named::new("gateway", p.local.clone()));
    v
}

/// The sides of a diff: the new mesh's columns and the old side's names
/// (a name on both sides with other addresses stands for all of them),
/// always with the other addresses.
pub fn diff_names(old: Vec<Named>, new: &Mesh) -> Vec<Named> {
    let mut out: Vec<Named> = Vec::new();
    for n in columns(new).into_iter().chain(old) {
        if n.world {
            continue;
        }
        match out.iter_mut().find(|o| o.name == n.name) {
            Some(o) => {
                for net in n.nets {
                    if !o.nets.contains(&net) {
                        o.nets.push(net);
                    }
                }
            }
            None => out.push(n),
        }
    }
    out.push(Named::world(OTHER));
    out
}

/// The most names a summary is computed for unasked (the daemon's reload):
/// the diff visits every pair of names.
pub const SUMMARY_MAX_NAMES: usize = 256;

/// The flows whose verdict changes from `old` to `new`, as one line for a
/// log: `+ alice -> server: tcp 22; - bob -> gateway: icmp 8`, `none`, or
/// why it was not computed (more than [`SUMMARY_MAX_NAMES`] peers, hosts
/// and networks).
pub fn flow_summary(old: &Mesh, new: &Mesh) -> String {
    let names = diff_names(columns(old), new);
    if names.len() > SUMMARY_MAX_NAMES {
        return format!(
            "not computed ({} names, more than {SUMMARY_MAX_NAMES}): see wgbpf policy diff",
            names.len()
        );
    }
    let lines = crate::policy::diff::diff(&old.policy, &new.policy, &names).lines();
    if lines.is_empty() {
        "none".into()
    } else {
        lines.join("; ")
    }
}
