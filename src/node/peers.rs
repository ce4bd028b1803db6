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

/// The peer links, one per other node of the directory; a newer directory
/// adds links for the nodes that joined (`add_new`), and `runtime` starts
/// their workers. Links are never removed while the node runs: a node that
/// left has nothing queued for it, and is refused by the directory.
#[derive(Default)]
pub struct Peers {
    links: std::sync::RwLock<
        std::collections::BTreeMap<crate::identity::NodeId, std::sync::Arc<PeerLink>>,
    >,
}

impl Peers {
    pub fn new(ids: impl IntoIterator<Item = crate::identity::NodeId>) -> Self {
        let peers = Peers::default();
        peers.add_new(ids);
        peers
    }

    pub fn get(&self, id: &crate::identity::NodeId) -> Option<std::sync::Arc<PeerLink>> {
        self.links.read().ok()?.get(id).cloned()
    }

    /// The link of the peer named `id`.
    pub fn find(&self, id: &str) -> Option<std::sync::Arc<PeerLink>> {
        let links = self.links.read().ok()?;
        links
            .iter()
            .find(|(peer, _)| peer.as_str() == id)
            .map(|(_, link)| link.clone())
    }

    pub fn contains_key(&self, id: &crate::identity::NodeId) -> bool {
        self.links.read().is_ok_and(|l| l.contains_key(id))
    }

    pub fn keys(&self) -> Vec<crate::identity::NodeId> {
        self.links
            .read()
            .map(|l| l.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.links.read().map_or(0, |l| l.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a link for each of `ids` not linked yet; returns those.
    pub fn add_new(
        &self,
        ids: impl IntoIterator<Item = crate::identity::NodeId>,
    ) -> Vec<crate::identity::NodeId> {
        let Ok(mut links) = self.links.write() else {
            return Vec::new();
        };
        let mut added = Vec::new();
        for id in ids {
            if !links.contains_key(&id) {
                links.insert(id.clone(), std::sync::Arc::new(PeerLink::default()));
                added.push(id);
            }
        }
        added
    }
}
