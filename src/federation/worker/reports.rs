//! Sending a batch of claimed reports and settling the peer's answer: the
//! envelopes go in one call, every receipt is checked (off the async
//! threads, all at once), and each report is settled with the receipt —
//! delivered, relayed, or refused with the peer's reason — in short
//! transactions that let urgent work in between, then the node's watchers,
//! relays and metrics hear of it.

use prost::Message;

use crate::audit;
use crate::crypto::signing::Purpose;
use crate::identity::NodeId;
use crate::node::{Core, background};
use crate::pb;
use crate::store::{OutboxRow, Tx};
use crate::wire;

use super::DeliveryError;
use super::settle::{Outgoing, Settled, receipt_entry, settle_stored};
use super::transport::Transport;

/// What settling a batch did, acted on after its last commit.
#[derive(Default)]
struct Settlement {
    settled: usize,
    refused: u64,
    changed: Vec<i64>,
    /// Relays: the nodes a receipt was passed back to.
    wake_back: Vec<String>,
    /// Time from creation to receipt, per destination (origin only).
    took: Vec<(String, i64)>,
    /// Rows whose receipt was missing or invalid: retried.
    bad: Vec<OutboxRow>,
}

/// Sends `rows` to `peer` and settles its answer. Returns how many were
/// settled.
pub(super) async fn send_reports(
    core: &Core,
    peer: &NodeId,
    out: &mut Transport,
    rows: Vec<OutboxRow>,
) -> Result<usize, DeliveryError> {
    let decoded = decoded(rows);
    // Only reports with fields the previous protocol does not know need
    // the peer's protocol (asked, when not known yet).
    let newer = decoded.iter().any(|(_, env, p)| needs_copy(core, env, p));
    let (protocol, asked_now) = if newer {
        peer_protocol(core, peer, out).await
    } else {
        (crate::node::membership::PROTOCOL, false)
    };
    let (items, envelopes, copies) = outgoing(core, protocol, decoded);
    let rows: Vec<OutboxRow> = items.iter().map(|i| i.row.clone()).collect();
    let urgent = rows.first().is_some_and(|r| r.urgent == 1);
    let sent = std::time::Instant::now();
    crate::faults::crash_point("origin-after-commit-before-send");
    let response = match out.forward(pb::ForwardRequest { envelopes, urgent }).await {
        Ok(r) => r,
        Err(status) if newer && !asked_now && copies == 0 && previous_protocol_refusal(&status) => {
            // Taken for a peer of this protocol, it refused what the
            // previous one does not know: it was downgraded meanwhile.
            // Asked again before the next try, rather than refused.
            core.membership.forget_protocol(peer);
            return Err(
                super::fail(core, &rows, crate::node::state::bounded(status.message())).await,
            );
        }
        Err(status) => return Err(call_failed(core, &rows, status).await),
    };
    if response.results.len() != items.len() {
        let why = "peer answered with the wrong number of results";
        return Err(super::fail(core, &rows, why.into()).await);
    }
    let now = Core::now_ms();
    let opened = check_receipts(core, peer, &items, &response.results, urgent, now).await?;
    let batch = Batch {
        core,
        peer,
        items: &items,
        results: &response.results,
        opened: &opened,
        urgent,
        now,
    };
    let done = settle(&batch).await?;
    tell(core, peer, &done, sent);
    if !done.bad.is_empty() {
        let why = "peer returned a missing or invalid receipt";
        return Err(super::fail(core, &done.bad, why.into()).await);
    }
    Ok(done.settled)
}

/// The protocol `peer` speaks, as the directory exchange last saw it, or
/// else as it says in `NodeInfo` now (true: asked now). A peer that does
/// not answer is taken to speak this node's: the batch fails anyway.
async fn peer_protocol(core: &Core, peer: &NodeId, out: &mut Transport) -> (u32, bool) {
    if let Some(p) = core.membership.protocol_of(peer) {
        return (p, false);
    }
    match out.client.node_info(pb::NodeInfoRequest {}).await {
        Ok(info) => {
            core.membership.peer_info(peer, info.get_ref());
            let p = crate::node::membership::stated(info.get_ref().protocol_version);
            (p, true)
        }
        Err(_) => (crate::node::membership::PROTOCOL, false),
    }
}

/// A refusal of a report a node of the previous protocol would give: a
/// payload with fields it does not know is not canonical to it.
fn previous_protocol_refusal(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::InvalidArgument && status.message().contains("not canonical")
}

