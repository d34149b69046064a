//! bench-dataplane's command line.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use wgbpf_common::capacity;

use super::{
    acl,
    case::{Filter, Traffic},
};

pub const USAGE: &str = "usage: bench-dataplane [--reps R] [--seconds S] [--warmup S] \
[--rules N,N,...] [--variants veth,wireguard] [--filters wgbpf,nft_rules,nft_set] [--traffic allowed,denied,tcp] [--nft-timeout S]";

pub struct Args {
    pub reps: usize,
    pub window: Duration,
    pub warmup: Duration,
    pub rules: Vec<usize>,
    pub veth: bool,
    pub wireguard: bool,
    pub nft_timeout: Duration,
    /// Filters besides the baseline (veth; the tunnel has wgbpf only).
    pub filters: Vec<Filter>,
    /// Traffic kinds to run (tcp: the tunnel only).
    pub traffic: Vec<Traffic>,
}

/// The command line as `(--flag, value)` pairs (`--flag value` or
/// `--flag=value`); `-h`/`--help` prints `usage` and exits. For the
/// benchmark binaries, which take nothing but such flags.
pub fn flag_values(usage: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            eprintln!("{usage}");
            std::process::exit(0);
        }
        out.push(match flag.split_once('=') {
            Some((f, v)) => (f.to_string(), v.to_string()),
            None => {
                let v = it
                    .next()
                    .with_context(|| format!("{flag} needs a value\n{usage}"))?;
                (flag, v)
            }
        });
    }
    Ok(out)
}

pub fn parse() -> Result<Args> {
    let mut a = Args {
        reps: 7,
        window: Duration::from_secs(1),
        warmup: Duration::from_millis(300),
        rules: vec![10, 1_000, 10_000, 100_000],
        veth: true,
        wireguard: true,
        nft_timeout: Duration::from_secs(120),
        filters: vec![Filter::Wgbpf, Filter::NftRules, Filter::NftSet],
        traffic: vec![Traffic::Allowed, Traffic::Denied, Traffic::Tcp],
    };
    for (flag, value) in flag_values(USAGE)? {
        let bad = |e: &dyn std::fmt::Display| anyhow::anyhow!("{flag} {value}: {e}\n{USAGE}");
        let secs = |v: &str| -> Result<Duration> {
            let s: f64 = v.parse().map_err(|e| bad(&e))?;
            if !(s > 0.0 && s < 3600.0) {
                bail!("{flag} {v}: out of range");
            }
            Ok(Duration::from_secs_f64(s))
        };
        match flag.as_str() {
            "--reps" => a.reps = value.parse().map_err(|e| bad(&e))?,
            "--seconds" => a.window = secs(&value)?,
            "--warmup" => a.warmup = secs(&value)?,
            "--nft-timeout" => a.nft_timeout = secs(&value)?,
            "--rules" => {
                a.rules = value
                    .split(',')
                    .map(|s| s.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad(&e))?
            }
            "--variants" => {
                let v: Vec<&str> = value.split(',').map(str::trim).collect();
                if let Some(x) = v.iter().find(|x| !["veth", "wireguard"].contains(x)) {
                    bail!("unknown variant {x}\n{USAGE}");
                }
                a.veth = v.contains(&"veth");
                a.wireguard = v.contains(&"wireguard");
            }
            "--filters" => {
                a.filters = value
                    .split(',')
                    .map(|f| match f.trim() {
                        "wgbpf" => Ok(Filter::Wgbpf),
                        "nft_rules" => Ok(Filter::NftRules),
                        "nft_set" => Ok(Filter::NftSet),
                        x => bail!("unknown filter {x}\n{USAGE}"),
                    })
                    .collect::<Result<_>>()?
            }
            "--traffic" => {
                a.traffic = value
                    .split(',')
                    .map(|f| match f.trim() {
                        "allowed" => Ok(Traffic::Allowed),
                        "denied" => Ok(Traffic::Denied),
                        "tcp" => Ok(Traffic::Tcp),
                        x => bail!("unknown traffic {x}\n{USAGE}"),
                    })
                    .collect::<Result<_>>()?
            }
            _ => bail!("unknown argument {flag}\n{USAGE}"),
        }
    }
    let max_rules = capacity::PEERS as usize * acl::PORTS_PER_PEER - acl::PORTS_PER_PEER;
    if a.reps == 0 || a.rules.is_empty() || a.rules.iter().any(|&n| n == 0 || n > max_rules) {
        bail!("--reps must be > 0 and --rules in 1..={max_rules}\n{USAGE}");
    }
    Ok(a)
}
