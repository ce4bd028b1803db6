//! One conformance suite for both store backends: every test body below
//! runs once against a fresh SQLite file and once against a fresh
//! PostgreSQL database on the real server (created and dropped per test;
//! skipped, with the reason printed, when the server cannot be reached).

mod common;

use std::collections::BTreeSet;

use alertrelay::audit::{self, Entry, VerifyContext};
use alertrelay::store::{
    CaseFilter, Database, FinishedDelivery, NewDelivery, NewOutbox, NewReport, NewStatus, Store,
    StoreError,
};
use alertrelay::wire::stored::{StoredPayload, payload_column};
use common::pg::TestDb;

/// A store on a fresh database, and what keeps that database alive.
struct Backend {
    store: Store,
    db: Database,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<TestDb>,
}

impl Backend {
    async fn sqlite() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::Sqlite(dir.path().join("node.db"));
        let store = Store::connect(&db).await.unwrap();
        assert_eq!(store.backend(), "sqlite");
        Backend {
            store,
            db,
            _dir: Some(dir),
            _pg: None,
        }
    }

    async fn postgres(test: &str) -> Option<Backend> {
        let pg = TestDb::create(test).await?;
        let db = Database::Postgres(pg.url.clone());
        let store = Store::connect(&db).await.unwrap();
        assert_eq!(store.backend(), "postgres");
        Some(Backend {
            store,
            db,
            _dir: None,
            _pg: Some(pg),
        })
    }

    async fn finish(self) {
        self.store.close().await;
    }
}

/// Runs each named test body against both backends.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let b = super::Backend::sqlite().await;
                    super::$name(&b).await;
                    b.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(b) = super::Backend::postgres(concat!("postgres::", stringify!($name))).await else {
                        return;
                    };
                    super::$name(&b).await;
                    b.finish().await;
                }
            )*
        }
    };
}

conformance!(
    idempotent_insert,
    submissions_are_idempotent,
    outbox_enqueue_batch_dequeue,
    receipts_and_deliveries,
    case_status_and_history,
    case_keys_find_open_cases,
    purge_leaves_a_tombstone,
    audit_append_and_read_back,
    rolled_back_transactions_leave_no_trace,
    concurrent_writers_make_one_chain,
    checkpoints_cosignatures_and_witnessing,
    bulk_transactions_and_joined_reports,
    outbox_claims_and_leases,
    concurrent_claimers_never_share_a_row,
    a_settled_row_is_never_claimed_again,
    work_is_announced_to_other_processes,
    batched_statements_do_what_one_at_a_time_does,
    the_payload_is_stored_once_when_the_envelope_carries_it,
    the_log_is_read_a_page_at_a_time_in_order,
    accounts_are_stored_found_and_changed,
    the_open_queue_and_close_proposals,
    alerts_are_stored_once_and_notifications_claimed_retried_and_settled,
    old_alerts_go_and_undelivered_notifications_are_given_up_without_their_bodies,
);

/// Alert retention (#26): notifications of old events still not delivered
/// are given up (body dropped, never claimed again, no longer waiting) —
/// except one on the wire; old events whose notifications are all settled
/// are deleted with them; newer ones and unsettled ones stay.
async fn old_alerts_go_and_undelivered_notifications_are_given_up_without_their_bodies(
    b: &Backend,
) {
    use alertrelay::store::NewAlert;
    let s = &b.store;
    let mut tx = s.begin().await.unwrap();
    for (id, raised) in [
        ("old", 1_000),
        ("quiet", 1_000),
        ("busy", 1_000),
        ("new", 50_000),
    ] {
        let key = format!("k:{id}");
        let alert = NewAlert {
            id,
            dedup_key: &key,
            event: "case_unassessed",
            severity: "warning",
            summary: "{}",
            raised_at_ms: raised,
        };
        assert!(tx.insert_alert(&alert).await.unwrap());
    }
    for (id, channel) in [
        ("busy", "webhook:ops"),
        ("old", "webhook:ops"),
        ("old", "email:x@y.example"),
        ("new", "webhook:ops"),
    ] {
        let body = "{\"urls\":[\"http://bad.example/x\"]}";
        tx.insert_alert_delivery(id, channel, body, 1_000)
            .await
            .unwrap();
    }
    // "old"'s webhook was delivered; "busy"'s is on the wire until 30 000.
    let claimed = tx.claim_alert_deliveries(2_000, 30_000, 2).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let busy = claimed.iter().find(|r| r.alert_id == "busy").unwrap().id;
    let old_hook = claimed.iter().find(|r| r.alert_id == "old").unwrap().id;
    tx.alert_delivered(old_hook, 3_000).await.unwrap();
    tx.commit().await.unwrap();
    let waiting = s.waiting_notifications().await.unwrap();
    assert_eq!(
        waiting
            .iter()
            .map(|w| (w.channel.as_str(), w.waiting, w.oldest_ms))
            .collect::<Vec<_>>(),
        [("email:x@y.example", 1, 1_000), ("webhook:ops", 2, 1_000)]
    );

    let mut tx = s.begin().await.unwrap();
    let done = tx
        .expire_alerts(Some(10_000), Some(10_000), 20_000, 100)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        (done.notifications_given_up, done.given_up.as_slice()),
        (1, ["old".to_owned()].as_slice()),
        "the old email given up; the busy one is on the wire"
    );
    let mut deleted = done.deleted.clone();
    deleted.sort();
    assert_eq!(deleted, ["old", "quiet"], "settled old alerts go");
    let alerts: Vec<String> = s
        .alerts()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(alerts, ["busy", "new"]);
    let rows = s.alert_deliveries().await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.alert_id.as_str()).collect::<Vec<_>>(),
        ["busy", "new"],
        "the deleted alerts' notifications went with them"
    );
    assert!(rows.iter().all(|r| r.given_up_at_ms.is_none()));
    assert_eq!(
        s.waiting_notifications()
            .await
            .unwrap()
            .iter()
            .map(|w| (w.channel.as_str(), w.waiting))
            .collect::<Vec<_>>(),
        [("webhook:ops", 2)]
    );

    // Later, with "busy"'s claim lapsed: given up, kept (its alert is not
    // old enough to delete yet), body gone, never claimed again.
    let mut tx = s.begin().await.unwrap();
    let done = tx
        .expire_alerts(Some(10_000), Some(0), 40_000, 100)
        .await
        .unwrap();
    assert_eq!((done.notifications_given_up, done.deleted.len()), (1, 0));
    assert!(
        tx.claim_alert_deliveries(60_000, 90_000, 10)
            .await
            .unwrap()
            .iter()
            .all(|r| r.alert_id == "new")
    );
    tx.commit().await.unwrap();
    let rows = s.alert_deliveries().await.unwrap();
    let busy_row = rows.iter().find(|r| r.id == busy).unwrap();
    assert_eq!(
        (busy_row.given_up_at_ms, busy_row.body.as_str()),
        (Some(40_000), "")
    );
    assert_eq!(
        s.waiting_notifications().await.unwrap()[0].waiting,
        1,
        "only the new one waits"
    );
    assert_eq!(s.next_alert_due().await.unwrap(), Some(90_000));
}

