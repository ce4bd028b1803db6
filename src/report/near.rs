//! Near-duplicate media: an in-memory index of the PDQ hashes of open
//! cases, searched by multi-index hashing.
//!
//! Two PDQ hashes within `PDQ_MATCH_DISTANCE` (31) bits differ by at most
//! one bit in at least one of their 16 chunks of 16 bits (if every chunk
//! differed by two or more, 32 bits would). So the hashes near `h` are
//! among those sharing, in some chunk, that chunk's value or one of its 16
//! one-bit neighbours: 272 table lookups, each a slice of a
//! compressed table, whatever the number of stored hashes. A random
//! stored hash lands in one of them with probability 272/65,536 (about 1
//! in 240), and each candidate costs one 32-byte Hamming distance: at a
//! million stored hashes a search compares about 4,000 of them, tens of
//! microseconds.
//!
//! Hashes added since the tables were last built sit in a short list that
//! every search compares in full; past `RECENT_MAX` of them the tables are
//! built again (a counting sort per chunk), which also drops entries
//! forgotten since (cases closed or joined). Each entry is owned by the
//! hotline whose case it is, so the number of open near-duplicate cases
//! per hotline can be bounded (`open_of`).
//!
//! Memory per stored hash: a 48-byte entry (hash, case, owner), 64 bytes
//! of table slots and its case's place in a map: about 150 bytes, plus 4
//! MiB of chunk offsets once built.

use std::collections::HashMap;

use super::content::{PDQ_MATCH_DISTANCE, pdq_distance};

const CHUNKS: usize = 16;
const VALUES: usize = 1 << 16;
/// Hashes compared in full, at most, before the tables are rebuilt.
const RECENT_MAX: usize = 8192;

fn chunk(h: &[u8; 32], i: usize) -> u16 {
    u16::from_be_bytes([h[2 * i], h[2 * i + 1]])
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    hash: [u8; 32],
    /// The case's sequence number; `FORGOTTEN` once forgotten.
    case: i64,
    owner: u32,
}

const FORGOTTEN: i64 = -1;

/// One chunk's table: the entries (their positions in `entries`) whose
/// chunk has value `v` are `slots[offsets[v]..offsets[v + 1]]`.
#[derive(Debug, Default)]
struct Table {
    offsets: Vec<u32>,
    slots: Vec<u32>,
}

#[derive(Debug, Default)]
pub struct NearIndex {
    entries: Vec<Entry>,
    /// Entries below this are in the tables; the rest are recent.
    built: usize,
    tables: Vec<Table>,
    /// Where each case's entries are, to forget them.
    by_case: HashMap<i64, Vec<u32>>,
    owners: HashMap<String, u32>,
    /// Per owner (by its number): open cases with a hash here.
    open: Vec<u64>,
    /// Hashes of cases not forgotten.
    live: usize,
}

