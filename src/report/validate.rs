//! Strict validation of submitted report fields. Every refusal names the
//! field and a reason code; nothing here does IO (the node never fetches a
//! reported URL).
//!
//! A URL is evidence: it is kept byte-for-byte as submitted, and beside it
//! [`ValidUrl`] holds its WHATWG-normalised form (lower-case host, IDNA
//! A-labels, default port removed, decimal/octal/hex IPv4 written as a
//! dotted quad, IPv6 compressed), its host, and flags for hosts that may
//! read as something they are not (UTS #39 mixed-script and confusable
//! labels): flagged, never refused.

use std::net::IpAddr;

use unicode_security::{MixedScript, skeleton};

use super::{Category, InvalidInput, MediaHash, Priority, ReportDraft};

pub const MAX_URLS: usize = 100;
pub const MAX_URL_BYTES: usize = 8 * 1024;
pub const MAX_NOTES_BYTES: usize = 4 * 1024;
pub const MAX_HASHES: usize = 32;
const MAX_HASH_VALUE: usize = 256;

/// Schemes a reported URL may have.
pub const SCHEMES: [&str; 3] = ["http", "https", "ftp"];

/// Flag: a label of the host mixes scripts (e.g. Latin and Cyrillic).
pub const MIXED_SCRIPT_HOST: &str = "mixed-script-host";
/// Flag: a non-ASCII label whose UTS #39 skeleton is all ASCII, i.e. one
/// that can pass for an ASCII name (`раураl` for `paypal`).
pub const CONFUSABLE_HOST: &str = "confusable-host";
/// Flag: a Tor onion service, which has no geolocatable address.
pub const ONION_HOST: &str = "onion-host";

/// The host part of a reported URL (domains as IDNA A-labels, lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlHost {
    Ip(IpAddr),
    Domain(String),
    /// A `.onion` name: a Tor onion service, not geolocatable.
    Onion(String),
}

impl std::fmt::Display for UrlHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UrlHost::Ip(ip) => write!(f, "{ip}"),
            UrlHost::Domain(d) | UrlHost::Onion(d) => f.write_str(d),
        }
    }
}

/// A URL accepted as evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidUrl {
    /// Exactly as submitted (what is signed and forwarded).
    pub original: String,
    /// The WHATWG serialisation.
    pub normalized: String,
    pub host: UrlHost,
    /// [`MIXED_SCRIPT_HOST`], [`CONFUSABLE_HOST`], [`ONION_HOST`].
    pub flags: Vec<&'static str>,
}

/// The raw fields of a submission, as received.
#[derive(Debug, Clone)]
pub struct Submission<'a> {
    pub urls: &'a [String],
    pub category: &'a str,
    pub hosting_ip: &'a str,
    /// `None` when the value given is not a known priority (refused).
    pub priority: Option<Priority>,
    pub notes: &'a str,
    pub hashes: Vec<MediaHash>,
    /// `baseline` (or empty) or `national`.
    pub classification: &'a str,
}

impl Submission<'_> {
    /// What a refusal's audit entry records of the submission: every field
    /// (and the idempotency key), length-prefixed so no two submissions
    /// share it — hashed there, never stored in clear.
    pub fn fingerprint(&self, submission_id: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut field = |bytes: &[u8]| {
            out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
            out.extend_from_slice(bytes);
        };
        field(&(self.urls.len() as u64).to_be_bytes());
        for u in self.urls {
            field(u.as_bytes());
        }
        field(self.category.as_bytes());
        field(self.hosting_ip.as_bytes());
        field(self.priority.map_or("?", Priority::as_str).as_bytes());
        field(self.notes.as_bytes());
        field(&(self.hashes.len() as u64).to_be_bytes());
        for h in &self.hashes {
            field(h.algorithm.as_bytes());
            field(h.value.as_bytes());
        }
        field(self.classification.as_bytes());
        field(submission_id.as_bytes());
        out
    }
}

pub fn draft(s: &Submission<'_>) -> Result<ReportDraft, InvalidInput> {
    let priority = s
        .priority
        .ok_or_else(|| InvalidInput::new("bad-priority", "priority", "not one of: bulk, urgent"))?;
    let urls = urls(s.urls)?;
    let category = Category::parse(s.category).map_err(|mut e| {
        e.field = "category".into();
        e.code = "bad-category";
        e
    })?;
    let hosting_ip = hosting_ip(s.hosting_ip)?;
    let classification = super::Classification::parse_or_baseline(s.classification)?;
    text("notes", s.notes, MAX_NOTES_BYTES, true)?;
    if s.hashes.len() > MAX_HASHES {
        return Err(InvalidInput::new(
            "too-many-hashes",
            "hashes",
            format!("at most {MAX_HASHES} hashes, got {}", s.hashes.len()),
        ));
    }
    for (i, h) in s.hashes.iter().enumerate() {
        media_hash(i, h)?;
    }
    Ok(ReportDraft {
        urls,
        category,
        hosting_ip,
        priority,
        notes: s.notes.to_owned(),
        hashes: s.hashes.clone(),
        classification,
    })
}

