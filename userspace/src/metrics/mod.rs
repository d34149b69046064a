//! Prometheus metrics of a running data plane, computed at scrape time.
//!
//! [`Collector`] reads the pinned maps of one interface each time it is
//! scraped (nothing is copied on a timer), adds the daemon's own counters
//! ([`DaemonCounters`]) and encodes everything with `prometheus-client`.
//! [`render`] produces OpenMetrics or the Prometheus text format (0.0.4),
//! whichever the scraper asked for; [`http`] serves it.
//!
//! Every metric is documented in docs/metrics.md; keep the two in step.

pub mod http;
pub mod tunnels;

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
};

use prometheus_client::{
    collector::Collector as PromCollector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, info::Info, MetricType},
    registry::Registry,
};
use wgbpf_common::SLOT_AUDIT_ALL;

pub use tunnels::{TunnelSample, Tunnels};

use wgbpf_common::xdp::xdp_stat;

use crate::{
    daemon::hook::RepairKind,
    dataplane::{
        self,
        counters::{DenyEntry, PeerTotals, Stats, Totals},
        hooks::HookState,
        peers::peer_label,
        xdp_guard::{self, GuardMode, GuardStats},
        Maps,
    },
    policy::model::proto_name,
};

/// Deny-map label sets exposed per scrape unless told otherwise.
pub const DEFAULT_MAX_DENY_SERIES: usize = 2000;

/// Counters the daemon keeps itself (not in the kernel), shared with the
/// collector. All monotonic except `last_reload_ok`.
#[derive(Debug, Default)]
pub struct DaemonCounters {
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    /// 1 when the last reload (or the start) enforced the file, 0 when the
    /// last reload was refused.
    pub last_reload_ok: AtomicU64,
    /// Unix seconds of the last successful enforce (start or reload).
    pub last_reload_success_seconds: AtomicU64,
    /// The policy version the daemon last enforced (for control-socket
    /// replies; the metric reads the pinned maps).
    pub policy_version: AtomicU64,
    /// Deny events read from the ring buffer.
    pub events_read: AtomicU64,
    pub deny_lines_logged: AtomicU64,
    pub deny_lines_suppressed: AtomicU64,
    /// Deny-map label sets left out of the last scrape by the series cap.
    pub dropped_series: AtomicU64,
    pub scrape_errors: AtomicU64,
    /// Drift repairs, indexed by [`RepairKind::index`].
    pub drift_repairs: [AtomicU64; 5],
    /// Drift-repair passes run, and passes in which a check or a repair
    /// failed.
    pub drift_passes: AtomicU64,
    pub drift_pass_errors: AtomicU64,
    /// Flow-table sweeps done and failed; entries they removed, and dead
    /// entries they spared because a packet renewed them meanwhile
    /// ([`crate::daemon::sweep`]).
    pub flow_sweeps: AtomicU64,
    pub flow_sweep_errors: AtomicU64,
    pub flow_sweep_removed: AtomicU64,
    pub flow_sweep_spared: AtomicU64,
}

/// Reads one interface's pinned data plane at every scrape.
#[derive(Debug)]
pub struct Collector {
    pub interface: String,
    pub daemon: Arc<DaemonCounters>,
    /// At most this many deny-map label sets per scrape (the largest by
    /// packets); 0 means no cap.
    pub max_deny_series: usize,
    /// The last scrape failed to read the maps (to log transitions only).
    failing: AtomicBool,
    /// Per-peer WireGuard figures (`wireguard_tunnel_*`), read from the
    /// device at each scrape; `None`: not exported.
    pub tunnels: Option<Arc<Tunnels>>,
    /// The last scrape failed to read the WireGuard device.
    wg_failing: AtomicBool,
    /// Which backend reads the device.
    wg_backend: crate::wg::BackendChoice,
    /// Underlay interfaces whose XDP guard is exported.
    guards: Vec<String>,
}

impl Collector {
    pub fn new(interface: &str, daemon: Arc<DaemonCounters>, max_deny_series: usize) -> Self {
        Self {
            interface: interface.to_string(),
            daemon,
            max_deny_series,
            failing: AtomicBool::new(false),
            tunnels: None,
            wg_failing: AtomicBool::new(false),
            wg_backend: crate::wg::BackendChoice::Auto,
            guards: Vec::new(),
        }
    }

