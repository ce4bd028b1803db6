//! `alertrelay cases …`: the cases at your node, through the node (list,
//! watch, show, update, retract, correct, hand off, export for law
//! enforcement), and `cases verify-export`, which checks an exported
//! bundle offline.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};

use super::args::{
    CasesCommand, CasesCorrectArgs, CasesHandoffArgs, CasesListArgs, CasesUpdateArgs,
};
use super::client::{connect, parse_hashes, rpc};
use super::print::{self, emit};
use super::{Failure, load_config};
use crate::api::convert::case_from_pb;
use crate::pb;

pub(crate) async fn run(command: CasesCommand) -> Result<ExitCode, Failure> {
    match command {
        CasesCommand::List(args) => list(args).await,
        CasesCommand::Watch {
            config,
            direction,
            json,
        } => watch(config, direction, json).await,
        CasesCommand::Show { id, config, json } => show(config, id, json).await,
        CasesCommand::Update(args) => update(args).await,
        CasesCommand::RejectClose {
            id,
            reason,
            config,
            json,
        } => reject_close(config, id, reason, json).await,
        CasesCommand::Retract {
            id,
            reason,
            config,
            json,
        } => amend(config, id, Amend::Retract, reason, json).await,
        CasesCommand::Correct(args) => correct(args).await,
        CasesCommand::Handoff(args) => handoff(args).await,
        CasesCommand::Reroute {
            id,
            reason,
            config,
            json,
        } => reroute(id, reason, config, json).await,
        CasesCommand::Export {
            id,
            for_law_enforcement: _,
            out,
            config,
            json,
        } => export(config, id, out, json).await,
        CasesCommand::VerifyExport {
            file,
            directory,
            keys,
            json,
        } => verify_export(file, directory, &keys, json),
    }
}

