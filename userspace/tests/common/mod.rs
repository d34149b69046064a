//! Helpers shared by the integration tests that drive the real `wgbpf`
//! binary (most of them inside a testbed gateway's network namespace).
//! Each test file declares `mod common;` and uses what it needs.

#![allow(dead_code)]

use std::{
    fs::File,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output},
    time::{Duration, Instant},
};

use serde_json::Value;
use testbed::{Host, Testbed};

/// The capability bounding set of deploy/wgbpf@.service (checked by
/// tests/systemd_unit.rs).
pub const DAEMON_CAPS: &str = "-all,+net_admin,+bpf,+perfmon";

// ---------------------------------------------------------------- running wgbpf

/// stdout then stderr, as one text.
pub fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// (success, stdout + stderr).
pub fn ok_said(out: &Output) -> (bool, String) {
    (out.status.success(), said(out))
}

/// (exit code or -1, stdout, stderr).
pub fn code_out_err(out: &Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `f` every 100 ms until it holds; panics naming `what` after
/// `within`.
pub fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not within {within:?}");
}

/// `nsenter --net=/var/run/netns/NS -- wgbpf`: add the arguments.
pub fn wgbpf_command(host: &Host) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/var/run/netns/{}", host.netns))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_wgbpf"));
    c
}

/// The same, with only the capabilities deploy/wgbpf@.service grants.
pub fn wgbpf_daemon_command(host: &Host) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/var/run/netns/{}", host.netns))
        .arg("--")
        .args(["setpriv", "--bounding-set", DAEMON_CAPS, "--"])
        .arg(env!("CARGO_BIN_EXE_wgbpf"));
    c
}

fn wgbpf_output(host: &Host, args: &[&str]) -> Output {
    wgbpf_command(host).args(args).output().expect("run wgbpf")
}

/// Runs the real `wgbpf` inside the host's network namespace:
/// (success, stdout, stderr).
pub fn wgbpf(host: &Host, args: &[&str]) -> (bool, String, String) {
    let (code, out, err) = code_out_err(&wgbpf_output(host, args));
    (code == 0, out, err)
}

/// The same: (exit code or -1, stdout, stderr).
pub fn wgbpf_code(host: &Host, args: &[&str]) -> (i32, String, String) {
    code_out_err(&wgbpf_output(host, args))
}

/// The same: (success, stdout + stderr).
pub fn wgbpf_said(host: &Host, args: &[&str]) -> (bool, String) {
    ok_said(&wgbpf_output(host, args))
}

/// `wgbpf unload -i IF` in the host's namespace, whatever happens.
pub fn unload(host: &Host) {
    let _ = wgbpf_command(host)
        .args(["unload", "-i", &host.wg_if])
        .output();
    // The last version outlives unload (on purpose); the test's interface
    // name is not used again.
    let _ = std::fs::remove_file(wgbpf::dataplane::version::path(&host.wg_if));
}

/// Unloads even when an assertion fails half way.
pub struct Unload<'a>(pub &'a Host);
impl Drop for Unload<'_> {
    fn drop(&mut self) {
        unload(self.0);
    }
}

