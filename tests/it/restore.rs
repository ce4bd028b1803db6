//! `alertrelay db restore`: refused while the node runs and for a backup
//! that does not verify (nothing changed), then a real restore of a real
//! backup file: the old database kept, the restore audited, the rollback
//! announced loudly. Real nodes, real SQLite files, the built binary.

use std::path::Path;

use crate::common::*;

const AB: &[(&str, &[&str])] = &[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])];

/// The audit entries of the database `config` points at, as `audit
/// verify --offline --json` counts them.
async fn entries(config: &Path) -> u64 {
    let (code, stdout, err) = cli(&[
        "audit",
        "verify",
        "--config",
        arg(config),
        "--offline",
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "{stdout}{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    v["entries"].as_u64().unwrap()
}

/// The largest size of the log a witness cosigned, as `audit verify
/// --offline --json` reads it from the database `config` points at.
async fn cosigned(config: &Path) -> u64 {
    let (code, stdout, err) = cli(&[
        "audit",
        "verify",
        "--config",
        arg(config),
        "--offline",
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "{stdout}{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    v["cosigned_size"].as_u64().unwrap()
}

async fn restore(config: &Path, from: &Path) -> (i32, String, String) {
    cli(&[
        "db",
        "restore",
        "--config",
        arg(config),
        "--from",
        arg(from),
    ])
    .await
}

#[tokio::test]
async fn restore_is_refused_while_the_node_runs_then_restores_audits_and_warns_of_the_rollback() {
    let mut fed = Federation::start(AB).await;
    let mut fr = fed.operator(0);
    let cfg = fed.config_path(0);
    let dir = cfg.parent().unwrap().to_path_buf();
    let before = submit(&mut fr, &format!("http://{DE_IP}/before"), "").await;
    wait_case(&fr, &before.report_id, 10, |c| c.status == "delivered").await;
    let backup = fed.dir.path().join("backup.db");
    let (code, stdout, err) =
        cli(&["db", "backup", "--config", arg(&cfg), "--out", arg(&backup)]).await;
    assert_eq!(code, 0, "{stdout}{err}");
    // Work after the backup, witnessed by the peer.
    let after = submit(&mut fr, &format!("http://{DE_IP}/after"), "").await;
    wait_case(&fr, &after.report_id, 10, |c| c.status == "delivered").await;
    // Until a witness has cosigned the entries after the backup, no one
    // could tell a rollback from a log that never had them.
    let n = entries(&cfg).await;
    eventually(15, || cosigned(&cfg), |size| *size >= n).await;

    // While the node runs: refused, nothing changed.
    let live = entries(&cfg).await;
    let (code, _, err) = restore(&cfg, &backup).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("in use by a running node"), "{err}");
    fed.stop(0).await;
    let held = entries(&cfg).await;
    assert!(held >= live);

    // A missing file, and the database itself: usage errors.
    let (code, _, err) = restore(&cfg, &dir.join("nope.db")).await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--from"), "{err}");
    let (code, _, err) = restore(&cfg, &dir.join("node.db")).await;
    assert_eq!(code, 64, "{err}");
    // A backup that is not a database, and one whose audit log was
    // tampered with: verification fails (exit 2), nothing changed.
    let junk = fed.dir.path().join("junk.db");
    std::fs::write(&junk, b"not a database").unwrap();
    let (code, _, err) = restore(&cfg, &junk).await;
    assert_eq!(code, 2, "{err}");
    let tampered = fed.dir.path().join("tampered.db");
    std::fs::copy(&backup, &tampered).unwrap();
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", arg(&tampered)))
        .await
        .unwrap();
    sqlx::query("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 1")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let (code, _, err) = restore(&cfg, &tampered).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not verify"), "{err}");
    assert_eq!(
        entries(&cfg).await,
        held,
        "a refused restore changed the database"
    );
    let backup_entries = entries_of(&backup, &cfg).await;
    assert!(backup_entries < held);

    // The restore: the old database kept, the backup in place, the
    // restore audited, the rollback announced.
    let (code, stdout, err) = restore(&cfg, &backup).await;
    assert_eq!(code, 0, "{stdout}{err}");
    assert!(
        err.contains("WARNING: THE AUDIT LOG IS ROLLED BACK"),
        "{err}"
    );
    assert!(err.contains("docs/operations.md"), "{err}");
    assert_eq!(entries(&cfg).await, backup_entries + 1);
    let (code, exported, err) = cli(&["audit", "export", "--config", arg(&cfg)]).await;
    assert_eq!(code, 0, "{err}");
    let last = exported.lines().last().unwrap();
    assert!(last.contains("db.restored"), "{last}");
    assert!(last.contains("cli:db-restore"), "{last}");
    let kept = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("node.db.before-restore-")
                && !name.ends_with("-wal")
                && !name.ends_with("-shm")
        })
        .expect("the replaced database is kept");
    assert!(stdout.contains(&kept.display().to_string()), "{stdout}");
    // Nothing acknowledged is lost: the replaced database still holds
    // everything, the report made after the backup included.
    assert_eq!(entries_of(&kept, &cfg).await, held);
    // What the warning says the witnesses do: once the restored node
    // signs a checkpoint of its new entries, the peer refuses it as a
    // rollback or fork, and this node hears of it.
    fed.restart(0).await;
    // The backup was taken while the node ran: its last start has no
    // clean stop after it, but the restore is recorded: no crash alert.
    let raised = fed.core(0).store.alerts().await.unwrap();
    assert!(
        raised.iter().all(|a| a.event != "crash_restart"),
        "{raised:#?}"
    );
    let mut fr = fed.operator(0);
    submit(&mut fr, &format!("http://{DE_IP}/restored"), "").await;
    eventually(
        40,
        || fed.metrics(1),
        |p| p.contains("alertrelay_witness_events_total{peer=\"FR-PDC\",event=\"refused\"}"),
    )
    .await;
    eventually(
        15,
        || fed.metrics(0),
        |p| p.contains("alertrelay_witness_events_total{peer=\"DE-ECO\",event=\"refused_us\"}"),
    )
    .await;
    fed.shutdown().await;
}

/// The audit entries of database `db`, verified with `config`'s keys.
async fn entries_of(db: &Path, config: &Path) -> u64 {
    let other = config.with_file_name("other.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(config).unwrap().replace(
            "database = \"node.db\"",
            &format!("database = {:?}", arg(db)),
        ),
    )
    .unwrap();
    entries(&other).await
}

