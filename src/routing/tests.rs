//! Routing decisions over the shipped data and a small directory: the
//! directory rules, fallback chains, analyst priority, several countries,
//! DNS, onion hosts, anycast, disagreeing sources, and the explanation.

use std::path::PathBuf;

use super::*;
use crate::directory::{RawDirectory, RawNode};
use crate::geo::dns::{Dns, Mode, OnFailure, StaticResolver};
use crate::geo::{SourceKind, SourceSpec};
use crate::report::validate;

const DE: &str = "85.214.132.117"; // IPFire: DE; AS6724 Strato AG
const FR: &str = "62.210.16.6";
const NL: &str = "194.109.6.66";
const CH: &str = "130.59.1.1"; // no hotline in the directory below
const EU: &str = "2.16.0.1"; // IPFire code "EU": unknown

fn node(id: &str, cc: &[&str], cats: &[&str], active: bool) -> RawNode {
    RawNode {
        relay: None,
        id: id.into(),
        name: String::new(),
        countries: cc.iter().map(|c| (*c).into()).collect(),
        endpoint: "https://127.0.0.1:1".into(),
        categories: cats.iter().map(|c| (*c).into()).collect(),
        active,
        keys: vec![],
        national_categories: vec![],
    }
}

fn dir() -> Directory {
    Directory::from_raw(
        RawDirectory {
            federation: "t".into(),
            nodes: vec![
                node("FR-PDC", &["FR"], &[], true),
                node("DE-FSM", &["DE"], &["ncii"], true),
                node("DE-ECO", &["DE"], &[], true),
                node("NL-OFFLIMITS", &["NL"], &["csam", "ncii"], true),
                node("AU-ESAFETY", &["AU"], &[], true),
                node(
                    "LE",
                    &[],
                    &[
                        "csam",
                        "child-exploitation",
                        "grooming",
                        "trafficking",
                        "other",
                    ],
                    true,
                ),
                node("NCII-HELP", &[], &["ncii"], true),
                node("OLD", &["BT"], &[], false),
            ],
        },
        "t",
    )
    .unwrap()
}

/// One routing case.
struct Case<'a> {
    urls: &'a [&'a str],
    hosting_ip: Option<&'a str>,
    category: Category,
    fallback: Option<&'a str>,
    fallback_for: &'a [(Category, &'a str)],
    dns: Dns,
    sources: Option<Sources>,
}

impl Default for Case<'_> {
    fn default() -> Self {
        Case {
            urls: &["http://example.com/"],
            hosting_ip: None,
            category: Category::Csam,
            fallback: None,
            fallback_for: &[],
            dns: Dns::default(),
            sources: None,
        }
    }
}

impl Case<'_> {
    fn route(&self) -> RouteDecision {
        let d = dir();
        let me = NodeId::new("FR-PDC").unwrap();
        let fb = self.fallback.map(|f| NodeId::new(f).unwrap());
        let fbf: Vec<(Category, NodeId)> = self
            .fallback_for
            .iter()
            .map(|(c, n)| (*c, NodeId::new(n).unwrap()))
            .collect();
        let urls: Vec<ValidUrl> = self
            .urls
            .iter()
            .map(|u| validate::url(u).unwrap())
            .collect();
        let resolved = self.dns.resolve_static(
            urls.iter().filter_map(|u| match &u.host {
                validate::UrlHost::Domain(d) => Some(d.as_str()),
                _ => None,
            }),
            0,
        );
        let shipped = Sources::shipped();
        decide(
            &RouteInput {
                urls: &urls,
                hosting_ip: self.hosting_ip.map(|ip| ip.parse().unwrap()),
                category: self.category,
                resolved: resolved.as_deref(),
                on_dns_failure: self.dns.on_failure,
            },
            self.sources.as_ref().unwrap_or(&shipped),
            &Federation {
                directory: &d,
                me: &me,
                fallback: fb.as_ref(),
                fallback_for: &fbf,
            },
        )
    }
}

fn ids(r: &RouteDecision) -> Vec<&str> {
    r.destinations.iter().map(NodeId::as_str).collect()
}

fn literal(ip: &str) -> String {
    if ip.contains(':') {
        format!("http://[{ip}]/x")
    } else {
        format!("http://{ip}/x")
    }
}

fn has_step(r: &RouteDecision, needle: &str) -> bool {
    r.steps.iter().any(|s| s.contains(needle))
}

