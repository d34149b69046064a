//! Deny logs: the kernel's deny and audit events (ring buffer
//! `WGBPF_EVENTS`, records [`DenyEvent`]) turned into structured `tracing`
//! events, target `wgbpf::deny`, with names resolved from the mesh file.
//!
//! Two rate limits stand between a flood and the logs: the kernel's per-CPU
//! token bucket (what it holds back is counted in the `events_suppressed`
//! statistic) and this reader's own ([`RateLimit`]); lines it holds back
//! are counted and reported in a summary line every few seconds.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{atomic::Ordering, Arc, RwLock},
    time::{Duration, Instant},
};

use aya::maps::{Map, MapData, RingBuf};
use ipnet::IpNet;
use tokio::io::unix::AsyncFd;
use wgbpf_common::{rule_id, severity, DenyEvent, DIR_EGRESS};

use crate::{
    dataplane::{counters::unmap, peers::peer_label},
    mesh::Mesh,
    metrics::DaemonCounters,
    policy::model::proto_name,
};

/// Names for the fields of an event, from the mesh file and the peer-slot
/// map; replaced at every successful reload.
#[derive(Debug, Default, Clone)]
pub struct LogContext {
    pub interface: String,
    /// Counter slot -> peer name.
    pub slots: BTreeMap<u32, String>,
    /// Rule index -> rule name.
    pub rules: Vec<String>,
    /// Peer name and AllowedIPs, to name destinations.
    pub peers: Vec<(String, Vec<IpNet>)>,
    /// The gateway's own addresses.
    pub local: Vec<IpNet>,
}

impl LogContext {
    pub fn new(mesh: &Mesh, slots: BTreeMap<u32, String>) -> Self {
        Self {
            interface: mesh.interface.clone(),
            slots,
            rules: mesh.policy.rules.iter().map(|r| r.name.clone()).collect(),
            peers: mesh
                .policy
                .peers
                .iter()
                .map(|p| (p.name.clone(), p.allowed_ips.clone()))
                .collect(),
            local: mesh.policy.local.clone(),
        }
    }

    /// "gateway", the peer whose AllowedIPs hold `addr` (longest prefix), or "-".
    pub fn name_of(&self, addr: IpAddr) -> String {
        if self.local.iter().any(|n| n.contains(&addr)) {
            return "gateway".into();
        }
        self.peers
            .iter()
            .flat_map(|(name, nets)| nets.iter().map(move |n| (name, n)))
            .filter(|(_, n)| n.contains(&addr))
            .max_by_key(|(_, n)| n.prefix_len())
            .map_or_else(|| "-".into(), |(name, _)| name.clone())
    }

    pub fn rule_name(&self, rule: u32) -> String {
        match rule {
            rule_id::DEFAULT => "default deny".into(),
            rule_id::MALFORMED => "malformed".into(),
            rule_id::FLOW => "flow".into(),
            i => self
                .rules
                .get(i as usize)
                .cloned()
                .unwrap_or_else(|| format!("#{i}")),
        }
    }
}

/// Token bucket: `per_second` lines, bursts of `burst`. 0 per second logs
/// nothing (every event is counted as suppressed).
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: 20,
            burst: 50,
        }
    }
}

#[derive(Debug)]
pub struct Bucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            limit,
            tokens: limit.burst as f64,
            last: now,
        }
    }

    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens =
            (self.tokens + elapsed * self.limit.per_second as f64).min(self.limit.burst as f64);
        if self.limit.per_second > 0 && self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// The event's time (bpf_ktime_get_ns: CLOCK_MONOTONIC) as wall-clock time.
fn event_time(ev: &DenyEvent) -> String {
    let age = clock_ns(libc::CLOCK_MONOTONIC) - ev.timestamp_ns as i128;
    crate::utc::format_millis(clock_ns(libc::CLOCK_REALTIME) - age)
}

/// One decision of the data plane, named: what a deny log line and a
/// `wgbpf monitor` line say.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Decision {
    pub time: String,
    pub interface: String,
    /// `deny`, or `audit` (a deny in audit mode: the packet passed).
    pub action: String,
    pub direction: String,
    pub src: IpAddr,
    pub src_peer: String,
    pub sport: u16,
    pub dst: IpAddr,
    pub dst_peer: String,
    pub proto: String,
    pub port: u16,
    pub rule: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rule_index: Option<u32>,
}

impl Decision {
    pub fn new(ctx: &LogContext, ev: &DenyEvent) -> Decision {
        let src = unmap(&ev.src);
        let dst = unmap(&ev.dst);
        Decision {
            time: event_time(ev),
            interface: ctx.interface.clone(),
            action: if ev.severity == severity::AUDIT {
                "audit"
            } else {
                "deny"
            }
            .into(),
            direction: if ev.direction as usize == DIR_EGRESS {
                "egress"
            } else {
                "ingress"
            }
            .into(),
            src,
            src_peer: match ev.src_peer {
                0 => ctx.name_of(src),
                i => peer_label(&ctx.slots, i),
            },
            sport: ev.sport,
            dst,
            dst_peer: ctx.name_of(dst),
            proto: proto_name(ev.proto).to_string(),
            port: ev.dport,
            rule: ctx.rule_name(ev.rule),
            rule_index: (ev.rule < rule_id::FLOW).then_some(ev.rule),
        }
    }
}

