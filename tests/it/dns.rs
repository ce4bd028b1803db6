//! Routing reports that name a host, with a real DNS server on loopback
//! started by each test (`runtime::zone`, an authoritative UDP server on
//! hickory-proto's codec) and real nodes pointed at it with
//! `[dns] mode = "resolvers"`: a CNAME chain to a German address reaches
//! the German hotline with the resolution in its signed route; a
//! round-robin across two countries, a CDN-fronted name, NXDOMAIN,
//! SERVFAIL and a server that never answers behave as docs/routing.md
//! says. Nothing leaves the machine.

use std::net::IpAddr;

use crate::common::{Federation, case, submit, wait_case};
use alertrelay::config::RawDns;
use alertrelay::node::route::route_preview;
use alertrelay::pb;
use alertrelay::routing::RouteKind;
use alertrelay::runtime::zone::{Zone, ZoneRecord, ZoneServer};

const DE_IP: &str = "85.214.132.117";
const CH_IP: &str = "130.59.1.1";
const NL_IP: &str = "194.109.6.66";
/// Cloudflare (AS13335) in the shipped network data.
const CDN_IP: &str = "1.1.1.1";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn test_zone() -> Zone {
    Zone::new()
        // A chain of two CNAMEs to a German address.
        .cname("gallery.example.de", "www.gallery.example.de", 600)
        .cname("www.gallery.example.de", "edge.hoster.example", 300)
        .addr("edge.hoster.example", ip(DE_IP), 120)
        // Round-robin across Germany and Switzerland.
        .addr("mirror.example", ip(DE_IP), 60)
        .addr("mirror.example", ip(CH_IP), 60)
        // Behind a CDN, known both by its CNAME and by its network.
        .cname("shop.example", "shop.example.cdn.cloudflare.net", 300)
        .addr("shop.example.cdn.cloudflare.net", ip(CDN_IP), 300)
        .servfail("broken.example")
        .silent("silent.example")
}

async fn federation(zone: &ZoneServer) -> Federation {
    let mut dns = RawDns::resolvers(&[zone.addr().to_string()]);
    // The silent server's questions end at this deadline.
    dns.deadline_ms = 500;
    Federation::builder(&[
        ("FR-PDC", &["FR"]),
        ("DE-ECO", &["DE"]),
        ("NL-EOKM", &["NL"]),
        ("LE", &[]),
    ])
    .fallback("LE")
    .dns(dns)
    .start()
    .await
}

#[tokio::test]
async fn a_host_named_report_reaches_the_german_hotline_with_its_resolution_signed() {
    let zone = ZoneServer::start(test_zone()).await.unwrap();
    let fed = federation(&zone).await;
    let (mut fr, de) = (fed.operator(0), fed.operator(1));
    let sent = submit(&mut fr, "https://Gallery.example.de/album/42?id=secret", "").await;
    let route = sent.route.unwrap();
    assert_eq!(
        (route.kind.as_str(), route.destinations.as_slice()),
        ("peer", &["DE-ECO".to_owned()][..])
    );
    // The receiving hotline sees why it got the report, in the signed route.
    wait_case(&fr, &sent.report_id, 10, |c| c.status == "delivered").await;
    let got = case(&mut de.clone(), &sent.report_id).await;
    let view = got.route.expect("the receiver has the signed route");
    assert_eq!(view.country, "DE");
    assert_eq!(view.ip_source, "dns");
    assert_eq!(view.dns.len(), 1);
    let d = &view.dns[0];
    assert_eq!(d.host, "gallery.example.de");
    assert!(
        d.resolver.contains(&zone.addr().to_string()),
        "{}",
        d.resolver
    );
    // A and AAAA were asked (the zone has no AAAA at the chain's end).
    let asked: Vec<(&str, &str)> = d
        .questions
        .iter()
        .map(|q| (q.question.as_str(), q.outcome.as_str()))
        .collect();
    assert_eq!(asked[0], ("gallery.example.de. IN A", "answered"));
    assert_eq!(asked[1].0, "gallery.example.de. IN AAAA");
    let answers: Vec<(&str, &str, &str, u32)> = d
        .answers
        .iter()
        .map(|a| (a.name.as_str(), a.kind.as_str(), a.value.as_str(), a.ttl))
        .collect();
    assert_eq!(
        answers,
        vec![
            (
                "gallery.example.de.",
                "CNAME",
                "www.gallery.example.de.",
                600
            ),
            (
                "www.gallery.example.de.",
                "CNAME",
                "edge.hoster.example.",
                300
            ),
            ("edge.hoster.example.", "A", DE_IP, 120),
        ]
    );
    assert!(d.failure.is_empty() && !d.at.is_empty(), "{d:?}");
    assert!(
        view.steps.iter().any(|s| s
            == "host gallery.example.de: CNAME chain gallery.example.de -> \
                www.gallery.example.de -> edge.hoster.example"),
        "{:#?}",
        view.steps
    );
    // The DNS server was asked about the host name (and the names of its
    // CNAME chain, which the resolver follows) alone: never the path or
    // the query string.
    let asked = zone.asked();
    let chain = [
        "gallery.example.de",
        "www.gallery.example.de",
        "edge.hoster.example",
    ];
    assert!(
        asked.iter().all(|q| {
            let (name, kind) = q.split_once(' ').unwrap();
            chain.contains(&name) && (kind == "A" || kind == "AAAA")
        }),
        "{asked:?}"
    );
    assert!(
        asked.iter().any(|q| q == "gallery.example.de A"),
        "{asked:?}"
    );
    // The origin's own case shows the same evidence.
    let mine = case(&mut fr, &sent.report_id).await;
    assert_eq!(mine.route.unwrap().dns, view.dns);
    fed.shutdown().await;
}

