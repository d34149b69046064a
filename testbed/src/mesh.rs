//! Building and tearing down the mesh.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context, Result};

use crate::exec::{run_checked, run_with_timeout, wait_deadline, COMMAND_TIMEOUT};
use crate::host::{netns_cmd, Host};
use crate::names::{self, netns_name, wg_if_name, wg_sock_path};
use crate::netns;
use crate::traffic::ping;

/// Where each run keeps its keys, wireguard-go logs and liveness lock. /run
/// is a root-only tmpfs, emptied on reboot like /run/netns itself.
const STATE_ROOT: &str = "/run/wgbpf-testbed";
/// WireGuard listen port of every host; each namespace has its own ports.
pub(crate) const WG_PORT: u16 = 51820;
/// Tunnel addresses are .1 (gateway), .2, .3, ... of these /24 and /64.
const TUNNEL_V4_NET: [u8; 3] = [10, 77, 0];
const TUNNEL_V6_PREFIX: u16 = 0xfd77;
/// The host part of a /24 leaves room for the gateway and 253 peers; keep a
/// margin.
const MAX_PEERS: usize = 200;
const SOCKET_TIMEOUT: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// wireguard-go gets this long to exit cleanly (removing its socket and
/// TUN device) before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// `sweep_stale` leaves younger state directories without a lock alone:
/// they may be between creating the directory and locking it.
const SWEEP_MIN_AGE: Duration = Duration::from_secs(30);

/// Stages after which `Testbed::up_failing_at` can fail.
#[doc(hidden)]
pub const FAULT_STAGES: [&str; 3] = ["netns", "daemons", "handshakes"];

#[derive(Debug, Clone)]
pub struct TestbedSpec {
    /// Peer names, e.g. ["alice", "bob"]: lowercase ASCII letters, digits
    /// and '_', at most 32 bytes, not "gateway".
    pub peers: Vec<String>,
}

impl TestbedSpec {
    pub fn new(peers: &[&str]) -> TestbedSpec {
        TestbedSpec {
            peers: peers.iter().map(|p| p.to_string()).collect(),
        }
    }
}

/// A running mesh. Dropping it tears everything down (best effort);
/// [`Testbed::down`] does the same and reports failures.
pub struct Testbed {
    pub gateway: Host,
    pub peers: Vec<Host>,
    run_id: String,
    cleanup: Cleanup,
}

impl Testbed {
    /// Creates namespaces, underlay, keys and tunnels, and returns once
    /// every peer pings the gateway through the tunnel on IPv4 and IPv6 and
    /// the gateway has a handshake with every peer. On failure everything
    /// created so far is removed before the error is returned.
    pub fn up(spec: &TestbedSpec) -> Result<Testbed> {
        Self::up_inner(spec, None)
    }

    /// Test hook: like `up`, but fails on purpose once stage `stage` (one
    /// of [`FAULT_STAGES`]) is done, to prove the partial mesh is removed.
    #[doc(hidden)]
    pub fn up_failing_at(spec: &TestbedSpec, stage: &str) -> Result<Testbed> {
        Self::up_inner(spec, Some(stage))
    }

