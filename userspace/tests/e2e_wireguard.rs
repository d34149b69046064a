//! End to end over real WireGuard: three network namespaces (gateway, alice,
//! bob) running wireguard-go, the policy loaded on the gateway's tunnel with
//! the real `wgbpf` binary. Real TCP, UDP and ICMP succeed or fail as the
//! policy says, the counters match the traffic sent, enforcement survives
//! the controller, and `unload` removes it.

mod common;

use std::{net::IpAddr, time::Duration};

use common::{counter, counters, wgbpf, wgbpf_command, TempDir, Unload};
use serde_json::Value;
use testbed::{
    gateway_mesh_file, ping, tcp_connect, tcp_listen, udp_echo, udp_roundtrip, udp_send, udp_sink,
    Host, Testbed, TestbedSpec,
};

const POLICY: &str = r#"
[policy]

[[policy.rule]]
name = "alice-ssh"
action = "accept"
from = ["alice"]
to = ["gateway"]
proto = "tcp"
ports = [22, "2000-3000"]

[[policy.rule]]
name = "no-2222"
action = "deny"
from = ["*"]
to = ["gateway"]
proto = "tcp"
ports = [2222]

[[policy.rule]]
name = "alice-to-bob-udp"
action = "accept"
from = ["alice"]
to = ["bob"]
proto = "udp"
ports = ["5000-5010"]

[[policy.rule]]
name = "bob-ping-gateway"
action = "accept"
from = ["bob"]
to = ["gateway"]
proto = "icmp"
ports = [8]

[[policy.rule]]
name = "bob-ping6-gateway"
action = "accept"
from = ["bob"]
to = ["gateway"]
proto = "icmpv6"
ports = [128]
"#;

const T: Duration = Duration::from_millis(1500);

/// A gateway and two peers, and the gateway's mesh file in a temp dir.
fn setup() -> (Testbed, TempDir, String) {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice", "bob"])).expect("mesh");
    let dir = TempDir::create(std::env::temp_dir().join(format!("wgbpf-e2e-{}", mesh.run_id())));
    let cfg = dir.0.join("mesh.toml");
    std::fs::write(&cfg, gateway_mesh_file(&mesh, POLICY)).unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    (mesh, dir, cfg)
}

