//! `alertrelay audit verify` recomputes the chain from the database file
//! and names the first bad entry when rows were edited, deleted or
//! reordered.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use sqlx::Connection;

async fn tamper(db: &Path, sql: &str) {
    let mut conn = sqlx::sqlite::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

fn verify(config: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_alertrelay"))
        .args(["audit", "verify", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn audit_verify_detects_edited_deleted_and_reordered_rows() {
    let mut fed = Federation::start(&[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])]).await;
    let mut fr = fed.operator(0);
    for i in 0..3 {
        let id = submit(&mut fr, &format!("http://{DE_IP}/{i}"), "")
            .await
            .report_id;
        wait_case(&fr, &id, 10, |c| c.status == "delivered").await;
    }
    fed.stop(0).await;
    fed.stop(1).await;

    let config = fed.config_path(0);
    let db = fed.database(0);
    let (code, out, _) = verify(&config);
    assert_eq!(code, 0, "an untouched log verifies: {out}");
    assert!(out.contains("verifies"), "{out}");

    let pristine = std::fs::read(&db).unwrap();
    let restore = || {
        std::fs::write(&db, &pristine).unwrap();
        let _ = std::fs::remove_file(db.with_extension("db-wal"));
        let _ = std::fs::remove_file(db.with_extension("db-shm"));
    };
    let cases = [
        // An insider edits what an entry says.
        (
            "UPDATE audit_log SET actor = 'operator:FR-PDC/someone-else' WHERE seq = 3",
            3,
            "edited",
        ),
        // ... or deletes an entry.
        ("DELETE FROM audit_log WHERE seq = 4", 5, "deleted"),
        // ... or swaps two entries' contents and hashes.
        (
            "UPDATE audit_log SET seq = -1 WHERE seq = 2;
             UPDATE audit_log SET seq = 2 WHERE seq = 3;
             UPDATE audit_log SET seq = 3 WHERE seq = -1;",
            2,
            "",
        ),
        // ... or edits and re-hashes one row (the next row's link breaks).
        (
            "UPDATE audit_log SET hash = zeroblob(32) WHERE seq = 2",
            2,
            "edited",
        ),
    ];
    for (sql, bad, word) in cases {
        restore();
        tamper(&db, sql).await;
        let (code, out, err) = verify(&config);
        assert_eq!(code, 2, "{sql}: {out}{err}");
        assert!(err.contains(&format!("entry {bad}:")), "{sql}: {err}");
        assert!(err.contains(word), "{sql}: {err}");
    }
}
