//! Where is an IP address hosted? Offline datasets answer with a country and
//! a network (AS number and organisation), each answer carrying its source,
//! its dataset date and its method. Nothing is fetched at run time.
//!
//! - [`GeoDb`]: the data shipped in `data/geo/`, embedded in the binary and
//!   parsed once: the IPFire Location country data (CC BY-SA 4.0, tor-geoip
//!   format) and the RouteViews / DB-IP IP-to-ASN data (CC BY 4.0,
//!   ip-location-db CSV). See `data/geo/README.md` for attribution.
//! - [`Sources`]: the ordered list of sources a node consults (`[[geo.source]]`
//!   in `node.toml`; the shipped data by default): MaxMind DB files, tor-geoip
//!   and ip-location-db range files, RIR delegated-extended statistics, ASN
//!   CSV. Every source's answer is kept; the first source that knows decides.
//! - [`anycast_operator`]: known anycast/CDN networks, where the dataset's
//!   country is ambiguous.
//! - [`dns`]: the `[dns]` setting and the evidence a host-name resolution
//!   leaves (the resolving itself is `node::dns`; a static map needs none).
//!
//! Lookups are binary searches over sorted ranges (MaxMind files: a tree
//! walk): microseconds, no IO.

mod anycast;
mod asn;
mod country;
pub mod dns;
mod lines;
mod mmdb;
mod ranges;
mod rir;
mod sources;

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

pub use anycast::{ANYCAST_NOTE, anycast_operator, cdn_by_cname};
pub use asn::{AsnTable, Network};
pub use country::CountryTable;
pub use sources::{
    CountryAnswer, Hosting, NetworkAnswer, SourceInfo, SourceKind, SourceSpec, Sources,
};

use ranges::{RangeTable, Syntax};

/// Name of the embedded country dataset in every answer.
const EMBEDDED_DATASET: &str = "ipfire-location (tor-geoip)";
const EMBEDDED_V4_NAME: &str = "data/geo/ipfire-country-v4.tor-geoip.gz";
const EMBEDDED_V6_NAME: &str = "data/geo/ipfire-country-v6.tor-geoip.gz";
static EMBEDDED_V4: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/geo/ipfire-country-v4.tor-geoip.gz"
));
static EMBEDDED_V6: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/geo/ipfire-country-v6.tor-geoip.gz"
));

/// Name of the embedded network dataset in every answer.
const EMBEDDED_ASN_DATASET: &str = "routeviews-dbip (ip-location-db asn)";
/// The files carry no date; see data/geo/README.md for how this one is known.
const EMBEDDED_ASN_DATE: &str = "2026-06-17";
const EMBEDDED_ASN_V4_NAME: &str = "data/geo/asn-v4.routeviews-dbip.csv.gz";
const EMBEDDED_ASN_V6_NAME: &str = "data/geo/asn-v6.routeviews-dbip.csv.gz";
static EMBEDDED_ASN_V4: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/geo/asn-v4.routeviews-dbip.csv.gz"
));
static EMBEDDED_ASN_V6: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/geo/asn-v6.routeviews-dbip.csv.gz"
));

/// Codes that mean "no single country": continents, reserved, anonymisers, unknown.
const UNKNOWN_CODES: [&str; 7] = ["EU", "AP", "ZZ", "??", "A1", "A2", "O1"];

/// Why a dataset could not be loaded. Cloneable so the embedded result can be cached.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GeoError {
    #[error("reading {file}: {source}")]
    Io {
        file: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("{file}:{line}: {reason}: {content:?}")]
    BadLine {
        file: String,
        line: usize,
        reason: &'static str,
        /// The offending line (truncated).
        content: String,
    },
    #[error("{file}:{line}: range is out of order or overlaps the previous range")]
    Unsorted { file: String, line: usize },
    #[error("{file}: range {range} overlaps another range")]
    Overlap { file: String, range: String },
    #[error("{file}: not a readable MaxMind DB: {source}")]
    Mmdb {
        file: String,
        #[source]
        source: Arc<maxminddb::MaxMindDbError>,
    },
    #[error("{file}: carries neither countries nor AS numbers in a known schema")]
    MmdbSchema { file: String },
    #[error("source kind {kind} needs {needs}")]
    Paths {
        kind: &'static str,
        needs: &'static str,
    },
}

/// The data shipped in `data/geo/`: a country table and a network table.
pub struct GeoDb {
    country: CountryTable,
    networks: AsnTable,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb")
            .field("country", &self.country)
            .field("networks", &self.networks)
            .finish()
    }
}

/// The answer for one address, always with its source and date attached.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GeoAnswer {
    /// The address as asked (an IPv4-mapped IPv6 address stays as given, but is
    /// looked up in the IPv4 table).
    pub ip: IpAddr,
    /// Upper-case ISO 3166-1 alpha-2 code; None when the data says unknown.
    pub country: Option<String>,
    /// The code exactly as the dataset has it ("" when no range matched), e.g. "??", "EU".
    pub raw_code: String,
    /// e.g. "ipfire-location (tor-geoip)".
    pub dataset: String,
    /// e.g. "2026-06-25", read from the "# Generated:" header line ("unknown" if absent).
    pub dataset_date: String,
    /// Always "range-lookup".
    pub method: &'static str,
    /// The hosting network (AS number and organisation), when the data has one.
    pub network: Option<Network>,
    /// e.g. "routeviews-dbip (ip-location-db asn)".
    pub network_dataset: String,
    pub network_dataset_date: String,
    /// Set for known anycast/CDN networks ([`ANYCAST_NOTE`]).
    pub ambiguity: Option<&'static str>,
}

