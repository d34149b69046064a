//! `wgbpf run`'s drift repair over real WireGuard (wireguard-go in network
//! namespaces; root).
//!
//! The daemon runs in the gateway's namespace with the unit's capabilities
//! and a mesh file that manages WireGuard (`private_key_file`). The test
//! makes drift with standard tools — `wg set` (a peer removed, a peer's
//! AllowedIPs changed, a stranger added, the listen port changed), `tc
//! filter del` (clsact) or a detached tcx link (`BPF_LINK_DETACH`, what
//! `bpftool link detach` does), `ip link set down`, `wgbpf load` with
//! another policy — and checks each is put back within a bounded wait,
//! counted in `wgbpf_drift_repairs_total{kind}` and logged, while bob's
//! denied datagrams to alice (sent all along from a thread) never arrive.
//! Also: the tunnel metrics on a scrape, and `promtool check metrics`.

mod common;

use std::{
    fs::File,
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use common::{
    free_port, json_lines, managed_mesh_file, print_log_tails, promtool_check, sample_in, stop,
    unload, wgbpf_daemon_command, wgbpf_said,
};
use serde_json::Value;
use testbed::{gateway_mesh_file, udp_send, udp_sink, Host, Testbed, TestbedSpec};

const POLICY: &str = r#"
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

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);
const PAYLOAD: usize = 64;
/// How long the daemon has to exit on SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- helpers

fn wait_until(what: &str, f: impl FnMut() -> bool) {
    common::wait_until(what, WAIT, f)
}

