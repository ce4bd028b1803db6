//! Cases: the node's view of each report (incoming, outgoing or local),
//! and status changes. A change to an incoming case is signed and queued
//! back to the report's origin in the same transaction as the change.

use prost::Message;
use serde::{Deserialize, Serialize};

use crate::audit;
use crate::crypto::signing::Purpose;
use crate::identity::PeerIdentity;
use crate::node::{Core, NodeError};
use crate::pb;
use crate::report::stored::StoredPayload;
use crate::report::{CaseStatus, Direction, MediaHash, wire};
use crate::store::{CaseFilter, ReportRow};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryView {
    pub destination: String,
    /// queued, delivered, refused.
    pub state: String,
    pub reason: String,
    pub delivered_at: Option<String>,
    pub attempts: u32,
    pub last_error: String,
    /// The receiver's signed receipt (protobuf `Signed`), base64.
    pub receipt: Option<String>,
    /// The relay the report was handed to, when not the destination.
    #[serde(default)]
    pub next_hop: Option<String>,
    /// When that relay took the report over (its signed receipt).
    #[serde(default)]
    pub relayed_at: Option<String>,
    /// The relays the destination's receipt came back through.
    #[serde(default)]
    pub via: Vec<String>,
    /// The destination that handed the case over to this one.
    #[serde(default)]
    pub handed_off_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryView {
    pub status: String,
    pub reason: String,
    pub actor: String,
    pub signer: String,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteView {
    pub kind: String,
    pub destinations: Vec<String>,
    pub reason: String,
    pub ip: String,
    pub ip_source: String,
    pub country: String,
    pub dataset: String,
    pub dataset_date: String,
    #[serde(default)]
    pub method: String,
    /// The hosting network: AS number (0 = unknown) and organisation.
    #[serde(default)]
    pub asn: u32,
    #[serde(default)]
    pub org: String,
    #[serde(default)]
    pub network_dataset: String,
    #[serde(default)]
    pub network_dataset_date: String,
    /// Set for anycast/CDN networks.
    #[serde(default)]
    pub ambiguity: String,
    /// Every hosting country named.
    #[serde(default)]
    pub countries: Vec<String>,
    /// e.g. `mixed-script-host`, `confusable-host`, `onion-host`.
    #[serde(default)]
    pub flags: Vec<String>,
    /// Every address considered, with every source's answer.
    #[serde(default)]
    pub addresses: Vec<AddressView>,
    /// The chain of reasoning.
    #[serde(default)]
    pub steps: Vec<String>,
}

/// One address a route considered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddressView {
    pub ip: String,
    pub ip_source: String,
    pub host: String,
    pub used: bool,
    pub country: String,
    pub dataset: String,
    pub dataset_date: String,
    pub method: String,
    pub answers: Vec<SourceAnswerView>,
    pub sources_disagree: bool,
    pub asn: u32,
    pub org: String,
    pub network_dataset: String,
    pub network_dataset_date: String,
    pub ambiguity: String,
}

/// One geo source's answer for an address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceAnswerView {
    pub source: String,
    pub dataset_date: String,
    pub method: String,
    pub raw_code: String,
    pub country: String,
}

/// A case as operators see it (and as `--json` prints it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseView {
    pub id: String,
    pub origin: String,
    pub direction: String,
    pub destination: String,
    pub destinations: Vec<String>,
    pub status: String,
    pub category: String,
    pub priority: String,
    pub urls: Vec<String>,
    pub hosting_country: Option<String>,
    pub created_at: String,
    pub created_at_ms: i64,
    pub received_from: Option<String>,
    pub notes: String,
    pub hashes: Vec<MediaHashView>,
    pub route: Option<RouteView>,
    pub deliveries: Vec<DeliveryView>,
    pub history: Vec<HistoryView>,
    /// Other reports of the same content that joined this case
    /// (ORIGIN/REPORT-ID).
    #[serde(default)]
    pub also_reported_by: Vec<String>,
    /// The case (ORIGIN/REPORT-ID) this report joined, if it did.
    #[serde(default)]
    pub joined_to: Option<String>,
    /// Law-enforcement referrals recorded here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub referrals: Vec<ReferralView>,
    /// When retention purged its URLs, notes and evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged_at: Option<String>,
    /// `national` when the origin classified it so; empty for baseline.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub classification: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferralView {
    pub agency: String,
    pub reference: String,
    pub referred_at: String,
    pub actor: String,
}

