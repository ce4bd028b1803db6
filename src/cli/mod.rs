//! The command line. The only place that prints for humans; `--json`
//! output is for scripts and is stable.

pub(crate) mod client;
mod demo;
mod doctor;
mod formats;
mod import;
mod print;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::NodeConfig;

/// Exit code for configuration errors (EX_USAGE... EX_DATAERR family).
pub const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "alertrelay",
    version,
    about = "Federation node for internet hotlines"
)]
pub struct Cli {
    /// Log format: `human` or `json`.
    #[arg(long, global = true, default_value = "human")]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a local federation of four hotlines and walk reports through it.
    Demo {
        /// Keep the federation's files here instead of a temporary directory.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
    /// Set up a federation: CA, certificates, keys and configs.
    Federation {
        #[command(subcommand)]
        command: FederationCommand,
    },
    /// Run a node.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Submit a report to your node.
    Submit {
        #[arg(long)]
        config: PathBuf,
        /// A reported URL (repeat for several).
        #[arg(long = "url", required = true)]
        urls: Vec<String>,
        /// csam, child-exploitation, grooming, trafficking, ncii, other.
        #[arg(long)]
        category: String,
        /// The IP address you traced the content to.
        #[arg(long)]
        hosting_ip: Option<String>,
        /// `urgent` (imminent danger, ongoing abuse) or `bulk`.
        #[arg(long, default_value = "bulk")]
        priority: String,
        /// Notes for the receiving analyst (may contain personal data).
        #[arg(long, default_value = "")]
        notes: String,
        /// A media hash as ALGORITHM:VALUE (repeatable). Never the media.
        #[arg(long = "hash")]
        hashes: Vec<String>,
        /// `baseline` (INTERPOL baseline, illegal everywhere) or `national`
        /// (illegal under this country's law only): decides where the
        /// jurisdiction policy lets it go.
        #[arg(long, default_value = "baseline")]
        classification: String,
        #[arg(long)]
        json: bool,
    },
    /// Cases at your node.
    Cases {
        #[command(subcommand)]
        command: CasesCommand,
    },
    /// Show where a report would go, and why, without submitting it.
    Route {
        #[arg(long)]
        config: PathBuf,
        #[arg(long = "url", required = true)]
        urls: Vec<String>,
        #[arg(long)]
        hosting_ip: Option<String>,
        #[arg(long, default_value = "other")]
        category: String,
        /// `baseline` or `national`.
        #[arg(long, default_value = "baseline")]
        classification: String,
        #[arg(long)]
        json: bool,
    },
    /// Time to takedown: median and 90th percentile from report to
    /// receipt, assessment, notice and removal, per destination hotline,
    /// category and hosting country.
    Stats {
        #[arg(long)]
        config: PathBuf,
        /// Reports created within this many days (default 30).
        #[arg(long, default_value_t = 30)]
        window_days: u64,
        #[arg(long)]
        json: bool,
    },
    /// Measure real nodes (mutual TLS, durable SQLite in a temporary
    /// directory, in this process) against this machine's limits:
    /// throughput, latency, the urgent lane, backlog drain, a simulated
    /// federation of 53 hotlines. Prints a table (or JSON).
    Bench {
        /// Run only these scenarios (repeatable, or comma-separated):
        /// limits, throughput, latency, urgent, drain, scale. All by default.
        #[arg(long, value_delimiter = ',', value_parser = crate::bench::Scenario::parse)]
        scenario: Vec<crate::bench::Scenario>,
        /// Seconds of sustained load measured for throughput (each latency
        /// level runs for half of it).
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Concurrent unary submitters (latency levels, scale).
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Concurrent bulk-intake streams (`SubmitReports`) for throughput
        /// and for queuing backlogs, each with 1,024 submissions in flight.
        #[arg(long, default_value_t = 2)]
        streams: usize,
        /// Nodes for throughput, latency and drain: one origin and
        /// NODES - 1 destinations its reports are spread over.
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        /// Urgent lane: bulk reports queued for the peer while it is down.
        #[arg(long, default_value_t = 100_000)]
        backlog: usize,
        /// Urgent lane: urgent reports measured with the peer idle.
        #[arg(long, default_value_t = 50)]
        urgent: usize,
        /// Backlog drain: reports queued while the destination is down
        /// (e.g. 1000000).
        #[arg(long, default_value_t = 100_000)]
        drain: usize,
        /// Scale: nodes of the simulated federation (hotlines of the
        /// example directory in file order, with France and the fallback).
        #[arg(long, default_value_t = 54)]
        scale_nodes: usize,
        /// Scale: reports submitted.
        #[arg(long, default_value_t = 100_000)]
        reports: usize,
        #[arg(long)]
        json: bool,
    },
    /// Per peer: reachable, queue depth, oldest undelivered, last error, next attempt.
    Peers {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Re-read the directory, certificates, keys and CRLs (admin; same as SIGHUP).
    Reload {
        #[arg(long)]
        config: PathBuf,
    },
    /// A summary of your node.
    Status {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Offline IP location data.
    Geo {
        #[command(subcommand)]
        command: GeoCommand,
    },
    /// Check a configuration before starting: files, permissions,
    /// certificates, the signing key, the peers and the clock.
    Doctor {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Submit every row of a CSV file (url, category, hosting_ip, hashes,
    /// priority, notes); a re-run never submits a row twice.
    Import {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        csv: PathBuf,
        /// Rows in flight at once on the node's bulk intake stream.
        #[arg(long, default_value_t = 1024)]
        concurrency: usize,
        #[arg(long)]
        json: bool,
    },
    /// A notice about a case for the hosting provider, in a standard format.
    Notice {
        /// Report id, or ORIGIN/REPORT-ID.
        case: String,
        #[arg(long)]
        config: PathBuf,
        /// `xarf` (X-ARF v4 JSON).
        #[arg(long, default_value = "xarf")]
        format: String,
    },
    /// Cases in a standard exchange format.
    Export {
        #[command(subcommand)]
        command: ExportCommand,
    },
    /// The database.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Purge personal data and URLs whose retention period is over.
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// A STIX 2.1 bundle of cases (for law enforcement).
    Stix {
        #[arg(long)]
        config: PathBuf,
        /// Only these cases (repeat); all matching the filters otherwise.
        #[arg(long = "case")]
        cases: Vec<String>,
        /// incoming, outgoing or local.
        #[arg(long)]
        direction: Option<String>,
        /// A case status or delivery state.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        category: Option<String>,
        /// Only cases created within this many seconds.
        #[arg(long)]
        max_age_secs: Option<u64>,
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// An online-safe copy of the database (SQLite `VACUUM INTO`), while
    /// the node runs.
    Backup {
        #[arg(long)]
        config: PathBuf,
        /// The new file (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Copy this (stopped) SQLite node's data into an empty PostgreSQL
    /// database, then verify the audit log of the copy against the
    /// original (same entries, same root). Then set `database` in
    /// node.toml to the URL.
    MigrateTo {
        /// postgres://USER@HOST:PORT/DBNAME (the database must exist and be empty).
        url: String,
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Purge what `[retention]` in node.toml says has expired (the node also
    /// does it on a schedule). Reads and writes the database file itself.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Only show what would be purged.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Erase one case's URLs, notes and evidence now (an erasure request),
    /// before its retention period ends. Audited with your reason.
    Erase {
        /// Report id, or ORIGIN/REPORT-ID.
        id: String,
        /// Why (e.g. the erasure request's reference); goes into the audit log.
        #[arg(long)]
        reason: String,
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum FederationCommand {
    /// Revoke certificates: re-issue DIR/crl.pem and copy it to every node
    /// folder (nodes apply it on SIGHUP or `alertrelay reload`).
    Revoke {
        /// The federation folder written by `federation init` (with ca.key).
        #[arg(long)]
        dir: PathBuf,
        /// A certificate (PEM) to revoke; repeat for several. None just
        /// re-issues the CRL with a fresh validity.
        #[arg(long = "cert")]
        certs: Vec<PathBuf>,
    },
    /// Write a federation: DIR/ca.pem, DIR/directory.toml, DIR/<ID>/node.toml ...
    Init {
        #[arg(long)]
        out: PathBuf,
        /// ID=CC[,CC...] (repeat for each node; ID= for a node with no country).
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
        #[arg(long, default_value = "alertrelay-example")]
        federation: String,
        /// Node that receives reports for countries with no hotline.
        #[arg(long)]
        fallback: Option<String>,
        /// NODE=RELAY: NODE is reached through RELAY, which passes reports
        /// on and receipts and status updates back (repeatable).
        #[arg(long = "relay")]
        relays: Vec<String>,
        /// Give the nodes ports BASE, BASE+1, ... instead of free ones.
        #[arg(long)]
        base_port: Option<u16>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CasesCommand {
    /// List cases, newest first.
    List {
        #[arg(long)]
        config: PathBuf,
        /// incoming, outgoing or local.
        #[arg(long)]
        direction: Option<String>,
        /// A case status, or a delivery state (queued, delivered, refused, no-hotline).
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        category: Option<String>,
        /// A node id: the case's origin or one of its destinations.
        #[arg(long)]
        peer: Option<String>,
        /// urgent or bulk.
        #[arg(long)]
        priority: Option<String>,
        /// Only cases created within this many seconds.
        #[arg(long)]
        max_age_secs: Option<u64>,
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Print new and changed cases as they happen (the analyst's queue).
    Watch {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        direction: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show one case with its deliveries and history.
    Show {
        /// Report id, or ORIGIN/REPORT-ID.
        id: String,
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Hand a case worked here over to another hotline (the content moved,
    /// or the jurisdiction is wrong); the origin is told.
    Handoff {
        /// Report id, or ORIGIN/REPORT-ID.
        id: String,
        /// The node to hand the case over to.
        #[arg(
            long,
            conflicts_with = "hosting_ip",
            required_unless_present = "hosting_ip"
        )]
        to: Option<String>,
        /// Where the content is hosted now: routing picks the hotline.
        #[arg(long)]
        hosting_ip: Option<String>,
        /// Why (sent to the new hotline and the origin).
        #[arg(long)]
        reason: String,
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Withdraw a report this node sent (a mistake, a court order): a
    /// signed retraction follows it wherever it went.
    Retract {
        /// Report id, or ORIGIN/REPORT-ID.
        id: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Correct a report this node sent: its category, media hashes or
    /// notes; a signed correction follows it wherever it went.
    Correct {
        /// Report id, or ORIGIN/REPORT-ID.
        id: String,
        #[arg(long)]
        category: Option<String>,
        /// ALGORITHM:VALUE (repeatable): replaces the report's hashes.
        #[arg(long = "hash")]
        hashes: Vec<String>,
        /// Replaces the report's notes (may contain personal data; never
        /// the public reporter's identity).
        #[arg(long)]
        notes: Option<String>,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Change the status of a case worked here.
    Update {
        id: String,
        #[arg(long)]
        status: String,
        #[arg(long, default_value = "")]
        reason: String,
        /// With --status referred-to-law-enforcement (required then): the
        /// agency the case was referred to.
        #[arg(long, default_value = "")]
        agency: String,
        /// With --status referred-to-law-enforcement (required then): the
        /// agency's reference.
        #[arg(long, default_value = "")]
        reference: String,
        /// When it was referred (RFC 3339); default now.
        #[arg(long, default_value = "")]
        referred_at: String,
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Write a signed bundle of a case and its proofs for an agency
    /// (recorded in the audit log as a read by you).
    Export {
        /// Report id, or ORIGIN/REPORT-ID.
        id: String,
        /// The purpose (required; the only one so far).
        #[arg(long, required = true)]
        for_law_enforcement: bool,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Check an exported bundle offline: exit 0 valid, 2 invalid.
    VerifyExport {
        file: PathBuf,
        /// Only trust keys that are also in this directory file.
        #[arg(long)]
        directory: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the audit chain from the database file.
    Verify {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
        /// Do not ask the witnesses (peers) what they cosigned.
        #[arg(long)]
        offline: bool,
    },
    /// An inclusion proof of one entry against a signed, cosigned checkpoint.
    Prove {
        /// The entry's sequence number (1-based).
        entry: i64,
        #[arg(long)]
        config: PathBuf,
        /// Print the proof bundle as JSON (to save and hand over).
        #[arg(long)]
        json: bool,
    },
    /// Check a proof bundle offline.
    VerifyProof {
        file: PathBuf,
        /// Only trust keys that are also in this directory file.
        #[arg(long)]
        directory: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Write every audit entry as JSON lines.
    Export {
        #[arg(long)]
        config: PathBuf,
        /// Only entries after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// Only what this actor did: an identity as the log names it
        /// (`operator:FR-PDC/alice`, `node:DE-ECO`), or an operator's
        /// `NODE/NAME` ("who looked at what": the `case.read` and
        /// `case.exported` entries).
        #[arg(long)]
        who: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum GeoCommand {
    /// Which country the shipped data places an IP address in.
    Lookup {
        ip: String,
        #[arg(long)]
        json: bool,
    },
}

/// A failure with the exit code it deserves.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            code: 1,
            error: e.into(),
        }
    }
}

pub(crate) fn load_config(path: &std::path::Path) -> Result<NodeConfig, Failure> {
    NodeConfig::load(path).map_err(|e| Failure {
        code: EXIT_CONFIG,
        error: e.into(),
    })
}

pub async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    match cli.command {
        Command::Demo { keep } => demo::run(keep).await,
        Command::Federation {
            command:
                FederationCommand::Init {
                    out,
                    nodes,
                    federation,
                    fallback,
                    relays,
                    base_port,
                },
        } => federation_init(out, nodes, federation, fallback, relays, base_port),
        Command::Federation {
            command: FederationCommand::Revoke { dir, certs },
        } => {
            let refs: Vec<&std::path::Path> = certs.iter().map(PathBuf::as_path).collect();
            let n = crate::provision::revoke(&dir, &refs)?;
            println!(
                "{} written: {n} certificate(s) revoked; send SIGHUP to each node or run `alertrelay reload`",
                dir.join("crl.pem").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { config } => serve(config).await,
        Command::Submit {
            config,
            urls,
            category,
            hosting_ip,
            priority,
            notes,
            hashes,
            classification,
            json,
        } => {
            client::submit(client::SubmitArgs {
                config,
                urls,
                category,
                hosting_ip,
                priority,
                notes,
                hashes,
                classification,
                json,
            })
            .await
        }
        Command::Cases { command } => match command {
            CasesCommand::List {
                config,
                direction,
                status,
                category,
                peer,
                priority,
                max_age_secs,
                limit,
                json,
            } => {
                let args = client::ListArgs {
                    direction,
                    status,
                    category,
                    peer,
                    priority,
                    max_age_secs,
                    limit,
                };
                client::cases_list(config, args, json).await
            }
            CasesCommand::Watch {
                config,
                direction,
                json,
            } => client::cases_watch(config, direction, json).await,
            CasesCommand::Show { id, config, json } => client::cases_show(config, id, json).await,
            CasesCommand::Update {
                id,
                status,
                reason,
                agency,
                reference,
                referred_at,
                config,
                json,
            } => {
                let referral = client::Referral {
                    agency,
                    reference,
                    referred_at,
                };
                client::cases_update(config, id, status, reason, referral, json).await
            }
            CasesCommand::Export {
                id,
                for_law_enforcement: _,
                out,
                config,
                json,
            } => client::cases_export(config, id, out, json).await,
            CasesCommand::VerifyExport {
                file,
                directory,
                json,
            } => verify_export(file, directory, json),
            CasesCommand::Retract {
                id,
                reason,
                config,
                json,
            } => client::cases_amend(config, id, client::Amend::Retract, reason, json).await,
            CasesCommand::Correct {
                id,
                category,
                hashes,
                notes,
                reason,
                config,
                json,
            } => {
                let change = client::Amend::Correct {
                    category,
                    hashes,
                    notes,
                };
                client::cases_amend(config, id, change, reason, json).await
            }
            CasesCommand::Handoff {
                id,
                to,
                hosting_ip,
                reason,
                config,
                json,
            } => {
                let req = crate::pb::HandOffCaseRequest {
                    id,
                    to: to.unwrap_or_default(),
                    reason,
                    hosting_ip: hosting_ip.unwrap_or_default(),
                };
                client::cases_handoff(config, req, json).await
            }
        },
        Command::Route {
            config,
            urls,
            hosting_ip,
            category,
            classification,
            json,
        } => client::route(config, urls, hosting_ip, category, classification, json).await,
        Command::Stats {
            config,
            window_days,
            json,
        } => client::stats(config, window_days, json).await,
        Command::Bench {
            scenario,
            duration,
            concurrency,
            streams,
            nodes,
            backlog,
            urgent,
            drain,
            scale_nodes,
            reports,
            json,
        } => {
            let opts = crate::bench::Options {
                scenarios: if scenario.is_empty() {
                    crate::bench::Scenario::ALL.to_vec()
                } else {
                    scenario
                },
                duration: std::time::Duration::from_secs_f64(duration.max(0.5)),
                concurrency,
                streams,
                nodes,
                backlog,
                urgent,
                drain,
                scale_nodes,
                scale_reports: reports,
                json,
                dir: std::env::temp_dir(),
            };
            let r = crate::bench::run(&opts).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                crate::bench::print(&r);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Peers { config, json } => client::peers(config, json).await,
        Command::Status { config, json } => client::status(config, json).await,
        Command::Reload { config } => client::reload(config).await,
        Command::Audit {
            command:
                AuditCommand::Verify {
                    config,
                    json,
                    offline,
                },
        } => audit_verify(config, json, offline).await,
        Command::Audit {
            command:
                AuditCommand::Prove {
                    entry,
                    config,
                    json,
                },
        } => audit_prove(config, entry, json).await,
        Command::Audit {
            command:
                AuditCommand::VerifyProof {
                    file,
                    directory,
                    json,
                },
        } => audit_verify_proof(file, directory, json),
        Command::Audit {
            command: AuditCommand::Export { config, after, who },
        } => {
            let cfg = load_config(&config)?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let n =
                crate::audit::proof::export(&cfg.database, after, who.as_deref(), &mut out).await?;
            use std::io::Write;
            out.flush()?;
            eprintln!("{n} entries exported");
            Ok(ExitCode::SUCCESS)
        }
        Command::Geo {
            command: GeoCommand::Lookup { ip, json },
        } => geo_lookup(&ip, json),
        Command::Doctor { config, json } => doctor::run(config, json).await,
        Command::Import {
            config,
            csv,
            concurrency,
            json,
        } => import::run(config, csv, concurrency, json).await,
        Command::Notice {
            case,
            config,
            format,
        } => formats::notice(config, case, format).await,
        Command::Export {
            command:
                ExportCommand::Stix {
                    config,
                    cases,
                    direction,
                    status,
                    category,
                    max_age_secs,
                    limit,
                },
        } => {
            let filter = client::ListArgs {
                direction,
                status,
                category,
                peer: None,
                priority: None,
                max_age_secs,
                limit,
            };
            formats::export_stix(config, cases, filter).await
        }
        Command::Db {
            command: DbCommand::MigrateTo { url, config, json },
        } => db_migrate_to(config, url, json).await,
        Command::Db {
            command: DbCommand::Backup { config, out },
        } => db_backup(config, out).await,
        Command::Retention {
            command:
                RetentionCommand::Run {
                    config,
                    dry_run,
                    json,
                },
        } => retention_run(config, dry_run, json).await,
        Command::Retention {
            command:
                RetentionCommand::Erase {
                    id,
                    reason,
                    config,
                    json,
                },
        } => retention_erase(config, id, reason, json).await,
    }
}

async fn retention_erase(
    config: PathBuf,
    id: String,
    reason: String,
    json: bool,
) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let store = crate::store::Store::connect(&cfg.database)
        .await
        .with_context(|| format!("database {}", cfg.database.display()))?;
    let result = crate::node::retention::erase(
        &store,
        &id,
        "cli:retention",
        &reason,
        crate::node::Core::now_ms(),
    )
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

async fn retention_run(config: PathBuf, dry_run: bool, json: bool) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    if !cfg.retention.any() {
        return Err(Failure {
            code: EXIT_CONFIG,
            error: anyhow::anyhow!(
                "{}: no [retention] period is configured: nothing can expire",
                cfg.path.display()
            ),
        });
    }
    let store = crate::store::Store::connect(&cfg.database)
        .await
        .with_context(|| format!("database {}", cfg.database.display()))?;
    let result = crate::node::retention::run(
        &store,
        &cfg.retention,
        "cli:retention",
        cfg.node_id.as_str(),
        dry_run,
        true,
        crate::node::Core::now_ms(),
    )
    .await;
    store.close().await;
    let run = result.context("retention run failed")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&run)?);
    } else {
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
    Ok(ExitCode::SUCCESS)
}

fn verify_export(
    file: PathBuf,
    directory: Option<PathBuf>,
    json: bool,
) -> Result<ExitCode, Failure> {
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let dir = directory
        .map(|d| crate::directory::Directory::load(&d))
        .transpose()
        .map_err(|e| Failure {
            code: EXIT_CONFIG,
            error: e.into(),
        })?;
    let result = serde_json::from_str::<crate::wire::bundle::ExportBundle>(&text)
        .map_err(|_| {
            crate::audit::proof::ProofError::Malformed(format!(
                "{} is not a case export bundle",
                file.display()
            ))
        })
        .and_then(|b| crate::wire::bundle::verify_export(&b, dir.as_ref()));
    match result {
        Ok(r) => {
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
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "problem": e.to_string()})
                );
            } else {
                eprintln!("INVALID: {e}");
            }
            Ok(ExitCode::from(2))
        }
    }
}

fn federation_init(
    out: PathBuf,
    nodes: Vec<String>,
    federation: String,
    fallback: Option<String>,
    relays: Vec<String>,
    base_port: Option<u16>,
) -> Result<ExitCode, Failure> {
    let usage = |e: anyhow::Error| Failure {
        code: EXIT_CONFIG,
        error: e,
    };
    let mut specs = nodes
        .iter()
        .map(|n| crate::provision::NodeSpec::parse(n))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| usage(e.into()))?;
    if let Some(base) = base_port {
        for (i, spec) in specs.iter_mut().enumerate() {
            let port = u16::try_from(i)
                .ok()
                .and_then(|i| base.checked_add(i))
                .ok_or_else(|| usage(anyhow::anyhow!("--base-port {base} leaves no room")))?;
            spec.port = Some(port);
        }
    }
    let fallback = fallback
        .map(|f| crate::identity::NodeId::new(&f))
        .transpose()
        .map_err(|e| usage(e.into()))?;
    let relays = relays
        .iter()
        .map(|r| {
            let bad = || crate::provision::ProvisionError::BadRelaySpec(r.clone());
            let (node, via) = r.split_once('=').ok_or_else(bad)?;
            let id = |s: &str| crate::identity::NodeId::new(s).map_err(|_| bad());
            Ok((id(node)?, id(via)?))
        })
        .collect::<Result<Vec<_>, crate::provision::ProvisionError>>()
        .map_err(|e| usage(e.into()))?;
    let done = crate::provision::init(
        &out,
        &federation,
        &specs,
        &crate::provision::Options {
            fallback,
            delivery: None,
            audit: None,
            metrics_listen: None,
            limits: None,
            relays,
        },
    )?;
    println!("federation {federation} written to {}", out.display());
    for c in &done.configs {
        println!("  alertrelay serve --config {}", c.display());
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: PathBuf) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    // Signal handlers first: once the node says it listens, SIGTERM and
    // SIGHUP must already be handled (a supervisor may send them at once).
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let node = crate::runtime::start(cfg)
        .await
        .context("the node could not start")?;
    println!(
        "alertrelay node {} listening on {}",
        node.core.me, node.addr
    );
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                match node.core.reload("signal:SIGHUP").await {
                    Ok(()) => println!("reloaded"),
                    Err(e) => eprintln!("reload refused, nothing changed: {e:#}"),
                }
            }
        }
    }
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn audit_verify(config: PathBuf, json: bool, offline: bool) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let ctx = crate::audit::VerifyContext::from_config(&cfg);
    let broken = |e: crate::audit::AuditError| {
        if json {
            println!(
                "{}",
                serde_json::json!({"ok": false, "problem": e.to_string()})
            );
        } else {
            eprintln!("audit log of {} FAILS verification: {e}", cfg.node_id);
        }
        Ok(ExitCode::from(2))
    };
    // A progress bar on a terminal (a large log takes a while).
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
    let verified = crate::audit::verify::verify_with_progress(&cfg.database, &ctx, &progress).await;
    bar.finish_and_clear();
    let verified = match verified {
        Ok(v) => v,
        Err(e) if e.is_tampering() => return broken(e),
        Err(e) => return Err(e.into()),
    };
    // A database restored from an old backup is consistent with itself;
    // only the witnesses remember the larger tree they cosigned.
    let mut witnessed = Vec::new();
    let mut unreachable = Vec::new();
    if !offline {
        for (peer, result) in client::witnessed_by_peers(&cfg).await {
            match result {
                Ok(note) if note.is_empty() => {}
                Ok(note) => {
                    match crate::audit::verify::check_witnessed(&ctx, &verified, &peer, &note) {
                        Ok(size) => witnessed.push((peer, size)),
                        Err(e) => return broken(e),
                    }
                }
                Err(e) => unreachable.push((peer, e)),
            }
        }
    }
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
                "witnesses": witnessed.iter().map(|(p, s)| serde_json::json!({"witness": p, "size": s})).collect::<Vec<_>>(),
                "unreachable": unreachable.iter().map(|(p, e)| serde_json::json!({"witness": p, "error": e})).collect::<Vec<_>>(),
            })
        );
    } else {
        println!(
            "audit log of {} verifies: {} entries, root {}, {} signed checkpoints, {} cosignatures (cosigned up to size {})",
            cfg.node_id,
            verified.entries,
            verified.root,
            verified.checkpoints,
            verified.cosignatures,
            verified.cosigned_size
        );
        for (p, size) in &witnessed {
            println!("  witness {p}: cosigned size {size}, consistent with this database");
        }
        for (p, e) in &unreachable {
            println!("  witness {p}: not asked ({e})");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn audit_prove(config: PathBuf, entry: i64, json: bool) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let bundle = crate::audit::proof::prove(&cfg, entry).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&bundle)?);
    } else {
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
    Ok(ExitCode::SUCCESS)
}

fn audit_verify_proof(
    file: PathBuf,
    directory: Option<PathBuf>,
    json: bool,
) -> Result<ExitCode, Failure> {
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let bundle: crate::audit::proof::ProofBundle = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a proof bundle", file.display()))?;
    let dir = directory
        .map(|d| crate::directory::Directory::load(&d))
        .transpose()
        .map_err(|e| Failure {
            code: EXIT_CONFIG,
            error: e.into(),
        })?;
    match crate::audit::proof::verify_bundle(&bundle, dir.as_ref()) {
        Ok(r) => {
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
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "problem": e.to_string()})
                );
            } else {
                eprintln!("INVALID: {e}");
            }
            Ok(ExitCode::from(2))
        }
    }
}

async fn db_backup(config: PathBuf, out: PathBuf) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    if out.exists() {
        return Err(Failure {
            code: EXIT_CONFIG,
            error: anyhow::anyhow!("--out {}: the file exists; give a new name", out.display()),
        });
    }
    let Some(path) = cfg.database.sqlite_path() else {
        return Err(Failure {
            code: EXIT_CONFIG,
            error: anyhow::anyhow!(
                "{} is a PostgreSQL database: back it up with the server's tools (pg_dump, or continuous archiving)",
                cfg.database
            ),
        });
    };
    let started = std::time::Instant::now();
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

async fn db_migrate_to(config: PathBuf, url: String, json: bool) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let target =
        crate::store::Database::parse(&url, |p: &str| PathBuf::from(p)).map_err(|e| Failure {
            code: EXIT_CONFIG,
            error: anyhow::anyhow!("{url:?}: {e}"),
        })?;
    let crate::store::Database::Postgres(target_url) = &target else {
        return Err(Failure {
            code: EXIT_CONFIG,
            error: anyhow::anyhow!("migrate-to needs a postgres:// URL, not {target}"),
        });
    };
    let Some(source) = cfg.database.sqlite_path() else {
        return Err(Failure {
            code: EXIT_CONFIG,
            error: anyhow::anyhow!(
                "{}: the node already runs on PostgreSQL ({})",
                cfg.path.display(),
                cfg.database
            ),
        });
    };
    let started = std::time::Instant::now();
    let copied = crate::store::copy::sqlite_to_postgres(source, target_url)
        .await
        .with_context(|| format!("copy of {} to {target} failed", source.display()))?;
    let ctx = crate::audit::VerifyContext::from_config(&cfg);
    let original = crate::audit::verify(&cfg.database, &ctx).await;
    let copy = crate::audit::verify(&target, &ctx).await;
    let (original, copy) = match (original, copy) {
        (Ok(o), Ok(c)) => (o, c),
        (Err(e), _) => {
            return Err(anyhow::Error::from(e)
                .context(format!(
                    "the audit log of {} does not verify",
                    source.display()
                ))
                .into());
        }
        (_, Err(e)) => {
            return Err(anyhow::Error::from(e)
                .context(format!(
                    "the audit log of the copy in {target} does not verify"
                ))
                .into());
        }
    };
    let same = original.entries == copy.entries
        && original.root == copy.root
        && original.head == copy.head
        && original.checkpoints == copy.checkpoints
        && original.cosignatures == copy.cosignatures;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "ok": same,
                "source": source.display().to_string(),
                "target": target.display(),
                "tables": copied.tables.iter().map(|(t, n)| serde_json::json!({"table": t, "rows": n})).collect::<Vec<_>>(),
                "entries": copy.entries,
                "root": copy.root,
                "source_root": original.root,
                "checkpoints": copy.checkpoints,
                "cosignatures": copy.cosignatures,
                "ms": started.elapsed().as_millis() as u64,
            })
        );
    } else {
        for (t, n) in &copied.tables {
            println!("  {t:<15} {n} rows");
        }
        if same {
            println!(
                "copied {} to {target} in {} ms; the copy's audit log verifies: {} entries, root {}, {} checkpoints, {} cosignatures, as in the original",
                source.display(),
                started.elapsed().as_millis(),
                copy.entries,
                copy.root,
                copy.checkpoints,
                copy.cosignatures
            );
            println!(
                "now set  database = \"{}\"  in {}",
                target.display(),
                cfg.path.display()
            );
        } else {
            eprintln!(
                "the copy differs from the original: {} entries, root {} (original: {} entries, root {})",
                copy.entries, copy.root, original.entries, original.root
            );
        }
    }
    Ok(if same {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn geo_lookup(ip: &str, json: bool) -> Result<ExitCode, Failure> {
    let addr: std::net::IpAddr = ip.parse().map_err(|_| Failure {
        code: EXIT_CONFIG,
        error: anyhow::anyhow!("{ip:?} is not an IPv4 or IPv6 address"),
    })?;
    let answer = crate::geo::GeoDb::embedded()?.lookup(addr);
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!(
            "{addr}: {} (raw {:?}; {} {}, {})",
            answer.country.as_deref().unwrap_or("unknown"),
            answer.raw_code,
            answer.dataset,
            answer.dataset_date,
            answer.method
        );
    }
    Ok(ExitCode::SUCCESS)
}