#[test]
fn routes_follow_the_hosting_country_and_category_preferences() {
    let r = Case {
        hosting_ip: Some(DE),
        ..Case::default()
    }
    .route();
    assert_eq!((r.kind, ids(&r)), (RouteKind::Peer, vec!["DE-ECO"]));
    assert_eq!(r.reason, "hosted in DE, served by DE-ECO");
    assert_eq!(r.evidence.country.as_deref(), Some("DE"));
    assert_eq!(r.evidence.dataset, "ipfire-location (tor-geoip)");
    assert_eq!(r.evidence.dataset_date, "2026-06-25");
    assert_eq!(r.evidence.method, "range-lookup");
    let n = r.evidence.network.as_ref().unwrap();
    assert_eq!((n.asn, n.org.as_str()), (6724, "Strato AG"));
    assert_eq!(r.evidence.network_dataset_date, "2026-06-17");
    assert!(
        has_step(&r, "DE-FSM serves DE but declines csam (accepts ncii)"),
        "{:#?}",
        r.steps
    );
    assert!(
        has_step(&r, "DE-ECO is the first hotline in directory order"),
        "{:#?}",
        r.steps
    );
    // DE-FSM comes first in the directory and takes ncii.
    let r = Case {
        hosting_ip: Some(DE),
        category: Category::Ncii,
        ..Case::default()
    }
    .route();
    assert_eq!(ids(&r), vec!["DE-FSM"]);
}

#[test]
fn home_no_hotline_and_fallback() {
    let r = Case {
        urls: &["http://62.210.16.6/"],
        ..Case::default()
    }
    .route();
    assert_eq!(
        (r.kind, r.reason.as_str()),
        (RouteKind::Local, "hosted in FR, served by this node")
    );
    let r = Case {
        hosting_ip: Some(CH),
        ..Case::default()
    }
    .route();
    assert_eq!(r.kind, RouteKind::NoHotline);
    assert!(r.destinations.is_empty());
    assert_eq!(
        r.reason,
        "hosted in CH, which has no hotline in the federation, and no fallback is configured: kept here"
    );
    let r = Case {
        hosting_ip: Some(CH),
        fallback: Some("LE"),
        ..Case::default()
    }
    .route();
    assert_eq!((r.kind, ids(&r)), (RouteKind::Fallback, vec!["LE"]));
    assert_eq!(
        r.reason,
        "hosted in CH, which has no hotline in the federation: to the fallback LE"
    );
}

#[test]
fn unknown_hosting_is_said_to_be_unknown() {
    let r = Case {
        hosting_ip: Some(EU),
        fallback: Some("LE"),
        ..Case::default()
    }
    .route();
    assert_eq!(r.kind, RouteKind::Local);
    assert_eq!(r.evidence.country, None);
    assert_eq!(
        r.reason,
        "hosting country of address 1 unknown (code \"EU\"); kept here for an analyst"
    );
    let r = Case::default().route();
    assert_eq!(r.kind, RouteKind::Local);
    assert!(r.reason.contains("DNS is not used"), "{}", r.reason);
    assert!(
        has_step(&r, "host example.com: not resolved (DNS is off"),
        "{:#?}",
        r.steps
    );
}

#[test]
fn a_suspended_hotline_is_passed_over() {
    // 67.43.156.1 is BT in MaxMind's test data; BT's only hotline is suspended.
    let r = Case {
        hosting_ip: Some("67.43.156.1"),
        fallback: Some("LE"),
        sources: Some(test_sources_then_shipped()),
        ..Case::default()
    }
    .route();
    assert_eq!((r.kind, ids(&r)), (RouteKind::Fallback, vec!["LE"]));
    assert!(has_step(&r, "BT: OLD suspended"), "{:#?}", r.steps);
}

#[test]
fn the_analysts_traced_ip_takes_priority_over_dataset_evidence() {
    let url = literal(FR);
    let r = Case {
        urls: &[url.as_str()],
        hosting_ip: Some(DE),
        ..Case::default()
    }
    .route();
    assert_eq!((r.kind, ids(&r)), (RouteKind::Peer, vec!["DE-ECO"]));
    assert_eq!(r.evidence.ip_source, "analyst");
    assert_eq!(r.evidence.countries, vec!["DE"]);
    let a = &r.evidence.addresses;
    assert_eq!(a.len(), 2);
    assert_eq!((a[0].ip_source.as_str(), a[0].used), ("analyst", true));
    // The URL's own address is still looked up and recorded, not used.
    assert_eq!(
        (a[1].ip_source.as_str(), a[1].used, a[1].country.as_deref()),
        ("ip-literal", false, Some("FR"))
    );
    assert!(
        has_step(
            &r,
            "declared by the analyst (--hosting-ip): analyst-declared evidence takes priority"
        ),
        "{:#?}",
        r.steps
    );
    assert!(
        has_step(&r, "(not used) 62.210.16.6 (ip-literal)"),
        "{:#?}",
        r.steps
    );
}

