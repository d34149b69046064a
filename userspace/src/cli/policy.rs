//! `wgbpf policy check | explain | matrix | diff`: test a policy before it
//! is applied, ask it about one flow, see who reaches whom and what a change
//! changes. Nothing here touches the kernel.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use wgbpf::{
    mesh::{
        reach::{self, RowsBy},
        Mesh,
    },
    policy::{check, compile::compile, diff, lint, matrix},
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
    ///
    /// Also warns of over-broad and dead rules (every port, `*` sources,
    /// shadowed, cancelled by a deny, empty identities), each with its file
    /// and line; --strict makes a warning fail the check.
    Check {
        file: PathBuf,
        #[arg(long)]
        json: bool,
        /// Exit 1 when there is any warning.
        #[arg(long)]
        strict: bool,
    },
    /// Who may reach whom, on what: per source (rows) and destination
    /// (columns), the protocols and ports the policy accepts, computed with
    /// the reference evaluator.
    Matrix {
        /// The mesh file.
        #[arg(short, long)]
        config: PathBuf,
        /// Rows: peers (and the gateway), groups or tags.
        #[arg(long, value_enum, default_value_t = By::Peer)]
        by: By,
        #[arg(long)]
        json: bool,
        /// Also write a standalone HTML page to this file.
        #[arg(long, value_name = "OUT.html")]
        html: Option<PathBuf>,
    },
    /// The flows whose verdict changes from OLD to NEW (newly allowed,
    /// newly denied), by source, destination and protocol/ports.
    Diff {
        old: PathBuf,
        new: PathBuf,
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
        PolicyCommand::Check { file, json, strict } => check_file(&file, json, strict),
        PolicyCommand::Matrix {
            config,
            by,
            json,
            html,
        } => show_matrix(&config, by, json, html.as_deref()),
        PolicyCommand::Diff { old, new, json } => show_diff(&old, &new, json),
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

#[derive(Clone, Copy, clap::ValueEnum)]
enum By {
    Peer,
    Group,
    Tag,
}

fn check_file(file: &std::path::Path, json: bool, strict: bool) -> Result<()> {
    let mesh = source::load(file)?;
    let checked = check_mesh(&file.display().to_string(), &mesh)?;
    checked.print(json);
    checked.verdict(strict)
}

/// What `policy check` finds in one mesh: the JSON it prints with
/// `--json`, the lines it prints otherwise, and the counts that fail it.
pub struct Checked {
    pub json: serde_json::Value,
    pub lines: Vec<String>,
    pub failures: usize,
    pub warnings: usize,
}

impl Checked {
    pub fn print(&self, json: bool) {
        if json {
            println!("{}", self.json);
        } else {
            for l in &self.lines {
                println!("{l}");
            }
        }
    }

    /// Failed tests fail the check; warnings too with `strict`.
    pub fn verdict(&self, strict: bool) -> Result<()> {
        if self.failures > 0 {
            bail!("{} policy test(s) failed", self.failures);
        }
        if strict && self.warnings > 0 {
            bail!("{} warning(s) and --strict", self.warnings);
        }
        Ok(())
    }
}

/// `policy check` of a mesh already read (a file, or a fleet gateway's
/// parts joined): compile (an error is returned), run the tests, lint.
pub fn check_mesh(label: &str, mesh: &Mesh) -> Result<Checked> {
    let compiled =
        compile(&mesh.policy, capacity::PEERS).with_context(|| format!("{label}: policy"))?;
    let (checked, failures) = check::run_tests(&mesh.policy, &mesh.tests);
    let warnings: Vec<serde_json::Value> = lint::lint(&mesh.policy)
        .iter()
        .map(|w| {
            let src = &mesh.rule_sources[w.rule];
            json!({
                "at": src.at, "rule": mesh.policy.rules[w.rule].name,
                "text": rule_text(mesh, w.rule), "kind": w.kind,
                "by": w.by.iter().map(|b| json!({
                    "rule": mesh.policy.rules[*b].name, "at": mesh.rule_sources[*b].at,
                })).collect::<Vec<_>>(),
                "why": why(mesh, w),
            })
        })
        .collect();
    let mut lines = Vec::new();
    for w in &warnings {
        lines.push(format!(
            "{}: warning: {} ({}): {}",
            w["at"].as_str().unwrap_or_default(),
            w["rule"].as_str().unwrap_or_default(),
            w["text"].as_str().unwrap_or_default(),
            w["why"].as_str().unwrap_or_default()
        ));
    }
    for f in &failures {
        lines.push(f.to_string());
    }
    lines.push(format!(
        "{label}: {} rules, {} tests ({checked} checks), {} failed",
        mesh.policy.rules.len(),
        mesh.tests.len(),
        failures.len()
    ));
    Ok(Checked {
        json: json!({
            "file": label, "rules": mesh.policy.rules.len(),
            "identities": compiled.identities, "policy_entries": compiled.policy.len(),
            "tests": mesh.tests.len(), "checks": checked, "failures": failures,
            "warnings": warnings,
        }),
        lines,
        failures: failures.len(),
        warnings: warnings.len(),
    })
}

/// The warning's reason, the deciding rules named with their position.
fn why(mesh: &Mesh, w: &lint::Warning) -> String {
    if w.by.is_empty() {
        return w.why.clone();
    }
    let by: Vec<String> =
        w.by.iter()
            .map(|b| {
                format!(
                    "`{}` ({})",
                    mesh.policy.rules[*b].name, mesh.rule_sources[*b].at
                )
            })
            .collect();
    match w.kind {
        lint::Kind::CancelledByDeny => format!(
            "never decides: {} override(s) every flow it accepts (a deny wins wherever it is in the file)",
            by.join(", ")
        ),
        _ => format!(
            "never decides: {} decide(s) every packet it matches",
            by.join(", ")
        ),
    }
}

/// A rule as one line: `accept group:eng -> tag:web tcp 80,443`.
fn rule_text(mesh: &Mesh, i: usize) -> String {
    let r = &mesh.policy.rules[i];
    let src = &mesh.rule_sources[i];
    let action = match (r.action, r.audit) {
        (wgbpf::policy::model::Action::Accept, _) => "accept",
        (_, true) => "deny (audit)",
        _ => "deny",
    };
    let mut s = format!("{action} {} -> {}", src.from.join(","), src.to.join(","));
    if src.from.is_empty() {
        s = format!("{action} (nobody) -> {}", src.to.join(","));
    }
    match r.proto {
        None => s += " any protocol",
        Some(p) => s += &format!(" {}", wgbpf::policy::model::proto_name(p)),
    }
    if !r.ports.is_empty() {
        let ports: Vec<String> = r.ports.iter().map(|p| p.to_string()).collect();
        s += &format!(" {}", ports.join(","));
    }
    s
}

fn show_matrix(
    config: &std::path::Path,
    by: By,
    json: bool,
    html: Option<&std::path::Path>,
) -> Result<()> {
    let mesh = source::load(config)?;
    compile(&mesh.policy, capacity::PEERS)
        .with_context(|| format!("{}: policy", config.display()))?;
    let by = match by {
        By::Peer => RowsBy::Peer,
        By::Group => RowsBy::Group,
        By::Tag => RowsBy::Tag,
    };
    let m = matrix::matrix(&mesh.policy, reach::rows(&mesh, by), reach::columns(&mesh));
    if let Some(out) = html {
        let title = format!("wgbpf: who may reach whom ({})", config.display());
        std::fs::write(out, m.html(&title))
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if json {
        println!("{}", m.json());
    } else {
        print!("{}", m.text());
    }
    Ok(())
}

fn show_diff(old: &std::path::Path, new: &std::path::Path, json: bool) -> Result<()> {
    let (a, b) = (source::load(old)?, source::load(new)?);
    for (m, f) in [(&a, old), (&b, new)] {
        compile(&m.policy, capacity::PEERS).with_context(|| format!("{}: policy", f.display()))?;
    }
    let d = flow_diff(&a.policy, reach::columns(&a), &b);
    print_diff(&d, json, serde_json::Value::Null);
    Ok(())
}

/// The flows whose verdict changes from `old` (with its names) to `new`.
pub fn flow_diff(
    old: &wgbpf::policy::model::Policy,
    old_names: Vec<wgbpf::policy::space::Named>,
    new: &Mesh,
) -> diff::Diff {
    diff::diff(old, &new.policy, &reach::diff_names(old_names, new))
}

/// Prints a diff (also for `load --dry-run`); `against` goes into the JSON.
pub fn print_diff(d: &diff::Diff, json: bool, against: serde_json::Value) {
    if json {
        println!("{}", json!({ "against": against, "changes": d.json() }));
    } else if d.is_empty() {
        println!("no flow changes verdict");
    } else {
        for l in d.lines() {
            println!("{l}");
        }
    }
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
