//! Host name → addresses: the `[dns]` setting and the evidence a
//! resolution leaves. The node never fetches a reported URL; resolving its
//! host name is what a careful analyst does first, and every answer is
//! kept as evidence (resolver, question, each answer with its TTL, time,
//! failure, DNSSEC status).
//!
//! This module is pure: the setting, the static map (tests, closed
//! deployments) and the evidence types. Live resolution (`system`,
//! `resolvers`) is done by `node::dns` with hickory-resolver, off the
//! routing code, which is handed the evidence.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

/// Why a name has no addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("not in the static DNS map")]
    NotInMap,
    #[error("not a valid host name")]
    BadName,
}

/// How host names are resolved (`[dns] mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Host names are not resolved (the default when `[dns]` is absent).
    #[default]
    Off,
    /// The machine's resolvers (`/etc/resolv.conf`).
    System,
    /// The resolvers named in `[dns] resolvers` (the hotline's own).
    Resolvers,
    /// A fixed map in `[dns] hosts`.
    Static,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::System => "system",
            Mode::Resolvers => "resolvers",
            Mode::Static => "static",
        }
    }
}

/// What happens to a report when none of its host names could be resolved
/// (NXDOMAIN, SERVFAIL, timeout, no address) and nothing else locates it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnFailure {
    /// Kept here with delivery `held`, the reason in its route (the default).
    #[default]
    Hold,
    /// Sent to the configured fallback.
    Fallback,
}

impl OnFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Hold => "hold",
            OnFailure::Fallback => "fallback",
        }
    }
}

/// One named resolver: plain DNS (UDP, TCP when truncated) or DNS over TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub addr: SocketAddr,
    /// DNS over TLS, checked against this name (`tls://NAME@IP[:PORT]`).
    pub tls_name: Option<String>,
}

impl Upstream {
    /// `IP`, `IP:PORT`, `[IPv6]:PORT`, or `tls://NAME@IP[:PORT]` (port 853
    /// by default). Errors say why, never repeat the value.
    pub fn parse(s: &str) -> Result<Upstream, &'static str> {
        let (tls_name, rest, port) = match s.strip_prefix("tls://") {
            Some(r) => {
                let (name, at) = r
                    .split_once('@')
                    .ok_or("DNS over TLS is written tls://NAME@IP[:PORT]")?;
                if normalise(name).is_err() {
                    return Err("the TLS name is not a host name");
                }
                (Some(name.to_owned()), at, 853)
            }
            None => (None, s, 53),
        };
        let addr = match rest.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => SocketAddr::new(
                rest.parse::<IpAddr>()
                    .map_err(|_| "not an IP address with an optional port")?,
                port,
            ),
        };
        Ok(Upstream { addr, tls_name })
    }

    pub fn describe(&self) -> String {
        match &self.tls_name {
            Some(n) => format!("{} (DNS over TLS, {n})", self.addr),
            None => format!("{} (udp/tcp)", self.addr),
        }
    }
}

/// The node's validated `[dns]` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns {
    pub mode: Mode,
    /// For `resolvers`.
    pub resolvers: Vec<Upstream>,
    /// Each question's deadline (2 s by default).
    pub deadline: Duration,
    /// Questions in flight at once, at most.
    pub concurrency: usize,
    /// Answers kept in the cache, at most.
    pub cache_size: u64,
    /// No answer is cached longer than this, whatever its TTL.
    pub max_ttl: Duration,
    /// Ask for DNSSEC validation (records the status of every answer).
    pub dnssec: bool,
    pub on_failure: OnFailure,
    /// Open cases received here are resolved again this often, and handed
    /// on when their content moved; zero: never (the default).
    pub recheck_interval: Duration,
    /// For `static`.
    pub map: StaticResolver,
    /// For DNS over TLS: the CA certificates (PEM file) the resolvers'
    /// certificates must chain to; `None`: the Mozilla roots.
    pub tls_ca: Option<std::path::PathBuf>,
    /// With `dnssec`: DNSKEY records (a zone-file) validation starts from;
    /// `None`: the root zone's published keys.
    pub trust_anchor: Option<std::path::PathBuf>,
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            mode: Mode::Off,
            resolvers: Vec::new(),
            deadline: Duration::from_secs(2),
            concurrency: 64,
            cache_size: 10_000,
            max_ttl: Duration::from_secs(3600),
            dnssec: false,
            on_failure: OnFailure::Hold,
            recheck_interval: Duration::ZERO,
            map: StaticResolver::default(),
            tls_ca: None,
            trust_anchor: None,
        }
    }
}

