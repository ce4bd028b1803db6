//! The signed directory's exchange: at start, every
//! `[exchange] directory_interval`, and at once when woken (this node
//! applied a version, or a peer said it has a newer one), this node reads
//! its own directory file (a version the secretariat put there) and asks
//! every active peer at once for a version newer than its own (`GetDirectory` with
//! its serial, so a peer behind it asks back). What a peer offers goes
//! through `node::membership::offer`: applied, or refused and audited. A
//! peer of the previous protocol answers UNIMPLEMENTED: it is noted, and
//! still delivered to (the previous protocol's copy of reports,
//! `wire::compat`). A peer whose features are not known yet is also asked
//! what it states of itself in `NodeInfo` (protocol, features) for
//! `alertrelay peers`.

use std::sync::Arc;

use tokio::sync::watch;
use tonic::transport::Channel;

use super::channel::PeerChannel;
use crate::directory::signed::SignedDirectory;
use crate::identity::NodeId;
use crate::node::Core;
use crate::node::membership::{self, OfferError, Offered};
use crate::pb;
use crate::pb::federation_client::FederationClient;

pub async fn run(
    core: Arc<Core>,
    peers: super::channel::Channels,
    mut shutdown: watch::Receiver<bool>,
) {
    if core.directory().signed.is_none() {
        // A plain directory file: nothing to exchange (NodeInfo still says
        // serial 0).
        return;
    }
    loop {
        if let Err(e) = membership::check_own_file(&core).await {
            tracing::debug!(error = %e, "own directory file not taken");
        }
        // All peers at once: one that does not answer holds up no other.
        let mut round = tokio::task::JoinSet::new();
        for (peer, channel) in super::channel::snapshot(&peers) {
            if !core.directory().node(&peer).is_some_and(|n| n.active) {
                continue;
            }
            let core = core.clone();
            round.spawn(async move { exchange_with(&core, &peer, &channel).await });
        }
        while round.join_next().await.is_some() {}
        tokio::select! {
            _ = tokio::time::sleep(core.config.exchange.directory_interval) => {}
            _ = core.membership.wake.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// What one exchange with a peer came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Exchanged {
    /// The peer answered UNIMPLEMENTED: a node of the previous protocol.
    PreviousProtocol,
    /// It had nothing newer.
    Nothing,
    /// It offered the version this node has.
    Same,
    /// Its version was applied: the new serial.
    Applied(u64),
    /// Its version was refused (the reason code; audited).
    Refused(&'static str),
    /// No answer (it is down, or refused us): tried again next round.
    Failed(tonic::Code),
}

async fn exchange_with(core: &Core, peer: &NodeId, channel: &PeerChannel) {
    let (_, ch) = channel.current(core);
    let mut client = FederationClient::new(ch);
    match exchange_once(core, peer, &mut client).await {
        Exchanged::Applied(serial) => tracing::info!(%peer, serial, "learned a newer directory"),
        Exchanged::Refused(code) => {
            tracing::warn!(%peer, reason_code = code, "directory offered by a peer refused");
        }
        Exchanged::Failed(code) => tracing::debug!(%peer, ?code, "directory exchange skipped"),
        _ => {}
    }
}

/// Asks `peer` (over `client`) for a newer version than ours and offers
/// it to the node. Public so tests can drive it against a peer of their
/// own.
pub async fn exchange_once(
    core: &Core,
    peer: &NodeId,
    client: &mut FederationClient<Channel>,
) -> Exchanged {
    // What the peer states of itself (`alertrelay peers` shows it): asked
    // until known, and again after its protocol changed.
    let known = core
        .membership
        .stated(peer)
        .is_some_and(|s| s.protocol < membership::PROTOCOL || !s.features.is_empty());
    if !known && let Ok(info) = client.node_info(pb::NodeInfoRequest {}).await {
        core.membership.peer_info(peer, info.get_ref());
    }
    let known_serial = core.directory().serial();
    let answer = client
        .get_directory(pb::GetDirectoryRequest { known_serial })
        .await;
    let doc = match answer {
        Ok(r) => r.into_inner(),
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            // A node of the previous release: it learns directories by
            // hand, and is talked to as before.
            core.membership
                .peer_protocol(peer, membership::OLDEST_PROTOCOL);
            return Exchanged::PreviousProtocol;
        }
        Err(status) => return Exchanged::Failed(status.code()),
    };
    core.membership.peer_protocol(peer, membership::PROTOCOL);
    core.peer_reachable(peer, true);
    if doc.payload.is_empty() {
        return Exchanged::Nothing;
    }
    let doc = SignedDirectory {
        payload: doc.payload,
        signatures: doc
            .signatures
            .into_iter()
            .map(|s| (s.key_id, s.signature))
            .collect(),
    };
    match membership::offer(core, &format!("node:{peer}"), doc).await {
        Ok(Offered::Applied(serial)) => Exchanged::Applied(serial),
        Ok(Offered::Same | Offered::NotSigned) => Exchanged::Same,
        Err(e @ (OfferError::Refused(_) | OfferError::NotApplicable(_))) => {
            Exchanged::Refused(e.code())
        }
    }
}
