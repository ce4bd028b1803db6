//! The health probe: every `[health] probe_interval_ms` (sooner while not
//! ready, and at once after a reload), this node's own checks
//! (`node::health::local_checks`) and each peer's health service over
//! mutual TLS, published as the node's readiness. A health check is not a
//! request a peer audits, so probing never fills a peer's audit log (nor
//! that of a peer that suspended us).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::identity::NodeId;
use crate::node::Core;
use crate::node::health::{self, Readiness};

use super::channel::PeerChannel;

/// Probes every `interval` until shutdown.
pub async fn run(
    core: Arc<Core>,
    channels: super::channel::Channels,
    interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut reloaded = core.generation.subscribe();
    loop {
        probe(&core, &super::channel::snapshot(&channels)).await;
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

async fn probe(core: &Core, channels: &[(NodeId, Arc<PeerChannel>)]) {
    let timeout = core
        .config
        .delivery
        .request_timeout
        .min(Duration::from_secs(5));
    let (database, keys) = health::local_checks(core, timeout).await;
    let calls: Vec<_> = channels
        .iter()
        .map(|(peer, ch)| {
            let (_, ch) = ch.current(core);
            let peer = peer.clone();
            tokio::spawn(async move {
                // An answer, whatever its status: a mutual-TLS handshake with
                // the peer's certificate checked to name it, and its health
                // service answering.
                let mut client = tonic_health::pb::health_client::HealthClient::new(ch);
                let request = tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                };
                let ok = tokio::time::timeout(timeout, client.check(request))
                    .await
                    .is_ok_and(|r| r.is_ok());
                (peer.to_string(), ok)
            })
        })
        .collect();
    let mut peers = BTreeMap::new();
    for call in calls {
        if let Ok((peer, ok)) = call.await {
            peers.insert(peer, ok);
        }
    }
    health::publish(
        core,
        Readiness {
            database: Some(database),
            keys: Some(keys),
            peers,
            peers_configured: channels.len(),
        },
    );
}
