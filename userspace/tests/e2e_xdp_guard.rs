//! End to end: the XDP guard on a gateway's underlay while a real tunnel
//! (wireguard-go in network namespaces) carries traffic and a third
//! namespace floods the WireGuard port.
//!
//! ```text
//!   flooder (198.19.0.10-29) ── alice (forwards) ──ul0═ul1── gateway
//!                               alice's tunnel ───────────┘  (guard on ul1)
//! ```
//!
//! The flood arrives on the same underlay interface as alice's tunnel: bare
//! garbage, malformed WireGuard, and replays of a real handshake initiation
//! of alice's (valid MACs, so without the guard each costs wireguard-go its
//! Diffie-Hellman). First without the guard (the control: the flood reaches
//! the gateway's UDP socket), then with it: the tunnel keeps carrying every
//! datagram, the flood is dropped and counted by reason, the initiations
//! beyond each source's bucket never reach the socket, and wireguard-go's
//! peer list, endpoint and handshake time do not move. Needs root.

mod common;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use common::{in_netns, Pinger};
use testbed::{udp_send, udp_sink, Host, Testbed, TestbedSpec};
use wgbpf::dataplane::xdp_guard::{install, read_stats, remove, GuardConfig, GuardStats};
use wgbpf_common::xdp::xdp_stat;

const WG_PORT: u16 = 51820;
/// The gateway's end of alice's underlay (testbed: 198.18.1.0/24).
const GW_UNDERLAY: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const ALICE_UNDERLAY: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const FLOOD_SOURCES: u8 = 20;
const RATE: u32 = 2;
const BURST: u32 = 5;

/// The flooder's namespace, joined to alice's; removed on drop.
struct Flooder {
    netns: String,
}

impl Drop for Flooder {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

fn run(host: &Host, args: &[&str]) {
    host.run(args)
        .unwrap_or_else(|e| panic!("{args:?} in {}: {e:#}", host.name));
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace behind alice with 20 source addresses, routed to the
/// gateway's underlay through alice, so its packets enter the gateway on
/// the same interface as alice's tunnel.
fn flooder(mesh: &Testbed) -> Flooder {
    let alice = mesh.host("alice");
    let f = Flooder {
        netns: format!("wgbpf-xf-{}-{}", std::process::id(), mesh.run_id()),
    };
    ip(&["netns", "add", &f.netns]);
    ip(&[
        "-n",
        &alice.netns,
        "link",
        "add",
        "flx",
        "type",
        "veth",
        "peer",
        "name",
        "fl0",
        "netns",
        &f.netns,
    ]);
    run(alice, &["ip", "addr", "add", "198.19.0.1/24", "dev", "flx"]);
    run(alice, &["ip", "link", "set", "flx", "up"]);
    run(alice, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    for i in 0..FLOOD_SOURCES {
        let a = format!("198.19.0.{}/24", 10 + i);
        ip(&["-n", &f.netns, "addr", "add", &a, "dev", "fl0"]);
    }
    ip(&["-n", &f.netns, "link", "set", "fl0", "up"]);
    ip(&["-n", &f.netns, "link", "set", "lo", "up"]);
    ip(&[
        "-n",
        &f.netns,
        "route",
        "add",
        "default",
        "via",
        "198.19.0.1",
    ]);
    run(
        &mesh.gateway,
        &["ip", "route", "add", "198.19.0.0/24", "via", "198.18.1.2"],
    );
    f
}

/// The gateway's UDP datagrams delivered to sockets plus those a full
/// socket refused (/proc/net/snmp of its namespace).
fn udp_delivered(gw: &Host) -> u64 {
    let snmp = gw.run(&["cat", "/proc/net/snmp"]).unwrap();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter(|(n, _)| matches!(*n, "InDatagrams" | "RcvbufErrors"))
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .sum()
}

/// The gateway's WireGuard peers: (public key, endpoint, latest handshake).
fn wg_peers(gw: &Host) -> Vec<(String, String, String)> {
    let dump = gw.run(&["wg", "show", &gw.wg_if, "dump"]).unwrap();
    dump.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_string(), f[2].to_string(), f[4].to_string())
        })
        .collect()
}

