//! The events raised where something happens (not by a scan), built from
//! what the code noticing them has at hand. None carries a reported URL
//! or host name.

use crate::store::ReportRow;

use super::{CaseRef, Event, case_name};

fn case_of(row: &ReportRow) -> CaseRef {
    CaseRef {
        seq: row.seq,
        origin: row.origin.clone(),
        report_id: row.report_id.clone(),
    }
}

/// An urgent report arrived from `sender` and is a case here (`seq`).
pub fn urgent_report(seq: i64, r: &crate::store::NewReport<'_>, sender: &str) -> Event {
    let name = case_name(r.origin, r.report_id);
    Event::new(
        "urgent_report",
        format!("urgent_report:{seq}"),
        format!(
            "Urgent report {name} ({}) received from {sender}",
            r.category
        ),
        serde_json::json!({
            "case_id": name,
            "category": r.category,
            "country": r.hosting_country,
            "from": sender,
            "age_hours": super::hours(r.created_at_ms, r.now_ms),
        }),
    )
    .about(CaseRef {
        seq,
        origin: r.origin.to_owned(),
        report_id: r.report_id.to_owned(),
    })
}

/// `peer` refused a report this node sent it, with `code` (its reason
/// code; the peer's free text is not passed on).
pub fn delivery_refused(row: &ReportRow, peer: &str, code: &str) -> Event {
    let name = case_name(&row.origin, &row.report_id);
    let code = crate::node::bounded(code);
    Event::new(
        "delivery_refused",
        format!("delivery_refused:{}:{peer}", row.seq),
        format!(
            "Peer {peer} refused report {name} ({}): {code}",
            row.category
        ),
        serde_json::json!({
            "case_id": name,
            "category": row.category,
            "country": row.hosting_country,
            "peer": peer,
            "reason_code": code,
        }),
    )
    .about(case_of(row))
}

/// This node's witness refused `peer`'s checkpoint: `kind` is rollback,
/// fork (the peer showed two different logs: equivocation), inconsistent
/// or invalid.
pub fn witness_alarm(peer: &str, kind: &str, reason: &str, checkpoint: &str) -> Event {
    let digest = hex::encode(crate::wire::digest(checkpoint.as_bytes()));
    Event::new(
        "witness_alarm",
        format!("witness_alarm:{peer}:{digest}"),
        format!("Witness alarm ({kind}) on peer {peer}'s audit log"),
        serde_json::json!({
            "peer": peer,
            "kind": kind,
            "reason": crate::node::bounded(reason),
            "checkpoint_sha256": digest,
        }),
    )
}

/// What kind of witness alarm a refusal reason is.
pub fn witness_kind(reason: &str) -> &'static str {
    if reason.starts_with("rollback") {
        "rollback"
    } else if reason.starts_with("fork") {
        "fork"
    } else if reason.starts_with("inconsistent") {
        "inconsistent"
    } else {
        "invalid"
    }
}

/// This node refused a version of the signed directory offered by `from`
/// (a peer, or its own file): `code` says why (forged, rollback, expired,
/// dropping the directory key…).
pub fn directory_refused(from: &str, code: &str, digest: &[u8; 32], serial_here: u64) -> Event {
    let digest = hex::encode(digest);
    Event::new(
        "directory_refused",
        format!("directory_refused:{from}:{code}:{digest}"),
        format!("A signed directory offered by {from} was refused: {code}"),
        serde_json::json!({
            "from": from,
            "reason_code": code,
            "payload_sha256": digest,
            "serial_here": serial_here,
        }),
    )
}

/// `origin` sent different content under a report id it had used.
pub fn equivocation(origin: &str, report_id: &str, sender: &str) -> Event {
    let name = case_name(origin, report_id);
    Event::new(
        "equivocation",
        format!("equivocation:{name}:{sender}"),
        format!("Equivocation: {origin} sent different content under report id {report_id}"),
        serde_json::json!({ "case_id": name, "origin": origin, "from": sender }),
    )
}
