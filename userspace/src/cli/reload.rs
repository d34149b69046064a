//! `wgbpf reload`: ask the running daemon to enforce its file again and
//! wait for the outcome (the unit's `ExecReload`).

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use wgbpf::daemon::control::{self, Request};

/// Reload the running daemon's mesh file and wait for the outcome: exit 0
/// when it is enforced, 1 when the daemon refused it (the running policy
/// stays; the reason is printed). Unlike SIGHUP, which cannot answer.
#[derive(Args)]
pub struct ReloadArgs {
    /// The interface whose daemon to ask (default: the only one running).
    #[arg(short, long, value_parser = wgbpf::ifname::parse)]
    interface: Option<String>,
    /// Only ask what the daemon enforces; change nothing.
    #[arg(long)]
    status: bool,
    /// Seconds to wait for the daemon's answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    timeout: u64,
    /// Print the daemon's reply as JSON (also when it refused).
    #[arg(long)]
    json: bool,
}

pub fn run(a: ReloadArgs) -> Result<()> {
    let iface = control::find_daemon(a.interface.as_deref())?;
    let request = if a.status {
        Request::Status
    } else {
        Request::Reload
    };
    let reply = control::ask(&iface, request, Duration::from_secs(a.timeout.max(1)))?;
    if a.json {
        println!("{}", serde_json::to_string(&reply)?);
    }
    let version = reply
        .policy_version
        .map_or_else(|| "unknown".to_string(), |v| v.to_string());
    match (reply.ok, request) {
        (true, Request::Reload) => {
            if !a.json {
                println!(
                    "{}: reloaded {}; enforcing policy version {version}",
                    reply.interface, reply.file
                );
            }
            Ok(())
        }
        (true, Request::Status | Request::Monitor) => {
            if !a.json {
                println!(
                    "{}: enforcing {} (policy version {version})",
                    reply.interface, reply.file
                );
            }
            Ok(())
        }
        (false, _) => {
            let why = reply.error.unwrap_or_else(|| "no reason given".into());
            if a.json {
                // The JSON went to stdout; the exit status tells the rest.
                std::process::exit(1);
            }
            match request {
                Request::Reload => bail!(
                    "{}: reload refused; still enforcing policy version {version}: {why}",
                    reply.interface
                ),
                Request::Status | Request::Monitor => bail!(
                    "{}: enforcing policy version {version}, but {why}",
                    reply.interface
                ),
            }
        }
    }
}
