//! Drift repair for `wgbpf run`: every few seconds, compare the interface
//! with the plan last enforced and put back what drifted.
//!
//! A pass checks, in this order:
//!
//! 1. **Link** (only when the file manages WireGuard, i.e. has
//!    `private_key_file`): with the kernel backend, the interface as the
//!    file describes it (`Backend::ensure_interface`: the link, its
//!    addresses, MTU and the routes for the peers' AllowedIPs, each added
//!    back when missing, nothing removed); with any backend, the interface
//!    is up; if not, it is set up (`SIOCSIFFLAGS`, as `ip link set IF up`).
//! 2. **WireGuard** (same condition): the device against the file, endpoint
//!    DNS names resolved again; the least change set is sent (peers
//!    added, removed or updated; private key, port, fwmark).
//! 3. **Programs**: each of the two pinned programs is attached to the
//!    interface (tcx: in the interface's tcx program list; clsact: one of
//!    its `tc` filters), checked by program id, not by what is pinned. A
//!    detached program is attached again *as it is pinned*, without a gap
//!    and without touching the other direction
//!    ([`crate::dataplane::reattach`] does both). Only when the maps
//!    themselves are gone (`wgbpf unload`, bpffs remounted) is the plan
//!    enforced afresh ([`crate::enforce::enforce`]).
//! 4. **Policy**: the active slot holds the plan's compiled policy
//!    (`Maps::active_holds`, as `wgbpf audit`); otherwise the plan is
//!    enforced again (it adopts the pinned data plane and swaps atomically).
//!
//! Between passes the daemon holds the pinned data plane open
//! ([`Held`]: maps, programs, tcx links). Pins removed under it (the pin
//! directory, say) do not detach the programs, and the first step of the
//! data-plane check pins again what is missing — the same maps, counters
//! and policy version. Should a data plane still have to be loaded afresh,
//! it is attached before the old one is let go (old clsact filters are
//! deleted once the new ones are attached). No gap either way.
//!
//! Every repair is reported in the [`Pass`] (the daemon logs and counts
//! it); a check that fails is reported as an error and the pass goes on.

use std::{sync::Mutex, time::Duration};

use anyhow::{Context, Result};

use super::hook::{Pass, Reconciler, Repair, RepairKind};
use crate::{
    dataplane::{
        attach::{self, AttachMode},
        pin_dir,
        reattach::{self, Reattached},
        repin::Held,
        xdp_guard, Maps,
    },
    enforce::{enforce, Detached},
    plan::{EnforcementPlan, WireguardPlan},
    wg::{changes_between, link_is_up, open_backend, set_link_up, DeviceState, Key, PeerChange},
};

/// How often `wgbpf run` checks for drift unless told otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// The [`Reconciler`] of `wgbpf run`: checks and repairs every
/// `interval`.
#[derive(Debug)]
pub struct DriftRepair {
    interval: Duration,
    /// The data plane pinned after the last pass, held open.
    held: Mutex<Option<Held>>,
}

impl DriftRepair {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            held: Mutex::new(None),
        }
    }
}

impl Reconciler for DriftRepair {
    fn reconcile(&self, plan: &EnforcementPlan) -> Result<Pass> {
        let mut pass = Pass::default();
        if let Some(w) = &plan.wireguard {
            if let Err(e) = repair_interface(plan, w, &mut pass) {
                pass.errors.push(format!("link: {e:#}"));
            }
            if let Err(e) = repair_link(plan.interface(), &mut pass) {
                pass.errors.push(format!("link: {e:#}"));
            }
            if let Err(e) = repair_wireguard(plan, w, &mut pass) {
                pass.errors.push(format!("WireGuard: {e:#}"));
            }
        }
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = repair_dataplane(plan, held.as_mut(), &mut pass) {
            pass.errors.push(format!("data plane: {e:#}"));
        }
        if let Err(e) = repair_guards(plan, &mut pass) {
            pass.errors.push(format!("XDP guard: {e:#}"));
        }
        // What is pinned now is held from here on; a data plane replaced in
        // this pass is released only now, after its successor was
        // attached. (Nothing whole pinned: keep holding the old one.)
        if let Some(now) = Held::open(plan.interface()) {
            *held = Some(now);
        }
        Ok(pass)
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }
}

// ---------------------------------------------------------------- link

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

