//! `cargo xtask bench fleet`: the time from a push's transaction to the
//! last of N gateways enforcing it and saying so. A real etcd server
//! (`/usr/bin/etcd`, loopback, temporary data), N real gateways (each a
//! testbed: namespaces, wireguard-go, `wgbpf run --etcd` loading the data
//! plane on its own device), and, for how it grows with N, M followers in
//! this process (the gateways' watch-and-read path without the enforce).
//! Prints:
//!
//!   fleet_converge gateways=N samples=S median_ms=X min_ms=Y max_ms=Z
//!   fleet_fanout watchers=M samples=S median_ms=X
//!
//! Each figure is the median of `--samples` pushes, all in one run.

use std::{
    collections::BTreeSet,
    fs::File,
    net::{Ipv4Addr, TcpListener},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use etcd_client::{GetOptions, WatchOptions};
use wgbpf::fleet::{
    follow,
    push::{self, Revision},
    report::Report,
    Connection, Layout, Part,
};

const PREFIX: &str = "/bench-fleet";

fn policy(port: u16) -> String {
    format!(
        "[policy]\n\n[[policy.rule]]\naction = \"accept\"\nfrom = [\"peer\"]\nto = [\"gateway\"]\nproto = \"udp\"\nports = [{port}]\n"
    )
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process group of ours, killed whole on drop.
struct Group(Child);
impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: a plain syscall on the group of our own child.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn spawn_group(c: &mut Command) -> Result<Group> {
    Ok(Group(
        c.process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    ))
}

/// A daemon: SIGTERM, then its interface unloaded.
struct Daemon {
    child: Child,
    wgbpf: PathBuf,
    netns: String,
    iface: String,
}
impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: a plain syscall on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.netns))
            .arg("--")
            .arg(&self.wgbpf)
            .args(["unload", "-i", &self.iface])
            .output();
    }
}

