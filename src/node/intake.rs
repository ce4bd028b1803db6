//! Intake: an analyst's submission is validated, routed, signed, and
//! committed (report, outbox entries and audit entry in one transaction)
//! before the analyst gets an answer.

use crate::audit;
use crate::identity::PeerIdentity;
use crate::node::cases::{self, CaseView};
use crate::node::{Core, NodeError};
use crate::pb;
use crate::report::validate::{self, Submission, UrlHost, ValidUrl};
use crate::report::{Direction, Priority, wire};
use crate::routing::{self, RouteDecision, RouteKind};
use crate::store::NewReport;

pub struct Submitted {
    pub report_id: String,
    /// The route as signed into the report.
    pub route: pb::RouteDecision,
    /// True when this was a repeat of an earlier submission (same key).
    pub repeat: bool,
    /// The case as stored; `None` only if reading it back failed after the
    /// commit (the report is stored all the same).
    pub case: Option<CaseView>,
}

/// The decision a report with these URLs would get, without submitting.
pub fn route_preview(
    core: &Core,
    urls: &[String],
    hosting_ip: &str,
    category: &str,
    classification: &str,
) -> Result<RouteDecision, NodeError> {
    let draft = validate::draft(Submission {
        urls,
        category: if category.is_empty() {
            "other"
        } else {
            category
        },
        hosting_ip,
        priority: Priority::Bulk,
        notes: "",
        hashes: Vec::new(),
        classification,
    })?;
    let urls = valid_urls(&draft.urls)?;
    Ok(decide(core, &urls, &draft))
}

fn valid_urls(urls: &[String]) -> Result<Vec<ValidUrl>, NodeError> {
    urls.iter()
        .map(|u| validate::url(u).map_err(NodeError::from))
        .collect()
}

fn decide(core: &Core, urls: &[ValidUrl], draft: &crate::report::ReportDraft) -> RouteDecision {
    // Host names are resolved only where `[dns]` allows (in memory for
    // mode "static"); routing itself does no IO.
    let resolved = core
        .config
        .dns
        .resolve_all(urls.iter().filter_map(|u| match &u.host {
            UrlHost::Domain(d) => Some(d.as_str()),
            UrlHost::Ip(_) | UrlHost::Onion(_) => None,
        }));
    let directory = core.directory();
    let decision = routing::decide(
        &routing::RouteInput {
            urls,
            hosting_ip: draft.hosting_ip,
            category: draft.category,
            resolved: resolved.as_deref(),
        },
        &core.config.geo,
        &routing::Federation {
            directory: &directory,
            me: &core.me,
            fallback: core.config.fallback.as_ref(),
            fallback_for: &core.config.fallback_for,
        },
    );
    // What may be sent where: a destination the receiver's law or this
    // node's jurisdiction policy rules out gets the alternative instead.
    routing::policy::apply(
        decision,
        draft.category,
        draft.classification,
        &core.config.jurisdiction,
        &directory,
        &core.me,
    )
}

