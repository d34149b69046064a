//! The same access list as nftables rulesets, on the input hook of the
//! receiving namespace, and loading them with a deadline.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{acl, cleanup, netns::Netns};

pub const TABLE: &str = "wgbpf_bench";

/// One rule per (peer, port), as the seed writes them, then a drop for
/// the interface:
/// `iifname "rx0" ip saddr 10.64.0.2 udp dport 10000 accept`.
pub fn per_rule(n: usize, iif: &str) -> String {
    let mut s = head();
    for k in 0..n {
        let (src, port) = acl::rule(k);
        let _ = writeln!(
            s,
            "iifname \"{iif}\" ip saddr {src} udp dport {port} accept"
        );
    }
    tail(s, iif)
}

/// Best practice: one set of (address . port) pairs, one lookup.
pub fn with_set(n: usize, iif: &str) -> String {
    let mut s = format!(
        "table inet {TABLE} {{\nset acl {{\ntype ipv4_addr . inet_service\nelements = {{\n"
    );
    for k in 0..n {
        let (src, port) = acl::rule(k);
        let sep = if k + 1 < n { "," } else { "" };
        let _ = writeln!(s, "{src} . {port}{sep}");
    }
    s.push_str("}\n}\n");
    s.push_str("chain input {\ntype filter hook input priority 0; policy accept;\n");
    let _ = writeln!(s, "iifname \"{iif}\" ip saddr . udp dport @acl accept");
    tail(s, iif)
}

fn head() -> String {
    format!("table inet {TABLE} {{\nchain input {{\ntype filter hook input priority 0; policy accept;\n")
}

fn tail(mut s: String, iif: &str) -> String {
    let _ = writeln!(s, "iifname \"{iif}\" drop\n}}\n}}");
    s
}

/// How a load went: `None` when it did not finish within the limit.
pub struct Load {
    pub loaded: bool,
    pub seconds: f64,
}

/// `nft -f` of `ruleset` in `ns`, killed after `timeout`.
pub fn load(ns: &Netns, ruleset: &str, timeout: Duration) -> Result<Load> {
    let path = std::env::temp_dir().join(format!("{}.nft", ns.name()));
    std::fs::write(&path, ruleset).with_context(|| format!("writing {}", path.display()))?;
    let out = cleanup::run_child(ns.cmd("nft").arg("-f").arg(&path), timeout);
    let _ = std::fs::remove_file(&path);
    let out = out?;
    match out.success {
        Some(true) => Ok(Load {
            loaded: true,
            seconds: out.elapsed.as_secs_f64(),
        }),
        Some(false) => anyhow::bail!("nft -f in {}: {}", ns.name(), out.stderr.trim_end()),
        None => Ok(Load {
            loaded: false,
            seconds: out.elapsed.as_secs_f64(),
        }),
    }
}
