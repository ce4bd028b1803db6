//! The per-peer delivery worker.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::audit;
use crate::federation::backoff::Backoff;
use crate::identity::NodeId;
use crate::node::{Core, background};
use crate::pb;
use crate::pb::federation_client::FederationClient;
use crate::store::{OUTBOX_AMENDMENT, OUTBOX_RETURNED, OUTBOX_SIGNED, OutboxRow, StoreError};
use crate::wire;

/// How often an idle worker looks at its outbox even without a wake-up
/// (e.g. rows left by a previous run); at least twice per claim lease, so
/// a dead replica's rows are taken over soon after its lease lapsed.
const IDLE_POLL: Duration = Duration::from_secs(30);

/// Largest batch sent in one call (the receiver accepts 16 MiB).
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error("peer call failed: {0}")]
    Rpc(String),
    /// The peer refused the content of the batch as malformed
    /// (INVALID_ARGUMENT): retrying the same batch cannot succeed. With
    /// the row when the batch was that one row.
    #[error("peer refused the batch: {0}")]
    Refused(String, Option<Box<OutboxRow>>),
    #[error("storage failed")]
    Store(#[from] StoreError),
}

/// Two lanes per peer over one connection: urgent reports and status
/// updates never wait behind a bulk batch in flight.
pub async fn run(core: Arc<Core>, peer: NodeId, channel: Channel, shutdown: watch::Receiver<bool>) {
    let client = FederationClient::new(channel)
        .max_decoding_message_size(16 * 1024 * 1024)
        .max_encoding_message_size(16 * 1024 * 1024);
    let urgent = tokio::spawn(lane(
        core.clone(),
        peer.clone(),
        client.clone(),
        shutdown.clone(),
        true,
    ));
    let second = tokio::spawn(second_sender(
        core.clone(),
        peer.clone(),
        client.clone(),
        shutdown.clone(),
    ));
    lane(core, peer, client, shutdown, false).await;
    let _ = urgent.await;
    let _ = second.await;
}

/// A second sender of bulk reports, active while the bulk lane finds a
/// backlog: it claims its own batches (claimed rows are never claimed
/// twice), so one batch is stored here while the next is on the wire or
/// at the peer. Reports only: status updates keep their order in the one
/// bulk lane. On any failure it goes quiet and leaves retrying, backoff and
/// the peer's state to the bulk lane.
async fn second_sender(
    core: Arc<Core>,
    peer: NodeId,
    client: FederationClient<Channel>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(link) = core.peers.get(&peer).cloned() else {
        return;
    };
    let limit = core.config.delivery.batch_size;
    let mut out = Transport::new(client, true, core.config.delivery.request_timeout);
    loop {
        // Idle: no stream held open to the peer.
        out.close();
        tokio::select! {
            _ = link.backlog.notified() => {}
            _ = shutdown.changed() => return,
        }
        loop {
            if *shutdown.borrow() {
                return;
            }
            // Urgent reports still waiting: the bulk lane sends them first.
            if yield_to_urgent(&core, &peer).await {
                break;
            }
            match deliver_reports(&core, &peer, &mut out, limit, false).await {
                Ok(n) if n == limit => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::debug!(peer = %peer, error = %e, "second sender stops: the bulk lane retries");
                    break;
                }
            }
        }
    }
}

