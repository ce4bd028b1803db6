//! Client commands: talk to the node named by `--config` over mutual TLS
//! with its operator certificate.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use tonic::transport::Channel;

use super::{Failure, load_config, print};
use crate::api::convert::{case_from_pb, route_view_from_pb};
use crate::config::NodeConfig;
use crate::pb;
use crate::pb::operator_client::OperatorClient;

pub(crate) async fn connect(cfg: &NodeConfig) -> Result<OperatorClient<Channel>, Failure> {
    let op = cfg.operator.as_ref().ok_or_else(|| Failure {
        code: super::EXIT_CONFIG,
        error: anyhow!(
            "{}: no [operator] section: the client needs an operator certificate",
            cfg.path.display()
        ),
    })?;
    connect_as(cfg, op).await
}

/// Connects with the `[admin]` identity, for node management.
pub(crate) async fn connect_admin(cfg: &NodeConfig) -> Result<OperatorClient<Channel>, Failure> {
    let admin = cfg.admin.as_ref().ok_or_else(|| Failure {
        code: super::EXIT_CONFIG,
        error: anyhow!(
            "{}: no [admin] section: this command needs an admin operator certificate",
            cfg.path.display()
        ),
    })?;
    connect_as(cfg, admin).await
}

async fn connect_as(
    cfg: &NodeConfig,
    op: &crate::config::TlsPaths,
) -> Result<OperatorClient<Channel>, Failure> {
    let tls = crate::crypto::tls::client_config(&op.files()).context("operator TLS identity")?;
    let mut addr = cfg.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let channel = crate::crypto::tls::channel(
        &format!("https://{addr}"),
        Some(cfg.node_id.clone()),
        &cfg.directory.federation,
        tls,
        std::time::Duration::from_secs(30),
    )?;
    Ok(OperatorClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}

/// Prints `value` as JSON for scripts, or for humans with `human`.
fn emit<T: serde::Serialize>(
    value: &T,
    json: bool,
    human: impl FnOnce(&T),
) -> Result<ExitCode, Failure> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        human(value);
    }
    Ok(ExitCode::SUCCESS)
}

fn rpc(status: tonic::Status) -> Failure {
    anyhow!("{:?}: {}", status.code(), status.message()).into()
}

pub(crate) struct SubmitArgs {
    pub config: PathBuf,
    pub urls: Vec<String>,
    pub category: String,
    pub hosting_ip: Option<String>,
    pub priority: String,
    pub notes: String,
    pub hashes: Vec<String>,
    pub classification: String,
    pub json: bool,
}

