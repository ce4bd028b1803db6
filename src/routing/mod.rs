//! Pure routing decisions: where a report goes and why. No IO, no async:
//! the inputs are the validated URLs, the analyst's traced IP, the DNS
//! answers (when the deployment resolves names), the in-memory geo sources
//! and the directory; the output carries its evidence and the chain of
//! reasoning (`steps`): URL → host → addresses → each source's answer and
//! date → the directory rule applied → destination(s) or fallback.
//!
//! - `hosting.rs`: URLs → hosts → addresses → what the sources say.
//! - `rules.rs`: a hosting country → a hotline, or the fallback chain.

mod family;
mod hosting;
pub mod policy;
mod rules;

use std::net::IpAddr;

use serde::Serialize;

use crate::directory::Directory;
use crate::geo::dns::{OnFailure, Resolved};
use crate::geo::{CountryAnswer, Network, Sources};
use crate::identity::NodeId;
use crate::report::Category;
use crate::report::validate::ValidUrl;

use rules::Outcome;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteKind {
    /// To the hotline(s) serving the hosting country (or countries).
    Peer,
    /// Hosted in a country this node serves, or hosting unknown: worked here.
    Local,
    /// The hosting country has no hotline (or none that takes the category),
    /// or the host is not geolocatable: to the configured fallback.
    Fallback,
    /// No hotline and no fallback: kept here, delivery `no-hotline`.
    NoHotline,
    /// The jurisdiction policy forbids sending it where it would go, and its
    /// alternative is `held`: kept here for an analyst, delivery `held`.
    Held,
}

impl RouteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Peer => "peer",
            RouteKind::Local => "local",
            RouteKind::Fallback => "fallback",
            RouteKind::NoHotline => "no-hotline",
            RouteKind::Held => "held",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            RouteKind::Peer,
            RouteKind::Local,
            RouteKind::Fallback,
            RouteKind::NoHotline,
            RouteKind::Held,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// Where the hosting knowledge came from. The first fields describe the
/// first address the decision used; `addresses` has every address.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Evidence {
    pub ip: Option<IpAddr>,
    /// `analyst` (traced by the analyst), `ip-literal` (the URL's host) or
    /// `dns` (the URL's host name, resolved).
    pub ip_source: String,
    pub country: Option<String>,
    /// The source followed for `country`, and its date.
    pub dataset: String,
    pub dataset_date: String,
    /// `range-lookup`, `mmdb-lookup` or `rir-registration`.
    pub method: String,
    /// The hosting network of `ip` (AS number and organisation).
    pub network: Option<Network>,
    pub network_dataset: String,
    pub network_dataset_date: String,
    /// Set when an address used is in a known anycast/CDN network.
    pub ambiguity: Option<String>,
    /// Every hosting country named by the addresses used, in order.
    pub countries: Vec<String>,
    /// Warnings about the URLs' hosts: `mixed-script-host`,
    /// `confusable-host`, `onion-host`.
    pub flags: Vec<String>,
    /// Every address considered, used or not.
    pub addresses: Vec<AddressEvidence>,
    /// What DNS said about each host name of the URLs: resolver,
    /// questions, answers with TTLs, time, failure, DNSSEC status.
    pub dns: Vec<Resolved>,
    /// The CDN or reverse proxy the content is behind (its operator), when
    /// the route follows one: the receiver asks it for the origin.
    pub behind_cdn: Option<String>,
}

/// One address and what every source says about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddressEvidence {
    pub ip: IpAddr,
    /// `analyst`, `ip-literal` or `dns`.
    pub ip_source: String,
    /// The URL host it came from (empty for the analyst's).
    pub host: String,
    /// False when the analyst's `--hosting-ip` took priority over it.
    pub used: bool,
    pub country: Option<String>,
    /// The source followed (the first in order that knows) and its date.
    pub dataset: String,
    pub dataset_date: String,
    pub method: String,
    /// Every country source's answer, in order.
    pub answers: Vec<CountryAnswer>,
    /// The sources name different countries.
    pub sources_disagree: bool,
    pub network: Option<Network>,
    pub network_dataset: String,
    pub network_dataset_date: String,
    pub ambiguity: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteDecision {
    pub kind: RouteKind,
    pub destinations: Vec<NodeId>,
    /// One line, no host names (it goes into the audit log).
    pub reason: String,
    pub evidence: Evidence,
    /// The chain of reasoning, one step a line.
    pub steps: Vec<String>,
    /// Destinations the jurisdiction policy withheld the report from, and
    /// why (see `policy`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub withheld: Vec<policy::Withheld>,
    /// The case family this report belongs to, when the content is hosted
    /// in several countries and the origin sends one report per country
    /// (`node::intake`); routing leaves it empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Hosting in several countries going to different places: one
    /// decision per destination (its countries, its own evidence), each
    /// to be sent as a report of its own, linked as one case family
    /// (`family`). Empty otherwise.
    #[serde(skip)]
    pub parts: Vec<RouteDecision>,
}

pub struct RouteInput<'a> {
    pub urls: &'a [ValidUrl],
    /// The analyst's traced hosting IP: takes priority over dataset evidence.
    pub hosting_ip: Option<IpAddr>,
    pub category: Category,
    /// The DNS answers for the URLs' host names; `None` when DNS is off.
    pub resolved: Option<&'a [Resolved]>,
    /// What to do when DNS locates nothing (`[dns] on_failure`).
    pub on_dns_failure: OnFailure,
}

pub struct Federation<'a> {
    pub directory: &'a Directory,
    pub me: &'a NodeId,
    /// For countries without a hotline (any category).
    pub fallback: Option<&'a NodeId>,
    /// Category-specific fallbacks, tried in order before `fallback`.
    pub fallback_for: &'a [(Category, NodeId)],
}