    /// Also exports the XDP guard of these underlay interfaces.
    pub fn with_guards(mut self, underlay: Vec<String>) -> Self {
        self.guards = underlay;
        self
    }

    /// Reads the WireGuard device through `choice` (default: auto).
    pub fn with_wg_backend(mut self, choice: crate::wg::BackendChoice) -> Self {
        self.wg_backend = choice;
        self
    }

    /// Also exports the WireGuard device's per-peer figures, named and
    /// counted by `tunnels`.
    pub fn with_tunnels(mut self, tunnels: Arc<Tunnels>) -> Self {
        self.tunnels = Some(tunnels);
        self
    }

    /// Reads everything one scrape exports: the programs' attachment, the
    /// WireGuard device (when tunnels are exported) and the data plane's
    /// maps. Read failures are logged when they start and stop.
    fn read(&self) -> Scrape {
        Scrape {
            guards: self.guards.iter().map(|u| read_guard(u)).collect(),
            attached: attached(&self.interface),
            tunnels: self.tunnels.as_ref().map(|t| self.read_tunnels(t)),
            dataplane: self.read_dataplane(),
        }
    }

    /// The device's per-peer figures, `None` when it cannot be read.
    fn read_tunnels(&self, tunnels: &Tunnels) -> Option<Vec<TunnelSample>> {
        let state = crate::wg::open_backend(&self.interface, self.wg_backend).and_then(|b| b.get());
        match state {
            Ok(s) => {
                if self.wg_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(interface = %self.interface, "metrics: reading the WireGuard device works again");
                }
                Some(tunnels.observe(&s))
            }
            Err(e) => {
                if !self.wg_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(interface = %self.interface, error = %e,
                        "metrics: cannot read the WireGuard device");
                }
                None
            }
        }
    }

    /// The pinned maps, `None` when they cannot be read (counted).
    fn read_dataplane(&self) -> Option<Snapshot> {
        let snapshot = dataplane::open_maps(&self.interface)
            .map_err(anyhow::Error::from)
            .and_then(|maps| Snapshot::read(&maps, self.max_deny_series));
        match snapshot {
            Ok(s) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(interface = %self.interface, "metrics: reading the data plane works again");
                }
                self.daemon
                    .dropped_series
                    .store(s.dropped as u64, Ordering::Relaxed);
                Some(s)
            }
            Err(e) => {
                self.daemon.scrape_errors.fetch_add(1, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(interface = %self.interface, error = %format!("{e:#}"),
                        "metrics: cannot read the data plane");
                }
                None
            }
        }
    }
}

/// One underlay's guard as a scrape reads it: the mode it is attached in
/// (`None`: not attached) and its counters (`None`: unreadable).
struct GuardScrape {
    underlay: String,
    mode: Option<GuardMode>,
    stats: Option<GuardStats>,
}

fn read_guard(underlay: &str) -> GuardScrape {
    let dir = xdp_guard::pin_dir(underlay);
    let mode = xdp_guard::pinned_mode(&dir)
        .filter(|_| xdp_guard::is_attached(underlay, &dir).unwrap_or(false));
    GuardScrape {
        underlay: underlay.to_string(),
        mode,
        stats: xdp_guard::read_stats(&dir).ok(),
    }
}

