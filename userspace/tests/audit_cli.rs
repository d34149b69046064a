//! `wgbpf audit` against a real wireguard-go gateway: equal after `load`,
//! and each kind of drift (a peer removed behind wgbpf's back, the programs
//! gone, the file changed) reported with exit status 1.

use std::{path::PathBuf, process::Command};

use testbed::{gateway_mesh_file, Host, Mesh, MeshSpec};

fn wgbpf(gw: &Host, args: &[&str]) -> (i32, String, String) {
    let out = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", gw.netns))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_wgbpf"))
        .args(args)
        .output()
        .expect("run wgbpf");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Cleanup<'a>(&'a Host, PathBuf);
impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = wgbpf(self.0, &["unload", "-i", &self.0.wg_if]);
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

const POLICY: &str = "[policy]\n\n[[policy.rule]]\naction = \"accept\"\nfrom = [\"alice\"]\n\
                      to = [\"gateway\"]\nproto = \"icmp\"\n";

#[test]
fn audit_reports_drift_and_nothing_else() {
    let mesh = Mesh::up(&MeshSpec::new(&["alice", "bob"])).expect("mesh");
    let gw = &mesh.gateway;
    let dir = std::env::temp_dir().join(format!("wgbpf-audit-{}", mesh.run_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = Cleanup(gw, dir.clone());
    // The gateway's mesh file, now also managing WireGuard.
    let key = mesh.private_key_file(gw);
    let text = gateway_mesh_file(&mesh, POLICY).replacen(
        "[interface]\n",
        &format!(
            "[interface]\nprivate_key_file = \"{}\"\nlisten_port = 51820\n",
            key.display()
        ),
        1,
    );
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
