//! `report::validate::url_host`: never panics, and never accepts a URL
//! with CR, LF, NUL or a bidirectional control, or one over 8 KiB, or one
//! whose scheme is not in `validate::SCHEMES` (http, https, ftp).

#![no_main]

use alertrelay::report::validate::{MAX_URL_BYTES, SCHEMES, url_host};
use libfuzzer_sys::fuzz_target;

const FORBIDDEN: &[char] = &[
    '\r', '\n', '\0', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}',
    '\u{2067}', '\u{2068}', '\u{2069}', '\u{200E}', '\u{200F}', '\u{061C}',
];

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for candidate in [
        s.to_owned(),
        format!("http://{s}"),
        format!("https://a.example/{s}"),
    ] {
        if url_host(&candidate).is_ok() {
            assert!(
                !candidate.chars().any(|c| FORBIDDEN.contains(&c)),
                "{candidate:?}"
            );
            assert!(candidate.len() <= MAX_URL_BYTES);
            let scheme = url::Url::parse(&candidate).map(|u| u.scheme().to_owned());
            assert!(
                scheme.is_ok_and(|s| SCHEMES.contains(&s.as_str())),
                "{candidate:?}"
            );
        }
    }
});
