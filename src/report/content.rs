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
}
