//! The kernel backend's messages, without a kernel: a [`ChangeSet`] to the
//! `WG_CMD_SET_DEVICE` messages that apply it (split as wg(8) splits them),
//! `WG_CMD_GET_DEVICE` dump replies to one [`DeviceState`], and both to and
//! from bytes. Pure functions, tested in `userspace/tests/wg_kernel_messages.rs`.
//!
//! Messages are `netlink-packet-wireguard` attribute trees. A
//! [`WireguardMessage`] may hold a private or preshared key: never print one
//! with `Debug`; [`scrub`] zeroes them.

use std::{
    net::IpAddr,
    time::{Duration, SystemTime},
};

use ipnet::IpNet;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_generic::GenlMessage;
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardMessage, WireguardPeer, WireguardPeerAttribute, WireguardPeerFlags,
    WireguardTimeSpec,
};
use zeroize::Zeroize;

use crate::wg::{
    key::Key,
    model::{ChangeSet, DeviceState, PeerChange, PeerConfig, PeerState},
};

/// `struct nlmsghdr`.
pub use crate::netlink::NLMSG_HDRLEN;
/// `struct genlmsghdr`.
pub const GENL_HDRLEN: usize = 4;
/// The most one `WG_CMD_SET_DEVICE` message may take, headers included:
/// libmnl's `MNL_SOCKET_BUFFER_SIZE` on 4 KiB pages, which is what wg(8)
/// caps its messages at (`SOCKET_BUFFER_SIZE`).
pub const MESSAGE_LIMIT: usize = 4096;

/// A netlink attribute's size with its header, padded to 4 bytes.
const fn nla(value_len: usize) -> usize {
    4 + ((value_len + 3) & !3)
}

fn peer_attr_size(a: &WireguardPeerAttribute) -> usize {
    use netlink_packet_core::Nla;
    nla(a.value_len())
}

/// One AllowedIP's nest: family, address, prefix length.
fn allowed_ip_size(net: &IpNet) -> usize {
    let addr = if net.addr().is_ipv4() { 4 } else { 16 };
    4 + nla(2) + nla(addr) + nla(1)
}

fn allowed_ip(net: &IpNet) -> WireguardAllowedIp {
    let family = match net {
        IpNet::V4(_) => WireguardAddressFamily::Ipv4,
        IpNet::V6(_) => WireguardAddressFamily::Ipv6,
    };
    WireguardAllowedIp(vec![
        WireguardAllowedIpAttr::Family(family),
        WireguardAllowedIpAttr::IpAddr(net.network()),
        WireguardAllowedIpAttr::Cidr(net.prefix_len()),
    ])
}

fn key_bytes(k: &Key) -> [u8; 32] {
    *k.as_bytes()
}

/// The peer's attributes other than its AllowedIPs, and its AllowedIPs.
/// `continued`: the peer's earlier AllowedIPs went in an earlier message, so
/// only its key, `WGPEER_F_UPDATE_ONLY` (it exists now; if it vanished
/// meanwhile it is not re-created half-configured) and the rest of its
/// AllowedIPs follow — never `WGPEER_F_REPLACE_ALLOWEDIPS` again.
fn peer_head(change: &PeerChange, continued: bool) -> (Vec<WireguardPeerAttribute>, &[IpNet]) {
    use WireguardPeerAttribute as A;
    let zero = [0u8; 32];
    let mut attrs = vec![A::PublicKey(key_bytes(change.public_key()))];
    let mut flags = WireguardPeerFlags::empty();
    let ips: &[IpNet] = match change {
        PeerChange::Remove(_) => {
            flags |= WireguardPeerFlags::RemoveMe;
            &[]
        }
        PeerChange::Add(p) => {
            if !continued {
                flags |= WireguardPeerFlags::ReplaceAllowedIps;
                attrs.push(A::PresharedKey(
                    p.preshared_key.as_ref().map(key_bytes).unwrap_or(zero),
                ));
                if let Some(e) = p.endpoint {
                    attrs.push(A::Endpoint(e));
                }
                attrs.push(A::PersistentKeepalive(p.persistent_keepalive.unwrap_or(0)));
            }
            &p.allowed_ips
        }
        PeerChange::Update(u) => {
            // Never create a peer by accident (it may have just gone).
            flags |= WireguardPeerFlags::UpdateOnly;
            if !continued {
                if let Some(psk) = &u.preshared_key {
                    attrs.push(A::PresharedKey(psk.as_ref().map(key_bytes).unwrap_or(zero)));
                }
                if let Some(e) = u.endpoint {
                    attrs.push(A::Endpoint(e));
                }
                if let Some(k) = u.persistent_keepalive {
                    attrs.push(A::PersistentKeepalive(k));
                }
                if u.allowed_ips.is_some() {
                    flags |= WireguardPeerFlags::ReplaceAllowedIps;
                }
            }
            u.allowed_ips.as_deref().unwrap_or(&[])
        }
    };
    if continued {
        flags |= WireguardPeerFlags::UpdateOnly;
    }
    if !flags.is_empty() {
        attrs.push(A::Flags(flags));
    }
    (attrs, ips)
}

