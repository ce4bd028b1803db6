//! Amendments from a report's origin (`PushStatus.amendments`), directly
//! or through relays: each applied once at this node (history, correction,
//! a retraction's effect on the case worked here) and passed on to every
//! node this one gave the report to (`amend::record`).

use std::sync::Arc;

use prost::Message;

use crate::audit;
use crate::identity::NodeId;
use crate::node::amend::{history_status, record, withhold};
use crate::node::inbound::{self, Effects, Flow, Verdict};
use crate::node::{Core, NodeError, cases};
use crate::pb;
use crate::report::{CaseStatus, Direction};
use crate::store::Tx;
use crate::wire::{self, OpenedAmendment};

/// A `PushStatus` batch of amendments.
pub(super) struct Amendments(pub Arc<pb::PushStatusRequest>);

impl Flow for Amendments {
    type Opened = (OpenedAmendment, pb::AmendEnvelope);
    type Answer = Verdict;

    fn open(&self, core: &Core, sender: &NodeId, now: i64) -> Result<Vec<Self::Opened>, NodeError> {
        let amendments = &self.0.amendments;
        inbound::check_size("amendments", "amendments", amendments.len(), true)?;
        let directory = core.directory();
        amendments
            .iter()
            .map(|env| {
                let opened = wire::open_amendment(env, sender, &core.me, &directory, now)?;
                Ok((opened, env.clone()))
            })
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
        for (o, env) in chunk {
            verdicts.push(apply_one(core, tx, sender, o, env, now, effects).await?);
        }
        Ok(verdicts)
    }
}

/// Applies one amendment once.
async fn apply_one(
    core: &Core,
    tx: &mut Tx,
    sender: &NodeId,
    o: &OpenedAmendment,
    env: &pb::AmendEnvelope,
    now: i64,
    effects: &mut Effects,
) -> Result<Verdict, NodeError> {
    let a = &o.amendment;
    let actor = format!("node:{sender}");
    let subject = format!("{}/{}", a.origin, a.report_id);
    let row = tx.find_report(&a.origin, &a.report_id).await?;
    let refusal = match &row {
        None => Some((Verdict::NotFound, "unknown-report")),
        Some(r) if r.payload_digest != a.report_digest => {
            Some((Verdict::Refused, "digest-mismatch"))
        }
        Some(_) => None,
    };
    let (Some(row), None) = (row, refusal) else {
        let (verdict, reason) = refusal.unwrap_or((Verdict::NotFound, "unknown-report"));
        tx.audit(
            &audit::Entry::new(
                "amendment.refused",
                actor,
                subject,
                serde_json::json!({"reason_code": reason, "amendment_id": a.amendment_id}),
            ),
            now,
        )
        .await?;
        return Ok(verdict);
    };
    if tx
        .status_recorded(row.seq, &a.origin, &a.amendment_id)
        .await?
    {
        return Ok(Verdict::Accepted); // a repeat
    }
    // A retraction here before this node passed the report on (a relay,
    // or a hotline that handed the case over): the report is not passed on
    // at all, so no destination ever holds a live copy of it.
    if a.kind == pb::AmendmentKind::Retract as i32 {
        withhold(core, tx, &row, now).await?;
    }
    let passed_on = record(core, tx, &row, a, &o.signed, &env.hops, &actor, now).await?;
    effects.wake.extend(passed_on.iter().cloned());
    // The case worked here stops on a retraction, unless it is already
    // final or other hotlines reported the same content (it goes on for
    // them).
    let mut effect = "recorded";
    let retract = a.kind == pb::AmendmentKind::Retract as i32;
    let worked_here = row.relay == 0 && row.direction == Direction::Incoming.as_str();
    if retract && worked_here {
        if row.joined_to.is_some() {
            tx.set_status(row.seq, "retracted", now).await?;
            effect = "left the case it had joined";
        } else if !tx.joined(row.seq).await?.is_empty() {
            effect = "case goes on for the other origins";
        } else {
            let from = CaseStatus::parse(&row.status).ok();
            let final_ = matches!(
                from,
                Some(
                    CaseStatus::NotIllegal
                        | CaseStatus::Removed
                        | CaseStatus::Moved
                        | CaseStatus::Retracted
                ) | None
            );
            if let (Some(from), false) = (from, final_) {
                let why = format!("retracted by the origin: {}", a.reason);
                let next = cases::change_status(
                    core,
                    tx,
                    &row,
                    from,
                    CaseStatus::Retracted,
                    &why,
                    &actor,
                    now,
                    None,
                )
                .await?;
                effects.wake.extend(next);
                effect = "case retracted";
            } else {
                effect = "case already final";
            }
        }
    }
    tx.audit(
        &audit::Entry::new(
            "report.amended",
            actor,
            subject,
            serde_json::json!({
                "kind": history_status(a.kind),
                "amendment_id": a.amendment_id,
                "signature": hex::encode(&o.signed.signature),
                "relays": o.relays.iter().map(NodeId::as_str).collect::<Vec<_>>(),
                "passed_on": passed_on,
                "effect": effect,
            }),
        ),
        now,
    )
    .await?;
    tracing::info!(peer = %sender, origin = %a.origin, report_id = %a.report_id,
        kind = history_status(a.kind), effect, "amendment applied");
    effects.changed.push(row.seq);
    Ok(Verdict::Accepted)
}