#[test]
fn several_countries_are_all_named_and_each_gets_the_report() {
    let urls = [
        literal(DE),
        literal(NL),
        literal(CH),
        literal("2a01:4f8::1"),
        literal(DE),
    ];
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let r = Case {
        urls: &urls,
        fallback: Some("LE"),
        ..Case::default()
    }
    .route();
    assert_eq!(r.kind, RouteKind::Peer);
    assert_eq!(ids(&r), vec!["DE-ECO", "NL-OFFLIMITS", "LE"]);
    assert_eq!(r.evidence.countries, vec!["DE", "NL", "CH"]);
    assert_eq!(
        r.evidence.addresses.len(),
        4,
        "the repeated address is looked up once"
    );
    assert_eq!(
        r.reason,
        "hosted in DE, served by DE-ECO; hosted in NL, served by NL-OFFLIMITS; \
         hosted in CH, which has no hotline in the federation: to the fallback LE"
    );
    assert!(
        has_step(&r, "urls[0,4]: host 85.214.132.117 (an IP literal)"),
        "{:#?}",
        r.steps
    );
    // Without a fallback, CH is said to be kept here, the rest still goes.
    let r = Case {
        urls: &urls,
        ..Case::default()
    }
    .route();
    assert_eq!(
        (r.kind, ids(&r)),
        (RouteKind::Peer, vec!["DE-ECO", "NL-OFFLIMITS"])
    );
    assert!(
        r.reason
            .contains("CH, which has no hotline in the federation, and no fallback is configured"),
        "{}",
        r.reason
    );
    // Home and abroad: the report goes abroad, and the reason says the rest.
    let urls = [literal(FR), literal(EU), literal(NL)];
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let r = Case {
        urls: &urls,
        ..Case::default()
    }
    .route();
    assert_eq!((r.kind, ids(&r)), (RouteKind::Peer, vec!["NL-OFFLIMITS"]));
    assert_eq!(
        r.reason,
        "hosted in FR, served by this node; hosted in NL, served by NL-OFFLIMITS; \
         also hosting country of address 2 unknown (code \"EU\")"
    );
}

#[test]
fn dns_answers_name_every_country() {
    let map = StaticResolver::new([
        (
            "files.example".to_owned(),
            vec![DE.parse().unwrap(), NL.parse().unwrap()],
        ),
        ("home.example".to_owned(), vec![FR.parse().unwrap()]),
    ])
    .unwrap();
    let urls = [
        "https://FILES.example/a",
        "https://files.example/b",
        "http://home.example/",
        "http://gone.example/",
    ];
    let r = Case {
        urls: &urls,
        dns: statik(map),
        ..Case::default()
    }
    .route();
    assert_eq!(
        (r.kind, ids(&r)),
        (RouteKind::Peer, vec!["DE-ECO", "NL-OFFLIMITS"])
    );
    assert_eq!(r.evidence.countries, vec!["DE", "NL", "FR"]);
    assert_eq!(r.evidence.ip_source, "dns");
    assert_eq!(r.evidence.addresses[0].host, "files.example");
    assert!(
        has_step(
            &r,
            "host files.example: static DNS map gives 85.214.132.117, 194.109.6.66"
        ),
        "{:#?}",
        r.steps
    );
    assert!(
        has_step(
            &r,
            "host gone.example: no address: no-address: not in the static DNS map"
        ),
        "{:#?}",
        r.steps
    );
    assert!(
        !r.reason.contains("example"),
        "no host names in the reason: {}",
        r.reason
    );
    // Nothing resolves: unknown, and said so.
    let r = Case {
        urls: &["http://gone.example/"],
        dns: statik(StaticResolver::default()),
        ..Case::default()
    }
    .route();
    assert_eq!(r.kind, RouteKind::Held);
    assert!(r.destinations.is_empty());
    assert_eq!(
        r.reason,
        "hosting unknown: DNS gave no address for host 1 (no-address); held for an analyst \
         ([dns] on_failure = \"hold\"): trace the host and re-route with --hosting-ip"
    );
    // ... or to the fallback, when so configured.
    let r = Case {
        urls: &["http://gone.example/"],
        dns: Dns {
            on_failure: OnFailure::Fallback,
            ..statik(StaticResolver::default())
        },
        fallback: Some("LE"),
        ..Case::default()
    }
    .route();
    assert_eq!((r.kind, ids(&r)), (RouteKind::Fallback, vec!["LE"]));
    assert!(
        r.reason.contains("DNS gave no address for host 1"),
        "{}",
        r.reason
    );
    // The analyst's traced address still takes priority over a failure.
    let r = Case {
        urls: &["http://gone.example/"],
        hosting_ip: Some(DE),
        dns: statik(StaticResolver::default()),
        ..Case::default()
    }
    .route();
    assert_eq!((r.kind, ids(&r)), (RouteKind::Peer, vec!["DE-ECO"]));
}

