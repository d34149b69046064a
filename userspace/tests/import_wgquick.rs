//! wg-quick files to a mesh file: the examples round-trip (peers, keys,
//! AllowedIPs as in the .conf), secrets never reach the output, and the
//! output parses.

use std::{path::PathBuf, process::Command};

use wgbpf::{import::wgquick, source};

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn read(name: &str) -> String {
    std::fs::read_to_string(root().join("examples/wg-quick").join(name)).unwrap()
}

/// Every `Key = value` of a wg-quick file, lower-cased keys.
fn settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split('#').next()?.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

fn import(names: &[&str]) -> wgquick::Output {
    let files: Vec<_> = names
        .iter()
        .map(|n| wgquick::parse(n, &read(n)).unwrap())
        .collect();
    wgquick::to_mesh(&files, None).unwrap()
}

#[test]
fn the_gateway_round_trips() {
    let out = import(&["wg0.conf"]);
    let m = source::parse("wg0.toml", &out.toml).unwrap_or_else(|e| panic!("{e}\n{}", out.toml));
    assert_eq!(m.interface, "wg0");
    assert_eq!(m.wg.listen_port, Some(51820));
    assert_eq!(m.wg.mtu, Some(1420));
    assert_eq!(m.wg.fwmark, Some(0xca6c));
    assert_eq!(m.wg.private_key_file, None);
    let addrs: Vec<String> = m.wg.addresses.iter().map(|a| a.to_string()).collect();
    assert_eq!(addrs, ["10.44.0.1/24", "fd44::1/64"]);
    // Peers, in order, with the keys and AllowedIPs of the .conf.
    let conf = read("wg0.conf");
    let s = settings(&conf);
    let keys: Vec<&str> = s
        .iter()
        .filter(|(k, _)| k == "publickey")
        .map(|(_, v)| v.as_str())
        .collect();
    let allowed: Vec<Vec<String>> = s
        .iter()
        .filter(|(k, _)| k == "allowedips")
        .map(|(_, v)| v.split(',').map(|a| a.trim().to_string()).collect())
        .collect();
    assert_eq!(m.wg.peers.len(), 3);
    for (i, p) in m.wg.peers.iter().enumerate() {
        assert_eq!(
            p.public_key.as_ref().map(|k| k.to_base64()).as_deref(),
            Some(keys[i])
        );
        let ips: Vec<String> = p.allowed_ips.iter().map(|a| a.to_string()).collect();
        assert_eq!(ips, allowed[i]);
    }
    let names: Vec<&str> = m.wg.peers.iter().map(|p| p.name.as_str()).collect();
    // `# alice` right before [Peer]; no name; `# Name = office-router` inside.
    assert_eq!(names, ["alice", "peer-2", "office-router"]);
    assert_eq!(m.wg.peers[0].persistent_keepalive, Some(25));
    assert_eq!(
        m.wg.peers[2].endpoint.as_ref().map(|e| e.as_str()),
        Some("office.example.net:51820")
    );
    // Default deny, said at the top, and an example rule in a comment.
    assert!(m.policy.rules.is_empty());
    assert!(out.toml.starts_with("# Mesh file made by"));
    assert!(out.toml.contains("DEFAULT DENY"));
    assert!(out.toml.contains("# [[policy.rule]]"));
    // Hooks are reported, not translated.
    assert!(out
        .toml
        .contains("#   wg0.conf:11: PostUp = iptables -A FORWARD"));
    assert!(out
        .warnings
        .iter()
        .any(|w| w.contains("PrivateKey was not copied")));
}

