//! `alertrelay audit …`: the audit log read from the database itself, not
//! through the running node (`verify`, asking the witnesses what they
//! cosigned; `prove`; `export`), and `verify-proof`, which checks a proof
//! bundle offline. Also what every offline check shares: the trusted
//! `--directory` and the exit code 2 of a verification that fails.

use std::fmt::Display;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::args::AuditCommand;
use super::print::emit;
use super::{EXIT_INVALID, Failure, load_config};
use crate::audit::trust::Anchor;
use crate::audit::verify::Verified;
use crate::audit::{AuditError, VerifyContext};
use crate::config::NodeConfig;
use crate::directory::Directory;
use crate::pb;

pub(crate) async fn run(command: AuditCommand) -> Result<ExitCode, Failure> {
    match command {
        AuditCommand::Verify {
            config,
            json,
            offline,
        } => verify(config, json, offline).await,
        AuditCommand::Prove {
            entry,
            config,
            json,
        } => prove(config, entry, json).await,
        AuditCommand::VerifyProof {
            file,
            directory,
            keys,
            json,
        } => verify_proof(file, directory, &keys, json),
        AuditCommand::Export { config, after, who } => export(config, after, who).await,
    }
}

/// `--directory FILE` of the offline checks: only trust keys that are also
/// in it.
/// The verifier's trust anchor: the directory file, or the keys pinned
/// with `--key`; `None` when neither was given.
pub(crate) fn trust_anchor(
    directory: Option<PathBuf>,
    keys: &[String],
) -> Result<Option<Anchor>, Failure> {
    if let Some(d) = directory {
        if !keys.is_empty() {
            return Err(Failure::usage(anyhow::anyhow!(
                "give --directory or --key, not both"
            )));
        }
        let dir = Directory::load(&d).map_err(Failure::usage)?;
        return Ok(Some(Anchor::Directory(dir)));
    }
    if keys.is_empty() {
        return Ok(None);
    }
    Anchor::pinned(keys)
        .map(Some)
        .map_err(|e| Failure::usage(anyhow::anyhow!("--key: {e}")))
}

/// Nothing to check keys against: said plainly, exit code 2 (nothing was
/// verified).
pub(crate) fn unverified(json: bool) -> ExitCode {
    let problem = "nothing was verified: no trust anchor. Keys listed inside a bundle prove nothing (anyone can re-sign it with a key of their own); give --directory FILE (the federation directory) or --key PUBLIC-KEY";
    refuted(&problem, json, format!("UNVERIFIED: {problem}"))
}

/// A proof or bundle that does not check out: `{"ok": false, "problem"}`
/// for scripts, `INVALID: …` for humans, and exit code 2.
pub(crate) fn invalid(problem: &dyn Display, json: bool) -> ExitCode {
    refuted(problem, json, format!("INVALID: {problem}"))
}

fn refuted(problem: &dyn Display, json: bool, human: String) -> ExitCode {
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": false, "problem": problem.to_string()})
        );
    } else {
        eprintln!("{human}");
    }
    ExitCode::from(EXIT_INVALID)
}

/// What the witnesses said about this node's log: those whose cosigned
/// size is consistent with the database, and those that could not be
/// asked (with why).
#[derive(Default)]
struct Witnessed {
    consistent: Vec<(String, u64)>,
    unreachable: Vec<(String, String)>,
}

async fn verify(config: PathBuf, json: bool, offline: bool) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let ctx = VerifyContext::from_config(&cfg);
    let broken = |e: AuditError| {
        let human = format!("audit log of {} FAILS verification: {e}", cfg.node_id);
        Ok(refuted(&e, json, human))
    };
    let verified = match verify_database(&cfg, &ctx, json).await {
        Ok(v) => v,
        Err(e) if e.is_tampering() => return broken(e),
        Err(e) => return Err(e.into()),
    };
    // A database restored from an old backup is consistent with itself;
    // only the witnesses remember the larger tree they cosigned.
    let witnessed = if offline {
        Witnessed::default()
    } else {
        match ask_witnesses(&cfg, &ctx, &verified).await {
            Ok(w) => w,
            Err(e) => return broken(e),
        }
    };
    print_verified(&cfg, &verified, &witnessed, json);
    Ok(ExitCode::SUCCESS)
}

/// Recomputes the log from the database, with a progress bar on a
/// terminal (a large log takes a while).
async fn verify_database(
    cfg: &NodeConfig,
    ctx: &VerifyContext,
    json: bool,
) -> Result<Verified, AuditError> {
    let bar = if json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:9} {bar:40} {pos}/{len} entries  eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let progress = |phase: &'static str, done: u64, total: u64| {
        bar.set_message(phase);
        bar.set_length(total);
        bar.set_position(done);
    };
    let verified = crate::audit::verify::verify_with_progress(&cfg.database, ctx, &progress).await;
    bar.finish_and_clear();
    verified
}

