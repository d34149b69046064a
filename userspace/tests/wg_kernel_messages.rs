//! The kernel backend's messages, without a kernel (this host has no
//! WireGuard module): `WG_CMD_SET_DEVICE` messages built from change sets
//! (split under the netlink buffer size, flags, never REPLACE_PEERS), a
//! `WG_CMD_GET_DEVICE` dump coalesced into one device, every message
//! serialized to bytes and parsed back with the netlink crates, and a round
//! trip through a model of the kernel's `wg_set_device` / dump semantics.
//! Needs no privileges.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, SystemTime},
};

use ipnet::IpNet;
use netlink_packet_core::{Emitable, NetlinkPayload, NLM_F_MULTIPART};
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardDeviceFlags, WireguardMessage, WireguardPeer, WireguardPeerAttribute,
    WireguardPeerFlags, WireguardTimeSpec,
};
use wgbpf::wg::{
    self,
    kernel::messages::{
        device_from_dump, parse_datagram, set_device_messages, set_device_messages_within,
        split_datagram, to_bytes, GET_FLAGS, MESSAGE_LIMIT, SET_FLAGS,
    },
    model::{PeerChange, PeerUpdate},
    ChangeSet, DeviceConfig, DeviceState, Key, PeerConfig, PeerState,
};

/// Any id: the family's id is the kernel's choice.
const FAMILY: u16 = 0x1f;

fn key(i: u32) -> Key {
    let mut b = [0x5a; 32];
    b[..4].copy_from_slice(&i.to_le_bytes());
    Key::from_bytes(b)
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// `n` peers, each with two IPv4 and one IPv6 AllowedIPs, some with a
/// preshared key, endpoint and keepalive.
fn big_config(n: u32) -> DeviceConfig {
    let peers = (0..n)
        .map(|i| {
            let (hi, lo) = ((i >> 8) as u8, i as u8);
            PeerConfig {
                public_key: key(i),
                preshared_key: (i % 3 == 0).then(|| key(1_000_000 + i)),
                endpoint: match i % 4 {
                    0 => Some(SocketAddr::new(
                        IpAddr::V4(Ipv4Addr::new(198, 51, hi, lo)),
                        51820,
                    )),
                    1 => Some(SocketAddr::new(
                        IpAddr::V6(Ipv6Addr::new(
                            0x2001, 0xdb8, 0, 0, 0, 0, hi as u16, lo as u16,
                        )),
                        51821,
                    )),
                    _ => None,
                },
                persistent_keepalive: (i % 2 == 0).then_some(25),
                allowed_ips: vec![
                    IpNet::new(IpAddr::V4(Ipv4Addr::new(10, hi, lo, 1)), 32).unwrap(),
                    IpNet::new(
                        IpAddr::V4(Ipv4Addr::new(
                            172,
                            16 + (hi >> 4),
                            (hi << 4) | (lo >> 4),
                            (lo & 15) << 4,
                        )),
                        28,
                    )
                    .unwrap(),
                    IpNet::new(
                        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, hi as u16, lo as u16)),
                        128,
                    )
                    .unwrap(),
                ],
            }
        })
        .collect();
    DeviceConfig {
        private_key: Some(key(u32::MAX).clamped()),
        listen_port: Some(51820),
        fwmark: Some(0x51),
        peers,
    }
}

fn empty_device() -> DeviceState {
    DeviceState {
        interface: "wg0".into(),
        ..Default::default()
    }
}

fn peers_of(m: &WireguardMessage) -> &[WireguardPeer] {
    m.attributes
        .iter()
        .find_map(|a| match a {
            WireguardAttribute::Peers(p) => Some(p.as_slice()),
            _ => None,
        })
        .unwrap_or(&[])
}

fn peer_key(p: &WireguardPeer) -> [u8; 32] {
    p.0.iter()
        .find_map(|a| match a {
            WireguardPeerAttribute::PublicKey(k) => Some(*k),
            _ => None,
        })
        .expect("every peer carries its public key")
}

fn peer_flags(p: &WireguardPeer) -> WireguardPeerFlags {
    p.0.iter()
        .find_map(|a| match a {
            WireguardPeerAttribute::Flags(f) => Some(*f),
            _ => None,
        })
        .unwrap_or(WireguardPeerFlags::empty())
}

