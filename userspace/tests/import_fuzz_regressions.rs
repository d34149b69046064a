//! Replays every input under fuzz/regressions/<target>/ through the body of
//! that fuzz target (wgbpf::fuzzing): interesting inputs and every
//! crash the fuzzers found. Errors are fine; a panic fails the test.

use std::path::PathBuf;

type Target = fn(&[u8]);

#[test]
fn every_regression_input_replays_without_panic() {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/regressions"));
    let targets: [(&str, Target); 3] = [
        ("mesh_parse", wgbpf::fuzzing::mesh),
        ("tailscale_parse", wgbpf::fuzzing::tailscale),
        ("wgquick_parse", wgbpf::fuzzing::wgquick),
    ];
    let mut replayed = 0;
    for (name, run) in targets {
        let dir = root.join(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: no inputs", dir.display());
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let result = std::panic::catch_unwind(|| run(&data));
            assert!(result.is_ok(), "{name}: {} panics", f.display());
            replayed += 1;
        }
    }
    assert!(replayed >= 3);
}

/// The examples are inputs too.
#[test]
fn the_examples_replay() {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"));
    for f in [
        "tailscale-import.toml",
        "static-mesh.toml",
        "tailscale-style.toml",
        "tailscale-grants.toml",
    ] {
        wgbpf::fuzzing::mesh(&std::fs::read(root.join(f)).unwrap());
    }
    wgbpf::fuzzing::tailscale(&std::fs::read(root.join("tailscale-acl.hujson")).unwrap());
    wgbpf::fuzzing::tailscale(&std::fs::read(root.join("tailscale-grants.hujson")).unwrap());
    let mut both = std::fs::read(root.join("wg-quick/wg0.conf")).unwrap();
    both.push(0);
    both.extend(std::fs::read(root.join("wg-quick/bob.conf")).unwrap());
    wgbpf::fuzzing::wgquick(&both);
}