/// Emits one deny log line.
pub fn log_event(d: &Decision) {
    let message = if d.action == "audit" {
        "packet audited (a deny in audit mode: passed)"
    } else {
        "packet denied"
    };
    tracing::info!(
        target: "wgbpf::deny",
        time = %d.time,
        interface = %d.interface,
        action = %d.action,
        direction = %d.direction,
        src = %d.src,
        src_peer = %d.src_peer,
        sport = d.sport,
        dst = %d.dst,
        dst_peer = %d.dst_peer,
        proto = %d.proto,
        port = d.port,
        rule = %d.rule,
        rule_index = d.rule_index,
        "{message}"
    );
}

/// Turns a ring buffer record into an event (records shorter than one are
/// ignored).
pub fn parse(record: &[u8]) -> Option<DenyEvent> {
    (record.len() >= std::mem::size_of::<DenyEvent>())
        // SAFETY: long enough; DenyEvent is plain data, read unaligned.
        .then(|| unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<DenyEvent>()) })
}

/// How often a summary of suppressed lines is written (if there were any).
const SUMMARY_EVERY: Duration = Duration::from_secs(5);

/// Reads the ring buffer until the task is dropped. Every decision goes
/// to `monitors` (`wgbpf monitor` clients of the control socket), before
/// the log's rate limit.
pub async fn run(
    events: Map,
    ctx: Arc<RwLock<LogContext>>,
    counters: Arc<DaemonCounters>,
    limit: RateLimit,
    monitors: tokio::sync::broadcast::Sender<Arc<Decision>>,
) -> anyhow::Result<()> {
    let ring: RingBuf<MapData> = RingBuf::try_from(events)?;
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged,
    // for as long as the AsyncFd owns the RingBuf.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE)? };
    let mut bucket = Bucket::new(limit, Instant::now());
    let mut suppressed = 0u64;
    let mut summary = tokio::time::interval(SUMMARY_EVERY);
    summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                let ring = guard.get_inner_mut();
                let ctx = ctx.read().map(|c| c.clone()).unwrap_or_default();
                while let Some(item) = ring.next() {
                    let Some(ev) = parse(&item) else { continue };
                    drop(item);
                    counters.events_read.fetch_add(1, Ordering::Relaxed);
                    let logged = bucket.allow(Instant::now());
                    let watched = monitors.receiver_count() > 0;
                    // Names are resolved only for a line someone reads.
                    let decision = (logged || watched).then(|| Decision::new(&ctx, &ev));
                    if let (Some(d), true) = (&decision, watched) {
                        let _ = monitors.send(Arc::new(d.clone()));
                    }
                    if let (Some(d), true) = (&decision, logged) {
                        counters.deny_lines_logged.fetch_add(1, Ordering::Relaxed);
                        log_event(d);
                    } else {
                        counters.deny_lines_suppressed.fetch_add(1, Ordering::Relaxed);
                        suppressed += 1;
                    }
                }
                guard.clear_ready();
            }
            _ = summary.tick() => {
                if suppressed > 0 {
                    tracing::warn!(
                        target: "wgbpf::deny",
                        suppressed,
                        per_second = limit.per_second,
                        burst = limit.burst,
                        "deny log lines suppressed by the rate limit"
                    );
                    suppressed = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_limits_and_refills() {
        let t0 = Instant::now();
        let mut b = Bucket::new(
            RateLimit {
                per_second: 10,
                burst: 3,
            },
            t0,
        );
        assert!((0..3).all(|_| b.allow(t0)));
        assert!(!b.allow(t0));
        assert!(b.allow(t0 + Duration::from_millis(100)));
        assert!(!b.allow(t0 + Duration::from_millis(100)));
        let mut off = Bucket::new(
            RateLimit {
                per_second: 0,
                burst: 5,
            },
            t0,
        );
        assert!(!off.allow(t0));
    }

    #[test]
    fn names_come_from_the_mesh() {
        let ctx = LogContext {
            interface: "wg0".into(),
            slots: BTreeMap::from([(1, "alice".into())]),
            rules: vec!["r0".into()],
            peers: vec![
                ("alice".into(), vec!["10.77.0.0/24".parse().unwrap()]),
                ("bob".into(), vec!["10.77.0.3/32".parse().unwrap()]),
            ],
            local: vec!["10.77.0.1/32".parse().unwrap()],
        };
        assert_eq!(ctx.name_of("10.77.0.3".parse().unwrap()), "bob");
        assert_eq!(ctx.name_of("10.77.0.9".parse().unwrap()), "alice");
        assert_eq!(ctx.name_of("10.77.0.1".parse().unwrap()), "gateway");
        assert_eq!(ctx.name_of("192.0.2.1".parse().unwrap()), "-");
        assert_eq!(ctx.rule_name(0), "r0");
        assert_eq!(ctx.rule_name(rule_id::DEFAULT), "default deny");
        assert_eq!(ctx.rule_name(7), "#7");
    }

    #[test]
    fn short_records_are_ignored() {
        assert!(parse(&[0u8; 8]).is_none());
        let ev = DenyEvent {
            dport: 5001,
            proto: 17,
            ..Default::default()
        };
        // SAFETY: plain data viewed as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&ev as *const DenyEvent).cast::<u8>(),
                std::mem::size_of::<DenyEvent>(),
            )
        };
        assert_eq!(parse(bytes), Some(ev));
    }
}
