//! Random policies over a small, collision-rich address space, and the
//! address pools that send packets into every corner of them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand::{seq::SliceRandom, Rng};
use wgbpf::policy::model::{Action, Peer, Policy, PortRange, Rule, Selector};
use wgbpf_common::{PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP};

use crate::packets::Pools;

/// Ports that rules and packets share, so ranges and packets collide.
pub const PORTS: [u16; 12] = [0, 1, 22, 53, 80, 443, 1023, 1024, 8080, 32768, 65534, 65535];

fn v4(last: u8, third: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, third, last)
}
fn v6(last: u16, group: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd77, 0, 0, group, 0, 0, 0, last)
}

/// A policy with `peers` peers (one /32 and one /128 each, some with an
/// extra /30 or /126), the gateway at .1, and `rules` random rules.
pub fn random_policy(rng: &mut impl Rng, peers: usize, rules: usize) -> Policy {
    let mut ps = Vec::new();
    for i in 0..peers {
        let n = i as u8 + 2;
        let mut allowed = vec![
            IpNet::V4(Ipv4Net::new(v4(n, 0), 32).unwrap()),
            IpNet::V6(Ipv6Net::new(v6(n as u16, 0), 128).unwrap()),
        ];
        if rng.gen_bool(0.3) {
            allowed.push(IpNet::V4(Ipv4Net::new(v4(n * 4, 1), 30).unwrap().trunc()));
            allowed.push(IpNet::V6(
                Ipv6Net::new(v6(n as u16 * 4, 1), 126).unwrap().trunc(),
            ));
        }
        ps.push(Peer {
            name: format!("p{i}"),
            index: i as u32 + 1,
            allowed_ips: allowed,
        });
    }
    let local = vec![
        IpNet::V4(Ipv4Net::new(v4(1, 0), 32).unwrap()),
        IpNet::V6(Ipv6Net::new(v6(1, 0), 128).unwrap()),
    ];
    let mut policy = Policy {
        link_local: Default::default(),
        peers: ps,
        local,
        rules: Vec::new(),
        audit: rng.gen_bool(0.1),
    };
    for i in 0..rules {
        let rule = random_rule(rng, &policy, i);
        policy.rules.push(rule);
    }
    policy
}

fn random_selector(rng: &mut impl Rng, policy: &Policy) -> Selector {
    if rng.gen_bool(0.15) {
        return Selector::Any;
    }
    let mut prefixes = Vec::new();
    for _ in 0..rng.gen_range(1..=3) {
        match rng.gen_range(0..10) {
            0..=4 => {
                let p = policy.peers.choose(rng).unwrap();
                prefixes.extend(p.allowed_ips.iter().copied());
            }
            5 => prefixes.extend(policy.local.iter().copied()),
            6 => prefixes.push("10.77.0.0/24".parse().unwrap()),
            7 => prefixes.push(
                format!("10.77.0.{}/29", rng.gen_range(0..32) * 8)
                    .parse()
                    .unwrap(),
            ),
            8 => prefixes.push("fd77::/64".parse().unwrap()),
            _ => prefixes.push(if rng.gen_bool(0.5) {
                "0.0.0.0/0".parse().unwrap()
            } else {
                "::/0".parse().unwrap()
            }),
        }
    }
    Selector::Prefixes(prefixes)
}

fn random_rule(rng: &mut impl Rng, policy: &Policy, i: usize) -> Rule {
    let action = if rng.gen_bool(0.7) {
        Action::Accept
    } else {
        Action::Deny
    };
    let proto = match rng.gen_range(0..10) {
        0..=3 => Some(PROTO_TCP),
        4..=5 => Some(PROTO_UDP),
        6 => Some(
            [PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP]
                .choose(rng)
                .copied()
                .unwrap(),
        ),
        7 => Some([47u8, 50, 255].choose(rng).copied().unwrap()),
        _ => None,
    };
    let mut ports = Vec::new();
    if proto.is_some_and(wgbpf::policy::model::proto_has_ports) && rng.gen_bool(0.7) {
        for _ in 0..rng.gen_range(1..=3) {
            let a = *PORTS.choose(rng).unwrap();
            let b = if rng.gen_bool(0.5) {
                a
            } else {
                *PORTS.choose(rng).unwrap()
            };
            ports.push(PortRange::new(a.min(b), a.max(b)));
        }
        if matches!(proto, Some(PROTO_ICMP) | Some(PROTO_ICMPV6)) && rng.gen_bool(0.5) {
            ports = vec![PortRange::single(
                [8u16, 128, 0, 129].choose(rng).copied().unwrap(),
            )];
        }
    }
    Rule {
        name: format!("r{i}"),
        action,
        audit: action == Action::Deny && rng.gen_bool(0.2),
        src: random_selector(rng, policy),
        dst: random_selector(rng, policy),
        proto,
        ports,
    }
}

/// Addresses the policy knows, plus neighbours that fall just outside.
pub fn pools_for(policy: &Policy) -> Pools {
    let mut pools = Pools {
        ports: PORTS.to_vec(),
        ..Default::default()
    };
    let nets = policy
        .peers
        .iter()
        .flat_map(|p| p.allowed_ips.iter())
        .chain(policy.local.iter());
    for n in nets {
        for a in [n.network(), n.broadcast()] {
            match a {
                IpAddr::V4(a) => pools.v4.push(a),
                IpAddr::V6(a) => pools.v6.push(a),
            }
        }
    }
    pools
        .v4
        .extend([v4(200, 0), v4(9, 3), Ipv4Addr::new(192, 0, 2, 1)]);
    pools
        .v6
        .extend([v6(200, 0), v6(9, 3), "2001:db8::1".parse().unwrap()]);
    pools.ports.extend([7, 9999]);
    pools
}