pub(crate) async fn submit(a: SubmitArgs) -> Result<ExitCode, Failure> {
    let cfg = load_config(&a.config)?;
    let priority = match a.priority.as_str() {
        "urgent" => pb::Priority::Urgent,
        "bulk" => pb::Priority::Bulk,
        other => return Err(anyhow!("--priority {other:?}: expected urgent or bulk").into()),
    };
    let hashes = parse_hashes(&a.hashes)?;
    let mut client = connect(&cfg).await?;
    let request = pb::SubmitReportRequest {
        urls: a.urls,
        category: a.category,
        hosting_ip: a.hosting_ip.unwrap_or_default(),
        priority: priority as i32,
        notes: a.notes,
        hashes,
        // One key per invocation: the retries below can never submit twice.
        submission_id: uuid::Uuid::new_v4().to_string(),
        classification: a.classification,
    };
    let mut attempt = 0;
    let resp = loop {
        attempt += 1;
        match client.submit_report(request.clone()).await {
            Ok(r) => break r.into_inner(),
            // The node was unreachable or restarting: the same key makes a
            // retry safe whether or not the first attempt was stored.
            Err(s) if attempt < 4 && s.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(std::time::Duration::from_millis(500 * attempt)).await;
            }
            Err(s) => return Err(rpc(s)),
        }
    };
    let route = resp.route.as_ref().map(route_view_from_pb);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "id": resp.report_id,
                "route": route,
                "case": resp.case.map(case_from_pb),
            }))?
        );
    } else {
        println!("report {} accepted and stored", resp.report_id);
        if let Some(r) = &route {
            print::route(r);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn route(
    config: PathBuf,
    urls: Vec<String>,
    hosting_ip: Option<String>,
    category: String,
    classification: String,
    json: bool,
) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let mut client = connect(&cfg).await?;
    let r = client
        .route(pb::RouteRequest {
            urls,
            hosting_ip: hosting_ip.unwrap_or_default(),
            category,
            classification,
        })
        .await
        .map_err(rpc)?
        .into_inner();
    let view = route_view_from_pb(&r);
    emit(&view, json, print::route)
}

pub(crate) struct ListArgs {
    pub direction: Option<String>,
    pub status: Option<String>,
    pub category: Option<String>,
    pub peer: Option<String>,
    pub priority: Option<String>,
    pub max_age_secs: Option<u64>,
    pub limit: u32,
}

pub(crate) async fn cases_list(
    config: PathBuf,
    args: ListArgs,
    json: bool,
) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let priority = match args.priority.as_deref() {
        None => 0,
        Some("urgent") => pb::Priority::Urgent as i32,
        Some("bulk") => pb::Priority::Bulk as i32,
        Some(other) => return Err(anyhow!("--priority {other:?}: expected urgent or bulk").into()),
    };
    let mut client = connect(&cfg).await?;
    let list = client
        .list_cases(pb::ListCasesRequest {
            direction: args.direction.unwrap_or_default(),
            limit: args.limit,
            status: args.status.unwrap_or_default(),
            category: args.category.unwrap_or_default(),
            peer: args.peer.unwrap_or_default(),
            priority,
            max_age_secs: args.max_age_secs.unwrap_or(0),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    let cases: Vec<_> = list.cases.into_iter().map(case_from_pb).collect();
    emit(&cases, json, |c| print::case_table(c))
}

/// Prints new and changed cases as they happen, until interrupted.
pub(crate) async fn cases_watch(
    config: PathBuf,
    direction: Option<String>,
    json: bool,
) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let mut client = connect(&cfg).await?;
    let mut stream = client
        .watch_cases(pb::WatchCasesRequest {
            direction: direction.unwrap_or_default(),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    if !json {
        eprintln!("watching cases of {} (Ctrl-C to stop)", cfg.node_id);
    }
    while let Some(case) = stream.message().await.map_err(rpc)? {
        let case = case_from_pb(case);
        if json {
            println!("{}", serde_json::to_string(&case)?);
        } else {
            println!(
                "{}  {:<36} {:<10} {:<8} {:<20} {}",
                crate::node::cases::rfc3339(crate::node::Core::now_ms()),
                case.id,
                case.origin,
                case.direction,
                case.status,
                case.category
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn cases_show(
    config: PathBuf,
    id: String,
    json: bool,
) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let mut client = connect(&cfg).await?;
    let case = client
        .get_case(pb::GetCaseRequest { id })
        .await
        .map_err(rpc)?
        .into_inner();
    let case = case_from_pb(case);
    emit(&case, json, print::case)
}

pub(crate) struct Referral {
    pub agency: String,
    pub reference: String,
    /// RFC 3339; empty means now.
    pub referred_at: String,
}

pub(crate) async fn cases_update(
    config: PathBuf,
    id: String,
    status: String,
    reason: String,
    referral: Referral,
    json: bool,
) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let referred_at_ms = if referral.referred_at.is_empty() {
        0
    } else {
        let t = time::OffsetDateTime::parse(
            &referral.referred_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|_| Failure {
            code: super::EXIT_CONFIG,
            error: anyhow!(
                "--referred-at {:?}: expected an RFC 3339 time such as 2026-11-28T10:00:00Z",
                referral.referred_at
            ),
        })?;
        (t.unix_timestamp_nanos() / 1_000_000) as i64
    };
    let mut client = connect(&cfg).await?;
    let case = client
        .update_case(pb::UpdateCaseRequest {
            id,
            status,
            reason,
            agency: referral.agency,
            reference: referral.reference,
            referred_at_ms,
        })
        .await
        .map_err(rpc)?
        .into_inner();
    let case = case_from_pb(case);
    if json {
        println!("{}", serde_json::to_string_pretty(&case)?);
    } else {
        println!("case {} is now {}", case.id, case.status);
    }
    Ok(ExitCode::SUCCESS)
}

/// `--hash ALGORITHM:VALUE` arguments.
fn parse_hashes(args: &[String]) -> Result<Vec<pb::MediaHash>, Failure> {
    let mut hashes = Vec::new();
    for h in args {
        let (algorithm, value) = h
            .split_once(':')
            .ok_or_else(|| anyhow!("--hash {h:?}: expected ALGORITHM:VALUE"))?;
        hashes.push(pb::MediaHash {
            algorithm: algorithm.to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(hashes)
}

/// What an origin changes about a report it sent.
pub(crate) enum Amend {
    Retract,
    Correct {
        category: Option<String>,
        hashes: Vec<String>,
        notes: Option<String>,
    },
}

pub(crate) async fn cases_amend(
    config: PathBuf,
    id: String,
    change: Amend,
    reason: String,
    json: bool,
) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let mut client = connect(&cfg).await?;
    let case = match change {
        Amend::Retract => client
            .retract_report(pb::RetractReportRequest { id, reason })
            .await
            .map_err(rpc)?,
        Amend::Correct {
            category,
            hashes,
            notes,
        } => client
            .correct_report(pb::CorrectReportRequest {
                id,
                category: category.unwrap_or_default(),
                hashes: parse_hashes(&hashes)?,
                notes: notes.unwrap_or_default(),
                reason,
            })
            .await
            .map_err(rpc)?,
    }
    .into_inner();
    let case = case_from_pb(case);
    if json {
        println!("{}", serde_json::to_string_pretty(&case)?);
    } else {
        let last = case.history.last().map(|h| h.status.as_str()).unwrap_or("");
        println!("report {} {last}; status {}", case.id, case.status);
    }
    Ok(ExitCode::SUCCESS)
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
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "window_secs": r.window_secs,
                "rows": rows,
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
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
            crate::cli::print::clean(&row.key),
            row.milestone,
            format!("{}/{}", row.count, row.of),
            crate::cli::print::duration_ms(row.p50_ms),
            crate::cli::print::duration_ms(row.p90_ms),
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn cases_handoff(
    config: PathBuf,
    req: pb::HandOffCaseRequest,
    json: bool,
) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let mut client = connect(&cfg).await?;
    let case = client.hand_off_case(req).await.map_err(rpc)?.into_inner();
    let case = case_from_pb(case);
    if json {
        println!("{}", serde_json::to_string_pretty(&case)?);
    } else {
        let to: Vec<&str> = case
            .deliveries
            .iter()
            .map(|d| d.destination.as_str())
            .collect();
        println!(
            "case {} is now {}; handed over to {}",
            case.id,
            case.status,
            to.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks every peer, as this node (its node certificate), for the latest
/// checkpoint of this node's log it cosigned.
pub(crate) async fn witnessed_by_peers(cfg: &NodeConfig) -> Vec<(String, Result<String, String>)> {
    let tls = match crate::crypto::tls::client_config(&cfg.tls.files()) {
        Ok(t) => t,
        Err(e) => return vec![("*".into(), Err(format!("node TLS identity: {e}")))],
    };
    let mut out = Vec::new();
    for peer in cfg.directory.nodes().iter().filter(|n| n.id != cfg.node_id) {
        let result = async {
            let channel = crate::crypto::tls::channel(
                &peer.endpoint,
                Some(peer.id.clone()),
                &cfg.directory.federation,
                tls.clone(),
                std::time::Duration::from_secs(5),
            )
            .map_err(|e| e.to_string())?;
            pb::federation_client::FederationClient::new(channel)
                .get_witnessed(pb::GetWitnessedRequest {
                    log: cfg.node_id.to_string(),
                })
                .await
                .map(|r| r.into_inner().note)
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
        }
        .await;
        out.push((peer.id.to_string(), result));
    }
    out
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

/// `cases export CASE --for-law-enforcement --out FILE`: the signed bundle,
/// through the node (an audited read).
pub(crate) async fn cases_export(
    config: PathBuf,
    id: String,
    out: PathBuf,
    json: bool,
) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let mut client = connect(&cfg).await?;
    let bundle = client
        .export_case(pb::ExportCaseRequest {
            id: id.clone(),
            purpose: crate::node::export::LAW_ENFORCEMENT.into(),
        })
        .await
        .map_err(rpc)?
        .into_inner()
        .bundle;
    crate::crypto::signing::write_private_file(&out, &bundle)
        .with_context(|| format!("cannot write {}", out.display()))?;
    if json {
        println!(
            "{}",
            serde_json::json!({"case": id, "out": out.display().to_string(), "bytes": bundle.len()})
        );
    } else {
        println!(
            "case {id} exported for law enforcement to {} ({} bytes, signed by {}); check it with `alertrelay cases verify-export {}`",
            out.display(),
            bundle.len(),
            cfg.node_id,
            out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