pub fn decide(input: &RouteInput<'_>, geo: &Sources, fed: &Federation<'_>) -> RouteDecision {
    let mut steps = Vec::new();
    let found = hosting::find(input, geo, &mut steps);
    let mut outcomes: Vec<(Outcome, String)> = Vec::new();
    for country in &found.evidence.countries {
        outcomes.push(rules::for_country(country, input.category, fed, &mut steps));
    }
    let by_country: Vec<(String, Outcome, String)> = found
        .evidence
        .countries
        .iter()
        .zip(&outcomes)
        .map(|(c, (o, r))| (c.clone(), o.clone(), r.clone()))
        .collect();
    if found.onion_hosts > 0 {
        let why = if found.evidence.countries.is_empty() {
            "the host is a Tor onion service, which is not geolocatable".to_owned()
        } else {
            "another host is a Tor onion service, which is not geolocatable".to_owned()
        };
        outcomes.push(rules::fallback(why, input.category, fed, &mut steps));
    }
    let mut unknown_reason = found.unknown_reason;
    if !found.dns_failed.is_empty() {
        let failed = format!("DNS gave no address for {}", found.dns_failed.join(", "));
        if !outcomes.is_empty() {
            unknown_reason = Some(match unknown_reason {
                Some(u) => format!("{u}; {failed}"),
                None => failed,
            });
        } else if input.on_dns_failure == OnFailure::Fallback {
            let why = format!("hosting unknown: {failed} ([dns] on_failure = \"fallback\")");
            outcomes.push(rules::fallback(why, input.category, fed, &mut steps));
            unknown_reason = None;
        } else {
            return held_for_dns(failed, found.evidence, steps);
        }
    }
    let parts = family::parts(&by_country, &outcomes, &found.evidence, &steps);
    if found.evidence.countries.len() > 1 {
        steps.push(format!(
            "several hosting countries ({}): {}",
            found.evidence.countries.join(", "),
            if parts.is_empty() {
                "one report, to the one place they all lead"
            } else {
                "one report per destination, each with its own evidence, linked as one case family"
            }
        ));
    }
    let mut whole = combine(outcomes, unknown_reason.clone(), found.evidence, steps);
    whole.parts = parts
        .into_iter()
        .map(|(outcome, evidence, steps)| {
            combine(vec![outcome], unknown_reason.clone(), evidence, steps)
        })
        .collect();
    whole
}

/// DNS located nothing and `[dns] on_failure = "hold"`: kept here, delivery
/// `held`, for an analyst to trace (never silently worked here).
fn held_for_dns(failed: String, evidence: Evidence, mut steps: Vec<String>) -> RouteDecision {
    let reason = format!(
        "hosting unknown: {failed}; held for an analyst ([dns] on_failure = \"hold\"): \
         trace the host and re-route with --hosting-ip"
    );
    steps.push(format!(
        "decision: held (kept here, delivery held): {reason}"
    ));
    RouteDecision {
        kind: RouteKind::Held,
        destinations: vec![],
        reason,
        evidence,
        steps,
        withheld: Vec::new(),
        family: None,
        parts: Vec::new(),
    }
}

/// One outcome per hosting country (and one for onion hosts): every
/// country is named, the report goes to each one's hotline or fallback;
/// the kind is the strongest outcome (peer, fallback, local, no-hotline).
fn combine(
    outcomes: Vec<(Outcome, String)>,
    unknown_reason: Option<String>,
    evidence: Evidence,
    mut steps: Vec<String>,
) -> RouteDecision {
    if outcomes.is_empty() {
        let reason = unknown_reason.unwrap_or_else(|| "hosting unknown".to_owned());
        steps.push(format!("decision: local (kept here): {reason}"));
        return RouteDecision {
            kind: RouteKind::Local,
            destinations: vec![],
            reason,
            evidence,
            steps,
            withheld: Vec::new(),
            family: None,
            parts: Vec::new(),
        };
    }
    let mut destinations: Vec<NodeId> = Vec::new();
    let (mut peer, mut fallback, mut local) = (false, false, false);
    for (o, _) in &outcomes {
        let id = match o {
            Outcome::Peer(id) => {
                peer = true;
                id
            }
            Outcome::Fallback(id) => {
                fallback = true;
                id
            }
            Outcome::Local => {
                local = true;
                continue;
            }
            Outcome::NoHotline => continue,
        };
        if !destinations.contains(id) {
            destinations.push(id.clone());
        }
    }
    let kind = if peer {
        RouteKind::Peer
    } else if fallback {
        RouteKind::Fallback
    } else if local {
        RouteKind::Local
    } else {
        RouteKind::NoHotline
    };
    let mut reason = outcomes
        .iter()
        .map(|(_, r)| r.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    if let Some(unknown) = unknown_reason {
        reason.push_str("; also ");
        reason.push_str(&unknown);
    }
    if let Some(a) = &evidence.ambiguity {
        reason.push_str("; ");
        reason.push_str(a);
    }
    if let Some(cdn) = &evidence.behind_cdn {
        reason.push_str(&format!(
            "; behind a CDN ({cdn}): the receiving hotline asks {cdn} for the origin"
        ));
    }
    if evidence
        .addresses
        .iter()
        .any(|a| a.used && a.sources_disagree)
    {
        reason.push_str("; the geo sources disagree (see the evidence)");
    }
    let shown = if destinations.is_empty() {
        "kept here".to_owned()
    } else {
        destinations
            .iter()
            .map(NodeId::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    steps.push(format!("decision: {} -> {shown}", kind.as_str()));
    RouteDecision {
        kind,
        destinations,
        reason,
        evidence,
        steps,
        withheld: Vec::new(),
        family: None,
        parts: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
