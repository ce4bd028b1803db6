//! Envelopes from a peer (`Forward`): every signature of the batch checked
//! together, then each report stored with a signed receipt — as a case
//! here, to relay on, or both — or answered as an exact repeat, or refused
//! with a signed receipt that says why. New reports that simply become
//! cases here (the common case) are written together, one statement per
//! kind of row; anything else goes one by one, in the order received.

use std::collections::HashSet;
use std::time::Duration;

use prost::Message;

use crate::audit;
use crate::identity::NodeId;
use crate::node::inbound::{self, Effects, Flow, Opening, Verdict};
use crate::node::near;
use crate::node::relay::{self, Relayed};
use crate::node::{Core, NodeError};
use crate::pb;
use crate::report::content;
use crate::report::{CaseStatus, Direction};
use crate::store::{NewReport, NewStatus, ReportRow, Tx};
use crate::wire::stored::payload_column;
use crate::wire::{self, OpenedReport};

use super::ForwardAnswer;
use super::role::{Role, outside_jurisdiction, takes_over};

/// A `Forward` batch.
pub(super) struct Envelopes(pub pb::ForwardRequest);

impl Flow for Envelopes {
    type Opened = OpenedReport;
    type Answer = ForwardAnswer;

    fn open(&self, core: &Core, sender: &NodeId, now: i64) -> Result<Vec<OpenedReport>, NodeError> {
        let envelopes = &self.0.envelopes;
        inbound::check_size("envelopes", "envelopes", envelopes.len(), false)?;
        let directory = &core.directory();
        super::status::active_sender(core, sender)?;
        // The envelopes' signatures are checked together, in one batch.
        crate::crypto::signing::verify_batched(|| {
            envelopes
                .iter()
                .map(|e| {
                    let r = wire::open_envelope(e, sender, &core.me, directory, now)?;
                    previous_release_check(core, &r)?;
                    Ok(r)
                })
                .collect()
        })
    }

    fn bytes(&self) -> Vec<u8> {
        self.0.encode_to_vec()
    }

    /// Up to ~2,300 signature checks per batch: off the async threads, at
    /// a lower priority unless the sender's urgent lane sent it (a hint
    /// only: each envelope's signed priority is what counts).
    fn opening(&self) -> Opening {
        Opening::Background {
            urgent: self.0.urgent,
        }
    }

    fn matching_work(&self, opened: &[OpenedReport]) -> usize {
        opened.iter().map(|r| content_keys(r).1.len()).sum()
    }

    fn urgent_items(&self, opened: &[OpenedReport]) -> usize {
        opened
            .iter()
            .filter(|r| r.payload.priority == pb::Priority::Urgent as i32)
            .count()
    }

    /// A bulk batch is stored in short transactions that let urgent work
    /// take the writer in between; the receipts go back once all committed
    /// (a failure part-way makes the sender retry the batch, and what was
    /// stored is then answered as an exact repeat).
    fn chunked(&self) -> bool {
        true
    }

    async fn apply<'a>(
        &'a self,
        core: &'a Core,
        tx: &'a mut Tx,
        sender: &'a NodeId,
        chunk: &'a [OpenedReport],
        offset: usize,
        now: i64,
        effects: &'a mut Effects,
    ) -> Result<Vec<ForwardAnswer>, NodeError> {
        let items: Vec<(&OpenedReport, &pb::Envelope)> =
            chunk.iter().zip(&self.0.envelopes[offset..]).collect();
        store_chunk(core, tx, sender, &items, now, effects).await
    }
}

/// A node set to behave as the previous release (`[exchange] protocol =
/// 1`) refuses what that release refused: a payload carrying fields it
/// does not know (protocol 2's DNS evidence, CDN mark and case family)
/// is not canonical to it (`wire::compat`).
fn previous_release_check(core: &Core, r: &OpenedReport) -> Result<(), NodeError> {
    let protocol = core.config.exchange.protocol;
    if wire::compat::known_to(protocol, &r.payload) {
        return Ok(());
    }
    Err(wire::WireError::NonCanonical("report").into())
}

type Item<'a> = (&'a OpenedReport, &'a pb::Envelope);

/// A new report that needs nothing but storing as a case here: one of
/// many written together.
struct Plain<'a> {
    r: &'a OpenedReport,
    envelope: &'a pb::Envelope,
    why: String,
    receipt: pb::Signed,
}

