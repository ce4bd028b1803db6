//! Conversions between protobuf messages and domain types.

use crate::node::cases::{
    CaseView, DeliveryView, HistoryView, MediaHashView, ReferralView, RouteView, b64, rfc3339,
};
use crate::pb;
use crate::report::Priority;
pub use crate::wire::route::{evidence_to_pb, priority_to_pb, route_to_pb, route_view_from_pb};

/// The borrowed submission a `SubmitReportRequest` carries.
pub fn submission(r: &pb::SubmitReportRequest) -> crate::report::validate::Submission<'_> {
    crate::report::validate::Submission {
        urls: &r.urls,
        category: &r.category,
        hosting_ip: &r.hosting_ip,
        priority: priority_from_pb(r.priority),
        notes: &r.notes,
        hashes: r
            .hashes
            .iter()
            .map(|h| crate::report::MediaHash {
                algorithm: h.algorithm.clone(),
                value: h.value.clone(),
            })
            .collect(),
        classification: &r.classification,
    }
}

/// The priority a message carries: unspecified (0) is bulk; a number that
/// is no priority is `None`, and refused where it is input.
pub fn priority_from_pb(p: i32) -> Option<Priority> {
    match pb::Priority::try_from(p) {
        Ok(pb::Priority::Urgent) => Some(Priority::Urgent),
        Ok(pb::Priority::Bulk | pb::Priority::Unspecified) => Some(Priority::Bulk),
        Err(_) => None,
    }
}

fn route_view_to_pb(r: &RouteView) -> pb::RouteDecision {
    pb::RouteDecision {
        kind: r.kind.clone(),
        destinations: r.destinations.clone(),
        reason: r.reason.clone(),
        evidence: Some(pb::HostingEvidence {
            ip: r.ip.clone(),
            country: r.country.clone(),
            ip_source: r.ip_source.clone(),
            dataset: r.dataset.clone(),
            dataset_date: r.dataset_date.clone(),
            method: r.method.clone(),
            asn: r.asn,
            org: r.org.clone(),
            network_dataset: r.network_dataset.clone(),
            network_dataset_date: r.network_dataset_date.clone(),
            ambiguity: r.ambiguity.clone(),
            countries: r.countries.clone(),
            flags: r.flags.clone(),
            dns: r
                .dns
                .iter()
                .map(crate::wire::route::dns_view_to_pb)
                .collect(),
            behind_cdn: r.behind_cdn.clone(),
            addresses: r
                .addresses
                .iter()
                .map(|a| pb::HostingAddress {
                    ip: a.ip.clone(),
                    ip_source: a.ip_source.clone(),
                    host: a.host.clone(),
                    used: a.used,
                    country: a.country.clone(),
                    dataset: a.dataset.clone(),
                    dataset_date: a.dataset_date.clone(),
                    method: a.method.clone(),
                    answers: a
                        .answers
                        .iter()
                        .map(|x| pb::GeoSourceAnswer {
                            source: x.source.clone(),
                            dataset_date: x.dataset_date.clone(),
                            method: x.method.clone(),
                            raw_code: x.raw_code.clone(),
                            country: x.country.clone(),
                        })
                        .collect(),
                    sources_disagree: a.sources_disagree,
                    asn: a.asn,
                    org: a.org.clone(),
                    network_dataset: a.network_dataset.clone(),
                    network_dataset_date: a.network_dataset_date.clone(),
                    ambiguity: a.ambiguity.clone(),
                })
                .collect(),
        }),
        steps: r.steps.clone(),
        family: r.family.clone(),
    }
}

fn ms(s: &Option<String>) -> i64 {
    s.as_deref()
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .unwrap_or(0)
}

