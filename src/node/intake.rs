//! Intake: an analyst's submission is validated, routed, signed, and
//! committed (report, outbox entries and audit entry in one transaction)
//! before the analyst gets an answer.

use crate::audit;
use crate::geo::dns::Resolved;
use crate::identity::{NodeId, PeerIdentity};
use crate::node::cases::{self, CaseView};
use crate::node::route::{decide, resolve_raw};
use crate::node::{Core, NodeError, background};
use crate::pb;
use crate::report::validate::{self, Submission};
use crate::report::{Direction, Priority};
use crate::routing::{RouteDecision, RouteKind};
use crate::store::{JustStored, NewReport, Tx};
use crate::wire;
use crate::wire::stored::{StoredPayload, payload_column, route_column};

pub struct Submitted {
    pub report_id: String,
    /// The route as signed into the report.
    pub route: pb::RouteDecision,
    /// True when this was a repeat of an earlier submission (same key).
    pub repeat: bool,
    /// The case as stored; `None` only if reading it back failed after the
    /// commit (the report is stored all the same).
    pub case: Option<CaseView>,
}

/// Submissions committed together by the bulk intake, at most.
pub const BULK_GROUP: usize = 256;

/// A submission validated, routed and signed, ready to be stored.
pub struct Prepared {
    submission_id: String,
    report_id: String,
    draft: crate::report::ReportDraft,
    route: RouteDecision,
    payload: Vec<u8>,
    digest: [u8; 32],
    envelope: Vec<u8>,
    created_at_ms: i64,
    /// The other reports of its case family (content hosted in several
    /// countries leading to different places: one report per place),
    /// stored with it when it is new.
    family: Vec<Prepared>,
}

/// A submission that was refused before anything was stored: its audit
/// entry is still to be written.
pub struct Refused {
    pub error: NodeError,
    code: &'static str,
    fingerprint: Vec<u8>,
}

/// One stored submission of a batch.
#[derive(Clone)]
pub struct Stored {
    pub seq: i64,
    pub report_id: String,
    /// The route as signed into the report.
    pub route: pb::RouteDecision,
    /// True when this was a repeat of an earlier submission (same key).
    pub repeat: bool,
    /// A new report's rows as committed, when asked for (`Rows::Keep`).
    pub rows: Option<Box<JustStored>>,
}

/// Whether a batch's new reports come back with their rows: single
/// submissions answer with their case; the bulk intake does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rows {
    Keep,
    Drop,
}

/// Validates, routes and signs a submission: CPU only, no IO (`resolved`
/// is what DNS said about its host names, asked before).
pub fn prepare(
    core: &Core,
    submission: Submission<'_>,
    submission_id: &str,
    now: i64,
    resolved: Option<&[Resolved]>,
) -> Result<Prepared, Refused> {
    // A refusal's audit entry records a digest of every field (never the
    // fields in clear).
    let refused = |e: crate::report::InvalidInput| Refused {
        code: e.code,
        fingerprint: submission.fingerprint(submission_id),
        error: e.into(),
    };
    if !submission_id.is_empty() {
        validate::report_id(submission_id).map_err(|mut e| {
            e.field = "submission_id".into();
            refused(e)
        })?;
    }
    let draft = validate::draft(&submission).map_err(refused)?;
    let urls = draft
        .urls
        .iter()
        .map(|u| validate::url(u).map_err(refused))
        .collect::<Result<Vec<_>, _>>()?;
    let mut route = decide(core, &urls, &draft, resolved);
    let mut parts = std::mem::take(&mut route.parts).into_iter();
    if let Some(first) = parts.next() {
        // One report per place, linked by the family id in each signed
        // route; the first answers the submission.
        let family = Some(uuid::Uuid::now_v7().to_string());
        let with_family = |mut r: RouteDecision| {
            r.family = family.clone();
            r
        };
        let others = parts
            .map(|r| signed(core, "", draft.clone(), with_family(r), now))
            .collect();
        let mut p = signed(core, submission_id, draft, with_family(first), now);
        p.family = others;
        return Ok(p);
    }
    Ok(signed(core, submission_id, draft, route, now))
}

