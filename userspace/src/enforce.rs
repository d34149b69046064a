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
/// for callers that keep running.
pub fn enforce(mesh: &Mesh, mode: AttachMode) -> Result<(Maps, Enforced)> {
    compile(&mesh.policy, capacity::PEERS).context("policy")?;
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
    // --- WireGuard step 2/2: everything is checked; configure the device
    // (the least change set; nothing when unchanged), then the data plane.
    let wireguard = wg_plan
        .map(|plan| plan.apply())
        .transpose()
        .context("configuring WireGuard")?;
    // --- end of the WireGuard step ---
    let opts = LoadOptions {
        events: Some(DEFAULT_EVENTS),
        ..Default::default()
    };
    let (mut maps, installed) = attach::install(&mesh.interface, &opts, mode)
        .with_context(|| format!("installing on {}", mesh.interface))?;
    // Peers keep the counter slots they had; compile again with them.
    let names: Vec<String> = mesh.policy.peers.iter().map(|p| p.name.clone()).collect();
    let plan = maps.plan_peer_slots(&names)?;
    let mut policy = mesh.policy.clone();
    for p in &mut policy.peers {
        p.index = plan.slots[&p.name];
    }
    let compiled = compile(&policy, capacity::PEERS)?;
    maps.commit_peer_slots(&plan)?;
    let report = maps.apply(&compiled).context("writing the policy")?;
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
