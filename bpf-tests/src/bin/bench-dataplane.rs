//! Real packets against wgbpf, nftables and no filter: `cargo xtask bench
//! dataplane`. See docs/benchmarks.md for what is measured and how.
//!
//! veth: one sender namespace, and one receiving namespace per (filter,
//! rules) joined to it by its own veth pair, every filter loaded once, so
//! the repetitions can interleave every case at no set-up cost.
//! wireguard: a testbed mesh (wireguard-go, gateway and one peer); wgbpf's
//! instances (one per rule count) are attached to the gateway's tunnel
//! device for their measurements and detached again.
//!
//! Results on stdout, one line per case; progress and samples on stderr.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aya::programs::{
    tc::{SchedClassifierLink, TcAttachOptions, TcAttachType},
    LinkOrder, SchedClassifier,
};
use wgbpf::{
    dataplane::{Dataplane, LoadOptions},
    policy::compile::compile,
};
use wgbpf_bpf_tests::dpbench::{
    acl, cleanup,
    counters::{Counts, Receiver},
    cpu::{find_process, process_cpu_ns, thread_cpu_ns},
    frames::{self, Ethernet},
    generator::Generator,
    netns::{self, Netns},
    nft,
    stats::median,
    tcp,
};
use wgbpf_common::{capacity, names, EventConfig};

const USAGE: &str = "usage: bench-dataplane [--reps R] [--seconds S] [--warmup S] \
[--rules N,N,...] [--variants veth,wireguard] [--filters wgbpf,nft_rules,nft_set] [--traffic allowed,denied,tcp] [--nft-timeout S]";

struct Args {
    reps: usize,
    window: Duration,
    warmup: Duration,
    rules: Vec<usize>,
    veth: bool,
    wireguard: bool,
    nft_timeout: Duration,
    /// Filters besides the baseline (veth; the tunnel has wgbpf only).
    filters: Vec<Filter>,
    /// Traffic kinds to run (tcp: the tunnel only).
    traffic: Vec<Traffic>,
}

fn parse_args() -> Result<Args> {
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
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            eprintln!("{USAGE}");
            std::process::exit(0);
        }
        let (flag, value) = match flag.split_once('=') {
            Some((f, v)) => (f.to_string(), v.to_string()),
            None => {
                let v = it
                    .next()
                    .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
                (flag, v)
            }
        };
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

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Filter {
    None,
    Wgbpf,
    NftRules,
    NftSet,
}