fn statik(map: StaticResolver) -> Dns {
    Dns {
        mode: Mode::Static,
        map,
        ..Dns::default()
    }
}

#[test]
fn onion_hosts_go_to_the_fallback_or_are_kept() {
    let onion = ["http://expyuzz4wqqyqhjn.onion/x"];
    let r = Case {
        urls: &onion,
        fallback: Some("LE"),
        ..Case::default()
    }
    .route();
    assert_eq!((r.kind, ids(&r)), (RouteKind::Fallback, vec!["LE"]));
    assert_eq!(
        r.reason,
        "the host is a Tor onion service, which is not geolocatable: to the fallback LE"
    );
    assert_eq!(r.evidence.flags, vec!["onion-host"]);
    let r = Case {
        urls: &onion,
        ..Case::default()
    }
    .route();
    assert_eq!(r.kind, RouteKind::NoHotline);
    assert!(
        r.reason
            .ends_with("and no fallback is configured: kept here"),
        "{}",
        r.reason
    );
    // With a clear-web copy elsewhere, both are served.
    let de = literal(DE);
    let r = Case {
        urls: &[onion[0], de.as_str()],
        fallback: Some("LE"),
        ..Case::default()
    }
    .route();
    assert_eq!((r.kind, ids(&r)), (RouteKind::Peer, vec!["DE-ECO", "LE"]));
    // The analyst traced the onion service: the traced address decides.
    let r = Case {
        urls: &onion,
        hosting_ip: Some(NL),
        fallback: Some("LE"),
        ..Case::default()
    }
    .route();
    assert_eq!(ids(&r), vec!["NL-OFFLIMITS"]);
}

#[test]
fn fallback_chains_per_category() {
    let chain = [(Category::Ncii, "NCII-HELP")];
    let ncii = Case {
        hosting_ip: Some(CH),
        category: Category::Ncii,
        fallback: Some("LE"),
        fallback_for: &chain,
        ..Case::default()
    };
    let r = ncii.route();
    assert_eq!((r.kind, ids(&r)), (RouteKind::Fallback, vec!["NCII-HELP"]));
    assert!(
        has_step(
            &r,
            "to the fallback NCII-HELP (from `fallback_for` for ncii)"
        ),
        "{:#?}",
        r.steps
    );
    // Other categories use the general fallback.
    let r = Case {
        category: Category::Csam,
        ..ncii
    }
    .route();
    assert_eq!(ids(&r), vec!["LE"]);
    // A fallback that declines the category, or is suspended or is this
    // node, is skipped; with nothing left the report is kept here.
    let chain = [(Category::Ncii, "OLD"), (Category::Ncii, "FR-PDC")];
    let r = Case {
        hosting_ip: Some(CH),
        category: Category::Ncii,
        fallback: Some("LE"),
        fallback_for: &chain,
        ..Case::default()
    }
    .route();
    assert_eq!(r.kind, RouteKind::NoHotline);
    assert!(
        has_step(
            &r,
            "fallback OLD (from `fallback_for`) is suspended: skipped"
        ),
        "{:#?}",
        r.steps
    );
    assert!(
        has_step(
            &r,
            "fallback FR-PDC (from `fallback_for`) is this node: skipped"
        ),
        "{:#?}",
        r.steps
    );
    assert!(
        has_step(
            &r,
            "fallback LE (from `fallback`) declines the category: skipped"
        ),
        "{:#?}",
        r.steps
    );
    assert_eq!(
        r.reason,
        "hosted in CH, which has no hotline in the federation, and no fallback can take it \
         (OLD is suspended, FR-PDC is this node, LE declines the category): kept here"
    );
    // A country whose hotlines all decline the category goes to the fallback.
    let r = Case {
        hosting_ip: Some(NL),
        category: Category::Grooming,
        fallback: Some("LE"),
        ..Case::default()
    }
    .route();
    assert_eq!((r.kind, ids(&r)), (RouteKind::Fallback, vec!["LE"]));
    assert_eq!(
        r.reason,
        "hosted in NL, whose hotlines do not accept category grooming: to the fallback LE"
    );
}

