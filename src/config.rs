//! Node configuration: `node.toml` as written ("raw", serde, unknown keys
//! refused) turned into a validated, typed [`NodeConfig`] whose paths are
//! absolute and whose ids are checked. Errors name the file and the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::directory::{Directory, DirectoryError};
use crate::geo::{self, GeoError};
use crate::identity::NodeId;

pub mod alerts;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: key `{key}`: {message}")]
    Invalid {
        path: String,
        key: &'static str,
        message: String,
    },
    #[error("{path}: key `geo.source` #{index} ({kind})")]
    GeoSource {
        path: String,
        /// 1-based, in file order.
        index: usize,
        kind: String,
        #[source]
        source: Box<GeoError>,
    },
    #[error("{path}: directory")]
    Directory {
        path: String,
        #[source]
        source: Box<DirectoryError>,
    },
}

/// Rate, burst and concurrency for one kind of caller
/// (`[limits]`; enforced by `node::admission`).
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    pub per_sec: f64,
    pub burst: f64,
    pub concurrent: usize,
}

/// `node.toml` exactly as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNodeConfig {
    /// This node's id, as in the directory and its certificate.
    pub node_id: String,
    /// Address the gRPC listener binds (both services).
    pub listen: String,
    /// SQLite database file (relative paths are relative to this file;
    /// `sqlite://PATH` works too), or a PostgreSQL URL (`postgres://…`).
    pub database: String,
    /// The federation directory file.
    pub directory: String,
    /// Node id that receives reports for countries with no hotline (e.g. a
    /// law-enforcement channel). Without one such reports stay here with
    /// delivery `no-hotline`.
    #[serde(default)]
    pub fallback: Option<String>,
    pub tls: RawTls,
    pub signing: RawSigning,
    /// The operator identity the command-line client uses with this node.
    #[serde(default)]
    pub operator: Option<RawTls>,
    /// An admin operator identity, for `alertrelay reload`.
    #[serde(default)]
    pub admin: Option<RawTls>,
    #[serde(default)]
    pub delivery: RawDelivery,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub audit: RawAudit,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub health: RawHealth,
    /// How the signed directory is exchanged with peers, and the protocol
    /// this node speaks.
    #[serde(default, skip_serializing_if = "RawExchange::is_default")]
    pub exchange: RawExchange,
    /// Who notices to hosting providers come from (`alertrelay notice`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<RawNotice>,
    /// Category-specific fallbacks, tried in order before `fallback`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_for: Vec<RawFallbackFor>,
    /// Where hosting countries and networks come from (the shipped data
    /// by default).
    #[serde(default, skip_serializing_if = "RawGeo::is_default")]
    pub geo: RawGeo,
    /// Whether URL host names are resolved (off by default).
    #[serde(default, skip_serializing_if = "RawDns::is_default")]
    pub dns: RawDns,
    /// What may be sent where (jurisdiction policy), and where a report
    /// goes that may not go to its hosting country's hotline.
    #[serde(default, skip_serializing_if = "RawJurisdiction::is_default")]
    pub jurisdiction: RawJurisdiction,
    /// How long personal data and URLs are kept, per record kind.
    #[serde(default, skip_serializing_if = "RawRetention::is_default")]
    pub retention: RawRetention,
    /// The analysts' web console (off unless `listen` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<RawConsole>,
    /// How this hotline works its cases.
    #[serde(default, skip_serializing_if = "RawCases::is_default")]
    pub cases: RawCases,
    /// Events, thresholds, channels and routes for notifications.
    #[serde(default, skip_serializing_if = "alerts::RawAlerts::is_default")]
    pub alerts: alerts::RawAlerts,
}

/// `[cases]`: this hotline's own rules for working cases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCases {
    /// Closing a case as `not-illegal` takes two people: one proposes it,
    /// a supervisor (or admin) other than the proposer confirms it.
    /// Default false.
    pub not_illegal_needs_supervisor: bool,
}

impl RawCases {
    fn is_default(&self) -> bool {
        self == &RawCases::default()
    }
}

/// `[jurisdiction]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawJurisdiction {
    /// Where a report goes that the policy forbids sending where its
    /// content is hosted: a node id (e.g. a law-enforcement channel) or
    /// `held` (kept here for an analyst; the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alternative: Option<String>,
    /// `[[jurisdiction.rule]]`: what may be sent to a country's hotlines or
    /// to one peer.
    #[serde(rename = "rule", skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RawJurisdictionRule>,
}

impl RawJurisdiction {
    fn is_default(&self) -> bool {
        self == &RawJurisdiction::default()
    }
}

/// `[[jurisdiction.rule]]`: `country` or `peer`, and what may go there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawJurisdictionRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// `baseline` and/or `national`; empty: any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub classifications: Vec<String>,
    /// Categories; empty: any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
}

/// `[retention]`: days after which a record kind's URLs, notes, hashes,
/// hosting evidence and history reasons are purged (the case row stays as a
/// tombstone; the audit log is never purged). Absent: kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetention {
    /// Closed cases (not-illegal, removed, moved, retracted), counted from
    /// their last change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_cases_days: Option<u32>,
    /// Outgoing reports every receiver refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused_reports_days: Option<u32>,
    /// Outgoing reports delivered to every destination (the origin's copy;
    /// the signed receipts stay), counted from their last change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_reports_days: Option<u32>,
    /// Alerts (events and their notifications), counted from when they were
    /// raised: deleted once every notification of theirs is delivered or
    /// given up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alerts_days: Option<u32>,
    /// A notification still not delivered this long after its event is
    /// given up: never tried again, its body (URLs, if its route opted in)
    /// dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undelivered_notifications_days: Option<u32>,
    /// How often the node purges on its own, in seconds (default 3600).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_secs: Option<u64>,
}

