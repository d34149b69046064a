//! `wgbpf load`: compile the mesh file's policy and enforce it.

use std::path::PathBuf;

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use wgbpf::{
    dataplane::{self, applied, attach},
    enforce::{enforce, Detached},
    mesh::reach,
    plan::{EnforcementPlan, Settings},
    policy::compile::compile,
    wg::BackendChoice,
};
use wgbpf_common::capacity;

use super::policy;

/// Compile the mesh file's policy and enforce it on its interface.
///
/// Attaches the programs (tcx, or clsact on kernels before 6.6) and pins
/// them under /sys/fs/bpf/wgbpf/IFACE/ the first time; afterwards adopts
/// what is pinned and swaps the policy atomically, and attaches again a
/// pinned program found detached. A policy that fails to compile or does
/// not fit leaves the running one in place.
#[derive(Args)]
pub struct LoadArgs {
    /// The mesh file (TOML).
    #[arg(short, long)]
    config: PathBuf,
    /// How to attach when nothing is pinned yet (default: tcx where the
    /// kernel has it, clsact otherwise).
    #[arg(long, value_enum)]
    attach: Option<attach::AttachMode>,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
    /// Apply nothing: list the flows whose verdict the file would change
    /// against the policy active on the interface (as recorded at its
    /// load, checked against the kernel's maps).
    #[arg(long)]
    dry_run: bool,
    /// Seconds to wait for another wgbpf applying to the same interface
    /// (the daemon's reload, another load) before refusing.
    #[arg(long, value_name = "SECONDS", default_value_t = wgbpf::plan::DEFAULT_LOCK_WAIT.as_secs())]
    wait_lock: u64,
}

pub fn run(a: LoadArgs) -> Result<()> {
    let settings = Settings {
        lock_wait: std::time::Duration::from_secs(a.wait_lock),
        ..Settings::new(
            a.attach.unwrap_or_else(attach::AttachMode::best),
            BackendChoice::from_env().map_err(anyhow::Error::msg)?,
        )
    };
    if a.dry_run {
        return dry_run(&a.config, settings, a.json);
    }
    load(&a.config, settings, a.json)
}

/// The file's plan built and checked as for a load (tests run, keys read),
/// then compared with what is active; nothing is written anywhere.
fn dry_run(config: &std::path::Path, settings: Settings, json: bool) -> Result<()> {
    let plan = EnforcementPlan::from_file(config, settings)?;
    let iface = plan.interface();
    let Some(maps) = dataplane::open(iface)? else {
        let msg = format!(
            "{iface}: no wgbpf data plane is pinned, nothing is enforced: loading would \
             enforce the file's policy from scratch (`wgbpf policy matrix -c {}` shows it)",
            config.display()
        );
        if json {
            println!(
                "{}",
                json!({ "against": null, "message": msg, "changes": null })
            );
        } else {
            println!("{msg}");
        }
        return Ok(());
    };
    let (_, cfg) = maps.active_slot()?;
    let slots = maps.plan_counter_indexes(&plan.peer_names())?;
    let against = json!({ "interface": iface, "version": cfg.version });
    if maps.active_holds(&plan.compiled_for(&slots))? {
        if !json {
            println!(
                "{iface}: the file's policy is the active one (version {})",
                cfg.version
            );
        }
        let d = policy::flow_diff(&plan.mesh.policy, Vec::new(), &plan.mesh);
        policy::print_diff(&d, json, against);
        return Ok(());
    }
    let Some(rec) = applied::recorded(iface).filter(|r| r.version == cfg.version) else {
        bail!(
            "{iface}: the active policy (version {}) differs from the file's, and no record of it \
             was left by the wgbpf that applied it: the flows that would change cannot be listed \
             (`wgbpf policy diff OLD NEW` compares two files)",
            cfg.version
        );
    };
    // The record is trusted only if the kernel holds exactly its compilation.
    let compiled = compile(&rec.policy, capacity::PEERS).context("the recorded policy")?;
    let names: Vec<String> = rec.policy.peers.iter().map(|p| p.name.clone()).collect();
    let rec_slots = maps.plan_counter_indexes(&names)?;
    let by_index: BTreeMap<u32, u32> = rec
        .policy
        .peers
        .iter()
        .map(|p| (p.index, rec_slots.indexes[&p.name]))
        .collect();
    if !maps.active_holds(&compiled.with_counter_indexes(&by_index))? {
        bail!(
            "{iface}: the active policy (version {}) is not the one recorded at its load ({}): \
             the flows that would change cannot be listed",
            cfg.version,
            applied::path(iface).display()
        );
    }
    if !json {
        println!(
            "{iface}: against the active policy (version {}); nothing applied:",
            cfg.version
        );
    }
    let d = policy::flow_diff(&rec.policy, reach::policy_names(&rec.policy), &plan.mesh);
    policy::print_diff(&d, json, against);
    Ok(())
}

fn load(config: &std::path::Path, settings: Settings, json: bool) -> Result<()> {
    let plan = EnforcementPlan::from_file(config, settings)?;
    let (_, e) =
        enforce(&plan, Detached::Reattach).with_context(|| config.display().to_string())?;
    if json {
        println!("{}", serde_json::to_string(&e)?);
        return Ok(());
    }
    // WireGuard step: which backend, what changed.
    if let Some(w) = &e.wireguard {
        println!("{}: WireGuard {} via {}", e.interface, w.summary(), w.via);
    }
    let how = if e.attach.adopted {
        "adopted the pinned data plane"
    } else {
        "attached"
    };
    let state = if e.policy.changed {
        "active"
    } else {
        "unchanged"
    };
    println!(
        "{}: {how} ({:?}); policy version {} {state} ({} rules, {} identities, {} entries)",
        e.interface, e.attach.mode, e.policy.version, e.rules, e.identities, e.policy_entries
    );
    for g in &e.guards {
        let how = match (g.adopted, g.reattached) {
            (false, _) => "attached",
            (true, false) => "adopted",
            (true, true) => "adopted and attached again",
        };
        println!("{}: XDP guard {how} ({:?} mode)", g.iface, g.mode);
    }
    if let Some(from) = &e.attach.upgraded_from {
        println!(
            "{}: the pinned programs were another build's ({}): replaced by this build's ({}) without a gap, maps kept",
            e.interface,
            from.as_deref().unwrap_or("not recorded"),
            e.attach.build
        );
    }
    if e.attach.flow_settings_changed {
        println!(
            "{}: the pinned programs ran with other flow lifetimes or budget: replaced by programs with the file's without a gap, flow table kept",
            e.interface
        );
    }
    if e.attach.program_log_changed {
        println!(
            "{}: the pinned programs ran with another log level: replaced by programs logging at the file's ({}) without a gap, maps kept",
            e.interface, e.attach.program_log
        );
    }
    if !e.attach.reordered.is_empty() {
        println!(
            "{}: another tcx program ran before {}: attached first again (same maps, policy and counters)",
            e.interface,
            e.attach.reordered.join(", ")
        );
    }
    if !e.attach.reattached.is_empty() {
        println!(
            "{}: attached the detached pinned program(s) {} again (same maps, policy and counters)",
            e.interface,
            e.attach.reattached.join(", ")
        );
    }
    Ok(())
}
