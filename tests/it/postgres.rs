//! Whole nodes on PostgreSQL (the real server, a fresh database per node,
//! dropped afterwards; skipped with the reason when the server cannot be
//! reached), and moving an existing SQLite node there with
//! `alertrelay db migrate-to`.

use std::path::Path;

use crate::common::pg::TestDb;
use crate::common::*;
use alertrelay::pb;
use alertrelay::store::{Database, Store};

const AB: &[(&str, &[&str])] = &[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])];

/// `alertrelay audit verify --offline --json` on a stopped node.
async fn audit_verify(config: &Path) -> serde_json::Value {
    let (code, out, err) = cli(&[
        "audit",
        "verify",
        "--config",
        arg(config),
        "--offline",
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    v
}

async fn set_status(
    client: &mut pb::operator_client::OperatorClient<tonic::transport::Channel>,
    id: &str,
    status: &str,
) {
    client
        .update_case(pb::UpdateCaseRequest {
            id: id.into(),
            status: status.into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_federation_on_postgres_delivers_end_to_end_and_its_audit_logs_verify() {
    let Some(fr_db) = TestDb::create("a_federation_on_postgres").await else {
        return;
    };
    let de_db = TestDb::create("a_federation_on_postgres").await.unwrap();
    let mut fed = Federation::builder(AB)
        .database(0, &fr_db.url)
        .database(1, &de_db.url)
        .start()
        .await;
    assert_eq!(
        fed.configs[0].database,
        Database::Postgres(fr_db.url.clone())
    );
    let (mut fr, mut de) = (fed.operator(0), fed.operator(1));

    let id = submit(&mut fr, &format!("http://{DE_IP}/on/postgres"), "")
        .await
        .report_id;
    let sent = wait_case(&fr, &id, 15, |c| c.status == "delivered").await;
    assert_eq!(sent.deliveries[0].state, "delivered");
    assert!(
        sent.deliveries[0].receipt.is_some(),
        "the signed receipt is stored"
    );
    let got = wait_case(&de, &id, 15, |c| c.status == "received").await;
    assert_eq!(got.origin, "FR-PDC");
    // The receiver's status change travels back, signed.
    set_status(&mut de, &id, "in-review").await;
    let seen = wait_case(&fr, &id, 15, |c| c.status == "in-review").await;
    assert!(
        seen.history
            .iter()
            .any(|h| h.status == "in-review" && h.signer == "DE-ECO"),
        "{seen:?}"
    );
    // An exact resubmission from the analyst's tool is one report, not two.
    let mut again = fed.operator(0);
    let first = again
        .submit_report(pb::SubmitReportRequest {
            urls: vec![format!("http://{DE_IP}/idempotent")],
            category: "csam".into(),
            priority: pb::Priority::Urgent as i32,
            submission_id: "sub-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let second = again
        .submit_report(pb::SubmitReportRequest {
            urls: vec![format!("http://{DE_IP}/idempotent")],
            category: "csam".into(),
            priority: pb::Priority::Urgent as i32,
            submission_id: "sub-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.report_id, second.report_id);
    // (The receiver knows a case only once it is delivered.)
    wait_case(&fr, &first.report_id, 15, |c| c.status == "delivered").await;
    wait_case(&de, &first.report_id, 15, |c| c.status == "received").await;
    // Let the checkpoints and cosignatures of both logs be written.
    eventually(
        15,
        || async {
            let store = Store::connect(&Database::Postgres(fr_db.url.clone()))
                .await
                .unwrap();
            let cp = store.latest_checkpoint().await.unwrap();
            let cos = match &cp {
                Some(c) => store.cosignatures(c.size as u64).await.unwrap().len(),
                None => 0,
            };
            store.close().await;
            cos
        },
        |n| *n > 0,
    )
    .await;
    let configs: Vec<_> = (0..2).map(|i| fed.config_path(i)).collect();
    fed.stop(0).await;
    fed.stop(1).await;

    // Nothing went to a SQLite file; everything is in PostgreSQL.
    assert!(!configs[0].parent().unwrap().join("node.db").exists());
    let store = Store::connect(&Database::Postgres(de_db.url.clone()))
        .await
        .unwrap();
    assert_eq!(
        store
            .reports_by_id(Some("FR-PDC"), &id)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .reports_by_id(None, &first.report_id)
            .await
            .unwrap()
            .len(),
        1
    );
    store.close().await;

    // The audit export and inclusion proofs read PostgreSQL too.
    let (code, out, err) = cli(&["audit", "export", "--config", arg(&configs[1])]).await;
    assert_eq!(code, 0, "{err}");
    let exported: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        exported.iter().any(|e| e["kind"] == "report.received"),
        "{out}"
    );
    let (code, out, err) = cli(&[
        "audit",
        "prove",
        "1",
        "--config",
        arg(&configs[0]),
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let proof = fed.dir.path().join("proof.json");
    std::fs::write(&proof, out).unwrap();
    let directory = fed.dir.path().join("directory.toml");
    let (code, out, err) = cli(&[
        "audit",
        "verify-proof",
        arg(&proof),
        "--directory",
        arg(&directory),
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("VALID"), "{out}");

    for config in &configs {
        let v = audit_verify(config).await;
        assert!(v["entries"].as_u64().unwrap() >= 3, "{v}");
        assert!(v["checkpoints"].as_u64().unwrap() >= 1, "{v}");
    }
    let v = audit_verify(&configs[0]).await;
    assert!(v["cosignatures"].as_u64().unwrap() >= 1, "{v}");
}

#[tokio::test]
async fn a_sqlite_node_moves_to_postgres_with_its_audit_log_intact() {
    let Some(pg) = TestDb::create("a_sqlite_node_moves_to_postgres").await else {
        return;
    };
    let mut fed = Federation::start(AB).await;
    let (mut fr, de) = (fed.operator(0), fed.operator(1));
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = submit(&mut fr, &format!("http://{DE_IP}/before/{i}"), "")
            .await
            .report_id;
        wait_case(&fr, &id, 15, |c| c.status == "delivered").await;
        ids.push(id);
    }
    let config = fed.config_path(0);
    let sqlite = fed.database(0);
    eventually(
        15,
        || async {
            let store = Store::open(&sqlite).await.unwrap();
            let cp = store.latest_checkpoint().await.unwrap();
            store.close().await;
            cp.map(|c| c.size)
        },
        |size| size.is_some(),
    )
    .await;
    fed.stop(0).await;
    let before = audit_verify(&config).await;

    // A URL that is no PostgreSQL URL is refused before anything happens.
    let (code, _, err) = cli(&["db", "migrate-to", "mysql://x/y", "--config", arg(&config)]).await;
    assert_eq!(code, 64, "{err}");

    let (code, out, err) = cli(&[
        "db",
        "migrate-to",
        &pg.url,
        "--config",
        arg(&config),
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let moved: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(moved["ok"], true, "{moved}");
    assert_eq!(moved["root"], before["root"], "same audit log, same root");
    assert_eq!(moved["entries"], before["entries"]);
    assert_eq!(moved["checkpoints"], before["checkpoints"]);
    let rows = |t: &str| {
        moved["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["table"] == t)
            .unwrap()["rows"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(rows("reports"), 3);
    assert_eq!(rows("audit_log"), before["entries"].as_u64().unwrap());

    // Into a database that is no longer empty, nothing is copied.
    let (code, out, err) = cli(&["db", "migrate-to", &pg.url, "--config", arg(&config)]).await;
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("not empty"), "{err}");

    // The node runs on the copy: old cases are there, new ones flow, and
    // the log goes on from where it was.
    fed.set(0, "database", pg.url.as_str());
    fed.restart(0).await;
    let mut fr = fed.operator(0);
    for id in &ids {
        let c = case(&mut fr, id).await;
        assert_eq!(c.status, "delivered");
    }
    let id = submit(&mut fr, &format!("http://{DE_IP}/after"), "")
        .await
        .report_id;
    wait_case(&fr, &id, 15, |c| c.status == "delivered").await;
    wait_case(&de, &id, 15, |c| c.status == "received").await;
    fed.stop(0).await;
    fed.stop(1).await;
    let after = audit_verify(&config).await;
    assert!(
        after["entries"].as_u64().unwrap() > before["entries"].as_u64().unwrap(),
        "{after}"
    );
}
