//! `wgbpf policy check | explain`: test a policy before it is applied, and
//! ask it about one flow. Nothing here touches the kernel.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use wgbpf::{
    policy::{check, compile::compile},
    source,
};
use wgbpf_common::capacity;

#[derive(Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Parse, validate and compile FILE, and run its [[policy.test]] blocks.
    /// Exits 1 on any failure, naming the file, line and column.
    Check {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// The verdict for one flow, and the rule that decided it.
    Explain {
        /// The mesh file.
        #[arg(short, long)]
        config: PathBuf,
        /// Source: a peer, group:G, tag:T, user:U, host:H or an address.
        #[arg(long)]
        from: String,
        /// Destination: as --from, or "gateway".
        #[arg(long)]
        to: String,
        /// Destination port (for icmp/icmpv6: the message type, e.g. 8).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// tcp, udp, sctp, icmp, icmpv6 or a protocol number.
        #[arg(long, default_value = "tcp")]
        proto: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(a: PolicyArgs) -> Result<()> {
    match a.command {
        PolicyCommand::Check { file, json } => check_file(&file, json),
        PolicyCommand::Explain {
            config,
            from,
            to,
            port,
            proto,
            json,
        } => explain(&config, &from, &to, port, &proto, json),
    }
}

fn check_file(file: &std::path::Path, json: bool) -> Result<()> {
    let mesh = source::load(file)?;
    let compiled = compile(&mesh.policy, capacity::PEERS)
        .with_context(|| format!("{}: policy", file.display()))?;
    let (checked, failures) = check::run_tests(&mesh.policy, &mesh.tests);
    if json {
        println!(
            "{}",
            json!({
                "file": file, "rules": mesh.policy.rules.len(),
                "identities": compiled.identities, "policy_entries": compiled.policy.len(),
                "tests": mesh.tests.len(), "checks": checked, "failures": failures,
            })
        );
    } else {
        for f in &failures {
            println!("{f}");
        }
        println!(
            "{}: {} rules, {} tests ({checked} checks), {} failed",
            file.display(),
            mesh.policy.rules.len(),
            mesh.tests.len(),
            failures.len()
        );
    }
    if !failures.is_empty() {
        bail!("{} policy test(s) failed", failures.len());
    }
    Ok(())
}

fn parse_proto(s: &str) -> Result<u8> {
    use wgbpf_common::*;
    Ok(match s {
        "tcp" => PROTO_TCP,
        "udp" => PROTO_UDP,
        "sctp" => PROTO_SCTP,
        "icmp" => PROTO_ICMP,
        "icmpv6" | "ipv6-icmp" => PROTO_ICMPV6,
        n => n.parse::<u8>().ok().filter(|p| *p != 0).ok_or_else(|| {
            anyhow!("--proto {n}: expected tcp, udp, sctp, icmp, icmpv6 or 1-255")
        })?,
    })
}

fn explain(
    config: &std::path::Path,
    from: &str,
    to: &str,
    port: u16,
    proto: &str,
    json: bool,
) -> Result<()> {
    let mesh = source::load(config)?;
    let proto = parse_proto(proto)?;
    let srcs = mesh
        .directory
        .addresses(from)
        .map_err(|e| anyhow!("--from: {e}"))?;
    let dsts = mesh
        .directory
        .addresses(to)
        .map_err(|e| anyhow!("--to: {e}"))?;
    let answers: Vec<check::Explanation> = srcs
        .iter()
        .flat_map(|s| dsts.iter().map(move |d| (*s, *d)))
        .filter(|(s, d)| s.is_ipv4() == d.is_ipv4())
        .map(|(s, d)| check::explain(&mesh.policy, s, d, proto, port))
        .collect();
    if answers.is_empty() {
        bail!("{from} and {to} have no addresses of the same family");
    }
    if json {
        println!("{}", serde_json::to_string(&answers)?);
        return Ok(());
    }
    for e in &answers {
        println!(
            "{} {} -> {} {}/{}: {}",
            e.verdict, e.src, e.dst, e.proto, e.port, e.rule
        );
    }
    Ok(())
}