impl RawRetention {
    fn is_default(&self) -> bool {
        self == &RawRetention::default()
    }
}

/// `[retention]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Retention {
    pub closed_cases_days: Option<u32>,
    pub refused_reports_days: Option<u32>,
    pub delivered_reports_days: Option<u32>,
    pub alerts_days: Option<u32>,
    pub undelivered_notifications_days: Option<u32>,
    /// How often the node purges on its own.
    #[serde(skip)]
    pub interval: Duration,
}

impl Retention {
    /// Whether any record kind (reports or alerts) has a retention period.
    pub fn any(&self) -> bool {
        self.closed_cases_days.is_some()
            || self.refused_reports_days.is_some()
            || self.delivered_reports_days.is_some()
            || self.alerts_days.is_some()
            || self.undelivered_notifications_days.is_some()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    /// Address of the Prometheus endpoint (`GET /metrics`), e.g.
    /// `127.0.0.1:9464`. Off when empty. Keep it off public interfaces.
    pub listen: Option<String>,
}

/// `[notice]`: the sender of notices to hosting providers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotice {
    /// The hotline's name as providers should see it (default: its name in
    /// the directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// The e-mail address providers answer to.
    pub contact: String,
    /// The hotline's domain name.
    pub domain: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHealth {
    /// How often readiness (database, keys, peers) is probed for
    /// `grpc.health.v1.Health`.
    pub probe_interval_ms: u64,
}

impl Default for RawHealth {
    fn default() -> Self {
        RawHealth {
            probe_interval_ms: 5_000,
        }
    }
}

/// `[exchange]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawExchange {
    /// How often each peer is asked for a newer signed directory (also at
    /// start, and at once when a peer says it has one).
    pub directory_interval_ms: u64,
    /// The protocol this node speaks: 2 (this release), or 1 to behave on
    /// the wire as the previous release (no `GetDirectory`, no protocol in
    /// `NodeInfo`): for tests of mixed-version federations.
    pub protocol: u32,
}

impl Default for RawExchange {
    fn default() -> Self {
        RawExchange {
            directory_interval_ms: 60_000,
            protocol: 2,
        }
    }
}

impl RawExchange {
    pub fn is_default(&self) -> bool {
        self == &RawExchange::default()
    }
}

/// `[exchange]`, checked.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub directory_interval: Duration,
    pub protocol: u32,
}