/// Alerts (#26): an event is stored once per dedup key; its notification
/// per channel once; a claim hides it until it lapses, from concurrent
/// claimers too; a failure makes it due again later; a delivered one is
/// never claimed again and keeps no body.
async fn alerts_are_stored_once_and_notifications_claimed_retried_and_settled(b: &Backend) {
    use alertrelay::store::NewAlert;
    let s = &b.store;
    let alert = |id: &'static str, key: &'static str| NewAlert {
        id,
        dedup_key: key,
        event: "urgent_report",
        severity: "critical",
        summary: "{}",
        raised_at_ms: 1_000,
    };
    let mut tx = s.begin().await.unwrap();
    assert!(
        tx.insert_alert(&alert("a1", "urgent_report:1"))
            .await
            .unwrap()
    );
    assert!(
        !tx.insert_alert(&alert("a2", "urgent_report:1"))
            .await
            .unwrap()
    );
    assert!(
        tx.insert_alert(&alert("a3", "urgent_report:2"))
            .await
            .unwrap()
    );
    for (id, channel) in [
        ("a1", "webhook:ops"),
        ("a1", "webhook:ops"),
        ("a1", "email:x@y.example"),
        ("a3", "webhook:ops"),
    ] {
        tx.insert_alert_delivery(id, channel, "{\"id\":1}", 1_000)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(s.alerts().await.unwrap().len(), 2);
    assert_eq!(
        s.alert_deliveries().await.unwrap().len(),
        3,
        "one per channel"
    );
    assert_eq!(s.next_alert_due().await.unwrap(), Some(1_000));

    // Concurrent claimers share nothing.
    let claims: Vec<_> = (0..3)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut tx = s.begin().await.unwrap();
                let rows = tx.claim_alert_deliveries(2_000, 60_000, 2).await.unwrap();
                tx.commit().await.unwrap();
                rows.into_iter().map(|r| r.id).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for c in claims {
        claimed.extend(c.await.unwrap());
    }
    claimed.sort();
    let before = claimed.len();
    claimed.dedup();
    assert_eq!(
        (before, claimed.len()),
        (3, 3),
        "a notification claimed twice"
    );
    let mut tx = s.begin().await.unwrap();
    assert!(
        tx.claim_alert_deliveries(3_000, 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // One fails (due again at 10 000), one is delivered.
    tx.alert_failed(claimed[0], "refused", 10_000)
        .await
        .unwrap();
    tx.alert_delivered(claimed[1], 4_000).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = s.begin().await.unwrap();
    assert!(
        tx.claim_alert_deliveries(9_999, 70_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = tx.claim_alert_deliveries(10_000, 70_000, 10).await.unwrap();
    assert_eq!(again.iter().map(|r| r.id).collect::<Vec<_>>(), [claimed[0]]);
    assert_eq!(
        (again[0].attempts, again[0].last_error.as_deref()),
        (1, Some("refused"))
    );
    // The third's claim lapses (60 000): claimable again; never the delivered one.
    let lapsed = tx
        .claim_alert_deliveries(60_000, 120_000, 10)
        .await
        .unwrap();
    assert_eq!(
        lapsed.iter().map(|r| r.id).collect::<Vec<_>>(),
        [claimed[2]]
    );
    tx.commit().await.unwrap();
    let rows = s.alert_deliveries().await.unwrap();
    let delivered = rows.iter().find(|r| r.id == claimed[1]).unwrap();
    assert_eq!(
        (delivered.delivered_at_ms, delivered.body.as_str()),
        (Some(4_000), "")
    );
}

/// The console's queue: open incoming cases, urgent first then oldest, a
/// page at a time (closed, outgoing and joined ones left out); and a case's
/// pending close proposal stored, replaced, read and removed.
async fn the_open_queue_and_close_proposals(b: &Backend) {
    let s = &b.store;
    let mut seqs = Vec::new();
    for (i, (priority, created, direction)) in [
        ("bulk", 30, "incoming"),
        ("bulk", 10, "incoming"),
        ("urgent", 40, "incoming"),
        ("bulk", 20, "incoming"),
        ("bulk", 5, "outgoing"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("q{i}");
        let mut r = report("FR-PDC", &id, b"payload");
        r.direction = direction;
        r.priority = priority;
        r.status = "received";
        r.created_at_ms = created;
        let mut tx = s.begin().await.unwrap();
        seqs.push(tx.insert_report(&r).await.unwrap());
        tx.commit().await.unwrap();
    }
    let mut tx = s.begin().await.unwrap();
    tx.set_status(seqs[3], "removed", 50).await.unwrap();
    tx.commit().await.unwrap();
    let ids = |rows: Vec<alertrelay::store::ReportRow>| {
        rows.into_iter().map(|r| r.report_id).collect::<Vec<_>>()
    };
    assert_eq!(ids(s.open_queue(None, 2, 0).await.unwrap()), ["q2", "q1"]);
    assert_eq!(ids(s.open_queue(None, 2, 2).await.unwrap()), ["q0"]);
    assert!(
        s.open_queue(Some("grooming"), 10, 0)
            .await
            .unwrap()
            .is_empty()
    );

    let proposal = |reason: &str| alertrelay::store::ProposalRow {
        report_seq: seqs[0],
        status: "not-illegal".into(),
        from_status: "in-review".into(),
        reason: reason.into(),
        proposed_by: "operator:DE-ECO/ana".into(),
        proposed_at_ms: 60,
    };
    let mut tx = s.begin().await.unwrap();
    tx.put_close_proposal(&proposal("first")).await.unwrap();
    tx.put_close_proposal(&proposal("second")).await.unwrap();
    tx.commit().await.unwrap();
    let got = s.close_proposal(seqs[0]).await.unwrap().unwrap();
    assert_eq!((got.reason.as_str(), got.proposed_at_ms), ("second", 60));
    assert!(s.close_proposal(seqs[1]).await.unwrap().is_none());
    let mut tx = s.begin().await.unwrap();
    assert!(tx.delete_close_proposal(seqs[0]).await.unwrap());
    assert!(!tx.delete_close_proposal(seqs[0]).await.unwrap());
    tx.commit().await.unwrap();
    assert!(s.close_proposal(seqs[0]).await.unwrap().is_none());
}

/// Bulk transactions take turns behind the gate while an urgent one goes
/// ahead; a received report is stored with its receipt and the case it
/// joined in one insert; several audit entries in one transaction chain.
async fn bulk_transactions_and_joined_reports(b: &Backend) {
    let s = &b.store;
    let case = insert(s, "nl-hotline", "first").await;
    // A bulk transaction first in the queue waits for its `ready` (the
    // node's urgent work) before it takes the writer.
    let (go, ready) = tokio::sync::oneshot::channel::<()>();
    let waiting = {
        let s = s.clone();
        tokio::spawn(async move {
            s.begin_bulk(async {
                let _ = ready.await;
            })
            .await
            .map(drop)
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "a bulk transaction began before it was ready"
    );
    let urgent = s.begin().await.unwrap();
    drop(urgent);
    go.send(()).unwrap();
    waiting.await.unwrap().unwrap();
    let bulk = s.begin_bulk(async {}).await.unwrap();
    // A second bulk transaction waits for the first; an urgent one does not
    // wait for the gate (it waits only for the writer, released below).
    let waiting = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        s.begin_bulk(async {}),
    )
    .await;
    assert!(waiting.is_err(), "a second bulk transaction waited");
    drop(bulk);
    let mut tx = s.begin().await.unwrap();
    let mut joined = report("be-hotline", "second", b"payload-2");
    joined.direction = "incoming";
    joined.receipt = Some(b"signed-receipt");
    joined.joined_to = Some(case);
    let seq = tx.insert_report(&joined).await.unwrap();
    let a = tx
        .audit(&entry("report.received", "be-hotline/second", 1), 3_000)
        .await
        .unwrap();
    let c = tx
        .audit(&entry("case.status", "be-hotline/second", 2), 3_000)
        .await
        .unwrap();
    assert_eq!(c, a + 1);
    tx.commit().await.unwrap();
    let row = s.report_by_seq(seq).await.unwrap().unwrap();
    assert_eq!(row.receipt.as_deref(), Some(&b"signed-receipt"[..]));
    assert_eq!(row.joined_to, Some(case));
    assert_eq!(s.joined(case).await.unwrap().len(), 1);
    let mut tx = s.begin_bulk(async {}).await.unwrap();
    tx.audit(&entry("bulk", "x", 3), 4_000).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(s.audit_entries_count().await.unwrap(), c as u64 + 1);
}

fn report<'a>(origin: &'a str, id: &'a str, payload: &'a [u8]) -> NewReport<'a> {
    NewReport {
        report_id: id,
        origin,
        direction: "outgoing",
        category: "csam",
        priority: "bulk",
        status: "queued",
        hosting_country: Some("DE"),
        route: r#"{"kind":"peer","destinations":["de-hotline"],"steps":["hosted in DE"]}"#,
        payload,
        payload_digest: b"digest-32-bytes-digest-32-bytes!",
        envelope: b"envelope",
        received_from: None,
        created_at_ms: 1_000,
        now_ms: 2_000,
        relay: false,
        receipt: None,
        joined_to: None,
        family: None,
    }
}

fn entry(kind: &'static str, subject: &str, n: u64) -> Entry {
    Entry::new(kind, "system", subject, serde_json::json!({ "n": n }))
}

/// Inserts a report with its audit entry, committed; returns its seq.
async fn insert(store: &Store, origin: &str, id: &str) -> i64 {
    let mut tx = store.begin().await.unwrap();
    let seq = tx
        .insert_report(&report(origin, id, b"payload"))
        .await
        .unwrap();
    tx.audit(
        &entry("report.submitted", &format!("{origin}/{id}"), 0),
        2_000,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    seq
}

fn is_unique_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Db(sqlx::Error::Database(d)) if d.is_unique_violation())
}

/// A context to verify a log with no checkpoints (no keys needed).
fn bare_context() -> VerifyContext {
    VerifyContext {
        origin: "test-federation/node".into(),
        node: "node".into(),
        owner_keys: vec![],
        witnesses: vec![],
    }
}

async fn idempotent_insert(b: &Backend) {
    let s = &b.store;
    let first = insert(s, "fr-hotline", "r-1").await;
    // The same (origin, report id) again is refused by the database.
    let mut tx = s.begin().await.unwrap();
    let err = tx
        .insert_report(&report("fr-hotline", "r-1", b"other payload"))
        .await
        .unwrap_err();
    assert!(is_unique_violation(&err), "{err:?}");
    drop(tx);
    // The same id from another origin is another report.
    let other = insert(s, "nl-hotline", "r-1").await;
    assert!(other > first);
    let mut tx = s.begin().await.unwrap();
    let found = tx.find_report("fr-hotline", "r-1").await.unwrap().unwrap();
    assert_eq!(found.seq, first);
    assert_eq!(found.payload(), b"payload");
    assert_eq!(found.relay, 0);
    assert_eq!(found.hosting_country.as_deref(), Some("DE"));
    assert!(tx.find_report("fr-hotline", "r-2").await.unwrap().is_none());
    drop(tx);
    let both = s.reports_by_id(None, "r-1").await.unwrap();
    assert_eq!(
        both.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [first, other]
    );
    let one = s.reports_by_id(Some("nl-hotline"), "r-1").await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].origin, "nl-hotline");
    assert_eq!(
        s.report_by_seq(other).await.unwrap().unwrap().report_id,
        "r-1"
    );
    // Nothing of the refused insert remains: two reports, two entries.
    assert_eq!(s.audit_entries_count().await.unwrap(), 2);
}

async fn submissions_are_idempotent(b: &Backend) {
    let s = &b.store;
    let seq = insert(s, "fr-hotline", "r-1").await;
    let mut tx = s.begin().await.unwrap();
    assert_eq!(tx.find_submission("alice", "sub-1").await.unwrap(), None);
    tx.insert_submission("alice", "sub-1", seq).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = s.begin().await.unwrap();
    assert_eq!(
        tx.find_submission("alice", "sub-1").await.unwrap(),
        Some(seq)
    );
    assert_eq!(tx.find_submission("bob", "sub-1").await.unwrap(), None);
    let err = tx
        .insert_submission("alice", "sub-1", seq)
        .await
        .unwrap_err();
    assert!(is_unique_violation(&err), "{err:?}");
}

async fn outbox_enqueue_batch_dequeue(b: &Backend) {
    let s = &b.store;
    let r1 = insert(s, "fr-hotline", "r-1").await;
    let r2 = insert(s, "fr-hotline", "r-2").await;
    let mut tx = s.begin().await.unwrap();
    enqueue_kind(
        &mut tx,
        alertrelay::store::OUTBOX_SIGNED,
        "de-hotline",
        "report",
        false,
        r1,
        b"bulk-1",
        10,
    )
    .await
    .unwrap();
    enqueue_kind(
        &mut tx,
        alertrelay::store::OUTBOX_SIGNED,
        "de-hotline",
        "report",
        true,
        r2,
        b"urgent-2",
        11,
    )
    .await
    .unwrap();
    enqueue_kind(
        &mut tx,
        alertrelay::store::OUTBOX_SIGNED,
        "de-hotline",
        "report",
        false,
        r2,
        b"bulk-3",
        12,
    )
    .await
    .unwrap();
    enqueue_kind(
        &mut tx,
        alertrelay::store::OUTBOX_SIGNED,
        "nl-hotline",
        "report",
        false,
        r1,
        b"nl-1",
        13,
    )
    .await
    .unwrap();
    enqueue_kind(
        &mut tx,
        alertrelay::store::OUTBOX_RETURNED,
        "nl-hotline",
        "status",
        false,
        r1,
        b"returned",
        14,
    )
    .await
    .unwrap();
    enqueue_kind(
        &mut tx,
        alertrelay::store::OUTBOX_AMENDMENT,
        "nl-hotline",
        "status",
        true,
        r1,
        b"amend",
        15,
    )
    .await
    .unwrap();
    tx.audit(&entry("report.queued", "fr-hotline/r-1", 1), 10)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Urgent first, then in order; limited; one peer and kind only.
    let batch = s.outbox_batch("de-hotline", "report", 10).await.unwrap();
    let bodies: Vec<&[u8]> = batch.iter().map(|r| r.body.as_slice()).collect();
    assert_eq!(bodies, [&b"urgent-2"[..], b"bulk-1", b"bulk-3"]);
    assert_eq!(batch[0].urgent, 1);
    assert_eq!(batch[1].urgent, 0);
    assert_eq!(
        s.outbox_batch("de-hotline", "report", 1)
            .await
            .unwrap()
            .len(),
        1
    );
    // Each delivery lane sees only its own rows, in order; urgent work
    // waiting is visible to the bulk lane.
    let lane = |urgent| async move {
        s.outbox_lane("de-hotline", "report", urgent, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.body)
            .collect::<Vec<_>>()
    };
    assert_eq!(lane(true).await, [b"urgent-2".to_vec()]);
    assert_eq!(lane(false).await, [b"bulk-1".to_vec(), b"bulk-3".to_vec()]);
    assert!(s.urgent_pending("de-hotline").await.unwrap());
    assert!(
        s.urgent_pending("nl-hotline").await.unwrap(),
        "the urgent amendment"
    );
    assert!(!s.urgent_pending("xx-hotline").await.unwrap());
    let status = s.outbox_batch("nl-hotline", "status", 10).await.unwrap();
    assert_eq!(
        status
            .iter()
            .map(|r| (r.returned, r.urgent))
            .collect::<Vec<_>>(),
        [(2, 1), (1, 0)]
    );

    // A failed attempt is counted, with its error.
    let ids: Vec<i64> = batch.iter().map(|r| r.id).collect();
    s.outbox_failed(&ids, "unavailable").await.unwrap();
    s.outbox_failed(&ids[..1], "unavailable again")
        .await
        .unwrap();
    let again = s.outbox_batch("de-hotline", "report", 10).await.unwrap();
    assert_eq!(
        again.iter().map(|r| r.attempts).collect::<Vec<_>>(),
        [2, 1, 1]
    );

    let summary = s.outbox_summary().await.unwrap();
    let depth: Vec<(String, i64, i64)> = summary
        .iter()
        .map(|q| (q.peer.clone(), q.depth, q.oldest_ms))
        .collect();
    assert_eq!(
        depth,
        [("de-hotline".into(), 3, 10), ("nl-hotline".into(), 3, 13)]
    );

    // Dequeue once only.
    let mut tx = s.begin().await.unwrap();
    let queued = tx.queued_report(r2, "de-hotline").await.unwrap().unwrap();
    assert!(again.iter().any(|r| r.id == queued && r.report_seq == r2));
    assert_eq!(tx.queued_report(r2, "xx-hotline").await.unwrap(), None);
    assert!(tx.dequeue(ids[0]).await.unwrap());
    assert!(!tx.dequeue(ids[0]).await.unwrap());
    tx.audit(&entry("report.delivered", "fr-hotline/r-2", 2), 20)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let left = s.outbox_batch("de-hotline", "report", 10).await.unwrap();
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|r| r.id != ids[0]));
}

