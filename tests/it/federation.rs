//! End-to-end behaviour of real nodes on loopback over mutual TLS.

use crate::common::*;
use alertrelay::crypto::signing::Purpose;
use alertrelay::pb;
use alertrelay::wire;
use prost::Message;
use tonic::Code;

const AB: &[(&str, &[&str])] = &[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])];
const ABC: &[(&str, &[&str])] = &[
    ("FR-PDC", &["FR"]),
    ("DE-ECO", &["DE"]),
    ("NL-EOKM", &["NL"]),
];

async fn audit_kinds(db: &std::path::Path) -> Vec<String> {
    let store = alertrelay::store::Store::open(db).await.unwrap();
    let rows = store.audit_entries(0, 100_000).await.unwrap();
    store.close().await;
    rows.into_iter().map(|r| r.kind).collect()
}

fn report_to(origin: &str, id: &str, destinations: &[&str]) -> pb::ReportPayload {
    pb::ReportPayload {
        report_id: id.into(),
        origin: origin.into(),
        created_at_ms: alertrelay::node::Core::now_ms(),
        urls: vec!["http://85.214.132.117/x".into()],
        category: "csam".into(),
        route: Some(pb::RouteDecision {
            kind: "peer".into(),
            destinations: destinations.iter().map(|d| (*d).to_owned()).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn decode_receipt(b64: &str) -> pb::Signed {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    pb::Signed::decode(bytes.as_slice()).unwrap()
}

#[tokio::test]
async fn a_report_is_relayed_to_the_hosting_country_and_the_signed_receipt_comes_back() {
    let fed = Federation::start(AB).await;
    let (mut fr, mut de) = (fed.operator(0), fed.operator(1));
    let url = "http://85.214.132.117/some/path?x=1";
    let resp = submit(&mut fr, url, "").await;
    let route = resp.route.unwrap();
    assert_eq!(route.kind, "peer");
    assert_eq!(route.destinations, vec!["DE-ECO"]);
    let ev = route.evidence.unwrap();
    assert_eq!((ev.ip.as_str(), ev.country.as_str()), (DE_IP, "DE"));
    assert_eq!(ev.dataset_date, "2026-06-25");

    let id = resp.report_id.clone();
    let at_fr = wait_case(&fr, &id, 10, |c| c.status == "delivered").await;
    assert_eq!(at_fr.direction, "outgoing");
    let delivery = &at_fr.deliveries[0];
    assert_eq!(
        (delivery.destination.as_str(), delivery.state.as_str()),
        ("DE-ECO", "delivered")
    );

    // The receipt A stored is signed by B's key, for exactly this report.
    let receipt = decode_receipt(delivery.receipt.as_deref().expect("receipt stored"));
    assert_eq!(receipt.signer, "DE-ECO");
    let payload_digest = {
        let db = alertrelay::store::Store::open(&fed.database(0))
            .await
            .unwrap();
        let row = db.reports_by_id(None, &id).await.unwrap().remove(0);
        db.close().await;
        row.payload_digest
    };
    let r = wire::open_receipt(
        &receipt,
        &fed.id(1),
        &id,
        &payload_digest,
        &fed.configs[0].directory,
        alertrelay::node::Core::now_ms(),
    )
    .expect("receipt verifies with DE-ECO's directory key");
    assert_eq!(r.outcome, pb::ReceiptOutcome::Stored as i32);

    // B holds the case with the URL byte-for-byte.
    let at_de = case(&mut de, &id).await;
    assert_eq!(at_de.direction, "incoming");
    assert_eq!(at_de.origin, "FR-PDC");
    assert_eq!(at_de.status, "received");
    assert_eq!(at_de.urls, vec![url]);
    assert_eq!(at_de.hosting_country.as_deref(), Some("DE"));
    fed.shutdown().await;
}

#[tokio::test]
async fn reports_queued_while_the_peer_is_down_are_delivered_exactly_once_after_it_restarts() {
    let mut fed = Federation::start(AB).await;
    fed.stop(1).await;
    let mut fr = fed.operator(0);
    let mut ids = Vec::new();
    for i in 0..12 {
        let r = submit(&mut fr, &format!("http://{DE_IP}/item/{i}"), "").await;
        ids.push(r.report_id);
    }
    // While B is down the reports wait on disk, with failed attempts counted.
    let first = ids[0].clone();
    let waiting = wait_case(&fr, &first, 10, |c| c.deliveries[0].attempts >= 2).await;
    assert_eq!(waiting.status, "queued");
    assert!(!waiting.deliveries[0].last_error.is_empty());

    fed.restart(1).await;
    for id in &ids {
        wait_case(&fr, id, 15, |c| c.status == "delivered").await;
    }
    let mut de = fed.operator(1);
    let incoming = cases(&mut de, "incoming").await;
    let mut got: Vec<_> = incoming.iter().map(|c| c.id.clone()).collect();
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want, "each report exactly once at the receiver");

    // Restarting A after delivery does not send anything again.
    fed.stop(0).await;
    fed.restart(0).await;
    let mut fr = fed.operator(0);
    let again = submit(&mut fr, &format!("http://{DE_IP}/after-restart"), "").await;
    let id = again.report_id.clone();
    wait_case(&fr, &id, 10, |c| c.status == "delivered").await;
    assert_eq!(cases(&mut de, "incoming").await.len(), ids.len() + 1);
    fed.stop(1).await;
    let kinds = audit_kinds(&fed.database(1)).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "report.repeat").count(),
        0,
        "nothing was sent twice: {kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "report.received").count(),
        ids.len() + 1
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn an_exact_replay_gets_the_original_receipt_and_no_second_case() {
    let fed = Federation::start(AB).await;
    let key = fed.signing_key(0);
    let payload = report_to("FR-PDC", "replayed-1", &["DE-ECO"]);
    let env = pb::Envelope {
        report: Some(wire::sign(&key, &fed.id(0), Purpose::Report, &payload)),
        hops: vec![],
    };
    let mut as_fr = fed.federation_as(0, 1);
    let send = |env: pb::Envelope| pb::ForwardRequest {
        envelopes: vec![env],
        urgent: false,
    };
    let first = as_fr.forward(send(env.clone())).await.unwrap().into_inner();
    let second = as_fr.forward(send(env.clone())).await.unwrap().into_inner();
    assert_eq!(first.results[0].code, 0);
    assert_eq!(second.results[0].code, 0);
    assert_eq!(
        first.results[0].receipt, second.results[0].receipt,
        "the repeat is answered with the original signed receipt"
    );
    let mut de = fed.operator(1);
    assert_eq!(cases(&mut de, "incoming").await.len(), 1);
    fed.shutdown().await;
}

/// Same origin, same report id, different content: the receiver refuses
/// it (ALREADY_EXISTS, a signed refusal saying `equivocation`), keeps the
/// first content, and raises the alert docs/contract.md promises: the
/// counter `alertrelay_equivocations_total` and a WARN line containing
/// `EQUIVOCATION` in its log. DE-ECO runs as a process of its own, so its
/// log and metrics are its alone.
#[tokio::test]
async fn a_report_id_repeated_with_other_content_is_refused_and_alerted_as_equivocation() {
    let fed = Federation::builder(AB).processes().start().await;
    let key = fed.signing_key(0);
    let send = |payload: &pb::ReportPayload| pb::ForwardRequest {
        envelopes: vec![pb::Envelope {
            report: Some(wire::sign(&key, &fed.id(0), Purpose::Report, payload)),
            hops: vec![],
        }],
        urgent: false,
    };
    let mut as_fr = fed.federation_as(0, 1);
    let payload = report_to("FR-PDC", "equivocated-1", &["DE-ECO"]);
    let first = as_fr.forward(send(&payload)).await.unwrap().into_inner();
    assert_eq!(first.results[0].code, 0, "{first:?}");
    let page = fed.metrics(1).await;
    assert!(page.contains("alertrelay_equivocations_total 0"), "{page}");
    assert!(!fed.log(1).contains("EQUIVOCATION"), "{}", fed.log(1));

    let mut changed = payload.clone();
    changed.urls = vec!["http://85.214.132.117/other".into()];
    let second = as_fr.forward(send(&changed)).await.unwrap().into_inner();
    assert_eq!(
        second.results[0].code,
        Code::AlreadyExists as i32,
        "{second:?}"
    );
    let receipt = second.results[0].receipt.as_ref().unwrap();
    let (_, r): (_, pb::Receipt) = wire::open(
        receipt,
        Purpose::Receipt,
        "receipt",
        &fed.configs[0].directory,
        alertrelay::node::Core::now_ms(),
    )
    .unwrap();
    assert_eq!(r.outcome, pb::ReceiptOutcome::Refused as i32);
    assert_eq!(r.reason_code, "equivocation");
    let kept = cases(&mut fed.operator(1), "incoming").await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].urls, vec!["http://85.214.132.117/x"]);

    // The alert: counted once, and one warning naming the report.
    let page = fed.metrics(1).await;
    assert!(page.contains("alertrelay_equivocations_total 1"), "{page}");
    let fed_ref = &fed;
    let log = eventually(
        5,
        || async { fed_ref.log(1) },
        |log| log.contains("EQUIVOCATION"),
    )
    .await;
    let alerts: Vec<&str> = log.lines().filter(|l| l.contains("EQUIVOCATION")).collect();
    assert_eq!(alerts.len(), 1, "{log}");
    assert!(alerts[0].contains("WARN"), "{}", alerts[0]);
    assert!(alerts[0].contains("equivocated-1"), "{}", alerts[0]);
    // An exact repeat of the first content is no equivocation.
    let again = as_fr.forward(send(&payload)).await.unwrap().into_inner();
    assert_eq!(again.results[0].code, 0, "{again:?}");
    assert!(
        fed.metrics(1)
            .await
            .contains("alertrelay_equivocations_total 1")
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn a_valid_certificate_whose_payload_claims_another_node_is_permission_denied() {
    let fed = Federation::start(ABC).await;
    // NL-EOKM replays a report genuinely signed by FR-PDC, over its own
    // (valid) certificate.
    let payload = report_to("FR-PDC", "claimed", &["DE-ECO"]);
    let env = pb::Envelope {
        report: Some(wire::sign(
            &fed.signing_key(0),
            &fed.id(0),
            Purpose::Report,
            &payload,
        )),
        hops: vec![],
    };
    let mut as_nl = fed.federation_as(2, 1);
    let err = as_nl
        .forward(pb::ForwardRequest {
            envelopes: vec![env],
            urgent: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // NL signing with its own key but naming FR as signer: a forgery.
    let mut forged = wire::sign(&fed.signing_key(2), &fed.id(2), Purpose::Report, &payload);
    forged.signer = "FR-PDC".into();
    forged.key_id = fed.signing_key(0).key_id().into();
    let err = as_nl
        .forward(pb::ForwardRequest {
            envelopes: vec![pb::Envelope {
                report: Some(forged),
                hops: vec![],
            }],
            urgent: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // Nothing was stored; both refusals are in the audit log.
    let mut de = fed.operator(1);
    assert!(cases(&mut de, "").await.is_empty());
    let db = alertrelay::store::Store::open(&fed.database(1))
        .await
        .unwrap();
    let refusals: Vec<_> = db
        .audit_entries(0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "input.refused")
        .collect();
    db.close().await;
    assert_eq!(refusals.len(), 2);
    assert!(
        refusals[0].detail.contains("identity-mismatch"),
        "{}",
        refusals[0].detail
    );
    assert!(
        refusals[1].detail.contains("bad-signature"),
        "{}",
        refusals[1].detail
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn node_and_operator_certificates_are_confined_to_their_service() {
    let fed = Federation::start(AB).await;
    let mut node_as_operator = fed.operator_with_node_cert(0, 1);
    let err = node_as_operator
        .list_cases(pb::ListCasesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // FR's operator certificate calling DE's Federation service.
    let files = fed.configs[0].operator.as_ref().unwrap().files();
    let ch = alertrelay::federation::channel::channel(
        &fed.endpoint(1),
        Some(fed.id(1)),
        "test-federation",
        alertrelay::crypto::tls::client_config(&files).unwrap(),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    let err = pb::federation_client::FederationClient::new(ch)
        .node_info(pb::NodeInfoRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // FR's operator may not operate DE's node either.
    let ch = alertrelay::federation::channel::channel(
        &fed.endpoint(1),
        Some(fed.id(1)),
        "test-federation",
        alertrelay::crypto::tls::client_config(&files).unwrap(),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    let err = pb::operator_client::OperatorClient::new(ch)
        .list_cases(pb::ListCasesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Each refusal is audited with the caller's identity.
    let mut fed = fed;
    fed.stop(1).await;
    let store = alertrelay::store::Store::open(&fed.database(1))
        .await
        .unwrap();
    let refusals: Vec<_> = store
        .audit_entries(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "input.refused")
        .map(|e| e.actor)
        .collect();
    store.close().await;
    assert_eq!(
        refusals,
        vec![
            "node:FR-PDC",
            "operator:FR-PDC/analyst",
            "operator:FR-PDC/analyst"
        ]
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn a_client_from_an_untrusted_ca_fails_the_handshake_and_the_node_keeps_serving() {
    let fed = Federation::start(AB).await;
    let dir = tempfile::tempdir().unwrap();
    let rogue = alertrelay::crypto::pki::FederationCa::generate("test-federation").unwrap();
    let op = rogue.operator_cert(&fed.id(0), "mallory").unwrap();
    let (cert, key) = (dir.path().join("op.pem"), dir.path().join("op.key"));
    std::fs::write(&cert, &op.cert_pem).unwrap();
    std::fs::write(&key, &op.key_pem).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The client trusts the real CA (so the server verifies), but presents
    // a certificate from the rogue CA.
    let tls = alertrelay::crypto::tls::client_config(&alertrelay::crypto::tls::TlsFiles {
        ca: &fed.configs[0].tls.ca,
        cert: &cert,
        key: &key,
        crls: &[],
    })
    .unwrap();
    let ch = alertrelay::federation::channel::channel(
        &fed.endpoint(0),
        Some(fed.id(0)),
        "test-federation",
        tls,
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    let err = pb::operator_client::OperatorClient::new(ch)
        .list_cases(pb::ListCasesRequest::default())
        .await
        .unwrap_err();
    let shown = format!("{err:?}");
    assert!(
        shown.contains("received fatal alert"),
        "refused by the server at the TLS layer: {shown}"
    );

    // No client certificate at all: the server aborts the handshake too.
    let mut roots = rustls::RootCertStore::empty();
    for c in alertrelay::crypto::tls::load_certs(&fed.configs[0].tls.ca).unwrap() {
        roots.add(c).unwrap();
    }
    let anonymous = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(fed.configs[0].listen)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(anonymous))
        .connect(name, tcp)
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let mut buf = [0u8; 64];
    let read = tls.read(&mut buf).await;
    assert!(
        format!("{read:?}").contains("CertificateRequired"),
        "the server demands a client certificate: {read:?}"
    );

    let mut fr = fed.operator(0);
    assert!(cases(&mut fr, "").await.is_empty(), "the node still serves");
    fed.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_a_precise_error_and_stores_nothing() {
    let fed = Federation::start(AB).await;
    let mut fr = fed.operator(0);
    for (urls, category, want) in [
        (vec!["gopher://example.com/"], "csam", "url-scheme"),
        (vec!["http://a.example/\r\nX: y"], "csam", "crlf"),
        (
            vec!["http://a.example/\u{202e}gpj"],
            "csam",
            "bidi-override",
        ),
        (vec!["http://a.example/"], "weapons", "bad-category"),
        (vec![], "csam", "no-url"),
    ] {
        let err = fr
            .submit_report(pb::SubmitReportRequest {
                urls: urls.into_iter().map(String::from).collect(),
                category: category.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(want), "{want}: {}", err.message());
    }
    assert!(cases(&mut fr, "").await.is_empty());
    let mut fed = fed;
    fed.stop(0).await;
    let kinds = audit_kinds(&fed.database(0)).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "input.refused").count(),
        5,
        "each refusal has its audit entry: {kinds:?}"
    );
    assert!(!kinds.iter().any(|k| k == "report.submitted"));
    fed.shutdown().await;
}

#[tokio::test]
async fn status_changes_at_the_receiver_flow_back_signed_and_invalid_ones_are_refused() {
    let fed = Federation::start(AB).await;
    let (mut fr, mut de) = (fed.operator(0), fed.operator(1));
    let id = submit(&mut fr, &format!("http://{DE_IP}/x"), "")
        .await
        .report_id;
    wait_case(&fr, &id, 10, |c| c.status == "delivered").await;

    let update = |status: &str| pb::UpdateCaseRequest {
        id: id.clone(),
        status: status.into(),
        reason: "test".into(),
        agency: String::new(),
        reference: String::new(),
        referred_at_ms: 0,
        propose: false,
        reject_proposal: false,
    };
    let err = de.update_case(update("removed")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("in-review"), "{}", err.message());
    de.update_case(update("in-review")).await.unwrap();
    de.update_case(update("illegal-baseline")).await.unwrap();
    // The origin cannot change a case worked by the receiver.
    let err = fr.update_case(update("removed")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    let seen = wait_case(&fr, &id, 10, |c| c.status == "illegal-baseline").await;
    let signed: Vec<_> = seen
        .history
        .iter()
        .map(|h| (h.status.as_str(), h.signer.as_str()))
        .collect();
    assert_eq!(
        signed,
        vec![("in-review", "DE-ECO"), ("illegal-baseline", "DE-ECO")]
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn hosted_at_home_stays_local_and_no_hotline_goes_to_the_fallback_or_stays() {
    let fed = Federation::builder(&[
        ("FR-PDC", &["FR"]),
        ("DE-ECO", &["DE"]),
        ("LE-FALLBACK", &[]),
    ])
    .fallback("LE-FALLBACK")
    .start()
    .await;
    let mut fr = fed.operator(0);
    let home = submit(&mut fr, &format!("http://{FR_IP}/x"), "").await;
    assert_eq!(home.route.as_ref().unwrap().kind, "local");
    let c = case(&mut fr, &home.report_id).await;
    assert_eq!(
        (c.direction.as_str(), c.status.as_str()),
        ("local", "received")
    );

    let abroad = submit(&mut fr, "https://files.example.ch/x", CH_IP).await;
    let route = abroad.route.unwrap();
    assert_eq!(
        (route.kind.as_str(), route.destinations.clone()),
        ("fallback", vec!["LE-FALLBACK".to_owned()])
    );
    assert_eq!(route.evidence.unwrap().ip_source, "analyst");
    let id = abroad.report_id;
    wait_case(&fr, &id, 10, |c| c.status == "delivered").await;
    fed.shutdown().await;

    // Without a fallback the report stays here as no-hotline.
    let fed = Federation::start(AB).await;
    let mut fr = fed.operator(0);
    let r = submit(&mut fr, "https://files.example.ch/x", CH_IP).await;
    assert_eq!(r.route.unwrap().kind, "no-hotline");
    assert_eq!(case(&mut fr, &r.report_id).await.status, "no-hotline");
    fed.shutdown().await;
}

#[tokio::test]
async fn health_and_reflection_are_served_so_grpcurl_works() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let fed = Federation::start(AB).await;
    let files = fed.configs[0].operator.as_ref().unwrap().files();
    let channel = alertrelay::federation::channel::channel(
        &fed.endpoint(0),
        Some(fed.id(0)),
        "test-federation",
        alertrelay::crypto::tls::client_config(&files).unwrap(),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    // SERVING once the node has seen its peer (readiness: see
    // tests/it/operability.rs).
    eventually(
        10,
        || {
            let mut client = HealthClient::new(channel.clone());
            async move {
                client
                    .check(HealthCheckRequest {
                        service: "alertrelay.v1.Operator".into(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .status
            }
        },
        |s| *s == ServingStatus::Serving as i32,
    )
    .await;

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let reply = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply {reply:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "alertrelay.v1.Federation",
        "alertrelay.v1.Operator",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    fed.shutdown().await;
}

#[tokio::test]
async fn configuration_changes_seen_at_start_up_are_audited() {
    let mut fed = Federation::start(AB).await;
    let path = fed.config_path(0);
    let text = std::fs::read_to_string(&path).unwrap();
    // A comment, or a listen address of its own (what each replica of a
    // node sets), changes nothing that matters: no config.changed.
    fed.stop(0).await;
    std::fs::write(&path, format!("{text}\n# edited by an operator\n")).unwrap();
    fed.restart(0).await;
    // A setting that matters does.
    fed.stop(0).await;
    std::fs::write(
        &path,
        format!("{text}\n[retention]\nclosed_cases_days = 3650\n"),
    )
    .unwrap();
    fed.restart(0).await;
    fed.stop(0).await;
    let db = alertrelay::store::Store::open(&fed.database(0))
        .await
        .unwrap();
    let entries = db.audit_entries(0, 100).await.unwrap();
    db.close().await;
    let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "node.started").count(),
        3,
        "{kinds:?}"
    );
    let changed: Vec<_> = entries
        .iter()
        .filter(|e| e.kind.ends_with(".changed"))
        .collect();
    assert_eq!(changed.len(), 1, "{kinds:?}");
    assert_eq!(changed[0].kind, "config.changed");
    assert!(
        changed[0].detail.contains("\"before\""),
        "{}",
        changed[0].detail
    );
    fed.shutdown().await;
}

/// Sends one envelope signed by node `signer` over node `sender`'s
/// connection to node `to`.
async fn forward_one(
    fed: &Federation,
    signer: usize,
    sender: usize,
    to: usize,
    payload: &pb::ReportPayload,
) -> Result<pb::ForwardResult, tonic::Status> {
    let env = pb::Envelope {
        report: Some(wire::sign(
            &fed.signing_key(signer),
            &fed.id(signer),
            Purpose::Report,
            payload,
        )),
        hops: vec![],
    };
    let mut client = fed.federation_as(sender, to);
    client
        .forward(pb::ForwardRequest {
            envelopes: vec![env],
            urgent: false,
        })
        .await
        .map(|r| r.into_inner().results.remove(0))
}

fn refusal_reason(result: &pb::ForwardResult, fed: &Federation) -> String {
    let (_, r): (_, pb::Receipt) = wire::open(
        result.receipt.as_ref().unwrap(),
        Purpose::Receipt,
        "receipt",
        &fed.configs[0].directory,
        alertrelay::node::Core::now_ms(),
    )
    .unwrap();
    assert_eq!(r.outcome, pb::ReceiptOutcome::Refused as i32);
    r.reason_code
}

#[tokio::test]
async fn misrouted_looping_and_malformed_reports_are_refused_and_not_stored() {
    let fed = Federation::start(ABC).await;
    // FR's signed route names NL; DE is not a destination.
    let r = forward_one(&fed, 0, 0, 1, &report_to("FR-PDC", "for-nl", &["NL-EOKM"]))
        .await
        .unwrap();
    assert_eq!(r.code, Code::FailedPrecondition as i32);
    assert_eq!(refusal_reason(&r, &fed), "not-a-destination");

    // DE's own report coming back to DE is a loop, even though DE holds it.
    let mut de = fed.operator(1);
    let own = submit(&mut de, &format!("http://{FR_IP}/x"), "")
        .await
        .report_id;
    let mut back = report_to("DE-ECO", &own, &["DE-ECO"]);
    back.created_at_ms = alertrelay::node::Core::now_ms();
    let r = forward_one(&fed, 1, 1, 1, &back).await.unwrap();
    assert_eq!(r.code, Code::FailedPrecondition as i32);
    assert_eq!(refusal_reason(&r, &fed), "loop");

    // Far in the future, or too old: per envelope FAILED_PRECONDITION,
    // with a signed refusal receipt that says which.
    let mut future = report_to("FR-PDC", "future", &["DE-ECO"]);
    future.created_at_ms += 3_600_000;
    let r = forward_one(&fed, 0, 0, 1, &future).await.unwrap();
    assert_eq!(r.code, Code::FailedPrecondition as i32, "{r:?}");
    assert_eq!(refusal_reason(&r, &fed), "future");
    let mut old = report_to("FR-PDC", "old", &["DE-ECO"]);
    old.created_at_ms -= 90 * 86_400_000;
    let r = forward_one(&fed, 0, 0, 1, &old).await.unwrap();
    assert_eq!(r.code, Code::FailedPrecondition as i32, "{r:?}");
    assert_eq!(refusal_reason(&r, &fed), "stale");

    // Fields a peer controls are held to the analyst's rules.
    for (id, notes) in [("x\r\nFAKE LOG LINE", ""), ("ok-id", "bidi \u{202e} notes")] {
        let mut bad = report_to("FR-PDC", id, &["DE-ECO"]);
        bad.notes = notes.into();
        let err = forward_one(&fed, 0, 0, 1, &bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
    assert!(cases(&mut de, "incoming").await.is_empty());
    fed.shutdown().await;
}

#[tokio::test]
async fn a_report_the_peer_calls_malformed_is_marked_refused_without_blocking_the_queue() {
    let mut fed = Federation::start(AB).await;
    fed.stop(0).await;
    // A queued envelope DE will refuse as malformed (as if written by an
    // older or buggy version of FR), ahead of a good one.
    let mut bad = report_to("FR-PDC", "bad-scheme", &["DE-ECO"]);
    bad.urls = vec!["javascript://85.214.132.117/x".into()];
    let signed = wire::sign(&fed.signing_key(0), &fed.id(0), Purpose::Report, &bad);
    let digest = wire::digest(&signed.payload);
    let envelope = pb::Envelope {
        report: Some(signed.clone()),
        hops: vec![],
    }
    .encode_to_vec();
    let store = alertrelay::store::Store::open(&fed.database(0))
        .await
        .unwrap();
    let mut tx = store.begin().await.unwrap();
    let now = alertrelay::node::Core::now_ms();
    let seq = tx
        .insert_report(&alertrelay::store::NewReport {
            report_id: &bad.report_id,
            origin: "FR-PDC",
            direction: "outgoing",
            category: "csam",
            priority: "bulk",
            status: "queued",
            hosting_country: Some("DE"),
            route: "{}",
            payload: &signed.payload,
            payload_digest: &digest,
            envelope: &envelope,
            received_from: None,
            created_at_ms: now,
            now_ms: now,
            relay: false,
            receipt: None,
            joined_to: None,
            family: None,
        })
        .await
        .unwrap();
    tx.insert_delivery(seq, "DE-ECO", None, None).await.unwrap();
    enqueue_kind(
        &mut tx,
        alertrelay::store::OUTBOX_SIGNED,
        "DE-ECO",
        "report",
        false,
        seq,
        &envelope,
        now,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    store.close().await;
    fed.restart(0).await;

    let mut fr = fed.operator(0);
    let good = submit(&mut fr, &format!("http://{DE_IP}/good"), "")
        .await
        .report_id;
    wait_case(&fr, &good, 10, |c| c.status == "delivered").await;
    let refused = wait_case(&fr, "bad-scheme", 10, |c| c.status == "refused").await;
    assert!(
        refused.deliveries[0].reason.contains("urls[0]"),
        "{:?}",
        refused.deliveries[0]
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn batches_larger_than_a_message_are_split_and_all_delivered() {
    let mut fed = Federation::start(AB).await;
    fed.stop(1).await;
    let mut fr = fed.operator(0);
    let mut ids = Vec::new();
    // 12 reports of 100 URLs of ~8 KiB: ~10 MiB, more than one call carries.
    for i in 0..12 {
        let urls: Vec<String> = (0..100)
            .map(|j| format!("http://{DE_IP}/{i}/{j}/{}", "x".repeat(8_000)))
            .collect();
        let r = fr
            .submit_report(pb::SubmitReportRequest {
                urls,
                category: "csam".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        ids.push(r.report_id);
    }
    fed.restart(1).await;
    for id in &ids {
        wait_case(&fr, id, 30, |c| c.status == "delivered").await;
    }
    fed.shutdown().await;
}

/// Queues one outbox row of `kind` as the node does (`Tx::enqueue`).
#[allow(clippy::too_many_arguments, dead_code)]
async fn enqueue_kind(
    tx: &mut alertrelay::store::Tx,
    returned: i64,
    peer: &str,
    kind: &str,
    urgent: bool,
    report_seq: i64,
    body: &[u8],
    now: i64,
) -> Result<(), alertrelay::store::StoreError> {
    let row = alertrelay::store::NewOutbox {
        peer,
        kind,
        urgent,
        report_seq,
        body,
        returned,
    };
    tx.enqueue(row, now).await
}