async fn list(args: CasesListArgs) -> Result<ExitCode, Failure> {
    let cfg = load_config(&args.config)?;
    let priority = match args.priority.as_deref() {
        None => 0,
        Some("urgent") => pb::Priority::Urgent as i32,
        Some("bulk") => pb::Priority::Bulk as i32,
        Some(other) => {
            return Err(Failure::usage(anyhow!(
                "--priority {other:?}: expected urgent or bulk"
            )));
        }
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
            family: args.family.unwrap_or_default(),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    let cases: Vec<_> = list.cases.into_iter().map(case_from_pb).collect();
    emit(&cases, args.json, |c| print::case_table(c))
}

/// Prints new and changed cases as they happen, until interrupted.
async fn watch(
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

async fn show(config: PathBuf, id: String, json: bool) -> Result<ExitCode, Failure> {
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

async fn update(a: CasesUpdateArgs) -> Result<ExitCode, Failure> {
    let cfg = load_config(&a.config)?;
    let referred_at_ms = referred_at_ms(&a.referred_at)?;
    let mut client = connect(&cfg).await?;
    let (propose, status) = (a.propose, a.status.clone());
    let case = client
        .update_case(pb::UpdateCaseRequest {
            id: a.id,
            status: a.status,
            reason: a.reason,
            agency: a.agency,
            reference: a.reference,
            referred_at_ms,
            propose,
            reject_proposal: false,
        })
        .await
        .map_err(rpc)?
        .into_inner();
    let case = case_from_pb(case);
    emit(&case, a.json, |case| {
        if propose {
            println!(
                "proposed closing case {} as {status}; it stays {} until a supervisor \
                 other than you confirms: alertrelay cases update {} --status {status}",
                case.id, case.status, case.id
            );
        } else {
            println!("case {} is now {}", case.id, case.status);
        }
    })
}

async fn reject_close(
    config: PathBuf,
    id: String,
    reason: String,
    json: bool,
) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let mut client = connect(&cfg).await?;
    let case = client
        .update_case(pb::UpdateCaseRequest {
            id,
            reason,
            reject_proposal: true,
            ..Default::default()
        })
        .await
        .map_err(rpc)?
        .into_inner();
    let case = case_from_pb(case);
    emit(&case, json, |case| {
        println!(
            "the proposed close of case {} is rejected; it stays {}",
            case.id, case.status
        );
    })
}

/// `--referred-at` (RFC 3339) in milliseconds; empty means now (0: the
/// node takes its own clock).
fn referred_at_ms(referred_at: &str) -> Result<i64, Failure> {
    if referred_at.is_empty() {
        return Ok(0);
    }
    let t = time::OffsetDateTime::parse(
        referred_at,
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|_| {
        Failure::usage(anyhow!(
            "--referred-at {referred_at:?}: expected an RFC 3339 time such as 2026-11-28T10:00:00Z"
        ))
    })?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// What an origin changes about a report it sent.
enum Amend {
    Retract,
    Correct {
        category: Option<String>,
        hashes: Vec<String>,
        notes: Option<String>,
    },
}

async fn correct(a: CasesCorrectArgs) -> Result<ExitCode, Failure> {
    let change = Amend::Correct {
        category: a.category,
        hashes: a.hashes,
        notes: a.notes,
    };
    amend(a.config, a.id, change, a.reason, a.json).await
}

async fn amend(
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
    emit(&case, json, |case| {
        let last = case.history.last().map(|h| h.status.as_str()).unwrap_or("");
        println!("report {} {last}; status {}", case.id, case.status);
    })
}

async fn handoff(a: CasesHandoffArgs) -> Result<ExitCode, Failure> {
    let cfg = load_config(&a.config)?;
    let mut client = connect(&cfg).await?;
    let req = pb::HandOffCaseRequest {
        id: a.id,
        to: a.to.unwrap_or_default(),
        reason: a.reason,
        hosting_ip: a.hosting_ip.unwrap_or_default(),
        resolve_again: false,
    };
    let case = client.hand_off_case(req).await.map_err(rpc)?.into_inner();
    let case = case_from_pb(case);
    emit(&case, a.json, |case| {
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
    })
}

/// `cases reroute ID --reason TEXT`: the node resolves the case's host
/// names again and hands it to the new country's hotline if it moved.
async fn reroute(
    id: String,
    reason: String,
    config: PathBuf,
    json: bool,
) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let mut client = connect(&cfg).await?;
    let req = pb::HandOffCaseRequest {
        id,
        to: String::new(),
        reason,
        hosting_ip: String::new(),
        resolve_again: true,
    };
    let case = client.hand_off_case(req).await.map_err(rpc)?.into_inner();
    let case = case_from_pb(case);
    emit(&case, json, |case| {
        let to: Vec<&str> = case
            .deliveries
            .iter()
            .map(|d| d.destination.as_str())
            .collect();
        println!(
            "case {}: the content moved; now {}, handed over to {}",
            case.id,
            case.status,
            to.join(", ")
        );
    })
}

/// `cases export CASE --for-law-enforcement --out FILE`: the signed bundle,
/// through the node (an audited read).
async fn export(
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

/// `cases verify-export FILE`: checks an exported bundle offline (exit 0
/// valid, 2 invalid).
fn verify_export(
    file: PathBuf,
    directory: Option<PathBuf>,
    keys: &[String],
    json: bool,
) -> Result<ExitCode, Failure> {
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let Some(anchor) = super::audit::trust_anchor(directory, keys)? else {
        return Ok(super::audit::unverified(json));
    };
    let result = serde_json::from_str::<crate::wire::bundle::ExportBundle>(&text)
        .map_err(|_| {
            crate::audit::proof::ProofError::Malformed(format!(
                "{} is not a case export bundle",
                file.display()
            ))
        })
        .and_then(|b| crate::wire::bundle::verify_export(&b, &anchor));
    let r = match result {
        Ok(r) => r,
        Err(e) => return Ok(super::audit::invalid(&e, json)),
    };
    if json {
        println!("{}", serde_json::json!({"ok": true, "proves": r}));
    } else {
        println!(
            "VALID: case {} (status {}) exported by {} ({}) at {}, signed by {}; report signed by {}; {} receipt(s), {} status update(s), {} referral(s); {} audit entries included in {}'s log at size {} (root {})",
            r.case,
            r.status,
            r.exporter,
            r.exported_by,
            crate::node::cases::rfc3339(r.exported_at_ms),
            r.signed_by,
            if r.report_signed_by.is_empty() {
                "nobody (purged by retention)"
            } else {
                r.report_signed_by.as_str()
            },
            r.receipts,
            r.status_updates,
            r.referrals,
            r.audit_entries,
            r.exporter,
            r.tree_size,
            r.root
        );
    }
    Ok(ExitCode::SUCCESS)
}
