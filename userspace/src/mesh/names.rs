//! Names a rule or a test can use, resolved to prefixes: peers, the
//! gateway, `group:`, `tag:`, `user:`, `host:` (or a bare host name), CIDRs
//! and addresses, and `*`.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

/// Everything a name can refer to, owned so that `policy explain` can
/// resolve names after parsing.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// Peer name -> AllowedIPs.
    pub peers: BTreeMap<String, Vec<IpNet>>,
    /// The gateway's own addresses (host prefixes).
    pub gateway: Vec<IpNet>,
    pub users: BTreeMap<String, BTreeSet<String>>,
    pub tags: BTreeMap<String, BTreeSet<String>>,
    /// Group -> member expressions, as written (peers listing the group in
    /// their own `groups` are added as plain peer names).
    pub groups: BTreeMap<String, Vec<String>>,
    pub hosts: BTreeMap<String, IpNet>,
}

/// What a name stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Any,
    Prefixes(Vec<IpNet>),
}

impl Directory {
    /// Resolves one name; the error says what was expected.
    pub fn resolve(&self, name: &str) -> Result<Resolved, String> {
        let mut seen = BTreeSet::new();
        self.resolve_in(name, &mut seen)
    }

    fn resolve_in(&self, name: &str, seen: &mut BTreeSet<String>) -> Result<Resolved, String> {
        let peers_of = |set: &BTreeSet<String>| -> Vec<IpNet> {
            set.iter()
                .flat_map(|p| self.peers.get(p).into_iter().flatten().copied())
                .collect()
        };
        if name == "*" {
            return Ok(Resolved::Any);
        }
        if name == "gateway" {
            return Ok(Resolved::Prefixes(self.gateway.clone()));
        }
        if let Some(g) = name.strip_prefix("group:") {
            let members = self
                .groups
                .get(g)
                .ok_or_else(|| format!("unknown group `{g}`"))?;
            if !seen.insert(g.to_string()) {
                return Err(format!("group `{g}` contains itself"));
            }
            let mut out = Vec::new();
            for m in members {
                match self.resolve_in(m, seen)? {
                    Resolved::Any => return Ok(Resolved::Any),
                    Resolved::Prefixes(p) => out.extend(p),
                }
            }
            seen.remove(g);
            return Ok(Resolved::Prefixes(out));
        }
        if let Some(t) = name.strip_prefix("tag:") {
            let peers = self
                .tags
                .get(t)
                .ok_or_else(|| format!("unknown tag `{t}`"))?;
            return Ok(Resolved::Prefixes(peers_of(peers)));
        }
        if let Some(u) = name.strip_prefix("user:") {
            let peers = self
                .users
                .get(u)
                .ok_or_else(|| format!("unknown user `{u}`"))?;
            return Ok(Resolved::Prefixes(peers_of(peers)));
        }
        if let Some(h) = name.strip_prefix("host:") {
            let net = self
                .hosts
                .get(h)
                .ok_or_else(|| format!("unknown host `{h}`"))?;
            return Ok(Resolved::Prefixes(vec![*net]));
        }
        if let Some(p) = self.peers.get(name) {
            return Ok(Resolved::Prefixes(p.clone()));
        }
        if let Some(net) = self.hosts.get(name) {
            return Ok(Resolved::Prefixes(vec![*net]));
        }
        if let Ok(net) = name.parse::<IpNet>() {
            return Ok(Resolved::Prefixes(vec![net]));
        }
        if let Ok(addr) = name.parse::<std::net::IpAddr>() {
            return Ok(Resolved::Prefixes(vec![IpNet::from(addr)]));
        }
        Err(format!(
            "unknown name `{name}` (expected a peer, \"gateway\", \"*\", group:G, tag:T, \
             user:U, host:H or a CIDR)"
        ))
    }

    /// Addresses that stand for a name in tests and `explain`: one per
    /// prefix (the address itself, or the first host of a network).
    pub fn addresses(&self, name: &str) -> Result<Vec<std::net::IpAddr>, String> {
        match self.resolve(name)? {
            Resolved::Any => Err(format!(
                "`{name}` is everyone: name a peer, host or address"
            )),
            Resolved::Prefixes(p) if p.is_empty() => Err(format!("`{name}` names no address")),
            Resolved::Prefixes(p) => Ok(p.iter().map(representative).collect()),
        }
    }
}

fn representative(net: &IpNet) -> std::net::IpAddr {
    let net = net.trunc();
    match net {
        IpNet::V4(n) if n.prefix_len() < 31 => {
            std::net::IpAddr::V4((u32::from(n.network()) + 1).into())
        }
        IpNet::V6(n) if n.prefix_len() < 127 => {
            std::net::IpAddr::V6((u128::from(n.network()) + 1).into())
        }
        other => other.addr(),
    }
}
