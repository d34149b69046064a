//! `wgbpf run`: enforce the mesh file and keep running (metrics, deny logs,
//! SIGHUP reloads). See docs/metrics.md.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Result;
use clap::Args;
use wgbpf::{
    daemon::{
        self,
        drift::{DriftRepair, DEFAULT_INTERVAL},
        logging::LogFormat,
        RateLimit, Reconciler, Unmanaged,
    },
    dataplane::attach,
    metrics::DEFAULT_MAX_DENY_SERIES,
    plan::Settings,
    wg::BackendChoice,
};

/// Enforce the mesh file, then keep running: metrics over HTTP, deny logs,
/// drift repair. `wgbpf reload` (or SIGHUP) reloads the file: a bad file
/// is refused and the running policy stays; `wgbpf reload` waits and says
/// which. Under systemd (`Type=notify`) it reports readiness once the
/// policy is enforced and pings the watchdog. SIGTERM/SIGINT exit and
/// leave the data plane enforcing.
///
/// With --etcd and --gateway instead of -c, the mesh is this gateway's
/// document in the fleet's store (`wgbpf push`, docs/fleet.md): each new
/// revision is applied as a reload is (refused: the running one stays),
/// and the daemon reports under a lease which revision it enforces and
/// what it refused (`wgbpf fleet status`). Losing etcd changes nothing in
/// the kernel; the daemon reconnects and catches up.
#[derive(Args)]
pub struct RunArgs {
    /// The mesh file (TOML).
    #[arg(short, long, required_unless_present = "etcd", conflicts_with = "etcd")]
    config: Option<PathBuf>,
    /// Follow a fleet in etcd instead of a file: its endpoints, comma-separated.
    #[arg(long, value_name = "ENDPOINTS", requires = "gateway")]
    etcd: Option<String>,
    /// This gateway's name in the fleet (with --etcd).
    #[arg(long, value_name = "NAME", requires = "etcd")]
    gateway: Option<String>,
    #[command(flatten)]
    store: super::store::StoreArgs,
    /// Refuse to start unless the file names this interface (the template
    /// unit `wgbpf@IFACE` passes its instance).
    #[arg(short, long, value_name = "IFACE", value_parser = wgbpf::ifname::parse)]
    interface: Option<String>,
    /// Serve Prometheus metrics here (loopback by default; port 0 picks one).
    #[arg(long, default_value = daemon::DEFAULT_METRICS_ADDR)]
    metrics_addr: SocketAddr,
    /// Do not serve metrics at all.
    #[arg(long, conflicts_with = "metrics_addr")]
    no_metrics: bool,
    /// Log format: text on a terminal and JSON lines otherwise (auto), or as given.
    #[arg(long, value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,
    /// How to attach when nothing is pinned yet (default: tcx where the
    /// kernel has it, clsact otherwise).
    #[arg(long, value_enum)]
    attach: Option<attach::AttachMode>,
    /// Deny-map label sets exposed per scrape, largest first (0: no cap).
    #[arg(long, default_value_t = DEFAULT_MAX_DENY_SERIES)]
    max_deny_series: usize,
    /// Deny log lines per second (userspace limit; 0 logs none).
    #[arg(long, default_value_t = RateLimit::default().per_second)]
    deny_log_rate: u32,
    /// Deny log lines in a burst.
    #[arg(long, default_value_t = RateLimit::default().burst)]
    deny_log_burst: u32,
    /// Seconds between drift checks: the WireGuard device and the link (when
    /// the file has private_key_file), the programs and the policy are
    /// compared with the file and repaired. 0 turns drift repair off.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_INTERVAL.as_secs_f64())]
    repair_interval: f64,
}

pub fn run(a: RunArgs) -> Result<()> {
    daemon::logging::init(a.log_format)?;
    let source = match (a.config, &a.etcd, &a.gateway) {
        (Some(file), _, _) => daemon::MeshSource::File(file),
        (None, Some(etcd), Some(gateway)) => {
            wgbpf::fleet::layout::check_gateway_name(gateway)?;
            daemon::MeshSource::Fleet {
                connection: a.store.connection(etcd)?,
                layout: a.store.layout()?,
                gateway: gateway.clone(),
            }
        }
        _ => anyhow::bail!("-c FILE, or --etcd ENDPOINTS --gateway NAME"),
    };
    let config = daemon::Config {
        source,
        interface: a.interface,
        metrics_addr: (!a.no_metrics).then_some(a.metrics_addr),
        settings: Settings::new(
            a.attach.unwrap_or_else(attach::AttachMode::best),
            BackendChoice::from_env().map_err(anyhow::Error::msg)?,
        ),
        max_deny_series: a.max_deny_series,
        deny_log: RateLimit {
            per_second: a.deny_log_rate,
            burst: a.deny_log_burst,
        },
    };
    if !(a.repair_interval.is_finite() && a.repair_interval >= 0.0) {
        anyhow::bail!("--repair-interval: not a number of seconds");
    }
    let reconciler: Arc<dyn Reconciler> = if a.repair_interval == 0.0 {
        Arc::new(Unmanaged)
    } else {
        Arc::new(DriftRepair::new(Duration::from_secs_f64(
            a.repair_interval.max(0.1),
        )))
    };
    let logged = a.log_format.resolved() != LogFormat::Text;
    let result = daemon::run(config, reconciler);
    if let (Err(e), true) = (&result, logged) {
        // main() prints the error as plain text too; log processors get it
        // in their format (JSON, or with its priority for the journal).
        tracing::error!(error = %format!("{e:#}"), "wgbpf run failed");
    }
    result
}
