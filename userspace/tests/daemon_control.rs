//! `wgbpf run` under a service manager, over real WireGuard (wireguard-go
//! in network namespaces; root): the honest reload (`wgbpf reload` over
//! the control socket waits for the outcome and fails on a refused file),
//! systemd's notification protocol (`READY=1` once enforced, `RELOADING=1`,
//! `STATUS=`, `WATCHDOG=1`, `STOPPING=1`, read from a socket the test
//! binds as systemd would), one daemon per interface, a dead daemon's
//! socket replaced, `-i` checked against the file, the default metrics
//! port clear of the WireGuard exporters' 9586, and failures as JSON with
//! `--json`.

mod common;

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, TcpListener},
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use common::{
    in_netns, managed_mesh_file, print_log_tails, stop, unload, wgbpf_code, wgbpf_daemon_command,
};
use serde_json::Value;
use testbed::{udp_send, udp_sink, Host, Testbed, TestbedSpec};

const POLICY_V1: &str = r#"
[policy]

[[policy.rule]]
name = "alice-to-bob-udp"
action = "accept"
from = ["alice"]
to = ["bob"]
proto = "udp"
ports = ["5000-5010"]

[[policy.test]]
src = "bob"
proto = "udp"
deny = ["alice:5001"]
"#;

/// A file whose own test fails: every reload of it must be refused.
const FAILING_TEST: &str = r#"
[[policy.test]]
src = "alice"
proto = "udp"
accept = ["bob:6000"]
"#;

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
const STOP_GRACE: Duration = Duration::from_secs(20);
/// Given to the daemon as WATCHDOG_USEC: it pings every half of it.
const WATCHDOG_USEC: u64 = 400_000;
/// The daemon's default metrics port (docs/metrics.md, "Why 10586").
const DEFAULT_METRICS_PORT: u16 = 10586;

fn wait_until(what: &str, f: impl FnMut() -> bool) {
    common::wait_until(what, WAIT, f)
}

