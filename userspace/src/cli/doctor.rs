//! `wgbpf doctor`: the host's tuning checked against the mesh file (see
//! `wgbpf::doctor`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;
use wgbpf::{
    doctor::{self, Severity},
    source,
};

/// Check this host's tuning for the mesh file's interface and say what to
/// change and why: the tunnel MTU against the underlay's (IPv4 and IPv6
/// overhead), UDP socket buffers, keepalive for peers behind NAT, GRO/GSO
/// on the underlay, forwarding and rp_filter, the data plane attached
/// first, the flow table's fill.
///
/// Exit status: 0 when nothing needs changing, 1 for a warning, 2 for an
/// error (3 when the check itself failed).
#[derive(Args)]
pub struct DoctorArgs {
    /// The mesh file.
    #[arg(short, long)]
    config: PathBuf,
    /// The underlay interface(s) (default: [interface.guard] underlay, else
    /// the default routes' interfaces).
    #[arg(long, value_name = "IF", value_parser = wgbpf::ifname::parse)]
    underlay: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: DoctorArgs) -> Result<()> {
    let mesh = match source::load(&a.config) {
        Ok(m) => m,
        Err(e) => {
            if a.json {
                println!("{}", json!({"ok": false, "error": format!("{e:#}")}));
            }
            eprintln!("wgbpf: error: {e:#}");
            std::process::exit(3)
        }
    };
    let facts = doctor::gather(&mesh, &a.underlay);
    let findings = doctor::judge(&mesh, &facts);
    let status = doctor::exit_status(&findings);
    if a.json {
        println!(
            "{}",
            json!({"interface": mesh.interface, "findings": findings, "status": status})
        );
    } else {
        for f in &findings {
            let tag = match f.severity {
                Severity::Ok => "ok",
                Severity::Info => "info",
                Severity::Warning => "WARNING",
                Severity::Error => "ERROR",
            };
            println!("[{tag}] {}: {}", f.check, f.message);
            if let Some(fix) = &f.fix {
                println!("        fix: {fix}");
            }
        }
    }
    std::process::exit(status)
}
