//! `alertrelay retention run` (purge what `[retention]` says has expired)
//! and `alertrelay retention erase` (one case's personal data now, on an
//! erasure request). Both read and write the database itself, as
//! `cli:retention`, and leave their audit entries.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};

use super::args::RetentionCommand;
use super::print::emit;
use super::{Failure, load_config};
use crate::config::NodeConfig;
use crate::node::retention::RetentionRun;
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

async fn open(cfg: &NodeConfig) -> Result<Store, Failure> {
    Ok(Store::connect(&cfg.database)
        .await
        .with_context(|| format!("database {}", cfg.database.display()))?)
}

async fn purge_expired(config: PathBuf, dry_run: bool, json: bool) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    if !cfg.retention.any() {
        return Err(Failure::usage(anyhow!(
            "{}: no [retention] period is configured: nothing can expire",
            cfg.path.display()
        )));
    }
    let store = open(&cfg).await?;
    let result = crate::node::retention::run(
        &store,
        &cfg.retention,
        ACTOR,
        cfg.node_id.as_str(),
        dry_run,
        true,
        crate::node::Core::now_ms(),
    )
    .await;
    store.close().await;
    let run = result.context("retention run failed")?;
    emit(&run, json, |run| print_run(run, dry_run))
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
}

async fn erase(
    config: PathBuf,
    id: String,
    reason: String,
    json: bool,
) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let store = open(&cfg).await?;
    let result =
        crate::node::retention::erase(&store, &id, ACTOR, &reason, crate::node::Core::now_ms())
            .await;
    store.close().await;
    let (subject, seq) = result?;
    if json {
        println!(
            "{}",
            serde_json::json!({"erased": subject, "audit_entry": seq})
        );
    } else {
        println!(
            "case {subject}: URLs, notes and evidence erased (audit entry {seq}); peers that received it keep their own copies"
        );
    }
    Ok(ExitCode::SUCCESS)
}
