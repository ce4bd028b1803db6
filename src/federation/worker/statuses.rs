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

/// An amendment goes to a peer only once the report it amends has left
/// the outbox for that peer (delivered, or refused): sent earlier — the
/// report still queued, or on the wire from the second bulk sender — it
/// could reach the peer first and be refused as about an unknown report,
/// and a retraction would be lost. Such amendments wait (a moment here,
/// then their claims are released and they come round again).
async fn after_their_reports(
    core: &Core,
    peer: &NodeId,
    rows: Vec<OutboxRow>,
    kind: i64,
) -> Result<Vec<OutboxRow>, DeliveryError> {
    if kind != OUTBOX_AMENDMENT {
        return Ok(rows);
    }
    let mut ready = Vec::with_capacity(rows.len());
    for row in rows {
        if core
            .store
            .report_queued_for(row.report_seq, peer.as_str())
            .await?
        {
            // Everything after it waits too: amendments keep their order.
            break;
        }
        ready.push(row);
    }
    if ready.is_empty() {
        tokio::time::sleep(AMENDMENT_WAIT).await;
        core.wake(peer.as_str());
    }
    Ok(ready)
}

/// How long an amendment waiting for its report pauses its lane.
const AMENDMENT_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

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
    let rows = after_their_reports(core, peer, rows, kind).await?;
    if rows.is_empty() {
        return Ok(0);
    }
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
    if core.membership.protocol_of(peer) == Some(crate::node::membership::OLDEST_PROTOCOL) {
        for (a, row) in amendments.iter_mut().zip(&kept) {
            for_previous_protocol(core, a, row.report_seq).await?;
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

/// An amendment of this node's report, for a peer of the previous
/// protocol that holds the report's previous-protocol copy
/// (`wire::compat`): it names the copy's digest, signed anew. Anything
/// else is left as it is.
async fn for_previous_protocol(
    core: &Core,
    a: &mut pb::AmendEnvelope,
    report_seq: i64,
) -> Result<(), DeliveryError> {
    use crate::wire::stored::StoredPayload;
    let Some(signed) = a
        .amendment
        .as_ref()
        .filter(|s| s.signer == core.me.as_str())
    else {
        return Ok(());
    };
    if !a.hops.is_empty() {
        return Ok(());
    }
    let Ok(mut amendment) = pb::Amendment::decode(signed.payload.as_slice()) else {
        return Ok(());
    };
    let Some(report) = core.store.report_by_seq(report_seq).await? else {
        return Ok(());
    };
    let Some(copy) = crate::wire::compat::previous_digest(report.payload()) else {
        return Ok(());
    };
    amendment.report_digest = copy.to_vec();
    a.amendment = Some(crate::wire::sign(
        &core.key(),
        &core.me,
        crate::crypto::signing::Purpose::Amendment,
        &amendment,
    ));
    Ok(())
}