/// Checks what each witness cosigned against the recomputed log; the
/// first inconsistency is the error.
async fn ask_witnesses(
    cfg: &NodeConfig,
    ctx: &VerifyContext,
    verified: &Verified,
) -> Result<Witnessed, AuditError> {
    let mut witnessed = Witnessed::default();
    for (peer, result) in witnessed_by_peers(cfg).await {
        match result {
            Ok(note) if note.is_empty() => {}
            Ok(note) => {
                let size = crate::audit::verify::check_witnessed(ctx, verified, &peer, &note)?;
                witnessed.consistent.push((peer, size));
            }
            Err(e) => witnessed.unreachable.push((peer, e)),
        }
    }
    Ok(witnessed)
}

/// Asks every peer, as this node (its node certificate), for the latest
/// checkpoint of this node's log it cosigned.
async fn witnessed_by_peers(cfg: &NodeConfig) -> Vec<(String, Result<String, String>)> {
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

fn print_verified(cfg: &NodeConfig, verified: &Verified, witnessed: &Witnessed, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "ok": true,
                "entries": verified.entries,
                "root": verified.root,
                "checkpoints": verified.checkpoints,
                "cosignatures": verified.cosignatures,
                "cosigned_size": verified.cosigned_size,
                "witnesses": witnessed.consistent.iter().map(|(p, s)| serde_json::json!({"witness": p, "size": s})).collect::<Vec<_>>(),
                "unreachable": witnessed.unreachable.iter().map(|(p, e)| serde_json::json!({"witness": p, "error": e})).collect::<Vec<_>>(),
            })
        );
        return;
    }
    println!(
        "audit log of {} verifies: {} entries, root {}, {} signed checkpoints, {} cosignatures (cosigned up to size {})",
        cfg.node_id,
        verified.entries,
        verified.root,
        verified.checkpoints,
        verified.cosignatures,
        verified.cosigned_size
    );
    for (p, size) in &witnessed.consistent {
        println!("  witness {p}: cosigned size {size}, consistent with this database");
    }
    for (p, e) in &witnessed.unreachable {
        println!("  witness {p}: not asked ({e})");
    }
}

async fn prove(config: PathBuf, entry: i64, json: bool) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let bundle = crate::audit::proof::prove(&cfg, entry).await?;
    emit(&bundle, json, |bundle| print_proof(&cfg, bundle))
}

fn print_proof(cfg: &NodeConfig, bundle: &crate::audit::proof::ProofBundle) {
    let witnesses: Vec<&str> = bundle
        .keys
        .iter()
        .filter(|k| k.role == "witness")
        .map(|k| k.node.as_str())
        .collect();
    println!(
        "entry {} ({} of {}) is leaf {} of the tree of size {} signed by {}{}",
        bundle.entry.seq,
        bundle.entry.kind,
        bundle.entry.subject,
        bundle.leaf_index,
        bundle.tree_size,
        cfg.node_id,
        if witnesses.is_empty() {
            " (not cosigned yet)".to_owned()
        } else {
            format!(" and cosigned by {}", witnesses.join(", "))
        }
    );
    println!("save it with --json and check it with `alertrelay audit verify-proof FILE`");
}

/// `audit verify-proof FILE`: exit 0 valid, 2 invalid.
fn verify_proof(
    file: PathBuf,
    directory: Option<PathBuf>,
    keys: &[String],
    json: bool,
) -> Result<ExitCode, Failure> {
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let Some(anchor) = trust_anchor(directory, keys)? else {
        return Ok(unverified(json));
    };
    let result = serde_json::from_str::<crate::audit::proof::ProofBundle>(&text)
        .map_err(|_| {
            crate::audit::proof::ProofError::Malformed(format!(
                "{} is not a proof bundle",
                file.display()
            ))
        })
        .and_then(|b| crate::audit::proof::verify_bundle(&b, &anchor));
    let r = match result {
        Ok(r) => r,
        Err(e) => return Ok(invalid(&e, json)),
    };
    if json {
        println!("{}", serde_json::json!({"ok": true, "proves": r}));
    } else {
        println!(
            "VALID: entry {} ({} of {}, at {}) is in {} at size {} (root {}), signed by {}{}",
            r.seq,
            r.kind,
            r.subject,
            crate::node::cases::rfc3339(r.at_ms),
            r.log,
            r.tree_size,
            r.root,
            r.signed_by,
            if r.cosigned_by.is_empty() {
                ", with no witness cosignature".to_owned()
            } else {
                format!(", cosigned by {}", r.cosigned_by.join(", "))
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `audit export`: every entry (after `after`, by `who`) as JSON lines on
/// stdout, the count on stderr.
async fn export(config: PathBuf, after: i64, who: Option<String>) -> Result<ExitCode, Failure> {
    use std::io::Write;
    let cfg = load_config(&config)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let n = crate::audit::proof::export(&cfg.database, after, who.as_deref(), &mut out).await?;
    out.flush()?;
    eprintln!("{n} entries exported");
    Ok(ExitCode::SUCCESS)
}
