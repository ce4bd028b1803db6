//! Settling what a peer answered: the common case many at once (a report
//! of this node the peer stored as its only destination through it), a
//! report the peer refused on its own as malformed, and the audit entry of
//! a receipt.

use prost::Message;

use crate::audit;
use crate::identity::NodeId;
use crate::node::Core;
use crate::pb;
use crate::store::OutboxRow;

use super::DeliveryError;

/// One envelope of a batch, with what its receipt must name.
pub(super) struct Outgoing {
    pub(super) row: OutboxRow,
    pub(super) report_id: String,
    pub(super) digest: [u8; 32],
}

/// The audit entry of a peer's receipt for a report sent to it.
pub(super) fn receipt_entry(
    peer: &NodeId,
    subject: &str,
    outcome: &str,
    receipt: &pb::Receipt,
    signed: &pb::Signed,
    attempts: i64,
) -> audit::Entry {
    audit::Entry::new(
        "delivery.receipt",
        format!("node:{peer}"),
        subject,
        serde_json::json!({
            "destination": peer.as_str(),
            "outcome": outcome,
            "relayed_to": receipt.relayed_to,
            "reason_code": receipt.reason_code,
            "receipt_signature": hex::encode(&signed.signature),
            "attempts": attempts + 1,
        }),
    )
}

/// What `settle_stored` settled: indices into the batch (with the report
/// as it was), and every index it took care of (settled, or already gone).
pub(super) struct Settled {
    pub(super) settled: Vec<(usize, crate::store::ReportRow)>,
    pub(super) handled: std::collections::HashSet<usize>,
}

/// Settles, in `tx`, every item of the batch that is a report of this node
/// which the peer stored as its destination (and is its only destination
/// through that peer): dequeued, delivery finished with the receipt, status
/// `delivered`, one audit entry each — one statement per kind of row.
#[allow(clippy::too_many_arguments)]
pub(super) async fn settle_stored(
    core: &Core,
    tx: &mut crate::store::Tx,
    peer: &NodeId,
    items: &[Outgoing],
    results: &[pb::ForwardResult],
    opened: &[Option<pb::Receipt>],
    range: std::ops::Range<usize>,
    now: i64,
) -> Result<Settled, DeliveryError> {
    use std::collections::{HashMap, HashSet};
    let seqs: Vec<i64> = items[range.clone()]
        .iter()
        .map(|i| i.row.report_seq)
        .collect();
    let reports: HashMap<i64, crate::store::ReportRow> = tx
        .reports_by_seqs(&seqs)
        .await?
        .into_iter()
        .map(|r| (r.seq, r))
        .collect();
    let mut via: HashMap<i64, Vec<String>> = HashMap::new();
    for (seq, dest) in tx.destinations_via_many(&seqs, peer.as_str()).await? {
        via.entry(seq).or_default().push(dest);
    }
    let mut seen = HashSet::new();
    let candidates: Vec<usize> = range
        .filter(|&i| {
            let seq = items[i].row.report_seq;
            seen.insert(seq)
                && results[i].receipt.is_some()
                && opened[i]
                    .as_ref()
                    .is_some_and(|r| r.outcome == pb::ReceiptOutcome::Stored as i32)
                && reports
                    .get(&seq)
                    .is_some_and(|r| r.origin == core.me.as_str())
                && via
                    .get(&seq)
                    .is_some_and(|d| d.len() == 1 && d[0] == peer.as_str())
        })
        .collect();
    let mut out = Settled {
        settled: Vec::new(),
        handled: candidates.iter().copied().collect(),
    };
    if candidates.is_empty() {
        return Ok(out);
    }
    let ids: Vec<i64> = candidates.iter().map(|&i| items[i].row.id).collect();
    let still: HashSet<i64> = tx.dequeue_many(&ids).await?.into_iter().collect();
    let receipts: Vec<(usize, Vec<u8>)> = candidates
        .iter()
        .filter(|&&i| still.contains(&items[i].row.id))
        .map(|&i| {
            let signed = results[i].receipt.as_ref().map(|s| s.encode_to_vec());
            (i, signed.unwrap_or_default())
        })
        .collect();
    let finished: Vec<crate::store::FinishedDelivery> = receipts
        .iter()
        .map(|(i, bytes)| crate::store::FinishedDelivery {
            seq: items[*i].row.report_seq,
            destination: peer.as_str(),
            state: "delivered",
            receipt: bytes,
            reason: None,
        })
        .collect();
    tx.finish_deliveries(&finished, now).await?;
    let done: Vec<i64> = finished.iter().map(|f| f.seq).collect();
    tx.set_status_many(&done, "queued", "delivered", now)
        .await?;
    let entries: Vec<audit::Entry> = receipts
        .iter()
        .filter_map(|&(i, _)| {
            let (signed, receipt) = (results[i].receipt.as_ref()?, opened[i].as_ref()?);
            Some(receipt_entry(
                peer,
                &format!("{}/{}", core.me, items[i].report_id),
                "delivered",
                receipt,
                signed,
                items[i].row.attempts,
            ))
        })
        .collect();
    tx.audit_many(&entries, now).await?;
    for (i, _) in receipts {
        if let Some(row) = reports.get(&items[i].row.report_seq) {
            out.settled.push((i, row.clone()));
        }
    }
    Ok(out)
}

/// Marks a queued report the peer refused on its own as refused by it,
/// with the peer's reason, and takes it out of the queue (unless another
/// replica settled it meanwhile).
pub(super) async fn refuse_row(
    core: &Core,
    peer: &NodeId,
    reason: &str,
    row: &OutboxRow,
) -> Result<(), DeliveryError> {
    let now = Core::now_ms();
    let mut tx = core.store.begin().await?;
    if !tx.dequeue(row.id).await? {
        return Ok(());
    }
    tx.finish_delivery(
        row.report_seq,
        peer.as_str(),
        "refused",
        &[],
        Some(reason),
        now,
    )
    .await?;
    let current = tx.report_by_seq(row.report_seq).await?;
    if current.as_ref().is_some_and(|r| r.status == "queued") {
        tx.set_status(row.report_seq, "refused", now).await?;
    }
    if let Some(row) = &current {
        let event = crate::node::alerts::events::delivery_refused(row, peer.as_str(), "malformed");
        crate::node::alerts::raise_in(core, &mut tx, &event).await?;
    }
    let subject = current
        .map(|r| format!("{}/{}", r.origin, r.report_id))
        .unwrap_or_default();
    tx.audit(
        &audit::Entry::new(
            "delivery.refused",
            format!("node:{peer}"),
            subject,
            serde_json::json!({"destination": peer.as_str(), "reason": reason}),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    core.case_changed(row.report_seq);
    tracing::warn!(peer = %peer, "a report was refused by the peer as malformed");
    Ok(())
}
