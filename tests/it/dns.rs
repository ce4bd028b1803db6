//! Routing reports that name a host, with a real DNS server on loopback
//! started by each test (`runtime::zone`, an authoritative UDP server on
//! hickory-proto's codec) and real nodes pointed at it with
//! `[dns] mode = "resolvers"`: a CNAME chain to a German address reaches
//! the German hotline with the resolution in its signed route; a
//! round-robin across two countries, a CDN-fronted name, NXDOMAIN,
//! SERVFAIL and a server that never answers behave as docs/routing.md
//! says. Nothing leaves the machine.

use std::net::IpAddr;

use crate::common::{Federation, arg, case, cli, eventually, submit, wait_case};
use alertrelay::config::RawDns;
use alertrelay::node::cases::RouteView;
use alertrelay::node::route::route_preview;
use alertrelay::pb;
use alertrelay::pb::operator_client::OperatorClient;
use alertrelay::routing::RouteKind;
use alertrelay::runtime::zone::{Zone, ZoneRecord, ZoneServer};
use tonic::transport::Channel;

const DE_IP: &str = "85.214.132.117";
const CH_IP: &str = "130.59.1.1";
const NL_IP: &str = "194.109.6.66";
/// Strato AG, Germany, in the shipped IPv6 data.
const DE_IP6: &str = "2a01:238:20a:202::1";
/// Cloudflare (AS13335) in the shipped network data.
const CDN_IP: &str = "1.1.1.1";

