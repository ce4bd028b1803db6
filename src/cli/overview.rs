//! What a running node tells about itself, through the node: `alertrelay
//! status` (a summary), `alertrelay peers` (delivery to each peer) and
//! `alertrelay stats` (time to takedown).

use std::path::PathBuf;
use std::process::ExitCode;

use super::client::{connect, rpc};
use super::print::{self, emit};
use super::{Failure, load_config};
use crate::pb;

pub(crate) async fn status(config: PathBuf, json: bool) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let mut client = connect(&cfg).await?;
    let s = client
        .status(pb::StatusRequest {})
        .await
        .map_err(rpc)?
        .into_inner();
    let s = crate::api::convert::summary_from_pb(s);
    emit(&s, json, print::summary)
}

pub(crate) async fn peers(config: PathBuf, json: bool) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let mut client = connect(&cfg).await?;
    let list = client
        .list_peers(pb::ListPeersRequest {})
        .await
        .map_err(rpc)?
        .into_inner();
    let peers: Vec<_> = list
        .peers
        .into_iter()
        .map(crate::api::convert::peer_from_pb)
        .collect();
    emit(&peers, json, |p| print::peers(p))
}

pub(crate) async fn stats(
    config: PathBuf,
    window_days: u64,
    json: bool,
) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let mut client = connect(&cfg).await?;
    let r = client
        .stats(pb::StatsRequest {
            window_secs: window_days.saturating_mul(86_400),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    if json {
        println!("{}", serde_json::to_string_pretty(&stats_json(&r))?);
    } else {
        print_stats(&r, window_days);
    }
    Ok(ExitCode::SUCCESS)
}

fn stats_json(r: &pb::StatsResponse) -> serde_json::Value {
    let rows: Vec<_> = r
        .rows
        .iter()
        .map(|row| {
            serde_json::json!({
                "dimension": row.dimension,
                "key": row.key,
                "milestone": row.milestone,
                "count": row.count,
                "of": row.of,
                "p50_secs": row.p50_ms as f64 / 1000.0,
                "p90_secs": row.p90_ms as f64 / 1000.0,
            })
        })
        .collect();
    serde_json::json!({
        "window_secs": r.window_secs,
        "rows": rows,
    })
}

fn print_stats(r: &pb::StatsResponse, window_days: u64) {
    println!("time to takedown over the last {window_days} days");
    if r.rows.is_empty() {
        println!("  (no reports in the window)");
    }
    println!(
        "  {:<12} {:<14} {:<21} {:>9} {:>10} {:>10}",
        "by", "which", "milestone", "reached", "median", "p90"
    );
    for row in &r.rows {
        println!(
            "  {:<12} {:<14} {:<21} {:>9} {:>10} {:>10}",
            row.dimension,
            print::clean(&row.key),
            row.milestone,
            format!("{}/{}", row.count, row.of),
            print::duration_ms(row.p50_ms),
            print::duration_ms(row.p90_ms),
        );
    }
}