fn exchange(raw: &RawExchange) -> Result<Exchange, Invalid> {
    if raw.directory_interval_ms < 10 {
        return Err((
            "exchange.directory_interval_ms",
            "must be at least 10".into(),
        ));
    }
    if !(1..=2).contains(&raw.protocol) {
        return Err((
            "exchange.protocol",
            "must be 2 (this release) or 1 (the previous one)".into(),
        ));
    }
    Ok(Exchange {
        directory_interval: Duration::from_millis(raw.directory_interval_ms),
        protocol: raw.protocol,
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAudit {
    /// How often to sign a checkpoint of the audit log (when it grew).
    pub checkpoint_interval_ms: u64,
    /// How often to fetch, check and cosign each peer's checkpoint.
    pub witness_interval_ms: u64,
}

impl Default for RawAudit {
    fn default() -> Self {
        RawAudit {
            checkpoint_interval_ms: 300_000,
            witness_interval_ms: 300_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// Federation CA certificate (PEM).
    #[serde(default)]
    pub ca: Option<String>,
    pub cert: String,
    pub key: String,
    /// Certificate revocation lists of the federation CA (PEM). Reloaded
    /// on SIGHUP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crls: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSigning {
    /// PKCS#8 PEM Ed25519 key, mode 0600.
    pub key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDelivery {
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    pub batch_size: u32,
    pub request_timeout_ms: u64,
    /// How long a replica's claim on outbox rows lasts before another
    /// replica may take them over (renewed while a call is in flight).
    pub lease_ms: u64,
    /// This process's replica id, in claims and logs; empty: generated at
    /// start (host name, process id, random).
    pub replica: String,
}

impl Default for RawDelivery {
    fn default() -> Self {
        RawDelivery {
            retry_initial_ms: 500,
            retry_max_ms: 300_000,
            batch_size: 256,
            request_timeout_ms: 10_000,
            lease_ms: 30_000,
            replica: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Reports whose origin timestamp is older than this are refused.
    pub max_report_age_days: u32,
    /// Reports dated further than this in the future are refused.
    pub max_clock_skew_secs: u32,
    /// Requests per second each peer node may make (sustained), its burst,
    /// and how many may be in flight at once; beyond: RESOURCE_EXHAUSTED.
    pub peer_requests_per_sec: f64,
    pub peer_burst: u32,
    pub peer_concurrent: u32,
    /// The same for each operator certificate.
    pub operator_requests_per_sec: f64,
    pub operator_burst: u32,
    pub operator_concurrent: u32,
    /// Established connections each caller (a peer node, an operator
    /// certificate) may hold open at once, and all callers together;
    /// beyond, a new connection is closed after its handshake.
    pub connections_per_caller: u32,
    pub connections_total: u32,
    /// Urgent reports each peer may send ahead of everyone's bulk work
    /// (sustained rate and burst); past it they are received as bulk work.
    pub peer_urgent_per_sec: f64,
    pub peer_urgent_burst: u32,
    /// PDQ hashes each peer may have matched against the open cases
    /// (sustained rate and burst); past it its batch gets
    /// RESOURCE_EXHAUSTED and is sent again later.
    pub peer_pdq_per_sec: f64,
    pub peer_pdq_burst: u32,
    /// Open cases each origin may have in the near-duplicate index; past
    /// it its new cases are stored and worked but their PDQ hashes are
    /// not indexed (counted in `alertrelay_pdq_unindexed_total{peer}`).
    pub peer_open_pdq_cases: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_report_age_days: 30,
            max_clock_skew_secs: 300,
            peer_requests_per_sec: 200.0,
            peer_burst: 400,
            peer_concurrent: 16,
            operator_requests_per_sec: 1000.0,
            operator_burst: 2000,
            operator_concurrent: 32,
            connections_per_caller: 32,
            connections_total: 1024,
            peer_urgent_per_sec: 1.0,
            peer_urgent_burst: 30,
            peer_pdq_per_sec: 2000.0,
            peer_pdq_burst: 20_000,
            peer_open_pdq_cases: 100_000,
        }
    }
}

/// A validated node configuration with absolute paths.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub path: PathBuf,
    pub node_id: NodeId,
    pub listen: SocketAddr,
    pub database: crate::store::Database,
    pub directory_path: PathBuf,
    pub directory: Directory,
    pub fallback: Option<NodeId>,
    /// `[[fallback_for]]`: (category, node), in file order.
    pub fallback_for: Vec<(crate::report::Category, NodeId)>,
    /// `[[geo.source]]`, loaded; the shipped data when none is configured.
    pub geo: std::sync::Arc<geo::Sources>,
    /// `[dns]`: off, or a static map.
    pub dns: geo::dns::Dns,
    pub tls: TlsPaths,
    pub signing_key: PathBuf,
    pub operator: Option<TlsPaths>,
    pub admin: Option<TlsPaths>,
    pub delivery: Delivery,
    pub max_report_age: Duration,
    pub max_clock_skew: Duration,
    pub checkpoint_interval: Duration,
    pub witness_interval: Duration,
    pub metrics_listen: Option<SocketAddr>,
    pub health_probe_interval: Duration,
    /// `[notice]`, checked.
    pub notice: Option<RawNotice>,
    pub peer_quota: Quota,
    pub operator_quota: Quota,
    pub connections: ConnectionLimits,
    /// Each peer's urgent reports ahead of bulk work, and its PDQ hashes
    /// matched (`[limits] peer_urgent_*`, `peer_pdq_*`).
    pub urgent_quota: Quota,
    pub matching_quota: Quota,
    /// `[limits] peer_open_pdq_cases`.
    pub open_pdq_per_peer: u64,
    /// `[jurisdiction]`: what may be sent where.
    pub jurisdiction: crate::routing::policy::Policy,
    /// `[retention]`.
    pub retention: Retention,
    /// `[console]`, when configured.
    pub console: Option<Console>,
    /// `[cases]`.
    pub cases: RawCases,
    /// `[exchange]`.
    pub exchange: Exchange,
    /// `[alerts]`.
    pub alerts: alerts::Alerts,
}

#[derive(Debug, Clone)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub crls: Vec<PathBuf>,
}

impl TlsPaths {
    pub fn files(&self) -> crate::crypto::tls::TlsFiles<'_> {
        crate::crypto::tls::TlsFiles {
            ca: &self.ca,
            cert: &self.cert,
            key: &self.key,
            crls: &self.crls,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub batch_size: usize,
    pub request_timeout: Duration,
    /// How long a claim on outbox rows lasts (`lease_ms`).
    pub lease: Duration,
    /// The configured replica id, if any.
    pub replica: Option<String>,
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let raw: RawNodeConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: shown.clone(),
            message: describe_toml_error(&text, &e),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
        Self::from_raw(raw, path, &base)
    }

    fn from_raw(raw: RawNodeConfig, path: &Path, base: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let invalid = |(key, message): Invalid| ConfigError::Invalid {
            path: shown.clone(),
            key,
            message,
        };
        let resolve = |p: &str| base.join(p);
        let (node_id, listen) = identity(&raw).map_err(invalid)?;
        let directory_path = resolve(&raw.directory);
        let database = crate::store::Database::parse(&raw.database, resolve)
            .map_err(|m| invalid(("database", m)))?;
        let directory =
            Directory::load(&directory_path).map_err(|source| ConfigError::Directory {
                path: shown.clone(),
                source: Box::new(source),
            })?;
        let fallback =
            place_in_directory(&raw, &node_id, &directory, &directory_path).map_err(invalid)?;
        let (tls, operator, admin) = tls_paths(&raw, &resolve).map_err(invalid)?;
        let delivery = delivery(&raw.delivery).map_err(invalid)?;
        check_intervals(&raw.audit, &raw.health).map_err(invalid)?;
        if let Some(n) = &raw.notice {
            check_notice(n).map_err(invalid)?;
        }
        let (peer_quota, operator_quota) = quotas(&raw.limits).map_err(invalid)?;
        let connections = connection_limits(&raw.limits).map_err(invalid)?;
        let (urgent_quota, matching_quota) = work_quotas(&raw.limits).map_err(invalid)?;
        let metrics_listen = metrics_listen(raw.metrics.listen.as_deref()).map_err(invalid)?;
        let fallback_for = fallbacks_by_category(&raw.fallback_for, &directory)
            .map_err(|m| invalid(("fallback_for", m)))?;
        let geo = std::sync::Arc::new(geo_sources(&raw.geo, &shown, &resolve)?);
        let mut dns = raw.dns.validate().map_err(invalid)?;
        dns.tls_ca = raw.dns.tls_ca.as_deref().map(&resolve);
        dns.trust_anchor = raw.dns.trust_anchor.as_deref().map(&resolve);
        let jurisdiction =
            jurisdiction(&raw.jurisdiction, &directory, &node_id).map_err(invalid)?;
        let retention = retention(&raw.retention).map_err(invalid)?;
        let console = console(raw.console.as_ref(), &tls, &resolve).map_err(invalid)?;
        let exchange = exchange(&raw.exchange).map_err(invalid)?;
        let alerts = alerts::alerts(&raw.alerts, &resolve).map_err(invalid)?;
        Ok(NodeConfig {
            alerts,
            exchange,
            jurisdiction,
            retention,
            console,
            cases: raw.cases,
            fallback_for,
            geo,
            dns,
            path: path.to_path_buf(),
            node_id,
            listen,
            database,
            directory_path,
            directory,
            fallback,
            tls,
            signing_key: resolve(&raw.signing.key),
            operator,
            admin,
            delivery,
            max_report_age: Duration::from_secs(u64::from(raw.limits.max_report_age_days) * 86_400),
            max_clock_skew: Duration::from_secs(u64::from(raw.limits.max_clock_skew_secs)),
            checkpoint_interval: Duration::from_millis(raw.audit.checkpoint_interval_ms),
            witness_interval: Duration::from_millis(raw.audit.witness_interval_ms),
            metrics_listen,
            health_probe_interval: Duration::from_millis(raw.health.probe_interval_ms),
            notice: raw.notice.clone(),
            peer_quota,
            operator_quota,
            connections,
            urgent_quota,
            matching_quota,
            open_pdq_per_peer: raw.limits.peer_open_pdq_cases,
        })
    }
}

/// A configuration error without its file: the key and what is wrong
/// (`NodeConfig::from_raw` adds the file).
type Invalid = (&'static str, String);

/// `node_id` and `listen`: who this node is and where it listens.
fn identity(raw: &RawNodeConfig) -> Result<(NodeId, SocketAddr), Invalid> {
    let node_id = NodeId::new(&raw.node_id).map_err(|e| ("node_id", e.to_string()))?;
    let listen: SocketAddr = raw.listen.parse().map_err(|_| {
        (
            "listen",
            format!(
                "expected host:port such as 127.0.0.1:7001, got {:?}",
                raw.listen
            ),
        )
    })?;
    Ok((node_id, listen))
}

/// Checks that this node is in the directory it was given, and returns
/// its `fallback` (none when absent or empty), which must be there too.
fn place_in_directory(
    raw: &RawNodeConfig,
    node_id: &NodeId,
    directory: &Directory,
    directory_path: &Path,
) -> Result<Option<NodeId>, Invalid> {
    if directory.node(node_id).is_none() {
        return Err((
            "node_id",
            format!(
                "{node_id} is not in the directory {}",
                directory_path.display()
            ),
        ));
    }
    match raw.fallback.as_deref() {
        None | Some("") => Ok(None),
        Some(f) => {
            let id = NodeId::new(f).map_err(|e| ("fallback", e.to_string()))?;
            if directory.node(&id).is_none() {
                return Err(("fallback", format!("{id} is not in the directory")));
            }
            Ok(Some(id))
        }
    }
}

/// `[tls]`, `[operator]` and `[admin]`: the node's own TLS files, then the
/// operator's and the admin's, which use the node's CA and CRLs unless
/// they name their own.
fn tls_paths(
    raw: &RawNodeConfig,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<(TlsPaths, Option<TlsPaths>, Option<TlsPaths>), Invalid> {
    let ca = resolve(
        raw.tls
            .ca
            .as_deref()
            .ok_or_else(|| ("tls.ca", "the federation CA file is required".into()))?,
    );
    let crls: Vec<PathBuf> = raw.tls.crls.iter().map(|c| resolve(c)).collect();
    let client_paths = |o: &RawTls| TlsPaths {
        ca: o.ca.as_deref().map(resolve).unwrap_or_else(|| ca.clone()),
        cert: resolve(&o.cert),
        key: resolve(&o.key),
        crls: if o.crls.is_empty() {
            crls.clone()
        } else {
            o.crls.iter().map(|c| resolve(c)).collect()
        },
    };
    let operator = raw.operator.as_ref().map(client_paths);
    let admin = raw.admin.as_ref().map(client_paths);
    let tls = TlsPaths {
        ca,
        cert: resolve(&raw.tls.cert),
        key: resolve(&raw.tls.key),
        crls,
    };
    Ok((tls, operator, admin))
}

/// `[delivery]`, checked.
fn delivery(d: &RawDelivery) -> Result<Delivery, Invalid> {
    if d.retry_initial_ms == 0 || d.retry_max_ms < d.retry_initial_ms {
        return Err((
            "delivery.retry_max_ms",
            "must be at least delivery.retry_initial_ms, which must be > 0".into(),
        ));
    }
    if !(1..=256).contains(&d.batch_size) {
        return Err(("delivery.batch_size", "must be 1..=256".into()));
    }
    if !(100..=3_600_000).contains(&d.lease_ms) {
        return Err(("delivery.lease_ms", "must be 100..=3600000 (ms)".into()));
    }
    if d.replica.len() > 64
        || !d
            .replica
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err((
            "delivery.replica",
            "at most 64 of A-Z a-z 0-9 . - _ (or empty: generated)".into(),
        ));
    }
    Ok(Delivery {
        retry_initial: Duration::from_millis(d.retry_initial_ms),
        retry_max: Duration::from_millis(d.retry_max_ms),
        batch_size: d.batch_size as usize,
        request_timeout: Duration::from_millis(d.request_timeout_ms.max(100)),
        lease: Duration::from_millis(d.lease_ms),
        replica: (!d.replica.is_empty()).then(|| d.replica.clone()),
    })
}

/// `[audit]` and `[health]` intervals: at least 10 ms, so that the loops
/// they pace do not spin.
fn check_intervals(audit: &RawAudit, health: &RawHealth) -> Result<(), Invalid> {
    if audit.checkpoint_interval_ms < 10 || audit.witness_interval_ms < 10 {
        return Err((
            "audit.checkpoint_interval_ms",
            "audit intervals must be at least 10 ms".into(),
        ));
    }
    if health.probe_interval_ms < 10 {
        return Err(("health.probe_interval_ms", "must be at least 10 ms".into()));
    }
    Ok(())
}

/// `[notice]`: its contact must look like an e-mail address and its
/// domain like a DNS name, since both go into every notice sent.
fn check_notice(n: &RawNotice) -> Result<(), Invalid> {
    let (local, domain) = n.contact.split_once('@').unwrap_or(("", ""));
    if local.is_empty() || domain.is_empty() || n.contact.chars().any(char::is_whitespace) {
        return Err((
            "notice.contact",
            format!("expected an e-mail address, got {:?}", n.contact),
        ));
    }
    let labels_ok = !n.domain.is_empty()
        && n.domain.len() <= 253
        && n.domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if !labels_ok {
        return Err((
            "notice.domain",
            format!(
                "expected a DNS name such as hotline.example, got {:?}",
                n.domain
            ),
        ));
    }
    Ok(())
}

/// `[limits]`: the peers' quota, then the operators'.
fn quotas(l: &RawLimits) -> Result<(Quota, Quota), Invalid> {
    let peer = quota(
        "limits.peer_requests_per_sec",
        l.peer_requests_per_sec,
        l.peer_burst,
        l.peer_concurrent,
    )?;
    let operator = quota(
        "limits.operator_requests_per_sec",
        l.operator_requests_per_sec,
        l.operator_burst,
        l.operator_concurrent,
    )?;
    Ok((peer, operator))
}

/// `[limits] peer_urgent_*` and `peer_pdq_*`: rates and bursts of work, not
/// of calls (no bound of their own on work in flight).
fn work_quotas(l: &RawLimits) -> Result<(Quota, Quota), Invalid> {
    let unbounded = u32::MAX >> 4;
    let urgent = quota(
        "limits.peer_urgent_per_sec",
        l.peer_urgent_per_sec,
        l.peer_urgent_burst,
        unbounded,
    )?;
    let matching = quota(
        "limits.peer_pdq_per_sec",
        l.peer_pdq_per_sec,
        l.peer_pdq_burst,
        unbounded,
    )?;
    Ok((urgent, matching))
}

/// Established connections at once: per caller and in total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub per_caller: usize,
    pub total: usize,
}

/// `[limits] connections_*`: both above zero, the total at least one
/// caller's.
fn connection_limits(l: &RawLimits) -> Result<ConnectionLimits, Invalid> {
    if l.connections_per_caller == 0 {
        return Err(("limits.connections_per_caller", "must be > 0".into()));
    }
    if l.connections_total < l.connections_per_caller {
        return Err((
            "limits.connections_total",
            "must be at least limits.connections_per_caller".into(),
        ));
    }
    Ok(ConnectionLimits {
        per_caller: l.connections_per_caller as usize,
        total: l.connections_total as usize,
    })
}

/// One kind of caller's quota; `key` names it in the error.
fn quota(key: &'static str, per_sec: f64, burst: u32, concurrent: u32) -> Result<Quota, Invalid> {
    if !(per_sec > 0.0 && per_sec.is_finite()) || burst == 0 || concurrent == 0 {
        return Err((key, "rate, burst and concurrency must be > 0".into()));
    }
    Ok(Quota {
        per_sec,
        burst: f64::from(burst),
        concurrent: concurrent as usize,
    })
}

/// `[metrics] listen`: none when absent or empty.
fn metrics_listen(listen: Option<&str>) -> Result<Option<SocketAddr>, Invalid> {
    match listen {
        None | Some("") => Ok(None),
        Some(a) => Ok(Some(a.parse().map_err(|_| {
            (
                "metrics.listen",
                format!("expected host:port such as 127.0.0.1:9464, got {a:?}"),
            )
        })?)),
    }
}

/// `[retention]`, checked; the purge runs hourly unless told otherwise.
fn retention(r: &RawRetention) -> Result<Retention, Invalid> {
    if r.interval_secs == Some(0) {
        return Err(("retention.interval_secs", "must be > 0".into()));
    }
    Ok(Retention {
        closed_cases_days: r.closed_cases_days,
        refused_reports_days: r.refused_reports_days,
        delivered_reports_days: r.delivered_reports_days,
        alerts_days: r.alerts_days,
        undelivered_notifications_days: r.undelivered_notifications_days,
        interval: Duration::from_secs(r.interval_secs.unwrap_or(3600)),
    })
}

/// A TOML error as "key `a.b`: what was expected (line N, column M)": the
/// key is found from the error's position in the text.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().to_owned();
    let Some(span) = e.span() else {
        return message;
    };
    let before = &text[..span.start.min(text.len())];
    let line_no = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    // The table the position is in, and the key on its line.
    let mut table = String::new();
    for l in before.lines() {
        let l = l.trim();
        if let Some(h) = l.strip_prefix("[[").and_then(|h| h.split("]]").next()) {
            table = h.trim().to_owned();
        } else if let Some(h) = l.strip_prefix('[').and_then(|h| h.split(']').next()) {
            table = h.trim().to_owned();
        }
    }
    let line = text.lines().nth(line_no - 1).unwrap_or_default().trim();
    let key = if line.starts_with('[') {
        line.trim_matches(|c| c == '[' || c == ']')
            .trim()
            .to_owned()
    } else if let Some((k, _)) = line.split_once('=') {
        let k = k.trim().trim_matches('"');
        if table.is_empty() {
            k.to_owned()
        } else {
            format!("{table}.{k}")
        }
    } else {
        table
    };
    let at = format!("line {line_no}, column {column}");
    if key.is_empty() {
        format!("{message} ({at})")
    } else {
        format!("key `{key}`: {message} ({at})")
    }
}

/// `[[fallback_for]]`: a category's own fallback node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFallbackFor {
    pub category: String,
    pub node: String,
}

/// `[geo]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawGeo {
    /// `[[geo.source]]`, consulted in this order; none means the shipped data.
    #[serde(rename = "source", skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<RawGeoSource>,
}

impl RawGeo {
    fn is_default(&self) -> bool {
        self == &RawGeo::default()
    }
}

/// `[[geo.source]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeoSource {
    /// `shipped`, `mmdb`, `tor-geoip`, `csv`, `asn-csv` or `rir-delegated`.
    pub kind: String,
    /// The file (gzip or plain); or `paths` for several (e.g. IPv4 and IPv6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Shown in every answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `YYYY-MM-DD`, when the file does not carry its date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
}

