//! A flood of new flows against a victim connection, over real WireGuard
//! (wireguard-go in network namespaces) with `wgbpf run` enforcing on the
//! gateway and a flow table made small (`[interface.flows] table_size`) so
//! that the flood fills it many times over.
//!
//! mallory may send to udp/53 on the gateway and floods it from a new
//! source port per datagram, at full speed (the gateway echoes each); alice holds two long-lived TCP
//! connections to the gateway (the only rule: alice → gateway tcp/9000; the
//! gateway's side has no rule of its own, so its packets pass only as part
//! of the flow). One connection is idle during the flood, the other busy.
//!
//! 1. With a budget of new flows per peer, the flood cannot take the table:
//!    both connections work both ways afterwards, the server speaking first;
//!    the pressure counters show the budget at work; the daemon's sweep
//!    then removes the flood's dead openings and never a live connection.
//! 2. Without a budget (applied by a reload: the programs are replaced
//!    gap-free with the new settings), the same flood evicts the idle
//!    connection's entry (LRU): the server's first data after the flood is
//!    denied until alice's next packet picks the connection up. The busy
//!    connection keeps its entry: one entry per connection, kept fresh by
//!    either direction.
//! 3. A reload asking for another table size is refused, naming the fix.
//! 4. With the data plane gone, sweeps fail: counted, logged once.

mod common;

use std::{
    fs::File,
    io::{Read, Write},
    net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use aya::maps::IterableMap;
use common::{
    free_port, in_netns, json_lines, print_log_tails, sample_in, scrape, signal, stop, unload,
    wgbpf_daemon_command,
};
use testbed::{gateway_mesh_file, udp_echo, Host, Testbed, TestbedSpec};
use wgbpf::dataplane::{counters::Stats, open_maps};
use wgbpf_common::{map_v4, FlowKey, PROTO_TCP, PROTO_UDP};

const TABLE: u32 = 1024;
/// New flows the flood tries to open: many times the table.
const FLOOD: u16 = 20_000;
const RATE: u64 = 100;
const BURST: u64 = 200;
const SERVER_PORT: u16 = 9000;
const WAIT: Duration = Duration::from_secs(20);

const POLICY: &str = r#"
[policy]

[[policy.rule]]
name = "alice-service"
action = "accept"
from = ["alice"]
to = ["gateway"]
proto = "tcp"
ports = [9000]

[[policy.rule]]
name = "mallory-dns"
action = "accept"
from = ["mallory"]
to = ["gateway"]
proto = "udp"
ports = [53]
"#;

/// The `[interface.flows]` section: a small table, UDP flows dead 2 s after
/// their last packet, a sweep every second; `budget` sets the per-peer budget
/// (`None`: no budget).
fn flows_section(table: u32, budget: Option<(u64, u64)>) -> String {
    let (rate, burst) = budget.unwrap_or((0, 1));
    format!(
        "\n[interface.flows]\ntable_size = {table}\nnew_per_second = {rate}\nnew_burst = {burst}\n\
         other_opening = 2\nother_established = 2\nsweep_interval = 1\n"
    )
}

/// Stops the daemon, unloads, removes the scratch directory, even when an
/// assertion fails half way (the testbed cleans up its namespaces itself).
struct Cleanup {
    daemon: Option<Child>,
    gw: Host,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            stop(&mut d, Duration::from_secs(5));
        }
        if std::thread::panicking() {
            print_log_tails(&self.dir, &["wgbpf.log"], 40);
        }
        unload(&self.gw);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One TCP connection alice → gateway:9000, both ends held by the test.
struct Conn {
    client: TcpStream,
    server: TcpStream,
    client_port: u16,
}

impl Conn {
    fn open(listener: &TcpListener, alice: &Host, gw: &Host) -> Conn {
        let to = SocketAddr::new(IpAddr::V4(gw.tunnel_v4), SERVER_PORT);
        let client = in_netns(&alice.netns, move || {
            TcpStream::connect_timeout(&to, Duration::from_secs(5))
        })
        .expect("alice connects");
        let (server, _) = listener.accept().expect("accept");
        for s in [&client, &server] {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s.set_nodelay(true).unwrap();
        }
        let client_port = client.local_addr().unwrap().port();
        let mut c = Conn {
            client,
            server,
            client_port,
        };
        // Both directions once: the flow is established.
        c.client_says(b"hello");
        c.server_says(b"welcome");
        c
    }

    fn client_says(&mut self, msg: &[u8]) {
        self.client.write_all(msg).unwrap();
        assert_eq!(
            read_exact(&mut self.server, msg.len()).as_deref(),
            Some(msg)
        );
    }

    fn server_says(&mut self, msg: &[u8]) {
        self.server.write_all(msg).unwrap();
        assert_eq!(
            read_exact(&mut self.client, msg.len()).as_deref(),
            Some(msg)
        );
    }

    /// The flow-table key of this connection.
    fn key(&self, alice: &Host, gw: &Host) -> FlowKey {
        let (a, g) = (
            map_v4(alice.tunnel_v4.octets()),
            map_v4(gw.tunnel_v4.octets()),
        );
        FlowKey::of(&a, &g, self.client_port, SERVER_PORT, PROTO_TCP).0
    }
}

/// `n` bytes within the socket's read timeout, or `None`.
fn read_exact(s: &mut TcpStream, n: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).ok().map(|()| buf)
}

