//! What identifies the content of a report, for "same content, one case":
//! each URL in its WHATWG-normalised form, exact media hashes (SHA-256,
//! MD5) and PDQ perceptual hashes, which match within a Hamming distance.

use super::validate;

/// Two PDQ hashes whose Hamming distance is at most this are the same
/// picture (the threshold PDQ's authors recommend for matching).
pub const PDQ_MATCH_DISTANCE: u32 = 31;

/// The exact keys (`url:…`, `sha256:…`, `md5:…`, and `pdq:…` for storage)
/// and the PDQ hashes of a report.
pub fn keys<'a>(
    urls: &[String],
    hashes: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> (Vec<String>, Vec<[u8; 32]>) {
    let mut exact = Vec::new();
    let mut pdq = Vec::new();
    for u in urls {
        if let Ok(v) = validate::url(u) {
            exact.push(format!("url:{}", v.normalized));
        }
    }
    for (algorithm, value) in hashes {
        let value = value.to_ascii_lowercase();
        let hex_len = match algorithm {
            "sha256" | "pdq" => 64,
            "md5" => 32,
            _ => continue,
        };
        if value.len() != hex_len || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        if algorithm == "pdq"
            && let Some(h) = parse_pdq(&value)
        {
            pdq.push(h);
        }
        exact.push(format!("{algorithm}:{value}"));
    }
    exact.sort();
    exact.dedup();
    (exact, pdq)
}

/// A PDQ hash from its 64 hex digits.
pub fn parse_pdq(hex_digits: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_digits).ok()?;
    bytes.try_into().ok()
}

pub fn pdq_distance(a: &[u8; 32], b: &[u8; 32]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// PDQ hashes are found again by multi-index hashing: each is stored
/// under its 16 chunks of 16 bits (`pdqc:<chunk>:<4 hex>`). Two hashes
/// within `PDQ_MATCH_DISTANCE` (31) bits differ by at most one bit in at
/// least one chunk (if every chunk differed by two or more, 32 bits
/// would), so looking up each chunk and its 16 one-bit neighbours (272
/// keys) finds every match, in indexed lookups whatever the number of
/// stored hashes; candidates are then checked at full distance.
pub const PDQ_CHUNKS: usize = 16;

fn chunk(h: &[u8; 32], i: usize) -> u16 {
    u16::from_be_bytes([h[2 * i], h[2 * i + 1]])
}

/// The keys a stored PDQ hash is indexed under, one per chunk.
pub fn pdq_index_keys(h: &[u8; 32]) -> Vec<String> {
    (0..PDQ_CHUNKS)
        .map(|i| format!("pdqc:{i:x}:{:04x}", chunk(h, i)))
        .collect()
}

/// The keys to look up for hashes near `h`: each chunk, and each chunk
/// with one bit flipped.
pub fn pdq_probe_keys(h: &[u8; 32]) -> Vec<String> {
    let mut out = Vec::with_capacity(PDQ_CHUNKS * 17);
    for i in 0..PDQ_CHUNKS {
        let c = chunk(h, i);
        out.push(format!("pdqc:{i:x}:{c:04x}"));
        for bit in 0..16 {
            out.push(format!("pdqc:{i:x}:{:04x}", c ^ (1 << bit)));
        }
    }
    out
}

/// What a case stores to be found again: its exact keys and the index
/// keys of its PDQ hashes.
pub fn stored_keys(exact: &[String], pdq: &[[u8; 32]]) -> Vec<String> {
    let mut out = exact.to_vec();
    for h in pdq {
        out.extend(pdq_index_keys(h));
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_match_in_normalised_form_and_hashes_only_when_well_formed() {
        let (a, _) = keys(&["HTTP://Example.COM:80/a".to_owned()], []);
        let (b, _) = keys(&["http://example.com/a".to_owned()], []);
        assert_eq!(a, b);
        let (c, _) = keys(&["http://example.com/b".to_owned()], []);
        assert_ne!(a, c);
        let sha = "AB".repeat(32);
        let (k, pdq) = keys(
            &[],
            [("sha256", sha.as_str()), ("sha256", "abc"), ("sha1", "ab")],
        );
        assert_eq!(k, vec![format!("sha256:{}", sha.to_lowercase())]);
        assert!(pdq.is_empty());
    }

    #[test]
    fn pdq_hashes_match_within_the_hamming_threshold() {
        let a = [0u8; 32];
        let mut b = a;
        // 31 bits differ: the same picture; 32: not.
        for i in 0..31 {
            b[i / 8] |= 1 << (i % 8);
        }
        assert_eq!(pdq_distance(&a, &b), 31);
        b[31] |= 1;
        assert_eq!(pdq_distance(&a, &b), 32);
        let hex_b = hex::encode(b);
        let (k, pdq) = keys(&[], [("pdq", hex_b.as_str())]);
        assert_eq!(pdq, vec![b]);
        assert_eq!(k, vec![format!("pdq:{hex_b}")]);
    }

    /// Every hash within the threshold shares an index key with a probe,
    /// wherever its differing bits fall (the pigeonhole argument, checked
    /// on hashes built to spread 31 differing bits as evenly as possible,
    /// and on random ones).
    #[test]
    fn every_pdq_match_is_found_by_its_probe_keys() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
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
            let probes = pdq_probe_keys(&a);
            assert!(
                pdq_index_keys(&b).iter().any(|k| probes.contains(k)),
                "round {round}: a match within {flips} bits not found"
            );
        }
    }
}
