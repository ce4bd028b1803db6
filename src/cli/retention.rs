//! `alertrelay retention run` (purge what `[retention]` says has expired)
//! and `alertrelay retention erase` (one case's personal data now, on an
//! erasure request). While the node runs they ask it (an admin call: its
//! own writer does the work, in short transactions, audited under the
//! admin); otherwise they work on the database itself, as `cli:retention`,
//! holding the node's lock meanwhile. Either way the purged data must be
//! gone from the database's files too, or the command fails and says so.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};

use super::args::RetentionCommand;
use super::client::{connect_admin, rpc};
use super::print::emit;
use super::{Failure, load_config};
use crate::config::NodeConfig;
use crate::node::retention::{Erased, RetentionRun, Writer};
use crate::pb;
use crate::store::Store;

/// Who the audit log names for what these commands do.
const ACTOR: &str = "cli:retention";

pub(crate) async fn run(command: RetentionCommand) -> Result<ExitCode, Failure> {
    match command {
        RetentionCommand::Run {
            config,
            dry_run,
            json,
        } => purge_expired(config, dry_run, json).await,
        RetentionCommand::Erase {
            id,
            reason,
            config,
            json,
        } => erase(config, id, reason, json).await,
    }
}

/// Where a retention command does its work.
enum Via {
    /// The node runs on this database: it does the work with its own
    /// writer (an admin call), so the command never fights its writer.
    Node,
    /// No node runs on it (SQLite: this command holds its lock, so none can
    /// start meanwhile; PostgreSQL: transactions wait their turn for the
    /// writer lock as a replica's would).
    Alone(Store, Option<std::fs::File>),
}

async fn via(cfg: &NodeConfig) -> Result<Via, Failure> {
    let lock = match cfg.database.sqlite_path() {
        Some(path) => match crate::runtime::lock_sqlite(path) {
            Ok(lock) => Some(lock),
            Err(crate::runtime::StartError::AlreadyRunning { .. }) => return Ok(Via::Node),
            Err(e) => return Err(Failure::from(anyhow!("{e}"))),
        },
        None => None,
    };
    let store = Store::connect(&cfg.database)
        .await
        .with_context(|| format!("database {}", cfg.database.display()))?;
    Ok(Via::Alone(store, lock))
}

async fn purge_expired(config: PathBuf, dry_run: bool, json: bool) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    if !cfg.retention.any() {
        return Err(Failure::usage(anyhow!(
            "{}: no [retention] period is configured: nothing can expire",
            cfg.path.display()
        )));
    }
    let run = match via(&cfg).await? {
        Via::Node => through_node(&cfg, dry_run).await?,
        Via::Alone(store, _lock) => {
            let result = crate::node::retention::run(
                Writer::Alone(&store),
                &cfg.retention,
                ACTOR,
                cfg.node_id.as_str(),
                dry_run,
                true,
                crate::node::Core::now_ms(),
            )
            .await;
            store.close().await;
            result.context("retention run failed")?
        }
    };
    emit(&run, json, |run| print_run(run, dry_run))?;
    scrubbed(run.files_clean)
}

/// A run done by the running node: one short call after another while it
/// says there is more (each call purges for a few seconds at most, so no
/// call outlives its deadline however large the backlog), summed up.
async fn through_node(cfg: &NodeConfig, dry_run: bool) -> Result<RetentionRun, Failure> {
    let mut client = connect_admin(cfg).await?;
    let mut call = async || -> Result<RetentionRun, Failure> {
        let answer = client
            .run_retention(pb::RunRetentionRequest { dry_run })
            .await
            .map_err(rpc)?;
        Ok(crate::api::convert::retention_from_pb(answer.into_inner()))
    };
    let mut total = call().await?;
    while total.more {
        let run = call().await?;
        total.closed += run.closed;
        total.refused += run.refused;
        total.delivered += run.delivered;
        total.reports.extend(run.reports);
        total.alerts += run.alerts;
        total.notifications_given_up += run.notifications_given_up;
        total.audit_entry = run.audit_entry.or(total.audit_entry);
        // The last truncation covers what every call purged.
        total.files_clean = run.files_clean;
        total.more = run.more;
    }
    Ok(total)
}

/// Exit 1, loudly, when the purged data is still in the database's files.
fn scrubbed(files_clean: bool) -> Result<ExitCode, Failure> {
    if files_clean {
        return Ok(ExitCode::SUCCESS);
    }
    Err(anyhow!(
        "the purge is committed, but the database's WAL file still holds old pages of the purged reports: another process kept reading the database; close it and run `alertrelay retention run` again (or restart the node)"
    )
    .into())
}

fn print_run(run: &RetentionRun, dry_run: bool) {
    let verb = if dry_run { "would purge" } else { "purged" };
    println!(
        "{verb} {} report(s): {} closed, {} refused, {} delivered{}",
        run.reports.len(),
        run.closed,
        run.refused,
        run.delivered,
        match run.audit_entry {
            Some(seq) => format!(" (audit entry {seq})"),
            None => String::new(),
        }
    );
    for p in &run.reports {
        println!("  {}  {} ({}, {})", p.report, p.kind, p.direction, p.status);
    }
    if run.alerts > 0 || run.notifications_given_up > 0 {
        let verb = if dry_run { "would delete" } else { "deleted" };
        let gave = if dry_run { "would give up" } else { "gave up" };
        println!(
            "{verb} {} old alert(s); {gave} {} undelivered notification(s)",
            run.alerts, run.notifications_given_up
        );
    }
}

async fn erase(
    config: PathBuf,
    id: String,
    reason: String,
    json: bool,
) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let erased = match via(&cfg).await? {
        Via::Node => {
            let mut client = connect_admin(&cfg).await?;
            let e = client
                .erase_case(pb::EraseCaseRequest { id, reason })
                .await
                .map_err(rpc)?
                .into_inner();
            Erased {
                erased: e.erased,
                audit_entry: e.audit_entry,
                files_clean: e.files_clean,
            }
        }
        Via::Alone(store, _lock) => {
            let now = crate::node::Core::now_ms();
            let result =
                crate::node::retention::erase(Writer::Alone(&store), &id, ACTOR, &reason, now)
                    .await;
            store.close().await;
            result.map_err(|e| anyhow!("{e}"))?
        }
    };
    if json {
        println!("{}", serde_json::to_string(&erased)?);
    } else {
        println!(
            "case {}: URLs, notes and evidence erased (audit entry {}); peers that received it keep their own copies",
            erased.erased, erased.audit_entry
        );
    }
    scrubbed(erased.files_clean)
}
