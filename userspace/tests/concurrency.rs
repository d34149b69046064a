//! Two controllers on one interface: `wgbpf load`s started together are
//! serialised by the interface lock (each policy gets its own version, the
//! last one applied is the one enforced), and a controller that cannot get
//! the lock in time refuses, naming the holder, and changes nothing. The
//! version only grows, even across `wgbpf unload` and a fresh load.

mod common;

use std::time::Duration;

use common::{managed_mesh_file, wgbpf_code as wgbpf, TempDir, Unload};
use testbed::{Testbed, TestbedSpec};
use wgbpf::dataplane::lock::InterfaceLock;

const ICMP: &str = "[policy]\n\n[[policy.rule]]\naction = \"accept\"\nfrom = [\"alice\"]\n\
                    to = [\"gateway\"]\nproto = \"icmp\"\n";

#[test]
fn loads_at_once_are_serialised_and_a_held_lock_refuses() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice"])).expect("mesh");
    let gw = &mesh.gateway;
    let dir = std::env::temp_dir().join(format!("wgbpf-conc-{}", mesh.run_id()));
    let _dir = TempDir::create(dir.clone());
    let _unload = Unload(gw);
    let key = mesh.private_key_file(gw);
    let write = |name: &str, policy: &str| {
        let p = dir.join(name);
        std::fs::write(&p, managed_mesh_file(&mesh, policy, &key)).unwrap();
        p.to_str().unwrap().to_string()
    };
    let icmp = write("icmp.toml", ICMP);
    let tcp = write(
        "tcp.toml",
        &ICMP.replace("\"icmp\"", "\"tcp\"\nports = [\"22\"]"),
    );
    let version = |out: &str| -> u64 {
        let v: serde_json::Value = serde_json::from_str(out).unwrap();
        v["policy"]["version"].as_u64().unwrap()
    };
    let (code, out, err) = wgbpf(gw, &["load", "-c", &icmp, "--json"]);
    assert_eq!(code, 0, "{err}");
    let mut last = version(&out);

    for round in 0..4 {
        // Two different policies at once, each different from the active
        // one: both must apply, one after the other.
        let (a, b) = if round % 2 == 0 {
            (&tcp, &icmp)
        } else {
            (&icmp, &tcp)
        };
        let (ra, rb) = std::thread::scope(|s| {
            let ta = s.spawn(|| wgbpf(gw, &["load", "-c", a, "--json"]));
            let tb = s.spawn(|| wgbpf(gw, &["load", "-c", b, "--json"]));
            (ta.join().unwrap(), tb.join().unwrap())
        });
        assert_eq!(ra.0, 0, "round {round}: {}", ra.2);
        assert_eq!(rb.0, 0, "round {round}: {}", rb.2);
        let (va, vb) = (version(&ra.1), version(&rb.1));
        // Each apply that changed the policy got a version of its own.
        let changed = |out: &str| -> bool {
            let v: serde_json::Value = serde_json::from_str(out).unwrap();
            v["policy"]["changed"].as_bool().unwrap()
        };
        if changed(&ra.1) && changed(&rb.1) {
            assert_ne!(va, vb, "round {round}: two policies at one version");
        }
        assert!(va > last || vb > last, "round {round}: versions went back");
        // The one applied last is enforced, exactly.
        let (winner, newest) = if va > vb { (a, va) } else { (b, vb) };
        let (code, out, err) = wgbpf(gw, &["audit", "-c", winner, "--json"]);
        assert_eq!(code, 0, "round {round}: {out}{err}");
        last = newest;
    }

    // Someone holds the lock: a load with a short wait refuses, naming it,
    // and the enforced policy stays.
    let held = InterfaceLock::acquire(&gw.wg_if, Duration::ZERO).unwrap();
    let other = if last % 2 == 0 { &icmp } else { &tcp };
    let (_, before, _) = wgbpf(gw, &["audit", "-c", other, "--json"]);
    let (code, _, err) = wgbpf(gw, &["load", "-c", other, "--wait-lock", "1"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("another wgbpf") && err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    let (_, after, _) = wgbpf(gw, &["audit", "-c", other, "--json"]);
    assert_eq!(before, after, "a refused load changed something");
    drop(held);
    let (code, _, err) = wgbpf(gw, &["load", "-c", other]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_data_plane_loaded_afresh_continues_the_versions() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice"])).expect("mesh");
    let gw = &mesh.gateway;
    let dir = std::env::temp_dir().join(format!("wgbpf-conc-fresh-{}", mesh.run_id()));
    let _dir = TempDir::create(dir.clone());
    let _unload = Unload(gw);
    let key = mesh.private_key_file(gw);
    let icmp = dir.join("icmp.toml");
    std::fs::write(&icmp, managed_mesh_file(&mesh, ICMP, &key)).unwrap();
    let tcp = dir.join("tcp.toml");
    let tcp_policy = ICMP.replace("\"icmp\"", "\"tcp\"\nports = [\"22\"]");
    std::fs::write(&tcp, managed_mesh_file(&mesh, &tcp_policy, &key)).unwrap();
    let load = |file: &std::path::Path| -> u64 {
        let (code, out, err) = wgbpf(gw, &["load", "-c", file.to_str().unwrap(), "--json"]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["policy"]["version"].as_u64().unwrap()
    };
    let first = load(&icmp);
    let second = load(&tcp);
    assert!(second > first, "{first} then {second}");
    // Everything pinned goes; nothing holds the old data plane.
    let (code, _, err) = wgbpf(gw, &["unload", "-i", &gw.wg_if]);
    assert_eq!(code, 0, "{err}");
    let afresh = load(&icmp);
    assert!(
        afresh > second,
        "the data plane loaded afresh is at version {afresh}, after {second}: \
         wgbpf_policy_version went back"
    );
    // A record at the top (corrupt, or written by hand): refused, the
    // policy in force untouched, never a wrap to a version flows of an
    // older policy still carry.
    let record = format!("/var/lib/wgbpf/{}.version", gw.wg_if);
    std::fs::write(&record, "4294967295\n").unwrap();
    let (code, _, err) = wgbpf(gw, &["load", "-c", tcp.to_str().unwrap()]);
    assert_ne!(code, 0, "a load past the last version succeeded");
    assert!(err.contains("policy versions are exhausted"), "{err}");
    let (code, _, err) = wgbpf(gw, &["audit", "-c", icmp.to_str().unwrap()]);
    assert_eq!(code, 0, "the policy in force changed: {err}");
    std::fs::remove_file(&record).unwrap();
}