#[test]
fn policy_enforced_over_real_wireguard() {
    let (mesh, dir, cfg) = setup();
    let (gw, alice, bob) = (&mesh.gateway, mesh.host("alice"), mesh.host("bob"));
    let gw4 = IpAddr::V4(gw.tunnel_v4);
    let gw6 = IpAddr::V6(gw.tunnel_v6);

    let _listeners: Vec<_> = [22, 80, 2222, 2500]
        .iter()
        .map(|p| tcp_listen(gw, *p).unwrap())
        .collect();
    let _bob_udp = udp_echo(bob, 5005).unwrap();
    // A silent listener on bob's 5001: no echoes, and no ICMP errors from
    // a closed port, so the counts below are exactly what we send.
    let bob_sink = udp_sink(bob, 5001).unwrap();
    let alice_udp = udp_sink(alice, 5001).unwrap();
    let _alice_udp_echo = udp_echo(alice, 5005).unwrap();

    // Before wgbpf: everything flows.
    assert!(tcp_connect(bob, gw4, 80, T).unwrap());

    let (ok, out, err) = wgbpf(gw, &["load", "-c", &cfg, "--json"]);
    assert!(ok, "load failed: {err}");
    let _unload = Unload(gw);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["policy"]["version"], 1);

    // The controller has exited: the pinned programs enforce on their own.
    let matrix: [(&Host, IpAddr, u16, bool); 9] = [
        (alice, gw4, 22, true),
        (alice, gw6, 22, true),
        (alice, gw4, 2500, true),
        (alice, gw4, 2222, false), // deny wins over the accepted range
        (alice, gw4, 80, false),
        (alice, gw6, 80, false),
        (bob, gw4, 22, false),
        (bob, gw6, 22, false),
        (bob, gw4, 80, false),
    ];
    for (from, to, port, want) in matrix {
        let got = tcp_connect(from, to, port, T).unwrap();
        assert_eq!(got, want, "tcp {} -> {to}:{port}", from.name);
        // What the kernel did is what `policy explain` says.
        let (ok, out, err) = wgbpf(
            gw,
            &[
                "policy",
                "explain",
                "-c",
                &cfg,
                "--from",
                &from.name,
                "--to",
                &to.to_string(),
                "--port",
                &port.to_string(),
                "--json",
            ],
        );
        assert!(ok, "explain failed: {err}");
        let answers: Value = serde_json::from_str(&out).unwrap();
        let said = answers
            .as_array()
            .unwrap()
            .iter()
            .find(|a| {
                a["src"]
                    .as_str()
                    .unwrap()
                    .parse::<IpAddr>()
                    .unwrap()
                    .is_ipv4()
                    == to.is_ipv4()
            })
            .unwrap();
        assert_eq!(
            said["verdict"] == "accept",
            got,
            "explain {said} vs tcp {} -> {to}:{port}",
            from.name
        );
    }
    // UDP through the gateway: alice may reach bob, not the other way; the
    // reply to alice passes as part of her flow.
    assert!(udp_roundtrip(alice, IpAddr::V4(bob.tunnel_v4), 5005, T).unwrap());
    assert!(udp_roundtrip(alice, IpAddr::V6(bob.tunnel_v6), 5005, T).unwrap());
    assert!(!udp_roundtrip(bob, IpAddr::V4(alice.tunnel_v4), 5005, T).unwrap());
    assert!(ping(bob, gw4, T).unwrap());
    assert!(ping(bob, gw6, T).unwrap());
    assert!(!ping(alice, gw4, T).unwrap());

    // Counters match exactly what we send now.
    let before = counters(gw, &cfg);
    let (sent_ok, sent_bad, payload) = (50u64, 30u64, 100u64);
    udp_send(
        alice,
        IpAddr::V4(bob.tunnel_v4),
        5001,
        sent_ok as usize,
        payload as usize,
    )
    .unwrap();
    udp_send(
        bob,
        IpAddr::V4(alice.tunnel_v4),
        5001,
        sent_bad as usize,
        payload as usize,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let after = counters(gw, &cfg);
    let delta = |peer: &str, dir: &str, key: &str| {
        counter(&after, peer, dir, key) - counter(&before, peer, dir, key)
    };
    let ip_len = 20 + 8 + payload;
    assert_eq!(delta("alice", "ingress", "allowed_packets"), sent_ok);
    assert_eq!(delta("alice", "ingress", "allowed_bytes"), sent_ok * ip_len);
    assert_eq!(delta("bob", "egress", "allowed_packets"), sent_ok);
    assert_eq!(delta("bob", "ingress", "denied_packets"), sent_bad);
    assert_eq!(delta("bob", "ingress", "denied_bytes"), sent_bad * ip_len);
    assert_eq!(bob_sink.served(), sent_ok as usize);
    let denied_to_alice = |c: &Value| {
        c["denies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| {
                e["src"] == "bob"
                    && e["dst"] == alice.tunnel_v4.to_string()
                    && e["port"] == 5001
                    && e["proto"] == "udp"
            })
            .map_or(0, |e| e["packets"].as_u64().unwrap())
    };
    assert_eq!(
        denied_to_alice(&after) - denied_to_alice(&before),
        sent_bad,
        "deny map entry bob -> alice udp/5001; before: {before}; after: {after}"
    );
    assert_eq!(
        alice_udp.served(),
        0,
        "bob's datagrams must never reach alice"
    );

    // bob has nothing on udp/5007: his kernel's port-unreachable error about
    // alice's allowed datagram belongs to her flow and reaches her.
    let before = counters(gw, &cfg);
    assert!(!udp_roundtrip(alice, IpAddr::V4(bob.tunnel_v4), 5007, T).unwrap());
    let after_icmp = counters(gw, &cfg);
    let delta = |peer: &str, dir: &str, key: &str| {
        counter(&after_icmp, peer, dir, key) - counter(&before, peer, dir, key)
    };
    assert_eq!(
        delta("bob", "ingress", "denied_packets"),
        0,
        "ICMP error denied"
    );
    assert!(delta("bob", "ingress", "allowed_packets") >= 1);
    assert!(delta("alice", "egress", "allowed_packets") >= 1);

    // A second load adopts the pinned data plane: same version, counters kept.
    let (ok, out, err) = wgbpf(gw, &["load", "-c", &cfg, "--json"]);
    assert!(ok, "reload failed: {err}");
    let again: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(again["attach"]["adopted"], true);
    assert_eq!(again["policy"]["changed"], false);
    assert_eq!(again["policy"]["version"], 1);
    let kept = counters(gw, &cfg);
    assert_eq!(
        counter(&kept, "bob", "ingress", "denied_packets"),
        counter(&after, "bob", "ingress", "denied_packets")
    );

    // A new peer listed first, and a changed policy: the swap is atomic, and
    // alice and bob keep their counter slots and their counts.
    let carol = "[[peer]]\nname = \"carol\"\nallowed_ips = [\"10.77.0.99/32\"]\n\n";
    let text =
        gateway_mesh_file(&mesh, POLICY).replacen("[[peer]]", &format!("{carol}[[peer]]"), 1);
    let cfg2 = dir.0.join("mesh2.toml");
    std::fs::write(&cfg2, text).unwrap();
    let (ok, out, err) = wgbpf(gw, &["load", "-c", cfg2.to_str().unwrap(), "--json"]);
    assert!(ok, "load with carol failed: {err}");
    let third: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(third["policy"]["changed"], true);
    assert_eq!(third["policy"]["version"], 2);
    let with_carol = counters(gw, &cfg);
    for (p, d, k) in [
        ("bob", "ingress", "denied_packets"),
        ("alice", "ingress", "allowed_packets"),
    ] {
        assert_eq!(
            counter(&with_carol, p, d, k),
            counter(&kept, p, d, k),
            "{p} {d} {k}"
        );
    }
    assert_eq!(
        counter(&with_carol, "carol", "ingress", "allowed_packets"),
        0
    );
    assert!(tcp_connect(alice, gw4, 22, T).unwrap());
    assert!(!tcp_connect(bob, gw4, 22, T).unwrap());

    // Unload: the programs are gone and traffic flows freely again.
    let (ok, _, err) = wgbpf(gw, &["unload", "-i", &gw.wg_if]);
    assert!(ok, "unload failed: {err}");
    assert!(!wgbpf::dataplane::pin_dir(&gw.wg_if).exists());
    assert!(tcp_connect(bob, gw4, 80, T).unwrap());
    assert!(tcp_connect(alice, gw4, 2222, T).unwrap());
}