/// The claimed rows with their envelopes and report payloads decoded. A
/// row that does not decode (this node wrote it from an envelope it
/// signed, so: a damaged database) is skipped.
fn decoded(rows: Vec<OutboxRow>) -> Vec<(OutboxRow, pb::Envelope, pb::ReportPayload)> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let Ok(env) = pb::Envelope::decode(row.body.as_slice()) else {
            tracing::error!(outbox_id = row.id, "undecodable outbox row skipped");
            continue;
        };
        let payload = env
            .report
            .as_ref()
            .map(|s| s.payload.as_slice())
            .unwrap_or_default();
        let decoded = pb::ReportPayload::decode(payload).unwrap_or_default();
        out.push((row, env, decoded));
    }
    out
}

/// Whether a node of the previous protocol would need the previous
/// protocol's copy of this envelope: a report of this node (only its
/// origin can sign a copy) with fields that protocol does not know.
fn needs_copy(core: &Core, env: &pb::Envelope, p: &pb::ReportPayload) -> bool {
    env.hops.is_empty()
        && p.origin == core.me.as_str()
        && !wire::compat::known_to(crate::node::membership::OLDEST_PROTOCOL, p)
}

/// The envelopes to send, each with the report id and payload digest its
/// receipt must name, and how many are the previous protocol's copy of a
/// report of this node (`wire::compat`: for a peer of `protocol` 1,
/// signed anew without what it does not know).
fn outgoing(
    core: &Core,
    protocol: u32,
    rows: Vec<(OutboxRow, pb::Envelope, pb::ReportPayload)>,
) -> (Vec<Outgoing>, Vec<pb::Envelope>, usize) {
    let mut envelopes = Vec::with_capacity(rows.len());
    let mut items = Vec::with_capacity(rows.len());
    let mut copies = 0;
    for (row, mut env, decoded) in rows {
        let own = env.hops.is_empty() && decoded.origin == core.me.as_str();
        if let Some(copy) = own
            .then(|| wire::compat::copy_for(protocol, &decoded))
            .flatten()
        {
            let signed = wire::sign(&core.key(), &core.me, Purpose::Report, &copy);
            env.report = Some(signed);
            copies += 1;
        }
        let payload = env
            .report
            .as_ref()
            .map(|s| s.payload.as_slice())
            .unwrap_or_default();
        items.push(Outgoing {
            digest: wire::digest(payload),
            report_id: decoded.report_id,
            row,
        });
        envelopes.push(env);
    }
    if copies > 0 {
        tracing::debug!(
            copies,
            protocol,
            "sending the previous protocol's copy of reports"
        );
    }
    (items, envelopes, copies)
}

/// A failed call: the claims are given up. A batch the peer calls
/// malformed (INVALID_ARGUMENT) cannot succeed as it is: the lane then
/// tries its envelopes one at a time.
async fn call_failed(core: &Core, rows: &[OutboxRow], status: tonic::Status) -> DeliveryError {
    let shown = crate::node::state::bounded(&format!("{:?}: {}", status.code(), status.message()));
    let failed = super::fail(core, rows, shown.clone()).await;
    if status.code() == tonic::Code::InvalidArgument {
        let head = match rows {
            [one] => Some(Box::new(one.clone())),
            _ => None,
        };
        return DeliveryError::Refused(shown, head);
    }
    failed
}

/// Opens every receipt of the answer: the peer's signature (a batch
/// signature checked once), and the report id and digest it names. `None`
/// for a missing or invalid one. Off the async threads, at a lower
/// priority for bulk batches (`node::background`).
async fn check_receipts(
    core: &Core,
    peer: &NodeId,
    items: &[Outgoing],
    results: &[pb::ForwardResult],
    urgent: bool,
    now: i64,
) -> Result<Vec<Option<pb::Receipt>>, DeliveryError> {
    let checks: Vec<(Option<pb::Signed>, String, [u8; 32])> = items
        .iter()
        .zip(results)
        .map(|(item, result)| (result.receipt.clone(), item.report_id.clone(), item.digest))
        .collect();
    let (peer, directory) = (peer.clone(), core.directory());
    background::run_for(urgent, move || {
        let mut cache = wire::BatchCache::default();
        checks
            .iter()
            .map(|(signed, id, digest)| {
                signed.as_ref().and_then(|s| {
                    wire::open_receipt_cached(
                        s,
                        &peer,
                        id,
                        digest,
                        &directory,
                        now,
                        Some(&mut cache),
                    )
                    .ok()
                })
            })
            .collect()
    })
    .await
    .map_err(|_| DeliveryError::Rpc("receipt check failed".into()))
}

