//! Tests of the source list: each reader on real or published test files,
//! the order of sources, disagreement, unknown codes, load errors.

use std::io::Write;

use super::*;

fn data(file: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data")).join(file)
}

fn spec(kind: SourceKind, name: &str, paths: Vec<PathBuf>) -> SourceSpec {
    SourceSpec {
        kind,
        name: Some(name.into()),
        paths,
        date: None,
    }
}

fn shipped() -> SourceSpec {
    SourceSpec {
        kind: SourceKind::Shipped,
        name: None,
        paths: vec![],
        date: None,
    }
}

fn one(kind: SourceKind, file: &str) -> Sources {
    Sources::load(&[spec(kind, file, vec![data(file)])]).unwrap()
}

fn country(s: &Sources, ip: &str) -> Option<String> {
    s.lookup(ip.parse().unwrap()).country().map(str::to_owned)
}

fn asn(s: &Sources, ip: &str) -> Option<(u32, String)> {
    s.lookup(ip.parse().unwrap())
        .network()
        .map(|(n, _)| (n.asn, n.org.clone()))
}

/// Writes `text` into a temporary file, gzipped when `gz`.
fn temp_file(dir: &tempfile::TempDir, name: &str, text: &str, gz: bool) -> PathBuf {
    let path = dir.path().join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    if gz {
        let mut z = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        z.write_all(text.as_bytes()).unwrap();
        z.finish().unwrap();
    } else {
        f.write_all(text.as_bytes()).unwrap();
    }
    path
}

#[test]
fn maxmind_country_schema() {
    // MaxMind's published test database (GeoIP2 `country.iso_code`).
    let s = one(SourceKind::Mmdb, "GeoIP2-Country-Test.mmdb");
    assert_eq!(country(&s, "2.125.160.216").as_deref(), Some("GB"));
    assert_eq!(country(&s, "89.160.20.112").as_deref(), Some("SE"));
    assert_eq!(country(&s, "10.0.0.1"), None);
    let h = s.lookup("2.125.160.216".parse().unwrap());
    let a = h.country_answer().unwrap();
    assert_eq!(
        (a.source.as_str(), a.method),
        ("GeoIP2-Country-Test.mmdb", "mmdb-lookup")
    );
    // The file's build_epoch gives the date.
    assert!(
        a.dataset_date.starts_with("20") && a.dataset_date.len() == 10,
        "{a:?}"
    );
    assert!(
        h.networks.is_empty(),
        "a country file answers no network question"
    );
    let info = s.describe();
    assert_eq!((info[0].country, info[0].network), (true, false));
}

#[test]
fn maxmind_asn_schema() {
    let s = one(SourceKind::Mmdb, "GeoLite2-ASN-Test.mmdb");
    // 1.128.0.0/11 → AS1221: its first and last address, and the next one.
    assert_eq!(asn(&s, "1.128.0.0"), Some((1221, "Telstra Pty Ltd".into())));
    assert_eq!(asn(&s, "1.159.255.255").map(|a| a.0), Some(1221));
    assert_ne!(asn(&s, "1.160.0.0").map(|a| a.0), Some(1221));
    let h = s.lookup("1.128.0.0".parse().unwrap());
    assert!(
        h.countries.is_empty(),
        "an ASN file answers no country question"
    );
    assert_eq!(h.country(), None);
}

#[test]
fn combined_schema_and_anycast_marked_by_the_source() {
    // IPFire's sample MMDB carries both country and AS.
    let s = one(SourceKind::Mmdb, "ipfire-sample.mmdb");
    assert_eq!(country(&s, "1.0.4.1").as_deref(), Some("AU"));
    assert_eq!(asn(&s, "1.0.4.1").map(|a| a.0), Some(38803));
    // 1.1.1.0/24 is Cloudflare: on the documented anycast/CDN list.
    let h = s.lookup("1.1.1.1".parse().unwrap());
    assert_eq!(
        h.country(),
        Some("AU"),
        "the dataset's answer is still given"
    );
    let amb = h.ambiguity.expect("anycast");
    assert!(
        amb.starts_with(ANYCAST_NOTE) && amb.contains("(AS13335, Cloudflare)"),
        "{amb}"
    );
    // MaxMind's test data marks 214.1.1.0/24 `traits.is_anycast` (and
    // names no country for it).
    let s = one(SourceKind::Mmdb, "GeoIP2-Country-Test.mmdb");
    let h = s.lookup("214.1.1.1".parse().unwrap());
    assert_eq!(h.country(), None);
    assert_eq!(h.marked_anycast_by, vec!["GeoIP2-Country-Test.mmdb"]);
    let amb = h.ambiguity.expect("marked anycast");
    assert!(
        amb.ends_with("(marked anycast by GeoIP2-Country-Test.mmdb)"),
        "{amb}"
    );
    assert_eq!(s.lookup("214.1.2.1".parse().unwrap()).ambiguity, None);
}

