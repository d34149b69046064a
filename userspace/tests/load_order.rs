//! The order of `wgbpf load`, pinned down: the WireGuard device is
//! configured before the data plane is written or attached, so a change
//! the device refuses leaves no data plane behind (and a refused policy
//! test leaves no interface: cli_policy.rs).

mod common;

use std::{
    net::{Ipv4Addr, UdpSocket},
    sync::mpsc,
};

use common::{in_netns, managed_mesh_file, wgbpf_code as wgbpf, TempDir, Unload};
use testbed::{Testbed, TestbedSpec};

const POLICY: &str = "[policy]\n\n[[policy.rule]]\naction = \"accept\"\nfrom = [\"alice\"]\n\
                      to = [\"gateway\"]\nproto = \"icmp\"\n";

#[test]
fn a_wireguard_change_the_device_refuses_leaves_no_data_plane() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice"])).expect("mesh");
    let gw = &mesh.gateway;
    let dir = std::env::temp_dir().join(format!("wgbpf-order2-{}", mesh.run_id()));
    let _dir = TempDir::create(dir.clone());
    let _unload = Unload(gw);
    // A port another socket holds in the gateway's namespace: wireguard-go
    // cannot move its listener there, so the device refuses the change.
    let (tx, rx) = mpsc::channel::<()>();
    let (port_tx, port_rx) = mpsc::channel();
    let netns = gw.netns.clone();
    let holder = std::thread::spawn(move || {
        in_netns(&netns, move || {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            port_tx.send(s.local_addr()?.port()).unwrap();
            let _ = rx.recv();
            drop(s);
            Ok(())
        })
    });
    let busy = port_rx.recv().unwrap();
    let text = managed_mesh_file(&mesh, POLICY, &mesh.private_key_file(gw))
        .replace("listen_port = 51820", &format!("listen_port = {busy}"));
    let cfg = dir.join("mesh.toml");
    std::fs::write(&cfg, text).unwrap();
    let (code, _, err) = wgbpf(gw, &["load", "-c", cfg.to_str().unwrap()]);
    tx.send(()).unwrap();
    holder.join().unwrap().unwrap();
    assert_eq!(code, 1, "the device took a port in use? {err}");
    assert!(err.contains("configuring WireGuard"), "{err}");
    assert!(
        !wgbpf::dataplane::pin_dir(&gw.wg_if).exists(),
        "the data plane was loaded although WireGuard refused its change"
    );
    // And with the port free, the same file loads.
    let (code, _, err) = wgbpf(gw, &["load", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(wgbpf::dataplane::pin_dir(&gw.wg_if).exists());
}

#[test]
fn run_refuses_a_busy_metrics_port_before_it_applies_anything() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice"])).expect("mesh");
    let gw = &mesh.gateway;
    let dir = std::env::temp_dir().join(format!("wgbpf-order3-{}", mesh.run_id()));
    let _dir = TempDir::create(dir.clone());
    let _unload = Unload(gw);
    let cfg = dir.join("mesh.toml");
    std::fs::write(&cfg, testbed::gateway_mesh_file(&mesh, POLICY)).unwrap();
    // Another exporter on the port, in the gateway's namespace.
    let (tx, rx) = mpsc::channel::<()>();
    let (port_tx, port_rx) = mpsc::channel();
    let netns = gw.netns.clone();
    let holder = std::thread::spawn(move || {
        in_netns(&netns, move || {
            let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
            port_tx.send(l.local_addr()?.port()).unwrap();
            let _ = rx.recv();
            drop(l);
            Ok(())
        })
    });
    let busy = port_rx.recv().unwrap();
    let addr = format!("127.0.0.1:{busy}");
    let (code, _, err) = wgbpf(
        gw,
        &["run", "-c", cfg.to_str().unwrap(), "--metrics-addr", &addr],
    );
    tx.send(()).unwrap();
    holder.join().unwrap().unwrap();
    assert_ne!(code, 0);
    assert!(err.contains(&format!("binding {addr}")), "{err}");
    assert!(
        !wgbpf::dataplane::pin_dir(&gw.wg_if).exists(),
        "the daemon applied the file before finding its port taken"
    );
}
