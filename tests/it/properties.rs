//! Property tests over the parsers that face untrusted bytes, driven by a
//! seeded `StdRng` (no extra dependencies, reproducible: a failure prints
//! its seed and case number, and `ALERTRELAY_PROPTEST_SEED=<n>` replays it).
//!
//! - `wire::open_envelope` never panics on random bytes or on
//!   random mutations of valid envelopes, and never accepts anything whose
//!   signed content differs from what the origin signed.
//! - `report::validate::url_host` never panics, and never accepts a string
//!   containing CR, LF, NUL or a bidirectional control, or a scheme outside
//!   `validate::SCHEMES`.
//! - The configuration and directory parsers never panic on mutated files.
//!
//! The fuzz targets in `fuzz/` explore the same functions with coverage
//! guidance; these run on every `cargo test`.

use std::panic::{AssertUnwindSafe, catch_unwind};

use alertrelay::crypto::signing::{NodeKey, Purpose, encode_public_key};
use alertrelay::directory::{Directory, RawDirectory};
use alertrelay::identity::NodeId;
use alertrelay::pb;
use alertrelay::wire;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The seed of every property, unless `ALERTRELAY_PROPTEST_SEED` says
/// otherwise.
fn seed() -> u64 {
    std::env::var("ALERTRELAY_PROPTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_a1e7)
}

/// Runs `cases` cases of `check`, each with its own RNG derived from the
/// seed, and turns a panic into a failure that names the case to replay.
fn property(name: &str, cases: u64, mut check: impl FnMut(&mut StdRng)) {
    let seed = seed();
    for case in 0..cases {
        let mut rng = StdRng::seed_from_u64(seed ^ case.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| check(&mut rng))) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("property {name} failed at seed {seed}, case {case}: {msg}");
        }
    }
}

fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let n = rng.gen_range(0..=max);
    (0..n).map(|_| rng.r#gen()).collect()
}