#[test]
fn the_first_source_that_knows_decides_and_disagreement_is_said() {
    // MaxMind's test data places 67.43.156.1 in BT; IPFire in US.
    let mm = spec(
        SourceKind::Mmdb,
        "maxmind-test",
        vec![data("GeoIP2-Country-Test.mmdb")],
    );
    let s = Sources::load(&[mm.clone(), shipped()]).unwrap();
    let h = s.lookup("67.43.156.1".parse().unwrap());
    assert_eq!(h.country(), Some("BT"));
    assert_eq!(h.followed, Some(0));
    assert!(h.disagree);
    assert_eq!(h.named_countries(), vec!["BT", "US"]);
    let raw: Vec<_> = h
        .countries
        .iter()
        .map(|a| (a.source.as_str(), a.raw_code.as_str()))
        .collect();
    assert_eq!(
        raw,
        vec![
            ("maxmind-test", "BT"),
            ("ipfire-location (tor-geoip)", "US")
        ]
    );
    // The other order, the other answer.
    let s = Sources::load(&[shipped(), mm]).unwrap();
    assert_eq!(country(&s, "67.43.156.1").as_deref(), Some("US"));
    // A source that does not know is passed over: 1.128.0.1 is not in the
    // MaxMind country test file, IPFire says AU; nobody disagrees.
    let h = s.lookup("1.128.0.1".parse().unwrap());
    assert_eq!(
        (h.country(), h.followed, h.disagree),
        (Some("AU"), Some(0), false)
    );
}

#[test]
fn registration_and_geolocation_disagree_on_real_data() {
    // NRO registration (ip-location-db asn-country sample): 51.15.0.0/16 is
    // registered in FR; IPFire geolocates it in NL.
    let nro = spec(
        SourceKind::Csv,
        "nro",
        vec![data("nro-asn-country-sample.csv")],
    );
    let s = Sources::load(&[nro, shipped()]).unwrap();
    let h = s.lookup("51.15.0.1".parse().unwrap());
    assert_eq!(h.named_countries(), vec!["FR", "NL"]);
    assert_eq!(h.country(), Some("FR"));
    assert!(h.disagree);
    // The ASN sample names the same network as the shipped ASN data.
    let rv = spec(
        SourceKind::AsnCsv,
        "rv",
        vec![data("routeviews-dbip-asn-sample.csv")],
    );
    let s = Sources::load(&[rv, shipped()]).unwrap();
    let h = s.lookup("1.0.4.1".parse().unwrap());
    let asns: Vec<_> = h
        .networks
        .iter()
        .map(|a| a.network.as_ref().map(|n| n.asn))
        .collect();
    assert_eq!(asns, vec![Some(38803), Some(38803)]);
    assert_eq!(h.network().map(|(_, a)| a.source.as_str()), Some("rv"));
}

#[test]
fn range_files_gz_or_plain_with_unknown_codes_and_dates() {
    let dir = tempfile::tempdir().unwrap();
    let v4 = temp_file(
        &dir,
        "geoip.gz",
        "# Generated: Mon, 02 Nov 2026 10:00:00 GMT\n16777216,16777471,de\n16777472,16777727,EU\n16777728,16777983,ZZ\n",
        true,
    );
    let v6 = temp_file(
        &dir,
        "geoip6",
        "2001:db8::,2001:db8::ffff,??\n2001:db8:1::,2001:db8:1::ffff,NL\n",
        false,
    );
    let s = Sources::load(&[spec(SourceKind::TorGeoip, "tor", vec![v4, v6])]).unwrap();
    let h = s.lookup("1.0.0.9".parse().unwrap());
    let a = h.country_answer().unwrap();
    assert_eq!(
        (a.country.as_deref(), a.raw_code.as_str()),
        (Some("DE"), "de")
    );
    assert_eq!(a.dataset_date, "2026-11-02");
    for (ip, raw) in [
        ("1.0.1.1", "EU"),
        ("1.0.2.1", "ZZ"),
        ("2001:db8::1", "??"),
        ("1.0.3.1", ""),
    ] {
        let h = s.lookup(ip.parse().unwrap());
        assert_eq!(
            (h.country(), h.countries[0].raw_code.as_str()),
            (None, raw),
            "{ip}"
        );
    }
    assert_eq!(country(&s, "2001:db8:1::5").as_deref(), Some("NL"));

    // ip-location-db CSV with a header, both versions in one file, and a
    // configured date.
    let csv = temp_file(
        &dir,
        "c.csv",
        "ip_range_start,ip_range_end,country_code\n1.0.0.0,1.0.0.255,JP\n2001:db8::,2001:db8::ff,CH\n",
        false,
    );
    let mut sp = spec(SourceKind::Csv, "dbip-lite", vec![csv]);
    sp.date = Some("2026-11-01".into());
    let s = Sources::load(&[sp]).unwrap();
    let h = s.lookup("1.0.0.0".parse().unwrap());
    assert_eq!(h.country(), Some("JP"));
    assert_eq!(h.countries[0].dataset_date, "2026-11-01");
    assert_eq!(country(&s, "2001:db8::ff").as_deref(), Some("CH"));
}

