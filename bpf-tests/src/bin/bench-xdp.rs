//! Throughput of the XDP guard on a veth, against a program that only
//! returns XDP_DROP on the same veth in the same run (and, for valid data,
//! against no program at all).
//!
//! Two network namespaces of our own joined by a veth (`va` in tx, `vb` in
//! rx). Sender threads in tx write prebuilt frames to `va` with an AF_PACKET
//! socket (sendmmsg, 256 frames a call, qdisc bypassed); the program under
//! test runs in native mode on `vb`. A packet `va` transmits is one the
//! program on `vb` ran on (veth hands it over through a ring; when the
//! ring is full the sender's packet is dropped before any program sees it
//! and not counted), so pps = `va`'s tx_packets over the sample's time.
//!
//! Cases: `garbage` (UDP to the port, 100 bytes of an unknown type),
//! `handshake_flood` (148-byte initiations from 256 sources, every bucket
//! soon empty), `handshake_spoofed` (initiations from 131,072 sources in
//! turn, twice what the bucket map holds: nearly every one a bucket insert
//! and an eviction, as in a flood from spoofed addresses), `valid_data` (128-byte data messages, passed to the stack,
//! which finds no socket; also measured against a program that only
//! returns XDP_PASS, and against no program). Each sample runs every
//! program back to back (in alternating order); a ratio is the median of
//! the per-sample ratios, so the machine's drifting load cancels out. Results on stdout; everything else on stderr.

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::{Command, ExitCode},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use aya::programs::{TestRun, TestRunOptions, XdpMode};
use wgbpf::dataplane::xdp_guard::{GuardConfig, GuardLoadOptions, XdpGuard};
use wgbpf_common::xdp::{capacity, names};

const USAGE: &str = "usage: bench-xdp [--seconds S] [--samples N] [--senders T]";
const PORT: u16 = 51820;
const BATCH: usize = 256;
/// Sources of the spoofed flood: twice the bucket map's capacity.
const SPOOFED_SOURCES: usize = 2 * capacity::BUCKETS as usize;

struct Args {
    seconds: f64,
    samples: usize,
    senders: usize,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        seconds: 0.5,
        samples: 15,
        senders: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            eprintln!("{USAGE}");
            std::process::exit(0);
        }
        let v = it
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--seconds" => a.seconds = v.parse()?,
            "--samples" => a.samples = v.parse()?,
            "--senders" => a.senders = v.parse()?,
            _ => bail!("unknown argument {flag}\n{USAGE}"),
        }
    }
    ensure!(
        a.seconds > 0.0 && a.samples > 0 && a.senders > 0,
        "all values must be positive\n{USAGE}"
    );
    Ok(a)
}

fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    ensure!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The two namespaces and the veth; removed on drop.
struct Bed {
    tx: String,
    rx: String,
}

impl Bed {
    fn up() -> Result<Bed> {
        let id = format!("{}", std::process::id());
        let bed = Bed {
            tx: format!("wgbpf-bx-{id}-tx"),
            rx: format!("wgbpf-bx-{id}-rx"),
        };
        ip(&["netns", "add", &bed.tx])?;
        ip(&["netns", "add", &bed.rx])?;
        ip(&[
            "-n", &bed.tx, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns",
            &bed.rx,
        ])?;
        ip(&["-n", &bed.tx, "addr", "add", "192.0.2.1/24", "dev", "va"])?;
        ip(&["-n", &bed.rx, "addr", "add", "192.0.2.2/24", "dev", "vb"])?;
        for (ns, dev) in [(&bed.tx, "va"), (&bed.rx, "vb")] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(bed)
    }

    fn mac(&self, ns: &str, dev: &str) -> Result<[u8; 6]> {
        let v: serde_json::Value =
            serde_json::from_str(&ip(&["-n", ns, "-j", "link", "show", dev])?)?;
        let s = v[0]["address"].as_str().context("no MAC address")?;
        let mut mac = [0u8; 6];
        for (m, part) in mac.iter_mut().zip(s.split(':')) {
            *m = u8::from_str_radix(part, 16)?;
        }
        Ok(mac)
    }

