//! IP range → autonomous system (number and organisation): the
//! ip-location-db ASN CSV, `start,end,asn,org` with textual addresses and
//! the organisation quoted when it holds a comma (`""` escapes a quote).
//!
//! Organisation names are interned into one `String` arena: a range stores
//! a network id, a network is (ASN, offset, length). Parsing allocates
//! nothing per line (one scratch buffer for unescaping quoted names).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::BufRead;
use std::net::IpAddr;

use serde::Serialize;

use super::GeoError;
use super::lines::{LineFault, for_each_line};
use super::ranges::{Addr, Overlap, RangeTable, Syntax};

/// The network an address belongs to: who operates it (the hosting provider).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Network {
    pub asn: u32,
    /// Organisation name as the data has it (may be empty).
    pub org: String,
}

#[derive(Debug, Clone, Copy)]
struct Net {
    asn: u32,
    off: u32,
    len: u32,
}

/// An IP-range → network table with its provenance.
#[derive(Clone)]
pub struct AsnTable {
    ranges: RangeTable<u32>,
    nets: Vec<Net>,
    arena: String,
    pub(crate) dataset: String,
    pub(crate) dataset_date: String,
}

impl std::fmt::Debug for AsnTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsnTable")
            .field("ranges", &self.ranges.len())
            .field("networks", &self.nets.len())
            .field("dataset", &self.dataset)
            .field("dataset_date", &self.dataset_date)
            .finish()
    }
}

impl AsnTable {
    pub(crate) fn empty(dataset: &str) -> AsnTable {
        AsnTable {
            ranges: RangeTable::new(),
            nets: Vec::new(),
            arena: String::new(),
            dataset: dataset.to_owned(),
            dataset_date: "unknown".to_owned(),
        }
    }

    /// The network holding `ip`, if the data has one (AS 0 means "not routed").
    pub fn lookup(&self, ip: IpAddr) -> Option<Network> {
        let net = self.nets.get(self.ranges.find(ip)? as usize)?;
        (net.asn != 0).then(|| Network {
            asn: net.asn,
            org: self.org(net).to_owned(),
        })
    }

    fn org(&self, net: &Net) -> &str {
        let start = net.off as usize;
        self.arena
            .get(start..start + net.len as usize)
            .unwrap_or_default()
    }

    /// Number of (IPv4, IPv6) ranges.
    pub fn len(&self) -> (usize, usize) {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }

    /// Distinct (ASN, organisation) pairs.
    pub fn networks(&self) -> usize {
        self.nets.len()
    }

    /// Overlapping ranges resolved in favour of the later, more specific one.
    pub fn overlaps_resolved(&self) -> usize {
        self.ranges.overlaps_resolved
    }

    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    pub fn dataset_date(&self) -> &str {
        &self.dataset_date
    }

    pub(crate) fn set_date(&mut self, date: Option<String>) {
        if let Some(d) = date {
            self.dataset_date = d;
        }
    }

    /// Parses one file and adds its ranges (files of one table: IPv4, IPv6).
    pub(crate) fn parse(&mut self, r: impl BufRead, file: &str) -> Result<(), GeoError> {
        let mut interned: HashMap<u32, u32, BuildHasherDefault<AsnHasher>> =
            HashMap::with_capacity_and_hasher(1 << 17, Default::default());
        let mut scratch = String::with_capacity(256);
        // Neighbouring ranges often belong to the same network.
        let mut last: Option<u32> = None;
        let mut first = true;
        let AsnTable {
            ranges,
            nets,
            arena,
            ..
        } = self;
        for_each_line(r, file, |_, line| {
            if line.starts_with('#') {
                return Ok(());
            }
            let was_first = std::mem::replace(&mut first, false);
            let mut fields = line.splitn(4, ',');
            let (Some(start), Some(end), Some(asn), Some(org)) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err("expected start,end,asn,org".into());
            };
            let Some(start) = Addr::parse(start.trim_ascii(), Syntax::Any) else {
                if was_first {
                    return Ok(()); // a header line
                }
                return Err("bad start address".into());
            };
            let end = Addr::parse(end.trim_ascii(), Syntax::Any).ok_or("bad end address")?;
            let asn = parse_asn(asn.trim_ascii()).ok_or("bad AS number")?;
            let org = unquote(org.trim_ascii(), &mut scratch)?;
            let same = |id: u32| {
                nets.get(id as usize)
                    .is_some_and(|n| n.asn == asn && org_at(arena, n) == org)
            };
            let id = match last
                .filter(|&id| same(id))
                .or_else(|| interned.get(&asn).copied())
            {
                Some(id) if same(id) => id,
                _ => {
                    let id = u32::try_from(nets.len()).map_err(|_| "too many networks")?;
                    let off =
                        u32::try_from(arena.len()).map_err(|_| "organisation names too large")?;
                    let len = u32::try_from(org.len()).map_err(|_| "organisation name too long")?;
                    arena.push_str(org);
                    nets.push(Net { asn, off, len });
                    interned.insert(asn, id);
                    id
                }
            };
            last = Some(id);
            ranges.push(start, end, id, Overlap::PreferLater)
        })?;
        self.ranges.shrink_to_fit();
        self.nets.shrink_to_fit();
        self.arena.shrink_to_fit();
        Ok(())
    }
}