/// A batch whose answer came back, with its checked receipts.
struct Batch<'a> {
    core: &'a Core,
    peer: &'a NodeId,
    items: &'a [Outgoing],
    results: &'a [pb::ForwardResult],
    opened: &'a [Option<pb::Receipt>],
    urgent: bool,
    now: i64,
}

impl Batch<'_> {
    /// Bulk receipts are stored in short transactions that let urgent
    /// work take the writer in between.
    async fn begin(&self) -> Result<Tx, DeliveryError> {
        Ok(if self.urgent {
            self.core.store.begin().await?
        } else {
            self.core.begin_bulk().await?
        })
    }
}

/// Settles the whole batch. The common case — a report of this node
/// stored by the peer, its only destination through that peer — is
/// settled many at once with one statement per kind of row; the rest one
/// by one, in order.
async fn settle(b: &Batch<'_>) -> Result<Settlement, DeliveryError> {
    let mut done = Settlement::default();
    let (mut tx, handled) = settle_common(b, &mut done).await?;
    let mut in_tx = 0;
    for (i, item) in b.items.iter().enumerate() {
        if handled.contains(&i) {
            continue;
        }
        if in_tx == crate::node::inbound::BULK_CHUNK {
            tx.commit().await?;
            tx = b.begin().await?;
            in_tx = 0;
        }
        in_tx += 1;
        settle_one(b, &mut tx, i, item, &mut done).await?;
    }
    crate::faults::crash_point("origin-storing-receipt");
    tx.commit().await?;
    Ok(done)
}

/// The common case in chunks (each bulk chunk but the last commits on its
/// own; one that urgent work arrived during is undone and settled again
/// after it). Returns the transaction the rest go on in, and the indices
/// taken care of.
async fn settle_common(
    b: &Batch<'_>,
    done: &mut Settlement,
) -> Result<(Tx, std::collections::HashSet<usize>), DeliveryError> {
    let step = if b.urgent {
        b.items.len().max(1)
    } else {
        b.core.urgent.bulk_chunk(crate::node::inbound::BULK_CHUNK)
    };
    let mut tx = b.begin().await?;
    let mut handled = std::collections::HashSet::new();
    let (mut start, mut yielded) = (0, false);
    while start < b.items.len() {
        let range = start..(start + step).min(b.items.len());
        let end = range.end;
        let fast: Settled = settle_stored(
            b.core, &mut tx, b.peer, b.items, b.results, b.opened, range, b.now,
        )
        .await?;
        if end < b.items.len() {
            if !b.urgent && !yielded && b.core.bulk_yields() {
                tx.rollback().await?;
                yielded = true;
                tx = b.begin().await?;
                continue;
            }
            tx.commit().await?;
            tx = b.begin().await?;
        }
        yielded = false;
        start = end;
        for (i, current) in &fast.settled {
            done.took
                .push((b.peer.to_string(), b.now - current.created_at_ms));
            if let Some(item) = b.items.get(*i) {
                done.changed.push(item.row.report_seq);
            }
            done.settled += 1;
        }
        handled.extend(fast.handled);
    }
    Ok((tx, handled))
}

/// Settles one item: its receipt checked, the row dequeued (unless another
/// replica settled it), each destination it was for finished, a relay's
/// receipt passed back, audited.
async fn settle_one(
    b: &Batch<'_>,
    tx: &mut Tx,
    i: usize,
    item: &Outgoing,
    done: &mut Settlement,
) -> Result<(), DeliveryError> {
    let (peer, now) = (b.peer, b.now);
    let result = b.results.get(i);
    let receipt = b
        .opened
        .get(i)
        .cloned()
        .flatten()
        .and_then(|r| result.and_then(|res| res.receipt.as_ref()).map(|s| (s, r)));
    let Some((signed, receipt)) = receipt else {
        invalid_receipt(b, tx, item, result).await?;
        done.bad.push(item.row.clone());
        return Ok(());
    };
    let relayed = receipt.outcome == pb::ReceiptOutcome::Relayed as i32;
    let state = if receipt.outcome == pb::ReceiptOutcome::Stored as i32 || relayed {
        "delivered"
    } else {
        "refused"
    };
    if !tx.dequeue(item.row.id).await? {
        return Ok(());
    }
    let seq = item.row.report_seq;
    let Some(current) = tx.report_by_seq(seq).await? else {
        return Ok(());
    };
    done.refused += u64::from(state == "refused");
    if state == "refused" {
        let event = crate::node::alerts::events::delivery_refused(
            &current,
            peer.as_str(),
            &receipt.reason_code,
        );
        crate::node::alerts::raise_in(b.core, tx, &event).await?;
    }
    let finished = finish_destinations(b, tx, seq, signed, &receipt, state).await?;
    if current.origin == b.core.me.as_str() && state == "delivered" {
        for dest in &finished {
            done.took.push((dest.clone(), now - current.created_at_ms));
        }
    }
    if current.status == "queued" && !finished.is_empty() {
        tx.set_status(seq, state, now).await?;
    }
    // A relay passes the destination's own receipt back towards the
    // origin.
    if current.origin != b.core.me.as_str() && (!finished.is_empty() || state == "refused") {
        let ret = pb::Returned {
            kind: pb::ReturnedKind::Receipt as i32,
            item: Some(signed.clone()),
            hops: vec![],
        };
        crate::node::relay::pass_back(b.core, tx, &current, &ret, peer.as_str(), now)
            .await
            .map_err(|_| DeliveryError::Rpc("cannot queue a receipt back".into()))?;
        if let Some(prev) = &current.received_from {
            done.wake_back.push(prev.clone());
        }
    }
    let subject = format!("{}/{}", current.origin, item.report_id);
    let outcome = if relayed { "relayed" } else { state };
    let entry = receipt_entry(peer, &subject, outcome, &receipt, signed, item.row.attempts);
    tx.audit(&entry, now).await?;
    done.settled += 1;
    done.changed.push(seq);
    Ok(())
}

