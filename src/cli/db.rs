//! `alertrelay db backup` (an online-safe copy of a SQLite database),
//! `db migrate` (apply this version's migrations, for package upgrades),
//! `db restore` (in restore.rs) and
//! `alertrelay db migrate-to` (copy a stopped SQLite node's data into an
//! empty PostgreSQL database and check the copy's audit log against the
//! original's).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, anyhow};

use super::args::DbCommand;
use super::{EXIT_INVALID, Failure, load_config};
use crate::audit::VerifyContext;
use crate::audit::verify::Verified;
use crate::config::NodeConfig;
use crate::store::Database;

pub(crate) async fn run(command: DbCommand) -> Result<ExitCode, Failure> {
    match command {
        DbCommand::Backup { config, out } => backup(config, out).await,
        DbCommand::Migrate { config } => migrate(config).await,
        DbCommand::MigrateTo { url, config, json } => migrate_to(config, url, json).await,
        DbCommand::Restore { config, from } => super::restore::restore(config, from).await,
    }
}

async fn backup(config: PathBuf, out: PathBuf) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    if out.exists() {
        return Err(Failure::usage(anyhow!(
            "--out {}: the file exists; give a new name",
            out.display()
        )));
    }
    let Some(path) = cfg.database.sqlite_path() else {
        return Err(Failure::usage(anyhow!(
            "{} is a PostgreSQL database: back it up with the server's tools (pg_dump, or continuous archiving)",
            cfg.database
        )));
    };
    let started = Instant::now();
    let entries = crate::store::backup(path, &out)
        .await
        .with_context(|| format!("backup of {} failed", cfg.database.display()))?;
    let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    println!(
        "{} backed up to {} ({bytes} bytes, {entries} audit entries) in {} ms",
        cfg.database.display(),
        out.display(),
        started.elapsed().as_millis()
    );
    Ok(ExitCode::SUCCESS)
}

/// `db migrate`: opens the database, which applies what migrations are
/// missing (each in its own transaction), holding the SQLite lock so that
/// no node runs meanwhile.
async fn migrate(config: PathBuf) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let _lock = match cfg.database.sqlite_path() {
        Some(path) => match crate::runtime::lock_sqlite(path) {
            Ok(lock) => Some(lock),
            Err(crate::runtime::StartError::AlreadyRunning { .. }) => {
                return Err(anyhow!(
                    "{} is in use by a running node: stop it first (it migrates when it starts)",
                    path.display()
                )
                .into());
            }
            Err(e) => return Err(anyhow!("{e}").into()),
        },
        None => None,
    };
    let store = crate::store::Store::connect(&cfg.database)
        .await
        .with_context(|| format!("migration of {} failed", cfg.database.display()))?;
    store.close().await;
    println!("{} is migrated to this version", cfg.database.display());
    Ok(ExitCode::SUCCESS)
}

/// The original's and the copy's audit logs, each recomputed.
struct Compared {
    original: Verified,
    copy: Verified,
}

impl Compared {
    fn same(&self) -> bool {
        let (o, c) = (&self.original, &self.copy);
        o.entries == c.entries
            && o.root == c.root
            && o.head == c.head
            && o.checkpoints == c.checkpoints
            && o.cosignatures == c.cosignatures
    }
}

async fn migrate_to(config: PathBuf, url: String, json: bool) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let target = Database::parse(&url, |p: &str| PathBuf::from(p))
        .map_err(|e| Failure::usage(anyhow!("{url:?}: {e}")))?;
    let Database::Postgres(target_url) = &target else {
        return Err(Failure::usage(anyhow!(
            "migrate-to needs a postgres:// URL, not {target}"
        )));
    };
    let Some(source) = cfg.database.sqlite_path() else {
        return Err(Failure::usage(anyhow!(
            "{}: the node already runs on PostgreSQL ({})",
            cfg.path.display(),
            cfg.database
        )));
    };
    // No node may write the file while it is copied: switching to a copy
    // that missed the node's last writes would look, to `audit verify`
    // and to the witnesses, like a rollback. The lock is held until the
    // copy is verified.
    let _lock = match crate::runtime::lock_sqlite(source) {
        Ok(lock) => lock,
        Err(crate::runtime::StartError::AlreadyRunning { .. }) => {
            return Err(anyhow!(
                "{} is in use by a running node: stop it first (migrate-to copies a database no node is writing), then start it on the copy",
                source.display()
            )
            .into());
        }
        Err(e) => return Err(anyhow!("{e}").into()),
    };
    let started = Instant::now();
    let copied = crate::store::copy::sqlite_to_postgres(source, target_url)
        .await
        .with_context(|| format!("copy of {} to {target} failed", source.display()))?;
    let compared = verify_both(&cfg, source, &target).await?;
    let migrated = Migrated {
        cfg: &cfg,
        source,
        target: &target,
        tables: &copied.tables,
        compared: &compared,
        started,
    };
    if json {
        println!("{}", migrated.json());
    } else {
        migrated.print();
    }
    Ok(if compared.same() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID)
    })
}

/// Recomputes the audit log of the original and of the copy.
async fn verify_both(
    cfg: &NodeConfig,
    source: &Path,
    target: &Database,
) -> Result<Compared, Failure> {
    let ctx = VerifyContext::from_config(cfg);
    let original = crate::audit::verify(&cfg.database, &ctx).await;
    let copy = crate::audit::verify(target, &ctx).await;
    match (original, copy) {
        (Ok(original), Ok(copy)) => Ok(Compared { original, copy }),
        (Err(e), _) => Err(anyhow::Error::from(e)
            .context(format!(
                "the audit log of {} does not verify",
                source.display()
            ))
            .into()),
        (_, Err(e)) => Err(anyhow::Error::from(e)
            .context(format!(
                "the audit log of the copy in {target} does not verify"
            ))
            .into()),
    }
}

/// What `db migrate-to` did, to print.
struct Migrated<'a> {
    cfg: &'a NodeConfig,
    source: &'a Path,
    target: &'a Database,
    tables: &'a [(String, u64)],
    compared: &'a Compared,
    started: Instant,
}

impl Migrated<'_> {
    fn json(&self) -> serde_json::Value {
        let Compared { original, copy } = self.compared;
        serde_json::json!({
            "ok": self.compared.same(),
            "source": self.source.display().to_string(),
            "target": self.target.display(),
            "tables": self.tables.iter().map(|(t, n)| serde_json::json!({"table": t, "rows": n})).collect::<Vec<_>>(),
            "entries": copy.entries,
            "root": copy.root,
            "source_root": original.root,
            "checkpoints": copy.checkpoints,
            "cosignatures": copy.cosignatures,
            "ms": self.started.elapsed().as_millis() as u64,
        })
    }

    fn print(&self) {
        let Compared { original, copy } = self.compared;
        let target = self.target;
        for (t, n) in self.tables {
            println!("  {t:<15} {n} rows");
        }
        if !self.compared.same() {
            eprintln!(
                "the copy differs from the original: {} entries, root {} (original: {} entries, root {})",
                copy.entries, copy.root, original.entries, original.root
            );
            return;
        }
        println!(
            "copied {} to {target} in {} ms; the copy's audit log verifies: {} entries, root {}, {} checkpoints, {} cosignatures, as in the original",
            self.source.display(),
            self.started.elapsed().as_millis(),
            copy.entries,
            copy.root,
            copy.checkpoints,
            copy.cosignatures
        );
        println!(
            "now set  database = \"{}\"  in {}",
            target.display(),
            self.cfg.path.display()
        );
    }
}
