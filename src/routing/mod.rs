//! Pure routing decisions: where a report goes and why. No IO, no async:
//! the inputs are the URLs' hosts, the analyst's traced IP, an in-memory
//! geo dataset and the directory; the output carries its evidence.

use std::net::IpAddr;

use serde::Serialize;

use crate::directory::Directory;
use crate::geo::GeoDb;
use crate::identity::NodeId;
use crate::report::Category;
use crate::report::validate::UrlHost;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteKind {
    /// To the hotline(s) serving the hosting country.
    Peer,
    /// Hosted in a country this node serves, or hosting unknown: worked here.
    Local,
    /// The hosting country has no hotline: to the configured fallback.
    Fallback,
    /// No hotline and no fallback: kept here, delivery `no-hotline`.
    NoHotline,
}

impl RouteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Peer => "peer",
            RouteKind::Local => "local",
            RouteKind::Fallback => "fallback",
            RouteKind::NoHotline => "no-hotline",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            RouteKind::Peer,
            RouteKind::Local,
            RouteKind::Fallback,
            RouteKind::NoHotline,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// Where the hosting knowledge came from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Evidence {
    pub ip: Option<IpAddr>,
    /// `analyst` (traced by the analyst) or `ip-literal` (the URL's host).
    pub ip_source: String,
    pub country: Option<String>,
    pub dataset: String,
    pub dataset_date: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteDecision {
    pub kind: RouteKind,
    pub destinations: Vec<NodeId>,
    pub reason: String,
    pub evidence: Evidence,
}

pub struct RouteInput<'a> {
    pub hosts: &'a [UrlHost],
    pub hosting_ip: Option<IpAddr>,
    pub category: Category,
}

pub struct Federation<'a> {
    pub directory: &'a Directory,
    pub me: &'a NodeId,
    pub fallback: Option<&'a NodeId>,
}

pub fn decide(input: &RouteInput<'_>, geo: &GeoDb, fed: &Federation<'_>) -> RouteDecision {
    let (ip, ip_source) = match input.hosting_ip {
        Some(ip) => (Some(ip), "analyst"),
        None => match input.hosts.iter().find_map(|h| match h {
            UrlHost::Ip(ip) => Some(*ip),
            UrlHost::Domain(_) => None,
        }) {
            Some(ip) => (Some(ip), "ip-literal"),
            None => (None, ""),
        },
    };
    let mut evidence = Evidence {
        ip,
        ip_source: ip_source.to_owned(),
        ..Evidence::default()
    };
    let Some(ip) = ip else {
        return local(
            evidence,
            "hosting unknown: no IP literal and no --hosting-ip (DNS is not used); kept here for an analyst to trace".into(),
        );
    };
    let answer = geo.lookup(ip);
    evidence.dataset = answer.dataset;
    evidence.dataset_date = answer.dataset_date;
    evidence.country = answer.country.clone();
    let Some(country) = answer.country else {
        let raw = if answer.raw_code.is_empty() {
            "no range".to_owned()
        } else {
            format!("code {:?}", answer.raw_code)
        };
        return local(
            evidence,
            format!("hosting country of {ip} unknown ({raw}); kept here for an analyst"),
        );
    };
    let me = fed.directory.node(fed.me);
    if me.is_some_and(|n| n.countries.contains(&country)) {
        return local(
            evidence,
            format!("hosted in {country}, served by this node"),
        );
    }
    let serving: Vec<_> = fed
        .directory
        .serving(&country)
        .filter(|n| &n.id != fed.me)
        .collect();
    if let Some(peer) = serving.iter().find(|n| n.accepts(input.category)) {
        return RouteDecision {
            kind: RouteKind::Peer,
            destinations: vec![peer.id.clone()],
            reason: format!("hosted in {country}, served by {}", peer.id),
            evidence,
        };
    }
    let why = if serving.is_empty() {
        format!("hosted in {country}, which has no hotline in the federation")
    } else {
        format!(
            "hosted in {country}, whose hotlines do not accept category {}",
            input.category
        )
    };
    match fed.fallback.filter(|f| *f != fed.me) {
        Some(fb) => RouteDecision {
            kind: RouteKind::Fallback,
            destinations: vec![fb.clone()],
            reason: format!("{why}: to the fallback {fb}"),
            evidence,
        },
        None => RouteDecision {
            kind: RouteKind::NoHotline,
            destinations: vec![],
            reason: format!("{why}, and no fallback is configured: kept here"),
            evidence,
        },
    }
}

