//! The stolen-key signal over real WireGuard (wireguard-go in network
//! namespaces; root): mallory's device is given alice's private key, and
//! both talk to the gateway. The daemon's
//! `wgbpf_peer_endpoint_changes_total{peer="alice"}` climbs while
//! `wgbpf_peer_endpoints_recent` stays at 2 (the alternation the alert
//! `WgbpfPeerKeyInTwoPlaces` looks for); bob, on one endpoint, stays at 0;
//! and before the copy, alice's count did not move.

mod common;

use std::{
    fs::File,
    net::IpAddr,
    process::Stdio,
    time::{Duration, Instant},
};

use common::{
    free_port, managed_mesh_file, print_log_tails, sample_in, stop, wgbpf_daemon_command, TempDir,
    Unload,
};
use testbed::{ping, Host, Testbed, TestbedSpec};

const POLICY: &str = "[policy]\n\n[[policy.rule]]\naction = \"accept\"\nfrom = [\"*\"]\n\
                      to = [\"gateway\"]\nproto = \"icmp\"\n";

fn sample(gw: &Host, port: u16, series: &str) -> f64 {
    let text = common::scrape(&gw.netns, port).expect("scrape");
    sample_in(&text, series).unwrap_or_else(|| panic!("{series} missing:\n{text}"))
}

/// Keepalives every second from `host` to the gateway, so it keeps
/// sending authenticated packets.
fn keepalive(host: &Host, gw_key: &str) {
    host.run(&[
        "wg",
        "set",
        &host.wg_if,
        "peer",
        gw_key,
        "persistent-keepalive",
        "1",
    ])
    .unwrap();
}

#[test]
fn one_key_in_two_places_makes_the_endpoint_alternate() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice", "bob", "mallory"])).expect("mesh");
    let (gw, alice, bob, mallory) = (
        &mesh.gateway,
        mesh.host("alice"),
        mesh.host("bob"),
        mesh.host("mallory"),
    );
    let dir = TempDir::create(std::env::temp_dir().join(format!("wgbpf-stolen-{}", mesh.run_id())));
    let cfg = dir.0.join("mesh.toml");
    std::fs::write(
        &cfg,
        managed_mesh_file(&mesh, POLICY, &mesh.private_key_file(gw)),
    )
    .unwrap();
    let _unload = Unload(gw);
    let port = free_port(&gw.netns);
    let mut daemon = wgbpf_daemon_command(gw)
        .args(["run", "-c", cfg.to_str().unwrap(), "--repair-interval", "1"])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .args(["--log-format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(dir.0.join("wgbpf.log")).unwrap())
        .spawn()
        .expect("wgbpf run");
    struct Stop<'a>(&'a mut std::process::Child, &'a std::path::Path);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            stop(self.0, Duration::from_secs(20));
            if std::thread::panicking() {
                print_log_tails(self.1, &["wgbpf.log"], 40);
            }
        }
    }
    let _stop = Stop(&mut daemon, &dir.0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while common::scrape(&gw.netns, port).is_err() {
        assert!(Instant::now() < deadline, "no metrics");
        std::thread::sleep(Duration::from_millis(200));
    }
    let gw_key = gw.run(&["wg", "show", &gw.wg_if, "public-key"]).unwrap();
    let gw_key = gw_key.trim();
    let gw4 = IpAddr::V4(gw.tunnel_v4);
    keepalive(alice, gw_key);
    keepalive(bob, gw_key);
    assert!(ping(alice, gw4, Duration::from_secs(3)).unwrap());
    assert!(ping(bob, gw4, Duration::from_secs(3)).unwrap());

    // Honest: several observations, one endpoint each.
    std::thread::sleep(Duration::from_secs(4));
    let changes = |who: &str| {
        sample(
            gw,
            port,
            &format!("wgbpf_peer_endpoint_changes_total{{peer=\"{who}\"}}"),
        )
    };
    let recent = |who: &str| {
        sample(
            gw,
            port,
            &format!("wgbpf_peer_endpoints_recent{{peer=\"{who}\"}}"),
        )
    };
    assert_eq!(changes("alice"), 0.0);
    assert_eq!(recent("alice"), 1.0);

    // Mallory's device gets alice's private key and talks to the gateway.
    mallory
        .run(&[
            "wg",
            "set",
            &mallory.wg_if,
            "private-key",
            mesh.private_key_file(alice).to_str().unwrap(),
        ])
        .unwrap();
    keepalive(mallory, gw_key);
    let _ = ping(mallory, gw4, Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let _ = ping(alice, gw4, Duration::from_secs(1));
        let _ = ping(mallory, gw4, Duration::from_secs(1));
        if changes("alice") >= 6.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alice's endpoint changed {} times only",
            changes("alice")
        );
    }
    assert_eq!(recent("alice"), 2.0, "two places, alternating");
    assert_eq!(changes("bob"), 0.0, "bob never moved");
    assert_eq!(recent("bob"), 1.0);
}
