//! Large, realistic policies for the benchmarks: `peers` peers (one /32 and
//! one /128 each), the gateway's own addresses, services behind the gateway,
//! and `rules` rules of the kinds a real mesh file has.
//!
//! Every policy, whatever its size, starts with the same [`BASE_RULES`]
//! rules, which put entries in all four layers the kernel looks up (exact,
//! any source, any destination, any/any), and it never allows (or
//! explicitly denies) [`PROBE_PEER`] to reach the gateway on TCP
//! [`DENIED_PORT`]: that probe goes through the whole policy evaluation and
//! ends in the default deny, for every size. [`ALLOWED_PORT`] is allowed for
//! the same pair (an established-flow probe).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand::{rngs::StdRng, Rng, SeedableRng};
use wgbpf::policy::model::{Action, Peer, Policy, PortRange, Rule, Selector};
use wgbpf_common::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};

/// Peers per group (groups are consecutive peers; group 0 is "ops").
pub const GROUP_SIZE: usize = 50;
/// The peer whose packets the benchmarks send (0-based, in group 0).
pub const PROBE_PEER: usize = 7;
/// TCP port no rule lets [`PROBE_PEER`] reach the gateway on, though other
/// rules name it (so it has a port class of its own).
pub const DENIED_PORT: u16 = 3306;
/// TCP port [`PROBE_PEER`] may reach the gateway on.
pub const ALLOWED_PORT: u16 = 443;
/// Rules every benchmark policy starts with.
pub const BASE_RULES: usize = 7;

/// Service subnets behind the gateway (10.10.S.0/24), hosts per subnet.
const SERVICE_SUBNETS: u32 = 32;
const SERVICE_HOSTS: u32 = 16;
/// TCP ports peers reach the gateway itself on (never [`DENIED_PORT`]).
const GW_PORTS: [u16; 10] = [22, 53, 80, 443, 853, 8080, 8443, 9090, 9100, 10050];
/// TCP ports of services behind the gateway.
const SERVICE_PORTS: [u16; 11] = [443, 3306, 5432, 6379, 9200, 389, 636, 25, 587, 993, 8443];
/// Port ranges of peer-to-peer applications (games, RTP, dev servers...).
const PEER_RANGES: [(u16, u16); 8] = [
    (8000, 8099),
    (5000, 5010),
    (27015, 27030),
    (16384, 32767),
    (3478, 3481),
    (60000, 60999),
    (9000, 9010),
    (1024, 2047),
];

/// Peer `i`'s IPv4 address: 10.64.0.0/16 from .2 on.
pub fn peer_v4(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 64, 0, 0)) + 2 + i as u32)
}

/// Peer `i`'s IPv6 address: fd64::/64 from ::2 on.
pub fn peer_v6(i: usize) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(Ipv6Addr::new(0xfd64, 0, 0, 0, 0, 0, 0, 0)) + 2 + i as u128)
}

pub fn gateway_v4() -> Ipv4Addr {
    Ipv4Addr::new(10, 64, 0, 1)
}

pub fn gateway_v6() -> Ipv6Addr {
    Ipv6Addr::new(0xfd64, 0, 0, 0, 0, 0, 0, 1)
}

fn host_v4(a: Ipv4Addr) -> IpNet {
    IpNet::V4(Ipv4Net::new(a, 32).unwrap())
}

fn host_v6(a: Ipv6Addr) -> IpNet {
    IpNet::V6(Ipv6Net::new(a, 128).unwrap())
}

fn peer_nets(i: usize) -> Vec<IpNet> {
    vec![host_v4(peer_v4(i)), host_v6(peer_v6(i))]
}

fn group_nets(g: usize, peers: usize) -> Vec<IpNet> {
    let first = g * GROUP_SIZE;
    (first..(first + GROUP_SIZE).min(peers))
        .flat_map(peer_nets)
        .collect()
}

fn service_host(subnet: u32, host: u32) -> Vec<IpNet> {
    vec![
        host_v4(Ipv4Addr::new(10, 10, subnet as u8, 10 + host as u8)),
        host_v6(Ipv6Addr::new(
            0xfd10,
            0,
            subnet as u16,
            0,
            0,
            0,
            0,
            10 + host as u16,
        )),
    ]
}