    /// `va`'s transmitted packets.
    fn tx_packets(&self) -> Result<u64> {
        let v: serde_json::Value =
            serde_json::from_str(&ip(&["-n", &self.tx, "-s", "-j", "link", "show", "va"])?)?;
        v[0]["stats64"]["tx"]["packets"]
            .as_u64()
            .context("no tx packets in ip's JSON")
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for ns in [&self.tx, &self.rx] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn enter(netns: &str) -> Result<()> {
    let f = File::open(format!("/var/run/netns/{netns}"))?;
    // SAFETY: plain syscall on a valid fd; affects the calling thread only.
    ensure!(
        unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } == 0,
        "setns {netns}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

fn checksum(h: &[u8]) -> u16 {
    let mut s: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An Ethernet/IPv4/UDP frame to the port.
fn frame(dst_mac: [u8; 6], src: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42 + payload.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[8] = 64;
    h[9] = 17;
    h[12..16].copy_from_slice(&src);
    h[16..20].copy_from_slice(&[192, 0, 2, 2]);
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&h);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&PORT.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

fn message(kind: u8, len: usize) -> Vec<u8> {
    let mut m: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) | 1).collect();
    m[0] = kind;
    m[1..4].fill(0);
    m
}

/// The frames of a case (sent round-robin).
fn frames(case: &str, mac: [u8; 6]) -> Vec<Vec<u8>> {
    match case {
        "garbage" => vec![frame(mac, [198, 51, 100, 1], &message(0x99, 100))],
        "handshake_flood" => (0..BATCH)
            .map(|i| {
                frame(
                    mac,
                    [198, 51, 100 + (i / 250) as u8, (i % 250) as u8 + 1],
                    &message(1, 148),
                )
            })
            .collect(),
        "valid_data" => vec![frame(mac, [198, 51, 100, 1], &message(4, 128))],
        // Twice as many sources as the bucket map holds: nearly every
        // initiation is a source the map does not know (an insert and an
        // eviction), like a flood from spoofed random addresses.
        "handshake_spoofed" => (0..SPOOFED_SOURCES)
            .map(|i| {
                frame(
                    mac,
                    [10, (i >> 16) as u8, (i >> 8) as u8, i as u8],
                    &message(1, 148),
                )
            })
            .collect(),
        _ => unreachable!(),
    }
}

/// Sends `frames` from `va` until `stop`, in batches of [`BATCH`].
fn sender(netns: String, frames: Arc<Vec<Vec<u8>>>, stop: Arc<AtomicBool>) -> Result<()> {
    enter(&netns)?;
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    ensure!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    let name = std::ffi::CString::new("va")?;
    // SAFETY: a valid C string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    // SAFETY: zeroed sockaddr_ll, then its fields.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    let one: libc::c_int = 1;
    // SAFETY: valid fd, option and sizes.
    unsafe {
        ensure!(
            libc::bind(
                fd,
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32
            ) == 0,
            "bind: {}",
            std::io::Error::last_os_error()
        );
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            &one as *const _ as *const libc::c_void,
            4,
        );
    }
    let mut iovs: Vec<libc::iovec> = (0..BATCH)
        .map(|i| {
            let f = &frames[i % frames.len()];
            libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            }
        })
        .collect();
    // SAFETY: zeroed mmsghdr, each pointing at one iovec that outlives it.
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov as *mut libc::iovec;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let mut next = BATCH;
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: msgs and their buffers are valid for the call.
        unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), BATCH as u32, 0) };
        if frames.len() > BATCH {
            // Move on through a long frame list (the spoofed sources).
            for m in &mut msgs {
                let f = &frames[next % frames.len()];
                // SAFETY: each message points at its own live iovec.
                unsafe { (*m.msg_hdr.msg_iov).iov_base = f.as_ptr() as *mut libc::c_void };
                next += 1;
            }
        }
    }
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    Ok(())
}

/// Packets per second through `va` while the senders run.
fn sample(bed: &Bed, args: &Args, frames: &Arc<Vec<Vec<u8>>>) -> Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..args.senders)
        .map(|_| {
            let (ns, f, s) = (bed.tx.clone(), Arc::clone(frames), Arc::clone(&stop));
            std::thread::spawn(move || sender(ns, f, s))
        })
        .collect();
    // Let the senders get going before counting.
    std::thread::sleep(Duration::from_millis(100));
    let (p0, t0) = (bed.tx_packets()?, Instant::now());
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    let (p1, t1) = (bed.tx_packets()?, Instant::now());
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("sender panicked"))??;
    }
    Ok((p1 - p0) as f64 / (t1 - t0).as_secs_f64())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[derive(Clone, Copy, PartialEq)]
enum Prog {
    Guard,
    DropAll,
    PassAll,
    None,
}

