//! Receiving from peers, each flow through the one inbound pipeline
//! (`node::inbound`): envelopes, answered with signed receipts
//! (`envelopes`, who may take a report over: `role`); and on `PushStatus`,
//! status updates about reports this node sent (`status`), receipts and
//! status updates coming back through relays (`returned`), and an origin's
//! amendments (`amendments`).

mod amendments;
mod envelopes;
mod returned;
mod role;
mod status;

use std::sync::Arc;

use crate::identity::NodeId;
use crate::pb;
use crate::report::InvalidInput;

use super::inbound::{self, Verdict};
use super::{Core, NodeError};

/// The answer to one envelope: its verdict, a message, and this node's
/// signed receipt (stored, relayed, or refused with the reason).
#[derive(Debug, Clone)]
pub struct ForwardAnswer {
    pub verdict: Verdict,
    pub message: String,
    pub receipt: Option<pb::Signed>,
}

/// The answers to a `PushStatus` batch: one list, for the kind of item it
/// carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushAnswers {
    Updates(Vec<Verdict>),
    Returned(Vec<Verdict>),
    Amendments(Vec<Verdict>),
}

/// A `Forward` batch: every envelope verified (together), then stored
/// (new cases, repeats, relays) with a signed receipt each, all committed
/// before any receipt is returned.
pub async fn forward(
    core: &Arc<Core>,
    sender: &NodeId,
    req: pb::ForwardRequest,
) -> Result<Vec<ForwardAnswer>, NodeError> {
    let answers = inbound::run(core, sender, Arc::new(envelopes::Envelopes(req))).await?;
    crate::faults::crash_point("receiver-after-commit-before-reply");
    Ok(answers)
}

/// A `PushStatus` batch: status updates, returned items or amendments,
/// never mixed.
pub async fn push_status(
    core: &Arc<Core>,
    sender: &NodeId,
    req: pb::PushStatusRequest,
) -> Result<PushAnswers, NodeError> {
    let kinds = [
        !req.updates.is_empty(),
        !req.returned.is_empty(),
        !req.amendments.is_empty(),
    ];
    if kinds.iter().filter(|k| **k).count() > 1 {
        return Err(InvalidInput::new(
            "mixed-batch",
            "returned",
            "send status updates, returned items and amendments in separate calls",
        )
        .into());
    }
    let req = Arc::new(req);
    Ok(if kinds[1] {
        PushAnswers::Returned(inbound::run(core, sender, Arc::new(returned::Returned(req))).await?)
    } else if kinds[2] {
        PushAnswers::Amendments(
            inbound::run(core, sender, Arc::new(amendments::Amendments(req))).await?,
        )
    } else {
        PushAnswers::Updates(inbound::run(core, sender, Arc::new(status::Updates(req))).await?)
    })
}
