//! More than the maps hold, in the configuration: a clear error naming the
//! limit, and nothing changed — neither the WireGuard device nor the
//! enforced policy (a real mesh, wireguard-go, the data plane loaded).
//!
//! - peers: one more than the per-peer counter map holds is refused (as
//!   many as it holds pass `wgbpf policy check`);
//! - single addresses (the hosts map, both slots): 524,288 /32s, more than
//!   fit beside the running policy.
//!
//! (Policy entries and prefixes are refused by the same check as the
//! hosts map, `Maps::check_room`, tested with small maps in
//! bpf-tests/tests/atomic_swap.rs. The traffic-driven maps — flows, deny
//! keys — are LRU and evict, docs/dataplane.md.)

mod common;

use std::fmt::Write as _;

use common::{managed_mesh_file, wgbpf, TempDir, Unload};
use testbed::{Host, Testbed, TestbedSpec};
use wgbpf::wg::Key;
use wgbpf_common::capacity;

const POLICY: &str = "[policy]\n\n[[policy.rule]]\naction = \"accept\"\nfrom = [\"alice\"]\n\
                      to = [\"gateway\"]\nproto = \"icmp\"\n";

/// `n` synthetic peers: `[[peer]]` sections, each with a key and a /32.
fn synthetic_peers(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        let mut k = [0x33u8; 32];
        k[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let a = std::net::Ipv4Addr::from(0x0a50_0000 + i as u32);
        let _ = write!(
            s,
            "[[peer]]\nname = \"s{i}\"\npublic_key = \"{}\"\nallowed_ips = [\"{a}/32\"]\n\n",
            Key::from_bytes(k).to_base64()
        );
    }
    s
}

/// The mesh file with `extra` peer sections before the policy.
fn with_peers(base: &str, extra: &str) -> String {
    base.replacen("[policy]", &format!("{extra}[policy]"), 1)
}

/// What must not change: the device's peers and the audit of the file
/// that is enforced.
fn state(gw: &Host, cfg: &str) -> (usize, String) {
    let dump = gw.run(&["wg", "show", &gw.wg_if, "dump"]).unwrap();
    let (ok, out, err) = wgbpf(gw, &["audit", "-c", cfg, "--json"]);
    assert!(ok, "the enforced file no longer matches: {out}{err}");
    (dump.lines().count(), out)
}

#[test]
fn configurations_larger_than_the_maps_are_refused_before_anything_changes() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice"])).expect("mesh");
    let gw = &mesh.gateway;
    let dir = TempDir::create(std::env::temp_dir().join(format!("wgbpf-exh-{}", mesh.run_id())));
    let _unload = Unload(gw);
    let base = managed_mesh_file(&mesh, POLICY, &mesh.private_key_file(gw));
    let write = |name: &str, text: &str| {
        let p = dir.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let good = write("good.toml", &base);
    let (ok, _, err) = wgbpf(gw, &["load", "-c", &good]);
    assert!(ok, "{err}");
    let before = state(gw, &good);

    // --- Peers: index 0 means "no peer", so the counter map holds
    // capacity - 1; alice is one, so this many synthetic ones fit exactly.
    let most = capacity::PEERS as usize - 1;
    let fits = write("fits.toml", &with_peers(&base, &synthetic_peers(most - 1)));
    let (ok, out, err) = wgbpf(gw, &["policy", "check", &fits]);
    assert!(ok, "{most} peers must fit: {out}{err}");
    let over = write("over.toml", &with_peers(&base, &synthetic_peers(most)));
    let (ok, _, err) = wgbpf(gw, &["load", "-c", &over]);
    assert!(!ok);
    assert!(
        err.contains(&format!("{} peers", most + 1)) && err.contains(&format!("at most {most}")),
        "the error must say how many peers there are and the limit: {err}"
    );
    assert_eq!(state(gw, &good), before, "a refused load changed something");

    assert_eq!(state(gw, &good), before, "a refused load changed something");

    // --- Single addresses: one peer with more /32s than the hosts map
    // holds (both slots together; the running policy keeps its own).
    let n = capacity::HOSTS as usize;
    let mut ips = String::new();
    for i in 0..n {
        let a = std::net::Ipv4Addr::from(0x0b00_0000 + i as u32);
        let _ = write!(ips, "\"{a}/32\",");
    }
    let bulk = format!(
        "[[peer]]\nname = \"bulk\"\npublic_key = \"{}\"\nallowed_ips = [{ips}]\n\n",
        Key::from_bytes([0x44; 32]).to_base64()
    );
    let hosts = write("hosts.toml", &with_peers(&base, &bulk));
    let (ok, _, err) = wgbpf(gw, &["load", "-c", &hosts]);
    assert!(!ok);
    assert!(
        err.contains("WGBPF_HOSTS is too small") && err.contains("needs"),
        "the error must name the map and what the policy needs: {err}"
    );
    // No advice the operator cannot follow: the sizes are fixed at build.
    assert!(
        !err.contains("raise the capacity") && err.contains("fixed when wgbpf is built"),
        "{err}"
    );
    assert_eq!(state(gw, &good), before, "a refused load changed something");
}