pub async fn submit(
    core: &Core,
    operator: &PeerIdentity,
    submission: Submission<'_>,
    submission_id: &str,
) -> Result<Submitted, NodeError> {
    let actor = operator.to_string();
    if !submission_id.is_empty() {
        validate::report_id(submission_id).map_err(|mut e| {
            e.field = "submission_id".into();
            e
        })?;
    }
    // A refusal's audit entry fingerprints the submitted URLs and category
    // (hashed, never in clear).
    let mut fingerprint = submission.urls.join("\n").into_bytes();
    fingerprint.push(0);
    fingerprint.extend_from_slice(submission.category.as_bytes());
    let draft = match validate::draft(submission) {
        Ok(d) => d,
        Err(e) => {
            core.audit_refusal(&actor, e.code, &e.to_string(), &fingerprint)
                .await;
            return Err(e.into());
        }
    };
    let urls = valid_urls(&draft.urls)?;
    let route = decide(core, &urls, &draft);
    let now = Core::now_ms();
    let report_id = uuid::Uuid::new_v4().to_string();
    let payload = pb::ReportPayload {
        report_id: report_id.clone(),
        origin: core.me.to_string(),
        created_at_ms: now,
        urls: draft.urls.clone(),
        category: draft.category.as_str().to_owned(),
        hosting: Some(crate::api::convert::evidence_to_pb(&route.evidence)),
        hashes: draft
            .hashes
            .iter()
            .map(|h| pb::MediaHash {
                algorithm: h.algorithm.clone(),
                value: h.value.clone(),
            })
            .collect(),
        priority: crate::api::convert::priority_to_pb(draft.priority) as i32,
        notes: draft.notes.clone(),
        route: Some(crate::api::convert::route_to_pb(&route)),
        classification: draft.classification.wire().to_owned(),
    };
    let signed = wire::sign(
        &core.key(),
        &core.me,
        crate::crypto::signing::Purpose::Report,
        &payload,
    );
    let digest = wire::digest(&signed.payload);
    let payload_bytes = signed.payload.clone();
    let envelope = prost::Message::encode_to_vec(&pb::Envelope {
        report: Some(signed),
        hops: vec![],
    });
    let (direction, status) = match route.kind {
        RouteKind::Local => (Direction::Local, "received"),
        RouteKind::NoHotline => (Direction::Outgoing, "no-hotline"),
        // Visible to analysts (`cases list --status held`), never sent.
        RouteKind::Held => (Direction::Outgoing, "held"),
        RouteKind::Peer | RouteKind::Fallback => (Direction::Outgoing, "queued"),
    };
    let route_json = serde_json::to_string(&route).unwrap_or_default();
    let mut tx = core.store.begin().await?;
    // Checked inside the write transaction, so two concurrent retries of
    // one submission create one report.
    if !submission_id.is_empty()
        && let Some(seq) = tx.find_submission(&actor, submission_id).await?
    {
        drop(tx);
        return repeat(core, seq).await;
    }
    let seq = tx
        .insert_report(&NewReport {
            report_id: &report_id,
            origin: core.me.as_str(),
            direction: direction.as_str(),
            category: draft.category.as_str(),
            priority: draft.priority.as_str(),
            status,
            hosting_country: route.evidence.country.as_deref(),
            route: &route_json,
            payload: &payload_bytes,
            payload_digest: &digest,
            envelope: &envelope,
            received_from: None,
            created_at_ms: now,
            now_ms: now,
            relay: false,
            receipt: None,
            joined_to: None,
        })
        .await?;
    // A destination reached through relays is handed to the outermost one;
    // one envelope per next hop carries the report to every destination
    // behind it.
    let directory = core.directory();
    let mut next_hops: Vec<crate::identity::NodeId> = Vec::new();
    for dest in &route.destinations {
        let hop = directory.next_hop(&core.me, dest);
        tx.insert_delivery(seq, dest.as_str(), Some(hop.as_str()), None)
            .await?;
        if !next_hops.contains(&hop) {
            tx.enqueue(
                hop.as_str(),
                "report",
                draft.priority == Priority::Urgent,
                seq,
                &envelope,
                now,
            )
            .await?;
            next_hops.push(hop);
        }
    }
    if direction == Direction::Local {
        // A case worked here: reports of the same content from other
        // hotlines join it.
        let (keys, _) = crate::report::content::keys(
            &draft.urls,
            draft
                .hashes
                .iter()
                .map(|h| (h.algorithm.as_str(), h.value.as_str())),
        );
        tx.insert_case_keys(seq, &keys).await?;
        tx.insert_status(
            seq,
            &uuid::Uuid::new_v4().to_string(),
            "received",
            &route.reason,
            &actor,
            None,
            None,
            now,
        )
        .await?;
    }
    let subject = format!("{}/{}", core.me, report_id);
    tx.audit(
        &audit::Entry::new(
            "report.submitted",
            actor.clone(),
            subject,
            serde_json::json!({
                "category": draft.category.as_str(),
                "classification": draft.classification.as_str(),
                "priority": draft.priority.as_str(),
                "urls": draft.urls.len(),
                "payload_sha256": hex::encode(digest),
                "route": route.kind.as_str(),
                "destinations": route.destinations.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
                "next_hops": next_hops.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
                "country": route.evidence.country,
                "dataset": route.evidence.dataset,
                "dataset_date": route.evidence.dataset_date,
                "reason": route.reason,
                "withheld": route.withheld,
            }),
        ),
        now,
    )
    .await?;
    if !submission_id.is_empty() {
        tx.insert_submission(&actor, submission_id, seq).await?;
    }
    crate::faults::crash_point("intake-before-commit");
    tx.commit().await?;
    core.case_changed(seq);
    core.metrics
        .reports_submitted
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    for hop in &next_hops {
        core.wake_lane(hop.as_str(), draft.priority == Priority::Urgent);
    }
    tracing::info!(report_id = %report_id, route = route.kind.as_str(), "report submitted");
    // The report is committed: whatever happens now, the analyst must get
    // its id, or a retry would create a second report.
    let case = match cases::view_by_seq(core, seq).await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(report_id = %report_id, error = %e, "stored, but cannot read the case back");
            None
        }
    };
    Ok(Submitted {
        report_id,
        route: crate::api::convert::route_to_pb(&route),
        repeat: false,
        case,
    })
}

/// The answer to a repeated submission: the report it created the first
/// time, as stored.
async fn repeat(core: &Core, seq: i64) -> Result<Submitted, NodeError> {
    let row = core
        .store
        .report_by_seq(seq)
        .await?
        .ok_or(NodeError::Internal("a submission names a missing report"))?;
    let payload = <pb::ReportPayload as prost::Message>::decode(row.payload.as_slice())
        .map_err(|_| NodeError::Internal("a stored report payload does not decode"))?;
    let case = cases::view_by_seq(core, seq).await.ok();
    Ok(Submitted {
        report_id: row.report_id,
        route: payload.route.unwrap_or_default(),
        repeat: true,
        case,
    })
}
