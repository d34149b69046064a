//! `cargo xtask demo`: a gateway and two peers on real WireGuard
//! (wireguard-go in network namespaces), wgbpf enforcing
//! examples/demo-policy.toml on the gateway, allowed and denied traffic, and
//! what the data plane counted.

use std::{net::IpAddr, path::PathBuf, process::Command, time::Duration};

use anyhow::{bail, Context, Result};
use testbed::{
    gateway_mesh_file, ping, tcp_connect, tcp_listen, udp_echo, udp_roundtrip, Host, Testbed,
    TestbedSpec,
};

const T: Duration = Duration::from_millis(1500);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn wgbpf(gw: &Host, args: &[&str]) -> Result<String> {
    let bin = std::env::var_os("WGBPF_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/release/wgbpf"));
    let out = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", gw.netns))
        .arg("--")
        .arg(&bin)
        .args(args)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!("wgbpf {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

enum Probe {
    Tcp(u16),
    Udp(u16),
    Ping,
}

fn main() -> Result<()> {
    println!("== building the mesh: gateway, alice, bob (wireguard-go in network namespaces)");
    let mesh = Testbed::up(&TestbedSpec::new(&["alice", "bob"]))?;
    let result = demo(&mesh);
    let gw = &mesh.gateway;
    let _ = wgbpf(gw, &["unload", "-i", &gw.wg_if]);
    mesh.down()?;
    println!("== mesh removed");
    result
}

fn demo(mesh: &Testbed) -> Result<()> {
    let (gw, alice, bob) = (&mesh.gateway, mesh.host("alice"), mesh.host("bob"));
    for h in mesh.hosts() {
        println!(
            "   {:<8} {} {} (tunnel {})",
            h.name, h.tunnel_v4, h.tunnel_v6, h.wg_if
        );
    }
    // The example is a whole mesh file; the demo has its own [interface]
    // and [[peer]]s and takes the policy and its tests.
    let example = std::fs::read_to_string(root().join("examples/demo-policy.toml"))?;
    let policy = example
        .find("\n[policy]\n")
        .map(|at| example[at + 1..].to_string())
        .ok_or_else(|| anyhow::anyhow!("examples/demo-policy.toml has no [policy] section"))?;
    let dir = std::env::temp_dir().join(format!("wgbpf-demo-{}", mesh.run_id()));
    std::fs::create_dir_all(&dir)?;
    let cfg = dir.join("mesh.toml");
    std::fs::write(&cfg, gateway_mesh_file(mesh, &policy))?;
    let cfg = cfg.to_string_lossy().into_owned();

    let _servers = [22, 80, 8000, 8080]
        .iter()
        .map(|p| tcp_listen(gw, *p))
        .collect::<Result<Vec<_>>>()?;
    let _metrics = udp_echo(bob, 9100)?;
    let _alice_udp = udp_echo(alice, 9100)?;

    println!("\n== wgbpf load -c {cfg}");
    print!("   {}", wgbpf(gw, &["load", "-c", &cfg])?);

    let gw4 = IpAddr::V4(gw.tunnel_v4);
    let gw6 = IpAddr::V6(gw.tunnel_v6);
    let probes: Vec<(&Host, IpAddr, Probe, bool)> = vec![
        (alice, gw4, Probe::Tcp(22), true),
        (alice, gw6, Probe::Tcp(22), true),
        (alice, gw4, Probe::Tcp(8000), true),
        (alice, gw4, Probe::Tcp(8080), false),
        (alice, gw4, Probe::Tcp(80), false),
        (alice, IpAddr::V4(bob.tunnel_v4), Probe::Udp(9100), true),
        (bob, IpAddr::V4(alice.tunnel_v4), Probe::Udp(9100), false),
        (bob, gw4, Probe::Tcp(22), false),
        (bob, gw4, Probe::Ping, true),
        (alice, gw4, Probe::Ping, false),
    ];
    println!("\n== traffic (the controller has exited; the pinned programs decide)");
    let mut surprises = 0;
    for (from, to, probe, expect) in probes {
        let (what, got) = match probe {
            Probe::Tcp(p) => (format!("tcp/{p}"), tcp_connect(from, to, p, T)?),
            Probe::Udp(p) => (format!("udp/{p}"), udp_roundtrip(from, to, p, T)?),
            Probe::Ping => ("icmp echo".to_string(), ping(from, to, T)?),
        };
        let verdict = if got { "ALLOWED" } else { "DENIED " };
        let mark = if got == expect {
            ""
        } else {
            "   <-- not what the policy says!"
        };
        if got != expect {
            surprises += 1;
        }
        println!(
            "   {verdict} {:<6} -> {:<22} {what}{mark}",
            from.name,
            to.to_string()
        );
    }
    println!("\n== wgbpf counters -c {cfg}");
    for line in wgbpf(gw, &["counters", "-c", &cfg])?.lines() {
        println!("   {line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    if surprises > 0 {
        bail!("{surprises} probe(s) disagreed with the policy");
    }
    println!("\n== every probe matched the policy");
    Ok(())
}
