//! Drift repair for `wgbpf run`: every few seconds, compare the interface
//! with the mesh file last enforced and put back what drifted.
//!
//! A pass checks, in this order:
//!
//! 1. **Link** (only when the file manages WireGuard, i.e. has
//!    `private_key_file`): the interface is up; if not, it is set up
//!    (`SIOCSIFFLAGS`, as `ip link set IF up`).
//! 2. **WireGuard** (same condition): the device against the file, endpoint
//!    DNS names resolved again; the least change set is sent (peers
//!    added, removed or updated; private key, port, fwmark).
//! 3. **Programs**: each of the two pinned programs is attached to the
//!    interface (tcx: in the interface's tcx program list; clsact: one of
//!    its `tc` filters), checked by program id, not by what is pinned. A
//!    detached program is attached again *as it is pinned*, without a gap
//!    and without touching the other direction
//!    ([`crate::dataplane::reattach`] does both). Only when the maps
//!    themselves are gone (`wgbpf unload`, bpffs remounted) is the data
//!    plane loaded afresh with `enforce()`.
//! 4. **Policy**: the active slot holds the file's compiled policy
//!    (`Maps::active_holds`, as `wgbpf audit`); otherwise `enforce()`
//!    applies it (it adopts the pinned data plane and swaps atomically).
//!
//! Every repair is reported in the [`Pass`] (the daemon logs and counts
//! it); a check that fails is reported as an error and the pass goes on.

use std::{
    collections::BTreeSet,
    ffi::CString,
    net::{SocketAddr, ToSocketAddrs},
    time::Duration,
};

use anyhow::{anyhow, Context, Result};
use wgbpf_common::capacity;

use super::{
    config::desired,
    diff::reconcile,
    model::{DeviceState, PeerChange},
    open_backend, Key, WgError,
};
use crate::{
    daemon::hook::{Pass, Reconciler, Repair, RepairKind},
    dataplane::{
        attach::{self, AttachMode},
        pin_dir, reattach, Maps,
    },
    enforce::enforce,
    mesh::{Mesh, WgSpec},
    policy::compile::compile,
};

/// How often `wgbpf run` checks for drift unless told otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// Kept here for the callers that found them here (the metrics).
pub use crate::dataplane::reattach::{attachment, HookState};

/// The [`Reconciler`] of `wgbpf run`: checks and repairs every
/// `interval`.
#[derive(Debug)]
pub struct DriftRepair {
    interval: Duration,
    /// How to attach when the data plane has to be loaded afresh.
    mode: AttachMode,
}

impl DriftRepair {
    pub fn new(interval: Duration, mode: AttachMode) -> Self {
        Self { interval, mode }
    }
}

impl Reconciler for DriftRepair {
    fn reconcile(&self, mesh: &Mesh) -> Result<Pass> {
        let mut pass = Pass::default();
        let iface = mesh.interface.as_str();
        if mesh.wg.private_key_file.is_some() {
            if let Err(e) = repair_link(iface, &mut pass) {
                pass.errors.push(format!("link: {e:#}"));
            }
            if let Err(e) = repair_wireguard(mesh, &mut pass) {
                pass.errors.push(format!("WireGuard: {e:#}"));
            }
        }
        if let Err(e) = self.repair_dataplane(mesh, &mut pass) {
            pass.errors.push(format!("data plane: {e:#}"));
        }
        Ok(pass)
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }
}

// ---------------------------------------------------------------- link

/// Up or not (`IFF_UP`), by `SIOCGIFFLAGS`.
pub fn link_is_up(iface: &str) -> std::io::Result<bool> {
    Ok(if_flags(iface, None)? & libc::IFF_UP as libc::c_short != 0)
}

/// `ip link set IFACE up`, by `SIOCSIFFLAGS` (CAP_NET_ADMIN).
pub fn set_link_up(iface: &str) -> std::io::Result<()> {
    let flags = if_flags(iface, None)?;
    if_flags(iface, Some(flags | libc::IFF_UP as libc::c_short)).map(|_| ())
}

