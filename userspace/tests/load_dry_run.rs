//! `wgbpf load --dry-run` on a real gateway (wireguard-go in a network
//! namespace): the flows a changed file would change, listed against the
//! policy active in the kernel, and nothing applied.

mod common;

use common::{wgbpf_code as wgbpf, TempDir, Unload};
use testbed::{Testbed, TestbedSpec};
use wgbpf::{dataplane, policy::compile::compile};

const POLICY: &str = "[policy]\n\n[[policy.rule]]\nname = \"alice-web\"\naction = \"accept\"\n\
                      from = [\"alice\"]\nto = [\"gateway\"]\nproto = \"tcp\"\nports = [80]\n";

/// The active slot's version, and whether it holds exactly `file`'s policy.
fn active(iface: &str, file: &std::path::Path) -> (u32, bool) {
    let maps = dataplane::open(iface).unwrap().expect("pinned");
    let (_, cfg) = maps.active_slot().unwrap();
    let mesh = wgbpf::source::load(file).unwrap();
    let names: Vec<String> = mesh.policy.peers.iter().map(|p| p.name.clone()).collect();
    let slots = maps.plan_counter_indexes(&names).unwrap();
    let by_index = mesh
        .policy
        .peers
        .iter()
        .map(|p| (p.index, slots.indexes[&p.name]))
        .collect();
    let c = compile(&mesh.policy, wgbpf_common::capacity::PEERS)
        .unwrap()
        .with_counter_indexes(&by_index);
    (cfg.version, maps.active_holds(&c).unwrap())
}

#[test]
fn dry_run_lists_the_changes_and_applies_nothing() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice", "bob"])).expect("mesh");
    let gw = &mesh.gateway;
    let dir = std::env::temp_dir().join(format!("wgbpf-dryrun-{}", mesh.run_id()));
    let _dir = TempDir::create(dir.clone());
    let _unload = Unload(gw);
    let text = testbed::gateway_mesh_file(&mesh, POLICY);
    let old = dir.join("old.toml");
    std::fs::write(&old, &text).unwrap();
    let new = dir.join("new.toml");
    std::fs::write(
        &new,
        text.replace("from = [\"alice\"]", "from = [\"bob\"]")
            .replace("ports = [80]", "ports = [80, 443]"),
    )
    .unwrap();
    let (old_s, new_s) = (old.to_str().unwrap(), new.to_str().unwrap());

    // Nothing pinned yet: said so, nothing created.
    let (code, out, err) = wgbpf(gw, &["load", "--dry-run", "-c", new_s]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no wgbpf data plane is pinned"), "{out}");
    assert!(dataplane::open(&gw.wg_if).unwrap().is_none());

    let (code, _, err) = wgbpf(gw, &["load", "-c", old_s]);
    assert_eq!(code, 0, "{err}");
    let before = active(&gw.wg_if, &old);
    assert!(before.1, "the old file's policy is active");
    let record = std::fs::read(dataplane::applied::path(&gw.wg_if)).unwrap();

    let (code, out, err) = wgbpf(gw, &["load", "--dry-run", "-c", new_s]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"+ bob -> gateway: tcp 80,443"), "{out}");
    assert!(lines.contains(&"- alice -> gateway: tcp 80"), "{out}");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with(['+', '-'])).count(),
        2,
        "{out}"
    );

    // Nothing changed in the kernel or in the record.
    assert_eq!(active(&gw.wg_if, &old), before);
    assert!(!active(&gw.wg_if, &new).1);
    assert_eq!(
        std::fs::read(dataplane::applied::path(&gw.wg_if)).unwrap(),
        record
    );
    let (code, out, _) = wgbpf(gw, &["audit", "-c", old_s]);
    assert_eq!(code, 0, "{out}");

    // The active file itself: nothing would change.
    let (code, out, _) = wgbpf(gw, &["load", "--dry-run", "-c", old_s, "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["changes"], serde_json::json!([]), "{v}");
    assert_eq!(v["against"]["version"], before.0);

    // Without the record, the diff cannot be listed: said, exit 1.
    std::fs::remove_file(dataplane::applied::path(&gw.wg_if)).unwrap();
    let (code, _, err) = wgbpf(gw, &["load", "--dry-run", "-c", new_s]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot be listed"), "{err}");
    // A record that is not what the kernel holds is not believed.
    std::fs::write(
        dataplane::applied::path(&gw.wg_if),
        String::from_utf8(record.clone())
            .unwrap()
            .replace("\"first\":80,\"last\":80", "\"first\":81,\"last\":81"),
    )
    .unwrap();
    let (code, _, err) = wgbpf(gw, &["load", "--dry-run", "-c", new_s]);
    assert_eq!(code, 1);
    assert!(err.contains("is not the one recorded"), "{err}");
    assert_eq!(active(&gw.wg_if, &old), before);
}
