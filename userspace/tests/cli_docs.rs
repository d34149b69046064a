//! Completions and the man page come from the clap definitions: every
//! subcommand is in them, and the bash script is valid bash.

use std::process::Command;

fn wgbpf(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wgbpf"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const SUBCOMMANDS: [&str; 8] = [
    "load",
    "unload",
    "counters",
    "show",
    "audit",
    "policy",
    "run",
    "completions",
];

#[test]
fn completions_cover_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let script = wgbpf(&["completions", shell]);
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    let dir = std::env::temp_dir().join(format!("wgbpf-completions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("wgbpf.bash");
    std::fs::write(&path, wgbpf(&["completions", "bash"])).unwrap();
    let ok = Command::new("bash")
        .arg("-n")
        .arg(&path)
        .status()
        .unwrap()
        .success();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(ok, "the bash completion script does not parse");
}

#[test]
fn man_page_has_a_section_per_subcommand() {
    let page = wgbpf(&["manpage"]);
    assert!(
        page.starts_with(".ie") || page.contains(".TH wgbpf 8"),
        "{}",
        &page[..200]
    );
    for sub in SUBCOMMANDS {
        assert!(
            page.contains(&format!(".TH wgbpf-{sub} 8")),
            "no page for {sub}"
        );
    }
}