/// A law-enforcement referral to record with the status
/// `referred-to-law-enforcement`.
#[derive(Debug, Clone, Default)]
pub struct Referral<'a> {
    pub agency: &'a str,
    pub reference: &'a str,
    /// 0 means now.
    pub referred_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaHashView {
    pub algorithm: String,
    pub value: String,
}

impl From<&MediaHash> for MediaHashView {
    fn from(h: &MediaHash) -> Self {
        MediaHashView {
            algorithm: h.algorithm.clone(),
            value: h.value.clone(),
        }
    }
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

pub async fn view_by_seq(core: &Core, seq: i64) -> Result<CaseView, NodeError> {
    let row = core
        .store
        .report_by_seq(seq)
        .await?
        .ok_or_else(|| NodeError::NotFound(format!("no case #{seq}")))?;
    view(core, row).await
}

async fn view(core: &Core, row: ReportRow) -> Result<CaseView, NodeError> {
    let deliveries = core.store.deliveries(row.seq).await?;
    let history = core.store.history(row.seq).await?;
    let joined = core.store.joined(row.seq).await?;
    let joined_to = match row.joined_to {
        Some(seq) => core
            .store
            .report_by_seq(seq)
            .await?
            .map(|r| format!("{}/{}", r.origin, r.report_id)),
        None => None,
    };
    // The origin's latest correction, signed; shown over the original.
    let correction = row
        .correction
        .as_deref()
        .and_then(|b| pb::Signed::decode(b).ok())
        .and_then(|s| pb::Amendment::decode(s.payload.as_slice()).ok())
        .unwrap_or_default();
    let referrals = core.store.referrals(row.seq).await?;
    // Stored payloads were verified (or made) by this node; one that does
    // not decode means a damaged database, which must not pass as empty.
    let payload = pb::ReportPayload::decode(row.payload())
        .map_err(|_| NodeError::Internal("a stored report payload does not decode"))?;
    let route = payload
        .route
        .as_ref()
        .map(crate::api::convert::route_view_from_pb);
    let relay = row.relay == 1;
    let destinations: Vec<String> = if relay {
        deliveries.iter().map(|d| d.destination.clone()).collect()
    } else if row.direction == Direction::Incoming.as_str() {
        vec![core.me.to_string()]
    } else if let Some(r) = &route {
        r.destinations.clone()
    } else {
        // Purged: the tombstone's route keeps the destinations.
        serde_json::from_str::<serde_json::Value>(&row.route)
            .ok()
            .and_then(|v| serde_json::from_value(v["destinations"].clone()).ok())
            .unwrap_or_default()
    };
    Ok(CaseView {
        id: row.report_id,
        origin: row.origin,
        direction: if relay {
            "relayed".to_owned()
        } else {
            row.direction
        },
        destination: destinations.join(","),
        destinations,
        status: row.status,
        category: row.category,
        priority: row.priority,
        urls: payload.urls,
        hosting_country: row.hosting_country,
        created_at: rfc3339(row.created_at_ms),
        created_at_ms: row.created_at_ms,
        received_from: row.received_from,
        notes: if correction.notes.is_empty() {
            payload.notes
        } else {
            correction.notes
        },
        hashes: if correction.hashes.is_empty() {
            &payload.hashes
        } else {
            &correction.hashes
        }
        .iter()
        .map(|h| MediaHashView {
            algorithm: h.algorithm.clone(),
            value: h.value.clone(),
        })
        .collect(),
        also_reported_by: joined
            .iter()
            .map(|r| format!("{}/{}", r.origin, r.report_id))
            .collect(),
        joined_to,
        route,
        deliveries: deliveries
            .into_iter()
            .map(|d| DeliveryView {
                destination: d.destination,
                state: d.state,
                reason: d.reason.unwrap_or_default(),
                delivered_at: d.delivered_at_ms.map(rfc3339),
                attempts: u32::try_from(d.attempts).unwrap_or(u32::MAX),
                last_error: d.last_error.unwrap_or_default(),
                receipt: d.receipt.as_deref().map(b64),
                next_hop: d.next_hop,
                relayed_at: d.relayed_at_ms.map(rfc3339),
                via: d
                    .via
                    .map(|v| {
                        v.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
                handed_off_by: d.handed_off_by,
            })
            .collect(),
        history: history
            .into_iter()
            .map(|h| HistoryView {
                status: h.status,
                reason: h.reason,
                actor: h.actor,
                signer: h.signer.unwrap_or_default(),
                at: rfc3339(h.at_ms),
            })
            .collect(),
        referrals: referrals
            .into_iter()
            .map(|r| ReferralView {
                agency: r.agency,
                reference: r.reference,
                referred_at: rfc3339(r.referred_at_ms),
                actor: r.actor,
            })
            .collect(),
        purged_at: row.purged_at_ms.map(rfc3339),
        classification: payload.classification,
    })
}

/// Records a read of cases through the Operator service: who (from the
/// certificate), which request, and which cases or filter. One entry per
/// request, written before the data is returned; if it cannot be written
/// the read fails (no unaudited access).
pub async fn audit_read(
    core: &Core,
    operator: &PeerIdentity,
    kind: &'static str,
    subject: String,
    detail: serde_json::Value,
) -> Result<(), NodeError> {
    let mut tx = core.store.begin().await?;
    tx.audit(
        &audit::Entry::new(kind, operator.to_string(), subject, detail),
        Core::now_ms(),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// `ORIGIN/REPORT-ID` of a case: how audit entries name it.
pub fn subject(case: &CaseView) -> String {
    format!("{}/{}", case.origin, case.id)
}

/// Finds a case by report id, or by `ORIGIN/REPORT-ID`.
pub(crate) async fn find(core: &Core, id: &str) -> Result<ReportRow, NodeError> {
    let (origin, report_id) = match id.split_once('/') {
        Some((o, r)) => (Some(o), r),
        None => (None, id),
    };
    let mut rows = core.store.reports_by_id(origin, report_id).await?;
    match rows.len() {
        0 => Err(NodeError::NotFound(format!("no case {id:?}"))),
        1 => Ok(rows.remove(0)),
        _ => Err(NodeError::FailedPrecondition(format!(
            "two origins used report id {id:?}: ask for ORIGIN/{id}"
        ))),
    }
}

pub async fn get(core: &Core, id: &str) -> Result<CaseView, NodeError> {
    let row = find(core, id).await?;
    view(core, row).await
}

pub async fn list(core: &Core, filter: &CaseFilter<'_>) -> Result<Vec<CaseView>, NodeError> {
    let mut filter = filter.clone();
    filter.limit = if filter.limit <= 0 {
        1000
    } else {
        filter.limit.min(10_000)
    };
    let rows = core.store.list_reports(&filter).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(view(core, row).await?);
    }
    Ok(out)
}

/// Changes the status of a case worked here (incoming or local). For an
/// incoming case the signed update is queued back to the node that
/// delivered it, in the same transaction.
pub async fn update(
    core: &Core,
    operator: &PeerIdentity,
    id: &str,
    status: &str,
    reason: &str,
    referral: &Referral<'_>,
) -> Result<CaseView, NodeError> {
    let result = apply_update(core, operator, id, status, reason, referral).await;
    if let Err(e @ (NodeError::Invalid(_) | NodeError::FailedPrecondition(_))) = &result {
        let code = match e {
            NodeError::Invalid(i) => i.code,
            _ => "invalid-transition",
        };
        let refused = format!("{id}\0{status}");
        core.audit_refusal(
            &operator.to_string(),
            code,
            &e.to_string(),
            refused.as_bytes(),
        )
        .await;
    }
    result
}

async fn apply_update(
    core: &Core,
    operator: &PeerIdentity,
    id: &str,
    status: &str,
    reason: &str,
    referral: &Referral<'_>,
) -> Result<CaseView, NodeError> {
    let actor = operator.to_string();
    let to = CaseStatus::parse(status).map_err(|mut e| {
        e.field = "status".into();
        e
    })?;
    crate::report::validate::single_line("reason", reason, 4096)?;
    let referral = check_referral(to, referral)?;
    let row = find(core, id).await?;
    if row.relay == 1 {
        return Err(NodeError::FailedPrecondition(format!(
            "report {id} only passes through this node as a relay; the destination works the case"
        )));
    }
    if let Some(case) = row.joined_to {
        let case = core.store.report_by_seq(case).await?;
        return Err(NodeError::FailedPrecondition(format!(
            "report {id} joined case {} (same content): update that case",
            case.map(|c| format!("{}/{}", c.origin, c.report_id))
                .unwrap_or_default()
        )));
    }
    if row.direction == Direction::Outgoing.as_str() {
        return Err(NodeError::FailedPrecondition(format!(
            "case {id} is worked by the receiving hotline; this node only sees its status"
        )));
    }
    let from = CaseStatus::parse(&row.status).map_err(|_| {
        NodeError::FailedPrecondition(format!("case {id} has status {:?}", row.status))
    })?;
    if !from.can_move_to(to) {
        let allowed: Vec<&str> = from.next().iter().map(|s| s.as_str()).collect();
        return Err(NodeError::FailedPrecondition(format!(
            "case {id} cannot go from {from} to {to}; allowed: {}",
            if allowed.is_empty() {
                "none (final status)".to_owned()
            } else {
                allowed.join(", ")
            }
        )));
    }
    let now = Core::now_ms();
    let mut tx = core.store.begin().await?;
    // Re-read inside the transaction: a concurrent change wins, this one
    // is refused rather than silently applied over it.
    let current = tx.report_by_seq(row.seq).await?.map(|r| r.status);
    if current.as_deref() != Some(row.status.as_str()) {
        return Err(NodeError::FailedPrecondition(format!(
            "case {id} changed meanwhile; try again"
        )));
    }
    let wake = change_status(
        core,
        &mut tx,
        &row,
        from,
        to,
        reason,
        &actor,
        now,
        referral.as_ref(),
    )
    .await?;
    tx.commit().await?;
    core.case_changed(row.seq);
    for peer in &wake {
        core.wake(peer);
    }
    view_by_seq(core, row.seq).await
}

/// Hands an incoming case over to another hotline: the received envelope
/// goes on to it with this node's signed handoff hop, this case becomes
/// `moved` (signed back to the origin like any change), and the new
/// hotline's receipt and status updates come back through this node.
pub async fn hand_off(
    core: &Core,
    operator: &PeerIdentity,
    id: &str,
    to: &str,
    hosting_ip: &str,
    reason: &str,
) -> Result<CaseView, NodeError> {
    let result = apply_hand_off(core, operator, id, to, hosting_ip, reason).await;
    if let Err(e @ (NodeError::Invalid(_) | NodeError::FailedPrecondition(_))) = &result {
        let code = match e {
            NodeError::Invalid(i) => i.code,
            _ => "invalid-handoff",
        };
        let refused = format!("{id}\0{to}\0handoff");
        core.audit_refusal(
            &operator.to_string(),
            code,
            &e.to_string(),
            refused.as_bytes(),
        )
        .await;
    }
    result
}

async fn apply_hand_off(
    core: &Core,
    operator: &PeerIdentity,
    id: &str,
    to: &str,
    hosting_ip: &str,
    reason: &str,
) -> Result<CaseView, NodeError> {
    use crate::report::InvalidInput;
    let actor = operator.to_string();
    // At most 512 bytes: the hop's reason (1 KiB) also carries the new
    // evidence.
    crate::report::validate::single_line("reason", reason, 512)?;
    if reason.trim().is_empty() {
        return Err(InvalidInput::new("missing-reason", "reason", "say why the case moves").into());
    }
    let row = find(core, id).await?;
    if row.direction != Direction::Incoming.as_str() || row.relay == 1 {
        return Err(NodeError::FailedPrecondition(format!(
            "only a case received from another hotline can be handed over; {id} is {}",
            if row.relay == 1 {
                "relayed"
            } else {
                row.direction.as_str()
            }
        )));
    }
    let payload = pb::ReportPayload::decode(row.payload())
        .map_err(|_| NodeError::Internal("a stored report payload does not decode"))?;
    // The handoff hop carries the reason and, when routing chose the new
    // hotline, the new evidence (country, source, date, network; no
    // addresses or host names).
    let mut reason = reason.to_owned();
    let target = match (to.is_empty(), hosting_ip.is_empty()) {
        (false, true) => crate::identity::NodeId::new(to)
            .map_err(|_| InvalidInput::new("bad-node", "to", crate::report::validate::shown(to)))?,
        (true, false) => {
            let route = crate::node::intake::route_preview(
                core,
                &payload.urls,
                hosting_ip,
                &payload.category,
                &payload.classification,
            )?;
            let e = &route.evidence;
            reason.push_str(&format!(
                " [new evidence: hosted in {} per {} dated {}{}; {}]",
                e.country.as_deref().unwrap_or("an unknown country"),
                e.dataset,
                e.dataset_date,
                e.network
                    .as_ref()
                    .map(|n| format!(", network AS{}", n.asn))
                    .unwrap_or_default(),
                route.reason
            ));
            route
                .destinations
                .into_iter()
                .find(|d| d != &core.me)
                .ok_or_else(|| {
                    NodeError::FailedPrecondition(format!(
                        "no other hotline takes content hosted there ({}): the case stays here",
                        route.reason
                    ))
                })?
        }
        _ => {
            return Err(InvalidInput::new(
                "bad-handoff",
                "to",
                "give either the node to hand over to or the new hosting IP",
            )
            .into());
        }
    };
    let directory = core.directory();
    let Some(node) = directory.node(&target).filter(|n| n.active) else {
        return Err(NodeError::FailedPrecondition(format!(
            "{target} is not an active node of the federation"
        )));
    };
    let category = crate::report::Category::parse(&row.category)?;
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
    let envelope = pb::Envelope::decode(row.envelope.as_slice())
        .map_err(|_| NodeError::Internal("a stored envelope does not decode"))?;
    let passed: Vec<&str> = envelope.hops.iter().map(|h| h.signer.as_str()).collect();
    if target == core.me || target.as_str() == row.origin || passed.contains(&target.as_str()) {
        return Err(NodeError::FailedPrecondition(format!(
            "{target} already had this report: handing it there would be a loop"
        )));
    }
    let from = CaseStatus::parse(&row.status).map_err(|_| {
        NodeError::FailedPrecondition(format!("case {id} has status {:?}", row.status))
    })?;
    let now = Core::now_ms();
    let mut tx = core.store.begin().await?;
    let current = tx.report_by_seq(row.seq).await?.map(|r| r.status);
    if current.as_deref() != Some(row.status.as_str()) {
        return Err(NodeError::FailedPrecondition(format!(
            "case {id} changed meanwhile; try again"
        )));
    }
    // A final case stays final; a `moved` one may be handed over again
    // when no earlier handoff is pending or was accepted.
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
        return Err(NodeError::FailedPrecondition(format!(
            "case {id} is {from}{}: it cannot be handed over",
            if open_handoff {
                " and already handed over"
            } else {
                ""
            }
        )));
    }
    let sender = row
        .received_from
        .clone()
        .unwrap_or_else(|| row.origin.clone());
    let mut onward = envelope.clone();
    onward.hops.push(wire::hop(
        &core.key(),
        &core.me,
        &row.report_id,
        &row.origin,
        &row.payload_digest,
        &sender,
        target.as_str(),
        Some(&reason),
        now,
    ));
    tx.insert_delivery(row.seq, target.as_str(), None, None)
        .await?;
    tx.enqueue(
        target.as_str(),
        "report",
        row.priority == "urgent",
        row.seq,
        &onward.encode_to_vec(),
        now,
    )
    .await?;
    tx.audit(
        &audit::Entry::new(
            "case.handoff",
            actor.clone(),
            format!("{}/{}", row.origin, row.report_id),
            serde_json::json!({"to": target.as_str(), "reason": reason, "from_status": from.as_str()}),
        ),
        now,
    )
    .await?;
    // The case here becomes `moved`, signed back to the origin like any
    // change, in the same transaction as the handoff.
    let wake = if from == CaseStatus::Moved {
        Vec::new()
    } else {
        let why = format!("handed over to {target}: {reason}");
        change_status(
            core,
            &mut tx,
            &row,
            from,
            CaseStatus::Moved,
            &why,
            &actor,
            now,
            None,
        )
        .await?
    };
    tx.commit().await?;
    core.case_changed(row.seq);
    core.wake(target.as_str());
    for peer in &wake {
        core.wake(peer);
    }
    view_by_seq(core, row.seq).await
}

/// Records a status change of a case worked here, in `tx`, for the case
/// and every report of the same content that joined it (each origin gets
/// its own signed update). Returns the nodes the updates go to.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn change_status(
    core: &Core,
    tx: &mut crate::store::Tx,
    row: &ReportRow,
    from: CaseStatus,
    to: CaseStatus,
    reason: &str,
    actor: &str,
    now: i64,
    referral: Option<&Referral<'_>>,
) -> Result<Vec<String>, NodeError> {
    let mut wake: Vec<String> = change_one(core, tx, row, from, to, reason, actor, now, referral)
        .await?
        .into_iter()
        .collect();
    for joined in tx.joined(row.seq).await? {
        if joined.status == "retracted" {
            continue;
        }
        let from = CaseStatus::parse(&joined.status).unwrap_or(from);
        if let Some(peer) =
            change_one(core, tx, &joined, from, to, reason, actor, now, None).await?
        {
            wake.push(peer);
        }
    }
    Ok(wake)
}

/// One report's status change: the new status, its history entry, its
/// audit entry, and — for an incoming report — the signed update queued
/// back towards its origin. Returns the node the update goes to.
#[allow(clippy::too_many_arguments)]
async fn change_one(
    core: &Core,
    tx: &mut crate::store::Tx,
    row: &ReportRow,
    from: CaseStatus,
    to: CaseStatus,
    reason: &str,
    actor: &str,
    now: i64,
    referral: Option<&Referral<'_>>,
) -> Result<Option<String>, NodeError> {
    let update_id = uuid::Uuid::now_v7().to_string();
    tx.set_status(row.seq, to.as_str(), now).await?;
    let mut signed_bytes = None;
    // Back to the origin, which signed the route that named this node.
    let back_to = (row.direction == Direction::Incoming.as_str()).then(|| row.origin.clone());
    let next_node = back_to
        .as_ref()
        .map(|origin| row.received_from.clone().unwrap_or_else(|| origin.clone()));
    if let Some(peer) = &back_to {
        let update = pb::StatusUpdate {
            update_id: update_id.clone(),
            report_id: row.report_id.clone(),
            origin: row.origin.clone(),
            node: core.me.to_string(),
            status: to.as_str().to_owned(),
            reason: reason.to_owned(),
            at_ms: now,
        };
        let signed = wire::sign(&core.key(), &core.me, Purpose::Status, &update);
        let bytes = signed.encode_to_vec();
        match row.received_from.as_deref() {
            // Through the relay (or the hotline that handed the case over)
            // it came from, which passes it on towards the origin.
            Some(prev) if prev != row.origin => {
                let ret = pb::Returned {
                    kind: pb::ReturnedKind::Status as i32,
                    item: Some(signed),
                    hops: vec![],
                };
                tx.enqueue_returned(
                    prev,
                    row.priority == "urgent",
                    row.seq,
                    &ret.encode_to_vec(),
                    now,
                )
                .await?;
            }
            _ => {
                tx.enqueue(
                    peer,
                    "status",
                    row.priority == "urgent",
                    row.seq,
                    &bytes,
                    now,
                )
                .await?;
            }
        }
        signed_bytes = Some(bytes);
    }
    tx.insert_status(
        row.seq,
        &update_id,
        to.as_str(),
        reason,
        actor,
        signed_bytes.as_ref().map(|_| core.me.as_str()),
        signed_bytes.as_deref(),
        now,
    )
    .await?;
    let referral = referral.map(|r| {
        let at = if r.referred_at_ms == 0 {
            now
        } else {
            r.referred_at_ms
        };
        (r.agency, r.reference, at)
    });
    if let Some((agency, reference, at)) = referral {
        tx.insert_referral(row.seq, &update_id, agency, reference, at, actor, now)
            .await?;
    }
    tx.audit(
        &audit::Entry::new(
            "case.status",
            actor.to_owned(),
            format!("{}/{}", row.origin, row.report_id),
            serde_json::json!({
                "from": from.as_str(),
                "to": to.as_str(),
                "reason": reason,
                "update_id": update_id,
                "sent_to": back_to,
                "through": next_node.as_ref().filter(|n| Some(*n) != back_to.as_ref()),
                "referral": referral.map(|(agency, reference, at)| serde_json::json!({
                    "agency": agency,
                    "reference": reference,
                    "referred_at_ms": at,
                })),
            }),
        ),
        now,
    )
    .await?;
    Ok(next_node)
}

/// A referral's fields: both required with `referred-to-law-enforcement`,
/// refused with any other status.
fn check_referral<'a>(to: CaseStatus, r: &Referral<'a>) -> Result<Option<Referral<'a>>, NodeError> {
    use crate::report::InvalidInput;
    let given = !r.agency.is_empty() || !r.reference.is_empty() || r.referred_at_ms != 0;
    if to != CaseStatus::ReferredToLawEnforcement {
        if given {
            return Err(InvalidInput::new(
                "referral-without-status",
                "agency",
                "agency, reference and referred_at are only for status referred-to-law-enforcement",
            )
            .into());
        }
        return Ok(None);
    }
    for (field, value) in [("agency", r.agency), ("reference", r.reference)] {
        if value.trim().is_empty() {
            return Err(InvalidInput::new(
                "referral-incomplete",
                field,
                "required with status referred-to-law-enforcement",
            )
            .into());
        }
        crate::report::validate::single_line(field, value, 256)?;
    }
    let now = Core::now_ms();
    if r.referred_at_ms < 0 || r.referred_at_ms > now + 300_000 {
        return Err(InvalidInput::new(
            "referral-time",
            "referred_at_ms",
            "must be a time in the past (Unix ms), or 0 for now",
        )
        .into());
    }
    Ok(Some(r.clone()))
}
