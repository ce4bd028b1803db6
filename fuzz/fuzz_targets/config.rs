//! The configuration parsers on arbitrary text: `node.toml` into
//! `RawNodeConfig`, and `directory.toml` into `RawDirectory` and then the
//! validated `Directory` (keys, ids, countries, times). Never panics.

#![no_main]

use alertrelay::config::RawNodeConfig;
use alertrelay::directory::{Directory, RawDirectory};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = toml::from_str::<RawNodeConfig>(text);
    if let Ok(raw) = toml::from_str::<RawDirectory>(text) {
        let _ = Directory::from_raw(raw, "fuzz");
    }
});
