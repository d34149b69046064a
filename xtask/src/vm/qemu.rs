//! Boots one kernel under QEMU (TCG) and reads the guest's report from the
//! serial console.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

/// What the guest reported.
#[derive(Default)]
pub struct Report {
    /// (name, ok, detail) per check, in order.
    pub checks: Vec<(String, bool, String)>,
    /// WGBPF-VM-INFO key=value lines.
    pub info: BTreeMap<String, String>,
    /// WGBPF-VM-JSON name {...} lines.
    pub json: BTreeMap<String, String>,
    /// The guest's final verdict, if it got that far.
    pub result: Option<bool>,
    /// wgbpf load's stderr, when the load failed.
    pub load_error: Option<Vec<String>>,
    pub timed_out: bool,
    pub elapsed: Duration,
    /// The last lines of the console, for a guest that never finished.
    pub tail: Vec<String>,
}

impl Report {
    /// Whether /init ran (it reports the kernel release first).
    pub fn reached_init(&self) -> bool {
        self.info.contains_key("kernel")
    }
}

pub struct Boot<'a> {
    pub label: &'a str,
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    pub log: &'a Path,
    pub timeout: Duration,
    pub verbose: bool,
}

pub fn boot(b: &Boot) -> Result<Report> {
    let mut child = Command::new("qemu-system-x86_64")
        // Single-threaded TCG: with one host thread per vCPU (MTTCG) the 6.12
        // kernel sometimes dies at boot on a stale int3 from live code
        // patching (text_poke_bp) seen by the other vCPU.
        .args(["-accel", "tcg,thread=single", "-cpu", "max"])
        .args(["-m", "1024", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(b.vmlinuz)
        .arg("-initrd")
        .arg(b.initrd)
        .args(["-append", "console=ttyS0 panic=-1 loglevel=4 rdinit=/init"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64 (run scripts/setup.sh)")?;
    let start = Instant::now();
    let (tx, rx) = mpsc::channel::<String>();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(out).split(b'\n').map_while(Result::ok) {
            let l = String::from_utf8_lossy(&l)
                .trim_end_matches('\r')
                .to_string();
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            if tx2.send(format!("[qemu] {l}")).is_err() {
                break;
            }
        }
    });

    let mut log = std::fs::File::create(b.log).with_context(|| b.log.display().to_string())?;
    let mut r = Report::default();
    let mut tail = std::collections::VecDeque::new();
    let mut in_error = false;
    let deadline = start + b.timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(l) => l,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                r.timed_out = true;
                break;
            }
            // Both pipes closed: QEMU has exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let _ = writeln!(log, "{line}");
        tail.push_back(line.clone());
        if tail.len() > 40 {
            tail.pop_front();
        }
        if b.verbose {
            println!("[{}] {line}", b.label);
        }
        // A marker may follow kernel output on the same line.
        let Some(pos) = line.find("WGBPF-VM-") else {
            if in_error {
                r.load_error.get_or_insert_with(Vec::new).push(line);
            }
            continue;
        };
        let m = &line[pos..];
        if m.starts_with("WGBPF-VM-LOAD-ERROR-BEGIN") {
            in_error = true;
            r.load_error.get_or_insert_with(Vec::new);
        } else if m.starts_with("WGBPF-VM-LOAD-ERROR-END") {
            in_error = false;
        } else if in_error {
            r.load_error.get_or_insert_with(Vec::new).push(line.clone());
        } else if let Some(rest) = m.strip_prefix("WGBPF-VM-CHECK ") {
            let mut it = rest.splitn(3, ' ');
            let ok = it.next() == Some("ok");
            let name = it.next().unwrap_or("?").to_string();
            let detail = it.next().unwrap_or("").to_string();
            if !b.verbose {
                println!(
                    "[{}] {:<4} {name} {detail}",
                    b.label,
                    if ok { "ok" } else { "FAIL" }
                );
            }
            r.checks.push((name, ok, detail));
        } else if let Some(rest) = m.strip_prefix("WGBPF-VM-INFO ") {
            if let Some((k, v)) = rest.split_once('=') {
                r.info.insert(k.to_string(), v.trim().to_string());
            }
        } else if let Some(rest) = m.strip_prefix("WGBPF-VM-JSON ") {
            if let Some((k, v)) = rest.split_once(' ') {
                r.json.insert(k.to_string(), v.to_string());
            }
        } else if let Some(rest) = m.strip_prefix("WGBPF-VM-RESULT ") {
            r.result = Some(rest.starts_with("pass"));
            if !b.verbose {
                println!("[{}] {m}", b.label);
            }
            break;
        }
    }
    // The guest powers off by itself after its result; give it a moment.
    let grace = Instant::now() + Duration::from_secs(if r.result.is_some() { 20 } else { 0 });
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() >= grace {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Whatever is still buffered goes to the log.
    while let Ok(l) = rx.try_recv() {
        let _ = writeln!(log, "{l}");
    }
    r.elapsed = start.elapsed();
    r.tail = tail.into();
    Ok(r)
}
