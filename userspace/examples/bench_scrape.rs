//! `cargo xtask bench scrape`: one Prometheus scrape of `wgbpf run`'s
//! collector (reading the pinned maps, encoding the text exposition) with
//! 10,000 peers and 100,000 deny-map keys. Prints
//!
//!   scrape peers=10000 deny_series=100000 ms=X
//!
//! X is the median of `--samples` scrapes (default 5) in one run. The maps
//! are real kernel maps, pinned under a name unique to the run and removed
//! afterwards; nothing is attached to any interface.

use std::{net::Ipv4Addr, sync::Arc, time::Instant};

use anyhow::{ensure, Result};
use aya::maps::PerCpuValues;
use wgbpf::{
    dataplane::{attach, pin_dir, Capacities, Dataplane, LoadOptions},
    metrics::{registry, render, Collector, DaemonCounters, Format},
};
use wgbpf_common::{map_v4, severity, DenyKey, DenyValue, PROTO_TCP};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (peers, denies, samples) = (
        arg("--peers", 10_000),
        arg("--deny-series", 100_000),
        arg("--samples", 5),
    );
    // Short and unique: an interface name is at most 15 bytes.
    let iface = format!("wgbs{:x}", std::process::id() & 0x00ff_ffff);
    let result = run(&iface, peers, denies, samples);
    let _ = attach::remove(&iface);
    let _ = std::fs::remove_dir_all(pin_dir(&iface));
    result
}

fn run(iface: &str, peers: usize, denies: usize, samples: usize) -> Result<()> {
    let mut dp = Dataplane::load(&LoadOptions {
        pin_dir: Some(pin_dir(iface)),
        capacities: Capacities {
            peers: (peers as u32 + 1).next_power_of_two(),
            denies: (denies as u32).next_power_of_two(),
            ..Default::default()
        },
        ..Default::default()
    })?;
    let names: Vec<String> = (0..peers).map(|i| format!("peer-{i}")).collect();
    let plan = dp.maps.plan_counter_indexes(&names)?;
    dp.maps.commit_counter_indexes(&plan)?;
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    for i in 0..denies {
        let key = DenyKey {
            dst: map_v4(Ipv4Addr::from(0x0a00_0000 + (i / 1000) as u32).octets()),
            src_peer: (i % peers) as u32 + 1,
            dport: (i % 1000) as u16 + 1,
            proto: PROTO_TCP,
            severity: severity::DENY,
        };
        let value = DenyValue {
            packets: i as u64 + 1,
            bytes: 60 * (i as u64 + 1),
        };
        let per_cpu = PerCpuValues::try_from(vec![value; cpus])?;
        dp.maps.denies.insert(key, per_cpu, 0)?;
    }
    // Where a scrape's time goes, on stderr.
    let t = Instant::now();
    let n = dp.maps.denies()?.len();
    let t_denies = t.elapsed();
    let t = Instant::now();
    dp.maps.all_peer_totals()?;
    let t_totals = t.elapsed();
    let t = Instant::now();
    dp.maps.counter_owners()?;
    eprintln!(
        "bench-scrape: deny map read ({n} keys) {t_denies:?}, peer counters {t_totals:?}, \
         peer names {:?}",
        t.elapsed()
    );
    let collector = Collector::new(iface, Arc::new(DaemonCounters::default()), 0);
    let registry = registry(collector);
    let mut times = Vec::new();
    for _ in 0..samples {
        let t = Instant::now();
        let text = render(&registry, Format::Text)?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        let series = text.matches("wireguard_acl_denied_total{").count();
        ensure!(
            series == denies,
            "{series} deny series exported, not {denies}"
        );
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "scrape peers={peers} deny_series={denies} ms={:.1}",
        times[times.len() / 2]
    );
    Ok(())
}