/// `wgbpf_xdp_guard_*`.
fn encode_guards(enc: &mut DescriptorEncoder, guards: &[GuardScrape]) -> fmt::Result {
    gauge(
        enc,
        "wgbpf_xdp_guard_attached",
        "1 if the XDP guard is attached to the underlay interface in this mode (native: in the driver; generic: in the stack)",
        guards.iter().flat_map(|g| {
            [GuardMode::Native, GuardMode::Generic].map(|m| {
                (
                    [("underlay", g.underlay.clone()), ("mode", m.as_str().to_string())],
                    (g.mode == Some(m)) as i64,
                )
            })
        }),
    )?;
    let counts = |passes: bool, label: &'static str| {
        guards.iter().flat_map(move |g| {
            g.stats.iter().flat_map(move |s| {
                s.named()
                    .enumerate()
                    .filter(move |(i, _)| (*i < xdp_stat::FIRST_DROP as usize) == passes)
                    .map(move |(_, (name, n))| {
                        let what = name.strip_prefix("pass_").unwrap_or(name).to_string();
                        ([("underlay", g.underlay.clone()), (label, what)], n)
                    })
            })
        })
    };
    counter(
        enc,
        "wgbpf_xdp_guard_passed_packets",
        "WireGuard messages the XDP guard passed to the listen port, by message type (initiation, response, cookie, data)",
        counts(true, "type"),
    )?;
    counter(
        enc,
        "wgbpf_xdp_guard_dropped_packets",
        "Packets to the listen port the XDP guard dropped, by reason (malformed, bad_type, reserved, bad_size, rate_limited, not_allowed, ext_headers)",
        counts(false, "reason"),
    )
}

/// What one scrape read, before any encoding.
struct Scrape {
    guards: Vec<GuardScrape>,
    attached: [HookState; 2],
    /// `None`: tunnels not exported; `Some(None)`: the device was unreadable.
    tunnels: Option<Option<Vec<TunnelSample>>>,
    /// `None`: the maps were unreadable.
    dataplane: Option<Snapshot>,
}

/// `wireguard_tunnel_*` and `wgbpf_wireguard_up`.
fn encode_tunnels(enc: &mut DescriptorEncoder, samples: Option<&[TunnelSample]>) -> fmt::Result {
    gauge(
        enc,
        "wgbpf_wireguard_up",
        "1 if the WireGuard device could be read at this scrape (wireguard_tunnel_* come from it)",
        [(NONE, samples.is_some() as i64)],
    )?;
    encode_tunnel_samples(enc, samples.unwrap_or_default())
}

fn encode_tunnel_samples(enc: &mut DescriptorEncoder, samples: &[TunnelSample]) -> fmt::Result {
    let label = |t: &TunnelSample| [("peer", t.peer.clone())];
    counter(
        enc,
        "wireguard_tunnel_bytes_in",
        "Bytes received from the peer through the tunnel (the device's rx counter; resets when the device restarts)",
        samples.iter().map(|t| (label(t), t.rx_bytes)),
    )?;
    counter(
        enc,
        "wireguard_tunnel_bytes_out",
        "Bytes sent to the peer through the tunnel (the device's tx counter; resets when the device restarts)",
        samples.iter().map(|t| (label(t), t.tx_bytes)),
    )?;
    gauge(
        enc,
        "wireguard_tunnel_last_handshake_timestamp_seconds",
        "Unix time of the peer's latest handshake; 0 when it has had none",
        samples
            .iter()
            .map(|t| (label(t), t.last_handshake_seconds as i64)),
    )?;
    // The seed's name for the same value, kept for existing dashboards.
    gauge(
        enc,
        "wireguard_tunnel_last_handshake_seconds",
        "Deprecated: the same as wireguard_tunnel_last_handshake_timestamp_seconds",
        samples
            .iter()
            .map(|t| (label(t), t.last_handshake_seconds as i64)),
    )?;
    counter(
        enc,
        "wgbpf_peer_endpoint_changes",
        "Changes of the peer's endpoint observed (at scrapes and drift passes): alternating fast between few endpoints, one key is in use in two places",
        samples.iter().map(|t| (label(t), t.endpoint_changes)),
    )?;
    gauge(
        enc,
        "wgbpf_peer_endpoints_recent",
        "Distinct endpoints of the peer observed in the last 10 minutes",
        samples
            .iter()
            .map(|t| (label(t), t.endpoints_recent as i64)),
    )?;
    counter(
        enc,
        "wireguard_tunnel_handshakes",
        "Handshakes observed: changes of the latest-handshake time seen at scrapes and drift-repair passes since wgbpf started (a lower bound)",
        samples.iter().map(|t| (label(t), t.handshakes)),
    )
}

