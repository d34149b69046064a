//! `wgbpf run` over real WireGuard, scraped by a real Prometheus server.
//!
//! A testbed mesh (gateway, alice, bob: wireguard-go in network namespaces);
//! the daemon runs inside the gateway's namespace (it must: it attaches to
//! the tunnel by name there) with its metrics on that namespace's loopback,
//! and Prometheus (Debian's binary) runs in the same namespace, scraping
//! every second, as it would on a gateway whose metrics stay on loopback.
//! The test talks to both over that loopback from a thread that joined the
//! namespace.
//!
//! Checked: exact deny counts reach Prometheus; `promtool check metrics`
//! accepts a scrape; SIGHUP with a broken file keeps the old policy (and
//! says why), with a changed file applies it; SIGTERM leaves enforcement in
//! place and a restart adopts it with counters kept; deny log lines.

mod common;

use std::{
    fs::File,
    net::IpAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    free_port, http_get, json_lines, print_log_tails, promtool_check, sample_in, scrape, signal,
    stop, unload, wgbpf_daemon_command,
};
use serde_json::Value;
use testbed::{gateway_mesh_file, udp_send, udp_sink, Host, Testbed, TestbedSpec};

const POLICY_V1: &str = r#"
[policy]

[[policy.rule]]
name = "alice-ssh"
action = "accept"
from = ["alice"]
to = ["gateway"]
proto = "tcp"
ports = [22]

[[policy.rule]]
name = "alice-to-bob-udp"
action = "accept"
from = ["alice"]
to = ["bob"]
proto = "udp"
ports = ["5000-5010"]
"#;

/// V1 plus bob -> alice udp/5001.
const POLICY_V2_EXTRA: &str = r#"
[[policy.rule]]
name = "bob-to-alice-5001"
action = "accept"
from = ["bob"]
to = ["alice"]
proto = "udp"
ports = [5001]
"#;

/// Parses but names a peer that does not exist: refused at validation.
const POLICY_UNKNOWN_PEER: &str = r#"
[[policy.rule]]
name = "mallory"
action = "accept"
from = ["mallory"]
to = ["alice"]
proto = "udp"
"#;

/// A test block that contradicts POLICY_V2_EXTRA: the file is refused.
const FAILING_TEST: &str = r#"
[[policy.test]]
src = "bob"
proto = "udp"
deny = ["alice:5001"]
"#;

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(250);
const PAYLOAD: usize = 64;

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------- processes

