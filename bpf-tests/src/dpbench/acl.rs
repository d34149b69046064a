//! The benchmark's access list: N rules, each one (peer address, UDP port)
//! allowed to reach the receiver, the way a gateway's nftables ruleset
//! lists them. Rule k is peer k / 8 on port 10000 + k % 8, so N rules name
//! ceil(N / 8) peers (12,500 at N = 100,000, within wgbpf's 16,384).
//!
//! The measured flows are those of the last rules of the list (the worst
//! case for a list walked in order); denied traffic comes from the same
//! sources to ports no rule names.

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};
use wgbpf::policy::model::{Action, Peer, Policy, PortRange, Rule, Selector};
use wgbpf_common::{PROTO_TCP, PROTO_UDP};

pub const PORTS_PER_PEER: usize = 8;
pub const ALLOWED_PORT_BASE: u16 = 10_000;
/// Denied traffic goes to these ports (+ 0..8): no rule names them.
pub const DENIED_PORT_BASE: u16 = 20_000;
/// Rules whose (peer, port) pairs the measured traffic uses.
pub const MEASURED_RULES: usize = 64;

/// Peer `i`'s address: 10.64.0.2 onwards.
pub fn peer_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 64, 0, 2)) + i as u32)
}

/// Where every peer address lies (for routes and AllowedIPs).
pub const PEER_NET: &str = "10.64.0.0/16";

/// Rule `k`: (source address, destination port).
pub fn rule(k: usize) -> (Ipv4Addr, u16) {
    (
        peer_addr(k / PORTS_PER_PEER),
        ALLOWED_PORT_BASE + (k % PORTS_PER_PEER) as u16,
    )
}

pub fn peers(n: usize) -> usize {
    n.div_ceil(PORTS_PER_PEER)
}

/// The (source, destination port) pairs of the measured traffic: the last
/// `MEASURED_RULES` rules (all of them if fewer), or, denied, the same
/// sources to ports no rule allows.
pub fn measured(n: usize, allowed: bool) -> Vec<(Ipv4Addr, u16)> {
    (n.saturating_sub(MEASURED_RULES)..n)
        .map(|k| {
            let (src, port) = rule(k);
            if allowed {
                (src, port)
            } else {
                (src, DENIED_PORT_BASE + (k % PORTS_PER_PEER) as u16)
            }
        })
        .collect()
}

/// Every destination port the traffic uses (the receiver binds them all).
pub fn all_ports() -> Vec<u16> {
    (0..PORTS_PER_PEER as u16)
        .flat_map(|i| [ALLOWED_PORT_BASE + i, DENIED_PORT_BASE + i])
        .collect()
}

fn host(a: Ipv4Addr) -> IpNet {
    IpNet::V4(Ipv4Net::new(a, 32).expect("a /32"))
}

/// An extra peer with one TCP port (the tunnel's bulk TCP stream).
pub struct TcpPeer {
    pub addr: Ipv4Addr,
    pub port: u16,
}

/// The same list as a wgbpf policy: one peer per address, one accept rule
/// per (peer, port) to `receiver`, default deny.
pub fn policy(n: usize, receiver: Ipv4Addr, tcp: Option<&TcpPeer>) -> Policy {
    let mut peers: Vec<Peer> = (0..peers(n))
        .map(|i| Peer {
            name: format!("p{i}"),
            index: i as u32 + 1,
            allowed_ips: vec![host(peer_addr(i))],
        })
        .collect();
    let dst = Selector::Prefixes(vec![host(receiver)]);
    let mut rules: Vec<Rule> = (0..n)
        .map(|k| {
            let (src, port) = rule(k);
            Rule {
                name: format!("r{k}"),
                action: Action::Accept,
                audit: false,
                src: Selector::Prefixes(vec![host(src)]),
                dst: dst.clone(),
                proto: Some(PROTO_UDP),
                ports: vec![PortRange::single(port)],
            }
        })
        .collect();
    if let Some(t) = tcp {
        peers.push(Peer {
            name: "tcp".into(),
            index: peers.len() as u32 + 1,
            allowed_ips: vec![host(t.addr)],
        });
        rules.push(Rule {
            name: "tcp-bulk".into(),
            action: Action::Accept,
            audit: false,
            src: Selector::Prefixes(vec![host(t.addr)]),
            dst,
            proto: Some(PROTO_TCP),
            ports: vec![PortRange::single(t.port)],
        });
    }
    Policy {
        peers,
        local: vec![host(receiver)],
        rules,
        audit: false,
        link_local: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use wgbpf::policy::{compile::compile, reference};
    use wgbpf_common::{capacity, severity};

    fn meta(src: Ipv4Addr, dst: Ipv4Addr, dport: u16) -> reference::PacketMeta {
        reference::PacketMeta {
            src: IpAddr::V4(src),
            dst: IpAddr::V4(dst),
            proto: PROTO_UDP,
            fragment: false,
            sport: 40_000,
            dport,
            icmp_type: 0,
            icmp_id: 0,
            tcp_flags: 0,
            frag: None,
            quoted: None,
        }
    }

    /// The policy wgbpf gets says what the nftables rulesets say: the
    /// measured allowed pairs are accepted (by the rule of the same index),
    /// the denied ones fall to the default deny; and it compiles within
    /// wgbpf's capacities at the largest size.
    #[test]
    fn wgbpf_policy_matches_the_list() {
        let rx = Ipv4Addr::new(10, 63, 0, 1);
        for n in [10, 1000] {
            let p = policy(n, rx, None);
            assert_eq!(p.rules.len(), n);
            let allowed = measured(n, true);
            assert_eq!(allowed.len(), n.min(MEASURED_RULES));
            for (i, &(src, port)) in allowed.iter().enumerate() {
                let v = reference::evaluate(&p, &meta(src, rx, port));
                assert_eq!(v.severity, severity::ALLOW, "n={n} {src}:{port}");
                assert_eq!(v.rule as usize, n - allowed.len() + i);
            }
            for (src, port) in measured(n, false) {
                let v = reference::evaluate(&p, &meta(src, rx, port));
                assert_eq!(v.severity, severity::DENY, "n={n} {src}:{port}");
            }
            // A listed pair to another address is not allowed either.
            let (src, port) = rule(n - 1);
            let other = Ipv4Addr::new(10, 63, 0, 2);
            assert_eq!(
                reference::evaluate(&p, &meta(src, other, port)).severity,
                severity::DENY
            );
        }
        compile(&policy(100_000, rx, None), capacity::PEERS).expect("fits");
    }

    #[test]
    fn nft_rulesets_list_every_rule() {
        let n = 1000;
        let per_rule = crate::dpbench::nft::per_rule(n, "rx0");
        assert_eq!(per_rule.matches(" accept\n").count(), n);
        let (src, port) = rule(n - 1);
        let last =
            format!("iifname \"rx0\" ip saddr {src} udp dport {port} accept\niifname \"rx0\" drop");
        assert!(
            per_rule.contains(&last),
            "the last rule comes just before the drop"
        );
        let set = crate::dpbench::nft::with_set(n, "rx0");
        assert_eq!(set.matches(" . 1").count(), n);
        assert_eq!(set.matches(" accept\n").count(), 1);
    }
}
