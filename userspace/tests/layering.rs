//! The layering rules of docs/architecture.md, checked on the sources: a
//! module may only name (`crate::x`) the modules below it. Comment lines
//! are skipped (doc links may point anywhere).

use std::{collections::BTreeSet, path::Path};

/// The top-level modules each module may name besides itself.
const ALLOWED: &[(&str, &[&str])] = &[
    // The bottom: one netlink helper, interface names.
    ("netlink", &[]),
    ("ifname", &[]),
    ("utc", &[]),
    // The WireGuard control library knows nothing of the application.
    ("wg", &["ifname", "netlink"]),
    // The core: the policy and the data plane, proven against each other.
    ("policy", &[]),
    ("dataplane", &["policy", "netlink"]),
    // The mesh file and the importers, below the plan.
    ("mesh", &["policy", "wg", "ifname", "utc"]),
    ("import", &["mesh", "policy", "wg", "ifname"]),
    ("source", &["mesh", "import"]),
    // The fleet's store: the parts of a gateway's mesh, from etcd.
    ("fleet", &["mesh"]),
    // The application: a plan, applied; the daemon around it.
    ("plan", &["source", "mesh", "policy", "dataplane", "wg"]),
    ("enforce", &["plan", "dataplane", "wg"]),
    // The host's tuning against the mesh file.
    ("doctor", &["mesh", "policy", "dataplane", "source", "wg"]),
    // Peer-side configs written from the mesh file.
    ("export", &["mesh", "policy", "wg", "source"]),
    (
        "metrics",
        &["daemon", "dataplane", "policy", "wg", "mesh", "source"],
    ),
    (
        "daemon",
        &[
            "plan",
            "enforce",
            "dataplane",
            "metrics",
            "mesh",
            "wg",
            "utc",
            "fleet",
        ],
    ),
];

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The `crate::NAME` modules a file names outside comments.
fn named(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let code = code.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
            rest = after;
        }
    }
    out
}

#[test]
fn modules_name_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut broken = Vec::new();
    for (module, allowed) in ALLOWED {
        let mut files = Vec::new();
        let dir = src.join(module);
        if dir.is_dir() {
            sources(&dir, &mut files);
        }
        let single = src.join(format!("{module}.rs"));
        if single.is_file() {
            files.push(single);
        }
        assert!(!files.is_empty(), "no sources for module {module}");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for n in named(&text) {
                if n != *module && !allowed.contains(&n.as_str()) {
                    broken.push(format!(
                        "{} names crate::{n}, which {module} may not",
                        f.strip_prefix(&src).unwrap().display()
                    ));
                }
            }
            // `super::super` out of a module's top would dodge the check.
            if f.parent() == Some(dir.as_path()) && f.file_name().unwrap() == "mod.rs" {
                assert!(
                    !text.lines().any(|l| {
                        let l = l.trim_start();
                        // `use super::*;` is a test module's.
                        !l.starts_with("//") && l.contains("super::") && l != "use super::*;"
                    }),
                    "{} reaches above its module with super::",
                    f.display()
                );
            }
        }
    }
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}

#[test]
fn the_checker_sees_a_violation() {
    let n = named("use crate::mesh::Mesh;\n// crate::daemon in a comment\nlet x = crate::plan::f(); // crate::enforce\n");
    assert_eq!(
        n.into_iter().collect::<Vec<_>>(),
        ["mesh".to_string(), "plan".to_string()]
    );
}
