//! `wgbpf doctor`: the gateway's tuning, checked on this host against the
//! mesh file, each finding with what to change and why. The facts are
//! read first ([`gather`]: sysctls, link MTUs and offloads over ioctls, the
//! data plane's hooks and table fill), then judged by pure rules
//! ([`judge`]), so each rule is tested on facts as well as on namespaces
//! made to fail it.

use std::{
    ffi::CString,
    os::fd::{AsRawFd, FromRawFd},
};

use serde::Serialize;

use crate::{
    dataplane::{self, hooks},
    mesh::Mesh,
    policy::model::{Action, Selector},
};

/// WireGuard's per-packet overhead on an IPv4 underlay (IP 20, UDP 8,
/// WireGuard header 16, tag 16) and on IPv6 (IP 40).
pub const OVERHEAD_V4: u32 = 60;
pub const OVERHEAD_V6: u32 = 80;
/// Socket buffer limits below this starve a busy tunnel's UDP socket.
pub const MIN_SOCKET_BUFFER: u64 = 4 << 20;
/// A table fuller than this (percent) is close to evicting live entries.
pub const FILL_WARN_PERCENT: u64 = 80;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ok,
    Info,
    Warning,
    Error,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub severity: Severity,
    pub message: String,
    /// What to change, when something should.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// An underlay interface: where the tunnel's UDP packets leave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Underlay {
    pub name: String,
    pub mtu: Option<u32>,
    pub gro: Option<bool>,
    pub gso: Option<bool>,
}

/// What [`gather`] read. `None`: could not be read (reported as such).
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub tunnel_mtu: Option<u32>,
    pub underlays: Vec<Underlay>,
    pub rmem_max: Option<u64>,
    pub wmem_max: Option<u64>,
    pub ip_forward: Option<bool>,
    pub ipv6_forward: Option<bool>,
    /// The effective `rp_filter` of the tunnel (the larger of `all` and
    /// the interface's).
    pub rp_filter: Option<u32>,
    /// `None`: no data plane pinned; `Some(Err)`: it could not be read.
    pub hooks: Option<Result<[hooks::HookState; 2], String>>,
    /// Flow-table entries in use, and its size.
    pub flows: Option<(u64, u64)>,
    /// Deny-map keys in use, and its size.
    pub denies: Option<(u64, u64)>,
    /// Each peer's endpoint on the device now, by name.
    pub endpoints: std::collections::BTreeMap<String, std::net::SocketAddr>,
}

fn finding(
    check: &'static str,
    severity: Severity,
    message: String,
    fix: Option<String>,
) -> Finding {
    Finding {
        check,
        severity,
        message,
        fix,
    }
}

/// Whether the policy lets traffic through the gateway to somewhere that
/// is not the gateway: then the host must forward.
fn routes_through(mesh: &Mesh) -> bool {
    mesh.policy.rules.iter().any(|r| {
        r.action == Action::Accept
            && match &r.dst {
                Selector::Any => true,
                Selector::Prefixes(ps) => ps.iter().any(|p| {
                    !mesh
                        .policy
                        .local
                        .iter()
                        .any(|l| p.contains(&l.addr()) && p.prefix_len() == p.max_prefix_len())
                }),
            }
    })
}

