//! `alertrelay db restore --from FILE`: puts a `db backup` copy back in
//! place of a stopped SQLite node's database. The backup's audit log is
//! verified before anything changes; the current database is kept beside
//! it (never deleted); the restore is recorded in the restored log; and a
//! backup smaller than what the witnesses cosigned is reported loudly as
//! the rollback it is (docs/operations.md, "Restoring from a backup").

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow};

use super::{EXIT_INVALID, Failure, load_config};
use crate::audit::VerifyContext;
use crate::audit::verify::Verified;
use crate::node::Core;
use crate::store::{Database, Store};

const ACTOR: &str = "cli:db-restore";

pub(crate) async fn restore(config: PathBuf, from: PathBuf) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let Some(path) = cfg.database.sqlite_path() else {
        return Err(Failure::usage(anyhow!(
            "{} is a PostgreSQL database: restore it with pg_restore (docs/postgresql.md)",
            cfg.database
        )));
    };
    check_from(&from, path)?;
    // No node may run on the file while it is replaced; holding the lock
    // also keeps one from starting until the restore is recorded.
    let _lock = match crate::runtime::lock_sqlite(path) {
        Ok(lock) => lock,
        Err(crate::runtime::StartError::AlreadyRunning { .. }) => {
            return Err(anyhow!(
                "{} is in use by a running node: stop it first (db restore replaces the database of a stopped node)",
                path.display()
            )
            .into());
        }
        Err(e) => return Err(anyhow!("{e}").into()),
    };
    let ctx = VerifyContext::from_config(&cfg);
    let backup = crate::audit::verify(&Database::Sqlite(from.clone()), &ctx)
        .await
        .map_err(|e| Failure {
            code: EXIT_INVALID,
            error: anyhow::Error::from(e).context(format!(
                "--from {}: the backup's audit log does not verify; nothing was changed",
                from.display()
            )),
        })?;
    // What the current database held, when it can still be read.
    let current = if path.exists() {
        crate::audit::verify(&cfg.database, &ctx).await.ok()
    } else {
        None
    };
    let kept = keep_current(path)?;
    crate::store::backup(&from, path)
        .await
        .with_context(|| format!("copying {} into place failed", from.display()))?;
    let seq = record(
        &cfg.database,
        &from,
        &backup,
        current.as_ref(),
        kept.as_deref(),
    )
    .await?;
    let restored = crate::audit::verify(&cfg.database, &ctx)
        .await
        .map_err(|e| Failure {
            code: EXIT_INVALID,
            error: anyhow::Error::from(e).context("the restored audit log does not verify"),
        })?;
    println!(
        "restored {} from {}: {} audit entries, root {}; the restore is audit entry {seq}",
        path.display(),
        from.display(),
        restored.entries,
        restored.root
    );
    if let Some(kept) = &kept {
        println!("the database it replaced is kept as {}", kept.display());
    }
    warn_rollback(&backup, current.as_ref());
    Ok(ExitCode::SUCCESS)
}

/// `--from` must be an existing file other than the node's database.
fn check_from(from: &Path, db: &Path) -> Result<(), Failure> {
    if !from.is_file() {
        return Err(Failure::usage(anyhow!(
            "--from {}: no such file",
            from.display()
        )));
    }
    let same = match (from.canonicalize(), db.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(Failure::usage(anyhow!(
            "--from {}: this is the node's database itself; give a backup file",
            from.display()
        )));
    }
    Ok(())
}

/// Moves the current database (and its WAL files) aside, to
/// `<database>.before-restore-<ms>`; None when there is none.
fn keep_current(path: &Path) -> Result<Option<PathBuf>, Failure> {
    if !path.exists() {
        return Ok(None);
    }
    let mut kept = path.as_os_str().to_owned();
    kept.push(format!(".before-restore-{}", Core::now_ms()));
    let kept = PathBuf::from(kept);
    for suffix in ["", "-wal", "-shm"] {
        let mut src = path.as_os_str().to_owned();
        src.push(suffix);
        let src = PathBuf::from(src);
        if !src.exists() {
            continue;
        }
        let mut dst = kept.as_os_str().to_owned();
        dst.push(suffix);
        std::fs::rename(&src, PathBuf::from(dst))
            .with_context(|| format!("moving {} aside failed", src.display()))?;
    }
    Ok(Some(kept))
}

/// Appends the `db.restored` entry to the restored log: the backup's size
/// and root, the size the replaced database had and the size the witnesses
/// had cosigned, so the rollback is on record.
async fn record(
    db: &Database,
    from: &Path,
    backup: &Verified,
    current: Option<&Verified>,
    kept: Option<&Path>,
) -> Result<i64, Failure> {
    let store = Store::connect(db)
        .await
        .with_context(|| format!("database {}", db.display()))?;
    let entry = crate::audit::Entry::new(
        "db.restored",
        ACTOR,
        "database",
        serde_json::json!({
            "from": from.display().to_string(),
            "entries": backup.entries,
            "root": backup.root,
            "replaced_entries": current.map(|c| c.entries),
            "replaced_cosigned_size": current.map(|c| c.cosigned_size),
            "replaced_kept_as": kept.map(|k| k.display().to_string()),
        }),
    );
    let write = async {
        let mut tx = store.begin().await?;
        let seq = tx.audit(&entry, Core::now_ms()).await?;
        tx.commit().await?;
        Ok::<_, crate::store::StoreError>(seq)
    };
    let seq = write
        .await
        .context("recording the restore in the audit log failed");
    store.close().await;
    Ok(seq?)
}

/// The loud part: what the witnesses will make of the restored log.
fn warn_rollback(backup: &Verified, current: Option<&Verified>) {
    let witnessed = current.map_or(0, |c| c.cosigned_size.max(c.entries));
    if current.is_some() && backup.entries >= witnessed {
        return;
    }
    let what = match current {
        Some(c) => format!(
            "the replaced database held {} audit entries (witnesses cosigned {}); the backup holds {}",
            c.entries, c.cosigned_size, backup.entries
        ),
        None => format!(
            "the replaced database could not be read, so how far the witnesses got is unknown; the backup holds {} entries",
            backup.entries
        ),
    };
    eprintln!(
        "WARNING: THE AUDIT LOG IS ROLLED BACK: {what}.\n\
         The peers' witnesses have cosigned more of this log than it now holds: they will refuse \
         its checkpoints (witness.refused; on this node witness.refused-us and \
         alertrelay_witness_events_total{{event=\"refused_us\"}}), and `alertrelay audit verify` \
         online fails. Reports accepted after the backup are at their receivers. Follow \
         \"Restoring from a backup\" in docs/operations.md before starting the node."
    );
}