/// An origin and the hotlines of Germany and the Netherlands.
const FR_DE_NL: &[(&str, &[&str])] = &[
    ("FR-PDC", &["FR"]),
    ("DE-ECO", &["DE"]),
    ("NL-EOKM", &["NL"]),
];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn test_zone() -> Zone {
    Zone::new()
        // A chain of two CNAMEs to a German address.
        .cname("gallery.example.de", "www.gallery.example.de", 600)
        .cname("www.gallery.example.de", "edge.hoster.example", 300)
        .addr("edge.hoster.example", ip(DE_IP), 120)
        .addr("edge.hoster.example", ip(DE_IP6), 120)
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

/// Submits `url` at the origin, checks that it is routed to the German
/// hotline alone, and returns its id and the signed route the German
/// hotline holds once it is delivered.
async fn received_in_germany(
    fr: &mut OperatorClient<Channel>,
    de: &OperatorClient<Channel>,
    url: &str,
) -> (String, RouteView) {
    let sent = submit(fr, url, "").await;
    let route = sent.route.unwrap();
    assert_eq!(
        (route.kind.as_str(), route.destinations.as_slice()),
        ("peer", &["DE-ECO".to_owned()][..])
    );
    wait_case(fr, &sent.report_id, 10, |c| c.status == "delivered").await;
    let got = case(&mut de.clone(), &sent.report_id).await;
    let view = got.route.expect("the receiver has the signed route");
    (sent.report_id, view)
}

#[tokio::test]
async fn a_host_named_report_reaches_the_german_hotline_with_its_resolution_signed() {
    let zone = ZoneServer::start(test_zone()).await.unwrap();
    let fed = federation(&zone).await;
    let (mut fr, de) = (fed.operator(0), fed.operator(1));
    // The receiving hotline sees why it got the report, in the signed route.
    let (report_id, view) = received_in_germany(
        &mut fr,
        &de,
        "https://Gallery.example.de/album/42?id=secret",
    )
    .await;
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
    assert_eq!(
        asked,
        vec![
            ("gallery.example.de. IN A", "answered"),
            ("gallery.example.de. IN AAAA", "answered")
        ]
    );
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
            ("edge.hoster.example.", "AAAA", DE_IP6, 120),
        ]
    );
    // IPv4 and IPv6 both located, both in Germany.
    let located: Vec<(&str, &str)> = view
        .addresses
        .iter()
        .map(|a| (a.ip.as_str(), a.country.as_str()))
        .collect();
    assert_eq!(located, vec![(DE_IP, "DE"), (DE_IP6, "DE")]);
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
    let mine = case(&mut fr, &report_id).await;
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
    // Resolving again chooses the hotline: naming one too is refused.
    let err = de
        .hand_off_case(pb::HandOffCaseRequest {
            to: "NL-EOKM".into(),
            ..reroute("both")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("resolve_again"), "{}", err.message());
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

#[tokio::test]
async fn host_names_stay_out_of_logs_and_metrics_and_the_cli_prints_the_evidence() {
    let zone = ZoneServer::start(test_zone()).await.unwrap();
    let mut dns = RawDns::resolvers(&[zone.addr().to_string()]);
    dns.deadline_ms = 500;
    let mut fed = Federation::builder(&[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"]), ("LE", &[])])
        .fallback("LE")
        .processes()
        .json_logs("info")
        .dns(dns)
        .start()
        .await;
    let cfg = fed.config_path(0);
    let fed_ref = &fed;
    eventually(
        5,
        || async { fed_ref.stdout(0) },
        |out| out.contains("listening"),
    )
    .await;
    // `route` shows the resolution, without submitting anything.
    let (code, out, err) = cli(&[
        "route",
        "--config",
        arg(&cfg),
        "--url",
        "https://gallery.example.de/album/1",
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    for want in [
        "route:    peer -> DE-ECO",
        "dns:      gallery.example.de via resolvers 127.0.0.1:",
        "gallery.example.de. CNAME www.gallery.example.de. (TTL 600 s)",
        "edge.hoster.example. A 85.214.132.117 (TTL 120 s)",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // Reports that resolve, and that do not (NXDOMAIN, no answer).
    let mut ids = Vec::new();
    for url in [
        "https://gallery.example.de/album/2",
        "http://gone.example/x",
        "http://silent.example/y",
    ] {
        let (code, out, err) = cli(&[
            "submit",
            "--config",
            arg(&cfg),
            "--url",
            url,
            "--category",
            "csam",
            "--json",
        ])
        .await;
        assert_eq!(code, 0, "{out}{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    // `cases show` prints the failure of the held report.
    let (code, out, err) = cli(&["cases", "show", &ids[1], "--config", arg(&cfg)]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("route:    held -> (kept here)"), "{out}");
    assert!(out.contains("failed: nxdomain"), "{out}");
    // Metrics say what happened by outcome, never by name.
    let metrics = fed.metrics(0).await;
    assert!(
        metrics.contains("alertrelay_dns_queries_total{outcome=\"nxdomain\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("alertrelay_dns_queries_total{outcome=\"timeout\"}"),
        "{metrics}"
    );
    assert!(!metrics.contains("example"), "{metrics}");
    for i in [0, 1] {
        let status = fed.terminate(i, std::time::Duration::from_secs(20)).await;
        assert!(status.success(), "{status}");
        // No host name in any log line, at any level the node wrote.
        let log = fed.log(i);
        assert!(!log.is_empty());
        for name in [
            "gallery.example",
            "hoster.example",
            "gone.example",
            "silent.example",
        ] {
            assert!(!log.contains(name), "node {i} logged {name}:\n{log}");
        }
    }
    fed.shutdown().await;
}

#[tokio::test]
async fn the_periodic_recheck_hands_moved_content_on_and_leaves_the_rest() {
    let zone = ZoneServer::start(Zone::new().addr("moving.example", ip(DE_IP), 1).addr(
        "staying.example",
        ip(DE_IP),
        1,
    ))
    .await
    .unwrap();
    let mut dns = RawDns::resolvers(&[zone.addr().to_string()]);
    dns.recheck_interval_s = 1;
    let fed = Federation::builder(FR_DE_NL).dns(dns).start().await;
    let mut fr = fed.operator(0);
    let moving = submit(&mut fr, "http://moving.example/v", "")
        .await
        .report_id;
    let staying = submit(&mut fr, "http://staying.example/w", "")
        .await
        .report_id;
    for id in [&moving, &staying] {
        wait_case(&fr, id, 10, |c| c.status == "delivered").await;
    }
    zone.set("moving.example", vec![ZoneRecord::Addr(ip(NL_IP), 60)]);
    wait_case(&fr, &moving, 20, |c| {
        c.deliveries.iter().any(|d| {
            d.destination == "NL-EOKM"
                && d.state == "delivered"
                && d.handed_off_by.as_deref() == Some("DE-ECO")
        })
    })
    .await;
    let de_case = case(&mut fed.operator(1), &moving).await;
    assert_eq!(de_case.status, "moved");
    let moved = de_case
        .history
        .iter()
        .find(|h| h.status == "moved")
        .unwrap();
    assert!(
        moved
            .reason
            .contains("periodic DNS re-check [re-resolved by DNS: was hosted in DE")
            && moved.reason.contains("now in NL"),
        "{}",
        moved.reason
    );
    // The case whose content stayed is untouched.
    let still = case(&mut fed.operator(1), &staying).await;
    assert_eq!(still.status, "received");
    fed.shutdown().await;
}

#[tokio::test]
async fn an_urgent_reports_names_do_not_wait_behind_bulk_questions() {
    let zone = ZoneServer::start(test_zone()).await.unwrap();
    let mut dns = RawDns::resolvers(&[zone.addr().to_string()]);
    // One question in flight at a time, and a long deadline: a bulk report
    // naming the silent host holds the only place for seconds.
    dns.concurrency = 1;
    dns.deadline_ms = 3_000;
    let fed = Federation::builder(&[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])])
        .dns(dns)
        .start()
        .await;
    let fr = fed.operator(0);
    let bulk = {
        let mut fr = fr.clone();
        tokio::spawn(async move { submit(&mut fr, "http://silent.example/bulk", "").await })
    };
    let zone_ref = &zone;
    eventually(
        10,
        || async { zone_ref.asked() },
        |asked: &Vec<String>| asked.iter().any(|q| q.starts_with("silent.example")),
    )
    .await;
    let urgent = fr
        .clone()
        .submit_report(pb::SubmitReportRequest {
            urls: vec!["https://gallery.example.de/now".into()],
            category: "csam".into(),
            priority: pb::Priority::Urgent as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Routed by its DNS answer while the bulk report still waits for its.
    assert_eq!(urgent.route.unwrap().destinations, vec!["DE-ECO"]);
    assert!(
        !bulk.is_finished(),
        "the bulk report's questions are still in flight"
    );
    let held = bulk.await.unwrap();
    assert_eq!(held.route.unwrap().kind, "held");
    fed.shutdown().await;
}

/// A report signed by `fed`'s node 0 (FR-PDC) for DE-ECO carrying DNS
/// evidence, as protocol 2 signs it.
fn signed_with_dns(fed: &Federation) -> pb::Envelope {
    let evidence = pb::HostingEvidence {
        ip: DE_IP.into(),
        country: "DE".into(),
        ip_source: "dns".into(),
        dns: vec![pb::DnsResolution {
            host: "gallery.example.de".into(),
            resolver: "static DNS map".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let payload = pb::ReportPayload {
        report_id: uuid::Uuid::now_v7().to_string(),
        origin: "FR-PDC".into(),
        created_at_ms: alertrelay::node::Core::now_ms(),
        urls: vec!["https://gallery.example.de/x".into()],
        category: "csam".into(),
        hosting: Some(evidence.clone()),
        route: Some(pb::RouteDecision {
            kind: "peer".into(),
            destinations: vec!["DE-ECO".into()],
            reason: "hosted in DE, served by DE-ECO".into(),
            evidence: Some(evidence),
            ..Default::default()
        }),
        ..Default::default()
    };
    let key = fed.signing_key(0);
    let signer = alertrelay::identity::NodeId::new("FR-PDC").unwrap();
    pb::Envelope {
        report: Some(alertrelay::wire::sign(
            &key,
            &signer,
            alertrelay::crypto::signing::Purpose::Report,
            &payload,
        )),
        hops: vec![],
    }
}

#[tokio::test]
async fn a_node_of_the_previous_protocol_gets_host_named_reports_without_the_fields_it_does_not_know()
 {
    let zone = ZoneServer::start(test_zone()).await.unwrap();
    let mut fed = Federation::builder(FR_DE_NL)
        .dns(RawDns::resolvers(&[zone.addr().to_string()]))
        .create()
        .await;
    // DE-ECO behaves on the wire as the previous release (protocol 1).
    fed.set(1, "exchange.protocol", 1);
    fed.start_all().await;
    // As that release did, it refuses a payload with fields it does not
    // know (the DNS evidence) as not canonical.
    let err = fed
        .federation_as(0, 1)
        .forward(pb::ForwardRequest {
            envelopes: vec![signed_with_dns(&fed)],
            urgent: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("not canonical"), "{}", err.message());

    // FR-PDC sends it the previous protocol's copy, signed anew: the
    // report reaches it, with the reasoning in words but no DNS fields.
    let mut fr = fed.operator(0);
    let sent = submit(&mut fr, "https://gallery.example.de/album/7", "").await;
    assert_eq!(sent.route.as_ref().unwrap().destinations, vec!["DE-ECO"]);
    wait_case(&fr, &sent.report_id, 20, |c| c.status == "delivered").await;
    let at_de = case(&mut fed.operator(1), &sent.report_id).await;
    let route = at_de.route.unwrap();
    assert_eq!(route.country, "DE");
    assert!(route.dns.is_empty(), "{:?}", route.dns);
    assert!(
        route.steps.iter().any(|s| s
            == "host gallery.example.de: CNAME chain gallery.example.de -> \
                www.gallery.example.de -> edge.hoster.example"),
        "{:#?}",
        route.steps
    );
    // The origin keeps the full evidence, and DE-ECO's receipt (naming the
    // copy it got) was taken.
    let mine = case(&mut fr, &sent.report_id).await;
    assert_eq!(mine.route.unwrap().dns.len(), 1);
    // A retraction names the copy's digest for it, and is applied there.
    fr.retract_report(pb::RetractReportRequest {
        id: sent.report_id.clone(),
        reason: "sent by mistake".into(),
    })
    .await
    .unwrap();
    wait_case(&fed.operator(1), &sent.report_id, 20, |c| {
        c.status == "retracted"
    })
    .await;
    // A peer of this release still gets every field.
    zone.set("nl.example", vec![ZoneRecord::Addr(ip(NL_IP), 60)]);
    let sent = submit(&mut fr, "http://nl.example/n", "").await;
    wait_case(&fr, &sent.report_id, 20, |c| c.status == "delivered").await;
    let at_nl = case(&mut fed.operator(2), &sent.report_id).await;
    assert_eq!(at_nl.route.unwrap().dns.len(), 1);

    // `peers` and `status` say who speaks what.
    let cfg = fed.config_path(0);
    let (code, out, err) = cli(&["peers", "--config", arg(&cfg)]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("DE-ECO: protocol 1, the previous release"),
        "{out}"
    );
    assert!(
        out.contains("NL-EOKM: protocol 2, features: forward-stream, receipt-batch"),
        "{out}"
    );
    let (code, out, err) = cli(&["peers", "--config", arg(&cfg), "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let peers: serde_json::Value = serde_json::from_str(&out).unwrap();
    let de = peers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node_id"] == "DE-ECO")
        .unwrap();
    assert_eq!(de["protocol"], 1, "{de}");
    let (code, out, err) = cli(&["status", "--config", arg(&cfg)]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("  protocol 2"), "{out}");
    assert!(
        out.contains("peers at the previous protocol (1): DE-ECO"),
        "{out}"
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn content_hosted_in_two_countries_goes_as_one_report_per_country_linked_as_a_family() {
    let zone = ZoneServer::start(test_zone()).await.unwrap();
    let fed = federation(&zone).await;
    let (mut fr, mut de, mut le) = (fed.operator(0), fed.operator(1), fed.operator(3));
    // Round-robin across Germany and Switzerland (no hotline: the fallback).
    let sent = submit(&mut fr, "http://mirror.example/album", "").await;
    let route = sent.route.clone().unwrap();
    assert_eq!(route.destinations, vec!["DE-ECO"]);
    let family = route.family.clone();
    assert_eq!(family.len(), 36, "a family id: {route:?}");
    let mine = sent.case.clone().unwrap();
    assert_eq!(mine.family, family);
    assert_eq!(mine.family_reports.len(), 1, "{:?}", mine.family_reports);
    let (other, to) = mine.family_reports[0].split_once(" -> ").unwrap();
    assert_eq!(to, "LE");
    let other_id = other.strip_prefix("FR-PDC/").unwrap().to_owned();
    for id in [&sent.report_id, &other_id] {
        wait_case(&fr, id, 20, |c| c.status == "delivered").await;
    }
    // Each hotline got its own report, with its own evidence and the
    // family id in the signed route; DNS's answers in full.
    for (client, id, country, ip_here, ip_elsewhere) in [
        (&mut de, &sent.report_id, "DE", DE_IP, CH_IP),
        (&mut le, &other_id, "CH", CH_IP, DE_IP),
    ] {
        let got = case(client, id).await;
        assert_eq!(got.family.as_deref(), Some(family.as_str()));
        let view = got.route.unwrap();
        assert_eq!(view.family, family);
        assert_eq!(view.country, country);
        assert_eq!(view.countries, vec![country.to_owned()]);
        let located: Vec<&str> = view.addresses.iter().map(|a| a.ip.as_str()).collect();
        assert_eq!(located, vec![ip_here], "{country}");
        let answered: Vec<&str> = view.dns[0]
            .answers
            .iter()
            .map(|a| a.value.as_str())
            .collect();
        assert!(answered.contains(&ip_elsewhere), "{answered:?}");
        assert!(
            view.steps
                .iter()
                .any(|s| s.starts_with("case family: report ") && s.contains(country)),
            "{:#?}",
            view.steps
        );
    }
    // The origin's command line shows the family.
    let cfg = fed.config_path(0);
    let (code, out, err) = cli(&["cases", "show", &sent.report_id, "--config", arg(&cfg)]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("  family:   {family}")), "{out}");
    assert!(
        out.contains(&format!("  family report: FR-PDC/{other_id} -> LE")),
        "{out}"
    );
    let (code, out, err) = cli(&["cases", "list", "--config", arg(&cfg)]).await;
    assert_eq!(code, 0, "{out}{err}");
    let rows: Vec<&str> = out.lines().filter(|l| l.ends_with(&family)).collect();
    assert_eq!(rows.len(), 2, "{out}");
    // ... and lists a family alone; a malformed family id is refused.
    submit(&mut fr, &format!("http://{DE_IP}/alone"), "").await;
    let (code, out, err) = cli(&[
        "cases",
        "list",
        "--config",
        arg(&cfg),
        "--family",
        &family,
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let mut ids: Vec<&str> = listed.iter().map(|c| c["id"].as_str().unwrap()).collect();
    ids.sort();
    let mut want = vec![sent.report_id.as_str(), other_id.as_str()];
    want.sort();
    assert_eq!(ids, want);
    let err = fr
        .list_cases(pb::ListCasesRequest {
            family: "not a family!".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("family"), "{}", err.message());
    assert!(!err.message().contains("not a family"), "{}", err.message());
    fed.shutdown().await;
}

#[tokio::test]
async fn dns_over_tls_to_a_named_resolver_routes_by_its_answers_and_checks_its_name() {
    // A resolver of the hotline's own, with a certificate from its own CA
    // for "localhost", serving the test zone over TLS only.
    let files = tempfile::tempdir().unwrap();
    let ca = alertrelay::crypto::pki::FederationCa::generate("dot-test").unwrap();
    let leaf = ca
        .node_cert(
            &alertrelay::identity::NodeId::new("RESOLVER").unwrap(),
            &["localhost".to_owned()],
        )
        .unwrap();
    let (ca_pem, cert, key) = (
        files.path().join("ca.pem"),
        files.path().join("dot.pem"),
        files.path().join("dot.key"),
    );
    std::fs::write(&ca_pem, &ca.cert_pem).unwrap();
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let tls = alertrelay::crypto::tls::browser_server_config(&cert, &key).unwrap();
    let zone = ZoneServer::start_tls(test_zone(), tls).await.unwrap();
    let resolver = |name: &str| {
        let mut dns = RawDns::resolvers(&[format!("tls://{name}@{}", zone.addr())]);
        dns.tls_ca = Some(ca_pem.display().to_string());
        dns.deadline_ms = 1_000;
        dns
    };
    let fed = Federation::builder(&[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])])
        .dns(resolver("localhost"))
        .start()
        .await;
    let route = route_preview(
        fed.core(0),
        &["https://gallery.example.de/a".to_owned()],
        "",
        "csam",
        "",
    )
    .await
    .unwrap();
    assert_eq!(route.kind, RouteKind::Peer, "{}", route.reason);
    assert_eq!(route.destinations[0].as_str(), "DE-ECO");
    let d = &route.evidence.dns[0];
    assert!(
        d.resolver.contains("DNS over TLS, localhost"),
        "{}",
        d.resolver
    );
    assert!(zone.asked().iter().any(|q| q == "gallery.example.de A"));
    fed.shutdown().await;

    // A resolver whose certificate does not name it is not believed: no
    // answer is taken from it, the report is held.
    let asked = zone.asked().len();
    let fed = Federation::builder(&[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])])
        .dns(resolver("dns.elsewhere.example"))
        .start()
        .await;
    let route = route_preview(
        fed.core(0),
        &["https://gallery.example.de/b".to_owned()],
        "",
        "csam",
        "",
    )
    .await
    .unwrap();
    assert_eq!(route.kind, RouteKind::Held, "{}", route.reason);
    assert!(route.evidence.dns[0].failure.is_some());
    assert_eq!(zone.asked().len(), asked, "no question got through");
    fed.shutdown().await;
}

#[tokio::test]
async fn a_report_first_received_as_the_previous_protocols_copy_is_a_repeat_in_full_after_an_upgrade()
 {
    let fed = Federation::start(&[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])]).await;
    let full = signed_with_dns(&fed);
    let payload = <pb::ReportPayload as prost::Message>::decode(
        full.report.as_ref().unwrap().payload.as_slice(),
    )
    .unwrap();
    let copy = alertrelay::wire::compat::copy_for(1, &payload).expect("it has DNS fields");
    let copy = pb::Envelope {
        report: Some(alertrelay::wire::sign(
            &fed.signing_key(0),
            &alertrelay::identity::NodeId::new("FR-PDC").unwrap(),
            alertrelay::crypto::signing::Purpose::Report,
            &copy,
        )),
        hops: vec![],
    };
    // DE-ECO stored the copy (it spoke protocol 1 then); the origin, which
    // never got the receipt, sends the full report once it is upgraded.
    let mut results = Vec::new();
    for envelope in [copy, full] {
        let answer = fed
            .federation_as(0, 1)
            .forward(pb::ForwardRequest {
                envelopes: vec![envelope],
                urgent: false,
            })
            .await
            .unwrap()
            .into_inner();
        results.push(answer.results[0].clone());
    }
    assert!(results.iter().all(|r| r.code == 0), "{results:?}");
    assert_eq!(results[1].message, "already stored");
    assert_eq!(
        results[0].receipt, results[1].receipt,
        "the original receipt"
    );
    let at_de = fed.cases(1, "incoming").await.unwrap();
    assert_eq!(at_de.len(), 1);
    assert_eq!(
        fed.core(1)
            .metrics
            .equivocations
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    fed.shutdown().await;
}

/// Validation against a zone signed by BIND's own tools and served by
/// `named` (tests/common/bind.rs), with the zone's key-signing key as the
/// node's trust anchor: a signed answer is routed and its evidence says
/// `secure`; an answer changed after signing (a forged address) is
/// refused as bogus and the report held, never sent where the forgery
/// points; a zone proven unsigned is `insecure` and routed; a name that
/// does not exist is proven so by NSEC.
#[tokio::test]
async fn dnssec_answers_from_a_signed_zone_are_secure_and_a_forged_one_is_held() {
    let test = "dnssec_answers_from_a_signed_zone_are_secure_and_a_forged_one_is_held";
    if !crate::common::bind::available(test) {
        return;
    }
    let records = format!(
        "alias.example.de. 600 IN CNAME secure.example.de.\n\
         secure.example.de. 120 IN A {DE_IP}\n\
         forged.example.de. 120 IN A {DE_IP}\n"
    );
    // After signing, the forged name's address is moved to the Netherlands;
    // its signature still covers the German one.
    let plain = format!("www.plain.example. 120 IN A {DE_IP}");
    let zone = crate::common::bind::start(&records, &[("plain.example", &plain)], |signed| {
        signed
            .lines()
            .map(|line| {
                if line.starts_with("forged.example.de.") && line.contains(DE_IP) {
                    line.replace(DE_IP, NL_IP)
                } else {
                    line.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
    .await;
    let mut dns = RawDns::resolvers(&[zone.addr().to_string()]);
    dns.dnssec = true;
    dns.trust_anchor = Some(zone.trust_anchor().display().to_string());
    let fed = Federation::builder(FR_DE_NL).dns(dns).start().await;
    let (mut fr, de) = (fed.operator(0), fed.operator(1));

    // Signed: routed to Germany, and the receiver sees `secure` in the
    // signed route, for the CNAME and the address alike.
    let (_, view) = received_in_germany(&mut fr, &de, "https://alias.example.de/album/7").await;
    let d = &view.dns[0];
    assert_eq!(d.dnssec, "secure", "{d:?}");
    assert!(d.failure.is_empty(), "{d:?}");
    let kinds: Vec<&str> = d.answers.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(kinds, ["CNAME", "A"], "{d:?}");

    // Forged after signing: bogus, held here, not sent to the Netherlands.
    let core = fed.core(0);
    let preview = async |url: &str| {
        route_preview(core, &[url.to_owned()], "", "csam", "")
            .await
            .unwrap()
    };
    let r = preview("https://forged.example.de/x").await;
    assert_eq!(r.kind, RouteKind::Held, "{}", r.reason);
    assert!(r.destinations.is_empty());
    let d = &r.evidence.dns[0];
    assert_eq!(d.failure.map(|f| f.as_str()), Some("dnssec-bogus"), "{d:?}");
    assert!(d.addresses.is_empty(), "{d:?}");
    assert!(
        r.reason
            .contains("DNS gave no address for host 1 (dnssec-bogus)"),
        "{}",
        r.reason
    );
    assert!(!r.reason.contains("forged.example.de"), "{}", r.reason);
    assert!(core.metrics.dns_query_count("dnssec-bogus") >= 1);

    // A zone proven unsigned (delegated without a DS record): insecure,
    // and routed as without DNSSEC.
    let r = preview("https://www.plain.example/").await;
    assert_eq!(r.destinations[0].as_str(), "DE-ECO", "{}", r.reason);
    assert_eq!(
        r.evidence.dns[0].dnssec, "insecure",
        "{:?}",
        r.evidence.dns[0]
    );

    // A name the zone does not hold: NXDOMAIN, proven by NSEC.
    let r = preview("https://missing.example.de/").await;
    assert_eq!(r.kind, RouteKind::Held, "{}", r.reason);
    let d = &r.evidence.dns[0];
    assert_eq!(d.failure.map(|f| f.as_str()), Some("nxdomain"), "{d:?}");
    fed.shutdown().await;
}
