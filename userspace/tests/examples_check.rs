//! Every file in examples/ is checked the way an operator would use it, so
//! none rots: mesh files pass `wgbpf policy check`, Tailscale files are
//! included by a mesh file and translate with `wgbpf import tailscale`, and
//! the wg-quick files import into a mesh file that passes `policy check`. A
//! new kind of file fails here until it is given a check.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

fn examples() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"))
}

fn wgbpf(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wgbpf"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file under `dir`, recursively.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn policy_check(file: &Path) {
    let f = file.to_str().unwrap();
    let (code, out, err) = wgbpf(&["policy", "check", f]);
    assert_eq!(code, Some(0), "wgbpf policy check {f}:\n{out}{err}");
    assert!(out.trim_end().ends_with(", 0 failed"), "{f}: {out}");
}

#[test]
fn every_example_passes_the_check_an_operator_would_run() {
    let root = examples();
    let mut all = Vec::new();
    files(&root, &mut all);
    all.sort();
    let mut checked = BTreeSet::new();
    let meshes: Vec<&PathBuf> = all
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    for f in &meshes {
        policy_check(f);
        checked.insert((*f).clone());
    }
    for f in all
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "hujson"))
    {
        let name = f.file_name().unwrap().to_str().unwrap();
        let (code, out, err) = wgbpf(&["import", "tailscale", f.to_str().unwrap()]);
        assert_eq!(code, Some(0), "wgbpf import tailscale {name}: {err}");
        assert!(out.contains("[[policy.rule]]"), "{name}: {out}");
        // And a mesh file uses it as it is (so policy check above ran its
        // rules and tests).
        let included = format!("tailscale = \"{name}\"");
        assert!(
            meshes
                .iter()
                .any(|m| std::fs::read_to_string(m).unwrap().contains(&included)),
            "no example mesh file includes {name}"
        );
        checked.insert(f.clone());
    }
    // wg-quick: the gateway's file first, the peers' own after it.
    let wgq = root.join("wg-quick");
    let gateway = wgq.join("wg0.conf");
    let mut confs: Vec<PathBuf> = all
        .iter()
        .filter(|p| p.starts_with(&wgq) && p.extension().is_some_and(|e| e == "conf"))
        .cloned()
        .collect();
    confs.retain(|p| *p != gateway);
    let dir = std::env::temp_dir().join(format!("wgbpf-examples-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mesh = dir.join("wg0.toml");
    let mut args = vec!["import", "wg-quick", gateway.to_str().unwrap()];
    args.extend(confs.iter().map(|p| p.to_str().unwrap()));
    args.extend(["-o", mesh.to_str().unwrap()]);
    let (code, _, err) = wgbpf(&args);
    assert_eq!(code, Some(0), "{args:?}: {err}");
    policy_check(&mesh);
    std::fs::remove_dir_all(&dir).unwrap();
    checked.insert(gateway);
    checked.extend(confs);
    let unchecked: Vec<&PathBuf> = all.iter().filter(|p| !checked.contains(*p)).collect();
    assert!(
        unchecked.is_empty(),
        "examples without a check here: {unchecked:?}"
    );
    assert!(checked.len() >= 9, "{checked:?}");
}

/// A policy fragment (a [policy] without [interface]) is not a mesh file:
/// `policy check` says so, naming the file.
#[test]
fn a_fragment_is_refused_with_a_clear_message() {
    let dir = std::env::temp_dir().join(format!("wgbpf-fragment-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("fragment.toml");
    let demo = std::fs::read_to_string(examples().join("demo-policy.toml")).unwrap();
    std::fs::write(&f, &demo[demo.find("\n[policy]\n").unwrap()..]).unwrap();
    let (code, out, err) = wgbpf(&["policy", "check", f.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, Some(1), "{out}");
    assert!(err.contains("fragment.toml"), "{err}");
    assert!(err.contains("[interface]"), "{err}");
}