/// A destination network: one of 256 /24 (and /64) subnets, or one of 16
/// /16 networks, none overlapping the service hosts or each other.
fn cidr(rng: &mut impl Rng) -> Vec<IpNet> {
    if rng.gen_bool(0.8) {
        let x: u8 = rng.gen();
        vec![
            IpNet::V4(Ipv4Net::new(Ipv4Addr::new(10, 20, x, 0), 24).unwrap()),
            IpNet::V6(Ipv6Net::new(Ipv6Addr::new(0xfd20, 0, x as u16, 0, 0, 0, 0, 0), 64).unwrap()),
        ]
    } else {
        let k: u8 = rng.gen_range(0..16);
        vec![IpNet::V4(
            Ipv4Net::new(Ipv4Addr::new(10, 32 + k, 0, 0), 16).unwrap(),
        )]
    }
}

fn rule(
    name: String,
    action: Action,
    src: Selector,
    dst: Selector,
    proto: Option<u8>,
    ports: Vec<PortRange>,
) -> Rule {
    Rule {
        name,
        action,
        audit: false,
        src,
        dst,
        proto,
        ports,
    }
}

fn range(rng: &mut impl Rng) -> PortRange {
    let (a, b) = PEER_RANGES[rng.gen_range(0..PEER_RANGES.len())];
    PortRange::new(a, b)
}

fn pick<T: Copy>(rng: &mut impl Rng, xs: &[T]) -> T {
    xs[rng.gen_range(0..xs.len())]
}

/// The rules every benchmark policy starts with; see the module comment.
fn base_rules(peers: usize) -> Vec<Rule> {
    use Selector::{Any, Prefixes};
    let gw = vec![host_v4(gateway_v4()), host_v6(gateway_v6())];
    vec![
        // Any source: DNS on the gateway.
        rule(
            "dns".into(),
            Action::Accept,
            Any,
            Prefixes(gw.clone()),
            Some(PROTO_UDP),
            vec![PortRange::single(53)],
        ),
        // Any/any: ping.
        rule(
            "ping".into(),
            Action::Accept,
            Any,
            Any,
            Some(PROTO_ICMP),
            vec![PortRange::single(8)],
        ),
        // Any destination: the ops group may ssh anywhere.
        rule(
            "ops-ssh".into(),
            Action::Accept,
            Prefixes(group_nets(0, peers)),
            Any,
            Some(PROTO_TCP),
            vec![PortRange::single(22)],
        ),
        // Any source, a deny.
        rule(
            "no-telnet".into(),
            Action::Deny,
            Any,
            Prefixes(vec![
                "10.10.0.0/16".parse().unwrap(),
                "fd10::/32".parse().unwrap(),
            ]),
            Some(PROTO_TCP),
            vec![PortRange::single(23)],
        ),
        // The probe peer's own rule.
        rule(
            "probe-https".into(),
            Action::Accept,
            Prefixes(peer_nets(PROBE_PEER)),
            Prefixes(gw),
            Some(PROTO_TCP),
            vec![PortRange::single(ALLOWED_PORT)],
        ),
        // Any destination, a deny: a quarantined peer.
        rule(
            "quarantine".into(),
            Action::Deny,
            Prefixes(peer_nets(peers - 1)),
            Any,
            None,
            vec![],
        ),
        // A group to a service, naming DENIED_PORT.
        rule(
            "db".into(),
            Action::Accept,
            Prefixes(group_nets(1, peers)),
            Prefixes(service_host(1, 0)),
            Some(PROTO_TCP),
            vec![PortRange::single(DENIED_PORT)],
        ),
    ]
}