/// A validated submission with its route, signed as a report of this node.
fn signed(
    core: &Core,
    submission_id: &str,
    draft: crate::report::ReportDraft,
    route: RouteDecision,
    now: i64,
) -> Prepared {
    let report_id = uuid::Uuid::now_v7().to_string();
    let payload = pb::ReportPayload {
        report_id: report_id.clone(),
        origin: core.me.to_string(),
        created_at_ms: now,
        urls: draft.urls.clone(),
        category: draft.category.as_str().to_owned(),
        hosting: Some(crate::wire::route::evidence_to_pb(&route.evidence)),
        hashes: draft
            .hashes
            .iter()
            .map(|h| pb::MediaHash {
                algorithm: h.algorithm.clone(),
                value: h.value.clone(),
            })
            .collect(),
        priority: crate::wire::route::priority_to_pb(draft.priority) as i32,
        notes: draft.notes.clone(),
        route: Some(crate::wire::route::route_to_pb(&route)),
        classification: draft.classification.wire().to_owned(),
    };
    let signed = wire::sign(
        &core.key(),
        &core.me,
        crate::crypto::signing::Purpose::Report,
        &payload,
    );
    let digest = wire::digest(&signed.payload);
    let payload = signed.payload.clone();
    let envelope = prost::Message::encode_to_vec(&pb::Envelope {
        report: Some(signed),
        hops: vec![],
    });
    Prepared {
        submission_id: submission_id.to_owned(),
        report_id,
        draft,
        route,
        payload,
        digest,
        envelope,
        created_at_ms: now,
        family: Vec::new(),
    }
}

impl Refused {
    /// Writes the refusal's audit entry and gives the error to answer with.
    pub async fn audit(self, core: &Core, actor: &str) -> NodeError {
        core.audit_refusal(actor, self.code, &self.error.to_string(), &self.fingerprint)
            .await;
        self.error
    }
}

/// Group commit for single submissions: concurrent bulk submissions are
/// stored together, one transaction for all that queued while the previous
/// group committed. Each is answered only after its group's commit.
#[derive(Default)]
pub struct GroupCommit {
    queue: std::sync::Mutex<GroupQueue>,
}

/// A queued submission: its operator, itself, and where its answer goes.
type Waiting = (
    String,
    Prepared,
    tokio::sync::oneshot::Sender<Result<Stored, NodeError>>,
);

#[derive(Default)]
struct GroupQueue {
    waiting: Vec<Waiting>,
    /// A committer task is running and will take what is waiting.
    committing: bool,
}

impl GroupCommit {
    /// Queues a prepared bulk submission and waits for its group's commit.
    async fn submit(
        core: &std::sync::Arc<Core>,
        actor: String,
        p: Prepared,
    ) -> Result<Stored, NodeError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start = {
            let mut q = core.group.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.waiting.push((actor, p, tx));
            !std::mem::replace(&mut q.committing, true)
        };
        if start {
            // Its own task: a caller that goes away never strands the others.
            let core = core.clone();
            tokio::spawn(async move { Self::commit_all(&core).await });
        }
        rx.await
            .unwrap_or(Err(NodeError::Internal("the group commit stopped")))
    }

    async fn commit_all(core: &Core) {
        loop {
            let group: Vec<_> = {
                let mut q = core.group.queue.lock().unwrap_or_else(|e| e.into_inner());
                if q.waiting.is_empty() {
                    q.committing = false;
                    return;
                }
                let n = q.waiting.len().min(core.urgent.bulk_chunk(BULK_GROUP));
                q.waiting.drain(..n).collect()
            };
            // One transaction per operator (its submission ids are its own).
            let mut by_actor: Vec<(String, Vec<Prepared>, Vec<_>)> = Vec::new();
            for (actor, p, tx) in group {
                match by_actor.iter_mut().find(|(a, _, _)| *a == actor) {
                    Some((_, ps, txs)) => {
                        ps.push(p);
                        txs.push(tx);
                    }
                    None => by_actor.push((actor, vec![p], vec![tx])),
                }
            }
            for (actor, ps, txs) in by_actor {
                match store_batch(core, &actor, ps, false, Rows::Keep).await {
                    Ok(stored) => {
                        for (tx, s) in txs.into_iter().zip(stored) {
                            let _ = tx.send(Ok(s));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = ?e, "a group of submissions could not be stored");
                        for tx in txs {
                            let _ = tx.send(Err(NodeError::Store(
                                crate::store::StoreError::Invariant(
                                    "the group's transaction failed".into(),
                                ),
                            )));
                        }
                    }
                }
            }
        }
    }
}