pub fn urls(urls: &[String]) -> Result<Vec<String>, InvalidInput> {
    if urls.is_empty() {
        return Err(InvalidInput::new(
            "no-url",
            "urls",
            "at least one URL is required",
        ));
    }
    if urls.len() > MAX_URLS {
        return Err(InvalidInput::new(
            "too-many-urls",
            "urls",
            format!("at most {MAX_URLS} URLs, got {}", urls.len()),
        ));
    }
    for (i, u) in urls.iter().enumerate() {
        url_host(u).map_err(|mut e| {
            e.field = format!("urls[{i}]");
            e
        })?;
    }
    Ok(urls.to_vec())
}

/// Checks one URL and returns its host. The URL is kept byte-for-byte as
/// evidence; this only decides whether it is acceptable.
pub fn url_host(u: &str) -> Result<UrlHost, InvalidInput> {
    url(u).map(|v| v.host)
}

/// Checks one URL: at most 8 KiB, no control or bidirectional characters,
/// WHATWG syntax, scheme http, https or ftp, a host.
pub fn url(u: &str) -> Result<ValidUrl, InvalidInput> {
    let field = "url";
    if u.len() > MAX_URL_BYTES {
        return Err(InvalidInput::new(
            "url-too-long",
            field,
            format!("{} bytes, at most {MAX_URL_BYTES}", u.len()),
        ));
    }
    text(field, u, MAX_URL_BYTES, false)?;
    let parsed = url::Url::parse(u)
        .map_err(|e| InvalidInput::new("url-syntax", field, format!("not a URL: {e}")))?;
    if !SCHEMES.contains(&parsed.scheme()) {
        return Err(InvalidInput::new(
            "url-scheme",
            field,
            "the scheme is not http, https or ftp",
        ));
    }
    let host = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => UrlHost::Ip(ip.into()),
        Some(url::Host::Ipv6(ip)) => UrlHost::Ip(ip.into()),
        Some(url::Host::Domain(d)) if !d.is_empty() && d != "." => {
            let d = d.strip_suffix('.').unwrap_or(d).to_owned();
            if d.ends_with(".onion") {
                UrlHost::Onion(d)
            } else {
                UrlHost::Domain(d)
            }
        }
        _ => return Err(InvalidInput::new("url-host", field, "has no host")),
    };
    let flags = match &host {
        UrlHost::Ip(_) => Vec::new(),
        UrlHost::Domain(d) => host_flags(d),
        UrlHost::Onion(_) => vec![ONION_HOST],
    };
    Ok(ValidUrl {
        original: u.to_owned(),
        normalized: parsed.as_str().to_owned(),
        host,
        flags,
    })
}

/// UTS #39 checks on each label of a domain (given as A-labels; decoded to
/// Unicode here, so a punycode label typed as such is checked as well).
pub fn host_flags(ascii_host: &str) -> Vec<&'static str> {
    let (unicode, _) = idna::domain_to_unicode(ascii_host);
    let mut flags = Vec::new();
    for label in unicode.split('.').filter(|l| !l.is_ascii()) {
        if !label.is_single_script() && !flags.contains(&MIXED_SCRIPT_HOST) {
            flags.push(MIXED_SCRIPT_HOST);
        }
        if skeleton(label).all(|c| c.is_ascii()) && !flags.contains(&CONFUSABLE_HOST) {
            flags.push(CONFUSABLE_HOST);
        }
    }
    flags
}

fn hosting_ip(s: &str) -> Result<Option<IpAddr>, InvalidInput> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| {
        InvalidInput::new(
            "bad-hosting-ip",
            "hosting_ip",
            "not an IPv4 or IPv6 address",
        )
    })
}

/// One line of text from a peer or an operator (a reason, a dataset name,
/// a routing step): at most `max` bytes, no control characters (CR/LF
/// included) and no bidirectional controls, so it cannot forge lines or
/// escape sequences where it is printed.
pub fn single_line(field: &str, s: &str, max: usize) -> Result<(), InvalidInput> {
    text(field, s, max, false)
}

