//! A fleet on a real etcd server (Debian's `/usr/bin/etcd`, started here
//! on loopback ports free at run time, a temporary data directory, killed
//! on drop): `wgbpf push` checks as `policy check` does and writes one
//! guarded transaction; gateways (`wgbpf run --etcd`, each in its own
//! network namespace with its own wireguard-go device and data plane)
//! converge on a pushed revision, refuse a broken one written straight
//! to the store and keep the previous one, and ride out etcd stopped,
//! restarted and compacted. Root.

mod common;

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use std::os::unix::process::CommandExt;

use common::{in_netns, print_log_tails, stop, wgbpf_code, wgbpf_daemon_command};
use serde_json::Value;
use testbed::{gateway_mesh_file, udp_send, udp_sink, Host, Testbed, TestbedSpec};
use wgbpf::fleet::{
    push::{self, Revision},
    Connection, Layout, Part,
};

const WAIT: Duration = Duration::from_secs(60);
const PREFIX: &str = "/test-fleet";

/// The shared part: alice may ping bob and send him UDP 5000-5010; its
/// test holds.
const SHARED_V1: &str = r#"[policy]

[[policy.rule]]
name = "alice-pings-bob"
action = "accept"
from = ["alice"]
to = ["bob"]
proto = "icmp"

[[policy.rule]]
name = "alice-to-bob-udp"
action = "accept"
from = ["alice"]
to = ["bob"]
proto = "udp"
ports = ["5000-5010"]

[[policy.test]]
src = "alice"
proto = "udp"
accept = ["bob:5001"]
deny = ["bob:6000"]
"#;

/// Adds UDP 6000 (and its test says so).
fn shared_v2() -> String {
    SHARED_V1
        .replace("ports = [\"5000-5010\"]", "ports = [\"5000-5010\", 6000]")
        .replace(
            "accept = [\"bob:5001\"]\ndeny = [\"bob:6000\"]",
            "accept = [\"bob:5001\", \"bob:6000\"]",
        )
}

/// A shared part whose own test fails (bob:5001 is accepted, not denied).
fn shared_failing() -> String {
    format!(
        "{SHARED_V1}\n[[policy.test]]\nsrc = \"alice\"\nproto = \"udp\"\ndeny = [\"bob:5001\"]\n"
    )
}

fn free_local_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until(what: &str, f: impl FnMut() -> bool) {
    common::wait_until(what, WAIT, f)
}

/// A real etcd server on loopback, with its data in `dir`.
struct Etcd {
    child: Option<Child>,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    /// With TLS: the directory of `ca.pem`, `server.pem`, `server-key.pem`,
    /// `client.pem`, `client-key.pem`; clients must show a certificate.
    tls: Option<PathBuf>,
}

impl Etcd {
    fn start(dir: &Path) -> Etcd {
        Self::start_with(dir, None)
    }