impl Dns {
    pub fn mode(&self) -> &'static str {
        self.mode.as_str()
    }

    /// True when host names are resolved over the network.
    pub fn is_live(&self) -> bool {
        matches!(self.mode, Mode::System | Mode::Resolvers)
    }

    /// The static map's answers for each distinct host; `None` unless the
    /// mode is `static`.
    pub fn resolve_static<'a>(
        &self,
        hosts: impl IntoIterator<Item = &'a str>,
        now_ms: i64,
    ) -> Option<Vec<Resolved>> {
        if self.mode != Mode::Static {
            return None;
        }
        let mut seen = std::collections::HashSet::new();
        Some(
            hosts
                .into_iter()
                .filter(|h| seen.insert(*h))
                .map(|h| self.map.resolved(h, now_ms))
                .collect(),
        )
    }
}

/// A fixed map from host names to addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticResolver {
    hosts: BTreeMap<String, Vec<IpAddr>>,
}

pub const STATIC_MAP: &str = "static DNS map";

impl StaticResolver {
    /// Names are normalised as URL hosts are (IDNA A-labels, lower case,
    /// no trailing dot), so `Bücher.example.` finds `xn--bcher-kva.example`.
    pub fn new(
        entries: impl IntoIterator<Item = (String, Vec<IpAddr>)>,
    ) -> Result<StaticResolver, DnsError> {
        let mut hosts = BTreeMap::new();
        for (name, addrs) in entries {
            hosts.insert(normalise(&name)?, addrs);
        }
        Ok(StaticResolver { hosts })
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    pub fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let key = normalise(host)?;
        self.hosts.get(&key).cloned().ok_or(DnsError::NotInMap)
    }

    /// The map's answer as evidence.
    pub fn resolved(&self, host: &str, now_ms: i64) -> Resolved {
        let mut r = Resolved::new(host, STATIC_MAP, now_ms);
        match self.resolve(host) {
            Ok(a) if a.is_empty() => r.fail(Failure::NoAddress, "no addresses".into()),
            Ok(a) => {
                r.answers = a
                    .iter()
                    .map(|ip| Answer {
                        name: host.to_owned(),
                        kind: if ip.is_ipv4() { "A" } else { "AAAA" }.to_owned(),
                        value: ip.to_string(),
                        ttl: 0,
                    })
                    .collect();
                r.addresses = a;
            }
            Err(e) => r.fail(Failure::NoAddress, e.to_string()),
        }
        r
    }
}

/// Why a name gave no address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Failure {
    /// The name does not exist (NXDOMAIN).
    NxDomain,
    /// The name exists but has no A or AAAA record (NODATA), or the map
    /// has no entry.
    NoAddress,
    /// The server failed (SERVFAIL) or refused.
    ServFail,
    /// No answer within the deadline.
    Timeout,
    /// DNSSEC validation failed (bogus).
    Bogus,
    /// Anything else (no connection, a malformed answer).
    Error,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::NxDomain => "nxdomain",
            Failure::NoAddress => "no-address",
            Failure::ServFail => "servfail",
            Failure::Timeout => "timeout",
            Failure::Bogus => "dnssec-bogus",
            Failure::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Failure> {
        [
            Failure::NxDomain,
            Failure::NoAddress,
            Failure::ServFail,
            Failure::Timeout,
            Failure::Bogus,
            Failure::Error,
        ]
        .into_iter()
        .find(|f| f.as_str() == s)
    }

    /// The more telling of two failures of one name's questions: a
    /// definite answer (NXDOMAIN, bogus) over a server failure, over a
    /// timeout, over no address.
    fn rank(self) -> u8 {
        match self {
            Failure::NxDomain => 5,
            Failure::Bogus => 4,
            Failure::ServFail => 3,
            Failure::Timeout => 2,
            Failure::Error => 1,
            Failure::NoAddress => 0,
        }
    }
}

/// One record of an answer: a CNAME, A or AAAA, with its TTL as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// The owner name of the record.
    pub name: String,
    /// `CNAME`, `A` or `AAAA`.
    pub kind: String,
    /// The CNAME's target or the address.
    pub value: String,
    pub ttl: u32,
}

/// One question asked and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Question {
    /// e.g. `files.example. IN A`.
    pub question: String,
    /// `answered`, `no-data` or a failure (`nxdomain`, `servfail`, …).
    pub outcome: String,
}

/// What resolving one host gave: the evidence kept with the route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolved {
    pub host: String,
    /// e.g. `system resolver (/etc/resolv.conf: 10.0.0.53:53 (udp/tcp))`.
    pub resolver: String,
    pub questions: Vec<Question>,
    /// Every record received, CNAMEs first, in order.
    pub answers: Vec<Answer>,
    /// The addresses at the end of the CNAME chain, IPv4 then IPv6.
    pub addresses: Vec<IpAddr>,
    /// When it was resolved (milliseconds since the epoch).
    pub at_ms: i64,
    /// Why there are no addresses (a kind and a sentence).
    pub failure: Option<Failure>,
    pub error: Option<String>,
    /// `secure`, `insecure`, `bogus` or `indeterminate` when the resolver
    /// validates DNSSEC; empty otherwise.
    pub dnssec: String,
}