/// Everything read from the kernel for one scrape, before any encoding, so
/// a failing read never leaves a half-written exposition.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub policy_version: u32,
    pub audit_mode: bool,
    /// (peer label, totals); slot 0 is "-".
    pub peers: Vec<(String, PeerTotals)>,
    /// (index of the source peer's label in `peer_names`, entry), already
    /// capped, largest first.
    pub denies: Vec<(usize, DenyEntry)>,
    /// The source peers' labels of `denies`, each once.
    pub peer_names: Vec<String>,
    /// Label sets left out by the cap at this scrape.
    pub dropped: usize,
    /// Keys in the kernel's deny map now.
    pub deny_keys: usize,
    pub stats: Stats,
}

impl Snapshot {
    pub fn read(maps: &Maps, max_deny_series: usize) -> anyhow::Result<Self> {
        let (_, slot) = maps.active_slot()?;
        let slots = maps.counter_owners()?;
        let totals = maps.all_peer_totals()?;
        let of = |idx: u32| totals.get(&idx).copied().unwrap_or_default();
        let mut peers = vec![("-".to_string(), of(0))];
        for (idx, name) in &slots {
            peers.push((name.clone(), of(*idx)));
        }
        let mut denies = maps.denies()?;
        let deny_keys = denies.len();
        // Largest first; ties broken by the key so the cut is stable.
        let order = |a: &DenyEntry, b: &DenyEntry| {
            b.packets
                .cmp(&a.packets)
                .then(a.src_peer.cmp(&b.src_peer))
                .then(a.dst.cmp(&b.dst))
                .then(a.proto.cmp(&b.proto))
                .then(a.port.cmp(&b.port))
                .then(a.audit.cmp(&b.audit))
        };
        let dropped = if max_deny_series > 0 && denies.len() > max_deny_series {
            // Only the kept ones need sorting.
            denies.select_nth_unstable_by(max_deny_series - 1, order);
            let d = denies.len() - max_deny_series;
            denies.truncate(max_deny_series);
            d
        } else {
            0
        };
        denies.sort_unstable_by(order);
        // One label per source peer, not one string per series.
        let mut peer_names = Vec::new();
        let mut label_of: std::collections::HashMap<u32, usize> = Default::default();
        let denies = denies
            .into_iter()
            .map(|d| {
                let i = *label_of.entry(d.src_peer).or_insert_with(|| {
                    peer_names.push(peer_label(&slots, d.src_peer));
                    peer_names.len() - 1
                });
                (i, d)
            })
            .collect();
        Ok(Self {
            policy_version: slot.version,
            audit_mode: slot.flags & SLOT_AUDIT_ALL != 0,
            peers,
            denies,
            peer_names,
            dropped,
            deny_keys,
            stats: maps.stats()?,
        })
    }
}

/// Which pinned programs are really attached, and how: by program id in
/// the interface's tcx lists and clsact filters
/// ([`crate::dataplane::hooks::attachment`]). All false when nothing is pinned
/// or it cannot be read.
pub fn attached(interface: &str) -> [HookState; 2] {
    crate::dataplane::hooks::attachment(interface).unwrap_or(["ingress", "egress"].map(|d| {
        HookState {
            direction: d,
            tcx: false,
            first: false,
            clsact: false,
        }
    }))
}

/// A deny series' labels, borrowed: `src` from the scrape's peer names.
struct DenyLabels<'a> {
    src: &'a str,
    dst: std::net::IpAddr,
    port: u16,
    proto: std::borrow::Cow<'static, str>,
}

/// An address as a label value, written without an intermediate string.
struct AddrLabel(std::net::IpAddr);

impl prometheus_client::encoding::EncodeLabelValue for AddrLabel {
    fn encode(&self, encoder: &mut prometheus_client::encoding::LabelValueEncoder) -> fmt::Result {
        use std::fmt::Write;
        write!(encoder, "{}", self.0)
    }
}

impl EncodeLabelSet for DenyLabels<'_> {
    fn encode(&self, encoder: &mut prometheus_client::encoding::LabelSetEncoder) -> fmt::Result {
        use prometheus_client::encoding::EncodeLabel;
        // `peer`, as in every other per-peer family (the source peer).
        ("peer", self.src).encode(encoder.encode_label())?;
        ("dst", AddrLabel(self.dst)).encode(encoder.encode_label())?;
        ("port", self.port).encode(encoder.encode_label())?;
        ("proto", self.proto.as_ref()).encode(encoder.encode_label())
    }
}

