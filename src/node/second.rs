//! A second person for closing a case as `not-illegal`, when the node's
//! policy says so (`[cases] not_illegal_needs_supervisor`): one person
//! proposes the close (`propose`), and a supervisor or admin other than
//! them confirms it by making the change (`cases::update`, which checks
//! and takes the proposal inside its transaction) or rejects it
//! (`reject`). A proposal
//! holds only while the case keeps the status it was proposed from.

use crate::audit;
use crate::identity::{PeerIdentity, Role};
use crate::node::cases::{self, CaseView};
use crate::node::{Core, NodeError};
use crate::report::view::rfc3339;
use crate::report::{CaseStatus, Direction, InvalidInput};
use crate::store::{ProposalRow, ReportRow};

/// A pending proposal, as shown with the case.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Proposal {
    pub status: String,
    pub reason: String,
    pub proposed_by: String,
    pub proposed_at: String,
}

/// Whether a change to `to` needs a second person here.
pub fn needed(core: &Core, to: CaseStatus) -> bool {
    cases::needs_second_person(core, to)
}

/// Whether `row`'s pending proposal (if any) still holds.
fn holds(p: &ProposalRow, row_status: &str) -> bool {
    p.from_status == row_status
}

/// The case's pending proposal that still holds, if any.
pub async fn pending(core: &Core, c: &CaseView) -> Result<Option<Proposal>, NodeError> {
    let row = cases::find(core, &cases::subject(c)).await?;
    Ok(core
        .store
        .close_proposal(row.seq)
        .await?
        .filter(|p| holds(p, &row.status))
        .map(|p| Proposal {
            status: p.status,
            reason: p.reason,
            proposed_by: p.proposed_by,
            proposed_at: rfc3339(p.proposed_at_ms),
        }))
}

/// Proposes closing case `id` as `status` (one that needs a second person
/// here), with a reason. Refusals are audited.
pub async fn propose(
    core: &Core,
    operator: &PeerIdentity,
    id: &str,
    status: &str,
    reason: &str,
) -> Result<CaseView, NodeError> {
    let result = apply_proposal(core, operator, id, status, reason).await;
    let fields: [&[u8]; 4] = [
        b"propose",
        id.as_bytes(),
        status.as_bytes(),
        reason.as_bytes(),
    ];
    core.audit_if_refused(operator, "invalid-proposal", &fields, result)
        .await
}

/// The case a proposal is about: worked here, and able to move to `to`.
async fn proposed_case(core: &Core, id: &str, to: CaseStatus) -> Result<ReportRow, NodeError> {
    let row = cases::find(core, id).await?;
    let here =
        row.direction == Direction::Incoming.as_str() || row.direction == Direction::Local.as_str();
    if !here || row.relay == 1 || row.joined_to.is_some() {
        return Err(NodeError::FailedPrecondition(format!(
            "case {id} is not worked here"
        )));
    }
    let from = CaseStatus::parse(&row.status).map_err(|_| {
        NodeError::FailedPrecondition(format!("case {id} has status {:?}", row.status))
    })?;
    if !from.can_move_to(to) {
        return Err(NodeError::FailedPrecondition(format!(
            "case {id} cannot go from {from} to {to}"
        )));
    }
    Ok(row)
}

async fn apply_proposal(
    core: &Core,
    operator: &PeerIdentity,
    id: &str,
    status: &str,
    reason: &str,
) -> Result<CaseView, NodeError> {
    let to = CaseStatus::parse(status).map_err(|mut e| {
        e.field = "status".into();
        e
    })?;
    if !needed(core, to) {
        return Err(InvalidInput::new(
            "no-second-person",
            "status",
            "this node's policy needs no second person for it: make the change",
        )
        .into());
    }
    crate::report::validate::single_line("reason", reason, 4096)?;
    if reason.trim().is_empty() {
        return Err(InvalidInput::new("missing-reason", "reason", "say why").into());
    }
    let row = proposed_case(core, id, to).await?;
    let now = Core::now_ms();
    let mut tx = core.store.begin().await?;
    let current = tx.report_by_seq(row.seq).await?.map(|r| r.status);
    if current.as_deref() != Some(row.status.as_str()) {
        return Err(NodeError::FailedPrecondition(format!(
            "case {id} changed meanwhile; try again"
        )));
    }
    let actor = operator.to_string();
    tx.put_close_proposal(&ProposalRow {
        report_seq: row.seq,
        status: to.as_str().to_owned(),
        from_status: row.status.clone(),
        reason: reason.to_owned(),
        proposed_by: actor.clone(),
        proposed_at_ms: now,
    })
    .await?;
    tx.audit(
        &audit::Entry::new(
            "case.close-proposed",
            actor,
            format!("{}/{}", row.origin, row.report_id),
            serde_json::json!({"status": to.as_str(), "from": row.status, "reason": reason}),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    core.case_changed(row.seq);
    cases::view_by_seq(core, row.seq).await
}

/// Rejects (a supervisor or admin) or withdraws (its proposer) case `id`'s
/// pending proposal. Refusals are audited.
pub async fn reject(
    core: &Core,
    operator: &PeerIdentity,
    id: &str,
    reason: &str,
) -> Result<CaseView, NodeError> {
    let result = apply_reject(core, operator, id, reason).await;
    let fields: [&[u8]; 3] = [b"reject", id.as_bytes(), reason.as_bytes()];
    core.audit_if_refused(operator, "invalid-proposal", &fields, result)
        .await
}

async fn apply_reject(
    core: &Core,
    operator: &PeerIdentity,
    id: &str,
    reason: &str,
) -> Result<CaseView, NodeError> {
    crate::report::validate::single_line("reason", reason, 4096)?;
    let row = cases::find(core, id).await?;
    let actor = operator.to_string();
    let mut tx = core.store.begin().await?;
    let Some(p) = tx.close_proposal(row.seq).await? else {
        return Err(NodeError::FailedPrecondition(format!(
            "case {id} has no pending proposal"
        )));
    };
    let supervisor = operator.role().is_some_and(|r| r >= Role::Supervisor);
    if !supervisor && cases::person(&actor) != cases::person(&p.proposed_by) {
        return Err(NodeError::FailedPrecondition(format!(
            "a proposal on case {id} is rejected by a supervisor or withdrawn by its proposer"
        )));
    }
    tx.delete_close_proposal(row.seq).await?;
    tx.audit(
        &audit::Entry::new(
            "case.close-rejected",
            actor,
            format!("{}/{}", row.origin, row.report_id),
            serde_json::json!({"status": p.status, "proposed_by": p.proposed_by, "reason": reason}),
        ),
        Core::now_ms(),
    )
    .await?;
    tx.commit().await?;
    core.case_changed(row.seq);
    cases::view_by_seq(core, row.seq).await
}

#[cfg(test)]
mod tests {
    use crate::node::cases::person;

    #[test]
    fn a_person_is_the_same_whatever_their_role() {
        assert_eq!(person("operator:DE-ECO/alice"), "DE-ECO/alice");
        assert_eq!(
            person("supervisor:DE-ECO/alice"),
            person("operator:DE-ECO/alice")
        );
        assert_ne!(person("supervisor:DE-ECO/bob"), "DE-ECO/alice");
    }
}