impl Resolved {
    pub fn new(host: &str, resolver: &str, at_ms: i64) -> Resolved {
        Resolved {
            host: host.to_owned(),
            resolver: resolver.to_owned(),
            questions: Vec::new(),
            answers: Vec::new(),
            addresses: Vec::new(),
            at_ms,
            failure: None,
            error: None,
            dnssec: String::new(),
        }
    }

    /// Records a failure, keeping the more telling one when there are two.
    pub fn fail(&mut self, f: Failure, why: String) {
        if self.failure.is_none_or(|old| f.rank() > old.rank()) {
            self.failure = Some(f);
            self.error = Some(why);
        }
    }

    /// The CNAME chain, `a -> b -> c`, when there is one.
    pub fn cname_chain(&self) -> Option<String> {
        let cnames: Vec<&Answer> = self.answers.iter().filter(|a| a.kind == "CNAME").collect();
        let first = cnames.first()?;
        let mut chain = vec![first.name.trim_end_matches('.').to_owned()];
        for c in &cnames {
            let target = c.value.trim_end_matches('.').to_owned();
            if !chain.contains(&target) {
                chain.push(target);
            }
        }
        Some(chain.join(" -> "))
    }
}

/// Normalised as URL hosts are: IDNA A-labels, lower case, no trailing dot.
pub fn normalise(name: &str) -> Result<String, DnsError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    match idna::domain_to_ascii(trimmed) {
        Ok(a) if !a.is_empty() => Ok(a),
        _ => Err(DnsError::BadName),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_map_normalises_names_and_says_why_not() {
        let map = StaticResolver::new([
            (
                "Bücher.Example.".to_owned(),
                vec!["192.0.2.1".parse().unwrap()],
            ),
            ("empty.example".to_owned(), vec![]),
        ])
        .unwrap();
        assert_eq!(
            map.resolve("xn--bcher-kva.example").unwrap(),
            vec!["192.0.2.1".parse::<IpAddr>().unwrap()]
        );
        let dns = Dns {
            mode: Mode::Static,
            map,
            ..Dns::default()
        };
        let got = dns
            .resolve_static(
                [
                    "xn--bcher-kva.example",
                    "empty.example",
                    "other.example",
                    "empty.example",
                ],
                7,
            )
            .unwrap();
        assert_eq!(got.len(), 3, "each host once");
        assert_eq!(got[0].addresses.len(), 1);
        assert_eq!(got[0].answers[0].kind, "A");
        assert_eq!(got[0].at_ms, 7);
        assert_eq!(got[1].error.as_deref(), Some("no addresses"));
        assert_eq!(got[2].failure, Some(Failure::NoAddress));
        assert_eq!(got[2].error.as_deref(), Some("not in the static DNS map"));
        assert_eq!(Dns::default().resolve_static(["a.example"], 0), None);
        assert!(StaticResolver::new([("".to_owned(), vec![])]).is_err());
    }

    #[test]
    fn upstreams_parse_plain_and_tls() {
        let u = Upstream::parse("127.0.0.1").unwrap();
        assert_eq!((u.addr.port(), u.tls_name), (53, None));
        let u = Upstream::parse("[::1]:5353").unwrap();
        assert_eq!(u.addr.port(), 5353);
        let u = Upstream::parse("tls://dns.example@192.0.2.53").unwrap();
        assert_eq!(u.addr.port(), 853);
        assert_eq!(u.tls_name.as_deref(), Some("dns.example"));
        assert!(Upstream::parse("dns.example").is_err());
        assert!(Upstream::parse("tls://192.0.2.53").is_err());
    }

    #[test]
    fn the_more_telling_failure_is_kept_and_chains_read_in_order() {
        let mut r = Resolved::new("a.example", "x", 0);
        r.fail(Failure::NoAddress, "no AAAA".into());
        r.fail(Failure::NxDomain, "does not exist".into());
        r.fail(Failure::Timeout, "late".into());
        assert_eq!(r.failure, Some(Failure::NxDomain));
        r.answers = vec![
            Answer {
                name: "a.example.".into(),
                kind: "CNAME".into(),
                value: "b.example.".into(),
                ttl: 60,
            },
            Answer {
                name: "b.example.".into(),
                kind: "CNAME".into(),
                value: "c.example.".into(),
                ttl: 60,
            },
        ];
        assert_eq!(
            r.cname_chain().as_deref(),
            Some("a.example -> b.example -> c.example")
        );
    }
}