/// Captures one handshake initiation alice sends to the gateway (an
/// AF_PACKET socket on the gateway's ul1), after making alice start a new
/// handshake by removing and re-adding her gateway peer.
fn capture_initiation(mesh: &Testbed) -> Vec<u8> {
    let gw = mesh.gateway.clone();
    let sock: OwnedFd = in_netns(&gw.netns, || {
        // SAFETY: plain socket(2); the fd is owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM,
                (libc::ETH_P_IP as u16).to_be() as i32,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })
    .unwrap();
    let tv = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: a valid fd and a timeval of the right size.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    let alice = mesh.host("alice");
    let dump = alice.run(&["wg", "show", &alice.wg_if, "dump"]).unwrap();
    let peer: Vec<&str> = dump.lines().nth(1).unwrap().split('\t').collect();
    let (key, endpoint, allowed) = (peer[0], peer[2], peer[3]);
    run(alice, &["wg", "set", &alice.wg_if, "peer", key, "remove"]);
    run(
        alice,
        &[
            "wg",
            "set",
            &alice.wg_if,
            "peer",
            key,
            "endpoint",
            endpoint,
            "allowed-ips",
            allowed,
            "persistent-keepalive",
            "1",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        // SAFETY: reading into a buffer of the given length.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n < 28 {
            continue;
        }
        let ip = &buf[..n as usize];
        let ihl = (ip[0] & 0xf) as usize * 4;
        if ip[9] != 17 || ip.len() < ihl + 8 {
            continue;
        }
        let udp = &ip[ihl..];
        let dport = u16::from_be_bytes([udp[2], udp[3]]);
        let payload = &udp[8..];
        if dport == WG_PORT && payload.len() == 148 && payload[0] == 1 {
            return payload.to_vec();
        }
    }
    panic!("no handshake initiation from alice within 15 s");
}

/// What one flood sends, by the reason the guard must give.
#[derive(Debug, Default)]
struct Flood {
    bad_type: u64,
    bad_size: u64,
    reserved: u64,
    initiations: u64,
}

impl Flood {
    fn total(&self) -> u64 {
        self.bad_type + self.bad_size + self.reserved + self.initiations
    }
}

