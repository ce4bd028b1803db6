//! Cases: the node's view of each report (incoming, outgoing or local),
//! and status changes. A change to an incoming case is signed and queued
//! back to the report's origin in the same transaction as the change.

use prost::Message;

use crate::audit;
use crate::crypto::signing::Purpose;
use crate::identity::{PeerIdentity, Role};
use crate::node::{Core, NodeError};
use crate::pb;
use crate::report::{CaseStatus, Direction};
use crate::store::{
    CaseFilter, NewOutbox, OUTBOX_RETURNED, OUTBOX_SIGNED, ProposalRow, ReportRow, Tx,
};
use crate::wire;
use crate::wire::stored::StoredPayload;

pub use crate::report::view::{
    AddressView, CaseView, DeliveryView, HistoryView, MediaHashView, ReferralView, RouteView,
    SourceAnswerView, b64, rfc3339, subject,
};

/// A law-enforcement referral to record with the status
/// `referred-to-law-enforcement`.
#[derive(Debug, Clone, Default)]
pub struct Referral<'a> {
    pub agency: &'a str,
    pub reference: &'a str,
    /// 0 means now.
    pub referred_at_ms: i64,
}

pub async fn view_by_seq(core: &Core, seq: i64) -> Result<CaseView, NodeError> {
    let row = core
        .store
        .report_by_seq(seq)
        .await?
        .ok_or_else(|| NodeError::NotFound(format!("no case #{seq}")))?;
    view(core, row).await
}

/// A new report's case from the rows its submission just committed
/// (nothing joined to it, no referral yet), without reading them back.
pub async fn view_just_stored(
    core: &Core,
    stored: crate::store::JustStored,
) -> Result<CaseView, NodeError> {
    let related = (stored.deliveries, stored.history, Vec::new(), Vec::new());
    view_of(core, stored.row, related).await
}

async fn view(core: &Core, row: ReportRow) -> Result<CaseView, NodeError> {
    let deliveries = core.store.deliveries(row.seq).await?;
    let history = core.store.history(row.seq).await?;
    let joined = core.store.joined(row.seq).await?;
    let referrals = core.store.referrals(row.seq).await?;
    view_of(core, row, (deliveries, history, joined, referrals)).await
}

/// A case as a queue row shows it: the report and its route, without its
/// deliveries, history, referrals or joined reports (left empty), which
/// would cost four reads per row.
async fn row_view(core: &Core, row: ReportRow) -> Result<CaseView, NodeError> {
    view_of(core, row, Default::default()).await
}

type Related = (
    Vec<crate::store::DeliveryRow>,
    Vec<crate::store::HistoryRow>,
    Vec<ReportRow>,
    Vec<crate::store::ReferralRow>,
);

async fn view_of(
    core: &Core,
    row: ReportRow,
    (deliveries, history, joined, referrals): Related,
) -> Result<CaseView, NodeError> {
    let joined_to = match row.joined_to {
        Some(seq) => core
            .store
            .report_by_seq(seq)
            .await?
            .map(|r| format!("{}/{}", r.origin, r.report_id)),
        None => None,
    };
    // The origin's latest correction, signed; shown over the original.
    let correction = crate::wire::stored::applied_correction(&row).unwrap_or_default();
    let family_reports = family_reports(core, &row).await?;
    // Stored payloads were verified (or made) by this node; one that does
    // not decode means a damaged database, which must not pass as empty.
    let payload = pb::ReportPayload::decode(row.payload())
        .map_err(|_| NodeError::Internal("a stored report payload does not decode"))?;
    let route = payload
        .route
        .as_ref()
        .map(crate::wire::route::route_view_from_pb);
    let relay = row.relay == 1;
    let destinations = destinations(core, &row, route.as_ref(), &deliveries);
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
        deliveries: deliveries.into_iter().map(delivery_view).collect(),
        history: history.into_iter().map(history_view).collect(),
        referrals: referrals.into_iter().map(referral_view).collect(),
        purged_at: row.purged_at_ms.map(rfc3339),
        classification: payload.classification,
        family: row.family,
        family_reports,
    })
}

