//! `[interface.flows]` against a pinned data plane, through `wgbpf load`:
//! a pinned flow table of another size is refused (whether its programs
//! are pinned with it or only its maps were left behind), with both sizes
//! and the way out in the message, and the running data plane untouched;
//! other lifetimes or budget replace the programs, the table kept.

mod common;

use aya::maps::IterableMap;
use common::{wgbpf_code as wgbpf, TempDir, Unload};
use testbed::{gateway_mesh_file, Testbed, TestbedSpec};
use wgbpf::dataplane::{self, attach, Capacities, Dataplane, LoadOptions};

const POLICY: &str = "[policy]\n\n[[policy.rule]]\naction = \"accept\"\nfrom = [\"alice\"]\n\
                      to = [\"gateway\"]\nproto = \"icmp\"\n";

fn table_size(iface: &str) -> u32 {
    let maps = dataplane::open_maps(iface).expect("maps");
    maps.flows.map().info().unwrap().max_entries()
}

fn program_ids(iface: &str) -> Vec<u32> {
    let dir = dataplane::pin_dir(iface);
    ["wgbpf_ingress", "wgbpf_egress"]
        .map(|p| {
            aya::programs::ProgramInfo::from_pin(dir.join(p))
                .expect("pinned program")
                .id()
        })
        .to_vec()
}

#[test]
fn a_pinned_table_of_another_size_is_refused_and_new_lifetimes_replace_the_programs() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice"])).expect("mesh");
    let gw = &mesh.gateway;
    let iface = gw.wg_if.clone();
    let dir = std::env::temp_dir().join(format!("wgbpf-flowset-{}", mesh.run_id()));
    let _dir = TempDir::create(dir.clone());
    let _unload = Unload(gw);
    let cfg = dir.join("mesh.toml");
    let write = |flows: &str| {
        std::fs::write(&cfg, gateway_mesh_file(&mesh, POLICY) + flows).unwrap();
    };
    let load = || wgbpf(gw, &["load", "-c", cfg.to_str().unwrap()]);

    // Maps left pinned without programs (a load that never attached),
    // with a table of 2048 entries.
    let left = Dataplane::load(&LoadOptions {
        pin_dir: Some(dataplane::pin_dir(&iface)),
        capacities: Capacities {
            flows: 2048,
            ..Default::default()
        },
        ..Default::default()
    })
    .expect("load maps");
    drop(left);
    assert!(attach::pinned_mode(&iface).is_none(), "no programs pinned");

    write("\n[interface.flows]\ntable_size = 1024\n");
    let (code, _, err) = load();
    assert_eq!(code, 1, "{err}");
    for said in [
        "flow table of 2048 entries",
        "asks for 1024",
        "table_size = 2048",
        &format!("wgbpf unload -i {iface}"),
    ] {
        assert!(err.contains(said), "`{said}` not in: {err}");
    }
    assert!(attach::pinned_mode(&iface).is_none(), "nothing attached");

    // The pinned size: adopted and attached.
    write("\n[interface.flows]\ntable_size = 2048\n");
    let (code, out, err) = load();
    assert_eq!(code, 0, "{err}");
    assert!(attach::pinned_mode(&iface).is_some(), "{out}");
    assert_eq!(table_size(&iface), 2048);
    let ids = program_ids(&iface);

    // Programs pinned now: the default size is refused too, the data
    // plane left as it was.
    write("");
    let (code, _, err) = load();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("asks for 262144"), "{err}");
    assert_eq!(program_ids(&iface), ids, "the running programs stay");

    // Unchanged settings replace nothing; other lifetimes or budget
    // replace the programs, the table kept.
    write("\n[interface.flows]\ntable_size = 2048\n");
    let (code, out, err) = load();
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("flow lifetimes or budget"), "{out}");
    assert_eq!(program_ids(&iface), ids, "same settings, same programs");
    write("\n[interface.flows]\ntable_size = 2048\nnew_per_second = 10\ntcp_closing = 3\n");
    let (code, out, err) = load();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("other flow lifetimes or budget"), "{out}");
    let new_ids = program_ids(&iface);
    assert!(
        new_ids.iter().all(|id| !ids.contains(id)),
        "replaced: {ids:?} -> {new_ids:?}"
    );
    assert_eq!(table_size(&iface), 2048);
    // The next load with the same file replaces nothing.
    let (code, out, err) = load();
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("flow lifetimes or budget"), "{out}");
    assert_eq!(program_ids(&iface), new_ids);
}