fn peer_ips(p: &WireguardPeer) -> Vec<IpNet> {
    p.0.iter()
        .filter_map(|a| match a {
            WireguardPeerAttribute::AllowedIps(v) => Some(v),
            _ => None,
        })
        .flatten()
        .map(allowed_ip)
        .collect()
}

fn allowed_ip(ip: &WireguardAllowedIp) -> IpNet {
    let mut addr = None;
    let mut cidr = None;
    let mut family = None;
    for a in &ip.0 {
        match a {
            WireguardAllowedIpAttr::Family(f) => family = Some(*f),
            WireguardAllowedIpAttr::IpAddr(x) => addr = Some(*x),
            WireguardAllowedIpAttr::Cidr(c) => cidr = Some(*c),
            _ => {}
        }
    }
    let addr = addr.unwrap();
    assert_eq!(
        family,
        Some(if addr.is_ipv4() {
            WireguardAddressFamily::Ipv4
        } else {
            WireguardAddressFamily::Ipv6
        })
    );
    IpNet::new(addr, cidr.unwrap()).unwrap()
}

/// Every message to bytes and back with the netlink crates: well-formed,
/// within the limit, addressed to the family, acknowledged, equal to what
/// was built. Also all of them in one buffer, split again.
fn through_bytes(msgs: &[WireguardMessage], limit: usize) -> Vec<WireguardMessage> {
    let mut all = Vec::new();
    let mut out = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let bytes = to_bytes(m, FAMILY, SET_FLAGS, i as u32 + 1);
        assert!(
            bytes.len() <= limit,
            "message {i}: {} > {limit} bytes",
            bytes.len()
        );
        assert_eq!(bytes.len(), 20 + m.buffer_len());
        let parsed = parse_datagram(&bytes).unwrap();
        assert_eq!(parsed.len(), 1);
        let nl = parsed.into_iter().next().unwrap();
        assert_eq!(nl.header.message_type, FAMILY);
        assert_eq!(nl.header.flags, SET_FLAGS);
        assert_eq!(nl.header.length as usize, bytes.len());
        assert_eq!(nl.header.sequence_number, i as u32 + 1);
        let NetlinkPayload::InnerMessage(genl) = nl.payload else {
            panic!("message {i} is not a generic netlink message")
        };
        assert_eq!((genl.header.cmd, genl.header.version), (1, 1));
        // Compared without Debug output: it would print keys.
        assert!(genl.payload == *m, "message {i} changed through bytes");
        out.push(genl.payload);
        all.extend_from_slice(&bytes);
    }
    assert_eq!(split_datagram(&all).unwrap().len(), msgs.len());
    out
}

fn no_device_flags(msgs: &[WireguardMessage]) {
    for m in msgs {
        assert_eq!(m.cmd, WireguardCmd::SetDevice);
        for a in &m.attributes {
            assert!(
                !matches!(a, WireguardAttribute::Flags(_)),
                "WGDEVICE_A_FLAGS (REPLACE_PEERS) must never be sent"
            );
        }
    }
}

/// The kernel's `wg_set_device` and dump, as far as wgbpf relies on them
/// (drivers/net/wireguard/netlink.c).
struct FakeKernel {
    dev: DeviceState,
    ifname: String,
    /// Which peer holds each AllowedIP.
    owner: BTreeMap<IpNet, Key>,
}

impl FakeKernel {
    fn new(ifname: &str) -> FakeKernel {
        FakeKernel {
            dev: DeviceState {
                interface: ifname.into(),
                ..Default::default()
            },
            ifname: ifname.into(),
            owner: BTreeMap::new(),
        }
    }

    fn set_device(&mut self, m: &WireguardMessage) {
        assert_eq!(m.cmd, WireguardCmd::SetDevice);
        let name = m.attributes.iter().find_map(|a| match a {
            WireguardAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        });
        assert_eq!(name.as_deref(), Some(self.ifname.as_str()));
        for a in &m.attributes {
            match a {
                WireguardAttribute::Flags(f) if f.contains(WireguardDeviceFlags::ReplacePeers) => {
                    self.dev.peers.clear()
                }
                WireguardAttribute::PrivateKey(k) => {
                    let k = Key::from_bytes(*k);
                    if k.is_zero() {
                        self.dev.private_key = None;
                        self.dev.public_key = None;
                    } else {
                        let public = k.public_key();
                        // A peer with the device's own public key goes.
                        self.dev.peers.retain(|p| p.config.public_key != public);
                        self.dev.public_key = Some(public);
                        self.dev.private_key = Some(k);
                    }
                }
                WireguardAttribute::ListenPort(p) => self.dev.listen_port = *p,
                WireguardAttribute::Fwmark(f) => self.dev.fwmark = *f,
                _ => {}
            }
        }
        for p in peers_of(m) {
            self.set_peer(p);
        }
    }

