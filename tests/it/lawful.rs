//! Lawful exchange: the jurisdiction policy (a forbidden destination never
//! receives the report; the alternative does, or it is held, with the
//! reason), data minimisation (what a peer actually stores), retention
//! (purged data is gone from the database file while `audit verify` still
//! passes), audited reads (`audit export --who`), law-enforcement
//! referrals and the signed, offline-verifiable export.

use std::path::Path;

use crate::common::*;
use alertrelay::directory::RawDirectory;
use alertrelay::node::cases::CaseView;
use alertrelay::pb;
use prost::Message;
use sqlx::Connection;

/// A Dutch address in the shipped data.
const NL_IP: &str = "194.109.6.66";

/// Every byte of a node's database: the main file and its WAL.
fn db_bytes(db: &Path) -> Vec<u8> {
    let mut all = std::fs::read(db).unwrap();
    let wal = db.with_extension("db-wal");
    if let Ok(w) = std::fs::read(wal) {
        all.extend(w);
    }
    all
}

fn holds(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Sets `national_categories` in every copy of the directory and appends
/// `extra` to nodes' `node.toml`.
fn prepare(dir: &Path, national: &[(&str, &[&str])], extra: &[(&str, &str)]) {
    let text = std::fs::read_to_string(dir.join("directory.toml")).unwrap();
    let mut raw: RawDirectory = toml::from_str(&text).unwrap();
    for n in &mut raw.nodes {
        if let Some((_, cats)) = national.iter().find(|(id, _)| *id == n.id) {
            n.national_categories = cats.iter().map(|c| (*c).to_owned()).collect();
        }
    }
    let text = toml::to_string_pretty(&raw).unwrap();
    std::fs::write(dir.join("directory.toml"), &text).unwrap();
    for n in &raw.nodes {
        std::fs::write(dir.join(&n.id).join("directory.toml"), &text).unwrap();
    }
    for (id, toml_text) in extra {
        let path = dir.join(id).join("node.toml");
        let mut cfg = std::fs::read_to_string(&path).unwrap();
        cfg.push('\n');
        cfg.push_str(toml_text);
        std::fs::write(&path, cfg).unwrap();
    }
}

async fn submit_as(
    client: &mut pb::operator_client::OperatorClient<tonic::transport::Channel>,
    url: &str,
    category: &str,
    classification: &str,
    notes: &str,
) -> pb::SubmitReportResponse {
    client
        .submit_report(pb::SubmitReportRequest {
            urls: vec![url.to_owned()],
            category: category.into(),
            classification: classification.into(),
            notes: notes.into(),
            priority: pb::Priority::Bulk as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

fn delivered(c: &CaseView) -> bool {
    !c.deliveries.is_empty() && c.deliveries.iter().all(|d| d.state == "delivered")
}

async fn update(
    client: &mut pb::operator_client::OperatorClient<tonic::transport::Channel>,
    id: &str,
    status: &str,
) -> CaseView {
    alertrelay::api::convert::case_from_pb(
        client
            .update_case(pb::UpdateCaseRequest {
                id: id.into(),
                status: status.into(),
                reason: format!("now {status}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner(),
    )
}

const FOUR: &[(&str, &[&str])] = &[
    ("FR-PDC", &["FR"]),
    ("DE-ECO", &["DE"]),
    ("NL-HOT", &["NL"]),
    ("LE-CHANNEL", &[]),
];

#[tokio::test]
async fn a_policy_forbidden_destination_never_receives_the_report_and_the_alternative_does() {
    let fed = Federation::builder(FOUR).quiet_audit().prepare(|dir| {
        prepare(
            dir,
            // NL's law covers nationally-illegal CSAM too; DE's and FR's
            // entries take baseline material only.
            // (the law-enforcement channel takes everything).
            &[
                ("NL-HOT", &["csam"]),
                ("LE-CHANNEL", &["csam", "child-exploitation", "grooming"]),
            ],
            &[(
                "FR-PDC",
                "[jurisdiction]\nalternative = \"LE-CHANNEL\"\n\n\
                 [[jurisdiction.rule]]\npeer = \"NL-HOT\"\ncategories = [\"csam\", \"child-exploitation\"]\n",
            )],
        )
    }).start()
    .await;
    let mut fr = fed.operator(0);

    // National CSAM hosted in DE: DE-ECO's law does not cover it.
    let to_de = submit_as(
        &mut fr,
        &format!("http://{DE_IP}/national-only"),
        "csam",
        "national",
        "",
    )
    .await;
    let route = to_de.route.clone().unwrap();
    assert_eq!(route.destinations, vec!["LE-CHANNEL"], "{route:#?}");
    assert!(
        route
            .steps
            .iter()
            .any(|s| s.contains("may not go to DE-ECO") && s.contains("national_categories")),
        "{:#?}",
        route.steps
    );
    assert!(
        route.reason.contains("jurisdiction policy"),
        "{}",
        route.reason
    );
    // Baseline CSAM hosted in DE goes to DE-ECO as always.
    let baseline = submit_as(
        &mut fr,
        &format!("http://{DE_IP}/baseline"),
        "csam",
        "baseline",
        "",
    )
    .await;
    assert_eq!(baseline.route.unwrap().destinations, vec!["DE-ECO"]);
    // National CSAM hosted in NL: NL's law covers it.
    let to_nl = submit_as(
        &mut fr,
        &format!("http://{NL_IP}/national-nl"),
        "csam",
        "national",
        "",
    )
    .await;
    assert_eq!(to_nl.route.unwrap().destinations, vec!["NL-HOT"]);
    // Grooming hosted in NL: FR's own rule for NL-HOT allows csam and
    // child-exploitation only.
    let grooming = submit_as(
        &mut fr,
        &format!("http://{NL_IP}/grooming"),
        "grooming",
        "baseline",
        "",
    )
    .await;
    let g = grooming.route.unwrap();
    assert_eq!(g.destinations, vec!["LE-CHANNEL"]);
    assert!(
        g.steps
            .iter()
            .any(|s| s.contains("jurisdiction rule peer = NL-HOT")),
        "{:#?}",
        g.steps
    );

    for id in [
        &to_de.report_id,
        &baseline.report_id,
        &to_nl.report_id,
        &grooming.report_id,
    ] {
        wait_case(&fr, id, 20, delivered).await;
    }
    // The alternative has both withheld reports; the forbidden
    // destination's database has never seen either.
    let mut le = fed.operator(3);
    let le_cases = cases(&mut le, "incoming").await;
    for id in [&to_de.report_id, &grooming.report_id] {
        assert!(le_cases.iter().any(|c| &c.id == id), "LE lacks {id}");
    }
    let de_db = db_bytes(&fed.database(1));
    assert!(
        holds(&de_db, &baseline.report_id),
        "DE got the baseline one"
    );
    assert!(
        !holds(&de_db, &to_de.report_id),
        "DE-ECO's database holds the national report"
    );
    let nl_db = db_bytes(&fed.database(2));
    assert!(holds(&nl_db, &to_nl.report_id));
    assert!(!holds(&nl_db, &grooming.report_id));
    // The origin's audit entry says why.
    let (code, out, err) = cli(&[
        "audit",
        "export",
        "--config",
        fed.config_path(0).to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let submitted = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| {
            e["kind"] == "report.submitted" && e["subject"] == format!("FR-PDC/{}", to_de.report_id)
        })
        .unwrap();
    assert_eq!(submitted["detail"]["classification"], "national");
    assert_eq!(submitted["detail"]["withheld"][0]["node"], "DE-ECO");
    fed.shutdown().await;
}

#[tokio::test]
async fn with_no_alternative_a_forbidden_report_is_held_for_an_analyst_and_sent_nowhere() {
    // DE-ECO's alternative is the default: held.
    let fed = Federation::builder(&FOUR[..3])
        .quiet_audit()
        .prepare(|dir| prepare(dir, &[], &[]))
        .start()
        .await;
    let mut de = fed.operator(1);
    let held = submit_as(
        &mut de,
        &format!("http://{FR_IP}/held"),
        "csam",
        "national",
        "",
    )
    .await;
    let route = held.route.unwrap();
    assert_eq!(route.kind, "held");
    assert!(route.destinations.is_empty());
    assert!(
        route.reason.contains("held here for an analyst"),
        "{}",
        route.reason
    );
    let c = case(&mut de, &held.report_id).await;
    assert_eq!(
        (c.direction.as_str(), c.status.as_str()),
        ("outgoing", "held")
    );
    assert!(c.deliveries.is_empty());
    // Visible in the analyst's list of held reports.
    let listed = de
        .list_cases(pb::ListCasesRequest {
            status: "held".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .cases;
    assert_eq!(listed.len(), 1);
    // A baseline report still goes out, and FR never saw the held one.
    let sent = submit_as(&mut de, &format!("http://{FR_IP}/baseline"), "csam", "", "").await;
    wait_case(&de, &sent.report_id, 20, delivered).await;
    let fr_db = db_bytes(&fed.database(0));
    assert!(holds(&fr_db, &sent.report_id));
    assert!(!holds(&fr_db, &held.report_id));
    // An unknown classification is refused, naming the field.
    let err = de
        .submit_report(pb::SubmitReportRequest {
            urls: vec![format!("http://{FR_IP}/x")],
            category: "csam".into(),
            classification: "secret".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("classification"),
        "{}",
        err.message()
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn a_receiver_refuses_a_national_report_its_law_does_not_cover() {
    // An origin whose policy would let it through (or a stale directory):
    // the receiver checks its own entry and refuses, storing nothing.
    let fed = Federation::builder(&FOUR[..2])
        .quiet_audit()
        .prepare(|dir| prepare(dir, &[], &[]))
        .start()
        .await;
    let key = fed.signing_key(0);
    let payload = pb::ReportPayload {
        report_id: uuid::Uuid::new_v4().to_string(),
        origin: "FR-PDC".into(),
        created_at_ms: alertrelay::node::Core::now_ms(),
        urls: vec![format!("http://{DE_IP}/forced")],
        category: "csam".into(),
        priority: pb::Priority::Bulk as i32,
        route: Some(pb::RouteDecision {
            kind: "peer".into(),
            destinations: vec!["DE-ECO".into()],
            ..Default::default()
        }),
        classification: "national".into(),
        ..Default::default()
    };
    let signed = alertrelay::wire::sign(
        &key,
        &fed.id(0),
        alertrelay::crypto::signing::Purpose::Report,
        &payload,
    );
    let resp = fed
        .federation_as(0, 1)
        .forward(pb::ForwardRequest {
            envelopes: vec![pb::Envelope {
                report: Some(signed),
                hops: vec![],
            }],
            urgent: false,
        })
        .await
        .unwrap()
        .into_inner();
    let r = &resp.results[0];
    assert_eq!(r.code, tonic::Code::FailedPrecondition as i32, "{r:?}");
    let receipt = pb::Receipt::decode(r.receipt.as_ref().unwrap().payload.as_slice()).unwrap();
    assert_eq!(receipt.reason_code, "jurisdiction");
    let mut de = fed.operator(1);
    assert!(cases(&mut de, "incoming").await.is_empty());
    fed.shutdown().await;
}

#[tokio::test]
async fn a_peer_receives_no_operator_identity_and_no_referral_details() {
    let fed = Federation::start(&[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])]).await;
    let mut fr = fed.operator(0);
    let mut de = fed.operator(1);
    let sent = submit_as(
        &mut fr,
        &format!("http://{DE_IP}/minimal"),
        "csam",
        "",
        "seen on a forum",
    )
    .await;
    let id = sent.report_id.clone();
    wait_case(&fr, &id, 20, delivered).await;
    update(&mut de, &id, "in-review").await;
    update(&mut de, &id, "illegal-baseline").await;
    de.update_case(pb::UpdateCaseRequest {
        id: id.clone(),
        status: "referred-to-law-enforcement".into(),
        reason: "referred".into(),
        agency: "BKA".into(),
        reference: "BKA-REF-778812".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    wait_case(&fr, &id, 20, |c| c.status == "referred-to-law-enforcement").await;

    // Exactly what DE-ECO stored: the envelope as received, decoded.
    let mut conn =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", fed.database(1).display()))
            .await
            .unwrap();
    let (envelope,): (Vec<u8>,) =
        sqlx::query_as("SELECT envelope FROM reports WHERE report_id = ?")
            .bind(&id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    conn.close().await.unwrap();
    let env = pb::Envelope::decode(envelope.as_slice()).unwrap();
    let signed = env.report.unwrap();
    assert_eq!(signed.signer, "FR-PDC");
    let p = pb::ReportPayload::decode(signed.payload.as_slice()).unwrap();
    // Canonical: nothing rides along that the schema does not name.
    assert_eq!(p.encode_to_vec(), signed.payload);
    assert_eq!(p.origin, "FR-PDC");
    assert_eq!(p.notes, "seen on a forum");
    let fr_operator = "FR-PDC/analyst";
    assert!(!holds(&signed.payload, fr_operator));
    assert!(!holds(&envelope, "operator:"));
    // Nowhere in DE-ECO's database is FR-PDC's analyst named, and nowhere
    // in FR-PDC's is DE-ECO's analyst or the referral's agency reference.
    assert!(!holds(&db_bytes(&fed.database(1)), fr_operator));
    let fr_db = db_bytes(&fed.database(0));
    assert!(holds(&fr_db, "FR-PDC/analyst"), "FR keeps who did what");
    assert!(!holds(&fr_db, "DE-ECO/analyst"));
    assert!(!holds(&fr_db, "BKA-REF-778812"));
    // FR sees the status, signed by DE-ECO, not by whom.
    let at_fr = case(&mut fr, &id).await;
    let last = at_fr.history.last().unwrap();
    assert_eq!(
        (
            last.status.as_str(),
            last.actor.as_str(),
            last.signer.as_str()
        ),
        ("referred-to-law-enforcement", "node:DE-ECO", "DE-ECO")
    );
    assert!(at_fr.referrals.is_empty());
    fed.shutdown().await;
}

#[tokio::test]
async fn every_operator_read_is_audited_once_per_request_and_export_who_answers_who_looked() {
    let fed = Federation::start(&[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])]).await;
    let mut fr = fed.operator(0);
    let a = submit(&mut fr, &format!("http://{DE_IP}/read-a"), "").await;
    let b = submit(&mut fr, &format!("http://{DE_IP}/read-b"), "").await;
    let _ = case(&mut fr, &a.report_id).await;
    let listed = cases(&mut fr, "outgoing").await;
    assert_eq!(listed.len(), 2);
    // Opening the watch is what is recorded (before it is answered).
    let watch = fr
        .watch_cases(pb::WatchCasesRequest {
            direction: "incoming".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let cfg = fed.config_path(0);
    let (code, out, err) = cli(&[
        "audit",
        "export",
        "--config",
        cfg.to_str().unwrap(),
        "--who",
        "FR-PDC/analyst",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let entries: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        entries
            .iter()
            .all(|e| e["actor"] == "operator:FR-PDC/analyst"),
        "{entries:#?}"
    );
    let reads: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["kind"] == "case.read")
        .collect();
    let by_rpc = |rpc: &str| {
        reads
            .iter()
            .filter(|e| e["detail"]["rpc"] == rpc)
            .collect::<Vec<_>>()
    };
    let get = by_rpc("GetCase");
    assert_eq!(get.len(), 1, "{reads:#?}");
    assert_eq!(get[0]["subject"], format!("FR-PDC/{}", a.report_id));
    let list = by_rpc("ListCases");
    assert_eq!(list.len(), 1, "one entry for the whole list");
    assert_eq!(list[0]["detail"]["count"], 2);
    let named: Vec<&str> = list[0]["detail"]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for id in [&a.report_id, &b.report_id] {
        assert!(named.contains(&format!("FR-PDC/{id}").as_str()));
    }
    assert_eq!(list[0]["detail"]["filter"]["direction"], "outgoing");
    let watched = by_rpc("WatchCases");
    assert_eq!(watched.len(), 1);
    assert_eq!(watched[0]["detail"]["filter"]["direction"], "incoming");
    // Their submissions are there too; nobody else's actions are.
    assert_eq!(
        entries
            .iter()
            .filter(|e| e["kind"] == "report.submitted")
            .count(),
        2
    );
    // No URL in any of it.
    assert!(!out.contains("read-a") && !out.contains(DE_IP), "{out}");
    drop(watch);
    fed.shutdown().await;
}

#[tokio::test]
async fn a_referral_needs_agency_and_reference_and_the_export_verifies_offline_until_tampered() {
    let fed = Federation::start(&[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])]).await;
    let mut fr = fed.operator(0);
    let mut de = fed.operator(1);
    let sent = submit(&mut fr, &format!("http://{DE_IP}/for-police"), "").await;
    let id = sent.report_id.clone();
    wait_case(&fr, &id, 20, delivered).await;
    update(&mut de, &id, "in-review").await;
    update(&mut de, &id, "illegal-baseline").await;
    // Without an agency and reference: refused, nothing changes.
    let err = de
        .update_case(pb::UpdateCaseRequest {
            id: id.clone(),
            status: "referred-to-law-enforcement".into(),
            reference: "R-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("agency"), "{}", err.message());
    // Referral fields with another status: refused too.
    let err = de
        .update_case(pb::UpdateCaseRequest {
            id: id.clone(),
            status: "notice-sent".into(),
            agency: "BKA".into(),
            reference: "R-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(case(&mut de, &id).await.status, "illegal-baseline");
    // Through the command line, as an analyst records it.
    let de_cfg = fed.config_path(1);
    let de_cfg = de_cfg.to_str().unwrap();
    let (code, out, err) = cli(&[
        "cases",
        "update",
        &id,
        "--status",
        "referred-to-law-enforcement",
        "--agency",
        "BKA",
        "--reference",
        "BKA-2026-0042",
        "--referred-at",
        "2026-11-01T09:30:00Z",
        "--config",
        de_cfg,
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let updated: CaseView = serde_json::from_str(&out).unwrap();
    assert_eq!(updated.referrals.len(), 1);
    let r = &updated.referrals[0];
    assert_eq!(
        (
            r.agency.as_str(),
            r.reference.as_str(),
            r.referred_at.as_str()
        ),
        ("BKA", "BKA-2026-0042", "2026-11-01T09:30:00Z")
    );
    assert_eq!(r.actor, "operator:DE-ECO/analyst");

    // An export needs its purpose.
    let err = de
        .export_case(pb::ExportCaseRequest {
            id: id.clone(),
            purpose: "curiosity".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("purpose"), "{}", err.message());
    // The export: written by the node, signed, verifiable offline.
    let out_file = fed.dir.path().join("case-export.json");
    let (code, _, err) = cli(&[
        "cases",
        "export",
        &id,
        "--for-law-enforcement",
        "--out",
        out_file.to_str().unwrap(),
        "--config",
        de_cfg,
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let directory = fed.dir.path().join("directory.toml");
    let verify = |file: &Path| {
        let file = file.to_owned();
        let directory = directory.clone();
        async move {
            cli(&[
                "cases",
                "verify-export",
                file.to_str().unwrap(),
                "--directory",
                directory.to_str().unwrap(),
                "--json",
            ])
            .await
        }
    };
    let (code, out, err) = verify(&out_file).await;
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true);
    let proves = &v["proves"];
    assert_eq!(proves["case"], format!("FR-PDC/{id}"));
    assert_eq!(proves["status"], "referred-to-law-enforcement");
    assert_eq!(proves["report_signed_by"], "FR-PDC");
    assert_eq!(proves["referrals"], 1);
    assert_eq!(proves["exported_by"], "operator:DE-ECO/analyst");
    // received, three status changes, the referral's refusals are not about
    // it... at least: received, in-review, illegal-baseline, referred, the
    // export itself.
    assert!(proves["audit_entries"].as_u64().unwrap() >= 5, "{proves}");
    assert!(proves["receipts"].as_u64().unwrap() >= 1);
    assert_eq!(proves["status_updates"], 3);

    // Tampering with anything in the body breaks the signature.
    let text = std::fs::read_to_string(&out_file).unwrap();
    let mut bundle: serde_json::Value = serde_json::from_str(&text).unwrap();
    let body = bundle["body"].as_str().unwrap().to_owned();
    assert!(body.contains("BKA-2026-0042"));
    bundle["body"] = body.replace("BKA-2026-0042", "BKA-2026-0043").into();
    let tampered = fed.dir.path().join("tampered.json");
    std::fs::write(&tampered, serde_json::to_vec(&bundle).unwrap()).unwrap();
    let (code, out, _) = verify(&tampered).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("altered"), "{out}");
    // A forgery: the genuine body with the case "removed", re-signed with
    // a key of the forger's own (here FR's), and that key listed in the
    // bundle under the exporter's key id. Refused against the directory;
    // with no trust anchor nothing is verified at all.
    let forged = {
        use base64::Engine;
        let mut bundle: serde_json::Value = serde_json::from_str(&text).unwrap();
        let body = bundle["body"]
            .as_str()
            .unwrap()
            .replace("\"referred-to-law-enforcement\"", "\"removed\"");
        let forger = fed.signing_key(0);
        let signature = forger.sign(
            alertrelay::crypto::signing::Purpose::CaseExport,
            body.as_bytes(),
        );
        bundle["body"] = body.into();
        bundle["signature"] = base64::engine::general_purpose::STANDARD
            .encode(signature)
            .into();
        for k in bundle["keys"].as_array_mut().unwrap() {
            if k["node"] == "DE-ECO" {
                k["public_key"] =
                    alertrelay::crypto::signing::encode_public_key(&forger.verifying_key()).into();
            }
        }
        let path = fed.dir.path().join("forged.json");
        std::fs::write(&path, serde_json::to_vec(&bundle).unwrap()).unwrap();
        path
    };
    let (code, out, _) = verify(&forged).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("does not verify"), "{out}");
    let (code, out, _) = cli(&["cases", "verify-export", forged.to_str().unwrap(), "--json"]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("nothing was verified"), "{out}");
    // Pinning the forger's own key, for the forger, does not help it pass
    // as DE-ECO's.
    let pinned = format!(
        "FR-PDC={}",
        alertrelay::crypto::signing::encode_public_key(&fed.signing_key(0).verifying_key())
    );
    let (code, out, _) = cli(&[
        "cases",
        "verify-export",
        forged.to_str().unwrap(),
        "--key",
        &pinned,
        "--json",
    ])
    .await;
    assert_eq!(code, 2, "{out}");

    // The export was an audited read by DE-ECO's analyst.
    let (code, out, err) = cli(&[
        "audit",
        "export",
        "--config",
        de_cfg,
        "--who",
        "operator:DE-ECO/analyst",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines().any(|l| {
            let e: serde_json::Value = serde_json::from_str(l).unwrap();
            e["kind"] == "case.exported" && e["subject"] == format!("FR-PDC/{id}")
        }),
        "{out}"
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn retention_purges_expired_urls_from_the_file_and_the_audit_log_still_verifies() {
    let mut fed = Federation::builder(&[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])])
        .quiet_audit()
        .prepare(|dir| {
            prepare(
                dir,
                &[],
                &[("DE-ECO", "[retention]\nclosed_cases_days = 0\n")],
            )
        })
        .start()
        .await;
    let mut fr = fed.operator(0);
    let mut de = fed.operator(1);
    let marker = "zq-retention-marker-7731";
    let closed = submit_as(
        &mut fr,
        &format!("http://{DE_IP}/{marker}/closed"),
        "csam",
        "",
        "note-to-be-purged-5521",
    )
    .await;
    let open = submit(&mut fr, &format!("http://{DE_IP}/still-open-4417"), "").await;
    for id in [&closed.report_id, &open.report_id] {
        wait_case(&fr, id, 20, delivered).await;
    }
    update(&mut de, &closed.report_id, "in-review").await;
    update(&mut de, &closed.report_id, "not-illegal").await;
    wait_case(&fr, &closed.report_id, 20, |c| c.status == "not-illegal").await;

    let cfg = fed.config_path(1);
    let cfg = cfg.to_str().unwrap();
    let db = fed.database(1);
    // A dry run names what would go and changes nothing. (The case is
    // due once its status update back to FR-PDC has left the outbox.)
    let dry = eventually(
        20,
        || async {
            let (code, out, err) =
                cli(&["retention", "run", "--config", cfg, "--dry-run", "--json"]).await;
            assert_eq!(code, 0, "{err}");
            serde_json::from_str::<serde_json::Value>(&out).unwrap()
        },
        |d| d["closed"] == 1,
    )
    .await;
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["closed"], 1);
    assert_eq!(
        dry["reports"][0]["report"],
        format!("FR-PDC/{}", closed.report_id)
    );
    fed.stop(1).await;
    assert!(holds(&db_bytes(&db), marker), "still there after a dry run");

    let (code, out, err) = cli(&["retention", "run", "--config", cfg, "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let run: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(run["closed"], 1, "{run}");
    assert!(run["audit_entry"].as_i64().is_some());
    let bytes = db_bytes(&db);
    assert!(
        !holds(&bytes, marker),
        "the purged URL is still in the file"
    );
    assert!(!holds(&bytes, "note-to-be-purged-5521"));
    assert!(holds(&bytes, "still-open-4417"), "the open case is kept");
    assert!(holds(&bytes, &closed.report_id), "the tombstone stays");
    // The audit log verifies, and records the purge without URLs.
    let (code, out, err) = cli(&["audit", "verify", "--config", cfg, "--offline", "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = cli(&["audit", "export", "--config", cfg]).await;
    let purge: serde_json::Value = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["kind"] == "retention.purged")
        .unwrap();
    assert_eq!(purge["actor"], "cli:retention");
    assert_eq!(
        purge["detail"]["reports"][0],
        format!("FR-PDC/{}", closed.report_id)
    );
    assert!(!out.contains(marker));

    // Back up: the case shows it was purged; a repeat of the report is
    // still answered as a repeat, not stored again.
    fed.restart(1).await;
    let mut de = fed.operator(1);
    let c = case(&mut de, &closed.report_id).await;
    assert!(c.purged_at.is_some());
    assert!(c.urls.is_empty() && c.notes.is_empty());
    assert_eq!(c.status, "not-illegal");
    assert_eq!(case(&mut de, &open.report_id).await.urls.len(), 1);
    // A second run finds nothing more and still audits itself.
    fed.stop(1).await;
    let (code, out, _) = cli(&["retention", "run", "--config", cfg, "--json"]).await;
    assert_eq!(code, 0);
    let again: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(again["reports"].as_array().unwrap().len(), 0);
    let (code, _, _) = cli(&["audit", "verify", "--config", cfg, "--offline"]).await;
    assert_eq!(code, 0);

    // An erasure request for the open case, before its period ends.
    let erase = |reason: &'static str| {
        let id = open.report_id.clone();
        async move {
            cli(&[
                "retention",
                "erase",
                &id,
                "--reason",
                reason,
                "--config",
                cfg,
                "--json",
            ])
            .await
        }
    };
    let (code, out, err) = erase("erasure request ER-7").await;
    assert_eq!(code, 0, "{out}{err}");
    let bytes = db_bytes(&db);
    assert!(
        !holds(&bytes, "still-open-4417"),
        "erased URL still in the file"
    );
    let (code, _, err) = erase("again").await;
    assert_ne!(code, 0);
    assert!(err.contains("already purged"), "{err}");
    let (code, out, _) = cli(&["audit", "export", "--config", cfg]).await;
    assert_eq!(code, 0);
    assert!(
        out.lines().any(|l| {
            let e: serde_json::Value = serde_json::from_str(l).unwrap();
            e["kind"] == "retention.erased"
                && e["subject"] == format!("FR-PDC/{}", open.report_id)
                && e["detail"]["reason"] == "erasure request ER-7"
        }),
        "{out}"
    );
    let (code, out, err) = cli(&["audit", "verify", "--config", cfg, "--offline"]).await;
    assert_eq!(code, 0, "{out}{err}");
    fed.shutdown().await;
}

#[tokio::test]
async fn the_node_purges_on_its_own_schedule() {
    let fed = Federation::builder(&[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])])
        .quiet_audit()
        .prepare(|dir| {
            prepare(
                dir,
                &[],
                &[(
                    "DE-ECO",
                    "[retention]\nclosed_cases_days = 0\ninterval_secs = 1\n",
                )],
            )
        })
        .start()
        .await;
    let mut fr = fed.operator(0);
    let mut de = fed.operator(1);
    let sent = submit(&mut fr, &format!("http://{DE_IP}/scheduled-9931"), "").await;
    let id = sent.report_id.clone();
    wait_case(&fr, &id, 20, delivered).await;
    update(&mut de, &id, "in-review").await;
    update(&mut de, &id, "not-illegal").await;
    let purged = wait_case(&de, &id, 20, |c| c.purged_at.is_some()).await;
    assert!(purged.urls.is_empty());
    assert_eq!(purged.destinations, vec!["DE-ECO"]);
    // The origin keeps its own copy (it has no retention configured).
    assert_eq!(case(&mut fr, &id).await.urls.len(), 1);
    let (_, out, _) = cli(&[
        "audit",
        "export",
        "--config",
        fed.config_path(1).to_str().unwrap(),
        "--who",
        "system:retention",
    ])
    .await;
    assert!(out.contains("retention.purged"), "{out}");
    fed.shutdown().await;
}

#[tokio::test]
async fn jurisdiction_and_retention_configuration_errors_name_the_key() {
    let files = Federation::builder(&[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])]).provision();
    let path = &files.configs[0];
    let original = std::fs::read_to_string(path).unwrap();
    for (extra, key) in [
        (
            "[jurisdiction]\nalternative = \"NOPE\"\n",
            "jurisdiction.alternative",
        ),
        (
            "[jurisdiction]\nalternative = \"FR-PDC\"\n",
            "jurisdiction.alternative",
        ),
        (
            "[[jurisdiction.rule]]\ncountry = \"NL\"\nclassifications = [\"secret\"]\n",
            "jurisdiction.rule",
        ),
        (
            "[[jurisdiction.rule]]\ncountry = \"NL\"\npeer = \"DE-ECO\"\n",
            "jurisdiction.rule",
        ),
        (
            "[retention]\ninterval_secs = 0\n",
            "retention.interval_secs",
        ),
    ] {
        std::fs::write(path, format!("{original}\n{extra}")).unwrap();
        let err = alertrelay::config::NodeConfig::load(path)
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{extra}: {err}");
    }
    std::fs::write(path, format!("{original}\n[retention]\nclosed_days = 3\n")).unwrap();
    let err = alertrelay::config::NodeConfig::load(path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("closed_days"),
        "unknown keys are refused: {err}"
    );
}

/// The trust anchor decides at the time a key signed: an export signed by
/// a key the directory now lists as revoked, or outside its window, is
/// refused; a genuine export of a case its origin retracted verifies (its
/// retraction is checked as an amendment, not as a status update).
#[tokio::test]
async fn an_export_verifies_only_with_keys_valid_when_they_signed_and_a_retracted_case_verifies() {
    let fed = Federation::start(&[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])]).await;
    let mut fr = fed.operator(0);
    let id = submit(&mut fr, &format!("http://{DE_IP}/retracted-4471"), "")
        .await
        .report_id;
    wait_case(&fr, &id, 20, delivered).await;
    fr.retract_report(pb::RetractReportRequest {
        id: id.clone(),
        reason: "sent by mistake".into(),
    })
    .await
    .unwrap();
    wait_case(&fed.operator(1), &id, 20, |c| c.status == "retracted").await;
    let de_cfg = fed.config_path(1);
    let export = fed.dir.path().join("retracted.json");
    let (code, _, err) = cli(&[
        "cases",
        "export",
        &id,
        "--for-law-enforcement",
        "--out",
        export.to_str().unwrap(),
        "--config",
        de_cfg.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let directory = fed.dir.path().join("directory.toml");
    let verify = |dir: &Path| {
        let (file, dir) = (export.clone(), dir.to_owned());
        async move {
            cli(&[
                "cases",
                "verify-export",
                file.to_str().unwrap(),
                "--directory",
                dir.to_str().unwrap(),
            ])
            .await
        }
    };
    let (code, out, err) = verify(&directory).await;
    assert_eq!(code, 0, "a retracted case's export verifies: {out}{err}");
    assert!(out.starts_with("VALID"), "{out}");
    // The same export against directories where DE-ECO's key is revoked,
    // or only valid from tomorrow: refused.
    let edited = |edit: &dyn Fn(&mut alertrelay::directory::RawKey)| {
        let mut raw: RawDirectory =
            toml::from_str(&std::fs::read_to_string(&directory).unwrap()).unwrap();
        for node in raw.nodes.iter_mut().filter(|n| n.id == "DE-ECO") {
            for key in &mut node.keys {
                edit(key);
            }
        }
        let path = fed.dir.path().join("edited-directory.toml");
        std::fs::write(&path, toml::to_string(&raw).unwrap()).unwrap();
        path
    };
    let revoked = edited(&|k| k.revoked = true);
    let (code, out, err) = verify(&revoked).await;
    assert_eq!(code, 2, "a revoked key verifies nothing: {out}{err}");
    assert!(err.contains("INVALID"), "{err}");
    let later = edited(&|k| k.not_before = Some("2999-01-01T00:00:00Z".into()));
    let (code, out, err) = verify(&later).await;
    assert_eq!(code, 2, "a key not yet valid when it signed: {out}{err}");
    fed.shutdown().await;
}
