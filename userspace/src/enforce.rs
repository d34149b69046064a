//! Applying an [`EnforcementPlan`]: what `wgbpf load`, `wgbpf run` (start,
//! SIGHUP, drift repair) all do. The plan was checked before it got here
//! (policy compiled, its tests run, key files read); this step is ordered
//! so that a refusal at any point changes nothing, and the first packet
//! meets the new policy. It holds the interface's lock throughout
//! ([`crate::dataplane::lock`]): a second controller waits for it.
//!
//! 1. the WireGuard interface made to exist (kernel backend only) and the
//!    device read: the least change set computed, nothing sent;
//! 2. the data plane loaded or adopted, not attached; the peers' counter
//!    indexes planned and the policy checked to fit; the XDP guard
//!    installed or adopted on each underlay interface the file names;
//! 3. the WireGuard change set sent;
//! 4. the counter indexes and the policy written (atomic swap);
//! 5. the programs attached (or, adopted, a detached one attached again).

use anyhow::{Context, Result};
use serde::Serialize;

use crate::{
    dataplane::{
        applied,
        attach::{self, Installed},
        lock::InterfaceLock,
        slot::ApplyReport,
        version,
        xdp_guard::{self, GuardInstalled},
        Capacities, LoadOptions, Maps,
    },
    plan::EnforcementPlan,
    wg::{open_backend, DeviceUpdate, WgReport},
};

#[derive(Debug, Serialize)]
pub struct Enforced {
    pub interface: String,
    pub attach: Installed,
    pub policy: ApplyReport,
    pub rules: usize,
    pub identities: u32,
    pub policy_entries: usize,
    /// The WireGuard step: `None` when the mesh file has no
    /// `private_key_file` (the device is managed elsewhere).
    pub wireguard: Option<WgReport>,
    /// The XDP guard on each underlay interface the file names.
    pub guards: Vec<GuardInstalled>,
}

/// What to do with a pinned program found detached when the data plane is
/// adopted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detached {
    /// Attach it again, gap-free, after the policy swap (`wgbpf load`);
    /// the report's `attach.reattached` lists it.
    Reattach,
    /// Leave it: the daemon's drift repair attaches it again and counts it.
    Leave,
}

/// Applies `plan` on its interface. Returns the map handles too, for
/// callers that keep running.
pub fn enforce(plan: &EnforcementPlan, detached: Detached) -> Result<(Maps, Enforced)> {
    let iface = plan.interface();
    // A process that could not load the programs stops before anything.
    crate::dataplane::caps::check()?;
    // One controller at a time, from reading the device to attaching.
    let _lock = InterfaceLock::acquire(iface, plan.settings.lock_wait)?;
    let wg_update = wireguard_update(plan)?;
    // The data plane, loaded or adopted but not yet attached, and the
    // policy with the peers' counter indexes; refused here if it cannot fit.
    let opts = LoadOptions {
        events: Some(plan.settings.events),
        capacities: Capacities {
            flows: plan.mesh.flows.table_size,
            ..Default::default()
        },
        flows: plan.mesh.flows.config,
        program_log: plan.mesh.program_log,
        ..Default::default()
    };
    let prepared = attach::prepare(iface, &opts, plan.settings.attach)
        .with_context(|| format!("installing on {iface}"))?;
    let staged = prepared
        .maps
        .plan_counter_indexes(&plan.peer_names())
        .map_err(anyhow::Error::from)
        .and_then(|slots| {
            let compiled = plan.compiled_for(&slots);
            prepared.maps.check_room(&compiled)?;
            Ok((slots, compiled))
        });
    let (slots, compiled) = match staged {
        Ok(s) => s,
        Err(e) => {
            prepared.abandon();
            return Err(e.context("writing the policy"));
        }
    };
    // The XDP guard on the underlay: each installed or adopted whole, or
    // refused with nothing of the rest applied.
    let guards = match install_guards(plan) {
        Ok(g) => g,
        Err(e) => {
            prepared.abandon();
            return Err(e);
        }
    };
    // Everything is checked: configure the device (the least change set;
    // nothing when unchanged), then the data plane.
    let wireguard = match wg_update.map(DeviceUpdate::apply).transpose() {
        Ok(w) => w,
        Err(e) => {
            prepared.abandon();
            return Err(anyhow::Error::from(e).context("configuring WireGuard"));
        }
    };
    let mut prepared = prepared;
    prepared.maps.commit_counter_indexes(&slots)?;
    // Past every version given on this interface, even by a data plane
    // since unloaded; reserved before the slot is written with it.
    let report = prepared
        .maps
        .apply_after(&compiled, version::last(iface), |v| {
            if let Err(e) = version::reserve(iface, v) {
                tracing::warn!(
                    iface = %iface,
                    "recording policy version {v} in {}: {e}",
                    version::path(iface).display()
                );
            }
        })
        .context("writing the policy")?;
    prepared.maps.release_counter_indexes(&slots)?;
    // For `load --dry-run`'s diff; a reader checks it against the maps, so
    // a record that could not be written only costs that diff.
    if report.changed || !applied::path(iface).exists() {
        if let Err(e) = applied::record(iface, report.version, &plan.mesh.policy) {
            tracing::warn!(iface = %iface, "recording the applied policy: {e}");
        }
    }
    // Attached only now, so the first packet meets the new policy (and a
    // detached program is attached again only now, likewise).
    let attached = match detached {
        Detached::Reattach => prepared.attach_reattaching(),
        Detached::Leave => prepared.attach(),
    };
    let (maps, installed) = attached.with_context(|| format!("attaching to {iface}"))?;
    let enforced = Enforced {
        interface: iface.to_string(),
        attach: installed,
        policy: report,
        rules: plan.mesh.policy.rules.len(),
        identities: compiled.identities,
        policy_entries: compiled.policy.len(),
        wireguard,
        guards,
    };
    Ok((maps, enforced))
}

/// The XDP guard on each underlay interface of the plan (none without
/// `[interface.guard]`).
fn install_guards(plan: &EnforcementPlan) -> Result<Vec<GuardInstalled>> {
    let Some(g) = &plan.guard else {
        return Ok(Vec::new());
    };
    g.underlay
        .iter()
        .map(|u| {
            xdp_guard::install(u, &xdp_guard::pin_dir(u), &g.config, None)
                .with_context(|| format!("installing the XDP guard on {u}"))
        })
        .collect()
}

/// Step 1: `None` when the plan does not manage WireGuard. A kernel
/// interface the plan describes is created (addresses, MTU, up, routes) if
/// missing, since a device must exist to be read.
fn wireguard_update(plan: &EnforcementPlan) -> Result<Option<DeviceUpdate>> {
    let Some(w) = &plan.wireguard else {
        return Ok(None);
    };
    let iface = plan.interface();
    let backend = open_backend(iface, plan.settings.wg_backend).context("WireGuard")?;
    if let Some(link) = backend
        .ensure_interface(&w.interface)
        .context("creating the WireGuard interface")?
    {
        if link.changed() {
            tracing::info!(iface = %iface, "interface: {}", link.summary());
        }
        if !w.default_routes_skipped.is_empty() {
            tracing::warn!(
                iface = %iface,
                skipped = ?w.default_routes_skipped,
                "no route added for default-route AllowedIPs (needs policy routing, as wg-quick's fwmark tables)"
            );
        }
    }
    DeviceUpdate::new(backend, w.desired.clone())
        .map(Some)
        .context("WireGuard")
}
