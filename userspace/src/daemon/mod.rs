//! `wgbpf run`: enforce a mesh file, then stay: serve metrics, log denies,
//! reload on SIGHUP or a `reload` on the control socket ([`control`], which
//! answers with the outcome), tell systemd ([`notify`]), exit on
//! SIGTERM/SIGINT leaving the data plane pinned and enforcing (the next
//! start adopts it).
//!
//! Every start and reload builds the file's [`EnforcementPlan`] (which
//! validates, compiles and tests the whole file before anything is
//! written) and applies it with [`crate::enforce::enforce`]: a reload that
//! fails is refused with its reason logged, and the running policy stays.
//! Drift repair ([`drift`]) works from the plan last enforced.
//!
//! With `--etcd` ([`MeshSource::Fleet`]) the mesh comes from the fleet's
//! store instead of a file ([`crate::fleet`]): each new document the
//! gateway's follower sees goes through the same reload (refused: the
//! running policy stays), and the outcome is reported under a lease.
//!
//! One tokio runtime (current thread): signals, the metrics server and the
//! deny-log reader are tasks; enforcing and scraping (syscalls on the maps)
//! run on the blocking pool.

pub mod control;
pub mod denylog;
pub mod drift;
pub mod hook;
pub mod logging;
pub mod notify;
pub mod sweep;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
    task::JoinHandle,
};

use crate::{
    dataplane::{attach::AttachMode, flows::monotonic_ns, Maps},
    enforce::{enforce, Detached, Enforced},
    fleet::{
        self,
        report::{Refusal, Report},
        GatewayDocument,
    },
    metrics::{self, Collector, DaemonCounters, Tunnels},
    plan::{EnforcementPlan, Settings},
};

pub use denylog::RateLimit;
pub use hook::{Pass, Reconciler, Repair, RepairKind, Unmanaged};

/// Default metrics address: loopback only, and not 9586, the port of the
/// common WireGuard exporters (see docs/metrics.md, "Why 10586").
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:10586";

/// Where the daemon's mesh comes from.
#[derive(Debug, Clone)]
pub enum MeshSource {
    /// A mesh file (with its includes), read again on each reload.
    File(PathBuf),
    /// Gateway `gateway`'s document in a fleet's store, followed.
    Fleet {
        connection: fleet::Connection,
        layout: fleet::Layout,
        gateway: String,
    },
}

impl MeshSource {
    /// For logs and replies: the file, or `etcd ENDPOINTS PREFIX gateway NAME`.
    pub fn describe(&self) -> String {
        match self {
            MeshSource::File(p) => p.display().to_string(),
            MeshSource::Fleet {
                connection,
                layout,
                gateway,
            } => format!(
                "etcd {} {} gateway {gateway}",
                connection.describe(),
                layout.prefix()
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub source: MeshSource,
    /// The interface the file must name (`wgbpf run -i`, the template
    /// unit's instance); `None`: whatever the file names.
    pub interface: Option<String>,
    /// `None`: no metrics server.
    pub metrics_addr: Option<SocketAddr>,
    /// How plans are applied (attach mode, WireGuard backend, events).
    pub settings: Settings,
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
    /// Peer names and handshake observations for `wireguard_tunnel_*`.
    tunnels: Arc<Tunnels>,
    /// The errors of the last reconcile pass (logged when they change).
    last_errors: Mutex<Vec<String>>,
    /// The flow sweep's interval, from the file last enforced.
    sweep_interval: tokio::sync::watch::Sender<Option<Duration>>,
    /// Decisions for `wgbpf monitor` clients of the control socket.
    monitors: tokio::sync::broadcast::Sender<Arc<denylog::Decision>>,
    /// With a fleet: the latest document seen (what a reload plans from).
    wanted: Mutex<Option<GatewayDocument>>,
    /// With a fleet: the report the reporter task keeps in the store.
    report: tokio::sync::watch::Sender<Report>,
}

/// The result of one enforce, as the main loop uses it.
struct Applied {
    plan: Arc<EnforcementPlan>,
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
            tunnels: Arc::new(Tunnels::default()),
            last_errors: Mutex::new(Vec::new()),
            sweep_interval: tokio::sync::watch::Sender::new(None),
            monitors: tokio::sync::broadcast::Sender::new(MONITOR_BACKLOG),
            wanted: Mutex::new(None),
            report: tokio::sync::watch::Sender::new(Report::default()),
        })
    }