/// The `WG_CMD_SET_DEVICE` messages that apply `changes` to `iface`, each
/// at most [`MESSAGE_LIMIT`] bytes. Empty for an empty change set.
pub fn set_device_messages(iface: &str, changes: &ChangeSet) -> Vec<WireguardMessage> {
    set_device_messages_within(iface, changes, MESSAGE_LIMIT)
}

/// [`set_device_messages`] with messages of at most `limit` bytes (headers
/// included), split as wg(8) splits them:
///
/// - every message names the device (`WGDEVICE_A_IFNAME`); the device's
///   own attributes (private key, listen port, fwmark) go in the first;
///   `WGDEVICE_A_FLAGS` is never sent, so never `WGDEVICE_F_REPLACE_PEERS`;
/// - peers follow in the change set's order, as many as fit;
/// - a peer whose AllowedIPs do not all fit gets as many as fit, and
///   appears again first in the next message with its public key,
///   `WGPEER_F_UPDATE_ONLY` and the next AllowedIPs — without
///   `WGPEER_F_REPLACE_ALLOWEDIPS`, which would drop the ones just added.
///
/// A peer starts in a message only with at least one of its remaining
/// AllowedIPs (when it has any), so a replaced peer is not left without
/// AllowedIPs between two messages. Should `limit` be too small for a single
/// peer and one AllowedIP, that message takes them anyway (never with the
/// real limit, where a peer's head is at most 160 bytes).
pub fn set_device_messages_within(
    iface: &str,
    changes: &ChangeSet,
    limit: usize,
) -> Vec<WireguardMessage> {
    let mut out = Vec::new();
    if changes.is_empty() {
        return out;
    }
    let name = WireguardAttribute::IfName(iface.to_string());
    let base = NLMSG_HDRLEN + GENL_HDRLEN + nla(iface.len() + 1);
    let peers = &changes.peers;
    // The next peer to place, the next of its AllowedIPs, and whether it
    // has appeared in an earlier message already.
    let (mut i, mut from, mut continued) = (0usize, 0usize, false);
    loop {
        let mut attrs = vec![name.clone()];
        let mut size = base;
        if out.is_empty() {
            if let Some(k) = &changes.private_key {
                attrs.push(WireguardAttribute::PrivateKey(key_bytes(k)));
                size += nla(32);
            }
            if let Some(p) = changes.listen_port {
                attrs.push(WireguardAttribute::ListenPort(p));
                size += nla(2);
            }
            if let Some(m) = changes.fwmark {
                attrs.push(WireguardAttribute::Fwmark(m));
                size += nla(4);
            }
        }
        let mut nested: Vec<WireguardPeer> = Vec::new();
        if i < peers.len() {
            size += 4; // WGDEVICE_A_PEERS
            while i < peers.len() {
                let (mut head, ips) = peer_head(&peers[i], continued);
                let rest = &ips[from..];
                let mut psize = 4 + head.iter().map(peer_attr_size).sum::<usize>();
                if !rest.is_empty() {
                    psize += 4; // WGPEER_A_ALLOWEDIPS
                }
                let mut take = 0;
                for net in rest {
                    let s = allowed_ip_size(net);
                    if size + psize + s > limit {
                        break;
                    }
                    psize += s;
                    take += 1;
                }
                let fits = size + psize <= limit && (rest.is_empty() || take > 0);
                if !fits {
                    if !nested.is_empty() {
                        break;
                    }
                    // Nothing else in this message: take the peer and one
                    // AllowedIP anyway, or nothing would ever progress.
                    take = take.max(rest.len().min(1));
                }
                if take > 0 {
                    head.push(WireguardPeerAttribute::AllowedIps(
                        rest[..take].iter().map(allowed_ip).collect(),
                    ));
                }
                nested.push(WireguardPeer(head));
                size += psize;
                if take == rest.len() {
                    (i, from, continued) = (i + 1, 0, false);
                } else {
                    (from, continued) = (from + take, true);
                    break;
                }
            }
            attrs.push(WireguardAttribute::Peers(nested));
        }
        out.push(WireguardMessage {
            cmd: WireguardCmd::SetDevice,
            attributes: attrs,
        });
        if i >= peers.len() {
            return out;
        }
    }
}