/// Stores a chunk of opened envelopes in `tx`: plain new cases together,
/// anything else (a repeat, a refusal, a relay, a join) through
/// `store_one`, after what came before it is written, in order.
async fn store_chunk(
    core: &Core,
    tx: &mut Tx,
    sender: &NodeId,
    chunk: &[Item<'_>],
    now: i64,
    effects: &mut Effects,
) -> Result<Vec<ForwardAnswer>, NodeError> {
    let plain = plain_ones(core, tx, chunk, now).await?;
    let mut receipts = sign_plain_receipts(core, chunk, &plain, now)
        .await?
        .into_iter();
    let mut answers = Vec::with_capacity(chunk.len());
    let mut pending: Vec<Plain> = Vec::new();
    for ((r, envelope), plain) in chunk.iter().zip(plain) {
        match plain {
            Some(why) => pending.push(Plain {
                r,
                envelope,
                why,
                receipt: receipts
                    .next()
                    .ok_or(NodeError::Internal("a receipt is missing"))?,
            }),
            None => {
                let batch = std::mem::take(&mut pending);
                answers.extend(store_plain(core, tx, sender, batch, now, effects).await?);
                answers.push(store_one(core, tx, sender, r, envelope, now, effects).await?);
            }
        }
    }
    answers.extend(store_plain(core, tx, sender, pending, now, effects).await?);
    Ok(answers)
}

/// Which reports of the chunk are plain — deciding as `store_one` would —
/// each with the reason its history will give. Runs first in the
/// chunk's transaction: it brings the near-duplicate index up to date
/// (`near::catch_up`) before anything is written.
async fn plain_ones(
    core: &Core,
    tx: &mut Tx,
    chunk: &[Item<'_>],
    now: i64,
) -> Result<Vec<Option<String>>, NodeError> {
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
    let keys: Vec<(Vec<String>, Vec<[u8; 32]>)> =
        chunk.iter().map(|(r, _)| content_keys(r)).collect();
    if keys.iter().any(|(_, pdq)| !pdq.is_empty()) {
        near::catch_up(core, tx).await?;
    }
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
    let mut seen_ids: HashSet<(&str, &str)> = HashSet::new();
    let mut seen_keys: HashSet<&str> = HashSet::new();
    let mut seen_pdq: Vec<(i64, [u8; 32])> = Vec::new();
    let mut plain = Vec::with_capacity(chunk.len());
    for ((r, _), (k, pdq)) in chunk.iter().zip(&keys) {
        let id = (r.origin.as_str(), r.payload.report_id.as_str());
        let fresh_id = seen_ids.insert(id) && !known.contains(&(id.0.to_owned(), id.1.to_owned()));
        let shares_key = k
            .iter()
            .any(|key| open.contains(key) || seen_keys.contains(key.as_str()));
        seen_keys.extend(k.iter().map(String::as_str));
        let near_one = near::near_in(&seen_pdq, pdq).is_some() || near::may_match(core, pdq)?;
        seen_pdq.extend(pdq.iter().map(|h| (0, *h)));
        let is_plain = fresh_id
            && !shares_key
            && !near_one
            && refusal(core, r, now).is_none()
            && matches!(takes_over(core, r), Ok(role) if role.case && role.relay_for.is_empty())
            && outside_jurisdiction(core, &r.payload).is_none();
        plain.push(is_plain.then(|| received_why(r)));
    }
    Ok(plain)
}

/// The keys a new case stores: its content keys, of which its `pdq:`
/// keys (read back by the near-duplicate index) only while its origin
/// may have more cases indexed (`near::may_index`); its PDQ hashes are
/// noted for matching later in this transaction.
fn new_case_keys(
    core: &Core,
    r: &OpenedReport,
    seq: i64,
    effects: &mut Effects,
) -> Result<Vec<String>, NodeError> {
    let (mut keys, pdq) = content_keys(r);
    if !pdq.is_empty() {
        if near::may_index(core, r.origin.as_str())? {
            effects.near.extend(pdq.iter().map(|h| (seq, *h)));
        } else {
            keys.retain(|k| !k.starts_with("pdq:"));
        }
    }
    Ok(keys)
}

/// A report's exact content keys (normalised URLs, exact hashes) and its
/// PDQ hashes (matched by distance, not by key).
fn content_keys(r: &OpenedReport) -> (Vec<String>, Vec<[u8; 32]>) {
    content::keys(
        &r.payload.urls,
        r.payload
            .hashes
            .iter()
            .map(|h| (h.algorithm.as_str(), h.value.as_str())),
    )
}

/// The plain reports' receipts, signed together with one signature (each
/// with its own inclusion proof), off the async threads.
async fn sign_plain_receipts(
    core: &Core,
    chunk: &[Item<'_>],
    plain: &[Option<String>],
    now: i64,
) -> Result<Vec<pb::Signed>, NodeError> {
    let bodies: Vec<pb::Receipt> = chunk
        .iter()
        .zip(plain)
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
    if bodies.is_empty() {
        return Ok(Vec::new());
    }
    let (key, me) = (core.key(), core.me.clone());
    tokio::task::spawn_blocking(move || wire::sign_receipts(&key, &me, &bodies, now))
        .await
        .map_err(|_| NodeError::Internal("signing task failed"))
}

/// Why a report became a case here, for its history.
fn received_why(r: &OpenedReport) -> String {
    match r.handoffs.last().filter(|_| r.handed_off_here) {
        Some((by, _, _)) => format!("handed over by {by}"),
        None => "received from the federation".to_owned(),
    }
}

/// The route a received report is stored with (`wire::stored::route_column`).
fn route_json(p: &pb::ReportPayload) -> String {
    match &p.route {
        Some(r) => wire::stored::route_column(&r.kind, &r.destinations, &r.reason),
        None => "null".to_owned(),
    }
}

fn hosting_country(p: &pb::ReportPayload) -> Option<&str> {
    p.hosting
        .as_ref()
        .map(|h| h.country.as_str())
        .filter(|c| !c.is_empty())
}

/// Writes plain new reports, one statement per kind of row.
async fn store_plain(
    core: &Core,
    tx: &mut Tx,
    sender: &NodeId,
    batch: Vec<Plain<'_>>,
    now: i64,
    effects: &mut Effects,
) -> Result<Vec<ForwardAnswer>, NodeError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let actor = format!("node:{sender}");
    let receipts: Vec<Vec<u8>> = batch.iter().map(|b| b.receipt.encode_to_vec()).collect();
    let envelopes: Vec<Vec<u8>> = batch.iter().map(|b| b.envelope.encode_to_vec()).collect();
    let routes: Vec<String> = batch.iter().map(|b| route_json(&b.r.payload)).collect();
    let rows: Vec<NewReport> = batch
        .iter()
        .enumerate()
        .map(|(i, b)| {
            new_report(
                b.r,
                sender,
                &routes[i],
                &envelopes[i],
                &receipts[i],
                true,
                None,
                now,
            )
        })
        .collect();
    let seqs = tx.insert_reports(&rows).await?;
    for (row, seq) in rows.iter().zip(&seqs) {
        if row.priority == "urgent" {
            let event = crate::node::alerts::events::urgent_report(*seq, row, sender.as_str());
            crate::node::alerts::raise_in(core, tx, &event).await?;
        }
    }
    let mut case_keys = Vec::with_capacity(batch.len());
    for (b, seq) in batch.iter().zip(&seqs) {
        case_keys.push(new_case_keys(core, b.r, *seq, effects)?);
    }
    let keys: Vec<(i64, &str)> = seqs
        .iter()
        .zip(&case_keys)
        .flat_map(|(seq, keys)| keys.iter().map(move |k| (*seq, k.as_str())))
        .collect();
    if !keys.is_empty() {
        tx.insert_case_keys_many(&keys).await?;
    }
    let statuses: Vec<NewStatus> = batch
        .iter()
        .zip(&seqs)
        .map(|(b, seq)| NewStatus {
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
    effects.changed.extend(&seqs);
    Ok(batch
        .into_iter()
        .map(|b| {
            tracing::info!(peer = %sender, origin = %b.r.origin, report_id = %b.r.payload.report_id,
                relaying = false, "report received");
            ForwardAnswer {
                verdict: Verdict::Accepted,
                message: "stored".into(),
                receipt: Some(b.receipt),
            }
        })
        .collect())
}

/// The row of a report taken over here: as a case, or to relay.
#[allow(clippy::too_many_arguments)]
fn new_report<'a>(
    r: &'a OpenedReport,
    sender: &'a NodeId,
    route: &'a str,
    envelope: &'a [u8],
    receipt: &'a [u8],
    case: bool,
    joined_to: Option<i64>,
    now: i64,
) -> NewReport<'a> {
    let p = &r.payload;
    NewReport {
        report_id: &p.report_id,
        origin: r.origin.as_str(),
        direction: Direction::Incoming.as_str(),
        category: &p.category,
        priority: priority_of(p),
        status: if case {
            CaseStatus::Received.as_str()
        } else {
            "relayed"
        },
        hosting_country: hosting_country(p),
        route,
        payload: payload_column(&r.payload_bytes, envelope),
        payload_digest: &r.digest,
        envelope,
        received_from: Some(sender.as_str()),
        created_at_ms: p.created_at_ms,
        now_ms: now,
        relay: !case,
        receipt: Some(receipt),
        joined_to,
        family: p
            .route
            .as_ref()
            .map(|r| r.family.as_str())
            .filter(|f| !f.is_empty()),
    }
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

/// Why a report is refused before the database is asked: a loop, or a
/// `created_at` outside the allowed window. (verdict, reason code, reason)
fn refusal(core: &Core, r: &OpenedReport, now: i64) -> Option<(Verdict, &'static str, String)> {
    let p = &r.payload;
    if r.origin == core.me || r.relays.contains(&core.me) {
        return Some((
            Verdict::Refused,
            "loop",
            "the report already passed through this node".into(),
        ));
    }
    let skew = core.config.max_clock_skew.as_millis() as i64;
    let max_age = core.config.max_report_age.as_millis() as i64;
    if p.created_at_ms > now + skew {
        return Some((
            Verdict::Refused,
            "future",
            "created_at is in the future beyond the allowed clock skew".into(),
        ));
    }
    if p.created_at_ms < now - max_age {
        let days = Duration::from_millis(max_age as u64).as_secs() / 86_400;
        return Some((
            Verdict::Refused,
            "stale",
            format!("created_at is older than {days} days"),
        ));
    }
    None
}

/// What to do with a report that is not plain.
enum Admission {
    /// Take it over in this role.
    Take(Role),
    /// Answered already: an exact repeat, or a refusal.
    Answered(ForwardAnswer),
}

/// One report that is not plain: a repeat, a refusal, a relay, a join.
async fn store_one(
    core: &Core,
    tx: &mut Tx,
    sender: &NodeId,
    r: &OpenedReport,
    envelope: &pb::Envelope,
    now: i64,
    effects: &mut Effects,
) -> Result<ForwardAnswer, NodeError> {
    let role = match admit(core, tx, sender, r, now).await? {
        Admission::Take(role) => role,
        Admission::Answered(answer) => return Ok(answer),
    };
    let joined = if role.case {
        find_joined(core, tx, effects, r).await?
    } else {
        None
    };
    take_over(core, tx, sender, r, envelope, &role, joined, now, effects).await
}

/// Decides whether this node takes the report over, in what role, or
/// answers it at once. Checks, in order: a loop; that the origin's signed
/// route (or a handoff) names this node or a node it relays for; this
/// hotline's jurisdiction; a repeat or an equivocation; the clock.
async fn admit(
    core: &Core,
    tx: &mut Tx,
    sender: &NodeId,
    r: &OpenedReport,
    now: i64,
) -> Result<Admission, NodeError> {
    let actor = format!("node:{sender}");
    let checked = if r.origin == core.me || r.relays.contains(&core.me) {
        Err(refusal(core, r, now).unwrap_or((
            Verdict::Refused,
            "loop",
            "the report already passed through this node".into(),
        )))
    } else {
        match takes_over(core, r) {
            Err((code, reason)) => Err((Verdict::Refused, code, reason.to_owned())),
            // What this hotline's directory entry says it takes (its law):
            // a nationally-illegal report outside it is refused, never
            // stored. A relay only passes it on; the destination decides.
            Ok(role) => match outside_jurisdiction(core, &r.payload).filter(|_| role.case) {
                Some(why) => Err((Verdict::Refused, "jurisdiction", why)),
                None => Ok(role),
            },
        }
    };
    let role = match checked {
        Ok(role) => role,
        Err((verdict, code, reason)) => {
            return refuse(core, tx, r, &actor, verdict, code, &reason, now)
                .await
                .map(Admission::Answered);
        }
    };
    if let Some(existing) = tx
        .find_report(r.origin.as_str(), &r.payload.report_id)
        .await?
    {
        return repeat_or_equivocation(core, tx, sender, r, &existing, now)
            .await
            .map(Admission::Answered);
    }
    if let Some((verdict, code, reason)) = refusal(core, r, now) {
        return refuse(core, tx, r, &actor, verdict, code, &reason, now)
            .await
            .map(Admission::Answered);
    }
    Ok(Admission::Take(role))
}

/// A report id this origin already sent: an exact repeat (a retry after a
/// lost reply) gets the original receipt and no second case; different
/// content is equivocation, refused and alerted.
async fn repeat_or_equivocation(
    core: &Core,
    tx: &mut Tx,
    sender: &NodeId,
    r: &OpenedReport,
    existing: &ReportRow,
    now: i64,
) -> Result<ForwardAnswer, NodeError> {
    let p = &r.payload;
    let actor = format!("node:{sender}");
    // The previous protocol's copy of this very report stored before (its
    // origin sent it while this node spoke protocol 1, and retries the
    // full report now): the same report, a repeat.
    let copy_stored = || {
        wire::compat::previous_digest(&r.payload_bytes)
            .is_some_and(|d| d.as_slice() == existing.payload_digest.as_slice())
    };
    if existing.payload_digest == r.digest || copy_stored() {
        tx.audit(
            &audit::Entry::new(
                "report.repeat",
                actor,
                format!("{}/{}", r.origin, p.report_id),
                serde_json::json!({"payload_sha256": hex::encode(r.digest)}),
            ),
            now,
        )
        .await?;
        let receipt = existing
            .receipt
            .as_deref()
            .and_then(|b| pb::Signed::decode(b).ok());
        return Ok(ForwardAnswer {
            verdict: Verdict::Accepted,
            message: "already stored".into(),
            receipt,
        });
    }
    core.metrics
        .equivocations
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let event =
        crate::node::alerts::events::equivocation(r.origin.as_str(), &p.report_id, sender.as_str());
    crate::node::alerts::raise_in(core, tx, &event).await?;
    tracing::warn!(peer = %sender, origin = %r.origin, report_id = %p.report_id,
        "EQUIVOCATION: same report id, different content");
    refuse(
        core,
        tx,
        r,
        &actor,
        Verdict::Conflict,
        "equivocation",
        "this origin already sent different content under this report id",
        now,
    )
    .await
}

/// A case already open here with the same content (another hotline
/// reported the same URL or media): the report joins it. Exact keys are
/// looked up in the store; PDQ hashes in the near-duplicate index, and
/// the match confirmed open in the store.
async fn find_joined(
    core: &Core,
    tx: &mut Tx,
    effects: &Effects,
    r: &OpenedReport,
) -> Result<Option<ReportRow>, NodeError> {
    let (content_keys, pdq) = content_keys(r);
    let mut found = tx.open_case_with_keys(&content_keys).await?;
    if found.is_none() && !pdq.is_empty() {
        found = near::open_match(core, tx, effects, &pdq).await?;
    }
    match found {
        Some(seq) => Ok(tx.report_by_seq(seq).await?),
        None => Ok(None),
    }
}

/// Takes the report over: stores it with a signed receipt, passes it on to
/// the destinations behind this node, opens (or joins) its case, audits.
#[allow(clippy::too_many_arguments)]
async fn take_over(
    core: &Core,
    tx: &mut Tx,
    sender: &NodeId,
    r: &OpenedReport,
    envelope: &pb::Envelope,
    role: &Role,
    joined: Option<ReportRow>,
    now: i64,
    effects: &mut Effects,
) -> Result<ForwardAnswer, NodeError> {
    let p = &r.payload;
    let actor = format!("node:{sender}");
    let relayed_to: Vec<String> = role.relay_for.iter().map(|d| d.to_string()).collect();
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
        &relayed_to,
        now,
    );
    let route = route_json(p);
    let envelope_bytes = envelope.encode_to_vec();
    let receipt_bytes = receipt.encode_to_vec();
    let row = new_report(
        r,
        sender,
        &route,
        &envelope_bytes,
        &receipt_bytes,
        role.case,
        joined.as_ref().map(|c| c.seq),
        now,
    );
    let seq = tx.insert_report(&row).await?;
    if role.case && row.priority == "urgent" {
        let event = crate::node::alerts::events::urgent_report(seq, &row, sender.as_str());
        crate::node::alerts::raise_in(core, tx, &event).await?;
    }
    let relayed = Relayed {
        seq,
        report_id: &p.report_id,
        origin: r.origin.as_str(),
        digest: &r.digest,
        urgent: priority_of(p) == "urgent",
    };
    let next_hops = relay::pass_on(
        core,
        tx,
        &relayed,
        &role.relay_for,
        envelope,
        sender.as_str(),
        now,
    )
    .await?;
    if role.case {
        open_case(core, tx, r, &actor, seq, joined.as_ref(), now, effects).await?;
    }
    let next: Vec<String> = next_hops.iter().map(|n| n.to_string()).collect();
    let joined_name = joined
        .as_ref()
        .map(|c| format!("{}/{}", c.origin, c.report_id));
    let entry = received_entry(
        r,
        &actor,
        role.case,
        &relayed_to,
        &next,
        &receipt,
        joined_name,
    );
    tx.audit(&entry, now).await?;
    if let Some(case) = &joined {
        catch_up(core, tx, &actor, seq, case, now, effects).await?;
    }
    if role.case {
        core.metrics
            .reports_received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    effects.changed.push(seq);
    effects.wake.extend(next);
    tracing::info!(peer = %sender, origin = %r.origin, report_id = %p.report_id,
        relaying = !role.relay_for.is_empty(), "report received");
    Ok(ForwardAnswer {
        verdict: Verdict::Accepted,
        message: if role.case { "stored" } else { "relayed" }.into(),
        receipt: Some(receipt),
    })
}

/// The case history's first entry (and the content keys of a new case; a
/// report that joined a case adds none of its own).
#[allow(clippy::too_many_arguments)]
async fn open_case(
    core: &Core,
    tx: &mut Tx,
    r: &OpenedReport,
    actor: &str,
    seq: i64,
    joined: Option<&ReportRow>,
    now: i64,
    effects: &mut Effects,
) -> Result<(), NodeError> {
    let mut why = received_why(r);
    match joined {
        Some(case) => {
            why.push_str(&format!(
                "; joined case {}/{} (same content)",
                case.origin, case.report_id
            ));
        }
        None => {
            let keys = new_case_keys(core, r, seq, effects)?;
            tx.insert_case_keys(seq, &keys).await?
        }
    }
    tx.insert_status(
        seq,
        &uuid::Uuid::now_v7().to_string(),
        CaseStatus::Received.as_str(),
        &why,
        actor,
        None,
        None,
        now,
    )
    .await?;
    Ok(())
}

/// Joining a case that is already further along: the new origin hears
/// where it stands.
async fn catch_up(
    core: &Core,
    tx: &mut Tx,
    actor: &str,
    seq: i64,
    case: &ReportRow,
    now: i64,
    effects: &mut Effects,
) -> Result<(), NodeError> {
    if case.status == CaseStatus::Received.as_str() {
        return Ok(());
    }
    let (Ok(to), Some(row)) = (
        CaseStatus::parse(&case.status),
        tx.report_by_seq(seq).await?,
    ) else {
        return Ok(());
    };
    let why = format!("the case this report joined is already {to}");
    let next = crate::node::cases::change_status(
        core,
        tx,
        &row,
        CaseStatus::Received,
        to,
        &why,
        actor,
        now,
        None,
    )
    .await?;
    effects.wake.extend(next);
    Ok(())
}

/// Refuses one report with a signed receipt saying why, and its audit
/// entry.
#[allow(clippy::too_many_arguments)]
async fn refuse(
    core: &Core,
    tx: &mut Tx,
    r: &OpenedReport,
    actor: &str,
    verdict: Verdict,
    reason_code: &'static str,
    reason: &str,
    now: i64,
) -> Result<ForwardAnswer, NodeError> {
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
    Ok(ForwardAnswer {
        verdict,
        message: reason.to_owned(),
        receipt: Some(receipt),
    })
}
