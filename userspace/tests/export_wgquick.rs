//! `wgbpf export wg-quick` with the real tools (root, wireguard-go mesh):
//! the exported file passes `wg-quick strip` and `wg setconf`, and brings
//! alice's tunnel back up after her device forgot the gateway; its
//! AllowedIPs are what the policy lets her reach; secrets never reach
//! stdout; the PNG QR code decodes to the same file.

mod common;

use std::{net::IpAddr, os::unix::fs::PermissionsExt, process::Command, time::Duration};

use common::{managed_mesh_file, wgbpf, TempDir};
use testbed::{ping, Testbed, TestbedSpec};

const POLICY: &str = r#"
[policy]

[[policy.rule]]
action = "accept"
from = ["alice"]
to = ["gateway"]
proto = "icmp"

[[policy.rule]]
action = "accept"
from = ["alice"]
to = ["bob"]
proto = "udp"
ports = [5000]
"#;

#[test]
fn an_exported_config_brings_the_peer_up_with_the_real_tools() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice", "bob", "carol"])).expect("mesh");
    let (gw, alice, bob) = (&mesh.gateway, mesh.host("alice"), mesh.host("bob"));
    let dir = TempDir::create(std::env::temp_dir().join(format!("wgbpf-export-{}", mesh.run_id())));
    let gw_key = gw.run(&["wg", "show", &gw.wg_if, "public-key"]).unwrap();
    let gw_key = gw_key.trim().to_string();
    // Where alice reaches the gateway: the gateway's public endpoint.
    let endpoint = alice
        .run(&["wg", "show", &alice.wg_if, "endpoints"])
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let cfg = dir.0.join("mesh.toml");
    let text = managed_mesh_file(&mesh, POLICY, &mesh.private_key_file(gw)).replacen(
        "[interface]\n",
        &format!(
            "[interface]\npublic_endpoint = \"{endpoint}\"\ndns = [\"{}\"]\n",
            gw.tunnel_v4
        ),
        1,
    );
    std::fs::write(&cfg, text).unwrap();
    let cfg = cfg.to_str().unwrap();
    let alice_key = mesh.private_key_file(alice);
    let alice_key_text = std::fs::read_to_string(&alice_key).unwrap();

    // Without the private key: a template on stdout, no secret in it.
    let (ok, template, err) = wgbpf(gw, &["export", "wg-quick", "-c", cfg, "--peer", "alice"]);
    assert!(ok, "{err}");
    assert!(template.contains("# PrivateKey = "), "{template}");
    assert!(!template.contains(alice_key_text.trim()));
    // With it: refused on stdout, written 0600 with -o.
    let key = alice_key.to_str().unwrap();
    let args = [
        "export",
        "wg-quick",
        "-c",
        cfg,
        "--peer",
        "alice",
        "--private-key-file",
        key,
    ];
    let (ok, out, err) = wgbpf(gw, &args);
    assert!(
        !ok && err.contains("not printed") && out.is_empty(),
        "{out}{err}"
    );
    let file = dir.0.join("alicewg.conf");
    let file_s = file.to_str().unwrap();
    let (ok, _, err) = wgbpf(gw, &[&args[..], &["-o", file_s]].concat());
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (ok, _, err) = wgbpf(gw, &[&args[..], &["-o", file_s]].concat());
    assert!(
        !ok && err.contains("--force"),
        "an existing file is kept: {err}"
    );
    let exported = std::fs::read_to_string(&file).unwrap();
    assert!(
        exported.contains(&format!("Endpoint = {endpoint}\n")),
        "{exported}"
    );
    assert!(
        exported.contains(&format!("DNS = {}\n", gw.tunnel_v4)),
        "{exported}"
    );
    // AllowedIPs: the gateway and bob (udp/5000), not carol.
    let want_ips = format!(
        "AllowedIPs = {}/32, {}/32, {}/128, {}/128\n",
        gw.tunnel_v4, bob.tunnel_v4, gw.tunnel_v6, bob.tunnel_v6
    );
    assert!(exported.contains(&want_ips), "{exported}");

    // wg-quick strip accepts it and leaves wg(8)'s part.
    let strip = Command::new("wg-quick")
        .args(["strip", file_s])
        .output()
        .unwrap();
    assert!(
        strip.status.success(),
        "wg-quick strip: {}",
        String::from_utf8_lossy(&strip.stderr)
    );
    let stripped = dir.0.join("alice-stripped.conf");
    std::fs::write(&stripped, &strip.stdout).unwrap();
    let s = String::from_utf8_lossy(&strip.stdout);
    assert!(
        !s.contains("Address") && !s.contains("DNS") && s.contains("PrivateKey"),
        "{s}"
    );

    // Alice's device forgets the gateway: her tunnel is down.
    let gw4 = IpAddr::V4(gw.tunnel_v4);
    alice
        .run(&["wg", "set", &alice.wg_if, "peer", &gw_key, "remove"])
        .unwrap();
    assert!(!ping(alice, gw4, Duration::from_secs(1)).unwrap());
    // wg setconf with the export brings it back.
    alice
        .run(&["wg", "setconf", &alice.wg_if, stripped.to_str().unwrap()])
        .unwrap();
    let mut up = false;
    for _ in 0..5 {
        if ping(alice, gw4, Duration::from_secs(2)).unwrap() {
            up = true;
            break;
        }
    }
    assert!(up, "alice's tunnel did not come up from the exported file");
    let dump = alice.run(&["wg", "show", &alice.wg_if, "dump"]).unwrap();
    let peer: Vec<&str> = dump.lines().nth(1).unwrap().split('\t').collect();
    assert_eq!(peer[0], gw_key);
    assert_eq!(peer[2], endpoint);
    let mut ips: Vec<&str> = peer[3].split(',').collect();
    ips.sort();
    let mut want: Vec<String> = vec![
        format!("{}/32", gw.tunnel_v4),
        format!("{}/32", bob.tunnel_v4),
        format!("{}/128", gw.tunnel_v6),
        format!("{}/128", bob.tunnel_v6),
    ];
    want.sort();
    assert_eq!(ips, want);
    assert_eq!(
        peer[7], "25",
        "no endpoint for alice in the file: keepalive"
    );

    // The PNG QR code holds exactly the file.
    let png_path = dir.0.join("alice.png");
    let (ok, _, err) = wgbpf(
        gw,
        &[&args[..], &["--png", png_path.to_str().unwrap()]].concat(),
    );
    assert!(ok, "{err}");
    let decoder = png::Decoder::new(std::fs::File::open(&png_path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let (w, h) = (info.width as usize, info.height as usize);
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * w + x]);
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1);
    let (_, content) = grids[0].decode().unwrap();
    assert_eq!(content, exported);
    // And on the terminal, as blocks.
    let (ok, qr, _) = wgbpf(gw, &[&args[..], &["--qr"]].concat());
    assert!(ok && qr.contains('█') && !qr.contains("PrivateKey"), "{qr}");

    // Errors name what is missing.
    let (ok, _, err) = wgbpf(gw, &["export", "wg-quick", "-c", cfg, "--peer", "dave"]);
    assert!(!ok && err.contains("no peer `dave`"), "{err}");
}
