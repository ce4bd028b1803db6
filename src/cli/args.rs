//! The command line's grammar: the clap types for `alertrelay` and every
//! subcommand, and nothing else. What each command does lives in the file
//! named after its group (`cases.rs`, `audit.rs`, …); `mod.rs` dispatches.
//!
//! Commands with many flags take them as one `…Args` struct, handed whole
//! to the command's function. Those structs carry no `///` comment on
//! purpose: the variant's comment is the subcommand's help, and a doc
//! comment on a flattened struct has been known to take its place
//! (clap-rs/clap#3127).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    /// How long client commands wait for the node to accept a connection,
    /// in seconds.
    #[arg(long, global = true, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub connect_timeout: u64,
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
    Submit(SubmitArgs),
    /// Cases at your node.
    Cases {
        #[command(subcommand)]
        command: CasesCommand,
    },
    /// Show where a report would go, and why, without submitting it.
    Route(RouteArgs),
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
    /// federation of 53 hotlines, near-duplicate matching at scale.
    /// Prints a table (or JSON).
    Bench(BenchArgs),
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
    /// The console's personal accounts (admin).
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Purge personal data and URLs whose retention period is over.
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[arg(long)]
    pub config: PathBuf,
    /// A reported URL (repeat for several).
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// csam, child-exploitation, grooming, trafficking, ncii, other.
    #[arg(long)]
    pub category: String,
    /// The IP address you traced the content to.
    #[arg(long)]
    pub hosting_ip: Option<String>,
    /// `urgent` (imminent danger, ongoing abuse) or `bulk`.
    #[arg(long, default_value = "bulk")]
    pub priority: String,
    /// Notes for the receiving analyst (may contain personal data).
    #[arg(long, default_value = "")]
    pub notes: String,
    /// A media hash as ALGORITHM:VALUE (repeatable). Never the media.
    #[arg(long = "hash")]
    pub hashes: Vec<String>,
    /// `baseline` (INTERPOL baseline, illegal everywhere) or `national`
    /// (illegal under this country's law only): decides where the
    /// jurisdiction policy lets it go.
    #[arg(long, default_value = "baseline")]
    pub classification: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RouteArgs {
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    #[arg(long)]
    pub hosting_ip: Option<String>,
    #[arg(long, default_value = "other")]
    pub category: String,
    /// `baseline` or `national`.
    #[arg(long, default_value = "baseline")]
    pub classification: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Run only these scenarios (repeatable, or comma-separated):
    /// limits, throughput, latency, urgent, drain, scale, pdq, dns,
    /// console, growth. All but growth by default (with --database, the
    /// four it runs).
    #[arg(long, value_delimiter = ',', value_parser = crate::bench::Scenario::parse)]
    pub scenario: Vec<crate::bench::Scenario>,
    /// Seconds of sustained load measured for throughput (each latency
    /// level runs for half of it).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Concurrent unary submitters (latency levels, scale).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Concurrent bulk-intake streams (`SubmitReports`) for throughput
    /// and for queuing backlogs, each with 1,024 submissions in flight
    /// (with --replicas, rounded up to a multiple of them).
    #[arg(long, default_value_t = 2)]
    pub streams: usize,
    /// Nodes for throughput, latency and drain: one origin and
    /// NODES - 1 destinations its reports are spread over.
    #[arg(long, default_value_t = 2)]
    pub nodes: usize,
    /// Urgent lane: bulk reports queued for the peer while it is down.
    #[arg(long, default_value_t = 100_000)]
    pub backlog: usize,
    /// Urgent lane: urgent reports measured with the peer idle.
    #[arg(long, default_value_t = 50)]
    pub urgent: usize,
    /// Backlog drain: reports queued while the destination is down
    /// (e.g. 1000000).
    #[arg(long, default_value_t = 100_000)]
    pub drain: usize,
    /// Scale: nodes of the simulated federation (hotlines of the
    /// example directory in file order, with France and the fallback).
    #[arg(long, default_value_t = 54)]
    pub scale_nodes: usize,
    /// Scale: reports submitted.
    #[arg(long, default_value_t = 100_000)]
    pub reports: usize,
    /// PDQ: open cases with a PDQ hash each stored at the destination
    /// before urgent reports (--urgent of new media and as many
    /// near-duplicates) are measured.
    #[arg(long, default_value_t = 100_000)]
    pub pdq: usize,
    /// DNS: reports imported with DNS on, naming --dns-hosts distinct
    /// host names, resolved at the bench's own DNS server on loopback.
    #[arg(long, default_value_t = 100_000)]
    pub dns_reports: usize,
    #[arg(long, default_value_t = 20_000)]
    pub dns_hosts: usize,
    /// Console: incoming cases stored at the destination before its
    /// queue and case pages are timed over HTTPS.
    #[arg(long, default_value_t = 1_000_000)]
    pub console_cases: usize,
    /// Growth: reports stored (delivered, receipts stored) before the
    /// end-to-end throughput is measured again, against fresh nodes.
    #[arg(long, default_value_t = 1_000_000)]
    pub growth: usize,
    /// Run throughput, latency, urgent and drain (the default then; the
    /// other scenarios measure SQLite and are refused) with each node's
    /// store on this PostgreSQL server (postgres://USER@HOST:PORT/DB): a
    /// fresh database per node, created from DB and dropped at the end.
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    /// With --database: each node runs as this many replicas sharing its
    /// database, behind a round-robin TCP balancer, the load spread over
    /// the origin's replicas.
    #[arg(long, default_value_t = 1, requires = "database")]
    pub replicas: usize,
    #[arg(long)]
    pub json: bool,
    /// Also write DIR/index.html: one self-contained page with the
    /// figures and SVG charts of the run.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// A STIX 2.1 bundle of cases (for law enforcement).
    Stix(StixArgs),
}

