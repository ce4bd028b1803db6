//! MaxMind DB files (`.mmdb`: DB-IP Lite, IPFire, ip-location-db, MaxMind's
//! own) read with the `maxminddb` crate. Fields understood:
//! GeoIP2 `country.iso_code`, the flat `country_code`, the ASN schema
//! `autonomous_system_number` / `autonomous_system_organization`, and
//! GeoIP2 `traits.is_anycast`. Which of country and network a file carries
//! is found by reading its first records when it is opened.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::GeoError;

/// One opened MaxMind DB file (read into memory once).
pub(crate) struct MmdbFile {
    reader: maxminddb::Reader<Vec<u8>>,
    file: String,
    /// Day of `build_epoch`, e.g. `2026-11-01`.
    pub(crate) build_date: String,
    pub(crate) database_type: String,
    pub(crate) has_country: bool,
    pub(crate) has_network: bool,
}

impl std::fmt::Debug for MmdbFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmdbFile")
            .field("file", &self.file)
            .field("database_type", &self.database_type)
            .field("build_date", &self.build_date)
            .field("has_country", &self.has_country)
            .field("has_network", &self.has_network)
            .finish()
    }
}

/// What one record says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct MmdbRecord {
    /// The country code as the file has it (`None`: the record has none).
    pub(crate) raw_code: Option<String>,
    pub(crate) asn: Option<u32>,
    pub(crate) org: Option<String>,
    /// GeoIP2 `traits.is_anycast`.
    pub(crate) anycast: bool,
}

#[derive(Deserialize)]
struct Record {
    country: Option<CountryField>,
    country_code: Option<String>,
    autonomous_system_number: Option<u32>,
    autonomous_system_organization: Option<String>,
    traits: Option<Traits>,
}

/// GeoIP2 has a map here; some flat schemas put the country's NAME here,
/// which is not a code and is ignored.
#[derive(Deserialize)]
#[serde(untagged)]
enum CountryField {
    Map { iso_code: Option<String> },
    Other(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct Traits {
    is_anycast: Option<bool>,
}

impl From<Record> for MmdbRecord {
    fn from(r: Record) -> Self {
        let iso = match r.country {
            Some(CountryField::Map { iso_code }) => iso_code,
            _ => None,
        };
        MmdbRecord {
            raw_code: iso.or(r.country_code),
            asn: r.autonomous_system_number,
            org: r.autonomous_system_organization,
            anycast: r.traits.and_then(|t| t.is_anycast).unwrap_or(false),
        }
    }
}

/// Records read at open time to find which fields the file carries.
const PROBE_RECORDS: usize = 512;

impl MmdbFile {
    pub(crate) fn open(path: &Path) -> Result<MmdbFile, GeoError> {
        let bytes = std::fs::read(path).map_err(|e| GeoError::Io {
            file: path.display().to_string(),
            source: Arc::new(e),
        })?;
        Self::from_bytes(bytes, &path.display().to_string())
    }

    pub(crate) fn from_bytes(bytes: Vec<u8>, file: &str) -> Result<MmdbFile, GeoError> {
        let mmdb = |e| GeoError::Mmdb {
            file: file.to_owned(),
            source: Arc::new(e),
        };
        let reader = maxminddb::Reader::from_source(bytes).map_err(mmdb)?;
        let build_date = i64::try_from(reader.metadata.build_epoch)
            .ok()
            .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
            .map(|t| t.date().to_string())
            .unwrap_or_else(|| "unknown".to_owned());
        let database_type = reader.metadata.database_type.clone();
        let (has_country, has_network) = probe(&reader).map_err(mmdb)?;
        Ok(MmdbFile {
            reader,
            file: file.to_owned(),
            build_date,
            database_type,
            has_country,
            has_network,
        })
    }

    /// The record for `ip` (`None` when the file has none). An IPv6
    /// address in an IPv4-only file has no record.
    pub(crate) fn lookup(&self, ip: IpAddr) -> Result<Option<MmdbRecord>, GeoError> {
        let ip = match ip {
            IpAddr::V6(a) => a.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if ip.is_ipv6() && self.reader.metadata.ip_version == 4 {
            return Ok(None);
        }
        let record = self
            .reader
            .lookup::<Record>(ip)
            .map_err(|e| GeoError::Mmdb {
                file: self.file.clone(),
                source: Arc::new(e),
            })?;
        Ok(record.map(MmdbRecord::from))
    }
}

/// Reads the first records: does the file carry countries, networks?
fn probe(reader: &maxminddb::Reader<Vec<u8>>) -> Result<(bool, bool), maxminddb::MaxMindDbError> {
    let all = if reader.metadata.ip_version == 4 {
        "0.0.0.0/0"
    } else {
        "::/0"
    };
    let (mut country, mut network) = (false, false);
    for item in reader.within::<Record>(all.parse()?)?.take(PROBE_RECORDS) {
        let r = MmdbRecord::from(item?.info);
        country |= r.raw_code.is_some();
        network |= r.asn.is_some();
        if country && network {
            break;
        }
    }
    Ok((country, network))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(json: &str) -> MmdbRecord {
        MmdbRecord::from(serde_json::from_str::<Record>(json).unwrap())
    }

    #[test]
    fn the_three_schemas() {
        // GeoIP2: country.iso_code (other fields ignored).
        let r = record(
            r#"{"country":{"iso_code":"SE","names":{"en":"Sweden"}},"traits":{"is_anycast":true}}"#,
        );
        assert_eq!(
            (r.raw_code.as_deref(), r.asn, r.anycast),
            (Some("SE"), None, true)
        );
        // Flat (ip-location-db, DB-IP lite conversions): country_code; a
        // `country` that is a name is not taken for a code.
        let r = record(r#"{"country":"Germany","country_code":"DE"}"#);
        assert_eq!(r.raw_code.as_deref(), Some("DE"));
        let r = record(r#"{"country":"Germany"}"#);
        assert_eq!(r.raw_code, None);
        // ASN.
        let r = record(
            r#"{"autonomous_system_number":3320,"autonomous_system_organization":"Deutsche Telekom AG"}"#,
        );
        assert_eq!(
            (r.asn, r.org.as_deref(), r.raw_code),
            (Some(3320), Some("Deutsche Telekom AG"), None)
        );
    }
}
