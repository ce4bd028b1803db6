//! IP → hosting country from offline datasets (IPFire location data, tor-geoip format).
//!
//! The data is the IPFire Location database (CC BY-SA 4.0, (c) IPFire Project,
//! <https://location.ipfire.org/>) as converted by Tor's `geoip-db-tool` and shipped
//! by Debian's `tor-geoipdb` package; see `data/geo/README.md` for attribution and
//! for how to replace it with fresher data.
//!
//! Format (after gunzip): `#` comment lines, then one range per line, `start,end,CC`,
//! both ends inclusive. The IPv4 file has decimal integers, the IPv6 file has textual
//! IPv6 addresses. Ranges must be sorted and must not overlap.

use std::io::BufRead;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, OnceLock};

/// Name given to the embedded dataset in every answer.
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

/// Codes that mean "no single country": continents, reserved, anonymisers, unknown.
const UNKNOWN_CODES: [&str; 7] = ["EU", "AP", "ZZ", "??", "A1", "A2", "O1"];

/// An offline IP-range → country table.
pub struct GeoDb {
    /// Sorted, non-overlapping, inclusive `(start, end, code)`.
    v4: Vec<(u32, u32, [u8; 2])>,
    /// Sorted, non-overlapping, inclusive `(start, end, code)`.
    v6: Vec<(u128, u128, [u8; 2])>,
    dataset: String,
    dataset_date: String,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb")
            .field("v4_ranges", &self.v4.len())
            .field("v6_ranges", &self.v6.len())
            .field("dataset", &self.dataset)
            .field("dataset_date", &self.dataset_date)
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
}

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
}

/// Which table a file feeds; decides how the two addresses are parsed.
trait Addr: Copy + Ord {
    fn parse(field: &str) -> Option<Self>;
}

impl Addr for u32 {
    /// Decimal integer (tor `geoip` format).
    fn parse(field: &str) -> Option<u32> {
        field.parse::<u32>().ok()
    }
}

impl Addr for u128 {
    /// Textual IPv6 address (tor `geoip6` format).
    fn parse(field: &str) -> Option<u128> {
        field.parse::<Ipv6Addr>().ok().map(u128::from)
    }
}

impl GeoDb {
    /// The IPFire data shipped in data/geo/, embedded in the binary with include_bytes!
    /// and parsed once on first use.
    pub fn embedded() -> Result<&'static GeoDb, GeoError> {
        static DB: OnceLock<Result<GeoDb, GeoError>> = OnceLock::new();
        DB.get_or_init(|| {
            let v4 = gunzip(EMBEDDED_V4);
            let v6 = gunzip(EMBEDDED_V6);
            GeoDb::parse(v4, EMBEDDED_V4_NAME, v6, EMBEDDED_V6_NAME, EMBEDDED_DATASET)
        })
        .as_ref()
        .map_err(Clone::clone)
    }

    /// Parse tor-geoip data from readers (already decompressed).
    pub fn from_tor_geoip(
        v4: impl BufRead,
        v6: impl BufRead,
        dataset: &str,
    ) -> Result<GeoDb, GeoError> {
        GeoDb::parse(v4, "geoip (IPv4)", v6, "geoip6 (IPv6)", dataset)
    }

    fn parse(
        v4: impl BufRead,
        v4_name: &str,
        v6: impl BufRead,
        v6_name: &str,
        dataset: &str,
    ) -> Result<GeoDb, GeoError> {
        let (v4, date4) = parse_file::<u32>(v4, v4_name)?;
        let (v6, date6) = parse_file::<u128>(v6, v6_name)?;
        let dataset_date = date4.or(date6).unwrap_or_else(|| "unknown".to_owned());
        Ok(GeoDb {
            v4,
            v6,
            dataset: dataset.to_owned(),
            dataset_date,
        })
    }

    /// Country of `ip` (binary search; IPv4-mapped IPv6 addresses use the IPv4 table).
    pub fn lookup(&self, ip: IpAddr) -> GeoAnswer {
        let code = match ip {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(a4) => find(&self.v4, u32::from(a4)),
                None => find(&self.v6, u128::from(a)),
            },
        };
        let raw_code = match code {
            Some(c) => String::from_utf8_lossy(trim_code(&c)).into_owned(),
            None => String::new(),
        };
        GeoAnswer {
            ip,
            country: country_of(&raw_code),
            raw_code,
            dataset: self.dataset.clone(),
            dataset_date: self.dataset_date.clone(),
            method: "range-lookup",
        }
    }

    /// Number of (IPv4, IPv6) ranges.
    pub fn len(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }
}

