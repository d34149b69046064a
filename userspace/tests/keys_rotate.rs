//! `wgbpf keys rotate` against a real wireguard-go mesh: alice gets a new
//! key pair; during the window the gateway accepts both keys, alice switches
//! to her new private key mid-window and her traffic flows on it, during
//! the window and after; the old key is gone afterwards; bob is never
//! disturbed (no failed ping, handshake and counters not reset). Needs root.

use std::{
    net::IpAddr,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use ipnet::IpNet;
use testbed::{gateway_mesh_file, ping, Host, Testbed, TestbedSpec};
use wgbpf::wg::{Backend, Key, UapiBackend};

mod common;
use common::{wgbpf, Pinger};

/// `wgbpf ARGS` inside `host`'s network namespace.
fn wgbpf_cmd_args(host: &Host, args: &[&str]) -> Command {
    let mut c = common::wgbpf_command(host);
    c.args(args);
    c
}

const PING: Duration = Duration::from_secs(3);
const WINDOW: u64 = 14;
const POLICY: &str = "[policy]\n\n[[policy.rule]]\naction = \"accept\"\nfrom = [\"*\"]\n\
                      to = [\"*\"]\nproto = \"icmp\"\n";

struct TempDir(PathBuf);
impl TempDir {
    fn new(mesh: &Testbed) -> TempDir {
        let p = std::env::temp_dir().join(format!("wgbpf-keysrotate-{}", mesh.run_id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::DirBuilder::new().mode(0o700).create(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_file(path: &Path, text: &str) {
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
        .unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Kills the rotation if the test fails half way.
struct Child(Option<std::process::Child>);
impl Drop for Child {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn ping_until(from: &Host, to: IpAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if ping(from, to, Duration::from_secs(1)).unwrap_or(false) {
            return true;
        }
    }
    false
}

#[test]
fn rotate_alice_while_bob_keeps_talking() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice", "bob"])).expect("mesh");
    let (gw, alice, bob) = (&mesh.gateway, mesh.host("alice"), mesh.host("bob"));
    let dir = TempDir::new(&mesh);
    let cfg = dir.0.join("mesh.toml");
    // Managed by wgbpf (private_key_file): `wgbpf load` would revert the
    // rotation until the mesh file has the new key.
    let text = gateway_mesh_file(&mesh, POLICY).replacen(
        "[interface]\n",
        &format!(
            "[interface]\nprivate_key_file = \"{}\"\n",
            mesh.private_key_file(gw).display()
        ),
        1,
    );
    std::fs::write(&cfg, text).unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    let b = UapiBackend::open(&gw.wg_if).expect("the gateway's UAPI socket");
    let old = Key::from_base64(&alice.public_key).unwrap();
    let bob_key = Key::from_base64(&bob.public_key).unwrap();
    let new_private = Key::from_bytes(rand::random()).clamped();
    let new = new_private.public_key();
    let gw4 = IpAddr::V4(gw.tunnel_v4);
    let gw6 = IpAddr::V6(gw.tunnel_v6);
    let alice_ips: Vec<IpNet> = vec![
        format!("{}/32", alice.tunnel_v4).parse().unwrap(),
        format!("{}/128", alice.tunnel_v6).parse().unwrap(),
    ];

    // Refusals change nothing: an unknown peer, bob's key as alice's new one.
    let start = b.get().unwrap();
    let (ok, _, err) = wgbpf(
        gw,
        &[
            "keys",
            "rotate",
            "-c",
            &cfg,
            "carol",
            "--new-public-key",
            &new.to_base64(),
        ],
    );
    assert!(!ok && err.contains("no peer `carol`"), "{err}");
    let (ok, _, err) = wgbpf(
        gw,
        &[
            "keys",
            "rotate",
            "-c",
            &cfg,
            "alice",
            "--new-public-key",
            &bob.public_key,
        ],
    );
    assert!(!ok && err.contains("AllowedIPs of its own"), "{err}");
    let (ok, _, err) = wgbpf(
        gw,
        &[
            "keys",
            "rotate",
            "-c",
            &cfg,
            "alice",
            "--new-public-key",
            "nope",
        ],
    );
    assert!(!ok && err.contains("new public key"), "{err}");
    let configs = |s: &wgbpf::wg::DeviceState| {
        s.peers
            .iter()
            .map(|p| (p.config.public_key.to_base64(), p.config.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(configs(&b.get().unwrap()), configs(&start));

    // Bob talks to the gateway the whole time.
    assert!(ping(bob, gw4, PING).unwrap());
    let bob0 = b.get().unwrap().peer(&bob_key).unwrap().clone();
    assert!(bob0.last_handshake.is_some() && bob0.rx_bytes > 0);
    let pinger = Pinger::start(bob, gw4, 400, Duration::from_millis(50));

    let new_pub_file = dir.0.join("alice.pub");
    write_file(&new_pub_file, &format!("{}\n", new.to_base64()));
    let t0 = Instant::now();
    let mut child = Child(Some(
        wgbpf_cmd_args(
            gw,
            &[
                "keys",
                "rotate",
                "-c",
                &cfg,
                "alice",
                "--new-public-key-file",
                new_pub_file.to_str().unwrap(),
                "--window",
                &WINDOW.to_string(),
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wgbpf keys rotate"),
    ));

    // The new key appears, without AllowedIPs; the old key keeps them and
    // alice's traffic on it flows.
    let deadline = Instant::now() + Duration::from_secs(4);
    let added = loop {
        let s = b.get().unwrap();
        if let Some(p) = s.peer(&new) {
            break p.clone();
        }
        assert!(Instant::now() < deadline, "the new key was not added");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(added.config.allowed_ips.is_empty(), "{:?}", added.config);
    assert!(
        ping(alice, gw4, PING).unwrap(),
        "the old key must still work"
    );
    let s = b.get().unwrap();
    assert_eq!(
        s.peer(&old).unwrap().config.allowed_set(),
        alice_ips.iter().copied().collect()
    );

    // A second later, still nothing on the new key: the old one keeps the
    // addresses and works.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        ping(alice, gw4, PING).unwrap(),
        "the old key must still work"
    );
    let s = b.get().unwrap();
    assert!(s.peer(&new).unwrap().last_handshake.is_none());
    assert!(s.peer(&new).unwrap().config.allowed_ips.is_empty());
    assert_eq!(s.peer(&old).unwrap().config.allowed_ips.len(), 2);

    // Alice switches to her new private key mid-window.
    let key_file = dir.0.join("alice-new.key");
    write_file(&key_file, &format!("{}\n", new_private.to_base64()));
    // Switching alice's private key must let her traffic flow at once.
    let set_key = |file: &Path| {
        alice
            .run(&[
                "wg",
                "set",
                &alice.wg_if,
                "private-key",
                file.to_str().unwrap(),
            ])
            .unwrap();
        assert!(
            ping_until(alice, gw4, Duration::from_secs(5)),
            "alice's traffic does not flow after switching keys"
        );
    };
    set_key(&key_file);
    assert!(ping_until(alice, gw6, Duration::from_secs(3)));
    assert!(
        ping_until(gw, IpAddr::V4(alice.tunnel_v4), Duration::from_secs(3)),
        "the gateway does not reach alice on her new key"
    );
    // Still within the window: both keys are peers, the new one has the
    // addresses.
    let s = b.get().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(WINDOW),
        "too slow to check mid-window"
    );
    let n = s.peer(&new).expect("new key");
    assert_eq!(n.config.allowed_set(), alice_ips.iter().copied().collect());
    assert!(n.last_handshake.is_some());
    let o = s
        .peer(&old)
        .expect("the old key stays until the window ends");
    assert!(o.config.allowed_ips.is_empty(), "{:?}", o.config);
    let alice_pub = Key::from_base64(
        alice
            .run(&["wg", "show", &alice.wg_if, "public-key"])
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(alice_pub, new);

    // Either key works during the window: alice goes back to her old key
    // (the addresses follow it back), then to the new one again.
    set_key(&mesh.private_key_file(alice));
    let s = b.get().unwrap();
    assert_eq!(
        s.peer(&old).unwrap().config.allowed_set(),
        alice_ips.iter().copied().collect()
    );
    assert!(s.peer(&new).unwrap().config.allowed_ips.is_empty());
    set_key(&key_file);
    let s = b.get().unwrap();
    assert_eq!(
        s.peer(&new).unwrap().config.allowed_set(),
        alice_ips.iter().copied().collect()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(WINDOW),
        "too slow to check mid-window"
    );

    // The window ends: the old key is removed, the new one stays.
    let deadline = Instant::now() + Duration::from_secs(WINDOW + 20);
    let status = loop {
        if let Some(st) = child.0.as_mut().unwrap().try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "keys rotate did not finish");
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.0.take().unwrap().wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    eprintln!("{stdout}");
    assert!(status.success(), "keys rotate failed: {stderr}\n{stdout}");
    assert!(t0.elapsed() >= Duration::from_secs(WINDOW));
    for want in [
        "added the new key",
        "handshake on the new key",
        "moved",
        "moved 10.77.0.2/32, fd77::2/128 back to the old key",
        "removed the old key",
        &format!("-public_key = \"{}\"", alice.public_key),
        &format!("+public_key = \"{}\"", new.to_base64()),
        "`wgbpf load`",
        "put the old key back",
    ] {
        assert!(stdout.contains(want), "no {want:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("WARNING"), "{stdout}");
    assert!(
        !stdout.contains(&new_private.to_base64()),
        "a private key was printed"
    );
    let s = b.get().unwrap();
    assert!(s.peer(&old).is_none(), "the old key is still there");
    let n = s.peer(&new).expect("new key");
    assert_eq!(n.config.allowed_set(), alice_ips.iter().copied().collect());
    assert!(ping(alice, gw4, PING).unwrap());
    assert!(ping(alice, gw6, PING).unwrap());

    // Bob was never disturbed.
    let (sent, failed) = pinger.finish();
    assert!(sent > 10, "{sent}");
    assert_eq!(failed, 0, "{failed} of bob's {sent} pings failed");
    let bob1 = s.peer(&bob_key).unwrap();
    assert_eq!(bob1.config, bob0.config);
    assert!(
        bob1.last_handshake >= bob0.last_handshake,
        "bob's handshake reset"
    );
    assert!(
        bob1.rx_bytes > bob0.rx_bytes && bob1.tx_bytes > bob0.tx_bytes,
        "bob's counters reset"
    );

    // JSON report, and a rotation whose peer never switches: the old key
    // is removed anyway, with a warning. (Alice's "new" key is now in
    // place; rotate her again to a key she does not have, then back.)
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace(&alice.public_key, &new.to_base64()),
    )
    .unwrap();
    let (_, unused) = {
        let k = Key::from_bytes(rand::random()).clamped();
        let p = k.public_key();
        (k, p)
    };
    let (ok, out, err) = wgbpf(
        gw,
        &[
            "keys",
            "rotate",
            "-c",
            &cfg,
            "alice",
            "--new-public-key",
            &unused.to_base64(),
            "--window",
            "1",
            "--json",
        ],
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["new_key_seen"], false, "{v}");
    assert_eq!(v["old_key_removed"], true, "{v}");
    assert_eq!(v["moves"], 0, "{v}");
    assert!(v["mesh_file_change"]["line"].as_u64().is_some(), "{v}");
    assert!(out.contains("WARNING"), "{out}");
    let s = b.get().unwrap();
    assert!(s.peer(&new).is_none());
    assert!(s.peer(&unused).is_some());
    assert!(s.peer(&bob_key).is_some());
    drop(dir);
    mesh.down().unwrap();
}

/// The daemon runs (drift repair every second): `wgbpf keys rotate` writes
/// the rotation into the mesh file and the daemon carries it out, instead
/// of putting the old key back within seconds as it did.
#[test]
fn the_running_daemon_carries_out_a_rotation_instead_of_undoing_it() {
    const WINDOW: u64 = 20;
    let mesh = Testbed::up(&TestbedSpec::new(&["alice", "bob"])).expect("mesh");
    let (gw, alice, bob) = (&mesh.gateway, mesh.host("alice"), mesh.host("bob"));
    let dir = TempDir::new(&mesh);
    let cfg = dir.0.join("mesh.toml");
    let text = format!(
        "# the operator's own note, kept by keys rotate\n{}",
        common::managed_mesh_file(&mesh, POLICY, &mesh.private_key_file(gw))
    );
    std::fs::write(&cfg, &text).unwrap();
    let cfg_s = cfg.to_str().unwrap().to_string();
    let unload = common::Unload(gw);
    let log = std::fs::File::create(dir.0.join("wgbpf.log")).unwrap();
    let mut daemon = Child(Some(
        common::wgbpf_daemon_command(gw)
            .args([
                "run",
                "-c",
                &cfg_s,
                "--no-metrics",
                "--repair-interval",
                "1",
            ])
            .args(["--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("wgbpf run"),
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !wgbpf(gw, &["reload", "-i", &gw.wg_if, "--status"]).0 {
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    let b = UapiBackend::open(&gw.wg_if).expect("the gateway's UAPI socket");
    let old = Key::from_base64(&alice.public_key).unwrap();
    let new_private = Key::from_bytes(rand::random()).clamped();
    let new = new_private.public_key();
    let gw4 = IpAddr::V4(gw.tunnel_v4);
    assert!(ping_until(alice, gw4, PING));

    // A rotation the daemon refuses (bob to alice's current key) leaves the
    // file as it was.
    let (ok, _, err) = wgbpf(
        gw,
        &[
            "keys",
            "rotate",
            "-c",
            &cfg_s,
            "bob",
            "--new-public-key",
            &alice.public_key,
        ],
    );
    assert!(!ok && err.contains("refused"), "{err}");
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), text);

    let t0 = Instant::now();
    let (ok, out, err) = wgbpf(
        gw,
        &[
            "keys",
            "rotate",
            "-c",
            &cfg_s,
            "alice",
            "--new-public-key",
            &new.to_base64(),
            "--window",
            &WINDOW.to_string(),
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("carried out by the running daemon"), "{out}");
    let file = std::fs::read_to_string(&cfg).unwrap();
    assert!(file.starts_with("# the operator's own note"), "{file}");
    assert!(
        file.contains(&format!("public_key = \"{}\"", new.to_base64()))
            && file.contains(&format!("previous_public_key = \"{}\"", alice.public_key))
            && file.contains("rotation_ends = "),
        "{file}"
    );
    assert!(!file.contains(&new_private.to_base64()));

    // Three drift passes later the new key is still there, without the
    // addresses; the old key keeps them and alice's traffic on it flows.
    std::thread::sleep(Duration::from_secs(3));
    let s = b.get().unwrap();
    let n = s.peer(&new).expect("the daemon removed the new key");
    assert!(n.config.allowed_ips.is_empty(), "{:?}", n.config);
    assert_eq!(s.peer(&old).unwrap().config.allowed_ips.len(), 2);
    assert!(ping_until(alice, gw4, PING), "the old key must still work");

    // Alice switches to her new key: within a drift pass her addresses
    // follow it.
    let key_file = dir.0.join("alice-new.key");
    write_file(&key_file, &format!("{}\n", new_private.to_base64()));
    alice
        .run(&[
            "wg",
            "set",
            &alice.wg_if,
            "private-key",
            key_file.to_str().unwrap(),
        ])
        .unwrap();
    assert!(
        ping_until(alice, gw4, Duration::from_secs(10)),
        "alice's traffic does not flow on her new key"
    );
    let s = b.get().unwrap();
    assert_eq!(s.peer(&new).unwrap().config.allowed_ips.len(), 2);
    assert!(s
        .peer(&old)
        .expect("the old key stays")
        .config
        .allowed_ips
        .is_empty());
    assert!(
        t0.elapsed() < Duration::from_secs(WINDOW),
        "too slow to check mid-window"
    );

    // The window ends: the daemon removes the old key; the file and the
    // device agree; alice and bob still talk to the gateway.
    let deadline = t0 + Duration::from_secs(WINDOW + 15);
    while b.get().unwrap().peer(&old).is_some() {
        assert!(Instant::now() < deadline, "the old key was never removed");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(t0.elapsed() >= Duration::from_secs(WINDOW - 1));
    let (ok, out, err) = wgbpf(gw, &["audit", "-c", &cfg_s]);
    assert!(ok, "audit after the window: {out}{err}");
    assert!(ping_until(alice, gw4, PING));
    assert!(ping_until(bob, gw4, PING));
    if let Some(mut c) = daemon.0.take() {
        common::stop(&mut c, Duration::from_secs(20));
    }
    drop(unload);
    drop(dir);
    mesh.down().unwrap();
}
