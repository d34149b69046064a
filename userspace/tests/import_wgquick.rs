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
