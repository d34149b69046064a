//! `cargo xtask bench wg`: applying 10,000 peers to a real userspace
//! WireGuard device (wireguard-go, in a network namespace of the testbed)
//! with wgbpf's UAPI backend versus `wg setconf`, and changing one peer of
//! the 10,000. Prints:
//!
//!   wg_apply peers=10000 wgbpf_s=X wg_setconf_s=Y
//!   wg_update_one peers=10000 ms=Z ops=N
//!
//! Each figure is the median of `--samples` runs (default 3), all in one run.

use std::{net::Ipv4Addr, time::Instant};

use anyhow::{ensure, Result};
use ipnet::IpNet;
use wgbpf::wg::{changes_between, Backend, DeviceConfig, Key, PeerConfig, UapiBackend};

fn peers(n: usize, salt: u8) -> Vec<PeerConfig> {
    (0..n)
        .map(|i| {
            let mut b = [salt; 32];
            b[..4].copy_from_slice(&(i as u32).to_be_bytes());
            let mut p = PeerConfig::new(Key::from_bytes(b));
            let v4 = Ipv4Addr::from(0x0a40_0000 + i as u32);
            p.allowed_ips = vec![
                IpNet::from(std::net::IpAddr::V4(v4)),
                format!("fd64::{:x}/128", i + 1).parse().unwrap(),
            ];
            p
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Removes every peer (not timed).
fn clear(b: &UapiBackend) -> Result<()> {
    b.apply(&changes_between(&DeviceConfig::default(), &b.get()?))?;
    ensure!(b.get()?.peers.is_empty(), "peers left after clearing");
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (n, samples) = (arg("--peers", 10_000), arg("--samples", 3));
    let mesh = testbed::Testbed::up(&testbed::TestbedSpec::new(&["peer"]))?;
    let gw = &mesh.gateway;
    let backend = UapiBackend::open(&gw.wg_if).expect("the testbed's UAPI socket");
    let want = peers(n, 7);
    let dir = std::env::temp_dir().join(format!("wgbpf-bench-wg-{}", mesh.run_id()));
    std::fs::create_dir_all(&dir)?;
    // The same peers as a wg(8) configuration file.
    let mut conf = String::from("[Interface]\n");
    let key = std::fs::read_to_string(mesh.private_key_file(gw))?;
    conf += &format!("PrivateKey = {}\n", key.trim());
    for p in &want {
        let ips: Vec<String> = p.allowed_ips.iter().map(|n| n.to_string()).collect();
        conf += &format!(
            "\n[Peer]\nPublicKey = {}\nAllowedIPs = {}\n",
            p.public_key.to_base64(),
            ips.join(", ")
        );
    }
    let conf_path = dir.join("wg.conf");
    std::fs::write(&conf_path, conf)?;

    let (mut ours, mut theirs, mut one_ms, mut ops) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for _ in 0..samples {
        clear(&backend)?;
        let config = DeviceConfig {
            peers: want.clone(),
            ..Default::default()
        };
        let t = Instant::now();
        let changes = changes_between(&config, &backend.get()?);
        backend.apply(&changes)?;
        ours.push(t.elapsed().as_secs_f64());
        ensure!(
            backend.get()?.peers.len() == n,
            "wgbpf applied a wrong peer count"
        );

        // One peer's AllowedIPs change in the full mesh.
        let mut changed = config.clone();
        changed.peers[n / 2].allowed_ips = vec!["10.99.0.1/32".parse().unwrap()];
        let before = backend.set_operations();
        let t = Instant::now();
        let changes = changes_between(&changed, &backend.get()?);
        ensure!(
            changes.peers.len() == 1,
            "one peer must change, not {}",
            changes.peers.len()
        );
        backend.apply(&changes)?;
        one_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        ops = backend.set_operations() - before;

        clear(&backend)?;
        let t = Instant::now();
        gw.run(&["wg", "setconf", &gw.wg_if, conf_path.to_str().unwrap()])?;
        theirs.push(t.elapsed().as_secs_f64());
        ensure!(
            backend.get()?.peers.len() == n,
            "wg setconf applied a wrong peer count"
        );
    }
    println!(
        "wg_apply peers={n} wgbpf_s={:.3} wg_setconf_s={:.3}",
        median(ours),
        median(theirs)
    );
    println!("wg_update_one peers={n} ms={:.1} ops={ops}", median(one_ms));
    let _ = std::fs::remove_dir_all(&dir);
    mesh.down()?;
    Ok(())
}
