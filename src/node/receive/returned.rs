//! Receipts and status updates coming back through relays
//! (`PushStatus.returned`), each with one signed return hop per relay: at
//! the origin they settle its deliveries and join its case history, as if
//! they came straight from the hotline that signed them; at a relay they
//! are passed on towards the origin with the relay's return hop.

use std::sync::Arc;

use prost::Message;

use crate::audit;
use crate::identity::NodeId;
use crate::node::inbound::{self, Effects, Flow, Verdict};
use crate::node::{Core, NodeError, relay};
use crate::pb;
use crate::store::{ReportRow, Tx};
use crate::wire::stored::StoredPayload;
use crate::wire::{self, OpenedReturned, ReturnedItem};

/// A `PushStatus` batch of returned items.
pub(super) struct Returned(pub Arc<pb::PushStatusRequest>);

impl Flow for Returned {
    type Opened = (OpenedReturned, pb::Returned);
    type Answer = Verdict;

    fn open(&self, core: &Core, sender: &NodeId, now: i64) -> Result<Vec<Self::Opened>, NodeError> {
        let returned = &self.0.returned;
        inbound::check_size("returned", "items", returned.len(), true)?;
        let directory = core.directory();
        // Each item carries a return hop per relay: checked together.
        let opened = crate::crypto::signing::verify_batched(|| {
            returned
                .iter()
                .map(|ret| open_item(core, sender, ret, &directory, now))
                .collect::<Result<Vec<_>, NodeError>>()
        })?;
        Ok(opened.into_iter().zip(returned.iter().cloned()).collect())
    }

    fn bytes(&self) -> Vec<u8> {
        self.0.encode_to_vec()
    }

    async fn apply<'a>(
        &'a self,
        core: &'a Core,
        tx: &'a mut Tx,
        sender: &'a NodeId,
        chunk: &'a [Self::Opened],
        _offset: usize,
        now: i64,
        effects: &'a mut Effects,
    ) -> Result<Vec<Verdict>, NodeError> {
        let mut verdicts = Vec::with_capacity(chunk.len());
        for (item, ret) in chunk {
            verdicts.push(settle(core, tx, sender, item, ret, now, effects).await?);
        }
        Ok(verdicts)
    }
}

fn open_item(
    core: &Core,
    sender: &NodeId,
    ret: &pb::Returned,
    directory: &crate::directory::Directory,
    now: i64,
) -> Result<OpenedReturned, NodeError> {
    let o = wire::open_returned(ret, sender, &core.me, directory, now)?;
    if let ReturnedItem::Status(u) = &o.item {
        super::status::check_update_fields(u)?;
    }
    Ok(o)
}

/// Settles one returned item, and passes what is new on towards the
/// origin when this node is a relay.
async fn settle(
    core: &Core,
    tx: &mut Tx,
    sender: &NodeId,
    item: &OpenedReturned,
    ret: &pb::Returned,
    now: i64,
    effects: &mut Effects,
) -> Result<Verdict, NodeError> {
    let actor = format!("node:{sender}");
    let subject = format!("{}/{}", item.origin, item.report_id);
    let row = tx.find_report(&item.origin, &item.report_id).await?;
    let targets = match &row {
        Some(row) => targets(tx, sender, item, row).await?,
        None => Vec::new(),
    };
    let (Some(row), false) = (row, targets.is_empty()) else {
        let via: Vec<&str> = item.via.iter().map(NodeId::as_str).collect();
        let detail = serde_json::json!({
            "reason_code": "not-a-destination",
            "maker": item.maker.as_str(),
            "via": via,
        });
        refused(tx, &actor, &subject, detail, now).await?;
        return Ok(Verdict::Refused);
    };
    let signed = ret
        .item
        .as_ref()
        .map(|s| s.encode_to_vec())
        .unwrap_or_default();
    let fresh = match &item.item {
        ReturnedItem::Receipt(receipt) => {
            if !names_report(&receipt.report_digest, &row) {
                let detail = serde_json::json!({"reason_code": "receipt-mismatch", "maker": item.maker.as_str()});
                refused(tx, &actor, &subject, detail, now).await?;
                return Ok(Verdict::Refused);
            }
            let r = Settling {
                actor: &actor,
                subject: &subject,
                item,
                signed: &signed,
                signature: ret_signature(ret),
            };
            settle_receipt(core, tx, &row, receipt, &targets, &r, now).await?
        }
        ReturnedItem::Status(u) => {
            let r = Settling {
                actor: &actor,
                subject: &subject,
                item,
                signed: &signed,
                signature: ret_signature(ret),
            };
            record_status(core, tx, &row, u, &r, now).await?
        }
    };
    // A relay passes what is new on towards the origin, through the node
    // it received the report from.
    if fresh && row.origin != core.me.as_str() {
        relay::pass_back(core, tx, &row, ret, sender.as_str(), now).await?;
        if let Some(prev) = &row.received_from {
            effects.wake.push(prev.clone());
        }
    }
    if fresh {
        effects.changed.push(row.seq);
    }
    Ok(Verdict::Accepted)
}

fn ret_signature(ret: &pb::Returned) -> String {
    hex::encode(
        ret.item
            .as_ref()
            .map(|s| s.signature.clone())
            .unwrap_or_default(),
    )
}

async fn refused(
    tx: &mut Tx,
    actor: &str,
    subject: &str,
    detail: serde_json::Value,
    now: i64,
) -> Result<(), NodeError> {
    tx.audit(
        &audit::Entry::new("returned.refused", actor, subject, detail),
        now,
    )
    .await?;
    Ok(())
}