impl NearIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Hashes stored (of cases not forgotten).
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.by_case.is_empty()
    }

    /// Open cases of `owner` with a hash here.
    pub fn open_of(&self, owner: &str) -> u64 {
        self.owners.get(owner).map_or(0, |&o| self.open[o as usize])
    }

    /// Adds `hash` of the open case `case`, owned by `owner`.
    pub fn insert(&mut self, case: i64, owner: &str, hash: [u8; 32]) {
        let next = self.owners.len() as u32;
        let o = *self.owners.entry(owner.to_owned()).or_insert(next);
        if o as usize == self.open.len() {
            self.open.push(0);
        }
        let at = self.entries.len() as u32;
        let of_case = self.by_case.entry(case).or_default();
        if of_case.is_empty() {
            self.open[o as usize] += 1;
        }
        of_case.push(at);
        self.live += 1;
        self.entries.push(Entry {
            hash,
            case,
            owner: o,
        });
        if self.entries.len() - self.built > RECENT_MAX {
            self.rebuild();
        }
    }

    /// Forgets every hash of `case` (closed, or joined to another).
    pub fn forget(&mut self, case: i64) {
        let Some(at) = self.by_case.remove(&case) else {
            return;
        };
        for &i in &at {
            self.entries[i as usize].case = FORGOTTEN;
        }
        self.live -= at.len();
        if let Some(&i) = at.first() {
            let o = self.entries[i as usize].owner as usize;
            self.open[o] = self.open[o].saturating_sub(1);
        }
    }

    /// The cases holding a hash within `PDQ_MATCH_DISTANCE` of any of
    /// `hashes`, oldest (lowest sequence number) first.
    pub fn near(&self, hashes: &[[u8; 32]]) -> Vec<i64> {
        let mut found = Vec::new();
        let mut check = |e: &Entry| {
            if e.case != FORGOTTEN
                && hashes
                    .iter()
                    .any(|h| pdq_distance(h, &e.hash) <= PDQ_MATCH_DISTANCE)
            {
                found.push(e.case);
            }
        };
        for e in &self.entries[self.built..] {
            check(e);
        }
        for h in hashes {
            for (i, table) in self.tables.iter().enumerate() {
                let c = chunk(h, i);
                for v in std::iter::once(c).chain((0..16).map(|b| c ^ (1 << b))) {
                    let (from, to) = (
                        table.offsets[v as usize] as usize,
                        table.offsets[v as usize + 1] as usize,
                    );
                    for &slot in &table.slots[from..to] {
                        check(&self.entries[slot as usize]);
                    }
                }
            }
        }
        found.sort_unstable();
        found.dedup();
        found
    }

    /// Drops forgotten entries and builds the tables over all the rest.
    fn rebuild(&mut self) {
        self.entries.retain(|e| e.case != FORGOTTEN);
        self.by_case.clear();
        for (i, e) in self.entries.iter().enumerate() {
            self.by_case.entry(e.case).or_default().push(i as u32);
        }
        self.tables = (0..CHUNKS).map(|i| self.table(i)).collect();
        self.built = self.entries.len();
    }

    /// Chunk `i`'s table over every entry (a counting sort).
    fn table(&self, i: usize) -> Table {
        let mut offsets = vec![0u32; VALUES + 1];
        for e in &self.entries {
            offsets[chunk(&e.hash, i) as usize + 1] += 1;
        }
        for v in 0..VALUES {
            offsets[v + 1] += offsets[v];
        }
        let mut next = offsets.clone();
        let mut slots = vec![0u32; self.entries.len()];
        for (at, e) in self.entries.iter().enumerate() {
            let v = chunk(&e.hash, i) as usize;
            slots[next[v] as usize] = at as u32;
            next[v] += 1;
        }
        Table { offsets, slots }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(rng: &mut impl Rng) -> [u8; 32] {
        let mut h = [0u8; 32];
        rng.fill(&mut h);
        h
    }

    fn flipped(mut h: [u8; 32], bits: &[usize]) -> [u8; 32] {
        for &b in bits {
            h[b / 8] ^= 1 << (b % 8);
        }
        h
    }

    /// Every stored hash within the threshold is found, both while recent
    /// and once in the tables, and none beyond it.
    #[test]
    fn finds_every_hash_within_the_threshold_and_none_beyond() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut index = NearIndex::new();
        let base: Vec<[u8; 32]> = (0..RECENT_MAX * 2 + 10).map(|_| random(&mut rng)).collect();
        for (i, h) in base.iter().enumerate() {
            index.insert(i as i64, "de-hotline", *h);
        }
        assert!(index.built > 0 && index.built < index.entries.len());
        for (i, h) in base.iter().enumerate().step_by(97) {
            // 31 bits, two in every chunk but one (the worst case).
            let mut bits: Vec<usize> = (0..15).flat_map(|c| [c * 16, c * 16 + 9]).collect();
            bits.push(15 * 16 + 3);
            assert_eq!(pdq_distance(h, &flipped(*h, &bits)), PDQ_MATCH_DISTANCE);
            assert!(index.near(&[flipped(*h, &bits)]).contains(&(i as i64)));
            bits.push(15 * 16 + 4);
            assert!(!index.near(&[flipped(*h, &bits)]).contains(&(i as i64)));
        }
    }

    #[test]
    fn forgotten_cases_are_not_found_and_free_their_owners_count() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let mut index = NearIndex::new();
        let (a, b) = (random(&mut rng), random(&mut rng));
        index.insert(1, "fr", a);
        index.insert(1, "fr", b);
        index.insert(2, "fr", flipped(a, &[3]));
        assert_eq!(index.open_of("fr"), 2);
        assert_eq!(index.near(&[a]), vec![1, 2]);
        index.forget(1);
        assert_eq!(index.open_of("fr"), 1);
        assert_eq!(index.near(&[a]), vec![2]);
        assert!(index.near(&[b]).is_empty());
        for i in 10..(RECENT_MAX as i64 + 20) {
            index.insert(i, "de", random(&mut rng));
        }
        assert_eq!(index.near(&[a]), vec![2]);
        assert_eq!(index.len(), RECENT_MAX + 11);
        assert_eq!(index.open_of("de"), RECENT_MAX as u64 + 10);
    }

    /// Every hash within the threshold is found,
    /// wherever its differing bits fall (the pigeonhole argument, checked
    /// on hashes built to spread 31 differing bits as evenly as possible,
    /// and on random ones).
    #[test]
    fn every_match_is_found_wherever_its_differing_bits_fall() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut index = NearIndex::new();
        let mut pairs = Vec::new();
        for round in 0..2000 {
            let a: [u8; 32] = rng.r#gen();
            let mut b = a;
            let flips = if round % 2 == 0 {
                31
            } else {
                rng.gen_range(0..=31)
            };
            // Spread the flips: at most two per chunk first.
            let mut bits: Vec<(bool, u32, usize)> = (0..256)
                .map(|i| (i % 16 >= 2, rng.r#gen::<u32>(), i))
                .collect();
            bits.sort_unstable();
            let bits: Vec<usize> = bits.into_iter().map(|(_, _, i)| i).collect();
            for &bit in bits.iter().take(flips) {
                b[bit / 8] ^= 1 << (bit % 8);
            }
            assert!(pdq_distance(&a, &b) <= PDQ_MATCH_DISTANCE);
            index.insert(round, "fr", a);
            pairs.push((round, flips, b));
        }
        index.rebuild();
        for (round, flips, b) in pairs {
            assert!(
                index.near(&[b]).contains(&round),
                "round {round}: a match within {flips} bits not found"
            );
        }
    }
}