/// A report id chosen by an origin: 1-64 of `A-Z a-z 0-9 . _ -`.
pub fn report_id(id: &str) -> Result<(), InvalidInput> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidInput::new(
            "bad-report-id",
            "report_id",
            "1-64 characters of A-Z, a-z, 0-9, '.', '_', '-'",
        ))
    }
}

/// The free-text and hash fields of a report received from a peer, held
/// to the same rules as an analyst's submission.
pub fn peer_fields(notes: &str, hashes: &[MediaHash]) -> Result<(), InvalidInput> {
    text("notes", notes, MAX_NOTES_BYTES, true)?;
    if hashes.len() > MAX_HASHES {
        return Err(InvalidInput::new(
            "too-many-hashes",
            "hashes",
            format!("at most {MAX_HASHES} hashes, got {}", hashes.len()),
        ));
    }
    for (i, h) in hashes.iter().enumerate() {
        media_hash(i, h)?;
    }
    Ok(())
}

pub use crate::identity::shown;

/// The media hash algorithms whose form is known: (name, what a value
/// is). Values of other algorithms are held to the generic rule.
pub const HASH_FORMS: &[(&str, HashForm)] = &[
    ("md5", HashForm::Hex(32)),
    ("sha1", HashForm::Hex(40)),
    ("sha256", HashForm::Hex(64)),
    ("sha512", HashForm::Hex(128)),
    // PDQ: 256 bits as 64 hex digits.
    ("pdq", HashForm::Hex(64)),
    // PhotoDNA: 144 bytes, base64 (192 characters, no padding needed).
    ("photodna", HashForm::Base64(144)),
];

/// What a media hash value of a known algorithm must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashForm {
    /// Exactly this many hex digits (either case).
    Hex(usize),
    /// Standard base64 of exactly this many bytes.
    Base64(usize),
}

fn media_hash(i: usize, h: &MediaHash) -> Result<(), InvalidInput> {
    let field = format!("hashes[{i}]");
    let alg_ok = (1..=16).contains(&h.algorithm.len())
        && h.algorithm
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !alg_ok {
        return Err(InvalidInput::new(
            "bad-hash",
            field,
            "algorithm must be 1-16 of a-z, 0-9, '-'",
        ));
    }
    let known = HASH_FORMS
        .iter()
        .find(|(name, _)| *name == h.algorithm)
        .map(|(_, form)| *form);
    let (ok, expected) = match known {
        Some(HashForm::Hex(n)) => (
            h.value.len() == n && h.value.bytes().all(|b| b.is_ascii_hexdigit()),
            format!("{n} hex digits"),
        ),
        Some(HashForm::Base64(n)) => {
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD.decode(&h.value);
            (
                decoded.is_ok_and(|d| d.len() == n),
                format!("base64 of {n} bytes"),
            )
        }
        None => (
            (1..=MAX_HASH_VALUE).contains(&h.value.len())
                && h.value.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_')
                }),
            format!("1-{MAX_HASH_VALUE} hex or base64 characters"),
        ),
    };
    if !ok {
        return Err(InvalidInput::new(
            "bad-hash",
            field,
            format!("a {} value must be {expected}", h.algorithm),
        ));
    }
    Ok(())
}

