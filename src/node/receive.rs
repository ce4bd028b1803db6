//! Receiving from peers: envelopes (answered with signed receipts) and
//! status updates about reports this node sent. A batch that fails
//! authentication or identity checks is refused whole and only its refusal
//! is audited; an authenticated batch is stored in one transaction before
//! any receipt is returned.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;

use crate::audit;
use crate::crypto::signing::Purpose;
use crate::identity::NodeId;
use crate::node::{Core, NodeError};
use crate::pb;
use crate::report::wire::{self, OpenedReport, WireError};
use crate::report::{CaseStatus, Direction, InvalidInput};
use crate::store::{NewReport, Tx};

/// At most this many envelopes or status updates per call.
pub const MAX_BATCH: usize = 256;

/// gRPC codes carried per envelope in `ForwardResult.code`.
const OK: i32 = 0;
const ALREADY_EXISTS: i32 = 6;
const FAILED_PRECONDITION: i32 = 9;
const NOT_FOUND: i32 = 5;

pub async fn forward(
    core: &Arc<Core>,
    sender: &NodeId,
    req: pb::ForwardRequest,
) -> Result<pb::ForwardResponse, NodeError> {
    let actor = format!("node:{sender}");
    let now = Core::now_ms();
    // Up to ~2,300 signature checks per batch: off the async threads.
    let req = Arc::new(req);
    let opened = {
        let (core, sender, req) = (core.clone(), sender.clone(), req.clone());
        tokio::task::spawn_blocking(move || open_batch(&core, &sender, &req, now))
            .await
            .map_err(|_| NodeError::Internal("verification task failed"))?
    };
    let opened = match opened {
        Ok(o) => o,
        Err(e) => {
            let (code, message) = refusal_code(&e);
            core.audit_refusal(&actor, code, &message, &req.encode_to_vec())
                .await;
            tracing::warn!(peer = %sender, reason = code, "refused a forward batch");
            return Err(e);
        }
    };
    let mut tx = core.store.begin().await?;
    let mut results = Vec::with_capacity(opened.len());
    let mut changed = Vec::new();
    for (report, envelope) in opened.iter().zip(&req.envelopes) {
        results.push(store_one(core, &mut tx, sender, report, envelope, now, &mut changed).await?);
    }
    tx.commit().await?;
    for seq in changed {
        core.case_changed(seq);
    }
    crate::faults::crash_point("receiver-after-commit-before-reply");
    Ok(pb::ForwardResponse { results })
}

fn open_batch(
    core: &Core,
    sender: &NodeId,
    req: &pb::ForwardRequest,
    now: i64,
) -> Result<Vec<OpenedReport>, NodeError> {
    if req.envelopes.is_empty() || req.envelopes.len() > MAX_BATCH {
        return Err(InvalidInput::new(
            "batch-size",
            "envelopes",
            format!("1 to {MAX_BATCH} envelopes, got {}", req.envelopes.len()),
        )
        .into());
    }
    let directory = &core.directory();
    match directory.node(sender) {
        None => {
            return Err(NodeError::PermissionDenied(format!(
                "{sender} is not in the directory"
            )));
        }
        Some(n) if !n.active => {
            return Err(NodeError::PermissionDenied(format!(
                "{sender} is suspended"
            )));
        }
        Some(_) => {}
    }
    req.envelopes
        .iter()
        .map(|e| wire::open_envelope(e, sender, &core.me, directory, now).map_err(NodeError::from))
        .collect()
}