/// One random structural mutation: bit flip, byte set, insert, delete,
/// truncate, duplicate a slice, or splice in random bytes.
fn mutate(rng: &mut StdRng, bytes: &mut Vec<u8>) {
    let len = bytes.len();
    match rng.gen_range(0..7) {
        0 if len > 0 => {
            let i = rng.gen_range(0..len);
            bytes[i] ^= 1 << rng.gen_range(0..8);
        }
        1 if len > 0 => {
            let i = rng.gen_range(0..len);
            bytes[i] = [0x00, 0x01, 0x7f, 0x80, 0xff, rng.r#gen()][rng.gen_range(0..6)];
        }
        2 => {
            let i = rng.gen_range(0..=len);
            bytes.insert(i, rng.r#gen());
        }
        3 if len > 0 => {
            let i = rng.gen_range(0..len);
            bytes.remove(i);
        }
        4 if len > 0 => {
            bytes.truncate(rng.gen_range(0..len));
        }
        5 if len > 0 => {
            let a = rng.gen_range(0..len);
            let b = rng.gen_range(a..=len.min(a + 16));
            let piece = bytes[a..b].to_vec();
            let at = rng.gen_range(0..=bytes.len());
            bytes.splice(at..at, piece);
        }
        _ => {
            let at = rng.gen_range(0..=len);
            let junk = random_bytes(rng, 8);
            bytes.splice(at..at, junk);
        }
    }
}

// ---------------------------------------------------------------------------
// Envelopes.
// ---------------------------------------------------------------------------

struct Fixture {
    directory: Directory,
    keys: Vec<(NodeId, NodeKey)>,
    me: NodeId,
}

/// Three nodes AA (origin), BB (relay), CC (the receiver), one key each.
/// The directory is built from TOML so the test does not depend on the
/// exact fields of `RawKey`.
fn fixture() -> Fixture {
    let keys: Vec<(NodeId, NodeKey)> = ["AA", "BB", "CC"]
        .iter()
        .map(|id| (NodeId::new(id).unwrap(), NodeKey::generate()))
        .collect();
    let mut text = String::from("federation = \"prop\"\n");
    for (id, key) in &keys {
        text.push_str(&format!(
            "[[node]]\nid = \"{id}\"\nendpoint = \"https://127.0.0.1:1\"\n\
             [[node.key]]\nid = \"{}\"\npublic_key = \"{}\"\n",
            key.key_id(),
            encode_public_key(&key.verifying_key())
        ));
    }
    let raw: RawDirectory = toml::from_str(&text).unwrap();
    Fixture {
        directory: Directory::from_raw(raw, "prop").unwrap(),
        me: NodeId::new("CC").unwrap(),
        keys,
    }
}

fn payload(rng: &mut StdRng) -> pb::ReportPayload {
    let n = rng.gen_range(1..4);
    pb::ReportPayload {
        report_id: format!("r-{}", rng.r#gen::<u32>()),
        origin: "AA".into(),
        created_at_ms: 1_700_000_000_000 + rng.gen_range(0..1_000_000),
        urls: (0..n)
            .map(|i| format!("https://example.com/{i}/{}", rng.r#gen::<u16>()))
            .collect(),
        category: "csam".into(),
        hosting: Some(pb::HostingEvidence {
            ip: "85.214.132.117".into(),
            country: "DE".into(),
            ..Default::default()
        }),
        hashes: vec![pb::MediaHash {
            algorithm: "sha256".into(),
            value: "ab".repeat(32),
        }],
        priority: pb::Priority::Bulk as i32,
        notes: if rng.gen_bool(0.5) {
            "seen twice\nsame host".into()
        } else {
            String::new()
        },
        route: Some(pb::RouteDecision {
            kind: "peer".into(),
            destinations: vec!["CC".into()],
            ..Default::default()
        }),
        classification: String::new(),
    }
}

/// A valid envelope from AA to CC, direct or relayed by BB, and the node
/// that sends it.
fn valid_envelope(f: &Fixture, rng: &mut StdRng) -> (pb::Envelope, NodeId) {
    let (aa, ka) = &f.keys[0];
    let (bb, kb) = &f.keys[1];
    let p = payload(rng);
    let signed = wire::sign(ka, aa, Purpose::Report, &p);
    if rng.gen_bool(0.5) {
        return (
            pb::Envelope {
                report: Some(signed),
                hops: vec![],
            },
            aa.clone(),
        );
    }
    let hop = pb::Hop {
        report_id: p.report_id.clone(),
        origin: "AA".into(),
        report_digest: wire::digest(&signed.payload).to_vec(),
        from: "AA".into(),
        by: "BB".into(),
        to: "CC".into(),
        at_ms: p.created_at_ms + 1,
        ..Default::default()
    };
    (
        pb::Envelope {
            report: Some(signed),
            hops: vec![wire::sign(kb, bb, Purpose::Hop, &hop)],
        },
        bb.clone(),
    )
}

#[test]
fn valid_envelopes_open() {
    // The control for the properties below: without mutation, everything
    // opens.
    let f = fixture();
    property("valid envelopes open", 200, |rng| {
        let (env, sender) = valid_envelope(&f, rng);
        let bytes = env.encode_to_vec();
        let decoded = pb::Envelope::decode(bytes.as_slice()).unwrap();
        wire::open_envelope(&decoded, &sender, &f.me, &f.directory, 0).unwrap();
    });
}

#[test]
fn random_bytes_never_panic_and_never_open() {
    let f = fixture();
    let senders: Vec<NodeId> = f.keys.iter().map(|(id, _)| id.clone()).collect();
    property("random bytes", 20_000, |rng| {
        let bytes = random_bytes(rng, 512);
        if let Ok(env) = pb::Envelope::decode(bytes.as_slice()) {
            for s in &senders {
                assert!(
                    wire::open_envelope(&env, s, &f.me, &f.directory, 0).is_err(),
                    "random bytes opened: {bytes:?}"
                );
            }
        }
    });
}

#[test]
fn mutated_envelopes_never_panic_and_open_only_with_the_signed_bytes_unchanged() {
    let f = fixture();
    let (mut decoded_after_mutation, mut opened_after_mutation) = (0u32, 0u32);
    property("mutated envelopes", 20_000, |rng| {
        let (env, sender) = valid_envelope(&f, rng);
        let original = env.report.clone().unwrap();
        let mut bytes = env.encode_to_vec();
        for _ in 0..rng.gen_range(1..=4) {
            mutate(rng, &mut bytes);
        }
        let Ok(decoded) = pb::Envelope::decode(bytes.as_slice()) else {
            return;
        };
        decoded_after_mutation += 1;
        for s in [&sender, &f.keys[2].0] {
            if let Ok(opened) = wire::open_envelope(&decoded, s, &f.me, &f.directory, 0) {
                // Whatever the mutation touched, it was not what the origin
                // signed: the same exact bytes, by the same origin.
                assert_eq!(
                    opened.payload_bytes, original.payload,
                    "signed bytes changed"
                );
                assert_eq!(opened.origin.as_str(), original.signer);
                assert_eq!(&opened.origin, &f.keys[0].0);
                opened_after_mutation += 1;
            }
        }
    });
    // Not vacuous: a good share of the mutants still decode and reach the
    // signature checks. Mutations that only touch what is not signed (an
    // unknown field in the envelope, a field prost skips) may still open;
    // most do not.
    assert!(decoded_after_mutation > 1_000, "{decoded_after_mutation}");
    assert!(
        opened_after_mutation < 20_000 / 10,
        "{opened_after_mutation}"
    );
}

#[test]
fn mutated_signed_fields_never_verify() {
    // Field by field, on the decoded message: any change to the payload,
    // the signature, the signer or the key id is refused.
    let f = fixture();
    property("mutated signed fields", 5_000, |rng| {
        let (env, sender) = valid_envelope(&f, rng);
        let mut bad = env.clone();
        let s = bad.report.as_mut().unwrap();
        match rng.gen_range(0..4) {
            0 => mutate(rng, &mut s.payload),
            1 => mutate(rng, &mut s.signature),
            2 => s.signer = ["BB", "CC", "ZZ", "", "aa"][rng.gen_range(0..5)].into(),
            _ => {
                let mut k = s.key_id.clone().into_bytes();
                mutate(rng, &mut k);
                s.key_id = String::from_utf8_lossy(&k).into_owned();
            }
        }
        if bad == env {
            return;
        }
        assert!(
            wire::open_envelope(&bad, &sender, &f.me, &f.directory, 0).is_err(),
            "a mutated signed field opened"
        );
        if !env.hops.is_empty() {
            let mut bad = env.clone();
            let h = &mut bad.hops[0];
            if rng.gen_bool(0.5) {
                mutate(rng, &mut h.payload);
            } else {
                mutate(rng, &mut h.signature);
            }
            if bad != env {
                assert!(
                    wire::open_envelope(&bad, &sender, &f.me, &f.directory, 0).is_err(),
                    "a mutated hop opened"
                );
            }
        }
    });
}

// ---------------------------------------------------------------------------
// URLs.
// ---------------------------------------------------------------------------

const FORBIDDEN: &[char] = &[
    '\r', '\n', '\0', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}',
    '\u{2067}', '\u{2068}', '\u{2069}', '\u{200E}', '\u{200F}', '\u{061C}',
];

/// Characters URLs are made of, plus the ones that break them.
const ALPHABET: &[char] = &[
    'h', 't', 'p', 's', ':', '/', '/', 'a', 'b', 'x', '1', '9', '.', '-', '_', '~', '?', '#', '=',
    '&', '%', '@', '[', ']', '+', ' ', '\'', '"', '\\', '<', '>', '\t', '\u{7f}', '\u{85}',
    '\u{1b}', 'é', 'а', 'ß', '中', '\u{fffd}', '\u{feff}', '\u{200b}',
];

fn random_string(rng: &mut StdRng, max: usize) -> String {
    let n = rng.gen_range(0..=max);
    (0..n)
        .map(|_| match rng.gen_range(0..10) {
            0 => FORBIDDEN[rng.gen_range(0..FORBIDDEN.len())],
            1 => char::from_u32(rng.gen_range(0..0x11_0000)).unwrap_or('x'),
            _ => ALPHABET[rng.gen_range(0..ALPHABET.len())],
        })
        .collect()
}

fn seeds() -> Vec<String> {
    vec![
        "http://85.214.132.117/x".into(),
        "https://example.com/a/b?c=d#e".into(),
        "http://[2a01:4f8::1]:8080/".into(),
        "https://0x55d68475/x".into(),
        "http://xn--pple-43d.com/".into(),
        "http://user:pass@host.example:1/".into(),
        format!("https://example.com/{}", "x".repeat(8_000)),
    ]
}

fn check_url(u: &str) {
    if alertrelay::report::validate::url_host(u).is_ok() {
        assert!(
            !u.chars().any(|c| FORBIDDEN.contains(&c)),
            "accepted a forbidden character: {u:?}"
        );
        assert!(u.len() <= alertrelay::report::validate::MAX_URL_BYTES);
        let scheme = url::Url::parse(u).map(|p| p.scheme().to_owned());
        assert!(
            scheme.is_ok_and(|s| alertrelay::report::validate::SCHEMES.contains(&s.as_str())),
            "accepted a URL of another scheme: {u:?}"
        );
    }
}

#[test]
fn the_url_validator_never_panics_and_never_accepts_cr_lf_nul_or_bidi() {
    property("random URLs", 20_000, |rng| {
        let s = random_string(rng, 64);
        check_url(&s);
        check_url(&format!("http://{s}"));
        check_url(&format!("https://example.com/{s}"));
    });
}

#[test]
fn a_forbidden_character_anywhere_in_a_valid_url_is_refused() {
    property("forbidden in valid URLs", 10_000, |rng| {
        let seeds = seeds();
        let base = &seeds[rng.gen_range(0..seeds.len())];
        assert!(
            alertrelay::report::validate::url_host(base).is_ok(),
            "{base}"
        );
        let mut chars: Vec<char> = base.chars().collect();
        let at = rng.gen_range(0..=chars.len());
        chars.insert(at, FORBIDDEN[rng.gen_range(0..FORBIDDEN.len())]);
        let s: String = chars.into_iter().collect();
        assert!(
            alertrelay::report::validate::url_host(&s).is_err(),
            "accepted {s:?}"
        );
    });
}

#[test]
fn mutated_valid_urls_never_panic() {
    property("mutated URLs", 20_000, |rng| {
        let seeds = seeds();
        let mut bytes = seeds[rng.gen_range(0..seeds.len())].clone().into_bytes();
        for _ in 0..rng.gen_range(1..=6) {
            mutate(rng, &mut bytes);
        }
        check_url(&String::from_utf8_lossy(&bytes));
    });
}

// ---------------------------------------------------------------------------
// Configuration files.
// ---------------------------------------------------------------------------

/// A provisioned federation's `node.toml` and `directory.toml`, as written
/// by `federation init`.
fn provisioned() -> (tempfile::TempDir, std::path::PathBuf, String, String) {
    let files =
        crate::common::Federation::builder(&[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])]).provision();
    let config = files.configs[0].clone();
    let node = std::fs::read_to_string(&config).unwrap();
    let directory =
        std::fs::read_to_string(config.parent().unwrap().join("directory.toml")).unwrap();
    (files.dir, config, node, directory)
}

/// Text-level mutations that keep TOML almost-valid: bytes, and tokens
/// that matter to TOML and to the config's own checks.
fn mutate_text(rng: &mut StdRng, text: &str) -> String {
    const TOKENS: &[&str] = &[
        "=",
        "\"",
        "'",
        "[",
        "]",
        "[[",
        "]]",
        "\n",
        "#",
        ",",
        "{",
        "}",
        ".",
        "0",
        "-1",
        "18446744073709551616",
        "1e309",
        "nan",
        "inf",
        "true",
        "\"\"",
        "\"\\u0000\"",
        "\"../../etc/passwd\"",
        "\"0.0.0.0:0\"",
        "[tls]",
        "[[node]]",
        "x = 1",
        "\u{0}",
        "\u{202e}",
        "é",
    ];
    let mut s = text.to_owned();
    for _ in 0..rng.gen_range(1..=5) {
        let mut at = rng.gen_range(0..=s.len());
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        match rng.gen_range(0..4) {
            0 => s.insert_str(at, TOKENS[rng.gen_range(0..TOKENS.len())]),
            1 => {
                let mut end = (at + rng.gen_range(1..12)).min(s.len());
                while !s.is_char_boundary(end) {
                    end += 1;
                }
                s.replace_range(at..end, "");
            }
            2 => {
                let mut end = (at + rng.gen_range(1..6)).min(s.len());
                while !s.is_char_boundary(end) {
                    end += 1;
                }
                s.replace_range(at..end, TOKENS[rng.gen_range(0..TOKENS.len())]);
            }
            _ => {
                let mut bytes = s.into_bytes();
                mutate(rng, &mut bytes);
                s = String::from_utf8_lossy(&bytes).into_owned();
            }
        }
    }
    s
}

#[test]
fn the_config_parser_never_panics_on_mutated_configs() {
    let (_dir, path, node, directory) = provisioned();
    // The untouched files load: the control.
    alertrelay::config::NodeConfig::load(&path).unwrap();
    let mut parsed = 0u32;
    property("mutated node.toml", 10_000, |rng| {
        let text = mutate_text(rng, &node);
        if toml::from_str::<alertrelay::config::RawNodeConfig>(&text).is_ok() {
            parsed += 1;
        }
        let _ = toml::from_str::<RawDirectory>(&mutate_text(rng, &directory))
            .map(|raw| Directory::from_raw(raw, "prop"));
    });
    assert!(parsed > 0, "some mutations keep the config valid");
}

#[test]
fn validating_mutated_configs_never_panics() {
    // Through the whole loader (paths, the directory, every check), on
    // files a mistaken or hostile edit produced.
    let (dir, path, node, directory) = provisioned();
    let dir_path = path.parent().unwrap().join("directory.toml");
    property("mutated configs, loaded", 1_500, |rng| {
        if rng.gen_bool(0.5) {
            std::fs::write(&path, mutate_text(rng, &node)).unwrap();
            std::fs::write(&dir_path, &directory).unwrap();
        } else {
            std::fs::write(&path, &node).unwrap();
            std::fs::write(&dir_path, mutate_text(rng, &directory)).unwrap();
        }
        let _ = alertrelay::config::NodeConfig::load(&path);
    });
    drop(dir);
}
