//! `wgbpf show` against `wg show` on a real wireguard-go mesh (root): the
//! dump has wg(8)'s columns, equal to wg's own (keys hidden), with wgbpf's
//! name and counters appended; text has wg's labels and sorts peers by
//! latest handshake as wg does; `wgbpf show` alone lists this namespace's
//! interfaces only; colour only when asked for (or on a terminal).

mod common;

use std::{net::IpAddr, time::Duration};

use common::{managed_mesh_file, wgbpf, TempDir, Unload};
use testbed::{ping, Host, Testbed, TestbedSpec};

const POLICY: &str = "[policy]\n\n[[policy.rule]]\naction = \"accept\"\nfrom = [\"*\"]\n\
                      to = [\"gateway\"]\nproto = \"icmp\"\n";

fn columns(line: &str) -> Vec<&str> {
    line.split('\t').collect()
}

/// `wg show IF dump`'s peer lines by public key.
fn wg_dump(gw: &Host) -> (Vec<String>, Vec<Vec<String>>) {
    let text = gw.run(&["wg", "show", &gw.wg_if, "dump"]).unwrap();
    let mut lines = text.lines();
    let head = columns(lines.next().unwrap())
        .iter()
        .map(|s| s.to_string())
        .collect();
    let peers = lines
        .map(|l| columns(l).iter().map(|s| s.to_string()).collect())
        .collect();
    (head, peers)
}

#[test]
fn show_reads_like_wg_show_and_dumps_like_it() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice", "bob"])).expect("mesh");
    let (gw, alice, bob) = (&mesh.gateway, mesh.host("alice"), mesh.host("bob"));
    let dir = TempDir::create(std::env::temp_dir().join(format!("wgbpf-show-{}", mesh.run_id())));
    let cfg = dir.0.join("mesh.toml");
    std::fs::write(
        &cfg,
        managed_mesh_file(&mesh, POLICY, &mesh.private_key_file(gw)),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let _unload = Unload(gw);
    let (ok, _, err) = wgbpf(gw, &["load", "-c", cfg]);
    assert!(ok, "{err}");
    let gw4 = IpAddr::V4(gw.tunnel_v4);
    assert!(ping(alice, gw4, Duration::from_secs(3)).unwrap());

    // Bob's session starts later than alice's: his side forgets the
    // gateway and is given it back, so his next ping makes a handshake.
    std::thread::sleep(Duration::from_millis(1100));
    let gw_key = gw.run(&["wg", "show", &gw.wg_if, "public-key"]).unwrap();
    let gw_key = gw_key.trim();
    let endpoint = bob
        .run(&["wg", "show", &bob.wg_if, "endpoints"])
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let ips = bob
        .run(&["wg", "show", &bob.wg_if, "allowed-ips"])
        .unwrap()
        .split_whitespace()
        .skip(1)
        .collect::<Vec<_>>()
        .join(",");
    bob.run(&["wg", "set", &bob.wg_if, "peer", gw_key, "remove"])
        .unwrap();
    bob.run(&[
        "wg",
        "set",
        &bob.wg_if,
        "peer",
        gw_key,
        "endpoint",
        &endpoint,
        "allowed-ips",
        &ips,
    ])
    .unwrap();
    assert!(ping(bob, gw4, Duration::from_secs(3)).unwrap());

    // --- dump: wg's columns, equal to wg's, then name and counters.
    let (wg_head, wg_peers) = wg_dump(gw);
    let (ok, out, err) = wgbpf(gw, &["show", &gw.wg_if, "dump", "-c", cfg]);
    assert!(ok, "{err}");
    let mut lines = out.lines();
    let head = columns(lines.next().unwrap());
    assert_eq!(head[0], "(hidden)", "the private key is never printed");
    assert_eq!(&head[1..], &wg_head[1..4]);
    let ours: Vec<Vec<&str>> = lines.map(columns).collect();
    assert_eq!(ours.len(), wg_peers.len());
    for w in &wg_peers {
        let o = ours
            .iter()
            .find(|o| o[0] == w[0])
            .unwrap_or_else(|| panic!("no line for {}:\n{out}", w[0]));
        assert_eq!(o.len(), 8 + 7, "{o:?}");
        assert_eq!(
            o[1],
            if w[1] == "(none)" {
                "(none)"
            } else {
                "(hidden)"
            }
        );
        assert_eq!(&o[2..4], &w[2..4], "endpoint, allowed ips");
        assert_eq!(o[7], w[7], "keepalive");
        for i in 4..7 {
            // Handshake time and transfer only grow between the two reads.
            let (a, b): (u64, u64) = (w[i].parse().unwrap(), o[i].parse().unwrap());
            assert!(b >= a, "column {i}: {a} then {b}");
        }
        let name = if o[0] == alice.public_key {
            "alice"
        } else {
            "bob"
        };
        assert_eq!(o[8], name);
        let allowed_in: u64 = o[9].parse().unwrap();
        assert!(allowed_in > 0, "{name}'s pings were counted: {o:?}");
    }

    // --- text: wg's labels, the most recent handshake first.
    let (ok, text, _) = wgbpf(gw, &["show", "-i", &gw.wg_if, "-c", cfg]);
    assert!(ok);
    for label in [
        format!("interface: {}\n", gw.wg_if),
        "  private key: (hidden)\n".into(),
        "  listening port: 51820\n".into(),
        "  name: alice\n".into(),
        "  latest handshake: ".into(),
        "  transfer: ".into(),
        "  acl: in ".into(),
    ] {
        assert!(text.contains(&label), "{label:?} not in:\n{text}");
    }
    let at = |key: &str| text.find(&format!("peer: {key}\n")).unwrap();
    assert!(
        at(&bob.public_key) < at(&alice.public_key),
        "bob's newer handshake first, as wg sorts:\n{text}"
    );
    assert!(!text.contains('\x1b'), "no colour when not a terminal");
    let (_, coloured, _) = wgbpf(gw, &["show", &gw.wg_if, "--color", "always"]);
    assert!(
        coloured.contains(&format!("\x1b[1;32minterface\x1b[0m: \x1b[32m{}", gw.wg_if)),
        "{coloured:?}"
    );

    // --- all interfaces by default: this namespace's only (alice's and
    // bob's wireguard-go sockets share the directory, not the namespace).
    let (ok, all, err) = wgbpf(gw, &["show"]);
    assert!(ok, "{err}");
    assert!(all.contains(&format!("interface: {}\n", gw.wg_if)), "{all}");
    assert!(
        !all.contains(&alice.wg_if) && !all.contains(&bob.wg_if),
        "{all}"
    );
    let (ok, all_dump, _) = wgbpf(gw, &["show", "all", "dump"]);
    assert!(ok);
    assert!(
        all_dump
            .lines()
            .all(|l| l.starts_with(&format!("{}\t", gw.wg_if))),
        "{all_dump}"
    );
    let (ok, one, _) = wgbpf(gw, &["show", &gw.wg_if, "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&one).unwrap();
    assert_eq!(v["interface"], gw.wg_if.as_str());
    let (ok, many, _) = wgbpf(gw, &["show", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&many).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
}
