//! Tests of the shipped data: real answers checked against the raw files.

use super::country::parse_generated;
use super::*;
use std::io::Cursor;
use std::time::Instant;

fn db() -> &'static GeoDb {
    GeoDb::embedded().expect("embedded geo data parses")
}

fn country(ip: &str) -> Option<String> {
    db().lookup(ip.parse().unwrap()).country
}

#[test]
fn embedded_counts_and_date() {
    let t = Instant::now();
    let db = db();
    eprintln!("embedded geo data ready in {:?}", t.elapsed());
    // `zcat FILE | grep -vc '^#'`: the 20 header lines are not ranges.
    assert_eq!(db.len(), (385_602, 276_626));
    // `zcat FILE | wc -l`: 411,961 and 103,197 lines; the one overlap in
    // the IPv4 file is resolved (see `overlapping_asn_ranges`).
    assert_eq!(db.networks().len(), (411_961, 103_197));
    assert_eq!(db.networks().overlaps_resolved(), 1);
    let a = db.lookup("85.214.132.117".parse().unwrap());
    assert_eq!(a.dataset, "ipfire-location (tor-geoip)");
    assert_eq!(a.dataset_date, "2026-06-25");
    assert_eq!(a.method, "range-lookup");
}

#[test]
fn real_answers_v4() {
    // Each checked against `zcat data/geo/ipfire-country-v4.tor-geoip.gz`.
    let a = db().lookup("1.0.0.1".parse().unwrap()); // 16777216,16777471,AU
    assert_eq!(a.country.as_deref(), Some("AU"));
    assert_eq!(a.raw_code, "AU");
    assert_eq!(country("85.214.132.117").as_deref(), Some("DE")); // 85.214.0.0-85.215.8.63
    assert_eq!(country("62.210.16.6").as_deref(), Some("FR")); // 62.210.0.0/16
    assert_eq!(country("194.109.6.66").as_deref(), Some("NL")); // 194.109.0.0/16
    assert_eq!(country("212.58.224.1").as_deref(), Some("GB")); // 212.58.224.0/19
    assert_eq!(country("128.30.2.1").as_deref(), Some("US")); // 128.29.0.0-128.38.255.255
    assert_eq!(country("130.59.1.1").as_deref(), Some("CH")); // 130.59.0.0-130.60.255.255
    assert_eq!(country("129.240.1.1").as_deref(), Some("NO")); // 129.240.0.0-129.242.255.255
    assert_eq!(country("202.96.128.86").as_deref(), Some("CN")); // 202.96.0.0-202.120.24.223
}

#[test]
fn range_edges_are_inclusive() {
    // 1382417977,1382417978,DE between ...976 FR and ...979 FR.
    let v4 = |n: u32| country(&std::net::Ipv4Addr::from(n).to_string());
    assert_eq!(v4(1_382_417_976).as_deref(), Some("FR"));
    assert_eq!(v4(1_382_417_977).as_deref(), Some("DE"));
    assert_eq!(v4(1_382_417_978).as_deref(), Some("DE"));
    assert_eq!(v4(1_382_417_979).as_deref(), Some("FR"));
}

#[test]
fn real_answers_v6() {
    assert_eq!(country("2a01:4f8::1").as_deref(), Some("DE")); // 2a01:4f8::-2a01:4f9:2a:dda:ffff:...
    assert_eq!(country("2001:638::1").as_deref(), Some("DE"));
    assert_eq!(country("2001:67c:2e8::1").as_deref(), Some("NL"));
    assert_eq!(country("2001:620::1").as_deref(), Some("CH"));
    assert_eq!(country("2001:700::1").as_deref(), Some("NO"));
    assert_eq!(country("2001:4860::1").as_deref(), Some("US"));
    // Range edge: 2a01:7a7:2:2e89::/64 DE, then 2a01:7a7:2:2e8a:: FR.
    assert_eq!(
        country("2a01:7a7:2:2e89:ffff:ffff:ffff:ffff").as_deref(),
        Some("DE")
    );
    assert_eq!(country("2a01:7a7:2:2e8a::").as_deref(), Some("FR"));
}

