//! What an operator watches: per-peer delivery state, Prometheus metrics,
//! and a backlog that drains as soon as a peer that was down contacts us.

use std::time::{Duration, Instant};

use crate::common::*;
use alertrelay::api::convert::{peer_from_pb, summary_from_pb};
use alertrelay::config::RawDelivery;
use alertrelay::pb;

const AB: &[(&str, &[&str])] = &[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])];

#[tokio::test]
async fn peers_status_and_metrics_show_an_outage_and_its_backlog() {
    let mut fed = Federation::start(AB).await;
    fed.stop(1).await;
    let mut fr = fed.operator(0);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            submit(&mut fr, &format!("http://{DE_IP}/{i}"), "")
                .await
                .report_id,
        );
    }
    let first = ids[0].clone();
    wait_case(&fr, &first, 10, |c| c.deliveries[0].attempts >= 2).await;
    let peers: Vec<_> = fr
        .list_peers(pb::ListPeersRequest {})
        .await
        .unwrap()
        .into_inner()
        .peers
        .into_iter()
        .map(peer_from_pb)
        .collect();
    assert_eq!(peers.len(), 1);
    let de = &peers[0];
    assert_eq!(de.node_id, "DE-ECO");
    assert_eq!(de.reachable, "no");
    assert_eq!(de.queue_depth, 3);
    assert!(de.oldest_undelivered_age_ms > 0);
    assert!(!de.last_error.is_empty());
    assert!(de.consecutive_failures >= 2);
    assert!(de.next_attempt_ms > 0);

    let page = fed.metrics(0).await;
    assert!(
        page.contains("alertrelay_outbox_depth{peer=\"DE-ECO\"} 3"),
        "{page}"
    );
    assert!(
        page.contains("alertrelay_reports_submitted_total 3"),
        "{page}"
    );
    assert!(
        page.contains("alertrelay_delivery_failures_total{peer=\"DE-ECO\"}"),
        "{page}"
    );
    assert!(
        page.contains("alertrelay_cases{direction=\"outgoing\",status=\"queued\"} 3"),
        "{page}"
    );
    assert!(!page.contains("http://"), "no reported URL in metrics");

    fed.restart(1).await;
    for id in &ids {
        wait_case(&fr, id, 10, |c| c.status == "delivered").await;
    }
    let status = summary_from_pb(fr.status(pb::StatusRequest {}).await.unwrap().into_inner());
    assert_eq!(status.node_id, "FR-PDC");
    assert_eq!(status.outbox_total, 0);
    assert_eq!(status.peers_reachable, 1);
    assert!(
        status
            .cases
            .iter()
            .any(|c| c.status == "delivered" && c.count == 3)
    );
    let page = fed.metrics(0).await;
    assert!(
        page.contains("alertrelay_deliveries_total{peer=\"DE-ECO\",outcome=\"delivered\"} 3"),
        "{page}"
    );
    assert!(
        page.contains("alertrelay_delivery_latency_seconds_count{peer=\"DE-ECO\"}"),
        "{page}"
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn backoff_ends_as_soon_as_the_peer_that_was_down_contacts_us() {
    // Retries at least 15 s apart: only the peer's own call can explain a
    // delivery within seconds of its return.
    let slow = RawDelivery {
        retry_initial_ms: 30_000,
        retry_max_ms: 30_000,
        ..fast_delivery()
    };
    let mut fed = Federation::builder(AB).delivery(slow).start().await;
    fed.stop(1).await;
    let mut fr = fed.operator(0);
    let id = submit(&mut fr, &format!("http://{DE_IP}/x"), "")
        .await
        .report_id;
    wait_case(&fr, &id, 10, |c| c.deliveries[0].attempts >= 1).await;
    fed.restart(1).await;
    // DE's witness contacts FR within ~100 ms of starting.
    let started = Instant::now();
    wait_case(&fr, &id, 10, |c| c.status == "delivered").await;
    assert!(started.elapsed() < Duration::from_secs(10));
    fed.shutdown().await;
}

#[tokio::test]
async fn a_full_disk_refuses_with_unavailable_stores_nothing_and_recovers() {
    let fed = Federation::start(AB).await;
    let mut fr = fed.operator(0);
    let big = || pb::SubmitReportRequest {
        urls: (0..100)
            .map(|j| format!("http://{DE_IP}/{j}/{}", "y".repeat(8_000)))
            .collect(),
        category: "csam".into(),
        ..Default::default()
    };
    let store = &fed.core(0).store;
    let entries_before = store.audit_entries_count().await.unwrap();
    store.danger_limit_database().await.unwrap();
    let err = fr.submit_report(big()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("nothing was stored"),
        "{}",
        err.message()
    );
    assert!(
        !err.message().to_lowercase().contains("sqlite"),
        "no storage details to the caller"
    );
    assert_eq!(store.audit_entries_count().await.unwrap(), entries_before);
    // (Listing is an audited read: checked after the count.)
    assert!(cases(&mut fr, "").await.is_empty());
    // Room again: the same submission goes through.
    store.danger_unlimit_database().await.unwrap();
    let id = fr
        .submit_report(big())
        .await
        .unwrap()
        .into_inner()
        .report_id;
    wait_case(&fr, &id, 10, |c| c.status == "delivered").await;
    fed.shutdown().await;
}

#[tokio::test]
async fn a_backlog_drains_in_order_with_urgent_reports_first() {
    let mut fed = Federation::start(AB).await;
    fed.stop(1).await;
    let mut fr = fed.operator(0);
    let mut bulk = Vec::new();
    for i in 0..5 {
        bulk.push(
            submit(&mut fr, &format!("http://{DE_IP}/bulk/{i}"), "")
                .await
                .report_id,
        );
    }
    let urgent = submit_urgent(&mut fr, &format!("http://{DE_IP}/urgent")).await;
    fed.restart(1).await;
    for id in bulk.iter().chain([&urgent]) {
        wait_case(&fr, id, 10, |c| c.status == "delivered").await;
    }
    fed.stop(1).await;
    let store = alertrelay::store::Store::open(&fed.database(1))
        .await
        .unwrap();
    let received: Vec<String> = store
        .audit_entries(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "report.received")
        .map(|e| e.subject.rsplit('/').next().unwrap_or_default().to_owned())
        .collect();
    store.close().await;
    let mut want = vec![urgent];
    want.extend(bulk);
    assert_eq!(
        received, want,
        "urgent first, then the bulk ones in the order submitted"
    );
    fed.shutdown().await;
}

/// A SQLite database has one node process: a second node started on the
/// same file is refused while the first runs (it would send every queued
/// report again, claims being kept in memory), and starts once the first
/// has stopped. The lock file is private.
#[tokio::test]
async fn a_second_node_on_the_same_sqlite_file_is_refused_while_the_first_runs() {
    use std::os::unix::fs::PermissionsExt;
    let mut fed = Federation::start(AB).await;
    let mut fr = fed.operator(0);
    let id = submit(&mut fr, &format!("http://{DE_IP}/x"), "")
        .await
        .report_id;
    wait_case(&fr, &id, 10, |c| c.status == "delivered").await;

    let err = match fed.start_second_instance(0).await {
        Ok(_) => panic!("a second node on the same database started"),
        Err(e) => e,
    };
    assert!(
        matches!(err, alertrelay::runtime::StartError::AlreadyRunning { .. }),
        "{err:?}"
    );
    let shown = err.to_string();
    assert!(shown.contains("in use by another node process"), "{shown}");
    let mut lock = fed.database(0).into_os_string();
    lock.push(".lock");
    let mode = std::fs::metadata(&lock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "lock file mode");
    // The running node was not disturbed by the attempt.
    let id2 = submit(&mut fr, &format!("http://{DE_IP}/y"), "")
        .await
        .report_id;
    wait_case(&fr, &id2, 10, |c| c.status == "delivered").await;

    // Once it has stopped, the same database starts again.
    fed.stop(0).await;
    fed.restart(0).await;
    let mut fr = fed.operator(0);
    assert_eq!(case(&mut fr, &id).await.status, "delivered");
    fed.shutdown().await;
}