/// `[dns]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDns {
    /// `off` (the default when `[dns]` is absent: host names are not
    /// resolved), `system` (the machine's resolvers; what `federation init`
    /// writes), `resolvers` (the ones listed below) or `static` (`hosts`).
    pub mode: String,
    /// For `resolvers`: `IP`, `IP:PORT`, or `tls://NAME@IP[:PORT]` for DNS
    /// over TLS.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resolvers: Vec<String>,
    /// Each question's deadline.
    pub deadline_ms: u64,
    /// Questions in flight at once, at most.
    pub concurrency: usize,
    /// Answers cached, at most.
    pub cache_size: u64,
    /// No answer is cached longer than this, whatever its TTL.
    pub max_ttl_s: u64,
    /// Ask the resolver to validate DNSSEC, and record each answer's status.
    pub dnssec: bool,
    /// When no host name resolves and nothing else locates the content:
    /// `hold` (kept here, delivery `held`) or `fallback`.
    pub on_failure: String,
    /// Every this many seconds, open cases received here are resolved
    /// again and handed on when their content moved; 0: never.
    pub recheck_interval_s: u64,
    /// For `static`: host name → addresses.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub hosts: std::collections::BTreeMap<String, Vec<String>>,
    /// For DNS over TLS (`tls://` resolvers): a PEM file of the CA
    /// certificates their certificates must chain to, instead of the
    /// Mozilla roots (a hotline's own resolvers with its own CA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<String>,
    /// With `dnssec`: a file of DNSKEY records (zone-file syntax, such as
    /// the `.key` file `dnssec-keygen` writes for a key-signing key) that
    /// validation starts from, instead of the root zone's published keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_anchor: Option<String>,
}

