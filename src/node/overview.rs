//! The node at a glance: per-peer delivery state (`alertrelay peers`) and
//! a summary (`alertrelay status`).

use serde::{Deserialize, Serialize};

use crate::node::{Core, NodeError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    pub node_id: String,
    pub endpoint: String,
    pub countries: Vec<String>,
    pub active: bool,
    /// yes, no, unknown (no attempt yet).
    pub reachable: String,
    pub queue_depth: u64,
    pub oldest_undelivered_age_ms: i64,
    pub last_error: String,
    pub consecutive_failures: u32,
    /// Unix ms of the next attempt while backing off, else 0.
    pub next_attempt_ms: i64,
    pub last_success_ms: i64,
    /// When the peer was last seen answering, Unix ms; 0 when never.
    #[serde(default)]
    pub last_seen_ms: i64,
    /// The wire protocol the peer stated (0: not seen yet).
    #[serde(default)]
    pub protocol: u32,
    /// The features it offers by name.
    #[serde(default)]
    pub features: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseCount {
    pub direction: String,
    pub status: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSummary {
    pub node_id: String,
    pub version: String,
    pub countries: Vec<String>,
    pub listen: String,
    pub started_at_ms: i64,
    pub key_id: String,
    pub cases: Vec<CaseCount>,
    pub outbox_total: u64,
    pub audit_entries: u64,
    pub checkpoint_size: u64,
    pub checkpoint_cosignatures: u64,
    pub peers_total: u32,
    pub peers_reachable: u32,
    /// The signed directory's serial (0: a plain directory file), issue
    /// time and expiry (Unix ms; 0 when not signed).
    #[serde(default)]
    pub directory_serial: u64,
    #[serde(default)]
    pub directory_issued_at_ms: i64,
    #[serde(default)]
    pub directory_expires_at_ms: i64,
    /// The wire protocol this node speaks.
    #[serde(default)]
    pub protocol: u32,
    /// The peers last seen speaking the previous protocol.
    #[serde(default)]
    pub peers_previous_protocol: Vec<String>,
    /// Notifications waiting to go out, per channel.
    #[serde(default)]
    pub notifications: Vec<crate::node::alerts::Waiting>,
}

pub async fn peers(core: &Core) -> Result<Vec<PeerView>, NodeError> {
    let queues = core.store.outbox_summary().await?;
    let now = Core::now_ms();
    let mut out = Vec::new();
    for n in core.directory().nodes().iter().filter(|n| n.id != core.me) {
        let status = core
            .peers
            .get(&n.id)
            .map(|l| l.status())
            .unwrap_or_default();
        let q = queues.iter().find(|q| q.peer == n.id.as_str());
        let stated = core.membership.stated(&n.id).unwrap_or_default();
        out.push(PeerView {
            node_id: n.id.to_string(),
            endpoint: n.endpoint.clone(),
            countries: n.countries.clone(),
            active: n.active,
            reachable: match status.reachable {
                Some(true) => "yes",
                Some(false) => "no",
                None => "unknown",
            }
            .to_owned(),
            queue_depth: q.map_or(0, |q| u64::try_from(q.depth).unwrap_or(0)),
            oldest_undelivered_age_ms: q.map_or(0, |q| (now - q.oldest_ms).max(0)),
            last_error: status.last_error,
            consecutive_failures: status.failures,
            next_attempt_ms: status.next_attempt_ms.unwrap_or(0),
            last_success_ms: status.last_success_ms.unwrap_or(0),
            last_seen_ms: status.last_seen_ms.unwrap_or(0),
            protocol: stated.protocol,
            features: stated.features,
        });
    }
    Ok(out)
}

pub async fn summary(core: &Core) -> Result<NodeSummary, NodeError> {
    let peers = peers(core).await?;
    let cases = core
        .store
        .case_counts()
        .await?
        .into_iter()
        .map(|(direction, status, n)| CaseCount {
            direction,
            status,
            count: u64::try_from(n).unwrap_or(0),
        })
        .collect();
    let checkpoint = core.store.latest_checkpoint().await?;
    let checkpoint_size = checkpoint
        .as_ref()
        .map_or(0, |c| u64::try_from(c.size).unwrap_or(0));
    let cosignatures = core.store.cosignatures(checkpoint_size).await?.len() as u64;
    let audit_entries = core.store.audit_entries_count().await?;
    let signed = core.directory().signed.clone();
    Ok(NodeSummary {
        node_id: core.me.to_string(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        countries: core
            .directory()
            .node(&core.me)
            .map(|n| n.countries.clone())
            .unwrap_or_default(),
        listen: core.config.listen.to_string(),
        started_at_ms: core.started_at_ms,
        key_id: core.key().key_id().to_owned(),
        cases,
        outbox_total: peers.iter().map(|p| p.queue_depth).sum(),
        audit_entries,
        checkpoint_size,
        checkpoint_cosignatures: cosignatures,
        peers_total: peers.len() as u32,
        peers_reachable: peers.iter().filter(|p| p.reachable == "yes").count() as u32,
        directory_serial: signed.as_ref().map_or(0, |s| s.serial),
        directory_issued_at_ms: signed.as_ref().map_or(0, |s| s.issued_at_ms),
        directory_expires_at_ms: signed.as_ref().map_or(0, |s| s.expires_at_ms),
        protocol: match core.config.exchange.protocol {
            p if p >= 2 => crate::node::membership::PROTOCOL,
            p => p,
        },
        peers_previous_protocol: peers
            .iter()
            .filter(|p| p.protocol == crate::node::membership::OLDEST_PROTOCOL)
            .map(|p| p.node_id.clone())
            .collect(),
        notifications: crate::node::alerts::waiting(core).await?,
    })
}
