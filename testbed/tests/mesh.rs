//! End-to-end tests of the mesh: real wireguard-go tunnels in network
//! namespaces. They need root, as everything in this workspace's CI does.

use std::fs;
use std::net::IpAddr;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use testbed::{
    ping, tcp_connect, tcp_listen, udp_echo, udp_roundtrip, udp_send, Host, Testbed, TestbedSpec,
};

const T: Duration = Duration::from_secs(3);

fn two_peers() -> Testbed {
    Testbed::up(&TestbedSpec::new(&["alice", "bob"])).expect("mesh comes up")
}

fn v4(h: &Host) -> IpAddr {
    h.tunnel_v4.into()
}

fn v6(h: &Host) -> IpAddr {
    h.tunnel_v6.into()
}

fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wg_sockets() -> Vec<String> {
    fs::read_dir("/var/run/wireguard")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Everything the mesh created, as seen from outside it.
struct Footprint {
    netns: Vec<String>,
    wg_ifs: Vec<String>,
}

fn footprint(mesh: &Testbed) -> Footprint {
    Footprint {
        netns: mesh.hosts().map(|h| h.netns.clone()).collect(),
        wg_ifs: mesh.hosts().map(|h| h.wg_if.clone()).collect(),
    }
}

fn assert_gone(f: &Footprint) {
    let list = netns_list();
    let socks = wg_sockets();
    for ns in &f.netns {
        assert!(!list.contains(ns.as_str()), "netns {ns} left behind");
    }
    for wg_if in &f.wg_ifs {
        assert!(
            !socks.contains(&format!("{wg_if}.sock")),
            "socket of {wg_if} left behind"
        );
        let procs = Command::new("pgrep")
            .args(["-f", &format!("wireguard-go -f {wg_if}$")])
            .output()
            .unwrap();
        assert!(
            !procs.status.success(),
            "wireguard-go for {wg_if} still runs"
        );
    }
}

#[test]
fn mesh_comes_up_with_expected_hosts() {
    let mesh = two_peers();
    let (gw, alice, bob) = (&mesh.gateway, mesh.host("alice"), mesh.host("bob"));
    assert_eq!(gw.name, "gateway");
    assert_eq!(mesh.peers.len(), 2);
    assert_eq!(gw.tunnel_v4.octets(), [10, 77, 0, 1]);
    for h in [gw, alice, bob] {
        assert!(h.wg_if.len() <= 15, "{}", h.wg_if);
        assert!(h.ifindex > 0);
        assert_eq!(h.public_key.len(), 44, "base64 of 32 bytes");
        // The tunnel device is up in its own namespace with both addresses.
        let addrs = h.run(&["ip", "addr", "show", "dev", &h.wg_if]).unwrap();
        assert!(addrs.contains(&format!("{}/24", h.tunnel_v4)), "{addrs}");
        assert!(addrs.contains(&format!("{}/64", h.tunnel_v6)), "{addrs}");
        let idx = h
            .run(&["ip", "-o", "link", "show", "dev", &h.wg_if])
            .unwrap();
        assert!(idx.starts_with(&format!("{}:", h.ifindex)), "{idx}");
    }
    // The gateway has a handshake with every peer already.
    let shakes = gw
        .run(&["wg", "show", &gw.wg_if, "latest-handshakes"])
        .unwrap();
    for p in &mesh.peers {
        assert!(shakes.contains(&p.public_key), "{shakes}");
    }
    mesh.down().unwrap();
}

#[test]
fn pings_reach_gateway_and_other_peer_via_gateway() {
    let mesh = two_peers();
    let (gw, alice, bob) = (&mesh.gateway, mesh.host("alice"), mesh.host("bob"));
    for to in [v4(gw), v6(gw), v4(bob), v6(bob)] {
        assert!(ping(alice, to, T).unwrap(), "alice -> {to}");
    }
    assert!(ping(bob, v6(alice), T).unwrap());
    // Nobody has this address: no reply, and within the timeout.
    let start = Instant::now();
    assert!(!ping(
        alice,
        "10.77.0.99".parse().unwrap(),
        Duration::from_millis(700)
    )
    .unwrap());
    assert!(start.elapsed() < Duration::from_secs(2));
    mesh.down().unwrap();
}

#[test]
fn peer_to_peer_traffic_is_forwarded_by_the_gateway() {
    let mesh = two_peers();
    let (gw, alice, bob) = (&mesh.gateway, mesh.host("alice"), mesh.host("bob"));
    let (rx, tx) = tunnel_counters(gw);
    assert!(ping(alice, v4(bob), T).unwrap());
    // Request and reply each cross the gateway's tunnel device.
    let (rx2, tx2) = tunnel_counters(gw);
    assert!(rx2 >= rx + 2 && tx2 >= tx + 2);
    mesh.down().unwrap();
}

#[test]
fn tcp_open_and_closed_ports() {
    let mesh = two_peers();
    let (gw, alice, bob) = (&mesh.gateway, mesh.host("alice"), mesh.host("bob"));
    let listener = tcp_listen(gw, 8080).unwrap();
    assert!(tcp_connect(alice, v4(gw), 8080, T).unwrap());
    assert!(tcp_connect(alice, v6(gw), 8080, T).unwrap());
    assert_eq!(listener.served(), 2);
    // Through the gateway to the other peer.
    let on_bob = tcp_listen(bob, 0).unwrap();
    assert!(tcp_connect(alice, v6(bob), on_bob.port(), T).unwrap());

    // A closed port answers with a reset at once.
    let start = Instant::now();
    assert!(!tcp_connect(alice, v4(gw), 8081, T).unwrap());
    assert!(!tcp_connect(alice, v6(gw), 8081, T).unwrap());
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );

    // Once the listener is dropped the port is closed.
    drop(listener);
    assert!(!tcp_connect(alice, v4(gw), 8080, T).unwrap());
    mesh.down().unwrap();
}

