//! `alertrelay doctor`: checks a node's configuration before it starts
//! (or while it runs): files and their permissions, the certificates'
//! chains to the federation CA and their expiry, the signing key against
//! the directory, each peer (TLS handshake and `NodeInfo`) and the clock
//! against the peers'. Each check is ok, warn or fail; any fail makes the
//! exit code non-zero.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use super::Failure;
use crate::config::NodeConfig;
use crate::node::Core;
use crate::pb;

/// Certificates expiring sooner than this are a warning.
const EXPIRY_WARNING_DAYS: i64 = 30;
/// Clock differences beyond this (but within the report skew limit) are a
/// warning.
const CLOCK_WARNING_MS: i64 = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: String,
    pub status: Level,
    pub detail: String,
}

#[derive(Default)]
struct Report {
    checks: Vec<Check>,
}

impl Report {
    fn add(&mut self, check: impl Into<String>, status: Level, detail: impl Into<String>) {
        self.checks.push(Check {
            check: check.into(),
            status,
            detail: detail.into(),
        });
    }
    fn ok(&mut self, check: impl Into<String>, detail: impl Into<String>) {
        self.add(check, Level::Ok, detail);
    }
    fn warn(&mut self, check: impl Into<String>, detail: impl Into<String>) {
        self.add(check, Level::Warn, detail);
    }
    fn fail(&mut self, check: impl Into<String>, detail: impl Into<String>) {
        self.add(check, Level::Fail, detail);
    }
}

pub(crate) async fn run(config: PathBuf, json: bool) -> Result<ExitCode, Failure> {
    let mut report = Report::default();
    let cfg = match NodeConfig::load(&config) {
        Ok(cfg) => {
            report.ok("config", format!("{} loads", config.display()));
            Some(cfg)
        }
        Err(e) => {
            report.fail("config", format!("{:#}", anyhow::Error::from(e)));
            None
        }
    };
    if let Some(cfg) = &cfg {
        files(&mut report, cfg);
        postgres(&mut report, cfg).await;
        certificates(&mut report, cfg);
        signing_key(&mut report, cfg);
        directory(&mut report, cfg);
        alerts(&mut report, cfg);
        listeners(&mut report, cfg).await;
        peers(&mut report, cfg).await;
    }
    let failed = report.checks.iter().any(|c| c.status == Level::Fail);
    let warned = report.checks.iter().any(|c| c.status == Level::Warn);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "ok": !failed,
                "config": config.display().to_string(),
                "checks": report.checks,
            }))?
        );
    } else {
        for c in &report.checks {
            let tag = match c.status {
                Level::Ok => "ok  ",
                Level::Warn => "WARN",
                Level::Fail => "FAIL",
            };
            println!("{tag}  {:<24} {}", c.check, c.detail);
        }
        println!(
            "{}",
            if failed {
                "doctor: FAILED (fix the checks marked FAIL)"
            } else if warned {
                "doctor: ok, with warnings"
            } else {
                "doctor: ok"
            }
        );
    }
    Ok(if cfg.is_none() {
        ExitCode::from(super::EXIT_CONFIG)
    } else if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Notifications: whether any route sends anything, and each webhook's
/// secret as the node will read it (0600, at least 16 bytes).
fn alerts(report: &mut Report, cfg: &NodeConfig) {
    let a = &cfg.alerts;
    if a.routes.is_empty() {
        let detail = "no [[alerts.route]]: events are raised and audited, but nobody is notified";
        if a.webhooks.is_empty() && a.smtp.is_none() {
            report.ok("alerts", detail);
        } else {
            report.warn("alerts", detail);
        }
        return;
    }
    report.ok("alerts", format!("{} route(s)", a.routes.len()));
    for (name, hook) in &a.webhooks {
        let check = format!("alerts.webhook.{name}");
        match crate::notify::webhook::read_secret(&hook.secret_file) {
            Ok(_) => report.ok(check, "secret readable, 0600"),
            Err(e) => report.fail(check, e),
        }
    }
}

/// Every file the configuration names exists, and private ones are 0600.
fn files(report: &mut Report, cfg: &NodeConfig) {
    let mut public: Vec<(&str, &Path)> = vec![
        ("directory", &cfg.directory_path),
        ("tls.ca", &cfg.tls.ca),
        ("tls.cert", &cfg.tls.cert),
    ];
    for c in &cfg.tls.crls {
        public.push(("tls.crls", c));
    }
    let mut private: Vec<(&str, &Path)> =
        vec![("tls.key", &cfg.tls.key), ("signing.key", &cfg.signing_key)];
    if let Some(op) = &cfg.operator {
        public.push(("operator.cert", &op.cert));
        private.push(("operator.key", &op.key));
    }
    if let Some(ad) = &cfg.admin {
        public.push(("admin.cert", &ad.cert));
        private.push(("admin.key", &ad.key));
    }
    for hook in cfg.alerts.webhooks.values() {
        private.push(("alerts.webhook.secret_file", &hook.secret_file));
        if let Some(ca) = &hook.ca {
            public.push(("alerts.webhook.ca", ca));
        }
    }
    if let Some(smtp) = &cfg.alerts.smtp {
        if let Some(p) = &smtp.password_file {
            private.push(("alerts.smtp.password_file", p));
        }
        if let Some(ca) = &smtp.ca {
            public.push(("alerts.smtp.ca", ca));
        }
    }
    for (key, path) in public {
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => report.ok(format!("file {key}"), path.display().to_string()),
            Ok(_) => report.fail(
                format!("file {key}"),
                format!("{} is not a file", path.display()),
            ),
            Err(e) => report.fail(format!("file {key}"), format!("{}: {e}", path.display())),
        }
    }
    for (key, path) in private {
        match std::fs::metadata(path) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => report.fail(
                format!("permissions {key}"),
                format!(
                    "{} is mode {:o}: private keys must be 0600 (chmod 600 {})",
                    path.display(),
                    m.permissions().mode() & 0o777,
                    path.display()
                ),
            ),
            Ok(_) => report.ok(
                format!("permissions {key}"),
                format!("{} is 0600", path.display()),
            ),
            Err(e) => report.fail(
                format!("permissions {key}"),
                format!("{}: {e}", path.display()),
            ),
        }
    }
    let Some(db) = cfg.database.sqlite_path() else {
        return;
    };
    match std::fs::metadata(db) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => report.warn(
            "database",
            format!(
                "{} is mode {:o}; it holds reports: chmod 600",
                db.display(),
                m.permissions().mode() & 0o777
            ),
        ),
        Ok(m) => report.ok(
            "database",
            format!("{} exists ({} bytes)", db.display(), m.len()),
        ),
        Err(_) => {
            let dir = db.parent().unwrap_or(Path::new("."));
            let writable = tempfile::tempfile_in(dir).is_ok();
            if writable {
                report.ok(
                    "database",
                    format!("{} will be created at the first start", db.display()),
                );
            } else {
                report.fail(
                    "database",
                    format!(
                        "{} does not exist and {} is not writable",
                        db.display(),
                        dir.display()
                    ),
                );
            }
        }
    }
}

