//! What the node knows of each peer's delivery worker: how to wake it, and
//! what it last saw of the peer (for `peers`, `status` and health). The
//! node wakes a worker after committing work for it; the worker
//! (`federation::worker`) records what it saw here.

use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::Notify;

/// What the delivery worker last saw of a peer, for `alertrelay peers`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerStatus {
    /// The latest observation (`Core::peer_reachable`); None until the
    /// peer was first tried or seen.
    pub reachable: Option<bool>,
    pub last_success_ms: Option<i64>,
    /// When the peer was last seen answering (a delivery, a health probe,
    /// a witness exchange, or a call from it).
    pub last_seen_ms: Option<i64>,
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
