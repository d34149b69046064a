//! `wgbpf audit` against a real wireguard-go gateway: equal after `load`,
//! and each kind of drift (a peer removed behind wgbpf's back, the programs
//! gone, the file changed) reported with exit status 1.

mod common;

use common::{managed_mesh_file, wgbpf_code as wgbpf, TempDir, Unload};
use testbed::{Testbed, TestbedSpec};

const POLICY: &str = "[policy]\n\n[[policy.rule]]\naction = \"accept\"\nfrom = [\"alice\"]\n\
                      to = [\"gateway\"]\nproto = \"icmp\"\n";

#[test]
fn audit_reports_drift_and_nothing_else() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice", "bob"])).expect("mesh");
    let gw = &mesh.gateway;
    let dir = std::env::temp_dir().join(format!("wgbpf-audit-{}", mesh.run_id()));
    let _dir = TempDir::create(dir.clone());
    let _unload = Unload(gw); // dropped first: unloads, then the directory goes
                              // The gateway's mesh file, now also managing WireGuard.
    let text = managed_mesh_file(&mesh, POLICY, &mesh.private_key_file(gw));
    let cfg = dir.join("mesh.toml");
    std::fs::write(&cfg, &text).unwrap();
    let cfg = cfg.to_str().unwrap();

    let (code, out, err) = wgbpf(gw, &["audit", "-c", cfg]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("no wgbpf programs are attached"), "{out}");

    let (code, _, err) = wgbpf(gw, &["load", "-c", cfg]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = wgbpf(gw, &["audit", "-c", cfg, "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"equal\":true"), "{out}");

    // Someone removes bob by hand.
    let bob = mesh.host("bob");
    gw.run(&["wg", "set", &gw.wg_if, "peer", &bob.public_key, "remove"])
        .unwrap();
    let (code, out, _) = wgbpf(gw, &["audit", "-c", cfg]);
    assert_eq!(code, 1);
    assert!(out.contains("peer bob missing"), "{out}");
    assert!(!out.contains("policy"), "only the peer differs: {out}");

    // load repairs it; a changed file is then the difference.
    let (code, _, err) = wgbpf(gw, &["load", "-c", cfg]);
    assert_eq!(code, 0, "{err}");
    let changed = dir.join("changed.toml");
    std::fs::write(
        &changed,
        text.replace("proto = \"icmp\"", "proto = \"tcp\""),
    )
    .unwrap();
    let (code, out, _) = wgbpf(gw, &["audit", "-c", changed.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("differs from the file's"), "{out}");
    assert!(!out.contains("peer"), "the device matches: {out}");

    let (code, _, _) = wgbpf(gw, &["audit", "-c", "/nonexistent/mesh.toml"]);
    assert_eq!(code, 2);
}
