//! `wgbpf unload`: detach and remove everything pinned for an interface.

use anyhow::Result;
use clap::Args;
use serde_json::json;
use wgbpf::{
    dataplane::{attach, lock::InterfaceLock, xdp_guard},
    plan::DEFAULT_LOCK_WAIT,
};

/// Detach the programs from IFACE and remove their pins and maps.
#[derive(Args)]
pub struct UnloadArgs {
    #[arg(short, long, value_parser = wgbpf::ifname::parse)]
    interface: String,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: UnloadArgs) -> Result<()> {
    unload(&a.interface, a.json)
}

fn unload(iface: &str, json: bool) -> Result<()> {
    // Not while another controller applies to the interface.
    let _lock = InterfaceLock::acquire(iface, DEFAULT_LOCK_WAIT)?;
    let removed = attach::remove(iface)?;
    wgbpf::dataplane::applied::forget(iface);
    // The interface may be an underlay with the XDP guard on it.
    let guard_removed = xdp_guard::remove(iface, &xdp_guard::pin_dir(iface))?;
    if json {
        println!(
            "{}",
            json!({"interface": iface, "removed": removed, "xdp_guard_removed": guard_removed})
        );
    } else if removed || guard_removed {
        if removed {
            println!("{iface}: programs detached, pins removed");
        }
        if guard_removed {
            println!("{iface}: XDP guard detached, pins removed");
        }
    } else {
        println!("{iface}: nothing loaded");
    }
    Ok(())
}