impl Default for RawDns {
    fn default() -> Self {
        let d = geo::dns::Dns::default();
        RawDns {
            mode: "off".into(),
            resolvers: Vec::new(),
            deadline_ms: d.deadline.as_millis() as u64,
            concurrency: d.concurrency,
            cache_size: d.cache_size,
            max_ttl_s: d.max_ttl.as_secs(),
            dnssec: d.dnssec,
            on_failure: d.on_failure.as_str().into(),
            recheck_interval_s: d.recheck_interval.as_secs(),
            hosts: Default::default(),
            tls_ca: None,
            trust_anchor: None,
        }
    }
}

impl RawDns {
    /// The machine's resolvers, everything else by default.
    pub fn system() -> RawDns {
        RawDns {
            mode: "system".into(),
            ..RawDns::default()
        }
    }

    /// The named resolvers (e.g. a test's own server on loopback).
    pub fn resolvers(upstreams: &[String]) -> RawDns {
        RawDns {
            mode: "resolvers".into(),
            resolvers: upstreams.to_vec(),
            ..RawDns::default()
        }
    }

    fn is_default(&self) -> bool {
        self == &RawDns::default()
    }

    fn validate(&self) -> Result<geo::dns::Dns, Invalid> {
        use geo::dns::{Dns, Mode, OnFailure, Upstream};
        let mode = match self.mode.as_str() {
            "off" => Mode::Off,
            "system" => Mode::System,
            "resolvers" => Mode::Resolvers,
            "static" => Mode::Static,
            _ => {
                return Err((
                    "dns.mode",
                    "not one of \"off\", \"system\", \"resolvers\", \"static\"".into(),
                ));
            }
        };
        if mode != Mode::Static && !self.hosts.is_empty() {
            return Err(("dns.hosts", "only used with mode = \"static\"".into()));
        }
        if mode != Mode::Resolvers && !self.resolvers.is_empty() {
            return Err((
                "dns.resolvers",
                "only used with mode = \"resolvers\"".into(),
            ));
        }
        if mode == Mode::Resolvers && self.resolvers.is_empty() {
            return Err((
                "dns.resolvers",
                "mode = \"resolvers\" needs at least one".into(),
            ));
        }
        if self.tls_ca.is_some() && !self.resolvers.iter().any(|r| r.starts_with("tls://")) {
            return Err((
                "dns.tls_ca",
                "only used with DNS over TLS resolvers (tls://NAME@IP)".into(),
            ));
        }
        if self.trust_anchor.is_some() && !self.dnssec {
            return Err(("dns.trust_anchor", "only used with dnssec = true".into()));
        }
        let mut resolvers = Vec::with_capacity(self.resolvers.len());
        for (i, r) in self.resolvers.iter().enumerate() {
            resolvers.push(
                Upstream::parse(r)
                    .map_err(|why| ("dns.resolvers", format!("entry {}: {why}", i + 1)))?,
            );
        }
        if !(1..=60_000).contains(&self.deadline_ms) {
            return Err(("dns.deadline_ms", "must be 1 to 60000".into()));
        }
        if !(1..=4096).contains(&self.concurrency) {
            return Err(("dns.concurrency", "must be 1 to 4096".into()));
        }
        if self.cache_size > 10_000_000 {
            return Err(("dns.cache_size", "must be at most 10000000".into()));
        }
        if !(1..=604_800).contains(&self.max_ttl_s) {
            return Err(("dns.max_ttl_s", "must be 1 to 604800 (a week)".into()));
        }
        if self.recheck_interval_s > 0 && matches!(mode, Mode::Off | Mode::Static) {
            return Err((
                "dns.recheck_interval_s",
                "re-checks need live DNS (mode = \"system\" or \"resolvers\")".into(),
            ));
        }
        let on_failure = match self.on_failure.as_str() {
            "hold" => OnFailure::Hold,
            "fallback" => OnFailure::Fallback,
            _ => return Err(("dns.on_failure", "not \"hold\" or \"fallback\"".into())),
        };
        let mut entries = Vec::with_capacity(self.hosts.len());
        for (name, addrs) in &self.hosts {
            let mut ips = Vec::with_capacity(addrs.len());
            for a in addrs {
                ips.push(
                    a.parse().map_err(|_| {
                        ("dns.hosts", format!("{name}: {a:?} is not an IP address"))
                    })?,
                );
            }
            entries.push((name.clone(), ips));
        }
        let map =
            geo::dns::StaticResolver::new(entries).map_err(|e| ("dns.hosts", e.to_string()))?;
        Ok(Dns {
            mode,
            resolvers,
            deadline: std::time::Duration::from_millis(self.deadline_ms),
            concurrency: self.concurrency,
            cache_size: self.cache_size,
            max_ttl: std::time::Duration::from_secs(self.max_ttl_s),
            dnssec: self.dnssec,
            on_failure,
            recheck_interval: std::time::Duration::from_secs(self.recheck_interval_s),
            map,
            // Resolved against node.toml's folder by the caller.
            tls_ca: self.tls_ca.as_ref().map(std::path::PathBuf::from),
            trust_anchor: self.trust_anchor.as_ref().map(std::path::PathBuf::from),
        })
    }
}