fn gunzip(bytes: &'static [u8]) -> impl BufRead {
    std::io::BufReader::with_capacity(1 << 16, flate2::bufread::MultiGzDecoder::new(bytes))
}

/// Binary search over sorted, non-overlapping inclusive ranges.
fn find<A: Addr>(ranges: &[(A, A, [u8; 2])], x: A) -> Option<[u8; 2]> {
    let i = ranges.partition_point(|r| r.0 <= x);
    let r = ranges.get(i.checked_sub(1)?)?;
    (x <= r.1).then_some(r.2)
}

/// An empty code is stored as two zero bytes.
fn trim_code(c: &[u8; 2]) -> &[u8] {
    if c[0] == 0 { &c[..0] } else { &c[..] }
}

fn country_of(raw: &str) -> Option<String> {
    let upper = raw.to_ascii_uppercase();
    if upper.is_empty() || UNKNOWN_CODES.contains(&upper.as_str()) {
        return None;
    }
    // "UK" is only ISO-"exceptionally reserved"; the ISO 3166-1 code is "GB".
    if upper == "UK" {
        return Some("GB".to_owned());
    }
    Some(upper)
}

type Ranges<A> = Vec<(A, A, [u8; 2])>;

/// Parse one tor-geoip file. Returns the ranges and the date of the first
/// `# Generated:` comment, if any.
fn parse_file<A: Addr>(
    mut r: impl BufRead,
    file: &str,
) -> Result<(Ranges<A>, Option<String>), GeoError> {
    let mut out: Ranges<A> = Vec::with_capacity(1 << 16);
    let mut date = None;
    let mut buf = Vec::with_capacity(128);
    let mut lineno = 0usize;
    loop {
        buf.clear();
        let n = r.read_until(b'\n', &mut buf).map_err(|e| GeoError::Io {
            file: file.to_owned(),
            source: Arc::new(e),
        })?;
        if n == 0 {
            break;
        }
        lineno += 1;
        let bad = |reason: &'static str| GeoError::BadLine {
            file: file.to_owned(),
            line: lineno,
            reason,
            content: String::from_utf8_lossy(&buf[..buf.len().min(120)])
                .trim_end()
                .to_owned(),
        };
        let line = std::str::from_utf8(&buf)
            .map_err(|_| bad("not UTF-8"))?
            .trim_ascii();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if date.is_none()
                && let Some(g) = comment.trim_start().strip_prefix("Generated:")
            {
                date = parse_generated(g);
            }
            continue;
        }
        let (start, rest) = line
            .split_once(',')
            .ok_or_else(|| bad("expected start,end,CC"))?;
        let (end, code) = rest
            .split_once(',')
            .ok_or_else(|| bad("expected start,end,CC"))?;
        let start = A::parse(start.trim_ascii()).ok_or_else(|| bad("bad start address"))?;
        let end = A::parse(end.trim_ascii()).ok_or_else(|| bad("bad end address"))?;
        let code = match code.trim_ascii().as_bytes() {
            [] => [0, 0],
            &[a, b] if is_code_byte(a) && is_code_byte(b) => [a, b],
            _ => return Err(bad("country code must be two letters, digits or '?'")),
        };
        if start > end {
            return Err(bad("range start is after range end"));
        }
        if let Some(prev) = out.last()
            && start <= prev.1
        {
            return Err(GeoError::Unsorted {
                file: file.to_owned(),
                line: lineno,
            });
        }
        out.push((start, end, code));
    }
    out.shrink_to_fit();
    Ok((out, date))
}