#[test]
fn udp_roundtrip_and_send() {
    let mesh = two_peers();
    let (gw, alice, bob) = (&mesh.gateway, mesh.host("alice"), mesh.host("bob"));
    let echo = udp_echo(gw, 5353).unwrap();
    assert!(udp_roundtrip(alice, v4(gw), 5353, T).unwrap());
    assert!(udp_roundtrip(alice, v6(gw), 5353, T).unwrap());
    let on_bob = udp_echo(bob, 0).unwrap();
    assert!(udp_roundtrip(alice, v4(bob), on_bob.port(), T).unwrap());

    // Closed port: ICMP port unreachable ends the probe early.
    let start = Instant::now();
    assert!(!udp_roundtrip(alice, v4(gw), 5354, T).unwrap());
    assert!(start.elapsed() < Duration::from_secs(1));

    let before = echo.served();
    udp_send(alice, v6(gw), 5353, 50, 100).unwrap();
    wait_until(|| echo.served() >= before + 50);
    assert_eq!(echo.served(), before + 50);
    mesh.down().unwrap();
}

fn wait_until(cond: impl Fn() -> bool) {
    let deadline = Instant::now() + T;
    while !cond() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn host_cmd_runs_in_the_namespace_and_keeps_bpffs_visible() {
    let mesh = Testbed::up(&TestbedSpec::new(&["carol"])).unwrap();
    let carol = mesh.host("carol");
    let links = carol.run(&["ip", "-o", "link"]).unwrap();
    assert!(
        links.contains(&carol.wg_if) && links.contains("ul0"),
        "{links}"
    );
    assert!(!links.contains(&mesh.gateway.wg_if));
    // nsenter --net leaves the mounts alone: /sys/fs/bpf is still the host's.
    let mounts = carol.run(&["cat", "/proc/self/mountinfo"]).unwrap();
    let host_mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(
        mounts.contains(" /sys/fs/bpf "),
        host_mounts.contains(" /sys/fs/bpf ")
    );
    let err = carol
        .run(&["ip", "link", "show", "dev", "nonexistent0"])
        .unwrap_err();
    assert!(format!("{err:#}").contains("nonexistent0"), "{err:#}");
    mesh.down().unwrap();
}

#[test]
fn down_removes_everything() {
    let mesh = two_peers();
    let f = footprint(&mesh);
    for ns in &f.netns {
        assert!(netns_list().contains(ns.as_str()));
    }
    for wg_if in &f.wg_ifs {
        assert!(wg_sockets().contains(&format!("{wg_if}.sock")));
    }
    mesh.down().unwrap();
    assert_gone(&f);
}

#[test]
fn drop_removes_everything_even_on_panic() {
    let mesh = Testbed::up(&TestbedSpec::new(&["dave"])).unwrap();
    let f = footprint(&mesh);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _mesh = mesh;
        panic!("test failure inside a mesh");
    }));
    assert!(result.is_err());
    assert_gone(&f);
}

#[test]
fn bad_specs_are_rejected() {
    for peers in [
        &[][..],
        &["gateway"][..],
        &["a", "a"][..],
        &["Bad-Name"][..],
    ] {
        assert!(Testbed::up(&TestbedSpec::new(peers)).is_err(), "{peers:?}");
    }
}