    /// Reads, checks and compiles the file on the blocking pool (nothing
    /// is applied). `interface`: the interface the daemon guards (a reload
    /// must not move; `-i` must match).
    async fn plan(&self, interface: Option<String>, starting: bool) -> Result<EnforcementPlan> {
        let source = self.config.source.clone();
        let wanted = self.wanted.lock().ok().and_then(|w| w.clone());
        let settings = self.config.settings;
        let enforced = self.report.borrow().revision;
        tokio::task::spawn_blocking(move || -> Result<EnforcementPlan> {
            let plan = match (&source, wanted) {
                (MeshSource::File(path), _) => EnforcementPlan::from_file(path, settings)?,
                (MeshSource::Fleet { .. }, Some(doc)) => {
                    let mesh = doc.mesh()?;
                    // Revisions only grow; a lower one is a store restored
                    // from a backup or written by hand, not a push.
                    if let Some(now) = enforced.filter(|now| doc.revision < *now) {
                        bail!(
                            "revision {} is older than revision {now}, which this gateway \
                             enforces: refused (to go back, push the older files: they become \
                             a new revision)",
                            doc.revision
                        );
                    }
                    EnforcementPlan::build(mesh, settings)
                        .with_context(|| format!("revision {}", doc.revision))?
                }
                (MeshSource::Fleet { .. }, None) => bail!("no document from the store yet"),
            };
            if let Some(iface) = interface {
                if plan.interface() != iface {
                    if starting {
                        bail!(
                            "{}: the file names interface {}, but this daemon is for {iface} (-i); nothing was applied",
                            source.describe(),
                            plan.interface()
                        );
                    }
                    bail!(
                        "the file now names interface {} instead of {iface}; restart wgbpf run to move",
                        plan.interface()
                    );
                }
            }
            Ok(plan)
        })
        .await
        .context("planning task")?
    }

    /// Enforces a checked plan on the blocking pool.
    async fn enforce(&self, plan: EnforcementPlan) -> Result<Applied> {
        let source = self.config.source.describe();
        tokio::task::spawn_blocking(move || -> Result<Applied> {
            // The plan's errors name the file already; enforce's do not.
            let (maps, enforced) = enforce(&plan, Detached::Leave).with_context(|| source)?;
            Ok(Applied {
                plan: Arc::new(plan),
                maps,
                enforced,
            })
        })
        .await
        .context("enforce task")?
    }

    /// Plans and enforces the file again for the running daemon.
    async fn apply(&self, interface: &str) -> Result<Applied> {
        let plan = self.plan(Some(interface.to_string()), false).await?;
        self.enforce(plan).await
    }

