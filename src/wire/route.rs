//! The route as the origin signs it into a report payload: its kind,
//! destinations, reason, steps and hosting evidence (every address, every
//! source's answer), and how a signed route reads back as a view.

use crate::geo::dns::Resolved;
use crate::pb;
use crate::report::Priority;
use crate::report::view::{
    AddressView, DnsAnswerView, DnsQuestionView, DnsView, RouteView, SourceAnswerView,
};
use crate::routing::{AddressEvidence, Evidence, RouteDecision};

pub fn priority_to_pb(p: Priority) -> pb::Priority {
    match p {
        Priority::Bulk => pb::Priority::Bulk,
        Priority::Urgent => pb::Priority::Urgent,
    }
}

/// A signed priority as the node knows it (unset is bulk, as for
/// analysts' submissions); `None` for a value out of range.
pub fn priority_from_pb(p: i32) -> Option<Priority> {
    match pb::Priority::try_from(p) {
        Ok(pb::Priority::Bulk | pb::Priority::Unspecified) => Some(Priority::Bulk),
        Ok(pb::Priority::Urgent) => Some(Priority::Urgent),
        _ => None,
    }
}

pub fn evidence_to_pb(e: &Evidence) -> pb::HostingEvidence {
    let network = e.network.as_ref();
    pb::HostingEvidence {
        ip: e.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        country: e.country.clone().unwrap_or_default(),
        ip_source: e.ip_source.clone(),
        dataset: e.dataset.clone(),
        dataset_date: e.dataset_date.clone(),
        method: e.method.clone(),
        asn: network.map_or(0, |n| n.asn),
        org: network.map(|n| n.org.clone()).unwrap_or_default(),
        network_dataset: e.network_dataset.clone(),
        network_dataset_date: e.network_dataset_date.clone(),
        ambiguity: e.ambiguity.clone().unwrap_or_default(),
        countries: e.countries.clone(),
        flags: e.flags.clone(),
        addresses: e.addresses.iter().map(address_to_pb).collect(),
        dns: e.dns.iter().map(dns_to_pb).collect(),
        behind_cdn: e.behind_cdn.clone().unwrap_or_default(),
    }
}

fn dns_to_pb(r: &Resolved) -> pb::DnsResolution {
    pb::DnsResolution {
        host: r.host.clone(),
        resolver: r.resolver.clone(),
        questions: r
            .questions
            .iter()
            .map(|q| pb::DnsQuestion {
                question: q.question.clone(),
                outcome: q.outcome.clone(),
            })
            .collect(),
        answers: r
            .answers
            .iter()
            .map(|a| pb::DnsAnswer {
                name: a.name.clone(),
                kind: a.kind.clone(),
                value: a.value.clone(),
                ttl: a.ttl,
            })
            .collect(),
        at_ms: r.at_ms,
        failure: r.failure.map(|f| f.as_str().to_owned()).unwrap_or_default(),
        error: r.error.clone().unwrap_or_default(),
        dnssec: r.dnssec.clone(),
    }
}

fn dns_view(r: pb::DnsResolution) -> DnsView {
    DnsView {
        host: r.host,
        resolver: r.resolver,
        questions: r
            .questions
            .into_iter()
            .map(|q| DnsQuestionView {
                question: q.question,
                outcome: q.outcome,
            })
            .collect(),
        answers: r
            .answers
            .into_iter()
            .map(|a| DnsAnswerView {
                name: a.name,
                kind: a.kind,
                value: a.value,
                ttl: a.ttl,
            })
            .collect(),
        at: crate::report::view::rfc3339(r.at_ms),
        at_ms: r.at_ms,
        failure: r.failure,
        error: r.error,
        dnssec: r.dnssec,
    }
}