#[test]
fn private_and_preshared_keys_never_reach_the_output() {
    let out = import(&["wg0.conf", "bob.conf"]);
    for name in ["wg0.conf", "bob.conf"] {
        for (k, v) in settings(&read(name)) {
            if k == "privatekey" || k == "presharedkey" {
                assert!(!out.toml.contains(&v), "{name}: {k} leaked");
                for w in &out.warnings {
                    assert!(!w.contains(&v), "{name}: {k} leaked in a warning");
                }
            }
        }
    }
    assert!(out
        .toml
        .contains("# private_key_file = \"/etc/wireguard/wg0.key\""));
    assert!(out
        .toml
        .contains("# preshared_key_file = \"/etc/wireguard/wg0-alice.psk\""));
    // A hook holding a key is reported with the key hidden.
    let conf = format!(
        "[Interface]\nAddress = 10.0.0.1/24\nPostUp = wg set %i private-key <(echo {})\n",
        "kFy/CS+ylBmo79MM+9hHG4HXQkv1iEs3UCU76rJkZmc="
    );
    let f = wgquick::parse("x.conf", &conf).unwrap();
    let out = wgquick::to_mesh(&[f], None).unwrap();
    assert!(!out.toml.contains("kFy/CS+ylBmo79MM"), "{}", out.toml);
    assert!(out.toml.contains("<key not copied>"));
}

#[test]
fn a_peers_own_file_names_it() {
    let out = import(&["wg0.conf", "bob.conf"]);
    let m = source::parse("wg0.toml", &out.toml).unwrap();
    let bob = &m.wg.peers[1];
    // bob.conf's PrivateKey derives the second peer's PublicKey.
    assert_eq!(bob.name, "bob");
    assert_eq!(bob.allowed_ips[0].to_string(), "10.44.0.3/32");
    // bob.conf's DNS line is reported.
    assert!(out.toml.contains("bob.conf:5: DNS = 10.44.0.1"));
    // Matched by address when there is no private key in it.
    let by_addr = "[Interface]\nAddress = 10.44.0.4/32\n";
    let files = vec![
        wgquick::parse("wg0.conf", &read("wg0.conf")).unwrap(),
        wgquick::parse("router.conf", by_addr).unwrap(),
    ];
    let out = wgquick::to_mesh(&files, Some("wg-test")).unwrap();
    let m = source::parse("t.toml", &out.toml).unwrap();
    assert_eq!(m.interface, "wg-test");
    // A name from a comment wins over the file's name.
    assert_eq!(m.wg.peers[2].name, "office-router");
    // A file that matches nothing becomes a new peer.
    let files = vec![
        wgquick::parse("wg0.conf", &read("wg0.conf")).unwrap(),
        wgquick::parse("carol.conf", "[Interface]\nAddress = 10.44.0.9/32\n").unwrap(),
    ];
    let out = wgquick::to_mesh(&files, None).unwrap();
    let m = source::parse("t.toml", &out.toml).unwrap();
    assert_eq!(m.wg.peers[3].name, "carol");
    assert_eq!(m.wg.peers[3].allowed_ips[0].to_string(), "10.44.0.9/32");
    assert!(out
        .warnings
        .iter()
        .any(|w| w.contains("added as a new peer")));
}

#[test]
fn bad_files_are_named_with_their_line() {
    for (text, line, what) in [
        ("[Interface]\nAddress = 10.0.0.300/24\n", 2, "Address"),
        ("[Interface]\n[Peer]\nPublicKey = abc\n", 3, "PublicKey"),
        (
            "[Interface]\n[Peer]\nAllowedIPs = 10.0.0.2/33\n",
            3,
            "AllowedIPs",
        ),
        ("[Interface]\nListenPort = 70000\n", 2, "ListenPort"),
        ("[Interface]\nBogus = 1\n", 2, "unknown key"),
        ("Address = 10.0.0.1/24\n", 1, "outside"),
        ("[Interface]\n[Peer]\nEndpoint = nope\n", 3, "Endpoint"),
        ("[Wat]\n", 1, "expected [Interface]"),
        ("[Interface]\nPrivateKey = 5v0Zmu\n", 2, "PrivateKey"),
    ] {
        let e = wgquick::parse("bad.conf", text).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("bad.conf", line), "{e}");
        assert!(e.message.contains(what), "{what}: {e}");
    }
    // A short PrivateKey is never echoed in the error.
    let e = wgquick::parse("bad.conf", "[Interface]\nPrivateKey = c2VjcmV0c2VjcmV0\n").unwrap_err();
    assert!(!e.to_string().contains("c2VjcmV0"), "{e}");
}