#[derive(Debug, Args)]
pub struct StixArgs {
    #[arg(long)]
    pub config: PathBuf,
    /// Only these cases (repeat); all matching the filters otherwise.
    #[arg(long = "case")]
    pub cases: Vec<String>,
    /// incoming, outgoing or local.
    #[arg(long)]
    pub direction: Option<String>,
    /// A case status or delivery state.
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long)]
    pub category: Option<String>,
    /// Only cases created within this many seconds.
    #[arg(long)]
    pub max_age_secs: Option<u64>,
    /// Only the reports of this case family (content hosted in several
    /// countries).
    #[arg(long)]
    pub family: Option<String>,
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
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
    /// Apply the database migrations this version brings, and nothing
    /// else (the node also applies them when it starts). Refused while a
    /// node runs on a SQLite database. Package upgrades run it, after a
    /// backup, before the node starts again.
    Migrate {
        #[arg(long)]
        config: PathBuf,
    },
    /// Restore a stopped SQLite node's database from a `db backup` file
    /// (refused while the node runs): the backup's audit log is verified
    /// first, the current database is kept beside it, and the restore is
    /// recorded in the restored audit log. A backup older than what the
    /// witnesses cosigned rolls the log back: read docs/operations.md.
    Restore {
        #[arg(long)]
        config: PathBuf,
        /// The backup file (from `db backup`).
        #[arg(long)]
        from: PathBuf,
    },
    /// Copy this SQLite node's data into an empty PostgreSQL database
    /// (refused while the node runs: this command holds its lock), then
    /// verify the audit log of the copy against the
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
    /// does it on a schedule). Asks the running node (admin certificate);
    /// with no node running, works on the database itself under its lock.
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
    Init(FederationInitArgs),
    /// Personal operator certificates.
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
    /// Sign a new version of the directory (DIR/directory.toml, the
    /// directory keys, DIR/crl.pem) into DIR/directory.signed. Put it on
    /// any one node (or use --install); the nodes spread it.
    Publish {
        #[command(flatten)]
        publish: PublishArgs,
        /// Also copy it to this node's directory file (e.g. the
        /// secretariat's own node); that node picks it up and spreads it.
        #[arg(long)]
        install: Option<PathBuf>,
    },
    /// A hotline joins: the CA issues its certificates, its folder
    /// DIR/<ID>/ is written, the directory lists it, and it is published.
    Join {
        #[command(flatten)]
        publish: PublishArgs,
        /// ID=CC[,CC...]
        #[arg(long)]
        node: String,
        /// Where peers reach it (https://host:port); by default
        /// https://127.0.0.1:PORT.
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long)]
        port: Option<u16>,
    },
    /// A hotline leaves: removed from the directory, its certificate
    /// revoked, published.
    Leave {
        #[command(flatten)]
        publish: PublishArgs,
        #[arg(long)]
        node: String,
    },
    /// Suspend a hotline (active = false) and publish: every node refuses
    /// it within one exchange interval.
    Suspend {
        #[command(flatten)]
        publish: PublishArgs,
        #[arg(long)]
        node: String,
    },
    /// Reinstate a suspended hotline and publish.
    Reinstate {
        #[command(flatten)]
        publish: PublishArgs,
        #[arg(long)]
        node: String,
    },
    /// Publish a hotline's new signing key; its old keys stay valid for
    /// --overlap-days more (their not_after).
    RotateKey {
        #[command(flatten)]
        publish: PublishArgs,
        #[arg(long)]
        node: String,
        /// The new public key (base64), when the hotline made it; without,
        /// one is made and written to DIR/<ID>/signing.key.
        #[arg(long)]
        public_key: Option<String>,
        #[arg(long, default_value_t = 7)]
        overlap_days: u32,
    },
    /// Issue a hotline a new TLS certificate (DIR/<ID>/node.pem), revoke
    /// the old one, and publish the CRL with a new version.
    RotateTls {
        #[command(flatten)]
        publish: PublishArgs,
        #[arg(long)]
        node: String,
    },
    /// Replace the directory key: a new one is made (DIR/directory.key,
    /// the old kept as DIR/directory.key.retired-ID), and a version signed
    /// by the old keys (--key, or DIR/directory.key) and the new one
    /// retires the old; the nodes take it and trust only the new key.
    RotateDirectoryKey {
        #[command(flatten)]
        publish: PublishArgs,
    },
}

