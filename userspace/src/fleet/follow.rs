//! A gateway following its fleet: its three keys read in one transaction
//! (so a push is seen whole or not at all), then a watch on the fleet's
//! range; after a lost connection or a compacted watch, a full read and a
//! new watch from there. Each new document is handed to the daemon, which
//! applies it or refuses it; this module never touches the kernel.

use std::time::Duration;

use etcd_client::{Client, TxnOpResponse, WatchOptions};
use tokio::sync::mpsc;

use super::{
    document::{GatewayDocument, Part},
    layout::Layout,
    push::revision_number,
    store::Connection,
    FleetError,
};

/// Reads gateway `name`'s document in one transaction. Returns it with
/// the store's revision at the read (to watch from).
pub async fn read(
    client: &mut Client,
    layout: &Layout,
    name: &str,
) -> Result<(GatewayDocument, i64), FleetError> {
    use etcd_client::{Txn, TxnOp};
    let resp = client
        .txn(Txn::new().and_then([
            TxnOp::get(layout.revision(), None),
            TxnOp::get(layout.shared(), None),
            TxnOp::get(layout.gateway(name), None),
        ]))
        .await
        .map_err(FleetError::etcd("reading the gateway's document"))?;
    let at = resp.header().map_or(0, |h| h.revision());
    let gets: Vec<_> = resp
        .op_responses()
        .into_iter()
        .filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g.kvs().first().cloned()),
            _ => None,
        })
        .collect();
    let [rev, shared, own] =
        <[Option<etcd_client::KeyValue>; 3]>::try_from(gets).map_err(|_| FleetError::BadValue {
            key: layout.prefix().into(),
            message: "the store answered the read with fewer results than asked".into(),
        })?;
    let etcd_revision = [&rev, &shared, &own]
        .iter()
        .filter_map(|kv| kv.as_ref().map(|kv| kv.mod_revision()))
        .max()
        .unwrap_or(0);
    // A key that cannot be what it must be is not an outage: the document
    // carries it, and the daemon refuses and reports it like any broken
    // revision (keeping the last good one).
    let mut unreadable = None;
    let mut part = |kv: &Option<etcd_client::KeyValue>, key: String| -> Option<Part> {
        let kv = kv.as_ref()?;
        match kv.value_str() {
            Ok(t) => Some(Part {
                name: key,
                text: t.to_string(),
            }),
            Err(_) => {
                unreadable.get_or_insert((key, "not UTF-8 text".to_string()));
                None
            }
        }
    };
    let shared = part(&shared, layout.shared());
    let own = part(&own, layout.gateway(name));
    let revision = match rev.as_ref().map(revision_number).transpose() {
        Ok(r) => r.unwrap_or(0),
        Err(e) => {
            unreadable.get_or_insert((layout.revision(), e.to_string()));
            0
        }
    };
    let doc = GatewayDocument {
        gateway: name.to_string(),
        revision,
        etcd_revision,
        shared,
        own,
        unreadable,
    };
    Ok((doc, at))
}

/// How long to wait before trying the store again.
const RETRY: Duration = Duration::from_secs(1);

/// Follows gateway `name` until `out` is closed: sends every document that
/// differs from the last one sent. Errors are logged and retried; while
/// the store is away nothing is sent (the daemon keeps enforcing).
pub async fn follow(
    connection: Connection,
    layout: Layout,
    name: String,
    out: mpsc::Sender<GatewayDocument>,
) {
    let mut last: Option<GatewayDocument> = None;
    let mut client: Option<Client> = None;
    let mut lost = false;
    while !out.is_closed() {
        if client.is_none() {
            match connection.connect().await {
                Ok(c) => client = Some(c),
                Err(e) => {
                    if !lost {
                        tracing::warn!(error = %e, "etcd: cannot connect; enforcing the last good revision meanwhile");
                        lost = true;
                    }
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            }
        }
        let Some(c) = client.as_mut() else { continue };
        if let Err(e) = follow_once(c, &layout, &name, &mut last, &out, &mut lost).await {
            if !lost {
                tracing::warn!(error = %e, "etcd: lost; enforcing the last good revision meanwhile, catching up when it is back");
                lost = true;
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// One full read, then the watch until it ends: `Ok` when the watch was
/// cancelled (compaction: read again), `Err` when the store is away.
async fn follow_once(
    client: &mut Client,
    layout: &Layout,
    name: &str,
    last: &mut Option<GatewayDocument>,
    out: &mpsc::Sender<GatewayDocument>,
    lost: &mut bool,
) -> Result<(), FleetError> {
    let (doc, at) = read(client, layout, name).await?;
    if *lost {
        tracing::info!(
            revision = doc.revision,
            "etcd: back; read the document whole"
        );
        *lost = false;
    }
    send(doc, last, out).await;
    let (from, to) = layout.watched();
    let mut stream = client
        .watch(
            from,
            Some(
                WatchOptions::new()
                    .with_range(to)
                    .with_start_revision(at + 1),
            ),
        )
        .await
        .map_err(FleetError::etcd("watching"))?;
    loop {
        let msg = stream
            .message()
            .await
            .map_err(FleetError::etcd("watching"))?;
        let Some(resp) = msg else {
            return Err(FleetError::Etcd {
                what: "watching",
                source: etcd_client::Error::WatchError("the watch stream ended".into()),
            });
        };
        if resp.canceled() {
            tracing::info!(
                compacted_to = resp.compact_revision(),
                reason = resp.cancel_reason(),
                "etcd: watch cancelled (compaction?); reading the document whole"
            );
            return Ok(());
        }
        if !resp.events().is_empty() {
            let (doc, _) = read(client, layout, name).await?;
            send(doc, last, out).await;
        }
    }
}

async fn send(
    doc: GatewayDocument,
    last: &mut Option<GatewayDocument>,
    out: &mpsc::Sender<GatewayDocument>,
) {
    if last.as_ref() != Some(&doc) {
        *last = Some(doc.clone());
        let _ = out.send(doc).await;
    }
}