#[test]
fn the_command_writes_a_file_and_refuses_to_overwrite() {
    let dir = std::env::temp_dir().join(format!("wgbpf-wgq-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out_path = dir.join("mesh.toml");
    let _ = std::fs::remove_file(&out_path);
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_wgbpf"))
            .args([
                "import",
                "wg-quick",
                "examples/wg-quick/wg0.conf",
                "examples/wg-quick/bob.conf",
                "-o",
            ])
            .arg(&out_path)
            .current_dir(root())
            .output()
            .unwrap()
    };
    let o = run();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("0600"), "{stderr}");
    let written = std::fs::read_to_string(&out_path).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_wgbpf"))
        .args(["policy", "check"])
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let o = run();
    assert!(!o.status.success(), "overwrote {}", out_path.display());
    assert_eq!(std::fs::read_to_string(&out_path).unwrap(), written);
    let help = Command::new(env!("CARGO_BIN_EXE_wgbpf"))
        .args(["import", "wg-quick", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("never copied"), "{help}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_peer_whose_allowed_ips_hold_the_gateway_is_refused_where_it_is() {
    let conf = "[Interface]\nAddress = 10.0.0.1/24\n\n[Peer]\n# Name = wide\n\
                PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\nAllowedIPs = 10.0.0.0/22\n";
    let f = wgquick::parse("gw.conf", conf).unwrap();
    let e = wgquick::to_mesh(&[f], Some("wg0")).unwrap_err();
    assert!(
        e.contains("gw.conf")
            && e.contains("line 4")
            && e.contains("10.0.0.0/22")
            && e.contains("10.0.0.1")
            && e.contains("`wide`"),
        "{e}"
    );
}

/// Runs `wgbpf ARGS` with `stdin` written to a real pipe: (exit code,
/// stdout, stderr).
fn wgbpf_with_stdin(args: &[&str], stdin: &str) -> (Option<i32>, String, String) {
    use std::{io::Write, process::Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_wgbpf"))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let text = stdin.to_string();
    // Written from another thread: a large input must not deadlock against
    // the child's own output.
    let writer = std::thread::spawn(move || pipe.write_all(text.as_bytes()));
    let out = child.wait_with_output().unwrap();
    // A command that refuses its arguments exits without reading: the
    // pipe is then closed under the writer, which is no failure here.
    match writer.join().unwrap() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        r => r.unwrap(),
    }
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// wg0.conf with `# friendly_name = ` in its [Peer] sections, as an
/// operator of the Prometheus WireGuard exporter has it.
fn with_friendly_names() -> String {
    read("wg0.conf")
        .replacen(
            "[Peer]\nPublicKey = 5v0Z",
            "[Peer]\n# friendly_name = Alice's laptop\nPublicKey = 5v0Z",
            1,
        )
        .replacen(
            "[Peer]\nPublicKey = NFB6",
            "[Peer]\n#friendly_name=build.box\nPublicKey = NFB6",
            1,
        )
}

fn peer_names(toml: &str) -> Vec<String> {
    let m = source::parse("stdin.toml", toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    m.wg.peers.iter().map(|p| p.name.clone()).collect()
}

#[test]
fn standard_input_and_pipes_are_read_and_friendly_names_name_peers() {
    let conf = with_friendly_names();
    assert_ne!(conf, read("wg0.conf"));
    // `-`: the configuration comes down a pipe.
    let (code, out, err) = wgbpf_with_stdin(&["import", "wg-quick", "-"], &conf);
    assert_eq!(code, Some(0), "{err}");
    // friendly_name wins over `# alice` before [Peer]; the third peer keeps
    // its `# Name =`.
    assert_eq!(
        peer_names(&out),
        ["Alice's laptop", "build.box", "office-router"]
    );
    // Standard input has no file name to take the interface's from.
    assert!(out.contains("name = \"wg0\""), "{out}");
    // Warnings name standard input and the line.
    let psk_line = conf
        .lines()
        .position(|l| l.starts_with("PresharedKey"))
        .unwrap()
        + 1;
    assert!(err.contains(&format!("<stdin>:{psk_line}:")), "{err}");
    // A peer's own file next to standard input still completes it, and the
    // friendly name still wins over the file's name.
    let (code, out, err) = wgbpf_with_stdin(
        &["import", "wg-quick", "-", "examples/wg-quick/bob.conf"],
        &conf,
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(peer_names(&out)[1], "build.box");
    // A pipe named as a file (bash's process substitution: /dev/fd/N).
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{} import wg-quick <(cat examples/wg-quick/wg0.conf)",
            env!("CARGO_BIN_EXE_wgbpf")
        ))
        .current_dir(root())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(peer_names(&out), ["alice", "peer-2", "office-router"]);
    assert!(out.contains("name = \"wg0\""), "{out}");
    // Standard input twice is refused.
    let (code, _, err) = wgbpf_with_stdin(&["import", "wg-quick", "-", "-"], &conf);
    assert_eq!(code, Some(1));
    assert!(err.contains("once"), "{err}");
    // The Tailscale import reads standard input too.
    let acl = std::fs::read_to_string(root().join("examples/tailscale-acl.hujson")).unwrap();
    let (code, out, err) = wgbpf_with_stdin(&["import", "tailscale", "-"], &acl);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("<stdin>:"), "rule names name the input: {out}");
}

#[test]
fn a_bad_or_repeated_friendly_name_is_refused_with_its_line() {
    let conf = with_friendly_names();
    let line_of =
        |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    for (bad, what) in [
        ("tag:web", "tag"),
        ("10.44.0.9", "address"),
        ("gateway", "reserved"),
        ("*", "reserved"),
        (&"x".repeat(64) as &str, "longer than 63"),
    ] {
        let text = conf.replace(
            "friendly_name = Alice's laptop",
            &format!("friendly_name = {bad}"),
        );
        let (code, out, err) = wgbpf_with_stdin(&["import", "wg-quick", "-"], &text);
        assert_eq!(code, Some(1), "{bad}: {out}");
        let line = line_of(&text, "friendly_name = ");
        assert!(err.contains(&format!("<stdin>:{line}:")), "{bad}: {err}");
        assert!(err.contains(what), "{bad}: {err}");
        assert!(out.is_empty(), "nothing written on error: {out}");
    }
    // Two peers with one friendly name: both lines are named.
    let text = conf.replace("friendly_name=build.box", "friendly_name = Alice's laptop");
    let (code, _, err) = wgbpf_with_stdin(&["import", "wg-quick", "-"], &text);
    assert_eq!(code, Some(1));
    let first = line_of(&text, "friendly_name = Alice");
    let second = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("friendly_name = Alice"))
        .nth(1)
        .unwrap()
        .0
        + 1;
    assert!(
        err.contains(&format!("<stdin>:{second}:")) && err.contains(&format!("line {first}")),
        "{err}"
    );
    // Two in one [Peer].
    let text = conf.replace(
        "#friendly_name=build.box",
        "#friendly_name=build.box\n# friendly_name = other",
    );
    let (code, _, err) = wgbpf_with_stdin(&["import", "wg-quick", "-"], &text);
    assert_eq!(code, Some(1));
    assert!(err.contains("second friendly_name"), "{err}");
    // Outside a [Peer].
    let text = conf.replace("[Interface]", "[Interface]\n# friendly_name = gw");
    let (code, _, err) = wgbpf_with_stdin(&["import", "wg-quick", "-"], &text);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("<stdin>:") && err.contains("outside a [Peer]"),
        "{err}"
    );
    // A name made up from a comment makes way for a friendly name: the
    // operator's name is kept as written.
    let text = conf
        .replace("# friendly_name = Alice's laptop\n", "")
        .replace("friendly_name=build.box", "friendly_name=alice");
    let (code, out, err) = wgbpf_with_stdin(&["import", "wg-quick", "-"], &text);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(peer_names(&out), ["alice-2", "alice", "office-router"]);
}