impl Filter {
    fn name(self) -> &'static str {
        match self {
            Filter::None => "none",
            Filter::Wgbpf => "wgbpf",
            Filter::NftRules => "nft_rules",
            Filter::NftSet => "nft_set",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Traffic {
    Allowed,
    Denied,
    /// Bulk TCP (tunnel only).
    Tcp,
}

impl Traffic {
    fn name(self) -> &'static str {
        match self {
            Traffic::Allowed => "allowed",
            Traffic::Denied => "denied",
            Traffic::Tcp => "tcp",
        }
    }
}

/// A wgbpf instance with its own maps, holding an N-rule policy.
fn load_wgbpf(
    n: usize,
    l2_hdr_len: u32,
    policy: &wgbpf::policy::model::Policy,
) -> Result<Dataplane> {
    let t = Instant::now();
    let mut dp = Dataplane::load(&LoadOptions {
        l2_hdr_len,
        // The controller's defaults: deny events on, rate limited.
        events: Some(EventConfig {
            per_second: 100,
            burst: 200,
        }),
        ..Default::default()
    })
    .context("loading the eBPF object (are you root?)")?;
    let compiled = compile(policy, capacity::PEERS).context("compiling")?;
    dp.maps.apply(&compiled).context("applying the policy")?;
    eprintln!(
        "bench-dataplane: wgbpf rules={n}: loaded and applied in {:.2} s ({} policy entries)",
        t.elapsed().as_secs_f64(),
        compiled.policy.len()
    );
    Ok(dp)
}

/// Attaches both programs to `ifname` in `ns` (tcx, first in line);
/// dropping the links detaches them.
fn attach(dp: &mut Dataplane, ns: &str, ifname: &str) -> Result<Vec<SchedClassifierLink>> {
    let mut links = Vec::new();
    for (name, hook) in [
        (names::PROG_INGRESS, TcAttachType::Ingress),
        (names::PROG_EGRESS, TcAttachType::Egress),
    ] {
        let prog: &mut SchedClassifier = dp
            .ebpf
            .program_mut(name)
            .with_context(|| format!("no program {name}"))?
            .try_into()?;
        let link = netns::enter(ns, || {
            let id = prog.attach_with_options(
                ifname,
                hook,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )?;
            Ok(prog.take_link(id)?)
        })
        .with_context(|| format!("attaching {name} to {ifname}"))?;
        links.push(link);
    }
    Ok(links)
}

/// One window of traffic: the counters' change and its length, the
/// frames the generator handed over in it and in all, and the sending
/// thread's CPU time in it.
struct Window {
    counts: Counts,
    secs: f64,
    sent_in_window: u64,
    sent: u64,
    cpu_ns: u64,
}

/// `cpu` gives the CPU time to charge, given the sender thread's id.
fn measure(
    gen: &Generator,
    rx: &Receiver,
    warmup: Duration,
    window: Duration,
    cpu: &dyn Fn(i32) -> Result<u64>,
) -> Result<Window> {
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let tid = AtomicI32::new(0);
    std::thread::scope(|s| {
        // Named, so that a profile can be narrowed to it (perf --comms).
        let sender = std::thread::Builder::new()
            .name("dpb-sender".into())
            .spawn_scoped(s, || gen.run(&stop, &sent, &tid))
            .expect("spawning the sender thread");
        let r = (|| {
            cleanup::sleep(warmup)?;
            let t = tid.load(Ordering::SeqCst);
            let (c0, s0, cpu0) = (rx.counts()?, sent.load(Ordering::Relaxed), cpu(t)?);
            let t0 = Instant::now();
            cleanup::sleep(window)?;
            let (c1, s1, cpu1) = (rx.counts()?, sent.load(Ordering::Relaxed), cpu(t)?);
            Ok((
                c1.since(&c0),
                t0.elapsed().as_secs_f64(),
                s1 - s0,
                cpu1 - cpu0,
            ))
        })();
        stop.store(true, Ordering::SeqCst);
        let total = sender.join().unwrap_or(0);
        r.map(|(counts, secs, sent_in_window, cpu_ns)| Window {
            counts,
            secs,
            sent_in_window,
            sent: total,
            cpu_ns,
        })
    })
}

/// Sender CPU ns per packet, when the whole receive path ran in the
/// sender's context: every frame sent in the window entered the receiver
/// (none waited for ksoftirqd or was dropped from a full backlog, which
/// happens when the filter is slower than the sender). NaN otherwise.
fn cpu_cost(w: &Window) -> f64 {
    let (sent, rx) = (w.sent_in_window, w.counts.rx_packets);
    if rx == 0 || rx.abs_diff(sent) * 100 > sent {
        return f64::NAN;
    }
    w.cpu_ns as f64 / rx as f64
}

/// The rate a window stands for, after checking the filter did its job:
/// allowed traffic must arrive (allowing for what sat in the receive
/// backlog at either edge of the window), denied traffic must not.
/// Denied with no filter is the rate the stack delivers it at.
fn rate(filter: Filter, traffic: Traffic, w: &Window, slack: u64) -> Result<f64> {
    let Counts {
        rx_packets,
        arrived,
    } = w.counts;
    let dropped = rx_packets.saturating_sub(arrived);
    let (count, ok) = match (filter, traffic) {
        (Filter::None, _) | (_, Traffic::Allowed) => (arrived, dropped <= rx_packets / 50 + slack),
        (_, _) => (dropped, arrived == 0),
    };
    if !ok {
        bail!(
            "{} traffic through {}: {rx_packets} packets in, {arrived} reached the sockets: \
             the filter did not do its job",
            traffic.name(),
            filter.name()
        );
    }
    Ok(count as f64 / w.secs)
}

/// Samples of one case, by repetition.
struct Case {
    variant: &'static str,
    traffic: Traffic,
    filter: Filter,
    rules: usize,
    samples: Vec<f64>,
    /// CPU ns per packet (veth: the sender thread; tunnel: wireguard-go)
    /// or per KiB (TCP), by repetition.
    cpu: Vec<f64>,
    /// Why there is no figure (nft could not load the rules in time).
    missing: Option<String>,
}

fn baseline<'a>(cases: &'a [Case], c: &Case) -> &'a Case {
    cases
        .iter()
        .find(|b| b.variant == c.variant && b.traffic == c.traffic && b.filter == Filter::None)
        .expect("every traffic has a baseline")
}