/// The findings for `facts`, in the order of the checks.
pub fn judge(mesh: &Mesh, facts: &Facts) -> Vec<Finding> {
    use Severity::*;
    let iface = &mesh.interface;
    let mut out = Vec::new();

    // MTU: a tunnel packet plus WireGuard's overhead must fit the underlay.
    match (facts.tunnel_mtu, facts.underlays.is_empty()) {
        (None, _) => out.push(finding("mtu", Warning, format!("the MTU of {iface} could not be read"), None)),
        (Some(_), true) => out.push(finding(
            "mtu",
            Info,
            "no underlay interface known (no [interface.guard] underlay, no default route): the path MTU is not checked".into(),
            Some("name one with --underlay IF".into()),
        )),
        (Some(t), false) => {
            for u in &facts.underlays {
                let Some(m) = u.mtu else {
                    out.push(finding("mtu", Warning, format!("the MTU of {} could not be read", u.name), None));
                    continue;
                };
                let (sev, why) = if t + OVERHEAD_V4 > m {
                    (Error, format!("{iface}'s MTU {t} + {OVERHEAD_V4} bytes of WireGuard over IPv4 exceeds {}'s MTU {m}: full-size packets are fragmented or dropped", u.name))
                } else if t + OVERHEAD_V6 > m {
                    (Warning, format!("{iface}'s MTU {t} + {OVERHEAD_V6} bytes of WireGuard over IPv6 exceeds {}'s MTU {m}: peers reaching the gateway over IPv6 fragment", u.name))
                } else {
                    (Ok, format!("{iface}'s MTU {t} fits {}'s MTU {m} over IPv4 and IPv6", u.name))
                };
                let fix = (sev != Ok).then(|| format!("set mtu = {} in [interface] (and on the peers)", m.saturating_sub(OVERHEAD_V6)));
                out.push(finding("mtu", sev, why, fix));
            }
        }
    }

    // UDP socket buffers.
    for (name, v) in [("rmem_max", facts.rmem_max), ("wmem_max", facts.wmem_max)] {
        out.push(match v {
            Some(b) if b < MIN_SOCKET_BUFFER => finding(
                "socket_buffers",
                Warning,
                format!("net.core.{name} is {b} bytes: bursts overflow the tunnel's UDP socket and are dropped"),
                Some(format!("sysctl -w net.core.{name}={MIN_SOCKET_BUFFER}")),
            ),
            Some(b) => finding("socket_buffers", Ok, format!("net.core.{name} is {b} bytes"), None),
            None => finding("socket_buffers", Info, format!("net.core.{name} could not be read"), None),
        });
    }

    // Peers behind NAT: without an endpoint the gateway cannot start a
    // session, and the peer's NAT mapping expires unless it keeps it open.
    for p in &mesh.wg.peers {
        if p.endpoint.is_none() && p.persistent_keepalive.unwrap_or(0) == 0 {
            out.push(finding(
                "keepalive",
                Info,
                format!("peer `{}` has no endpoint: it is behind NAT or roams, and only it can start a session", p.name),
                Some(format!("give `{}` PersistentKeepalive = 25 on its side (wgbpf export wg-quick writes it)", p.name)),
            ));
        }
    }

    // Peers whose endpoint moved from the file's: they roam or sit behind a
    // NAT that rewrote their port; the mapping expires unless kept open.
    for p in &mesh.wg.peers {
        let (Some(file), Some(now)) = (&p.endpoint, facts.endpoints.get(&p.name)) else {
            continue;
        };
        if file.is_dns_name() || p.persistent_keepalive.unwrap_or(0) != 0 {
            continue;
        }
        if file.as_str().parse::<std::net::SocketAddr>().ok() != Some(*now) {
            out.push(finding(
                "keepalive",
                Info,
                format!(
                    "peer `{}`'s endpoint is {now}, not the file's {}: it roams or sits behind NAT",
                    p.name,
                    file.as_str()
                ),
                Some(format!(
                    "persistent_keepalive = 25 for `{}` (and on its side), so its NAT mapping stays open",
                    p.name
                )),
            ));
        }
    }

    // GRO/GSO on the underlay: without them every packet walks the stack
    // alone.
    for u in &facts.underlays {
        for (what, v) in [
            ("generic-receive-offload", u.gro),
            ("generic-segmentation-offload", u.gso),
        ] {
            if v == Some(false) {
                out.push(finding(
                    "offloads",
                    Warning,
                    format!("{what} is off on {}: the tunnel's throughput drops", u.name),
                    Some(format!(
                        "ethtool -K {} {} on",
                        u.name,
                        if what.starts_with("generic-receive") {
                            "gro"
                        } else {
                            "gso"
                        }
                    )),
                ));
            }
        }
    }

    // Forwarding, when the policy routes through the gateway.
    if routes_through(mesh) {
        for (sysctl, v) in [
            ("net.ipv4.ip_forward", facts.ip_forward),
            ("net.ipv6.conf.all.forwarding", facts.ipv6_forward),
        ] {
            match v {
                Some(false) => out.push(finding(
                    "forwarding",
                    Error,
                    format!("{sysctl} is 0, but the policy allows traffic through the gateway to other hosts: it is dropped"),
                    Some(format!("sysctl -w {sysctl}=1")),
                )),
                Some(true) => out.push(finding("forwarding", Ok, format!("{sysctl} is 1"), None)),
                None => out.push(finding("forwarding", Info, format!("{sysctl} could not be read"), None)),
            }
        }
    }
    match facts.rp_filter {
        Some(1) => out.push(finding(
            "rp_filter",
            Warning,
            format!("strict reverse-path filtering (rp_filter 1) on {iface}: packets from peers' subnets routed another way back are dropped"),
            Some(format!("sysctl -w net.ipv4.conf.{iface}.rp_filter=2 (and net.ipv4.conf.all.rp_filter=2)")),
        )),
        Some(v) => out.push(finding("rp_filter", Ok, format!("rp_filter is {v} on {iface}"), None)),
        None => {}
    }

    // The data plane: loaded, attached, first.
    match &facts.hooks {
        None => out.push(finding(
            "dataplane",
            Error,
            format!("no wgbpf data plane is loaded on {iface}: nothing is filtered"),
            Some("wgbpf load -c FILE (or start wgbpf run)".into()),
        )),
        Some(Err(e)) => out.push(finding(
            "dataplane",
            Error,
            format!("the data plane of {iface} cannot be read: {e}"),
            None,
        )),
        Some(Result::Ok(h)) => {
            for s in h {
                let (sev, msg) = if !s.attached() {
                    (
                        Error,
                        format!(
                            "the {} program is not attached: that direction is not filtered",
                            s.direction
                        ),
                    )
                } else if !s.first {
                    (Error, format!("another program runs before wgbpf's {} program: a pass there skips the policy", s.direction))
                } else {
                    (
                        Ok,
                        format!("the {} program is attached and first", s.direction),
                    )
                };
                out.push(finding(
                    "dataplane",
                    sev,
                    msg,
                    (sev != Ok).then(|| {
                        "wgbpf load -c FILE puts it back first (wgbpf run does so by itself)".into()
                    }),
                ));
            }
        }
    }
    let fills = [
        (
            "flow_table",
            "the flow table",
            facts.flows,
            "idle connections are being evicted",
            "raise [interface.flows] table_size, or a per-peer budget (new_per_second)",
        ),
        (
            "deny_map",
            "the deny map",
            facts.denies,
            "the oldest deny keys are being evicted: the per-destination deny series lose history",
            "look for a peer scanning (wgbpf monitor, wgbpf counters): the map's size is fixed",
        ),
    ];
    for (check, what, fill, why, fix) in fills {
        let Some((used, size)) = fill else { continue };
        let pct = used * 100 / size.max(1);
        out.push(if pct >= FILL_WARN_PERCENT {
            finding(
                check,
                Warning,
                format!("{what} is {pct}% full ({used} of {size}): {why}"),
                Some(fix.into()),
            )
        } else {
            finding(
                check,
                Ok,
                format!("{what} is {pct}% full ({used} of {size})"),
                None,
            )
        });
    }
    out
}