    fn set_peer(&mut self, p: &WireguardPeer) {
        let key = Key::from_bytes(peer_key(p));
        let flags = peer_flags(p);
        let pos = self
            .dev
            .peers
            .iter()
            .position(|s| s.config.public_key == key);
        let pos = match pos {
            None if flags
                .intersects(WireguardPeerFlags::RemoveMe | WireguardPeerFlags::UpdateOnly) =>
            {
                return
            }
            None => {
                self.dev.peers.push(PeerState {
                    config: PeerConfig::new(key.clone()),
                    last_handshake: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                });
                self.dev.peers.len() - 1
            }
            Some(i) => i,
        };
        if flags.contains(WireguardPeerFlags::RemoveMe) {
            for ip in &self.dev.peers[pos].config.allowed_ips {
                self.owner.remove(ip);
            }
            self.dev.peers.remove(pos);
            return;
        }
        if flags.contains(WireguardPeerFlags::ReplaceAllowedIps) {
            for ip in std::mem::take(&mut self.dev.peers[pos].config.allowed_ips) {
                self.owner.remove(&ip);
            }
        }
        for a in &p.0 {
            let c = &mut self.dev.peers[pos].config;
            match a {
                WireguardPeerAttribute::PresharedKey(k) => {
                    let k = Key::from_bytes(*k);
                    c.preshared_key = (!k.is_zero()).then_some(k);
                }
                WireguardPeerAttribute::Endpoint(e) => c.endpoint = Some(*e),
                WireguardPeerAttribute::PersistentKeepalive(k) => {
                    c.persistent_keepalive = (*k != 0).then_some(*k)
                }
                _ => {}
            }
        }
        for ip in peer_ips(p) {
            let ip = ip.trunc();
            // An AllowedIP moves to the peer that claims it last.
            if let Some(old) = self.owner.insert(ip, key.clone()) {
                if let Some(o) = self
                    .dev
                    .peers
                    .iter_mut()
                    .find(|o| o.config.public_key == old)
                {
                    o.config.allowed_ips.retain(|x| *x != ip);
                }
            }
            self.dev.peers[pos].config.allowed_ips.push(ip);
        }
    }