/// One submission of a bulk intake, as its edge received it: the
/// submission it carries (borrowed, not copied) and its idempotency key.
pub trait SubmissionSource: Send + 'static {
    fn submission(&self) -> Submission<'_>;
    fn submission_id(&self) -> &str;
}

pub async fn submit(
    core: &std::sync::Arc<Core>,
    operator: &PeerIdentity,
    submission: Submission<'_>,
    submission_id: &str,
) -> Result<Submitted, NodeError> {
    let actor = operator.to_string();
    // Host names are resolved first (async, bounded, each question within
    // its deadline): other submissions go on meanwhile.
    let resolved = resolve_raw(
        core,
        submission.urls.iter().map(String::as_str),
        submission.priority == Some(Priority::Urgent),
    )
    .await;
    let prepared = match prepare(
        core,
        submission,
        submission_id,
        Core::now_ms(),
        resolved.as_deref(),
    ) {
        Ok(p) => p,
        Err(refused) => return Err(refused.audit(core, &actor).await),
    };
    // Urgent reports go alone and at once; bulk ones join a group.
    let stored = if prepared.draft.priority == Priority::Urgent {
        store_batch(core, &actor, vec![prepared], true, Rows::Keep)
            .await?
            .pop()
            .ok_or(NodeError::Internal("a stored submission has no answer"))?
    } else {
        GroupCommit::submit(core, actor, prepared).await?
    };
    if stored.repeat {
        return repeat(core, stored.seq).await;
    }
    // The report is committed: whatever happens now, the analyst must get
    // its id, or a retry would create a second report.
    let case = match stored.rows {
        Some(rows) => cases::view_just_stored(core, *rows).await,
        None => cases::view_by_seq(core, stored.seq).await,
    };
    let case = match case {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(report_id = %stored.report_id, error = %e, "stored, but cannot read the case back");
            None
        }
    };
    Ok(Submitted {
        report_id: stored.report_id,
        route: stored.route,
        repeat: false,
        case,
    })
}