/// Reads the interface flags, or writes `set`.
fn if_flags(iface: &str, set: Option<libc::c_short>) -> std::io::Result<libc::c_short> {
    let name = CString::new(iface).map_err(std::io::Error::other)?;
    let bytes = name.as_bytes_with_nul();
    if bytes.len() > libc::IFNAMSIZ {
        return Err(std::io::Error::other("interface name too long"));
    }
    // SAFETY: a plain socket; closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain old data; all zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let (op, result) = match set {
        None => (libc::SIOCGIFFLAGS, None),
        Some(f) => {
            req.ifr_ifru.ifru_flags = f;
            (libc::SIOCSIFFLAGS, Some(f))
        }
    };
    // SAFETY: `req` is a valid ifreq for these two requests.
    let rc = unsafe { libc::ioctl(fd, op as _, &mut req) };
    let err = std::io::Error::last_os_error();
    // SAFETY: our own fd.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(err);
    }
    // SAFETY: SIOCGIFFLAGS filled in the flags member.
    Ok(result.unwrap_or(unsafe { req.ifr_ifru.ifru_flags }))
}

fn repair_link(iface: &str, pass: &mut Pass) -> Result<()> {
    if link_is_up(iface).with_context(|| format!("reading {iface}'s flags"))? {
        return Ok(());
    }
    set_link_up(iface).with_context(|| format!("setting {iface} up"))?;
    pass.repairs.push(Repair {
        kind: RepairKind::Link,
        drift: format!("interface {iface} is down"),
        action: "set it up".into(),
    });
    Ok(())
}

// ---------------------------------------------------------------- WireGuard

/// Whether `endpoint` (`host:port`) names a host rather than an address.
fn is_dns_name(endpoint: &str) -> bool {
    endpoint.parse::<SocketAddr>().is_err()
}