/// Bob sends denied datagrams to alice (udp/5001) every 50 ms until
/// stopped, whatever drift the test is making meanwhile.
struct DeniedSender {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl DeniedSender {
    fn start(bob: &Host, to: IpAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let (s, n, bob) = (stop.clone(), sent.clone(), bob.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if udp_send(&bob, to, 5001, 1, PAYLOAD).is_ok() {
                    n.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for DeniedSender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Stops the daemon and unloads, even when an assertion failed.
struct Cleanup {
    gw: Host,
    dir: PathBuf,
    daemon: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            stop(&mut c, STOP_GRACE);
        }
        unload(&self.gw);
        if std::thread::panicking() {
            print_log_tails(&self.dir, &["wgbpf.log"], 60);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Test {
    gw: Host,
    dir: PathBuf,
    port: u16,
}

impl Test {
    fn start(mesh: &Testbed, tag: &str, attach: &str) -> (Test, Cleanup) {
        let gw = mesh.gateway.clone();
        let dir = std::env::temp_dir().join(format!("wgbpf-drift-{tag}-{}", mesh.run_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cleanup = Cleanup {
            gw: gw.clone(),
            dir: dir.clone(),
            daemon: None,
        };
        let text = managed_mesh_file(mesh, POLICY, &mesh.private_key_file(&gw));
        let cfg = dir.join("mesh.toml");
        std::fs::write(&cfg, text).unwrap();
        let t = Test {
            port: free_port(&gw.netns),
            gw,
            dir,
        };
        let log = File::create(t.dir.join("wgbpf.log")).unwrap();
        cleanup.daemon = Some(
            wgbpf_daemon_command(&t.gw)
                .arg("run")
                .arg("-c")
                .arg(&cfg)
                .arg("--metrics-addr")
                .arg(format!("127.0.0.1:{}", t.port))
                .args(["--log-format", "json", "--attach", attach])
                .args(["--repair-interval", "1", "--deny-log-rate", "0"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn wgbpf run"),
        );
        let daemon = cleanup.daemon.as_mut().unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = daemon.try_wait() {
                let text = std::fs::read_to_string(t.dir.join("wgbpf.log")).unwrap_or_default();
                panic!("wgbpf run exited ({status}):\n{text}");
            }
            if t.scrape().is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "wgbpf run did not serve metrics");
            std::thread::sleep(POLL);
        }
        (t, cleanup)
    }

    fn scrape(&self) -> std::io::Result<String> {
        common::scrape(&self.gw.netns, self.port)
    }

    fn sample(&self, series: &str) -> Option<f64> {
        sample_in(&self.scrape().ok()?, series)
    }

    fn repairs(&self, kind: &str) -> f64 {
        self.sample(&format!("wgbpf_drift_repairs_total{{kind=\"{kind}\"}}"))
            .unwrap_or_else(|| panic!("no wgbpf_drift_repairs_total{{kind=\"{kind}\"}}"))
    }

    /// Waits until the repair counter of `kind` exceeds `before`.
    fn wait_repaired(&self, kind: &str, before: f64) -> f64 {
        let mut now = before;
        wait_until(&format!("a {kind} repair counted"), || {
            now = self.repairs(kind);
            now > before
        });
        now
    }

    fn log_lines(&self) -> Vec<Value> {
        json_lines(&self.dir.join("wgbpf.log"))
    }

    /// A "drift repaired" log line of `kind` whose drift mentions `word`.
    fn wait_logged(&self, kind: &str, word: &str) -> Value {
        let mut found = None;
        wait_until(&format!("{kind} repair logged ({word})"), || {
            found = self.log_lines().into_iter().find(|l| {
                l["message"] == "drift repaired"
                    && l["kind"] == kind
                    && l["drift"].as_str().is_some_and(|d| d.contains(word))
            });
            found.is_some()
        });
        found.unwrap()
    }

    fn wg_dump(&self) -> String {
        self.gw
            .run(&["wg", "show", &self.gw.wg_if, "dump"])
            .unwrap()
    }
}

/// Alice's datagrams to bob (allowed) arrive again: resent every 250 ms
/// until one does (a repaired tunnel may need a new handshake first).
fn allowed_flows(alice: &Host, bob: &Host, sink: &testbed::Listener) {
    let before = sink.served();
    wait_until("alice reaches bob", || {
        let _ = udp_send(alice, IpAddr::V4(bob.tunnel_v4), 5002, 1, PAYLOAD);
        std::thread::sleep(Duration::from_millis(50));
        sink.served() > before
    });
}

fn promtool_ok(text: &str, dir: &Path) {
    let (ok, said) = promtool_check(text, dir);
    assert!(ok, "promtool check metrics: {said}\n{text}");
    assert!(said.trim().is_empty(), "promtool lint: {said}");
}

// ---------------------------------------------------------------- tests

/// clsact: WireGuard drift, a filter deleted with tc, the link down, another
/// policy loaded; the tunnel metrics.
#[test]
fn drift_is_repaired_clsact() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice", "bob"])).expect("mesh");
    let (alice, bob) = (mesh.host("alice"), mesh.host("bob"));
    let (t, mut cleanup) = Test::start(&mesh, "clsact", "clsact");
    let gw = t.gw.clone();
    let iface = gw.wg_if.clone();
    let alice_5001 = udp_sink(alice, 5001).unwrap();
    let bob_5002 = udp_sink(bob, 5002).unwrap();
    for k in [
        "wireguard_peer",
        "wireguard_device",
        "program",
        "policy",
        "link",
    ] {
        assert_eq!(t.repairs(k), 0.0, "{k}: nothing drifted at start");
    }
    assert_eq!(
        t.sample("wgbpf_program_attached{program=\"ingress\",mode=\"clsact\"}"),
        Some(1.0)
    );
    allowed_flows(alice, bob, &bob_5002);
    let denied = DeniedSender::start(bob, IpAddr::V4(alice.tunnel_v4));

    // --- WireGuard: bob removed by hand.
    gw.run(&["wg", "set", &iface, "peer", &bob.public_key, "remove"])
        .unwrap();
    t.wait_repaired("wireguard_peer", 0.0);
    wait_until("bob back on the device", || {
        t.wg_dump().contains(&bob.public_key)
    });
    let line = t.wait_logged("wireguard_peer", "bob");
    assert!(line["action"].as_str().unwrap().contains("added"), "{line}");
    allowed_flows(alice, bob, &bob_5002);

    // --- alice's AllowedIPs narrowed, and a stranger added.
    let before = t.repairs("wireguard_peer");
    let stranger = wgbpf::wg::Key::from_bytes([7; 32]).to_base64();
    gw.run(&[
        "wg",
        "set",
        &iface,
        "peer",
        &alice.public_key,
        "allowed-ips",
        &format!("{}/32", alice.tunnel_v4),
        "peer",
        &stranger,
        "allowed-ips",
        "10.99.0.0/24",
    ])
    .unwrap();
    wait_until("alice's AllowedIPs and no stranger", || {
        let d = t.wg_dump();
        !d.contains(&stranger)
            && d.lines().any(|l| {
                l.starts_with(&alice.public_key) && l.contains(&alice.tunnel_v6.to_string())
            })
    });
    wait_until("two more peer repairs", || {
        t.repairs("wireguard_peer") >= before + 2.0
    });
    t.wait_logged("wireguard_peer", "allowed_ips");
    t.wait_logged("wireguard_peer", "not in the file");

    // --- The listen port changed.
    gw.run(&["wg", "set", &iface, "listen-port", "51821"])
        .unwrap();
    t.wait_repaired("wireguard_device", 0.0);
    wait_until("listen port 51820 again", || {
        t.gw.run(&["wg", "show", &iface, "listen-port"])
            .is_ok_and(|p| p.trim() == "51820")
    });
    allowed_flows(alice, bob, &bob_5002);

    // --- The ingress filter deleted with tc: the pinned program comes
    // back; egress judged bob's datagrams meanwhile.
    gw.run(&["tc", "filter", "del", "dev", &iface, "ingress"])
        .unwrap();
    t.wait_repaired("program", 0.0);
    wait_until("ingress filter back", || {
        gw.run(&["tc", "filter", "show", "dev", &iface, "ingress"])
            .is_ok_and(|o| o.contains("wgbpf_ingress"))
    });
    assert_eq!(
        t.sample("wgbpf_program_attached{program=\"ingress\",mode=\"clsact\"}"),
        Some(1.0)
    );
    t.wait_logged("program", "wgbpf_ingress");
    // The same pinned program: the policy version did not move.
    assert_eq!(t.sample("wgbpf_policy_version"), Some(1.0));

    // --- The link set down.
    gw.run(&["ip", "link", "set", "dev", &iface, "down"])
        .unwrap();
    t.wait_repaired("link", 0.0);
    wait_until("link up", || {
        gw.run(&["ip", "-o", "link", "show", "dev", &iface])
            .is_ok_and(|o| o.contains(",UP"))
    });
    allowed_flows(alice, bob, &bob_5002);

    // --- Another policy loaded behind the daemon's back (stricter: bob
    // stays denied); the file's comes back, atomically.
    let other = t.dir.join("other.toml");
    std::fs::write(&other, gateway_mesh_file(&mesh, "[policy]\n")).unwrap();
    let (ok, out) = wgbpf_said(&gw, &["load", "-c", other.to_str().unwrap()]);
    assert!(ok, "{out}");
    t.wait_repaired("policy", 0.0);
    wait_until("policy version 3", || {
        t.sample("wgbpf_policy_version") == Some(3.0)
    });
    allowed_flows(alice, bob, &bob_5002);

    // --- Tunnel metrics on a scrape.
    let text = t.scrape().unwrap();
    let rx = sample_in(&text, "wireguard_tunnel_bytes_in_total{peer=\"alice\"}").unwrap();
    let tx = sample_in(&text, "wireguard_tunnel_bytes_out_total{peer=\"bob\"}").unwrap();
    assert!(rx > 0.0 && tx > 0.0, "{text}");
    let shake = sample_in(
        &text,
        "wireguard_tunnel_last_handshake_timestamp_seconds{peer=\"alice\"}",
    )
    .unwrap();
    assert!(shake > 1.6e9, "{text}");
    assert!(
        sample_in(&text, "wireguard_tunnel_handshakes_total{peer=\"bob\"}").unwrap() >= 1.0,
        "{text}"
    );
    assert_eq!(sample_in(&text, "wgbpf_wireguard_up"), Some(1.0));
    promtool_ok(&text, &t.dir);
    allowed_flows(alice, bob, &bob_5002);
    wait_until("alice's rx grows", || {
        let _ = udp_send(alice, IpAddr::V4(bob.tunnel_v4), 5002, 3, PAYLOAD);
        t.sample("wireguard_tunnel_bytes_in_total{peer=\"alice\"}")
            .is_some_and(|v| v > rx)
    });

    // --- Bob's denied datagrams never reached alice.
    let sent = denied.finish();
    assert!(sent > 0);
    assert_eq!(alice_5001.served(), 0, "denied datagrams reached alice");
    assert_eq!(t.sample("wgbpf_drift_pass_errors_total"), Some(0.0));

    let mut daemon = cleanup.daemon.take().unwrap();
    assert!(stop(&mut daemon, STOP_GRACE).is_some_and(|s| s.success()));
    drop(cleanup);
    mesh.down().unwrap();
}

/// tcx: one link detached (BPF_LINK_DETACH on the pinned link, as
/// `bpftool link detach` does) is attached again, the other never
/// touched; denied traffic stays denied throughout.
#[test]
fn detached_tcx_link_is_reattached() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice", "bob"])).expect("mesh");
    let (alice, bob) = (mesh.host("alice"), mesh.host("bob"));
    let (t, mut cleanup) = Test::start(&mesh, "tcx", "tcx");
    let gw = t.gw.clone();
    let alice_5001 = udp_sink(alice, 5001).unwrap();
    let bob_5002 = udp_sink(bob, 5002).unwrap();
    assert_eq!(
        t.sample("wgbpf_program_attached{program=\"egress\",mode=\"tcx\"}"),
        Some(1.0)
    );
    allowed_flows(alice, bob, &bob_5002);
    let denied = DeniedSender::start(bob, IpAddr::V4(alice.tunnel_v4));

    let pin = wgbpf::dataplane::pin_dir(&gw.wg_if).join("link_egress");
    // BPF_OBJ_GET gives the pinned link's fd; then BPF_LINK_DETACH.
    let fd = bpf_obj_get(&pin).expect("open the pinned link");
    bpf_link_detach(fd).expect("detach the egress link");
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    t.wait_repaired("program", 0.0);
    wait_until("egress attached again (tcx)", || {
        t.sample("wgbpf_program_attached{program=\"egress\",mode=\"tcx\"}") == Some(1.0)
    });
    assert!(pin.exists(), "the new link is pinned in place");
    assert_eq!(
        t.sample("wgbpf_program_attached{program=\"ingress\",mode=\"tcx\"}"),
        Some(1.0)
    );
    t.wait_logged("program", "wgbpf_egress");
    assert_eq!(t.sample("wgbpf_policy_version"), Some(1.0));
    allowed_flows(alice, bob, &bob_5002);
    // A second detach is repaired too (the renamed pin is a real link).
    let fd = bpf_obj_get(&pin).expect("open the new pinned link");
    bpf_link_detach(fd).expect("detach again");
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    wait_until("second repair", || t.repairs("program") >= 2.0);
    let (ok, out) = wgbpf_said(
        &gw,
        &["audit", "-c", t.dir.join("mesh.toml").to_str().unwrap()],
    );
    assert!(ok, "audit after repair: {out}");

    let sent = denied.finish();
    assert!(sent > 0);
    assert_eq!(alice_5001.served(), 0, "denied datagrams reached alice");
    let mut daemon = cleanup.daemon.take().unwrap();
    assert!(stop(&mut daemon, STOP_GRACE).is_some_and(|s| s.success()));
    drop(cleanup);
    mesh.down().unwrap();
}

// bpf(2) for the test's drift: BPF_OBJ_GET and BPF_LINK_DETACH.
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_DETACH: libc::c_long = 34;

fn bpf_obj_get(path: &Path) -> std::io::Result<i32> {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // union bpf_attr for BPF_OBJ_GET: pathname (u64), bpf_fd, file_flags.
    let mut attr = [0u64; 16];
    attr[0] = c.as_ptr() as u64;
    // SAFETY: attr is large enough and zeroed; the path outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd as i32)
}

fn bpf_link_detach(fd: i32) -> std::io::Result<()> {
    // union bpf_attr for BPF_LINK_DETACH: link_fd (u32).
    let mut attr = [0u64; 16];
    attr[0] = fd as u32 as u64;
    // SAFETY: as above.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_DETACH,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Tampering with the data plane itself while the daemon runs, tcx and
/// clsact: a policy entry deleted, a peer's identity entry deleted, the
/// pin directory removed. The daemon is stopped (SIGSTOP) while the test
/// tampers and `wgbpf audit` reports it; once continued, it repairs it
/// within 5 seconds and counts it. bob's denied datagrams never reach
/// alice, before, during or after; and a policy reloaded afterwards
/// (SIGHUP) that allows them is obeyed (no program of the data plane
/// that was unpinned is left judging with its old maps).
#[test]
fn tampered_maps_and_pins_are_repaired_tcx() {
    tampered_maps_and_pins_are_repaired("tcx");
}

#[test]
fn tampered_maps_and_pins_are_repaired_clsact() {
    tampered_maps_and_pins_are_repaired("clsact");
}

fn tampered_maps_and_pins_are_repaired(attach: &str) {
    use common::signal;
    use wgbpf_common::{map_v4, IpCacheKey};

    let mesh = Testbed::up(&TestbedSpec::new(&["alice", "bob"])).expect("mesh");
    let (alice, bob) = (mesh.host("alice"), mesh.host("bob"));
    let (t, cleanup) = Test::start(&mesh, &format!("tamper-{attach}"), attach);
    let gw = t.gw.clone();
    let iface = gw.wg_if.clone();
    let cfg = t.dir.join("mesh.toml");
    let cfg = cfg.to_str().unwrap().to_string();
    let alice_5001 = udp_sink(alice, 5001).unwrap();
    let bob_5002 = udp_sink(bob, 5002).unwrap();
    allowed_flows(alice, bob, &bob_5002);
    let denied = DeniedSender::start(bob, IpAddr::V4(alice.tunnel_v4));
    let daemon = cleanup.daemon.as_ref().unwrap();
    let audit = || {
        let (ok, out) = wgbpf_said(&gw, &["audit", "-c", &cfg]);
        (ok, out)
    };
    // Tampers with the daemon stopped, checks what audit says, continues
    // it and waits for the repair of `kind`, counted: the time it took. The
    // bound is in passes, not seconds (a shared 2-core machine's load
    // decides how long loading a data plane takes): the repair is made by
    // the first pass after the daemon continues (or the one a SIGSTOP
    // interrupted), each pass 1 s apart here, 5 s by default.
    let passes = || t.sample("wgbpf_drift_passes_total").expect("passes");
    let tamper = |what: &str, kind: &str, says: &str, f: &dyn Fn()| -> Duration {
        let before = t.repairs(kind);
        let passes_before = passes();
        signal(daemon, libc::SIGSTOP);
        f();
        let (ok, out) = audit();
        signal(daemon, libc::SIGCONT);
        let started = Instant::now();
        assert!(!ok && out.contains(says), "{what}: audit said {out}");
        wait_until(&format!("{what}: repaired"), || t.repairs(kind) > before);
        let took = started.elapsed();
        let passes_taken = passes() - passes_before;
        assert!(
            passes_taken <= 2.0,
            "{what}: repaired after {passes_taken} passes ({took:?})"
        );
        let (ok, out) = audit();
        assert!(ok, "{what}: audit after the repair: {out}");
        allowed_flows(alice, bob, &bob_5002);
        took
    };
    let active_policy_keys = || {
        let maps = wgbpf::dataplane::open_maps(&iface).unwrap();
        let (slot, _) = maps.active_slot().unwrap();
        maps.policy
            .keys()
            .map(|k| k.unwrap())
            .filter(|k| k.slot as u32 == slot)
            // The same entry in either slot.
            .map(|k| wgbpf_common::PolicyKey { slot: 0, ..k })
            .collect::<Vec<_>>()
    };

    // --- One policy entry of the active slot deleted (bpf syscall).
    let keys = active_policy_keys();
    assert!(!keys.is_empty());
    let took_policy = tamper("a policy entry deleted", "policy", "differs", &|| {
        let mut maps = wgbpf::dataplane::open_maps(&iface).unwrap();
        let (slot, _) = maps.active_slot().unwrap();
        let key = wgbpf_common::PolicyKey {
            slot: slot as u8,
            ..keys[0]
        };
        maps.policy.remove(&key).unwrap();
    });
    assert!(active_policy_keys().contains(&keys[0]), "the entry is back");

    // --- bob's identity (his /32 in the hosts map) deleted.
    let took_identity = tamper("bob's identity deleted", "policy", "differs", &|| {
        let mut maps = wgbpf::dataplane::open_maps(&iface).unwrap();
        let (slot, _) = maps.active_slot().unwrap();
        let key = IpCacheKey {
            slot: slot as u8,
            addr: map_v4(bob.tunnel_v4.octets()),
        };
        maps.hosts.remove(&key).unwrap();
    });

    // --- The whole pin directory removed: the data plane the daemon still
    // holds is pinned again, its counters and policy version kept.
    let denied_by_bob = || {
        let c = common::counters(&gw, &cfg);
        common::counter(&c, "bob", "ingress", "denied_packets")
    };
    let version = t.sample("wgbpf_policy_version").unwrap();
    let denied_before = denied_by_bob();
    assert!(denied_before > 0);
    let dir = wgbpf::dataplane::pin_dir(&iface);
    let took_pins = tamper(
        "the pin directory removed",
        "program",
        "nothing pinned",
        &|| std::fs::remove_dir_all(&dir).unwrap(),
    );
    assert!(wgbpf::dataplane::attach::pinned_mode(&iface).is_some());
    assert_eq!(t.sample("wgbpf_policy_version"), Some(version));
    assert!(denied_by_bob() >= denied_before, "bob's counters were lost");
    eprintln!(
        "repaired in {took_policy:?} (policy entry), {took_identity:?} (identity), \
         {took_pins:?} (pin directory)"
    );

    let sent = denied.finish();
    assert!(sent > 0);
    assert_eq!(alice_5001.served(), 0, "denied datagrams reached alice");

    // The file now allows bob to alice:5001; reloaded, it is obeyed.
    let allow_bob = POLICY.replace(
        "[[policy.test]]",
        "[[policy.rule]]\naction = \"accept\"\nfrom = [\"bob\"]\nto = [\"alice\"]\n\
         proto = \"udp\"\nports = [5001]\n\n[[policy.test]]",
    );
    let allow_bob = allow_bob.replace("deny = [\"alice:5001\"]", "accept = [\"alice:5001\"]");
    let text = managed_mesh_file(&mesh, &allow_bob, &mesh.private_key_file(&gw));
    std::fs::write(&cfg, text).unwrap();
    signal(daemon, libc::SIGHUP);
    wait_until("bob reaches alice:5001 under the reloaded policy", || {
        let _ = udp_send(bob, IpAddr::V4(alice.tunnel_v4), 5001, 1, PAYLOAD);
        std::thread::sleep(Duration::from_millis(50));
        alice_5001.served() > 0
    });
    let mut cleanup = cleanup;
    let mut daemon = cleanup.daemon.take().unwrap();
    assert!(stop(&mut daemon, STOP_GRACE).is_some_and(|s| s.success()));
    drop(cleanup);
    mesh.down().unwrap();
}
