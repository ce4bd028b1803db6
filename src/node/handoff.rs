//! Handing an incoming case over to another hotline, when its content
//! moved: the received envelope goes on to the new hotline with this
//! node's signed handoff hop (its reason, and the new evidence when
//! routing chose the hotline), this case becomes `moved` (signed back to
//! the origin like any change), and the new hotline's receipt and status
//! updates come back through this node.

use prost::Message;

use crate::audit;
use crate::identity::{NodeId, PeerIdentity};
use crate::pb;
use crate::report::validate::{self, shown};
use crate::report::{CaseStatus, Category, Direction, InvalidInput};
use crate::store::{NewOutbox, OUTBOX_SIGNED, ReportRow, Tx};
use crate::wire;
use crate::wire::stored::StoredPayload;

use super::cases::{CaseView, change_status, find, view_by_seq};
use super::{Core, NodeError};

/// Hands case `id` over to node `to`, or to the hotline routing picks for
/// `hosting_ip` (exactly one of the two). Refusals are audited.
pub async fn hand_off(
    core: &Core,
    operator: &PeerIdentity,
    id: &str,
    to: &str,
    hosting_ip: &str,
    reason: &str,
) -> Result<CaseView, NodeError> {
    let result = apply(core, operator, id, to, hosting_ip, reason).await;
    let fields: [&[u8]; 5] = [
        b"handoff",
        id.as_bytes(),
        to.as_bytes(),
        hosting_ip.as_bytes(),
        reason.as_bytes(),
    ];
    core.audit_if_refused(operator, "invalid-handoff", &fields, result)
        .await
}

/// `cases reroute`: resolves the case's host names again and, when the
/// content is now hosted in another country, hands the case to that
/// country's hotline (`hand_off`), the reason saying where it was and is
/// hosted, per which resolution. Refusals are audited.
pub async fn reroute(
    core: &Core,
    operator: &PeerIdentity,
    id: &str,
    reason: &str,
) -> Result<CaseView, NodeError> {
    let result = async {
        let row = handed_case(core, id, reason).await?;
        let payload = pb::ReportPayload::decode(row.payload())
            .map_err(|_| NodeError::Internal("a stored report payload does not decode"))?;
        let (to, why) = moved_to(core, &payload, reason).await?;
        apply(core, operator, id, to.as_str(), "", &why).await
    }
    .await;
    let fields: [&[u8]; 3] = [b"reroute", id.as_bytes(), reason.as_bytes()];
    core.audit_if_refused(operator, "invalid-handoff", &fields, result)
        .await
}

/// Where the content is hosted now, per DNS asked again, and the hop's
/// reason: the countries before and now and when each was resolved (no
/// host names or addresses: the reason reaches the audit log).
async fn moved_to(
    core: &Core,
    payload: &pb::ReportPayload,
    reason: &str,
) -> Result<(NodeId, String), NodeError> {
    if core.dns.setting().mode == crate::geo::dns::Mode::Off {
        return Err(NodeError::FailedPrecondition(
            "DNS is off on this node ([dns] mode = \"off\"): hand the case over with --to or \
             --hosting-ip"
                .into(),
        ));
    }
    let route = super::route::route_fresh(
        core,
        &payload.urls,
        &payload.category,
        &payload.classification,
    )
    .await?;
    let before = payload
        .route
        .as_ref()
        .and_then(|r| r.evidence.as_ref())
        .cloned()
        .unwrap_or_default();
    let now = &route.evidence;
    if now.countries.is_empty() {
        return Err(NodeError::FailedPrecondition(format!(
            "DNS locates the content nowhere now ({}): the case stays here",
            route.reason
        )));
    }
    let mut was = before.countries.clone();
    was.sort();
    let mut is = now.countries.clone();
    is.sort();
    if was == is {
        return Err(NodeError::FailedPrecondition(format!(
            "the content is still hosted in {} per DNS now: nothing to hand over",
            now.countries.join(", ")
        )));
    }
    let when = |dns: &mut dyn Iterator<Item = i64>| {
        dns.max()
            .map(crate::report::view::rfc3339)
            .unwrap_or_else(|| "unknown time".to_owned())
    };
    let why = format!(
        "{reason} [re-resolved by DNS: was hosted in {} (resolved {}), now in {} (resolved {}); {}]",
        if before.countries.is_empty() {
            "an unknown country".to_owned()
        } else {
            before.countries.join(", ")
        },
        when(&mut before.dns.iter().map(|d| d.at_ms)),
        now.countries.join(", "),
        when(&mut now.dns.iter().map(|d| d.at_ms)),
        route.reason
    );
    let node = route
        .destinations
        .into_iter()
        .find(|d| d != &core.me)
        .ok_or_else(|| {
            NodeError::FailedPrecondition(format!(
                "the content is now hosted where this node serves ({}): the case stays here",
                now.countries.join(", ")
            ))
        })?;
    Ok((node, why))
}