#[test]
fn anycast_networks_are_routed_but_said_to_be_ambiguous() {
    // 1.1.1.1: IPFire says AU, the ASN data says AS13335 Cloudflare.
    let r = Case {
        hosting_ip: Some("1.1.1.1"),
        ..Case::default()
    }
    .route();
    assert_eq!((r.kind, ids(&r)), (RouteKind::Peer, vec!["AU-ESAFETY"]));
    let amb = r.evidence.ambiguity.as_deref().unwrap();
    assert!(amb.starts_with(crate::geo::ANYCAST_NOTE), "{amb}");
    assert_eq!(
        r.reason,
        format!(
            "hosted in AU, served by AU-ESAFETY; {} (AS13335, Cloudflare)",
            crate::geo::ANYCAST_NOTE
        )
    );
    assert!(
        has_step(&r, "1.1.1.1: network AS13335 Cloudflare, Inc."),
        "{:#?}",
        r.steps
    );
    // IPv6: 2606:4700::/32 is Cloudflare too.
    let r = Case {
        urls: &["http://[2606:4700::1111]/"],
        ..Case::default()
    }
    .route();
    assert!(r.evidence.ambiguity.is_some(), "{:#?}", r.steps);
}

fn test_sources_then_shipped() -> Sources {
    let mmdb = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/GeoIP2-Country-Test.mmdb"
    ));
    Sources::load(&[
        SourceSpec {
            kind: SourceKind::Mmdb,
            name: Some("maxmind-test".into()),
            paths: vec![mmdb],
            date: None,
        },
        SourceSpec {
            kind: SourceKind::Shipped,
            name: None,
            paths: vec![],
            date: None,
        },
    ])
    .unwrap()
}

#[test]
fn disagreeing_sources_are_listed_and_the_first_that_knows_is_followed() {
    // MaxMind's test data: 202.196.224.1 in PH; IPFire: CN.
    let r = Case {
        hosting_ip: Some("202.196.224.1"),
        fallback: Some("LE"),
        sources: Some(test_sources_then_shipped()),
        ..Case::default()
    }
    .route();
    assert_eq!(r.evidence.country.as_deref(), Some("PH"));
    assert_eq!(r.evidence.dataset, "maxmind-test");
    assert_eq!(r.evidence.method, "mmdb-lookup");
    let a = &r.evidence.addresses[0];
    assert!(a.sources_disagree);
    let answers: Vec<_> = a
        .answers
        .iter()
        .map(|x| (x.source.as_str(), x.country.as_deref()))
        .collect();
    assert_eq!(
        answers,
        vec![
            ("maxmind-test", Some("PH")),
            ("ipfire-location (tor-geoip)", Some("CN"))
        ]
    );
    assert!(
        r.reason
            .ends_with("; the geo sources disagree (see the evidence)"),
        "{}",
        r.reason
    );
    assert!(
        has_step(
            &r,
            "the sources disagree about 202.196.224.1: they name PH and CN; the decision follows maxmind-test"
        ),
        "{:#?}",
        r.steps
    );
}

#[test]
fn host_flags_reach_the_evidence_and_the_steps() {
    let r = Case {
        urls: &["http://p\u{0430}ypal.com/login"],
        ..Case::default()
    }
    .route();
    assert_eq!(
        r.evidence.flags,
        vec!["mixed-script-host", "confusable-host"]
    );
    assert!(
        has_step(
            &r,
            "host xn--pypal-4ve.com (a host name; flagged mixed-script-host, confusable-host)"
        ),
        "{:#?}",
        r.steps
    );
}

#[test]
fn the_explanation_runs_from_url_to_decision() {
    let url = literal(DE);
    let r = Case {
        urls: &[url.as_str()],
        ..Case::default()
    }
    .route();
    let s = &r.steps;
    assert_eq!(
        s.first().map(String::as_str),
        Some("urls[0]: host 85.214.132.117 (an IP literal)")
    );
    assert_eq!(
        s.get(1).map(String::as_str),
        Some(
            "geo sources, in order: ipfire-location (tor-geoip) (shipped, 2026-06-25), \
             routeviews-dbip (ip-location-db asn) (shipped, 2026-06-17)"
        )
    );
    assert_eq!(
        s.get(2).map(String::as_str),
        Some(
            "85.214.132.117 (ip-literal): ipfire-location (tor-geoip) of 2026-06-25: DE -> DE \
             (following ipfire-location (tor-geoip), the first source that knows)"
        )
    );
    assert_eq!(
        s.last().map(String::as_str),
        Some("decision: peer -> DE-ECO")
    );
}
