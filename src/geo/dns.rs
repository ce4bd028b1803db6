//! Host name → addresses, opt-in. The node never fetches a reported URL;
//! resolving its host name is a deployment's choice (`[dns] mode`), off by
//! default. This module has the [`Resolver`] trait and a static map (tests,
//! closed deployments, a hotline's own list of known hosts). A resolver that
//! does network IO must be called off the async threads (`spawn_blocking`),
//! never from `routing`, which stays pure: it is handed the answers.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

/// Why a name has no addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("{host} is not in the static DNS map")]
    NotInMap { host: String },
    #[error("{name:?} is not a valid host name")]
    BadName { name: String },
}

/// Resolves a host name (A-labels, lower case) to its addresses.
pub trait Resolver: Send + Sync {
    /// Shown in explanations, e.g. `static map`.
    fn describe(&self) -> &'static str;
    fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, DnsError>;
}

/// A fixed map from host names to addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticResolver {
    hosts: BTreeMap<String, Vec<IpAddr>>,
}

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
}

impl Resolver for StaticResolver {
    fn describe(&self) -> &'static str {
        "static DNS map"
    }

    fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let key = normalise(host)?;
        self.hosts
            .get(&key)
            .cloned()
            .ok_or(DnsError::NotInMap { host: key })
    }
}

/// The node's DNS setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Dns {
    /// Host names are not resolved (the default).
    #[default]
    Off,
    Static(StaticResolver),
}

/// What resolving one host gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolved {
    pub host: String,
    /// e.g. `static DNS map`.
    pub resolver: &'static str,
    pub addresses: Vec<IpAddr>,
    /// Why there are no addresses.
    pub error: Option<String>,
}

impl Dns {
    pub fn mode(&self) -> &'static str {
        match self {
            Dns::Off => "off",
            Dns::Static(_) => "static",
        }
    }

    /// Resolves each distinct host once; `None` when DNS is off.
    pub fn resolve_all<'a>(
        &self,
        hosts: impl IntoIterator<Item = &'a str>,
    ) -> Option<Vec<Resolved>> {
        let resolver: &dyn Resolver = match self {
            Dns::Off => return None,
            Dns::Static(r) => r,
        };
        let mut out: Vec<Resolved> = Vec::new();
        for host in hosts {
            if out.iter().any(|r| r.host == host) {
                continue;
            }
            let (addresses, error) = match resolver.resolve(host) {
                Ok(a) if a.is_empty() => (a, Some("no addresses".to_owned())),
                Ok(a) => (a, None),
                Err(e) => (Vec::new(), Some(e.to_string())),
            };
            out.push(Resolved {
                host: host.to_owned(),
                resolver: resolver.describe(),
                addresses,
                error,
            });
        }
        Some(out)
    }
}

fn normalise(name: &str) -> Result<String, DnsError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    match idna::domain_to_ascii(trimmed) {
        Ok(a) if !a.is_empty() => Ok(a),
        _ => Err(DnsError::BadName {
            name: name.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_map_normalises_names_and_says_why_not() {
        let r = StaticResolver::new([
            (
                "Bücher.Example.".to_owned(),
                vec!["192.0.2.1".parse().unwrap()],
            ),
            ("empty.example".to_owned(), vec![]),
        ])
        .unwrap();
        assert_eq!(
            r.resolve("xn--bcher-kva.example").unwrap(),
            vec!["192.0.2.1".parse::<IpAddr>().unwrap()]
        );
        let dns = Dns::Static(r);
        let got = dns
            .resolve_all([
                "xn--bcher-kva.example",
                "empty.example",
                "other.example",
                "empty.example",
            ])
            .unwrap();
        assert_eq!(got.len(), 3, "each host once");
        assert_eq!(got[0].addresses.len(), 1);
        assert_eq!(got[1].error.as_deref(), Some("no addresses"));
        assert_eq!(
            got[2].error.as_deref(),
            Some("other.example is not in the static DNS map")
        );
        assert_eq!(Dns::Off.resolve_all(["a.example"]), None);
        assert!(StaticResolver::new([("".to_owned(), vec![])]).is_err());
    }
}