/// A missing or invalid receipt: audited; the row is retried.
async fn invalid_receipt(
    b: &Batch<'_>,
    tx: &mut Tx,
    item: &Outgoing,
    result: Option<&pb::ForwardResult>,
) -> Result<(), DeliveryError> {
    tracing::warn!(peer = %b.peer, report_id = %item.report_id, "missing or invalid receipt");
    let sha = result
        .and_then(|r| r.receipt.as_ref())
        .map(|r| hex::encode(wire::digest(&r.encode_to_vec())));
    tx.audit(
        &audit::Entry::new(
            "receipt.invalid",
            format!("node:{}", b.peer),
            format!("{}/{}", b.core.me, item.report_id),
            serde_json::json!({
                "code": result.map(|r| r.code),
                "sha256": sha,
            }),
        ),
        b.now,
    )
    .await?;
    Ok(())
}

/// Finishes every destination the envelope was for: the peer itself, and
/// those it is the next hop to (relayed on, or refused with why). Returns
/// the destinations finished as `state`.
async fn finish_destinations(
    b: &Batch<'_>,
    tx: &mut Tx,
    seq: i64,
    signed: &pb::Signed,
    receipt: &pb::Receipt,
    state: &str,
) -> Result<Vec<String>, DeliveryError> {
    let (peer, now) = (b.peer, b.now);
    let receipt_bytes = signed.encode_to_vec();
    let reason =
        (state == "refused").then(|| format!("{}: {}", receipt.reason_code, receipt.reason));
    let mut finished = Vec::new();
    for dest in tx.destinations_via(seq, peer.as_str()).await? {
        if dest == peer.as_str() {
            tx.finish_delivery(seq, &dest, state, &receipt_bytes, reason.as_deref(), now)
                .await?;
            finished.push(dest);
        } else if state == "refused" {
            let why = format!("relay {peer} refused: {}", reason.as_deref().unwrap_or(""));
            tx.finish_delivery(seq, &dest, "refused", &receipt_bytes, Some(&why), now)
                .await?;
        } else if receipt.relayed_to.contains(&dest) {
            tx.relayed_delivery(seq, &dest, &receipt_bytes, now).await?;
        } else {
            // The peer stored it but will not pass it on (its directory
            // disagrees with ours): shown, never silently lost.
            let why = format!("relay {peer} did not take it over for {dest}");
            tx.finish_delivery(seq, &dest, "refused", &receipt_bytes, Some(&why), now)
                .await?;
        }
    }
    Ok(finished)
}

/// After the last commit: watchers, the relays' previous hops, and the
/// delivery metrics.
fn tell(core: &Core, peer: &NodeId, done: &Settlement, sent: std::time::Instant) {
    for seq in &done.changed {
        core.case_changed(*seq);
    }
    for prev in &done.wake_back {
        core.wake(prev);
    }
    for (dest, ms) in &done.took {
        core.metrics.takedown("receipt", dest, *ms);
    }
    let latency = sent.elapsed();
    let delivered = (done.settled as u64).saturating_sub(done.refused);
    core.metrics
        .delivered(peer.as_str(), "delivered", delivered);
    core.metrics
        .delivered(peer.as_str(), "refused", done.refused);
    core.metrics.delivery_latency(peer.as_str(), latency);
    tracing::info!(peer = %peer, delivered = done.settled, latency_ms = latency.as_millis() as u64, "batch delivered");
}
