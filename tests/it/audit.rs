//! `alertrelay audit verify` recomputes the log from the database file and
//! names the first bad thing: rows edited, deleted, inserted or reordered
//! (naively, or re-hashed by an insider who holds the database), a
//! truncated tail; and inclusion proofs round-trip through the CLI.

use std::path::{Path, PathBuf};

use crate::common::*;
use alertrelay::audit::{GENESIS, entry_hash, leaf_hash};
use alertrelay::pb;
use sqlx::Connection;

async fn connect(db: &Path) -> sqlx::SqliteConnection {
    sqlx::sqlite::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap()
}

async fn tamper(db: &Path, sql: &str) {
    let mut conn = connect(db).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

type Row = (i64, i64, String, String, String, String);

/// What an insider with the database and the code can do: rewrite the
/// entries and recompute every chain and leaf hash so the log is
/// self-consistent again.
async fn rewrite(db: &Path, edit: impl FnOnce(&mut Vec<Row>)) {
    let mut conn = connect(db).await;
    let mut rows: Vec<Row> = sqlx::query_as(
        "SELECT seq, at_ms, kind, actor, subject, detail FROM audit_log ORDER BY seq",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    edit(&mut rows);
    sqlx::query("DELETE FROM audit_log")
        .execute(&mut conn)
        .await
        .unwrap();
    let mut prev = GENESIS.to_vec();
    for (i, (_, at, kind, actor, subject, detail)) in rows.iter().enumerate() {
        let seq = i as i64 + 1;
        let hash = entry_hash(&prev, seq, *at, kind, actor, subject, detail);
        let leaf = leaf_hash(seq, *at, kind, actor, subject, detail);
        sqlx::query("INSERT INTO audit_log (seq, at_ms, kind, actor, subject, detail, prev_hash, hash, leaf_hash) VALUES (?,?,?,?,?,?,?,?,?)")
            .bind(seq).bind(at).bind(kind).bind(actor).bind(subject).bind(detail)
            .bind(&prev).bind(hash.as_slice()).bind(leaf.as_slice())
            .execute(&mut conn).await.unwrap();
        prev = hash.to_vec();
    }
    conn.close().await.unwrap();
}

fn verify(config: &Path) -> (i32, String, String) {
    cli_blocking(&[
        "audit",
        "verify",
        "--offline",
        "--config",
        config.to_str().unwrap(),
    ])
}

/// Runs a two-node federation, delivers three reports, gets FR's log
/// checkpointed and cosigned, stops everything; returns FR's config and db.
async fn logged_federation() -> (Federation, PathBuf, PathBuf) {
    let mut fed = Federation::start(&[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])]).await;
    let mut fr = fed.operator(0);
    for i in 0..3 {
        let id = submit(&mut fr, &format!("http://{DE_IP}/{i}"), "")
            .await
            .report_id;
        wait_case(&fr, &id, 10, |c| c.status == "delivered").await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut admin = fed.admin(0);
    loop {
        let note = admin
            .make_checkpoint(pb::MakeCheckpointRequest {})
            .await
            .unwrap()
            .into_inner()
            .note;
        if note.matches('\u{2014}').count() >= 2 {
            break; // signed by FR and cosigned by DE
        }
        assert!(std::time::Instant::now() < deadline, "never cosigned");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    fed.stop(0).await;
    fed.stop(1).await;
    let (config, db) = (fed.config_path(0), fed.database(0));
    (fed, config, db)
}

#[tokio::test]
async fn audit_verify_detects_every_kind_of_tampering() {
    let (_fed, config, db) = logged_federation().await;
    let (code, out, err) = verify(&config);
    assert_eq!(code, 0, "an untouched log verifies: {out}{err}");
    // At least one checkpoint, cosigned (the schedule may have made more).
    let count = |word: &str| -> u32 {
        let before = out.split(word).next().unwrap_or_default();
        before
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(count(" signed checkpoints") >= 1, "{out}");
    assert!(count(" cosignatures") >= 1, "{out}");

    let pristine = std::fs::read(&db).unwrap();
    let restore = || {
        std::fs::write(&db, &pristine).unwrap();
        let _ = std::fs::remove_file(db.with_extension("db-wal"));
        let _ = std::fs::remove_file(db.with_extension("db-shm"));
    };

    // Naive edits, caught by the chain and the leaf hashes.
    let naive = [
        (
            "UPDATE audit_log SET actor = 'operator:FR-PDC/someone-else' WHERE seq = 3",
            "audit entry 3:",
            "edited",
        ),
        (
            "DELETE FROM audit_log WHERE seq = 4",
            "audit entry 5:",
            "deleted",
        ),
        (
            "UPDATE audit_log SET seq = -1 WHERE seq = 2;
             UPDATE audit_log SET seq = 2 WHERE seq = 3;
             UPDATE audit_log SET seq = 3 WHERE seq = -1;",
            "audit entry 2:",
            "previous-hash",
        ),
        (
            "UPDATE audit_log SET leaf_hash = zeroblob(32) WHERE seq = 2",
            "audit entry 2:",
            "Merkle leaf",
        ),
    ];
    for (sql, place, word) in naive {
        restore();
        tamper(&db, sql).await;
        let (code, out, err) = verify(&config);
        assert_eq!(code, 2, "{sql}: {out}{err}");
        assert!(err.contains(place) && err.contains(word), "{sql}: {err}");
    }

    // An insider who re-hashes everything after the change is caught by the
    // signed checkpoint.
    type Edit = Box<dyn FnOnce(&mut Vec<Row>)>;
    let rehashed: Vec<(&str, Edit)> = vec![
        (
            "edited",
            Box::new(|rows: &mut Vec<Row>| rows[2].5 = "{}".into()),
        ),
        (
            "deleted",
            Box::new(|rows: &mut Vec<Row>| {
                rows.remove(3);
            }),
        ),
        (
            "inserted",
            Box::new(|rows: &mut Vec<Row>| {
                let mut forged = rows[1].clone();
                forged.2 = "report.submitted".into();
                rows.insert(2, forged);
            }),
        ),
        ("reordered", Box::new(|rows: &mut Vec<Row>| rows.swap(1, 2))),
    ];
    for (what, edit) in rehashed {
        restore();
        rewrite(&db, edit).await;
        let (code, out, err) = verify(&config);
        assert_eq!(code, 2, "{what}: {out}{err}");
        assert!(err.contains("checkpoint of size"), "{what}: {err}");
        assert!(
            err.contains("rewritten") || err.contains("deleted"),
            "{what}: {err}"
        );
    }

    // The tail cut off after a checkpoint covered it.
    restore();
    tamper(&db, "DELETE FROM audit_log WHERE seq > 3").await;
    let (code, _, err) = verify(&config);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("tail truncated") && err.contains("only 3 entries"),
        "{err}"
    );

    // A forged cosignature.
    restore();
    tamper(
        &db,
        "UPDATE cosignatures SET line = replace(line, substr(line, -12, 6), 'AAAAAA')",
    )
    .await;
    let (code, _, err) = verify(&config);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cosignature of DE-ECO"), "{err}");
}

#[tokio::test]
async fn a_rewritten_log_is_never_signed_over_and_the_node_will_not_start_on_it() {
    let (mut fed, _config, db) = logged_federation().await;
    fed.restart(0).await;
    // Rewritten under the running node.
    rewrite(&db, |rows| rows[1].5 = "{\"rewritten\":true}".into()).await;
    let err = fed
        .admin(0)
        .make_checkpoint(pb::MakeCheckpointRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("no longer matches checkpoint"),
        "{}",
        err.message()
    );
    // And at the next start, the integrity check refuses to go on.
    fed.stop(0).await;
    let err = fed.try_restart(0).await.expect_err("start refused");
    assert!(err.to_string().contains("audit log integrity"), "{err}");
    assert!(
        format!("{err:?}").contains("no longer hashes to the root"),
        "{err:?}"
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn inclusion_proofs_round_trip_through_the_cli_and_catch_any_change() {
    let (fed, config, _db) = logged_federation().await;
    let config = config.to_str().unwrap();
    // A delivery receipt: proof that DE-ECO took a report over. (Reads of
    // cases are audited too, so find its number.)
    let (_, log, _) = cli_blocking(&["audit", "export", "--config", config]);
    let seq = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["kind"] == "delivery.receipt")
        .unwrap()["seq"]
        .as_i64()
        .unwrap();
    let seq_s = seq.to_string();
    let (code, proof, err) =
        cli_blocking(&["audit", "prove", &seq_s, "--config", config, "--json"]);
    assert_eq!(code, 0, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proof.json");
    std::fs::write(&file, &proof).unwrap();
    let directory = fed.configs[0].directory_path.to_str().unwrap().to_owned();
    let file_s = file.to_str().unwrap();
    let (code, out, err) =
        cli_blocking(&["audit", "verify-proof", file_s, "--directory", &directory]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with(&format!("VALID: entry {seq} (delivery.receipt")),
        "{out}"
    );
    assert!(out.contains("cosigned by DE-ECO"), "{out}");

    let mut bundle: serde_json::Value = serde_json::from_str(&proof).unwrap();
    let tampered = [
        ("/entry/detail", serde_json::json!("{}")),
        ("/entry/actor", serde_json::json!("node:NL-EOKM")),
        (
            "/tree_size",
            serde_json::json!(bundle["tree_size"].as_u64().unwrap() + 1),
        ),
        ("/leaf_index", serde_json::json!(seq)),
    ];
    for (pointer, value) in tampered {
        let mut b = bundle.clone();
        *b.pointer_mut(pointer).unwrap() = value;
        std::fs::write(&file, b.to_string()).unwrap();
        let (code, out, err) =
            cli_blocking(&["audit", "verify-proof", file_s, "--directory", &directory]);
        assert_eq!(code, 2, "{pointer}: {out}{err}");
        assert!(err.contains("INVALID"), "{err}");
    }
    let h = bundle["inclusion_proof"][0].as_str().unwrap().to_owned();
    let flipped = format!("{}{}", if h.starts_with('0') { "1" } else { "0" }, &h[1..]);
    bundle["inclusion_proof"][0] = serde_json::json!(flipped);
    std::fs::write(&file, bundle.to_string()).unwrap();
    assert_eq!(
        cli_blocking(&["audit", "verify-proof", file_s, "--directory", &directory]).0,
        2
    );

    // The export has every entry, in order, with its leaf hash.
    let (code, out, _) = cli_blocking(&["audit", "export", "--config", config]);
    assert_eq!(code, 0);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 7);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["seq"], i as i64 + 1);
        assert_eq!(l["leaf_hash"].as_str().unwrap().len(), 64);
    }
    assert!(!out.contains("http://"), "no reported URL in the audit log");
}

/// The `alertrelay_checkpoint_leaves_read_total` sample of `pass`.
fn leaves_read(page: &str, pass: &str) -> u64 {
    let prefix = format!("alertrelay_checkpoint_leaves_read_total{{pass=\"{pass}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn a_checkpoint_after_a_restart_reads_new_entries_once_and_outside_the_writer_lock() {
    // No scheduled checkpoints: only the two asked for below.
    let mut fed = Federation::builder(&[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])])
        .quiet_audit()
        .start()
        .await;
    let checkpoint = |fed: &Federation| {
        let mut admin = fed.admin(0);
        async move {
            let note = admin
                .make_checkpoint(pb::MakeCheckpointRequest {})
                .await
                .unwrap()
                .into_inner()
                .note;
            let size: u64 = note.lines().nth(1).unwrap().parse().unwrap();
            size
        }
    };
    let mut fr = fed.operator(0);
    for i in 0..3 {
        submit(&mut fr, &format!("http://{DE_IP}/before-{i}"), "").await;
    }
    let old = checkpoint(&fed).await;
    fed.stop(0).await;
    fed.restart(0).await;
    let mut fr = fed.operator(0);
    for i in 0..3 {
        submit(&mut fr, &format!("http://{DE_IP}/after-{i}"), "").await;
    }
    // Entries the node's own background work writes may land while the
    // checkpoint is made; those written before it was asked for may not
    // be read under the writer lock.
    let written = fr
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .audit_entries;
    let size = checkpoint(&fed).await;
    assert!(size > old, "a new checkpoint after {old}");
    let page = fed.metrics(0).await;
    let (ahead, sign) = (leaves_read(&page, "ahead"), leaves_read(&page, "sign"));
    assert_eq!(
        ahead + sign,
        size - old,
        "only the entries since checkpoint {old} were read, each once: {page}"
    );
    assert!(
        ahead >= written - old,
        "the {} entries written before the checkpoint was asked for were read outside the writer lock, not under it (ahead {ahead}, under the lock {sign}): {page}",
        written - old
    );
    assert_eq!(
        leaves_read(&page, "check"),
        old,
        "an admin's checkpoint checks the whole log again, outside the writer lock"
    );
    fed.shutdown().await;
}
