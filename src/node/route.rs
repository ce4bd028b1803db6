//! Where a report goes, decided with this node's configuration: the URLs
//! checked, host names resolved where `[dns]` allows, `routing::decide` on
//! the directory and geo data, then the jurisdiction policy applied. Used
//! by intake (to sign the route into a report), the route preview, and
//! handoffs to a new hosting country.

use crate::report::Priority;
use crate::report::validate::{self, Submission, UrlHost, ValidUrl};
use crate::routing::{self, RouteDecision};

use super::{Core, NodeError};

/// The decision a report with these URLs would get, without submitting.
pub fn route_preview(
    core: &Core,
    urls: &[String],
    hosting_ip: &str,
    category: &str,
    classification: &str,
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
    Ok(decide(core, &urls, &draft))
}

pub(crate) fn valid_urls(urls: &[String]) -> Result<Vec<ValidUrl>, NodeError> {
    urls.iter()
        .map(|u| validate::url(u).map_err(NodeError::from))
        .collect()
}

pub(crate) fn decide(
    core: &Core,
    urls: &[ValidUrl],
    draft: &crate::report::ReportDraft,
) -> RouteDecision {
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