fn refusal_code(e: &NodeError) -> (&'static str, String) {
    let code = match e {
        NodeError::Invalid(i) => i.code,
        NodeError::PermissionDenied(_) => "permission-denied",
        NodeError::Wire(WireError::IdentityMismatch { .. }) => "identity-mismatch",
        NodeError::Wire(WireError::BadSignature(_)) => "bad-signature",
        NodeError::Wire(WireError::UnknownKey { .. }) => "unknown-key",
        NodeError::Wire(WireError::UnknownSigner(_)) => "unknown-signer",
        NodeError::Wire(WireError::SuspendedSigner(_)) => "suspended-signer",
        NodeError::Wire(WireError::NonCanonical(_)) => "non-canonical",
        NodeError::Wire(WireError::Malformed(_)) => "malformed",
        NodeError::Wire(WireError::BadHopChain(_)) => "bad-hop-chain",
        NodeError::Wire(WireError::TooManyHops) => "too-many-hops",
        NodeError::Wire(WireError::Missing(_)) => "missing-field",
        NodeError::Wire(WireError::Invalid(i)) => i.code,
        _ => "refused",
    };
    (code, e.to_string())
}

async fn store_one(
    core: &Core,
    tx: &mut Tx,
    sender: &NodeId,
    r: &OpenedReport,
    envelope: &pb::Envelope,
    now: i64,
    changed: &mut Vec<i64>,
) -> Result<pb::ForwardResult, NodeError> {
    let p = &r.payload;
    let subject = format!("{}/{}", r.origin, p.report_id);
    let actor = format!("node:{sender}");
    if r.origin == core.me || r.relays.contains(&core.me) {
        return refuse(
            core,
            tx,
            r,
            &actor,
            FAILED_PRECONDITION,
            "loop",
            "the report already passed through this node",
            now,
        )
        .await;
    }
    // Only the hotline(s) the origin chose, in the route it signed, take a
    // report over: a peer cannot pass it on to someone else.
    let chosen = p
        .route
        .as_ref()
        .is_some_and(|route| route.destinations.iter().any(|d| d == core.me.as_str()));
    if !chosen {
        return refuse(
            core,
            tx,
            r,
            &actor,
            FAILED_PRECONDITION,
            "not-a-destination",
            "the origin's signed route does not name this node",
            now,
        )
        .await;
    }
    // What this hotline's directory entry says it takes (its law): a
    // nationally-illegal report outside it is refused, never stored.
    if let Some(why) = outside_jurisdiction(core, p) {
        return refuse(
            core,
            tx,
            r,
            &actor,
            FAILED_PRECONDITION,
            "jurisdiction",
            &why,
            now,
        )
        .await;
    }
    if let Some(existing) = tx.find_report(r.origin.as_str(), &p.report_id).await? {
        if existing.payload_digest == r.digest {
            // An exact repeat (a retry after a lost reply): the original
            // receipt, no second case.
            tx.audit(
                &audit::Entry::new(
                    "report.repeat",
                    actor,
                    subject,
                    serde_json::json!({"payload_sha256": hex::encode(r.digest)}),
                ),
                now,
            )
            .await?;
            let receipt = existing
                .receipt
                .as_deref()
                .and_then(|b| pb::Signed::decode(b).ok());
            return Ok(pb::ForwardResult {
                code: OK,
                message: "already stored".into(),
                receipt,
            });
        }
        tracing::warn!(peer = %sender, origin = %r.origin, report_id = %p.report_id,
            "EQUIVOCATION: same report id, different content");
        return refuse(
            core,
            tx,
            r,
            &actor,
            ALREADY_EXISTS,
            "equivocation",
            "this origin already sent different content under this report id",
            now,
        )
        .await;
    }
    let skew = core.config.max_clock_skew.as_millis() as i64;
    let max_age = core.config.max_report_age.as_millis() as i64;
    if p.created_at_ms > now + skew {
        return refuse(
            core,
            tx,
            r,
            &actor,
            FAILED_PRECONDITION,
            "future",
            "created_at is in the future beyond the allowed clock skew",
            now,
        )
        .await;
    }
    if p.created_at_ms < now - max_age {
        let days = Duration::from_millis(max_age as u64).as_secs() / 86_400;
        return refuse(
            core,
            tx,
            r,
            &actor,
            FAILED_PRECONDITION,
            "stale",
            &format!("created_at is older than {days} days"),
            now,
        )
        .await;
    }
    let route_json = serde_json::to_string(&p.route.as_ref().map(
        |r| serde_json::json!({"kind": r.kind, "destinations": r.destinations, "reason": r.reason}),
    ))
    .unwrap_or_default();
    let country = p
        .hosting
        .as_ref()
        .map(|h| h.country.as_str())
        .filter(|c| !c.is_empty());
    let priority = if p.priority == pb::Priority::Urgent as i32 {
        "urgent"
    } else {
        "bulk"
    };
    let seq = tx
        .insert_report(&NewReport {
            report_id: &p.report_id,
            origin: r.origin.as_str(),
            direction: Direction::Incoming.as_str(),
            category: &p.category,
            priority,
            status: CaseStatus::Received.as_str(),
            hosting_country: country,
            route: &route_json,
            payload: &r.payload_bytes,
            payload_digest: &r.digest,
            envelope: &envelope.encode_to_vec(),
            received_from: Some(sender.as_str()),
            created_at_ms: p.created_at_ms,
            now_ms: now,
        })
        .await?;
    let receipt = wire::receipt(
        &core.key(),
        &core.me,
        &p.report_id,
        r.origin.as_str(),
        &r.digest,
        pb::ReceiptOutcome::Stored,
        "",
        "",
        now,
    );
    let receipt_bytes = receipt.encode_to_vec();
    tx.set_receipt(seq, &receipt_bytes).await?;
    changed.push(seq);
    tx.insert_status(
        seq,
        &uuid::Uuid::new_v4().to_string(),
        CaseStatus::Received.as_str(),
        "received from the federation",
        &actor,
        None,
        None,
        now,
    )
    .await?;
    tx.audit(
        &audit::Entry::new(
            "report.received",
            actor,
            subject,
            serde_json::json!({
                "category": p.category,
                "priority": priority,
                "urls": p.urls.len(),
                "payload_sha256": hex::encode(r.digest),
                "relays": r.relays.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
                "receipt_signature": hex::encode(&receipt.signature),
            }),
        ),
        now,
    )
    .await?;
    core.metrics
        .reports_received
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(peer = %sender, origin = %r.origin, report_id = %p.report_id, "report received");
    Ok(pb::ForwardResult {
        code: OK,
        message: "stored".into(),
        receipt: Some(receipt),
    })
}