fn wait(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("timed out waiting for {what}")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Pushes `shared` to every gateway of `parts`; returns the revision and
/// when the transaction returned.
async fn push_now(
    client: &mut etcd_client::Client,
    layout: &Layout,
    parts: &[(String, String)],
    shared: String,
) -> Result<(u64, Instant)> {
    let base = push::read(client, layout).await?;
    let rev = Revision {
        shared: Some(Part {
            name: "shared".into(),
            text: shared,
        }),
        gateways: parts
            .iter()
            .map(|(n, t)| {
                (
                    n.clone(),
                    Part {
                        name: n.clone(),
                        text: t.clone(),
                    },
                )
            })
            .collect(),
    };
    let r = push::write(client, layout, &base, &rev).await?;
    Ok((r, Instant::now()))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let n: usize = arg("--gateways", "3").parse()?;
    let samples: usize = arg("--samples", "7").parse()?;
    let watchers: Vec<usize> = arg("--watchers", "3,30,300")
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let wgbpf = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("wgbpf"))
        .context("no target directory")?;
    anyhow::ensure!(wgbpf.exists(), "{} not built", wgbpf.display());

    let dir = std::env::temp_dir().join(format!("wgbpf-bench-fleet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (cport, pport) = (free_port(), free_port());
    let ep = format!("127.0.0.1:{cport}");
    let peer = format!("http://127.0.0.1:{pport}");
    let _etcd = spawn_group(
        Command::new("/usr/bin/etcd")
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &format!("http://{ep}")])
            .args(["--advertise-client-urls", &format!("http://{ep}")])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("bench={peer}")]),
    )?;
    let socket = dir.join("etcd.sock");
    let _bridge = spawn_group(
        Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork", socket.display()))
            .arg(format!("TCP:{ep}")),
    )?;
    wait("the bridge", Duration::from_secs(10), || socket.exists())?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let layout = Layout::new(PREFIX)?;
    let connection = Connection::new(&ep);
    let mut client = rt.block_on(async {
        for _ in 0..100 {
            if let Ok(c) = connection.connect().await {
                if c.clone().status().await.is_ok() {
                    return Ok(c);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("etcd did not come up")
    })?;

    // --- N real gateways.
    let mut meshes = Vec::new();
    let mut forwarders = Vec::new();
    let mut parts = Vec::new();
    for i in 0..n {
        let mesh = testbed::Testbed::up(&testbed::TestbedSpec::new(&["peer"]))?;
        let netns = mesh.gateway.netns.clone();
        let port = wgbpf_port(&netns)?;
        forwarders.push(spawn_group(
            Command::new("nsenter")
                .arg(format!("--net=/var/run/netns/{netns}"))
                .args(["--", "socat"])
                .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"))
                .arg(format!("UNIX-CONNECT:{}", socket.display())),
        )?);
        parts.push((format!("gw{i}"), testbed::gateway_mesh_file(&mesh, "")));
        meshes.push((mesh, port));
    }
    rt.block_on(push_now(&mut client, &layout, &parts, policy(5000)))?;
    let mut daemons = Vec::new();
    for (i, (mesh, port)) in meshes.iter().enumerate() {
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", mesh.gateway.netns))
            .arg("--")
            .arg(&wgbpf)
            .args([
                "run",
                "--etcd",
                &format!("127.0.0.1:{port}"),
                "--prefix",
                PREFIX,
            ])
            .args([
                "--gateway",
                &format!("gw{i}"),
                "--no-metrics",
                "--log-format",
                "json",
            ])
            .args(["--repair-interval", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(dir.join(format!("gw{i}.log")))?)
            .spawn()?;
        daemons.push(Daemon {
            child,
            wgbpf: wgbpf.clone(),
            netns: mesh.gateway.netns.clone(),
            iface: mesh.gateway.wg_if.clone(),
        });
    }
    let mut times = Vec::new();
    for s in 0..=samples {
        let t = rt.block_on(converge(
            &mut client,
            &layout,
            &parts,
            5000 + s as u16 % 2,
            n,
        ))?;
        // The first push also waits for the daemons' start.
        if s > 0 {
            times.push(t);
        }
    }
    let (min, max) = (
        times.iter().cloned().fold(f64::MAX, f64::min),
        times.iter().cloned().fold(0.0, f64::max),
    );
    println!(
        "fleet_converge gateways={n} samples={samples} median_ms={:.1} min_ms={min:.1} max_ms={max:.1}",
        median(times.clone())
    );
    drop(daemons);

    // --- M followers in this process: the watch fan-out and the reads.
    for m in watchers {
        let t = rt.block_on(fanout(&connection, &layout, &parts, m, samples))?;
        println!("fleet_fanout watchers={m} samples={samples} median_ms={t:.1}");
    }
    drop(forwarders);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn wgbpf_port(netns: &str) -> Result<u16> {
    // A port free in the namespace: its loopback is empty but for ours.
    let _ = netns;
    Ok(free_port())
}

/// One push, then the time until every one of `n` gateways reports it.
async fn converge(
    client: &mut etcd_client::Client,
    layout: &Layout,
    parts: &[(String, String)],
    port: u16,
    n: usize,
) -> Result<f64> {
    let mut watch = client
        .watch(layout.statuses(), Some(WatchOptions::new().with_prefix()))
        .await?;
    let (rev, t0) = push_now(client, layout, parts, policy(port)).await?;
    let mut done = BTreeSet::new();
    // Reports already there (a fast gateway may beat the watch).
    let now = client
        .get(layout.statuses(), Some(GetOptions::new().with_prefix()))
        .await?;
    for kv in now.kvs() {
        if let Ok(r) = serde_json::from_slice::<Report>(kv.value()) {
            if r.revision == Some(rev) {
                done.insert(r.gateway);
            }
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while done.len() < n {
        let msg = tokio::time::timeout_at(deadline, watch.message())
            .await
            .context("gateways did not converge in 120 s")??;
        let Some(resp) = msg else {
            bail!("watch ended")
        };
        for e in resp.events() {
            if let Some(kv) = e.kv() {
                if let Ok(r) = serde_json::from_slice::<Report>(kv.value()) {
                    if r.revision == Some(rev) {
                        done.insert(r.gateway);
                    }
                }
            }
        }
    }
    Ok(t0.elapsed().as_secs_f64() * 1000.0)
}

/// `m` followers of gateway gw0 in this process; the median time from a
/// push to the last of them having the new document.
async fn fanout(
    connection: &Connection,
    layout: &Layout,
    parts: &[(String, String)],
    m: usize,
    samples: usize,
) -> Result<f64> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(m * 4);
    let mut tasks = Vec::new();
    for _ in 0..m {
        let (c, l, tx) = (connection.clone(), layout.clone(), tx.clone());
        let (itx, mut irx) = tokio::sync::mpsc::channel(4);
        tasks.push(tokio::spawn(follow::follow(c, l, "gw0".into(), itx)));
        tasks.push(tokio::spawn(async move {
            while let Some(doc) = irx.recv().await {
                let _ = tx.send(doc.revision).await;
            }
        }));
    }
    let mut client = connection.connect().await?;
    // Every follower has its first document.
    let mut first = 0;
    while first < m {
        rx.recv().await.context("followers stopped")?;
        first += 1;
    }
    let mut times = Vec::new();
    for s in 0..samples {
        let (rev, t0) = push_now(&mut client, layout, parts, policy(6000 + s as u16 % 2)).await?;
        let mut got = 0;
        while got < m {
            let r = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await?
                .context("followers stopped")?;
            if r == rev {
                got += 1;
            }
        }
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    for t in tasks {
        t.abort();
    }
    Ok(median(times))
}
