//! Readiness, for `grpc.health.v1.Health` and `alertrelay_ready`: the
//! database answers, the signing key is loaded and listed (not revoked) in
//! the directory, and at least one peer is reachable (or none is
//! configured). A probe task checks every `[health] probe_interval_ms`
//! (each peer's own health service, over mutual TLS) and publishes the
//! result on `Core::ready`; a peer that calls us counts as reachable at
//! once, and a reload triggers a probe.

use std::collections::BTreeMap;
use std::sync::Arc;
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
    fn note_peer(&self, peer: &NodeId, reachable: bool) {
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

/// Probes every `interval` until shutdown.
pub async fn run(
    core: Arc<Core>,
    channels: Vec<(NodeId, tonic::transport::Channel)>,
    interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut reloaded = core.generation.subscribe();
    loop {
        probe(&core, &channels).await;
        // While not ready, look again sooner, so recovery shows quickly.
        let wait = if core.readiness().serving() {
            interval
        } else {
            interval.min(Duration::from_secs(1))
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            // A reload may change the directory or the key: look at once.
            _ = reloaded.changed() => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn probe(core: &Core, channels: &[(NodeId, tonic::transport::Channel)]) {
    let timeout = core
        .config
        .delivery
        .request_timeout
        .min(Duration::from_secs(5));
    let database = matches!(
        tokio::time::timeout(timeout, core.store.ping()).await,
        Ok(Ok(()))
    );
    let key = core.key();
    let keys = core
        .directory()
        .node(&core.me)
        .is_some_and(|n| n.active && n.keys.iter().any(|k| k.id == key.key_id() && !k.revoked));
    let calls = channels.iter().map(|(peer, ch)| {
        let ch = ch.clone();
        let peer = peer.clone();
        async move {
            // The peer's health service: a mutual-TLS handshake with the
            // peer's certificate checked to name it (the channel's
            // connector), and an answer, whatever its status. Unlike a
            // Federation call it is not a request the peer audits, so a
            // probe never fills a peer's audit log (nor that of a peer that
            // suspended us).
            let mut client = tonic_health::pb::health_client::HealthClient::new(ch);
            let ok = tokio::time::timeout(
                timeout,
                client.check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                }),
            )
            .await
            .is_ok_and(|r| r.is_ok());
            (peer.to_string(), ok)
        }
    });
    let peers: BTreeMap<String, bool> = futures_join_all(calls).await.into_iter().collect();
    for (peer, ok) in &peers {
        if let Ok(id) = NodeId::new(peer) {
            core.note_peer(&id, *ok);
        }
    }
    let next = Readiness {
        database: Some(database),
        keys: Some(keys),
        peers,
        peers_configured: channels.len(),
    };
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

/// Runs the futures concurrently and collects their outputs in order.
async fn futures_join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}
