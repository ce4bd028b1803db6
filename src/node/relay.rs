//! What a relay does, in both directions: passes a report on towards the
//! destinations the directory puts behind it, each envelope with this
//! node's signed hop (`pass_on`, when it takes a report over), and passes
//! receipts and status updates back towards the origin with its signed
//! return hop (`pass_back`: for what peers return through it, and for the
//! receipts its own delivery worker gets).

use prost::Message;

use crate::identity::NodeId;
use crate::pb;
use crate::store::{ReportRow, Tx};
use crate::wire;

use super::{Core, NodeError};

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
        tx.enqueue(
            hop.as_str(),
            "report",
            report.urgent,
            report.seq,
            &onward.encode_to_vec(),
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
    tx.enqueue_returned(
        prev,
        row.priority == "urgent",
        row.seq,
        &back.encode_to_vec(),
        now,
    )
    .await?;
    Ok(())
}