fn is_code_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'?'
}

/// `" Thu, 25 Jun 2026 04:33:59 GMT"` (or an ISO `2026-06-25...`) → `"2026-06-25"`.
fn parse_generated(s: &str) -> Option<String> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let s = s.trim();
    if let Some(iso) = s.get(..10) {
        let b = iso.as_bytes();
        if b[4] == b'-' && b[7] == b'-' && iso.split('-').all(|p| p.parse::<u32>().is_ok()) {
            return Some(iso.to_owned());
        }
    }
    let words: Vec<&str> = s
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    let m = words.iter().position(|w| {
        w.get(..3)
            .is_some_and(|p| MONTHS.contains(&p.to_ascii_lowercase().as_str()))
    })?;
    let month = MONTHS
        .iter()
        .position(|x| words[m][..3].eq_ignore_ascii_case(x))?
        + 1;
    let day: u32 = words.get(m.checked_sub(1)?)?.parse().ok()?;
    let year: u32 = words.get(m + 1)?.parse().ok()?;
    if !(1..=31).contains(&day) {
        return None;
    }
    Some(format!("{year:04}-{month:02}-{day:02}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::time::Instant;

    fn db() -> &'static GeoDb {
        GeoDb::embedded().expect("embedded geo data parses")
    }

    fn country(ip: &str) -> Option<String> {
        db().lookup(ip.parse().unwrap()).country
    }

    #[test]
    fn embedded_counts_and_date() {
        let t = Instant::now();
        let db = db();
        eprintln!("embedded geo data ready in {:?}", t.elapsed());
        // `zcat FILE | grep -vc '^#'`: the 20 header lines are not ranges.
        assert_eq!(db.len(), (385_602, 276_626));
        let a = db.lookup("85.214.132.117".parse().unwrap());
        assert_eq!(a.dataset, "ipfire-location (tor-geoip)");
        assert_eq!(a.dataset_date, "2026-06-25");
        assert_eq!(a.method, "range-lookup");
    }

    #[test]
    fn real_answers_v4() {
        // Each checked against `zcat data/geo/ipfire-country-v4.tor-geoip.gz`.
        let a = db().lookup("1.0.0.1".parse().unwrap()); // 16777216,16777471,AU
        assert_eq!(a.country.as_deref(), Some("AU"));
        assert_eq!(a.raw_code, "AU");
        assert_eq!(country("85.214.132.117").as_deref(), Some("DE")); // 85.214.0.0-85.215.8.63
        assert_eq!(country("62.210.16.6").as_deref(), Some("FR")); // 62.210.0.0/16
        assert_eq!(country("194.109.6.66").as_deref(), Some("NL")); // 194.109.0.0/16
        assert_eq!(country("212.58.224.1").as_deref(), Some("GB")); // 212.58.224.0/19
        assert_eq!(country("128.30.2.1").as_deref(), Some("US")); // 128.29.0.0-128.38.255.255
        assert_eq!(country("130.59.1.1").as_deref(), Some("CH")); // 130.59.0.0-130.60.255.255
        assert_eq!(country("129.240.1.1").as_deref(), Some("NO")); // 129.240.0.0-129.242.255.255
        assert_eq!(country("202.96.128.86").as_deref(), Some("CN")); // 202.96.0.0-202.120.24.223
    }

    #[test]
    fn range_edges_are_inclusive() {
        // 1382417977,1382417978,DE between ...976 FR and ...979 FR.
        let v4 = |n: u32| country(&std::net::Ipv4Addr::from(n).to_string());
        assert_eq!(v4(1_382_417_976).as_deref(), Some("FR"));
        assert_eq!(v4(1_382_417_977).as_deref(), Some("DE"));
        assert_eq!(v4(1_382_417_978).as_deref(), Some("DE"));
        assert_eq!(v4(1_382_417_979).as_deref(), Some("FR"));
    }

    #[test]
    fn real_answers_v6() {
        assert_eq!(country("2a01:4f8::1").as_deref(), Some("DE")); // 2a01:4f8::-2a01:4f9:2a:dda:ffff:...
        assert_eq!(country("2001:638::1").as_deref(), Some("DE"));
        assert_eq!(country("2001:67c:2e8::1").as_deref(), Some("NL"));
        assert_eq!(country("2001:620::1").as_deref(), Some("CH"));
        assert_eq!(country("2001:700::1").as_deref(), Some("NO"));
        assert_eq!(country("2001:4860::1").as_deref(), Some("US"));
        // Range edge: 2a01:7a7:2:2e89::/64 DE, then 2a01:7a7:2:2e8a:: FR.
        assert_eq!(
            country("2a01:7a7:2:2e89:ffff:ffff:ffff:ffff").as_deref(),
            Some("DE")
        );
        assert_eq!(country("2a01:7a7:2:2e8a::").as_deref(), Some("FR"));
    }

    #[test]
    fn unknown_codes_give_none_but_keep_raw() {
        // 15726992,15726999,?? (0.239.249.144-151)
        let a = db().lookup("0.239.249.150".parse().unwrap());
        assert_eq!((a.country, a.raw_code.as_str()), (None, "??"));
        // 2001::,2001:0:ffff:...,?? (Teredo)
        let a = db().lookup("2001::1".parse().unwrap());
        assert_eq!((a.country, a.raw_code.as_str()), (None, "??"));
        // 18923520,18926847,AP (1.32.192.0-...)
        let a = db().lookup("1.32.192.1".parse().unwrap());
        assert_eq!((a.country, a.raw_code.as_str()), (None, "AP"));
        // 34603008,34604543,EU (2.16.0.0-...)
        let a = db().lookup("2.16.0.1".parse().unwrap());
        assert_eq!((a.country, a.raw_code.as_str()), (None, "EU"));
    }

    #[test]
    fn uk_is_reported_as_gb() {
        // 1050540304,1050540307,UK (62.157.249.16-19)
        let a = db().lookup("62.157.249.17".parse().unwrap());
        assert_eq!(
            (a.country.as_deref(), a.raw_code.as_str()),
            (Some("GB"), "UK")
        );
    }

    #[test]
    fn unlisted_addresses_are_unknown() {
        // The data has no range for private, loopback or documentation addresses.
        for ip in ["10.0.0.1", "192.168.1.1", "127.0.0.1", "2001:db8::1", "::1"] {
            let a = db().lookup(ip.parse().unwrap());
            assert_eq!((a.country, a.raw_code.as_str()), (None, ""), "{ip}");
        }
    }

    #[test]
    fn ipv4_mapped_ipv6_uses_v4_table() {
        let ip: IpAddr = "::ffff:85.214.132.117".parse().unwrap();
        let a = db().lookup(ip);
        assert_eq!(a.country.as_deref(), Some("DE"));
        assert_eq!(a.ip, ip);
        assert_eq!(country("::ffff:10.0.0.1"), None);
    }

    #[test]
    fn lookup_is_fast() {
        let db = db();
        let ips: Vec<IpAddr> = ["85.214.132.117", "2a01:4f8::1", "10.0.0.1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let t = Instant::now();
        for _ in 0..1000 {
            for ip in &ips {
                std::hint::black_box(db.lookup(*ip));
            }
        }
        let per = t.elapsed() / 3000;
        assert!(per.as_micros() < 100, "lookup took {per:?}");
    }

    #[test]
    fn small_input_and_date_header() {
        let v4 = "# Generated: Thu, 25 Jun 2026 04:33:59 GMT\n\n1,5,de\r\n6,6,\n10,20,EU\n";
        let v6 = "2001:db8::,2001:db8::ffff,NL\n";
        let db = GeoDb::from_tor_geoip(Cursor::new(v4), Cursor::new(v6), "test").unwrap();
        assert_eq!(db.len(), (3, 1));
        let a = db.lookup("0.0.0.5".parse().unwrap());
        assert_eq!(
            (a.country.as_deref(), a.raw_code.as_str()),
            (Some("DE"), "de")
        );
        assert_eq!(a.dataset, "test");
        assert_eq!(a.dataset_date, "2026-06-25");
        let a = db.lookup("0.0.0.6".parse().unwrap());
        assert_eq!((a.country, a.raw_code.as_str()), (None, ""));
        assert_eq!(country_in(&db, "0.0.0.7"), None);
        assert_eq!(country_in(&db, "2001:db8::ffff").as_deref(), Some("NL"));
        assert_eq!(country_in(&db, "2001:db8::1:0"), None);
        let empty = GeoDb::from_tor_geoip(Cursor::new(""), Cursor::new(""), "x").unwrap();
        assert_eq!(
            empty.lookup("1.2.3.4".parse().unwrap()).dataset_date,
            "unknown"
        );
        assert_eq!(
            parse_generated(" 2026-06-25T00:00:00Z").as_deref(),
            Some("2026-06-25")
        );
    }

    fn country_in(db: &GeoDb, ip: &str) -> Option<String> {
        db.lookup(ip.parse().unwrap()).country
    }

    #[test]
    fn malformed_input_names_file_and_line() {
        let parse = |v4: &str, v6: &str| {
            GeoDb::from_tor_geoip(Cursor::new(v4.to_owned()), Cursor::new(v6.to_owned()), "t")
        };
        let cases = [
            ("# h\n1,2,DE\n3,x,FR\n", "", "geoip (IPv4)", 3),
            ("1,2\n", "", "geoip (IPv4)", 1),
            ("1,2,DEU\n", "", "geoip (IPv4)", 1),
            ("4294967296,4294967296,DE\n", "", "geoip (IPv4)", 1),
            ("1.2.3.4,1.2.3.5,DE\n", "", "geoip (IPv4)", 1),
            ("5,1,DE\n", "", "geoip (IPv4)", 1),
            ("", "::1,::2,DE\n::zz,::3,FR\n", "geoip6 (IPv6)", 2),
            ("", "10,20,DE\n", "geoip6 (IPv6)", 1),
        ];
        for (v4, v6, file, line) in cases {
            match parse(v4, v6) {
                Err(e @ GeoError::BadLine { .. }) => {
                    let GeoError::BadLine {
                        file: f, line: l, ..
                    } = &e
                    else {
                        unreachable!()
                    };
                    assert_eq!((f.as_str(), *l), (file, line), "{e}");
                    assert!(
                        e.to_string().starts_with(&format!("{file}:{line}: ")),
                        "{e}"
                    );
                }
                other => panic!("{v4:?}/{v6:?}: expected BadLine, got {other:?}"),
            }
        }
        for (v4, line) in [("1,5,DE\n5,6,FR\n", 2), ("10,20,DE\n1,2,FR\n", 2)] {
            match parse(v4, "") {
                Err(GeoError::Unsorted { file, line: l }) => {
                    assert_eq!((file.as_str(), l), ("geoip (IPv4)", line));
                }
                other => panic!("{v4:?}: expected Unsorted, got {other:?}"),
            }
        }
        let bad_utf8 = GeoDb::from_tor_geoip(Cursor::new(b"1,2,\xff\xff\n"), Cursor::new(""), "t");
        assert!(matches!(bad_utf8, Err(GeoError::BadLine { line: 1, .. })));
    }

    #[test]
    fn io_error_is_reported() {
        struct Failing;
        impl std::io::Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        let r = GeoDb::from_tor_geoip(std::io::BufReader::new(Failing), Cursor::new(""), "t");
        match r {
            Err(e @ GeoError::Io { .. }) => assert!(e.to_string().contains("disk on fire")),
            other => panic!("expected Io, got {other:?}"),
        }
    }
}
