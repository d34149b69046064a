//! `wgbpf run`: enforce a mesh file, then stay: serve metrics, log denies,
//! reload on SIGHUP, exit on SIGTERM/SIGINT leaving the data plane pinned
//! and enforcing (the next start adopts it).
//!
//! Everything that touches the kernel goes through
//! [`crate::enforce::enforce`], which validates and compiles the whole file
//! before it writes anything: a reload that fails is refused with its
//! reason logged, and the running policy stays.
//!
//! One tokio runtime (current thread): signals, the metrics server and the
//! deny-log reader are tasks; enforcing and scraping (syscalls on the maps)
//! run on the blocking pool.

pub mod denylog;
pub mod hook;
pub mod logging;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{atomic::Ordering, Arc, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use tokio::{
    signal::unix::{signal, SignalKind},
    task::JoinHandle,
};

use crate::{
    dataplane::{attach::AttachMode, Maps},
    enforce::{enforce, Enforced},
    mesh::{self, Mesh},
    metrics::{self, Collector, DaemonCounters},
};

pub use denylog::RateLimit;
pub use hook::{Reconciler, Unmanaged};

/// Default metrics address: loopback only (see docs/metrics.md).
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9586";

#[derive(Debug, Clone)]
pub struct Config {
    pub mesh_file: PathBuf,
    /// `None`: no metrics server.
    pub metrics_addr: Option<SocketAddr>,
    /// How to attach when nothing is pinned yet.
    pub attach: AttachMode,
    /// Deny-map label sets per scrape (0: no cap).
    pub max_deny_series: usize,
    pub deny_log: RateLimit,
}

/// Runs the daemon until SIGTERM or SIGINT. Errors only if the first
/// enforce or the metrics listener fails.
pub fn run(config: Config, reconciler: Arc<dyn Reconciler>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
        .context("starting the runtime")?;
    rt.block_on(Daemon::start(config, reconciler)?.main())
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct Daemon {
    config: Config,
    reconciler: Arc<dyn Reconciler>,
    counters: Arc<DaemonCounters>,
    log_ctx: Arc<RwLock<denylog::LogContext>>,
}

/// The result of one enforce, as the main loop uses it.
struct Applied {
    mesh: Mesh,
    maps: Maps,
    enforced: Enforced,
}

impl Daemon {
    fn start(config: Config, reconciler: Arc<dyn Reconciler>) -> Result<Self> {
        Ok(Self {
            config,
            reconciler,
            counters: Arc::new(DaemonCounters::default()),
            log_ctx: Arc::new(RwLock::new(denylog::LogContext::default())),
        })
    }

    /// Loads and enforces the file on the blocking pool. `interface`:
    /// the interface the daemon already guards (a reload must not move).
    async fn apply(&self, interface: Option<String>) -> Result<Applied> {
        let path = self.config.mesh_file.clone();
        let mode = self.config.attach;
        tokio::task::spawn_blocking(move || -> Result<Applied> {
            let mesh = mesh::load(&path)?;
            if let Some(iface) = interface {
                if mesh.interface != iface {
                    bail!(
                        "the file now names interface {} instead of {iface}; restart wgbpf run to move",
                        mesh.interface
                    );
                }
            }
            // Mesh errors name the file already; enforce's do not.
            let (maps, enforced) =
                enforce(&mesh, mode).with_context(|| path.display().to_string())?;
            Ok(Applied {
                mesh,
                maps,
                enforced,
            })
        })
        .await
        .context("enforce task")?
    }

    /// After a successful enforce: names for the deny log, counters, and a
    /// fresh deny-log reader on the (possibly new) ring buffer.
    fn adopt(&self, mut applied: Applied, reader: &mut Option<JoinHandle<()>>) -> Mesh {
        let slots = applied.maps.peer_slots().unwrap_or_default();
        if let Ok(mut ctx) = self.log_ctx.write() {
            *ctx = denylog::LogContext::new(&applied.mesh, slots);
        }
        self.counters.last_reload_ok.store(1, Ordering::Relaxed);
        self.counters
            .last_reload_success_seconds
            .store(now_unix(), Ordering::Relaxed);
        if let Some(events) = applied.maps.events.take() {
            if let Some(old) = reader.take() {
                old.abort();
            }
            let (ctx, counters, limit) = (
                self.log_ctx.clone(),
                self.counters.clone(),
                self.config.deny_log,
            );
            *reader = Some(tokio::spawn(async move {
                if let Err(e) = denylog::run(events, ctx, counters, limit).await {
                    tracing::error!(error = %format!("{e:#}"), "deny log reader stopped");
                }
            }));
        }
        applied.mesh
    }

    fn log_enforced(&self, e: &Enforced, what: &str) {
        tracing::info!(
            interface = %e.interface,
            file = %self.config.mesh_file.display(),
            mode = match e.attach.mode {
                AttachMode::Tcx => "tcx",
                AttachMode::Clsact => "clsact",
            },
            adopted = e.attach.adopted,
            policy_version = e.policy.version,
            changed = e.policy.changed,
            rules = e.rules,
            identities = e.identities,
            entries = e.policy_entries,
            wireguard_changed = e.wireguard.as_ref().map(|w| w.changed),
            "{what}"
        );
    }

    async fn reconcile(&self, mesh: &Mesh, why: &'static str) {
        let (r, m) = (self.reconciler.clone(), mesh.clone());
        match tokio::task::spawn_blocking(move || r.reconcile(&m)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(why, error = %format!("{e:#}"), "WireGuard reconcile failed")
            }
            Err(e) => tracing::error!(why, error = %e, "WireGuard reconcile task failed"),
        }
    }

    async fn main(self) -> Result<()> {
        // Handlers first: SIGHUP's default action would kill us.
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;

        let mut reader = None;
        let applied = self.apply(None).await?;
        self.log_enforced(
            &applied.enforced,
            if applied.enforced.attach.adopted {
                "adopted the pinned data plane; enforcing"
            } else {
                "attached; enforcing"
            },
        );
        let iface = applied.mesh.interface.clone();
        let mut mesh = self.adopt(applied, &mut reader);
        self.reconcile(&mesh, "start").await;

        let server = match self.config.metrics_addr {
            Some(addr) => {
                let listener = metrics::http::bind(addr)
                    .await
                    .with_context(|| format!("metrics: binding {addr}"))?;
                let local = listener.local_addr()?;
                let registry = Arc::new(metrics::registry(Collector::new(
                    &iface,
                    self.counters.clone(),
                    self.config.max_deny_series,
                )));
                tracing::info!(address = %local, "metrics: serving /metrics");
                Some(tokio::spawn(metrics::http::serve(listener, registry)))
            }
            None => None,
        };

        let resync = self.reconciler.interval();
        let mut tick = tokio::time::interval(resync.unwrap_or(Duration::from_secs(3600)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let signal_name = loop {
            tokio::select! {
                _ = hup.recv() => {
                    self.counters.reloads.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(file = %self.config.mesh_file.display(), "SIGHUP: reloading");
                    match self.apply(Some(iface.clone())).await {
                        Ok(applied) => {
                            self.log_enforced(&applied.enforced, "reloaded");
                            mesh = self.adopt(applied, &mut reader);
                            self.reconcile(&mesh, "reload").await;
                        }
                        Err(e) => {
                            self.counters.reload_failures.fetch_add(1, Ordering::Relaxed);
                            self.counters.last_reload_ok.store(0, Ordering::Relaxed);
                            tracing::error!(
                                file = %self.config.mesh_file.display(),
                                reason = %format!("{e:#}"),
                                "reload refused; the running policy stays"
                            );
                        }
                    }
                }
                _ = tick.tick(), if resync.is_some() => {
                    self.reconcile(&mesh, "periodic").await;
                }
                _ = term.recv() => break "SIGTERM",
                _ = int.recv() => break "SIGINT",
            }
        };
        if let Some(s) = server {
            s.abort();
        }
        if let Some(r) = reader {
            r.abort();
        }
        tracing::info!(
            signal = signal_name,
            interface = %iface,
            "exiting; the data plane stays pinned and enforcing (the next start adopts it)"
        );
        Ok(())
    }
}