/// The datagrams a daemon sends to `$NOTIFY_SOCKET`, as systemd gets them.
struct NotifySocket {
    path: PathBuf,
    got: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl NotifySocket {
    fn bind(path: PathBuf) -> NotifySocket {
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(POLL)).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    g.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
        });
        NotifySocket { path, got, stop }
    }

    fn messages(&self) -> Vec<String> {
        self.got.lock().unwrap().clone()
    }

    /// Waits for a message containing `line` after the first `after`.
    fn wait_for(&self, line: &str, after: usize) -> (usize, String) {
        let mut found = None;
        wait_until(&format!("{line:?} notified"), || {
            found = self
                .messages()
                .into_iter()
                .enumerate()
                .skip(after)
                .find(|(_, m)| m.lines().any(|l| l == line));
            found.is_some()
        });
        found.unwrap()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Cleanup {
    gw: Host,
    dir: PathBuf,
    daemons: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for mut c in self.daemons.drain(..) {
            stop(&mut c, STOP_GRACE);
        }
        unload(&self.gw);
        if std::thread::panicking() {
            print_log_tails(&self.dir, &["wgbpf.log", "wgbpf2.log", "wgbpf3.log"], 60);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn_daemon(gw: &Host, cfg: &Path, notify: &Path, log: &Path, extra: &[&str]) -> Child {
    wgbpf_daemon_command(gw)
        .env("NOTIFY_SOCKET", notify)
        .env("WATCHDOG_USEC", WATCHDOG_USEC.to_string())
        .env_remove("WATCHDOG_PID")
        .args(["run", "-c"])
        .arg(cfg)
        .args(["--log-format", "json", "--repair-interval", "0"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(log).unwrap())
        .spawn()
        .expect("spawn wgbpf run")
}

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Alice's datagrams to bob on `port` arrive (resent until one does).
fn delivered(alice: &Host, bob: &Host, sink: &testbed::Listener, port: u16) {
    let before = sink.served();
    wait_until(&format!("alice reaches bob:{port}"), || {
        let _ = udp_send(alice, IpAddr::V4(bob.tunnel_v4), port, 1, 32);
        std::thread::sleep(Duration::from_millis(50));
        sink.served() > before
    });
}

#[test]
fn reload_waits_for_the_outcome_and_systemd_hears_each_step() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice", "bob"])).expect("mesh");
    let (alice, bob) = (mesh.host("alice"), mesh.host("bob"));
    let gw = mesh.gateway.clone();
    let iface = gw.wg_if.clone();
    let dir = std::env::temp_dir().join(format!("wgbpf-control-{}", mesh.run_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cleanup = Cleanup {
        gw: gw.clone(),
        dir: dir.clone(),
        daemons: Vec::new(),
    };
    let key = mesh.private_key_file(&gw);
    let cfg = dir.join("mesh.toml");
    let v1 = managed_mesh_file(&mesh, POLICY_V1, &key);
    std::fs::write(&cfg, &v1).unwrap();
    let notify = NotifySocket::bind(dir.join("notify.sock"));
    let bob_sink = udp_sink(bob, 5001).unwrap();
    let cfg_s = cfg.to_str().unwrap();

    // --- -i that the file does not name: refused, nothing applied.
    let (code, _, err) = wgbpf_code(&gw, &["run", "-c", cfg_s, "-i", "other0", "--no-metrics"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("names interface {iface}"))
            && err.contains("this daemon is for other0"),
        "{err}"
    );
    let (code, out, _) = wgbpf_code(&gw, &["show", "-i", &iface, "--json"]);
    assert!(
        code != 0 || !out.contains("\"policy_version\""),
        "a refused start applied something: {out}"
    );

    // --- Start with the default metrics address while another program
    // (a WireGuard exporter) holds 9586 in the gateway's namespace.
    let exporter = in_netns(&gw.netns, || TcpListener::bind((Ipv4Addr::LOCALHOST, 9586))).unwrap();
    cleanup.daemons.push(spawn_daemon(
        &gw,
        &cfg,
        &notify.path,
        &dir.join("wgbpf.log"),
        &["-i", &iface],
    ));
    let (ready_at, ready) = notify.wait_for("READY=1", 0);
    // Readiness means enforced: the data plane equals the file right now.
    let (code, out, err) = wgbpf_code(&gw, &["audit", "-c", cfg_s, "--json"]);
    assert_eq!(code, 0, "audit at READY=1: {out}{err}");
    let v1_version: u64 = json(&wgbpf_code(&gw, &["reload", "-i", &iface, "--status", "--json"]).1)
        ["policy_version"]
        .as_u64()
        .unwrap();
    assert!(
        ready.contains(&format!(
            "STATUS=enforcing policy version {v1_version} on {iface}"
        )),
        "{ready}"
    );
    let metrics = common::scrape(&gw.netns, DEFAULT_METRICS_PORT)
        .expect("metrics on the default port while 9586 is taken");
    assert!(metrics.contains("wgbpf_"), "{metrics}");
    drop(exporter);
    delivered(alice, bob, &bob_sink, 5001);

    // --- The watchdog is pinged every WATCHDOG_USEC / 2.
    let pings = |m: &[String]| m.iter().filter(|m| m.as_str() == "WATCHDOG=1").count();
    let before = pings(&notify.messages());
    std::thread::sleep(Duration::from_millis(2000));
    let after = pings(&notify.messages());
    assert!(
        after - before >= 3,
        "{} watchdog pings in 2 s at a 200 ms interval",
        after - before
    );

    // --- A good change: reload succeeds, says the new version, and the
    // daemon told systemd it was reloading, then ready again.
    let v2 = v1.replace("ports = [\"5000-5010\"]", "ports = [\"5000-5001\"]");
    assert_ne!(v1, v2);
    std::fs::write(&cfg, &v2).unwrap();
    let mark = notify.messages().len();
    let (code, out, err) = wgbpf_code(&gw, &["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    let v2_version = v1_version + 1;
    assert!(
        out.contains(&format!("{iface}: reloaded"))
            && out.contains(&format!("policy version {v2_version}")),
        "{out}"
    );
    let (reloading_at, _) = notify.wait_for("RELOADING=1", mark);
    let (ready2_at, ready2) = notify.wait_for("READY=1", reloading_at);
    assert!(ready2_at > reloading_at && reloading_at > ready_at);
    assert!(
        ready2.contains(&format!("enforcing policy version {v2_version}")),
        "{ready2}"
    );
    let (code, out, err) = wgbpf_code(&gw, &["audit", "-c", cfg_s]);
    assert_eq!(code, 0, "{out}{err}");

    // --- A file whose own test fails: `wgbpf reload` exits 1 naming the
    // failing test, and the running policy stays (version and traffic).
    std::fs::write(&cfg, format!("{v2}{FAILING_TEST}")).unwrap();
    let mark = notify.messages().len();
    let (code, out, err) = wgbpf_code(&gw, &["reload", "-i", &iface]);
    assert_eq!(code, 1, "a refused reload must fail: {out}{err}");
    assert!(
        err.contains("reload refused")
            && err.contains(&format!("still enforcing policy version {v2_version}"))
            && err.contains("bob:6000"),
        "{err}"
    );
    let (_, refused) = notify.wait_for("READY=1", mark);
    assert!(refused.contains("STATUS=reload refused"), "{refused}");
    let (code, out, _) = wgbpf_code(&gw, &["reload", "--json"]);
    assert_eq!(code, 1);
    let reply = json(&out);
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(reply["policy_version"], v2_version, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("bob:6000"),
        "{reply}"
    );
    let status = json(&wgbpf_code(&gw, &["reload", "--status", "--json"]).1);
    assert_eq!(status["policy_version"], v2_version, "{status}");
    delivered(alice, bob, &bob_sink, 5001);

    // --- A second daemon for the same interface is refused before it
    // applies anything; the first still answers.
    std::fs::write(&cfg, &v2).unwrap();
    let mut second = spawn_daemon(
        &gw,
        &cfg,
        &notify.path,
        &dir.join("wgbpf2.log"),
        &["--no-metrics"],
    );
    let status = second.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let said = std::fs::read_to_string(dir.join("wgbpf2.log")).unwrap();
    assert!(said.contains("already serves"), "{said}");
    let status = json(&wgbpf_code(&gw, &["reload", "--status", "--json"]).1);
    assert_eq!(status["policy_version"], v2_version, "{status}");

    // --- A hostile client: an unknown request is refused with a reason; a
    // request without end, and one that says nothing, are cut off; the
    // daemon answers the next client as before.
    {
        use std::io::{Read, Write};
        let sock = format!("/run/wgbpf/{iface}.sock");
        let ask_raw = |bytes: &[u8]| {
            let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = c.write_all(bytes);
            let mut reply = String::new();
            let _ = c.read_to_string(&mut reply);
            reply
        };
        let reply = json(&ask_raw(b"reboot\n"));
        assert_eq!(reply["ok"], false, "{reply}");
        assert!(
            reply["error"].as_str().unwrap().contains("unknown request"),
            "{reply}"
        );
        let flood = vec![b'x'; 1 << 20];
        let reply = ask_raw(&flood);
        assert!(
            reply.is_empty() || reply.contains("unknown request"),
            "an endless request: {reply}"
        );
        let silent = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        let status = json(&wgbpf_code(&gw, &["reload", "--status", "--json"]).1);
        assert_eq!(status["policy_version"], v2_version, "{status}");
        drop(silent);
    }

    // --- No daemon for an interface: a clear error, as JSON with --json.
    let (code, out, err) = wgbpf_code(&gw, &["reload", "-i", "nosuch0", "--json"]);
    assert_eq!(code, 1, "{err}");
    let reply = json(&out);
    assert_eq!(reply["ok"], false);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("no `wgbpf run` serves nosuch0"),
        "{reply}"
    );

    // --- SIGTERM: STOPPING=1 and the socket removed.
    let socket = PathBuf::from(format!("/run/wgbpf/{iface}.sock"));
    assert!(socket.exists());
    let mark = notify.messages().len();
    let mut first = cleanup.daemons.remove(0);
    stop(&mut first, STOP_GRACE);
    notify.wait_for("STOPPING=1", mark);
    assert!(!socket.exists(), "a clean exit removes the control socket");

    // --- SIGKILL leaves the socket behind; the next daemon replaces it.
    let mut killed = spawn_daemon(
        &gw,
        &cfg,
        &notify.path,
        &dir.join("wgbpf3.log"),
        &["--no-metrics"],
    );
    let mark = notify.messages().len();
    notify.wait_for("READY=1", mark);
    killed.kill().unwrap();
    let _ = killed.wait();
    assert!(socket.exists(), "SIGKILL cannot remove the socket");
    cleanup.daemons.push(spawn_daemon(
        &gw,
        &cfg,
        &notify.path,
        &dir.join("wgbpf.log"),
        &["--no-metrics"],
    ));
    let mark = notify.messages().len();
    notify.wait_for("READY=1", mark);
    let status = json(&wgbpf_code(&gw, &["reload", "--status", "--json"]).1);
    assert_eq!(status["ok"], true, "{status}");
    assert_eq!(status["interface"], iface.as_str(), "{status}");
}
