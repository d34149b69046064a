//! `wgbpf push`: check every gateway's mesh as `policy check` does, then
//! write the fleet's new revision to etcd in one transaction.

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use wgbpf::{
    fleet::{
        document::join,
        layout::check_gateway_name,
        push::{self, Fleet, Revision},
        Part,
    },
    mesh::reach,
};

use super::{policy, store::StoreArgs};

/// Check a fleet's mesh parts and write them to etcd as its next revision.
///
/// Each gateway FILE is that gateway's own part (`[interface]`, its
/// `[[peer]]`s), named by the file's stem or `NAME=FILE`; `--shared` is the
/// part every gateway shares (`[policy]`: groups, hosts, rules, tests).
/// Each gateway's part joined with the shared part is checked exactly as
/// `wgbpf policy check` checks a file (compiled, its tests run): one
/// failure and nothing is written. Then the shared part, every gateway's
/// part and the revision number are written in one etcd transaction,
/// refused if another push landed since this one read the store. A
/// gateway in the store but not here is removed from the fleet.
/// Gateways running `wgbpf run --etcd` apply the new revision at once.
#[derive(Args)]
pub struct PushArgs {
    /// etcd endpoints, comma-separated (`127.0.0.1:2379`, `https://h:2379`).
    #[arg(long, value_name = "ENDPOINTS")]
    etcd: String,
    #[command(flatten)]
    store: StoreArgs,
    /// The shared part: a TOML file of [policy] tables only.
    #[arg(long, value_name = "FILE")]
    shared: Option<PathBuf>,
    /// The gateways' parts: `FILE` (the gateway is the file's stem) or `NAME=FILE`.
    #[arg(value_name = "FILE", required = true)]
    gateways: Vec<String>,
    /// Show what would change (per gateway, the flows whose verdict
    /// changes) and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Refuse on a policy warning too (as `policy check --strict`).
    #[arg(long)]
    strict: bool,
    #[arg(long)]
    json: bool,
}

fn read_part(path: &std::path::Path) -> Result<Part> {
    Ok(Part {
        name: path.display().to_string(),
        text: std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?,
    })
}

/// `NAME=FILE` or `FILE` (named by its stem).
fn gateway_arg(arg: &str) -> Result<(String, PathBuf)> {
    let (name, path) = match arg.split_once('=') {
        Some((n, p)) => (n.to_string(), PathBuf::from(p)),
        None => {
            let p = PathBuf::from(arg);
            let stem = p
                .file_stem()
                .and_then(|s| s.to_str())
                .with_context(|| format!("{arg}: no file name to name the gateway by"))?
                .to_string();
            (stem, p)
        }
    };
    check_gateway_name(&name)?;
    Ok((name, path))
}

pub fn run(a: PushArgs) -> Result<()> {
    let shared = a.shared.as_deref().map(read_part).transpose()?;
    let mut new = Revision {
        shared: shared.clone(),
        gateways: BTreeMap::new(),
    };
    let mut meshes = BTreeMap::new();
    let mut reports = Vec::new();
    for arg in &a.gateways {
        let (name, path) = gateway_arg(arg)?;
        let own = read_part(&path)?;
        // The very join a gateway makes, checked as `policy check` does.
        let mesh = join(&own, shared.as_ref())?;
        let checked = policy::check_mesh(&format!("gateway {name}"), &mesh)?;
        if !a.json {
            checked.print(false);
        }
        reports.push(checked.json.clone());
        checked
            .verdict(a.strict)
            .with_context(|| format!("gateway {name}: nothing was pushed"))?;
        if new.gateways.insert(name.clone(), own).is_some() {
            bail!("gateway {name} is given twice");
        }
        meshes.insert(name, mesh);
    }
    let layout = a.store.layout()?;
    let connection = a.store.connection(&a.etcd)?;
    let rt = super::store::runtime()?;
    rt.block_on(async {
        let mut client = connection.connect().await?;
        let base = push::read(&mut client, &layout).await?;
        if a.dry_run {
            dry_run(&base, &meshes, a.json, &reports);
            return Ok(());
        }
        let revision = push::write(&mut client, &layout, &base, &new).await?;
        let names: Vec<&String> = new.gateways.keys().collect();
        let removed: Vec<&String> = base
            .gateways
            .keys()
            .filter(|g| !new.gateways.contains_key(*g))
            .collect();
        if a.json {
            println!(
                "{}",
                json!({"ok": true, "revision": revision, "gateways": names,
                       "removed": removed, "checks": reports})
            );
        } else {
            println!(
                "revision {revision} pushed to {} under {}: {}",
                connection.describe(),
                layout.prefix(),
                names
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if !removed.is_empty() {
                println!(
                    "removed from the fleet: {}",
                    removed
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        anyhow::Ok(())
    })
}

/// Per gateway: new, removed, or the flows whose verdict changes against
/// the revision in the store.
fn dry_run(
    base: &Fleet,
    meshes: &BTreeMap<String, wgbpf::mesh::Mesh>,
    json: bool,
    reports: &[serde_json::Value],
) {
    let mut out = Vec::new();
    for (name, mesh) in meshes {
        let old = base
            .gateways
            .get(name)
            .map(|own| join(own, base.shared.as_ref()));
        let (state, diff) = match old {
            None => ("new", None),
            Some(Err(e)) => {
                if !json {
                    println!(
                        "gateway {name}: the stored revision does not read ({e}); all of it is new"
                    );
                }
                ("new", None)
            }
            Some(Ok(old)) => (
                "changed",
                Some(policy::flow_diff(&old.policy, reach::columns(&old), mesh)),
            ),
        };
        if json {
            out.push(json!({"gateway": name, "state": state,
                            "changes": diff.as_ref().map(|d| d.json())}));
        } else {
            println!(
                "gateway {name} ({state} against revision {}):",
                base.revision
            );
            match &diff {
                Some(d) if d.is_empty() => println!("  no flow changes verdict"),
                Some(d) => d.lines().iter().for_each(|l| println!("  {l}")),
                None => println!("  every flow is new"),
            }
        }
    }
    let removed: Vec<&String> = base
        .gateways
        .keys()
        .filter(|g| !meshes.contains_key(*g))
        .collect();
    if json {
        println!(
            "{}",
            json!({"dry_run": true, "against": base.revision, "gateways": out,
                   "removed": removed, "checks": reports})
        );
    } else {
        for g in removed {
            println!("gateway {g}: removed from the fleet");
        }
        println!(
            "dry run: nothing written (the store is at revision {})",
            base.revision
        );
    }
}