#[test]
fn rir_delegated_files() {
    let dir = tempfile::tempdir().unwrap();
    let f = temp_file(
        &dir,
        "delegated-ripencc-extended-latest",
        "2|ripencc|1|3|19830705|20261127|+0100\nripencc|*|ipv4|*|2|summary\n\
         ripencc|NL|ipv4|5.10.0.0|768|20120101|allocated|x\n\
         ripencc|FR|ipv4|2.0.0.0|1048576|20100712|allocated|y\n\
         ripencc|CH|ipv6|2001:620::|29|19970101|allocated|z\n",
        false,
    );
    let s = Sources::load(&[spec(SourceKind::RirDelegated, "ripe", vec![f])]).unwrap();
    let h = s.lookup("5.10.2.255".parse().unwrap());
    let a = h.country_answer().unwrap();
    assert_eq!(
        (a.country.as_deref(), a.method, a.dataset_date.as_str()),
        (Some("NL"), "rir-registration", "2026-11-27")
    );
    assert_eq!(country(&s, "5.10.3.0"), None, "768 addresses, not a /22");
    assert_eq!(country(&s, "2001:627:ffff::1").as_deref(), Some("CH"));
}

#[test]
fn load_errors_name_the_source_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.mmdb");
    let (i, e) =
        Sources::load(&[shipped(), spec(SourceKind::Mmdb, "m", vec![missing])]).unwrap_err();
    assert_eq!(i, 1);
    assert!(
        matches!(e, GeoError::Io { .. }) && e.to_string().contains("missing.mmdb"),
        "{e}"
    );
    let not_mmdb = temp_file(&dir, "x.mmdb", "1,2,DE\n", false);
    let (_, e) = Sources::load(&[spec(SourceKind::Mmdb, "m", vec![not_mmdb])]).unwrap_err();
    assert!(matches!(e, GeoError::Mmdb { .. }), "{e}");
    let bad = temp_file(
        &dir,
        "bad.csv",
        "1.0.0.0,1.0.0.255,DE\n1.0.0.9,1.0.1.0,FR\n",
        false,
    );
    let (_, e) = Sources::load(&[spec(SourceKind::Csv, "c", vec![bad])]).unwrap_err();
    assert!(e.to_string().contains("bad.csv:2:"), "{e}");
    let (_, e) = Sources::load(&[SourceSpec {
        paths: vec![data("x")],
        ..shipped()
    }])
    .unwrap_err();
    assert!(matches!(e, GeoError::Paths { .. }), "{e}");
    let (_, e) = Sources::load(&[spec(SourceKind::Mmdb, "m", vec![])]).unwrap_err();
    assert!(matches!(e, GeoError::Paths { .. }), "{e}");
}

#[test]
fn lookups_are_microseconds() {
    let s = Sources::load(&[
        spec(
            SourceKind::Mmdb,
            "mm",
            vec![data("GeoIP2-Country-Test.mmdb")],
        ),
        shipped(),
    ])
    .unwrap();
    let ips: Vec<IpAddr> = ["85.214.132.117", "2a01:4f8::1", "67.43.156.1", "10.0.0.1"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    s.lookup(ips[0]); // parse the shipped data outside the timing
    let t = std::time::Instant::now();
    for _ in 0..500 {
        for ip in &ips {
            std::hint::black_box(s.lookup(*ip));
        }
    }
    let per = t.elapsed() / 2000;
    // Unoptimised test build, shared machine: a generous bound.
    assert!(per.as_micros() < 200, "lookup took {per:?}");
}