async fn lane(
    core: Arc<Core>,
    peer: NodeId,
    client: FederationClient<Channel>,
    mut shutdown: watch::Receiver<bool>,
    urgent: bool,
) {
    let Some(link) = core.peers.get(&peer).cloned() else {
        return;
    };
    // The urgent lane sends a few envelopes at a time, each as soon as it
    // can: one call each. The bulk lane streams its batches.
    let mut out = Transport::new(client, !urgent, core.config.delivery.request_timeout);
    let (wake, contact) = if urgent {
        (&link.wake_urgent, &link.contact_urgent)
    } else {
        (&link.wake, &link.contact)
    };
    let d = &core.config.delivery;
    let mut backoff = Backoff::new(d.retry_initial, d.retry_max);
    // Shrinks to 1 when the peer refuses a batch's content, to find the
    // envelope it refuses without holding the others back.
    let mut limit = d.batch_size;
    let idle_poll = IDLE_POLL.min(d.lease / 2);
    loop {
        if *shutdown.borrow() {
            return;
        }
        // Urgent reports the urgent lane has not sent after the wait go
        // out on this lane, before any bulk one.
        let urgent_left = !urgent && yield_to_urgent(&core, &peer).await;
        let result = if urgent_left {
            match deliver_reports(&core, &peer, &mut out, limit, true).await {
                Ok(0) => deliver_once(&core, &peer, &mut out, limit, urgent).await,
                other => other,
            }
        } else {
            deliver_once(&core, &peer, &mut out, limit, urgent).await
        };
        // Nothing more to send urgently, or the peer cannot take it now:
        // bulk work need not wait for this lane any longer.
        if urgent && matches!(result, Ok(0) | Err(_)) {
            core.urgent.release(peer.as_str());
        }
        if let Err(DeliveryError::Refused(reason, head)) = &result {
            if limit > 1 {
                limit = 1;
                continue;
            }
            // A single envelope the peer calls malformed: it is refused,
            // for the analyst to see, rather than blocking the queue.
            if let Some(row) = head
                && let Err(e) = refuse_row(&core, &peer, reason, row).await
            {
                tracing::error!(peer = %peer, error = %e, "cannot record a refused delivery");
            }
            continue;
        }
        if result.is_ok() {
            limit = d.batch_size;
        }
        match result {
            Ok(n) => {
                let now = Core::now_ms();
                link.update(|s| {
                    if n > 0 {
                        s.reachable = Some(true);
                        s.last_success_ms = Some(now);
                    }
                    s.failures = 0;
                    s.next_attempt_ms = None;
                });
                backoff.reset();
                if !urgent && n == limit {
                    link.backlog.notify_one();
                }
                if n == 0 {
                    // Idle: no stream held open to the peer.
                    out.close();
                    tokio::select! {
                        _ = wake.notified() => {}
                        _ = contact.notified() => {}
                        _ = tokio::time::sleep(idle_poll) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
            Err(e) => {
                let delay = backoff.next_delay(&mut rand::thread_rng());
                let now = Core::now_ms();
                let shown = e.to_string();
                core.metrics.delivery_failed(peer.as_str());
                link.update(|s| {
                    s.reachable = Some(false);
                    s.last_failure_ms = Some(now);
                    s.last_error = shown.chars().take(500).collect();
                    s.failures = backoff.failures();
                    s.next_attempt_ms = Some(now + delay.as_millis() as i64);
                });
                tracing::warn!(peer = %peer, error = %e, failures = backoff.failures(),
                    retry_in_ms = delay.as_millis() as u64, "delivery failed");
                // New work does not cut a backoff short (it would hammer a
                // peer that is down), but the peer contacting us does: it
                // is back.
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = contact.notified() => {
                        tracing::info!(peer = %peer, "peer contacted us: retrying now");
                        backoff.reset();
                    }
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

/// How a lane reaches its peer. With `streamed`, batches go one after
/// another on one `ForwardStream`, opened when first needed and closed when
/// the lane goes idle or anything goes wrong; a peer without it (an older
/// version: UNIMPLEMENTED) gets unary `Forward` calls from then on.
/// Without, every batch is a unary call.
struct Transport {
    client: FederationClient<Channel>,
    /// Whether this lane streams its batches when the peer can.
    wants_stream: bool,
    /// Whether it does now (false after the peer answered UNIMPLEMENTED,
    /// until the lane next goes idle: a peer may be upgraded meanwhile).
    streamed: bool,
    stream: Option<BatchStream>,
    /// A batch's deadline on the stream, as a unary call's (the channel's
    /// own timeout only covers a call until its response headers).
    timeout: Duration,
}

struct BatchStream {
    batches: tokio::sync::mpsc::Sender<pb::ForwardRequest>,
    answers: tonic::Streaming<pb::ForwardResponse>,
}

impl Transport {
    fn new(client: FederationClient<Channel>, streamed: bool, timeout: Duration) -> Transport {
        Transport {
            client,
            wants_stream: streamed,
            streamed,
            stream: None,
            timeout,
        }
    }

    /// Ends the open stream, if any (the peer sees it closed). The lane
    /// goes idle: a peer that did not offer the stream is asked again next
    /// time.
    fn close(&mut self) {
        self.stream = None;
        self.streamed = self.wants_stream;
    }

    /// Sends one batch and returns the peer's answer to it. On a stream
    /// that ended meanwhile (the peer restarted, or closed it shutting
    /// down) this fails like a unary call to a peer that went away, and the
    /// lane retries as it would then, on a new stream.
    async fn forward(
        &mut self,
        batch: pb::ForwardRequest,
    ) -> Result<pb::ForwardResponse, tonic::Status> {
        if !self.streamed {
            return self.client.forward(batch).await.map(|r| r.into_inner());
        }
        let deadline = self.timeout;
        let result = tokio::time::timeout(deadline, self.exchange(batch))
            .await
            .unwrap_or_else(|_| {
                Err(tonic::Status::deadline_exceeded(format!(
                    "the peer did not answer the batch within {} ms",
                    deadline.as_millis()
                )))
            });
        if result.is_err() {
            // Whatever went wrong, the next batch starts a new stream.
            self.close();
        }
        result
    }

    async fn exchange(
        &mut self,
        batch: pb::ForwardRequest,
    ) -> Result<pb::ForwardResponse, tonic::Status> {
        let gone = || tonic::Status::unavailable("the peer ended the batch stream");
        let stream = match &mut self.stream {
            Some(stream) => {
                if stream.batches.send(batch).await.is_err() {
                    return Err(gone());
                }
                stream
            }
            None => {
                // The first batch goes with the stream's opening, as a
                // unary call's request does: a peer whose answers are lost
                // on the way still receives (and stores) it. A copy is kept
                // for a peer that turns out not to offer the stream.
                let (batches, rx) = tokio::sync::mpsc::channel(1);
                let first = batch.clone();
                if batches.try_send(batch).is_err() {
                    return Err(gone());
                }
                match self
                    .client
                    .forward_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
                {
                    Ok(answers) => self.stream.insert(BatchStream {
                        batches,
                        answers: answers.into_inner(),
                    }),
                    Err(s) if s.code() == tonic::Code::Unimplemented => {
                        tracing::info!(
                            "the peer does not offer ForwardStream: unary calls from now on"
                        );
                        self.streamed = false;
                        return self.client.forward(first).await.map(|r| r.into_inner());
                    }
                    Err(s) => return Err(s),
                }
            }
        };
        stream.answers.message().await?.ok_or_else(gone)
    }
}

/// The bulk lane lets pending urgent work go first (e.g. when the peer
/// comes back), waiting up to two seconds for the urgent lane. True when
/// urgent reports are still waiting after that (the urgent lane is backing
/// off, or slow): the bulk lane then sends them itself, first.
async fn yield_to_urgent(core: &Core, peer: &NodeId) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut told = false;
    while std::time::Instant::now() < deadline {
        match core.store.urgent_pending(peer.as_str()).await {
            Ok(true) => {
                // The bulk lane is about to call the peer anyway: the urgent
                // lane need not sit out its backoff first (when the peer
                // comes back, the urgent reports go before the bulk ones).
                if !told && let Some(link) = core.peers.get(peer) {
                    link.contact_urgent.notify_one();
                    told = true;
                }
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            _ => return false,
        }
    }
    true
}

/// Claims this lane's next rows for this replica (see
/// `Store::claim_outbox`): of one kind, up to `limit`.
async fn claim(
    core: &Core,
    peer: &NodeId,
    kind: &str,
    urgent: bool,
    limit: i64,
) -> Result<Vec<OutboxRow>, StoreError> {
    let lease = i64::try_from(core.config.delivery.lease.as_millis()).unwrap_or(i64::MAX);
    let rows = core
        .store
        .claim_outbox(
            peer.as_str(),
            kind,
            urgent,
            limit,
            &core.replica,
            Core::now_ms(),
            lease,
        )
        .await?;
    let mut from: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.taken_from.as_deref())
        .filter(|h| *h != core.replica)
        .collect();
    if !from.is_empty() {
        let n = from.len();
        from.sort_unstable();
        from.dedup();
        tracing::warn!(peer = %peer, replica = %core.replica, rows = n, from = ?from,
            "took over claims whose lease lapsed (a replica died or stalled)");
    }
    Ok(rows)
}

/// Renews this replica's claims on a batch while it is in flight, every
/// third of the lease, until dropped.
struct Renewal(tokio::task::JoinHandle<()>);

impl Renewal {
    fn start(core: &Core, peer: &NodeId, ids: Vec<i64>) -> Renewal {
        let store = core.store.clone();
        let replica = core.replica.clone();
        let lease = core.config.delivery.lease;
        let peer = peer.clone();
        Renewal(tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                let until = Core::now_ms() + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
                match store.extend_claims(&ids, &replica, until).await {
                    Ok(n) if (n as usize) < ids.len() => tracing::warn!(peer = %peer,
                        %replica, held = n, claimed = ids.len(),
                        "claims lapsed while in flight: another replica may send them too"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(peer = %peer, error = %e, "cannot renew claims"),
                }
            }
        }))
    }
}

impl Drop for Renewal {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends one batch of this lane (reports first, then status updates),
/// claimed for this replica first. Returns how many outbox rows were
/// settled; claims on rows not settled are given up.
async fn deliver_once(
    core: &Core,
    peer: &NodeId,
    out: &mut Transport,
    limit: usize,
    urgent: bool,
) -> Result<usize, DeliveryError> {
    let n = deliver_reports(core, peer, out, limit, urgent).await?;
    if n > 0 {
        return Ok(n);
    }
    let rows = claim(core, peer, "status", urgent, limit as i64).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    send_claimed(core, peer, out, rows, false).await
}

/// Claims and sends one batch of this lane's reports.
async fn deliver_reports(
    core: &Core,
    peer: &NodeId,
    out: &mut Transport,
    limit: usize,
    urgent: bool,
) -> Result<usize, DeliveryError> {
    let limit = limit as i64;
    if !urgent {
        core.urgent.wait_idle().await;
    }
    let mut rows = claim(core, peer, "report", urgent, limit).await?;
    // Urgent reports claimed: bulk work here waits until they are settled.
    let _urgent = (urgent && !rows.is_empty()).then(|| core.urgent.enter());
    // Keep each call well under the peer's message size limit: one report
    // can be ~800 KiB (100 URLs of 8 KiB), so 64 of them would not fit.
    let mut total = 0usize;
    let fits = rows
        .iter()
        .take_while(|r| {
            total += r.body.len();
            total <= MAX_BATCH_BYTES
        })
        .count()
        .max(1);
    if fits < rows.len() {
        let rest: Vec<i64> = rows.drain(fits..).map(|r| r.id).collect();
        core.store
            .release_claims(&rest, &core.replica, None)
            .await?;
    }
    if rows.is_empty() {
        return Ok(0);
    }
    send_claimed(core, peer, out, rows, true).await
}

/// Sends claimed rows (reports or status updates), renewing their lease
/// while the call is in flight; whatever is not settled is released.
async fn send_claimed(
    core: &Core,
    peer: &NodeId,
    out: &mut Transport,
    rows: Vec<OutboxRow>,
    reports: bool,
) -> Result<usize, DeliveryError> {
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let renewal = Renewal::start(core, peer, ids.clone());
    let result = if reports {
        send_reports(core, peer, out, rows).await
    } else {
        send_statuses(core, peer, out, rows).await
    };
    drop(renewal);
    // Rows settled are gone; failed ones were released with their error;
    // whatever is left (skipped, or a store error) is given up here.
    if !matches!(&result, Ok(n) if *n == ids.len())
        && let Err(e) = core.store.release_claims(&ids, &core.replica, None).await
    {
        tracing::warn!(peer = %peer, error = %e, "cannot release claims (they lapse with their lease)");
    }
    result
}

/// Records a failed attempt on these rows and gives up their claims, so
/// any replica may retry them (this one after its backoff).
async fn fail(core: &Core, rows: &[OutboxRow], error: String) -> DeliveryError {
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let shown: String = error.chars().take(500).collect();
    if let Err(e) = core
        .store
        .release_claims(&ids, &core.replica, Some(&shown))
        .await
    {
        return e.into();
    }
    DeliveryError::Rpc(shown)
}

struct Outgoing {
    row: OutboxRow,
    report_id: String,
    digest: [u8; 32],
}

async fn send_reports(
    core: &Core,
    peer: &NodeId,
    out: &mut Transport,
    rows: Vec<OutboxRow>,
) -> Result<usize, DeliveryError> {
    let mut envelopes = Vec::with_capacity(rows.len());
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        // The body was written by this node from an envelope it signed.
        let Ok(env) = pb::Envelope::decode(row.body.as_slice()) else {
            tracing::error!(outbox_id = row.id, "undecodable outbox row skipped");
            continue;
        };
        let payload = env
            .report
            .as_ref()
            .map(|s| s.payload.as_slice())
            .unwrap_or_default();
        let report_id = pb::ReportPayload::decode(payload)
            .map(|p| p.report_id)
            .unwrap_or_default();
        items.push(Outgoing {
            digest: wire::digest(payload),
            report_id,
            row,
        });
        envelopes.push(env);
    }
    let rows: Vec<OutboxRow> = items.iter().map(|i| i.row.clone()).collect();
    let urgent = rows.first().is_some_and(|r| r.urgent == 1);
    let sent = std::time::Instant::now();
    crate::faults::crash_point("origin-after-commit-before-send");
    let response = match out.forward(pb::ForwardRequest { envelopes, urgent }).await {
        Ok(r) => r,
        Err(status) => {
            let shown = format!("{:?}: {}", status.code(), status.message());
            let failed = fail(core, &rows, shown.clone()).await;
            if status.code() == tonic::Code::InvalidArgument {
                let head = (rows.len() == 1).then(|| Box::new(rows[0].clone()));
                return Err(DeliveryError::Refused(shown, head));
            }
            return Err(failed);
        }
    };

    if response.results.len() != items.len() {
        return Err(fail(
            core,
            &rows,
            "peer answered with the wrong number of results".into(),
        )
        .await);
    }
    let now = Core::now_ms();
    // Bulk receipts are stored in short transactions that let urgent work
    // take the writer in between.
    let begin = async || {
        if urgent {
            core.store.begin().await
        } else {
            core.begin_bulk().await
        }
    };
    // Receipts are checked off the async threads, all at once.
    let opened: Vec<Option<pb::Receipt>> = {
        let checks: Vec<(Option<pb::Signed>, String, [u8; 32])> = items
            .iter()
            .zip(&response.results)
            .map(|(item, result)| (result.receipt.clone(), item.report_id.clone(), item.digest))
            .collect();
        let (peer, directory) = (peer.clone(), core.directory());
        // At a lower priority for bulk batches (`node::background`).
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
        .map_err(|_| DeliveryError::Rpc("receipt check failed".into()))?
    };
    let mut tx = begin().await?;
    let mut settled = 0;
    let mut refused_count = 0u64;
    let mut changed = Vec::new();
    let mut wake_back = Vec::new();
    let mut took = Vec::new();
    let mut bad = Vec::new();
    // The common case — a report of this node stored by the peer, its only
    // destination through that peer — is settled for many at once with
    // one statement per kind of row (bulk in short transactions, so urgent
    // work waits for one at most); the rest one by one below.
    let step = if urgent {
        items.len().max(1)
    } else {
        core.urgent.bulk_chunk(crate::node::inbound::BULK_CHUNK)
    };
    let mut handled = std::collections::HashSet::new();
    let (mut start, mut yielded) = (0, false);
    while start < items.len() {
        let range = start..(start + step).min(items.len());
        let end = range.end;
        let fast = settle_stored(
            core,
            &mut tx,
            peer,
            &items,
            &response.results,
            &opened,
            range,
            now,
        )
        .await?;
        // Each bulk chunk but the last commits on its own (the last with
        // the rest below). One that urgent work arrived during is undone
        // and settled again after it.
        if end < items.len() {
            if !urgent && !yielded && core.bulk_yields() {
                tx.rollback().await?;
                yielded = true;
                tx = begin().await?;
                continue;
            }
            tx.commit().await?;
            tx = begin().await?;
        }
        yielded = false;
        start = end;
        for &(i, ref current) in &fast.settled {
            took.push((peer.to_string(), now - current.created_at_ms));
            changed.push(items[i].row.report_seq);
            settled += 1;
        }
        handled.extend(fast.handled);
    }
    let mut in_tx = 0;
    for (i, (item, result)) in items.iter().zip(&response.results).enumerate() {
        if handled.contains(&i) {
            continue;
        }
        if in_tx == crate::node::inbound::BULK_CHUNK {
            tx.commit().await?;
            tx = begin().await?;
            in_tx = 0;
        }
        in_tx += 1;
        let receipt = opened[i]
            .clone()
            .and_then(|r| result.receipt.as_ref().map(|s| (s, r)));
        let Some((signed, receipt)) = receipt else {
            tracing::warn!(peer = %peer, report_id = %item.report_id, "missing or invalid receipt");
            tx.audit(
                &audit::Entry::new(
                    "receipt.invalid",
                    format!("node:{peer}"),
                    format!("{}/{}", core.me, item.report_id),
                    serde_json::json!({
                        "code": result.code,
                        "sha256": result.receipt.as_ref().map(|r| hex::encode(wire::digest(&r.encode_to_vec()))),
                    }),
                ),
                now,
            )
            .await?;
            bad.push(item.row.clone());
            continue;
        };
        let stored = receipt.outcome == pb::ReceiptOutcome::Stored as i32;
        let relayed = receipt.outcome == pb::ReceiptOutcome::Relayed as i32;
        let state = if stored || relayed {
            "delivered"
        } else {
            "refused"
        };
        refused_count += u64::from(state == "refused");
        let reason =
            (state == "refused").then(|| format!("{}: {}", receipt.reason_code, receipt.reason));
        if !tx.dequeue(item.row.id).await? {
            continue;
        }
        let receipt_bytes = signed.encode_to_vec();
        let seq = item.row.report_seq;
        let Some(current) = tx.report_by_seq(seq).await? else {
            continue;
        };
        // Every destination this envelope was for: the peer itself, and
        // those it is the next hop to.
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
        if current.origin == core.me.as_str() && state == "delivered" {
            for dest in &finished {
                took.push((dest.clone(), now - current.created_at_ms));
            }
        }
        if current.status == "queued" && !finished.is_empty() {
            tx.set_status(seq, state, now).await?;
        }
        // A relay passes the destination's own receipt back towards the
        // origin.
        if current.origin != core.me.as_str() && (!finished.is_empty() || state == "refused") {
            let ret = pb::Returned {
                kind: pb::ReturnedKind::Receipt as i32,
                item: Some(signed.clone()),
                hops: vec![],
            };
            crate::node::relay::pass_back(core, &mut tx, &current, &ret, peer.as_str(), now)
                .await
                .map_err(|_| DeliveryError::Rpc("cannot queue a receipt back".into()))?;
            if let Some(prev) = &current.received_from {
                wake_back.push(prev.clone());
            }
        }
        tx.audit(
            &receipt_entry(
                peer,
                &format!("{}/{}", current.origin, item.report_id),
                if relayed { "relayed" } else { state },
                &receipt,
                signed,
                item.row.attempts,
            ),
            now,
        )
        .await?;
        settled += 1;
        changed.push(item.row.report_seq);
    }
    crate::faults::crash_point("origin-storing-receipt");
    tx.commit().await?;
    for seq in changed {
        core.case_changed(seq);
    }
    for prev in wake_back {
        core.wake(&prev);
    }
    for (dest, ms) in took {
        core.metrics.takedown("receipt", &dest, ms);
    }
    let latency = sent.elapsed();
    let delivered_count = settled as u64 - refused_count;
    core.metrics
        .delivered(peer.as_str(), "delivered", delivered_count);
    core.metrics
        .delivered(peer.as_str(), "refused", refused_count);
    core.metrics.delivery_latency(peer.as_str(), latency);
    tracing::info!(peer = %peer, delivered = settled, latency_ms = sent.elapsed().as_millis() as u64, "batch delivered");
    if !bad.is_empty() {
        return Err(fail(
            core,
            &bad,
            "peer returned a missing or invalid receipt".into(),
        )
        .await);
    }
    Ok(settled)
}

/// The audit entry of a peer's receipt for a report sent to it.
fn receipt_entry(
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
struct Settled {
    settled: Vec<(usize, crate::store::ReportRow)>,
    handled: std::collections::HashSet<usize>,
}

/// Settles, in `tx`, every item of the batch that is a report of this node
/// which the peer stored as its destination (and is its only destination
/// through that peer): dequeued, delivery finished with the receipt, status
/// `delivered`, one audit entry each — one statement per kind of row.
#[allow(clippy::too_many_arguments)]
async fn settle_stored(
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

async fn send_statuses(
    core: &Core,
    peer: &NodeId,
    out: &mut Transport,
    rows: Vec<OutboxRow>,
) -> Result<usize, DeliveryError> {
    // Direct updates (0), items passed back through relays (1) and an
    // origin's amendments (2) go in separate calls: one kind per batch, in
    // queue order.
    let kind = rows.first().map(|r| r.returned).unwrap_or(OUTBOX_SIGNED);
    let mut updates = Vec::with_capacity(rows.len());
    let mut items = Vec::new();
    let mut amendments = Vec::new();
    let mut kept = Vec::with_capacity(rows.len());
    for row in rows.into_iter().filter(|r| r.returned == kind) {
        let body = row.body.as_slice();
        let ok = match kind {
            OUTBOX_RETURNED => pb::Returned::decode(body).map(|r| items.push(r)).is_ok(),
            OUTBOX_AMENDMENT => pb::AmendEnvelope::decode(body)
                .map(|a| amendments.push(a))
                .is_ok(),
            _ => pb::Signed::decode(body).map(|s| updates.push(s)).is_ok(),
        };
        if ok {
            kept.push(row);
        } else {
            tracing::error!(outbox_id = row.id, "undecodable outbox row skipped");
        }
    }
    let request = pb::PushStatusRequest {
        updates,
        returned: items,
        amendments,
    };
    let response = match out.client.push_status(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            return Err(fail(
                core,
                &kept,
                format!("{:?}: {}", status.code(), status.message()),
            )
            .await);
        }
    };
    let codes = match kind {
        OUTBOX_RETURNED => &response.returned_codes,
        OUTBOX_AMENDMENT => &response.amendment_codes,
        _ => &response.codes,
    };
    if codes.len() != kept.len() {
        return Err(fail(
            core,
            &kept,
            "peer answered with the wrong number of codes".into(),
        )
        .await);
    }
    let now = Core::now_ms();
    let mut tx = core.store.begin().await?;
    for (row, code) in kept.iter().zip(codes) {
        if !tx.dequeue(row.id).await? {
            continue;
        }
        // A peer that cannot place an update (unknown report, not its
        // destination) will never accept it: it is recorded as refused.
        let kind = if *code == 0 {
            "status.delivered"
        } else {
            "status.refused-by-peer"
        };
        tx.audit(
            &audit::Entry::new(
                kind,
                format!("node:{peer}"),
                format!("seq:{}", row.report_seq),
                serde_json::json!({"destination": peer.as_str(), "code": code}),
            ),
            now,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(kept.len())
}

/// Marks a queued report the peer refused on its own as refused by it,
/// with the peer's reason, and takes it out of the queue (unless another
/// replica settled it meanwhile).
async fn refuse_row(
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

#[cfg(test)]
mod tests {
    //! The transport alone, against a stand-in peer over plain TCP on
    //! loopback (the integration tests run it between real nodes over
    //! mutual TLS).

    use std::sync::atomic::{AtomicUsize, Ordering};

    use tonic::{Request, Response, Status};

    use super::*;
    use crate::pb::federation_server::{Federation, FederationServer};

    /// A peer that answers each batch with as many results as it had
    /// envelopes, numbered in its `message`; counts streams and calls.
    #[derive(Default)]
    struct Peer {
        offers_stream: bool,
        /// Ends each stream after this many answers.
        answers_per_stream: Option<usize>,
        /// Never answers on a stream (nor sends its response headers).
        silent: bool,
        streams: AtomicUsize,
        streamed: Arc<AtomicUsize>,
        unary: AtomicUsize,
    }

    fn answer(batch: &pb::ForwardRequest, n: usize) -> pb::ForwardResponse {
        pb::ForwardResponse {
            results: batch
                .envelopes
                .iter()
                .map(|_| pb::ForwardResult {
                    code: 0,
                    message: n.to_string(),
                    receipt: None,
                })
                .collect(),
        }
    }

    type Answers = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::ForwardResponse, Status>> + Send>,
    >;

    #[tonic::async_trait]
    impl Federation for Arc<Peer> {
        async fn forward(
            &self,
            r: Request<pb::ForwardRequest>,
        ) -> Result<Response<pb::ForwardResponse>, Status> {
            let n = self.unary.fetch_add(1, Ordering::SeqCst);
            Ok(Response::new(answer(r.get_ref(), n)))
        }
        type ForwardStreamStream = Answers;
        async fn forward_stream(
            &self,
            r: Request<tonic::Streaming<pb::ForwardRequest>>,
        ) -> Result<Response<Answers>, Status> {
            if !self.offers_stream {
                return Err(Status::unimplemented("not here"));
            }
            let mut inbound = r.into_inner();
            if self.silent {
                // Takes what it is sent and never answers, not even with
                // the response's headers (as when its answers are lost).
                while let Ok(Some(_)) = inbound.message().await {
                    self.streamed.fetch_add(1, Ordering::SeqCst);
                }
                return Err(Status::cancelled("gone"));
            }
            self.streams.fetch_add(1, Ordering::SeqCst);
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let (limit, streamed) = (
                self.answers_per_stream.unwrap_or(usize::MAX),
                self.streamed.clone(),
            );
            tokio::spawn(async move {
                let mut answered = 0;
                while let Ok(Some(batch)) = inbound.message().await {
                    let n = streamed.fetch_add(1, Ordering::SeqCst);
                    if tx.send(Ok(answer(&batch, n))).await.is_err() {
                        return;
                    }
                    answered += 1;
                    if answered == limit {
                        return;
                    }
                }
            });
            Ok(Response::new(Box::pin(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            )))
        }
        async fn push_status(
            &self,
            _: Request<pb::PushStatusRequest>,
        ) -> Result<Response<pb::PushStatusResponse>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn node_info(
            &self,
            _: Request<pb::NodeInfoRequest>,
        ) -> Result<Response<pb::NodeInfoResponse>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn get_checkpoint(
            &self,
            _: Request<pb::GetCheckpointRequest>,
        ) -> Result<Response<pb::CheckpointNote>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn get_consistency_proof(
            &self,
            _: Request<pb::ConsistencyProofRequest>,
        ) -> Result<Response<pb::ConsistencyProof>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn cosign(
            &self,
            _: Request<pb::CosignRequest>,
        ) -> Result<Response<pb::CosignResponse>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn get_witnessed(
            &self,
            _: Request<pb::GetWitnessedRequest>,
        ) -> Result<Response<pb::CheckpointNote>, Status> {
            Err(Status::unimplemented(""))
        }
    }

    async fn start(peer: Peer) -> (Arc<Peer>, Transport) {
        let peer = Arc::new(peer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(FederationServer::new(peer.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let out = Transport::new(
            FederationClient::new(channel),
            true,
            Duration::from_millis(500),
        );
        (peer, out)
    }

    fn batch(n: usize) -> pb::ForwardRequest {
        pb::ForwardRequest {
            envelopes: vec![pb::Envelope::default(); n],
            urgent: false,
        }
    }

    /// Which answer of the peer this is (its count when it answered).
    fn nth(r: &pb::ForwardResponse) -> &str {
        &r.results[0].message
    }

    #[tokio::test]
    async fn batches_follow_one_another_on_one_stream_until_it_is_closed() {
        let (peer, mut out) = start(Peer {
            offers_stream: true,
            ..Default::default()
        })
        .await;
        for (i, size) in [3, 1, 256].into_iter().enumerate() {
            let r = out.forward(batch(size)).await.unwrap();
            assert_eq!(r.results.len(), size, "one result per envelope");
            assert_eq!(nth(&r), i.to_string(), "answers in order");
        }
        assert_eq!(peer.streams.load(Ordering::SeqCst), 1);
        out.close();
        out.forward(batch(2)).await.unwrap();
        assert_eq!(
            peer.streams.load(Ordering::SeqCst),
            2,
            "a new stream after close"
        );
        assert_eq!(peer.unary.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_peer_without_the_stream_gets_unary_calls() {
        let (peer, mut out) = start(Peer::default()).await;
        for i in 0..3 {
            let r = out.forward(batch(2)).await.unwrap();
            assert_eq!(nth(&r), i.to_string());
        }
        assert_eq!(peer.unary.load(Ordering::SeqCst), 3);
        assert!(!out.streamed, "asked once, then unary");
        out.close();
        assert!(out.streamed, "asked again after the lane was idle");
        out.forward(batch(1)).await.unwrap();
        assert_eq!(peer.unary.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_stream_the_peer_ended_fails_one_batch_and_the_next_goes_on_a_new_one() {
        let (peer, mut out) = start(Peer {
            offers_stream: true,
            answers_per_stream: Some(2),
            ..Default::default()
        })
        .await;
        out.forward(batch(1)).await.unwrap();
        out.forward(batch(1)).await.unwrap();
        let e = out.forward(batch(1)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        let r = out.forward(batch(1)).await.unwrap();
        assert_eq!(nth(&r), "2", "the third batch the peer answered");
        assert_eq!(peer.streams.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_batch_not_answered_in_time_fails_and_frees_the_lane() {
        let (peer, mut out) = start(Peer {
            offers_stream: true,
            silent: true,
            ..Default::default()
        })
        .await;
        let started = std::time::Instant::now();
        let e = out.forward(batch(1)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(out.stream.is_none(), "the stream is given up");
        assert_eq!(
            peer.streamed.load(Ordering::SeqCst),
            1,
            "the batch went with the stream's opening, though nothing came back"
        );
        out.forward(batch(1)).await.unwrap_err();
        assert_eq!(peer.streamed.load(Ordering::SeqCst), 2, "and again");
    }
}