/// Queues `n` rows for `peer` in one lane, each for its own report.
async fn enqueue_many(s: &Store, peer: &str, urgent: bool, n: usize, tag: &str) -> Vec<i64> {
    let mut seqs = Vec::new();
    for i in 0..n {
        seqs.push(insert(s, "fr-hotline", &format!("{tag}-{i}")).await);
    }
    let mut tx = s.begin().await.unwrap();
    for (i, seq) in seqs.iter().enumerate() {
        enqueue_kind(
            &mut tx,
            alertrelay::store::OUTBOX_SIGNED,
            peer,
            "report",
            urgent,
            *seq,
            format!("{tag}-{i}").as_bytes(),
            10,
        )
        .await
        .unwrap();
    }
    tx.audit(&entry("report.queued", tag, 0), 10).await.unwrap();
    tx.commit().await.unwrap();
    seqs
}

fn ids(rows: &[alertrelay::store::OutboxRow]) -> Vec<i64> {
    rows.iter().map(|r| r.id).collect()
}

/// Claims: in order, one lane, never a row another holder's live lease
/// covers; a lapsed lease is taken over; renewals and releases act only on
/// the holder's own claims; a failed attempt releases and counts.
async fn outbox_claims_and_leases(b: &Backend) {
    let s = &b.store;
    enqueue_many(s, "de-hotline", false, 5, "bulk").await;
    enqueue_many(s, "de-hotline", true, 1, "urgent").await;
    let claim = |holder: &'static str, urgent: bool, limit: i64, now: i64, lease: i64| async move {
        s.claim_outbox("de-hotline", "report", urgent, limit, holder, now, lease)
            .await
            .unwrap()
    };
    let a = claim("replica-a", false, 3, 1_000, 500).await;
    assert_eq!(
        a.iter().map(|r| r.body.clone()).collect::<Vec<_>>(),
        [b"bulk-0".to_vec(), b"bulk-1".to_vec(), b"bulk-2".to_vec()],
        "the first rows of the lane, in order"
    );
    let b2 = claim("replica-b", false, 10, 1_000, 500).await;
    assert_eq!(b2.len(), 2, "only what replica-a did not claim");
    assert!(ids(&b2).iter().all(|id| !ids(&a).contains(id)));
    assert!(claim("replica-c", false, 10, 1_000, 500).await.is_empty());
    assert!(
        claim("replica-c", false, 10, 1_499, 500).await.is_empty(),
        "live leases are not taken over"
    );
    let u = claim("replica-c", true, 10, 1_000, 500).await;
    assert_eq!(u.len(), 1, "the urgent lane is claimed on its own");
    assert_eq!(u[0].urgent, 1);

    // Renewal: only by the holder.
    assert_eq!(
        s.extend_claims(&ids(&a), "replica-a", 3_000).await.unwrap(),
        3
    );
    assert_eq!(
        s.extend_claims(&ids(&a), "replica-b", 9_000).await.unwrap(),
        0
    );
    // replica-b's leases lapsed at 1 500; replica-a's were renewed.
    let c = claim("replica-c", false, 10, 1_500, 500).await;
    assert_eq!(ids(&c), ids(&b2), "a lapsed lease is taken over");
    if s.backend() == "postgres" {
        // Said, for the log of the replica taking over.
        assert!(
            c.iter()
                .all(|r| r.taken_from.as_deref() == Some("replica-b"))
        );
    }
    assert!(a.iter().all(|r| r.taken_from.is_none()), "unclaimed rows");
    assert_eq!(
        s.extend_claims(&ids(&b2), "replica-b", 9_000)
            .await
            .unwrap(),
        0,
        "a claim taken over is no longer renewable by its old holder"
    );
    assert!(claim("replica-b", false, 10, 1_999, 500).await.is_empty());

    // A release by someone else changes nothing; the holder's release
    // makes the rows claimable at once, counting the failed attempt.
    s.release_claims(&ids(&a)[..1], "replica-b", None)
        .await
        .unwrap();
    assert!(claim("replica-b", false, 10, 1_999, 500).await.is_empty());
    s.release_claims(&ids(&a)[..1], "replica-a", Some("unavailable"))
        .await
        .unwrap();
    let again = claim("replica-b", false, 10, 1_999, 500).await;
    assert_eq!(ids(&again), ids(&a)[..1]);
    assert_eq!(again[0].attempts, 1);

    // A claimed row leaves the outbox in the answer's transaction.
    let mut tx = s.begin().await.unwrap();
    assert!(tx.dequeue(again[0].id).await.unwrap());
    tx.audit(&entry("report.delivered", "bulk-0", 1), 2_000)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        s.extend_claims(&ids(&again), "replica-b", 9_000)
            .await
            .unwrap(),
        0
    );

    // A replica restarting under its id, or a lone node starting, takes
    // its claims back at once.
    assert_eq!(s.release_claims_of(Some("replica-c")).await.unwrap(), 3);
    assert_eq!(
        ids(&claim("replica-d", false, 10, 2_000, 500).await),
        ids(&c)
    );
    assert_eq!(s.release_claims_of(None).await.unwrap(), 4);
    let all = claim("replica-e", false, 10, 2_000, 500).await;
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
}