/// Why this node may not take `p` over under its own directory entry
/// (`national_categories`), or `None`.
fn outside_jurisdiction(core: &Core, p: &pb::ReportPayload) -> Option<String> {
    let class = match crate::report::Classification::parse_or_baseline(&p.classification) {
        Ok(c) => c,
        Err(_) => return Some("unknown classification".into()),
    };
    let category = crate::report::Category::parse(&p.category).ok()?;
    let directory = core.directory();
    let me = directory.node(&core.me)?;
    let covered =
        class == crate::report::Classification::Baseline || me.national.contains(&category);
    (!covered)
        .then(|| format!("this hotline does not take {class} {category} (see its directory entry)"))
}

#[allow(clippy::too_many_arguments)]
async fn refuse(
    core: &Core,
    tx: &mut Tx,
    r: &OpenedReport,
    actor: &str,
    code: i32,
    reason_code: &'static str,
    reason: &str,
    now: i64,
) -> Result<pb::ForwardResult, NodeError> {
    let p = &r.payload;
    let receipt = wire::receipt(
        &core.key(),
        &core.me,
        &p.report_id,
        r.origin.as_str(),
        &r.digest,
        pb::ReceiptOutcome::Refused,
        reason_code,
        reason,
        now,
    );
    tx.audit(
        &audit::Entry::new(
            "report.refused",
            actor,
            format!("{}/{}", r.origin, p.report_id),
            serde_json::json!({
                "reason_code": reason_code,
                "reason": reason,
                "payload_sha256": hex::encode(r.digest),
                "receipt_signature": hex::encode(&receipt.signature),
            }),
        ),
        now,
    )
    .await?;
    tracing::warn!(origin = %r.origin, report_id = %p.report_id, reason = reason_code, "report refused");
    Ok(pb::ForwardResult {
        code,
        message: reason.to_owned(),
        receipt: Some(receipt),
    })
}