/// Refuses control characters (CR and LF included) and bidirectional
/// overrides, which can make evidence read differently from what it is.
/// `multiline` allows `\n` and `\t` (free-text notes).
fn text(field: &str, s: &str, max: usize, multiline: bool) -> Result<(), InvalidInput> {
    if s.len() > max {
        return Err(InvalidInput::new(
            "too-long",
            field,
            format!("{} bytes, at most {max}", s.len()),
        ));
    }
    for c in s.chars() {
        if multiline && (c == '\n' || c == '\t') {
            continue;
        }
        if c == '\r' || c == '\n' {
            return Err(InvalidInput::new("crlf", field, "contains CR or LF"));
        }
        if c.is_control() {
            return Err(InvalidInput::new(
                "control-character",
                field,
                format!("contains control character U+{:04X}", c as u32),
            ));
        }
        if matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
        {
            return Err(InvalidInput::new(
                "bidi-override",
                field,
                format!("contains bidirectional control U+{:04X}", c as u32),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(u: &str) -> &'static str {
        url_host(u).unwrap_err().code
    }

    #[test]
    fn hosts_are_extracted_and_ip_forms_normalised() {
        assert_eq!(
            url_host("http://example.com/a?b=c").unwrap(),
            UrlHost::Domain("example.com".into())
        );
        assert_eq!(
            url_host("https://0x55d68475/x").unwrap(),
            UrlHost::Ip("85.214.132.117".parse().unwrap())
        );
        assert_eq!(
            url_host("http://[2a01:4f8::1]:8080/").unwrap(),
            UrlHost::Ip("2a01:4f8::1".parse().unwrap())
        );
    }

    #[test]
    fn normalised_form_is_kept_beside_the_original() {
        for (given, normalised) in [
            ("HTTP://Example.COM:80/a?b=C", "http://example.com/a?b=C"),
            ("https://example.com:443/", "https://example.com/"),
            ("https://example.com:8443/", "https://example.com:8443/"),
            ("ftp://files.example:21/x", "ftp://files.example/x"),
            ("http://1440121973/", "http://85.214.132.117/"),
            ("http://0x55.0326.0204.0165/", "http://85.214.132.117/"),
            ("http://[2A01:04F8:0:0::1]/", "http://[2a01:4f8::1]/"),
            (
                "http://bücher.example/ü",
                "http://xn--bcher-kva.example/%C3%BC",
            ),
        ] {
            let v = url(given).unwrap();
            assert_eq!(v.original, given);
            assert_eq!(v.normalized, normalised, "{given}");
        }
        assert_eq!(
            url("http://Bücher.Example/").unwrap().host,
            UrlHost::Domain("xn--bcher-kva.example".into())
        );
    }

    #[test]
    fn ftp_is_accepted_other_schemes_are_not() {
        assert!(url("ftp://192.0.2.1/pub/x.zip").is_ok());
        let e = url_host("gopher://x/").unwrap_err();
        assert_eq!(e.code, "url-scheme");
        assert_eq!(e.message, "the scheme is not http, https or ftp");
    }

    fn submission<'a>(urls: &'a [String], hosting_ip: &'a str) -> Submission<'a> {
        Submission {
            urls,
            category: "csam",
            hosting_ip,
            priority: Some(Priority::Bulk),
            notes: "",
            hashes: vec![],
            classification: "",
        }
    }

    /// A refusal names the field and the reason, never the value: a URL
    /// pasted into another field must not reach logs or the audit log.
    #[test]
    fn refusals_never_echo_the_refused_value() {
        let url = "https://secret-host.example/gallery/123".to_owned();
        let urls = vec![url.clone()];
        let refusals = [
            draft(&submission(&urls, &url)).unwrap_err(),
            draft(&Submission {
                category: &url,
                ..submission(&urls, "")
            })
            .unwrap_err(),
            draft(&Submission {
                classification: &url,
                ..submission(&urls, "")
            })
            .unwrap_err(),
            super::super::CaseStatus::parse(&"x".repeat(1 << 20)).unwrap_err(),
        ];
        for e in &refusals {
            let text = e.to_string();
            assert!(!text.contains("secret-host"), "{text}");
            assert!(text.len() < 200, "{} bytes: {text:.80}", text.len());
        }
        assert_eq!(refusals[0].field, "hosting_ip");
        assert_eq!(refusals[0].code, "bad-hosting-ip");
        assert_eq!(refusals[1].field, "category");
        // An identifier is shown only when it has an identifier's shape.
        assert_eq!(shown("DE-ECO"), "\"DE-ECO\"");
        assert_eq!(shown(&url), "(a value of 39 bytes, not shown)");
        assert_eq!(shown("a\x1b[2Jb"), "(a value of 6 bytes, not shown)");
    }

    /// Two submissions that differ in any one field have different
    /// fingerprints (the digest in a refusal's audit entry).
    #[test]
    fn a_refusal_fingerprint_covers_every_field() {
        let urls = vec!["http://192.0.2.1/x".to_owned()];
        let base = submission(&urls, "192.0.2.7");
        let variants = [
            Submission {
                hosting_ip: "192.0.2.8",
                ..base.clone()
            },
            Submission {
                category: "other",
                ..base.clone()
            },
            Submission {
                priority: Some(Priority::Urgent),
                ..base.clone()
            },
            Submission {
                notes: "n",
                ..base.clone()
            },
            Submission {
                classification: "national",
                ..base.clone()
            },
            Submission {
                hashes: vec![MediaHash {
                    algorithm: "md5".into(),
                    value: "0".repeat(32),
                }],
                ..base.clone()
            },
        ];
        let print = base.fingerprint("k1");
        assert_ne!(print, base.fingerprint("k2"));
        for v in &variants {
            assert_ne!(v.fingerprint("k1"), print);
        }
    }

    #[test]
    fn an_unknown_priority_is_refused_not_taken_as_bulk() {
        let urls = vec!["http://192.0.2.1/x".to_owned()];
        let e = draft(&Submission {
            priority: None,
            ..submission(&urls, "")
        })
        .unwrap_err();
        assert_eq!((e.code, e.field.as_str()), ("bad-priority", "priority"));
    }

    /// Known algorithms are held to their form; others to the generic rule.
    #[test]
    fn media_hashes_are_checked_per_algorithm() {
        let hash = |algorithm: &str, value: &str| MediaHash {
            algorithm: algorithm.into(),
            value: value.into(),
        };
        let good = [
            hash("sha256", &"aB".repeat(32)),
            hash("md5", &"0".repeat(32)),
            hash("sha1", &"f".repeat(40)),
            hash("pdq", &"9".repeat(64)),
            hash("photodna", &"A".repeat(192)),
            hash("some-other", "abc+/="),
        ];
        for h in &good {
            assert!(media_hash(0, h).is_ok(), "{h:?}");
        }
        let bad = [
            hash("sha256", "abc"),
            hash("sha256", &"g".repeat(64)),
            hash("md5", &"0".repeat(31)),
            hash("pdq", &"0".repeat(63)),
            hash("photodna", &"A".repeat(190)),
            hash("SHA256", &"0".repeat(64)),
        ];
        for h in &bad {
            let e = media_hash(3, h).unwrap_err();
            assert_eq!(
                (e.code, e.field.as_str()),
                ("bad-hash", "hashes[3]"),
                "{h:?}"
            );
        }
    }

    #[test]
    fn onion_hosts_are_recognised() {
        let v = url("http://Expyuzz4wqqyqhjn.onion./x").unwrap();
        assert_eq!(v.host, UrlHost::Onion("expyuzz4wqqyqhjn.onion".into()));
        assert_eq!(v.flags, vec![ONION_HOST]);
        assert!(matches!(
            url_host("http://onion.example/").unwrap(),
            UrlHost::Domain(_)
        ));
    }

    #[test]
    fn deceptive_hosts_are_flagged_not_refused() {
        let flags = |u: &str| url(u).unwrap().flags;
        // Cyrillic "а" (U+0430) in an otherwise Latin label.
        assert_eq!(
            flags("http://p\u{0430}ypal.com/"),
            vec![MIXED_SCRIPT_HOST, CONFUSABLE_HOST]
        );
        // All Cyrillic, but it reads as Latin "paypal": whole-script confusable.
        assert_eq!(
            flags("http://\u{0440}\u{0430}\u{0443}\u{0440}\u{0430}l.com/"),
            vec![MIXED_SCRIPT_HOST, CONFUSABLE_HOST]
        );
        assert_eq!(
            flags("http://\u{0440}\u{0430}\u{0443}\u{0440}\u{0430}\u{04cf}.com/"),
            vec![CONFUSABLE_HOST]
        );
        // The same, typed as punycode, is decoded and flagged.
        let puny = url("http://p\u{0430}ypal.com/").unwrap().normalized;
        assert_eq!(flags(&puny), vec![MIXED_SCRIPT_HOST, CONFUSABLE_HOST]);
        // Honest IDNs are not flagged.
        assert!(flags("http://пример.рф/").is_empty());
        assert!(flags("http://bücher.example/").is_empty());
        assert!(flags("http://example.com/").is_empty());
    }

    #[test]
    fn bad_urls_get_precise_reasons() {
        assert_eq!(code("ftp2://x/"), "url-scheme");
        assert_eq!(code("gopher://x/"), "url-scheme");
        assert_eq!(code("file:///etc/passwd"), "url-scheme");
        assert_eq!(code("javascript:alert(1)"), "url-scheme");
        assert_eq!(code("http://a/\r\nInjected: 1"), "crlf");
        assert_eq!(code("http://a/\u{7}"), "control-character");
        assert_eq!(code("http://a/\u{202E}gpj.exe"), "bidi-override");
        assert_eq!(code("not a url"), "url-syntax");
        assert_eq!(code("nourl"), "url-syntax");
        let long = format!("http://a/{}", "x".repeat(MAX_URL_BYTES));
        assert_eq!(code(&long), "url-too-long");
    }

    #[test]
    fn sql_looking_and_unicode_urls_are_accepted_verbatim() {
        let u = "http://example.com/?q=1';DROP TABLE reports;--".to_string();
        assert!(url_host(&u).is_ok());
        assert!(url_host("http://пример.рф/").is_ok());
    }

    #[test]
    fn url_counts_are_bounded() {
        assert_eq!(urls(&[]).unwrap_err().code, "no-url");
        let many = vec!["http://a/".to_string(); MAX_URLS + 1];
        assert_eq!(urls(&many).unwrap_err().code, "too-many-urls");
        let err = urls(&["http://a/".into(), "gopher://b/".into()]).unwrap_err();
        assert_eq!(err.field, "urls[1]");
    }
}