/// A PostgreSQL database: it answers, and what it holds of the schema.
/// Only reads: a doctor never creates or migrates a schema (the node does,
/// at its start), whatever database the URL names.
async fn postgres(report: &mut Report, cfg: &NodeConfig) {
    let crate::store::Database::Postgres(url) = &cfg.database else {
        return;
    };
    match crate::store::postgres::schema_state(url).await {
        Ok(s) if s.applied == 0 => report.warn(
            "database",
            format!(
                "{} answers and holds no alertrelay schema yet: the node creates it at its first start (is this the right database?)",
                cfg.database
            ),
        ),
        Ok(s) if s.applied < s.known => report.warn(
            "database",
            format!(
                "{} answers; its schema is at migration {} of {}: the node migrates it at its next start",
                cfg.database, s.applied, s.known
            ),
        ),
        Ok(s) if s.applied > s.known => report.fail(
            "database",
            format!(
                "{} holds a schema newer than this version ({} migrations, this version knows {}): upgrade alertrelay",
                cfg.database, s.applied, s.known
            ),
        ),
        Ok(s) => report.ok(
            "database",
            format!(
                "{} answers ({} audit entries)",
                cfg.database,
                s.audit_entries.unwrap_or(0)
            ),
        ),
        Err(e) => report.fail("database", format!("{:#}", anyhow::Error::from(e))),
    }
}

