//! `wgbpf monitor` over real WireGuard (wireguard-go in network
//! namespaces; root): bob's datagrams to alice are denied; the monitor
//! shows them with names, filtered by port and peer, as JSON — straight
//! from the ring buffer with no daemon, and from the daemon's control
//! socket when one runs, while the daemon's own deny log still gets every
//! event (the two do not compete).

mod common;

use std::{
    fs::File,
    net::IpAddr,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use common::{json_lines, stop, wgbpf, wgbpf_command, wgbpf_daemon_command, TempDir, Unload};
use serde_json::Value;
use testbed::{gateway_mesh_file, udp_send, Host, Testbed, TestbedSpec};

const POLICY: &str = r#"
[policy]

[[policy.rule]]
name = "alice-to-bob"
action = "accept"
from = ["alice"]
to = ["bob"]
proto = "udp"
ports = ["5000-5010"]
"#;

/// Starts `wgbpf monitor ARGS` in the gateway's namespace.
fn monitor(gw: &Host, args: &[&str]) -> Child {
    wgbpf_command(gw)
        .arg("monitor")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wgbpf monitor")
}

/// Bob sends denied datagrams to alice (to 5001 and 5002) until the
/// monitor exits; its JSON lines.
fn denied_until_done(bob: &Host, alice: &Host, mut child: Child) -> Vec<Value> {
    std::thread::sleep(Duration::from_millis(800));
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the monitor saw too little");
        for port in [5001, 5002] {
            let _ = udp_send(bob, IpAddr::V4(alice.tunnel_v4), port, 1, 32);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn check(lines: &[Value]) {
    assert_eq!(lines.len(), 3, "{lines:?}");
    for l in lines {
        assert_eq!(l["action"], "deny", "{l}");
        assert_eq!(l["src_peer"], "bob", "{l}");
        assert_eq!(l["dst_peer"], "alice", "{l}");
        assert_eq!(l["proto"], "udp", "{l}");
        assert_eq!(l["port"], 5001, "{l}");
        assert_eq!(l["rule"], "default deny", "{l}");
    }
}

#[test]
fn monitor_shows_denies_with_and_without_the_daemon() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice", "bob"])).expect("mesh");
    let (gw, alice, bob) = (&mesh.gateway, mesh.host("alice"), mesh.host("bob"));
    let dir =
        TempDir::create(std::env::temp_dir().join(format!("wgbpf-monitor-{}", mesh.run_id())));
    let cfg = dir.0.join("mesh.toml");
    std::fs::write(&cfg, gateway_mesh_file(&mesh, POLICY)).unwrap();
    let cfg = cfg.to_str().unwrap();
    let _unload = Unload(gw);
    let (ok, _, err) = wgbpf(gw, &["load", "-c", cfg]);
    assert!(ok, "{err}");
    let iface = gw.wg_if.as_str();

    // No daemon: from the ring buffer, names from the file.
    let child = monitor(
        gw,
        &[
            "-i", iface, "-c", cfg, "--json", "--port", "5001", "--count", "3",
        ],
    );
    check(&denied_until_done(bob, alice, child));
    // Allowed connections, sampled from the flow table: alice's datagrams
    // to bob, each from a new source port, are new flows.
    let child = monitor(
        gw,
        &[
            "-i", iface, "-c", cfg, "--json", "--allows", "--action", "allow", "--count", "2",
        ],
    );
    std::thread::sleep(Duration::from_millis(800));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut child = child;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "no allowed connection shown");
        let _ = udp_send(alice, IpAddr::V4(bob.tunnel_v4), 5003, 1, 32);
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    let allowed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(allowed.len(), 2, "{allowed:?}");
    for l in &allowed {
        assert_eq!(l["action"], "allow", "{l}");
        assert_eq!(l["src_peer"], "alice", "{l}");
        assert_eq!(l["dst_peer"], "bob", "{l}");
        assert_eq!(l["port"], 5003, "{l}");
        assert_eq!(l["rule"], "alice-to-bob", "{l}");
    }

    // A filter nothing matches: nothing, and it ends on time.
    let child = monitor(gw, &["-i", iface, "--peer", "carol", "--duration", "2"]);
    let lines = denied_until_done(bob, alice, child);
    assert!(lines.is_empty(), "{lines:?}");

    // The daemon runs: the monitor reads its stream; its log still has
    // every event.
    let log = dir.0.join("wgbpf.log");
    let mut daemon = wgbpf_daemon_command(gw)
        .args(["run", "-c", cfg, "--no-metrics", "--repair-interval", "0"])
        .args([
            "--log-format",
            "json",
            "--deny-log-rate",
            "1000",
            "--deny-log-burst",
            "1000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .expect("wgbpf run");
    struct Stop<'a>(&'a mut Child);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            stop(self.0, Duration::from_secs(20));
        }
    }
    let _stop = Stop(&mut daemon);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !wgbpf(gw, &["reload", "-i", iface, "--status"]).0 {
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    let child = monitor(
        gw,
        &["-i", iface, "--json", "--port", "5001", "--count", "3"],
    );
    let lines = denied_until_done(bob, alice, child);
    check(&lines);
    let logged: Vec<Value> = json_lines(&log)
        .into_iter()
        .filter(|l| l["message"] == "packet denied" && l["port"] == 5001)
        .collect();
    assert!(
        logged.len() >= 3,
        "the daemon's log lost events to the monitor: {logged:?}"
    );
    let times: Vec<&Value> = lines.iter().map(|l| &l["time"]).collect();
    for t in &times {
        assert!(
            logged.iter().any(|l| &l["time"] == *t),
            "the monitor's decision at {t} is not in the daemon's log"
        );
    }
}

/// The programs' own log: off by default (the monitor says so and shows
/// nothing while alice opens flows past her budget); `program_log = "info"`
/// in the file and a `load` replace the programs without a gap, after which
/// `monitor --program-log` shows the data plane refusing her flows a place
/// in the table.
#[test]
fn program_log_follows_the_file() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice", "bob"])).expect("mesh");
    let (gw, alice, bob) = (&mesh.gateway, mesh.host("alice"), mesh.host("bob"));
    let dir =
        TempDir::create(std::env::temp_dir().join(format!("wgbpf-monitor-log-{}", mesh.run_id())));
    let cfg = dir.0.join("mesh.toml");
    // One new flow a second per peer: alice's datagrams, each from a new
    // source port, soon go over it (they still pass, untracked).
    let flows = "[interface.flows]\nnew_per_second = 1\nnew_burst = 1\n\n";
    let file = |level: Option<&str>| {
        let base = gateway_mesh_file(&mesh, &format!("{flows}{POLICY}"));
        match level {
            Some(l) => base.replacen(
                "[interface]\n",
                &format!("[interface]\nprogram_log = \"{l}\"\n"),
                1,
            ),
            None => base,
        }
    };
    std::fs::write(&cfg, file(None)).unwrap();
    let cfg = cfg.to_str().unwrap();
    let _unload = Unload(gw);
    let (ok, _, err) = wgbpf(gw, &["load", "-c", cfg]);
    assert!(ok, "{err}");
    let iface = gw.wg_if.as_str();

    let watch = |secs: &str, count: Option<&str>| {
        let mut args = vec!["-i", iface, "--program-log", "--json", "--duration", secs];
        if let Some(c) = count {
            args.extend(["--count", c]);
        }
        let mut child = monitor(gw, &args);
        std::thread::sleep(Duration::from_millis(500));
        while child.try_wait().unwrap().is_none() {
            let _ = udp_send(alice, IpAddr::V4(bob.tunnel_v4), 5003, 1, 32);
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stderr}");
        let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        (lines, stderr)
    };
    let (lines, stderr) = watch("3", None);
    assert!(lines.is_empty(), "the log is off: {lines:?}");
    assert!(stderr.contains("the programs' log is off"), "{stderr}");

    std::fs::write(cfg, file(Some("info"))).unwrap();
    let (ok, out, err) = wgbpf(gw, &["load", "-c", cfg, "--json"]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(report["attach"]["program_log_changed"], true, "{report}");
    assert_eq!(report["attach"]["program_log"], "info", "{report}");
    assert_eq!(report["attach"]["adopted"], true, "{report}");

    let (lines, stderr) = watch("30", Some("3"));
    assert!(stderr.contains("at level info"), "{stderr}");
    assert_eq!(lines.len(), 3, "{lines:?}");
    for l in &lines {
        assert_eq!(l["level"], "info", "{l}");
        assert!(
            l["message"]
                .as_str()
                .unwrap()
                .contains("over its new-flow budget"),
            "{l}"
        );
        assert!(l["time"].as_str().unwrap().ends_with('Z'), "{l}");
    }
    // Loading the same file again replaces nothing.
    let (ok, out, err) = wgbpf(gw, &["load", "-c", cfg, "--json"]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["attach"]["program_log_changed"], false, "{report}");
}