pub fn case_to_pb(c: &CaseView) -> pb::Case {
    pb::Case {
        id: c.id.clone(),
        origin: c.origin.clone(),
        direction: c.direction.clone(),
        also_reported_by: c.also_reported_by.clone(),
        joined_to: c.joined_to.clone().unwrap_or_default(),
        destinations: c.destinations.clone(),
        status: c.status.clone(),
        category: c.category.clone(),
        urls: c.urls.clone(),
        hosting_country: c.hosting_country.clone().unwrap_or_default(),
        created_at_ms: c.created_at_ms,
        priority: priority_to_pb(Priority::parse(&c.priority).unwrap_or(Priority::Bulk)) as i32,
        route: c.route.as_ref().map(route_view_to_pb),
        deliveries: c
            .deliveries
            .iter()
            .map(|d| pb::Delivery {
                destination: d.destination.clone(),
                state: d.state.clone(),
                reason: d.reason.clone(),
                delivered_at_ms: ms(&d.delivered_at),
                attempts: d.attempts,
                last_error: d.last_error.clone(),
                next_hop: d.next_hop.clone().unwrap_or_default(),
                relayed_at_ms: ms(&d.relayed_at),
                via: d.via.clone(),
                handed_off_by: d.handed_off_by.clone().unwrap_or_default(),
                receipt: d
                    .receipt
                    .as_deref()
                    .and_then(|r| {
                        use base64::Engine;
                        base64::engine::general_purpose::STANDARD.decode(r).ok()
                    })
                    .unwrap_or_default(),
            })
            .collect(),
        history: c
            .history
            .iter()
            .map(|h| pb::StatusChange {
                status: h.status.clone(),
                reason: h.reason.clone(),
                actor: h.actor.clone(),
                signer: h.signer.clone(),
                at_ms: ms(&Some(h.at.clone())),
            })
            .collect(),
        notes: c.notes.clone(),
        hashes: c
            .hashes
            .iter()
            .map(|h| pb::MediaHash {
                algorithm: h.algorithm.clone(),
                value: h.value.clone(),
            })
            .collect(),
        received_from: c.received_from.clone().unwrap_or_default(),
        referrals: c
            .referrals
            .iter()
            .map(|r| pb::Referral {
                agency: r.agency.clone(),
                reference: r.reference.clone(),
                referred_at_ms: ms(&Some(r.referred_at.clone())),
                actor: r.actor.clone(),
            })
            .collect(),
        purged_at_ms: ms(&c.purged_at),
        classification: c.classification.clone(),
        family: c.family.clone().unwrap_or_default(),
        family_reports: c.family_reports.clone(),
    }
}

pub fn case_from_pb(c: pb::Case) -> CaseView {
    let nonempty = |s: String| (!s.is_empty()).then_some(s);
    CaseView {
        also_reported_by: c.also_reported_by,
        joined_to: nonempty(c.joined_to),
        destination: c.destinations.join(","),
        id: c.id,
        origin: c.origin,
        direction: c.direction,
        destinations: c.destinations,
        status: c.status,
        category: c.category,
        priority: priority_from_pb(c.priority)
            .map_or("unknown", Priority::as_str)
            .to_owned(),
        urls: c.urls,
        hosting_country: nonempty(c.hosting_country),
        created_at: rfc3339(c.created_at_ms),
        created_at_ms: c.created_at_ms,
        received_from: nonempty(c.received_from),
        notes: c.notes,
        hashes: c
            .hashes
            .into_iter()
            .map(|h| MediaHashView {
                algorithm: h.algorithm,
                value: h.value,
            })
            .collect(),
        route: c.route.as_ref().map(route_view_from_pb),
        deliveries: c
            .deliveries
            .into_iter()
            .map(|d| DeliveryView {
                destination: d.destination,
                state: d.state,
                reason: d.reason,
                delivered_at: (d.delivered_at_ms != 0).then(|| rfc3339(d.delivered_at_ms)),
                attempts: d.attempts,
                last_error: d.last_error,
                receipt: (!d.receipt.is_empty()).then(|| b64(&d.receipt)),
                next_hop: nonempty(d.next_hop),
                relayed_at: (d.relayed_at_ms != 0).then(|| rfc3339(d.relayed_at_ms)),
                via: d.via,
                handed_off_by: nonempty(d.handed_off_by),
            })
            .collect(),
        history: c
            .history
            .into_iter()
            .map(|h| HistoryView {
                status: h.status,
                reason: h.reason,
                actor: h.actor,
                signer: h.signer,
                at: rfc3339(h.at_ms),
            })
            .collect(),
        referrals: c
            .referrals
            .into_iter()
            .map(|r| ReferralView {
                agency: r.agency,
                reference: r.reference,
                referred_at: rfc3339(r.referred_at_ms),
                actor: r.actor,
            })
            .collect(),
        purged_at: (c.purged_at_ms != 0).then(|| rfc3339(c.purged_at_ms)),
        classification: c.classification,
        family: nonempty(c.family),
        family_reports: c.family_reports,
    }
}

