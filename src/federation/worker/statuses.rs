//! Sending status updates, returned items and amendments (`PushStatus`),
//! one kind per batch in queue order, and recording the peer's answer to
//! each: delivered, or refused by the peer (it cannot place it, and never
//! will).

use prost::Message;

use crate::audit;
use crate::identity::NodeId;
use crate::node::Core;
use crate::pb;
use crate::store::{OUTBOX_AMENDMENT, OUTBOX_RETURNED, OUTBOX_SIGNED, OutboxRow};

use super::DeliveryError;
use super::transport::Transport;

/// Sends `rows` (status updates, returned items or amendments) and records
/// the answers. Returns how many were sent.
pub(super) async fn send_statuses(
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
            return Err(super::fail(
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
        return Err(super::fail(
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
