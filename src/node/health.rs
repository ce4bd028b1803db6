//! Readiness, for `grpc.health.v1.Health` and `alertrelay_ready`: the
//! database answers, the signing key is loaded and listed (not revoked) in
//! the directory, and at least one peer is reachable (or none is
//! configured). `federation::probe` checks every `[health]
//! probe_interval_ms` (this node's own half here, `local_checks`; each
//! peer's health service over mutual TLS there) and publishes the result
//! on `Core::ready`; a peer that calls us counts as reachable at once.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::identity::NodeId;
use crate::node::Core;

/// The node's readiness and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// None before the first probe.
    pub database: Option<bool>,
    pub keys: Option<bool>,
    /// Per peer: reachable at the last probe or contact.
    pub peers: BTreeMap<String, bool>,
    pub peers_configured: usize,
}

impl Readiness {
    pub fn serving(&self) -> bool {
        self.database == Some(true)
            && self.keys == Some(true)
            && (self.peers_configured == 0 || self.peers.values().any(|r| *r))
    }

    /// Why the node is not serving, for logs.
    pub fn reasons(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self.database {
            Some(true) => {}
            Some(false) => out.push("database unreachable".to_owned()),
            None => out.push("not probed yet".to_owned()),
        }
        if self.keys == Some(false) {
            out.push(
                "signing key not listed (or revoked) in the directory, or this node suspended"
                    .to_owned(),
            );
        }
        if self.peers_configured > 0 && !self.peers.values().any(|r| *r) {
            out.push(format!("none of {} peers reachable", self.peers_configured));
        }
        out
    }
}

impl Core {
    /// The readiness as last probed.
    pub fn readiness(&self) -> Readiness {
        self.ready.borrow().clone()
    }

    /// Records what was just seen of a peer — by the health probe, the
    /// delivery worker, the witness, or the peer calling us — in the one
    /// place `peers`, `status` and health all read: the latest observation
    /// wins. Publishes readiness only on change.
    pub fn peer_reachable(&self, peer: &NodeId, reachable: bool) {
        self.note_peer(peer, reachable);
        self.ready.send_if_modified(|r| {
            let before = r.peers.insert(peer.to_string(), reachable);
            before != Some(reachable)
        });
    }

    /// The peer link's view of the peer (for `peers`), without publishing.
    pub(crate) fn note_peer(&self, peer: &NodeId, reachable: bool) {
        if let Some(link) = self.peers.get(peer) {
            let now = Core::now_ms();
            link.update(|s| {
                s.reachable = Some(reachable);
                if reachable {
                    s.last_seen_ms = Some(now);
                }
            });
        }
    }
}

/// This node's own half of readiness: the database answers (within
/// `timeout`), and its signing key is listed, not revoked, for an active
/// directory entry.
pub async fn local_checks(core: &Core, timeout: Duration) -> (bool, bool) {
    let database = matches!(
        tokio::time::timeout(timeout, core.store.ping()).await,
        Ok(Ok(()))
    );
    let key = core.key();
    let keys = core
        .directory()
        .node(&core.me)
        .is_some_and(|n| n.active && n.keys.iter().any(|k| k.id == key.key_id() && !k.revoked));
    (database, keys)
}

/// Publishes a probe's readiness (logging a change of SERVING), and
/// records each peer's answer in the node's one view of it.
pub fn publish(core: &Core, next: Readiness) {
    for (peer, ok) in &next.peers {
        if let Ok(id) = NodeId::new(peer) {
            core.note_peer(&id, *ok);
        }
    }
    let was = core.readiness().serving();
    if was != next.serving() {
        if next.serving() {
            tracing::info!("ready: health SERVING");
        } else {
            tracing::warn!(reasons = ?next.reasons(), "not ready: health NOT_SERVING");
        }
    }
    core.ready.send_if_modified(|r| {
        if *r == next {
            false
        } else {
            *r = next;
            true
        }
    });
}
