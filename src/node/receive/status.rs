//! Status updates straight from the hotline working a case this node sent
//! (`PushStatus.updates`): each signed by the sender, about a report whose
//! origin is this node and whose destination the sender is; recorded once
//! in the case history, with time to takedown counted.

use std::sync::Arc;

use prost::Message;

use crate::audit;
use crate::crypto::signing::Purpose;
use crate::identity::NodeId;
use crate::node::inbound::{self, Effects, Flow, Verdict};
use crate::node::{Core, NodeError};
use crate::pb;
use crate::report::validate::{self, shown};
use crate::report::{CaseStatus, Direction, InvalidInput};
use crate::store::Tx;
use crate::wire::{self, WireError};

/// A `PushStatus` batch of status updates.
pub(super) struct Updates(pub Arc<pb::PushStatusRequest>);

/// The sender is an active member of the directory (it may have been
/// suspended since its connection was admitted).
pub(super) fn active_sender(core: &Core, sender: &NodeId) -> Result<(), NodeError> {
    match core.directory().node(sender) {
        None => Err(NodeError::PermissionDenied(format!(
            "{sender} is not in the directory"
        ))),
        Some(n) if !n.active => Err(NodeError::PermissionDenied(format!(
            "{sender} is suspended"
        ))),
        Some(_) => Ok(()),
    }
}

impl Flow for Updates {
    type Opened = (pb::StatusUpdate, pb::Signed);
    type Answer = Verdict;

    fn open(&self, core: &Core, sender: &NodeId, now: i64) -> Result<Vec<Self::Opened>, NodeError> {
        let updates = &self.0.updates;
        inbound::check_size("updates", "updates", updates.len(), false)?;
        updates
            .iter()
            .map(|s| Ok((open_update(core, sender, s, now)?, s.clone())))
            .collect()
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
        for (update, signed) in chunk {
            verdicts.push(apply_one(core, tx, sender, update, signed, now, effects).await?);
        }
        Ok(verdicts)
    }
}

/// Opens one signed update: signed by the sender about itself, for a
/// report of this node, with a valid status, ids and reason.
fn open_update(
    core: &Core,
    sender: &NodeId,
    s: &pb::Signed,
    now: i64,
) -> Result<pb::StatusUpdate, NodeError> {
    let (signer, u): (NodeId, pb::StatusUpdate) =
        wire::open(s, Purpose::Status, "status", &core.directory(), now)?;
    if &signer != sender || u.node != sender.as_str() {
        return Err(WireError::IdentityMismatch {
            claimed: shown(&u.node),
            actual: sender.to_string(),
        }
        .into());
    }
    if u.origin != core.me.as_str() {
        return Err(InvalidInput::new(
            "not-ours",
            "origin",
            format!("status update for a report of {}", shown(&u.origin)),
        )
        .into());
    }
    CaseStatus::parse(&u.status)?;
    validate::report_id(&u.report_id)?;
    check_update_fields(&u)?;
    if u.update_id.is_empty() || u.update_id.len() > 64 || u.reason.len() > 4096 {
        return Err(InvalidInput::new(
            "bad-update",
            "update_id",
            "1-64 bytes; reason at most 4096",
        )
        .into());
    }
    Ok(u)
}

/// A status update's status, id and reason are well formed (wherever it
/// came from: straight from its signer, or back through relays).
pub(super) fn check_update_fields(u: &pb::StatusUpdate) -> Result<(), NodeError> {
    CaseStatus::parse(&u.status)?;
    validate::report_id(&u.update_id).map_err(|mut e| {
        e.field = "update_id".into();
        e
    })?;
    validate::single_line("reason", &u.reason, 4096)?;
    Ok(())
}

async fn apply_one(
    core: &Core,
    tx: &mut Tx,
    sender: &NodeId,
    update: &pb::StatusUpdate,
    signed: &pb::Signed,
    now: i64,
    effects: &mut Effects,
) -> Result<Verdict, NodeError> {
    let actor = format!("node:{sender}");
    let row = tx.find_report(core.me.as_str(), &update.report_id).await?;
    let refusal = match &row {
        None => Some((Verdict::NotFound, "unknown-report")),
        Some(row) => {
            let is_destination = tx.is_destination(row.seq, sender.as_str()).await?;
            (row.direction != Direction::Outgoing.as_str() || !is_destination)
                .then_some((Verdict::Refused, "not-a-destination"))
        }
    };
    let (Some(row), None) = (row, refusal) else {
        let (verdict, reason) = refusal.unwrap_or((Verdict::NotFound, "unknown-report"));
        tx.audit(
            &audit::Entry::new(
                "status.refused",
                actor,
                format!("{}/{}", core.me, update.report_id),
                serde_json::json!({
                    "reason_code": reason,
                    "update_id": update.update_id,
                    "sha256": hex::encode(wire::digest(&signed.payload)),
                }),
            ),
            now,
        )
        .await?;
        return Ok(verdict);
    };
    let inserted = tx
        .insert_status(
            row.seq,
            &update.update_id,
            &update.status,
            &update.reason,
            &actor,
            Some(sender.as_str()),
            Some(&signed.encode_to_vec()),
            update.at_ms,
        )
        .await?;
    if !inserted {
        return Ok(Verdict::Accepted); // a repeat
    }
    effects.changed.push(row.seq);
    // A report its origin retracted stays retracted here.
    if row.status != "retracted" {
        tx.set_status(row.seq, &update.status, now).await?;
    }
    if let Some(m) = crate::node::stats::milestone(&update.status) {
        core.metrics
            .takedown(m, sender.as_str(), update.at_ms - row.created_at_ms);
    }
    tx.audit(
        &audit::Entry::new(
            "status.received",
            actor,
            format!("{}/{}", row.origin, row.report_id),
            serde_json::json!({
                "status": update.status,
                "update_id": update.update_id,
                "signature": hex::encode(&signed.signature),
            }),
        ),
        now,
    )
    .await?;
    Ok(Verdict::Accepted)
}