fn report(cases: &[Case]) {
    for c in cases {
        let base = baseline(cases, c);
        // Ratios pair each sample with the baseline of the same repetition.
        let ratios: Vec<f64> = c
            .samples
            .iter()
            .zip(&base.samples)
            .map(|(x, b)| x / b)
            .collect();
        let (value, ratio) = (median(&c.samples), median(&ratios));
        let tail = c
            .missing
            .as_ref()
            .map(|m| format!(" {m}"))
            .unwrap_or_default();
        if c.traffic == Traffic::Tcp {
            println!(
                "dataplane_tcp variant={} filter={} rules={} mbit_s={:.0} ratio={:.3}{tail}",
                c.variant,
                c.filter.name(),
                c.rules,
                value / 1e6,
                ratio
            );
        } else {
            println!(
                "dataplane variant={} traffic={} filter={} rules={} pps={:.0} ratio={:.3}{tail}",
                c.variant,
                c.traffic.name(),
                c.filter.name(),
                c.rules,
                value,
                ratio
            );
        }
    }
    // The same cases by CPU time per packet (veth: the sender thread's;
    // tunnel: wireguard-go's) or per KiB (TCP).
    for c in cases {
        let base = baseline(cases, c);
        if !c.cpu.is_empty() {
            // As a rate ratio: baseline cost over this case's cost.
            let cpu_ratios: Vec<f64> = c.cpu.iter().zip(&base.cpu).map(|(x, b)| b / x).collect();
            if c.traffic == Traffic::Tcp {
                println!(
                    "dataplane_tcp_cpu variant={} filter={} rules={} ns_per_kbyte={:.0} ratio={:.3}",
                    c.variant,
                    c.filter.name(),
                    c.rules,
                    median(&c.cpu),
                    median(&cpu_ratios)
                );
            } else {
                println!(
                    "dataplane_cpu variant={} traffic={} filter={} rules={} ns_per_packet={:.0} ratio={:.3}",
                    c.variant,
                    c.traffic.name(),
                    c.filter.name(),
                    c.rules,
                    median(&c.cpu),
                    median(&cpu_ratios)
                );
            }
        }
    }
}

fn backlog_slack() -> u64 {
    std::fs::read_to_string("/proc/sys/net/core/netdev_max_backlog")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1000)
        * 2
}

// ---------------------------------------------------------------- veth ---

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