/// Multiplicative hashing of AS numbers: the keys come from a data file,
/// not from the network, so the std SipHash (built for hostile keys) would
/// only cost time on the 500,000 lines of the shipped data.
#[derive(Default)]
struct AsnHasher(u64);

impl Hasher for AsnHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // FNV-1a; unused for u32 keys, which go to `write_u32`.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u32(&mut self, n: u32) {
        let h = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }
}

fn org_at<'a>(arena: &'a str, n: &Net) -> &'a str {
    let start = n.off as usize;
    arena.get(start..start + n.len as usize).unwrap_or_default()
}

/// `13335` or `AS13335`.
fn parse_asn(s: &str) -> Option<u32> {
    let digits = s
        .strip_prefix("AS")
        .or_else(|| s.strip_prefix("as"))
        .unwrap_or(s);
    digits.parse().ok()
}

/// A CSV field: as is, or between quotes with `""` for a quote (unescaped
/// into `scratch`, which is reused from line to line).
fn unquote<'a>(field: &'a str, scratch: &'a mut String) -> Result<&'a str, LineFault> {
    let Some(inner) = field.strip_prefix('"') else {
        if field.contains('"') {
            return Err("stray quote in organisation".into());
        }
        return Ok(field);
    };
    let inner = inner
        .strip_suffix('"')
        .ok_or("unterminated quoted organisation")?;
    if !inner.contains('"') {
        return Ok(inner);
    }
    scratch.clear();
    let mut rest = inner;
    while let Some(i) = rest.find('"') {
        scratch.push_str(&rest[..i]);
        // A quote inside a quoted field must be doubled.
        if rest.get(i + 1..i + 2) != Some("\"") {
            return Err("stray quote in organisation".into());
        }
        scratch.push('"');
        rest = &rest[i + 2..];
    }
    scratch.push_str(rest);
    Ok(scratch.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn table(text: &str) -> Result<AsnTable, GeoError> {
        let mut t = AsnTable::empty("t");
        t.parse(Cursor::new(text.to_owned()), "asn.csv")?;
        Ok(t)
    }

    fn net(t: &AsnTable, ip: &str) -> Option<(u32, String)> {
        t.lookup(ip.parse().unwrap()).map(|n| (n.asn, n.org))
    }

    #[test]
    fn quoted_names_and_interning() {
        let t = table(concat!(
            "1.0.0.0,1.0.0.255,13335,\"Cloudflare, Inc.\"\n",
            "1.0.4.0,1.0.7.255,38803,Gtelecom Pty Ltd\n",
            "2.26.200.0,2.26.215.255,201907,\"LLC \"\"SPUTNIK\"\"\"\n",
            "2.27.0.0,2.27.0.255,13335,\"Cloudflare, Inc.\"\n",
            "2001::,2001::ffff:ffff:ffff:ffff:ffff:ffff,6939,Hurricane Electric LLC\n",
        ))
        .unwrap();
        assert_eq!(net(&t, "1.0.0.1"), Some((13335, "Cloudflare, Inc.".into())));
        assert_eq!(net(&t, "1.0.5.1"), Some((38803, "Gtelecom Pty Ltd".into())));
        assert_eq!(
            net(&t, "2.26.201.1"),
            Some((201907, "LLC \"SPUTNIK\"".into()))
        );
        assert_eq!(
            net(&t, "2.27.0.9"),
            Some((13335, "Cloudflare, Inc.".into()))
        );
        assert_eq!(
            net(&t, "2001::1"),
            Some((6939, "Hurricane Electric LLC".into()))
        );
        assert_eq!(net(&t, "1.0.1.0"), None);
        assert_eq!(
            t.networks(),
            4,
            "the second Cloudflare range reuses its name"
        );
        assert_eq!(t.len(), (4, 1));
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        for (text, line) in [
            ("1.0.0.0,1.0.0.255,x,Org\n", 1),
            ("1.0.0.0,1.0.0.255,1,Org\n1.0.0.0\n", 2),
            ("1.0.0.0,1.0.0.255,1,\"Org\n", 1),
            ("1.0.0.0,1.0.0.255,1,\"O\"rg\"\n", 1),
            ("1.0.0.0,1.0.0.255,1,Org\n1.0.1.0,zz,1,Org\n", 2),
        ] {
            match table(text) {
                Err(GeoError::BadLine { file, line: l, .. }) => {
                    assert_eq!((file.as_str(), l), ("asn.csv", line), "{text:?}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        // A header line is skipped; AS prefixes are read.
        let t =
            table("ip_range_start,ip_range_end,asn,org\n1.0.0.0,1.0.0.255,AS7,Seven\n").unwrap();
        assert_eq!(net(&t, "1.0.0.7"), Some((7, "Seven".into())));
    }
}