/// A scratch directory, removed even when the test fails.
pub struct TempDir(pub PathBuf);
impl TempDir {
    /// Creates `path` (and its parents).
    pub fn create(path: PathBuf) -> TempDir {
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The gateway's mesh file (`testbed::gateway_mesh_file`), also managing
/// WireGuard: the private key at `key_file`, listen port 51820.
pub fn managed_mesh_file(mesh: &Testbed, policy: &str, key_file: &Path) -> String {
    testbed::gateway_mesh_file(mesh, policy).replacen(
        "[interface]\n",
        &format!(
            "[interface]\nprivate_key_file = \"{}\"\nlisten_port = 51820\n",
            key_file.display()
        ),
        1,
    )
}

/// `wgbpf counters -c CFG --json`, parsed.
pub fn counters(gw: &Host, cfg: &str) -> Value {
    let (ok, out, err) = wgbpf(gw, &["counters", "-c", cfg, "--json"]);
    assert!(ok, "counters failed: {err}");
    serde_json::from_str(&out).expect("counters json")
}

/// One counter of one peer: `dir` is ingress or egress.
pub fn counter(c: &Value, peer: &str, dir: &str, key: &str) -> u64 {
    let p = c["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer"] == peer)
        .unwrap_or_else(|| panic!("peer {peer} in {c}"));
    p[dir][key].as_u64().unwrap()
}

// ---------------------------------------------------------------- processes

pub fn signal(child: &Child, sig: i32) {
    // SAFETY: plain syscall; the pid is our own child (nsenter and setpriv
    // exec without forking, so it is the program itself).
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// Sends SIGTERM, waits up to `grace`, then kills. Returns the exit status
/// if it exited by itself.
pub fn stop(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(s)) = child.try_wait() {
        return Some(s);
    }
    signal(child, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// JSON log lines of a daemon run (lines that are not JSON are skipped).
pub fn json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Prints the last `n` lines of each log in `dir`, newest first (to keep
/// the logs of a failed run visible).
pub fn print_log_tails(dir: &Path, files: &[&str], n: usize) {
    for f in files {
        if let Ok(t) = std::fs::read_to_string(dir.join(f)) {
            let tail: Vec<&str> = t.lines().rev().take(n).collect();
            eprintln!("--- {f} (last lines, newest first)\n{}", tail.join("\n"));
        }
    }
}

// ---------------------------------------------------------------- netns I/O

/// Runs `f` on a thread that joined `netns` (setns affects the thread only).
pub fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let path = format!("/var/run/netns/{netns}");
    std::thread::spawn(move || {
        let ns = File::open(&path)?;
        // SAFETY: plain syscall on a valid fd; affects this thread only.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .expect("netns thread panicked")
}

/// A port free on the namespace's loopback (the namespace is ours alone).
pub fn free_port(netns: &str) -> u16 {
    in_netns(netns, || {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        Ok(l.local_addr()?.port())
    })
    .expect("free port")
}

/// GET `path` from 127.0.0.1:`port` in `netns`: (status, body).
pub fn http_get(
    netns: &str,
    port: u16,
    path: &str,
    accept: &str,
) -> std::io::Result<(u16, String)> {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    );
    in_netns(netns, move || {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(req.as_bytes())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        // Prometheus answers chunked; the API's JSON is one chunk or more.
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        Ok((status, body))
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// One scrape of wgbpf's /metrics on 127.0.0.1:`port` in `netns`, in the
/// Prometheus text format; any status but 200 is an error.
pub fn scrape(netns: &str, port: u16) -> std::io::Result<String> {
    let (status, body) = http_get(netns, port, "/metrics", "*/*")?;
    if status != 200 {
        return Err(std::io::Error::other(format!("status {status}: {body}")));
    }
    Ok(body)
}

/// A series as `name{a="x",b="y"}`: its name and labels (values with
/// `\"` unescaped; enough for the names the tests use).
fn parse_series(series: &str) -> (String, std::collections::BTreeSet<(String, String)>) {
    let Some((name, rest)) = series.split_once('{') else {
        return (series.to_string(), Default::default());
    };
    let body = rest.strip_suffix('}').unwrap_or(rest);
    let mut labels = std::collections::BTreeSet::new();
    let mut chars = body.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        chars.next(); // the opening quote
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert((key.trim_start_matches(',').to_string(), value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    (name.to_string(), labels)
}

/// The value of one series in a scrape, if present: the name as exposed,
/// the labels given all present (the scrape may have more, such as the
/// `interface` label every series carries).
pub fn sample_in(text: &str, series: &str) -> Option<f64> {
    let (want_name, want) = parse_series(series);
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        let (name, labels) = parse_series(s);
        (name == want_name && want.is_subset(&labels))
            .then(|| v.trim().parse().ok())
            .flatten()
    })
}

/// `promtool check metrics` on a scrape: (success, what it said).
pub fn promtool_check(text: &str, dir: &Path) -> (bool, String) {
    let path = dir.join("scrape.txt");
    std::fs::write(&path, text).unwrap();
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(File::open(&path).unwrap())
        .output()
        .expect("run promtool (Debian package `prometheus`)");
    ok_said(&out)
}

// ---------------------------------------------------------------- traffic

/// Pings `to` from `from` in a loop (at most `max` times, `pause` apart)
/// until finished; counts what was sent and what failed.
pub struct Pinger {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    failed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    sent: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pinger {
    pub fn start(from: &Host, to: std::net::IpAddr, max: usize, pause: Duration) -> Pinger {
        use std::sync::{atomic::Ordering, Arc};
        let stop: Arc<std::sync::atomic::AtomicBool> = Default::default();
        let failed: Arc<std::sync::atomic::AtomicUsize> = Default::default();
        let sent: Arc<std::sync::atomic::AtomicUsize> = Default::default();
        let (s, f, n, from) = (
            Arc::clone(&stop),
            Arc::clone(&failed),
            Arc::clone(&sent),
            from.clone(),
        );
        let thread = std::thread::spawn(move || {
            for _ in 0..max {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if !testbed::ping(&from, to, Duration::from_secs(3)).unwrap_or(false) {
                    f.fetch_add(1, Ordering::SeqCst);
                }
                n.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(pause);
            }
        });
        Pinger {
            stop,
            failed,
            sent,
            thread: Some(thread),
        }
    }

    /// Stops and returns (sent, failed).
    pub fn finish(mut self) -> (usize, usize) {
        self.halt();
        (
            self.sent.load(std::sync::atomic::Ordering::SeqCst),
            self.failed.load(std::sync::atomic::Ordering::SeqCst),
        )
    }

    fn halt(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        self.halt();
    }
}