use crate::node::overview::{CaseCount, NodeSummary, PeerView};

pub fn peer_to_pb(p: &PeerView) -> pb::PeerState {
    pb::PeerState {
        node_id: p.node_id.clone(),
        endpoint: p.endpoint.clone(),
        countries: p.countries.clone(),
        reachable: p.reachable.clone(),
        queue_depth: p.queue_depth,
        oldest_undelivered_age_ms: p.oldest_undelivered_age_ms,
        last_error: p.last_error.clone(),
        consecutive_failures: p.consecutive_failures,
        next_attempt_ms: p.next_attempt_ms,
        last_success_ms: p.last_success_ms,
        active: p.active,
        last_seen_ms: p.last_seen_ms,
        protocol_version: p.protocol,
        features: p.features.clone(),
    }
}

pub fn peer_from_pb(p: pb::PeerState) -> PeerView {
    PeerView {
        node_id: p.node_id,
        endpoint: p.endpoint,
        countries: p.countries,
        active: p.active,
        reachable: p.reachable,
        queue_depth: p.queue_depth,
        oldest_undelivered_age_ms: p.oldest_undelivered_age_ms,
        last_error: p.last_error,
        consecutive_failures: p.consecutive_failures,
        next_attempt_ms: p.next_attempt_ms,
        last_success_ms: p.last_success_ms,
        last_seen_ms: p.last_seen_ms,
        protocol: p.protocol_version,
        features: p.features,
    }
}

pub fn summary_to_pb(s: &NodeSummary) -> pb::NodeStatus {
    pb::NodeStatus {
        node_id: s.node_id.clone(),
        version: s.version.clone(),
        countries: s.countries.clone(),
        listen: s.listen.clone(),
        started_at_ms: s.started_at_ms,
        cases: s
            .cases
            .iter()
            .map(|c| pb::CaseCount {
                direction: c.direction.clone(),
                status: c.status.clone(),
                count: c.count,
            })
            .collect(),
        outbox_total: s.outbox_total,
        audit_entries: s.audit_entries,
        checkpoint_size: s.checkpoint_size,
        checkpoint_cosignatures: s.checkpoint_cosignatures,
        peers_total: s.peers_total,
        peers_reachable: s.peers_reachable,
        key_id: s.key_id.clone(),
        directory_serial: s.directory_serial,
        directory_issued_at_ms: s.directory_issued_at_ms,
        directory_expires_at_ms: s.directory_expires_at_ms,
        protocol_version: s.protocol,
        peers_previous_protocol: s.peers_previous_protocol.clone(),
        notifications: s
            .notifications
            .iter()
            .map(|w| pb::NotificationQueue {
                channel: w.channel.clone(),
                waiting: w.waiting,
                oldest_age_ms: w.oldest_age_ms,
            })
            .collect(),
    }
}

pub fn summary_from_pb(s: pb::NodeStatus) -> NodeSummary {
    NodeSummary {
        node_id: s.node_id,
        version: s.version,
        countries: s.countries,
        listen: s.listen,
        started_at_ms: s.started_at_ms,
        key_id: s.key_id,
        cases: s
            .cases
            .into_iter()
            .map(|c| CaseCount {
                direction: c.direction,
                status: c.status,
                count: c.count,
            })
            .collect(),
        outbox_total: s.outbox_total,
        audit_entries: s.audit_entries,
        checkpoint_size: s.checkpoint_size,
        checkpoint_cosignatures: s.checkpoint_cosignatures,
        peers_total: s.peers_total,
        peers_reachable: s.peers_reachable,
        directory_serial: s.directory_serial,
        directory_issued_at_ms: s.directory_issued_at_ms,
        directory_expires_at_ms: s.directory_expires_at_ms,
        protocol: s.protocol_version,
        peers_previous_protocol: s.peers_previous_protocol,
        notifications: s
            .notifications
            .into_iter()
            .map(|w| crate::node::alerts::Waiting {
                channel: w.channel,
                waiting: w.waiting,
                oldest_age_ms: w.oldest_age_ms,
            })
            .collect(),
    }
}

