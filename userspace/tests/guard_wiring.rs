//! The XDP guard as an operator runs it: `[interface.guard]` in the mesh
//! file, `wgbpf load` attaches it to the underlay (and adopts it the next
//! time), `wgbpf show -c` reports its mode and counters, garbage to the
//! WireGuard port is dropped while the tunnel carries on, `wgbpf unload -i
//! UNDERLAY` removes it. (The guard's own semantics: bpf-tests/tests/
//! xdp_guard.rs and userspace/tests/e2e_xdp_guard.rs.)

mod common;

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use common::{wgbpf_code as wgbpf, TempDir, Unload};
use serde_json::Value;
use testbed::{ping, udp_send, Testbed, TestbedSpec};

/// The gateway's end of alice's underlay, and its name in the gateway's
/// namespace (testbed).
const GW_UNDERLAY: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const UNDERLAY: &str = "ul1";

const POLICY: &str = "[policy]\n\n[[policy.rule]]\naction = \"accept\"\nfrom = [\"alice\"]\n\
                      to = [\"gateway\"]\nproto = \"icmp\"\n";

fn guard_json(gw: &testbed::Host, cfg: &str) -> Value {
    let (code, out, err) = wgbpf(gw, &["show", "-i", &gw.wg_if, "-c", cfg, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["xdp_guards"].clone()
}

#[test]
fn load_attaches_the_guard_show_reports_it_unload_removes_it() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice"])).expect("mesh");
    let (gw, alice) = (&mesh.gateway, mesh.host("alice"));
    let dir = std::env::temp_dir().join(format!("wgbpf-guardwire-{}", mesh.run_id()));
    let _dir = TempDir::create(dir.clone());
    let _unload = Unload(gw);
    struct UnloadGuard<'a>(&'a testbed::Host);
    impl Drop for UnloadGuard<'_> {
        fn drop(&mut self) {
            let _ = wgbpf(self.0, &["unload", "-i", UNDERLAY]);
        }
    }
    let _unload_guard = UnloadGuard(gw);
    let text = testbed::gateway_mesh_file(&mesh, POLICY)
        .replacen("\n\n", "\nlisten_port = 51820\n\n", 1)
        .replacen(
            "[[peer]]",
            &format!(
                "[interface.guard]\nunderlay = [\"{UNDERLAY}\"]\nhandshake_rate = 5\nhandshake_burst = 10\n\n[[peer]]"
            ),
            1,
        );
    let cfg = dir.join("mesh.toml");
    std::fs::write(&cfg, &text).unwrap();
    let cfg = cfg.to_str().unwrap();

    let (code, out, err) = wgbpf(gw, &["load", "-c", cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("{UNDERLAY}: XDP guard attached")),
        "{out}"
    );
    let g = guard_json(gw, cfg);
    assert_eq!(g[0]["underlay"], UNDERLAY, "{g}");
    assert_eq!(g[0]["attached"], true, "{g}");

    // The tunnel carries on through the guard; garbage to the port is dropped.
    assert!(ping(alice, IpAddr::V4(gw.tunnel_v4), Duration::from_secs(2)).unwrap());
    udp_send(alice, IpAddr::V4(GW_UNDERLAY), 51820, 50, 40).unwrap();
    let g = guard_json(gw, cfg);
    assert!(g[0]["counters"]["pass_data"].as_u64().unwrap() > 0, "{g}");
    assert_eq!(g[0]["counters"]["bad_type"].as_u64().unwrap(), 50, "{g}");
    let (_, text_out, _) = wgbpf(gw, &["show", "-i", &gw.wg_if, "-c", cfg]);
    assert!(
        text_out.contains(&format!("XDP guard on {UNDERLAY}:")),
        "{text_out}"
    );

    // Loaded again: the guard is adopted, its counters kept.
    let (code, out, err) = wgbpf(gw, &["load", "-c", cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("{UNDERLAY}: XDP guard adopted")),
        "{out}"
    );
    assert_eq!(guard_json(gw, cfg)[0]["counters"]["bad_type"], 50);

    // A guard without a listen port to watch is refused, naming why.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, text.replace("listen_port = 51820\n", "")).unwrap();
    let (code, _, err) = wgbpf(gw, &["load", "-c", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("guard: needs the interface's listen_port"),
        "{err}"
    );

    let (code, out, _) = wgbpf(gw, &["unload", "-i", UNDERLAY]);
    assert_eq!(code, 0);
    assert!(out.contains("XDP guard detached"), "{out}");
    assert_eq!(guard_json(gw, cfg), serde_json::json!([]));
}
