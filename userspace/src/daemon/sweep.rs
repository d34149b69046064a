//! The daemon's periodic sweep of the flow table
//! ([`crate::dataplane::Maps::sweep_flows`]): every `sweep_interval` of the
//! file's `[interface.flows]` (10 s by default, 0: never), entries past
//! their lifetime are removed, so that dead openings of a flood do not
//! wait for the LRU to push them out (and live idle connections with them).
//! The interval follows reloads; the maps are opened again at each pass,
//! so a data plane loaded afresh by drift repair is swept too.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use tokio::sync::watch;

use crate::{
    dataplane::{self, flows::monotonic_ns},
    metrics::DaemonCounters,
};

/// Sweeps `iface`'s flow table every interval `interval` says (`None`:
/// waits for one), counting in `counters`; runs until aborted.
pub async fn run(
    iface: String,
    mut interval: watch::Receiver<Option<Duration>>,
    counters: Arc<DaemonCounters>,
) {
    let mut failing = false;
    loop {
        let every = *interval.borrow_and_update();
        let Some(every) = every else {
            if interval.changed().await.is_err() {
                return;
            }
            continue;
        };
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            changed = interval.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        }
        let i = iface.clone();
        let swept = tokio::task::spawn_blocking(move || {
            let maps = dataplane::open_maps(&i)?;
            maps.sweep_flows(monotonic_ns())
        })
        .await;
        let swept = match swept {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(format!("sweep task: {e}")),
        };
        match swept {
            Ok(s) => {
                counters.flow_sweeps.fetch_add(1, Ordering::Relaxed);
                counters
                    .flow_sweep_removed
                    .fetch_add(s.removed as u64, Ordering::Relaxed);
                counters
                    .flow_sweep_spared
                    .fetch_add((s.renewed + s.restored) as u64, Ordering::Relaxed);
                if failing {
                    tracing::info!(interface = %iface, "flow sweep works again");
                    failing = false;
                }
                tracing::debug!(
                    interface = %iface,
                    live = s.live,
                    removed = s.removed,
                    renewed = s.renewed,
                    restored = s.restored,
                    "flow table swept"
                );
            }
            Err(error) => {
                counters.flow_sweep_errors.fetch_add(1, Ordering::Relaxed);
                if !failing {
                    tracing::error!(interface = %iface, error = %error, "flow sweep failed");
                    failing = true;
                }
            }
        }
    }
}
