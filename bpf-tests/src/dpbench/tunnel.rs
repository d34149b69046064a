//! The wireguard variant: a testbed mesh (wireguard-go, gateway and one
//! peer); wgbpf's instances (one per rule count) are attached to the
//! gateway's tunnel device for their own measurements and detached again.

use std::net::SocketAddrV4;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use wgbpf::dataplane::Dataplane;

use super::{
    acl,
    args::Args,
    case::{report, Case, Filter, Traffic},
    cleanup,
    counters::Receiver,
    cpu::{find_process, process_cpu_ns},
    frames,
    generator::Generator,
    measure::{backlog_slack, measure, rate},
    tcp,
    wgbpf::{attach, load_wgbpf},
};

const TCP_PORT: u16 = 5201;

pub fn run_wireguard(a: &Args) -> Result<()> {
    cleanup::check()?;
    let mesh = testbed::Testbed::up(&testbed::TestbedSpec::new(&["bench"])).context("mesh up")?;
    cleanup::register(&mesh.gateway.netns);
    cleanup::register(&mesh.peers[0].netns);
    let r = wireguard_cases(a, &mesh);
    cleanup::unregister(&mesh.gateway.netns);
    cleanup::unregister(&mesh.peers[0].netns);
    let down = mesh.down();
    r.and(down)
}

fn wireguard_cases(a: &Args, mesh: &testbed::Testbed) -> Result<()> {
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