    fn start_with(dir: &Path, tls: Option<PathBuf>) -> Etcd {
        let mut e = Etcd {
            child: None,
            dir: dir.to_path_buf(),
            client_port: free_local_port(),
            peer_port: free_local_port(),
            tls,
        };
        e.restart();
        e
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// (Re)starts the server on the same ports and data; returns once it
    /// answers.
    fn restart(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://{}", self.endpoint());
        let mut tls_args = Vec::new();
        if let Some(t) = &self.tls {
            for (flag, file) in [
                ("--cert-file", "server.pem"),
                ("--key-file", "server-key.pem"),
                ("--trusted-ca-file", "ca.pem"),
            ] {
                tls_args.push(flag.to_string());
                tls_args.push(t.join(file).display().to_string());
            }
            tls_args.push("--client-cert-auth".into());
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .unwrap();
        let child = Command::new("/usr/bin/etcd")
            .args(["--name", "fleet-test"])
            .arg("--data-dir")
            .arg(self.dir.join("etcd-data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("fleet-test={peer}")])
            .args(&tls_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start /usr/bin/etcd (Debian's etcd-server)");
        self.child = Some(child);
        wait_until("etcd answers", || self.etcdctl(&["endpoint", "health"]).0);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn etcdctl(&self, args: &[&str]) -> (bool, String) {
        let mut c = Command::new("etcdctl");
        if let Some(t) = &self.tls {
            c.arg(format!("--cacert={}", t.join("ca.pem").display()))
                .arg(format!("--cert={}", t.join("client.pem").display()))
                .arg(format!("--key={}", t.join("client-key.pem").display()));
        }
        let out = c
            .arg(format!("--endpoints={}", self.endpoint()))
            .args(["--dial-timeout", "1s", "--command-timeout", "2s"])
            .args(args)
            .output()
            .expect("etcdctl (Debian's etcd-client)");
        let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
        s += &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), s)
    }

    fn get(&self, key: &str) -> String {
        let (ok, out) = self.etcdctl(&["get", "--print-value-only", key]);
        assert!(ok, "{out}");
        out.trim_end_matches('\n').to_string()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A scratch directory, with the logs shown if the test fails.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let names: Vec<String> = std::fs::read_dir(&self.0)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.ends_with(".log"))
                        .collect()
                })
                .unwrap_or_default();
            let names: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
            print_log_tails(&self.0, &names, 40);
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(what: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("wgbpf-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

fn wgbpf_root(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wgbpf"))
        .args(args)
        .output()
        .unwrap();
    common::code_out_err(&out)
}

const GW_PART: &str = r#"[interface]
name = "wgf0"
addresses = ["10.61.0.1/24"]

[[peer]]
name = "alice"
allowed_ips = ["10.61.0.2/32"]

[[peer]]
name = "bob"
allowed_ips = ["10.61.0.3/32"]
"#;

#[test]
fn push_checks_as_policy_check_does_and_writes_one_guarded_revision() {
    let dir = scratch("fleet-push");
    let d = &dir.0;
    let etcd = Etcd::start(d);
    let ep = etcd.endpoint();
    let write = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let eu = write("eu.toml", GW_PART);
    let us = write("us.toml", &GW_PART.replace("10.61.0.", "10.62.0."));
    let failing = write("failing.toml", &shared_failing());
    let push = |shared: &str, extra: &[&str]| {
        let mut args = vec![
            "push", "--etcd", &ep, "--prefix", PREFIX, "--shared", shared,
        ];
        args.extend_from_slice(extra);
        wgbpf_root(&args)
    };

    // A failing policy test: refused, named by its part and line, and
    // nothing reaches the store.
    let (code, out, err) = push(&failing, &[&eu, &us]);
    assert_eq!(code, 1, "{out}{err}");
    let test_line = 1 + shared_failing()
        .lines()
        .position(|l| l == "deny = [\"bob:5001\"]")
        .unwrap();
    assert!(
        out.contains(&format!("{failing}:{test_line}")) && err.contains("nothing was pushed"),
        "{out}{err}"
    );
    let (ok, keys) = etcd.etcdctl(&["get", "--prefix", "--keys-only", PREFIX]);
    assert!(ok && keys.trim().is_empty(), "the store changed: {keys}");

    // A part that is not TOML: its own file and line.
    let broken = write(
        "broken.toml",
        &GW_PART.replace("name = \"bob\"", "name = bob"),
    );
    let shared = write("shared.toml", SHARED_V1);
    let (code, _, err) = push(&shared, &[&eu, &broken]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("{broken}:10:")), "{err}");

    // A good push: revision 1, every part as written.
    let (code, out, err) = push(&shared, &[&eu, &us]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("revision 1 pushed"), "{out}");
    assert_eq!(etcd.get(&format!("{PREFIX}/revision")), "1");
    assert_eq!(etcd.get(&format!("{PREFIX}/shared")), SHARED_V1.trim_end());
    assert_eq!(
        etcd.get(&format!("{PREFIX}/gateways/eu")),
        GW_PART.trim_end()
    );

    // The dry run: the flow that changes on each gateway, nothing written.
    let v2 = write("v2.toml", &shared_v2());
    let west = format!("west={us}");
    let (code, out, err) = push(&v2, &[&eu, &west, "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("gateway eu (changed against revision 1)"),
        "{out}"
    );
    assert!(out.contains("+ alice -> bob: udp 6000"), "{out}");
    assert!(
        out.contains("gateway west (new") && out.contains("gateway us: removed"),
        "{out}"
    );
    assert_eq!(etcd.get(&format!("{PREFIX}/revision")), "1");

    // Two pushes racing: the one made against a stale read is refused
    // whole.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let layout = Layout::new(PREFIX).unwrap();
        let mut client = Connection::new(&ep).connect().await.unwrap();
        let stale = push::read(&mut client, &layout).await.unwrap();
        assert_eq!(stale.revision, 1);
        let mut rev = Revision::default();
        rev.gateways.insert(
            "eu".into(),
            Part {
                name: "eu".into(),
                text: GW_PART.into(),
            },
        );
        assert_eq!(
            push::write(&mut client, &layout, &stale, &rev)
                .await
                .unwrap(),
            2
        );
        rev.gateways.insert(
            "late".into(),
            Part {
                name: "late".into(),
                text: GW_PART.into(),
            },
        );
        let e = push::write(&mut client, &layout, &stale, &rev)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("another push landed first") && e.contains("revision 2"),
            "{e}"
        );
        let now = push::read(&mut client, &layout).await.unwrap();
        assert_eq!(now.revision, 2);
        assert!(!now.gateways.contains_key("late") && !now.gateways.contains_key("us"));
    });

    // Status with no gateway running: each one named, exit 1.
    let (code, out, _) = wgbpf_root(&["fleet", "status", "--etcd", &ep, "--prefix", PREFIX]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("fleet revision 2") && out.contains("no report"),
        "{out}"
    );
}

/// A TCP port on a gateway namespace's loopback, forwarded to etcd on the
/// host's loopback through a Unix socket (which namespaces share): the
/// gateway's own way to the store, cut and restored by the test.
struct Forwarder {
    netns: String,
    port: u16,
    socket: PathBuf,
    child: Option<Child>,
}

impl Forwarder {
    fn new(netns: &str, socket: &Path) -> Forwarder {
        let port = common::free_port(netns);
        let mut f = Forwarder {
            netns: netns.to_string(),
            port,
            socket: socket.to_path_buf(),
            child: None,
        };
        f.start();
        f
    }

    fn start(&mut self) {
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.netns))
            .args(["--", "socat"])
            .arg(format!(
                "TCP-LISTEN:{},bind=127.0.0.1,fork,reuseaddr",
                self.port
            ))
            .arg(format!("UNIX-CONNECT:{}", self.socket.display()))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat");
        self.child = Some(child);
        let port = self.port;
        wait_until("the forwarder listens", || {
            in_netns(&self.netns, move || {
                Ok(std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok())
            })
            .unwrap_or(false)
        });
    }

    /// Kills the listener and every connection it forwards (its forks
    /// are in the process group it leads).
    fn cut(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: a plain syscall on the group of our own child.
            unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.cut();
    }
}

/// A process group of ours (a forwarder), killed whole on drop.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: a plain syscall on the group of our own child.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// One gateway of the fleet: its own mesh (namespaces, wireguard-go), its
/// way to etcd, its daemon; stopped and unloaded on drop.
struct Gateway {
    name: String,
    mesh: Testbed,
    fwd: Forwarder,
    daemon: Option<Child>,
}

impl Gateway {
    fn host(&self) -> &Host {
        &self.mesh.gateway
    }

