//! Live host-name resolution for routing (`[dns] mode = "system"` or
//! `"resolvers"`), with hickory-resolver, fully async: each question has
//! its own deadline, at most `[dns] concurrency` are in flight, and a
//! report waiting for its names never holds up other reports' intake.
//!
//! A host name asks only its A and AAAA questions (the name made absolute,
//! so no search domain ever sees it), never a path, and the node never
//! connects to the host. Every answer is evidence (`geo::dns::Resolved`):
//! the resolver, the questions, each record with its TTL (the CNAME chain
//! included), the time, the failure, and the DNSSEC status when asked for.
//! Answers are cached for their TTL (at most `[dns] max_ttl_s`, at most
//! `[dns] cache_size` names); a cached answer keeps the time it was
//! received. Host names are never logged at info or above and never used
//! as metric labels.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::dnssec::TrustAnchors;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};

use crate::geo::dns::{Answer, Dns, Failure, Mode, Question, Resolved, Upstream};

use super::metrics::Metrics;

/// Negative answers (NXDOMAIN, no address) are cached at most this long;
/// server failures and timeouts are never cached.
const NEGATIVE_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum DnsStartError {
    #[error("cannot read the system's resolver configuration (`[dns] mode = \"system\"`)")]
    SystemConfig(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the system's resolver configuration names no name server")]
    NoServers,
    #[error("cannot build the resolver")]
    Build(#[source] NetError),
    #[error("[dns] tls_ca: cannot use it for DNS over TLS")]
    TlsCa(#[source] crate::crypto::tls::TlsError),
    #[error("[dns] trust_anchor: cannot read it as DNSKEY records")]
    TrustAnchor(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The node's resolver: `None` inside for `off` and `static`.
pub struct DnsService {
    setting: Dns,
    live: Option<Live>,
    cache: Mutex<Cache>,
}

struct Live {
    resolver: TokioResolver,
    describe: String,
    permits: tokio::sync::Semaphore,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<String, (Resolved, Instant)>,
}

impl DnsService {
    /// The service for this setting; for `system`, reads the machine's
    /// resolver configuration now, so a node without one fails at start.
    pub fn new(setting: &Dns) -> Result<DnsService, DnsStartError> {
        let live = match setting.mode {
            Mode::Off | Mode::Static => None,
            Mode::System => {
                let (config, _) = hickory_resolver::system_conf::read_system_conf()
                    .map_err(|e| DnsStartError::SystemConfig(Box::new(e)))?;
                if config.name_servers.is_empty() {
                    return Err(DnsStartError::NoServers);
                }
                let servers: Vec<String> = config
                    .name_servers
                    .iter()
                    .map(|n| n.ip.to_string())
                    .collect();
                let describe = format!("system resolver ({})", servers.join(", "));
                Some(live(setting, config.name_servers, describe)?)
            }
            Mode::Resolvers => {
                let describe = format!(
                    "resolvers {}",
                    setting
                        .resolvers
                        .iter()
                        .map(Upstream::describe)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                let servers = setting.resolvers.iter().map(name_server).collect();
                Some(live(setting, servers, describe)?)
            }
        };
        Ok(DnsService {
            setting: setting.clone(),
            live,
            cache: Mutex::new(Cache::default()),
        })
    }

    pub fn setting(&self) -> &Dns {
        &self.setting
    }

    /// Resolves each distinct host (answers from the cache when fresh);
    /// `None` when DNS is off. Concurrent, bounded, each question within
    /// the deadline: the slowest name takes at most about one deadline.
    pub async fn resolve_all(&self, hosts: &[String], metrics: &Metrics) -> Option<Vec<Resolved>> {
        self.resolve(hosts, metrics, true, true).await
    }

    /// As `resolve_all` for an urgent report: its questions do not wait
    /// behind a bulk import's for a place among `[dns] concurrency` (an
    /// urgent report goes first at every step).
    pub async fn resolve_urgent(
        &self,
        hosts: &[String],
        metrics: &Metrics,
    ) -> Option<Vec<Resolved>> {
        self.resolve(hosts, metrics, true, false).await
    }

    /// As `resolve_all`, but never from the cache (`cases reroute`: has
    /// the content moved?).
    pub async fn resolve_fresh(
        &self,
        hosts: &[String],
        metrics: &Metrics,
    ) -> Option<Vec<Resolved>> {
        self.resolve(hosts, metrics, false, true).await
    }

    async fn resolve(
        &self,
        hosts: &[String],
        metrics: &Metrics,
        cached: bool,
        bounded: bool,
    ) -> Option<Vec<Resolved>> {
        let mut seen = std::collections::HashSet::new();
        let distinct: Vec<&str> = hosts
            .iter()
            .map(String::as_str)
            .filter(|h| seen.insert(*h))
            .collect();
        let Some(live) = &self.live else {
            return self.setting.resolve_static(distinct, super::Core::now_ms());
        };
        let all = distinct.iter().map(|h| async move {
            if cached && let Some(r) = self.cached(h) {
                metrics.dns_cache_hit();
                return r;
            }
            let r = live
                .resolve(h, self.setting.deadline, metrics, bounded)
                .await;
            self.remember(&r);
            r
        });
        Some(futures_util::future::join_all(all).await)
    }

    fn cached(&self, host: &str) -> Option<Resolved> {
        let cache = self.cache.lock().ok()?;
        let (r, until) = cache.entries.get(host)?;
        (Instant::now() < *until).then(|| r.clone())
    }

    fn remember(&self, r: &Resolved) {
        let ttl = match r.failure {
            None => r
                .answers
                .iter()
                .map(|a| Duration::from_secs(u64::from(a.ttl)))
                .min()
                .unwrap_or_default()
                .min(self.setting.max_ttl),
            Some(Failure::NxDomain | Failure::NoAddress) => NEGATIVE_TTL.min(self.setting.max_ttl),
            Some(_) => return,
        };
        if ttl.is_zero() || self.setting.cache_size == 0 {
            return;
        }
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        let now = Instant::now();
        if cache.entries.len() as u64 >= self.setting.cache_size {
            cache.entries.retain(|_, (_, until)| *until > now);
        }
        if cache.entries.len() as u64 >= self.setting.cache_size {
            return;
        }
        cache.entries.insert(r.host.clone(), (r.clone(), now + ttl));
    }
}

fn name_server(u: &Upstream) -> NameServerConfig {
    let mut ns = match &u.tls_name {
        Some(name) => NameServerConfig::tls(u.addr.ip(), std::sync::Arc::from(name.as_str())),
        None => NameServerConfig::udp_and_tcp(u.addr.ip()),
    };
    for c in &mut ns.connections {
        c.port = u.addr.port();
    }
    ns
}

fn live(
    setting: &Dns,
    servers: Vec<NameServerConfig>,
    describe: String,
) -> Result<Live, DnsStartError> {
    let mut config = ResolverConfig::default();
    config.name_servers = servers;
    let mut opts = ResolverOpts::default();
    opts.timeout = setting.deadline;
    opts.attempts = 1;
    // The node keeps its own cache of whole answers (with their evidence).
    opts.cache_size = 0;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.preserve_intermediates = true;
    opts.ndots = 0;
    opts.validate = setting.dnssec;
    opts.num_concurrent_reqs = 1;
    let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts);
    if let Some(ca) = &setting.tls_ca {
        let tls = crate::crypto::tls::dns_client_config(ca).map_err(DnsStartError::TlsCa)?;
        builder = builder.with_tls_config(tls);
    }
    if let Some(path) = &setting.trust_anchor {
        let anchors =
            TrustAnchors::from_file(path).map_err(|e| DnsStartError::TrustAnchor(Box::new(e)))?;
        builder = builder.with_trust_anchor(std::sync::Arc::new(anchors));
    }
    let resolver = builder.build().map_err(DnsStartError::Build)?;
    Ok(Live {
        resolver,
        describe,
        permits: tokio::sync::Semaphore::new(setting.concurrency),
    })
}

/// How one question ended.
enum Asked {
    Answered(hickory_resolver::lookup::Lookup),
    Failed(Failure, String),
}

impl Live {
    /// Asks A and AAAA at once, each within the deadline, and keeps every
    /// answer and failure as evidence.
    async fn resolve(
        &self,
        host: &str,
        deadline: Duration,
        metrics: &Metrics,
        bounded: bool,
    ) -> Resolved {
        let mut r = Resolved::new(host, &self.describe, super::Core::now_ms());
        // Absolute: no search domain ever sees the name.
        let fqdn = format!("{host}.");
        let (a, aaaa) = tokio::join!(
            self.ask(&fqdn, RecordType::A, deadline, metrics, bounded),
            self.ask(&fqdn, RecordType::AAAA, deadline, metrics, bounded)
        );
        for (kind, asked) in [(RecordType::A, a), (RecordType::AAAA, aaaa)] {
            let outcome = match asked {
                Asked::Answered(lookup) => {
                    self.take_answers(&mut r, lookup.answers(), metrics);
                    "answered".to_owned()
                }
                Asked::Failed(Failure::NoAddress, _) => "no-data".to_owned(),
                Asked::Failed(f, why) => {
                    r.fail(f, why);
                    f.as_str().to_owned()
                }
            };
            r.questions.push(Question {
                question: format!("{fqdn} IN {kind}"),
                outcome,
            });
        }
        // CNAMEs first, then the addresses, as a reader follows the chain.
        r.answers.sort_by_key(|a| a.kind != "CNAME");
        if r.addresses.is_empty() && r.failure.is_none() {
            r.fail(
                Failure::NoAddress,
                "the name has no A or AAAA record".into(),
            );
        }
        if !r.addresses.is_empty() {
            // Addresses were found: a question that failed is kept in
            // `questions`, not as the name's failure.
            r.failure = None;
            r.error = None;
        }
        r
    }

    async fn ask(
        &self,
        fqdn: &str,
        kind: RecordType,
        deadline: Duration,
        metrics: &Metrics,
        bounded: bool,
    ) -> Asked {
        let _permit = if bounded {
            let Ok(p) = self.permits.acquire().await else {
                return Asked::Failed(Failure::Error, "the resolver is shutting down".into());
            };
            Some(p)
        } else {
            None
        };
        let started = Instant::now();
        let asked = match tokio::time::timeout(deadline, self.resolver.lookup(fqdn, kind)).await {
            Ok(Ok(lookup)) => Asked::Answered(lookup),
            Ok(Err(e)) => {
                let (f, why) = classify(&e);
                Asked::Failed(f, why)
            }
            Err(_) => Asked::Failed(
                Failure::Timeout,
                format!("no answer within {} ms", deadline.as_millis()),
            ),
        };
        let outcome = match &asked {
            Asked::Answered(_) => "answered",
            Asked::Failed(Failure::NoAddress, _) => "no-data",
            Asked::Failed(f, _) => f.as_str(),
        };
        metrics.dns_query(outcome, started.elapsed());
        asked
    }

    fn take_answers(
        &self,
        r: &mut Resolved,
        records: &[hickory_resolver::proto::rr::Record],
        metrics: &Metrics,
    ) {
        for rec in records {
            let (kind, value, ip) = match &rec.data {
                RData::A(a) => ("A", a.0.to_string(), Some(IpAddr::V4(a.0))),
                RData::AAAA(a) => ("AAAA", a.0.to_string(), Some(IpAddr::V6(a.0))),
                RData::CNAME(c) => ("CNAME", c.0.to_ascii(), None),
                _ => continue,
            };
            metrics.dns_answer(kind);
            let name = rec.name.to_ascii();
            let dup = r
                .answers
                .iter()
                .any(|a| a.kind == kind && a.name == name && a.value == value);
            if !dup {
                r.answers.push(Answer {
                    name,
                    kind: kind.to_owned(),
                    value,
                    ttl: rec.ttl,
                });
            }
            if let Some(ip) = ip
                && !r.addresses.contains(&ip)
            {
                r.addresses.push(ip);
            }
            if self.resolver.options().validate {
                let proof = rec.proof.to_string().to_ascii_lowercase();
                r.dnssec = merge_proof(&r.dnssec, &proof);
            }
        }
    }
}

/// The weakest status of a name's answers: a chain is only as secure as
/// its least secure record.
fn merge_proof(old: &str, new: &str) -> String {
    let rank = |s: &str| match s {
        "secure" => 3,
        "insecure" => 2,
        "indeterminate" => 1,
        "" => 4,
        _ => 0, // bogus
    };
    if rank(new) < rank(old) {
        new.to_owned()
    } else {
        old.to_owned()
    }
}

/// A failed question as a kind and a sentence that never names the host.
fn classify(e: &NetError) -> (Failure, String) {
    match e {
        NetError::Timeout => (
            Failure::Timeout,
            "the resolver gave no answer in time".into(),
        ),
        NetError::Dns(DnsError::NoRecordsFound(n)) if n.response_code == ResponseCode::NXDomain => {
            (
                Failure::NxDomain,
                "the name does not exist (NXDOMAIN)".into(),
            )
        }
        NetError::Dns(DnsError::NoRecordsFound(_)) => {
            (Failure::NoAddress, "no record of this kind (NODATA)".into())
        }
        NetError::Dns(DnsError::ResponseCode(ResponseCode::NXDomain)) => (
            Failure::NxDomain,
            "the name does not exist (NXDOMAIN)".into(),
        ),
        NetError::Dns(DnsError::ResponseCode(code)) => (
            Failure::ServFail,
            format!("the resolver answered {code} (RCODE {})", u16::from(*code)),
        ),
        NetError::Dns(DnsError::DnssecBogus) => {
            (Failure::Bogus, "DNSSEC validation failed (bogus)".into())
        }
        NetError::Dns(DnsError::Nsec { .. }) => (
            Failure::NxDomain,
            "no such name or record, proven by DNSSEC (NSEC)".into(),
        ),
        NetError::Io(_) | NetError::NoConnections => {
            (Failure::Error, "the resolver could not be reached".into())
        }
        _ => (Failure::Error, "the resolver failed".into()),
    }
}
