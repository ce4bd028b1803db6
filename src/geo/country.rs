//! Country range files: tor-geoip (`start,end,CC`, decimal IPv4 or textual
//! IPv6, `# Generated:` date header) and ip-location-db country CSV
//! (`start,end,CC` with textual addresses, either version).

use std::io::BufRead;
use std::net::IpAddr;

use super::GeoError;
use super::lines::{LineFault, for_each_line};
use super::ranges::{Addr, Overlap, RangeTable, Syntax};

/// An IP-range → country-code table with its provenance.
#[derive(Clone)]
pub struct CountryTable {
    pub(crate) ranges: RangeTable<[u8; 2]>,
    pub(crate) dataset: String,
    pub(crate) dataset_date: String,
}

impl std::fmt::Debug for CountryTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountryTable")
            .field("ranges", &self.ranges.len())
            .field("dataset", &self.dataset)
            .field("dataset_date", &self.dataset_date)
            .finish()
    }
}

impl CountryTable {
    pub(crate) fn new(ranges: RangeTable<[u8; 2]>, dataset: &str, date: Option<String>) -> Self {
        CountryTable {
            ranges,
            dataset: dataset.to_owned(),
            dataset_date: date.unwrap_or_else(|| "unknown".to_owned()),
        }
    }

    /// The code exactly as the data has it; `""` when no range holds `ip`.
    pub fn raw_code(&self, ip: IpAddr) -> String {
        match self.ranges.find(ip) {
            Some(c) => String::from_utf8_lossy(trim_code(&c)).into_owned(),
            None => String::new(),
        }
    }

    /// Number of (IPv4, IPv6) ranges.
    pub fn len(&self) -> (usize, usize) {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }

    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    pub fn dataset_date(&self) -> &str {
        &self.dataset_date
    }
}

/// Parses one `start,end,CC` file into `table`. Returns the date of the
/// first `# Generated:` comment, if any. A first line whose start is not an
/// address (a CSV header) is skipped.
pub(crate) fn parse_ranges(
    r: impl BufRead,
    file: &str,
    syntax: Syntax,
    table: &mut RangeTable<[u8; 2]>,
) -> Result<Option<String>, GeoError> {
    let mut date = None;
    let mut first = true;
    for_each_line(r, file, |_, line| {
        if let Some(comment) = line.strip_prefix('#') {
            if date.is_none()
                && let Some(g) = comment.trim_start().strip_prefix("Generated:")
            {
                date = parse_generated(g);
            }
            return Ok(());
        }
        let was_first = std::mem::replace(&mut first, false);
        let mut fields = line.splitn(3, ',');
        let (Some(start), Some(end), Some(code)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err("expected start,end,CC".into());
        };
        let Some(start) = Addr::parse(start.trim_ascii(), syntax) else {
            if was_first && syntax == Syntax::Any {
                return Ok(()); // a header line such as `ip_range_start,ip_range_end,country_code`
            }
            return Err("bad start address".into());
        };
        let end = Addr::parse(end.trim_ascii(), syntax).ok_or("bad end address")?;
        let code = parse_code(code.trim_ascii())?;
        table.push(start, end, code, Overlap::Refuse)
    })?;
    Ok(date)
}

/// Two letters, digits or `?`, or empty (stored as two zero bytes).
pub(crate) fn parse_code(code: &str) -> Result<[u8; 2], LineFault> {
    match code.as_bytes() {
        [] => Ok([0, 0]),
        &[a, b] if is_code_byte(a) && is_code_byte(b) => Ok([a, b]),
        _ => Err("country code must be two letters, digits or '?'".into()),
    }
}

fn is_code_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'?'
}

/// An empty code is stored as two zero bytes.
fn trim_code(c: &[u8; 2]) -> &[u8] {
    if c[0] == 0 { &c[..0] } else { &c[..] }
}

/// `" Thu, 25 Jun 2026 04:33:59 GMT"` (or an ISO `2026-06-25...`) → `"2026-06-25"`.
pub(crate) fn parse_generated(s: &str) -> Option<String> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let s = s.trim();
    if let Some(iso) = s.get(..10)
        && let [y, m, d] = iso.split('-').collect::<Vec<_>>()[..]
        && y.len() == 4
        && m.len() == 2
        && d.len() == 2
        && [y, m, d].iter().all(|p| p.parse::<u32>().is_ok())
    {
        return Some(iso.to_owned());
    }
    let words: Vec<&str> = s
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    let m = words.iter().position(|w| {
        w.get(..3)
            .is_some_and(|p| MONTHS.contains(&p.to_ascii_lowercase().as_str()))
    })?;
    let month_word = words.get(m)?.get(..3)?;
    let month = MONTHS
        .iter()
        .position(|x| month_word.eq_ignore_ascii_case(x))?
        + 1;
    let day: u32 = words.get(m.checked_sub(1)?)?.parse().ok()?;
    let year: u32 = words.get(m + 1)?.parse().ok()?;
    if !(1..=31).contains(&day) {
        return None;
    }
    Some(format!("{year:04}-{month:02}-{day:02}"))
}
