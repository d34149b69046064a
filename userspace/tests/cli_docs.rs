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

const SUBCOMMANDS: [&str; 15] = [
    "load",
    "unload",
    "counters",
    "show",
    "audit",
    "policy",
    "import",
    "run",
    "reload",
    "keys",
    "genkey",
    "pubkey",
    "genpsk",
    "completions",
    "manpage",
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

/// The commands below `path` (as `wgbpf PATH --help` lists them), and
/// theirs, depth first: every command an operator can type.
fn commands(path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    let help = wgbpf(&args);
    let Some(list) = help.split("\nCommands:\n").nth(1) else {
        return;
    };
    // Names at two spaces; wrapped descriptions are indented further.
    for line in list
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
    {
        let name = line.split_whitespace().next().unwrap().to_string();
        if name == "help" {
            continue;
        }
        path.push(name);
        out.push(path.clone());
        commands(path, out);
        path.pop();
    }
}

/// The long flags a command's `--help` shows.
fn flags(path: &[String]) -> Vec<String> {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    let help = wgbpf(&args);
    help.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l
                .strip_prefix('-')
                .filter(|r| !r.starts_with('-'))
                .map_or(l, |r| {
                    // "-c, --config <CONFIG>"
                    r.split_once(", ").map_or(r, |(_, rest)| rest)
                });
            l.strip_prefix("--")
                .map(|f| f.split([' ', '=', '<']).next().unwrap())
                .map(|f| format!("--{f}"))
        })
        .collect()
}

#[test]
fn manpage_dir_writes_a_page_per_command_with_its_flags_exit_status_and_files() {
    let dir = std::env::temp_dir().join(format!("wgbpf-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_wgbpf"))
        .args(["manpage", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "--dir writes files, prints no page");
    let mut all = vec![vec![]];
    commands(&mut Vec::new(), &mut all);
    // Nested commands too: policy check, import wg-quick, keys rotate.
    assert!(all.len() >= 20, "{all:?}");
    assert!(all.contains(&vec!["import".to_string(), "wg-quick".to_string()]));
    let mut expected: Vec<String> = all
        .iter()
        .map(|p| {
            let mut name = vec!["wgbpf".to_string()];
            name.extend(p.iter().cloned());
            format!("{}.8", name.join("-"))
        })
        .collect();
    expected.sort();
    let mut written: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, expected, "one page per command, no other file");
    let man = Command::new("man")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    for path in &all {
        let file = dir.join(
            &expected[expected
                .iter()
                .position(|e| {
                    let mut name = vec!["wgbpf".to_string()];
                    name.extend(path.iter().cloned());
                    *e == format!("{}.8", name.join("-"))
                })
                .unwrap()],
        );
        let roff = std::fs::read_to_string(&file).unwrap();
        let page = file.file_stem().unwrap().to_string_lossy().into_owned();
        assert!(roff.contains(&format!(".TH {page} 8")), "{page}: {roff}");
        assert!(roff.contains(".SH \"EXIT STATUS\""), "{page}");
        assert!(roff.contains(".SH \"FILES\""), "{page}");
        // Every flag the command's --help shows is on its page.
        for flag in flags(path) {
            let escaped = flag.replace('-', "\\-");
            assert!(roff.contains(&escaped), "{page} lacks {flag}");
        }
        if man {
            // man-db renders it, and groff has nothing to warn about.
            let out = Command::new("man")
                .args(["--warnings", "-l"])
                .arg(&file)
                .env("MANWIDTH", "200")
                .env("MANPAGER", "cat")
                .output()
                .unwrap();
            assert!(out.status.success(), "{page}");
            let text = String::from_utf8_lossy(&out.stdout);
            let warnings = String::from_utf8_lossy(&out.stderr);
            assert!(warnings.trim().is_empty(), "{page}: {warnings}");
            for heading in ["NAME", "SYNOPSIS", "EXIT STATUS", "FILES"] {
                assert!(
                    text.contains(&format!("\n{heading}\n")),
                    "{page} lacks {heading}:\n{text}"
                );
            }
            // A synopsis that wraps is justified: compare words.
            let synopsis = format!("wgbpf {}", path.join(" "));
            let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(words.contains(synopsis.trim_end()), "{page}: {text}");
        }
    }
    // The exit statuses and files each command really has.
    let page = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let audit = page("wgbpf-audit.8");
    assert!(
        audit.contains("\\fB2\\fR\nThe comparison failed"),
        "{audit}"
    );
    let run = page("wgbpf-run.8");
    for f in [
        "/run/wgbpf/IFACE.sock",
        "/run/wgbpf/IFACE.lock",
        "/var/lib/wgbpf/IFACE.version",
        "/sys/fs/bpf/wgbpf/IFACE/",
        "/etc/wgbpf/IFACE.toml",
    ] {
        assert!(run.contains(&f.replace('-', "\\-")), "run lacks {f}");
    }
    let reload = page("wgbpf-reload.8");
    assert!(
        reload.contains("/run/wgbpf/IFACE.sock") && reload.contains("refused"),
        "{reload}"
    );
    let genkey = page("wgbpf-genkey.8");
    assert!(genkey.contains("0600"), "{genkey}");
    std::fs::remove_dir_all(&dir).unwrap();
}
