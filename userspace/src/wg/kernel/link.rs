//! The kernel WireGuard interface itself, as wg-quick sets it up: the
//! `type wireguard` link, its addresses, MTU, up state, and routes for the
//! peers' AllowedIPs. Over rtnetlink (`RTM_NEWLINK`, `RTM_NEWADDR`,
//! `RTM_NEWROUTE`), blocking, one request at a time, each acknowledged.
//!
//! [`ensure_link`] only ever adds: a missing link is created, missing
//! addresses and routes are added (an existing one, `EEXIST`, is left as it
//! is), the MTU is set when given and different, the link is set up when it
//! is down. Nothing is removed. [`routes_for`] is wg-quick's route choice:
//! the AllowedIPs not already reached through the interface's own address
//! prefixes (nor through another AllowedIP); default routes (`/0`) are left
//! out, since they need wg-quick's fwmark policy routing.
//!
//! [`super::KernelBackend`] calls [`ensure_link`] for
//! [`crate::wg::Backend::ensure_interface`]; [`link_is_up`] and
//! [`set_link_up`] serve any link (a wireguard-go TUN device too).

use std::{io, net::IpAddr};

use ipnet::IpNet;
use netlink_packet_core::{NetlinkMessage, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST};
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage, AddressScope},
    link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
    route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
        RouteType,
    },
    AddressFamily, RouteNetlinkMessage,
};
use serde::Serialize;

use crate::{
    netlink::NlSocket,
    wg::{InterfaceSpec, WgError},
};

/// What [`ensure_link`] did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct LinkReport {
    pub interface: String,
    /// The link did not exist and was created (`type wireguard`).
    pub created: bool,
    /// The MTU set, when it was set.
    pub mtu: Option<u32>,
    /// The link was down and was set up.
    pub brought_up: bool,
    pub addresses_added: Vec<IpNet>,
    pub routes_added: Vec<IpNet>,
}

impl LinkReport {
    pub fn changed(&self) -> bool {
        self.created
            || self.mtu.is_some()
            || self.brought_up
            || !self.addresses_added.is_empty()
            || !self.routes_added.is_empty()
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        if !self.changed() {
            return "unchanged".into();
        }
        let mut parts = Vec::new();
        if self.created {
            parts.push("created (type wireguard)".to_string());
        }
        let list = |v: &[IpNet]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        if !self.addresses_added.is_empty() {
            parts.push(format!(
                "addresses {}",
                list(&self.addresses_added).join(", ")
            ));
        }
        if let Some(m) = self.mtu {
            parts.push(format!("mtu {m}"));
        }
        if self.brought_up {
            parts.push("up".into());
        }
        if !self.routes_added.is_empty() {
            parts.push(format!("routes {}", list(&self.routes_added).join(", ")));
        }
        parts.join("; ")
    }
}

/// The routes wg-quick would add for `allowed` on an interface with
/// `addresses`: each AllowedIP (host bits cleared, once) unless one of the
/// interface's own prefixes or another, wider AllowedIP already covers it;
/// never a default route (`/0`). Sorted, IPv4 first.
pub fn routes_for(addresses: &[IpNet], allowed: &[IpNet]) -> Vec<IpNet> {
    let own: Vec<IpNet> = addresses.iter().map(IpNet::trunc).collect();
    let mut nets: Vec<IpNet> = allowed
        .iter()
        .map(IpNet::trunc)
        .filter(|n| n.prefix_len() > 0)
        .filter(|n| !own.iter().any(|o| o.contains(n)))
        .collect();
    // In (family, network, length) order, a net inside another comes after
    // it, and the routes kept so far do not overlap: only the last kept can
    // contain the next. One pass (a file with 100,000s of AllowedIPs).
    nets.sort_by_key(|n| (n.addr().is_ipv6(), n.network(), n.prefix_len()));
    let mut kept: Vec<IpNet> = Vec::with_capacity(nets.len());
    for n in nets {
        if !kept.last().is_some_and(|w| w.contains(&n)) {
            kept.push(n);
        }
    }
    kept
}

