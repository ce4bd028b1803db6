//! Where a report goes, decided with this node's configuration: the URLs
//! checked, host names resolved where `[dns]` allows (`node::dns`, before
//! routing, which does no IO), `routing::decide` on the directory and geo
//! data, then the jurisdiction policy applied. Used by intake (to sign the
//! route into a report), the route preview, and handoffs to a new hosting
//! country.

use crate::geo::dns::Resolved;
use crate::report::Priority;
use crate::report::validate::{self, Submission, UrlHost, ValidUrl};
use crate::routing::{self, RouteDecision};

use super::{Core, NodeError};

/// The decision a report with these URLs would get, without submitting.
pub async fn route_preview(
    core: &Core,
    urls: &[String],
    hosting_ip: &str,
    category: &str,
    classification: &str,
) -> Result<RouteDecision, NodeError> {
    route_with(core, urls, hosting_ip, category, classification, true).await
}

/// The route these URLs get now, their host names resolved again (never
/// from the cache): has the content moved?
pub async fn route_fresh(
    core: &Core,
    urls: &[String],
    category: &str,
    classification: &str,
) -> Result<RouteDecision, NodeError> {
    route_with(core, urls, "", category, classification, false).await
}

async fn route_with(
    core: &Core,
    urls: &[String],
    hosting_ip: &str,
    category: &str,
    classification: &str,
    cached: bool,
) -> Result<RouteDecision, NodeError> {
    let draft = validate::draft(&Submission {
        urls,
        category: if category.is_empty() {
            "other"
        } else {
            category
        },
        hosting_ip,
        priority: Some(Priority::Bulk),
        notes: "",
        hashes: Vec::new(),
        classification,
    })?;
    let urls = valid_urls(&draft.urls)?;
    let resolved = if cached {
        resolve(core, &urls).await
    } else {
        core.dns
            .resolve_fresh(&domain_hosts(&urls), &core.metrics)
            .await
    };
    Ok(decide(core, &urls, &draft, resolved.as_deref()))
}

/// The host names of the URLs that parse (IP literals and onion services
/// are not resolved), each once.
pub(crate) fn domain_hosts<'a>(urls: impl IntoIterator<Item = &'a ValidUrl>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    urls.into_iter()
        .filter_map(|u| match &u.host {
            UrlHost::Domain(d) if seen.insert(d.as_str()) => Some(d.clone()),
            _ => None,
        })
        .collect()
}

/// The DNS evidence for the URLs' host names; `None` when DNS is off.
pub(crate) async fn resolve(core: &Core, urls: &[ValidUrl]) -> Option<Vec<Resolved>> {
    core.dns
        .resolve_all(&domain_hosts(urls), &core.metrics)
        .await
}

/// The same for URLs as submitted: those that do not parse are left out
/// (their report is refused by validation anyway). An urgent report's
/// names do not queue behind bulk work's.
pub(crate) async fn resolve_raw<'a>(
    core: &Core,
    urls: impl IntoIterator<Item = &'a str>,
    urgent: bool,
) -> Option<Vec<Resolved>> {
    let parsed: Vec<ValidUrl> = urls
        .into_iter()
        .filter_map(|u| validate::url(u).ok())
        .collect();
    let hosts = domain_hosts(&parsed);
    if urgent {
        core.dns.resolve_urgent(&hosts, &core.metrics).await
    } else {
        core.dns.resolve_all(&hosts, &core.metrics).await
    }
}

pub(crate) fn valid_urls(urls: &[String]) -> Result<Vec<ValidUrl>, NodeError> {
    urls.iter()
        .map(|u| validate::url(u).map_err(NodeError::from))
        .collect()
}

/// The route for these URLs, given what DNS said about their host names
/// (`resolve`; routing itself does no IO).
pub(crate) fn decide(
    core: &Core,
    urls: &[ValidUrl],
    draft: &crate::report::ReportDraft,
    resolved: Option<&[Resolved]>,
) -> RouteDecision {
    let directory = core.directory();
    let decision = routing::decide(
        &routing::RouteInput {
            urls,
            hosting_ip: draft.hosting_ip,
            category: draft.category,
            resolved,
            on_dns_failure: core.config.dns.on_failure,
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
    // node's jurisdiction policy rules out gets the alternative instead
    // (for each report of a case family on its own).
    let mut decision = decision;
    let parts = std::mem::take(&mut decision.parts);
    let policy = |d: RouteDecision| {
        routing::policy::apply(
            d,
            draft.category,
            draft.classification,
            &core.config.jurisdiction,
            &directory,
            &core.me,
        )
    };
    let mut whole = policy(decision);
    whole.parts = parts.into_iter().map(policy).collect();
    whole
}