#[tokio::test]
async fn several_countries_cdns_and_failures_route_as_documented() {
    let zone = ZoneServer::start(test_zone()).await.unwrap();
    let fed = federation(&zone).await;
    let core = fed.core(0);
    let preview = async |url: &str, hosting_ip: &str| {
        route_preview(core, &[url.to_owned()], hosting_ip, "csam", "")
            .await
            .unwrap()
    };
    // Round-robin across borders: the hotline of each country (CH has
    // none: the fallback), both addresses in the evidence.
    let r = preview("http://mirror.example/f", "").await;
    assert_eq!(r.kind, RouteKind::Peer);
    assert_eq!(r.destinations.len(), 2, "{:?}", r.destinations);
    assert_eq!(r.destinations[0].as_str(), "DE-ECO");
    assert_eq!(r.destinations[1].as_str(), "LE");
    assert_eq!(r.evidence.countries, vec!["DE", "CH"]);
    assert_eq!(r.evidence.dns[0].addresses.len(), 2);
    assert!(
        r.steps
            .iter()
            .any(|s| s.starts_with("several hosting countries (DE, CH)"))
    );
    // Behind a CDN: routed by the CDN's address, marked, with the operator.
    let r = preview("https://shop.example/item", "").await;
    assert_eq!(r.evidence.behind_cdn.as_deref(), Some("Cloudflare"));
    assert!(
        r.reason.contains("behind a CDN (Cloudflare)"),
        "{}",
        r.reason
    );
    assert!(!r.reason.contains("shop.example"), "{}", r.reason);
    // ... unless the analyst traced the origin.
    let r = preview("https://shop.example/item", DE_IP).await;
    assert_eq!(r.evidence.behind_cdn, None);
    assert_eq!(r.destinations[0].as_str(), "DE-ECO");
    // NXDOMAIN, SERVFAIL, and a server that never answers: held for an
    // analyst with the failure in the evidence, never kept silently.
    for (host, failure) in [
        ("gone.example", "nxdomain"),
        ("broken.example", "servfail"),
        ("silent.example", "timeout"),
    ] {
        let r = preview(&format!("http://{host}/x"), "").await;
        assert_eq!(r.kind, RouteKind::Held, "{host}: {:?}", r.reason);
        assert!(r.destinations.is_empty());
        let d = &r.evidence.dns[0];
        assert_eq!(d.failure.map(|f| f.as_str()), Some(failure), "{d:?}");
        assert!(
            r.reason
                .contains(&format!("DNS gave no address for host 1 ({failure})")),
            "{}",
            r.reason
        );
        assert!(!r.reason.contains(host), "{}", r.reason);
    }
    fed.shutdown().await;
}

