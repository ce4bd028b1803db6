//! Retractions and corrections. The origin signs an amendment of a report
//! it sent; it travels wherever the report went (through the same relays
//! and handoffs, each adding a signed hop) and is applied once at every
//! node that has the report: a retraction stops work on the case, a
//! correction changes its category, hashes or notes. A report not yet sent
//! when it is retracted is not sent at all.

use prost::Message;

use crate::audit;
use crate::identity::PeerIdentity;
use crate::node::cases::{self, CaseView};
use crate::node::{Core, NodeError};
use crate::pb;
use crate::report::{Category, InvalidInput, MediaHash};
use crate::store::{NewOutbox, OUTBOX_AMENDMENT, ReportRow, Tx};
use crate::wire;

/// What the origin changes.
#[derive(Debug, Clone)]
pub enum Change {
    Retract,
    Correct {
        category: String,
        hashes: Vec<MediaHash>,
        notes: String,
    },
}

impl Change {
    fn kind(&self) -> pb::AmendmentKind {
        match self {
            Change::Retract => pb::AmendmentKind::Retract,
            Change::Correct { .. } => pb::AmendmentKind::Correct,
        }
    }
}

pub(crate) fn history_status(kind: i32) -> &'static str {
    if kind == pb::AmendmentKind::Retract as i32 {
        "retracted"
    } else {
        "corrected"
    }
}

/// The origin retracts or corrects a report it sent. Refusals are audited.
pub async fn amend(
    core: &Core,
    operator: &PeerIdentity,
    id: &str,
    change: Change,
    reason: &str,
) -> Result<CaseView, NodeError> {
    let result = apply(core, operator, id, &change, reason).await;
    let kind = change.kind().as_str_name().as_bytes();
    let mut fields: Vec<&[u8]> = vec![kind, id.as_bytes(), reason.as_bytes()];
    let hashes: Vec<String>;
    if let Change::Correct {
        category,
        hashes: h,
        notes,
    } = &change
    {
        hashes = h
            .iter()
            .map(|h| format!("{}:{}", h.algorithm, h.value))
            .collect();
        fields.extend([category.as_bytes(), notes.as_bytes()]);
        fields.extend(hashes.iter().map(|h| h.as_bytes()));
    }
    core.audit_if_refused(operator, "invalid-amendment", &fields, result)
        .await
}