/// Node, operator and admin certificates: chain to the CA (with the CRLs),
/// name the right identity, and are not (about to be) expired; the CA and
/// CRLs too.
fn certificates(report: &mut Report, cfg: &NodeConfig) {
    let federation = &cfg.directory.federation;
    let now = time::OffsetDateTime::now_utc();
    expiry(report, "ca expiry", &cfg.tls.ca, now);
    if cfg.tls.crls.is_empty() {
        report.fail(
            "crl",
            "tls.crls is empty: no revocation is checked, so a revoked node or operator certificate still gets in; set it to the CA's CRL (federation init writes crl.pem)",
        );
    }
    for crl in &cfg.tls.crls {
        crl_expiry(report, crl, now);
    }
    let mut identities = vec![("tls.cert", &cfg.tls, Expect::Node)];
    if let Some(op) = &cfg.operator {
        identities.push(("operator.cert", op, Expect::Operator));
    }
    if let Some(ad) = &cfg.admin {
        identities.push(("admin.cert", ad, Expect::Admin));
    }
    for (key, paths, expect) in identities {
        let check = format!("chain {key}");
        let verifier = match crate::crypto::tls::client_verifier(&paths.files(), federation) {
            Ok(v) => v,
            Err(e) => {
                report.fail(check, format!("{:#}", anyhow::Error::from(e)));
                continue;
            }
        };
        let certs = match crate::crypto::tls::load_certs(&paths.cert) {
            Ok(c) => c,
            Err(e) => {
                report.fail(check, format!("{:#}", anyhow::Error::from(e)));
                continue;
            }
        };
        let (leaf, rest) = certs
            .split_first()
            .expect("load_certs returns one at least");
        match verifier.verify_client_cert(leaf, rest, rustls::pki_types::UnixTime::now()) {
            Ok(_) => {
                let who = crate::identity::identity_from_cert(leaf, federation);
                match (&who, expect) {
                    (Ok(crate::identity::PeerIdentity::Node(id)), Expect::Node)
                        if id == &cfg.node_id =>
                    {
                        report.ok(check, format!("chains to the federation CA; names {id}"))
                    }
                    (
                        Ok(op @ crate::identity::PeerIdentity::Operator { node, role, .. }),
                        Expect::Operator | Expect::Admin,
                    ) if node == &cfg.node_id
                        && (expect != Expect::Admin || *role == crate::identity::Role::Admin) =>
                    {
                        report.ok(check, format!("chains to the federation CA; names {op}"))
                    }
                    (Ok(other), _) => report.fail(
                        check,
                        format!(
                            "chains to the CA but names {other}, not the expected {} of {}",
                            expect.as_str(),
                            cfg.node_id
                        ),
                    ),
                    (Err(e), _) => report.fail(check, format!("identity: {e}")),
                }
            }
            Err(e) => report.fail(
                check,
                format!(
                    "{} does not verify against {} and the CRLs: {e}",
                    paths.cert.display(),
                    paths.ca.display()
                ),
            ),
        }
        expiry(report, &format!("expiry {key}"), &paths.cert, now);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Node,
    Operator,
    Admin,
}

impl Expect {
    fn as_str(self) -> &'static str {
        match self {
            Expect::Node => "node",
            Expect::Operator => "operator",
            Expect::Admin => "admin operator",
        }
    }
}

fn expiry(report: &mut Report, check: &str, pem: &Path, now: time::OffsetDateTime) {
    let certs = match crate::crypto::tls::load_certs(pem) {
        Ok(c) => c,
        Err(e) => return report.fail(check, format!("{:#}", anyhow::Error::from(e))),
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&certs[0]) else {
        return report.fail(
            check,
            format!("{} is not an X.509 certificate", pem.display()),
        );
    };
    let not_after = cert.validity().not_after.to_datetime();
    let not_before = cert.validity().not_before.to_datetime();
    let left = not_after - now;
    let when = crate::node::cases::rfc3339((not_after.unix_timestamp()) * 1000);
    if now < not_before {
        report.fail(
            check,
            format!(
                "{} is not valid before {}",
                pem.display(),
                crate::node::cases::rfc3339(not_before.unix_timestamp() * 1000)
            ),
        );
    } else if left.is_negative() {
        report.fail(check, format!("{} EXPIRED on {when}", pem.display()));
    } else if left < time::Duration::days(EXPIRY_WARNING_DAYS) {
        report.warn(
            check,
            format!(
                "{} expires on {when}, in {} days: renew it",
                pem.display(),
                left.whole_days()
            ),
        );
    } else {
        report.ok(
            check,
            format!("valid until {when} ({} days)", left.whole_days()),
        );
    }
}

