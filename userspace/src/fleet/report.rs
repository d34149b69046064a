//! A gateway's report, `P/status/NAME`, written under a lease: which
//! revision it enforces, the last one it refused and why. The gateway
//! writes it again every few seconds; a gateway that dies stops keeping
//! its lease alive and its report disappears with it. `wgbpf fleet
//! status` reads them all.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, GetOptions, PutOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{layout::Layout, push, store::Connection, FleetError};

/// What a gateway says of itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub gateway: String,
    pub interface: String,
    /// The fleet revision it enforces (`None`: none yet).
    pub revision: Option<u64>,
    /// The etcd revision of that document.
    pub etcd_revision: i64,
    /// The data plane's policy version.
    pub policy_version: u64,
    /// The last document it refused since it enforced one, and why.
    pub refused: Option<Refusal>,
    /// When this report was written (Unix seconds, the gateway's clock).
    #[serde(default)]
    pub reported_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub revision: u64,
    pub etcd_revision: i64,
    pub error: String,
}

/// The lease's time to live: how long a dead gateway's report outlives it.
pub const LEASE_TTL: Duration = Duration::from_secs(15);
/// How often the report is written again (and the lease kept alive).
pub const EVERY: Duration = Duration::from_secs(5);

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Keeps `P/status/NAME` up to date with `reports` until `stop` fires (or
/// the sender is dropped): at once when it changes, and every [`EVERY`].
/// Then the lease is revoked, so the report goes at once rather than when
/// the lease runs out. A store that is away is retried with a new lease;
/// the report reappears when it is back.
pub async fn keep(
    connection: Connection,
    layout: Layout,
    name: String,
    mut reports: watch::Receiver<Report>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        match keep_once(&connection, &layout, &name, &mut reports, &mut stop).await {
            Ok(()) => return,
            Err(e) => {
                tracing::debug!(error = %e, "etcd: the report could not be written; trying again");
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

async fn keep_once(
    connection: &Connection,
    layout: &Layout,
    name: &str,
    reports: &mut watch::Receiver<Report>,
    stop: &mut tokio::sync::oneshot::Receiver<()>,
) -> Result<(), FleetError> {
    let mut client = connection.connect().await?;
    let lease = client
        .lease_grant(LEASE_TTL.as_secs() as i64, None)
        .await
        .map_err(FleetError::etcd("granting the report's lease"))?
        .id();
    let (mut keeper, mut acks) = client
        .lease_keep_alive(lease)
        .await
        .map_err(FleetError::etcd("keeping the report's lease"))?;
    let mut tick = tokio::time::interval(EVERY);
    loop {
        let mut r = reports.borrow_and_update().clone();
        r.reported_at = now_unix();
        let json = serde_json::to_string(&r).unwrap_or_default();
        client
            .put(
                layout.status(name),
                json,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .map_err(FleetError::etcd("writing the report"))?;
        tokio::select! {
            _ = &mut *stop => {
                // The daemon is exiting: the report goes with the lease.
                let _ = client.lease_revoke(lease).await;
                return Ok(());
            }
            changed = reports.changed() => {
                if changed.is_err() {
                    // The daemon is exiting: the report goes with the lease.
                    let _ = client.lease_revoke(lease).await;
                    return Ok(());
                }
            }
            _ = tick.tick() => {
                keeper.keep_alive().await.map_err(FleetError::etcd("keeping the report's lease"))?;
                let ack = acks.message().await.map_err(FleetError::etcd("keeping the report's lease"))?;
                if ack.is_none_or(|a| a.ttl() <= 0) {
                    return Err(FleetError::BadValue { key: layout.status(name), message: "the lease expired".into() });
                }
            }
        }
    }
}

/// One gateway in `wgbpf fleet status`.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayStatus {
    pub gateway: String,
    /// In the fleet's latest revision.
    pub in_fleet: bool,
    /// Its report, `None` when it has none (down, or never started).
    pub report: Option<Report>,
    /// Seconds since it wrote its report (this machine's clock).
    pub seconds_since_report: Option<u64>,
    /// Its report key holds something that is not a report (written by
    /// hand?): why, shown on its row rather than failing the whole status.
    pub unreadable_report: Option<String>,
}

/// The fleet's revision and every gateway, in the fleet or reporting.
#[derive(Debug, Clone, Serialize)]
pub struct FleetStatus {
    pub revision: u64,
    /// `P/revision` is not a revision number: why.
    pub unreadable_revision: Option<String>,
    pub gateways: Vec<GatewayStatus>,
}

/// Reads the revision, the gateways and their reports.
pub async fn status(client: &mut Client, layout: &Layout) -> Result<FleetStatus, FleetError> {
    let fleet = push::read(client, layout).await?;
    let reports = client
        .get(layout.statuses(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(FleetError::etcd("reading the reports"))?;
    let mut by_name = std::collections::BTreeMap::new();
    let mut unreadable = std::collections::BTreeMap::new();
    for kv in reports.kvs() {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let name = key[layout.statuses().len()..].to_string();
        match serde_json::from_slice::<Report>(kv.value()) {
            Ok(report) => {
                by_name.insert(name, report);
            }
            Err(e) => {
                unreadable.insert(
                    name,
                    format!("{key} is not a report ({e}): {}", push::quoted(kv.value())),
                );
            }
        }
    }
    let now = now_unix();
    let mut names: Vec<String> = fleet.gateways.keys().cloned().collect();
    names.extend(
        by_name
            .keys()
            .chain(unreadable.keys())
            .filter(|n| !fleet.gateways.contains_key(*n))
            .cloned(),
    );
    names.sort();
    names.dedup();
    let gateways = names
        .into_iter()
        .map(|n| {
            let report = by_name.remove(&n);
            GatewayStatus {
                in_fleet: fleet.gateways.contains_key(&n),
                seconds_since_report: report.as_ref().map(|r| now.saturating_sub(r.reported_at)),
                unreadable_report: unreadable.remove(&n),
                report,
                gateway: n,
            }
        })
        .collect();
    Ok(FleetStatus {
        revision: fleet.revision,
        unreadable_revision: fleet.unreadable_revision.clone(),
        gateways,
    })
}