/// Keeps a connection busy in one direction (alice uploads, the gateway
/// reads and only acknowledges) until dropped.
struct Upload {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl Upload {
    fn start(c: &Conn) -> Upload {
        let stop = Arc::new(AtomicBool::new(false));
        let (mut client, mut server) =
            (c.client.try_clone().unwrap(), c.server.try_clone().unwrap());
        let s = stop.clone();
        let writer = std::thread::spawn(move || {
            let mut sent = 0u64;
            while !s.load(Ordering::SeqCst) {
                if client.write_all(&[7u8; 512]).is_err() {
                    break;
                }
                sent += 512;
                std::thread::sleep(Duration::from_millis(5));
            }
            sent
        });
        let s = stop.clone();
        let reader = std::thread::spawn(move || {
            let mut got = 0u64;
            let mut buf = [0u8; 4096];
            server
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            // Reads until told to stop, then drains what is in flight.
            let mut idle_after_stop = 0;
            while idle_after_stop < 5 {
                match server.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got += n as u64,
                    Err(_) if s.load(Ordering::SeqCst) => idle_after_stop += 1,
                    Err(_) => {}
                }
            }
            got
        });
        Upload {
            stop,
            threads: vec![writer, reader],
        }
    }

    /// Stops; returns (bytes sent, bytes received).
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let got = self.threads.pop().unwrap().join().unwrap();
        let sent = self.threads.pop().unwrap().join().unwrap();
        (sent, got)
    }
}

