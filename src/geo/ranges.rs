//! Sorted, non-overlapping, inclusive address ranges with a value each,
//! searched by binary search (IPv4 and IPv6 tables; an IPv4-mapped IPv6
//! address is looked up in the IPv4 table).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::lines::LineFault;

/// One end of a range, as read from a data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Addr {
    V4(u32),
    V6(u128),
}

impl Addr {
    /// How a format writes addresses.
    pub(crate) fn parse(field: &str, syntax: Syntax) -> Option<Addr> {
        match syntax {
            Syntax::Decimal4 => field.parse::<u32>().ok().map(Addr::V4),
            Syntax::Text6 => field.parse::<Ipv6Addr>().ok().map(|a| Addr::V6(a.into())),
            Syntax::Any => {
                if field.contains(':') {
                    field.parse::<Ipv6Addr>().ok().map(|a| Addr::V6(a.into()))
                } else if field.contains('.') {
                    field.parse::<Ipv4Addr>().ok().map(|a| Addr::V4(a.into()))
                } else {
                    field.parse::<u32>().ok().map(Addr::V4)
                }
            }
        }
    }
}

impl From<IpAddr> for Addr {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Addr::V4(a.into()),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(a4) => Addr::V4(a4.into()),
                None => Addr::V6(a.into()),
            },
        }
    }
}

/// Address syntax of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Syntax {
    /// tor `geoip`: decimal integers.
    Decimal4,
    /// tor `geoip6`: textual IPv6 addresses.
    Text6,
    /// Textual IPv4 or IPv6, or a decimal IPv4 integer (ip-location-db CSV).
    Any,
}

/// What to do when a range overlaps the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overlap {
    /// Refuse the file (country data: an overlap means a broken export).
    Refuse,
    /// The later range wins where they overlap: in prefix data merged from
    /// BGP tables, a range that starts inside the previous one is the more
    /// specific announcement.
    PreferLater,
}

#[derive(Debug, Clone)]
pub(crate) struct RangeTable<V> {
    v4: Vec<(u32, u32, V)>,
    v6: Vec<(u128, u128, V)>,
    /// Overlaps resolved under [`Overlap::PreferLater`].
    pub(crate) overlaps_resolved: usize,
}

impl<V: Copy> RangeTable<V> {
    pub(crate) fn new() -> Self {
        RangeTable {
            v4: Vec::new(),
            v6: Vec::new(),
            overlaps_resolved: 0,
        }
    }

    pub(crate) fn with_capacity(v4: usize, v6: usize) -> Self {
        RangeTable {
            v4: Vec::with_capacity(v4),
            v6: Vec::with_capacity(v6),
            overlaps_resolved: 0,
        }
    }

    /// The value of the range holding `ip`.
    pub(crate) fn find(&self, ip: IpAddr) -> Option<V> {
        match Addr::from(ip) {
            Addr::V4(x) => find(&self.v4, x),
            Addr::V6(x) => find(&self.v6, x),
        }
    }

    /// Number of (IPv4, IPv6) ranges.
    pub(crate) fn len(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }

    /// Appends a range; input must come sorted by start.
    pub(crate) fn push(
        &mut self,
        start: Addr,
        end: Addr,
        value: V,
        overlap: Overlap,
    ) -> Result<(), LineFault> {
        let resolved = match (start, end) {
            (Addr::V4(s), Addr::V4(e)) => push(&mut self.v4, s, e, value, overlap)?,
            (Addr::V6(s), Addr::V6(e)) => push(&mut self.v6, s, e, value, overlap)?,
            _ => {
                return Err(LineFault::Bad(
                    "start and end are not of the same IP version",
                ));
            }
        };
        if resolved {
            self.overlaps_resolved += 1;
        }
        Ok(())
    }

    /// Sorts ranges pushed out of order (RIR files) and checks they do not
    /// overlap; an error is the first range that overlaps its predecessor.
    pub(crate) fn sort_and_check(&mut self) -> Result<(), (Addr, Addr)> {
        sort_check(&mut self.v4).map_err(|(s, e)| (Addr::V4(s), Addr::V4(e)))?;
        sort_check(&mut self.v6).map_err(|(s, e)| (Addr::V6(s), Addr::V6(e)))
    }

