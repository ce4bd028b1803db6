//! Replicas of one node on one PostgreSQL database (issue #8): three
//! `alertrelay serve` processes of node FR-PDC (same id, certificates,
//! keys and database, their own ports and replica ids) and one receiver,
//! DE-ECO, on SQLite. Reports are submitted to all three replicas at once
//! while the receiver is down, so the shared outbox builds up; when it is
//! back, one replica dies at the crash point between the receiver's answer
//! and the commit of its receipts — its claims are still in the database,
//! its batch already stored at the receiver. The other replicas take its
//! rows over once the lease lapsed. Then: every acknowledged report at the
//! receiver exactly once with its original receipt, nothing left queued,
//! one linear audit log that verifies with consistent checkpoints.
//!
//! Skipped, with the reason printed, when PostgreSQL cannot be reached.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use alertrelay::pb;
use common::check::{Accepted, Figures, check_delivery};
use common::pg::TestDb;
use common::{DE_IP, Federation, submit_numbered};

const FR: usize = 0;
const DE: usize = 1;
/// The claim lease of the replicas: short, so the takeover is quick.
const LEASE_MS: i64 = 2_000;
const REPORTS: u64 = 150;
const CRASH: &str = "origin-storing-receipt";

async fn count(pool: &sqlx::PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_one_killed_mid_delivery_lose_and_duplicate_nothing() {
    let Some(pg) = TestDb::create("replicas::three_replicas").await else {
        return;
    };
    let started = Instant::now();
    let mut c = Federation::builder(&[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])])
        .processes()
        .audit_every_ms(300, 500)
        .database(FR, &pg.url)
        .create()
        .await;
    c.set(FR, "delivery.lease_ms", LEASE_MS);
    // Small batches: the backlog is shared among the replicas' workers.
    c.set(FR, "delivery.batch_size", 8);
    let r2 = c.add_replica(FR, "fr-2");
    let r3 = c.add_replica(FR, "fr-3");
    c.set(FR, "delivery.replica", "fr-1");
    let replicas = [FR, r2, r3];
    // The three migrate the empty database at once (sqlx's migration lock).
    c.start_together(&[(DE, None), (FR, None), (r2, Some(CRASH)), (r3, None)])
        .await;
    let pool = sqlx::PgPool::connect(&pg.url).await.unwrap();

    // The receiver is down: the outbox builds up while all three
    // replicas take submissions at once.
    c.kill(DE).await;
    let mut tasks = Vec::new();
    for (k, &r) in replicas.iter().enumerate() {
        let client = c.operator(r);
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in (k as u64..REPORTS).step_by(replicas.len()) {
                let id = submit_numbered(client.clone(), DE_IP, n)
                    .await
                    .expect("a replica accepts the submission");
                ids.push(Accepted { origin: r, id });
            }
            ids
        }));
    }
    // The same submission id sent to two replicas at the same moment is
    // one report (the database's unique key decides, under the writer
    // lock), answered with its id by both.
    let mut same = Vec::new();
    for k in 0..5 {
        let request = pb::SubmitReportRequest {
            urls: vec![format!("http://{DE_IP}/same-submission/{k}")],
            category: "csam".into(),
            priority: pb::Priority::Bulk as i32,
            submission_id: format!("retry-{k}"),
            ..Default::default()
        };
        let (mut a, mut b) = (c.operator(FR), c.operator(r3));
        let (x, y) = tokio::join!(a.submit_report(request.clone()), b.submit_report(request));
        let (x, y) = (x.unwrap().into_inner(), y.unwrap().into_inner());
        assert_eq!(x.report_id, y.report_id, "one report per submission id");
        same.push(Accepted {
            origin: FR,
            id: x.report_id,
        });
    }
    let mut accepted = Vec::new();
    for t in tasks {
        accepted.extend(t.await.unwrap());
    }
    accepted.extend(same);
    assert_eq!(accepted.len() as u64, REPORTS + 5);
    let queued = count(&pool, "SELECT COUNT(*) FROM outbox").await;
    assert_eq!(queued, accepted.len() as i64, "all queued while DE is down");

    // The receiver comes back; replica fr-2 dies storing the receipts of
    // the first batch it sent (the receiver has stored that batch).
    c.restart(DE).await;
    let status = c.wait_exit(r2, Duration::from_secs(30)).await;
    c.assert_crashed_at(r2, status, CRASH);
    let crashed = Instant::now();
    let orphaned = count(
        &pool,
        "SELECT COUNT(*) FROM outbox WHERE claimed_by = 'fr-2'",
    )
    .await;
    assert!(orphaned >= 1, "fr-2 died holding claims");

    // The others take its rows over after the lease, and drain the rest.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = count(&pool, "SELECT COUNT(*) FROM outbox").await;
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} rows still queued 30 s after fr-2 died"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let takeover = crashed.elapsed();
    let claims = count(
        &pool,
        "SELECT COUNT(*) FROM outbox WHERE claimed_by IS NOT NULL",
    )
    .await;
    assert_eq!(claims, 0);
    // A survivor says whose claims it took over.
    let said = [FR, r3].iter().any(|&i| {
        c.log_tail(i, 1_000_000)
            .lines()
            .any(|l| l.contains("took over claims") && l.contains("fr-2"))
    });
    assert!(said, "no replica logged taking fr-2's claims over");

    // fr-2 comes back (the harness reads cases through every process).
    c.restart(r2).await;
    c.wait_settled(Duration::from_secs(30)).await;
    let mut figures = Figures {
        test: "replicas",
        submits: REPORTS + 10,
        crashes: [(CRASH.to_owned(), 1)].into(),
        ..Figures::default()
    };
    let violations = check_delivery(&c, &accepted, &mut figures).await;
    assert!(violations.is_empty(), "{violations:#?}");
    assert_eq!(figures.lost, 0);
    assert_eq!(figures.duplicated, 0);
    assert!(
        figures.retransmissions >= 1,
        "the batch fr-2 sent was sent again by another replica and answered as a repeat"
    );

    // One linear audit log: entries 1..=n, written by all three.
    let log = c.audit_export(FR).await;
    let seqs: Vec<i64> = log.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=log.len() as i64).collect::<Vec<_>>());
    let receipts_by: BTreeSet<i64> = log
        .iter()
        .filter(|e| e.kind == "delivery.receipt")
        .map(|e| e.seq)
        .collect();
    assert!(receipts_by.len() >= accepted.len());
    // Checkpoints: several, one per size, each extending the one before
    // (`audit verify` above recomputed every root and proof).
    let sizes: Vec<i64> = sqlx::query_scalar("SELECT size FROM checkpoints ORDER BY size")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(sizes.len() >= 2, "checkpoints signed: {sizes:?}");
    assert!(sizes.windows(2).all(|w| w[0] < w[1]));
    pool.close().await;
    eprintln!(
        "REPLICAS FIGURES accepted={} delivered_once={} lost={} duplicated={} \
         retransmissions={} orphaned_claims={orphaned} takeover_ms={} checkpoints={} \
         audit_entries={} elapsed_ms={}",
        accepted.len(),
        figures.delivered / replicas.len(),
        figures.lost,
        figures.duplicated,
        figures.retransmissions / replicas.len(),
        takeover.as_millis(),
        sizes.len(),
        log.len(),
        started.elapsed().as_millis()
    );
}