/// Stops what the test started and unloads, even when an assertion failed.
struct Cleanup {
    gw: Host,
    dir: PathBuf,
    daemon: Option<Child>,
    prometheus: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            stop(&mut c, Duration::from_secs(10));
        }
        if let Some(mut c) = self.prometheus.take() {
            stop(&mut c, Duration::from_secs(10));
        }
        unload(&self.gw);
        if std::thread::panicking() {
            // Keep the logs of a failed run visible.
            print_log_tails(
                &self.dir,
                &["wgbpf-1.log", "wgbpf-2.log", "prometheus.log"],
                40,
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Test {
    gw: Host,
    cfg: PathBuf,
    dir: PathBuf,
    metrics_port: u16,
    prom_port: u16,
}

impl Test {
    fn start_daemon(&self, log_name: &str) -> Child {
        let log = File::create(self.dir.join(log_name)).unwrap();
        // Only the capabilities deploy/wgbpf@.service grants.
        wgbpf_daemon_command(&self.gw)
            .arg("run")
            .arg("-c")
            .arg(&self.cfg)
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{}", self.metrics_port))
            .args(["--log-format", "json"])
            // A tight userspace limit, so that suppression shows.
            .args(["--deny-log-rate", "1", "--deny-log-burst", "5"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn wgbpf run")
    }

    fn start_prometheus(&self) -> Child {
        let config = self.dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: wgbpf\n    static_configs:\n      \
                 - targets: ['127.0.0.1:{}']\n",
                self.metrics_port
            ),
        )
        .unwrap();
        let log = File::create(self.dir.join("prometheus.log")).unwrap();
        Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.gw.netns))
            .arg("--")
            .arg("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.prom_port))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus (Debian package `prometheus`)")
    }

    /// Waits until the daemon serves metrics; fails at once if it exits.
    fn wait_up(&self, daemon: &mut Child, log: &str) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = daemon.try_wait() {
                let text = std::fs::read_to_string(self.dir.join(log)).unwrap_or_default();
                panic!("wgbpf run exited ({status}):\n{text}");
            }
            if self.scrape().is_ok() {
                return;
            }
            std::thread::sleep(POLL);
        }
        panic!("wgbpf run did not serve metrics within {WAIT:?}");
    }

    /// One scrape of wgbpf's /metrics, in the Prometheus text format.
    fn scrape(&self) -> std::io::Result<String> {
        scrape(&self.gw.netns, self.metrics_port)
    }

    /// The value of one series in a scrape (exact name and labels as
    /// exposed), if present.
    fn sample(&self, series: &str) -> Option<f64> {
        sample_in(&self.scrape().ok()?, series)
    }

    /// Polls a scrape until `series` has `want`; returns the last value seen.
    fn wait_sample(&self, series: &str, want: f64) -> Option<f64> {
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        while Instant::now() < deadline {
            last = self.sample(series);
            if last == Some(want) {
                break;
            }
            std::thread::sleep(POLL);
        }
        last
    }

    /// Prometheus' instant query: the single result's value, if any.
    fn query(&self, promql: &str) -> Option<f64> {
        let path = format!("/api/v1/query?query={}", urlencode(promql));
        let (status, body) = http_get(&self.gw.netns, self.prom_port, &path, "*/*").ok()?;
        if status != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        let result = v["data"]["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }

    /// Polls Prometheus until `promql` yields `want`; returns the last value.
    fn wait_query(&self, promql: &str, want: f64) -> Option<f64> {
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        while Instant::now() < deadline {
            last = self.query(promql);
            if last == Some(want) {
                break;
            }
            std::thread::sleep(POLL);
        }
        last
    }

    /// JSON log lines of a daemon run.
    fn log_lines(&self, name: &str) -> Vec<Value> {
        json_lines(&self.dir.join(name))
    }

    /// Polls the log until a line satisfies `pred`.
    fn wait_log(&self, name: &str, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(l) = self.log_lines(name).into_iter().find(|l| pred(l)) {
                return Some(l);
            }
            std::thread::sleep(POLL);
        }
        None
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn wait_served(l: &testbed::Listener, want: usize) -> usize {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline && l.served() < want {
        std::thread::sleep(POLL);
    }
    l.served()
}

fn hup(daemon: &Option<Child>) {
    signal(daemon.as_ref().expect("daemon running"), libc::SIGHUP);
}

#[test]
fn run_daemon_scraped_by_prometheus() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice", "bob"])).expect("mesh");
    let (gw, alice, bob) = (&mesh.gateway, mesh.host("alice"), mesh.host("bob"));
    let dir = std::env::temp_dir().join(format!("wgbpf-metrics-{}", mesh.run_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cleanup = Cleanup {
        gw: gw.clone(),
        dir: dir.clone(),
        daemon: None,
        prometheus: None,
    };
    let cfg = dir.join("mesh.toml");
    let v1 = gateway_mesh_file(&mesh, POLICY_V1);
    std::fs::write(&cfg, &v1).unwrap();
    let t = Test {
        gw: gw.clone(),
        cfg: cfg.clone(),
        dir: dir.clone(),
        metrics_port: free_port(&gw.netns),
        prom_port: free_port(&gw.netns),
    };
    let alice4 = IpAddr::V4(alice.tunnel_v4);
    let bob4 = IpAddr::V4(bob.tunnel_v4);
    // Silent sinks: exact counts one way, no replies the other.
    let alice_5001 = udp_sink(alice, 5001).unwrap();
    let alice_5002 = udp_sink(alice, 5002).unwrap();
    let bob_5001 = udp_sink(bob, 5001).unwrap();

    // --- Start: enforce, serve metrics.
    cleanup.daemon = Some(t.start_daemon("wgbpf-1.log"));
    t.wait_up(cleanup.daemon.as_mut().unwrap(), "wgbpf-1.log");
    assert_eq!(t.sample("wgbpf_policy_version"), Some(1.0));
    assert!(t
        .wait_log("wgbpf-1.log", |l| l["message"] == "attached; enforcing")
        .is_some());
    let pid = cleanup.daemon.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap());
    const NET_ADMIN: u64 = 1 << 12;
    const PERFMON: u64 = 1 << 38;
    const BPF: u64 = 1 << 39;
    assert_eq!(cap_eff, Some(NET_ADMIN | PERFMON | BPF), "{status}");
    cleanup.prometheus = Some(t.start_prometheus());

    // --- Exact deny counts, through Prometheus.
    let (n_denied, n_allowed) = (37usize, 23usize);
    udp_send(bob, alice4, 5001, n_denied, PAYLOAD).unwrap();
    udp_send(alice, bob4, 5001, n_allowed, PAYLOAD).unwrap();
    let denied_5001 = format!(
        "wireguard_acl_denied_total{{peer=\"bob\",dst=\"{}\",port=\"5001\",proto=\"udp\"}}",
        alice.tunnel_v4
    );
    assert_eq!(
        t.wait_query(&denied_5001, n_denied as f64),
        Some(n_denied as f64),
        "deny counter in Prometheus"
    );
    assert_eq!(
        t.wait_query(
            "wireguard_acl_denied_packets_total{peer=\"bob\",direction=\"ingress\"}",
            n_denied as f64
        ),
        Some(n_denied as f64)
    );
    assert_eq!(
        t.wait_query(
            "wireguard_acl_allowed_packets_total{peer=\"alice\",direction=\"ingress\"}",
            n_allowed as f64
        ),
        Some(n_allowed as f64)
    );
    assert_eq!(
        t.wait_query(
            "wireguard_acl_allowed_bytes_total{peer=\"bob\",direction=\"egress\"}",
            (n_allowed * (20 + 8 + PAYLOAD)) as f64
        ),
        Some((n_allowed * (20 + 8 + PAYLOAD)) as f64)
    );
    assert_eq!(wait_served(&bob_5001, n_allowed), n_allowed);
    assert_eq!(alice_5001.served(), 0, "denied datagrams reached alice");
    assert_eq!(t.query("up{job=\"wgbpf\"}"), Some(1.0));
    assert_eq!(
        t.query("wgbpf_program_attached{program=\"ingress\",mode=\"tcx\"}"),
        Some(1.0)
    );
    assert_eq!(t.query("wgbpf_build_info"), Some(1.0));

    // --- promtool accepts a scrape.
    let scrape = t.scrape().unwrap();
    let (ok, out) = promtool_check(&scrape, &dir);
    assert!(ok, "promtool check metrics: {out}\n{scrape}");
    assert!(out.trim().is_empty(), "promtool lint: {out}");

    // --- Deny logs: every event read is logged or counted as suppressed.
    let line = t
        .wait_log("wgbpf-1.log", |l| {
            l["target"] == "wgbpf::deny"
                && l["src_peer"] == "bob"
                && l["dst"] == alice.tunnel_v4.to_string()
                && l["port"] == 5001
        })
        .expect("a deny log line");
    assert_eq!(line["action"], "deny");
    assert_eq!(line["proto"], "udp");
    assert_eq!(line["rule"], "default deny");
    assert_eq!(line["dst_peer"], "alice");
    assert_eq!(line["direction"], "ingress");
    assert_eq!(line["src"], bob.tunnel_v4.to_string());
    assert_eq!(line["interface"], gw.wg_if);
    assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line}");
    let sent = t
        .sample("wgbpf_deny_events_total{outcome=\"sent\"}")
        .unwrap();
    assert_eq!(sent, n_denied as f64, "kernel events (limit 200 burst)");
    assert_eq!(
        t.wait_sample("wgbpf_deny_events_read_total", sent),
        Some(sent)
    );
    let logged = t
        .sample("wgbpf_deny_log_lines_total{outcome=\"logged\"}")
        .unwrap();
    let suppressed = t
        .sample("wgbpf_deny_log_lines_total{outcome=\"suppressed\"}")
        .unwrap();
    assert_eq!(logged + suppressed, sent);
    assert!(
        suppressed >= 1.0,
        "a burst of 5 cannot log 37 lines at once"
    );
    let summary = t
        .wait_log("wgbpf-1.log", |l| {
            l["message"] == "deny log lines suppressed by the rate limit"
        })
        .expect("suppression summary");
    assert!(summary["suppressed"].as_u64().unwrap() >= 1);

    // --- SIGHUP with broken files: refused, reason logged, old policy stays.
    let mut denied_total = n_denied;
    let mut allowed_total = n_allowed;
    // (what, file, a word the logged reason must contain). The last one
    // would let bob reach alice, but its own test fails: nothing applies.
    let broken: [(&str, String, &str); 3] = [
        (
            "syntax",
            format!("{v1}\n[[policy.rule]\nname = "),
            "table header",
        ),
        (
            "unknown peer",
            format!("{v1}{POLICY_UNKNOWN_PEER}"),
            "mallory",
        ),
        (
            "failing policy test",
            format!("{v1}{POLICY_V2_EXTRA}{FAILING_TEST}"),
            "test",
        ),
    ];
    for (i, (what, text, word)) in broken.iter().enumerate() {
        std::fs::write(&cfg, text).unwrap();
        hup(&cleanup.daemon);
        let refused = t
            .wait_log("wgbpf-1.log", |l| {
                l["message"] == "reload refused; the running policy stays"
            })
            .map(|_| {
                t.log_lines("wgbpf-1.log")
                    .into_iter()
                    .filter(|l| l["message"] == "reload refused; the running policy stays")
                    .count()
            });
        let deadline = Instant::now() + WAIT;
        let mut count = refused.unwrap_or(0);
        while count < i + 1 && Instant::now() < deadline {
            std::thread::sleep(POLL);
            count = t
                .log_lines("wgbpf-1.log")
                .into_iter()
                .filter(|l| l["message"] == "reload refused; the running policy stays")
                .count();
        }
        assert_eq!(count, i + 1, "{what}: refusal logged");
        let last = t
            .log_lines("wgbpf-1.log")
            .into_iter()
            .rfind(|l| l["message"] == "reload refused; the running policy stays")
            .unwrap();
        let reason = last["reason"].as_str().unwrap();
        assert!(
            reason.contains(cfg.to_str().unwrap()),
            "{what}: reason names the file: {reason}"
        );
        assert!(reason.contains(word), "{what}: {reason}");
        assert_eq!(
            t.sample("wgbpf_reload_failures_total"),
            Some((i + 1) as f64)
        );
        assert_eq!(t.sample("wgbpf_last_reload_successful"), Some(0.0));
        assert_eq!(t.sample("wgbpf_policy_version"), Some(1.0), "{what}");
        // Traffic is still decided by version 1.
        udp_send(bob, alice4, 5001, 5, PAYLOAD).unwrap();
        udp_send(alice, bob4, 5001, 4, PAYLOAD).unwrap();
        denied_total += 5;
        allowed_total += 4;
        assert_eq!(
            t.wait_sample(&denied_5001, denied_total as f64),
            Some(denied_total as f64),
            "{what}: bob still denied"
        );
        assert_eq!(wait_served(&bob_5001, allowed_total), allowed_total);
        assert_eq!(
            alice_5001.served(),
            0,
            "{what}: denied datagrams reached alice"
        );
    }

    // --- SIGHUP with a changed policy: applied, version goes up.
    let v2 = format!("{v1}{POLICY_V2_EXTRA}");
    std::fs::write(&cfg, &v2).unwrap();
    hup(&cleanup.daemon);
    assert_eq!(t.wait_sample("wgbpf_policy_version", 2.0), Some(2.0));
    assert_eq!(t.sample("wgbpf_reloads_total"), Some(4.0));
    assert_eq!(t.sample("wgbpf_reload_failures_total"), Some(3.0));
    assert_eq!(t.sample("wgbpf_last_reload_successful"), Some(1.0));
    assert_eq!(t.wait_query("wgbpf_policy_version", 2.0), Some(2.0));
    assert!(t
        .wait_log("wgbpf-1.log", |l| l["message"] == "reloaded"
            && l["policy_version"] == 2
            && l["changed"] == true)
        .is_some());
    udp_send(bob, alice4, 5001, 6, PAYLOAD).unwrap();
    assert_eq!(wait_served(&alice_5001, 6), 6, "v2 lets bob reach alice");

    // --- SIGTERM: clean exit; the pinned data plane keeps enforcing v2.
    let mut daemon = cleanup.daemon.take().unwrap();
    signal(&daemon, libc::SIGTERM);
    let status = wait_exit(&mut daemon, Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}"
    );
    assert!(t
        .log_lines("wgbpf-1.log")
        .iter()
        .any(|l| l["signal"] == "SIGTERM"));
    assert!(wgbpf::dataplane::pin_dir(&gw.wg_if).exists());
    let n_down = 9usize;
    udp_send(bob, alice4, 5002, n_down, PAYLOAD).unwrap();
    udp_send(bob, alice4, 5001, 2, PAYLOAD).unwrap();
    assert_eq!(wait_served(&alice_5001, 8), 8, "v2 still enforced");

    // --- Restart: adopts the pinned data plane, counters kept.
    cleanup.daemon = Some(t.start_daemon("wgbpf-2.log"));
    t.wait_up(cleanup.daemon.as_mut().unwrap(), "wgbpf-2.log");
    let adopted = t
        .wait_log("wgbpf-2.log", |l| {
            l["message"] == "adopted the pinned data plane; enforcing"
        })
        .expect("restart adopts");
    assert_eq!(adopted["adopted"], true);
    assert_eq!(adopted["changed"], false);
    assert_eq!(adopted["policy_version"], 2);
    assert_eq!(t.wait_sample("wgbpf_policy_version", 2.0), Some(2.0));
    assert_eq!(
        t.sample(&denied_5001),
        Some(denied_total as f64),
        "not reset"
    );
    let denied_5002 = format!(
        "wireguard_acl_denied_total{{peer=\"bob\",dst=\"{}\",port=\"5002\",proto=\"udp\"}}",
        alice.tunnel_v4
    );
    // Dropped and counted while no daemon ran; seen by Prometheus now.
    assert_eq!(
        t.wait_query(&denied_5002, n_down as f64),
        Some(n_down as f64)
    );
    assert_eq!(alice_5002.served(), 0, "denied while the daemon was down");
    assert_eq!(t.sample("wgbpf_reloads_total"), Some(0.0));

    // --- Stop everything; unload (Cleanup does the same on failure).
    let mut daemon = cleanup.daemon.take().unwrap();
    assert!(stop(&mut daemon, Duration::from_secs(20)).is_some_and(|s| s.success()));
    drop(cleanup);
    assert!(!wgbpf::dataplane::pin_dir(&gw.wg_if).exists());
}