fn address_to_pb(a: &AddressEvidence) -> pb::HostingAddress {
    let network = a.network.as_ref();
    pb::HostingAddress {
        ip: a.ip.to_string(),
        ip_source: a.ip_source.clone(),
        host: a.host.clone(),
        used: a.used,
        country: a.country.clone().unwrap_or_default(),
        dataset: a.dataset.clone(),
        dataset_date: a.dataset_date.clone(),
        method: a.method.clone(),
        answers: a
            .answers
            .iter()
            .map(|x| pb::GeoSourceAnswer {
                source: x.source.clone(),
                dataset_date: x.dataset_date.clone(),
                method: x.method.to_owned(),
                raw_code: x.raw_code.clone(),
                country: x.country.clone().unwrap_or_default(),
            })
            .collect(),
        sources_disagree: a.sources_disagree,
        asn: network.map_or(0, |n| n.asn),
        org: network.map(|n| n.org.clone()).unwrap_or_default(),
        network_dataset: a.network_dataset.clone(),
        network_dataset_date: a.network_dataset_date.clone(),
        ambiguity: a.ambiguity.clone().unwrap_or_default(),
    }
}

pub fn route_to_pb(r: &RouteDecision) -> pb::RouteDecision {
    pb::RouteDecision {
        kind: r.kind.as_str().to_owned(),
        destinations: r.destinations.iter().map(|d| d.to_string()).collect(),
        reason: r.reason.clone(),
        evidence: Some(evidence_to_pb(&r.evidence)),
        steps: r.steps.clone(),
        family: r.family.clone().unwrap_or_default(),
    }
}

pub fn route_view_from_pb(r: &pb::RouteDecision) -> RouteView {
    let ev = r.evidence.clone().unwrap_or_default();
    RouteView {
        kind: r.kind.clone(),
        destinations: r.destinations.clone(),
        reason: r.reason.clone(),
        ip: ev.ip,
        ip_source: ev.ip_source,
        country: ev.country,
        dataset: ev.dataset,
        dataset_date: ev.dataset_date,
        method: ev.method,
        asn: ev.asn,
        org: ev.org,
        network_dataset: ev.network_dataset,
        network_dataset_date: ev.network_dataset_date,
        ambiguity: ev.ambiguity,
        countries: ev.countries,
        flags: ev.flags,
        addresses: ev
            .addresses
            .into_iter()
            .map(|a| AddressView {
                ip: a.ip,
                ip_source: a.ip_source,
                host: a.host,
                used: a.used,
                country: a.country,
                dataset: a.dataset,
                dataset_date: a.dataset_date,
                method: a.method,
                answers: a
                    .answers
                    .into_iter()
                    .map(|x| SourceAnswerView {
                        source: x.source,
                        dataset_date: x.dataset_date,
                        method: x.method,
                        raw_code: x.raw_code,
                        country: x.country,
                    })
                    .collect(),
                sources_disagree: a.sources_disagree,
                asn: a.asn,
                org: a.org,
                network_dataset: a.network_dataset,
                network_dataset_date: a.network_dataset_date,
                ambiguity: a.ambiguity,
            })
            .collect(),
        steps: r.steps.clone(),
        dns: ev.dns.into_iter().map(dns_view).collect(),
        behind_cdn: ev.behind_cdn,
        family: r.family.clone(),
    }
}

/// A route view's DNS evidence back to the wire form.
pub fn dns_view_to_pb(d: &DnsView) -> pb::DnsResolution {
    pb::DnsResolution {
        host: d.host.clone(),
        resolver: d.resolver.clone(),
        questions: d
            .questions
            .iter()
            .map(|q| pb::DnsQuestion {
                question: q.question.clone(),
                outcome: q.outcome.clone(),
            })
            .collect(),
        answers: d
            .answers
            .iter()
            .map(|a| pb::DnsAnswer {
                name: a.name.clone(),
                kind: a.kind.clone(),
                value: a.value.clone(),
                ttl: a.ttl,
            })
            .collect(),
        at_ms: d.at_ms,
        failure: d.failure.clone(),
        error: d.error.clone(),
        dnssec: d.dnssec.clone(),
    }
}
