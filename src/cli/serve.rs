//! `alertrelay serve` (run a node until SIGTERM or Ctrl-C, reloading on
//! SIGHUP) and `alertrelay reload` (ask a running node to reload, as its
//! admin). The one place besides `demo.rs` that starts a node.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::client::{connect_admin, rpc};
use super::{Failure, load_config};
use crate::pb;

pub(crate) async fn serve(config: PathBuf) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    // Signal handlers first: once the node says it listens, SIGTERM and
    // SIGHUP must already be handled (a supervisor may send them at once).
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let node = crate::runtime::start(cfg)
        .await
        .context("the node could not start")?;
    println!(
        "alertrelay node {} listening on {}",
        node.core.me, node.addr
    );
    run_until_stopped(&node.core, &mut term, &mut hup).await;
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Reloads on each SIGHUP; returns at Ctrl-C or SIGTERM.
async fn run_until_stopped(core: &crate::node::Core, term: &mut Signal, hup: &mut Signal) {
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                match core.reload("signal:SIGHUP").await {
                    Ok(()) => println!("reloaded"),
                    Err(e) => eprintln!("reload refused, nothing changed: {e:#}"),
                }
            }
        }
    }
}

pub(crate) async fn reload(config: PathBuf) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let mut client = connect_admin(&cfg).await?;
    client.reload(pb::ReloadRequest {}).await.map_err(rpc)?;
    println!(
        "{} reloaded its directory, certificates, keys and CRLs",
        cfg.node_id
    );
    Ok(ExitCode::SUCCESS)
}