    /// The dump's replies, split as the kernel splits them: device
    /// attributes first, as many peers per reply as fit in `limit`, a peer
    /// whose AllowedIPs do not fit continued in the next reply with its
    /// public key only.
    fn dump(&self, limit: usize) -> Vec<WireguardMessage> {
        use WireguardPeerAttribute as A;
        let mut out = Vec::new();
        let mut attrs = vec![
            WireguardAttribute::ListenPort(self.dev.listen_port),
            WireguardAttribute::Fwmark(self.dev.fwmark),
            WireguardAttribute::IfIndex(7),
            WireguardAttribute::IfName(self.ifname.clone()),
        ];
        if let Some(k) = &self.dev.private_key {
            attrs.push(WireguardAttribute::PrivateKey(*k.as_bytes()));
            attrs.push(WireguardAttribute::PublicKey(*k.public_key().as_bytes()));
        }
        let mut peers: Vec<WireguardPeer> = Vec::new();
        let size = |attrs: &Vec<WireguardAttribute>, peers: &Vec<WireguardPeer>| {
            20 + attrs.as_slice().buffer_len() + 4 + peers.as_slice().buffer_len()
        };
        let flush = |attrs: &mut Vec<WireguardAttribute>,
                     peers: &mut Vec<WireguardPeer>,
                     out: &mut Vec<WireguardMessage>| {
            let mut a = std::mem::take(attrs);
            a.push(WireguardAttribute::Peers(std::mem::take(peers)));
            out.push(WireguardMessage {
                cmd: WireguardCmd::GetDevice,
                attributes: a,
            });
        };
        for (n, s) in self.dev.peers.iter().enumerate() {
            let c = &s.config;
            let hs = s
                .last_handshake
                .map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap())
                .unwrap_or_default();
            let mut head = vec![
                A::PublicKey(*c.public_key.as_bytes()),
                A::PresharedKey(
                    c.preshared_key
                        .as_ref()
                        .map(|k| *k.as_bytes())
                        .unwrap_or([0; 32]),
                ),
                A::PersistentKeepalive(c.persistent_keepalive.unwrap_or(0)),
                A::LastHandshake(WireguardTimeSpec {
                    seconds: hs.as_secs() as i64,
                    nano_seconds: hs.subsec_nanos() as i64,
                }),
                A::RxBytes(s.rx_bytes + n as u64),
                A::TxBytes(s.tx_bytes),
                A::ProtocolVersion(1),
            ];
            if let Some(e) = c.endpoint {
                head.push(A::Endpoint(e));
            }
            let ips: Vec<WireguardAllowedIp> = c
                .allowed_ips
                .iter()
                .map(|ip| {
                    WireguardAllowedIp(vec![
                        WireguardAllowedIpAttr::Family(if ip.addr().is_ipv4() {
                            WireguardAddressFamily::Ipv4
                        } else {
                            WireguardAddressFamily::Ipv6
                        }),
                        WireguardAllowedIpAttr::IpAddr(ip.addr()),
                        WireguardAllowedIpAttr::Cidr(ip.prefix_len()),
                    ])
                })
                .collect();
            let build = |head: &Vec<A>, ips: &[WireguardAllowedIp]| {
                let mut p = head.clone();
                if !ips.is_empty() {
                    p.push(A::AllowedIps(ips.to_vec()));
                }
                WireguardPeer(p)
            };
            let mut from = 0;
            loop {
                let rest = &ips[from..];
                let fits = |peers: &mut Vec<WireguardPeer>, n: usize| {
                    peers.push(build(&head, &rest[..n]));
                    let ok = size(&attrs, peers) <= limit;
                    peers.pop();
                    ok
                };
                // Not even the peer's head: the next reply starts with it.
                if !fits(&mut peers, 0) {
                    assert!(!peers.is_empty(), "the limit is too small for one peer");
                    flush(&mut attrs, &mut peers, &mut out);
                    continue;
                }
                let mut n = 0;
                while n < rest.len() && fits(&mut peers, n + 1) {
                    n += 1;
                }
                peers.push(build(&head, &rest[..n]));
                from += n;
                if from == ips.len() {
                    break;
                }
                flush(&mut attrs, &mut peers, &mut out);
                // The continuation: the public key and further AllowedIPs.
                head = vec![A::PublicKey(*c.public_key.as_bytes())];
            }
        }
        if !peers.is_empty() || out.is_empty() {
            flush(&mut attrs, &mut peers, &mut out);
        }
        out
    }
}

/// `msgs` as the kernel would send them in a dump, to bytes and back.
fn dump_through_bytes(msgs: &[WireguardMessage]) -> Vec<WireguardMessage> {
    let mut datagram = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let b = to_bytes(m, FAMILY, NLM_F_MULTIPART, 42);
        assert!(b.len() <= MESSAGE_LIMIT, "reply {i}: {} bytes", b.len());
        datagram.extend_from_slice(&b);
    }
    parse_datagram(&datagram)
        .unwrap()
        .into_iter()
        .map(|m| match m.payload {
            NetlinkPayload::InnerMessage(g) => {
                assert_eq!(g.header.cmd, 0);
                g.payload
            }
            _ => panic!("not a WireGuard reply"),
        })
        .collect()
}

/// Both sides' configurations as sets: same peers, same fields.
fn same_config(want: &DeviceConfig, have: &DeviceState) {
    assert!(want.private_key == have.private_key, "private key differs");
    if let Some(p) = want.listen_port {
        assert_eq!(p, have.listen_port);
    }
    if let Some(m) = want.fwmark {
        assert_eq!(m, have.fwmark);
    }
    assert_eq!(want.peers.len(), have.peers.len());
    for p in &want.peers {
        let h = have.peer(&p.public_key).expect("peer present");
        assert!(h.config.preshared_key == p.preshared_key, "psk differs");
        assert_eq!(h.config.endpoint, p.endpoint);
        assert_eq!(h.config.persistent_keepalive, p.persistent_keepalive);
        assert_eq!(h.config.allowed_set(), p.allowed_set());
    }
    assert!(wg::changes_between(want, have).is_empty());
}