/// The deliveries of `row` this item settles: the maker's own; or, when
/// the first node on the way back holds the case and handed it over to the
/// maker, a new delivery to the maker; or — for a refusal by a node on the
/// way (a relay, or a loop back to a node already passed) — every delivery
/// this node handed to the sender.
async fn targets(
    tx: &mut Tx,
    sender: &NodeId,
    item: &OpenedReturned,
    row: &ReportRow,
) -> Result<Vec<String>, NodeError> {
    if tx
        .delivery_state(row.seq, item.maker.as_str())
        .await?
        .is_some()
    {
        return Ok(vec![item.maker.to_string()]);
    }
    if let Some(by) = item.via.first().filter(|first| *first != &item.maker)
        && tx.delivery_state(row.seq, by.as_str()).await?.is_some()
    {
        tx.insert_delivery(
            row.seq,
            item.maker.as_str(),
            Some(sender.as_str()),
            Some(by.as_str()),
        )
        .await?;
        return Ok(vec![item.maker.to_string()]);
    }
    if let ReturnedItem::Receipt(receipt) = &item.item
        && receipt.outcome == pb::ReceiptOutcome::Refused as i32
    {
        return Ok(tx.destinations_via(row.seq, sender.as_str()).await?);
    }
    Ok(Vec::new())
}

/// What every settled item's audit entry names.
struct Settling<'a> {
    actor: &'a str,
    subject: &'a str,
    item: &'a OpenedReturned,
    signed: &'a [u8],
    signature: String,
}

/// A receipt settles each target delivery still queued: delivered, or
/// refused with the maker's reason. Returns whether any was.
async fn settle_receipt(
    core: &Core,
    tx: &mut Tx,
    row: &ReportRow,
    receipt: &pb::Receipt,
    targets: &[String],
    s: &Settling<'_>,
    now: i64,
) -> Result<bool, NodeError> {
    let via: Vec<&str> = s.item.via.iter().map(NodeId::as_str).collect();
    let stored = receipt.outcome == pb::ReceiptOutcome::Stored as i32;
    let outcome = if stored { "delivered" } else { "refused" };
    let mut settled = Vec::new();
    for dest in targets {
        if tx.delivery_state(row.seq, dest).await?.as_deref() != Some("queued") {
            continue;
        }
        let reason = (!stored).then(|| {
            let why = format!("{}: {}", receipt.reason_code, receipt.reason);
            if dest == s.item.maker.as_str() {
                why
            } else {
                format!("{} refused it on the way: {why}", s.item.maker)
            }
        });
        tx.finish_delivery(row.seq, dest, outcome, s.signed, reason.as_deref(), now)
            .await?;
        if stored && row.origin == core.me.as_str() {
            core.metrics
                .takedown("receipt", dest, now - row.created_at_ms);
        }
        tx.set_delivery_via(row.seq, dest, &via.join(",")).await?;
        settled.push(dest.clone());
    }
    if settled.is_empty() {
        return Ok(false);
    }
    if row.status == "queued" && row.origin == core.me.as_str() {
        tx.set_status(row.seq, outcome, now).await?;
    }
    tx.audit(
        &audit::Entry::new(
            "delivery.receipt",
            s.actor,
            s.subject,
            serde_json::json!({
                "destinations": settled,
                "signer": s.item.maker.as_str(),
                "outcome": outcome,
                "reason_code": receipt.reason_code,
                "receipt_signature": s.signature,
                "via": via,
            }),
        ),
        now,
    )
    .await?;
    Ok(true)
}

/// A status update joins the case history once. Returns whether it was
/// new.
async fn record_status(
    core: &Core,
    tx: &mut Tx,
    row: &ReportRow,
    u: &pb::StatusUpdate,
    s: &Settling<'_>,
    now: i64,
) -> Result<bool, NodeError> {
    let inserted = tx
        .insert_status(
            row.seq,
            &u.update_id,
            &u.status,
            &u.reason,
            s.actor,
            Some(s.item.maker.as_str()),
            Some(s.signed),
            u.at_ms,
        )
        .await?;
    if !inserted {
        return Ok(false);
    }
    let ours = row.origin == core.me.as_str();
    if ours && let Some(m) = crate::node::stats::milestone(&u.status) {
        core.metrics
            .takedown(m, s.item.maker.as_str(), u.at_ms - row.created_at_ms);
    }
    if ours && row.status != "retracted" {
        tx.set_status(row.seq, &u.status, now).await?;
    }
    let via: Vec<&str> = s.item.via.iter().map(NodeId::as_str).collect();
    tx.audit(
        &audit::Entry::new(
            "status.received",
            s.actor,
            s.subject,
            serde_json::json!({
                "status": u.status,
                "update_id": u.update_id,
                "signer": s.item.maker.as_str(),
                "signature": s.signature,
                "via": via,
            }),
        ),
        now,
    )
    .await?;
    Ok(true)
}

/// Whether a receipt's digest names the stored report: its signed bytes,
/// or the previous protocol's copy of them this node (its origin) sent a
/// node of protocol 1 (`wire::compat`).
fn names_report(digest: &[u8], row: &ReportRow) -> bool {
    digest == row.payload_digest.as_slice()
        || crate::wire::compat::previous_digest(row.payload()).is_some_and(|d| d == digest)
}