    /// Appends without any order check (callers sort afterwards).
    pub(crate) fn push_unsorted(
        &mut self,
        start: Addr,
        end: Addr,
        value: V,
    ) -> Result<(), LineFault> {
        match (start, end) {
            (Addr::V4(s), Addr::V4(e)) if s <= e => self.v4.push((s, e, value)),
            (Addr::V6(s), Addr::V6(e)) if s <= e => self.v6.push((s, e, value)),
            (Addr::V4(_), Addr::V4(_)) | (Addr::V6(_), Addr::V6(_)) => {
                return Err(LineFault::Bad("range start is after range end"));
            }
            _ => {
                return Err(LineFault::Bad(
                    "start and end are not of the same IP version",
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn shrink_to_fit(&mut self) {
        self.v4.shrink_to_fit();
        self.v6.shrink_to_fit();
    }

    /// Every IPv4 range.
    #[cfg(test)]
    pub(crate) fn v4(&self) -> &[(u32, u32, V)] {
        &self.v4
    }
}

/// An address type of a table: ordered, with a successor and predecessor.
trait Bound: Copy + Ord {
    fn pred(self) -> Self;
    fn succ(self) -> Self;
}

impl Bound for u32 {
    fn pred(self) -> Self {
        self.saturating_sub(1)
    }
    fn succ(self) -> Self {
        self.saturating_add(1)
    }
}

impl Bound for u128 {
    fn pred(self) -> Self {
        self.saturating_sub(1)
    }
    fn succ(self) -> Self {
        self.saturating_add(1)
    }
}

fn find<A: Bound, V: Copy>(ranges: &[(A, A, V)], x: A) -> Option<V> {
    let i = ranges.partition_point(|r| r.0 <= x);
    let r = ranges.get(i.checked_sub(1)?)?;
    (x <= r.1).then_some(r.2)
}

/// Returns whether an overlap was resolved.
fn push<A: Bound, V: Copy>(
    out: &mut Vec<(A, A, V)>,
    s: A,
    e: A,
    v: V,
    overlap: Overlap,
) -> Result<bool, LineFault> {
    if s > e {
        return Err(LineFault::Bad("range start is after range end"));
    }
    let Some(&(ps, pe, pv)) = out.last() else {
        out.push((s, e, v));
        return Ok(false);
    };
    if s > pe {
        out.push((s, e, v));
        return Ok(false);
    }
    if overlap == Overlap::Refuse || s < ps {
        return Err(LineFault::Unsorted);
    }
    // PreferLater, ps <= s <= pe: the new range takes over [s, e] and what
    // is left of the previous one stays on either side of it.
    out.pop();
    if ps < s {
        // s > ps >= 0, so s - 1 does not wrap.
        out.push((ps, s.pred(), pv));
    }
    out.push((s, e, v));
    if e < pe {
        // e < pe <= MAX, so e + 1 does not wrap.
        out.push((e.succ(), pe, pv));
    }
    Ok(true)
}

fn sort_check<A: Bound, V: Copy>(v: &mut [(A, A, V)]) -> Result<(), (A, A)> {
    v.sort_unstable_by_key(|r| (r.0, r.1));
    for w in v.windows(2) {
        if let [a, b] = w
            && b.0 <= a.1
        {
            return Err((b.0, b.1));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(ranges: &[(u32, u32, u8)], overlap: Overlap) -> Result<RangeTable<u8>, LineFault> {
        let mut t = RangeTable::new();
        for &(s, e, v) in ranges {
            t.push(Addr::V4(s), Addr::V4(e), v, overlap)?;
        }
        Ok(t)
    }

    #[test]
    fn later_range_wins_an_overlap_only_where_it_overlaps() {
        // The real case in the RouteViews/DB-IP data: 214.95.0.0-215.0.255.255
        // (AS749) followed by 215.0.0.0-215.1.3.255 (AS721).
        let t = table(&[(10, 100, 1), (90, 120, 2)], Overlap::PreferLater).unwrap();
        assert_eq!(t.v4(), &[(10, 89, 1), (90, 120, 2)]);
        assert_eq!(t.overlaps_resolved, 1);
        // Nested: the outer range continues after the inner one.
        let t = table(&[(10, 100, 1), (20, 30, 2)], Overlap::PreferLater).unwrap();
        assert_eq!(t.v4(), &[(10, 19, 1), (20, 30, 2), (31, 100, 1)]);
        // Same start.
        let t = table(&[(10, 100, 1), (10, 30, 2)], Overlap::PreferLater).unwrap();
        assert_eq!(t.v4(), &[(10, 30, 2), (31, 100, 1)]);
        let t = table(
            &[(0, u32::MAX, 1), (u32::MAX, u32::MAX, 2)],
            Overlap::PreferLater,
        )
        .unwrap();
        assert_eq!(t.v4(), &[(0, u32::MAX - 1, 1), (u32::MAX, u32::MAX, 2)]);
    }

    #[test]
    fn refused_overlaps_and_disorder() {
        assert_eq!(
            table(&[(10, 100, 1), (90, 120, 2)], Overlap::Refuse).unwrap_err(),
            LineFault::Unsorted
        );
        assert_eq!(
            table(&[(10, 100, 1), (5, 6, 2)], Overlap::PreferLater).unwrap_err(),
            LineFault::Unsorted
        );
        assert!(matches!(
            table(&[(10, 1, 1)], Overlap::Refuse).unwrap_err(),
            LineFault::Bad(_)
        ));
        let mut t = RangeTable::new();
        assert!(
            t.push(Addr::V4(1), Addr::V6(2), 0u8, Overlap::Refuse)
                .is_err()
        );
    }

    #[test]
    fn sorting_out_of_order_input() {
        let mut t = RangeTable::new();
        t.push_unsorted(Addr::V4(50), Addr::V4(60), 2u8).unwrap();
        t.push_unsorted(Addr::V4(1), Addr::V4(10), 1).unwrap();
        t.sort_and_check().unwrap();
        assert_eq!(t.v4(), &[(1, 10, 1), (50, 60, 2)]);
        t.push_unsorted(Addr::V4(5), Addr::V4(7), 3).unwrap();
        assert_eq!(t.sort_and_check(), Err((Addr::V4(5), Addr::V4(7))));
    }

    #[test]
    fn address_syntaxes() {
        assert_eq!(
            Addr::parse("16777216", Syntax::Decimal4),
            Some(Addr::V4(16_777_216))
        );
        assert_eq!(Addr::parse("1.0.0.0", Syntax::Decimal4), None);
        assert_eq!(
            Addr::parse("1.0.0.0", Syntax::Any),
            Some(Addr::V4(16_777_216))
        );
        assert_eq!(
            Addr::parse("16777216", Syntax::Any),
            Some(Addr::V4(16_777_216))
        );
        assert_eq!(Addr::parse("::1", Syntax::Any), Some(Addr::V6(1)));
        assert_eq!(Addr::parse("10", Syntax::Text6), None);
        let mapped: IpAddr = "::ffff:1.0.0.1".parse().unwrap();
        assert_eq!(Addr::from(mapped), Addr::V4(16_777_217));
    }
}