#[test]
fn ten_thousand_peers_split_below_the_buffer_size() {
    let want = big_config(10_000);
    let cs = wg::changes_between(&want, &empty_device());
    assert_eq!(cs.peers.len(), 10_000);
    let msgs = set_device_messages("wg0", &cs);
    assert!(msgs.len() > 100, "{} messages", msgs.len());
    let msgs = through_bytes(&msgs, MESSAGE_LIMIT);
    no_device_flags(&msgs);

    // Device attributes in the first message only.
    for (i, m) in msgs.iter().enumerate() {
        let dev = m
            .attributes
            .iter()
            .filter(|a| {
                matches!(
                    a,
                    WireguardAttribute::PrivateKey(_)
                        | WireguardAttribute::ListenPort(_)
                        | WireguardAttribute::Fwmark(_)
                )
            })
            .count();
        assert_eq!(dev, if i == 0 { 3 } else { 0 }, "message {i}");
    }

    // Every peer and every AllowedIP exactly once; a peer split across
    // messages appears again at the start of the next one, with its key,
    // UPDATE_ONLY, and without REPLACE_ALLOWEDIPS.
    let mut seen: BTreeMap<[u8; 32], Vec<IpNet>> = BTreeMap::new();
    let mut order: Vec<[u8; 32]> = Vec::new();
    let mut splits = 0;
    for (i, m) in msgs.iter().enumerate() {
        for (j, p) in peers_of(m).iter().enumerate() {
            let k = peer_key(p);
            let flags = peer_flags(p);
            if let Some(ips) = seen.get_mut(&k) {
                splits += 1;
                assert_eq!(j, 0, "a continued peer starts its message");
                assert_eq!(order.last(), Some(&k), "continued right after itself");
                assert_eq!(flags, WireguardPeerFlags::UpdateOnly, "message {i}");
                assert!(p.0.iter().all(|a| matches!(
                    a,
                    WireguardPeerAttribute::PublicKey(_)
                        | WireguardPeerAttribute::Flags(_)
                        | WireguardPeerAttribute::AllowedIps(_)
                )));
                ips.extend(peer_ips(p));
            } else {
                assert_eq!(flags, WireguardPeerFlags::ReplaceAllowedIps, "a new peer");
                seen.insert(k, peer_ips(p));
                order.push(k);
            }
        }
    }
    assert!(
        splits > 0,
        "no peer was split: the test proves less than it says"
    );
    assert_eq!(seen.len(), 10_000);
    let mut all_ips = BTreeSet::new();
    for p in &want.peers {
        let ips = &seen[p.public_key.as_bytes()];
        assert_eq!(ips.len(), 3);
        assert_eq!(
            ips.iter().copied().collect::<BTreeSet<_>>(),
            p.allowed_set()
        );
        all_ips.extend(ips.iter().copied());
    }
    assert_eq!(all_ips.len(), 30_000);
    assert_eq!(order.len(), 10_000);

    // Applied in order, they make the device the configuration.
    let mut k = FakeKernel::new("wg0");
    for m in &msgs {
        k.set_device(m);
    }
    same_config(&want, &k.dev);

    // And re-applying the same configuration sends nothing.
    assert!(set_device_messages("wg0", &wg::changes_between(&want, &k.dev)).is_empty());
}

#[test]
fn a_peer_with_many_allowed_ips_spans_messages() {
    let mut p = PeerConfig::new(key(1));
    p.allowed_ips = (0..600u32)
        .map(|i| IpNet::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i << 8))), 24).unwrap())
        .collect();
    p.allowed_ips.push(net("fd00::/64"));
    let want = DeviceConfig {
        peers: vec![PeerConfig::new(key(0)), p.clone(), PeerConfig::new(key(2))],
        ..Default::default()
    };
    let cs = wg::changes_between(&want, &empty_device());
    for limit in [MESSAGE_LIMIT, 1024, 300] {
        let msgs = set_device_messages_within("wg-long", &cs, limit);
        let msgs = through_bytes(&msgs, limit);
        no_device_flags(&msgs);
        let appearances: Vec<(usize, WireguardPeerFlags, usize)> = msgs
            .iter()
            .enumerate()
            .flat_map(|(i, m)| {
                peers_of(m)
                    .iter()
                    .filter(|x| peer_key(x) == *key(1).as_bytes())
                    .map(move |x| (i, peer_flags(x), peer_ips(x).len()))
            })
            .collect();
        assert!(
            appearances.len() >= 601 * 28 / limit,
            "{limit}: {appearances:?}"
        );
        assert_eq!(appearances[0].1, WireguardPeerFlags::ReplaceAllowedIps);
        for w in appearances.windows(2) {
            assert_eq!(w[1].0, w[0].0 + 1, "one appearance per message");
        }
        for a in &appearances[1..] {
            assert_eq!(a.1, WireguardPeerFlags::UpdateOnly);
        }
        assert!(
            appearances.iter().all(|a| a.2 > 0),
            "never without an AllowedIP"
        );
        assert_eq!(appearances.iter().map(|a| a.2).sum::<usize>(), 601);
        let mut k = FakeKernel::new("wg-long");
        for m in &msgs {
            k.set_device(m);
        }
        same_config(&want, &k.dev);
    }
}