/// Floods the gateway's port from every source address, in `rounds`
/// rounds (pinging through the tunnel runs meanwhile on its own thread).
fn flood(netns: &str, initiation: Vec<u8>, rounds: u32) -> Flood {
    in_netns(netns, move || {
        let to = SocketAddr::from((GW_UNDERLAY, WG_PORT));
        let socks: Vec<UdpSocket> = (0..FLOOD_SOURCES)
            .map(|i| UdpSocket::bind((Ipv4Addr::new(198, 19, 0, 10 + i), 0)))
            .collect::<Result<_, _>>()?;
        let mut sent = Flood::default();
        let mut x: u32 = 0x1234_5678;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for _ in 0..rounds {
            for s in &socks {
                // Garbage: a type no message has.
                let len = 20 + (next() % 200) as usize;
                let mut g: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                g[0] = 5 + (next() % 250) as u8;
                s.send_to(&g, to)?;
                sent.bad_type += 1;
                // A data message too short to be one.
                s.send_to(&[4, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], to)?;
                sent.bad_size += 1;
                // A response with reserved bits set.
                let mut r = vec![0u8; 92];
                r[0] = 2;
                r[3] = 0x80;
                s.send_to(&r, to)?;
                sent.reserved += 1;
                // The replayed initiation.
                for _ in 0..3 {
                    s.send_to(&initiation, to)?;
                    sent.initiations += 1;
                }
            }
            // A short pause keeps the veth rings from overflowing, so the
            // counts stay exact.
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(sent)
    })
    .unwrap()
}

/// Tunnel traffic during the flood: `n` UDP datagrams from alice to the
/// gateway's tunnel address must all arrive.
fn tunnel_datagrams(mesh: &Testbed, n: usize) -> usize {
    let sink = udp_sink(&mesh.gateway, 0).unwrap();
    udp_send(
        mesh.host("alice"),
        IpAddr::V4(mesh.gateway.tunnel_v4),
        sink.port(),
        n,
        200,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while sink.served() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    sink.served()
}

struct GuardPin(String, PathBuf);

impl Drop for GuardPin {
    fn drop(&mut self) {
        let dir = self.1.clone();
        let _ = in_netns(&self.0, move || {
            let _ = remove("ul1", &dir);
            Ok(())
        });
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

#[test]
fn guard_keeps_the_tunnel_and_drops_the_flood() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice"])).expect("mesh up");
    let fl = flooder(&mesh);
    let gw = mesh.gateway.clone();
    let initiation = capture_initiation(&mesh);
    // Let alice's new handshake settle, then take the gateway's view.
    std::thread::sleep(Duration::from_millis(500));
    let peers_before = wg_peers(&gw);
    assert_eq!(peers_before.len(), 1);
    assert_eq!(peers_before[0].1, format!("{ALICE_UNDERLAY}:{WG_PORT}"));

    // Control: without the guard the flood reaches the gateway's socket.
    let before = udp_delivered(&gw);
    let sent = flood(&fl.netns, initiation.clone(), 10);
    std::thread::sleep(Duration::from_millis(300));
    let reached = udp_delivered(&gw) - before;
    assert!(
        reached >= sent.total() * 9 / 10,
        "without the guard {reached} of {} flood datagrams reached the socket",
        sent.total()
    );

    // The guard on the underlay the tunnel and the flood share.
    let dir = PathBuf::from(format!("/sys/fs/bpf/wgbpf-xdp-test-e2e-{}", mesh.run_id()));
    let _pin = GuardPin(gw.netns.clone(), dir.clone());
    let cfg = GuardConfig {
        handshake_rate: RATE,
        handshake_burst: BURST,
        ..GuardConfig::for_port(WG_PORT)
    };
    let (d, c) = (dir.clone(), cfg.clone());
    let installed = in_netns(&gw.netns, move || {
        install("ul1", &d, &c, None).map_err(std::io::Error::other)
    })
    .unwrap();
    eprintln!("guard on ul1 in {} mode", installed.mode.as_str());

    let stats0 = read_stats(&dir).unwrap();
    let delivered0 = udp_delivered(&gw);
    let started = Instant::now();
    let pinger = Pinger::start(
        mesh.host("alice"),
        IpAddr::V4(gw.tunnel_v4),
        1000,
        Duration::from_millis(50),
    );
    let mut sent = Flood::default();
    let mut tunnel_sent = 0;
    let mut tunnel_got = 0;
    for _ in 0..5 {
        let s = flood(&fl.netns, initiation.clone(), 60);
        sent.bad_type += s.bad_type;
        sent.bad_size += s.bad_size;
        sent.reserved += s.reserved;
        sent.initiations += s.initiations;
        tunnel_sent += 100;
        tunnel_got += tunnel_datagrams(&mesh, 100);
    }
    let (pings, failed) = pinger.finish();
    let elapsed = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let d: GuardStats = read_stats(&dir).unwrap().since(&stats0);
    let delivered = udp_delivered(&gw) - delivered0;
    eprintln!(
        "flood {sent:?} in {elapsed:.1} s; guard: {:?}; delivered to sockets: {delivered}; \
         pings {pings} ({failed} failed); tunnel datagrams {tunnel_got}/{tunnel_sent}",
        d.named().collect::<Vec<_>>()
    );

    // The tunnel carried everything.
    assert_eq!(
        tunnel_got, tunnel_sent,
        "tunnel datagrams lost under the flood"
    );
    assert!(pings > 0 && failed == 0, "{failed} of {pings} pings failed");
    assert!(d.get(xdp_stat::PASS_DATA) >= tunnel_sent as u64);
    // The flood: dropped and counted, by reason, exactly.
    assert_eq!(d.get(xdp_stat::DROP_BAD_TYPE), sent.bad_type);
    assert_eq!(d.get(xdp_stat::DROP_BAD_SIZE), sent.bad_size);
    assert_eq!(d.get(xdp_stat::DROP_RESERVED), sent.reserved);
    let inits = d.get(xdp_stat::PASS_INITIATION) + d.get(xdp_stat::DROP_RATE_LIMITED);
    assert_eq!(inits, sent.initiations, "every initiation judged");
    // Each source gets its burst and its rate over the flood's duration.
    let allowed =
        u64::from(FLOOD_SOURCES) * (u64::from(BURST) + (f64::from(RATE) * elapsed).ceil() as u64);
    assert!(
        d.get(xdp_stat::PASS_INITIATION) <= allowed,
        "{} initiations passed, the buckets allow {allowed}",
        d.get(xdp_stat::PASS_INITIATION)
    );
    assert!(d.get(xdp_stat::PASS_INITIATION) >= u64::from(FLOOD_SOURCES) * u64::from(BURST));
    // Only what the guard passed reached a socket (besides the tunnel's
    // own datagrams, decrypted): no flood datagram but the initiations
    // within their buckets.
    assert!(
        delivered <= d.passed() + tunnel_sent as u64 + 2,
        "{delivered} datagrams reached sockets, the guard passed {}",
        d.passed()
    );
    // wireguard-go: the same peer, endpoint and handshake as before.
    assert_eq!(wg_peers(&gw), peers_before, "the flood moved wireguard-go");

    drop(_pin);
    assert!(!dir.exists());
    drop(fl);
    mesh.down().unwrap();
}
