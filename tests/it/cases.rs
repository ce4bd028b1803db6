//! The analyst's queue: `WatchCases` streams new and changed cases as they
//! happen; `ListCases` filters by status, direction, category, peer,
//! priority and age.

use std::time::Duration;

use crate::common::*;
use alertrelay::node::cases::CaseView;
use alertrelay::pb;

const AB: &[(&str, &[&str])] = &[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])];

#[tokio::test]
async fn an_analyst_watching_sees_new_cases_and_their_changes_as_they_happen() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let fed = Federation::start(AB).await;
    // `alertrelay cases watch`, as an analyst runs it, against DE-ECO.
    let mut watch = tokio::process::Command::new(BIN)
        .args([
            "cases",
            "watch",
            "--json",
            "--direction",
            "incoming",
            "--config",
        ])
        .arg(fed.config_path(1))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut read = async |within: u64| -> Option<CaseView> {
        let line = tokio::time::timeout(Duration::from_secs(within), lines.next_line())
            .await
            .ok()?
            .unwrap()
            .expect("the watch is still running");
        Some(serde_json::from_str(&line).unwrap())
    };
    // A case submitted before the watcher has subscribed is not streamed:
    // submit until one shows up.
    let mut fr = fed.operator(0);
    let mut submitted = Vec::new();
    let first = 'found: {
        for i in 0..10 {
            let url = format!("http://{DE_IP}/watched/{i}");
            submitted.push(submit(&mut fr, &url, "").await.report_id);
            while let Some(c) = read(2).await {
                if submitted.contains(&c.id) {
                    break 'found c;
                }
            }
        }
        panic!("no case was streamed");
    };
    let id = first.id.clone();
    assert_eq!(
        (first.origin.as_str(), first.status.as_str()),
        ("FR-PDC", "received")
    );
    let mut de = fed.operator(1);
    de.update_case(pb::UpdateCaseRequest {
        id: id.clone(),
        status: "in-review".into(),
        reason: String::new(),
        agency: String::new(),
        reference: String::new(),
        referred_at_ms: 0,
        propose: false,
        reject_proposal: false,
    })
    .await
    .unwrap();
    let changed = loop {
        let c = read(20).await.expect("the change within 20 s");
        if c.id == id && c.status != "received" {
            break c;
        }
    };
    assert_eq!(changed.status, "in-review");
    let _ = watch.kill().await;
    fed.shutdown().await;
}