/// Two replicas (two stores, two connection pools: two sessions, as two
/// processes have) receive the same report at the same moment, e.g. a
/// sender's retry that a load balancer sent to the other replica: each
/// checks for it and stores it inside its write transaction, which holds
/// the writer lock, so the second finds the first's row and answers it as
/// a repeat. One report, two identical answers, no error; the same for a
/// submission id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_on_one_report_store_it_once() {
    use alertrelay::audit::Entry;
    use alertrelay::store::{Database, NewReport, Store};
    let Some(pg) = TestDb::create("replicas::racing").await else {
        return;
    };
    let db = Database::Postgres(pg.url.clone());
    let a = Store::connect(&db).await.unwrap();
    let b = Store::connect(&db).await.unwrap();
    async fn receive(s: Store, id: String) -> (i64, bool) {
        let mut tx = s.begin().await.unwrap();
        if let Some(r) = tx.find_report("nl-hotline", &id).await.unwrap() {
            return (r.seq, false);
        }
        let seq = tx
            .insert_report(&NewReport {
                report_id: &id,
                origin: "nl-hotline",
                direction: "incoming",
                category: "csam",
                priority: "bulk",
                status: "received",
                hosting_country: Some("DE"),
                route: "{}",
                payload: b"payload",
                payload_digest: b"digest",
                envelope: b"envelope",
                received_from: Some("nl-hotline"),
                created_at_ms: 1,
                now_ms: 2,
                relay: false,
                receipt: Some(b"receipt"),
                joined_to: None,
                family: None,
            })
            .await
            .unwrap();
        if !id.is_empty() {
            tx.insert_submission("op", &id, seq).await.unwrap();
        }
        tx.audit(
            &Entry::new(
                "report.received",
                "node:nl-hotline",
                &id,
                serde_json::json!({}),
            ),
            2,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        (seq, true)
    }
    for round in 0..20 {
        let id = format!("r-{round}");
        let (x, y) = tokio::join!(
            tokio::spawn(receive(a.clone(), id.clone())),
            tokio::spawn(receive(b.clone(), id.clone()))
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(x.0, y.0, "both answer with the one stored report");
        assert!(x.1 ^ y.1, "exactly one of them stored it");
        let mut tx = a.begin().await.unwrap();
        assert_eq!(tx.find_submission("op", &id).await.unwrap(), Some(x.0));
    }
    assert_eq!(a.audit_entries_count().await.unwrap(), 20);
    a.close().await;
    b.close().await;
}

/// Claims per second on PostgreSQL, one row at a time and in batches of
/// 100, by one claimer and by three at once (replicas):
/// `cargo test --test replicas claim_rates -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run on demand"]
async fn claim_rates() {
    use alertrelay::audit::Entry;
    use alertrelay::store::{Database, NewReport, Store};
    const ROWS: usize = 20_000;
    let Some(pg) = TestDb::create("replicas::claim_rates").await else {
        return;
    };
    let store = Store::connect(&Database::Postgres(pg.url.clone()))
        .await
        .unwrap();
    let mut tx = store.begin().await.unwrap();
    let seq = tx
        .insert_report(&NewReport {
            report_id: "r",
            origin: "fr",
            direction: "outgoing",
            category: "csam",
            priority: "bulk",
            status: "queued",
            hosting_country: None,
            route: "{}",
            payload: b"p",
            payload_digest: b"d",
            envelope: b"e",
            received_from: None,
            created_at_ms: 1,
            now_ms: 1,
            relay: false,
            receipt: None,
            joined_to: None,
            family: None,
        })
        .await
        .unwrap();
    for _ in 0..ROWS {
        enqueue_kind(
            &mut tx,
            alertrelay::store::OUTBOX_SIGNED,
            "de",
            "report",
            false,
            seq,
            &[0u8; 2048],
            1,
        )
        .await
        .unwrap();
    }
    tx.audit(&Entry::new("t", "t", "t", serde_json::json!({})), 1)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let now = 1_000i64;
    for (claimers, batch) in [(1, 1), (1, 100), (3, 1), (3, 100)] {
        store.release_claims_of(None).await.unwrap();
        let started = Instant::now();
        let tasks: Vec<_> = (0..claimers)
            .map(|c| {
                let s = store.clone();
                tokio::spawn(async move {
                    let mut n = 0;
                    let until = Instant::now() + Duration::from_secs(2);
                    while Instant::now() < until {
                        let rows = s
                            .claim_outbox(
                                "de",
                                "report",
                                false,
                                batch,
                                &format!("c{c}"),
                                now,
                                60_000,
                            )
                            .await
                            .unwrap();
                        if rows.is_empty() {
                            break;
                        }
                        n += rows.len();
                    }
                    n
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        let rate = total as f64 / started.elapsed().as_secs_f64();
        println!("CLAIMS claimers={claimers} batch={batch}: {total} rows, {rate:.0} rows/s");
    }
    store.close().await;
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