    /// One reload (SIGHUP or the control socket): the file is enforced, or
    /// refused with the running policy kept. Returns the reply for a
    /// control client.
    async fn reload(
        &self,
        iface: &str,
        why: &'static str,
        plan: &mut Arc<EnforcementPlan>,
        reader: &mut Option<JoinHandle<()>>,
        notifier: &notify::Notifier,
    ) -> control::Reply {
        self.counters.reloads.fetch_add(1, Ordering::Relaxed);
        notifier.reloading();
        let file = self.config.source.describe();
        tracing::info!(file = %file, why, "reloading");
        match self.apply(iface).await {
            Ok(applied) => {
                self.log_enforced(&applied.enforced, "reloaded");
                let flows = crate::mesh::reach::flow_summary(&plan.mesh, &applied.plan.mesh);
                tracing::info!(interface = %iface, changes = %flows, "flows whose verdict the reload changed");
                let version = applied.enforced.policy.version;
                let enforced = serde_json::to_value(&applied.enforced).ok();
                *plan = self.adopt_reload(applied, reader);
                self.reconcile(plan, "reload", reader).await;
                notifier.ready(&format!("enforcing policy version {version} on {iface}"));
                control::Reply {
                    ok: true,
                    interface: iface.to_string(),
                    file,
                    policy_version: Some(version.into()),
                    enforced,
                    error: None,
                }
            }
            Err(e) => {
                self.counters
                    .reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                self.counters.last_reload_ok.store(0, Ordering::Relaxed);
                let reason = format!("{e:#}");
                tracing::error!(
                    file = %file,
                    why,
                    reason = %reason,
                    "reload refused; the running policy stays"
                );
                let version = self.counters.policy_version.load(Ordering::Relaxed);
                notifier.ready(&format!(
                    "reload refused, still enforcing policy version {version} on {iface}: {reason}"
                ));
                control::Reply {
                    ok: false,
                    interface: iface.to_string(),
                    file,
                    policy_version: Some(version),
                    enforced: None,
                    error: Some(reason),
                }
            }
        }
    }

    fn set_wanted(&self, doc: GatewayDocument) {
        if let Ok(mut w) = self.wanted.lock() {
            *w = Some(doc);
        }
    }

    /// With a fleet: the outcome of applying the wanted document, into the
    /// report (enforced: its revision, the refusal cleared; refused: the
    /// refusal, the enforced revision kept).
    fn note_fleet(&self, iface: &str, ok: bool, error: Option<String>) {
        let Some(doc) = self.wanted.lock().ok().and_then(|w| w.clone()) else {
            return;
        };
        let version = self.counters.policy_version.load(Ordering::Relaxed);
        self.report.send_modify(|r| {
            r.interface = iface.to_string();
            r.policy_version = version;
            if ok {
                r.revision = Some(doc.revision);
                r.etcd_revision = doc.etcd_revision;
                r.refused = None;
            } else {
                r.refused = Some(Refusal {
                    revision: doc.revision,
                    etcd_revision: doc.etcd_revision,
                    error: error.unwrap_or_default(),
                });
            }
        });
        if ok {
            tracing::info!(revision = doc.revision, "enforcing the fleet's revision");
        }
    }

    fn status(&self, iface: &str) -> control::Reply {
        control::Reply {
            ok: self.counters.last_reload_ok.load(Ordering::Relaxed) == 1,
            interface: iface.to_string(),
            file: self.config.source.describe(),
            policy_version: Some(self.counters.policy_version.load(Ordering::Relaxed)),
            enforced: None,
            error: (self.counters.last_reload_ok.load(Ordering::Relaxed) != 1)
                .then(|| "the last reload was refused (see the daemon's log)".to_string()),
        }
    }

    /// After a successful start or reload: counters, then [`Self::adopt`].
    fn adopt_reload(
        &self,
        applied: Applied,
        reader: &mut Option<JoinHandle<()>>,
    ) -> Arc<EnforcementPlan> {
        self.counters.last_reload_ok.store(1, Ordering::Relaxed);
        self.counters
            .policy_version
            .store(applied.enforced.policy.version.into(), Ordering::Relaxed);
        self.counters
            .last_reload_success_seconds
            .store(now_unix(), Ordering::Relaxed);
        self.adopt(applied, reader)
    }

    /// After a successful enforce (start, reload, or a drift repair that
    /// re-enforced): names for the deny log and the tunnel metrics, and a
    /// fresh deny-log reader on the (possibly new) ring buffer.
    fn adopt(
        &self,
        mut applied: Applied,
        reader: &mut Option<JoinHandle<()>>,
    ) -> Arc<EnforcementPlan> {
        let slots = applied.maps.counter_owners().unwrap_or_default();
        if let Ok(mut ctx) = self.log_ctx.write() {
            *ctx = denylog::LogContext::new(&applied.plan.mesh, slots);
        }
        self.tunnels.set_names(&applied.plan.mesh);
        self.sweep_interval
            .send_replace(applied.plan.mesh.flows.sweep_interval);
        if let Some(events) = applied.maps.events.take() {
            if let Some(old) = reader.take() {
                old.abort();
            }
            let (ctx, counters, limit, monitors) = (
                self.log_ctx.clone(),
                self.counters.clone(),
                self.config.deny_log,
                self.monitors.clone(),
            );
            *reader = Some(tokio::spawn(async move {
                if let Err(e) = denylog::run(events, ctx, counters, limit, monitors).await {
                    tracing::error!(error = %format!("{e:#}"), "deny log reader stopped");
                }
            }));
        }
        applied.plan
    }

