//! A kernel that refuses wgbpf's programs for a missing capability (root,
//! wireguard-go): `wgbpf load` run without CAP_PERFMON (the verifier then
//! treats the programs as untrusted) or without CAP_BPF fails with an error
//! that names the capability, and changes nothing: a fresh interface stays
//! unfiltered with nothing pinned, and an interface already enforcing keeps
//! its policy version and verdicts.

mod common;

use std::process::Command;

use common::{code_out_err, TempDir, Unload};
use testbed::{gateway_mesh_file, Host, Testbed, TestbedSpec};

const POLICY: &str = r#"
[policy]

[[policy.rule]]
action = "accept"
from = ["alice"]
to = ["bob"]
proto = "udp"
ports = [5000]
"#;

/// `wgbpf ARGS` in `host`'s namespace with only the capabilities `caps`
/// (a setpriv bounding set, e.g. "-all,+bpf,+net_admin").
fn wgbpf_with(host: &Host, caps: &str, args: &[&str]) -> (i32, String, String) {
    code_out_err(
        &Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", host.netns))
            .args([
                "--",
                "setpriv",
                "--bounding-set",
                caps,
                "--inh-caps",
                "-all",
                "--",
            ])
            .arg(env!("CARGO_BIN_EXE_wgbpf"))
            .args(args)
            .output()
            .expect("run wgbpf"),
    )
}

fn version(host: &Host) -> Option<u64> {
    let (code, out, _) = common::wgbpf_code(host, &["show", &host.wg_if, "--json"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["dataplane"]["policy_version"].as_u64()
}

#[test]
fn a_refused_program_names_the_capability_and_changes_nothing() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice", "bob"])).expect("mesh");
    let gw = &mesh.gateway;
    let dir = TempDir::create(std::env::temp_dir().join(format!("wgbpf-cap-{}", mesh.run_id())));
    let cfg = dir.0.join("mesh.toml");
    std::fs::write(&cfg, gateway_mesh_file(&mesh, POLICY)).unwrap();
    let cfg = cfg.to_str().unwrap();
    let _unload = Unload(gw);
    let pins = std::path::PathBuf::from(format!("/sys/fs/bpf/wgbpf/{}", gw.wg_if));

    for (caps, named) in [
        ("-all,+bpf,+net_admin", "CAP_PERFMON"),
        ("-all,+perfmon,+net_admin", "CAP_BPF"),
    ] {
        // Fresh: refused, nothing pinned, nothing attached.
        let (code, out, err) = wgbpf_with(gw, caps, &["load", "-c", cfg]);
        assert_ne!(code, 0, "{caps}: loaded without {named}: {out}");
        assert!(
            err.contains(named),
            "{caps}: the error does not name {named}:\n{err}"
        );
        assert!(!pins.exists(), "{caps}: a refused load left pins");
        assert_eq!(
            version(gw),
            None,
            "{caps}: a refused load attached something"
        );
    }

    // Enforcing already: a refused upgrade-style load keeps the old state.
    let (code, _, err) = common::wgbpf_code(gw, &["load", "-c", cfg]);
    assert_eq!(code, 0, "{err}");
    let before = version(gw);
    assert!(before.is_some());
    let changed = cfg.replace("mesh.toml", "mesh2.toml");
    std::fs::write(
        &changed,
        gateway_mesh_file(&mesh, &POLICY.replace("ports = [5000]", "ports = [5001]")),
    )
    .unwrap();
    let (code, _, err) = wgbpf_with(gw, "-all,+net_admin", &["load", "-c", &changed]);
    assert_ne!(code, 0);
    assert!(err.contains("CAP_BPF"), "{err}");
    assert_eq!(version(gw), before, "the running policy stays");
    let (code, out, _) = common::wgbpf_code(gw, &["audit", "-c", cfg]);
    assert_eq!(code, 0, "the old file is still what is enforced: {out}");
}