/// The other reports of `row`'s case family held here, as
/// ORIGIN/REPORT-ID (-> where each went, at its origin).
async fn family_reports(core: &Core, row: &ReportRow) -> Result<Vec<String>, NodeError> {
    let Some(family) = &row.family else {
        return Ok(Vec::new());
    };
    let others = core.store.family(&row.origin, family).await?;
    let mut out = Vec::new();
    for other in others.iter().filter(|o| o.seq != row.seq) {
        let to = if other.origin == core.me.as_str() {
            let going: Vec<String> = core
                .store
                .deliveries(other.seq)
                .await?
                .into_iter()
                .map(|d| d.destination)
                .collect();
            if going.is_empty() {
                " -> kept here".to_owned()
            } else {
                format!(" -> {}", going.join(", "))
            }
        } else {
            String::new()
        };
        out.push(format!("{}/{}{to}", other.origin, other.report_id));
    }
    Ok(out)
}

/// Where a case went: a relay's destinations behind it, this node for an
/// incoming case, the signed route's destinations for an outgoing one (a
/// purged report's tombstone route keeps them).
fn destinations(
    core: &Core,
    row: &ReportRow,
    route: Option<&RouteView>,
    deliveries: &[crate::store::DeliveryRow],
) -> Vec<String> {
    if row.relay == 1 {
        deliveries.iter().map(|d| d.destination.clone()).collect()
    } else if row.direction == Direction::Incoming.as_str() {
        vec![core.me.to_string()]
    } else if let Some(r) = route {
        r.destinations.clone()
    } else {
        serde_json::from_str::<serde_json::Value>(&row.route)
            .ok()
            .and_then(|v| serde_json::from_value(v["destinations"].clone()).ok())
            .unwrap_or_default()
    }
}

fn delivery_view(d: crate::store::DeliveryRow) -> DeliveryView {
    DeliveryView {
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
    }
}

fn history_view(h: crate::store::HistoryRow) -> HistoryView {
    HistoryView {
        status: h.status,
        reason: h.reason,
        actor: h.actor,
        signer: h.signer.unwrap_or_default(),
        at: rfc3339(h.at_ms),
    }
}