fn jurisdiction(
    raw: &RawJurisdiction,
    directory: &Directory,
    me: &NodeId,
) -> Result<crate::routing::policy::Policy, Invalid> {
    use crate::report::{Category, Classification};
    use crate::routing::policy::{Alternative, Policy, Rule, Target};
    let alternative = match raw.alternative.as_deref() {
        None | Some("held") => Alternative::Held,
        Some(a) => {
            let id = NodeId::new(a).map_err(|e| {
                (
                    "jurisdiction.alternative",
                    format!("{e} (a node id or \"held\")"),
                )
            })?;
            if directory.node(&id).is_none() {
                return Err((
                    "jurisdiction.alternative",
                    format!("{id} is not in the directory"),
                ));
            }
            if &id == me {
                return Err((
                    "jurisdiction.alternative",
                    "is this node; use \"held\" to keep reports here".into(),
                ));
            }
            Alternative::Node(id)
        }
    };
    let mut rules = Vec::with_capacity(raw.rules.len());
    for (i, r) in raw.rules.iter().enumerate() {
        let at = |m: String| ("jurisdiction.rule", format!("entry {}: {m}", i + 1));
        let target = match (&r.country, &r.peer) {
            (Some(c), None) => {
                if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(at(format!(
                        "country {c:?} is not an upper-case ISO 3166-1 alpha-2 code"
                    )));
                }
                Target::Country(c.clone())
            }
            (None, Some(p)) => {
                let id = NodeId::new(p).map_err(|e| at(e.to_string()))?;
                if directory.node(&id).is_none() {
                    return Err(at(format!("peer {id} is not in the directory")));
                }
                Target::Peer(id)
            }
            _ => return Err(at("give exactly one of `country` and `peer`".into())),
        };
        let classifications = r
            .classifications
            .iter()
            .map(|c| Classification::parse(c).map_err(|e| at(e.message)))
            .collect::<Result<Vec<_>, _>>()?;
        let categories = r
            .categories
            .iter()
            .map(|c| Category::parse(c).map_err(|e| at(e.message)))
            .collect::<Result<Vec<_>, _>>()?;
        rules.push(Rule {
            target,
            classifications,
            categories,
        });
    }
    Ok(Policy { alternative, rules })
}