    fn start(&mut self, log: &Path) {
        let ep = format!("127.0.0.1:{}", self.fwd.port);
        let child = wgbpf_daemon_command(self.host())
            .args([
                "run",
                "--etcd",
                &ep,
                "--prefix",
                PREFIX,
                "--gateway",
                &self.name,
            ])
            .args([
                "--no-metrics",
                "--log-format",
                "json",
                "--repair-interval",
                "0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(log).unwrap())
            .spawn()
            .expect("wgbpf run --etcd");
        self.daemon = Some(child);
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            stop(&mut c, Duration::from_secs(20));
        }
        common::unload(self.host());
    }
}

fn status(ep: &str) -> (i32, Value) {
    let (code, out, err) = wgbpf_root(&[
        "fleet", "status", "--etcd", ep, "--prefix", PREFIX, "--json",
    ]);
    let v = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    (code, v)
}

/// Every gateway's report: (enforced revision, refused revision).
fn reports(ep: &str) -> Vec<(String, Option<u64>, Option<u64>)> {
    let (_, v) = status(ep);
    v["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["gateway"].as_str().unwrap().to_string(),
                g["report"]["revision"].as_u64(),
                g["report"]["refused"]["revision"].as_u64(),
            )
        })
        .collect()
}

fn converged(ep: &str, revision: u64, n: usize) -> bool {
    let r = reports(ep);
    r.len() == n
        && r.iter()
            .all(|(_, rev, refused)| *rev == Some(revision) && refused.is_none())
}