fn run() -> Result<()> {
    let args = parse_args()?;
    let bed = Bed::up()?;
    let mac = bed.mac(&bed.rx, "vb")?;
    // This thread works in rx from now on: attaching looks `vb` up here.
    enter(&bed.rx)?;
    let mut guard = XdpGuard::load(&GuardLoadOptions {
        with_baselines: true,
        ..Default::default()
    })?;
    guard.maps.configure(&GuardConfig::for_port(PORT))?;
    let info = guard.program(names::PROG_GUARD)?.info()?;
    eprintln!(
        "guard program: {} instructions ({} bytes of eBPF, {} bytes JIT-compiled), {} instructions processed by the verifier",
        info.size_translated().unwrap_or(0) / 8,
        info.size_translated().unwrap_or(0),
        info.size_jitted(),
        info.verified_instruction_count().unwrap_or(0)
    );
    eprintln!(
        "bench-xdp: {} sender thread(s), {} samples of {} s per program and case, native XDP on veth",
        args.senders, args.samples, args.seconds
    );
    for case in [
        "garbage",
        "handshake_flood",
        "handshake_spoofed",
        "valid_data",
    ] {
        let frames = Arc::new(frames(case, mac));
        let mut progs = vec![Prog::Guard, Prog::DropAll];
        if case == "valid_data" {
            progs.extend([Prog::PassAll, Prog::None]);
        }
        let mut pps: Vec<Vec<f64>> = vec![Vec::new(); progs.len()];
        let before = guard.maps.stats()?;
        for s in 0..args.samples {
            // Alternate the order so drift favours neither program.
            let mut order: Vec<usize> = (0..progs.len()).collect();
            if s % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let name = match progs[i] {
                    Prog::Guard => Some(names::PROG_GUARD),
                    Prog::DropAll => Some(names::PROG_DROP_ALL),
                    Prog::PassAll => Some(names::PROG_PASS_ALL),
                    Prog::None => None,
                };
                let link = match name {
                    Some(n) => {
                        let p = guard.program_mut(n)?;
                        Some((n, p.attach("vb", XdpMode::Driver)?))
                    }
                    None => None,
                };
                pps[i].push(sample(&bed, &args, &frames)?);
                if let Some((n, id)) = link {
                    guard.program_mut(n)?.detach(id)?;
                }
            }
        }
        let seen = guard.maps.stats()?.since(&before);
        // The program's own cost per packet, without the sender and veth:
        // BPF_PROG_TEST_RUN repeating the case's first frame.
        let ns = |name: &'static str| -> Result<f64> {
            let prog = guard.program(name)?;
            let mut v: Vec<f64> = (0..args.samples)
                .map(|_| {
                    prog.test_run(TestRunOptions {
                        data_in: Some(&frames[0]),
                        repeat: 1_000_000,
                        ..Default::default()
                    })
                    .map(|r| r.duration.as_nanos() as f64)
                })
                .collect::<Result<_, _>>()?;
            Ok(median(&mut v))
        };
        eprintln!(
            "  {case}: guard counters {:?}",
            seen.named().filter(|(_, n)| *n > 0).collect::<Vec<_>>()
        );
        // (One frame repeated is one source: not the spoofed case.)
        if frames.len() <= BATCH {
            let (guard_ns, drop_ns) = (ns(names::PROG_GUARD)?, ns(names::PROG_DROP_ALL)?);
            println!(
                "xdp_guard_prog case={case} guard_ns={guard_ns:.1} drop_ns={drop_ns:.1} added_ns={:.1}",
                guard_ns - drop_ns
            );
        }
        // The machine is shared: its load drifts between samples. Each
        // sample runs every program back to back, so the ratio is taken per
        // sample and its median reported; the pps are plain medians.
        let ratio = |i: usize| {
            let mut r: Vec<f64> = pps[0].iter().zip(&pps[i]).map(|(g, b)| g / b).collect();
            median(&mut r)
        };
        let med: Vec<f64> = pps.iter().map(|v| median(&mut v.clone())).collect();
        let g = med[0];
        println!(
            "xdp_guard case={case} pps={g:.0} baseline_drop_pps={:.0} ratio={:.3}",
            med[1],
            ratio(1)
        );
        if progs.len() == 4 {
            // Passed packets: against a program that passes everything (the
            // guard's own cost) and against no program (XDP's too).
            println!(
                "xdp_guard case={case} pps={g:.0} baseline_pass_pps={:.0} ratio={:.3}",
                med[2],
                ratio(2)
            );
            println!(
                "xdp_guard case={case} pps={g:.0} no_program_pps={:.0} ratio={:.3}",
                med[3],
                ratio(3)
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-xdp: {e:#}");
            ExitCode::FAILURE
        }
    }
}