#[test]
fn failed_up_removes_what_it_created() {
    let spec = TestbedSpec::new(&["frank", "grace"]);
    for stage in testbed::FAULT_STAGES {
        let err = match Testbed::up_failing_at(&spec, stage) {
            Ok(_) => panic!("fault at {stage} did not fail"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(stage), "{err}");
        // The error names the run, so its leftovers can be looked for.
        let run_id = err.split("run ").nth(1).unwrap().split(':').next().unwrap();
        let ns_prefix = format!("wgbpf-tb-{run_id}-");
        assert!(
            !netns_list().contains(&ns_prefix),
            "{stage}: {}",
            netns_list()
        );
        let prefix = format!("wgb{run_id}");
        assert!(
            !wg_sockets().iter().any(|s| s.starts_with(&prefix)),
            "{stage}"
        );
        let procs = Command::new("pgrep")
            .args(["-f", &prefix])
            .output()
            .unwrap();
        assert!(
            !procs.status.success(),
            "{stage}: wireguard-go left running"
        );
        assert!(!std::path::Path::new("/run/wgbpf-testbed")
            .join(run_id)
            .exists());
    }
}

#[test]
fn concurrent_meshes_do_not_collide() {
    let spec = TestbedSpec::new(&["alice", "bob"]);
    let meshes: Vec<Testbed> = thread::scope(|s| {
        let handles: Vec<_> = (0..2).map(|_| s.spawn(|| Testbed::up(&spec))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    let (m1, m2) = (&meshes[0], &meshes[1]);
    assert_ne!(m1.run_id(), m2.run_id());
    for (a, b) in m1.hosts().zip(m2.hosts()) {
        assert_ne!(a.netns, b.netns);
        assert_ne!(a.wg_if, b.wg_if);
        // Same addresses, separate namespaces.
        assert_eq!(a.tunnel_v4, b.tunnel_v4);
    }
    // Each mesh carries traffic independently.
    for m in &meshes {
        assert!(ping(m.host("alice"), v4(m.host("bob")), T).unwrap());
    }
    let footprints: Vec<_> = meshes.iter().map(footprint).collect();
    let mut meshes = meshes.into_iter();
    meshes.next().unwrap().down().unwrap();
    assert_gone(&footprints[0]);
    // The other mesh is unharmed by its sibling's teardown.
    let m2 = meshes.next().unwrap();
    assert!(ping(m2.host("alice"), v6(m2.host("bob")), T).unwrap());
    m2.down().unwrap();
    assert_gone(&footprints[1]);
}

#[test]
fn sweep_stale_leaves_live_meshes_alone() {
    let mesh = Testbed::up(&TestbedSpec::new(&["erin"])).unwrap();
    let swept = testbed::sweep_stale().unwrap();
    assert!(!swept.iter().any(|id| id == mesh.run_id()));
    assert!(ping(mesh.host("erin"), v4(&mesh.gateway), T).unwrap());
    mesh.down().unwrap();
}

/// Set in the child process of `sweep_stale_removes_runs_of_dead_processes`.
const CHILD_ENV: &str = "WGBPF_TESTBED_SWEEP_CHILD";

/// Not a test on its own: the body of the child process below, which brings
/// up a mesh, reports its run id and waits to be killed.
#[test]
#[ignore = "helper process for sweep_stale_removes_runs_of_dead_processes"]
fn sweep_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let mesh = Testbed::up(&TestbedSpec::new(&["heidi"])).unwrap();
    println!("READY {}", mesh.run_id());
    thread::sleep(Duration::from_secs(60));
}

#[test]
fn sweep_stale_removes_runs_of_dead_processes() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "sweep_child", "--nocapture"])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let run_id = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("READY ").map(str::to_owned));
    // SIGKILL: no destructor runs, the child's mesh is left behind.
    child.kill().unwrap();
    child.wait().unwrap();
    let run_id = run_id.expect("child brought up its mesh");
    let ns_prefix = format!("wgbpf-tb-{run_id}-");
    assert!(netns_list().contains(&ns_prefix));

    // A test process running concurrently may sweep it first; either way
    // it must be gone afterwards.
    let swept = testbed::sweep_stale().unwrap();
    let state_dir = std::path::Path::new("/run/wgbpf-testbed").join(&run_id);
    assert!(swept.contains(&run_id) || !state_dir.exists(), "{swept:?}");
    assert!(!netns_list().contains(&ns_prefix));
    let if_prefix = format!("wgb{run_id}");
    assert!(!wg_sockets().iter().any(|s| s.starts_with(&if_prefix)));
    let procs = Command::new("pgrep")
        .args(["-f", &if_prefix])
        .output()
        .unwrap();
    assert!(!procs.status.success(), "orphaned wireguard-go still runs");
}

/// Packet counters (RX, TX) of a host's tunnel device.
fn tunnel_counters(h: &Host) -> (u64, u64) {
    let out = h
        .run(&["ip", "-s", "-o", "link", "show", "dev", &h.wg_if])
        .unwrap();
    let packets = |dir: &str| -> u64 {
        let block = out.split(dir).nth(1).unwrap();
        let values = block.split('\\').nth(1).unwrap();
        values.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    (packets("RX:"), packets("TX:"))
}

#[test]
fn tunnels_carry_only_test_traffic() {
    let mesh = two_peers();
    // Right after `up`, nothing but what tests send may cross the tunnel
    // devices: no MLD reports, router solicitations or redirects (the
    // WireGuard keepalives travel on the underlay only).
    let before: Vec<_> = mesh.hosts().map(tunnel_counters).collect();
    thread::sleep(Duration::from_millis(2500));
    let after: Vec<_> = mesh.hosts().map(tunnel_counters).collect();
    assert_eq!(before, after);

    // One v6 echo from alice to bob: request and reply each enter and
    // leave the gateway once, and nothing else (no ICMPv6 redirect).
    let (gw, alice, bob) = (&mesh.gateway, mesh.host("alice"), mesh.host("bob"));
    assert!(ping(alice, v6(bob), T).unwrap());
    let (rx, tx) = tunnel_counters(gw);
    assert_eq!((rx, tx), (after[0].0 + 2, after[0].1 + 2));
    mesh.down().unwrap();
}