/// The `WG_CMD_GET_DEVICE` request for `iface` (sent with `NLM_F_DUMP`).
pub fn get_device_message(iface: &str) -> WireguardMessage {
    WireguardMessage {
        cmd: WireguardCmd::GetDevice,
        attributes: vec![WireguardAttribute::IfName(iface.to_string())],
    }
}

/// Zeroes the private and preshared keys in `msgs`.
pub fn scrub(msgs: &mut [WireguardMessage]) {
    for m in msgs {
        for a in &mut m.attributes {
            match a {
                WireguardAttribute::PrivateKey(k) => k.zeroize(),
                WireguardAttribute::Peers(peers) => {
                    for p in peers {
                        for pa in &mut p.0 {
                            if let WireguardPeerAttribute::PresharedKey(k) = pa {
                                k.zeroize();
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// One peer while a dump is read; handshake seconds and nanoseconds.
struct Partial {
    state: PeerState,
    handshake: (i64, i64),
}

/// The device the `WG_CMD_GET_DEVICE` dump `replies` describe. The kernel
/// sends the device's attributes in the first reply and as many peers per
/// reply as fit; a peer with more AllowedIPs than fit is continued at the
/// start of the next reply with its public key and the next AllowedIPs
/// only. Consecutive appearances of one public key are one peer (wg(8)'s
/// `coalesce_peers`); so is a later one, should it ever come.
pub fn device_from_dump(iface: &str, replies: &[WireguardMessage]) -> Result<DeviceState, String> {
    let mut dev = DeviceState {
        interface: iface.to_string(),
        ..Default::default()
    };
    let mut peers: Vec<Partial> = Vec::new();
    let mut index: std::collections::HashMap<Key, usize> = std::collections::HashMap::new();
    for reply in replies {
        for attr in &reply.attributes {
            match attr {
                WireguardAttribute::PrivateKey(k) => {
                    let k = Key::from_bytes(*k);
                    if k.is_zero() {
                        dev.private_key = None;
                        dev.public_key = None;
                    } else {
                        dev.public_key = Some(k.public_key());
                        dev.private_key = Some(k);
                    }
                }
                WireguardAttribute::ListenPort(p) => dev.listen_port = *p,
                WireguardAttribute::Fwmark(m) => dev.fwmark = *m,
                WireguardAttribute::Peers(list) => {
                    for p in list {
                        merge_peer(&mut peers, &mut index, p)?;
                    }
                }
                // IfIndex, IfName, the public key (derived instead), and
                // whatever later kernels add.
                _ => {}
            }
        }
    }
    dev.peers = peers
        .into_iter()
        .map(|mut p| {
            let (s, n) = p.handshake;
            if (s, n) != (0, 0) && s >= 0 && n >= 0 {
                p.state.last_handshake = Some(
                    SystemTime::UNIX_EPOCH
                        + Duration::from_secs(s as u64)
                        + Duration::from_nanos(n as u64),
                );
            }
            p.state
        })
        .collect();
    Ok(dev)
}

fn merge_peer(
    peers: &mut Vec<Partial>,
    index: &mut std::collections::HashMap<Key, usize>,
    p: &WireguardPeer,
) -> Result<(), String> {
    use WireguardPeerAttribute as A;
    let key =
        p.0.iter()
            .find_map(|a| match a {
                A::PublicKey(k) => Some(Key::from_bytes(*k)),
                _ => None,
            })
            .ok_or("a peer without WGPEER_A_PUBLIC_KEY in the dump")?;
    let slot = match index.get(&key) {
        Some(i) => *i,
        None => {
            index.insert(key.clone(), peers.len());
            peers.push(Partial {
                state: PeerState {
                    config: PeerConfig::new(key),
                    last_handshake: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                },
                handshake: (0, 0),
            });
            peers.len() - 1
        }
    };
    let part = &mut peers[slot];
    let st = &mut part.state;
    for a in &p.0 {
        match a {
            A::PresharedKey(k) => {
                let k = Key::from_bytes(*k);
                st.config.preshared_key = (!k.is_zero()).then_some(k);
            }
            A::Endpoint(e) => st.config.endpoint = Some(*e),
            A::PersistentKeepalive(k) => st.config.persistent_keepalive = (*k != 0).then_some(*k),
            A::LastHandshake(WireguardTimeSpec {
                seconds,
                nano_seconds,
            }) => part.handshake = (*seconds, *nano_seconds),
            A::RxBytes(n) => st.rx_bytes = *n,
            A::TxBytes(n) => st.tx_bytes = *n,
            A::AllowedIps(ips) => {
                for ip in ips {
                    st.config.allowed_ips.push(parse_allowed_ip(ip)?);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn parse_allowed_ip(ip: &WireguardAllowedIp) -> Result<IpNet, String> {
    let (mut addr, mut cidr) = (None::<IpAddr>, None::<u8>);
    for a in &ip.0 {
        match a {
            WireguardAllowedIpAttr::IpAddr(x) => addr = Some(*x),
            WireguardAllowedIpAttr::Cidr(c) => cidr = Some(*c),
            _ => {}
        }
    }
    match (addr, cidr) {
        (Some(a), Some(c)) => {
            IpNet::new(a, c).map_err(|_| format!("AllowedIP {a}/{c}: prefix too long"))
        }
        _ => Err("an AllowedIP without address or prefix length".into()),
    }
}

/// Flags of a `WG_CMD_SET_DEVICE` request: each one is acknowledged.
pub const SET_FLAGS: u16 = NLM_F_REQUEST | NLM_F_ACK;
/// Flags of the `WG_CMD_GET_DEVICE` request.
pub const GET_FLAGS: u16 = NLM_F_REQUEST | NLM_F_DUMP;

/// `msg` as the bytes of one netlink message to generic netlink family
/// `family` (the id `CTRL_CMD_GETFAMILY` gave for "wireguard").
pub fn to_bytes(msg: &WireguardMessage, family: u16, flags: u16, seq: u32) -> Vec<u8> {
    let mut genl = GenlMessage::from_payload(msg.clone());
    genl.set_resolved_family_id(family);
    let mut nl = NetlinkMessage::from(genl);
    nl.header.flags = flags;
    nl.header.sequence_number = seq;
    nl.finalize();
    let mut buf = vec![0u8; nl.buffer_len()];
    nl.serialize(&mut buf);
    if let NetlinkPayload::InnerMessage(m) = &mut nl.payload {
        scrub(std::slice::from_mut(&mut m.payload));
    }
    buf
}

/// The netlink messages in `bytes` (one datagram may hold several), each
/// with its header; generic netlink payloads parsed as WireGuard messages.
pub fn parse_datagram(
    bytes: &[u8],
) -> Result<Vec<NetlinkMessage<GenlMessage<WireguardMessage>>>, String> {
    split_datagram(bytes)?
        .into_iter()
        .map(|m| {
            NetlinkMessage::<GenlMessage<WireguardMessage>>::deserialize(m)
                .map_err(|e| format!("malformed netlink message: {e}"))
        })
        .collect()
}

pub use crate::netlink::split_datagram;
