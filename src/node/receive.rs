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
use crate::node::{Core, NodeError, background};
use crate::pb;
use crate::report::content;
use crate::report::stored::payload_column;
use crate::report::wire::{self, OpenedReport, WireError};
use crate::report::{CaseStatus, Direction, InvalidInput};
use crate::store::{NewReport, Tx};

/// At most this many envelopes or status updates per call.
pub const MAX_BATCH: usize = 256;

/// Bulk work commits every this many reports, so urgent work waits for at
/// most one such short transaction (one statement per kind of row for the
/// chunk: a few milliseconds).
pub const BULK_CHUNK: usize = 64;

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
    // Up to ~2,300 signature checks per batch: off the async threads, at a
    // lower priority unless the sender's urgent lane sent it (a hint only:
    // each envelope's signed priority is what counts below).
    let req = Arc::new(req);
    let opened = {
        let (core, sender, req) = (core.clone(), sender.clone(), req.clone());
        background::run_for(req.urgent, move || open_batch(&core, &sender, &req, now))
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
    // A bulk batch is stored in short transactions that let urgent work
    // take the writer in between; the receipts go back once all committed
    // (a failure part-way makes the sender retry the batch, and what was
    // stored is then answered as an exact repeat).
    let urgent = opened
        .iter()
        .any(|r| r.payload.priority == pb::Priority::Urgent as i32);
    let mut results = Vec::with_capacity(opened.len());
    let mut changed = Vec::new();
    let mut wake = Vec::new();
    let items: Vec<_> = opened.iter().zip(&req.envelopes).collect();
    let _urgent = urgent.then(|| core.urgent.enter());
    let chunk_size = if urgent {
        MAX_BATCH
    } else {
        core.urgent.bulk_chunk(BULK_CHUNK)
    };
    for chunk in items.chunks(chunk_size) {
        let mut yielded = false;
        loop {
            let mut tx = if urgent {
                core.store.begin().await?
            } else {
                core.begin_bulk().await?
            };
            let (mut c, mut w) = (Vec::new(), Vec::new());
            let stored = store_chunk(core, &mut tx, sender, chunk, now, &mut c, &mut w).await?;
            // Urgent work arrived while this bulk chunk was written: it is
            // undone and written again after the urgent work.
            if !urgent && !yielded && core.bulk_yields() {
                tx.rollback().await?;
                yielded = true;
                continue;
            }
            tx.commit().await?;
            results.extend(stored);
            changed.extend(c);
            wake.extend(w);
            break;
        }
    }
    for seq in changed {
        core.case_changed(seq);
    }
    // Onward deliveries, once committed.
    wake.sort();
    wake.dedup();
    for peer in wake {
        if urgent {
            // Urgent reports relayed onward: bulk work here waits for them.
            core.urgent.hold(&peer);
        }
        core.wake(&peer);
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
    // The envelopes' signatures are checked together, in one batch.
    crate::crypto::signing::verify_batched(|| {
        req.envelopes
            .iter()
            .map(|e| {
                wire::open_envelope(e, sender, &core.me, directory, now).map_err(NodeError::from)
            })
            .collect()
    })
}

pub(crate) fn refusal_code(e: &NodeError) -> (&'static str, String) {
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

/// A new report that needs nothing but storing as a case here: one of
/// many written together.
struct Plain<'a> {
    r: &'a OpenedReport,
    envelope: &'a pb::Envelope,
    keys: Vec<String>,
    why: String,
    receipt: pb::Signed,
}

/// Stores a chunk of opened envelopes in `tx`. New reports that simply
/// become cases here (the common case) are written together, one statement
/// per kind of row; anything else — a repeat, a refusal, a relay, a join —
/// goes through `store_one`, after what came before it is written, in the
/// order received.
#[allow(clippy::too_many_arguments)]
async fn store_chunk(
    core: &Core,
    tx: &mut Tx,
    sender: &NodeId,
    chunk: &[(&OpenedReport, &pb::Envelope)],
    now: i64,
    changed: &mut Vec<i64>,
    wake: &mut Vec<String>,
) -> Result<Vec<pb::ForwardResult>, NodeError> {
    use std::collections::HashSet;
    // What the database already holds about this chunk: two statements.
    let ids: Vec<(&str, &str)> = chunk
        .iter()
        .map(|(r, _)| (r.origin.as_str(), r.payload.report_id.as_str()))
        .collect();
    let known: HashSet<(String, String)> = tx
        .find_reports(&ids)
        .await?
        .into_iter()
        .map(|row| (row.origin, row.report_id))
        .collect();
    let keys: Vec<(Vec<String>, bool)> = chunk
        .iter()
        .map(|(r, _)| {
            let (k, pdq) = content::keys(
                &r.payload.urls,
                r.payload
                    .hashes
                    .iter()
                    .map(|h| (h.algorithm.as_str(), h.value.as_str())),
            );
            (k, !pdq.is_empty())
        })
        .collect();
    let all_keys: Vec<&str> = keys
        .iter()
        .flat_map(|(k, _)| k.iter().map(String::as_str))
        .collect();
    let open: HashSet<String> = if all_keys.is_empty() {
        HashSet::new()
    } else {
        tx.open_cases_with_keys(&all_keys)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    };
    // Which reports are plain, deciding as `store_one` would.
    let skew = core.config.max_clock_skew.as_millis() as i64;
    let max_age = core.config.max_report_age.as_millis() as i64;
    let mut seen_ids: HashSet<(&str, &str)> = HashSet::new();
    let mut seen_keys: HashSet<&str> = HashSet::new();
    let mut plain: Vec<Option<(Vec<String>, String)>> = Vec::with_capacity(chunk.len());
    for ((r, _), (k, has_pdq)) in chunk.iter().zip(&keys) {
        let p = &r.payload;
        let id = (r.origin.as_str(), p.report_id.as_str());
        let fresh_id = seen_ids.insert(id);
        let shares_key = k
            .iter()
            .any(|key| open.contains(key) || seen_keys.contains(key.as_str()));
        seen_keys.extend(k.iter().map(String::as_str));
        let is_plain = fresh_id
            && !shares_key
            && !has_pdq
            && r.origin != core.me
            && !r.relays.contains(&core.me)
            && !known.contains(&(id.0.to_owned(), id.1.to_owned()))
            && p.created_at_ms <= now + skew
            && p.created_at_ms >= now - max_age
            && matches!(takes_over(core, r), Ok(role) if role.case && role.relay_for.is_empty())
            && outside_jurisdiction(core, p).is_none();
        plain.push(is_plain.then(|| {
            let why = match r.handoffs.last().filter(|_| r.handed_off_here) {
                Some((by, _, _)) => format!("handed over by {by}"),
                None => "received from the federation".to_owned(),
            };
            (k.clone(), why)
        }));
    }
    // Their receipts, signed together with one signature (each with its
    // own inclusion proof), off the async threads.
    let bodies: Vec<pb::Receipt> = chunk
        .iter()
        .zip(&plain)
        .filter(|(_, p)| p.is_some())
        .map(|((r, _), _)| {
            wire::receipt_body(
                &core.me,
                &r.payload.report_id,
                r.origin.as_str(),
                &r.digest,
                pb::ReceiptOutcome::Stored,
                "",
                "",
                &[],
                now,
            )
        })
        .collect();
    let mut receipts = if bodies.is_empty() {
        Vec::new()
    } else {
        let (key, me) = (core.key(), core.me.clone());
        tokio::task::spawn_blocking(move || wire::sign_receipts(&key, &me, &bodies, now))
            .await
            .map_err(|_| NodeError::Internal("signing task failed"))?
    }
    .into_iter();
    let mut results = Vec::with_capacity(chunk.len());
    let mut pending: Vec<Plain> = Vec::new();
    for ((r, envelope), plain) in chunk.iter().zip(plain) {
        match plain {
            Some((keys, why)) => pending.push(Plain {
                r,
                envelope,
                keys,
                why,
                receipt: receipts
                    .next()
                    .ok_or(NodeError::Internal("a receipt is missing"))?,
            }),
            None => {
                results.extend(
                    store_plain(core, tx, sender, std::mem::take(&mut pending), now, changed)
                        .await?,
                );
                results.push(store_one(core, tx, sender, r, envelope, now, changed, wake).await?);
            }
        }
    }
    results.extend(store_plain(core, tx, sender, pending, now, changed).await?);
    Ok(results)
}

/// Writes plain new reports, one statement per kind of row.
async fn store_plain(
    core: &Core,
    tx: &mut Tx,
    sender: &NodeId,
    batch: Vec<Plain<'_>>,
    now: i64,
    changed: &mut Vec<i64>,
) -> Result<Vec<pb::ForwardResult>, NodeError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let actor = format!("node:{sender}");
    let receipts: Vec<Vec<u8>> = batch.iter().map(|b| b.receipt.encode_to_vec()).collect();
    let envelopes: Vec<Vec<u8>> = batch.iter().map(|b| b.envelope.encode_to_vec()).collect();
    let routes: Vec<String> = batch
        .iter()
        .map(|b| {
            serde_json::to_string(&b.r.payload.route.as_ref().map(
                |r| serde_json::json!({"kind": r.kind, "destinations": r.destinations, "reason": r.reason}),
            ))
            .unwrap_or_default()
        })
        .collect();
    let rows: Vec<NewReport> = batch
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let p = &b.r.payload;
            NewReport {
                report_id: &p.report_id,
                origin: b.r.origin.as_str(),
                direction: Direction::Incoming.as_str(),
                category: &p.category,
                priority: priority_of(p),
                status: CaseStatus::Received.as_str(),
                hosting_country: p
                    .hosting
                    .as_ref()
                    .map(|h| h.country.as_str())
                    .filter(|c| !c.is_empty()),
                route: &routes[i],
                payload: payload_column(&b.r.payload_bytes, &envelopes[i]),
                payload_digest: &b.r.digest,
                envelope: &envelopes[i],
                received_from: Some(sender.as_str()),
                created_at_ms: p.created_at_ms,
                now_ms: now,
                relay: false,
                receipt: Some(&receipts[i]),
                joined_to: None,
            }
        })
        .collect();
    let seqs = tx.insert_reports(&rows).await?;
    let keys: Vec<(i64, &str)> = batch
        .iter()
        .zip(&seqs)
        .flat_map(|(b, seq)| b.keys.iter().map(move |k| (*seq, k.as_str())))
        .collect();
    if !keys.is_empty() {
        tx.insert_case_keys_many(&keys).await?;
    }
    let statuses: Vec<crate::store::NewStatus> = batch
        .iter()
        .zip(&seqs)
        .map(|(b, seq)| crate::store::NewStatus {
            seq: *seq,
            update_id: uuid::Uuid::now_v7().to_string(),
            status: CaseStatus::Received.as_str(),
            reason: &b.why,
            actor: &actor,
        })
        .collect();
    tx.insert_statuses(&statuses, now).await?;
    let entries: Vec<audit::Entry> = batch
        .iter()
        .map(|b| received_entry(b.r, &actor, true, &[], &[], &b.receipt, None))
        .collect();
    tx.audit_many(&entries, now).await?;
    core.metrics
        .reports_received
        .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
    changed.extend(&seqs);
    Ok(batch
        .into_iter()
        .map(|b| {
            tracing::info!(peer = %sender, origin = %b.r.origin, report_id = %b.r.payload.report_id,
                relaying = false, "report received");
            pb::ForwardResult {
                code: OK,
                message: "stored".into(),
                receipt: Some(b.receipt),
            }
        })
        .collect())
}

