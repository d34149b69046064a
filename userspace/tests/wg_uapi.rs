//! WireGuard control over the userspace API, against real wireguard-go
//! devices (testbed meshes) and the real `wg` tool: what wgbpf reads is what
//! `wg show dump` reads, what wgbpf writes `wg` reads back and the other way
//! round; the change set leaves unchanged peers' sessions alone; `wgbpf load`
//! configures the device from the mesh file. Needs root.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, UNIX_EPOCH},
};

mod common;

use common::{managed_mesh_file, wgbpf, Pinger, TempDir, Unload};
use ipnet::IpNet;
use serde_json::Value;
use testbed::{gateway_mesh_file, ping, Host, Testbed, TestbedSpec};
use wgbpf::{
    source,
    wg::{self, Backend, DeviceConfig, DeviceState, Key, PeerConfig, UapiBackend},
};

const PING: Duration = Duration::from_secs(3);

/// A fresh scratch directory (mode 0700), removed even when the test fails.
fn temp_dir(tag: &str, mesh: &Testbed) -> TempDir {
    let p = std::env::temp_dir().join(format!("wgbpf-wgtest-{tag}-{}", mesh.run_id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::DirBuilder::new().mode(0o700).create(&p).unwrap();
    TempDir(p)
}
use std::os::unix::fs::DirBuilderExt;

/// Writes `text` to `path` with `mode` exactly.
fn write_file(path: &Path, text: &str, mode: u32) {
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
        .unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A fresh key (private, public), from the OS's random numbers, clamped
/// as `wg genkey` does.
fn new_key() -> (Key, Key) {
    let k = Key::from_bytes(rand::random()).clamped();
    let public = k.public_key();
    (k, public)
}

fn gw_backend(gw: &Host) -> UapiBackend {
    UapiBackend::open(&gw.wg_if).expect("the gateway's UAPI socket")
}

/// `wg show IF dump`, parsed. Private keys are compared, never printed.
#[derive(Debug, Clone)]
struct Dump {
    private_key: Option<String>,
    public_key: Option<String>,
    listen_port: u16,
    fwmark: u32,
    peers: BTreeMap<String, DumpPeer>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct DumpPeer {
    preshared_key: Option<String>,
    endpoint: Option<String>,
    allowed_ips: BTreeSet<IpNet>,
    latest_handshake: u64,
    rx: u64,
    tx: u64,
    keepalive: u16,
}

fn none(s: &str) -> Option<String> {
    (s != "(none)").then(|| s.to_string())
}

fn wg_dump(host: &Host) -> Dump {
    let out = host.run(&["wg", "show", &host.wg_if, "dump"]).unwrap();
    let mut lines = out.lines();
    let dev: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let mut d = Dump {
        private_key: none(dev[0]),
        public_key: none(dev[1]),
        listen_port: dev[2].parse().unwrap(),
        fwmark: if dev[3] == "off" {
            0
        } else {
            u32::from_str_radix(dev[3].trim_start_matches("0x"), 16).unwrap()
        },
        peers: BTreeMap::new(),
    };
    for l in lines {
        let f: Vec<&str> = l.split('\t').collect();
        d.peers.insert(
            f[0].to_string(),
            DumpPeer {
                preshared_key: none(f[1]),
                endpoint: none(f[2]),
                allowed_ips: if f[3] == "(none)" {
                    BTreeSet::new()
                } else {
                    f[3].split(',').map(|a| a.parse().unwrap()).collect()
                },
                latest_handshake: f[4].parse().unwrap(),
                rx: f[5].parse().unwrap(),
                tx: f[6].parse().unwrap(),
                keepalive: if f[7] == "off" {
                    0
                } else {
                    f[7].parse().unwrap()
                },
            },
        );
    }
    d
}

/// What wgbpf read, in `wg show dump`'s terms.
fn as_dump(s: &DeviceState) -> Dump {
    Dump {
        private_key: s.private_key.as_ref().map(Key::to_base64),
        public_key: s.public_key.as_ref().map(Key::to_base64),
        listen_port: s.listen_port,
        fwmark: s.fwmark,
        peers: s
            .peers
            .iter()
            .map(|p| {
                (
                    p.config.public_key.to_base64(),
                    DumpPeer {
                        preshared_key: p.config.preshared_key.as_ref().map(Key::to_base64),
                        endpoint: p.config.endpoint.map(|e| e.to_string()),
                        allowed_ips: p.config.allowed_ips.iter().copied().collect(),
                        latest_handshake: p
                            .last_handshake
                            .map_or(0, |t| t.duration_since(UNIX_EPOCH).unwrap().as_secs()),
                        rx: p.rx_bytes,
                        tx: p.tx_bytes,
                        keepalive: p.config.persistent_keepalive.unwrap_or(0),
                    },
                )
            })
            .collect(),
    }
}

/// The configuration parts equal; the statistics of `mid` (read in
/// between) lie between `before` and `after`, as they only grow.
fn assert_same(before: &Dump, mid: &Dump, after: &Dump) {
    assert!(
        before.private_key == mid.private_key && mid.private_key == after.private_key,
        "private keys differ (not printed)"
    );
    assert_eq!(before.public_key, mid.public_key);
    assert_eq!(
        (before.listen_port, before.fwmark),
        (mid.listen_port, mid.fwmark)
    );
    assert_eq!(
        before.peers.keys().collect::<Vec<_>>(),
        mid.peers.keys().collect::<Vec<_>>()
    );
    for (k, m) in &mid.peers {
        let (b, a) = (&before.peers[k], &after.peers[k]);
        let cfg = |p: &DumpPeer| {
            (
                p.preshared_key.clone(),
                p.endpoint.clone(),
                p.allowed_ips.clone(),
                p.keepalive,
            )
        };
        assert_eq!(cfg(b), cfg(m), "peer {k}");
        assert_eq!(cfg(a), cfg(m), "peer {k}");
        for (lo, x, hi, what) in [
            (
                b.latest_handshake,
                m.latest_handshake,
                a.latest_handshake,
                "handshake",
            ),
            (b.rx, m.rx, a.rx, "rx"),
            (b.tx, m.tx, a.tx, "tx"),
        ] {
            assert!(lo <= x && x <= hi, "peer {k} {what}: {lo} <= {x} <= {hi}");
        }
    }
}

/// Reads the gateway with wgbpf and with `wg`, wgbpf before and after, and
/// checks they agree.
fn check_agree(gw: &Host) {
    let b = gw_backend(gw);
    let before = as_dump(&b.get().unwrap());
    let mid = wg_dump(gw);
    let after = as_dump(&b.get().unwrap());
    assert_same(&before, &mid, &after);
}

#[test]
fn uapi_reads_and_writes_like_wg() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice"])).expect("mesh");
    let (gw, alice) = (&mesh.gateway, mesh.host("alice"));
    let dir = temp_dir("rw", &mesh);

    // 1. Reading: wgbpf and `wg show dump` agree on the testbed's device.
    check_agree(gw);
    let state = gw_backend(gw).get().unwrap();
    assert_eq!(
        state.public_key.as_ref().map(Key::to_base64).as_deref(),
        Some(gw.public_key.as_str())
    );
    let a = state
        .peers
        .iter()
        .find(|p| p.config.public_key.to_base64() == alice.public_key)
        .expect("alice");
    assert!(a.last_handshake.is_some() && a.rx_bytes > 0 && a.tx_bytes > 0);

    // 2. Writing with wgbpf, reading back with `wg`: a new peer with every
    //    field, and the fwmark.
    let (_, carol) = new_key();
    let (psk, _) = new_key();
    let mut want = DeviceConfig {
        fwmark: Some(0x42),
        peers: state.peers.iter().map(|p| p.config.clone()).collect(),
        ..Default::default()
    };
    want.peers.push(PeerConfig {
        public_key: carol.clone(),
        preshared_key: Some(psk.clone()),
        endpoint: Some("[fd00:77::9]:4242".parse().unwrap()),
        persistent_keepalive: Some(17),
        allowed_ips: vec![
            "10.88.0.0/16".parse().unwrap(),
            "fd88::/64".parse().unwrap(),
        ],
    });
    let b = gw_backend(gw);
    let cs = wg::changes_between(&want, &b.get().unwrap());
    assert_eq!(cs.peers.len(), 1, "only carol is new: {cs:?}");
    b.apply(&cs).unwrap();
    let d = wg_dump(gw);
    assert_eq!(d.fwmark, 0x42);
    let c = &d.peers[&carol.to_base64()];
    assert!(
        c.preshared_key.as_deref() == Some(psk.to_base64().as_str()),
        "psk differs"
    );
    assert_eq!(c.endpoint.as_deref(), Some("[fd00:77::9]:4242"));
    assert_eq!(c.keepalive, 17);
    assert_eq!(
        c.allowed_ips,
        ["10.88.0.0/16", "fd88::/64"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect()
    );
    check_agree(gw);
    // Applying the same again sends nothing.
    let cs = wg::changes_between(&want, &b.get().unwrap());
    assert!(cs.is_empty(), "{cs:?}");
    let sets = b.set_operations();
    b.apply(&cs).unwrap();
    assert_eq!(b.set_operations(), sets);

    // 3. Writing with `wg set` and `wg setconf`, reading with wgbpf.
    let (_, dave) = new_key();
    gw.run(&[
        "wg",
        "set",
        &gw.wg_if,
        "fwmark",
        "0",
        "peer",
        &dave.to_base64(),
        "allowed-ips",
        "10.99.0.0/24,fd99::1/128",
        "endpoint",
        "198.51.100.7:9000",
        "persistent-keepalive",
        "5",
        "peer",
        &carol.to_base64(),
        "remove",
    ])
    .unwrap();
    let s = gw_backend(gw).get().unwrap();
    assert_eq!(s.fwmark, 0);
    assert!(s.peer(&carol).is_none());
    let d = s.peer(&dave).expect("dave");
    assert_eq!(
        d.config.endpoint,
        Some("198.51.100.7:9000".parse().unwrap())
    );
    assert_eq!(d.config.persistent_keepalive, Some(5));
    check_agree(gw);

    let key_file = dir.0.join("gw-setconf.key");
    let (new_private, new_public) = new_key();
    write_file(&key_file, &new_private.to_base64(), 0o600);
    let conf = dir.0.join("setconf.conf");
    write_file(
        &conf,
        &format!(
            "[Interface]\nPrivateKey = {}\nListenPort = 51999\nFwMark = 0x7\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = 10.66.0.1/32\n",
            new_private.to_base64(),
            carol.to_base64()
        ),
        0o600,
    );
    gw.run(&["wg", "setconf", &gw.wg_if, conf.to_str().unwrap()])
        .unwrap();
    let s = gw_backend(gw).get().unwrap();
    assert_eq!(s.public_key.as_ref(), Some(&new_public));
    assert!(
        s.private_key.as_ref() == Some(&new_private),
        "private key differs"
    );
    assert_eq!((s.listen_port, s.fwmark), (51999, 7));
    assert_eq!(s.peers.len(), 1);
    assert_eq!(
        s.peers[0].config.allowed_ips,
        vec!["10.66.0.1/32".parse::<IpNet>().unwrap()]
    );
    check_agree(gw);
    // And wgbpf's key file reader takes what `wg` takes.
    assert!(wg::read_key_file(&key_file).unwrap() == new_private);
    mesh.down().unwrap();
}

/// The gateway's configuration as the testbed made it, for the change set.
fn testbed_config(mesh: &Testbed) -> DeviceConfig {
    DeviceConfig {
        private_key: None,
        listen_port: None,
        fwmark: None,
        peers: mesh
            .peers
            .iter()
            .map(|p| PeerConfig {
                allowed_ips: vec![
                    IpNet::from(IpAddr::V4(p.tunnel_v4)),
                    IpNet::from(IpAddr::V6(p.tunnel_v6)),
                ],
                ..PeerConfig::new(Key::from_base64(&p.public_key).unwrap())
            })
            .collect(),
    }
}

#[test]
fn reconcile_leaves_other_peers_alone() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice", "bob"])).expect("mesh");
    let (gw, alice, bob) = (&mesh.gateway, mesh.host("alice"), mesh.host("bob"));
    let (alice_key, bob_key) = (
        Key::from_base64(&alice.public_key).unwrap(),
        Key::from_base64(&bob.public_key).unwrap(),
    );
    let b = gw_backend(gw);
    let mut want = testbed_config(&mesh);
    // The testbed's own configuration: nothing to send.
    let cs = wg::changes_between(&want, &b.get().unwrap());
    assert!(cs.is_empty(), "{cs:?}");

    let gw4 = IpAddr::V4(gw.tunnel_v4);
    let pinger = Pinger::start(alice, gw4, 200, Duration::ZERO);
    assert!(ping(alice, gw4, PING).unwrap());
    let before = b.get().unwrap();
    let a0 = before.peer(&alice_key).unwrap().clone();
    assert!(a0.last_handshake.is_some() && a0.rx_bytes > 0 && a0.tx_bytes > 0);

    // Change bob's AllowedIPs while alice's traffic flows.
    want.peers[1]
        .allowed_ips
        .push("10.78.0.0/24".parse().unwrap());
    let cs = wg::changes_between(&want, &before);
    assert_eq!(cs.peers.len(), 1, "{cs:?}");
    assert_eq!(cs.peers[0].public_key(), &bob_key);
    let sets = b.set_operations();
    b.apply(&cs).unwrap();
    assert_eq!(b.set_operations(), sets + 1);

    assert!(ping(alice, gw4, PING).unwrap(), "alice's tunnel broke");
    let after = b.get().unwrap();
    let a1 = after.peer(&alice_key).unwrap();
    assert_eq!(a1.config, a0.config);
    assert!(
        a1.last_handshake >= a0.last_handshake,
        "alice's handshake reset"
    );
    assert!(
        a1.rx_bytes >= a0.rx_bytes && a1.tx_bytes >= a0.tx_bytes,
        "alice's counters reset"
    );
    let bob_ips = &after.peer(&bob_key).unwrap().config.allowed_ips;
    assert!(
        bob_ips.contains(&"10.78.0.0/24".parse().unwrap()),
        "{bob_ips:?}"
    );
    assert_eq!(bob_ips.len(), 3);

    // The same configuration again: an empty change set, no set operation.
    let cs = wg::changes_between(&want, &b.get().unwrap());
    assert!(cs.is_empty(), "{cs:?}");
    b.apply(&cs).unwrap();
    assert_eq!(b.set_operations(), sets + 1);

    // Bob leaves the configuration: he is removed, alice stays as she was.
    want.peers.remove(1);
    let cs = wg::changes_between(&want, &b.get().unwrap());
    assert_eq!(cs.peers, vec![wg::PeerChange::Remove(bob_key.clone())]);
    b.apply(&cs).unwrap();
    let last = b.get().unwrap();
    assert!(last.peer(&bob_key).is_none());
    let a2 = last.peer(&alice_key).unwrap();
    assert!(a2.last_handshake >= a1.last_handshake && a2.rx_bytes >= a1.rx_bytes);
    assert!(ping(alice, gw4, PING).unwrap(), "alice's tunnel broke");
    assert!(
        !ping(bob, gw4, Duration::from_secs(1)).unwrap(),
        "bob is gone"
    );
    let (sent, failed) = pinger.finish();
    assert!(sent > 0);
    assert_eq!(
        failed, 0,
        "{failed} of alice's {sent} pings failed during the changes"
    );
    mesh.down().unwrap();
}

/// Where the testbed keeps the gateway's private key (mode 0600).
fn testbed_key_file(mesh: &Testbed) -> PathBuf {
    let p = mesh.private_key_file(&mesh.gateway);
    assert!(p.exists(), "the testbed keeps no key at {}", p.display());
    p
}

const POLICY: &str = "[policy]\n\n[[policy.rule]]\naction = \"accept\"\nfrom = [\"*\"]\n\
                      to = [\"*\"]\nproto = \"icmp\"\n";

#[test]
fn load_configures_wireguard_from_the_mesh_file() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice"])).expect("mesh");
    let (gw, alice) = (&mesh.gateway, mesh.host("alice"));
    let dir = temp_dir("load", &mesh);
    let (_, carol) = new_key();
    let (psk, _) = new_key();
    let psk_file = dir.0.join("carol.psk");
    write_file(&psk_file, &format!("{}\n", psk.to_base64()), 0o600);
    let write_mesh = |key_file: &Path, extra_peer: bool| {
        let mut text = managed_mesh_file(&mesh, POLICY, key_file);
        if extra_peer {
            text = text.replacen(
                "[policy]",
                &format!(
                    "[[peer]]\nname = \"carol\"\npublic_key = \"{}\"\nallowed_ips = [\"10.77.5.0/24\"]\n\
                     endpoint = \"localhost:51000\"\npersistent_keepalive = 30\n\
                     preshared_key_file = \"{}\"\n\n[policy]",
                    carol.to_base64(),
                    psk_file.display()
                ),
                1,
            );
        }
        let cfg = dir.0.join("mesh.toml");
        std::fs::write(&cfg, text).unwrap();
        cfg.to_str().unwrap().to_string()
    };
    let _unload = Unload(gw);

    // A group-readable copy of the key is refused, naming the file, and
    // neither the device nor the kernel is touched.
    let key = testbed_key_file(&mesh);
    let open_key = dir.0.join("open.key");
    std::fs::copy(&key, &open_key).unwrap();
    std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = as_dump(&gw_backend(gw).get().unwrap());
    let cfg = write_mesh(&open_key, true);
    let (ok, out, err) = wgbpf(gw, &["load", "-c", &cfg]);
    assert!(!ok, "load must fail: {out}");
    assert!(err.contains(open_key.to_str().unwrap()), "{err}");
    assert!(err.contains("0640"), "{err}");
    let mid = wg_dump(gw);
    let after = as_dump(&gw_backend(gw).get().unwrap());
    assert_same(&before, &mid, &after);
    assert!(
        !wgbpf::dataplane::pin_dir(&gw.wg_if).exists(),
        "data plane loaded"
    );

    // The real key: carol is added, alice untouched, the policy loaded.
    let cfg = write_mesh(&key, true);
    let (ok, out, err) = wgbpf(gw, &["load", "-c", &cfg, "--json"]);
    assert!(ok, "load failed: {err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    let w = &r["wireguard"];
    assert_eq!(w["backend"], "uapi", "{r}");
    assert_eq!(w["changed"], true, "{r}");
    assert_eq!(w["peers_added"], serde_json::json!(["carol"]), "{r}");
    assert_eq!(w["peers_removed"], serde_json::json!([]), "{r}");
    assert_eq!(w["peers_updated"], serde_json::json!([]), "{r}");
    assert_eq!(w["private_key_changed"], false, "{r}");
    assert!(!out.contains(&psk.to_base64()), "the psk leaked: {out}");
    assert_eq!(r["policy"]["version"], 1, "{r}");
    let s = gw_backend(gw).get().unwrap();
    let c = s.peer(&carol).expect("carol");
    assert!(c.config.preshared_key.as_ref() == Some(&psk), "psk differs");
    assert_eq!(c.config.persistent_keepalive, Some(30));
    assert_eq!(c.config.endpoint.map(|e| e.port()), Some(51000));
    assert!(ping(alice, IpAddr::V4(gw.tunnel_v4), PING).unwrap());
    check_agree(gw);

    // Again: nothing to do, said in text with the backend.
    let (ok, out, err) = wgbpf(gw, &["load", "-c", &cfg]);
    assert!(ok, "load failed: {err}");
    assert!(out.contains("userspace UAPI"), "{out}");
    assert!(out.contains("WireGuard unchanged"), "{out}");

    // Carol leaves the mesh file: removed, reported by public key.
    let cfg = write_mesh(&key, false);
    let (ok, out, err) = wgbpf(gw, &["load", "-c", &cfg, "--json"]);
    assert!(ok, "load failed: {err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        r["wireguard"]["peers_removed"],
        serde_json::json!([carol.to_base64()]),
        "{r}"
    );
    assert!(gw_backend(gw).get().unwrap().peer(&carol).is_none());

    // `wgbpf show` names peers from the mesh file and the data plane, and
    // never prints the private key.
    let private = std::fs::read_to_string(&key).unwrap();
    let (ok, out, err) = wgbpf(gw, &["show", "-i", &gw.wg_if, "--json"]);
    assert!(ok, "show failed: {err}");
    assert!(
        !out.contains(private.trim()),
        "show printed the private key"
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["public_key"], gw.public_key.as_str(), "{v}");
    assert_eq!(v["listen_port"], 51820, "{v}");
    let peers = v["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1, "{v}");
    assert_eq!(peers[0]["name"], "alice", "{v}");
    assert_eq!(peers[0]["public_key"], alice.public_key.as_str(), "{v}");
    assert!(
        peers[0]["acl"]["ingress"]["allowed_packets"]
            .as_u64()
            .unwrap()
            > 0,
        "{v}"
    );
    let (ok, out, err) = wgbpf(gw, &["show", "-i", &gw.wg_if, "-c", &cfg]);
    assert!(ok, "show failed: {err}");
    assert!(
        !out.contains(private.trim()),
        "show printed the private key"
    );
    assert!(out.contains("name: alice"), "{out}");
    assert!(
        out.contains(&format!("peer: {}", alice.public_key)),
        "{out}"
    );
    assert!(out.contains("latest handshake:"), "{out}");
    assert!(out.contains("acl:"), "{out}");

    // Without private_key_file: the policy alone, the device left as it is.
    let plain = dir.0.join("plain.toml");
    std::fs::write(&plain, gateway_mesh_file(&mesh, POLICY)).unwrap();
    assert!(source::load(&plain).unwrap().wg.private_key_file.is_none());
    let sets_before = as_dump(&gw_backend(gw).get().unwrap());
    let (ok, out, err) = wgbpf(gw, &["load", "-c", plain.to_str().unwrap(), "--json"]);
    assert!(ok, "load failed: {err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert!(r["wireguard"].is_null(), "{r}");
    assert_eq!(sets_before.peers.len(), wg_dump(gw).peers.len());
    drop(_unload);
    mesh.down().unwrap();
}

#[test]
fn load_without_a_device_says_so() {
    // No socket and no kernel backend: a clear error before anything else.
    let dir = std::env::temp_dir().join(format!("wgbpf-wgtest-nodev-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
    let guard = TempDir(dir.clone());
    let key = dir.join("k");
    write_file(&key, &new_key().0.to_base64(), 0o600);
    let iface = format!("wgbnodev{}", std::process::id() % 100_000);
    let cfg = dir.join("mesh.toml");
    std::fs::write(
        &cfg,
        format!(
            "[interface]\nname = \"{iface}\"\nprivate_key_file = \"{}\"\n",
            key.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wgbpf"))
        .args(["load", "-c", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("no userspace WireGuard socket for {iface}"))
            && err.contains("the kernel has no WireGuard"),
        "{err}"
    );
    assert!(!wgbpf::dataplane::pin_dir(&iface).exists());
    drop(guard);
}