fn run_veth(a: &Args) -> Result<()> {
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

// ----------------------------------------------------------- wireguard ---

const TCP_PORT: u16 = 5201;

fn run_wireguard(a: &Args) -> Result<()> {
    cleanup::check()?;
    let mesh = testbed::Mesh::up(&testbed::MeshSpec::new(&["bench"])).context("mesh up")?;
    cleanup::register(&mesh.gateway.netns);
    cleanup::register(&mesh.peers[0].netns);
    let r = wireguard_cases(a, &mesh);
    cleanup::unregister(&mesh.gateway.netns);
    cleanup::unregister(&mesh.peers[0].netns);
    let down = mesh.down();
    r.and(down)
}

fn wireguard_cases(a: &Args, mesh: &testbed::Mesh) -> Result<()> {
    let (gw, peer) = (&mesh.gateway, &mesh.peers[0]);
    // The gateway takes the benchmark's peer addresses from the one peer
    // (as a site router's AllowedIPs would), and routes them back there.
    let allowed = format!(
        "{}/32,{}/128,{}",
        peer.tunnel_v4,
        peer.tunnel_v6,
        acl::PEER_NET
    );
    gw.run(&[
        "wg",
        "set",
        &gw.wg_if,
        "peer",
        &peer.public_key,
        "allowed-ips",
        &allowed,
    ])?;
    gw.run(&["ip", "route", "add", acl::PEER_NET, "dev", &gw.wg_if])?;
    let receiver = Receiver::bind(&gw.netns, &gw.wg_if, &acl::all_ports())?;
    // The tunnel's work is the two wireguard-go processes' (crypto, and
    // the receive path after the gateway's TUN write, wgbpf included): its
    // CPU time per packet is what competing load does not move.
    let daemons = [
        find_process(&["wireguard-go", "-f", &gw.wg_if])?,
        find_process(&["wireguard-go", "-f", &peer.wg_if])?,
    ];
    let wg_cpu = || -> Result<u64> { daemons.iter().map(|&p| process_cpu_ns(p)).sum() };
    let sink = tcp::Sink::start(&gw.netns, SocketAddrV4::new(gw.tunnel_v4, TCP_PORT))?;
    let tcp_peer = acl::TcpPeer {
        addr: peer.tunnel_v4,
        port: TCP_PORT,
    };

    let largest = *a.rules.iter().max().expect("rules is not empty");
    let mut instances: Vec<(Filter, usize, Option<Dataplane>, Generator, Generator)> = Vec::new();
    for (f, n) in
        std::iter::once((Filter::None, largest)).chain(a.rules.iter().map(|&n| (Filter::Wgbpf, n)))
    {
        cleanup::check()?;
        let dp = match f {
            Filter::Wgbpf => Some(load_wgbpf(
                n,
                0,
                &acl::policy(n, gw.tunnel_v4, Some(&tcp_peer)),
            )?),
            _ => None,
        };
        let gen = |allowed: bool| {
            let frames = frames::for_pairs(None, &acl::measured(n, allowed), gw.tunnel_v4);
            Generator::open(&peer.netns, &peer.wg_if, frames)
        };
        instances.push((f, n, dp, gen(true)?, gen(false)?));
    }

    let slack = backlog_slack();
    let mut cases = Vec::new();
    let mut plan = Vec::new();
    for &traffic in &a.traffic {
        for (i, (f, n, ..)) in instances.iter().enumerate() {
            cases.push(Case {
                variant: "wireguard",
                traffic,
                filter: *f,
                rules: if *f == Filter::None { 0 } else { *n },
                samples: Vec::new(),
                cpu: Vec::new(),
                missing: None,
            });
            plan.push((cases.len() - 1, i));
        }
    }
    for rep in 0..a.reps {
        for j in 0..plan.len() {
            let (c, i) = plan[(rep * 2 + j) % plan.len()];
            let traffic = cases[c].traffic;
            let (f, n, dp, allowed, denied) = &mut instances[i];
            let links = match dp {
                Some(dp) => attach(dp, &gw.netns, &gw.wg_if)?,
                None => Vec::new(),
            };
            let value = match traffic {
                Traffic::Tcp => {
                    let src =
                        tcp::Source::start(&peer.netns, SocketAddrV4::new(gw.tunnel_v4, TCP_PORT))?;
                    cleanup::sleep(a.warmup)?;
                    let (b0, t0, cpu0) = (sink.bytes(), Instant::now(), wg_cpu()?);
                    cleanup::sleep(a.window)?;
                    let (bytes, cpu) = (sink.bytes() - b0, wg_cpu()? - cpu0);
                    let bits = bytes as f64 * 8.0 / t0.elapsed().as_secs_f64();
                    drop(src);
                    if bytes == 0 {
                        bail!("no TCP data through the tunnel with {}", f.name());
                    }
                    cases[c].cpu.push(cpu as f64 / (bytes as f64 / 1024.0));
                    bits
                }
                _ => {
                    let gen = if traffic == Traffic::Allowed {
                        &*allowed
                    } else {
                        &*denied
                    };
                    let w = measure(gen, &receiver, a.warmup, a.window, &|_| wg_cpu())?;
                    let pps = rate(*f, traffic, &w, slack)
                        .with_context(|| format!("wireguard rules={n}"))?;
                    // The generator outruns wireguard-go (the TUN queue drops
                    // the rest): charge what came through.
                    let cpu = w.cpu_ns as f64 / w.counts.rx_packets.max(1) as f64;
                    eprintln!(
                        "bench-dataplane: rep {rep} wireguard {} {} rules={n}: {pps:.0} pps, \
                         {cpu:.0} wireguard-go CPU ns/packet (in {}, arrived {}, generator {} in all)",
                        traffic.name(),
                        f.name(),
                        w.counts.rx_packets,
                        w.counts.arrived,
                        w.sent
                    );
                    cases[c].cpu.push(cpu);
                    pps
                }
            };
            if traffic == Traffic::Tcp {
                eprintln!(
                    "bench-dataplane: rep {rep} wireguard tcp {} rules={n}: {:.0} Mbit/s",
                    f.name(),
                    value / 1e6
                );
            }
            drop(links);
            cases[c].samples.push(value);
        }
    }
    report(&cases);
    Ok(())
}

fn run() -> Result<()> {
    let a = parse_args()?;
    cleanup::sweep_stale();
    if let Err(e) = testbed::sweep_stale() {
        eprintln!("bench-dataplane: sweeping stale meshes: {e:#}");
    }
    eprintln!(
        "bench-dataplane: {} repetitions of {:.1} s windows (after {:.1} s warm-up), rules {:?}",
        a.reps,
        a.window.as_secs_f64(),
        a.warmup.as_secs_f64(),
        a.rules
    );
    if a.veth {
        run_veth(&a)?;
    }
    if a.wireguard {
        run_wireguard(&a)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    if let Err(e) = cleanup::install() {
        eprintln!("bench-dataplane: error: {e:#}");
        return ExitCode::FAILURE;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-dataplane: error: {e:#}");
            if cleanup::stopped() {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