#[tokio::test]
async fn a_held_report_is_visible_and_answers_are_cached_for_their_ttl() {
    let zone = ZoneServer::start(test_zone()).await.unwrap();
    let fed = federation(&zone).await;
    let mut fr = fed.operator(0);
    let held = submit(&mut fr, "http://gone.example/a", "").await;
    assert_eq!(held.route.as_ref().unwrap().kind, "held");
    let c = case(&mut fr, &held.report_id).await;
    assert_eq!(c.status, "held");
    assert_eq!(c.route.unwrap().dns[0].failure, "nxdomain");
    // A second report naming the same host within the TTL is routed from
    // the cache: the server is not asked again, the time is the first one.
    let first = submit(&mut fr, "https://mirror.example/1", "").await;
    let asked = zone.asked().len();
    let second = submit(&mut fr, "https://mirror.example/2", "").await;
    assert_eq!(zone.asked().len(), asked, "answered from the cache");
    let at = |r: &alertrelay::pb::SubmitReportResponse| {
        r.route.as_ref().unwrap().evidence.as_ref().unwrap().dns[0].at_ms
    };
    assert_eq!(at(&first), at(&second));
    assert!(
        fed.core(0)
            .metrics
            .dns_cache_hits
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    assert!(fed.core(0).metrics.dns_query_count("nxdomain") >= 1);
    fed.shutdown().await;
}

#[tokio::test]
async fn content_that_moved_is_rerouted_to_the_new_countrys_hotline_with_both_resolutions() {
    let zone = ZoneServer::start(Zone::new().addr("moving.example", ip(DE_IP), 1))
        .await
        .unwrap();
    let fed = federation(&zone).await;
    let (mut fr, mut de, nl) = (fed.operator(0), fed.operator(1), fed.operator(2));
    let sent = submit(&mut fr, "http://moving.example/v", "").await;
    wait_case(&fr, &sent.report_id, 10, |c| c.status == "delivered").await;
    let reroute = |reason: &str| pb::HandOffCaseRequest {
        id: sent.report_id.clone(),
        reason: reason.into(),
        resolve_again: true,
        ..Default::default()
    };
    // Still in Germany: nothing to hand over, and said so.
    let err = de.hand_off_case(reroute("check")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("still hosted in DE"),
        "{}",
        err.message()
    );
    // The content moves to the Netherlands.
    zone.set("moving.example", vec![ZoneRecord::Addr(ip(NL_IP), 60)]);
    let moved = de
        .hand_off_case(reroute("moved hosting"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.status, "moved");
    wait_case(&fr, &sent.report_id, 10, |c| {
        c.deliveries.iter().any(|d| {
            d.destination == "NL-EOKM"
                && d.state == "delivered"
                && d.handed_off_by.as_deref() == Some("DE-ECO")
        })
    })
    .await;
    let at_nl = case(&mut nl.clone(), &sent.report_id).await;
    // The Dutch hotline has the original signed route (Germany, with its
    // DNS answers) and the handoff's reason with the new resolution.
    let route = at_nl.route.clone().unwrap();
    assert_eq!(route.country, "DE");
    assert_eq!(route.dns[0].answers[0].value, DE_IP);
    assert_eq!(at_nl.received_from.as_deref(), Some("DE-ECO"));
    // The origin has DE-ECO's signed `moved` with both resolutions (by
    // country and time; no host name).
    let at_fr = case(&mut fr, &sent.report_id).await;
    let moved = at_fr
        .history
        .iter()
        .find(|h| h.status == "moved")
        .expect("a signed moved status");
    assert!(
        moved
            .reason
            .contains("re-resolved by DNS: was hosted in DE (resolved 20")
            && moved.reason.contains("now in NL (resolved 20"),
        "{}",
        moved.reason
    );
    assert!(!moved.reason.contains("moving.example"), "{}", moved.reason);
    fed.shutdown().await;
}
