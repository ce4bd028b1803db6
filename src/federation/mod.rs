//! Outbound delivery: one worker per peer reads that peer's outbox (urgent
//! first, then in order), sends batches over mutual TLS, checks the signed
//! receipts, and stores them; failures back off exponentially with jitter,
//! capped, and are retried forever. Handlers never send inline: they commit
//! to the outbox and wake the worker. Workers claim rows with a lease
//! before sending them (`Store::claim_outbox`), so replicas of one node on
//! one PostgreSQL database share the outbox; `wakeups` wakes a worker for
//! work another replica committed.

pub mod backoff;
pub mod wakeups;
pub mod witness;
pub mod worker;

use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::Notify;

/// What the delivery worker last saw of a peer, for `alertrelay peers`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerStatus {
    /// None until the first attempt.
    pub reachable: Option<bool>,
    pub last_success_ms: Option<i64>,
    pub last_failure_ms: Option<i64>,
    pub last_error: String,
    /// Consecutive failures.
    pub failures: u32,
    /// When the worker will try again, while backing off.
    pub next_attempt_ms: Option<i64>,
}

/// The link between the node and one peer's worker.
#[derive(Default)]
pub struct PeerLink {
    /// New work for the peer was committed (bulk lane, urgent lane).
    pub wake: Notify,
    pub wake_urgent: Notify,
    /// The peer contacted us: it is up, so stop backing off (each lane).
    pub contact: Notify,
    pub contact_urgent: Notify,
    /// The bulk lane found a full batch of reports: a backlog, which a
    /// second sender helps drain (its batches overlap the first's).
    pub backlog: Notify,
    pub status: Mutex<PeerStatus>,
}

impl PeerLink {
    pub fn status(&self) -> PeerStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn update(&self, f: impl FnOnce(&mut PeerStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }
}