fn referral_view(r: crate::store::ReferralRow) -> ReferralView {
    ReferralView {
        agency: r.agency,
        reference: r.reference,
        referred_at: rfc3339(r.referred_at_ms),
        actor: r.actor,
    }
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

/// A case id as given: `REPORT-ID` or `ORIGIN/REPORT-ID`, each part of its
/// grammar (so it can be named in answers and the audit log: it is never a
/// URL, nor longer than 97 bytes).
pub(crate) fn case_id(id: &str) -> Result<(Option<&str>, &str), NodeError> {
    let bad = || {
        crate::report::InvalidInput::new(
            "bad-case-id",
            "id",
            "expected REPORT-ID or ORIGIN/REPORT-ID (a node id, '/', 1-64 of A-Z, a-z, 0-9, '.', '_', '-')",
        )
    };
    let (origin, report_id) = match id.split_once('/') {
        Some((o, r)) => {
            crate::identity::NodeId::new(o).map_err(|_| bad())?;
            (Some(o), r)
        }
        None => (None, id),
    };
    crate::report::validate::report_id(report_id).map_err(|_| bad())?;
    Ok((origin, report_id))
}

/// Finds a case by report id, or by `ORIGIN/REPORT-ID`.
pub(crate) async fn find(core: &Core, id: &str) -> Result<ReportRow, NodeError> {
    let (origin, report_id) = case_id(id)?;
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

/// A page (`page` from 0, `per_page` cases) of the queue of incoming
/// cases still open here, urgent first then oldest, optionally of one
/// category (checked by the caller), as queue rows (`row_view`). Served
/// from an index: as fast with a million cases stored as with ten.
pub async fn queue(
    core: &Core,
    category: Option<&str>,
    page: i64,
    per_page: i64,
) -> Result<Vec<CaseView>, NodeError> {
    let per_page = per_page.clamp(1, 1000);
    let offset = page.clamp(0, 10_000).saturating_mul(per_page);
    let rows = core.store.open_queue(category, per_page, offset).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(row_view(core, row).await?);
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
    let at = referral.referred_at_ms.to_be_bytes();
    let fields: [&[u8]; 6] = [
        id.as_bytes(),
        status.as_bytes(),
        reason.as_bytes(),
        referral.agency.as_bytes(),
        referral.reference.as_bytes(),
        &at,
    ];
    core.audit_if_refused(operator, "invalid-transition", &fields, result)
        .await
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
    // A close that needs a second person takes its proposal's reason when
    // the confirmer gives none.
    let proposal = confirm_second_person(core, &mut tx, &row, to, operator).await?;
    let reason = match &proposal {
        Some(p) if reason.trim().is_empty() => p.reason.as_str(),
        _ => reason,
    };
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
        .map(|origin| super::relay::back_through(core, row).unwrap_or_else(|| origin.clone()));
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
        match super::relay::back_through(core, row).as_deref() {
            // Through the relay (or the hotline that handed the case over)
            // it came from, which passes it on towards the origin.
            Some(prev) => {
                let ret = pb::Returned {
                    kind: pb::ReturnedKind::Status as i32,
                    item: Some(signed),
                    hops: vec![],
                };
                let body = ret.encode_to_vec();
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
            }
            _ => {
                tx.enqueue(
                    NewOutbox {
                        peer,
                        kind: "status",
                        urgent: row.priority == "urgent",
                        report_seq: row.seq,
                        body: &bytes,
                        returned: OUTBOX_SIGNED,
                    },
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

/// Whether a change to `to` needs a second person here
/// (`[cases] not_illegal_needs_supervisor`).
pub fn needs_second_person(core: &Core, to: CaseStatus) -> bool {
    to == CaseStatus::NotIllegal && core.config.cases.not_illegal_needs_supervisor
}

/// The person an audited identity names (`node/name`), whatever the role
/// it had then.
pub(crate) fn person(identity: &str) -> &str {
    identity.split_once(':').map_or(identity, |(_, p)| p)
}

/// Inside `update`'s transaction (`node::second` has the proposals), for
/// a change of `row` to `to` by `operator`: when the change needs a
/// second person, the proposal it
/// confirms (taken out), or why it may not be made now. Every change
/// removes an earlier proposal of the case.
async fn confirm_second_person(
    core: &Core,
    tx: &mut Tx,
    row: &ReportRow,
    to: CaseStatus,
    operator: &PeerIdentity,
) -> Result<Option<ProposalRow>, NodeError> {
    let proposal = tx.close_proposal(row.seq).await?;
    if !needs_second_person(core, to) {
        tx.delete_close_proposal(row.seq).await?;
        return Ok(None);
    }
    let id = format!("{}/{}", row.origin, row.report_id);
    let Some(p) = proposal.filter(|p| p.from_status == row.status && p.status == to.as_str())
    else {
        return Err(NodeError::FailedPrecondition(format!(
            "closing case {id} as {to} needs a second person here: propose it (`cases update --propose`, or Propose in the console), then a supervisor other than the proposer confirms"
        )));
    };
    if operator.role().is_none_or(|r| r < Role::Supervisor) {
        return Err(NodeError::FailedPrecondition(format!(
            "closing case {id} as {to} is confirmed by a supervisor or admin"
        )));
    }
    let me = operator.to_string();
    if person(&me) == person(&p.proposed_by) {
        return Err(NodeError::FailedPrecondition(format!(
            "closing case {id} as {to} is confirmed by someone other than its proposer"
        )));
    }
    tx.delete_close_proposal(row.seq).await?;
    tx.audit(
        &audit::Entry::new(
            "case.close-confirmed",
            me,
            id,
            serde_json::json!({"status": to.as_str(), "proposed_by": p.proposed_by, "proposal_reason": p.reason}),
        ),
        Core::now_ms(),
    )
    .await?;
    Ok(Some(p))
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