    fn log_enforced(&self, e: &Enforced, what: &str) {
        tracing::info!(
            interface = %e.interface,
            file = %self.config.source.describe(),
            mode = match e.attach.mode {
                AttachMode::Tcx => "tcx",
                AttachMode::Clsact => "clsact",
            },
            adopted = e.attach.adopted,
            flow_settings_changed = e.attach.flow_settings_changed,
            program_log_changed = e.attach.program_log_changed,
            policy_version = e.policy.version,
            changed = e.policy.changed,
            rules = e.rules,
            identities = e.identities,
            entries = e.policy_entries,
            wireguard_changed = e.wireguard.as_ref().map(|w| w.changed),
            "{what}"
        );
    }

    /// One drift-repair pass: logs and counts each repair, feeds the
    /// device's handshake times to the tunnel metrics, adopts a
    /// re-enforced data plane. Errors are logged when they change (not at
    /// every pass while they last).
    async fn reconcile(
        &self,
        plan: &mut Arc<EnforcementPlan>,
        why: &'static str,
        reader: &mut Option<JoinHandle<()>>,
    ) {
        let (r, p) = (self.reconciler.clone(), plan.clone());
        let pass = match tokio::task::spawn_blocking(move || r.reconcile(&p)).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => Pass {
                errors: vec![format!("{e:#}")],
                ..Default::default()
            },
            Err(e) => Pass {
                errors: vec![format!("drift-repair task: {e}")],
                ..Default::default()
            },
        };
        let c = &self.counters;
        c.drift_passes.fetch_add(1, Ordering::Relaxed);
        for rep in &pass.repairs {
            c.drift_repairs[rep.kind.index()].fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                interface = %plan.interface(),
                why,
                kind = rep.kind.as_str(),
                drift = %rep.drift,
                action = %rep.action,
                "drift repaired"
            );
        }
        if let Some(device) = &pass.device {
            self.tunnels.observe(device);
        }
        if !pass.errors.is_empty() {
            c.drift_pass_errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut last) = self.last_errors.lock() {
            if *last != pass.errors {
                for e in pass.errors.iter().filter(|e| !last.contains(e)) {
                    tracing::error!(interface = %plan.interface(), why, error = %e, "drift check or repair failed");
                }
                if pass.errors.is_empty() {
                    tracing::info!(interface = %plan.interface(), "drift checks and repairs work again");
                }
                *last = pass.errors.clone();
            }
        }
        if let Some((maps, enforced)) = pass.reenforced {
            self.log_enforced(&enforced, "re-enforced the file to repair drift");
            *plan = self.adopt(
                Applied {
                    plan: plan.clone(),
                    maps,
                    enforced,
                },
                reader,
            );
        }
    }

    async fn main(self) -> Result<()> {
        // Handlers first: SIGHUP's default action would kill us.
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let notifier = notify::Notifier::from_env();

        // The metrics socket before anything is applied: a port another
        // exporter holds is an error at start-up that changes nothing
        // (rather than a daemon that enforces, then exits, in a loop).
        let listener = match self.config.metrics_addr {
            Some(addr) => Some(
                metrics::http::bind(addr)
                    .await
                    .with_context(|| format!("metrics: binding {addr} (nothing was applied)"))?,
            ),
            None => None,
        };
        // With a fleet: follow the store, report under a lease, and plan
        // from the first document that passes (a refused one is reported;
        // the kernel keeps whatever it enforced).
        let mut docs = None;
        let mut fleet_tasks = Vec::new();
        let mut reporter = None;
        let first = if let MeshSource::Fleet {
            connection,
            layout,
            gateway,
        } = &self.config.source
        {
            let (tx, mut rx) = mpsc::channel(4);
            fleet_tasks.push(tokio::spawn(fleet::follow::follow(
                connection.clone(),
                layout.clone(),
                gateway.clone(),
                tx,
            )));
            self.report.send_modify(|r| r.gateway = gateway.clone());
            let (stop, stopped) = tokio::sync::oneshot::channel();
            reporter = Some((
                stop,
                tokio::spawn(fleet::report::keep(
                    connection.clone(),
                    layout.clone(),
                    gateway.clone(),
                    self.report.subscribe(),
                    stopped,
                )),
            ));
            tracing::info!(source = %self.config.source.describe(), "waiting for this gateway's document");
            let first = loop {
                let doc = tokio::select! {
                    d = rx.recv() => d.context("the etcd follower stopped")?,
                    _ = term.recv() => return Ok(()),
                    _ = int.recv() => return Ok(()),
                };
                let (revision, etcd_revision) = (doc.revision, doc.etcd_revision);
                self.set_wanted(doc);
                match self.plan(self.config.interface.clone(), true).await {
                    Ok(p) => break p,
                    Err(e) => {
                        let error = format!("{e:#}");
                        tracing::error!(revision, error = %error, "revision refused; waiting for the next one");
                        self.report.send_modify(|r| {
                            r.refused = Some(Refusal {
                                revision,
                                etcd_revision,
                                error,
                            })
                        });
                    }
                }
            };
            docs = Some(rx);
            first
        } else {
            self.plan(self.config.interface.clone(), true).await?
        };
        let iface = first.interface().to_string();
        // Also before anything is applied: a second daemon for the same
        // interface stops here.
        let mut control = control::ControlSocket::bind(&iface)?;
        let mut reader = None;
        let applied = self.enforce(first).await?;
        self.log_enforced(
            &applied.enforced,
            if applied.enforced.attach.adopted {
                "adopted the pinned data plane; enforcing"
            } else {
                "attached; enforcing"
            },
        );
        let mut plan = self.adopt_reload(applied, &mut reader);
        self.note_fleet(&iface, true, None);
        self.reconcile(&mut plan, "start", &mut reader).await;
        let sweeper = tokio::spawn(sweep::run(
            iface.clone(),
            self.sweep_interval.subscribe(),
            self.counters.clone(),
        ));

        let server = match listener {
            Some(listener) => {
                let local = listener.local_addr()?;
                let registry = Arc::new(metrics::registry(
                    Collector::new(&iface, self.counters.clone(), self.config.max_deny_series)
                        .with_wg_backend(self.config.settings.wg_backend)
                        .with_guards(
                            plan.guard
                                .as_ref()
                                .map(|g| g.underlay.clone())
                                .unwrap_or_default(),
                        )
                        .with_tunnels(self.tunnels.clone()),
                ));
                tracing::info!(address = %local, "metrics: serving /metrics");
                Some(tokio::spawn(metrics::http::serve(listener, registry)))
            }
            None => None,
        };
        let (requests_tx, mut requests) = mpsc::channel::<control::Incoming>(4);
        let control_task = control.serve(requests_tx, self.monitors.clone());
        tracing::info!(socket = %control.path().display(), "control: `wgbpf reload` answers here");
        let busy = Arc::new(AtomicU64::new(0));
        let watchdog = notifier
            .watchdog_interval()
            .map(|every| tokio::spawn(watchdog(every, busy.clone())));
        notifier.ready(&format!(
            "enforcing policy version {} on {iface}",
            self.counters.policy_version.load(Ordering::Relaxed)
        ));

        let resync = self.reconciler.interval();
        let mut tick = tokio::time::interval(resync.unwrap_or(Duration::from_secs(3600)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let signal_name = loop {
            tokio::select! {
                _ = hup.recv() => {
                    let _busy = Busy::mark(&busy);
                    let r = self.reload(&iface, "SIGHUP", &mut plan, &mut reader, &notifier).await;
                    self.note_fleet(&iface, r.ok, r.error);
                }
                Some(doc) = next_document(&mut docs) => {
                    let _busy = Busy::mark(&busy);
                    tracing::info!(revision = doc.revision, etcd_revision = doc.etcd_revision, "a new document from etcd");
                    self.set_wanted(doc);
                    let r = self.reload(&iface, "etcd", &mut plan, &mut reader, &notifier).await;
                    self.note_fleet(&iface, r.ok, r.error);
                }
                Some((request, reply)) = requests.recv() => {
                    let _busy = Busy::mark(&busy);
                    let answer = match request {
                        control::Request::Reload => {
                            let r = self.reload(&iface, "control socket", &mut plan, &mut reader, &notifier).await;
                            self.note_fleet(&iface, r.ok, r.error.clone());
                            r
                        }
                        control::Request::Status => self.status(&iface),
                        // Answered by the connection itself.
                        control::Request::Monitor => self.status(&iface),
                    };
                    // The client may have given up waiting: nothing to do.
                    let _ = reply.send(answer);
                }
                _ = tick.tick(), if resync.is_some() => {
                    let _busy = Busy::mark(&busy);
                    self.reconcile(&mut plan, "periodic", &mut reader).await;
                }
                _ = term.recv() => break "SIGTERM",
                _ = int.recv() => break "SIGINT",
            }
        };
        notifier.stopping();
        // With a fleet: the report is withdrawn (its lease revoked) before
        // the exit, so `fleet status` shows the gateway gone at once.
        if let Some((stop, task)) = reporter {
            let _ = stop.send(());
            if tokio::time::timeout(Duration::from_secs(3), task)
                .await
                .is_err()
            {
                tracing::warn!(
                    "etcd: the report could not be withdrawn; it goes when its lease runs out"
                );
            }
        }
        for task in [server, reader, watchdog, Some(control_task)]
            .into_iter()
            .flatten()
            .chain(fleet_tasks)
        {
            task.abort();
        }
        drop(control);
        sweeper.abort();
        tracing::info!(
            signal = signal_name,
            interface = %iface,
            "exiting; the data plane stays pinned and enforcing (the next start adopts it)"
        );
        Ok(())
    }
}

/// The next document from the fleet's follower; never, without a fleet.
async fn next_document(
    docs: &mut Option<mpsc::Receiver<GatewayDocument>>,
) -> Option<GatewayDocument> {
    match docs {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Decisions a slow `wgbpf monitor` client may fall behind by before it
/// is told how many it lost.
const MONITOR_BACKLOG: usize = 4096;

/// How long one reload or drift pass may run before the watchdog stops
/// vouching for the daemon (a hung netlink call or a lock never released).
const STALL: Duration = Duration::from_secs(300);

/// Marks the main loop busy (since when, monotonic ns) while it lives.
struct Busy<'a>(&'a AtomicU64);

impl<'a> Busy<'a> {
    fn mark(busy: &'a AtomicU64) -> Busy<'a> {
        busy.store(monotonic_ns().max(1), Ordering::Relaxed);
        Busy(busy)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

/// Pings systemd's watchdog while the runtime runs and the main loop is
/// idle or has been busy for less than [`STALL`]: a stuck daemon is
/// killed and restarted by systemd (the data plane enforces meanwhile).
async fn watchdog(every: Duration, busy: Arc<AtomicU64>) {
    let notifier = notify::Notifier::from_env();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let since = busy.load(Ordering::Relaxed);
        let stalled = since != 0 && monotonic_ns().saturating_sub(since) > STALL.as_nanos() as u64;
        if stalled {
            tracing::error!(
                busy_seconds = monotonic_ns().saturating_sub(since) / 1_000_000_000,
                "the main loop has been busy too long; no longer pinging the watchdog"
            );
        } else {
            notifier.send("WATCHDOG=1");
        }
    }
}