fn fallbacks_by_category(
    raw: &[RawFallbackFor],
    directory: &Directory,
) -> Result<Vec<(crate::report::Category, NodeId)>, String> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, f) in raw.iter().enumerate() {
        let at = |m: String| format!("entry {}: {m}", i + 1);
        let category = crate::report::Category::parse(&f.category).map_err(|e| at(e.message))?;
        let node = NodeId::new(&f.node).map_err(|e| at(e.to_string()))?;
        if directory.node(&node).is_none() {
            return Err(at(format!("node {node} is not in the directory")));
        }
        out.push((category, node));
    }
    Ok(out)
}

fn geo_sources(
    raw: &RawGeo,
    shown: &str,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<geo::Sources, ConfigError> {
    if raw.sources.is_empty() {
        return Ok(geo::Sources::shipped());
    }
    let mut specs = Vec::with_capacity(raw.sources.len());
    for (i, s) in raw.sources.iter().enumerate() {
        let invalid = |message: String| ConfigError::Invalid {
            path: shown.to_owned(),
            key: "geo.source",
            message: format!("#{} ({}): {message}", i + 1, s.kind),
        };
        let kind = geo::SourceKind::parse(&s.kind).ok_or_else(|| {
            let kinds: Vec<&str> = geo::SourceKind::ALL.iter().map(|k| k.as_str()).collect();
            invalid(format!("kind must be one of {}", kinds.join(", ")))
        })?;
        if s.path.is_some() && !s.paths.is_empty() {
            return Err(invalid("give `path` or `paths`, not both".into()));
        }
        if let Some(d) = &s.date {
            let iso = time::macros::format_description!("[year]-[month]-[day]");
            time::Date::parse(d, &iso)
                .map_err(|_| invalid(format!("date {d:?} is not YYYY-MM-DD")))?;
        }
        if let Some(n) = &s.name
            && (n.is_empty() || n.len() > 64 || n.chars().any(char::is_control))
        {
            return Err(invalid("name must be 1-64 printable characters".into()));
        }
        specs.push(geo::SourceSpec {
            kind,
            name: s.name.clone(),
            paths: s.path.iter().chain(&s.paths).map(|p| resolve(p)).collect(),
            date: s.date.clone(),
        });
    }
    geo::Sources::load(&specs).map_err(|(i, source)| ConfigError::GeoSource {
        path: shown.to_owned(),
        index: i + 1,
        kind: specs
            .get(i)
            .map(|s| s.kind.as_str())
            .unwrap_or_default()
            .to_owned(),
        source: Box::new(source),
    })
}

/// `[console]`: the analysts' web console on its own HTTPS listener.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsole {
    /// Where the console listens (HTTPS), e.g. `127.0.0.1:8443`. Off when
    /// absent or empty.
    #[serde(default)]
    pub listen: Option<String>,
    /// Its TLS certificate chain and key (PEM); the node's `[tls]` files
    /// when absent. Browsers must trust it: give one from a CA they know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A session ends after this many minutes without a request (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_mins: Option<u64>,
    /// And this many hours after login, whatever happens (default 12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absolute_timeout_hours: Option<u64>,
}