/// The clsact fallback (what kernels before 6.6 get), forced on this kernel:
/// the netlink filters enforce after the controller exits, a reload adopts
/// them and attaches a deleted filter's pinned program again, and unload
/// removes exactly our filters.
#[test]
fn clsact_fallback_enforces_adopts_and_unloads() {
    let (mesh, _dir, cfg) = setup();
    let (gw, alice, bob) = (&mesh.gateway, mesh.host("alice"), mesh.host("bob"));
    let gw4 = IpAddr::V4(gw.tunnel_v4);
    let _listeners: Vec<_> = [22, 80]
        .iter()
        .map(|p| tcp_listen(gw, *p).unwrap())
        .collect();
    let filters = |parent: &str| {
        gw.run(&["tc", "-j", "filter", "show", "dev", &gw.wg_if, parent])
            .unwrap()
    };

    let (ok, out, err) = wgbpf(gw, &["load", "-c", &cfg, "--attach", "clsact", "--json"]);
    assert!(ok, "load failed: {err}");
    let _unload = Unload(gw);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["attach"]["mode"], "clsact");
    assert_eq!(report["attach"]["reattached"], serde_json::json!([]));
    assert!(
        filters("ingress").contains("wgbpf_ingress"),
        "{}",
        filters("ingress")
    );
    assert!(
        filters("egress").contains("wgbpf_egress"),
        "{}",
        filters("egress")
    );

    assert!(tcp_connect(alice, gw4, 22, T).unwrap());
    assert!(!tcp_connect(alice, gw4, 80, T).unwrap());
    assert!(!tcp_connect(bob, gw4, 22, T).unwrap());
    let c = counters(gw, &cfg);
    assert!(counter(&c, "bob", "ingress", "denied_packets") >= 1);

    // Our ingress filter deleted behind wgbpf's back: bob's datagrams to
    // the gateway (ingress only, denied by the policy) get through.
    let sink = udp_sink(gw, 5001).unwrap();
    let sent = 20u64;
    let bob_sends = || {
        udp_send(bob, gw4, 5001, sent as usize, 100).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    };
    bob_sends();
    assert_eq!(sink.served(), 0, "bob's datagrams passed while enforced");
    gw.run(&["tc", "filter", "del", "dev", &gw.wg_if, "ingress"])
        .unwrap();
    assert!(
        !filters("ingress").contains("wgbpf_ingress"),
        "{}",
        filters("ingress")
    );
    bob_sends();
    assert_eq!(sink.served(), sent as usize, "the ingress filter is gone");

    // The next load adopts the data plane and attaches the pinned program
    // again (same maps: the counters go on); bob is denied again.
    let denied = counter(&counters(gw, &cfg), "bob", "ingress", "denied_packets");
    let (ok, out, err) = wgbpf(gw, &["load", "-c", &cfg, "--json"]);
    assert!(ok, "reload failed: {err}");
    let repaired: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(repaired["attach"]["adopted"], true);
    assert_eq!(repaired["attach"]["mode"], "clsact");
    assert_eq!(
        repaired["attach"]["reattached"],
        serde_json::json!(["wgbpf_ingress"])
    );
    assert_eq!(repaired["policy"]["changed"], false);
    assert!(
        filters("ingress").contains("wgbpf_ingress"),
        "{}",
        filters("ingress")
    );
    bob_sends();
    assert_eq!(sink.served(), sent as usize, "bob got through after reload");
    assert_eq!(
        counter(&counters(gw, &cfg), "bob", "ingress", "denied_packets"),
        denied + sent
    );
    assert!(!tcp_connect(bob, gw4, 22, T).unwrap());
    assert!(tcp_connect(alice, gw4, 22, T).unwrap());

    // The egress filter deleted too: the text report says so.
    gw.run(&["tc", "filter", "del", "dev", &gw.wg_if, "egress"])
        .unwrap();
    let (ok, out, err) = wgbpf(gw, &["load", "-c", &cfg]);
    assert!(ok, "reload failed: {err}");
    assert!(out.contains("adopted"), "{out}");
    assert!(out.contains("program(s) wgbpf_egress again"), "{out}");
    assert!(
        filters("egress").contains("wgbpf_egress"),
        "{}",
        filters("egress")
    );

    let (ok, out, err) = wgbpf(gw, &["load", "-c", &cfg, "--json"]);
    assert!(ok, "reload failed: {err}");
    let again: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(again["attach"]["adopted"], true);
    assert_eq!(again["attach"]["mode"], "clsact");
    assert_eq!(again["attach"]["reattached"], serde_json::json!([]));

    let (ok, _, err) = wgbpf(gw, &["unload", "-i", &gw.wg_if]);
    assert!(ok, "unload failed: {err}");
    assert!(
        !filters("ingress").contains("wgbpf"),
        "{}",
        filters("ingress")
    );
    assert!(
        !filters("egress").contains("wgbpf"),
        "{}",
        filters("egress")
    );
    assert!(tcp_connect(bob, gw4, 22, T).unwrap());
}

