//! The ordered list of sources a node consults, and the answer for one
//! address: every source's country and network answer with its dataset and
//! date, which one was followed (the first in order that knows), whether
//! the sources disagree, and whether the network is anycast/CDN.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Serialize;

use super::asn::{AsnTable, Network};
use super::country::{self, CountryTable};
use super::mmdb::MmdbFile;
use super::ranges::{RangeTable, Syntax};
use super::{ANYCAST_NOTE, GeoDb, GeoError, anycast_operator, country_of, lines, rir};

/// The formats a `[[geo.source]]` can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// The data shipped in the binary (IPFire country + RouteViews/DB-IP ASN).
    Shipped,
    /// A MaxMind DB file (country and/or ASN schema).
    Mmdb,
    /// tor `geoip` / `geoip6` files (`start,end,CC`).
    TorGeoip,
    /// ip-location-db country CSV (`start,end,CC`, textual addresses).
    Csv,
    /// ip-location-db ASN CSV (`start,end,asn,org`).
    AsnCsv,
    /// RIR delegated-extended statistics (`registry|cc|type|start|value|date|status`).
    RirDelegated,
}

impl SourceKind {
    pub const ALL: [SourceKind; 6] = [
        SourceKind::Shipped,
        SourceKind::Mmdb,
        SourceKind::TorGeoip,
        SourceKind::Csv,
        SourceKind::AsnCsv,
        SourceKind::RirDelegated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Shipped => "shipped",
            SourceKind::Mmdb => "mmdb",
            SourceKind::TorGeoip => "tor-geoip",
            SourceKind::Csv => "csv",
            SourceKind::AsnCsv => "asn-csv",
            SourceKind::RirDelegated => "rir-delegated",
        }
    }

    pub fn parse(s: &str) -> Option<SourceKind> {
        SourceKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    fn method(self) -> &'static str {
        match self {
            SourceKind::Mmdb => "mmdb-lookup",
            SourceKind::RirDelegated => "rir-registration",
            _ => "range-lookup",
        }
    }
}

/// One configured source, paths already absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    pub kind: SourceKind,
    /// Shown in every answer; defaults to `<kind>:<first file name>`.
    pub name: Option<String>,
    /// `shipped`: none; `mmdb`: one; the range formats: one or more (e.g.
    /// tor's `geoip` and `geoip6`), gzip or plain.
    pub paths: Vec<PathBuf>,
    /// The dataset's date, when the file does not say (or says wrong).
    pub date: Option<String>,
}

enum Data {
    Shipped,
    Country(CountryTable),
    Asn(AsnTable),
    Mmdb(Box<MmdbFile>),
}

struct Source {
    name: String,
    kind: SourceKind,
    date: String,
    data: Data,
}

/// What `Sources` consults, in order (for explanations and `--json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceInfo {
    pub name: String,
    pub kind: SourceKind,
    pub dataset_date: String,
    pub country: bool,
    pub network: bool,
}

/// One source's country answer for one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CountryAnswer {
    pub source: String,
    pub dataset_date: String,
    pub method: &'static str,
    /// The code exactly as the source has it; `""` when it has none for
    /// this address.
    pub raw_code: String,
    /// The country, or None when the code means unknown (see [`country_of`]).
    pub country: Option<String>,
}

/// One source's network answer for one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkAnswer {
    pub source: String,
    pub dataset_date: String,
    pub method: &'static str,
    pub network: Option<Network>,
}

/// Everything the sources say about one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hosting {
    pub ip: IpAddr,
    /// Every country source's answer, in source order.
    pub countries: Vec<CountryAnswer>,
    /// Index in `countries` of the answer followed: the first that knows.
    pub followed: Option<usize>,
    /// Two sources name different countries.
    pub disagree: bool,
    /// Every network source's answer, in source order.
    pub networks: Vec<NetworkAnswer>,
    /// Index in `networks` of the answer followed.
    pub network_followed: Option<usize>,
    /// Sources that mark the address anycast (GeoIP2 `traits.is_anycast`).
    pub marked_anycast_by: Vec<String>,
    /// Set when the address is in a known anycast/CDN network, or a source
    /// marks it anycast.
    pub ambiguity: Option<String>,
    /// Sources that failed on this address (e.g. a damaged MaxMind record).
    pub errors: Vec<String>,
}