/// The AllowedIPs a default route would have needed (`/0`): left out by
/// [`routes_for`], worth a warning.
pub fn default_routes(allowed: &[IpNet]) -> Vec<IpNet> {
    let mut v: Vec<IpNet> = allowed
        .iter()
        .map(IpNet::trunc)
        .filter(|n| n.prefix_len() == 0)
        .collect();
    v.sort();
    v.dedup();
    v
}

/// An rtnetlink request: the answer (for a request without `NLM_F_ACK`
/// that has one), or `None` at the acknowledgement.
fn request(
    s: &mut NlSocket,
    msg: RouteNetlinkMessage,
    flags: u16,
) -> io::Result<Option<RouteNetlinkMessage>> {
    let replies = s.request(NetlinkMessage::from(msg), flags, false)?;
    Ok(replies.messages.into_iter().next())
}

/// What the kernel says about a link.
struct LinkInfoNow {
    index: u32,
    kind: Option<String>,
    up: bool,
    mtu: Option<u32>,
}

fn get_link(s: &mut NlSocket, iface: &str) -> io::Result<Option<LinkInfoNow>> {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(iface.to_string()));
    let reply = match request(s, RouteNetlinkMessage::GetLink(m), NLM_F_REQUEST) {
        Ok(r) => r,
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(RouteNetlinkMessage::NewLink(l)) = reply else {
        return Err(io::Error::other(
            "no RTM_NEWLINK in the answer to RTM_GETLINK",
        ));
    };
    let mut info = LinkInfoNow {
        index: l.header.index,
        kind: None,
        up: l.header.flags.contains(LinkFlags::Up),
        mtu: None,
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::Mtu(m) => info.mtu = Some(*m),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        info.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Some(info))
}

const CREATE: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;

/// Makes `iface` a `type wireguard` link that is up, has the spec's
/// addresses, MTU (when given) and routes (in the main table, `proto boot
/// scope link` as `ip route add NET dev IFACE` makes them). Adds what is
/// missing, removes nothing. Fails on a link of another kind.
pub fn ensure_link(iface: &str, spec: &InterfaceSpec) -> Result<LinkReport, WgError> {
    let (addresses, mtu, routes) = (&spec.addresses, spec.mtu, &spec.routes);
    let err = |what: &str, e: io::Error| {
        let hint = match e.raw_os_error() {
            Some(libc::EPERM) => " (needs CAP_NET_ADMIN)",
            Some(libc::EOPNOTSUPP) => " (the kernel has no WireGuard: modprobe wireguard)",
            _ => "",
        };
        WgError::Device {
            iface: iface.to_string(),
            backend: "rtnetlink",
            message: format!("{what}: {e}{hint}"),
        }
    };
    let mut report = LinkReport {
        interface: iface.to_string(),
        ..Default::default()
    };
    let mut s = NlSocket::route().map_err(|e| err("rtnetlink socket", e))?;
    let mut link = get_link(&mut s, iface).map_err(|e| err("reading the link", e))?;
    if link.is_none() {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(iface.to_string()));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Wireguard,
            )]));
        request(&mut s, RouteNetlinkMessage::NewLink(m), CREATE).map_err(|e| {
            err(
                &format!("creating it (ip link add {iface} type wireguard)"),
                e,
            )
        })?;
        report.created = true;
        link = get_link(&mut s, iface).map_err(|e| err("reading the new link", e))?;
    }
    let link = link.ok_or_else(|| err("the link", io::Error::other("vanished")))?;
    if link.kind.as_deref() != Some("wireguard") {
        return Err(err(
            "the link",
            io::Error::other(format!(
                "exists but is not a WireGuard interface (kind {})",
                link.kind.as_deref().unwrap_or("none")
            )),
        ));
    }
    for a in addresses {
        let mut m = AddressMessage::default();
        m.header.family = match a {
            IpNet::V4(_) => AddressFamily::Inet,
            IpNet::V6(_) => AddressFamily::Inet6,
        };
        m.header.prefix_len = a.prefix_len();
        m.header.index = link.index;
        m.header.scope = AddressScope::Universe;
        let ip: IpAddr = a.addr();
        if a.addr().is_ipv4() {
            m.attributes.push(AddressAttribute::Local(ip));
        }
        m.attributes.push(AddressAttribute::Address(ip));
        match request(&mut s, RouteNetlinkMessage::NewAddress(m), CREATE) {
            Ok(_) => report.addresses_added.push(*a),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(err(&format!("adding address {a}"), e)),
        }
    }
    if let Some(want) = mtu {
        if link.mtu != Some(want) {
            let mut m = LinkMessage::default();
            m.header.index = link.index;
            m.attributes.push(LinkAttribute::Mtu(want));
            request(
                &mut s,
                RouteNetlinkMessage::SetLink(m),
                NLM_F_REQUEST | NLM_F_ACK,
            )
            .map_err(|e| err(&format!("setting mtu {want}"), e))?;
            report.mtu = Some(want);
        }
    }
    if !link.up {
        set_up(&mut s, link.index).map_err(|e| err("setting it up", e))?;
        report.brought_up = true;
    }
    for r in routes {
        let mut m = RouteMessage::default();
        m.header.address_family = match r {
            IpNet::V4(_) => AddressFamily::Inet,
            IpNet::V6(_) => AddressFamily::Inet6,
        };
        m.header.destination_prefix_length = r.prefix_len();
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = RouteScope::Link;
        m.header.kind = RouteType::Unicast;
        m.attributes.push(RouteAttribute::Destination(match r {
            IpNet::V4(n) => RouteAddress::Inet(n.network()),
            IpNet::V6(n) => RouteAddress::Inet6(n.network()),
        }));
        m.attributes.push(RouteAttribute::Oif(link.index));
        match request(&mut s, RouteNetlinkMessage::NewRoute(m), CREATE) {
            Ok(_) => report.routes_added.push(*r),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(err(&format!("adding the route {r}"), e)),
        }
    }
    Ok(report)
}