#[test]
fn unknown_codes_give_none_but_keep_raw() {
    // 15726992,15726999,?? (0.239.249.144-151)
    let a = db().lookup("0.239.249.150".parse().unwrap());
    assert_eq!((a.country, a.raw_code.as_str()), (None, "??"));
    // 2001::,2001:0:ffff:...,?? (Teredo)
    let a = db().lookup("2001::1".parse().unwrap());
    assert_eq!((a.country, a.raw_code.as_str()), (None, "??"));
    // 18923520,18926847,AP (1.32.192.0-...)
    let a = db().lookup("1.32.192.1".parse().unwrap());
    assert_eq!((a.country, a.raw_code.as_str()), (None, "AP"));
    // 34603008,34604543,EU (2.16.0.0-...)
    let a = db().lookup("2.16.0.1".parse().unwrap());
    assert_eq!((a.country, a.raw_code.as_str()), (None, "EU"));
}

#[test]
fn uk_is_reported_as_gb() {
    // 1050540304,1050540307,UK (62.157.249.16-19)
    let a = db().lookup("62.157.249.17".parse().unwrap());
    assert_eq!(
        (a.country.as_deref(), a.raw_code.as_str()),
        (Some("GB"), "UK")
    );
}

#[test]
fn unlisted_addresses_are_unknown() {
    // The data has no range for private, loopback or documentation addresses.
    for ip in ["10.0.0.1", "192.168.1.1", "127.0.0.1", "2001:db8::1", "::1"] {
        let a = db().lookup(ip.parse().unwrap());
        assert_eq!((a.country, a.raw_code.as_str()), (None, ""), "{ip}");
    }
}

#[test]
fn ipv4_mapped_ipv6_uses_v4_table() {
    let ip: IpAddr = "::ffff:85.214.132.117".parse().unwrap();
    let a = db().lookup(ip);
    assert_eq!(a.country.as_deref(), Some("DE"));
    assert_eq!(a.ip, ip);
    assert_eq!(country("::ffff:10.0.0.1"), None);
}