/// Alice's datagrams to bob on `port` arrive through the gateway (resent
/// until one does).
fn delivered(mesh: &Testbed, sink: &testbed::Listener, port: u16) {
    let (alice, bob) = (mesh.host("alice"), mesh.host("bob"));
    let before = sink.served();
    wait_until(&format!("alice reaches bob:{port}"), || {
        let _ = udp_send(alice, IpAddr::V4(bob.tunnel_v4), port, 1, 32);
        std::thread::sleep(Duration::from_millis(50));
        sink.served() > before
    });
}

/// The gateway's data plane equals its part joined with `shared`.
fn audited(gw: &Gateway, dir: &Path, shared: &str) {
    let file = dir.join(format!("{}-audit.toml", gw.name));
    std::fs::write(&file, gateway_mesh_file(&gw.mesh, "") + "\n" + shared).unwrap();
    let (code, out, err) = wgbpf_code(gw.host(), &["audit", "-c", file.to_str().unwrap()]);
    assert_eq!(
        code, 0,
        "{}: audit against the revision: {out}{err}",
        gw.name
    );
}

#[test]
fn three_gateways_converge_refuse_a_broken_revision_and_ride_out_etcd_loss() {
    let dir = scratch("fleet-gateways");
    let d = dir.0.clone();
    let mut etcd = Etcd::start(&d);
    let ep = etcd.endpoint();
    // The store as gateways reach it: a Unix socket on the host's side.
    let socket = d.join("etcd.sock");
    let _bridge = Group(
        Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork", socket.display()))
            .arg(format!("TCP:{ep}"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat"),
    );
    wait_until("the bridge listens", || socket.exists());

    let mut gws: Vec<Gateway> = (0..3)
        .map(|i| {
            let mesh = Testbed::up(&TestbedSpec::new(&["alice", "bob"])).expect("mesh");
            let fwd = Forwarder::new(&mesh.gateway.netns, &socket);
            Gateway {
                name: format!("gw{i}"),
                mesh,
                fwd,
                daemon: None,
            }
        })
        .collect();
    let parts: Vec<String> = gws
        .iter()
        .map(|g| {
            let p = d.join(format!("{}.toml", g.name));
            std::fs::write(&p, gateway_mesh_file(&g.mesh, "")).unwrap();
            p.to_str().unwrap().to_string()
        })
        .collect();
    let shared_file = d.join("shared.toml");
    let push = |shared: &str| {
        std::fs::write(&shared_file, shared).unwrap();
        let mut args = vec!["push", "--etcd", &ep, "--prefix", PREFIX, "--shared"];
        args.push(shared_file.to_str().unwrap());
        args.extend(parts.iter().map(|s| s.as_str()));
        let (code, out, err) = wgbpf_root(&args);
        assert_eq!(code, 0, "push: {out}{err}");
    };

    // --- Revision 1: every gateway enforces it, traffic as it says.
    push(SHARED_V1);
    for g in gws.iter_mut() {
        let log = d.join(format!("{}.log", g.name));
        g.start(&log);
    }
    wait_until("three gateways enforce revision 1", || converged(&ep, 1, 3));
    let sinks: Vec<_> = gws
        .iter()
        .map(|g| udp_sink(g.mesh.host("bob"), 5001).unwrap())
        .collect();
    for (g, sink) in gws.iter().zip(&sinks) {
        audited(g, &d, SHARED_V1);
        delivered(&g.mesh, sink, 5001);
    }

    // --- Revision 2 (UDP 6000 too): converge again; the data plane says so.
    push(&shared_v2());
    wait_until("three gateways enforce revision 2", || converged(&ep, 2, 3));
    let sink6000 = udp_sink(gws[0].mesh.host("bob"), 6000).unwrap();
    audited(&gws[0], &d, &shared_v2());
    delivered(&gws[0].mesh, &sink6000, 6000);

    // --- A broken revision written straight to the store (no push to
    // check it): every gateway refuses it, keeps revision 2, says why.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let layout = Layout::new(PREFIX).unwrap();
    rt.block_on(async {
        let mut client = Connection::new(&ep).connect().await.unwrap();
        let base = push::read(&mut client, &layout).await.unwrap();
        let rev = Revision {
            shared: Some(Part {
                name: "by hand".into(),
                text: shared_failing(),
            }),
            gateways: base.gateways.clone(),
        };
        assert_eq!(
            push::write(&mut client, &layout, &base, &rev)
                .await
                .unwrap(),
            3
        );
    });
    wait_until("every gateway refuses revision 3", || {
        let r = reports(&ep);
        r.len() == 3
            && r.iter()
                .all(|(_, rev, refused)| *rev == Some(2) && *refused == Some(3))
    });
    let (code, v) = status(&ep);
    assert_eq!(code, 1, "status must fail while gateways refuse: {v}");
    for g in v["gateways"].as_array().unwrap() {
        let e = g["report"]["refused"]["error"].as_str().unwrap();
        assert!(
            e.contains("policy test(s) failed") && e.contains("/shared:"),
            "{e}"
        );
    }
    audited(&gws[0], &d, &shared_v2());
    delivered(&gws[0].mesh, &sink6000, 6000);

    // --- What someone with write access to the store could put there by
    // hand, each refused by every gateway with its reason, revision 2
    // kept: a part that is not UTF-8, a shared [interface] (it would be
    // applied on every gateway), a revision that is not a number, an older
    // revision (a restored backup) with a valid policy.
    let put = |key: String, value: Vec<u8>| {
        rt.block_on(async {
            let mut client = Connection::new(&ep).connect().await.unwrap();
            client.put(key, value, None).await.unwrap();
        })
    };
    let refused_by_all = |what: &str| {
        wait_until(&format!("every gateway refuses: {what}"), || {
            let (_, v) = status(&ep);
            v["gateways"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|g| {
                    g["report"]["revision"] == 2
                        && g["report"]["refused"]["error"]
                            .as_str()
                            .is_some_and(|e| e.contains(what))
                })
                .count()
                == 3
        })
    };
    put(layout.shared(), b"[policy]\n\xff\xfe = 1\n".to_vec());
    refused_by_all("not UTF-8 text");
    let with_interface = format!(
        "{}\n[interface]\nname = \"wgx\"\naddresses = [\"10.250.0.1/24\"]\n",
        shared_v2()
    );
    put(layout.shared(), with_interface.into_bytes());
    refused_by_all("`interface` does not belong in the shared part");
    put(layout.revision(), b"three".to_vec());
    refused_by_all("`three` is not a revision number");
    let (_, v) = status(&ep);
    assert!(
        v["unreadable_revision"]
            .as_str()
            .is_some_and(|e| e.contains("`three`")),
        "{v}"
    );
    // A push would number from 1 again: refused, saying what to do.
    rt.block_on(async {
        let mut client = Connection::new(&ep).connect().await.unwrap();
        let base = push::read(&mut client, &layout).await.unwrap();
        let again = Revision {
            shared: base.shared.clone(),
            gateways: base.gateways.clone(),
        };
        let e = push::write(&mut client, &layout, &base, &again)
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("put the last revision pushed back"),
            "{e}"
        );
    });
    put(layout.shared(), shared_v2().into_bytes());
    put(layout.revision(), b"1".to_vec());
    refused_by_all("revision 1 is older than revision 2");
    audited(&gws[0], &d, &shared_v2());
    // A report key that is not a report: shown on its row, the others
    // still read.
    put(layout.status("ghost"), b"not json".to_vec());
    let (_, v) = status(&ep);
    let rows = v["gateways"].as_array().unwrap();
    let ghost = rows.iter().find(|g| g["gateway"] == "ghost").expect("{v}");
    assert!(
        ghost["unreadable_report"]
            .as_str()
            .is_some_and(|e| e.contains("is not a report") && e.contains("`not json`")),
        "{v}"
    );
    assert_eq!(
        rows.iter().filter(|g| g["report"]["revision"] == 2).count(),
        3,
        "{v}"
    );
    rt.block_on(async {
        let mut client = Connection::new(&ep).connect().await.unwrap();
        client.delete(layout.status("ghost"), None).await.unwrap();
    });
    // Back to the broken revision 3, as before.
    put(layout.shared(), shared_failing().into_bytes());
    put(layout.revision(), b"3".to_vec());
    refused_by_all("policy test(s) failed");

    // --- One gateway cut off from the store while two pushes land and
    // the store is compacted: it keeps enforcing, then catches up.
    gws[2].fwd.cut();
    push(SHARED_V1); // revision 4
    wait_until("two gateways enforce revision 4", || {
        reports(&ep)
            .iter()
            .filter(|(n, rev, _)| n != "gw2" && *rev == Some(4))
            .count()
            == 2
    });
    push(&shared_v2()); // revision 5
    let (ok, out) = etcd.etcdctl(&["endpoint", "status", "--write-out", "json"]);
    assert!(ok, "{out}");
    let header_rev = serde_json::from_str::<Value>(&out).unwrap()[0]["Status"]["header"]
        ["revision"]
        .as_u64()
        .unwrap();
    let (ok, out) = etcd.etcdctl(&["compact", &header_rev.to_string()]);
    assert!(ok, "{out}");
    audited(&gws[2], &d, &shared_v2()); // still revision 2's policy
    delivered(&gws[2].mesh, &sinks[2], 5001);
    gws[2].fwd.start();
    wait_until("all three enforce revision 5 after the compaction", || {
        converged(&ep, 5, 3)
    });

    // --- etcd itself stopped: nothing changes in the kernels; restarted,
    // the gateways reconnect and take the next revision. Pings through gw0
    // all along: no gap, neither while etcd is away nor at the apply.
    let (alice0, bob0) = (gws[0].mesh.host("alice"), gws[0].mesh.host("bob"));
    let pinger = common::Pinger::start(
        alice0,
        IpAddr::V4(bob0.tunnel_v4),
        100_000,
        Duration::from_millis(100),
    );
    etcd.kill();
    std::thread::sleep(Duration::from_secs(3));
    for (g, sink) in gws.iter().zip(&sinks) {
        audited(g, &d, &shared_v2());
        delivered(&g.mesh, sink, 5001);
    }
    delivered(&gws[0].mesh, &sink6000, 6000);
    etcd.restart();
    push(SHARED_V1); // revision 6
    wait_until("all three enforce revision 6 after etcd's restart", || {
        converged(&ep, 6, 3)
    });
    for g in &gws {
        audited(g, &d, SHARED_V1);
    }
    let (sent, failed) = pinger.finish();
    assert!(
        sent >= 20 && failed == 0,
        "{failed} of {sent} pings lost through gw0"
    );

    // --- A gateway that stops: it revokes its lease before it exits, so
    // its report is gone the moment it has stopped.
    if let Some(mut c) = gws[1].daemon.take() {
        stop(&mut c, Duration::from_secs(20));
    }
    let now = reports(&ep);
    assert!(
        now.iter().any(|(n, rev, _)| n == "gw1" && rev.is_none()),
        "gw1 stopped but its report is still there: {now:?}"
    );
    // A gateway that dies (SIGKILL) cannot: its report goes with its
    // lease, once the lease runs out.
    if let Some(mut c) = gws[2].daemon.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert!(
        reports(&ep)
            .iter()
            .any(|(n, rev, _)| n == "gw2" && rev.is_some()),
        "gw2's report went before its lease ran out"
    );
    wait_until("gw2's report is gone with its lease", || {
        reports(&ep)
            .iter()
            .any(|(n, rev, _)| n == "gw2" && rev.is_none())
    });
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate
/// (CN `wgbpf-test`, no etcd user of that name), made with openssl.
fn certificates(dir: &Path) -> PathBuf {
    let t = dir.join("tls");
    std::fs::create_dir_all(&t).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&t)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ext = t.join("ext.cnf");
    std::fs::write(
        &ext,
        "[server]\nsubjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth\n\
         [client]\nextendedKeyUsage = clientAuth\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=wgbpf test CA",
    ]);
    for (name, cn) in [("server", "127.0.0.1"), ("client", "wgbpf-test")] {
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}-key.pem"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-extensions",
            name,
        ]);
    }
    t
}

