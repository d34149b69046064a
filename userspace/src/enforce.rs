//! Enforcing a mesh file's policy on its interface: what `wgbpf load` and
//! `wgbpf run` both do. Validation and compilation happen before the kernel
//! is touched; the policy swap is atomic; peers keep their counter slots.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use wgbpf_common::{capacity, EventConfig};

use crate::{
    dataplane::{
        attach::{self, AttachMode, Installed},
        slot::ApplyReport,
        LoadOptions, Maps,
    },
    mesh::Mesh,
    policy::{check::run_tests, compile::compile},
};

/// Deny events per second and burst, per CPU, unless told otherwise.
pub const DEFAULT_EVENTS: EventConfig = EventConfig {
    per_second: 100,
    burst: 200,
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
    pub wireguard: Option<crate::wg::WgReport>,
}

/// Checks `mesh`'s policy compiles, then installs or adopts the data plane
/// on its interface and swaps the policy in. Returns the map handles too,
/// for callers that keep running. An adopted data plane is left attached
/// as it is: `wgbpf run`'s drift repair attaches a detached program again
/// (and logs and counts it).
pub fn enforce(mesh: &Mesh, mode: AttachMode) -> Result<(Maps, Enforced)> {
    enforce_with(mesh, mode, false)
}

/// [`enforce`] for `wgbpf load`: when the data plane is adopted, a pinned
/// program that is not really attached is attached again, gap-free
/// ([`crate::dataplane::reattach`]), after the policy swap; the report's
/// `attach.reattached` lists it.
pub fn enforce_reattaching(mesh: &Mesh, mode: AttachMode) -> Result<(Maps, Enforced)> {
    enforce_with(mesh, mode, true)
}

fn enforce_with(mesh: &Mesh, mode: AttachMode, reattach: bool) -> Result<(Maps, Enforced)> {
    compile(&mesh.policy, capacity::PEERS).context("policy")?;
    // A kernel WireGuard interface the file describes is created (addresses,
    // MTU, up, routes) if missing; WireGuard settings are checked first.
    crate::wg::link::ensure_link_for_mesh(mesh).context("creating the WireGuard interface")?;
    // --- WireGuard step 1/2 (crate::wg): validate it all (key files,
    // peers, the device's state); nothing is sent. None without
    // private_key_file. ---
    let wg_plan = crate::wg::plan_for_mesh(mesh).context("WireGuard")?;
    // The policy's own tests gate every apply.
    let (_, failures) = run_tests(mesh);
    if !failures.is_empty() {
        let lines: Vec<String> = failures.iter().map(|f| f.to_string()).collect();
        bail!(
            "{} policy test(s) failed, nothing applied:\n{}",
            failures.len(),
            lines.join("\n")
        );
    }
    // The data plane, loaded or adopted but not yet attached, and the policy
    // compiled with the peers' counter slots; refused here if it cannot fit.
    let opts = LoadOptions {
        events: Some(DEFAULT_EVENTS),
        ..Default::default()
    };
    let prepared = attach::prepare(&mesh.interface, &opts, mode)
        .with_context(|| format!("installing on {}", mesh.interface))?;
    // Peers keep the counter slots they had; compile again with them.
    let names: Vec<String> = mesh.policy.peers.iter().map(|p| p.name.clone()).collect();
    let staged = prepared
        .maps
        .plan_peer_slots(&names)
        .map_err(anyhow::Error::from)
        .and_then(|plan| {
            let mut policy = mesh.policy.clone();
            for p in &mut policy.peers {
                p.index = plan.slots[&p.name];
            }
            let compiled = compile(&policy, capacity::PEERS)?;
            prepared.maps.check_room(&compiled)?;
            Ok((plan, compiled))
        });
    let (plan, compiled) = match staged {
        Ok(s) => s,
        Err(e) => {
            prepared.abandon();
            return Err(e.context("writing the policy"));
        }
    };
    // --- WireGuard step 2/2: everything is checked; configure the device
    // (the least change set; nothing when unchanged), then the data plane.
    let wireguard = match wg_plan.map(|plan| plan.apply()).transpose() {
        Ok(w) => w,
        Err(e) => {
            prepared.abandon();
            return Err(anyhow::Error::from(e).context("configuring WireGuard"));
        }
    };
    // --- end of the WireGuard step ---
    let mut prepared = prepared;
    prepared.maps.commit_peer_slots(&plan)?;
    let report = prepared
        .maps
        .apply(&compiled)
        .context("writing the policy")?;
    // Attached only now, so the first packet meets the new policy (and a
    // detached program is attached again only now, likewise).
    let attached = if reattach {
        prepared.attach_reattaching()
    } else {
        prepared.attach()
    };
    let (maps, installed) = attached.with_context(|| format!("attaching to {}", mesh.interface))?;
    let enforced = Enforced {
        interface: mesh.interface.clone(),
        attach: installed,
        policy: report,
        rules: mesh.policy.rules.len(),
        identities: compiled.identities,
        policy_entries: compiled.policy.len(),
        wireguard,
    };
    Ok((maps, enforced))
}