/// A policy with `peers` peers (at least 2 * [`GROUP_SIZE`]) and `rules`
/// rules (at least [`BASE_RULES`]); the same seed gives the same policy.
///
/// Mix of the generated rules: 45% peer to gateway TCP single port, 30%
/// peer to peer TCP/UDP port range, 2% group (~50 peers) to a service host,
/// 20% peer to a CIDR (ports, ranges or any protocol), 3% denies.
pub fn bench_policy(peers: usize, rules: usize, seed: u64) -> Policy {
    assert!(
        peers >= 2 * GROUP_SIZE,
        "need at least {} peers",
        2 * GROUP_SIZE
    );
    assert!(rules >= BASE_RULES, "need at least {BASE_RULES} rules");
    let mut rng = StdRng::seed_from_u64(seed);
    let groups = peers / GROUP_SIZE;
    let peer_list = (0..peers)
        .map(|i| Peer {
            name: format!("peer{i}"),
            index: i as u32 + 1,
            allowed_ips: peer_nets(i),
        })
        .collect();
    let mut out = base_rules(peers);
    use Selector::Prefixes;
    let gw = Prefixes(vec![host_v4(gateway_v4()), host_v6(gateway_v6())]);
    while out.len() < rules {
        let i = out.len();
        let src = rng.gen_range(0..peers);
        let r = match rng.gen_range(0..100) {
            0..=44 => rule(
                format!("gw-{i}"),
                Action::Accept,
                Prefixes(peer_nets(src)),
                gw.clone(),
                Some(PROTO_TCP),
                vec![PortRange::single(pick(&mut rng, &GW_PORTS))],
            ),
            45..=74 => {
                let dst = (src + rng.gen_range(1..peers)) % peers;
                let proto = if rng.gen_bool(0.6) {
                    PROTO_TCP
                } else {
                    PROTO_UDP
                };
                rule(
                    format!("p2p-{i}"),
                    Action::Accept,
                    Prefixes(peer_nets(src)),
                    Prefixes(peer_nets(dst)),
                    Some(proto),
                    vec![range(&mut rng)],
                )
            }
            75..=76 => {
                // Groups 2.. (0 is ops, 1 has the "db" base rule).
                let g = rng.gen_range(2..groups.max(3)).min(groups - 1);
                let host = service_host(
                    rng.gen_range(0..SERVICE_SUBNETS),
                    rng.gen_range(0..SERVICE_HOSTS),
                );
                rule(
                    format!("group-{i}"),
                    Action::Accept,
                    Prefixes(group_nets(g, peers)),
                    Prefixes(host),
                    Some(PROTO_TCP),
                    vec![PortRange::single(pick(&mut rng, &SERVICE_PORTS))],
                )
            }
            77..=96 => {
                let (proto, ports) = match rng.gen_range(0..10) {
                    0..=4 => (
                        Some(PROTO_TCP),
                        vec![PortRange::single(pick(&mut rng, &SERVICE_PORTS))],
                    ),
                    5..=7 => (
                        Some(if rng.gen_bool(0.5) {
                            PROTO_TCP
                        } else {
                            PROTO_UDP
                        }),
                        vec![range(&mut rng)],
                    ),
                    _ => (None, vec![]),
                };
                rule(
                    format!("cidr-{i}"),
                    Action::Accept,
                    Prefixes(peer_nets(src)),
                    Prefixes(cidr(&mut rng)),
                    proto,
                    ports,
                )
            }
            _ => match rng.gen_range(0..3) {
                0 => rule(
                    format!("deny-net-{i}"),
                    Action::Deny,
                    Prefixes(peer_nets(src)),
                    Prefixes(cidr(&mut rng)),
                    None,
                    vec![],
                ),
                1 => {
                    let dst = (src + rng.gen_range(1..peers)) % peers;
                    rule(
                        format!("deny-p2p-{i}"),
                        Action::Deny,
                        Prefixes(peer_nets(src)),
                        Prefixes(peer_nets(dst)),
                        Some(PROTO_TCP),
                        vec![range(&mut rng)],
                    )
                }
                _ => {
                    let g = rng.gen_range(2..groups.max(3)).min(groups - 1);
                    let host = service_host(
                        rng.gen_range(0..SERVICE_SUBNETS),
                        rng.gen_range(0..SERVICE_HOSTS),
                    );
                    rule(
                        format!("deny-group-{i}"),
                        Action::Deny,
                        Prefixes(group_nets(g, peers)),
                        Prefixes(host),
                        Some(PROTO_TCP),
                        vec![PortRange::single(22)],
                    )
                }
            },
        };
        out.push(r);
    }
    Policy {
        link_local: Default::default(),
        peers: peer_list,
        local: vec![host_v4(gateway_v4()), host_v6(gateway_v6())],
        rules: out,
        audit: false,
    }
}

/// The probe peer's and the gateway's IPv4 addresses.
pub fn probe_addrs() -> (IpAddr, IpAddr) {
    (IpAddr::V4(peer_v4(PROBE_PEER)), IpAddr::V4(gateway_v4()))
}