/// The wanted configuration, endpoints resolved now. A name that does not
/// resolve leaves that peer's endpoint as the device has it (reported as an
/// error, so the rest is still repaired); a name whose addresses include
/// the device's current endpoint keeps it (round-robin DNS does not make
/// the endpoint flap).
fn wanted(mesh: &Mesh, current: &DeviceState, pass: &mut Pass) -> Result<super::Desired> {
    let mut spec: WgSpec = mesh.wg.clone();
    let d = loop {
        match desired(&mesh.interface, &spec) {
            Ok(d) => break d,
            Err(WgError::Peer {
                peer,
                field: "endpoint",
                message,
            }) => {
                let p = spec
                    .peers
                    .iter_mut()
                    .find(|p| p.name == peer && p.endpoint.is_some())
                    .ok_or_else(|| anyhow!("peer `{peer}`: endpoint: {message}"))?;
                pass.errors.push(format!(
                    "WireGuard: peer `{peer}`: endpoint: {message}; its endpoint is left as it is"
                ));
                p.endpoint = None;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let mut d = d;
    for (p, want) in spec.peers.iter().zip(d.config.peers.iter_mut()) {
        let (Some(text), Some(now)) = (
            p.endpoint.as_deref().filter(|e| is_dns_name(e)),
            current
                .peer(&want.public_key)
                .and_then(|s| s.config.endpoint),
        ) else {
            continue;
        };
        if want.endpoint == Some(now) {
            continue;
        }
        let all: BTreeSet<SocketAddr> = text
            .to_socket_addrs()
            .map(|a| a.collect())
            .unwrap_or_default();
        if all.contains(&now) {
            want.endpoint = Some(now);
        }
    }
    Ok(d)
}

fn repair_wireguard(mesh: &Mesh, pass: &mut Pass) -> Result<()> {
    let backend = open_backend(&mesh.interface)?;
    let current = backend.get()?;
    pass.device = Some(current.clone());
    let d = wanted(mesh, &current, pass)?;
    let changes = reconcile(&d.config, &current);
    if changes.is_empty() {
        return Ok(());
    }
    let label = |k: &Key| d.names.get(k).cloned().unwrap_or_else(|| k.to_base64());
    let mut repairs = Vec::new();
    if changes.private_key.is_some() {
        repairs.push(Repair {
            kind: RepairKind::WireguardDevice,
            drift: "the device's private key differs from private_key_file".into(),
            action: "set the private key".into(),
        });
    }
    if let Some(p) = changes.listen_port {
        repairs.push(Repair {
            kind: RepairKind::WireguardDevice,
            drift: format!("listen port is {}, the file says {p}", current.listen_port),
            action: format!("set listen port {p}"),
        });
    }
    if let Some(m) = changes.fwmark {
        repairs.push(Repair {
            kind: RepairKind::WireguardDevice,
            drift: format!("fwmark is {:#x}, the file says {m:#x}", current.fwmark),
            action: format!("set fwmark {m:#x}"),
        });
    }
    for c in &changes.peers {
        let who = label(c.public_key());
        let (drift, action) = match c {
            PeerChange::Add(_) => (
                format!("peer {who} is missing from the device"),
                "added it".to_string(),
            ),
            PeerChange::Remove(_) => (
                format!("peer {who} is on the device but not in the file"),
                "removed it".to_string(),
            ),
            PeerChange::Update(u) => {
                let have = current.peer(&u.public_key).map(|p| &p.config);
                let mut what = Vec::new();
                for f in u.fields() {
                    what.push(match (f, have) {
                        ("endpoint", Some(h)) => format!(
                            "endpoint {} (now {})",
                            h.endpoint
                                .map_or_else(|| "none".to_string(), |e| e.to_string()),
                            u.endpoint.map(|e| e.to_string()).unwrap_or_default()
                        ),
                        ("allowed_ips", Some(h)) => format!(
                            "allowed_ips {:?}",
                            h.allowed_ips
                                .iter()
                                .map(|n| n.to_string())
                                .collect::<Vec<_>>()
                        ),
                        (f, _) => f.to_string(),
                    });
                }
                (
                    format!("peer {who}: {} differ from the file", what.join(", ")),
                    format!("updated {}", u.fields().join(", ")),
                )
            }
        };
        repairs.push(Repair {
            kind: RepairKind::WireguardPeer,
            drift,
            action,
        });
    }
    backend.apply(&changes).context("sending the change set")?;
    pass.repairs.extend(repairs);
    Ok(())
}

// ---------------------------------------------------------------- data plane

impl DriftRepair {
    fn repair_dataplane(&self, mesh: &Mesh, pass: &mut Pass) -> Result<()> {
        let iface = mesh.interface.as_str();
        let dir = pin_dir(iface);
        let complete = attach::pinned_mode(iface).is_some() && attach::programs_pinned(iface);
        let maps = if complete {
            Maps::open_pinned(&dir).ok()
        } else {
            None
        };
        let Some(maps) = maps else {
            // The data plane is gone (or its maps are): nothing to adopt.
            // Remove what is left and load it afresh.
            let _ = attach::remove(iface);
            let (maps, enforced) = enforce(mesh, self.mode).context("loading afresh")?;
            pass.repairs.push(Repair {
                kind: RepairKind::Program,
                drift: format!(
                    "the data plane of {iface} is not pinned (maps or programs missing at {})",
                    dir.display()
                ),
                action: format!(
                    "loaded and attached it afresh (policy version {}; counters start at 0)",
                    enforced.policy.version
                ),
            });
            pass.reenforced = Some((maps, enforced));
            return Ok(());
        };

        // Programs: attached by id, or attached again as pinned.
        reattach::reattach_missing_with(iface, |prog, mode| {
            pass.repairs.push(Repair {
                kind: RepairKind::Program,
                drift: format!("program {prog} is not attached to {iface}"),
                action: format!(
                    "attached the pinned program again ({}; same maps, policy and counters)",
                    match mode {
                        AttachMode::Tcx => "tcx link",
                        AttachMode::Clsact => "clsact filter",
                    }
                ),
            });
        })?;

        // Policy: the active slot holds the file's compiled policy.
        let (_, cfg) = maps.active_slot()?;
        let peer_names: Vec<String> = mesh.policy.peers.iter().map(|p| p.name.clone()).collect();
        let plan = maps.plan_peer_slots(&peer_names)?;
        let mut policy = mesh.policy.clone();
        for p in &mut policy.peers {
            p.index = plan.slots[&p.name];
        }
        let compiled = compile(&policy, capacity::PEERS).context("compiling the policy")?;
        if maps.active_holds(&compiled)? {
            return Ok(());
        }
        drop(maps);
        let (maps, enforced) = enforce(mesh, self.mode).context("applying the file's policy")?;
        pass.repairs.push(Repair {
            kind: RepairKind::Policy,
            drift: format!(
                "the enforced policy (version {}) differs from the file's",
                cfg.version
            ),
            action: format!(
                "applied the file's policy (version {}, atomic swap)",
                enforced.policy.version
            ),
        });
        pass.reenforced = Some((maps, enforced));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_are_told_from_addresses() {
        assert!(!is_dns_name("192.0.2.1:51820"));
        assert!(!is_dns_name("[2001:db8::1]:51820"));
        assert!(is_dns_name("vpn.example.com:51820"));
        assert!(is_dns_name("localhost:51820"));
    }

    #[test]
    fn loopback_is_up() {
        // Every namespace has lo; a test namespace may have it down.
        assert!(link_is_up("lo").is_ok());
        assert!(link_is_up("no-such-if0").is_err());
    }
}