fn local(evidence: Evidence, reason: String) -> RouteDecision {
    RouteDecision {
        kind: RouteKind::Local,
        destinations: vec![],
        reason,
        evidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{RawDirectory, RawNode};

    fn dir() -> Directory {
        let node = |id: &str, cc: &[&str], cats: &[&str]| RawNode {
            id: id.into(),
            name: String::new(),
            countries: cc.iter().map(|c| (*c).into()).collect(),
            endpoint: "https://127.0.0.1:1".into(),
            categories: cats.iter().map(|c| (*c).into()).collect(),
            active: true,
            keys: vec![],
        };
        Directory::from_raw(
            RawDirectory {
                federation: "t".into(),
                nodes: vec![
                    node("FR-PDC", &["FR"], &[]),
                    node("DE-FSM", &["DE"], &["ncii"]),
                    node("DE-ECO", &["DE"], &[]),
                    node("LE", &[], &[]),
                ],
            },
            "t",
        )
        .unwrap()
    }

    fn route(ip: &str, cat: Category, fallback: Option<&str>) -> RouteDecision {
        let d = dir();
        let me = NodeId::new("FR-PDC").unwrap();
        let fb = fallback.map(|f| NodeId::new(f).unwrap());
        let geo = GeoDb::embedded().unwrap();
        decide(
            &RouteInput {
                hosts: &[UrlHost::Domain("example.com".into())],
                hosting_ip: Some(ip.parse().unwrap()),
                category: cat,
            },
            geo,
            &Federation {
                directory: &d,
                me: &me,
                fallback: fb.as_ref(),
            },
        )
    }

    #[test]
    fn routes_follow_the_hosting_country_and_category_preferences() {
        // 85.214.132.117 is in DE in the shipped IPFire data.
        let r = route("85.214.132.117", Category::Csam, None);
        assert_eq!(r.kind, RouteKind::Peer);
        assert_eq!(r.destinations, vec![NodeId::new("DE-ECO").unwrap()]);
        assert_eq!(r.evidence.country.as_deref(), Some("DE"));
        assert_eq!(r.evidence.dataset_date, "2026-06-25");
        let r = route("85.214.132.117", Category::Ncii, None);
        assert_eq!(r.destinations, vec![NodeId::new("DE-FSM").unwrap()]);
    }

    #[test]
    fn home_no_hotline_and_fallback() {
        assert_eq!(
            route("62.210.16.6", Category::Csam, None).kind,
            RouteKind::Local
        );
        // 130.59.1.1 is in CH: no hotline.
        let r = route("130.59.1.1", Category::Csam, None);
        assert_eq!(r.kind, RouteKind::NoHotline);
        assert!(r.destinations.is_empty());
        let r = route("130.59.1.1", Category::Csam, Some("LE"));
        assert_eq!(r.kind, RouteKind::Fallback);
        assert_eq!(r.destinations, vec![NodeId::new("LE").unwrap()]);
    }

    #[test]
    fn unknown_hosting_is_said_to_be_unknown() {
        // 2.16.0.1 is "EU" in the data: not a country.
        let r = route("2.16.0.1", Category::Csam, Some("LE"));
        assert_eq!(r.kind, RouteKind::Local);
        assert_eq!(r.evidence.country, None);
        assert!(r.reason.contains("unknown"), "{}", r.reason);
    }
}