    fn up_inner(spec: &TestbedSpec, fault: Option<&str>) -> Result<Testbed> {
        validate(spec)?;
        // `cleanup` records each resource as it is created; if any step
        // below fails, returning drops it, which removes them again.
        let mut cleanup = Cleanup::default();
        let state = claim_run_id()?;
        let run_id = state.run_id.clone();
        let state_dir = state.dir.clone();
        cleanup.state = Some(state);
        let fail_at = |stage: &str| match fault {
            Some(f) if f == stage => {
                bail!("injected fault after {stage} in run {run_id}: as asked")
            }
            _ => Ok(()),
        };

        let mut hosts = Vec::new();
        for (index, name) in std::iter::once("gateway")
            .chain(spec.peers.iter().map(String::as_str))
            .enumerate()
        {
            let role = if index == 0 { "gw" } else { name };
            hosts.push(create_host(
                &mut cleanup,
                &state_dir,
                &run_id,
                index,
                name,
                role,
            )?);
        }
        fail_at("netns")?;
        let (gateway, peers) = hosts.split_first_mut().context("no hosts")?;
        configure_gateway_sysctls(gateway)?;
        for (i, peer) in peers.iter().enumerate() {
            link_underlay(gateway, peer, i + 1)?;
        }
        for (i, host) in std::iter::once(&*gateway).chain(peers.iter()).enumerate() {
            let daemon = start_wireguard_go(host, &state_dir)?;
            cleanup.daemons.push(daemon);
            configure_tunnel_device(host, i)?;
        }
        fail_at("daemons")?;
        configure_wireguard(gateway, peers, &state_dir)?;
        for host in std::iter::once(&mut *gateway).chain(peers.iter_mut()) {
            host.ifindex = netns::ifindex(&host.netns, &host.wg_if)?;
        }
        wait_for_handshakes(gateway, peers, &cleanup)?;
        fail_at("handshakes")?;

        let mut hosts = hosts.into_iter();
        let gateway = hosts.next().context("no gateway")?;
        Ok(Testbed {
            gateway,
            peers: hosts.collect(),
            run_id,
            cleanup,
        })
    }

    /// The host called `name` ("gateway" or a peer name). Panics if there
    /// is none, which is a bug in the calling test.
    pub fn host(&self, name: &str) -> &Host {
        self.try_host(name)
            .unwrap_or_else(|| panic!("mesh {} has no host {name:?}", self.run_id))
    }

    pub fn try_host(&self, name: &str) -> Option<&Host> {
        self.hosts().find(|h| h.name == name)
    }

    /// Gateway first, then the peers in `TestbedSpec` order.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        std::iter::once(&self.gateway).chain(self.peers.iter())
    }

    /// The short id all names of this run derive from.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The private key file (mode 0600) of one of this mesh's hosts.
    pub fn private_key_file(&self, host: &Host) -> PathBuf {
        key_path(&Path::new(STATE_ROOT).join(&self.run_id), &host.wg_if)
    }

    /// Tears everything down, reporting what could not be removed.
    pub fn down(mut self) -> Result<()> {
        self.cleanup.run()
    }
}

fn validate(spec: &TestbedSpec) -> Result<()> {
    ensure!(!spec.peers.is_empty(), "a mesh needs at least one peer");
    ensure!(spec.peers.len() <= MAX_PEERS, "at most {MAX_PEERS} peers");
    for (i, p) in spec.peers.iter().enumerate() {
        ensure!(names::valid_peer_name(p), "bad peer name {p:?}");
        ensure!(!spec.peers[..i].contains(p), "duplicate peer name {p:?}");
    }
    Ok(())
}

pub(crate) fn tunnel_v4(index: usize) -> Ipv4Addr {
    let [a, b, c] = TUNNEL_V4_NET;
    Ipv4Addr::new(a, b, c, index as u8 + 1)
}

pub(crate) fn tunnel_v6(index: usize) -> Ipv6Addr {
    Ipv6Addr::new(TUNNEL_V6_PREFIX, 0, 0, 0, 0, 0, 0, index as u16 + 1)
}

/// Underlay of peer `i` (1-based): 198.18.i.0/24, gateway .1, peer .2.
fn underlay_v4(peer: usize, host_part: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, peer as u8, host_part)
}

/// Per-run state directory plus the lock that marks the run as alive.
struct StateDir {
    run_id: String,
    dir: PathBuf,
    /// flock(LOCK_EX) held for the life of the mesh; `sweep_stale` treats a
    /// directory whose lock it can take as abandoned.
    _lock: File,
}