impl GeoDb {
    /// The data shipped in data/geo/, embedded in the binary with include_bytes!
    /// and parsed once, on first use (country and network tables on two threads).
    pub fn embedded() -> Result<&'static GeoDb, GeoError> {
        static DB: OnceLock<Result<GeoDb, GeoError>> = OnceLock::new();
        DB.get_or_init(|| {
            let (country, networks) = std::thread::scope(|s| {
                let networks = s.spawn(embedded_networks);
                let country = GeoDb::parse_country(
                    lines::gunzip(EMBEDDED_V4),
                    EMBEDDED_V4_NAME,
                    lines::gunzip(EMBEDDED_V6),
                    EMBEDDED_V6_NAME,
                    EMBEDDED_DATASET,
                );
                // A panic while parsing is a bug; pass it on unchanged.
                let networks = networks
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p));
                (country, networks)
            });
            Ok(GeoDb {
                country: country?,
                networks: networks?,
            })
        })
        .as_ref()
        .map_err(Clone::clone)
    }

    /// Parse tor-geoip data from readers (already decompressed); no network table.
    pub fn from_tor_geoip(
        v4: impl std::io::BufRead,
        v6: impl std::io::BufRead,
        dataset: &str,
    ) -> Result<GeoDb, GeoError> {
        Ok(GeoDb {
            country: GeoDb::parse_country(v4, "geoip (IPv4)", v6, "geoip6 (IPv6)", dataset)?,
            networks: AsnTable::empty("none"),
        })
    }

    fn parse_country(
        v4: impl std::io::BufRead,
        v4_name: &str,
        v6: impl std::io::BufRead,
        v6_name: &str,
        dataset: &str,
    ) -> Result<CountryTable, GeoError> {
        let mut ranges = RangeTable::with_capacity(1 << 19, 1 << 19);
        let date4 = country::parse_ranges(v4, v4_name, Syntax::Decimal4, &mut ranges)?;
        let date6 = country::parse_ranges(v6, v6_name, Syntax::Text6, &mut ranges)?;
        ranges.shrink_to_fit();
        Ok(CountryTable::new(ranges, dataset, date4.or(date6)))
    }

    /// Country and network of `ip` (binary searches; IPv4-mapped IPv6
    /// addresses use the IPv4 tables).
    pub fn lookup(&self, ip: IpAddr) -> GeoAnswer {
        let raw_code = self.country.raw_code(ip);
        let network = self.networks.lookup(ip);
        GeoAnswer {
            ip,
            country: country_of(&raw_code),
            raw_code,
            dataset: self.country.dataset.clone(),
            dataset_date: self.country.dataset_date.clone(),
            method: "range-lookup",
            ambiguity: network
                .as_ref()
                .and_then(|n| anycast_operator(n.asn))
                .map(|_| ANYCAST_NOTE),
            network,
            network_dataset: self.networks.dataset.clone(),
            network_dataset_date: self.networks.dataset_date.clone(),
        }
    }

    /// Number of (IPv4, IPv6) country ranges.
    pub fn len(&self) -> (usize, usize) {
        self.country.len()
    }

    pub fn is_empty(&self) -> bool {
        self.country.is_empty()
    }

    /// The country table (IPFire).
    pub fn countries(&self) -> &CountryTable {
        &self.country
    }

    /// The network table (RouteViews / DB-IP).
    pub fn networks(&self) -> &AsnTable {
        &self.networks
    }
}

fn embedded_networks() -> Result<AsnTable, GeoError> {
    let mut t = AsnTable::empty(EMBEDDED_ASN_DATASET);
    t.parse(lines::gunzip(EMBEDDED_ASN_V4), EMBEDDED_ASN_V4_NAME)?;
    t.parse(lines::gunzip(EMBEDDED_ASN_V6), EMBEDDED_ASN_V6_NAME)?;
    t.set_date(Some(EMBEDDED_ASN_DATE.to_owned()));
    Ok(t)
}

/// A dataset's code → an ISO 3166-1 alpha-2 country, or None for the codes
/// that mean unknown (`EU`, `AP`, `ZZ`, `??`, `A1`, `A2`, `O1`, empty, or
/// anything that is not two letters). `UK` is reported as `GB`.
pub fn country_of(raw: &str) -> Option<String> {
    let upper = raw.trim().to_ascii_uppercase();
    if upper.len() != 2
        || !upper.bytes().all(|b| b.is_ascii_uppercase())
        || UNKNOWN_CODES.contains(&upper.as_str())
    {
        return None;
    }
    // "UK" is only ISO-"exceptionally reserved"; the ISO 3166-1 code is "GB".
    if upper == "UK" {
        return Some("GB".to_owned());
    }
    Some(upper)
}

#[cfg(test)]
mod tests;