/// mallory sends one datagram to gateway:53 from each of `FLOOD` source
/// ports starting at `first_port`, as fast as it can.
fn flood(mallory: &Host, gw: &Host, first_port: u16) {
    let to = SocketAddr::new(IpAddr::V4(gw.tunnel_v4), 53);
    in_netns(&mallory.netns, move || {
        for i in 0..FLOOD {
            // A port taken already (wireguard-go's own) is skipped.
            match UdpSocket::bind(("0.0.0.0", first_port + i)) {
                Ok(s) => s.send_to(b"flood", to).map(drop)?,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
    .expect("flood");
}

/// Waits until the sink's count stops moving; returns it.
fn settled(sink: &testbed::Listener) -> usize {
    let mut last = usize::MAX;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = sink.served();
        if now == last {
            return now;
        }
        last = now;
    }
}

fn stats(iface: &str) -> Stats {
    open_maps(iface).expect("maps").stats().expect("stats")
}

fn has_flow(iface: &str, key: &FlowKey) -> bool {
    open_maps(iface).expect("maps").flows.get(key, 0).is_ok()
}

/// Entries of mallory's flood in the table (udp to port 53).
fn flood_entries(iface: &str) -> usize {
    let maps = open_maps(iface).expect("maps");
    maps.flows
        .keys()
        .filter_map(Result::ok)
        .filter(|k| k.proto == PROTO_UDP && (k.a_port == 53 || k.b_port == 53))
        .count()
}

/// Polls `f` until it holds or `WAIT` passes.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metric(gw: &Host, port: u16, series: &str) -> f64 {
    sample_in(&scrape(&gw.netns, port).expect("scrape"), series)
        .unwrap_or_else(|| panic!("{series} missing"))
}

fn write_file(cfg: &Path, mesh: &Testbed, flows: &str) {
    std::fs::write(cfg, gateway_mesh_file(mesh, POLICY) + flows).unwrap();
}

#[test]
fn a_flood_of_new_flows_leaves_other_peers_connections_working() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice", "mallory"])).expect("mesh");
    let (gw, alice, mallory) = (&mesh.gateway, mesh.host("alice"), mesh.host("mallory"));
    let iface = gw.wg_if.clone();
    let dir = std::env::temp_dir().join(format!("wgbpf-flood-{}", mesh.run_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cleanup = Cleanup {
        daemon: None,
        gw: gw.clone(),
        dir: dir.clone(),
    };
    let cfg = dir.join("mesh.toml");
    write_file(&cfg, &mesh, &flows_section(TABLE, Some((RATE, BURST))));
    let port = free_port(&gw.netns);
    let log = dir.join("wgbpf.log");
    cleanup.daemon = Some(
        wgbpf_daemon_command(gw)
            .arg("run")
            .arg("-c")
            .arg(&cfg)
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{port}"))
            .args(["--log-format", "json", "--repair-interval", "0"])
            .args(["--deny-log-rate", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("spawn wgbpf run"),
    );
    eventually("wgbpf run serves metrics", || {
        scrape(&gw.netns, port).is_ok()
    });
    // The file's table size is the map's.
    let maps = open_maps(&iface).expect("maps");
    assert_eq!(maps.flows.map().info().unwrap().max_entries(), TABLE);
    drop(maps);

    let listener = in_netns(&gw.netns, || {
        TcpListener::bind((Ipv6Addr::UNSPECIFIED, SERVER_PORT))
    })
    .expect("listen");
    // The gateway answers: the flood's entries are used, as a real flood's
    // would be (the kernel's LRU keeps entries never used again at the back,
    // behind every connection in use).
    let sink = udp_echo(gw, 53).expect("udp echo");
    let mut idle = Conn::open(&listener, alice, gw);
    let mut busy = Conn::open(&listener, alice, gw);
    let (idle_key, busy_key) = (idle.key(alice, gw), busy.key(alice, gw));
    assert!(has_flow(&iface, &idle_key) && has_flow(&iface, &busy_key));

    // 1. The flood against a budget of RATE/s, bursts of BURST.
    let before = stats(&iface);
    let started = Instant::now();
    let upload = Upload::start(&busy);
    flood(mallory, gw, 20_000);
    let received = settled(&sink) as u64;
    let elapsed = started.elapsed().as_secs_f64();
    let (sent, got) = upload.finish();
    let after = stats(&iface);
    assert!(
        sent > 0 && got == sent,
        "the upload went through: {got} of {sent}"
    );
    assert!(
        received > u64::from(TABLE) * 4,
        "the flood reached the gateway: {received} datagrams (the policy passes them all)"
    );
    let made = after.flow_new - before.flow_new;
    let over = after.flow_over_budget - before.flow_over_budget;
    let budget = BURST + (RATE as f64 * elapsed).ceil() as u64;
    eprintln!(
        "budget: {received} datagrams in {elapsed:.1} s, {made} entries made, {over} over budget"
    );
    assert!(
        made <= budget,
        "mallory opened {made} entries in {elapsed:.1} s; its budget allows {budget}"
    );
    assert!(
        made + over >= received,
        "every datagram that arrived was a new flow, tracked or over budget: {made} + {over} < {received}"
    );
    assert!(over >= received - budget, "over budget: {over}");
    assert_eq!(after.flow_insert_failed, before.flow_insert_failed);
    assert!(
        has_flow(&iface, &idle_key),
        "the idle connection's entry stays"
    );
    assert!(
        has_flow(&iface, &busy_key),
        "the busy connection's entry stays"
    );
    // Both connections work both ways, the server speaking first.
    idle.server_says(b"server first, after the flood");
    idle.client_says(b"and the client");
    busy.server_says(b"server first, after the flood");
    busy.client_says(b"and the client");

    // The sweep removes the flood's openings once dead (2 s), never the
    // live connections.
    let removed_before = metric(gw, port, "wgbpf_flow_sweep_removed_total");
    eventually("the sweep removes the flood's dead openings", || {
        flood_entries(&iface) == 0
    });
    let removed = metric(gw, port, "wgbpf_flow_sweep_removed_total") - removed_before;
    let expired_met = stats(&iface).flow_expired - after.flow_expired;
    eprintln!("sweep: {removed} removed, {expired_met} met dead by packets");
    assert!(
        removed as u64 + expired_met >= made,
        "the sweep removed {removed} (and packets met {expired_met}) of {made} dead openings"
    );
    assert!(metric(gw, port, "wgbpf_flow_sweeps_total{outcome=\"ok\"}") >= 1.0);
    assert_eq!(
        metric(gw, port, "wgbpf_flow_sweeps_total{outcome=\"error\"}"),
        0.0
    );
    assert!(has_flow(&iface, &idle_key) && has_flow(&iface, &busy_key));

    // 2. No budget, by a reload: the programs are replaced with the new
    // settings, the table (and the connections' entries) kept.
    write_file(&cfg, &mesh, &flows_section(TABLE, None));
    signal(cleanup.daemon.as_ref().unwrap(), libc::SIGHUP);
    eventually("the reload is logged", || {
        json_lines(&log).iter().any(|l| l["message"] == "reloaded")
    });
    let line = json_lines(&log)
        .into_iter()
        .find(|l| l["message"] == "reloaded")
        .unwrap();
    assert_eq!(line["flow_settings_changed"], true, "{line}");
    assert!(has_flow(&iface, &idle_key), "the reload kept the table");

    let before = stats(&iface);
    let upload = Upload::start(&busy);
    let sink_before = sink.served() as u64;
    flood(mallory, gw, 40_000);
    let received = settled(&sink) as u64 - sink_before;
    let (sent, got) = upload.finish();
    let after = stats(&iface);
    assert!(
        sent > 0 && got == sent,
        "the upload went through: {got} of {sent}"
    );
    let made = after.flow_new - before.flow_new;
    assert_eq!(after.flow_over_budget, before.flow_over_budget, "no budget");
    eprintln!("no budget: {received} datagrams, {made} entries made");
    assert!(
        made >= received && made > u64::from(TABLE) * 4,
        "without a budget every datagram opened an entry: {made} for {received}, table {TABLE}"
    );
    // LRU: the idle connection's entry went, the busy one's stayed.
    assert!(
        !has_flow(&iface, &idle_key),
        "the flood evicted the idle connection"
    );
    assert!(
        has_flow(&iface, &busy_key),
        "the busy connection kept its entry"
    );
    busy.server_says(b"busy: server first");
    busy.client_says(b"busy: client");
    // The server's first data is denied: its direction has no rule.
    idle.server.write_all(b"lost").unwrap();
    assert_eq!(
        read_exact(&mut idle.client, 4),
        None,
        "the server's data passed without the connection's entry"
    );
    // alice's next packet picks the connection up; the server's data,
    // retransmitted, then arrives.
    let pickups = stats(&iface).flow_pickups;
    idle.client.write_all(b"ping").unwrap();
    idle.client
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    assert_eq!(
        read_exact(&mut idle.client, 4).as_deref(),
        Some(&b"lost"[..])
    );
    assert_eq!(
        read_exact(&mut idle.server, 4).as_deref(),
        Some(&b"ping"[..])
    );
    assert!(stats(&iface).flow_pickups > pickups, "counted as a pickup");
    assert!(has_flow(&iface, &idle_key));

    // 3. Another table size: refused, the running data plane unchanged.
    let failures = metric(gw, port, "wgbpf_reload_failures_total");
    write_file(&cfg, &mesh, &flows_section(TABLE * 2, None));
    signal(cleanup.daemon.as_ref().unwrap(), libc::SIGHUP);
    eventually("the reload is refused", || {
        metric(gw, port, "wgbpf_reload_failures_total") > failures
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!("flow table of {TABLE} entries"))
            && text.contains(&format!("asks for {}", TABLE * 2))
            && text.contains("table_size"),
        "the refusal names the sizes and the setting"
    );
    let maps = open_maps(&iface).expect("maps");
    assert_eq!(maps.flows.map().info().unwrap().max_entries(), TABLE);
    drop(maps);
    idle.server_says(b"still enforcing, still working");

    // The data plane removed under the daemon (drift repair is off): the
    // sweeps fail, are counted, and the failure is logged once.
    unload(gw);
    eventually("a failed sweep is counted", || {
        metric(gw, port, "wgbpf_flow_sweeps_total{outcome=\"error\"}") >= 2.0
    });
    let failed = json_lines(&log)
        .iter()
        .filter(|l| l["message"] == "flow sweep failed")
        .count();
    assert_eq!(failed, 1, "logged once while it lasts");
    drop(cleanup);
}