/// Picks a run id and claims it machine-wide: creating the state directory
/// is atomic and fails if another run (in any process) has the same id.
fn claim_run_id() -> Result<StateDir> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(STATE_ROOT)
        .with_context(|| format!("creating {STATE_ROOT}"))?;
    for _ in 0..16 {
        let run_id = names::new_run_id();
        let dir = Path::new(STATE_ROOT).join(&run_id);
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                let lock = lock_file(&dir)?;
                return Ok(StateDir {
                    run_id,
                    dir,
                    _lock: lock,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    bail!("could not find a free run id in {STATE_ROOT}")
}

/// Creates and locks `dir/lock`. The file is locked under a temporary name
/// and then renamed, so a `lock` file that exists has been locked at least
/// once: if `sweep_stale` can take it, its owner is gone.
fn lock_file(dir: &Path) -> Result<File> {
    let tmp = dir.join("lock.tmp");
    let file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    // SAFETY: valid fd; flock has no memory effects.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "locking {}: {}",
            tmp.display(),
            std::io::Error::last_os_error()
        );
    }
    fs::rename(&tmp, dir.join("lock"))?;
    Ok(file)
}

/// Creates the namespace and keys of one host; `ifindex` is filled in once
/// the tunnel device exists.
fn create_host(
    cleanup: &mut Cleanup,
    state_dir: &Path,
    run_id: &str,
    index: usize,
    name: &str,
    role: &str,
) -> Result<Host> {
    let ns = netns_name(run_id, role);
    run_checked(
        Command::new("ip").args(["netns", "add", &ns]),
        COMMAND_TIMEOUT,
    )?;
    cleanup.netns.push(ns.clone());
    let wg_if = wg_if_name(run_id, index);
    let public_key = generate_key(state_dir, &wg_if)?;
    let host = Host {
        name: name.to_string(),
        netns: ns,
        wg_if,
        tunnel_v4: tunnel_v4(index),
        tunnel_v6: tunnel_v6(index),
        public_key,
        ifindex: 0,
    };
    // A new namespace's loopback is down; local services need it up.
    host.run(&["ip", "link", "set", "lo", "up"])?;
    Ok(host)
}

fn key_path(state_dir: &Path, wg_if: &str) -> PathBuf {
    state_dir.join(format!("{wg_if}.key"))
}

/// Writes a fresh private key to the state directory (mode 0600) and
/// returns the public key.
fn generate_key(state_dir: &Path, wg_if: &str) -> Result<String> {
    let private = run_checked(Command::new("wg").arg("genkey"), COMMAND_TIMEOUT)?;
    let path = key_path(state_dir, wg_if);
    OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(private.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))?;
    public_key(&private)
}

