//! The per-peer delivery worker: two lanes per peer (urgent, bulk) and a
//! second bulk sender while a backlog drains, each claiming outbox rows,
//! sending them (`transport`), settling the answers (`reports`, `settle`,
//! `statuses`), and backing off on failure, forever.

mod reports;
mod settle;
mod statuses;
mod transport;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::transport::Channel;

use crate::federation::backoff::Backoff;
use crate::identity::NodeId;
use crate::node::Core;
use crate::pb::federation_client::FederationClient;
use crate::store::{OutboxRow, StoreError};

use super::channel::PeerChannel;

use reports::send_reports;
use settle::refuse_row;
use statuses::send_statuses;
use transport::Transport;

/// How often an idle worker looks at its outbox even without a wake-up
/// (e.g. rows left by a previous run); at least twice per claim lease, so
/// a dead replica's rows are taken over soon after its lease lapsed.
const IDLE_POLL: Duration = Duration::from_secs(30);

/// Largest batch sent in one call (the receiver accepts 16 MiB).
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub(super) enum DeliveryError {
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

/// Batches of bulk reports in flight to one peer at a time while a backlog
/// waits: the bulk lane's and those of `BULK_SENDERS - 1` second senders.
/// Three rather than two (measured back to back, release build, 7 December
/// 2026): a 100,000 backlog drained at 6,648–7,668/s instead of
/// 5,248–5,805/s, end to end 4,292/s instead of 3,872/s (means of five
/// runs); urgent p99 while it drains 22.7–22.9 ms instead of 20.2–20.6 ms.
const BULK_SENDERS: usize = 3;

/// Two lanes per peer over one connection: urgent reports and status
/// updates never wait behind a bulk batch in flight.
pub async fn run(
    core: Arc<Core>,
    peer: NodeId,
    channel: Arc<PeerChannel>,
    shutdown: watch::Receiver<bool>,
) {
    let urgent = tokio::spawn(lane(
        core.clone(),
        peer.clone(),
        channel.clone(),
        shutdown.clone(),
        true,
    ));
    let mut seconds = Vec::new();
    for _ in 1..BULK_SENDERS {
        seconds.push(tokio::spawn(second_sender(
            core.clone(),
            peer.clone(),
            channel.clone(),
            shutdown.clone(),
        )));
    }
    lane(core, peer, channel, shutdown, false).await;
    let _ = urgent.await;
    for s in seconds {
        let _ = s.await;
    }
}

/// A lane's way to its peer, kept current: after a reload it is built
/// again on the new channel (`PeerChannel`), dropping the old one's
/// stream and connections.
struct Way {
    channel: Arc<PeerChannel>,
    generation: u64,
    streamed: bool,
    out: Transport,
}

impl Way {
    fn new(core: &Core, channel: Arc<PeerChannel>, streamed: bool) -> Way {
        let (generation, ch) = channel.current(core);
        let out = Transport::new(client(ch), streamed, core.config.delivery.request_timeout);
        Way {
            channel,
            generation,
            streamed,
            out,
        }
    }

    /// The transport, rebuilt first if the node reloaded since.
    fn current(&mut self, core: &Core) -> &mut Transport {
        let (generation, ch) = self.channel.current(core);
        if generation != self.generation {
            self.generation = generation;
            self.out = Transport::new(
                client(ch),
                self.streamed,
                core.config.delivery.request_timeout,
            );
        }
        &mut self.out
    }
}

fn client(channel: Channel) -> FederationClient<Channel> {
    FederationClient::new(channel)
        .max_decoding_message_size(16 * 1024 * 1024)
        .max_encoding_message_size(16 * 1024 * 1024)
}

/// A peer the directory no longer lists as active (suspended, or gone)
/// gets nothing: its reports wait, queued, until it is reinstated. Waits
/// while that is so; false when the node is shutting down.
async fn wait_while_inactive(
    core: &Core,
    peer: &NodeId,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let mut reloaded = core.generation.subscribe();
    while !core.directory().node(peer).is_some_and(|n| n.active) {
        tracing::debug!(peer = %peer, "peer not active in the directory: nothing sent to it");
        tokio::select! {
            _ = reloaded.changed() => {}
            _ = shutdown.changed() => return false,
        }
    }
    !*shutdown.borrow()
}

/// A second sender of bulk reports, active while the bulk lane finds a
/// backlog: it claims its own batches (claimed rows are never claimed
/// twice), so one batch is stored here while others are on the wire or
/// at the peer; a full batch wakes the next idle one (`BULK_SENDERS`).
/// Reports only: status updates keep their order in the one bulk lane. On
/// any failure it goes quiet and leaves retrying, backoff and the peer's
/// state to the bulk lane.
async fn second_sender(
    core: Arc<Core>,
    peer: NodeId,
    channel: Arc<PeerChannel>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(link) = core.peers.get(&peer) else {
        return;
    };
    let limit = core.config.delivery.batch_size;
    let mut way = Way::new(&core, channel, true);
    loop {
        // Idle: no stream held open to the peer.
        way.out.close();
        tokio::select! {
            _ = link.backlog.notified() => {}
            _ = shutdown.changed() => return,
        }
        loop {
            if *shutdown.borrow() {
                return;
            }
            // Urgent reports still waiting: the bulk lane sends them first;
            // a peer no longer active gets nothing (the bulk lane waits).
            if yield_to_urgent(&core, &peer).await
                || !core.directory().node(&peer).is_some_and(|n| n.active)
            {
                break;
            }
            let out = way.current(&core);
            match deliver_reports(&core, &peer, out, limit, false).await {
                Ok(n) if n == limit => {
                    // More waiting: another idle sender may take a batch too.
                    link.backlog.notify_one();
                    continue;
                }
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
    channel: Arc<PeerChannel>,
    mut shutdown: watch::Receiver<bool>,
    urgent: bool,
) {
    let Some(link) = core.peers.get(&peer) else {
        return;
    };
    // The urgent lane sends a few envelopes at a time, each as soon as it
    // can: one call each. The bulk lane streams its batches.
    let mut way = Way::new(&core, channel, !urgent);
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
        if *shutdown.borrow() || !wait_while_inactive(&core, &peer, &mut shutdown).await {
            return;
        }
        let out = way.current(&core);
        // Urgent reports the urgent lane has not sent after the wait go
        // out on this lane, before any bulk one.
        let urgent_left = !urgent && yield_to_urgent(&core, &peer).await;
        let result = if urgent_left {
            match deliver_reports(&core, &peer, out, limit, true).await {
                Ok(0) => deliver_once(&core, &peer, out, limit, urgent).await,
                other => other,
            }
        } else {
            deliver_once(&core, &peer, out, limit, urgent).await
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
                if n > 0 {
                    core.peer_reachable(&peer, true);
                }
                link.update(|s| {
                    if n > 0 {
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
                    way.out.close();
                    tokio::select! {
                        _ = wake.notified() => {}
                        _ = contact.notified() => {}
                        _ = tokio::time::sleep(idle_poll) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
            Err(e) => {
                let delay = record_failure(&core, &peer, &link, &mut backoff, &e);
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

/// Records a failed delivery to `peer` (metrics, reachability, the
/// link's state, a warning) and returns how long to back off.
fn record_failure(
    core: &Core,
    peer: &NodeId,
    link: &crate::node::peers::PeerLink,
    backoff: &mut Backoff,
    e: &DeliveryError,
) -> Duration {
    let delay = backoff.next_delay(&mut rand::thread_rng());
    let now = Core::now_ms();
    let shown = crate::node::state::bounded(&e.to_string());
    core.metrics.delivery_failed(peer.as_str());
    // A failed call says the peer cannot be reached; a failure of this
    // node's own database says nothing about it.
    if matches!(e, DeliveryError::Rpc(_)) {
        core.peer_reachable(peer, false);
    }
    link.update(|s| {
        s.last_failure_ms = Some(now);
        s.last_error = shown.chars().take(500).collect();
        s.failures = backoff.failures();
        s.next_attempt_ms = Some(now + delay.as_millis() as i64);
    });
    tracing::warn!(peer = %peer, error = %shown, failures = backoff.failures(),
        retry_in_ms = delay.as_millis() as u64, "delivery failed");
    delay
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
pub(super) async fn fail(core: &Core, rows: &[OutboxRow], error: String) -> DeliveryError {
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    // The error may hold the peer's words (a gRPC status message): bounded
    // and escaped before it is logged, stored and printed by `peers`.
    let shown = crate::node::state::bounded(&error);
    if let Err(e) = core
        .store
        .release_claims(&ids, &core.replica, Some(&shown))
        .await
    {
        return e.into();
    }
    DeliveryError::Rpc(shown)
}