/// The exit status for `findings`: 0 when nothing needs doing, 1 for a
/// warning, 2 for an error.
pub fn exit_status(findings: &[Finding]) -> i32 {
    match findings.iter().map(|f| f.severity).max() {
        Some(Severity::Error) => 2,
        Some(Severity::Warning) => 1,
        _ => 0,
    }
}

fn read_sysctl(path: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/sys/{path}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `ioctl(req)` with an `ifreq` for `iface` on a throwaway datagram
/// socket (unbound: it works whatever addresses the namespace has).
fn ifreq_ioctl(iface: &str, req: libc::c_ulong, fill: impl FnOnce(&mut libc::ifreq)) -> Option<()> {
    let name = CString::new(iface).ok()?;
    if name.as_bytes().len() >= libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor no one else owns.
    let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: a zeroed ifreq is valid; the name fits with its NUL.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.as_bytes_with_nul()) {
        *d = *s as libc::c_char;
    }
    fill(&mut ifr);
    // SAFETY: the request and the ifreq match (SIOCETHTOOL).
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), req, &mut ifr) };
    (rc == 0).then_some(())
}

/// A link's MTU, over rtnetlink as the WireGuard library reads links.
fn link_mtu(iface: &str) -> Option<u32> {
    crate::wg::kernel::link::link_mtu(iface).ok().flatten()
}

/// ETHTOOL_GGRO and ETHTOOL_GGSO (legacy ethtool value commands).
const ETHTOOL_GGSO: u32 = 0x23;
const ETHTOOL_GGRO: u32 = 0x2b;
const SIOCETHTOOL: libc::c_ulong = 0x8946;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

