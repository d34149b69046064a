//! The XDP guard's loader on real interfaces: two network namespaces of our
//! own joined by a veth. Native attach on the veth, generic on loopback
//! (which has no driver XDP), pins, the counters while real sockets listen,
//! adoption, re-attachment after the interface was re-created, removal.
//! Needs root.

mod common;

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::in_netns;
use wgbpf::dataplane::xdp_guard::{
    attached_prog, install, is_attached, pinned_interfaces, pinned_mode, read_stats, remove,
    status, GuardConfig, GuardMode,
};
use wgbpf_common::xdp::xdp_stat;

const PORT: u16 = 51820;
const OTHER_PORT: u16 = 51821;
const B_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

/// Two namespaces (a, b) joined by veth `va`-`vb`, and a pin directory,
/// all named for this run and removed on drop.
struct Pair {
    a: String,
    b: String,
    pins: PathBuf,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pair {
    fn up() -> Pair {
        let id = format!(
            "{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let pair = Pair {
            a: format!("wgbpf-xg-{id}-a"),
            b: format!("wgbpf-xg-{id}-b"),
            pins: PathBuf::from(format!("/sys/fs/bpf/wgbpf-xdp-test-{id}")),
        };
        ip(&["netns", "add", &pair.a]);
        ip(&["netns", "add", &pair.b]);
        pair.link();
        for ns in [&pair.a, &pair.b] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// (Re)creates the veth and its addresses.
    fn link(&self) {
        ip(&[
            "-n", &self.a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns",
            &self.b,
        ]);
        ip(&["-n", &self.a, "addr", "add", "192.0.2.1/24", "dev", "va"]);
        ip(&["-n", &self.b, "addr", "add", "192.0.2.2/24", "dev", "vb"]);
        ip(&["-n", &self.a, "link", "set", "va", "up"]);
        ip(&["-n", &self.b, "link", "set", "vb", "up"]);
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.pins.join(name)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        // Unpinning detaches; deleting the namespaces deletes the veth.
        for name in ["vb", "lo"] {
            let b = self.b.clone();
            let dir = self.dir(name);
            let _ = in_netns(&b, move || {
                let _ = remove(name, &dir);
                Ok(())
            });
        }
        let _ = std::fs::remove_dir_all(&self.pins);
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A UDP socket bound in `netns`.
fn bind(netns: &str, addr: Ipv4Addr, port: u16) -> UdpSocket {
    in_netns(netns, move || {
        let s = UdpSocket::bind((addr, port))?;
        s.set_read_timeout(Some(Duration::from_millis(300)))?;
        Ok(s)
    })
    .expect("bind")
}

/// Sends each payload from `netns` to `to`.
fn send_all(netns: &str, to: SocketAddr, payloads: Vec<Vec<u8>>) {
    in_netns(netns, move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        for p in &payloads {
            s.send_to(p, to)?;
        }
        Ok(())
    })
    .expect("send");
}

/// Payloads received until the socket stays quiet.
fn drain(s: &UdpSocket) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = s.recv_from(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    got
}

fn wg(kind: u8, len: usize, tag: u8) -> Vec<u8> {
    let mut m = vec![tag; len];
    m[0] = kind;
    m[1..4].fill(0);
    m
}

/// Runs `f` inside namespace `ns` (the loader works in the caller's).
fn in_b<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    in_netns(ns, move || Ok(f())).unwrap()
}

#[test]
fn guard_attaches_pins_counts_adopts_reattaches_and_goes() {
    let pair = Pair::up();
    let (a, b) = (pair.a.clone(), pair.b.clone());
    let dir = pair.dir("vb");
    let cfg = GuardConfig::for_port(PORT);

    let (d, c) = (dir.clone(), cfg.clone());
    let installed = in_b(&b, move || install("vb", &d, &c, None)).expect("install");
    assert_eq!(installed.mode, GuardMode::Native, "veth has driver XDP");
    assert!(!installed.adopted);
    assert_eq!(pinned_mode(&dir), Some(GuardMode::Native));
    assert!(dir.join("wgbpf_xdp_guard").exists() && dir.join("WGBPF_XDP_STATS").exists());
    let d = dir.clone();
    assert!(in_b(&b, move || is_attached("vb", &d)).unwrap());
    let on_if = in_b(&b, || attached_prog("vb")).unwrap();
    assert!(matches!(on_if, Some((_, GuardMode::Native))), "{on_if:?}");

    // Real sockets behind the guard: the listen port gets only WireGuard;
    // the other port gets everything.
    let wg_sock = bind(&b, B_ADDR, PORT);
    let other_sock = bind(&b, B_ADDR, OTHER_PORT);
    let garbage: Vec<Vec<u8>> = (0..40u8).map(|i| vec![0x20 + i; 60]).collect();
    let valid: Vec<Vec<u8>> = (0..25u8).map(|i| wg(4, 64, i)).collect();
    let to_port = SocketAddr::from((B_ADDR, PORT));
    send_all(&a, to_port, garbage.clone());
    send_all(&a, to_port, valid.clone());
    send_all(&a, (B_ADDR, OTHER_PORT).into(), garbage.clone());
    assert_eq!(
        drain(&wg_sock),
        valid,
        "only the valid messages reach the socket"
    );
    assert_eq!(drain(&other_sock), garbage, "other ports are not touched");
    let stats = read_stats(&dir).unwrap();
    assert_eq!(stats.get(xdp_stat::DROP_BAD_TYPE), 40);
    let d = dir.clone();
    let st = in_b(&b, move || status("vb", &d)).unwrap();
    assert_eq!((st.mode, st.attached), (GuardMode::Native, true));
    assert!(st.counters.contains(&("bad_type", 40)) && st.counters.contains(&("pass_data", 25)));
    assert_eq!(pinned_interfaces(&pair.pins), vec!["vb".to_string()]);
    assert_eq!(stats.get(xdp_stat::PASS_DATA), 25);
    assert_eq!(stats.dropped(), 40);

    // Installed again: adopted as it is, counters kept, settings rewritten.
    let mut cfg2 = cfg.clone();
    cfg2.ports = vec![OTHER_PORT];
    let (d, c) = (dir.clone(), cfg2.clone());
    let again = in_b(&b, move || install("vb", &d, &c, None)).unwrap();
    assert!(again.adopted && !again.reattached, "{again:?}");
    assert_eq!(read_stats(&dir).unwrap(), stats);
    send_all(&a, to_port, garbage[..5].to_vec());
    assert_eq!(drain(&wg_sock).len(), 5, "the old port is free now");
    send_all(&a, (B_ADDR, OTHER_PORT).into(), garbage[..5].to_vec());
    assert!(drain(&other_sock).is_empty(), "the new port is guarded");
    assert_eq!(read_stats(&dir).unwrap().get(xdp_stat::DROP_BAD_TYPE), 45);

    // The interface goes and comes back (a driver reload): the pinned link
    // is defunct, and installing re-attaches the pinned guard, counters kept.
    drop((wg_sock, other_sock));
    ip(&["-n", &a, "link", "del", "va"]);
    pair.link();
    let d = dir.clone();
    assert!(!in_b(&b, move || is_attached("vb", &d)).unwrap());
    let d = dir.clone();
    assert!(!in_b(&b, move || status("vb", &d)).unwrap().attached);
    let (d, c) = (dir.clone(), cfg.clone());
    let repaired = in_b(&b, move || install("vb", &d, &c, None)).unwrap();
    assert!(repaired.adopted && repaired.reattached, "{repaired:?}");
    assert_eq!(repaired.mode, GuardMode::Native);
    let d = dir.clone();
    assert!(in_b(&b, move || is_attached("vb", &d)).unwrap());
    let wg_sock = bind(&b, B_ADDR, PORT);
    send_all(&a, to_port, garbage[..7].to_vec());
    assert!(drain(&wg_sock).is_empty(), "guarded again");
    assert_eq!(read_stats(&dir).unwrap().get(xdp_stat::DROP_BAD_TYPE), 52);

    // Removed: nothing attached, nothing pinned, garbage reaches the socket.
    let d = dir.clone();
    assert!(in_b(&b, move || remove("vb", &d)).unwrap());
    assert!(!dir.exists());
    assert!(pinned_interfaces(&pair.pins).is_empty());
    assert_eq!(in_b(&b, || attached_prog("vb")).unwrap(), None);
    send_all(&a, to_port, garbage[..3].to_vec());
    assert_eq!(drain(&wg_sock).len(), 3);
    let d = dir.clone();
    assert!(!in_b(&b, move || remove("vb", &d)).unwrap(), "nothing left");
}

#[test]
fn generic_mode_where_the_driver_has_no_xdp() {
    let pair = Pair::up();
    let b = pair.b.clone();
    let dir = pair.dir("lo");
    let cfg = GuardConfig::for_port(PORT);
    let (d, c) = (dir.clone(), cfg.clone());
    let installed = in_b(&b, move || install("lo", &d, &c, None)).expect("install");
    assert_eq!(installed.mode, GuardMode::Generic);
    assert_eq!(pinned_mode(&dir), Some(GuardMode::Generic));
    let on_if = in_b(&b, || attached_prog("lo")).unwrap();
    assert!(matches!(on_if, Some((_, GuardMode::Generic))), "{on_if:?}");
    // Loopback frames have an Ethernet header too: the guard works there.
    let sock = bind(&b, Ipv4Addr::LOCALHOST, PORT);
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, PORT));
    send_all(
        &b,
        to,
        vec![vec![9; 50], wg(1, 148, 1), wg(2, 92, 2), vec![1, 1, 1, 1]],
    );
    assert_eq!(drain(&sock), vec![wg(1, 148, 1), wg(2, 92, 2)]);
    let s = read_stats(&dir).unwrap();
    assert_eq!(
        (
            s.get(xdp_stat::DROP_BAD_TYPE),
            s.get(xdp_stat::DROP_RESERVED)
        ),
        (1, 1)
    );
    assert_eq!(s.get(xdp_stat::PASS_INITIATION), 1);
    let d = dir.clone();
    assert!(in_b(&b, move || remove("lo", &d)).unwrap());
    assert!(!Path::new(&dir).exists());
}