impl Hosting {
    /// The country followed.
    pub fn country(&self) -> Option<&str> {
        self.country_answer().and_then(|a| a.country.as_deref())
    }

    /// The answer followed.
    pub fn country_answer(&self) -> Option<&CountryAnswer> {
        self.countries.get(self.followed?)
    }

    /// The network followed.
    pub fn network(&self) -> Option<(&Network, &NetworkAnswer)> {
        let a = self.networks.get(self.network_followed?)?;
        Some((a.network.as_ref()?, a))
    }

    /// The distinct countries the sources name, in source order.
    pub fn named_countries(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for c in self.countries.iter().filter_map(|a| a.country.as_deref()) {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }
}

/// The ordered sources a node consults.
pub struct Sources {
    list: Vec<Source>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.list.iter().map(|s| (&s.name, s.kind, &s.date)))
            .finish()
    }
}

impl Sources {
    /// The shipped data alone (the default). Nothing is parsed until the
    /// first lookup (the node parses it at start-up).
    pub fn shipped() -> Sources {
        Sources {
            list: vec![Source {
                name: "shipped".into(),
                kind: SourceKind::Shipped,
                date: String::new(),
                data: Data::Shipped,
            }],
        }
    }

    /// Opens and parses every configured file, in order. An error comes
    /// with the index of its spec.
    pub fn load(specs: &[SourceSpec]) -> Result<Sources, (usize, GeoError)> {
        let list = specs
            .iter()
            .enumerate()
            .map(|(i, s)| load(s).map_err(|e| (i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Sources { list })
    }

    /// Each source (datasets of the shipped data listed separately).
    pub fn describe(&self) -> Vec<SourceInfo> {
        let mut out = Vec::new();
        for s in &self.list {
            let info = |name: &str, date: &str, country, network| SourceInfo {
                name: name.to_owned(),
                kind: s.kind,
                dataset_date: date.to_owned(),
                country,
                network,
            };
            match &s.data {
                Data::Shipped => match GeoDb::embedded() {
                    Ok(db) => {
                        let (c, n) = (db.countries(), db.networks());
                        out.push(info(&c.dataset, &c.dataset_date, true, false));
                        out.push(info(&n.dataset, &n.dataset_date, false, true));
                    }
                    Err(_) => out.push(info("shipped (failed to load)", "", false, false)),
                },
                Data::Country(_) => out.push(info(&s.name, &s.date, true, false)),
                Data::Asn(_) => out.push(info(&s.name, &s.date, false, true)),
                Data::Mmdb(m) => out.push(info(&s.name, &s.date, m.has_country, m.has_network)),
            }
        }
        out
    }

    /// Every source's answer for `ip`: binary searches, no IO.
    pub fn lookup(&self, ip: IpAddr) -> Hosting {
        let mut h = Hosting {
            ip,
            countries: Vec::with_capacity(self.list.len() + 1),
            followed: None,
            disagree: false,
            networks: Vec::with_capacity(self.list.len() + 1),
            network_followed: None,
            marked_anycast_by: Vec::new(),
            ambiguity: None,
            errors: Vec::new(),
        };
        for s in &self.list {
            s.answer(ip, &mut h);
        }
        h.followed = h.countries.iter().position(|a| a.country.is_some());
        h.disagree = h.named_countries().len() > 1;
        h.network_followed = h.networks.iter().position(|a| a.network.is_some());
        let anycast_asn = h
            .network()
            .and_then(|(n, _)| anycast_operator(n.asn).map(|op| (n.asn, op)));
        h.ambiguity = match anycast_asn {
            Some((asn, op)) => Some(format!("{ANYCAST_NOTE} (AS{asn}, {op})")),
            None => h
                .marked_anycast_by
                .first()
                .map(|source| format!("{ANYCAST_NOTE} (marked anycast by {source})")),
        };
        h
    }
}

impl Source {
    fn answer(&self, ip: IpAddr, h: &mut Hosting) {
        let method = self.kind.method();
        let country = |source: &str, date: &str, raw_code: String| CountryAnswer {
            source: source.to_owned(),
            dataset_date: date.to_owned(),
            method,
            country: country_of(&raw_code),
            raw_code,
        };
        let network = |source: &str, date: &str, network| NetworkAnswer {
            source: source.to_owned(),
            dataset_date: date.to_owned(),
            method,
            network,
        };
        match &self.data {
            Data::Shipped => match GeoDb::embedded() {
                Ok(db) => {
                    let (c, n) = (db.countries(), db.networks());
                    h.countries
                        .push(country(&c.dataset, &c.dataset_date, c.raw_code(ip)));
                    h.networks
                        .push(network(&n.dataset, &n.dataset_date, n.lookup(ip)));
                }
                Err(e) => h.errors.push(format!("shipped data: {e}")),
            },
            Data::Country(t) => h
                .countries
                .push(country(&self.name, &self.date, t.raw_code(ip))),
            Data::Asn(t) => h
                .networks
                .push(network(&self.name, &self.date, t.lookup(ip))),
            Data::Mmdb(m) => {
                let record = match m.lookup(ip) {
                    Ok(r) => r.unwrap_or_default(),
                    Err(e) => {
                        h.errors.push(format!("{}: {e}", self.name));
                        Default::default()
                    }
                };
                if m.has_country {
                    let raw = record.raw_code.unwrap_or_default();
                    h.countries.push(country(&self.name, &self.date, raw));
                }
                if m.has_network {
                    let net = record.asn.filter(|&a| a != 0).map(|asn| Network {
                        asn,
                        org: record.org.unwrap_or_default(),
                    });
                    h.networks.push(network(&self.name, &self.date, net));
                }
                if record.anycast {
                    h.marked_anycast_by.push(self.name.clone());
                }
            }
        }
    }
}

fn load(spec: &SourceSpec) -> Result<Source, GeoError> {
    let kind = spec.kind;
    let first = spec.paths.first();
    let name = spec.name.clone().unwrap_or_else(|| {
        let file = first
            .and_then(|p| p.file_name())
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{}:{file}", kind.as_str())
    });
    let paths = |needs: &'static str, ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(GeoError::Paths {
                kind: kind.as_str(),
                needs,
            })
        }
    };
    let (data, file_date) = match kind {
        SourceKind::Shipped => {
            paths("no path", spec.paths.is_empty())?;
            (Data::Shipped, None)
        }
        SourceKind::Mmdb => {
            paths("exactly one path", spec.paths.len() == 1)?;
            let path = first
                .map(PathBuf::as_path)
                .unwrap_or(std::path::Path::new(""));
            let m = MmdbFile::open(path)?;
            if !m.has_country && !m.has_network {
                return Err(GeoError::MmdbSchema {
                    file: path.display().to_string(),
                });
            }
            let date = Some(m.build_date.clone());
            (Data::Mmdb(Box::new(m)), date)
        }
        SourceKind::TorGeoip | SourceKind::Csv | SourceKind::RirDelegated => {
            paths("one or more paths", !spec.paths.is_empty())?;
            let mut ranges = RangeTable::new();
            let mut date = None;
            for p in &spec.paths {
                let bytes = lines::read_file(p)?;
                let file = p.display().to_string();
                let d = if kind == SourceKind::RirDelegated {
                    rir::parse(bytes.as_slice(), &file, &mut ranges)?
                } else {
                    country::parse_ranges(bytes.as_slice(), &file, Syntax::Any, &mut ranges)?
                };
                date = date.or(d);
            }
            ranges.shrink_to_fit();
            (Data::Country(CountryTable::new(ranges, &name, None)), date)
        }
        SourceKind::AsnCsv => {
            paths("one or more paths", !spec.paths.is_empty())?;
            let mut t = AsnTable::empty(&name);
            for p in &spec.paths {
                let bytes = lines::read_file(p)?;
                t.parse(bytes.as_slice(), &p.display().to_string())?;
            }
            (Data::Asn(t), None)
        }
    };
    let date = spec
        .date
        .clone()
        .or(file_date)
        .unwrap_or_else(|| "unknown".to_owned());
    Ok(Source {
        name,
        kind,
        date,
        data,
    })
}

#[cfg(test)]
mod tests;