/// Bulk intake: many submissions of one operator, prepared off the async
/// threads and committed in one group (one transaction, one statement per
/// kind of row). Answers in the order given, nothing before the group is on
/// disk. `Err` when the group could not be stored: none of it was.
pub async fn submit_many<R: SubmissionSource>(
    core: &std::sync::Arc<Core>,
    operator: &PeerIdentity,
    requests: Vec<R>,
) -> Result<Vec<Result<Stored, NodeError>>, NodeError> {
    let actor = operator.to_string();
    let now = Core::now_ms();
    // Signing a group is CPU work: off the async threads, at a lower
    // priority unless the group holds an urgent report.
    let any_urgent = requests
        .iter()
        .any(|r| r.submission().priority == Some(Priority::Urgent));
    // Every host name of the group, resolved once, concurrently; the
    // urgent reports' names first in line.
    let resolved = {
        let urls = |urgent: bool| -> Vec<&str> {
            requests
                .iter()
                .filter(|r| (r.submission().priority == Some(Priority::Urgent)) == urgent)
                .flat_map(|r| r.submission().urls.iter().map(String::as_str))
                .collect()
        };
        let (first, rest) = tokio::join!(
            resolve_raw(core, urls(true), true),
            resolve_raw(core, urls(false), false)
        );
        match (first, rest) {
            (Some(mut a), Some(b)) => {
                a.extend(b);
                Some(a)
            }
            (a, b) => a.or(b),
        }
    };
    let prepared = {
        let core = core.clone();
        background::run_for(any_urgent, move || {
            requests
                .iter()
                .map(|r| {
                    prepare(
                        &core,
                        r.submission(),
                        r.submission_id(),
                        now,
                        resolved.as_deref(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|_| NodeError::Internal("intake task failed"))?
    };
    let mut answers: Vec<Option<Result<Stored, NodeError>>> = Vec::with_capacity(prepared.len());
    let mut ok = Vec::new();
    let mut slots = Vec::new();
    for p in prepared {
        match p {
            Ok(p) => {
                slots.push(answers.len());
                answers.push(None);
                ok.push(p);
            }
            Err(refused) => answers.push(Some(Err(refused.audit(core, &actor).await))),
        }
    }
    if !ok.is_empty() {
        let urgent = ok.iter().any(|p| p.draft.priority == Priority::Urgent);
        // Bulk groups go in shorter transactions while urgent reports are
        // about (`UrgentGate::bulk_chunk`); each is durable when it commits.
        let piece = if urgent {
            ok.len()
        } else {
            core.urgent.bulk_chunk(ok.len())
        };
        let mut slots = slots.into_iter();
        let mut ok = ok.into_iter().peekable();
        while ok.peek().is_some() {
            let part: Vec<Prepared> = ok.by_ref().take(piece.max(1)).collect();
            match store_batch(core, &actor, part, urgent, Rows::Drop).await {
                // `stored` first: zip must not take a slot it has no answer
                // for.
                Ok(stored) => {
                    for (s, slot) in stored.into_iter().zip(slots.by_ref()) {
                        answers[slot] = Some(Ok(s));
                    }
                }
                // What earlier pieces stored stays answered (it is on
                // disk); this piece and the rest are not.
                Err(e) => {
                    tracing::error!(error = ?e, "a group of submissions could not be stored");
                    let mut e = Some(e);
                    for slot in slots.by_ref() {
                        answers[slot] = Some(Err(e.take().unwrap_or(NodeError::Store(
                            crate::store::StoreError::Invariant(
                                "the transaction of this submission failed".into(),
                            ),
                        ))));
                    }
                    break;
                }
            }
        }
    }
    Ok(answers
        .into_iter()
        .map(|a| a.unwrap_or(Err(NodeError::Internal("unanswered submission"))))
        .collect())
}

/// Stores prepared submissions in one transaction: report, destinations,
/// outbox entries, case keys, history and audit entry of each, with one
/// statement per kind of row.
async fn store_batch(
    core: &Core,
    actor: &str,
    batch: Vec<Prepared>,
    urgent: bool,
    rows: Rows,
) -> Result<Vec<Stored>, NodeError> {
    let _urgent = urgent.then(|| core.urgent.enter());
    let mut tx = if urgent {
        core.store.begin().await?
    } else {
        core.begin_bulk().await?
    };
    let mut batch = batch;
    let plan = plan(&mut tx, actor, &batch).await?;
    let (seqs, mut kept) = insert_fresh(core, &mut tx, &batch, &plan.fresh, rows).await?;
    let next_hops =
        queue_and_audit(core, &mut tx, actor, &batch, &plan.fresh, &seqs, &mut kept).await?;
    // The other reports of each new report's case family, stored with it.
    let family: Vec<Prepared> = plan
        .fresh
        .iter()
        .flat_map(|&i| std::mem::take(&mut batch[i].family))
        .collect();
    let all: Vec<usize> = (0..family.len()).collect();
    let (family_seqs, family_hops) = if family.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        let (seqs, mut none) = insert_fresh(core, &mut tx, &family, &all, Rows::Drop).await?;
        let hops = queue_and_audit(core, &mut tx, actor, &family, &all, &seqs, &mut none).await?;
        (seqs, hops)
    };
    crate::faults::crash_point("intake-before-commit");
    tx.commit().await?;
    announce(core, &batch, &plan.fresh, &seqs, &next_hops);
    announce(core, &family, &all, &family_seqs, &family_hops);
    answers(&batch, &plan, &seqs, kept)
}

/// How each submission of a batch is answered.
enum Answer {
    /// A new report: the `k`th of `Plan::fresh`.
    New(usize),
    /// A repeat of a submission stored earlier (same key): that report.
    Earlier(i64),
    /// A repeat of the `k`th new report of this very batch.
    SameBatch(usize),
}

struct Plan {
    answers: Vec<Answer>,
    /// Indices into the batch of the new reports, in order.
    fresh: Vec<usize>,
    /// The reports earlier submissions stored, by sequence number.
    repeated: std::collections::HashMap<i64, crate::store::ReportRow>,
}

/// Which submissions are new: those whose key was not seen before, in the
/// database or earlier in this batch. Checked inside the write
/// transaction, so two concurrent retries of one submission create one
/// report.
async fn plan(tx: &mut Tx, actor: &str, batch: &[Prepared]) -> Result<Plan, NodeError> {
    let keys: Vec<&str> = batch
        .iter()
        .map(|p| p.submission_id.as_str())
        .filter(|k| !k.is_empty())
        .collect();
    let earlier: std::collections::HashMap<String, i64> = if keys.is_empty() {
        Default::default()
    } else {
        tx.find_submissions(actor, &keys)
            .await?
            .into_iter()
            .collect()
    };
    let repeats: Vec<i64> = earlier.values().copied().collect();
    let repeated = if repeats.is_empty() {
        Default::default()
    } else {
        tx.reports_by_seqs(&repeats)
            .await?
            .into_iter()
            .map(|r| (r.seq, r))
            .collect()
    };
    let mut fresh = Vec::with_capacity(batch.len());
    let mut first_in_batch: std::collections::HashMap<&str, usize> = Default::default();
    let mut answers = Vec::with_capacity(batch.len());
    for (i, p) in batch.iter().enumerate() {
        if !p.submission_id.is_empty() {
            if let Some(seq) = earlier.get(&p.submission_id) {
                answers.push(Answer::Earlier(*seq));
                continue;
            }
            if let Some(first) = first_in_batch.get(p.submission_id.as_str()) {
                answers.push(Answer::SameBatch(*first));
                continue;
            }
            first_in_batch.insert(&p.submission_id, fresh.len());
        }
        answers.push(Answer::New(fresh.len()));
        fresh.push(i);
    }
    Ok(Plan {
        answers,
        fresh,
        repeated,
    })
}

/// Inserts the new reports, one statement; returns their sequence
/// numbers, in order.
async fn insert_fresh(
    core: &Core,
    tx: &mut Tx,
    batch: &[Prepared],
    fresh: &[usize],
    keep: Rows,
) -> Result<(Vec<i64>, Vec<JustStored>), NodeError> {
    let new: Vec<&Prepared> = fresh.iter().filter_map(|&i| batch.get(i)).collect();
    let route_json: Vec<String> = new
        .iter()
        .map(|p| {
            route_column(
                p.route.kind.as_str(),
                &p.route.destinations,
                &p.route.reason,
            )
        })
        .collect();
    let rows: Vec<NewReport> = new
        .iter()
        .zip(&route_json)
        .map(|(p, route)| {
            let (direction, status) = placement(p.route.kind);
            NewReport {
                report_id: &p.report_id,
                origin: core.me.as_str(),
                direction: direction.as_str(),
                category: p.draft.category.as_str(),
                priority: p.draft.priority.as_str(),
                status,
                hosting_country: p.route.evidence.country.as_deref(),
                route,
                payload: payload_column(&p.payload, &p.envelope),
                payload_digest: &p.digest,
                envelope: &p.envelope,
                received_from: None,
                created_at_ms: p.created_at_ms,
                now_ms: p.created_at_ms,
                relay: false,
                receipt: None,
                joined_to: None,
                family: p.route.family.as_deref(),
            }
        })
        .collect();
    let seqs = tx.insert_reports(&rows).await?;
    if seqs.len() != rows.len() {
        return Err(NodeError::Internal("a report was not inserted"));
    }
    let kept = match keep {
        Rows::Keep => rows
            .iter()
            .zip(&seqs)
            .map(|(r, &seq)| JustStored {
                row: r.as_stored(seq),
                deliveries: Vec::new(),
                history: Vec::new(),
            })
            .collect(),
        Rows::Drop => Vec::new(),
    };
    Ok((seqs, kept))
}

/// For each new report: its deliveries (a destination reached through
/// relays is handed to the outermost one), one outbox entry per next hop
/// (its envelope carries the report to every destination behind it), for
/// a case worked here its content keys and first history entry, its audit
/// entry, and its submission key. Returns each report's next hops; adds
/// each report's deliveries and history to `kept` when it holds its rows.
async fn queue_and_audit(
    core: &Core,
    tx: &mut Tx,
    actor: &str,
    batch: &[Prepared],
    fresh: &[usize],
    seqs: &[i64],
    kept: &mut [JustStored],
) -> Result<Vec<Vec<NodeId>>, NodeError> {
    let directory = core.directory();
    let now = Core::now_ms();
    let mut deliveries = Vec::new();
    let mut keys_rows: Vec<(i64, String)> = Vec::new();
    let mut statuses = Vec::new();
    let mut entries = Vec::with_capacity(fresh.len());
    let mut next_hops_of = Vec::with_capacity(fresh.len());
    let new = fresh.iter().filter_map(|&i| batch.get(i));
    for (p, &seq) in new.clone().zip(seqs) {
        let route = &p.route;
        let mut next_hops: Vec<NodeId> = Vec::new();
        for dest in &route.destinations {
            let hop = directory.next_hop(&core.me, dest);
            deliveries.push((seq, dest.as_str(), hop.clone()));
            if !next_hops.contains(&hop) {
                next_hops.push(hop);
            }
        }
        if placement(route.kind).0 == Direction::Local {
            // A case worked here: reports of the same content from other
            // hotlines join it.
            keys_rows.extend(case_keys(p).into_iter().map(|k| (seq, k)));
            statuses.push(crate::store::NewStatus {
                seq,
                update_id: uuid::Uuid::now_v7().to_string(),
                status: "received",
                reason: &route.reason,
                actor,
            });
        }
        entries.push(submitted_entry(core, actor, p, &next_hops));
        next_hops_of.push(next_hops);
    }
    let delivery_rows: Vec<crate::store::NewDelivery> = deliveries
        .iter()
        .map(|(seq, dest, hop)| crate::store::NewDelivery {
            seq: *seq,
            destination: dest,
            next_hop: Some(hop.as_str()),
        })
        .collect();
    tx.insert_deliveries(&delivery_rows).await?;
    if !kept.is_empty() {
        keep_deliveries_and_history(kept, &delivery_rows, &statuses, now);
    }
    let mut outbox = Vec::new();
    for ((p, &seq), hops) in new.clone().zip(seqs).zip(&next_hops_of) {
        for hop in hops {
            outbox.push(crate::store::NewOutbox {
                peer: hop.as_str(),
                kind: "report",
                urgent: p.draft.priority == Priority::Urgent,
                report_seq: seq,
                // The envelope as stored in the report's row.
                body: crate::store::BODY_IS_ENVELOPE,
                returned: crate::store::OUTBOX_SIGNED,
            });
        }
    }
    tx.enqueue_many(&outbox, now).await?;
    if !keys_rows.is_empty() {
        let keys: Vec<(i64, &str)> = keys_rows.iter().map(|(s, k)| (*s, k.as_str())).collect();
        tx.insert_case_keys_many(&keys).await?;
    }
    tx.insert_statuses(&statuses, now).await?;
    tx.audit_many(&entries, now).await?;
    let submissions: Vec<(&str, i64)> = new
        .zip(seqs)
        .filter(|(p, _)| !p.submission_id.is_empty())
        .map(|(p, seq)| (p.submission_id.as_str(), *seq))
        .collect();
    if !submissions.is_empty() {
        tx.insert_submissions(actor, &submissions).await?;
    }
    Ok(next_hops_of)
}

/// Adds to each kept report (by its seq) the deliveries and history
/// entries its transaction stored, in the order the store reads them.
fn keep_deliveries_and_history(
    kept: &mut [JustStored],
    deliveries: &[crate::store::NewDelivery<'_>],
    statuses: &[crate::store::NewStatus<'_>],
    at_ms: i64,
) {
    for k in kept.iter_mut() {
        let seq = k.row.seq;
        k.deliveries = deliveries
            .iter()
            .filter(|d| d.seq == seq)
            .map(crate::store::NewDelivery::as_stored)
            .collect();
        k.deliveries
            .sort_by(|a, b| a.destination.cmp(&b.destination));
        k.deliveries.dedup_by(|a, b| a.destination == b.destination);
        k.history = statuses
            .iter()
            .filter(|h| h.seq == seq)
            .map(|h| h.as_stored(at_ms))
            .collect();
    }
}

/// What a case stores to be found again: its content keys (normalised
/// URLs, exact hashes, PDQ hashes, which `report::near` reads back).
fn case_keys(p: &Prepared) -> Vec<String> {
    let (exact, _) = crate::report::content::keys(
        &p.draft.urls,
        p.draft
            .hashes
            .iter()
            .map(|h| (h.algorithm.as_str(), h.value.as_str())),
    );
    exact
}

/// The audit entry of a submitted report: what it is, where it goes and
/// why (never its URLs).
fn submitted_entry(core: &Core, actor: &str, p: &Prepared, next_hops: &[NodeId]) -> audit::Entry {
    let route = &p.route;
    audit::Entry::new(
        "report.submitted",
        actor.to_owned(),
        format!("{}/{}", core.me, p.report_id),
        serde_json::json!({
            "category": p.draft.category.as_str(),
            "classification": p.draft.classification.as_str(),
            "priority": p.draft.priority.as_str(),
            "urls": p.draft.urls.len(),
            "payload_sha256": hex::encode(p.digest),
            "route": route.kind.as_str(),
            "destinations": route.destinations.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
            "next_hops": next_hops.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
            "country": route.evidence.country,
            "dataset": route.evidence.dataset,
            "dataset_date": route.evidence.dataset_date,
            "reason": route.reason,
            "withheld": route.withheld,
            "family": route.family,
        }),
    )
}

/// After the commit: watchers hear of the new cases, and each next hop's
/// worker is woken on the lane of the work queued for it.
fn announce(
    core: &Core,
    batch: &[Prepared],
    fresh: &[usize],
    seqs: &[i64],
    next_hops: &[Vec<NodeId>],
) {
    for &seq in seqs {
        core.case_changed(seq);
    }
    core.metrics
        .reports_submitted
        .fetch_add(fresh.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let mut woken: Vec<(&str, bool)> = Vec::new();
    for (p, hops) in fresh.iter().filter_map(|&i| batch.get(i)).zip(next_hops) {
        let urgent = p.draft.priority == Priority::Urgent;
        for hop in hops {
            if !woken.contains(&(hop.as_str(), urgent)) {
                woken.push((hop.as_str(), urgent));
            }
        }
        tracing::info!(report_id = %p.report_id, route = p.route.kind.as_str(), "report submitted");
    }
    for (hop, urgent) in woken {
        core.wake_lane(hop, urgent);
    }
}

/// The answers, in the order the submissions were given.
fn answers(
    batch: &[Prepared],
    plan: &Plan,
    seqs: &[i64],
    kept: Vec<JustStored>,
) -> Result<Vec<Stored>, NodeError> {
    let missing = || NodeError::Internal("a submission's answer is missing");
    let mut kept: Vec<Option<JustStored>> = kept.into_iter().map(Some).collect();
    let mut new_one = |k: usize, repeat: bool| -> Result<Stored, NodeError> {
        let p = plan
            .fresh
            .get(k)
            .and_then(|&i| batch.get(i))
            .ok_or_else(missing)?;
        Ok(Stored {
            seq: *seqs.get(k).ok_or_else(missing)?,
            report_id: p.report_id.clone(),
            route: crate::wire::route::route_to_pb(&p.route),
            repeat,
            // A repeat answers with the report as it is now.
            rows: if repeat {
                None
            } else {
                kept.get_mut(k).and_then(Option::take).map(Box::new)
            },
        })
    };
    plan.answers
        .iter()
        .map(|a| match a {
            Answer::New(k) => new_one(*k, false),
            Answer::SameBatch(k) => new_one(*k, true),
            Answer::Earlier(seq) => {
                let row = plan
                    .repeated
                    .get(seq)
                    .ok_or(NodeError::Internal("a submission names a missing report"))?;
                let payload = <pb::ReportPayload as prost::Message>::decode(row.payload())
                    .map_err(|_| NodeError::Internal("a stored report payload does not decode"))?;
                Ok(Stored {
                    seq: *seq,
                    report_id: row.report_id.clone(),
                    route: payload.route.unwrap_or_default(),
                    repeat: true,
                    rows: None,
                })
            }
        })
        .collect()
}

/// Where a report of this route kind lives here, and its first status.
fn placement(kind: RouteKind) -> (Direction, &'static str) {
    match kind {
        RouteKind::Local => (Direction::Local, "received"),
        RouteKind::NoHotline => (Direction::Outgoing, "no-hotline"),
        // Visible to analysts (`cases list --status held`), never sent.
        RouteKind::Held => (Direction::Outgoing, "held"),
        RouteKind::Peer | RouteKind::Fallback => (Direction::Outgoing, "queued"),
    }
}

/// The answer to a repeated submission: the report it created the first
/// time, as stored.
async fn repeat(core: &Core, seq: i64) -> Result<Submitted, NodeError> {
    let row = core
        .store
        .report_by_seq(seq)
        .await?
        .ok_or(NodeError::Internal("a submission names a missing report"))?;
    let payload = <pb::ReportPayload as prost::Message>::decode(row.payload())
        .map_err(|_| NodeError::Internal("a stored report payload does not decode"))?;
    let case = cases::view_by_seq(core, seq).await.ok();
    Ok(Submitted {
        report_id: row.report_id,
        route: payload.route.unwrap_or_default(),
        repeat: true,
        case,
    })
}
