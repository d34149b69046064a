//! A peer leaving and another arriving in the same apply never share a
//! counter index: until the switch the old policy still counts the leaver's
//! packets at its index, and a SIGKILL before the switch leaves that policy
//! running, so the newcomer's index must be another one and the leaver's
//! owner record is dropped only after the switch (a real data plane,
//! loaded by `wgbpf load` on a testbed gateway).

mod common;

use common::{wgbpf, TempDir, Unload};
use testbed::{gateway_mesh_file, Testbed, TestbedSpec};
use wgbpf::dataplane;

/// The gateway's file with alice and one more peer (no WireGuard managed:
/// the extra peer exists only in the policy).
fn file(mesh: &Testbed, extra: &str, addr: &str) -> String {
    gateway_mesh_file(mesh, "[policy]\n").replacen(
        "[policy]",
        &format!("[[peer]]\nname = \"{extra}\"\nallowed_ips = [\"{addr}/32\"]\n\n[policy]"),
        1,
    )
}

#[test]
fn a_leaving_and_an_arriving_peer_never_share_a_counter_index() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice"])).expect("mesh");
    let gw = &mesh.gateway;
    let dir = TempDir::create(std::env::temp_dir().join(format!("wgbpf-idx-{}", mesh.run_id())));
    let _unload = Unload(gw);
    let write = |name: &str, text: String| {
        let p = dir.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let with_bob = write("bob.toml", file(&mesh, "bob", "10.99.0.2"));
    let with_carol = write("carol.toml", file(&mesh, "carol", "10.99.0.3"));
    let (ok, _, err) = wgbpf(gw, &["load", "-c", &with_bob]);
    assert!(ok, "{err}");
    let owners = || {
        dataplane::open_loaded(&gw.wg_if)
            .unwrap()
            .counter_owners()
            .unwrap()
    };
    let before = owners();
    let bob = *before.iter().find(|(_, n)| *n == "bob").unwrap().0;

    // The plan for bob's departure and carol's arrival.
    let maps = dataplane::open_loaded(&gw.wg_if).unwrap();
    let plan = maps
        .plan_counter_indexes(&["alice".to_string(), "carol".to_string()])
        .unwrap();
    assert_ne!(
        plan.indexes["carol"], bob,
        "carol would count bob's packets"
    );
    drop(maps);

    let (ok, _, err) = wgbpf(gw, &["load", "-c", &with_carol]);
    assert!(ok, "{err}");
    let after = owners();
    assert_eq!(
        after.get(&bob),
        None,
        "bob's index is released after the switch"
    );
    assert_eq!(after[&plan.indexes["carol"]], "carol");
    assert_eq!(
        before.iter().find(|(_, n)| *n == "alice"),
        after.iter().find(|(_, n)| *n == "alice"),
        "alice keeps her index"
    );
}
