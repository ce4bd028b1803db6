//! Who signed what about a case, and whether each signature verifies now
//! with the key the directory gives its signer for the time it signed:
//! the origin's report (with its route), each hop (relays, handoffs), the
//! receipts, and the signed status updates and amendments. What a case
//! page shows beside the history; no IO but the case's own rows.

use prost::Message;

use crate::crypto::signing::Purpose;
use crate::directory::Directory;
use crate::identity::NodeId;
use crate::node::{Core, NodeError, cases};
use crate::pb;
use crate::report::view::rfc3339;

/// One signed object of a case.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Signature {
    /// `report`, `hop`, `handoff`, `receipt`, `status`, `retraction`,
    /// `correction`.
    pub what: &'static str,
    /// What it says, in a word: the status, the receipt's outcome, the
    /// hop's destination.
    pub says: String,
    pub signer: String,
    pub key_id: String,
    /// When it says it was signed (RFC 3339), or empty.
    pub at: String,
    /// Whether the signature verifies with the signer's key for that time.
    pub verifies: bool,
    /// Why not, when it does not.
    pub problem: String,
}

/// Checks `s` for `purpose` with the key `directory` gives its signer at
/// `at_ms` (the payload's own time, trusted only once this holds).
fn check(
    s: &pb::Signed,
    purpose: Purpose,
    at_ms: i64,
    directory: &Directory,
) -> Result<(), String> {
    let signer = NodeId::new(&s.signer).map_err(|_| "the signer is not a node id".to_owned())?;
    let node = directory
        .node(&signer)
        .ok_or_else(|| "the signer is not in the directory".to_owned())?;
    let key = node
        .key(&s.key_id, at_ms)
        .ok_or_else(|| "the signer had no such key at that time".to_owned())?;
    crate::wire::verify_signed(key, purpose, s, None).map_err(|e| e.to_owned())
}

/// A signed object's row: `what` it is, what it `says` and when, checked.
fn row(
    s: &pb::Signed,
    purpose: Purpose,
    what: &'static str,
    (says, at_ms): (String, i64),
    directory: &Directory,
) -> Signature {
    let checked = check(s, purpose, at_ms, directory);
    Signature {
        what,
        says,
        signer: s.signer.clone(),
        key_id: s.key_id.clone(),
        at: if at_ms > 0 {
            rfc3339(at_ms)
        } else {
            String::new()
        },
        verifies: checked.is_ok(),
        problem: checked.err().unwrap_or_default(),
    }
}

/// The origin's report and the envelope's hops.
fn envelope(bytes: &[u8], directory: &Directory, out: &mut Vec<Signature>) {
    let Ok(env) = pb::Envelope::decode(bytes) else {
        return;
    };
    if let Some(s) = env.report.as_ref().filter(|s| !s.payload.is_empty()) {
        let at = pb::ReportPayload::decode(s.payload.as_slice()).map_or(0, |p| p.created_at_ms);
        out.push(row(
            s,
            Purpose::Report,
            "report",
            (String::new(), at),
            directory,
        ));
    }
    for s in &env.hops {
        let hop = pb::Hop::decode(s.payload.as_slice()).unwrap_or_default();
        let what = if hop.handoff { "handoff" } else { "hop" };
        out.push(row(s, Purpose::Hop, what, (hop.to, hop.at_ms), directory));
    }
}

/// A receipt (encoded `Signed`).
fn receipt(bytes: &[u8], directory: &Directory) -> Option<Signature> {
    let s = pb::Signed::decode(bytes).ok()?;
    let r = pb::Receipt::decode(s.payload.as_slice()).unwrap_or_default();
    let says = pb::ReceiptOutcome::try_from(r.outcome)
        .map(|o| {
            o.as_str_name()
                .trim_start_matches("RECEIPT_OUTCOME_")
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    Some(row(
        &s,
        Purpose::Receipt,
        "receipt",
        (says, r.at_ms),
        directory,
    ))
}

/// A signed status update or amendment (encoded `Signed`): the purpose
/// its signature verifies under says which (a status update when neither).
fn history(bytes: &[u8], directory: &Directory) -> Option<Signature> {
    let s = pb::Signed::decode(bytes).ok()?;
    let status = pb::StatusUpdate::decode(s.payload.as_slice())
        .ok()
        .map(|u| {
            row(
                &s,
                Purpose::Status,
                "status",
                (u.status, u.at_ms),
                directory,
            )
        });
    if status.as_ref().is_some_and(|r| r.verifies) {
        return status;
    }
    let amendment = pb::Amendment::decode(s.payload.as_slice())
        .ok()
        .filter(|a| a.kind != 0)
        .map(|a| {
            let what = if a.kind == pb::AmendmentKind::Retract as i32 {
                "retraction"
            } else {
                "correction"
            };
            row(&s, Purpose::Amendment, what, (a.reason, a.at_ms), directory)
        });
    if amendment.as_ref().is_some_and(|r| r.verifies) {
        return amendment;
    }
    status.or(amendment)
}

/// Every signed object of case `id`, each checked.
pub async fn of_case(core: &Core, id: &str) -> Result<Vec<Signature>, NodeError> {
    let row_ = cases::find(core, id).await?;
    let directory = core.directory();
    let mut out = Vec::new();
    envelope(&row_.envelope, &directory, &mut out);
    out.extend(row_.receipt.as_deref().and_then(|r| receipt(r, &directory)));
    for d in core.store.deliveries(row_.seq).await? {
        if let Some(r) = d.receipt.as_deref().filter(|r| !r.is_empty()) {
            out.extend(receipt(r, &directory));
        }
    }
    for s in core.store.signed_status_updates(row_.seq).await? {
        out.extend(history(&s, &directory));
    }
    Ok(out)
}