#[tokio::test]
async fn cases_are_listed_by_status_category_peer_priority_and_age() {
    let fed = Federation::builder(&[
        ("FR-PDC", &["FR"]),
        ("DE-ECO", &["DE"]),
        ("LE-FALLBACK", &[]),
    ])
    .fallback("LE-FALLBACK")
    .start()
    .await;
    let mut fr = fed.operator(0);
    let to_de = submit(&mut fr, &format!("http://{DE_IP}/a"), "")
        .await
        .report_id;
    let to_le = submit(&mut fr, "https://files.example.ch/x", CH_IP)
        .await
        .report_id;
    let urgent = fr
        .submit_report(pb::SubmitReportRequest {
            urls: vec![format!("http://{FR_IP}/home")],
            category: "grooming".into(),
            priority: pb::Priority::Urgent as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .report_id;
    wait_case(&fr, &to_de, 10, |c| c.status == "delivered").await;
    wait_case(&fr, &to_le, 10, |c| c.status == "delivered").await;
    let list = |req: pb::ListCasesRequest| {
        let mut c = fr.clone();
        async move {
            let mut ids: Vec<String> = c
                .list_cases(req)
                .await
                .unwrap()
                .into_inner()
                .cases
                .into_iter()
                .map(|c| c.id)
                .collect();
            ids.sort();
            ids
        }
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        list(pb::ListCasesRequest {
            peer: "DE-ECO".into(),
            ..Default::default()
        })
        .await,
        vec![to_de.clone()]
    );
    assert_eq!(
        list(pb::ListCasesRequest {
            category: "grooming".into(),
            ..Default::default()
        })
        .await,
        vec![urgent.clone()]
    );
    assert_eq!(
        list(pb::ListCasesRequest {
            priority: pb::Priority::Urgent as i32,
            ..Default::default()
        })
        .await,
        vec![urgent.clone()]
    );
    assert_eq!(
        list(pb::ListCasesRequest {
            status: "delivered".into(),
            ..Default::default()
        })
        .await,
        sorted(vec![to_de.clone(), to_le.clone()])
    );
    assert_eq!(
        list(pb::ListCasesRequest {
            direction: "local".into(),
            ..Default::default()
        })
        .await,
        vec![urgent.clone()]
    );
    assert_eq!(
        list(pb::ListCasesRequest {
            max_age_secs: 3600,
            ..Default::default()
        })
        .await
        .len(),
        3
    );
    let err = fr
        .list_cases(pb::ListCasesRequest {
            status: "lost".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    fed.shutdown().await;
}

#[tokio::test]
async fn a_retried_submission_with_the_same_key_returns_the_original_report() {
    let fed = Federation::start(AB).await;
    let mut fr = fed.operator(0);
    let req = |key: &str| pb::SubmitReportRequest {
        urls: vec![format!("http://{DE_IP}/retried")],
        category: "csam".into(),
        submission_id: key.into(),
        ..Default::default()
    };
    let first = fr.submit_report(req("k-1")).await.unwrap().into_inner();
    let again = fr.submit_report(req("k-1")).await.unwrap().into_inner();
    assert_eq!(
        first.report_id, again.report_id,
        "a retry, not a second report"
    );
    assert_eq!(again.route.unwrap().destinations, vec!["DE-ECO"]);
    let other = fr.submit_report(req("k-2")).await.unwrap().into_inner();
    assert_ne!(other.report_id, first.report_id);
    // Keys are per operator: the admin's "k-1" is its own submission.
    let by_admin = fed
        .admin(0)
        .submit_report(req("k-1"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(by_admin.report_id, first.report_id);
    let err = fr.submit_report(req("bad key!")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let outgoing = cases(&mut fr, "outgoing").await;
    assert_eq!(outgoing.len(), 3);
    for c in &outgoing {
        wait_case(&fr, &c.id, 10, |c| c.status == "delivered").await;
    }
    let mut de = fed.operator(1);
    assert_eq!(cases(&mut de, "incoming").await.len(), 3);
    fed.shutdown().await;
}

/// A submission answers with its case built from the rows it committed,
/// not read back: what `GetCase` then reads from the store, for a report
/// sent on (its destination down, so it stays queued), one worked here
/// (with its first history entry), and one whose content is hosted in two
/// countries (a case family). Only the delivery worker's own counters
/// (attempts, last error), which move after the commit, are left out.
#[tokio::test]
async fn a_submission_answers_with_its_case_exactly_as_stored() {
    let mut fed = Federation::start(&[
        ("FR-PDC", &["FR"]),
        ("DE-ECO", &["DE"]),
        ("NL-EOKM", &["NL"]),
    ])
    .await;
    fed.stop(1).await;
    fed.stop(2).await;
    let mut fr = fed.operator(0);
    let worker_counters = |mut c: CaseView| {
        for d in &mut c.deliveries {
            d.attempts = 0;
            d.last_error.clear();
        }
        c
    };
    for (what, urls) in [
        ("sent on", vec![format!("http://{DE_IP}/a")]),
        ("worked here", vec![format!("http://{FR_IP}/b")]),
        (
            "a case family",
            vec![format!("http://{DE_IP}/c"), format!("http://{NL_IP}/d")],
        ),
    ] {
        let sent = fr
            .submit_report(pb::SubmitReportRequest {
                urls,
                category: "csam".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let answered = worker_counters(alertrelay::api::convert::case_from_pb(
            sent.case.expect(what),
        ));
        let stored = worker_counters(case(&mut fr, &sent.report_id).await);
        assert_eq!(answered, stored, "{what}");
        match what {
            "worked here" => assert_eq!(stored.history.len(), 1, "{stored:?}"),
            "a case family" => assert!(stored.family.is_some(), "{stored:?}"),
            _ => assert_eq!(stored.deliveries[0].state, "queued"),
        }
    }
    fed.shutdown().await;
}