/// The names of this network namespace's links of kind `wireguard`
/// (`RTM_GETLINK` dump), sorted.
pub fn wireguard_links() -> io::Result<Vec<String>> {
    let mut s = NlSocket::route()?;
    let m = LinkMessage::default();
    let replies = s.request::<RouteNetlinkMessage>(
        NetlinkMessage::from(RouteNetlinkMessage::GetLink(m)),
        NLM_F_REQUEST | netlink_packet_core::NLM_F_DUMP,
        true,
    )?;
    let mut names = Vec::new();
    for msg in replies.messages {
        let RouteNetlinkMessage::NewLink(l) = msg else {
            continue;
        };
        let mut name = None;
        let mut wireguard = false;
        for a in &l.attributes {
            match a {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::LinkInfo(infos) => {
                    wireguard |= infos
                        .iter()
                        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Wireguard)));
                }
                _ => {}
            }
        }
        if let (Some(n), true) = (name, wireguard) {
            names.push(n);
        }
    }
    names.sort();
    Ok(names)
}

/// A link's MTU (any link of this network namespace); `None` when the
/// kernel does not say.
pub fn link_mtu(iface: &str) -> io::Result<Option<u32>> {
    let mut s = NlSocket::route()?;
    match get_link(&mut s, iface)? {
        Some(l) => Ok(l.mtu),
        None => Err(io::Error::from_raw_os_error(libc::ENODEV)),
    }
}

/// Up or not (`IFF_UP`): any link, not only WireGuard ones.
pub fn link_is_up(iface: &str) -> io::Result<bool> {
    let mut s = NlSocket::route()?;
    match get_link(&mut s, iface)? {
        Some(l) => Ok(l.up),
        None => Err(io::Error::from_raw_os_error(libc::ENODEV)),
    }
}

/// `ip link set IFACE up`: any link (CAP_NET_ADMIN).
pub fn set_link_up(iface: &str) -> io::Result<()> {
    let mut s = NlSocket::route()?;
    let link =
        get_link(&mut s, iface)?.ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
    set_up(&mut s, link.index)
}