#[test]
fn tls_client_certificates_and_etcd_users_with_a_password_never_shown() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("fleet-tls");
    let d = &dir.0;
    let tls = certificates(d);
    let etcd = Etcd::start_with(d, Some(tls.clone()));
    let ep = etcd.endpoint();
    let f = |n: &str| tls.join(n).display().to_string();
    let (ca, cert, key) = (f("ca.pem"), f("client.pem"), f("client-key.pem"));
    let gw = d.join("eu.toml");
    std::fs::write(&gw, GW_PART).unwrap();
    let shared = d.join("shared.toml");
    std::fs::write(&shared, SHARED_V1).unwrap();
    let (gw, shared) = (gw.to_str().unwrap(), shared.to_str().unwrap());
    let push = |extra: &[&str]| {
        let mut a = vec![
            "push", "--etcd", &ep, "--prefix", PREFIX, "--shared", shared, gw,
        ];
        a.extend_from_slice(extra);
        wgbpf_root(&a)
    };

    // Plain text to a TLS server, and TLS without a client certificate:
    // refused by the server.
    let (code, out, err) = push(&[]);
    assert_eq!(code, 1, "{out}{err}");
    let (code, out, err) = push(&["--cacert", &ca]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(etcd.get(&format!("{PREFIX}/revision")), "");
    // With the client certificate: pushed.
    let (code, out, err) = push(&["--cacert", &ca, "--cert", &cert, "--key", &key]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(etcd.get(&format!("{PREFIX}/revision")), "1");

    // etcd's authentication on: the certificate's CN is no user, so a
    // user and password are needed.
    let password = "correct-horse-battery-9";
    for a in [
        vec![
            "user",
            "add",
            "root",
            &format!("--new-user-password={password}"),
        ],
        vec!["auth", "enable"],
    ] {
        let (ok, out) = etcd.etcdctl(&a);
        assert!(ok, "{out}");
    }
    let tls_flags = [
        "--cacert",
        ca.as_str(),
        "--cert",
        cert.as_str(),
        "--key",
        key.as_str(),
    ];
    let (code, out, err) = push(&tls_flags);
    assert_eq!(code, 1, "no user: {out}{err}");
    let pw = d.join("password");
    std::fs::write(&pw, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let pw_s = pw.to_str().unwrap();
    let with_user = |extra: &[&str]| {
        let mut a = tls_flags.to_vec();
        a.extend_from_slice(&["--user", "root"]);
        a.extend_from_slice(extra);
        push(&a)
    };
    let (code, _, err) = with_user(&["--password-file", pw_s]);
    assert!(code == 1 && err.contains("others may read it"), "{err}");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, out, err) = with_user(&["--password-file", pw_s]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains(password) && !err.contains(password));
    // A wrong password: refused, and not echoed either.
    std::fs::write(&pw, "not-the-password\n").unwrap();
    let (code, out, err) = with_user(&["--password-file", pw_s]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        !format!("{out}{err}").contains("not-the-password"),
        "{out}{err}"
    );
    // user:password on the command line is refused before any use.
    let mut a = tls_flags.to_vec();
    let inline = format!("root:{password}");
    a.extend_from_slice(&["--user", &inline]);
    let (code, out, err) = push(&a);
    assert!(
        code == 1 && err.contains("not on the command line"),
        "{err}"
    );
    assert!(!format!("{out}{err}").contains(password), "{out}{err}");
    // Status with the same credentials, from the environment.
    let out = Command::new(env!("CARGO_BIN_EXE_wgbpf"))
        .args([
            "fleet", "status", "--etcd", &ep, "--prefix", PREFIX, "--user", "root",
        ])
        .args(tls_flags)
        .env("WGBPF_ETCD_PASSWORD", password)
        .output()
        .unwrap();
    let (_, out, err) = common::code_out_err(&out);
    assert!(out.contains("fleet revision 2"), "{out}{err}");
    let (ok, text) = etcd.etcdctl(&[
        "--user",
        &format!("root:{password}"),
        "get",
        &format!("{PREFIX}/revision"),
    ]);
    assert!(ok && text.contains('2'), "{text}");
}
