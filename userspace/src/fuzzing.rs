//! The bodies of the fuzz targets (fuzz/fuzz_targets/), here (behind the
//! `fuzzing` feature, out of the shipped library) so that the
//! regression replay (userspace/tests/import_fuzz_regressions.rs) runs
//! exactly what the fuzzers run. Each takes any bytes; errors are fine, a
//! panic is a bug.

use crate::{import, policy::check::run_tests, source};

/// Mesh-file names under a directory that does not exist, so relative
/// `[policy] tailscale = / netbird =` includes read nothing.
const MESH_NAME: &str = "/nonexistent/wgbpf-fuzz/mesh.toml";

/// A small mesh for the imported policies to resolve against.
const MESH: &str = r#"
[interface]
name = "wg0"
addresses = ["100.64.0.1/24", "fd7a::1/64"]

[[peer]]
name = "amy"
user = "amy@example.com"
groups = ["eng"]
allowed_ips = ["100.64.0.10/32", "fd7a::10/128"]

[[peer]]
name = "db"
tags = ["db"]
allowed_ips = ["100.64.0.20/32"]

[policy.hosts]
office = "192.0.2.0/24"
"#;

/// `wgbpf::mesh::parse`, then the tests of a mesh that parses.
pub fn mesh(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = source::parse(MESH_NAME, text) {
        let _ = run_tests(&m.policy, &m.tests);
    }
}

/// HuJSON, Tailscale and Netbird translation, printing and application.
pub fn tailscale(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(json) = import::hujson::normalize(text) {
        assert_eq!(json.len(), text.len(), "normalize must keep the layout");
    }
    for translated in [
        import::tailscale::translate("fuzz.hujson", text),
        import::netbird::translate("fuzz.json", text),
    ]
    .into_iter()
    .flatten()
    {
        let _ = import::to_toml(&translated, None);
        let mut m = source::parse("mesh.toml", MESH).expect("the fuzz mesh parses");
        if import::apply(&translated, &mut m).is_ok() {
            let _ = import::to_toml(&translated, Some(&m.directory));
            let _ = run_tests(&m.policy, &m.tests);
        }
    }
}

/// wg-quick files (separated by NUL bytes): parsed, turned into a mesh
/// file, which must parse and must hold no private or preshared key.
pub fn wgquick(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut files = Vec::new();
    for (i, part) in text.split('\0').enumerate().take(8) {
        match import::wgquick::parse(&format!("wg{i}.conf"), part) {
            Ok(f) => files.push(f),
            Err(_) => return,
        }
    }
    let Ok(out) = import::wgquick::to_mesh(&files, None) else {
        return;
    };
    if let Err(e) = source::parse("imported.toml", &out.toml) {
        panic!(
            "the mesh file written from wg-quick does not parse: {e}\n{}",
            out.toml
        );
    }
    let settings: Vec<(String, &str)> = text
        .lines()
        .filter_map(|l| l.split('#').next()?.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim()))
        .collect();
    for (k, v) in &settings {
        let public = settings.iter().any(|(k2, v2)| k2 == "publickey" && v2 == v);
        // Only values the parser took as keys: 44 characters (a shorter
        // value is an error, or text of another part).
        if (k == "privatekey" || k == "presharedkey") && v.len() == 44 && !public {
            assert!(
                !out.toml.contains(v),
                "a secret key was copied into the mesh file"
            );
        }
    }
}
