//! Cleaning up when interrupted: SIGINT, SIGTERM and SIGHUP are taken by a
//! thread of their own (blocked everywhere else), which raises the stop flag
//! the benchmark checks between (and inside) measurements, kills a running
//! `nft` load, and, should the main thread not finish its own clean-up in
//! time, deletes the registered namespaces itself before exiting.
//!
//! The namespaces are the whole clean-up: the veths, nftables tables and
//! attached programs live in them (BPF programs and maps of this process
//! go with it).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Every namespace of the benchmark is called `PREFIX<pid>-<role>`.
pub const PREFIX: &str = "wgbpf-dpb-";
/// How long the main thread gets to unwind after a signal.
const GRACE: Duration = Duration::from_secs(30);

static STOP: AtomicBool = AtomicBool::new(false);
static CHILD: AtomicI32 = AtomicI32::new(0);
static NAMESPACES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Blocks the signals in the calling thread (and so in every thread it
/// starts later; call first thing in `main`) and starts the thread that
/// waits for them. Children get an empty mask back from std's spawn.
pub fn install() -> Result<()> {
    // SAFETY: plain libc calls on a local, initialised signal set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            bail!("pthread_sigmask: {}", std::io::Error::from_raw_os_error(rc));
        }
        set
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut sig = 0;
            // SAFETY: `set` is a valid signal set, `sig` a valid out pointer.
            unsafe { libc::sigwait(&set, &mut sig) };
            eprintln!("bench-dataplane: signal {sig}: stopping and cleaning up");
            STOP.store(true, Ordering::SeqCst);
            let child = CHILD.load(Ordering::SeqCst);
            if child > 0 {
                // SAFETY: kill(2) on a pid we spawned and have not reaped.
                unsafe { libc::kill(child, libc::SIGKILL) };
            }
            std::thread::sleep(GRACE);
            eprintln!("bench-dataplane: clean-up took too long: deleting namespaces and exiting");
            for ns in NAMESPACES.lock().map(|v| v.clone()).unwrap_or_default() {
                delete_netns(&ns);
            }
            std::process::exit(130);
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// Whether a signal asked the benchmark to stop.
pub fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Fails once a signal asked the benchmark to stop.
pub fn check() -> Result<()> {
    if stopped() {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `d`, waking early (with an error) if a signal asks to stop.
pub fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

pub fn register(ns: &str) {
    if let Ok(mut v) = NAMESPACES.lock() {
        v.push(ns.to_string());
    }
}

pub fn unregister(ns: &str) {
    if let Ok(mut v) = NAMESPACES.lock() {
        v.retain(|n| n != ns);
    }
}

pub(crate) fn delete_netns(ns: &str) {
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// What [`run_child`] saw: `None` when the deadline killed it.
pub struct Finished {
    pub success: Option<bool>,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs `cmd` (stdin, stdout closed; stderr kept) until it exits or
/// `timeout` passes; a signal kills it too (then this fails).
pub fn run_child(cmd: &mut Command, timeout: Duration) -> Result<Finished> {
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    CHILD.store(child.id() as i32, Ordering::SeqCst);
    let mut pipe = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(p) = pipe.as_mut() {
            let _ = std::io::Read::read_to_string(p, &mut s);
        }
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if t.elapsed() >= timeout || stopped() {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    CHILD.store(0, Ordering::SeqCst);
    let stderr = reader.join().unwrap_or_default();
    check()?;
    Ok(Finished {
        success: status.map(|s| s.success()),
        stderr,
        elapsed: t.elapsed(),
    })
}

/// Deletes namespaces left by earlier runs whose process is gone (a
/// SIGKILL, a crash).
pub fn sweep_stale() {
    let Ok(dir) = std::fs::read_dir("/var/run/netns") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("bench-dataplane: removing stale namespace {name}");
            delete_netns(&name);
        }
    }
}