impl crate::node::intake::SubmissionSource for pb::SubmitReportRequest {
    fn submission(&self) -> crate::report::validate::Submission<'_> {
        submission(self)
    }

    fn submission_id(&self) -> &str {
        &self.submission_id
    }
}

/// A `Forward` batch's answers, one result per envelope in order.
pub fn forward_response(answers: Vec<crate::node::receive::ForwardAnswer>) -> pb::ForwardResponse {
    pb::ForwardResponse {
        results: answers
            .into_iter()
            .map(|a| pb::ForwardResult {
                code: crate::api::status::verdict_code(a.verdict),
                message: a.message,
                receipt: a.receipt,
            })
            .collect(),
    }
}

/// A `PushStatus` batch's answers, in the list for the kind of item it
/// carried.
pub fn push_status_response(answers: crate::node::receive::PushAnswers) -> pb::PushStatusResponse {
    use crate::node::receive::PushAnswers;
    let codes = |v: Vec<crate::node::inbound::Verdict>| {
        v.into_iter()
            .map(crate::api::status::verdict_code)
            .collect::<Vec<_>>()
    };
    match answers {
        PushAnswers::Updates(v) => pb::PushStatusResponse {
            codes: codes(v),
            ..Default::default()
        },
        PushAnswers::Returned(v) => pb::PushStatusResponse {
            returned_codes: codes(v),
            ..Default::default()
        },
        PushAnswers::Amendments(v) => pb::PushStatusResponse {
            amendment_codes: codes(v),
            ..Default::default()
        },
    }
}

pub fn retention_to_pb(r: &crate::node::retention::RetentionRun) -> pb::RunRetentionResponse {
    pb::RunRetentionResponse {
        dry_run: r.dry_run,
        at_ms: r.at_ms,
        closed: r.closed,
        refused: r.refused,
        delivered: r.delivered,
        reports: r
            .reports
            .iter()
            .map(|p| pb::PurgedReport {
                report: p.report.clone(),
                kind: p.kind.to_owned(),
                direction: p.direction.clone(),
                status: p.status.clone(),
            })
            .collect(),
        audit_entry: r.audit_entry.unwrap_or(0),
        files_clean: r.files_clean,
        more: r.more,
        alerts: r.alerts,
        notifications_given_up: r.notifications_given_up,
    }
}

pub fn retention_from_pb(r: pb::RunRetentionResponse) -> crate::node::retention::RetentionRun {
    use crate::node::retention::{PurgedReport, RetentionRun};
    RetentionRun {
        dry_run: r.dry_run,
        at_ms: r.at_ms,
        closed: r.closed,
        refused: r.refused,
        delivered: r.delivered,
        reports: r
            .reports
            .into_iter()
            .map(|p| PurgedReport {
                report: p.report,
                kind: crate::node::retention::kind_name(&p.kind),
                direction: p.direction,
                status: p.status,
            })
            .collect(),
        alerts: r.alerts,
        notifications_given_up: r.notifications_given_up,
        audit_entry: (r.audit_entry > 0).then_some(r.audit_entry),
        files_clean: r.files_clean,
        more: r.more,
    }
}

pub fn user_to_pb(u: crate::node::users::UserView) -> pb::User {
    pb::User {
        name: u.name,
        role: u.role,
        state: u.state,
        failures: u.failures,
        locked_until: u.locked_until.unwrap_or_default(),
        created_at: u.created_at,
        created_by: u.created_by,
        last_login: u.last_login.unwrap_or_default(),
        enrol_expires: u.enrol_expires.unwrap_or_default(),
    }
}

/// A signed directory as it travels (its exact payload bytes).
pub fn signed_directory_to_pb(
    d: &crate::directory::signed::SignedDirectory,
) -> pb::SignedDirectory {
    pb::SignedDirectory {
        payload: d.payload.clone(),
        signatures: d
            .signatures
            .iter()
            .map(|(key_id, signature)| pb::DirectorySignature {
                key_id: key_id.clone(),
                signature: signature.clone(),
            })
            .collect(),
    }
}