fn crl_expiry(report: &mut Report, path: &Path, now: time::OffsetDateTime) {
    let check = "crl expiry";
    let der = std::fs::read(path).ok().and_then(|pem| {
        rustls::pki_types::CertificateRevocationListDer::pem_slice_iter(&pem)
            .next()
            .and_then(Result::ok)
    });
    use rustls::pki_types::pem::PemObject;
    let Some(der) = der else {
        return report.fail(check, format!("{} holds no CRL", path.display()));
    };
    let Ok((_, crl)) = x509_parser::parse_x509_crl(&der) else {
        return report.fail(check, format!("{} is not a CRL", path.display()));
    };
    match crl.next_update() {
        None => report.ok(check, format!("{}: no next update", path.display())),
        Some(next) => {
            let next = next.to_datetime();
            let when = crate::node::cases::rfc3339(next.unix_timestamp() * 1000);
            let left = next - now;
            if left.is_negative() {
                report.fail(
                    check,
                    format!(
                        "{} expired on {when}: every handshake will fail; run `alertrelay federation revoke` to re-issue it",
                        path.display()
                    ),
                );
            } else if left < time::Duration::days(EXPIRY_WARNING_DAYS) {
                report.warn(
                    check,
                    format!("{} must be re-issued before {when}", path.display()),
                );
            } else {
                report.ok(check, format!("next update by {when}"));
            }
        }
    }
}

/// The signed directory: its serial and how long it is still accepted
/// (a warning two weeks before it expires, a failure after); a plain
/// directory file is a warning (nothing spreads, changes are by hand).
fn directory(report: &mut Report, cfg: &NodeConfig) {
    let check = "directory";
    let Some(info) = &cfg.directory.signed else {
        return report.warn(
            check,
            "a plain directory file: changes reach this node only by hand (a signed directory spreads by itself)",
        );
    };
    let when = crate::directory::signed::rfc3339(info.expires_at_ms);
    let left = info.expires_at_ms - crate::node::Core::now_ms();
    let serial = info.serial;
    if left <= 0 {
        report.fail(
            check,
            format!("signed serial {serial} expired on {when}: the secretariat must publish a new version"),
        );
    } else if left < 14 * 86_400_000 {
        report.warn(
            check,
            format!(
                "signed serial {serial} expires on {when}: the secretariat must publish before"
            ),
        );
    } else {
        report.ok(
            check,
            format!(
                "signed serial {serial}, expires on {when}, {} directory key(s), threshold {}",
                info.keys.keys.len(),
                info.keys.threshold
            ),
        );
    }
}