/// Four claimers at once, small batches, until the lane is empty: every
/// row is claimed exactly once.
async fn concurrent_claimers_never_share_a_row(b: &Backend) {
    const ROWS: usize = 120;
    enqueue_many(&b.store, "de-hotline", false, ROWS, "row").await;
    let tasks: Vec<_> = (0..4)
        .map(|c| {
            let s = b.store.clone();
            tokio::spawn(async move {
                let holder = format!("replica-{c}");
                let mut mine = Vec::new();
                loop {
                    let rows = s
                        .claim_outbox("de-hotline", "report", false, 7, &holder, 1_000, 60_000)
                        .await
                        .unwrap();
                    if rows.is_empty() {
                        return mine;
                    }
                    mine.extend(ids(&rows));
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let (total, seen) = gather(tasks).await;
    assert_eq!(total, ROWS, "no row claimed twice");
    assert_eq!(seen.len(), ROWS, "every row claimed");
}

/// The rows each task took: how many in all, and which (once each).
async fn gather(tasks: Vec<tokio::task::JoinHandle<Vec<i64>>>) -> (usize, BTreeSet<i64>) {
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for t in tasks {
        let mine = t.await.unwrap();
        total += mine.len();
        seen.extend(mine);
    }
    (total, seen)
}

/// Claimers that settle what they claim (the row leaves the outbox in a
/// committed transaction, claims ending with it) race each other, leases
/// long enough not to lapse: every row is settled exactly once, no claim
/// returns a row already settled (the settling transaction would find it
/// gone), and a settled row's claim ends with its transaction.
async fn a_settled_row_is_never_claimed_again(b: &Backend) {
    const ROWS: usize = 150;
    enqueue_many(&b.store, "de-hotline", false, ROWS, "row").await;
    let tasks: Vec<_> = (0..3)
        .map(|c| {
            let s = b.store.clone();
            tokio::spawn(async move {
                let holder = format!("replica-{c}");
                let mut settled = Vec::new();
                let mut n = 0u64;
                loop {
                    let rows = s
                        .claim_outbox("de-hotline", "report", false, 5, &holder, 1_000, 60_000)
                        .await
                        .unwrap();
                    if rows.is_empty() {
                        return settled;
                    }
                    let mut tx = s.begin().await.unwrap();
                    let gone = tx.dequeue_many(&ids(&rows)).await.unwrap();
                    assert_eq!(gone.len(), rows.len(), "a claimed row was already settled");
                    n += 1;
                    tx.audit(&entry("report.delivered", &holder, n), 2_000)
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                    assert_eq!(
                        s.extend_claims(&gone, &holder, 90_000).await.unwrap(),
                        0,
                        "a settled row's claim ended with its transaction"
                    );
                    settled.extend(gone);
                }
            })
        })
        .collect();
    let (total, seen) = gather(tasks).await;
    assert_eq!(total, ROWS, "no row settled twice");
    assert_eq!(seen.len(), ROWS, "every row settled");
}

/// On PostgreSQL a committed transaction that queued work says so to every
/// listener on the database (other replicas); a rolled-back one says
/// nothing. SQLite has one process and no listener.
async fn work_is_announced_to_other_processes(b: &Backend) {
    let s = &b.store;
    let Some(mut listener) = s.work_listener().await.unwrap() else {
        assert_eq!(s.backend(), "sqlite");
        return;
    };
    let seq = insert(s, "fr-hotline", "r-1").await;
    let mut tx = s.begin().await.unwrap();
    enqueue_kind(
        &mut tx,
        alertrelay::store::OUTBOX_SIGNED,
        "de-hotline",
        "report",
        false,
        seq,
        b"x",
        10,
    )
    .await
    .unwrap();
    drop(tx);
    let mut tx = s.begin().await.unwrap();
    enqueue_kind(
        &mut tx,
        alertrelay::store::OUTBOX_SIGNED,
        "nl-hotline",
        "report",
        true,
        seq,
        b"x",
        10,
    )
    .await
    .unwrap();
    enqueue_kind(
        &mut tx,
        alertrelay::store::OUTBOX_SIGNED,
        "nl-hotline",
        "report",
        true,
        seq,
        b"y",
        10,
    )
    .await
    .unwrap();
    tx.audit(&entry("report.queued", "fr-hotline/r-1", 1), 10)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), listener.next())
        .await
        .expect("a notification")
        .unwrap();
    assert_eq!(
        next,
        ("nl-hotline".to_owned(), true),
        "not the rolled-back one"
    );
    let more = tokio::time::timeout(std::time::Duration::from_millis(300), listener.next()).await;
    assert!(more.is_err(), "one notification per lane and commit");
}

async fn receipts_and_deliveries(b: &Backend) {
    let s = &b.store;
    let seq = insert(s, "fr-hotline", "r-1").await;
    let mut tx = s.begin().await.unwrap();
    assert!(
        tx.insert_delivery(seq, "de-hotline", None, None)
            .await
            .unwrap()
    );
    assert!(
        !tx.insert_delivery(seq, "de-hotline", None, None)
            .await
            .unwrap()
    );
    assert!(
        tx.insert_delivery(seq, "at-hotline", Some("ch-relay"), None)
            .await
            .unwrap()
    );
    // A next hop equal to the destination is stored as "direct".
    assert!(
        tx.insert_delivery(seq, "nl-hotline", Some("nl-hotline"), Some("de-hotline"))
            .await
            .unwrap()
    );
    enqueue_kind(
        &mut tx,
        alertrelay::store::OUTBOX_SIGNED,
        "de-hotline",
        "report",
        false,
        seq,
        b"env",
        10,
    )
    .await
    .unwrap();
    tx.audit(&entry("report.queued", "fr-hotline/r-1", 1), 10)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let id = s.outbox_batch("de-hotline", "report", 1).await.unwrap()[0].id;
    s.outbox_failed(&[id], "connection refused").await.unwrap();

    let mut tx = s.begin().await.unwrap();
    assert_eq!(
        tx.delivery_state(seq, "de-hotline")
            .await
            .unwrap()
            .as_deref(),
        Some("queued")
    );
    assert_eq!(tx.delivery_state(seq, "xx-hotline").await.unwrap(), None);
    assert!(tx.is_destination(seq, "at-hotline").await.unwrap());
    assert!(!tx.is_destination(seq, "xx-hotline").await.unwrap());
    assert_eq!(
        tx.destinations_via(seq, "ch-relay").await.unwrap(),
        ["at-hotline"]
    );
    assert_eq!(
        tx.destinations_via(seq, "de-hotline").await.unwrap(),
        ["de-hotline"]
    );
    assert_eq!(
        tx.delivery_routes(seq).await.unwrap(),
        [
            (
                "at-hotline".to_owned(),
                "ch-relay".to_owned(),
                "queued".to_owned()
            ),
            ("de-hotline".into(), "de-hotline".into(), "queued".into()),
            ("nl-hotline".into(), "nl-hotline".into(), "queued".into()),
        ]
    );
    assert!(
        tx.relayed_delivery(seq, "at-hotline", b"relay-receipt", 30)
            .await
            .unwrap()
    );
    assert!(
        !tx.relayed_delivery(seq, "at-hotline", b"relay-receipt", 31)
            .await
            .unwrap()
    );
    tx.set_delivery_via(seq, "at-hotline", "ch-relay")
        .await
        .unwrap();
    tx.finish_delivery(seq, "de-hotline", "delivered", b"de-receipt", None, 40)
        .await
        .unwrap();
    tx.finish_delivery(
        seq,
        "nl-hotline",
        "refused",
        b"nl-refusal",
        Some("out of scope"),
        41,
    )
    .await
    .unwrap();
    tx.set_receipt(seq, b"our-receipt").await.unwrap();
    tx.audit(&entry("report.delivered", "fr-hotline/r-1", 2), 40)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let d = s.deliveries(seq).await.unwrap();
    assert_eq!(d.len(), 3);
    let (at, de, nl) = (&d[0], &d[1], &d[2]);
    assert_eq!(
        (at.destination.as_str(), at.state.as_str()),
        ("at-hotline", "queued")
    );
    assert_eq!(at.relayed_at_ms, Some(30));
    assert_eq!(at.next_hop.as_deref(), Some("ch-relay"));
    assert_eq!(at.via.as_deref(), Some("ch-relay"));
    assert_eq!(de.state, "delivered");
    assert_eq!(de.receipt.as_deref(), Some(&b"de-receipt"[..]));
    assert_eq!(de.delivered_at_ms, Some(40));
    assert_eq!(de.next_hop, None);
    assert_eq!(de.attempts, 1);
    assert_eq!(de.last_error.as_deref(), Some("connection refused"));
    assert_eq!(nl.state, "refused");
    assert_eq!(nl.reason.as_deref(), Some("out of scope"));
    assert_eq!(nl.handed_off_by.as_deref(), Some("de-hotline"));
    assert_eq!(nl.next_hop, None);
    let r = s.report_by_seq(seq).await.unwrap().unwrap();
    assert_eq!(r.receipt.as_deref(), Some(&b"our-receipt"[..]));

    let sent = s.sent_since("fr-hotline", 0).await.unwrap();
    assert_eq!(sent.len(), 3);
    assert!(sent.iter().all(|r| r.seq == seq && r.country == "DE"));
    assert!(s.sent_since("fr-hotline", 1_001).await.unwrap().is_empty());
}

async fn case_status_and_history(b: &Backend) {
    let s = &b.store;
    let mut tx = s.begin().await.unwrap();
    let mut incoming = report("fr-hotline", "r-1", b"p");
    incoming.direction = "incoming";
    incoming.status = "received";
    incoming.received_from = Some("fr-hotline");
    let seq = tx.insert_report(&incoming).await.unwrap();
    let mut urgent = report("fr-hotline", "r-2", b"p");
    urgent.priority = "urgent";
    let other = tx.insert_report(&urgent).await.unwrap();
    assert!(
        tx.insert_status(
            seq,
            "u-1",
            "received",
            "",
            "node:de-hotline",
            None,
            None,
            100
        )
        .await
        .unwrap()
    );
    tx.audit(&entry("report.received", "fr-hotline/r-1", 0), 100)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut tx = s.begin().await.unwrap();
    assert!(
        tx.insert_status(
            seq,
            "u-2",
            "in-progress",
            "looking",
            "operator:de/alice",
            Some("de-hotline"),
            Some(b"signed-2"),
            200
        )
        .await
        .unwrap()
    );
    // The same update id again from the same signer is a no-op.
    assert!(
        !tx.insert_status(
            seq,
            "u-2",
            "in-progress",
            "again",
            "operator:de/alice",
            Some("de-hotline"),
            None,
            201
        )
        .await
        .unwrap()
    );
    assert!(
        tx.insert_status(
            seq,
            "u-3",
            "removed",
            "gone",
            "operator:de/bob",
            Some("de-hotline"),
            Some(b"signed-3"),
            300
        )
        .await
        .unwrap()
    );
    assert!(
        tx.insert_status(
            seq,
            "u-4",
            "removed",
            "still gone",
            "operator:de/bob",
            Some("de-hotline"),
            None,
            400
        )
        .await
        .unwrap()
    );
    tx.set_status(seq, "removed", 300).await.unwrap();
    assert!(tx.status_recorded(seq, "de-hotline", "u-3").await.unwrap());
    assert!(!tx.status_recorded(seq, "de-hotline", "u-9").await.unwrap());
    assert!(
        !tx.status_recorded(other, "de-hotline", "u-3")
            .await
            .unwrap()
    );
    // Ids are the signer's choice: another signer's "u-3", here or on
    // another report, is its own update, not a repeat.
    assert!(!tx.status_recorded(seq, "nl-hotline", "u-3").await.unwrap());
    for (report, signer) in [(seq, "nl-hotline"), (other, "de-hotline")] {
        assert!(
            tx.insert_status(
                report,
                "u-3",
                "in-progress",
                "",
                "node:x",
                Some(signer),
                None,
                305
            )
            .await
            .unwrap()
        );
    }
    tx.insert_referral(seq, "u-3", "BKA", "ref-1", 290, "operator:de/bob", 300)
        .await
        .unwrap();
    tx.set_correction(seq, "other", b"correction", 310)
        .await
        .unwrap();
    tx.audit(&entry("case.status", "fr-hotline/r-1", 1), 300)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let h = s.history(seq).await.unwrap();
    assert_eq!(
        h.iter()
            .map(|h| (h.status.as_str(), h.at_ms))
            .collect::<Vec<_>>(),
        [
            ("received", 100),
            ("in-progress", 200),
            ("removed", 300),
            ("removed", 400),
            ("in-progress", 305)
        ]
    );
    assert_eq!(h[1].reason, "looking");
    assert_eq!(h[1].signer.as_deref(), Some("de-hotline"));
    assert_eq!(
        s.signed_status_updates(seq).await.unwrap(),
        [b"signed-2".to_vec(), b"signed-3".to_vec()]
    );
    let firsts = s.first_statuses(seq).await.unwrap();
    let removed = firsts.iter().find(|f| f.status == "removed").unwrap();
    assert_eq!(
        (removed.at_ms, removed.signer.as_str()),
        (300, "de-hotline")
    );
    let received = firsts.iter().find(|f| f.status == "received").unwrap();
    assert_eq!(received.signer, "");
    let refs = s.referrals(seq).await.unwrap();
    assert_eq!(refs.len(), 1);
    assert_eq!(
        (refs[0].agency.as_str(), refs[0].reference.as_str()),
        ("BKA", "ref-1")
    );

    let r = s.report_by_seq(seq).await.unwrap().unwrap();
    assert_eq!(
        (r.status.as_str(), r.category.as_str(), r.updated_at_ms),
        ("removed", "other", 310)
    );
    assert_eq!(r.correction.as_deref(), Some(&b"correction"[..]));

    let all = |f: CaseFilter<'static>| async move {
        s.list_reports(&CaseFilter { limit: 100, ..f })
            .await
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(all(CaseFilter::default()).await, [other, seq]);
    assert_eq!(
        all(CaseFilter {
            direction: Some("incoming"),
            ..Default::default()
        })
        .await,
        [seq]
    );
    assert_eq!(
        all(CaseFilter {
            status: Some("removed"),
            ..Default::default()
        })
        .await,
        [seq]
    );
    assert_eq!(
        all(CaseFilter {
            priority: Some("urgent"),
            ..Default::default()
        })
        .await,
        [other]
    );
    assert_eq!(
        all(CaseFilter {
            peer: Some("fr-hotline"),
            ..Default::default()
        })
        .await,
        [other, seq]
    );
    assert_eq!(
        all(CaseFilter {
            peer: Some("xx"),
            ..Default::default()
        })
        .await,
        Vec::<i64>::new()
    );
    assert_eq!(
        all(CaseFilter {
            created_after_ms: Some(1_001),
            ..Default::default()
        })
        .await,
        Vec::<i64>::new()
    );
    assert_eq!(
        s.list_reports(&CaseFilter {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .len(),
        1
    );
    let counts = s.case_counts().await.unwrap();
    assert_eq!(
        counts,
        [
            ("incoming".to_owned(), "removed".to_owned(), 1),
            ("outgoing".into(), "queued".into(), 1)
        ]
    );
    let worked = s.worked_since(0).await.unwrap();
    assert_eq!(worked.len(), 1);
    assert_eq!((worked[0].seq, worked[0].state.as_str()), (seq, "removed"));
    assert_eq!(worked[0].delivered_at_ms, None);
    // A closed case expires; nothing else does.
    let expired = s.expired_reports("closed", 1_000, 10).await.unwrap();
    assert_eq!(expired.iter().map(|e| e.seq).collect::<Vec<_>>(), [seq]);
    assert!(
        s.expired_reports("closed", 100, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.expired_reports("refused", 10_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn case_keys_find_open_cases(b: &Backend) {
    let s = &b.store;
    let mut tx = s.begin().await.unwrap();
    let mut a = report("fr-hotline", "r-1", b"p");
    a.direction = "incoming";
    a.status = "received";
    let first = tx.insert_report(&a).await.unwrap();
    let second = tx
        .insert_report(&NewReport {
            report_id: "r-2",
            ..a
        })
        .await
        .unwrap();
    let keys = |v: &[&str]| v.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>();
    tx.insert_case_keys(first, &keys(&["url:a", "sha256:aa", "pdq:0f0f"]))
        .await
        .unwrap();
    // Repeats are ignored.
    tx.insert_case_keys(first, &keys(&["url:a"])).await.unwrap();
    tx.insert_case_keys(second, &keys(&["url:b", "sha256:aa"]))
        .await
        .unwrap();
    tx.insert_case_keys(second, &[]).await.unwrap();
    assert_eq!(
        tx.open_case_with_keys(&keys(&["url:b"])).await.unwrap(),
        Some(second)
    );
    assert_eq!(
        tx.open_case_with_keys(&keys(&["url:b", "sha256:aa"]))
            .await
            .unwrap(),
        Some(first)
    );
    assert_eq!(
        tx.open_case_with_keys(&keys(&["url:zz"])).await.unwrap(),
        None
    );
    assert_eq!(tx.open_case_with_keys(&[]).await.unwrap(), None);
    // The PDQ keys stored since a mark, with whether their case is open.
    assert_eq!(tx.last_report_seq().await.unwrap(), second);
    assert_eq!(
        tx.pdq_keys_between(0, second).await.unwrap(),
        [(first, "fr-hotline".to_owned(), "0f0f".to_owned(), true)]
    );
    assert!(tx.pdq_keys_between(first, second).await.unwrap().is_empty());
    assert_eq!(
        tx.open_among(&[first, second, second + 7]).await.unwrap(),
        [first, second]
    );
    tx.set_joined(second, first).await.unwrap();
    assert_eq!(tx.open_among(&[first, second]).await.unwrap(), [first]);
    assert_eq!(
        tx.joined(first)
            .await
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect::<Vec<_>>(),
        [second]
    );
    // A joined report is no case of its own; a removed case is not open.
    assert_eq!(
        tx.open_case_with_keys(&keys(&["url:b"])).await.unwrap(),
        None
    );
    tx.set_status(first, "removed", 5).await.unwrap();
    assert_eq!(
        tx.open_case_with_keys(&keys(&["sha256:aa"])).await.unwrap(),
        None
    );
    assert_eq!(
        tx.pdq_keys_between(0, second).await.unwrap(),
        [(first, "fr-hotline".to_owned(), "0f0f".to_owned(), false)]
    );
    tx.audit(&entry("case.joined", "fr-hotline/r-2", 0), 5)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(s.joined(first).await.unwrap().len(), 1);
}

async fn purge_leaves_a_tombstone(b: &Backend) {
    let s = &b.store;
    let seq = insert(s, "fr-hotline", "r-1").await;
    let queued = insert(s, "fr-hotline", "r-2").await;
    let mut tx = s.begin().await.unwrap();
    tx.insert_submission("operator:fr/alice", "sub-1", seq)
        .await
        .unwrap();
    tx.insert_case_keys(seq, &["url:a".to_owned()])
        .await
        .unwrap();
    tx.insert_status(
        seq,
        "u-1",
        "delivered",
        "secret note",
        "operator:fr/alice",
        None,
        None,
        5,
    )
    .await
    .unwrap();
    tx.insert_status(
        seq,
        "u-2",
        "removed",
        "by peer",
        "node:de-hotline",
        Some("de-hotline"),
        Some(b"s"),
        6,
    )
    .await
    .unwrap();
    tx.insert_referral(seq, "u-1", "BKA", "ref", 5, "operator:fr/alice", 5)
        .await
        .unwrap();
    enqueue_kind(
        &mut tx,
        alertrelay::store::OUTBOX_SIGNED,
        "de-hotline",
        "report",
        false,
        queued,
        b"env",
        5,
    )
    .await
    .unwrap();
    tx.audit(&entry("x", "fr-hotline/r-1", 1), 5).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = s.begin().await.unwrap();
    assert!(tx.purge_report(seq, 9_000).await.unwrap());
    assert!(!tx.purge_report(seq, 9_001).await.unwrap(), "purged twice");
    assert!(
        !tx.purge_report(queued, 9_000).await.unwrap(),
        "still to be sent"
    );
    assert_eq!(
        tx.find_submission("operator:fr/alice", "sub-1")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        tx.open_case_with_keys(&["url:a".to_owned()]).await.unwrap(),
        None
    );
    tx.audit(&entry("retention.purged", "fr-hotline/r-1", 2), 9_000)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let r = s.report_by_seq(seq).await.unwrap().unwrap();
    assert!(r.payload().is_empty() && r.stored_payload.is_empty() && r.envelope.is_empty());
    assert_eq!(r.purged_at_ms, Some(9_000));
    assert_eq!(r.payload_digest, b"digest-32-bytes-digest-32-bytes!");
    let route: serde_json::Value = serde_json::from_str(&r.route).unwrap();
    assert_eq!(
        route,
        serde_json::json!({"kind": "peer", "destinations": ["de-hotline"], "purged": true})
    );
    let h = s.history(seq).await.unwrap();
    assert!(h.iter().all(|h| h.reason.is_empty()));
    assert_eq!(
        h.iter().map(|h| h.actor.as_str()).collect::<Vec<_>>(),
        ["operator (purged)", "node:de-hotline"]
    );
    assert!(s.signed_status_updates(seq).await.unwrap().is_empty());
    assert_eq!(
        s.referrals(seq).await.unwrap()[0].actor,
        "operator (purged)"
    );
    s.checkpoint_wal().await.unwrap();
    let q = s.report_by_seq(queued).await.unwrap().unwrap();
    assert_eq!(q.payload(), b"payload");
}

/// Appends `n` entries, one transaction each; returns their seqs.
async fn append(store: &Store, tag: u64, n: u64) -> Vec<i64> {
    let mut seqs = Vec::new();
    for i in 0..n {
        let mut tx = store.begin().await.unwrap();
        let seq = tx
            .audit(
                &entry("test.append", &format!("writer-{tag}"), i),
                1_000 + i as i64,
            )
            .await
            .unwrap();
        tx.commit().await.unwrap();
        seqs.push(seq);
    }
    seqs
}

async fn audit_append_and_read_back(b: &Backend) {
    let s = &b.store;
    assert_eq!(s.audit_entries_count().await.unwrap(), 0);
    let seqs = append(s, 0, 5).await;
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    let mut tx = s.begin().await.unwrap();
    tx.audit(
        &Entry::new(
            "case.read",
            "operator:de/alice",
            "fr/r-9",
            serde_json::json!({"why": "check"}),
        ),
        5_000,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let rows = s.audit_entries(0, 100).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(rows[5].detail, r#"{"why":"check"}"#);
    assert_eq!(s.audit_entries(4, 1).await.unwrap()[0].seq, 5);
    assert_eq!(s.audit_entries_about("fr/r-9").await.unwrap().len(), 1);
    assert_eq!(
        s.last_audit_of_kind("test.append")
            .await
            .unwrap()
            .unwrap()
            .seq,
        5
    );
    assert!(s.last_audit_of_kind("none").await.unwrap().is_none());

    // The stored leaf hashes are RFC 6962 leaves of exactly these entries.
    let mut leaves = Vec::new();
    s.fold_leaves(0, 6, |h| leaves.push(*h)).await.unwrap();
    let expected: Vec<[u8; 32]> = rows
        .iter()
        .map(|r| audit::leaf_hash(r.seq, r.at_ms, &r.kind, &r.actor, &r.subject, &r.detail))
        .collect();
    assert_eq!(leaves, expected);
    let mut first = Vec::new();
    s.fold_leaves(0, 2, |h| first.push(*h)).await.unwrap();
    assert_eq!(first, expected[..2]);
    let mut tx = s.begin().await.unwrap();
    assert_eq!(tx.audit_size().await.unwrap(), 6);
    let mut inside = Vec::new();
    tx.fold_leaves(0, 6, |h| inside.push(*h)).await.unwrap();
    assert_eq!(inside, expected);
    drop(tx);

    // `audit verify` recomputes the same chain and root from the database.
    let v = audit::verify(&b.db, &bare_context()).await.unwrap();
    assert_eq!(v.entries, 6);
    assert_eq!(v.root, hex::encode(audit::merkle::root(&expected)));
}

async fn rolled_back_transactions_leave_no_trace(b: &Backend) {
    let s = &b.store;
    append(s, 0, 2).await;
    {
        let mut tx = s.begin().await.unwrap();
        tx.insert_report(&report("fr-hotline", "gone", b"p"))
            .await
            .unwrap();
        assert_eq!(tx.audit(&entry("x", "y", 0), 1).await.unwrap(), 3);
        // Dropped without commit.
    }
    assert!(s.reports_by_id(None, "gone").await.unwrap().is_empty());
    assert_eq!(s.audit_entries_count().await.unwrap(), 2);
    // The next entry takes the free number: no gap.
    assert_eq!(append(s, 1, 1).await, [3]);
    audit::verify(&b.db, &bare_context()).await.unwrap();
}

async fn concurrent_writers_make_one_chain(b: &Backend) {
    const WRITERS: u64 = 8;
    const EACH: u64 = 25;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let s = b.store.clone();
            tokio::spawn(async move { append(&s, w, EACH).await })
        })
        .collect();
    let mut all = BTreeSet::new();
    for t in tasks {
        let seqs = t.await.unwrap();
        // Each writer's own entries come in its order.
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        all.extend(seqs);
    }
    let n = (WRITERS * EACH) as i64;
    assert_eq!(
        all,
        (1..=n).collect::<BTreeSet<_>>(),
        "one sequence, no gaps, no repeats"
    );
    let rows = s_entries(&b.store).await;
    assert_eq!(rows.len() as i64, n);
    // Every entry is chained to the one before it: the verifier agrees.
    let v = audit::verify(&b.db, &bare_context()).await.unwrap();
    assert_eq!(v.entries, n as u64);
    for w in 0..WRITERS {
        let mine: Vec<i64> = rows
            .iter()
            .filter(|r| r.subject == format!("writer-{w}"))
            .map(|r| r.seq)
            .collect();
        assert_eq!(mine.len() as u64, EACH);
    }
}

async fn s_entries(s: &Store) -> Vec<alertrelay::store::AuditRow> {
    s.audit_entries(0, 100_000).await.unwrap()
}

async fn checkpoints_cosignatures_and_witnessing(b: &Backend) {
    let s = &b.store;
    append(s, 0, 3).await;
    let root = [7u8; 32];
    let mut tx = s.begin().await.unwrap();
    assert!(tx.latest_checkpoint().await.unwrap().is_none());
    tx.insert_checkpoint(2, &[1u8; 32], "note-2", 10)
        .await
        .unwrap();
    tx.insert_checkpoint(3, &root, "note-3", 20).await.unwrap();
    assert_eq!(tx.latest_checkpoint().await.unwrap().unwrap().size, 3);
    assert!(
        tx.insert_cosignature(3, "de-hotline", "— de sig", 21)
            .await
            .unwrap()
    );
    assert!(
        !tx.insert_cosignature(3, "de-hotline", "— de sig again", 22)
            .await
            .unwrap()
    );
    assert!(
        tx.insert_cosignature(3, "at-hotline", "— at sig", 23)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    let cp = s.latest_checkpoint().await.unwrap().unwrap();
    assert_eq!(
        (cp.size, cp.root.as_slice(), cp.note.as_str()),
        (3, &root[..], "note-3")
    );
    assert_eq!(s.checkpoint(2).await.unwrap().unwrap().note, "note-2");
    assert!(s.checkpoint(9).await.unwrap().is_none());
    let cos = s.cosignatures(3).await.unwrap();
    assert_eq!(
        cos.iter()
            .map(|c| (c.witness.as_str(), c.timestamp))
            .collect::<Vec<_>>(),
        [("at-hotline", 23), ("de-hotline", 21)]
    );

    // Witnessing: an atomic check-and-store that only moves from what it was.
    let view = |size: i64, root: [u8; 32]| alertrelay::store::WitnessedRow {
        log: "fr-hotline".into(),
        size,
        root: root.to_vec(),
        note: format!("their note {size}"),
        cosignature: "our line".into(),
        updated_at_ms: size,
    };
    let mut tx = s.begin().await.unwrap();
    assert!(
        tx.advance_witnessed("fr-hotline", None, &view(5, [5; 32]))
            .await
            .unwrap()
    );
    assert!(
        !tx.advance_witnessed("fr-hotline", None, &view(6, [6; 32]))
            .await
            .unwrap()
    );
    assert!(
        !tx.advance_witnessed("fr-hotline", Some((4, &[5; 32])), &view(6, [6; 32]))
            .await
            .unwrap()
    );
    assert!(
        tx.advance_witnessed("fr-hotline", Some((5, &[5; 32])), &view(6, [6; 32]))
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    let w = s.witnessed("fr-hotline").await.unwrap().unwrap();
    assert_eq!((w.size, w.root), (6, vec![6; 32]));
    assert!(s.witnessed("nl-hotline").await.unwrap().is_none());
    s.ping().await.unwrap();
}

/// What one intake-shaped write transaction (report + outbox row + audit
/// entry, committed durably) costs on each backend, one writer and eight.
/// `cargo test --test store_conformance write_rates -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run on demand"]
async fn write_rates() {
    const N: usize = 1_000;
    let mut backends = vec![("sqlite", Backend::sqlite().await)];
    if let Some(b) = Backend::postgres("write_rates").await {
        backends.push(("postgres", b));
    }
    for (name, b) in backends {
        for writers in [1usize, 8] {
            let started = std::time::Instant::now();
            let tasks: Vec<_> = (0..writers)
                .map(|w| {
                    let s = b.store.clone();
                    tokio::spawn(async move {
                        for i in 0..N / writers {
                            let id = format!("w{writers}-{w}-{i}");
                            let mut tx = s.begin().await.unwrap();
                            let seq = tx
                                .insert_report(&report("fr-hotline", &id, &[7; 1024]))
                                .await
                                .unwrap();
                            enqueue_kind(
                                &mut tx,
                                alertrelay::store::OUTBOX_SIGNED,
                                "de-hotline",
                                "report",
                                false,
                                seq,
                                &[7; 1024],
                                1,
                            )
                            .await
                            .unwrap();
                            tx.audit(&entry("report.submitted", &id, 0), 1)
                                .await
                                .unwrap();
                            tx.commit().await.unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{name:<8} {writers} writer(s): {N} transactions in {:.2} s = {:.0}/s",
                secs,
                N as f64 / secs
            );
        }
        let v = audit::verify(&b.db, &bare_context()).await.unwrap();
        assert_eq!(v.entries, 2 * N as u64);
        b.finish().await;
    }
}

/// The batched statements of the hot paths (more rows than one statement
/// takes) store and find what the one-row methods would, in order, and the
/// audit entries they append chain on from and into single appends.
async fn batched_statements_do_what_one_at_a_time_does(b: &Backend) {
    let s = &b.store;
    let n = alertrelay::store::ROWS_PER_STATEMENT + 13;
    let ids: Vec<String> = (0..n).map(|i| format!("b-{i}")).collect();
    let single = insert(s, "fr", "single").await;
    let mut tx = s.begin().await.unwrap();
    let rows: Vec<NewReport> = ids.iter().map(|id| report("fr", id, b"p")).collect();
    let seqs = tx.insert_reports(&rows).await.unwrap();
    assert_eq!(seqs.len(), n);
    assert!(seqs.iter().all(|q| *q > single));
    let keys: Vec<(&str, &str)> = ids.iter().map(|id| ("fr", id.as_str())).collect();
    let found = tx.find_reports(&keys).await.unwrap();
    assert_eq!(found.len(), n);
    for r in &found {
        let i = ids.iter().position(|id| *id == r.report_id).unwrap();
        assert_eq!(r.seq, seqs[i], "seqs come back in the order given");
    }
    assert!(tx.find_reports(&[("fr", "nope")]).await.unwrap().is_empty());
    assert_eq!(tx.reports_by_seqs(&seqs[..3]).await.unwrap().len(), 3);

    // Destinations, queue, settle.
    let deliveries: Vec<NewDelivery> = seqs
        .iter()
        .map(|q| NewDelivery {
            seq: *q,
            destination: "de",
            next_hop: None,
        })
        .collect();
    tx.insert_deliveries(&deliveries).await.unwrap();
    tx.insert_deliveries(&deliveries[..1]).await.unwrap();
    let outbox: Vec<NewOutbox> = seqs
        .iter()
        .map(|q| NewOutbox {
            peer: "de",
            kind: "report",
            urgent: false,
            report_seq: *q,
            body: b"envelope",
            returned: alertrelay::store::OUTBOX_SIGNED,
        })
        .collect();
    tx.enqueue_many(&outbox, 3_000).await.unwrap();
    let via = tx.destinations_via_many(&seqs, "de").await.unwrap();
    assert_eq!(via.len(), n, "one destination each, inserted once");
    let statuses: Vec<NewStatus> = seqs
        .iter()
        .map(|q| NewStatus {
            seq: *q,
            update_id: format!("u-{q}"),
            status: "received",
            reason: "test",
            actor: "system",
        })
        .collect();
    tx.insert_statuses(&statuses, 3_000).await.unwrap();
    tx.insert_statuses(&statuses[..2], 3_000).await.unwrap();
    let entries: Vec<Entry> = (0..n as u64)
        .map(|i| entry("test.batch", "fr/b", i))
        .collect();
    tx.audit_many(&entries, 3_000).await.unwrap();
    tx.audit(&entry("test.after", "fr/b", 0), 3_000)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(s.history(seqs[0]).await.unwrap().len(), 1);

    let queued = s
        .outbox_lane("de", "report", false, n as i64 + 5)
        .await
        .unwrap();
    assert_eq!(queued.len(), n);
    let outbox_ids: Vec<i64> = queued.iter().map(|r| r.id).collect();
    let mut tx = s.begin().await.unwrap();
    let gone = tx.dequeue_many(&outbox_ids[..n - 1]).await.unwrap();
    assert_eq!(gone.len(), n - 1);
    assert!(tx.dequeue_many(&outbox_ids[..3]).await.unwrap().is_empty());
    let finished: Vec<FinishedDelivery> = seqs[..n - 1]
        .iter()
        .map(|q| FinishedDelivery {
            seq: *q,
            destination: "de",
            state: "delivered",
            receipt: b"receipt",
            reason: None,
        })
        .collect();
    tx.finish_deliveries(&finished, 4_000).await.unwrap();
    tx.set_status_many(&seqs[..n - 1], "queued", "delivered", 4_000)
        .await
        .unwrap();
    // Only from the status named.
    tx.set_status_many(&seqs, "received", "removed", 4_000)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    for (i, q) in seqs.iter().enumerate() {
        let r = s.report_by_seq(*q).await.unwrap().unwrap();
        let d = &s.deliveries(*q).await.unwrap()[0];
        if i < n - 1 {
            assert_eq!(
                (r.status.as_str(), d.state.as_str()),
                ("delivered", "delivered")
            );
            assert_eq!(d.receipt.as_deref(), Some(&b"receipt"[..]));
        } else {
            assert_eq!((r.status.as_str(), d.state.as_str()), ("queued", "queued"));
        }
    }
    assert_eq!(
        s.outbox_lane("de", "report", false, 10)
            .await
            .unwrap()
            .len(),
        1
    );

    // Content keys and submissions.
    let mut tx = s.begin().await.unwrap();
    let ck: Vec<(i64, &str)> = vec![
        (seqs[0], "url:a"),
        (seqs[1], "url:a"),
        (seqs[2], "sha256:b"),
    ];
    tx.insert_case_keys_many(&ck).await.unwrap();
    tx.insert_case_keys_many(&ck).await.unwrap();
    let subs: Vec<(&str, i64)> = vec![("s-1", seqs[0]), ("s-2", seqs[1])];
    tx.insert_submissions("operator:fr/a", &subs).await.unwrap();
    let mut back = tx
        .find_submissions("operator:fr/a", &["s-1", "s-2", "s-3"])
        .await
        .unwrap();
    back.sort();
    assert_eq!(
        back,
        [("s-1".to_owned(), seqs[0]), ("s-2".to_owned(), seqs[1])]
    );
    assert!(
        tx.find_submissions("operator:fr/b", &["s-1"])
            .await
            .unwrap()
            .is_empty()
    );
    tx.commit().await.unwrap();

    // One chain: `audit verify` recomputes it from the database.
    let v = audit::verify(&b.db, &bare_context()).await.unwrap();
    assert_eq!(v.entries, n as u64 + 2);
    let rows = s.audit_entries(0, 10_000).await.unwrap();
    assert_eq!(rows.len(), n + 2);
    assert!(rows.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    assert_eq!(rows.last().unwrap().kind, "test.after");
}

/// A report's payload is kept once: inside its envelope when the envelope
/// carries exactly those bytes, in its own column otherwise; either way it
/// reads back byte for byte, through one insert and through a batch.
async fn the_payload_is_stored_once_when_the_envelope_carries_it(b: &Backend) {
    use alertrelay::pb;
    use prost::Message;
    let s = &b.store;
    // Bytes that are no valid protobuf on their own: they are carried, not
    // re-encoded.
    let payload: Vec<u8> = (0..1500u32).map(|i| (i * 7 % 251) as u8).collect();
    let envelope = |payload: &[u8], hops: usize| {
        pb::Envelope {
            report: Some(pb::Signed {
                payload: payload.to_vec(),
                signer: "fr-hotline".into(),
                key_id: "k1".into(),
                signature: vec![9; 64],
                batch: None,
            }),
            hops: (0..hops)
                .map(|_| pb::Signed {
                    payload: b"hop".to_vec(),
                    ..Default::default()
                })
                .collect(),
        }
        .encode_to_vec()
    };
    let carried = envelope(&payload, 2);
    let other = envelope(b"another payload", 0);
    // What goes in the payload column is the caller's choice, made by
    // `payload_column` from the envelope (as the node makes it).
    let mut one = report("fr-hotline", "once-1", &payload);
    one.envelope = &carried;
    one.payload = payload_column(&payload, one.envelope);
    let mut tx = s.begin().await.unwrap();
    let seq = tx.insert_report(&one).await.unwrap();
    let mut many = Vec::new();
    for (i, id) in ["once-2", "once-3", "once-4"].into_iter().enumerate() {
        let mut r = report("fr-hotline", id, &payload);
        // The third's envelope carries other bytes: its payload keeps its
        // own column.
        r.envelope = if i == 2 { &other } else { &carried };
        r.payload = payload_column(&payload, r.envelope);
        many.push(r);
    }
    let seqs = tx.insert_reports(&many).await.unwrap();
    tx.commit().await.unwrap();
    for (seq, column_empty) in [
        (seq, true),
        (seqs[0], true),
        (seqs[1], true),
        (seqs[2], false),
    ] {
        let r = s.report_by_seq(seq).await.unwrap().unwrap();
        assert_eq!(r.payload(), payload.as_slice(), "report {seq}");
        assert_eq!(r.stored_payload.is_empty(), column_empty, "report {seq}");
    }
    assert_eq!(
        s.report_by_seq(seq).await.unwrap().unwrap().envelope,
        carried
    );
    assert_eq!(
        s.report_by_seq(seqs[2]).await.unwrap().unwrap().envelope,
        other
    );
    // A report with no envelope (the default row in this suite).
    let plain = insert(s, "fr-hotline", "once-5").await;
    let r = s.report_by_seq(plain).await.unwrap().unwrap();
    assert_eq!(
        (r.payload(), r.stored_payload.as_slice()),
        (&b"payload"[..], &b"payload"[..])
    );
}

/// Checkpoints and proofs read the audit log's leaf hashes a page at a
/// time: any page size gives the same leaves in the same order, any run of
/// them, and inside a transaction too.
async fn the_log_is_read_a_page_at_a_time_in_order(b: &Backend) {
    let s = &b.store;
    let mut tx = s.begin().await.unwrap();
    for n in 0..23 {
        tx.audit(&entry("paged", "x", n), 1_000).await.unwrap();
    }
    tx.commit().await.unwrap();
    let size = s.audit_entries_count().await.unwrap();
    assert!(size >= 23);
    let read = |after: u64, upto: u64, page: u64| async move {
        let mut out = Vec::new();
        let n = s
            .fold_leaves_paged(after, upto, page, |h| out.push(*h))
            .await
            .unwrap();
        assert_eq!(n as usize, out.len());
        out
    };
    let all = read(0, size, 1_000).await;
    assert_eq!(all.len() as u64, size);
    assert_eq!(
        all.iter().collect::<std::collections::HashSet<_>>().len(),
        all.len()
    );
    for page in [1, 2, 5, 7, 23] {
        assert_eq!(read(0, size, page).await, all, "page of {page}");
        assert_eq!(read(3, 17, page).await, all[3..17], "a run, page of {page}");
    }
    assert!(
        read(size, size + 10, 4).await.is_empty(),
        "nothing past the end"
    );
    // The whole log folds to the root of a checkpoint over it.
    let mut range = alertrelay::audit::merkle::CompactRange::new();
    let mut tx = s.begin().await.unwrap();
    assert_eq!(
        tx.fold_leaves(0, size, |h| range.push(h)).await.unwrap(),
        size
    );
    tx.rollback().await.unwrap();
    assert_eq!(range.root(), alertrelay::audit::merkle::root(&all));
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

fn account(name: &str, code_hash: &str) -> alertrelay::store::UserRow {
    alertrelay::store::UserRow {
        name: name.into(),
        role: "analyst".into(),
        state: "enrolling".into(),
        password_hash: None,
        totp_secret: None,
        totp_last_step: 0,
        enrol_code_hash: Some(code_hash.into()),
        enrol_expires_ms: 2_000,
        failures: 0,
        locked_until_ms: 0,
        created_at_ms: 1_000,
        created_by: "admin:FR-PDC/admin".into(),
        last_login_ms: None,
        language: None,
    }
}

/// The console's accounts: one per name, found by name and by enrolment
/// code, every changeable column saved, listed by name.
async fn accounts_are_stored_found_and_changed(b: &Backend) {
    let s = &b.store;
    let mut tx = s.begin().await.unwrap();
    assert!(tx.insert_user(&account("zoe", "h1")).await.unwrap());
    assert!(tx.insert_user(&account("adam", "h2")).await.unwrap());
    assert!(
        !tx.insert_user(&account("zoe", "h3")).await.unwrap(),
        "one per name"
    );
    tx.commit().await.unwrap();

    let mut tx = s.begin().await.unwrap();
    let mut zoe = tx.user_by_enrol_code("h1").await.unwrap().unwrap();
    assert_eq!(zoe.name, "zoe");
    assert!(tx.user_by_enrol_code("h3").await.unwrap().is_none());
    zoe.state = "active".into();
    zoe.password_hash = Some("$argon2id$x".into());
    zoe.totp_secret = Some("JBSWY3DPEHPK3PXP".into());
    zoe.totp_last_step = 59_000_000;
    zoe.enrol_code_hash = None;
    zoe.failures = 5;
    zoe.locked_until_ms = i64::MAX / 2;
    zoe.last_login_ms = Some(3_000);
    zoe.language = Some("fr".into());
    assert!(tx.save_user(&zoe).await.unwrap());
    assert!(!tx.save_user(&account("nobody", "h4")).await.unwrap());
    tx.commit().await.unwrap();

    let back = s.user("zoe").await.unwrap().unwrap();
    assert_eq!(
        (
            back.state.as_str(),
            back.password_hash.as_deref(),
            back.totp_secret.as_deref()
        ),
        ("active", Some("$argon2id$x"), Some("JBSWY3DPEHPK3PXP"))
    );
    assert_eq!(
        back.language.as_deref(),
        Some("fr"),
        "the person's language"
    );
    assert_eq!(
        (
            back.totp_last_step,
            back.failures,
            back.locked_until_ms,
            back.last_login_ms
        ),
        (59_000_000, 5, i64::MAX / 2, Some(3_000))
    );
    assert_eq!(back.enrol_code_hash, None);
    let names: Vec<String> = s
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["adam", "zoe"]);
}