async fn apply(
    core: &Core,
    operator: &PeerIdentity,
    id: &str,
    to: &str,
    hosting_ip: &str,
    reason: &str,
) -> Result<CaseView, NodeError> {
    let actor = operator.to_string();
    let row = handed_case(core, id, reason).await?;
    let payload = pb::ReportPayload::decode(row.payload())
        .map_err(|_| NodeError::Internal("a stored report payload does not decode"))?;
    let (target, reason) = target(core, &payload, to, hosting_ip, reason).await?;
    let envelope = pb::Envelope::decode(row.envelope.as_slice())
        .map_err(|_| NodeError::Internal("a stored envelope does not decode"))?;
    check_target(core, &row, &envelope, &target)?;
    let from = CaseStatus::parse(&row.status).map_err(|_| {
        NodeError::FailedPrecondition(format!("case {id} has status {:?}", row.status))
    })?;
    let now = Core::now_ms();
    let mut tx = core.store.begin().await?;
    check_state(core, &mut tx, &row, id, from).await?;
    queue(core, &mut tx, &row, envelope, &target, &reason, now).await?;
    audit_handoff(&mut tx, &row, &actor, &target, &reason, from, now).await?;
    // The case here becomes `moved`, signed back to the origin like any
    // change, in the same transaction as the handoff.
    let wake = if from == CaseStatus::Moved {
        Vec::new()
    } else {
        let why = format!("handed over to {target}: {reason}");
        let to = CaseStatus::Moved;
        change_status(core, &mut tx, &row, from, to, &why, &actor, now, None).await?
    };
    tx.commit().await?;
    core.case_changed(row.seq);
    core.wake(target.as_str());
    for peer in &wake {
        core.wake(peer);
    }
    view_by_seq(core, row.seq).await
}

/// The case to hand over: one received from another hotline (not one this
/// node only relays), with a reason of at most 512 bytes (the hop's 1 KiB
/// reason also carries the new evidence).
async fn handed_case(core: &Core, id: &str, reason: &str) -> Result<ReportRow, NodeError> {
    validate::single_line("reason", reason, 512)?;
    if reason.trim().is_empty() {
        return Err(InvalidInput::new("missing-reason", "reason", "say why the case moves").into());
    }
    let row = find(core, id).await?;
    if row.direction != Direction::Incoming.as_str() || row.relay == 1 {
        let what = if row.relay == 1 {
            "relayed"
        } else {
            row.direction.as_str()
        };
        return Err(NodeError::FailedPrecondition(format!(
            "only a case received from another hotline can be handed over; {id} is {what}"
        )));
    }
    Ok(row)
}

/// The node to hand over to, and the hop's reason: the named node, or the
/// hotline routing picks for the new hosting IP, with the new evidence
/// (country, source, date, network; no addresses or host names) added to
/// the reason.
async fn target(
    core: &Core,
    payload: &pb::ReportPayload,
    to: &str,
    hosting_ip: &str,
    reason: &str,
) -> Result<(NodeId, String), NodeError> {
    match (to.is_empty(), hosting_ip.is_empty()) {
        (false, true) => {
            let node =
                NodeId::new(to).map_err(|_| InvalidInput::new("bad-node", "to", shown(to)))?;
            Ok((node, reason.to_owned()))
        }
        (true, false) => {
            let route = super::route::route_preview(
                core,
                &payload.urls,
                hosting_ip,
                &payload.category,
                &payload.classification,
            )
            .await?;
            let e = &route.evidence;
            let network = e
                .network
                .as_ref()
                .map(|n| format!(", network AS{}", n.asn))
                .unwrap_or_default();
            let reason = format!(
                "{reason} [new evidence: hosted in {} per {} dated {}{network}; {}]",
                e.country.as_deref().unwrap_or("an unknown country"),
                e.dataset,
                e.dataset_date,
                route.reason
            );
            let node = route
                .destinations
                .into_iter()
                .find(|d| d != &core.me)
                .ok_or_else(|| {
                    NodeError::FailedPrecondition(format!(
                        "no other hotline takes content hosted there ({}): the case stays here",
                        route.reason
                    ))
                })?;
            Ok((node, reason))
        }
        _ => Err(InvalidInput::new(
            "bad-handoff",
            "to",
            "give either the node to hand over to or the new hosting IP",
        )
        .into()),
    }
}