/// The signing key loads (0600, Ed25519) and is this node's current key in
/// the directory.
fn signing_key(report: &mut Report, cfg: &NodeConfig) {
    let check = "signing key";
    let key = match crate::crypto::signing::NodeKey::load(&cfg.signing_key) {
        Ok(k) => k,
        Err(e) => return report.fail(check, format!("{:#}", anyhow::Error::from(e))),
    };
    let Some(me) = cfg.directory.node(&cfg.node_id) else {
        return report.fail(check, format!("{} is not in the directory", cfg.node_id));
    };
    let now = Core::now_ms();
    match me.keys.iter().find(|k| k.id == key.key_id()) {
        None => report.fail(
            check,
            format!(
                "key {} in {} is not one of {}'s keys in {} ({}): wrong key file, or the directory lacks it",
                key.key_id(),
                cfg.signing_key.display(),
                cfg.node_id,
                cfg.directory_path.display(),
                me.keys
                    .iter()
                    .map(|k| k.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Some(k) if k.revoked => report.fail(
            check,
            format!("key {} is revoked in the directory", k.id),
        ),
        Some(k) if k.key != key.verifying_key() => report.fail(
            check,
            format!("key id {} matches but the public key differs", k.id),
        ),
        Some(k) if me.key(&k.id, now).is_none() => report.fail(
            check,
            format!(
                "key {} is outside its validity window in the directory",
                k.id
            ),
        ),
        Some(k) => match k.not_after_ms {
            Some(end) if end - now < EXPIRY_WARNING_DAYS * 86_400_000 => report.warn(
                check,
                format!(
                    "key {} stops being accepted on {}: rotate it",
                    k.id,
                    crate::node::cases::rfc3339(end)
                ),
            ),
            _ => report.ok(
                check,
                format!("key {} is {}'s key in the directory", k.id, cfg.node_id),
            ),
        },
    }
    if !me.active {
        report.fail(
            "directory standing",
            format!("{} is suspended (active = false)", cfg.node_id),
        );
    }
}

/// The listen addresses are free (or the node is already running on them).
async fn listeners(report: &mut Report, cfg: &NodeConfig) {
    let mut addrs = vec![("listen", cfg.listen)];
    if let Some(m) = cfg.metrics_listen {
        addrs.push(("metrics.listen", m));
    }
    for (key, addr) in addrs {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(_) => report.ok(key, format!("{addr} is free")),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => report.warn(
                key,
                format!("{addr} is in use (by this node, if it is running)"),
            ),
            Err(e) => report.fail(key, format!("cannot bind {addr}: {e}")),
        }
    }
}

/// Each peer: a mutual-TLS handshake as this node and `NodeInfo`, which
/// must name the peer; its clock compared with ours.
async fn peers(report: &mut Report, cfg: &NodeConfig) {
    let tls = match crate::crypto::tls::client_config(&cfg.tls.files()) {
        Ok(t) => t,
        Err(e) => {
            return report.fail(
                "peers",
                format!("node TLS identity: {:#}", anyhow::Error::from(e)),
            );
        }
    };
    let skew_limit = i64::try_from(cfg.max_clock_skew.as_millis()).unwrap_or(i64::MAX);
    let peers: Vec<_> = cfg
        .directory
        .nodes()
        .iter()
        .filter(|n| n.id != cfg.node_id && n.active)
        .cloned()
        .collect();
    if peers.is_empty() {
        report.ok("peers", "no peers in the directory");
        return;
    }
    let calls = peers.into_iter().map(|peer| {
        let tls = tls.clone();
        let federation = cfg.directory.federation.clone();
        tokio::spawn(ask(peer, tls, federation))
    });
    let mut answers = Vec::new();
    for c in calls.collect::<Vec<_>>() {
        if let Ok(a) = c.await {
            answers.push(a);
        }
    }
    let serial = cfg.directory.serial();
    for answer in answers {
        judge(report, answer, skew_limit, serial);
    }
}

/// What one peer answered (or why it did not, with how bad that is), the
/// round trip, and our clock when the question left.
struct Answer {
    peer: crate::directory::DirectoryNode,
    result: Result<pb::NodeInfoResponse, (Level, String)>,
    rtt: Duration,
    sent_ms: i64,
}

/// Asks `peer` for its `NodeInfo`, as this node.
async fn ask(
    peer: crate::directory::DirectoryNode,
    tls: std::sync::Arc<rustls::ClientConfig>,
    federation: String,
) -> Answer {
    let started = std::time::Instant::now();
    let sent_ms = Core::now_ms();
    let result = async {
        let channel = crate::federation::channel::channel(
            &peer.endpoint,
            Some(peer.id.clone()),
            &federation,
            tls,
            Duration::from_secs(5),
        )
        .map_err(|e| (Level::Fail, format!("endpoint {}: {e}", peer.endpoint)))?;
        pb::federation_client::FederationClient::new(channel)
            .node_info(pb::NodeInfoRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| refusal(&peer.endpoint, &s))
    }
    .await;
    Answer {
        peer,
        result,
        rtt: started.elapsed(),
        sent_ms,
    }
}

/// A failed `NodeInfo` call: down or unreachable is a warning (reports
/// queue until it is back); anything else (a refused certificate, the
/// wrong node answering, a refusal by the peer) is a configuration
/// problem.
fn refusal(endpoint: &str, s: &tonic::Status) -> (Level, String) {
    let detail = format!(
        "{}: {:?}: {}{}",
        endpoint,
        s.code(),
        s.message(),
        source_chain(s)
    );
    let down = s.code() == tonic::Code::Unavailable
        && [
            "Connection refused",
            "timed out",
            "No route to host",
            "Network is unreachable",
            "Connection reset",
            "deadline has elapsed",
            "Timeout expired",
        ]
        .iter()
        .any(|m| detail.contains(m));
    (if down { Level::Warn } else { Level::Fail }, detail)
}

/// The checks of one peer's answer: that it is the peer, and its clock.
/// The peer's protocol and directory version beside this node's: a peer
/// of the previous release is a warning (it is still talked to, but learns
/// no directory version by itself), as is a directory serial that differs.
fn protocol(
    report: &mut Report,
    peer: &crate::identity::NodeId,
    info: &pb::NodeInfoResponse,
    serial: u64,
) {
    let check = format!("protocol of {peer}");
    if info.protocol_version == 0 {
        return report.warn(
            check,
            "the previous release (protocol 1): still delivered to, but it learns no new directory version by itself; upgrade it",
        );
    }
    if info.directory_serial != serial {
        return report.warn(
            check,
            format!(
                "protocol {}; its directory is serial {}, this file's {serial} (the exchange brings the older one up to date)",
                info.protocol_version, info.directory_serial
            ),
        );
    }
    report.ok(
        check,
        format!(
            "protocol {} ({}), directory serial {serial}",
            info.protocol_version,
            info.features.join(", ")
        ),
    );
}

fn judge(report: &mut Report, answer: Answer, skew_limit: i64, serial: u64) {
    let Answer {
        peer,
        result,
        rtt,
        sent_ms,
    } = answer;
    let check = format!("peer {}", peer.id);
    let info = match result {
        Err((level, detail)) => return report.add(check, level, detail),
        Ok(info) if info.node_id != peer.id.as_str() => {
            return report.fail(
                check,
                format!("answered as {}, not {}", info.node_id, peer.id),
            );
        }
        Ok(info) => info,
    };
    report.ok(
        check,
        format!(
            "{} reached in {} ms (version {})",
            peer.endpoint,
            rtt.as_millis(),
            info.version
        ),
    );
    protocol(report, &peer.id, &info, serial);
    let check = format!("clock vs {}", peer.id);
    if info.time_unix_ms == 0 {
        return report.warn(check, "the peer does not tell its time (older version)");
    }
    let rtt_ms = i64::try_from(rtt.as_millis()).unwrap_or(i64::MAX);
    let (level, skew) = clock(info.time_unix_ms, sent_ms, rtt_ms, skew_limit);
    let detail = match level {
        Level::Fail => format!(
            "clocks differ by {skew} ms, beyond limits.max_clock_skew_secs: reports will be refused; check NTP"
        ),
        Level::Warn => format!("clocks differ by {skew} ms; check NTP"),
        Level::Ok => format!("clocks agree within {} ms", skew.abs().max(rtt_ms)),
    };
    report.add(check, level, detail);
}

/// Compares a peer's clock reading (`peer_ms`, taken somewhere within a
/// round trip of `rtt_ms` that started at our `sent_ms`) with ours: the
/// level and the estimated skew. The round trip is slack: only what is
/// beyond it counts.
fn clock(peer_ms: i64, sent_ms: i64, rtt_ms: i64, limit_ms: i64) -> (Level, i64) {
    let ours = sent_ms.saturating_add(rtt_ms / 2);
    let skew = peer_ms.saturating_sub(ours);
    let off = skew.abs().saturating_sub(rtt_ms);
    let level = if off > limit_ms {
        Level::Fail
    } else if off > CLOCK_WARNING_MS {
        Level::Warn
    } else {
        Level::Ok
    };
    (level, skew)
}

fn source_chain(s: &tonic::Status) -> String {
    use std::error::Error;
    let mut out = String::new();
    let mut e: Option<&dyn Error> = s.source();
    while let Some(err) = e {
        let text = err.to_string();
        if !s.message().contains(&text) && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        e = err.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_skew_beyond_the_round_trip_warns_then_fails() {
        let limit = 300_000;
        // In step, within the round trip.
        assert_eq!(clock(1_000_050, 1_000_000, 100, limit).0, Level::Ok);
        assert_eq!(clock(999_900, 1_000_000, 100, limit).0, Level::Ok);
        // Six seconds ahead: a warning; ten minutes behind: a failure.
        let (level, skew) = clock(1_006_050, 1_000_000, 100, limit);
        assert_eq!((level, skew), (Level::Warn, 6_000));
        let (level, skew) = clock(400_050, 1_000_000, 100, limit);
        assert_eq!((level, skew), (Level::Fail, -600_000));
        // A slow round trip is not mistaken for skew.
        assert_eq!(clock(1_008_000, 1_000_000, 16_000, limit).0, Level::Ok);
    }
}