fn ethtool_flag(iface: &str, cmd: u32) -> Option<bool> {
    let mut v = EthtoolValue { cmd, data: 0 };
    let ptr = &mut v as *mut EthtoolValue;
    ifreq_ioctl(iface, SIOCETHTOOL, |ifr| {
        ifr.ifr_ifru.ifru_data = ptr.cast()
    })?;
    Some(v.data != 0)
}

/// Interfaces of this namespace's default routes (IPv4 and IPv6).
fn default_route_links() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/proc/net/route") {
        for l in t.lines().skip(1) {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() > 7 && f[1] == "00000000" && f[7] == "00000000" {
                out.push(f[0].to_string());
            }
        }
    }
    if let Ok(t) = std::fs::read_to_string("/proc/net/ipv6_route") {
        for l in t.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() >= 10 && f[0].bytes().all(|b| b == b'0') && f[1] == "00" && f[9] != "lo" {
                out.push(f[9].to_string());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Reads the facts for `mesh`'s interface; `underlays` named on the
/// command line come first, then the file's guard underlays, else the
/// default routes' interfaces.
pub fn gather(mesh: &Mesh, underlays: &[String]) -> Facts {
    let iface = &mesh.interface;
    let mut names: Vec<String> = underlays.to_vec();
    if names.is_empty() {
        names = mesh.guard.iter().flat_map(|g| g.underlay.clone()).collect();
    }
    if names.is_empty() {
        names = default_route_links();
    }
    let flag = |p: &str| read_sysctl(p).map(|v| v != 0);
    let rp = [
        read_sysctl("net/ipv4/conf/all/rp_filter"),
        read_sysctl(&format!("net/ipv4/conf/{iface}/rp_filter")),
    ];
    let maps = dataplane::open(iface);
    let (hooks, flows) = match &maps {
        Ok(None) => (None, None),
        Err(e) => (Some(Err(format!("{e:#}"))), None),
        Ok(Some(m)) => (
            Some(hooks::attachment(iface).map_err(|e| format!("{e:#}"))),
            m.flow_entries()
                .ok()
                .map(|n| (n as u64, u64::from(mesh.flows.table_size))),
        ),
    };
    let denies = match &maps {
        Ok(Some(m)) => m
            .denies()
            .ok()
            .map(|d| (d.len() as u64, u64::from(wgbpf_common::capacity::DENIES))),
        _ => None,
    };
    let peer_names: std::collections::BTreeMap<_, _> = mesh
        .wg
        .peers
        .iter()
        .filter_map(|p| Some((p.public_key.clone()?, p.name.clone())))
        .collect();
    let endpoints = crate::wg::BackendChoice::from_env()
        .ok()
        .and_then(|c| crate::wg::open_backend(iface, c).ok())
        .and_then(|b| b.get().ok())
        .map(|state| {
            state
                .peers
                .iter()
                .filter_map(|p| {
                    Some((
                        peer_names.get(&p.config.public_key)?.clone(),
                        p.config.endpoint?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Facts {
        endpoints,
        tunnel_mtu: link_mtu(iface),
        underlays: names
            .into_iter()
            .map(|name| Underlay {
                mtu: link_mtu(&name),
                gro: ethtool_flag(&name, ETHTOOL_GGRO),
                gso: ethtool_flag(&name, ETHTOOL_GGSO),
                name,
            })
            .collect(),
        rmem_max: read_sysctl("net/core/rmem_max"),
        wmem_max: read_sysctl("net/core/wmem_max"),
        ip_forward: flag("net/ipv4/ip_forward"),
        ipv6_forward: flag("net/ipv6/conf/all/forwarding"),
        rp_filter: rp.iter().flatten().max().map(|v| *v as u32),
        hooks,
        flows,
        denies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESH: &str = "[interface]\nname = \"wg0\"\naddresses = [\"10.9.0.1/24\"]\n\
        [[peer]]\nname = \"alice\"\nallowed_ips = [\"10.9.0.2/32\"]\n\
        [[peer]]\nname = \"bob\"\nallowed_ips = [\"10.9.0.3/32\"]\nendpoint = \"192.0.2.3:51820\"\n\
        [policy]\n[[policy.rule]]\naction = \"accept\"\nfrom = [\"alice\"]\nto = [\"bob\"]\n";

    fn healthy() -> Facts {
        let state = hooks::HookState {
            direction: "ingress",
            tcx: true,
            first: true,
            clsact: false,
        };
        Facts {
            tunnel_mtu: Some(1420),
            underlays: vec![Underlay {
                name: "eth0".into(),
                mtu: Some(1500),
                gro: Some(true),
                gso: Some(true),
            }],
            rmem_max: Some(8 << 20),
            wmem_max: Some(8 << 20),
            ip_forward: Some(true),
            ipv6_forward: Some(true),
            rp_filter: Some(2),
            hooks: Some(Result::Ok([
                state,
                hooks::HookState {
                    direction: "egress",
                    ..state
                },
            ])),
            flows: Some((10, 4096)),
            denies: Some((3, 65536)),
            endpoints: Default::default(),
        }
    }

    fn worst(mesh: &Mesh, f: &Facts, check: &str) -> Severity {
        judge(mesh, f)
            .iter()
            .filter(|x| x.check == check)
            .map(|x| x.severity)
            .max()
            .unwrap_or(Severity::Ok)
    }

    #[test]
    fn each_rule_fires_on_its_own_fact() {
        let mesh = crate::source::parse("m.toml", MESH).unwrap();
        let ok = healthy();
        let all = judge(&mesh, &ok);
        // Only alice's missing keepalive is worth saying.
        assert!(all.iter().all(|f| f.severity <= Severity::Info), "{all:#?}");
        assert_eq!(exit_status(&all), 0);
        type Break = Box<dyn Fn(&mut Facts)>;
        let cases: Vec<(&str, Severity, Break)> = vec![
            (
                "mtu",
                Severity::Error,
                Box::new(|f| f.tunnel_mtu = Some(1500)),
            ),
            (
                "mtu",
                Severity::Warning,
                Box::new(|f| f.tunnel_mtu = Some(1440)),
            ),
            (
                "socket_buffers",
                Severity::Warning,
                Box::new(|f| f.rmem_max = Some(212_992)),
            ),
            (
                "offloads",
                Severity::Warning,
                Box::new(|f| f.underlays[0].gro = Some(false)),
            ),
            (
                "forwarding",
                Severity::Error,
                Box::new(|f| f.ip_forward = Some(false)),
            ),
            (
                "rp_filter",
                Severity::Warning,
                Box::new(|f| f.rp_filter = Some(1)),
            ),
            ("dataplane", Severity::Error, Box::new(|f| f.hooks = None)),
            (
                "dataplane",
                Severity::Error,
                Box::new(|f| {
                    if let Some(Result::Ok(h)) = &mut f.hooks {
                        h[1].first = false;
                    }
                }),
            ),
            (
                "flow_table",
                Severity::Warning,
                Box::new(|f| f.flows = Some((4000, 4096))),
            ),
        ];
        for (check, want, break_it) in cases {
            let mut f = healthy();
            break_it(&mut f);
            assert_eq!(worst(&mesh, &f, check), want, "{check}");
            let others = judge(&mesh, &f)
                .into_iter()
                .filter(|x| x.check != check && x.severity > Severity::Info)
                .count();
            assert_eq!(others, 0, "{check}: only its own finding");
            assert_eq!(
                exit_status(&judge(&mesh, &f)),
                if want == Severity::Error { 2 } else { 1 }
            );
        }
        let nat: Vec<_> = all.iter().filter(|f| f.check == "keepalive").collect();
        assert_eq!(nat.len(), 1);
        assert!(nat[0].message.contains("`alice`"));
        // bob's endpoint moved (NAT rewrote his port): keepalive advised.
        let mut moved = healthy();
        moved
            .endpoints
            .insert("bob".into(), "192.0.2.3:40123".parse().unwrap());
        let nat: Vec<_> = judge(&mesh, &moved)
            .into_iter()
            .filter(|f| f.check == "keepalive")
            .collect();
        assert_eq!(nat.len(), 2);
        assert!(
            nat[1]
                .message
                .contains("`bob`'s endpoint is 192.0.2.3:40123"),
            "{nat:?}"
        );
        let mut same = healthy();
        same.endpoints
            .insert("bob".into(), "192.0.2.3:51820".parse().unwrap());
        assert_eq!(
            judge(&mesh, &same)
                .iter()
                .filter(|f| f.check == "keepalive")
                .count(),
            1
        );
        // Forwarding does not matter when the policy only reaches the gateway.
        let to_gw = crate::source::parse(
            "m.toml",
            &MESH.replace("to = [\"bob\"]", "to = [\"gateway\"]"),
        )
        .unwrap();
        let mut f = healthy();
        f.ip_forward = Some(false);
        assert_eq!(worst(&to_gw, &f, "forwarding"), Severity::Ok);
    }
}