#[test]
fn flags_for_remove_update_and_add() {
    let cs = ChangeSet {
        peers: vec![
            PeerChange::Remove(key(1)),
            PeerChange::Update(PeerUpdate {
                public_key: key(2),
                preshared_key: Some(None),
                endpoint: None,
                persistent_keepalive: Some(0),
                allowed_ips: None,
            }),
            PeerChange::Update(PeerUpdate {
                public_key: key(3),
                preshared_key: Some(Some(key(33))),
                endpoint: Some("[fd00::3]:51000".parse().unwrap()),
                persistent_keepalive: None,
                allowed_ips: Some(vec![net("10.0.3.0/24")]),
            }),
            PeerChange::Update(PeerUpdate {
                public_key: key(5),
                preshared_key: None,
                endpoint: None,
                persistent_keepalive: None,
                allowed_ips: Some(vec![]),
            }),
            PeerChange::Add(PeerConfig {
                allowed_ips: vec![net("10.0.4.4/32")],
                ..PeerConfig::new(key(4))
            }),
        ],
        ..Default::default()
    };
    let msgs = through_bytes(&set_device_messages("wg0", &cs), MESSAGE_LIMIT);
    assert_eq!(msgs.len(), 1);
    no_device_flags(&msgs);
    assert_eq!(
        msgs[0].attributes[0],
        WireguardAttribute::IfName("wg0".into())
    );
    assert_eq!(msgs[0].attributes.len(), 2, "only the name and the peers");
    let peers = peers_of(&msgs[0]);
    assert_eq!(peers.len(), 5);
    use WireguardPeerAttribute as A;
    use WireguardPeerFlags as F;
    assert!(peers[0].0 == vec![A::PublicKey(*key(1).as_bytes()), A::Flags(F::RemoveMe)]);
    assert!(
        peers[1].0
            == vec![
                A::PublicKey(*key(2).as_bytes()),
                A::PresharedKey([0; 32]),
                A::PersistentKeepalive(0),
                A::Flags(F::UpdateOnly),
            ]
    );
    assert_eq!(peer_flags(&peers[2]), F::UpdateOnly | F::ReplaceAllowedIps);
    assert_eq!(peer_ips(&peers[2]), vec![net("10.0.3.0/24")]);
    assert!(peers[2]
        .0
        .contains(&A::Endpoint("[fd00::3]:51000".parse().unwrap())));
    assert!(peers[2].0.contains(&A::PresharedKey(*key(33).as_bytes())));
    // Replaced by nothing: the flag, no AllowedIPs attribute.
    assert!(
        peers[3].0
            == vec![
                A::PublicKey(*key(5).as_bytes()),
                A::Flags(F::UpdateOnly | F::ReplaceAllowedIps)
            ]
    );
    // A new peer: everything, psk zero (none), keepalive off, not UPDATE_ONLY.
    assert_eq!(peer_flags(&peers[4]), F::ReplaceAllowedIps);
    assert!(peers[4].0.contains(&A::PresharedKey([0; 32])));
    assert!(peers[4].0.contains(&A::PersistentKeepalive(0)));
    assert_eq!(peer_ips(&peers[4]), vec![net("10.0.4.4/32")]);

    // UPDATE_ONLY: a peer that vanished is not re-created; REMOVE_ME of an
    // absent peer is nothing.
    let mut k = FakeKernel::new("wg0");
    k.set_device(&msgs[0]);
    let keys: Vec<Key> = k
        .dev
        .peers
        .iter()
        .map(|p| p.config.public_key.clone())
        .collect();
    assert!(keys == vec![key(4)]);
}