/// `[console]`, checked.
#[derive(Debug, Clone)]
pub struct Console {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
}

fn console(
    raw: Option<&RawConsole>,
    tls: &TlsPaths,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<Option<Console>, Invalid> {
    let Some(raw) = raw else { return Ok(None) };
    let listen = match raw.listen.as_deref() {
        None | Some("") => return Ok(None),
        Some(a) => a.parse().map_err(|_| {
            (
                "console.listen",
                format!("expected host:port such as 127.0.0.1:8443, got {a:?}"),
            )
        })?,
    };
    let (cert, key) = match (&raw.cert, &raw.key) {
        (Some(c), Some(k)) => (resolve(c), resolve(k)),
        (None, None) => (tls.cert.clone(), tls.key.clone()),
        _ => {
            return Err((
                "console.cert",
                "give both console.cert and console.key, or neither".into(),
            ));
        }
    };
    let idle = raw.idle_timeout_mins.unwrap_or(30);
    let absolute = raw.absolute_timeout_hours.unwrap_or(12);
    if !(1..=24 * 60).contains(&idle) {
        return Err(("console.idle_timeout_mins", "must be 1-1440".into()));
    }
    if !(1..=7 * 24).contains(&absolute) {
        return Err(("console.absolute_timeout_hours", "must be 1-168".into()));
    }
    Ok(Some(Console {
        listen,
        cert,
        key,
        idle_timeout: Duration::from_secs(idle * 60),
        absolute_timeout: Duration::from_secs(absolute * 3600),
    }))
}