/// `pg_dump`/`pg_restore` of a PostgreSQL node, as docs/operations.md
/// tells: stop the node, dump, restore into an empty database, point
/// `database` at it, `audit verify` (offline and against the witnesses),
/// start. The restored node has its cases and its witnesses accept it.
#[tokio::test]
async fn a_postgresql_node_restored_with_pg_dump_and_pg_restore_verifies_and_runs() {
    let test = "a_postgresql_node_restored_with_pg_dump_and_pg_restore_verifies_and_runs";
    let Some(original) = crate::common::pg::TestDb::create(test).await else {
        return;
    };
    let restored = crate::common::pg::TestDb::create(test).await.unwrap();
    let mut fed = Federation::builder(AB)
        .database(0, &original.url)
        .start()
        .await;
    let mut fr = fed.operator(0);
    let id = submit(&mut fr, &format!("http://{DE_IP}/pg/restore"), "")
        .await
        .report_id;
    wait_case(&fr, &id, 15, |c| c.status == "delivered").await;
    fed.stop(0).await;

    let dump = tempfile::tempdir().unwrap();
    let file = dump.path().join("node.dump");
    let run = |cmd: &mut std::process::Command| {
        let out = cmd.output().expect("run the PostgreSQL client");
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(std::process::Command::new("pg_dump")
        .args(["--format=custom", "--no-owner", "--file"])
        .arg(&file)
        .arg(&original.url));
    run(std::process::Command::new("pg_restore")
        .args(["--no-owner", "--exit-on-error"])
        .arg(format!("--dbname={}", restored.url))
        .arg(&file));
    fed.set(0, "database", restored.url.as_str());

    let config = fed.config_path(0);
    let (code, out, err) = cli(&["audit", "verify", "--config", arg(&config), "--offline"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = cli(&["audit", "verify", "--config", arg(&config)]).await;
    assert_eq!(code, 0, "{out}{err}");
    fed.restart(0).await;
    let fr = fed.operator(0);
    wait_case(&fr, &id, 15, |c| c.status == "delivered").await;
    fed.shutdown().await;
}