#[test]
fn empty_and_device_only_change_sets() {
    assert!(set_device_messages("wg0", &ChangeSet::default()).is_empty());
    let cs = ChangeSet {
        listen_port: Some(4000),
        fwmark: Some(0),
        ..Default::default()
    };
    let msgs = through_bytes(&set_device_messages("wg0", &cs), MESSAGE_LIMIT);
    assert!(
        msgs == vec![WireguardMessage {
            cmd: WireguardCmd::SetDevice,
            attributes: vec![
                WireguardAttribute::IfName("wg0".into()),
                WireguardAttribute::ListenPort(4000),
                WireguardAttribute::Fwmark(0),
            ],
        }]
    );
}

#[test]
fn a_dump_with_a_peer_split_across_replies_is_one_peer() {
    use WireguardPeerAttribute as A;
    let ip = |s: &str| {
        let n = net(s);
        WireguardAllowedIp(vec![
            WireguardAllowedIpAttr::Family(if n.addr().is_ipv4() {
                WireguardAddressFamily::Ipv4
            } else {
                WireguardAddressFamily::Ipv6
            }),
            WireguardAllowedIpAttr::IpAddr(n.addr()),
            WireguardAllowedIpAttr::Cidr(n.prefix_len()),
        ])
    };
    let private = key(77).clamped();
    let replies = vec![
        WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![
                WireguardAttribute::ListenPort(51820),
                WireguardAttribute::Fwmark(9),
                WireguardAttribute::IfIndex(3),
                WireguardAttribute::IfName("wg0".into()),
                WireguardAttribute::PrivateKey(*private.as_bytes()),
                WireguardAttribute::PublicKey(*private.public_key().as_bytes()),
                WireguardAttribute::Peers(vec![WireguardPeer(vec![
                    A::PublicKey(*key(1).as_bytes()),
                    A::PresharedKey(*key(11).as_bytes()),
                    A::PersistentKeepalive(25),
                    A::LastHandshake(WireguardTimeSpec {
                        seconds: 1_700_000_000,
                        nano_seconds: 5,
                    }),
                    A::RxBytes(20),
                    A::TxBytes(10),
                    A::ProtocolVersion(1),
                    A::Endpoint("192.0.2.1:51000".parse().unwrap()),
                    A::AllowedIps(vec![ip("10.0.0.1/32"), ip("10.0.1.0/24")]),
                ])]),
            ],
        },
        WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![WireguardAttribute::Peers(vec![
                WireguardPeer(vec![
                    A::PublicKey(*key(1).as_bytes()),
                    A::AllowedIps(vec![ip("fd00::1/128")]),
                ]),
                WireguardPeer(vec![
                    A::PublicKey(*key(2).as_bytes()),
                    A::PresharedKey([0; 32]),
                    A::PersistentKeepalive(0),
                    A::LastHandshake(WireguardTimeSpec::default()),
                    A::RxBytes(0),
                    A::TxBytes(0),
                    A::ProtocolVersion(1),
                    A::AllowedIps(vec![ip("10.0.2.0/24")]),
                ]),
            ])],
        },
        WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![WireguardAttribute::Peers(vec![WireguardPeer(vec![
                A::PublicKey(*key(2).as_bytes()),
                A::AllowedIps(vec![ip("10.0.3.0/24")]),
            ])])],
        },
    ];
    let replies = dump_through_bytes(&replies);
    let d = device_from_dump("wg0", &replies).unwrap();
    assert!(d.private_key == Some(private.clone()));
    assert!(d.public_key == Some(private.public_key()));
    assert_eq!((d.listen_port, d.fwmark), (51820, 9));
    assert_eq!(d.peers.len(), 2);
    let a = &d.peers[0];
    assert!(a.config.public_key == key(1) && a.config.preshared_key == Some(key(11)));
    assert_eq!(a.config.persistent_keepalive, Some(25));
    assert_eq!(a.config.endpoint, Some("192.0.2.1:51000".parse().unwrap()));
    assert_eq!((a.rx_bytes, a.tx_bytes), (20, 10));
    assert_eq!(
        a.last_handshake,
        Some(SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 5))
    );
    assert_eq!(
        a.config.allowed_ips,
        vec![net("10.0.0.1/32"), net("10.0.1.0/24"), net("fd00::1/128")]
    );
    let b = &d.peers[1];
    assert!(b.config.public_key == key(2) && b.config.preshared_key.is_none());
    assert_eq!(b.config.persistent_keepalive, None);
    assert_eq!(b.config.endpoint, None);
    assert_eq!(b.last_handshake, None);
    assert_eq!(
        b.config.allowed_ips,
        vec![net("10.0.2.0/24"), net("10.0.3.0/24")]
    );

    // A device without a private key; a peer without a key is an error.
    let d = device_from_dump("wg0", &[]).unwrap();
    assert!(d.private_key.is_none() && d.peers.is_empty());
    let bad = WireguardMessage {
        cmd: WireguardCmd::GetDevice,
        attributes: vec![WireguardAttribute::Peers(vec![WireguardPeer(vec![
            A::RxBytes(1),
        ])])],
    };
    assert!(device_from_dump("wg0", &[bad]).is_err());
}