/// The kernel backend's interface: link, addresses, MTU, routes. The
/// UAPI backend's process owns its TUN device: nothing to do.
fn repair_interface(plan: &EnforcementPlan, w: &WireguardPlan, pass: &mut Pass) -> Result<()> {
    let iface = plan.interface();
    let backend = open_backend(iface, plan.settings.wg_backend)?;
    let Some(report) = backend.ensure_interface(&w.interface)? else {
        return Ok(());
    };
    let mut repair = |drift: String, action: String| {
        pass.repairs.push(Repair {
            kind: RepairKind::Link,
            drift,
            action,
        })
    };
    if report.created {
        repair(
            format!("interface {iface} did not exist"),
            "created it (type wireguard)".into(),
        );
    } else if report.brought_up {
        repair(format!("interface {iface} is down"), "set it up".into());
    }
    for a in &report.addresses_added {
        repair(
            format!("address {a} is missing from {iface}"),
            "added it".into(),
        );
    }
    if let Some(m) = report.mtu {
        repair(
            format!("{iface}'s MTU differs from the file's {m}"),
            format!("set mtu {m}"),
        );
    }
    for r in &report.routes_added {
        repair(
            format!("the route to {r} via {iface} is missing"),
            "added it".into(),
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- WireGuard

/// The plan's configuration with the endpoints that name hosts resolved
/// again. A name that does not resolve leaves that peer's endpoint as the
/// device has it (reported as an error, so the rest is still repaired); a
/// name whose addresses include the device's current endpoint keeps it
/// (round-robin DNS does not make the endpoint flap).
fn wanted(w: &WireguardPlan, current: &DeviceState, pass: &mut Pass) -> crate::wg::Desired {
    let mut d = w.desired.clone();
    for want in &mut d.config.peers {
        let Some(endpoint) = w.dns_endpoints.get(&want.public_key) else {
            continue;
        };
        let now = current
            .peer(&want.public_key)
            .and_then(|s| s.config.endpoint);
        match endpoint.resolve_all() {
            Ok(all) if now.is_some_and(|n| all.contains(&n)) => want.endpoint = now,
            Ok(all) if !all.is_empty() => want.endpoint = Some(all[0]),
            Ok(_) | Err(_) => {
                let name = &d.names[&want.public_key];
                let why = endpoint
                    .resolve()
                    .err()
                    .unwrap_or_else(|| format!("`{endpoint}` resolves to no address"));
                pass.errors.push(format!(
                    "WireGuard: peer `{name}`: endpoint: {why}; its endpoint is left as it is"
                ));
                want.endpoint = now;
            }
        }
    }
    d
}

fn repair_wireguard(plan: &EnforcementPlan, w: &WireguardPlan, pass: &mut Pass) -> Result<()> {
    let backend = open_backend(plan.interface(), plan.settings.wg_backend)?;
    let current = backend.get()?;
    pass.device = Some(current.clone());
    let d = wanted(w, &current, pass);
    let changes = changes_between(
        &d.config_for(&current, std::time::SystemTime::now()),
        &current,
    );
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

fn repair_dataplane(
    plan: &EnforcementPlan,
    held: Option<&mut Held>,
    pass: &mut Pass,
) -> Result<()> {
    let iface = plan.interface();
    let dir = pin_dir(iface);
    // Pins removed under the daemon: the data plane it holds, pinned again.
    // (Should that fail, the checks below load it afresh.)
    if let Some(h) = held {
        let repinned = h.repin_missing().unwrap_or_else(|e| {
            pass.errors
                .push(format!("pinning the held data plane again: {e:#}"));
            Vec::new()
        });
        if !repinned.is_empty() {
            pass.repairs.push(Repair {
                kind: RepairKind::Program,
                drift: format!(
                    "pins of the data plane of {iface} were removed ({})",
                    repinned.join(", ")
                ),
                action: format!(
                    "pinned them again at {} (the same programs and maps: policy version and counters kept)",
                    dir.display()
                ),
            });
        }
    }
    let complete = attach::pinned_mode(iface).is_some() && attach::programs_pinned(iface);
    let maps = if complete {
        Maps::open_pinned(&dir).ok()
    } else {
        None
    };
    let Some(maps) = maps else {
        // The data plane is gone (or its maps are): nothing to adopt.
        // Unpin what is left, but leave what still runs attached (held
        // tcx links, clsact filters) until the new data plane is: no gap.
        let _ = std::fs::remove_dir_all(&dir);
        let (maps, enforced) = enforce(plan, Detached::Leave).context("loading afresh")?;
        if let Err(e) = attach::remove_stale_clsact_filters(iface) {
            pass.errors
                .push(format!("removing the old clsact filters: {e:#}"));
        }
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
    reattach::reattach_missing_with(iface, |prog, mode, why| {
        let how = match mode {
            AttachMode::Tcx => "tcx link",
            AttachMode::Clsact => "clsact filter",
        };
        pass.repairs.push(match why {
            Reattached::Detached => Repair {
                kind: RepairKind::Program,
                drift: format!("program {prog} is not attached to {iface}"),
                action: format!(
                    "attached the pinned program again ({how}; same maps, policy and counters)"
                ),
            },
            Reattached::NotFirst => Repair {
                kind: RepairKind::Program,
                drift: format!(
                    "another tcx program runs before {prog} on {iface} (it could pass what wgbpf denies)"
                ),
                action: format!(
                    "attached the pinned program first again ({how}; the old link released after)"
                ),
            },
        });
    })?;

    // Policy: the active slot holds the file's compiled policy.
    let (_, cfg) = maps.active_slot()?;
    let slots = maps.plan_counter_indexes(&plan.peer_names())?;
    if maps.active_holds(&plan.compiled_for(&slots))? {
        return Ok(());
    }
    drop(maps);
    let (maps, enforced) = enforce(plan, Detached::Leave).context("applying the file's policy")?;
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

/// The XDP guard on each underlay: attached (by program id), or installed
/// again from its pins (or afresh when they are gone).
fn repair_guards(plan: &EnforcementPlan, pass: &mut Pass) -> Result<()> {
    let Some(g) = &plan.guard else {
        return Ok(());
    };
    for u in &g.underlay {
        let dir = xdp_guard::pin_dir(u);
        let pinned = xdp_guard::pinned_mode(&dir).is_some();
        if pinned && xdp_guard::is_attached(u, &dir).unwrap_or(false) {
            continue;
        }
        let done = xdp_guard::install(u, &dir, &g.config, None)
            .with_context(|| format!("installing it on {u}"))?;
        pass.repairs.push(Repair {
            kind: RepairKind::Program,
            drift: format!(
                "the XDP guard on {u} is {}",
                if pinned { "not attached" } else { "not pinned" }
            ),
            action: format!("attached it again ({} mode)", done.mode.as_str()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_up() {
        // Every namespace has lo; a test namespace may have it down.
        assert!(link_is_up("lo").is_ok());
        assert!(link_is_up("no-such-if0").is_err());
    }
}