/// Enforcement outlives the controller however it ends: `wgbpf run` killed
/// with SIGKILL leaves the pinned programs enforcing, and the next start
/// adopts them with the counters as they were.
#[test]
fn enforcement_survives_sigkill_and_is_adopted() {
    let (mesh, dir, cfg) = setup();
    let (gw, alice, bob) = (&mesh.gateway, mesh.host("alice"), mesh.host("bob"));
    let gw4 = IpAddr::V4(gw.tunnel_v4);
    let _listeners: Vec<_> = [22].iter().map(|p| tcp_listen(gw, *p).unwrap()).collect();
    let start = || {
        wgbpf_command(gw)
            .args(["run", "-c", &cfg, "--no-metrics", "--log-format", "json"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.0.join("run.log")).unwrap())
            .spawn()
            .unwrap()
    };
    let _unload = Unload(gw);
    let mut daemon = start();
    // Wait (bounded) until the daemon has enforced: bob is refused.
    let enforced = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(200));
        wgbpf::dataplane::attach::pinned_mode(&gw.wg_if).is_some()
            && !tcp_connect(bob, gw4, 22, T).unwrap()
    });
    assert!(enforced, "the daemon never enforced the policy");
    let denied = counter(&counters(gw, &cfg), "bob", "ingress", "denied_packets");
    assert!(denied >= 1);

    daemon.kill().unwrap(); // SIGKILL: no clean-up runs
    daemon.wait().unwrap();
    assert!(
        !tcp_connect(bob, gw4, 22, T).unwrap(),
        "bob got through after SIGKILL"
    );
    assert!(tcp_connect(alice, gw4, 22, T).unwrap());
    let after_kill = counter(&counters(gw, &cfg), "bob", "ingress", "denied_packets");
    assert!(after_kill > denied, "the pinned programs kept counting");

    let mut daemon = start();
    let adopted = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(200));
        std::fs::read_to_string(dir.0.join("run.log"))
            .unwrap_or_default()
            .contains("adopted")
    });
    assert!(adopted, "no adoption in the log");
    let kept = counter(&counters(gw, &cfg), "bob", "ingress", "denied_packets");
    assert!(kept >= after_kill, "counters were reset on adoption");
    daemon.kill().unwrap();
    daemon.wait().unwrap();
}
