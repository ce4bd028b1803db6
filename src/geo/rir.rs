//! RIR statistics exchange files (`delegated-<rir>-extended-latest` and the
//! NRO's combined file): `registry|cc|type|start|value|date|status[|…]`.
//!
//! For `ipv4` the value is an address COUNT (not necessarily a power of
//! two); for `ipv6` it is a prefix length. `asn` records, the version line
//! and the `*` summary lines are skipped. The country is the registrant's
//! (registration, not hosting): a distinct kind of evidence, listed with its
//! source like any other. Records come sorted per registry only, so they are
//! sorted here and must not overlap.

use std::io::BufRead;

use super::GeoError;
use super::country::parse_code;
use super::lines::{LineFault, for_each_line};
use super::ranges::{Addr, RangeTable};

/// Parses one file into `table`; returns the end date of its version line.
pub(crate) fn parse(
    r: impl BufRead,
    file: &str,
    table: &mut RangeTable<[u8; 2]>,
) -> Result<Option<String>, GeoError> {
    let mut date = None;
    for_each_line(r, file, |_, line| {
        if line.starts_with('#') {
            return Ok(());
        }
        let f: Vec<&str> = line.splitn(8, '|').collect();
        // Version line: version|registry|serial|records|startdate|enddate|UTCoffset
        if f.first()
            .is_some_and(|v| v.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
        {
            if date.is_none() {
                date = f.get(5).and_then(|d| yyyymmdd(d));
            }
            return Ok(());
        }
        let [_registry, cc, kind, start, value, ..] = f[..] else {
            return Err("expected registry|cc|type|start|value|date|status".into());
        };
        if cc == "*" || start == "*" {
            return Ok(()); // summary line
        }
        let (start, end) = match kind {
            "asn" => return Ok(()),
            "ipv4" => ipv4(start, value)?,
            "ipv6" => ipv6(start, value)?,
            _ => return Err("type must be asn, ipv4 or ipv6".into()),
        };
        table.push_unsorted(start, end, parse_code(cc)?)
    })?;
    table.sort_and_check().map_err(|(s, e)| GeoError::Overlap {
        file: file.to_owned(),
        range: format!("{}-{}", shown(s), shown(e)),
    })?;
    table.shrink_to_fit();
    Ok(date)
}

fn ipv4(start: &str, count: &str) -> Result<(Addr, Addr), LineFault> {
    let s: std::net::Ipv4Addr = start.parse().map_err(|_| "bad IPv4 start")?;
    let n: u32 = count.parse().map_err(|_| "bad IPv4 address count")?;
    let s = u32::from(s);
    let e = n
        .checked_sub(1)
        .and_then(|n| s.checked_add(n))
        .ok_or("IPv4 count is 0 or runs past 255.255.255.255")?;
    Ok((Addr::V4(s), Addr::V4(e)))
}

fn ipv6(start: &str, prefix: &str) -> Result<(Addr, Addr), LineFault> {
    let s: std::net::Ipv6Addr = start.parse().map_err(|_| "bad IPv6 start")?;
    let len: u32 = prefix.parse().map_err(|_| "bad IPv6 prefix length")?;
    if len > 128 {
        return Err("IPv6 prefix length above 128".into());
    }
    let s = u128::from(s);
    let host = u128::MAX.checked_shr(len).unwrap_or(0);
    if s & host != 0 {
        return Err("IPv6 start is not the first address of its prefix".into());
    }
    Ok((Addr::V6(s), Addr::V6(s | host)))
}

fn yyyymmdd(d: &str) -> Option<String> {
    (d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()))
        .then(|| format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..]))
}

fn shown(a: Addr) -> String {
    match a {
        Addr::V4(x) => std::net::Ipv4Addr::from(x).to_string(),
        Addr::V6(x) => std::net::Ipv6Addr::from(x).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const SAMPLE: &str = "\
2|ripencc|1751324399|4|19830705|20260630|+0200
ripencc|*|ipv4|*|3|summary
ripencc|*|asn|*|1|summary
ripencc|FR|ipv4|2.0.0.0|1048576|20100712|allocated|abc
ripencc|NL|ipv4|5.10.0.0|768|20120101|allocated
ripencc|EU|asn|1234|1|20100101|allocated
ripencc||ipv4|5.9.0.0|256||available
ripencc|DE|ipv6|2a01:4f8::|29|20050916|allocated|xyz
";

    #[test]
    fn counts_and_prefixes() {
        let mut t = RangeTable::new();
        let date = parse(Cursor::new(SAMPLE), "delegated", &mut t).unwrap();
        assert_eq!(date.as_deref(), Some("2026-06-30"));
        // 2.0.0.0 + 1048576 addresses = 2.0.0.0-2.15.255.255; 768 is not a power of two.
        let cc = |ip: &str| {
            t.find(ip.parse().unwrap())
                .map(|c| String::from_utf8_lossy(&c).into_owned())
        };
        assert_eq!(cc("2.15.255.255").as_deref(), Some("FR"));
        assert_eq!(cc("2.16.0.0"), None);
        assert_eq!(cc("5.10.2.255").as_deref(), Some("NL"));
        assert_eq!(cc("5.10.3.0"), None);
        assert_eq!(cc("5.9.0.1").as_deref(), Some("\0\0"));
        assert_eq!(cc("2a01:4ff:ffff::1").as_deref(), Some("DE"));
        assert_eq!(cc("2a01:500::"), None);
        assert_eq!(t.len(), (3, 1));
    }

    #[test]
    fn bad_records_are_refused() {
        for (text, reason) in [
            (
                "ripencc|FR|ipv4|2.0.0.0|0|20100712|allocated\n",
                "count is 0",
            ),
            (
                "ripencc|FR|ipv4|255.255.255.0|512|20100712|allocated\n",
                "runs past",
            ),
            (
                "ripencc|FR|ipv6|2a01:4f8::1|29|20100712|allocated\n",
                "first address",
            ),
            ("ripencc|FR|ipv5|1|1|1|allocated\n", "type must be"),
            ("ripencc|FR\n", "expected"),
        ] {
            let err = parse(Cursor::new(text), "d", &mut RangeTable::new()).unwrap_err();
            assert!(err.to_string().contains(reason), "{text:?}: {err}");
        }
        let overlapping = "a|FR|ipv4|2.0.0.0|512|1|allocated\nb|DE|ipv4|2.0.1.0|256|1|allocated\n";
        let err = parse(Cursor::new(overlapping), "d", &mut RangeTable::new()).unwrap_err();
        assert!(matches!(err, GeoError::Overlap { .. }), "{err}");
        assert!(err.to_string().contains("2.0.1.0-2.0.1.255"), "{err}");
    }
}