/// Status updates about reports this node sent, from the hotline working
/// the case.
pub async fn push_status(
    core: &Core,
    sender: &NodeId,
    req: &pb::PushStatusRequest,
) -> Result<pb::PushStatusResponse, NodeError> {
    let actor = format!("node:{sender}");
    let now = Core::now_ms();
    let opened = match open_updates(core, sender, req, now) {
        Ok(o) => o,
        Err(e) => {
            let (code, message) = refusal_code(&e);
            core.audit_refusal(&actor, code, &message, &req.encode_to_vec())
                .await;
            return Err(e);
        }
    };
    let mut tx = core.store.begin().await?;
    let mut codes = Vec::with_capacity(opened.len());
    let mut status_changed = Vec::new();
    for (update, signed) in opened.iter().zip(&req.updates) {
        let row = tx.find_report(core.me.as_str(), &update.report_id).await?;
        let refusal = match &row {
            None => Some((NOT_FOUND, "unknown-report")),
            Some(row) => {
                let is_destination = tx.is_destination(row.seq, sender.as_str()).await?;
                (row.direction != Direction::Outgoing.as_str() || !is_destination)
                    .then_some((FAILED_PRECONDITION, "not-a-destination"))
            }
        };
        let (Some(row), None) = (row, refusal) else {
            let (code, reason) = refusal.unwrap_or((NOT_FOUND, "unknown-report"));
            tx.audit(
                &audit::Entry::new(
                    "status.refused",
                    actor.clone(),
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
            codes.push(code);
            continue;
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
        if inserted {
            status_changed.push(row.seq);
            tx.set_status(row.seq, &update.status, now).await?;
            tx.audit(
                &audit::Entry::new(
                    "status.received",
                    actor.clone(),
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
        }
        codes.push(OK);
    }
    tx.commit().await?;
    for seq in status_changed {
        core.case_changed(seq);
    }
    Ok(pb::PushStatusResponse { codes })
}

fn open_updates(
    core: &Core,
    sender: &NodeId,
    req: &pb::PushStatusRequest,
    now: i64,
) -> Result<Vec<pb::StatusUpdate>, NodeError> {
    if req.updates.is_empty() || req.updates.len() > MAX_BATCH {
        return Err(InvalidInput::new(
            "batch-size",
            "updates",
            format!("1 to {MAX_BATCH} updates, got {}", req.updates.len()),
        )
        .into());
    }
    let mut out = Vec::with_capacity(req.updates.len());
    for s in &req.updates {
        let (signer, u): (NodeId, pb::StatusUpdate) =
            wire::open(s, Purpose::Status, "status", &core.directory(), now)?;
        if &signer != sender || u.node != sender.as_str() {
            return Err(WireError::IdentityMismatch {
                claimed: crate::report::validate::shown(&u.node),
                actual: sender.to_string(),
            }
            .into());
        }
        if u.origin != core.me.as_str() {
            return Err(InvalidInput::new(
                "not-ours",
                "origin",
                format!(
                    "status update for a report of {}",
                    crate::report::validate::shown(&u.origin)
                ),
            )
            .into());
        }
        CaseStatus::parse(&u.status)?;
        crate::report::validate::report_id(&u.report_id)?;
        crate::report::validate::report_id(&u.update_id).map_err(|mut e| {
            e.field = "update_id".into();
            e
        })?;
        crate::report::validate::single_line("reason", &u.reason, 4096)?;
        if u.update_id.is_empty() || u.update_id.len() > 64 || u.reason.len() > 4096 {
            return Err(InvalidInput::new(
                "bad-update",
                "update_id",
                "1-64 bytes; reason at most 4096",
            )
            .into());
        }
        out.push(u);
    }
    Ok(out)
}