/// The audit entry of a report taken over: as a case here, or to relay.
fn received_entry(
    r: &OpenedReport,
    actor: &str,
    case: bool,
    relaying_to: &[String],
    next_hops: &[String],
    receipt: &pb::Signed,
    joined_to: Option<String>,
) -> audit::Entry {
    let p = &r.payload;
    audit::Entry::new(
        if case {
            "report.received"
        } else {
            "report.relaying"
        },
        actor.to_owned(),
        format!("{}/{}", r.origin, p.report_id),
        serde_json::json!({
            "category": p.category,
            "priority": priority_of(p),
            "urls": p.urls.len(),
            "payload_sha256": hex::encode(r.digest),
            "relays": r.relays.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
            "handoffs": r.handoffs.iter().map(|(by, to, reason)| serde_json::json!({"by": by.as_str(), "to": to, "reason": reason})).collect::<Vec<_>>(),
            "relaying_to": relaying_to,
            "next_hops": next_hops,
            "receipt_signature": hex::encode(&receipt.signature),
            "joined_to": joined_to,
        }),
    )
}

fn priority_of(p: &pb::ReportPayload) -> &'static str {
    if p.priority == pb::Priority::Urgent as i32 {
        "urgent"
    } else {
        "bulk"
    }
}

#[allow(clippy::too_many_arguments)]
async fn store_one(
    core: &Core,
    tx: &mut Tx,
    sender: &NodeId,
    r: &OpenedReport,
    envelope: &pb::Envelope,
    now: i64,
    changed: &mut Vec<i64>,
    wake: &mut Vec<String>,
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
    // report over — or a hotline one of them handed the case to — and only
    // the relays the directory puts in front of them pass it on: a peer
    // cannot send it anywhere else.
    let role = match takes_over(core, r) {
        Ok(role) => role,
        Err((code, reason)) => {
            return refuse(core, tx, r, &actor, FAILED_PRECONDITION, code, reason, now).await;
        }
    };
    // What this hotline's directory entry says it takes (its law): a
    // nationally-illegal report outside it is refused, never stored. A
    // relay only passes it on; the destination decides.
    if role.case
        && let Some(why) = outside_jurisdiction(core, p)
    {
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
    // Same content as a case already open here (another hotline reported
    // the same URL or media): the report joins that case.
    let (content_keys, pdq) = content::keys(
        &p.urls,
        p.hashes
            .iter()
            .map(|h| (h.algorithm.as_str(), h.value.as_str())),
    );
    let mut joined = None;
    if role.case {
        let mut found = tx.open_case_with_keys(&content_keys).await?;
        if found.is_none() && !pdq.is_empty() {
            found = tx
                .open_pdq_keys()
                .await?
                .into_iter()
                .find(|(hex, _)| {
                    content::parse_pdq(hex).is_some_and(|h| {
                        pdq.iter()
                            .any(|p| content::pdq_distance(p, &h) <= content::PDQ_MATCH_DISTANCE)
                    })
                })
                .map(|(_, seq)| seq);
        }
        if let Some(seq) = found {
            joined = tx.report_by_seq(seq).await?;
        }
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
    let priority = priority_of(p);
    let receipt = wire::receipt_relaying(
        &core.key(),
        &core.me,
        &p.report_id,
        r.origin.as_str(),
        &r.digest,
        if role.case {
            pb::ReceiptOutcome::Stored
        } else {
            pb::ReceiptOutcome::Relayed
        },
        if joined.is_some() { "joined" } else { "" },
        if joined.is_some() {
            "same content as a case already open here: it joins that case, and you will hear of its changes"
        } else {
            ""
        },
        &role
            .relay_for
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>(),
        now,
    );
    let receipt_bytes = receipt.encode_to_vec();
    let envelope_bytes = envelope.encode_to_vec();
    let seq = tx
        .insert_report(&NewReport {
            report_id: &p.report_id,
            origin: r.origin.as_str(),
            direction: Direction::Incoming.as_str(),
            category: &p.category,
            priority,
            status: if role.case {
                CaseStatus::Received.as_str()
            } else {
                "relayed"
            },
            hosting_country: country,
            route: &route_json,
            payload: payload_column(&r.payload_bytes, &envelope_bytes),
            payload_digest: &r.digest,
            envelope: &envelope_bytes,
            received_from: Some(sender.as_str()),
            created_at_ms: p.created_at_ms,
            now_ms: now,
            relay: !role.case,
            receipt: Some(&receipt_bytes),
            joined_to: joined.as_ref().map(|c| c.seq),
        })
        .await?;
    // Destinations behind this node: one envelope per next hop, with this
    // node's signed hop appended.
    let relayed_to: Vec<String> = role.relay_for.iter().map(|d| d.to_string()).collect();
    let directory = core.directory();
    let mut next_hops: Vec<NodeId> = Vec::new();
    for dest in &role.relay_for {
        let hop = directory.next_hop(&core.me, dest);
        tx.insert_delivery(seq, dest.as_str(), Some(hop.as_str()), None)
            .await?;
        if next_hops.contains(&hop) {
            continue;
        }
        let mut onward = envelope.clone();
        onward.hops.push(wire::hop(
            &core.key(),
            &core.me,
            &p.report_id,
            r.origin.as_str(),
            &r.digest,
            sender.as_str(),
            hop.as_str(),
            None,
            now,
        ));
        tx.enqueue(
            hop.as_str(),
            "report",
            priority == "urgent",
            seq,
            &onward.encode_to_vec(),
            now,
        )
        .await?;
        next_hops.push(hop);
    }
    if role.case {
        let mut why = match r.handoffs.last().filter(|_| r.handed_off_here) {
            Some((by, _, _)) => format!("handed over by {by}"),
            None => "received from the federation".to_owned(),
        };
        match &joined {
            Some(case) => {
                why.push_str(&format!(
                    "; joined case {}/{} (same content)",
                    case.origin, case.report_id
                ));
            }
            None => tx.insert_case_keys(seq, &content_keys).await?,
        }
        tx.insert_status(
            seq,
            &uuid::Uuid::now_v7().to_string(),
            CaseStatus::Received.as_str(),
            &why,
            &actor,
            None,
            None,
            now,
        )
        .await?;
    }
    tx.audit(
        &received_entry(
            r,
            &actor,
            role.case,
            &relayed_to,
            &next_hops.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            &receipt,
            joined
                .as_ref()
                .map(|c| format!("{}/{}", c.origin, c.report_id)),
        ),
        now,
    )
    .await?;
    // Joining a case that is already further along: the new origin hears
    // where it stands.
    if let Some(case) = &joined
        && case.status != CaseStatus::Received.as_str()
        && let (Ok(to), Some(row)) = (
            CaseStatus::parse(&case.status),
            tx.report_by_seq(seq).await?,
        )
    {
        let why = format!("the case this report joined is already {to}");
        wake.extend(
            crate::node::cases::change_status(
                core,
                tx,
                &row,
                CaseStatus::Received,
                to,
                &why,
                &actor,
                now,
                None,
            )
            .await?,
        );
    }
    if role.case {
        core.metrics
            .reports_received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    changed.push(seq);
    wake.extend(next_hops.iter().map(|h| h.to_string()));
    tracing::info!(peer = %sender, origin = %r.origin, report_id = %p.report_id,
        relaying = !role.relay_for.is_empty(), "report received");
    Ok(pb::ForwardResult {
        code: OK,
        message: if role.case { "stored" } else { "relayed" }.into(),
        receipt: Some(receipt),
    })
}

/// What this node does with a report: work it as a case, pass it on to the
/// destinations behind it, or both.
struct Role {
    case: bool,
    relay_for: Vec<NodeId>,
}

/// Decides from the origin's signed route, the handoffs in the hop chain
/// and the directory's relays whether this node may take the report.
fn takes_over(core: &Core, r: &OpenedReport) -> Result<Role, (&'static str, &'static str)> {
    let route: Vec<&str> = r
        .payload
        .route
        .as_ref()
        .map(|route| route.destinations.iter().map(String::as_str).collect())
        .unwrap_or_default();
    // Each handoff must come from a node holding the case: a destination
    // the origin chose, or the target of an earlier handoff.
    let mut holders: Vec<&str> = route.clone();
    for (by, to, _) in &r.handoffs {
        if !holders.contains(&by.as_str()) {
            return Err((
                "bad-handoff",
                "a node that did not hold the case handed it over",
            ));
        }
        holders.push(to.as_str());
    }
    if r.handed_off_here {
        let accepts = crate::report::Category::parse(&r.payload.category)
            .ok()
            .zip(core.directory().node(&core.me).cloned())
            .is_some_and(|(c, me)| me.accepts(c));
        if !accepts {
            return Err((
                "declined",
                "this hotline does not take reports of this category",
            ));
        }
        return Ok(Role {
            case: true,
            relay_for: vec![],
        });
    }
    if !r.handoffs.is_empty() {
        return Err((
            "bad-handoff",
            "a handed-over case must come straight from the node that handed it over",
        ));
    }
    let directory = core.directory();
    let case = route.contains(&core.me.as_str());
    let relay_for: Vec<NodeId> = route
        .iter()
        .filter(|d| **d != core.me.as_str())
        .filter_map(|d| NodeId::new(d).ok())
        .filter(|d| directory.relays_of(d).contains(&core.me))
        .collect();
    if !case && relay_for.is_empty() {
        return Err((
            "not-a-destination",
            "the origin's signed route does not name this node, nor a node it relays for",
        ));
    }
    Ok(Role { case, relay_for })
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
    let kinds = [
        !req.updates.is_empty(),
        !req.returned.is_empty(),
        !req.amendments.is_empty(),
    ];
    if kinds.iter().filter(|k| **k).count() > 1 {
        return Err(InvalidInput::new(
            "mixed-batch",
            "returned",
            "send status updates, returned items and amendments in separate calls",
        )
        .into());
    }
    if kinds[1] {
        return push_returned(core, sender, req, now).await;
    }
    if kinds[2] {
        return crate::node::amend::receive(core, sender, req, now).await;
    }
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
    Ok(pb::PushStatusResponse {
        codes,
        ..Default::default()
    })
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

/// Receipts and status updates coming back through relays: at the origin
/// they settle its deliveries and join its case history, as if they came
/// straight from the hotline that signed them; at a relay they are passed
/// on towards the origin with the relay's return hop.
async fn push_returned(
    core: &Core,
    sender: &NodeId,
    req: &pb::PushStatusRequest,
    now: i64,
) -> Result<pb::PushStatusResponse, NodeError> {
    let actor = format!("node:{sender}");
    let opened = match open_returned_batch(core, sender, req, now) {
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
    let mut changed = Vec::new();
    let mut wake = Vec::new();
    for (item, ret) in opened.iter().zip(&req.returned) {
        let code = settle_returned(core, &mut tx, sender, item, ret, now, &mut wake).await?;
        if let Some(seq) = code.1 {
            changed.push(seq);
        }
        codes.push(code.0);
    }
    tx.commit().await?;
    for seq in changed {
        core.case_changed(seq);
    }
    for peer in wake {
        core.wake(&peer);
    }
    Ok(pb::PushStatusResponse {
        returned_codes: codes,
        ..Default::default()
    })
}

fn open_returned_batch(
    core: &Core,
    sender: &NodeId,
    req: &pb::PushStatusRequest,
    now: i64,
) -> Result<Vec<wire::OpenedReturned>, NodeError> {
    if req.returned.len() > MAX_BATCH {
        return Err(InvalidInput::new(
            "batch-size",
            "returned",
            format!("1 to {MAX_BATCH} items, got {}", req.returned.len()),
        )
        .into());
    }
    let directory = core.directory();
    // Each item carries a return hop per relay: checked together.
    crate::crypto::signing::verify_batched(|| {
        open_returned_items(core, sender, req, &directory, now)
    })
}

fn open_returned_items(
    core: &Core,
    sender: &NodeId,
    req: &pb::PushStatusRequest,
    directory: &crate::directory::Directory,
    now: i64,
) -> Result<Vec<wire::OpenedReturned>, NodeError> {
    let mut out = Vec::with_capacity(req.returned.len());
    for ret in &req.returned {
        let o = wire::open_returned(ret, sender, &core.me, directory, now)?;
        if let wire::ReturnedItem::Status(u) = &o.item {
            CaseStatus::parse(&u.status)?;
            crate::report::validate::report_id(&u.update_id).map_err(|mut e| {
                e.field = "update_id".into();
                e
            })?;
            crate::report::validate::single_line("reason", &u.reason, 4096)?;
        }
        out.push(o);
    }
    Ok(out)
}

/// One returned item: (code, the case it changed).
async fn settle_returned(
    core: &Core,
    tx: &mut Tx,
    sender: &NodeId,
    item: &wire::OpenedReturned,
    ret: &pb::Returned,
    now: i64,
    wake: &mut Vec<String>,
) -> Result<(i32, Option<i64>), NodeError> {
    let actor = format!("node:{sender}");
    let subject = format!("{}/{}", item.origin, item.report_id);
    let via: Vec<&str> = item.via.iter().map(NodeId::as_str).collect();
    let signed = ret
        .item
        .as_ref()
        .map(|s| s.encode_to_vec())
        .unwrap_or_default();
    let row = tx.find_report(&item.origin, &item.report_id).await?;
    // The origin, a relay, or a hotline that handed the case over: each has
    // deliveries for the report.
    let ours = row.is_some();
    // The deliveries this item settles: the maker's own, or — for a
    // refusal by a node on the way (a relay, or a loop back to a node
    // already passed) — every delivery this node handed to the sender.
    let mut targets = Vec::new();
    if let Some(r) = row.as_ref().filter(|_| ours) {
        let holder = match item.via.first() {
            Some(first) if first != &item.maker => {
                tx.delivery_state(r.seq, first.as_str()).await?.is_some()
            }
            _ => false,
        };
        if tx
            .delivery_state(r.seq, item.maker.as_str())
            .await?
            .is_some()
        {
            targets.push(item.maker.to_string());
        } else if holder {
            // The first node on the way back holds the case here and handed
            // it over to the maker: the maker becomes a destination too.
            let by = item.via[0].as_str();
            tx.insert_delivery(r.seq, item.maker.as_str(), Some(sender.as_str()), Some(by))
                .await?;
            targets.push(item.maker.to_string());
        } else if let wire::ReturnedItem::Receipt(receipt) = &item.item
            && receipt.outcome == pb::ReceiptOutcome::Refused as i32
        {
            targets = tx.destinations_via(r.seq, sender.as_str()).await?;
        }
    }
    let (Some(row), false) = (row, targets.is_empty()) else {
        tx.audit(
            &audit::Entry::new(
                "returned.refused",
                actor,
                subject,
                serde_json::json!({
                    "reason_code": "not-a-destination",
                    "maker": item.maker.as_str(),
                    "via": via,
                }),
            ),
            now,
        )
        .await?;
        return Ok((FAILED_PRECONDITION, None));
    };
    let fresh = match &item.item {
        wire::ReturnedItem::Receipt(receipt) => {
            if receipt.report_digest != row.payload_digest {
                tx.audit(
                    &audit::Entry::new(
                        "returned.refused",
                        actor,
                        subject,
                        serde_json::json!({"reason_code": "receipt-mismatch", "maker": item.maker.as_str()}),
                    ),
                    now,
                )
                .await?;
                return Ok((FAILED_PRECONDITION, None));
            }
            let stored = receipt.outcome == pb::ReceiptOutcome::Stored as i32;
            let outcome = if stored { "delivered" } else { "refused" };
            let mut settled = Vec::new();
            for dest in &targets {
                if tx.delivery_state(row.seq, dest).await?.as_deref() != Some("queued") {
                    continue;
                }
                let reason = (!stored).then(|| {
                    let why = format!("{}: {}", receipt.reason_code, receipt.reason);
                    if dest == item.maker.as_str() {
                        why
                    } else {
                        format!("{} refused it on the way: {why}", item.maker)
                    }
                });
                tx.finish_delivery(row.seq, dest, outcome, &signed, reason.as_deref(), now)
                    .await?;
                if stored && row.origin == core.me.as_str() {
                    core.metrics
                        .takedown("receipt", dest, now - row.created_at_ms);
                }
                tx.set_delivery_via(row.seq, dest, &via.join(",")).await?;
                settled.push(dest.clone());
            }
            if settled.is_empty() {
                false
            } else {
                if row.status == "queued" && row.origin == core.me.as_str() {
                    tx.set_status(row.seq, outcome, now).await?;
                }
                tx.audit(
                    &audit::Entry::new(
                        "delivery.receipt",
                        actor.clone(),
                        subject.clone(),
                        serde_json::json!({
                            "destinations": settled,
                            "signer": item.maker.as_str(),
                            "outcome": outcome,
                            "reason_code": receipt.reason_code,
                            "receipt_signature": hex::encode(ret.item.as_ref().map(|s| s.signature.clone()).unwrap_or_default()),
                            "via": via,
                        }),
                    ),
                    now,
                )
                .await?;
                true
            }
        }
        wire::ReturnedItem::Status(u) => {
            let inserted = tx
                .insert_status(
                    row.seq,
                    &u.update_id,
                    &u.status,
                    &u.reason,
                    &actor,
                    Some(item.maker.as_str()),
                    Some(&signed),
                    u.at_ms,
                )
                .await?;
            if inserted {
                if row.origin == core.me.as_str()
                    && let Some(m) = crate::node::stats::milestone(&u.status)
                {
                    core.metrics
                        .takedown(m, item.maker.as_str(), u.at_ms - row.created_at_ms);
                }
                if row.origin == core.me.as_str() && row.status != "retracted" {
                    tx.set_status(row.seq, &u.status, now).await?;
                }
                tx.audit(
                    &audit::Entry::new(
                        "status.received",
                        actor.clone(),
                        subject.clone(),
                        serde_json::json!({
                            "status": u.status,
                            "update_id": u.update_id,
                            "signer": item.maker.as_str(),
                            "signature": hex::encode(ret.item.as_ref().map(|s| s.signature.clone()).unwrap_or_default()),
                            "via": via,
                        }),
                    ),
                    now,
                )
                .await?;
            }
            inserted
        }
    };
    // A relay passes what is new on towards the origin, through the node
    // it received the report from.
    if fresh && row.origin != core.me.as_str() {
        pass_back(core, tx, &row, ret, sender.as_str(), now).await?;
        if let Some(prev) = &row.received_from {
            wake.push(prev.clone());
        }
    }
    Ok((OK, fresh.then_some(row.seq)))
}

/// Queues a receipt or status update (already accepted here) back to the
/// node this relay received the report from, with this node's return hop.
pub(crate) async fn pass_back(
    core: &Core,
    tx: &mut Tx,
    row: &crate::store::ReportRow,
    ret: &pb::Returned,
    from: &str,
    now: i64,
) -> Result<(), NodeError> {
    let Some(prev) = row.received_from.as_deref() else {
        return Ok(());
    };
    let back = wire::return_hop(
        &core.key(),
        &core.me,
        ret,
        &row.report_id,
        &row.origin,
        from,
        prev,
        now,
    );
    tx.enqueue_returned(
        prev,
        row.priority == "urgent",
        row.seq,
        &back.encode_to_vec(),
        now,
    )
    .await?;
    Ok(())
}
