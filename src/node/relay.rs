//! What a relay does, in both directions: passes a report on towards the
//! destinations the directory puts behind it, each envelope with this
//! node's signed hop (`pass_on`, when it takes a report over), and passes
//! receipts and status updates back towards the origin with its signed
//! return hop (`pass_back`: for what peers return through it, and for the
//! receipts its own delivery worker gets).

use prost::Message;

use crate::identity::NodeId;
use crate::pb;
use crate::store::{NewOutbox, OUTBOX_RETURNED, OUTBOX_SIGNED, ReportRow, Tx};
use crate::wire;

use super::{Core, NodeError};

/// The relays a report from `origin` passes on its way to `dest`, in
/// order: the directory's relays in front of `dest`, outermost first, from
/// the one after `origin` when the origin is one of them.
pub fn chain(
    directory: &crate::directory::Directory,
    origin: &NodeId,
    dest: &NodeId,
) -> Vec<NodeId> {
    let mut outer_first = directory.relays_of(dest);
    outer_first.reverse();
    match outer_first.iter().position(|r| r == origin) {
        Some(i) => outer_first.split_off(i + 1),
        None => outer_first,
    }
}

/// Where a status update of a case worked here goes first: back through
/// the node the report came from when that is one of the directory's
/// relays for this hotline or the hotline that handed the case over —
/// otherwise straight to the origin, so a node that only posed as a relay
/// can neither read nor drop the case's statuses.
pub fn back_through(core: &Core, row: &ReportRow) -> Option<String> {
    let prev = row.received_from.as_deref()?;
    if prev == row.origin {
        return None;
    }
    let directory = core.directory();
    let origin = NodeId::new(&row.origin).ok()?;
    let prev_id = NodeId::new(prev).ok()?;
    if chain(&directory, &origin, &core.me).contains(&prev_id) {
        return Some(prev.to_owned());
    }
    let handed_over = pb::Envelope::decode(row.envelope.as_slice())
        .ok()
        .and_then(|e| e.hops.last().cloned())
        .filter(|h| h.signer == prev)
        .and_then(|h| pb::Hop::decode(h.payload.as_slice()).ok())
        .is_some_and(|h| h.handoff);
    handed_over.then(|| prev.to_owned())
}

/// The report a relay passes on: what its hops sign.
pub struct Relayed<'a> {
    pub seq: i64,
    pub report_id: &'a str,
    pub origin: &'a str,
    pub digest: &'a [u8; 32],
    pub urgent: bool,
}

/// Records a delivery to each destination behind this node and queues one
/// envelope per next hop (several destinations may share one), with this
/// node's hop from `from` appended. Returns the next hops.
pub async fn pass_on(
    core: &Core,
    tx: &mut Tx,
    report: &Relayed<'_>,
    destinations: &[NodeId],
    envelope: &pb::Envelope,
    from: &str,
    now: i64,
) -> Result<Vec<NodeId>, NodeError> {
    let directory = core.directory();
    let mut next_hops: Vec<NodeId> = Vec::new();
    for dest in destinations {
        let hop = directory.next_hop(&core.me, dest);
        tx.insert_delivery(report.seq, dest.as_str(), Some(hop.as_str()), None)
            .await?;
        if next_hops.contains(&hop) {
            continue;
        }
        let mut onward = envelope.clone();
        onward.hops.push(wire::hop(
            &core.key(),
            &core.me,
            report.report_id,
            report.origin,
            report.digest,
            from,
            hop.as_str(),
            None,
            now,
        ));
        let body = onward.encode_to_vec();
        tx.enqueue(
            NewOutbox {
                peer: hop.as_str(),
                kind: "report",
                urgent: report.urgent,
                report_seq: report.seq,
                body: &body,
                returned: OUTBOX_SIGNED,
            },
            now,
        )
        .await?;
        next_hops.push(hop);
    }
    Ok(next_hops)
}

/// Queues a receipt or status update (already accepted here) back to the
/// node this relay received the report from, with this node's return hop.
pub async fn pass_back(
    core: &Core,
    tx: &mut Tx,
    row: &ReportRow,
    ret: &pb::Returned,
    from: &str,
    now: i64,
) -> Result<(), NodeError> {
    let Some(prev) = row.received_from.as_deref() else {
        return Ok(());
    };
    let back = wire::return_hop(
        &core.key(),
        &core.me,
        ret,
        &row.report_id,
        &row.origin,
        from,
        prev,
        now,
    );
    let body = back.encode_to_vec();
    tx.enqueue(
        NewOutbox {
            peer: prev,
            kind: "status",
            urgent: row.priority == "urgent",
            report_seq: row.seq,
            body: &body,
            returned: OUTBOX_RETURNED,
        },
        now,
    )
    .await?;
    Ok(())
}
