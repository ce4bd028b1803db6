//! The case lifecycle across borders: the same content reported by two
//! hotlines is one case at the receiver and both origins hear of it;
//! origins retract and correct what they sent, and it propagates signed.

use crate::common::*;
use alertrelay::pb;
use prost::Message;

const FED: &[(&str, &[&str])] = &[
    ("NL-HOT", &["NL"]),
    ("BE-HOT", &["BE"]),
    ("DE-ECO", &["DE"]),
];
const NL: usize = 0;
const BE: usize = 1;
const DE: usize = 2;

async fn submit_with(
    client: &mut alertrelay::pb::operator_client::OperatorClient<tonic::transport::Channel>,
    url: &str,
    hashes: &[(&str, &str)],
) -> pb::SubmitReportResponse {
    client
        .submit_report(pb::SubmitReportRequest {
            urls: vec![url.to_owned()],
            category: "csam".into(),
            hashes: hashes
                .iter()
                .map(|(a, v)| pb::MediaHash {
                    algorithm: (*a).into(),
                    value: (*v).into(),
                })
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

fn receipt_reason_code(d: &alertrelay::node::cases::DeliveryView) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(d.receipt.as_deref().unwrap())
        .unwrap();
    let signed = pb::Signed::decode(bytes.as_slice()).unwrap();
    pb::Receipt::decode(signed.payload.as_slice())
        .unwrap()
        .reason_code
}

async fn update(fed: &Federation, i: usize, id: &str, status: &str) -> Result<(), tonic::Status> {
    fed.operator(i)
        .update_case(pb::UpdateCaseRequest {
            id: id.into(),
            status: status.into(),
            reason: String::new(),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

#[tokio::test]
async fn the_same_url_from_two_hotlines_is_one_case_and_both_origins_hear() {
    let fed = Federation::start(FED).await;
    let (mut nl, mut be, mut de) = (fed.operator(NL), fed.operator(BE), fed.operator(DE));
    let first = submit(&mut nl, &format!("http://{DE_IP}/same/picture"), "").await;
    wait_case(&nl, &first.report_id, 20, |c| c.status == "delivered").await;
    update(&fed, DE, &first.report_id, "in-review")
        .await
        .unwrap();

    // The same URL, written differently, from another hotline.
    let second = submit(&mut be, &format!("HTTP://{DE_IP}:80/same/picture"), "").await;
    let at_be = wait_case(&be, &second.report_id, 20, |c| c.status == "in-review").await;
    assert_eq!(at_be.deliveries[0].state, "delivered");
    assert_eq!(receipt_reason_code(&at_be.deliveries[0]), "joined");
    assert!(
        at_be
            .history
            .iter()
            .any(|h| h.signer == "DE-ECO" && h.status == "in-review")
    );

    // One case at DE-ECO, showing both origins; the joined report is not
    // worked on its own.
    let case = case(&mut de, &first.report_id).await;
    assert_eq!(
        case.also_reported_by,
        vec![format!("BE-HOT/{}", second.report_id)]
    );
    let joined = self::case(&mut de, &second.report_id).await;
    assert_eq!(
        joined.joined_to,
        Some(format!("NL-HOT/{}", first.report_id))
    );
    let refused = update(&fed, DE, &second.report_id, "illegal-baseline")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("joined case"), "{refused:?}");

    // Working the case tells both origins, each with its own signed update.
    update(&fed, DE, &first.report_id, "illegal-baseline")
        .await
        .unwrap();
    for (client, id) in [(&nl, &first.report_id), (&be, &second.report_id)] {
        let c = wait_case(client, id, 20, |c| c.status == "illegal-baseline").await;
        assert!(
            c.history
                .iter()
                .any(|h| h.signer == "DE-ECO" && h.status == "illegal-baseline")
        );
    }
    // A different URL is a different case.
    let other = submit(&mut be, &format!("http://{DE_IP}/another"), "").await;
    wait_case(&be, &other.report_id, 20, |c| c.status == "delivered").await;
    let c = self::case(&mut de, &other.report_id).await;
    assert_eq!(c.joined_to, None);
    assert_eq!(cases(&mut de, "incoming").await.len(), 3);
    fed.shutdown().await;
}

#[tokio::test]
async fn the_same_media_by_hash_is_one_case_pdq_within_its_distance() {
    let fed = Federation::start(FED).await;
    let (mut nl, mut be, mut de) = (fed.operator(NL), fed.operator(BE), fed.operator(DE));
    let sha = "5f".repeat(32);
    let pdq = "f0".repeat(32);
    // 8 bits away from `pdq`: the same picture; and one 64 bits away.
    let near = format!("0f{}", "f0".repeat(31));
    let far = format!("{}{}", "0f".repeat(8), "f0".repeat(24));
    let first = submit_with(
        &mut nl,
        &format!("http://{DE_IP}/a"),
        &[("sha256", &sha), ("pdq", &pdq)],
    )
    .await;
    wait_case(&nl, &first.report_id, 20, |c| c.status == "delivered").await;
    let by_sha = submit_with(
        &mut be,
        &format!("http://{DE_IP}/b"),
        &[("sha256", &sha.to_uppercase())],
    )
    .await;
    let by_pdq = submit_with(&mut be, &format!("http://{DE_IP}/c"), &[("pdq", &near)]).await;
    let not_pdq = submit_with(&mut be, &format!("http://{DE_IP}/d"), &[("pdq", &far)]).await;
    for id in [&by_sha.report_id, &by_pdq.report_id, &not_pdq.report_id] {
        wait_case(&be, id, 20, |c| c.status != "queued").await;
    }
    let primary = format!("NL-HOT/{}", first.report_id);
    assert_eq!(
        case(&mut de, &by_sha.report_id).await.joined_to.as_ref(),
        Some(&primary)
    );
    assert_eq!(
        case(&mut de, &by_pdq.report_id).await.joined_to.as_ref(),
        Some(&primary)
    );
    assert_eq!(case(&mut de, &not_pdq.report_id).await.joined_to, None);
    assert_eq!(
        case(&mut de, &first.report_id).await.also_reported_by.len(),
        2
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn an_origin_retracts_and_the_receiving_case_stops() {
    let fed = Federation::start(FED).await;
    let (mut nl, mut de) = (fed.operator(NL), fed.operator(DE));
    let sent = submit(&mut nl, &format!("http://{DE_IP}/mistake"), "").await;
    wait_case(&nl, &sent.report_id, 20, |c| c.status == "delivered").await;
    update(&fed, DE, &sent.report_id, "in-review")
        .await
        .unwrap();

    let out = tokio::process::Command::new(BIN)
        .args([
            "cases",
            "retract",
            &sent.report_id,
            "--reason",
            "court order 12/2026",
        ])
        .arg("--config")
        .arg(fed.config_path(NL))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let at_de = wait_case(&de, &sent.report_id, 20, |c| c.status == "retracted").await;
    let entry = at_de
        .history
        .iter()
        .find(|h| h.status == "retracted")
        .unwrap();
    assert!(entry.reason.contains("court order 12/2026"), "{entry:?}");
    // Work on it stops.
    let refused = update(&fed, DE, &sent.report_id, "illegal-baseline")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    // The origin shows it retracted, and DE-ECO's signed confirmation.
    let at_nl = wait_case(&nl, &sent.report_id, 20, |c| {
        c.history
            .iter()
            .any(|h| h.signer == "DE-ECO" && h.status == "retracted")
    })
    .await;
    assert_eq!(at_nl.status, "retracted");
    let again = nl
        .retract_report(pb::RetractReportRequest {
            id: sent.report_id.clone(),
            reason: "again".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    // Only the origin retracts.
    let not_origin = de
        .retract_report(pb::RetractReportRequest {
            id: sent.report_id.clone(),
            reason: "no".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(not_origin.code(), tonic::Code::FailedPrecondition);
    fed.shutdown().await;
}

#[tokio::test]
async fn a_report_retracted_before_delivery_is_never_sent() {
    // The origin waits seconds between attempts, so the retraction finds
    // the envelope queued, not in a send attempt (which it would leave to
    // its delivery, the retraction following it there).
    let mut fed = Federation::builder(FED)
        .prepare(|dir| {
            let config = dir.join(format!("{}/node.toml", FED[NL].0));
            set_toml(&config, "delivery.retry_initial_ms", 10_000);
            set_toml(&config, "delivery.retry_max_ms", 20_000);
        })
        .start()
        .await;
    fed.stop(DE).await;
    let mut nl = fed.operator(NL);
    let sent = submit(&mut nl, &format!("http://{DE_IP}/never"), "").await;
    // The first attempt failed and the worker waits before the next.
    wait_case(&nl, &sent.report_id, 20, |c| {
        c.deliveries.first().is_some_and(|d| d.attempts >= 1)
    })
    .await;
    nl.retract_report(pb::RetractReportRequest {
        id: sent.report_id.clone(),
        reason: "sent by mistake".into(),
    })
    .await
    .unwrap();
    let c = case(&mut nl, &sent.report_id).await;
    assert_eq!(c.status, "retracted");
    assert_eq!(c.deliveries[0].state, "refused");
    assert!(
        c.deliveries[0]
            .reason
            .contains("retracted by the origin before delivery")
    );
    fed.restart(DE).await;
    // Give the worker a moment with DE-ECO back: nothing arrives.
    let mut other = fed.operator(BE);
    let probe = submit(&mut other, &format!("http://{DE_IP}/probe"), "").await;
    wait_case(&other, &probe.report_id, 20, |c| c.status == "delivered").await;
    let mut de = fed.operator(DE);
    let at_de = cases(&mut de, "incoming").await;
    assert_eq!(at_de.len(), 1);
    assert_eq!(at_de[0].id, probe.report_id);
    fed.shutdown().await;
}

#[tokio::test]
async fn an_origin_corrects_category_and_notes_and_the_receiver_shows_it() {
    let fed = Federation::start(FED).await;
    let (mut nl, de) = (fed.operator(NL), fed.operator(DE));
    let sent = submit(&mut nl, &format!("http://{DE_IP}/wrong-category"), "").await;
    wait_case(&nl, &sent.report_id, 20, |c| c.status == "delivered").await;
    let empty = nl
        .correct_report(pb::CorrectReportRequest {
            id: sent.report_id.clone(),
            reason: "nothing".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);
    let bad = nl
        .correct_report(pb::CorrectReportRequest {
            id: sent.report_id.clone(),
            category: "kittens".into(),
            reason: "typo".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    let out = tokio::process::Command::new(BIN)
        .args([
            "cases",
            "correct",
            &sent.report_id,
            "--category",
            "child-exploitation",
            "--notes",
            "second look: not CSAM, exploitation",
            "--hash",
            &format!("sha256:{}", "ab".repeat(32)),
            "--reason",
            "analyst review",
        ])
        .arg("--config")
        .arg(fed.config_path(NL))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let at_de = wait_case(&de, &sent.report_id, 20, |c| {
        c.category == "child-exploitation"
    })
    .await;
    assert_eq!(at_de.notes, "second look: not CSAM, exploitation");
    assert_eq!(at_de.hashes.len(), 1);
    let h = at_de
        .history
        .iter()
        .find(|h| h.status == "corrected")
        .unwrap();
    assert_eq!(h.signer, "NL-HOT");
    assert_eq!(h.reason, "analyst review");
    // The case goes on as before.
    assert_eq!(at_de.status, "received");
    update(&fed, DE, &sent.report_id, "in-review")
        .await
        .unwrap();
    let at_nl = case(&mut nl, &sent.report_id).await;
    assert_eq!(at_nl.category, "child-exploitation");
    fed.shutdown().await;
}

#[tokio::test]
async fn time_to_takedown_is_reported_per_destination_category_and_country() {
    let fed = Federation::start(FED).await;
    let mut nl = fed.operator(NL);
    let mut ids = Vec::new();
    // The test's own clock: no milestone can have taken longer than this.
    let started = std::time::Instant::now();
    for i in 0..3 {
        let sent = submit(&mut nl, &format!("http://{DE_IP}/ttd/{i}"), "").await;
        wait_case(&nl, &sent.report_id, 20, |c| c.status == "delivered").await;
        ids.push(sent.report_id);
    }
    // Two of the three are taken down; the third is still being assessed.
    for id in &ids[..2] {
        for status in ["in-review", "illegal-baseline", "notice-sent", "removed"] {
            update(&fed, DE, id, status).await.unwrap();
        }
    }
    update(&fed, DE, &ids[2], "in-review").await.unwrap();
    for id in &ids[..2] {
        wait_case(&nl, id, 20, |c| c.status == "removed").await;
    }

    let out = tokio::process::Command::new(BIN)
        .args(["stats", "--json", "--window-days", "1", "--config"])
        .arg(fed.config_path(NL))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = |dim: &str, key: &str, m: &str| {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["dimension"] == dim && r["key"] == key && r["milestone"] == m)
            .cloned()
            .unwrap_or_else(|| panic!("no {dim}/{key}/{m} in {v:#}"))
    };
    for (dim, key) in [
        ("destination", "DE-ECO"),
        ("category", "csam"),
        ("country", "DE"),
        ("all", ""),
    ] {
        assert_eq!(row(dim, key, "receipt")["count"], 3);
        assert_eq!(row(dim, key, "removal")["count"], 2);
        assert_eq!(row(dim, key, "removal")["of"], 3);
        assert_eq!(row(dim, key, "assessment")["count"], 2);
    }
    // The test reached the milestones in this order, so their times from
    // submission do not go down; none took longer than the whole test.
    let secs = |m: &str| row("all", "", m)["p50_secs"].as_f64().unwrap();
    assert!(secs("receipt") <= secs("assessment"));
    assert!(secs("assessment") <= secs("notice"));
    assert!(secs("notice") <= secs("removal"));
    let bound = started.elapsed().as_secs_f64();
    for q in ["p50_secs", "p90_secs"] {
        let removal = row("all", "", "removal")[q].as_f64().unwrap();
        assert!(
            removal <= bound,
            "removal {q} {removal} s > the test's {bound} s"
        );
    }

    // The receiving hotline sees its own side: from receipt to removal.
    let mut de = fed.operator(DE);
    let worked = de
        .stats(pb::StatsRequest { window_secs: 3600 })
        .await
        .unwrap()
        .into_inner();
    let removal = worked
        .rows
        .iter()
        .find(|r| r.dimension == "worked-here" && r.milestone == "removal")
        .unwrap();
    assert_eq!(
        (removal.key.as_str(), removal.count, removal.of),
        ("NL-HOT", 2, 3)
    );

    // And as Prometheus histograms at the origin.
    let metrics = fed.metrics(NL).await;
    assert!(
        metrics.contains(
            "alertrelay_time_to_takedown_seconds_count{milestone=\"removal\",destination=\"DE-ECO\"} 2"
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        "alertrelay_time_to_takedown_seconds_count{milestone=\"receipt\",destination=\"DE-ECO\"} 3"
    ));
    fed.shutdown().await;
}

#[tokio::test]
async fn an_urgent_case_status_overtakes_bulk_reports_queued_for_the_same_peer() {
    let mut fed = Federation::start(&[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])]).await;
    let (fr_i, de_i) = (0, 1);
    let mut fr = fed.operator(fr_i);
    let urgent = submit_urgent(&mut fr, &format!("http://{DE_IP}/ongoing-abuse")).await;
    wait_case(&fr, &urgent, 20, |c| c.status == "delivered").await;
    fed.stop(fr_i).await;
    // While FR-PDC is away, DE-ECO queues bulk reports for it, then works
    // the urgent case.
    let mut de = fed.operator(de_i);
    for i in 0..5 {
        submit(&mut de, &format!("http://{FR_IP}/bulk/{i}"), "").await;
    }
    update(&fed, de_i, &urgent, "in-review").await.unwrap();
    fed.restart(fr_i).await;
    let fr = fed.operator(fr_i);
    wait_case(&fr, &urgent, 20, |c| c.status == "in-review").await;
    eventually(
        20,
        || {
            let mut c = fr.clone();
            async move { cases(&mut c, "incoming").await.len() }
        },
        |n| *n == 5,
    )
    .await;
    fed.stop(fr_i).await;
    let store = alertrelay::store::Store::open(&fed.database(fr_i))
        .await
        .unwrap();
    let kinds: Vec<String> = store
        .audit_entries(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| k == "status.received" || k == "report.received")
        .collect();
    store.close().await;
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("status.received"),
        "{kinds:?}"
    );
    assert_eq!(kinds.iter().filter(|k| *k == "report.received").count(), 5);
    fed.shutdown().await;
}