fn public_key(private: &str) -> Result<String> {
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning wg pubkey")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(private.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "wg pubkey: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

fn configure_gateway_sysctls(gw: &Host) -> Result<()> {
    gw.run(&[
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ip_forward=1",
        "net.ipv6.conf.all.forwarding=1",
        // Forwarding depends on `all` alone. The per-device flag (which
        // `all` just copied to `default`) only makes devices routers: they
        // join ff02::2 and send MLDv2 reports into the tunnel for a second
        // or two after link up, so devices created from now on get 0.
        "net.ipv6.conf.default.forwarding=0",
        // The gateway forwards peer-to-peer traffic out of the interface it
        // came in on; without this it would also send ICMP redirects into
        // the tunnel, extra packets that would muddle tests counting them.
        "net.ipv4.conf.all.send_redirects=0",
        "net.ipv4.conf.default.send_redirects=0",
    ])?;
    Ok(())
}

/// One veth pair per peer, created directly inside the two namespaces so
/// its names never meet the root namespace's.
fn link_underlay(gw: &Host, peer: &Host, i: usize) -> Result<()> {
    let gw_end = format!("ul{i}");
    gw.run(&[
        "ip",
        "link",
        "add",
        &gw_end,
        "type",
        "veth",
        "peer",
        "name",
        "ul0",
        "netns",
        &peer.netns,
    ])?;
    let gw_addr = format!("{}/24", underlay_v4(i, 1));
    let peer_addr = format!("{}/24", underlay_v4(i, 2));
    gw.run(&["ip", "addr", "add", &gw_addr, "dev", &gw_end])?;
    gw.run(&["ip", "link", "set", &gw_end, "up"])?;
    peer.run(&["ip", "addr", "add", &peer_addr, "dev", "ul0"])?;
    peer.run(&["ip", "link", "set", "ul0", "up"])?;
    Ok(())
}

/// A wireguard-go process we started, running in the foreground.
struct Daemon {
    wg_if: String,
    child: Child,
    log: PathBuf,
}

/// Starts wireguard-go inside the host's namespace (it creates its TUN
/// device in the namespace it runs in) and waits for its UAPI socket.
fn start_wireguard_go(host: &Host, state_dir: &Path) -> Result<Daemon> {
    let log = state_dir.join(format!("{}.log", host.wg_if));
    let out = File::create(&log)?;
    // nsenter execs wireguard-go without forking, so `child` is the daemon.
    let child = netns_cmd(&host.netns, "wireguard-go")
        .args(["-f", &host.wg_if])
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("spawning wireguard-go")?;
    let mut daemon = Daemon {
        wg_if: host.wg_if.clone(),
        child,
        log,
    };
    match wait_for_socket(&mut daemon) {
        Ok(()) => Ok(daemon),
        Err(e) => {
            // Not yet in `Cleanup`: stop it here.
            let _ = daemon.stop();
            Err(e)
        }
    }
}

fn wait_for_socket(daemon: &mut Daemon) -> Result<()> {
    let sock = wg_sock_path(&daemon.wg_if);
    let deadline = Instant::now() + SOCKET_TIMEOUT;
    while !sock.exists() {
        if let Some(status) = daemon.child.try_wait()? {
            bail!("wireguard-go exited ({status}): {}", daemon.log_tail());
        }
        ensure!(
            Instant::now() < deadline,
            "wireguard-go did not create {} within {SOCKET_TIMEOUT:?}: {}",
            sock.display(),
            daemon.log_tail()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

impl Daemon {
    /// SIGTERM lets wireguard-go remove its socket and TUN device; SIGKILL
    /// if it does not exit in time. Removes a leftover socket either way.
    fn stop(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            // SAFETY: signalling our own child, which has not been reaped.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            if wait_deadline(&mut self.child, Instant::now() + STOP_TIMEOUT)?.is_none() {
                let _ = self.child.kill();
                self.child.wait()?;
            }
        }
        // The run id is ours alone, so a socket by this name is ours too.
        remove_if_exists(&wg_sock_path(&self.wg_if))
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// Addresses and link state of the tunnel device of host `index`.
fn configure_tunnel_device(host: &Host, index: usize) -> Result<()> {
    let dev = host.wg_if.as_str();
    // Make the TUN device look like a kernel WireGuard device, which has
    // no IPv6 link-local address and no IFF_MULTICAST. Without a link-local
    // address the kernel sends no router solicitations or MLD reports into
    // the tunnel, and the gateway no ICMPv6 redirects: tests see only the
    // traffic they make.
    host.run(&["ip", "link", "set", "dev", dev, "addrgenmode", "none"])?;
    host.run(&["ip", "link", "set", "dev", dev, "multicast", "off"])?;
    let v4 = format!("{}/24", tunnel_v4(index));
    let v6 = format!("{}/64", tunnel_v6(index));
    host.run(&["ip", "addr", "add", &v4, "dev", dev])?;
    // nodad: usable at once instead of after duplicate address detection.
    host.run(&["ip", "-6", "addr", "add", &v6, "dev", dev, "nodad"])?;
    host.run(&["ip", "link", "set", "dev", dev, "up"])?;
    Ok(())
}

/// The gateway knows every peer by its own /32 and /128; each peer knows
/// only the gateway, for the whole tunnel subnet, so traffic between peers
/// goes through the gateway.
fn configure_wireguard(gw: &Host, peers: &[Host], state_dir: &Path) -> Result<()> {
    let mut args = base_wg_args(gw, state_dir);
    for p in peers {
        let allowed = format!("{}/32,{}/128", p.tunnel_v4, p.tunnel_v6);
        args.extend(["peer".into(), p.public_key.clone()]);
        args.extend(["allowed-ips".into(), allowed]);
    }
    run_wg(gw, &args)?;
    for (i, p) in peers.iter().enumerate() {
        let mut args = base_wg_args(p, state_dir);
        let allowed = format!("{}/24,{}/64", tunnel_v4(0), tunnel_v6(0));
        let endpoint = format!("{}:{WG_PORT}", underlay_v4(i + 1, 1));
        args.extend(["peer".into(), gw.public_key.clone()]);
        args.extend(["allowed-ips".into(), allowed]);
        args.extend(["endpoint".into(), endpoint]);
        // Keepalives start the handshake at once and keep the session warm;
        // they travel on the underlay only, never through the TUN device.
        args.extend(["persistent-keepalive".into(), "1".into()]);
        run_wg(p, &args)?;
    }
    Ok(())
}

fn base_wg_args(host: &Host, state_dir: &Path) -> Vec<String> {
    let key = key_path(state_dir, &host.wg_if);
    vec![
        "set".into(),
        host.wg_if.clone(),
        "listen-port".into(),
        WG_PORT.to_string(),
        "private-key".into(),
        key.display().to_string(),
    ]
}

fn run_wg(host: &Host, args: &[String]) -> Result<String> {
    let mut all = vec!["wg"];
    all.extend(args.iter().map(String::as_str));
    host.run(&all)
}

/// Pings the gateway from every peer (which also triggers any missing
/// handshake), then checks the gateway saw a handshake from each peer.
fn wait_for_handshakes(gw: &Host, peers: &[Host], cleanup: &Cleanup) -> Result<()> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    for p in peers {
        for to in [IpAddr::V4(gw.tunnel_v4), IpAddr::V6(gw.tunnel_v6)] {
            let left = deadline.saturating_duration_since(Instant::now());
            if !ping(p, to, left.max(Duration::from_millis(100)))? {
                bail!(
                    "{} cannot ping gateway {to} through the tunnel\n{}",
                    p.name,
                    diagnostics(gw, cleanup)
                );
            }
        }
    }
    let shakes = run_wg(
        gw,
        &["show".into(), gw.wg_if.clone(), "latest-handshakes".into()],
    )?;
    for p in peers {
        let done = shakes.lines().any(|l| {
            let mut f = l.split_whitespace();
            f.next() == Some(&p.public_key) && f.next().is_some_and(|t| t != "0")
        });
        ensure!(done, "gateway has no handshake with {}:\n{shakes}", p.name);
    }
    Ok(())
}

/// What helps most when a mesh does not come up: `wg show` and the logs.
fn diagnostics(gw: &Host, cleanup: &Cleanup) -> String {
    let wg = gw
        .run(&["wg", "show", &gw.wg_if])
        .unwrap_or_else(|e| e.to_string());
    let mut s = format!("wg show (gateway):\n{wg}");
    for d in &cleanup.daemons {
        s.push_str(&format!("\nlog of {}:\n{}", d.wg_if, d.log_tail()));
    }
    s
}

/// Everything a mesh has created so far, in creation order.
#[derive(Default)]
struct Cleanup {
    daemons: Vec<Daemon>,
    netns: Vec<String>,
    state: Option<StateDir>,
}

impl Cleanup {
    /// Removes everything, carrying on past failures; idempotent.
    fn run(&mut self) -> Result<()> {
        let mut errors = Vec::new();
        for mut d in self.daemons.drain(..) {
            if let Err(e) = d.stop() {
                errors.push(format!("stopping wireguard-go {}: {e:#}", d.wg_if));
            }
        }
        for ns in self.netns.drain(..) {
            if let Err(e) = delete_netns(&ns) {
                errors.push(format!("deleting netns {ns}: {e:#}"));
            }
        }
        // Keys, logs and the lock go last: a namespace that could not be
        // deleted above is then recognisably orphaned for `sweep_stale`.
        if let Some(state) = self.state.take() {
            if let Err(e) = fs::remove_dir_all(&state.dir) {
                errors.push(format!("removing {}: {e}", state.dir.display()));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("mesh cleanup: {}", errors.join("; "))
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.run();
    }
}

/// Kills whatever still runs in the namespace (it would keep it alive),
/// then deletes it, which also removes its veth ends.
fn delete_netns(ns: &str) -> Result<()> {
    kill_netns_pids(ns);
    let out = run_with_timeout(
        Command::new("ip").args(["netns", "del", ns]),
        COMMAND_TIMEOUT,
    )?;
    if !out.success() && netns::netns_path(ns).exists() {
        bail!("ip netns del {ns}: {}", out.stderr.trim());
    }
    Ok(())
}

fn kill_netns_pids(ns: &str) {
    let Ok(out) = run_checked(
        Command::new("ip").args(["netns", "pids", ns]),
        COMMAND_TIMEOUT,
    ) else {
        return;
    };
    let me = std::process::id();
    for pid in out.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
        if pid != me {
            // SAFETY: plain signal; the process runs in our private netns.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Removes what runs of dead processes left behind (a test binary killed
/// by a CI timeout never runs its destructors): namespaces, wireguard-go
/// processes, UAPI sockets and state directories of runs whose lock nobody
/// holds any more. Live runs, in this or other processes, are untouched.
/// Returns the run ids it removed.
pub fn sweep_stale() -> Result<Vec<String>> {
    let mut swept = Vec::new();
    for run_id in stale_run_ids()? {
        for ns in list_netns()? {
            if names::parse_netns_name(&ns).is_some_and(|(id, _)| id == run_id) {
                delete_netns(&ns)?;
            }
        }
        remove_stale_sockets(&run_id)?;
        let dir = Path::new(STATE_ROOT).join(&run_id);
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        swept.push(run_id);
    }
    Ok(swept)
}

/// Runs with a state directory whose lock is free (owner gone), plus runs
/// whose namespaces outlived their state directory.
fn stale_run_ids() -> Result<Vec<String>> {
    let mut ids = Vec::new();
    if let Ok(entries) = fs::read_dir(STATE_ROOT) {
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if state_dir_is_stale(&entry.path()) {
                ids.push(id);
            }
        }
    }
    for ns in list_netns()? {
        if let Some((id, _)) = names::parse_netns_name(&ns) {
            let orphan = !Path::new(STATE_ROOT).join(id).exists();
            if orphan && !ids.iter().any(|i| i == id) {
                ids.push(id.to_string());
            }
        }
    }
    Ok(ids)
}

fn state_dir_is_stale(dir: &Path) -> bool {
    let Ok(lock) = File::open(dir.join("lock")) else {
        // Not locked yet: either being created right now, or its owner died
        // in between; only age tells.
        return fs::metadata(dir)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age >= SWEEP_MIN_AGE);
    };
    // SAFETY: valid fd. Taking the lock proves its owner is gone (locks are
    // per open file, so this holds for runs in this process too); it is
    // released when `lock` is closed.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

fn list_netns() -> Result<Vec<String>> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir("/var/run/netns") {
        for entry in entries.flatten() {
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(out)
}

fn remove_stale_sockets(run_id: &str) -> Result<()> {
    let prefix = format!("{}{run_id}", names::IF_PREFIX);
    if let Ok(entries) = fs::read_dir(names::WG_SOCK_DIR) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && name.ends_with(".sock") {
                remove_if_exists(&entry.path())?;
            }
        }
    }
    Ok(())
}