/// [`proto_name`] without allocating for the named protocols.
fn proto_label(proto: u8) -> std::borrow::Cow<'static, str> {
    use wgbpf_common::*;
    match proto {
        PROTO_TCP => "tcp".into(),
        PROTO_UDP => "udp".into(),
        PROTO_ICMP => "icmp".into(),
        PROTO_ICMPV6 => "icmpv6".into(),
        PROTO_SCTP => "sctp".into(),
        other => proto_name(other).into(),
    }
}

fn counter<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let c = ConstCounter::new(0u64);
    let mut m = enc.encode_descriptor(name, help, None, c.metric_type())?;
    for (labels, v) in series {
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, i64)>,
) -> fmt::Result {
    let g = ConstGauge::new(0i64);
    let mut m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    for (labels, v) in series {
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

type NoLabels = [(&'static str, &'static str); 0];
const NONE: NoLabels = [];

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl PromCollector for Collector {
    fn encode(&self, enc: DescriptorEncoder) -> fmt::Result {
        encode_scrape(enc, &self.daemon, &self.read())
    }
}

/// Encodes one scrape: the daemon's counters, then what was read.
fn encode_scrape(mut enc: DescriptorEncoder, d: &DaemonCounters, s: &Scrape) -> fmt::Result {
    let info = Info::new([("version", env!("CARGO_PKG_VERSION"))]);
    let m = enc.encode_descriptor(
        "wgbpf_build",
        "wgbpf's version (value always 1)",
        None,
        MetricType::Info,
    )?;
    info.encode(m)?;
    counter(
        &mut enc,
        "wgbpf_reloads",
        "Reloads of the mesh file asked for (SIGHUP), successful or not",
        [(NONE, load(&d.reloads))],
    )?;
    counter(
        &mut enc,
        "wgbpf_reload_failures",
        "Reloads refused: the file did not parse, validate, compile or apply; the running policy stayed",
        [(NONE, load(&d.reload_failures))],
    )?;
    gauge(
        &mut enc,
        "wgbpf_last_reload_successful",
        "1 if the last start or reload enforced the file, 0 if the last reload was refused",
        [(NONE, load(&d.last_reload_ok) as i64)],
    )?;
    gauge(
        &mut enc,
        "wgbpf_last_reload_success_timestamp_seconds",
        "Unix time of the last start or reload that enforced the file",
        [(NONE, load(&d.last_reload_success_seconds) as i64)],
    )?;
    counter(
        &mut enc,
        "wgbpf_deny_events_read",
        "Deny and audit events read from the kernel's ring buffer",
        [(NONE, load(&d.events_read))],
    )?;
    counter(
        &mut enc,
        "wgbpf_deny_log_lines",
        "Deny log lines: written, or suppressed by the userspace rate limit",
        [
            ([("outcome", "logged")], load(&d.deny_lines_logged)),
            ([("outcome", "suppressed")], load(&d.deny_lines_suppressed)),
        ],
    )?;
    counter(
        &mut enc,
        "wgbpf_drift_repairs",
        "Drift repaired by wgbpf run: WireGuard peers and device fields, programs re-attached, policies re-applied, the link set up",
        RepairKind::ALL
            .into_iter()
            .map(|k| ([("kind", k.as_str())], load(&d.drift_repairs[k.index()]))),
    )?;
    counter(
        &mut enc,
        "wgbpf_drift_passes",
        "Drift-repair passes run (after every start and reload, then every --repair-interval)",
        [(NONE, load(&d.drift_passes))],
    )?;
    counter(
        &mut enc,
        "wgbpf_drift_pass_errors",
        "Drift-repair passes in which a check or a repair failed (the reason is logged)",
        [(NONE, load(&d.drift_pass_errors))],
    )?;
    counter(
        &mut enc,
        "wgbpf_flow_sweeps",
        "Sweeps of the flow table (every [interface.flows] sweep_interval): done, or failed (the reason is logged)",
        [
            ([("outcome", "ok")], load(&d.flow_sweeps)),
            ([("outcome", "error")], load(&d.flow_sweep_errors)),
        ],
    )?;
    counter(
        &mut enc,
        "wgbpf_flow_sweep_removed",
        "Flow-table entries past their lifetime removed by the sweep",
        [(NONE, load(&d.flow_sweep_removed))],
    )?;
    counter(
        &mut enc,
        "wgbpf_flow_sweep_spared",
        "Flow-table entries found dead by a sweep but renewed by a packet before their delete, and left in place",
        [(NONE, load(&d.flow_sweep_spared))],
    )?;
    gauge(
        &mut enc,
        "wgbpf_program_attached",
        "1 if the program is attached to the interface in this mode (checked by program id)",
        s.attached.iter().flat_map(|h| {
            [("tcx", h.tcx), ("clsact", h.clsact)]
                .map(|(m, on)| ([("program", h.direction), ("mode", m)], on as i64))
        }),
    )?;
    gauge(
        &mut enc,
        "wgbpf_program_first",
        "1 if the program runs first on its hook (no other tcx program before it could pass what it denies)",
        s.attached
            .iter()
            .map(|h| ([("program", h.direction)], (h.attached() && h.first) as i64)),
    )?;
    if let Some(t) = &s.tunnels {
        encode_tunnels(&mut enc, t.as_deref())?;
    }
    if !s.guards.is_empty() {
        encode_guards(&mut enc, &s.guards)?;
    }

    let Some(snap) = &s.dataplane else {
        gauge(
            &mut enc,
            "wgbpf_dataplane_up",
            "1 if the pinned data plane could be read at this scrape",
            [(NONE, 0)],
        )?;
        return counter(
            &mut enc,
            "wgbpf_exporter_scrape_errors",
            "Scrapes that could not read the pinned maps",
            [(NONE, load(&d.scrape_errors))],
        );
    };
    gauge(
        &mut enc,
        "wgbpf_dataplane_up",
        "1 if the pinned data plane could be read at this scrape",
        [(NONE, 1)],
    )?;
    counter(
        &mut enc,
        "wgbpf_exporter_scrape_errors",
        "Scrapes that could not read the pinned maps",
        [(NONE, load(&d.scrape_errors))],
    )?;
    encode_snapshot(&mut enc, snap, load(&d.dropped_series))
}

fn encode_snapshot(enc: &mut DescriptorEncoder, s: &Snapshot, dropped: u64) -> fmt::Result {
    gauge(
        enc,
        "wgbpf_policy_version",
        "Version of the policy in the active slot (goes up with every change)",
        [(NONE, s.policy_version as i64)],
    )?;
    gauge(
        enc,
        "wgbpf_policy_audit_mode",
        "1 if the whole interface is in audit mode",
        [(NONE, s.audit_mode as i64)],
    )?;

    // The deny map: denied and audited label sets, borrowed rather than
    // built as strings (100,000 of them per scrape).
    let deny_series = |audit: bool| {
        s.denies
            .iter()
            .filter(move |(_, d)| d.audit == audit)
            .map(move |(src, d)| {
                let labels = DenyLabels {
                    src: &s.peer_names[*src],
                    dst: d.dst,
                    port: d.port,
                    proto: proto_label(d.proto),
                };
                (labels, d.packets)
            })
    };
    counter(
        enc,
        "wireguard_acl_denied",
        "Packets dropped by the policy, by source peer, destination, destination port (ICMP: type) and protocol",
        deny_series(false),
    )?;
    counter(
        enc,
        "wireguard_acl_audited",
        "Packets a deny rule in audit mode would have dropped (they passed), labelled like wireguard_acl_denied_total",
        deny_series(true),
    )?;
    gauge(
        enc,
        "wgbpf_deny_map_entries",
        "Keys in the kernel's deny map (LRU, 65536 by default) at this scrape",
        [(NONE, s.deny_keys as i64)],
    )?;
    gauge(
        enc,
        "wgbpf_exporter_dropped_series",
        "Deny-map label sets left out of this scrape by --max-deny-series",
        [(NONE, dropped as i64)],
    )?;

    // Per peer and direction.
    type Field = fn(&Totals) -> u64;
    let per_peer: [(&str, &str, Field); 6] = [
        (
            "wireguard_acl_allowed_packets",
            "Packets allowed, from (ingress) or to (egress) the peer",
            |t| t.allowed_packets,
        ),
        (
            "wireguard_acl_allowed_bytes",
            "Bytes (IP length) allowed, from (ingress) or to (egress) the peer",
            |t| t.allowed_bytes,
        ),
        (
            "wireguard_acl_denied_packets",
            "Packets dropped by the policy, from (ingress) or to (egress) the peer",
            |t| t.denied_packets,
        ),
        (
            "wireguard_acl_denied_bytes",
            "Bytes (IP length) dropped by the policy, from (ingress) or to (egress) the peer",
            |t| t.denied_bytes,
        ),
        (
            "wireguard_acl_audited_packets",
            "Packets passed in audit mode that a deny would have dropped, from (ingress) or to (egress) the peer",
            |t| t.audited_packets,
        ),
        (
            "wireguard_acl_audited_bytes",
            "Bytes (IP length) passed in audit mode that a deny would have dropped, per peer and direction",
            |t| t.audited_bytes,
        ),
    ];
    for (name, help, field) in per_peer {
        counter(
            enc,
            name,
            help,
            s.peers.iter().flat_map(|(peer, t)| {
                [("ingress", &t.ingress), ("egress", &t.egress)]
                    .into_iter()
                    .map(move |(dir, tot)| {
                        ([("peer", peer.as_str()), ("direction", dir)], field(tot))
                    })
            }),
        )?;
    }

    // Data-plane statistics.
    let st = &s.stats;
    counter(
        enc,
        "wgbpf_malformed_packets",
        "Packets dropped because their headers could not be parsed (also in audit mode)",
        [(NONE, st.malformed)],
    )?;
    counter(
        enc,
        "wgbpf_fragments",
        "IP fragments seen (a first fragment is judged by its ports; a later one gets its first fragment's verdict when that was seen lately, else is judged as if it could be any port)",
        [(NONE, st.fragments)],
    )?;
    counter(
        enc,
        "wgbpf_fragment_datagrams",
        "Fragmented datagrams: first fragments whose verdict was recorded, later fragments that got it",
        [
            ([("event", "tracked")], st.fragments_tracked),
            ([("event", "matched")], st.fragments_matched),
        ],
    )?;
    counter(
        enc,
        "wgbpf_deny_events",
        "Deny events in the kernel: sent to the ring buffer, suppressed by the in-kernel rate limit, or lost to a full ring",
        [
            ([("outcome", "sent")], st.events_sent),
            ([("outcome", "suppressed")], st.events_suppressed),
            ([("outcome", "lost")], st.events_lost),
        ],
    )?;
    counter(
        enc,
        "wgbpf_flow_hits",
        "Packets passed from the flow table without a policy lookup",
        [(NONE, st.flow_hits)],
    )?;
    counter(
        enc,
        "wgbpf_flow_rechecks",
        "Flow-table entries from an older policy version re-checked against the current one",
        [(NONE, st.flow_rechecks)],
    )?;
    counter(
        enc,
        "wgbpf_flow_table_events",
        "Flow-table pressure: entries created, inserts refused, new flows over their peer's budget (passed, not tracked), entries met past their lifetime, TCP connections picked up mid-stream (their entry was lost: evictions seen)",
        [
            ([("event", "new")], st.flow_new),
            ([("event", "insert_failed")], st.flow_insert_failed),
            ([("event", "over_budget")], st.flow_over_budget),
            ([("event", "expired")], st.flow_expired),
            ([("event", "pickup")], st.flow_pickups),
        ],
    )?;
    Ok(())
}

/// A registry holding just the collector. Every series carries the
/// interface's name as its `interface` label, so that one Prometheus can
/// tell the gateways' interfaces apart without relabelling.
pub fn registry(collector: Collector) -> Registry {
    let label = (
        std::borrow::Cow::Borrowed("interface"),
        std::borrow::Cow::Owned(collector.interface.clone()),
    );
    let mut r = Registry::with_labels(std::iter::once(label));
    r.register_collector(Box::new(collector));
    r
}

/// The exposition format a scraper asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    /// Prometheus text format 0.0.4 (curl, promtool, old scrapers).
    Text,
}

impl Format {
    /// OpenMetrics when the `Accept` header names it, text otherwise.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// Encodes `registry` (reading the kernel maps now) in `format`.
pub fn render(registry: &Registry, format: Format) -> Result<String, fmt::Error> {
    let mut out = String::new();
    match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, registry)?,
        Format::Text => prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?,
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::counters::Totals;

    fn sample() -> Snapshot {
        let t = Totals {
            allowed_packets: 5,
            allowed_bytes: 640,
            denied_packets: 2,
            ..Default::default()
        };
        Snapshot {
            policy_version: 3,
            audit_mode: false,
            peers: vec![
                ("-".into(), PeerTotals::default()),
                (
                    "alice".into(),
                    PeerTotals {
                        ingress: t,
                        egress: Totals::default(),
                    },
                ),
            ],
            denies: vec![
                (
                    0,
                    DenyEntry {
                        src_peer: 2,
                        dst: "10.77.0.2".parse().unwrap(),
                        proto: 17,
                        port: 5001,
                        audit: false,
                        packets: 37,
                        bytes: 37 * 128,
                    },
                ),
                (
                    1,
                    DenyEntry {
                        src_peer: 3,
                        dst: "fd77::1".parse().unwrap(),
                        proto: 58,
                        port: 128,
                        audit: true,
                        packets: 1,
                        bytes: 104,
                    },
                ),
            ],
            peer_names: vec!["bob".into(), "weird \"peer\"".into()],
            dropped: 0,
            deny_keys: 2,
            stats: Stats::default(),
        }
    }

    #[derive(Debug)]
    struct Fixed(Snapshot);
    impl PromCollector for Fixed {
        fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
            encode_snapshot(&mut enc, &self.0, 4)
        }
    }

    fn rendered(format: Format) -> String {
        let mut r = Registry::default();
        r.register_collector(Box::new(Fixed(sample())));
        render(&r, format).unwrap()
    }

    #[test]
    fn deny_series_are_labelled_and_exact() {
        let text = rendered(Format::Text);
        assert!(
            text.contains(
                "wireguard_acl_denied_total{peer=\"bob\",dst=\"10.77.0.2\",port=\"5001\",proto=\"udp\"} 37\n"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE wireguard_acl_denied_total counter\n"));
        assert!(text.contains(
            "wireguard_acl_audited_total{peer=\"weird \\\"peer\\\"\",dst=\"fd77::1\",port=\"128\",proto=\"icmpv6\"} 1\n"
        ));
        assert!(text.contains(
            "wireguard_acl_allowed_packets_total{peer=\"alice\",direction=\"ingress\"} 5\n"
        ));
        assert!(text.contains("# TYPE wgbpf_exporter_dropped_series gauge\n"));
        assert!(text.contains("wgbpf_exporter_dropped_series 4\n"));
        assert!(text.contains("wgbpf_policy_version 3\n"));
        assert!(!text.contains("# EOF"));
        let om = rendered(Format::OpenMetrics);
        assert!(om.ends_with("# EOF\n"));
        assert!(om.contains("# TYPE wireguard_acl_denied counter\n"));
    }

    #[test]
    fn every_series_names_its_interface() {
        // No data plane pinned for this name: the daemon's own families
        // and the "down" gauges are what a scrape has.
        let r = registry(Collector::new(
            "wgbpf-nosuch",
            Arc::new(DaemonCounters::default()),
            10,
        ));
        let text = render(&r, Format::Text).unwrap();
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(samples.len() > 10, "{text}");
        for l in samples {
            assert!(l.contains("interface=\"wgbpf-nosuch\""), "{l}");
        }
        assert!(
            text.contains("wgbpf_dataplane_up{interface=\"wgbpf-nosuch\"} 0\n"),
            "{text}"
        );
    }

    #[test]
    fn format_follows_accept() {
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
    }
}