#[test]
fn lookup_is_fast() {
    let db = db();
    let ips: Vec<IpAddr> = ["85.214.132.117", "2a01:4f8::1", "10.0.0.1"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let t = Instant::now();
    for _ in 0..1000 {
        for ip in &ips {
            std::hint::black_box(db.lookup(*ip));
        }
    }
    let per = t.elapsed() / 3000;
    assert!(per.as_micros() < 100, "lookup took {per:?}");
}

#[test]
fn small_input_and_date_header() {
    let v4 = "# Generated: Thu, 25 Jun 2026 04:33:59 GMT\n\n1,5,de\r\n6,6,\n10,20,EU\n";
    let v6 = "2001:db8::,2001:db8::ffff,NL\n";
    let db = GeoDb::from_tor_geoip(Cursor::new(v4), Cursor::new(v6), "test").unwrap();
    assert_eq!(db.len(), (3, 1));
    let a = db.lookup("0.0.0.5".parse().unwrap());
    assert_eq!(
        (a.country.as_deref(), a.raw_code.as_str()),
        (Some("DE"), "de")
    );
    assert_eq!(a.dataset, "test");
    assert_eq!(a.dataset_date, "2026-06-25");
    let a = db.lookup("0.0.0.6".parse().unwrap());
    assert_eq!((a.country, a.raw_code.as_str()), (None, ""));
    assert_eq!(country_in(&db, "0.0.0.7"), None);
    assert_eq!(country_in(&db, "2001:db8::ffff").as_deref(), Some("NL"));
    assert_eq!(country_in(&db, "2001:db8::1:0"), None);
    let empty = GeoDb::from_tor_geoip(Cursor::new(""), Cursor::new(""), "x").unwrap();
    assert_eq!(
        empty.lookup("1.2.3.4".parse().unwrap()).dataset_date,
        "unknown"
    );
    assert_eq!(
        parse_generated(" 2026-06-25T00:00:00Z").as_deref(),
        Some("2026-06-25")
    );
}

fn country_in(db: &GeoDb, ip: &str) -> Option<String> {
    db.lookup(ip.parse().unwrap()).country
}

#[test]
fn malformed_input_names_file_and_line() {
    let parse = |v4: &str, v6: &str| {
        GeoDb::from_tor_geoip(Cursor::new(v4.to_owned()), Cursor::new(v6.to_owned()), "t")
    };
    let cases = [
        ("# h\n1,2,DE\n3,x,FR\n", "", "geoip (IPv4)", 3),
        ("1,2\n", "", "geoip (IPv4)", 1),
        ("1,2,DEU\n", "", "geoip (IPv4)", 1),
        ("4294967296,4294967296,DE\n", "", "geoip (IPv4)", 1),
        ("1.2.3.4,1.2.3.5,DE\n", "", "geoip (IPv4)", 1),
        ("5,1,DE\n", "", "geoip (IPv4)", 1),
        ("", "::1,::2,DE\n::zz,::3,FR\n", "geoip6 (IPv6)", 2),
        ("", "10,20,DE\n", "geoip6 (IPv6)", 1),
    ];
    for (v4, v6, file, line) in cases {
        match parse(v4, v6) {
            Err(e @ GeoError::BadLine { .. }) => {
                let GeoError::BadLine {
                    file: f, line: l, ..
                } = &e
                else {
                    unreachable!()
                };
                assert_eq!((f.as_str(), *l), (file, line), "{e}");
                assert!(
                    e.to_string().starts_with(&format!("{file}:{line}: ")),
                    "{e}"
                );
            }
            other => panic!("{v4:?}/{v6:?}: expected BadLine, got {other:?}"),
        }
    }
    for (v4, line) in [("1,5,DE\n5,6,FR\n", 2), ("10,20,DE\n1,2,FR\n", 2)] {
        match parse(v4, "") {
            Err(GeoError::Unsorted { file, line: l }) => {
                assert_eq!((file.as_str(), l), ("geoip (IPv4)", line));
            }
            other => panic!("{v4:?}: expected Unsorted, got {other:?}"),
        }
    }
    let bad_utf8 = GeoDb::from_tor_geoip(Cursor::new(b"1,2,\xff\xff\n"), Cursor::new(""), "t");
    assert!(matches!(bad_utf8, Err(GeoError::BadLine { line: 1, .. })));
}

#[test]
fn io_error_is_reported() {
    struct Failing;
    impl std::io::Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk on fire"))
        }
    }
    let r = GeoDb::from_tor_geoip(std::io::BufReader::new(Failing), Cursor::new(""), "t");
    match r {
        Err(e @ GeoError::Io { .. }) => assert!(e.to_string().contains("disk on fire")),
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn networks_name_asn_and_organisation() {
    // Each checked against `zcat data/geo/asn-v4.routeviews-dbip.csv.gz`.
    let a = db().lookup("85.214.132.117".parse().unwrap());
    let n = a.network.expect("Strato is in the data");
    assert_eq!((n.asn, n.org.as_str()), (6724, "Strato AG"));
    assert_eq!(a.network_dataset, "routeviews-dbip (ip-location-db asn)");
    assert_eq!(a.network_dataset_date, "2026-06-17");
    assert_eq!(a.ambiguity, None);
    // 1.0.0.0,1.0.0.255,13335,"Cloudflare, Inc." (quoted, with a comma): anycast.
    let a = db().lookup("1.0.0.1".parse().unwrap());
    let n = a.network.expect("Cloudflare");
    assert_eq!((n.asn, n.org.as_str()), (13335, "Cloudflare, Inc."));
    assert_eq!(a.ambiguity, Some(ANYCAST_NOTE));
    // 2.26.200.0,2.26.215.255,201907,"LLC ""SPUTNIK""": doubled quotes.
    let n = db().lookup("2.26.200.0".parse().unwrap()).network.unwrap();
    assert_eq!(n.org, "LLC \"SPUTNIK\"");
    // IPv6: 2001:200::,2001:200:1b9:ffff:...,2500,WIDE Project
    let n = db()
        .lookup("2001:200:1b9::1".parse().unwrap())
        .network
        .unwrap();
    assert_eq!((n.asn, n.org.as_str()), (2500, "WIDE Project"));
    assert_eq!(db().lookup("10.0.0.1".parse().unwrap()).network, None);
}

#[test]
fn overlapping_asn_ranges() {
    // The data has 214.95.0.0-215.0.255.255 (AS749) then
    // 215.0.0.0-215.1.3.255 (AS721): the later, more specific one wins.
    let asn = |ip: &str| db().lookup(ip.parse().unwrap()).network.map(|n| n.asn);
    assert_eq!(asn("214.255.255.255"), Some(749));
    assert_eq!(asn("215.0.0.0"), Some(721));
    assert_eq!(asn("215.1.3.255"), Some(721));
}

#[test]
fn strict_country_codes() {
    assert_eq!(country_of("de").as_deref(), Some("DE"));
    assert_eq!(country_of("UK").as_deref(), Some("GB"));
    for unknown in [
        "", "EU", "AP", "ZZ", "??", "A1", "O1", "D", "DEU", "Germany", "1X",
    ] {
        assert_eq!(country_of(unknown), None, "{unknown:?}");
    }
}