async fn apply(
    core: &Core,
    operator: &PeerIdentity,
    id: &str,
    change: &Change,
    reason: &str,
) -> Result<CaseView, NodeError> {
    let actor = operator.to_string();
    let row = amended_report(core, id, reason).await?;
    let a = amendment(core, &row, change, reason)?;
    let signed = wire::amendment(&core.key(), &core.me, &a);
    let now = a.at_ms;
    let mut tx = core.store.begin().await?;
    // Status updates from the receivers change the row all the time: read
    // it again inside the transaction; only a retraction meanwhile stops
    // this one.
    let row = tx
        .report_by_seq(row.seq)
        .await?
        .ok_or(NodeError::Internal("a report vanished"))?;
    if row.status == "retracted" {
        return Err(NodeError::FailedPrecondition(format!(
            "report {id} is already retracted"
        )));
    }
    let retract = a.kind == pb::AmendmentKind::Retract as i32;
    // Not yet sent: not sent at all (before the amendment is queued, so
    // it goes only where the report went or is going).
    let withheld = if retract {
        // The origin's own view of the report.
        tx.set_status(row.seq, "retracted", now).await?;
        withhold(core, &mut tx, &row, now).await?
    } else {
        Vec::new()
    };
    let wake = record(core, &mut tx, &row, &a, &signed, &[], &actor, now).await?;
    let sent_to: Vec<&String> = wake.iter().filter(|h| !withheld.contains(h)).collect();
    tx.audit(
        &audit::Entry::new(
            if retract {
                "report.retracted"
            } else {
                "report.corrected"
            },
            actor,
            format!("{}/{}", row.origin, row.report_id),
            serde_json::json!({
                "amendment_id": a.amendment_id,
                "reason": reason,
                "category": a.category,
                "hashes": a.hashes.len(),
                "notes_changed": !a.notes.is_empty(),
                "signature": hex::encode(&signed.signature),
                "sent_to": sent_to,
                "withheld_from": withheld,
            }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    core.case_changed(row.seq);
    for peer in &wake {
        core.wake(peer);
    }
    cases::view_by_seq(core, row.seq).await
}

/// The report to amend: one this node sent as its origin (not one it only
/// relays), not already retracted; with a reason.
async fn amended_report(core: &Core, id: &str, reason: &str) -> Result<ReportRow, NodeError> {
    crate::report::validate::single_line("reason", reason, 1024)?;
    if reason.trim().is_empty() {
        return Err(InvalidInput::new("missing-reason", "reason", "say why").into());
    }
    let row = cases::find(core, id).await?;
    if row.origin != core.me.as_str() || row.relay == 1 {
        return Err(NodeError::FailedPrecondition(format!(
            "only the origin ({}) can retract or correct report {id}",
            row.origin
        )));
    }
    if row.status == "retracted" {
        return Err(NodeError::FailedPrecondition(format!(
            "report {id} is already retracted"
        )));
    }
    Ok(row)
}

/// The amendment to sign: a retraction, or a correction of the category,
/// hashes or notes (at least one, each valid).
fn amendment(
    core: &Core,
    row: &ReportRow,
    change: &Change,
    reason: &str,
) -> Result<pb::Amendment, NodeError> {
    let mut a = pb::Amendment {
        amendment_id: uuid::Uuid::now_v7().to_string(),
        report_id: row.report_id.clone(),
        origin: core.me.to_string(),
        report_digest: row.payload_digest.clone(),
        kind: change.kind() as i32,
        reason: reason.to_owned(),
        at_ms: Core::now_ms(),
        ..Default::default()
    };
    let Change::Correct {
        category,
        hashes,
        notes,
    } = change
    else {
        return Ok(a);
    };
    if category.is_empty() && hashes.is_empty() && notes.is_empty() {
        return Err(InvalidInput::new(
            "empty-correction",
            "category",
            "give a new category, hashes or notes",
        )
        .into());
    }
    if !category.is_empty() {
        Category::parse(category).map_err(|mut e| {
            e.field = "category".into();
            e
        })?;
    }
    crate::report::validate::peer_fields(notes, hashes)?;
    a.category = category.clone();
    a.notes = notes.clone();
    a.hashes = hashes
        .iter()
        .map(|h| pb::MediaHash {
            algorithm: h.algorithm.clone(),
            value: h.value.clone(),
        })
        .collect();
    Ok(a)
}

/// A report retracted before it was sent is not sent at all: its queued
/// envelopes are taken out of the outbox and their deliveries refused.
/// Returns the next hops it was withheld from.
pub(crate) async fn withhold(
    core: &Core,
    tx: &mut Tx,
    row: &ReportRow,
    now: i64,
) -> Result<Vec<String>, NodeError> {
    let why = "retracted by the origin before delivery";
    let mut withheld = Vec::new();
    for (dest, hop, state) in tx.delivery_routes(row.seq).await? {
        if state != "queued" {
            continue;
        }
        if let Some(outbox) = tx.queued_report(row.seq, &hop).await? {
            // An envelope being sent right now may reach the peer whatever
            // happens here: it is left to its delivery, and the retraction
            // follows it there.
            if core.store.is_claimed(outbox, now).await? {
                continue;
            }
            tx.dequeue(outbox).await?;
            withheld.push(hop.clone());
        } else if !withheld.contains(&hop) {
            continue;
        }
        tx.finish_delivery(row.seq, &dest, "refused", &[], Some(why), now)
            .await?;
    }
    Ok(withheld)
}

/// Records an amendment at this node (history, correction, and — when
/// this node holds the case — its effect), and queues it on to every node
/// this one gave the report to, with this node's hop when it is not the
/// origin. Returns the nodes it was queued for.
///
/// A correction is shown only if it was signed after the one shown now:
/// corrections apply by their signed time, whatever order they arrive in.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn record(
    core: &Core,
    tx: &mut Tx,
    row: &ReportRow,
    a: &pb::Amendment,
    signed: &pb::Signed,
    hops: &[pb::Signed],
    actor: &str,
    now: i64,
) -> Result<Vec<String>, NodeError> {
    let signed_bytes = signed.encode_to_vec();
    tx.insert_status(
        row.seq,
        &a.amendment_id,
        history_status(a.kind),
        &a.reason,
        actor,
        Some(&a.origin),
        Some(&signed_bytes),
        a.at_ms,
    )
    .await?;
    if a.kind == pb::AmendmentKind::Correct as i32 && supersedes(row, a) {
        let category = if a.category.is_empty() {
            row.category.as_str()
        } else {
            a.category.as_str()
        };
        tx.set_correction(row.seq, category, &signed_bytes, now)
            .await?;
    }
    let mut next: Vec<String> = Vec::new();
    for (_, hop, state) in tx.delivery_routes(row.seq).await? {
        if state != "refused" && !next.contains(&hop) {
            next.push(hop);
        }
    }
    let digest = wire::digest(&signed.payload);
    for hop in &next {
        let mut env = pb::AmendEnvelope {
            amendment: Some(signed.clone()),
            hops: hops.to_vec(),
        };
        if row.origin != core.me.as_str() {
            // The node this one got the amendment from: the last signer of
            // what arrived (the origin itself when no hop came with it).
            let prev = hops
                .last()
                .map(|h| h.signer.clone())
                .unwrap_or_else(|| row.origin.clone());
            env.hops.push(wire::hop(
                &core.key(),
                &core.me,
                &row.report_id,
                &row.origin,
                &digest,
                &prev,
                hop,
                None,
                now,
            ));
        }
        let body = env.encode_to_vec();
        tx.enqueue(
            NewOutbox {
                peer: hop,
                kind: "status",
                urgent: row.priority == "urgent",
                report_seq: row.seq,
                body: &body,
                returned: OUTBOX_AMENDMENT,
            },
            now,
        )
        .await?;
    }
    Ok(next)
}

/// Whether correction `a` was signed after the one `row` shows (ties by
/// id, so every node shows the same one).
fn supersedes(row: &ReportRow, a: &pb::Amendment) -> bool {
    crate::wire::stored::applied_correction(row).is_none_or(|shown| {
        (a.at_ms, a.amendment_id.as_str()) > (shown.at_ms, shown.amendment_id.as_str())
    })
}
