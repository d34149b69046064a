//! `wgbpf push`: a revision of the fleet written in one transaction,
//! guarded by the previous revision so that two pushes racing cannot
//! interleave (the second is refused, nothing of it written).

use std::collections::BTreeMap;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};

use super::{document::Part, layout::Layout, FleetError};

/// The whole fleet as one revision holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fleet {
    /// `P/revision` (0: nothing pushed yet).
    pub revision: u64,
    /// The etcd revision `P/revision` was last written at (0: absent); the
    /// next push is made against it.
    pub revision_written_at: i64,
    /// `P/revision` holds something that is not a revision number (written
    /// by hand): why. `fleet status` shows it; a push refuses to number
    /// over it.
    pub unreadable_revision: Option<String>,
    pub shared: Option<Part>,
    pub gateways: BTreeMap<String, Part>,
}

/// What a push writes: the shared part and every gateway's own part. A
/// gateway of the store missing here is removed from the fleet.
#[derive(Debug, Clone, Default)]
pub struct Revision {
    pub shared: Option<Part>,
    pub gateways: BTreeMap<String, Part>,
}

/// A stored part as text. One that is not UTF-8 (written by hand) is read
/// lossily: here it is only compared with what replaces it, so it must not
/// stop the push that repairs it, nor `fleet status`. (Gateways refuse it:
/// [`super::follow::read`].)
fn text(kv: &etcd_client::KeyValue) -> String {
    String::from_utf8_lossy(kv.value()).into_owned()
}

/// At most 40 characters of a value from the store, for an error message.
pub(super) fn quoted(value: &[u8]) -> String {
    let t = String::from_utf8_lossy(value);
    match t.char_indices().nth(40) {
        Some((i, _)) => format!("`{}`… ({} bytes)", &t[..i], value.len()),
        None => format!("`{t}`"),
    }
}

/// Parses `P/revision`'s value.
pub fn revision_number(kv: &etcd_client::KeyValue) -> Result<u64, FleetError> {
    kv.value_str()
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .ok_or_else(|| FleetError::BadValue {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            message: format!("{} is not a revision number", quoted(kv.value())),
        })
}

/// Reads the fleet in one transaction (one consistent revision).
pub async fn read(client: &mut Client, layout: &Layout) -> Result<Fleet, FleetError> {
    let resp = client
        .txn(Txn::new().and_then([
            TxnOp::get(layout.revision(), None),
            TxnOp::get(layout.shared(), None),
            TxnOp::get(layout.gateways(), Some(GetOptions::new().with_prefix())),
        ]))
        .await
        .map_err(FleetError::etcd("reading the fleet"))?;
    let mut gets = resp.op_responses().into_iter().filter_map(|r| match r {
        TxnOpResponse::Get(g) => Some(g),
        _ => None,
    });
    let (Some(rev), Some(shared), Some(gws)) = (gets.next(), gets.next(), gets.next()) else {
        return Err(FleetError::BadValue {
            key: layout.prefix().into(),
            message: "the store answered the read with fewer results than asked".into(),
        });
    };
    let mut fleet = Fleet::default();
    if let Some(kv) = rev.kvs().first() {
        fleet.revision_written_at = kv.mod_revision();
        match revision_number(kv) {
            Ok(r) => fleet.revision = r,
            Err(e) => fleet.unreadable_revision = Some(e.to_string()),
        }
    }
    if let Some(kv) = shared.kvs().first() {
        fleet.shared = Some(Part {
            name: layout.shared(),
            text: text(kv),
        });
    }
    for kv in gws.kvs() {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let name = key[layout.gateways().len()..].to_string();
        fleet.gateways.insert(
            name,
            Part {
                name: key,
                text: text(kv),
            },
        );
    }
    Ok(fleet)
}

/// Writes `new` as the revision after `base` (read by [`read`]): one
/// transaction, applied only if `P/revision` is still as `base` read it.
/// Returns the new fleet revision.
pub async fn write(
    client: &mut Client,
    layout: &Layout,
    base: &Fleet,
    new: &Revision,
) -> Result<u64, FleetError> {
    if let Some(why) = &base.unreadable_revision {
        // Numbering from 1 again would make every gateway refuse the push
        // as older than what it enforces.
        return Err(FleetError::BadValue {
            key: layout.revision(),
            message: format!(
                "{why}: put the last revision pushed back there (the gateways' \
                 reports in `wgbpf fleet status` say which) and push again"
            ),
        });
    }
    let next = base.revision + 1;
    let guard = if base.revision_written_at == 0 {
        Compare::version(layout.revision(), CompareOp::Equal, 0)
    } else {
        Compare::mod_revision(
            layout.revision(),
            CompareOp::Equal,
            base.revision_written_at,
        )
    };
    let mut ops = vec![TxnOp::put(layout.revision(), next.to_string(), None)];
    match &new.shared {
        Some(s) => ops.push(TxnOp::put(layout.shared(), s.text.clone(), None)),
        None => ops.push(TxnOp::delete(layout.shared(), None)),
    }
    for (name, part) in &new.gateways {
        ops.push(TxnOp::put(layout.gateway(name), part.text.clone(), None));
    }
    for name in base.gateways.keys() {
        if !new.gateways.contains_key(name) {
            ops.push(TxnOp::delete(layout.gateway(name), None));
        }
    }
    let resp = client
        .txn(
            Txn::new()
                .when([guard])
                .and_then(ops)
                .or_else([TxnOp::get(layout.revision(), None)]),
        )
        .await
        .map_err(FleetError::etcd("writing the revision"))?;
    if resp.succeeded() {
        return Ok(next);
    }
    let found = resp
        .op_responses()
        .into_iter()
        .find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(revision_number),
            _ => None,
        })
        .transpose()?
        .unwrap_or(0);
    Err(FleetError::Raced {
        expected: base.revision,
        found,
    })
}