#[test]
fn round_trip_through_the_kernel_model() {
    // A full configuration: built, to bytes, parsed, applied as the kernel
    // applies it, dumped as the kernel dumps it (peers split across
    // replies), to bytes, coalesced: the same configuration.
    let want = big_config(2_000);
    let mut k = FakeKernel::new("wg0");
    let cs = wg::changes_between(&want, &k.dev);
    for m in through_bytes(&set_device_messages("wg0", &cs), MESSAGE_LIMIT) {
        k.set_device(&m);
    }
    let replies = k.dump(MESSAGE_LIMIT);
    assert!(replies.len() > 10);
    let split = replies
        .windows(2)
        .filter(|w| {
            let (a, b) = (peers_of(&w[0]), peers_of(&w[1]));
            !a.is_empty() && !b.is_empty() && peer_key(a.last().unwrap()) == peer_key(&b[0])
        })
        .count();
    assert!(split > 0, "the dump split no peer");
    let read = device_from_dump("wg0", &dump_through_bytes(&replies)).unwrap();
    same_config(&want, &read);
    assert_eq!(read.peers.len(), 2_000);
    let order: Vec<&Key> = read.peers.iter().map(|p| &p.config.public_key).collect();
    assert!(order == want.peers.iter().map(|p| &p.public_key).collect::<Vec<_>>());

    // A change: one peer gone, one new, one with other AllowedIPs and no
    // psk, a new port. Only that is sent, and the result is again the
    // configuration.
    let mut next = want.clone();
    next.peers.remove(10);
    next.peers[20].allowed_ips = vec![net("192.168.77.0/24")];
    next.peers[29].preshared_key = None; // was peer 30, with a psk
    next.peers.push(PeerConfig {
        allowed_ips: vec![net("10.250.0.1/32")],
        ..PeerConfig::new(key(999_999))
    });
    next.listen_port = Some(4000);
    let cs = wg::changes_between(&next, &read);
    assert_eq!(cs.peers.len(), 4);
    let msgs = through_bytes(&set_device_messages("wg0", &cs), MESSAGE_LIMIT);
    assert_eq!(msgs.len(), 1);
    no_device_flags(&msgs);
    for m in &msgs {
        k.set_device(m);
    }
    let read = device_from_dump("wg0", &dump_through_bytes(&k.dump(MESSAGE_LIMIT))).unwrap();
    same_config(&next, &read);
}

#[test]
fn get_request_is_a_dump_by_name() {
    let m = wg::kernel::messages::get_device_message("wg0");
    let b = to_bytes(&m, FAMILY, GET_FLAGS, 1);
    let parsed = parse_datagram(&b).unwrap();
    assert_eq!(parsed[0].header.flags, GET_FLAGS);
    let NetlinkPayload::InnerMessage(g) = &parsed[0].payload else {
        panic!()
    };
    assert_eq!(g.header.cmd, 0);
    assert_eq!(
        g.payload.attributes,
        vec![WireguardAttribute::IfName("wg0".into())]
    );
}

#[test]
fn without_socket_or_module_the_error_says_so() {
    // Meaningful only where the kernel has no WireGuard (this host).
    if wg::kernel::family_id().is_some() {
        eprintln!("the kernel has WireGuard: skipped");
        return;
    }
    let iface = format!("wgbnone{}", std::process::id() % 100_000);
    let e = wg::open_backend(&iface, wg::BackendChoice::Auto)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("no userspace WireGuard socket for {iface}"))
            && e.contains("the kernel has no WireGuard"),
        "{e}"
    );
}