/// Where the secretariat's folder is, and how versions are signed.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The federation folder written by `federation init` (with the
    /// directory keys).
    #[arg(long)]
    pub dir: PathBuf,
    /// A private directory key to sign with (repeat for k of n); by
    /// default DIR/directory.key.
    #[arg(long = "key")]
    pub keys: Vec<PathBuf>,
    /// How long nodes accept this version.
    #[arg(long, default_value_t = 90)]
    pub valid_days: u32,
}

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Issue a personal operator certificate for one person of a node's
    /// hotline: DIR/<NODE>/operators/<NAME>.pem and .key. The node's audit
    /// log names that person for every call made with it.
    Issue {
        /// The federation folder written by `federation init` (with ca.key).
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        node: String,
        /// The person's name (1-64 of A-Z, a-z, 0-9, '.', '_', '-').
        #[arg(long)]
        name: String,
        /// analyst, supervisor or admin.
        #[arg(long, default_value = "analyst")]
        role: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add an account; prints its one-time enrolment code (and the console
    /// link) to give to the person.
    Add {
        name: String,
        /// analyst, supervisor or admin.
        #[arg(long)]
        role: String,
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Every account: role, state, failures, lock, last login.
    List {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Disable an account: it can no longer log in (open sessions end at
    /// their next request).
    Disable {
        name: String,
        #[arg(long)]
        config: PathBuf,
    },
    /// Clear an account's password and second factor and print a new
    /// enrolment code (also re-enables a disabled account).
    Reset {
        name: String,
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Lift the lock that repeated failed logins put on an account.
    Unlock {
        name: String,
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct FederationInitArgs {
    #[arg(long)]
    pub out: PathBuf,
    /// ID=CC[,CC...] (repeat for each node; ID= for a node with no country).
    #[arg(long = "node", required = true)]
    pub nodes: Vec<String>,
    #[arg(long, default_value = "alertrelay-example")]
    pub federation: String,
    /// Node that receives reports for countries with no hotline.
    #[arg(long)]
    pub fallback: Option<String>,
    /// NODE=RELAY: NODE is reached through RELAY, which passes reports
    /// on and receipts and status updates back (repeatable).
    #[arg(long = "relay")]
    pub relays: Vec<String>,
    /// Give the nodes ports BASE, BASE+1, ... instead of free ones.
    #[arg(long)]
    pub base_port: Option<u16>,
    /// A plain directory.toml given to every node by hand, instead of a
    /// signed directory that spreads by itself.
    #[arg(long)]
    pub plain_directory: bool,
}

#[derive(Debug, Subcommand)]
pub enum CasesCommand {
    /// List cases, newest first.
    List(CasesListArgs),
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
    Handoff(CasesHandoffArgs),
    /// Resolve a case's host names again (DNS, never the cache) and, when
    /// the content is now hosted in another country, hand the case to that
    /// country's hotline with both resolutions as evidence.
    Reroute {
        /// Report id, or ORIGIN/REPORT-ID.
        id: String,
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
    Correct(CasesCorrectArgs),
    /// Change the status of a case worked here.
    Update(CasesUpdateArgs),
    /// Reject (a supervisor or admin) or withdraw (its proposer) a case's
    /// pending second-person close (`cases update --propose`).
    RejectClose {
        /// Report id, or ORIGIN/REPORT-ID.
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
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
        /// The trust anchor: the federation directory file. A key counts
        /// only if it lists it, not revoked, valid when it signed.
        #[arg(long)]
        directory: Option<PathBuf>,
        /// Or: a key you trust, for the one node it signs for:
        /// NODE=PUBLIC-KEY (base64, as the directory writes it); repeat
        /// for several. Without a directory or a key nothing can be
        /// verified.
        #[arg(long = "key")]
        keys: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct CasesListArgs {
    #[arg(long)]
    pub config: PathBuf,
    /// incoming, outgoing or local.
    #[arg(long)]
    pub direction: Option<String>,
    /// A case status, or a delivery state (queued, delivered, refused, no-hotline).
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long)]
    pub category: Option<String>,
    /// A node id: the case's origin or one of its destinations.
    #[arg(long)]
    pub peer: Option<String>,
    /// urgent or bulk.
    #[arg(long)]
    pub priority: Option<String>,
    /// Only cases created within this many seconds.
    #[arg(long)]
    pub max_age_secs: Option<u64>,
    /// Only the reports of this case family (content hosted in several
    /// countries).
    #[arg(long)]
    pub family: Option<String>,
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CasesHandoffArgs {
    /// Report id, or ORIGIN/REPORT-ID.
    pub id: String,
    /// The node to hand the case over to.
    #[arg(
        long,
        conflicts_with = "hosting_ip",
        required_unless_present = "hosting_ip"
    )]
    pub to: Option<String>,
    /// Where the content is hosted now: routing picks the hotline.
    #[arg(long)]
    pub hosting_ip: Option<String>,
    /// Why (sent to the new hotline and the origin).
    #[arg(long)]
    pub reason: String,
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CasesCorrectArgs {
    /// Report id, or ORIGIN/REPORT-ID.
    pub id: String,
    #[arg(long)]
    pub category: Option<String>,
    /// ALGORITHM:VALUE (repeatable): replaces the report's hashes.
    #[arg(long = "hash")]
    pub hashes: Vec<String>,
    /// Replaces the report's notes (may contain personal data; never
    /// the public reporter's identity).
    #[arg(long)]
    pub notes: Option<String>,
    #[arg(long)]
    pub reason: String,
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CasesUpdateArgs {
    pub id: String,
    #[arg(long)]
    pub status: String,
    #[arg(long, default_value = "")]
    pub reason: String,
    /// With --status referred-to-law-enforcement (required then): the
    /// agency the case was referred to.
    #[arg(long, default_value = "")]
    pub agency: String,
    /// With --status referred-to-law-enforcement (required then): the
    /// agency's reference.
    #[arg(long, default_value = "")]
    pub reference: String,
    /// When it was referred (RFC 3339); default now.
    #[arg(long, default_value = "")]
    pub referred_at: String,
    /// Propose the change for a second person instead of making it (a
    /// not-illegal close when the node's `[cases]
    /// not_illegal_needs_supervisor` is on; --reason required). A
    /// supervisor or admin other than you confirms it by making the same
    /// change without --propose.
    #[arg(long)]
    pub propose: bool,
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long)]
    pub json: bool,
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
        /// The trust anchor: the federation directory file. A key counts
        /// only if it lists it, not revoked, valid when it signed.
        #[arg(long)]
        directory: Option<PathBuf>,
        /// Or: a key you trust, for the one node it signs for:
        /// NODE=PUBLIC-KEY (base64, as the directory writes it); repeat
        /// for several. Without a directory or a key nothing can be
        /// verified.
        #[arg(long = "key")]
        keys: Vec<String>,
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
