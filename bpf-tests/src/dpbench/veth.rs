//! The veth variant: one sender namespace, and one receiving namespace per
//! (filter, rules) joined to it by its own veth pair, every filter loaded
//! once, so the repetitions interleave every case at no set-up cost.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use aya::programs::tc::SchedClassifierLink;
use wgbpf::dataplane::Dataplane;

use super::{
    acl,
    args::Args,
    case::{report, Case, Filter, Traffic},
    cleanup,
    counters::Receiver,
    cpu::thread_cpu_ns,
    frames::{self, Ethernet},
    generator::Generator,
    measure::{backlog_slack, cpu_cost, measure, rate},
    netns::Netns,
    nft,
    wgbpf::{attach, load_wgbpf},
};

const RX_IF: &str = "rx0";
const RX_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 1];

fn receiver_addr() -> Ipv4Addr {
    Ipv4Addr::new(10, 63, 0, 1)
}

/// One receiving namespace and what filters its traffic.
struct RxSide {
    filter: Filter,
    rules: usize,
    receiver: Receiver,
    allowed: Generator,
    denied: Generator,
    missing: Option<String>,
    _links: Vec<SchedClassifierLink>,
    _dp: Option<Dataplane>,
    // Last: the namespace goes after everything in it.
    _ns: Netns,
}

fn veth_side(tx: &Netns, k: usize, filter: Filter, n: usize, a: &Args) -> Result<RxSide> {
    cleanup::check()?;
    let ns = Netns::create(&format!("rx{k}"))?;
    let tx_if = format!("t{k}");
    let tx_mac = [0x02, 0, 0, 0, 0, k as u8];
    let mac = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    tx.run(&[
        "ip",
        "link",
        "add",
        &tx_if,
        "address",
        &mac(tx_mac),
        "type",
        "veth",
        "peer",
        "name",
        RX_IF,
        "address",
        &mac(RX_MAC),
        "netns",
        ns.name(),
    ])?;
    tx.run(&["ip", "link", "set", &tx_if, "up"])?;
    let addr = format!("{}/24", receiver_addr());
    ns.run(&["ip", "addr", "add", &addr, "dev", RX_IF])?;
    ns.run(&["ip", "link", "set", RX_IF, "up"])?;
    ns.run(&["ip", "route", "add", acl::PEER_NET, "dev", RX_IF])?;
    let receiver = Receiver::bind(ns.name(), RX_IF, &acl::all_ports())?;

    let mut missing = None;
    let (mut dp, mut links) = (None, Vec::new());
    match filter {
        Filter::None => {}
        Filter::Wgbpf => {
            let mut d = load_wgbpf(n, 14, &acl::policy(n, receiver_addr(), None))?;
            links = attach(&mut d, ns.name(), RX_IF)?;
            dp = Some(d);
        }
        Filter::NftRules | Filter::NftSet => {
            let text = if filter == Filter::NftRules {
                nft::per_rule(n, RX_IF)
            } else {
                nft::with_set(n, RX_IF)
            };
            let load = nft::load(&ns, &text, a.nft_timeout)?;
            println!(
                "dataplane_load variant=veth filter={} rules={n} seconds={:.2} loaded={}",
                filter.name(),
                load.seconds,
                load.loaded
            );
            if !load.loaded {
                missing = Some(format!("not_loaded_after_s={:.1}", load.seconds));
            }
        }
    }
    let eth = Ethernet {
        dst: RX_MAC,
        src: tx_mac,
    };
    let gen = |allowed: bool| {
        let frames = frames::for_pairs(Some(&eth), &acl::measured(n, allowed), receiver_addr());
        Generator::open(tx.name(), &tx_if, frames)
    };
    Ok(RxSide {
        filter,
        rules: n,
        receiver,
        allowed: gen(true)?,
        denied: gen(false)?,
        missing,
        _links: links,
        _dp: dp,
        _ns: ns,
    })
}

pub fn run_veth(a: &Args) -> Result<()> {
    let tx = Netns::create("tx")?;
    let largest = *a.rules.iter().max().expect("rules is not empty");
    let mut configs = vec![(Filter::None, largest)];
    for &f in &a.filters {
        for &n in &a.rules {
            configs.push((f, n));
        }
    }
    let mut sides = Vec::new();
    for (k, &(f, n)) in configs.iter().enumerate() {
        sides.push(veth_side(&tx, k, f, n, a).with_context(|| format!("{} rules={n}", f.name()))?);
    }
    eprintln!(
        "bench-dataplane: veth: {} receivers ready in {}",
        sides.len(),
        tx.name()
    );
    let slack = backlog_slack();
    let mut cases: Vec<Case> = Vec::new();
    let mut plan = Vec::new();
    for &traffic in a.traffic.iter().filter(|t| **t != Traffic::Tcp) {
        for (i, s) in sides.iter().enumerate() {
            cases.push(Case {
                variant: "veth",
                traffic,
                filter: s.filter,
                rules: if s.filter == Filter::None { 0 } else { s.rules },
                samples: Vec::new(),
                cpu: Vec::new(),
                missing: s.missing.clone(),
            });
            if s.missing.is_none() {
                plan.push((cases.len() - 1, i));
            }
        }
    }
    for rep in 0..a.reps {
        for j in 0..plan.len() {
            let (c, i) = plan[(rep * 3 + j) % plan.len()];
            let s = &sides[i];
            let traffic = cases[c].traffic;
            let gen = if traffic == Traffic::Allowed {
                &s.allowed
            } else {
                &s.denied
            };
            let w = measure(gen, &s.receiver, a.warmup, a.window, &thread_cpu_ns)?;
            let pps = rate(s.filter, traffic, &w, slack)
                .with_context(|| format!("veth rules={}", s.rules))?;
            let cpu = cpu_cost(&w);
            eprintln!(
                "bench-dataplane: rep {rep} veth {} {} rules={}: {pps:.0} pps, {cpu:.0} sender \
                 CPU ns/packet (in {}, arrived {}, sent {} in the window, {} in all)",
                traffic.name(),
                s.filter.name(),
                s.rules,
                w.counts.rx_packets,
                w.counts.arrived,
                w.sent_in_window,
                w.sent
            );
            cases[c].samples.push(pps);
            cases[c].cpu.push(cpu);
        }
    }
    report(&cases);
    Ok(())
}