/// The target is an active node that takes the case's category, reached
/// directly, and never had the report (a loop).
fn check_target(
    core: &Core,
    row: &ReportRow,
    envelope: &pb::Envelope,
    target: &NodeId,
) -> Result<(), NodeError> {
    let directory = core.directory();
    let Some(node) = directory.node(target).filter(|n| n.active) else {
        return Err(NodeError::FailedPrecondition(format!(
            "{target} is not an active node of the federation"
        )));
    };
    let category = Category::parse(&row.category)?;
    if !node.accepts(category) {
        return Err(NodeError::FailedPrecondition(format!(
            "{target} does not take {category} reports"
        )));
    }
    if node.relay.is_some() {
        return Err(NodeError::FailedPrecondition(format!(
            "{target} is reached through a relay; a case can be handed over only to a node this one reaches directly"
        )));
    }
    let passed: Vec<&str> = envelope.hops.iter().map(|h| h.signer.as_str()).collect();
    if target == &core.me || target.as_str() == row.origin || passed.contains(&target.as_str()) {
        return Err(NodeError::FailedPrecondition(format!(
            "{target} already had this report: handing it there would be a loop"
        )));
    }
    Ok(())
}

/// Inside the transaction: the case has not changed meanwhile, is not
/// final, and has no handoff pending or accepted (a `moved` case may be
/// handed over again when its earlier handoff was refused).
async fn check_state(
    core: &Core,
    tx: &mut Tx,
    row: &ReportRow,
    id: &str,
    from: CaseStatus,
) -> Result<(), NodeError> {
    let current = tx.report_by_seq(row.seq).await?.map(|r| r.status);
    if current.as_deref() != Some(row.status.as_str()) {
        return Err(NodeError::FailedPrecondition(format!(
            "case {id} changed meanwhile; try again"
        )));
    }
    let open_handoff = core
        .store
        .deliveries(row.seq)
        .await?
        .into_iter()
        .any(|d| d.state != "refused");
    let allowed = match from {
        CaseStatus::NotIllegal | CaseStatus::Removed | CaseStatus::Retracted => false,
        CaseStatus::Moved => !open_handoff,
        _ => true,
    };
    if !allowed || open_handoff {
        let pending = if open_handoff {
            " and already handed over"
        } else {
            ""
        };
        return Err(NodeError::FailedPrecondition(format!(
            "case {id} is {from}{pending}: it cannot be handed over"
        )));
    }
    Ok(())
}

/// Queues the received envelope to the target with this node's signed
/// handoff hop, and records the delivery.
async fn queue(
    core: &Core,
    tx: &mut Tx,
    row: &ReportRow,
    envelope: pb::Envelope,
    target: &NodeId,
    reason: &str,
    now: i64,
) -> Result<(), NodeError> {
    let sender = row
        .received_from
        .clone()
        .unwrap_or_else(|| row.origin.clone());
    let mut onward = envelope;
    onward.hops.push(wire::hop(
        &core.key(),
        &core.me,
        &row.report_id,
        &row.origin,
        &row.payload_digest,
        &sender,
        target.as_str(),
        Some(reason),
        now,
    ));
    tx.insert_delivery(row.seq, target.as_str(), None, None)
        .await?;
    let body = onward.encode_to_vec();
    tx.enqueue(
        NewOutbox {
            peer: target.as_str(),
            kind: "report",
            urgent: row.priority == "urgent",
            report_seq: row.seq,
            body: &body,
            returned: OUTBOX_SIGNED,
        },
        now,
    )
    .await?;
    Ok(())
}

async fn audit_handoff(
    tx: &mut Tx,
    row: &ReportRow,
    actor: &str,
    target: &NodeId,
    reason: &str,
    from: CaseStatus,
    now: i64,
) -> Result<(), NodeError> {
    tx.audit(
        &audit::Entry::new(
            "case.handoff",
            actor,
            format!("{}/{}", row.origin, row.report_id),
            serde_json::json!({"to": target.as_str(), "reason": reason, "from_status": from.as_str()}),
        ),
        now,
    )
    .await?;
    Ok(())
}