fn set_up(s: &mut NlSocket, index: u32) -> io::Result<()> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    request(
        s,
        RouteNetlinkMessage::SetLink(m),
        NLM_F_REQUEST | NLM_F_ACK,
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    /// The same choice by comparing every pair (the definition).
    fn routes_by_pairs(addresses: &[IpNet], allowed: &[IpNet]) -> Vec<IpNet> {
        let own: Vec<IpNet> = addresses.iter().map(IpNet::trunc).collect();
        let mut nets: Vec<IpNet> = allowed
            .iter()
            .map(IpNet::trunc)
            .filter(|n| n.prefix_len() > 0 && !own.iter().any(|o| o.contains(n)))
            .collect();
        nets.sort_by_key(|n| (n.addr().is_ipv6(), n.network(), n.prefix_len()));
        nets.dedup();
        let all = nets.clone();
        nets.retain(|n| !all.iter().any(|w| w != n && w.contains(n)));
        nets
    }

    #[test]
    fn routes_agree_with_the_pairwise_definition() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let allowed: Vec<IpNet> = (0..rng.gen_range(0..40))
                .map(|_| {
                    // A small space, so that nets nest and repeat.
                    let a = std::net::Ipv4Addr::new(10, rng.gen_range(0..4), rng.gen(), rng.gen());
                    IpNet::new(a.into(), rng.gen_range(8..=32)).unwrap()
                })
                .collect();
            let addrs = nets(&["10.3.0.1/16"]);
            assert_eq!(
                routes_for(&addrs, &allowed),
                routes_by_pairs(&addrs, &allowed),
                "{allowed:?}"
            );
        }
    }

    #[test]
    fn routes_like_wg_quick() {
        let addrs = nets(&["10.88.0.1/24", "fd88::1/64"]);
        let allowed = nets(&[
            "10.88.0.5/32",   // inside the interface's /24: no route
            "fd88::5/128",    // inside the /64
            "10.99.0.7/24",   // outside: route, host bits cleared
            "10.99.0.9/32",   // inside the AllowedIP above: no route of its own
            "192.168.5.0/24", // outside
            "fd99::/64",      // outside
            "0.0.0.0/0",      // default: never
            "::/0",
            "10.99.0.0/24", // twice
        ]);
        assert_eq!(
            routes_for(&addrs, &allowed),
            nets(&["10.99.0.0/24", "192.168.5.0/24", "fd99::/64"])
        );
        assert_eq!(default_routes(&allowed), nets(&["0.0.0.0/0", "::/0"]));
        // No addresses: every AllowedIP is routed.
        assert_eq!(
            routes_for(&[], &nets(&["10.0.0.2/32", "10.0.0.3/32"])),
            nets(&["10.0.0.2/32", "10.0.0.3/32"])
        );
        // A wide interface prefix covers everything inside it.
        assert!(routes_for(&nets(&["10.0.0.1/8"]), &nets(&["10.1.2.3/32"])).is_empty());
        // Nested three deep, and a sibling after a nested one.
        let nested = nets(&[
            "10.1.1.0/24",
            "10.0.0.0/8",
            "10.200.0.0/16",
            "10.1.0.0/16",
            "11.0.0.0/8",
        ]);
        assert_eq!(
            routes_for(&[], &nested),
            nets(&["10.0.0.0/8", "11.0.0.0/8"])
        );
        assert!(routes_for(&[], &[]).is_empty());
    }

    #[test]
    fn report_summary() {
        let r = LinkReport {
            interface: "wg1".into(),
            ..Default::default()
        };
        assert!(!r.changed());
        assert_eq!(r.summary(), "unchanged");
        let r = LinkReport {
            interface: "wg1".into(),
            created: true,
            mtu: Some(1380),
            brought_up: true,
            addresses_added: nets(&["10.88.0.1/24"]),
            routes_added: nets(&["10.99.0.0/24"]),
        };
        assert_eq!(
            r.summary(),
            "created (type wireguard); addresses 10.88.0.1/24; mtu 1380; up; routes 10.99.0.0/24"
        );
    }
}
