//! One measurement window, and what it stands for.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::{
    case::{Filter, Traffic},
    cleanup,
    counters::{Counts, Receiver},
    generator::Generator,
};

/// One window of traffic: the counters' change and its length, the
/// frames the generator handed over in it and in all, and the CPU time
/// charged to it.
pub struct Window {
    pub counts: Counts,
    pub secs: f64,
    pub sent_in_window: u64,
    pub sent: u64,
    pub cpu_ns: u64,
}

/// `cpu` gives the CPU time to charge, given the sender thread's id.
pub fn measure(
    gen: &Generator,
    rx: &Receiver,
    warmup: Duration,
    window: Duration,
    cpu: &dyn Fn(i32) -> Result<u64>,
) -> Result<Window> {
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let tid = AtomicI32::new(0);
    std::thread::scope(|s| {
        // Named, so that a profile can be narrowed to it (perf --comms).
        let sender = std::thread::Builder::new()
            .name("dpb-sender".into())
            .spawn_scoped(s, || gen.run(&stop, &sent, &tid))
            .expect("spawning the sender thread");
        let r = (|| {
            cleanup::sleep(warmup)?;
            let t = tid.load(Ordering::SeqCst);
            let (c0, s0, cpu0) = (rx.counts()?, sent.load(Ordering::Relaxed), cpu(t)?);
            let t0 = Instant::now();
            cleanup::sleep(window)?;
            let (c1, s1, cpu1) = (rx.counts()?, sent.load(Ordering::Relaxed), cpu(t)?);
            Ok((
                c1.since(&c0),
                t0.elapsed().as_secs_f64(),
                s1 - s0,
                cpu1 - cpu0,
            ))
        })();
        stop.store(true, Ordering::SeqCst);
        let total = sender.join().unwrap_or(0);
        r.map(|(counts, secs, sent_in_window, cpu_ns)| Window {
            counts,
            secs,
            sent_in_window,
            sent: total,
            cpu_ns,
        })
    })
}

/// Sender CPU ns per packet, when the whole receive path ran in the
/// sender's context: every frame sent in the window entered the receiver
/// (none waited for ksoftirqd or was dropped from a full backlog, which
/// happens when the filter is slower than the sender). NaN otherwise.
pub fn cpu_cost(w: &Window) -> f64 {
    let (sent, rx) = (w.sent_in_window, w.counts.rx_packets);
    if rx == 0 || rx.abs_diff(sent) * 100 > sent {
        return f64::NAN;
    }
    w.cpu_ns as f64 / rx as f64
}

/// The rate a window stands for, after checking the filter did its job:
/// allowed traffic must arrive (allowing for what sat in the receive
/// backlog at either edge of the window), denied traffic must not.
/// Denied with no filter is the rate the stack delivers it at.
pub fn rate(filter: Filter, traffic: Traffic, w: &Window, slack: u64) -> Result<f64> {
    let Counts {
        rx_packets,
        arrived,
    } = w.counts;
    let dropped = rx_packets.saturating_sub(arrived);
    let (count, ok) = match (filter, traffic) {
        (Filter::None, _) | (_, Traffic::Allowed) => (arrived, dropped <= rx_packets / 50 + slack),
        (_, _) => (dropped, arrived == 0),
    };
    if !ok {
        bail!(
            "{} traffic through {}: {rx_packets} packets in, {arrived} reached the sockets: \
             the filter did not do its job",
            traffic.name(),
            filter.name()
        );
    }
    Ok(count as f64 / w.secs)
}

pub fn backlog_slack() -> u64 {
    std::fs::read_to_string("/proc/sys/net/core/netdev_max_backlog")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1000)
        * 2
}
