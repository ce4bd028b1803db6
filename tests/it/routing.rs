//! Routing tables over the real shipped datasets: boundary addresses of
//! ranges read from the raw files, IPv6, unknown codes, anycast, two
//! sources that disagree; and the node's lookup (what `alertrelay geo
//! lookup` prints) agreeing with the raw file for thousands of addresses
//! drawn from it with a seeded RNG.
//!
//! The raw files are read here with a reader of their own (not the
//! library's), so that a parsing bug cannot hide itself.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use crate::common::{Builder, Federation, error_chain};
use alertrelay::directory::{Directory, RawDirectory, RawNode};
use alertrelay::geo::{GeoDb, SourceKind, SourceSpec, Sources};
use alertrelay::identity::NodeId;
use alertrelay::report::Category;
use alertrelay::report::validate;
use alertrelay::routing::{self, RouteDecision, RouteKind};
use rand::{Rng, SeedableRng};

fn manifest(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn gunzip(path: &str) -> String {
    let gz = std::fs::read(manifest(path)).expect("shipped data file");
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(gz.as_slice())
        .read_to_string(&mut text)
        .expect("gzip");
    text
}

/// `(start, end, code)` of every range of a tor-geoip file.
fn raw_ranges<A: std::str::FromStr>(path: &str, parse: impl Fn(&str) -> A) -> Vec<(A, A, String)> {
    gunzip(path)
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (parse(f[0]), parse(f[1]), f[2].to_owned())
        })
        .collect()
}

fn raw_v4() -> Vec<(u32, u32, String)> {
    raw_ranges("data/geo/ipfire-country-v4.tor-geoip.gz", |s| {
        s.parse::<u32>().unwrap()
    })
}

fn raw_v6() -> Vec<(u128, u128, String)> {
    raw_ranges("data/geo/ipfire-country-v6.tor-geoip.gz", |s| {
        u128::from(s.parse::<Ipv6Addr>().unwrap())
    })
}

/// What the dataset's code means, written independently of the library.
fn dataset_country(code: &str) -> Option<String> {
    match code {
        "" | "EU" | "AP" | "ZZ" | "??" | "A1" | "A2" | "O1" => None,
        "UK" => Some("GB".to_owned()),
        c => Some(c.to_owned()),
    }
}

fn raw_code_at<A: Ord + Copy>(ranges: &[(A, A, String)], x: A) -> &str {
    let i = ranges.partition_point(|r| r.0 <= x);
    match i.checked_sub(1).and_then(|i| ranges.get(i)) {
        Some(r) if x <= r.1 => &r.2,
        _ => "",
    }
}

fn node(id: &str, cc: &[&str], cats: &[&str]) -> RawNode {
    RawNode {
        relay: None,
        id: id.into(),
        name: String::new(),
        countries: cc.iter().map(|c| (*c).into()).collect(),
        endpoint: "https://127.0.0.1:1".into(),
        categories: cats.iter().map(|c| (*c).into()).collect(),
        active: true,
        keys: vec![],
        national_categories: vec![],
    }
}

/// A federation seen from the French hotline.
struct Fed {
    directory: Directory,
    me: NodeId,
    fallback: NodeId,
    sources: Sources,
}

impl Fed {
    fn new(sources: Sources) -> Fed {
        let directory = Directory::from_raw(
            RawDirectory {
                federation: "t".into(),
                nodes: vec![
                    node("FR-PDC", &["FR"], &[]),
                    node("DE-FSM", &["DE"], &["ncii"]),
                    node("DE-ECO", &["DE"], &[]),
                    node("NL-OFFLIMITS", &["NL"], &[]),
                    node("GB-IWF", &["GB"], &[]),
                    node("US-NCMEC", &["US"], &[]),
                    node("AU-ESAFETY", &["AU"], &[]),
                    node("JP-SIA", &["JP"], &[]),
                    node("LE", &[], &[]),
                ],
            },
            "t",
        )
        .unwrap();
        Fed {
            directory,
            me: NodeId::new("FR-PDC").unwrap(),
            fallback: NodeId::new("LE").unwrap(),
            sources,
        }
    }

    fn route(&self, url: &str, category: Category) -> RouteDecision {
        let urls = vec![validate::url(url).unwrap_or_else(|e| panic!("{url}: {e}"))];
        routing::decide(
            &routing::RouteInput {
                urls: &urls,
                hosting_ip: None,
                category,
                resolved: None,
                on_dns_failure: Default::default(),
            },
            &self.sources,
            &routing::Federation {
                directory: &self.directory,
                me: &self.me,
                fallback: Some(&self.fallback),
                fallback_for: &[],
            },
        )
    }

    /// The node that must get content of `category` hosted in `country`:
    /// the first in directory order that serves it and accepts the category.
    fn expected(&self, country: Option<&str>, category: Category) -> (RouteKind, Vec<&str>) {
        match country {
            None | Some("FR") => (RouteKind::Local, vec![]),
            Some(cc) => match self.directory.serving(cc).find(|n| n.accepts(category)) {
                Some(n) => (RouteKind::Peer, vec![n.id.as_str()]),
                None => (RouteKind::Fallback, vec!["LE"]),
            },
        }
    }
}

fn url_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("http://{a}/x"),
        IpAddr::V6(a) => format!("http://[{a}]/x"),
    }
}

fn outcome(r: &RouteDecision) -> (RouteKind, Vec<&str>) {
    (r.kind, r.destinations.iter().map(NodeId::as_str).collect())
}

#[test]
fn a_routing_table_over_the_shipped_data() {
    let fed = Fed::new(Sources::shipped());
    // (URL, expected kind, destinations, country), each checked against the
    // raw files (`zcat data/geo/*.gz`).
    let table: &[(&str, RouteKind, &[&str], Option<&str>)] = &[
        (
            "http://85.214.132.117/x",
            RouteKind::Peer,
            &["DE-ECO"],
            Some("DE"),
        ),
        (
            "http://0x55d68475/x",
            RouteKind::Peer,
            &["DE-ECO"],
            Some("DE"),
        ), // hex form
        (
            "http://[::ffff:85.214.132.117]/",
            RouteKind::Peer,
            &["DE-ECO"],
            Some("DE"),
        ),
        (
            "http://[2a01:4f8::1]/",
            RouteKind::Peer,
            &["DE-ECO"],
            Some("DE"),
        ),
        (
            "ftp://194.109.6.66/pub/",
            RouteKind::Peer,
            &["NL-OFFLIMITS"],
            Some("NL"),
        ),
        (
            "http://[2001:67c:2e8::1]/",
            RouteKind::Peer,
            &["NL-OFFLIMITS"],
            Some("NL"),
        ),
        ("https://62.210.16.6/", RouteKind::Local, &[], Some("FR")),
        (
            "http://62.157.249.17/",
            RouteKind::Peer,
            &["GB-IWF"],
            Some("GB"),
        ), // raw code UK
        (
            "http://130.59.1.1/",
            RouteKind::Fallback,
            &["LE"],
            Some("CH"),
        ),
        (
            "http://[2001:620::1]/",
            RouteKind::Fallback,
            &["LE"],
            Some("CH"),
        ),
        (
            "http://129.240.1.1/",
            RouteKind::Fallback,
            &["LE"],
            Some("NO"),
        ),
        (
            "http://202.96.128.86/",
            RouteKind::Fallback,
            &["LE"],
            Some("CN"),
        ),
        ("http://2.16.0.1/", RouteKind::Local, &[], None), // EU
        ("http://1.32.192.1/", RouteKind::Local, &[], None), // AP
        ("http://0.239.249.150/", RouteKind::Local, &[], None), // ??
        ("http://[2001::1]/", RouteKind::Local, &[], None), // ?? (Teredo)
        ("http://10.0.0.1/", RouteKind::Local, &[], None), // no range
        ("http://[2001:db8::1]/", RouteKind::Local, &[], None), // no range
    ];
    for (url, kind, dest, country) in table {
        let r = fed.route(url, Category::Csam);
        assert_eq!(outcome(&r), (*kind, dest.to_vec()), "{url}: {}", r.reason);
        assert_eq!(r.evidence.country.as_deref(), *country, "{url}");
        assert_eq!(r.evidence.dataset_date, "2026-06-25", "{url}");
    }
    // ncii: DE-FSM is first in directory order and takes it.
    let r = fed.route("http://85.214.132.117/x", Category::Ncii);
    assert_eq!(outcome(&r), (RouteKind::Peer, vec!["DE-FSM"]));
}

#[test]
fn first_and_last_addresses_of_ranges_read_from_the_data() {
    let fed = Fed::new(Sources::shipped());
    let v4 = raw_v4();
    let v6 = raw_v6();
    let mut checked = 0;
    // Every 20,000th IPv4 range and every 15,000th IPv6 range, plus the
    // first and last of each file: its first and last address, and the
    // addresses just outside it, routed and compared with the raw file.
    let picks4 = (0..v4.len()).step_by(20_000).chain([v4.len() - 1]);
    for i in picks4 {
        let (s, e, _) = &v4[i];
        let mut addrs = vec![*s, *e];
        addrs.extend(s.checked_sub(1));
        addrs.extend(e.checked_add(1));
        for a in addrs {
            let want = dataset_country(raw_code_at(&v4, a));
            let r = fed.route(&url_of(Ipv4Addr::from(a).into()), Category::Csam);
            assert_eq!(r.evidence.country, want, "{}", Ipv4Addr::from(a));
            assert_eq!(
                outcome(&r),
                fed.expected(want.as_deref(), Category::Csam),
                "{}",
                Ipv4Addr::from(a)
            );
            checked += 1;
        }
    }
    let picks6 = (0..v6.len()).step_by(15_000).chain([v6.len() - 1]);
    for i in picks6 {
        let (s, e, _) = &v6[i];
        let mut addrs = vec![*s, *e];
        addrs.extend(s.checked_sub(1));
        addrs.extend(e.checked_add(1));
        for a in addrs {
            let want = dataset_country(raw_code_at(&v6, a));
            let r = fed.route(&url_of(Ipv6Addr::from(a).into()), Category::Csam);
            assert_eq!(r.evidence.country, want, "{}", Ipv6Addr::from(a));
            assert_eq!(
                outcome(&r),
                fed.expected(want.as_deref(), Category::Csam),
                "{}",
                Ipv6Addr::from(a)
            );
            checked += 1;
        }
    }
    assert!(checked > 100, "{checked}");
}

#[test]
fn anycast_addresses_are_routed_with_a_warning() {
    let fed = Fed::new(Sources::shipped());
    // 1.1.1.1 (AS13335 Cloudflare), 8.8.8.8 (AS15169 Google): the dataset's
    // country is followed, and the route says it is ambiguous.
    for (url, dest, asn) in [
        ("http://1.1.1.1/", "AU-ESAFETY", 13335),
        ("http://8.8.8.8/", "US-NCMEC", 15169),
        ("http://[2606:4700::1111]/", "US-NCMEC", 13335),
    ] {
        let r = fed.route(url, Category::Csam);
        assert_eq!(outcome(&r), (RouteKind::Peer, vec![dest]), "{url}");
        assert_eq!(
            r.evidence.network.as_ref().map(|n| n.asn),
            Some(asn),
            "{url}"
        );
        let amb = r.evidence.ambiguity.as_deref().expect("ambiguous");
        assert!(
            amb.starts_with(
                "ambiguous: anycast/CDN network, the content's origin server may be elsewhere"
            ),
            "{amb}"
        );
        assert!(r.reason.contains(amb), "{}", r.reason);
    }
    // Strato is not on the list.
    let r = fed.route("http://85.214.132.117/", Category::Csam);
    assert_eq!(r.evidence.ambiguity, None);
}

#[test]
fn two_sources_that_disagree() {
    // NRO registration data (ip-location-db sample) first, then the shipped
    // IPFire geolocation: 2.56.72.0/21 is registered in DE, geolocated in US.
    let nro = SourceSpec {
        kind: SourceKind::Csv,
        name: Some("nro-registration".into()),
        paths: vec![manifest("tests/data/nro-asn-country-sample.csv")],
        date: Some("2026-06-17".into()),
    };
    let shipped = SourceSpec {
        kind: SourceKind::Shipped,
        name: None,
        paths: vec![],
        date: None,
    };
    let fed = Fed::new(Sources::load(&[nro.clone(), shipped.clone()]).unwrap());
    let r = fed.route("http://2.56.72.1/", Category::Csam);
    assert_eq!(outcome(&r), (RouteKind::Peer, vec!["DE-ECO"]));
    assert_eq!(
        (
            r.evidence.dataset.as_str(),
            r.evidence.dataset_date.as_str()
        ),
        ("nro-registration", "2026-06-17")
    );
    let a = &r.evidence.addresses[0];
    assert!(a.sources_disagree);
    let answers: Vec<_> = a
        .answers
        .iter()
        .map(|x| (x.source.as_str(), x.raw_code.as_str()))
        .collect();
    assert_eq!(
        answers,
        vec![
            ("nro-registration", "DE"),
            ("ipfire-location (tor-geoip)", "US")
        ]
    );
    assert!(
        r.reason.contains("the geo sources disagree"),
        "{}",
        r.reason
    );
    // The other order follows IPFire.
    let fed = Fed::new(Sources::load(&[shipped, nro]).unwrap());
    let r = fed.route("http://2.56.72.1/", Category::Csam);
    assert_eq!(outcome(&r), (RouteKind::Peer, vec!["US-NCMEC"]));
    // Where the first source has no answer, the second decides, and nobody
    // disagrees: 85.214.132.117 is not in the NRO sample.
    let r = fed.route("http://85.214.132.117/", Category::Csam);
    assert!(!r.evidence.addresses[0].sources_disagree);
}

#[test]
fn lookup_agrees_with_the_raw_file_for_sampled_addresses() {
    // For any address in the shipped dataset the node names the same
    // country the dataset does (`alertrelay geo lookup` prints this answer).
    let db = GeoDb::embedded().unwrap();
    let v4 = raw_v4();
    let v6 = raw_v6();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_2026);
    for _ in 0..4000 {
        let (s, e, code) = &v4[rng.gen_range(0..v4.len())];
        let a = Ipv4Addr::from(rng.gen_range(*s..=*e));
        let got = db.lookup(a.into());
        assert_eq!(got.raw_code, *code, "{a}");
        assert_eq!(got.country, dataset_country(code), "{a}");
    }
    for _ in 0..2000 {
        let (s, e, code) = &v6[rng.gen_range(0..v6.len())];
        let a = Ipv6Addr::from(rng.gen_range(*s..=*e));
        let got = db.lookup(a.into());
        assert_eq!(got.raw_code, *code, "{a}");
        assert_eq!(got.country, dataset_country(code), "{a}");
    }
    // Uniformly drawn addresses (most fall between ranges or in big ones).
    for _ in 0..2000 {
        let a: u32 = rng.r#gen();
        let got = db.lookup(Ipv4Addr::from(a).into());
        assert_eq!(got.raw_code, raw_code_at(&v4, a), "{}", Ipv4Addr::from(a));
    }
}

#[test]
fn network_lookup_agrees_with_the_raw_asn_file() {
    let db = GeoDb::embedded().unwrap();
    let text = gunzip("data/geo/asn-v4.routeviews-dbip.csv.gz");
    let rows: Vec<(u32, u32, u32)> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, ',').collect();
            (
                u32::from(f[0].parse::<Ipv4Addr>().unwrap()),
                u32::from(f[1].parse::<Ipv4Addr>().unwrap()),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut checked = 0;
    for _ in 0..3000 {
        let i = rng.gen_range(0..rows.len());
        let (s, e, asn) = rows[i];
        // Skip the one overlapping pair (the later range wins there).
        let overlaps = rows.get(i + 1).is_some_and(|n| n.0 <= e) || (i > 0 && rows[i - 1].1 >= s);
        if overlaps {
            continue;
        }
        let a = Ipv4Addr::from(rng.gen_range(s..=e));
        let got = db.lookup(a.into()).network.map(|n| n.asn);
        assert_eq!(got, Some(asn).filter(|&x| x != 0), "{a}");
        checked += 1;
    }
    assert!(checked > 2900);
}

/// FR-PDC, DE-ECO and the fallback LE, with `extra` appended to FR-PDC's
/// node.toml.
fn with_extra(extra: &str) -> Builder<'_> {
    Federation::builder(&[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"]), ("LE", &[])])
        .fallback("LE")
        .prepare(move |dir| {
            let path = dir.join("FR-PDC").join("node.toml");
            let mut text = std::fs::read_to_string(&path).unwrap();
            text.push('\n');
            text.push_str(extra);
            std::fs::write(&path, text).unwrap();
        })
}

/// The error FR-PDC's node.toml with `extra` gets, as the CLI prints it:
/// the error and its sources.
fn config_error(extra: &str) -> String {
    let files = with_extra(extra).provision();
    let e = alertrelay::config::NodeConfig::load(&files.configs[0]).expect_err("must be refused");
    error_chain(&e)
}

#[test]
fn geo_dns_and_fallback_configuration_is_checked_and_names_the_key() {
    let mmdb = manifest("tests/data/GeoIP2-Country-Test.mmdb");
    let files = with_extra(&format!(
        r#"
[[fallback_for]]
category = "ncii"
node = "DE-ECO"

[geo]
[[geo.source]]
kind = "mmdb"
path = "{}"
name = "maxmind-test"
[[geo.source]]
kind = "shipped"

[dns]
mode = "static"
hosts = {{ "Files.Example" = ["85.214.132.117", "2a01:4f8::1"] }}
"#,
        mmdb.display()
    ))
    .provision();
    let cfg = alertrelay::config::NodeConfig::load(&files.configs[0]).unwrap();
    let names: Vec<String> = cfg.geo.describe().into_iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        vec![
            "maxmind-test",
            "ipfire-location (tor-geoip)",
            "routeviews-dbip (ip-location-db asn)"
        ]
    );
    assert_eq!(cfg.dns.mode(), "static");
    assert_eq!(
        cfg.fallback_for,
        vec![(Category::Ncii, NodeId::new("DE-ECO").unwrap())]
    );

    for (extra, wanted) in [
        (
            "[[geo.source]]\nkind = \"mmdb\"\npath = \"nope.mmdb\"\n",
            "key `geo.source` #1 (mmdb)",
        ),
        (
            "[[geo.source]]\nkind = \"mmdb\"\npath = \"nope.mmdb\"\n",
            "nope.mmdb",
        ),
        (
            "[[geo.source]]\nkind = \"maxmind\"\npath = \"x\"\n",
            "key `geo.source`: #1 (maxmind): kind must be one of shipped, mmdb",
        ),
        (
            "[[geo.source]]\nkind = \"csv\"\npath = \"x\"\npaths = [\"y\"]\n",
            "give `path` or `paths`, not both",
        ),
        (
            "[[geo.source]]\nkind = \"shipped\"\ndate = \"June\"\n",
            "date \"June\" is not YYYY-MM-DD",
        ),
        (
            "[[geo.source]]\nkind = \"shipped\"\nurl = \"https://x\"\n",
            "unknown field `url`",
        ),
        ("[dns]\nmode = \"dig\"\n", "key `dns.mode`"),
        (
            "[dns]\nmode = \"resolvers\"\n",
            "key `dns.resolvers`: mode = \"resolvers\" needs at least one",
        ),
        (
            "[dns]\nmode = \"resolvers\"\nresolvers = [\"127.0.0.1\", \"dns.example\"]\n",
            "key `dns.resolvers`: entry 2: not an IP address with an optional port",
        ),
        (
            "[dns]\nmode = \"system\"\nresolvers = [\"127.0.0.1\"]\n",
            "key `dns.resolvers`: only used with mode = \"resolvers\"",
        ),
        (
            "[dns]\nmode = \"resolvers\"\nresolvers = [\"tls://127.0.0.1\"]\n",
            "key `dns.resolvers`: entry 1: DNS over TLS is written tls://NAME@IP[:PORT]",
        ),
        (
            "[dns]\nmode = \"system\"\ndeadline_ms = 0\n",
            "key `dns.deadline_ms`: must be 1 to 60000",
        ),
        (
            "[dns]\nmode = \"system\"\non_failure = \"drop\"\n",
            "key `dns.on_failure`: not \"hold\" or \"fallback\"",
        ),
        (
            "[dns]\nhosts = { \"a.example\" = [\"1.2.3.4\"] }\n",
            "key `dns.hosts`: only used with mode = \"static\"",
        ),
        (
            "[dns]\nmode = \"static\"\nhosts = { \"a.example\" = [\"1.2.3\"] }\n",
            "key `dns.hosts`: a.example: \"1.2.3\" is not an IP address",
        ),
        (
            "[[fallback_for]]\ncategory = \"ncii\"\nnode = \"NOBODY\"\n",
            "key `fallback_for`: entry 1: node NOBODY is not in the directory",
        ),
        (
            "[[fallback_for]]\ncategory = \"weapons\"\nnode = \"LE\"\n",
            "key `fallback_for`: entry 1",
        ),
    ] {
        let e = config_error(extra);
        assert!(e.contains(wanted), "{extra:?}: {e}");
    }
}

#[tokio::test]
async fn a_node_routes_with_its_configured_sources_dns_and_fallbacks() {
    let mmdb = manifest("tests/data/GeoIP2-Country-Test.mmdb");
    let fed = with_extra(&format!(
        r#"
[[fallback_for]]
category = "ncii"
node = "DE-ECO"

[[geo.source]]
kind = "mmdb"
path = "{}"
name = "maxmind-test"
[[geo.source]]
kind = "shipped"

[dns]
mode = "static"
hosts = {{ "files.example" = ["85.214.132.117", "130.59.1.1"] }}
"#,
        mmdb.display()
    ))
    .start()
    .await;
    let preview = async |urls: &[&str], ip: &str, cat: &str| {
        let urls: Vec<String> = urls.iter().map(|u| (*u).to_owned()).collect();
        alertrelay::node::route::route_preview(fed.core(0), &urls, ip, cat, "")
            .await
            .unwrap()
    };
    // DNS names two countries: DE (a peer) and CH (no hotline: fallback LE).
    let r = preview(&["https://FILES.example/a"], "", "csam").await;
    assert_eq!(outcome(&r), (RouteKind::Peer, vec!["DE-ECO", "LE"]));
    assert_eq!(r.evidence.countries, vec!["DE", "CH"]);
    assert_eq!(r.evidence.ip_source, "dns");
    // ncii's own fallback is DE-ECO.
    let r = preview(&["http://130.59.1.1/"], "", "ncii").await;
    assert_eq!(outcome(&r), (RouteKind::Fallback, vec!["DE-ECO"]));
    // The configured MaxMind file comes first: 67.43.156.1 is BT there
    // (US in IPFire), and the route says the sources disagree.
    let r = preview(&["http://67.43.156.1/"], "", "csam").await;
    assert_eq!(r.evidence.country.as_deref(), Some("BT"));
    assert_eq!(r.evidence.dataset, "maxmind-test");
    assert!(r.evidence.addresses[0].sources_disagree);
    // What the operator's `route --json` shows survives the wire format.
    let view =
        alertrelay::api::convert::route_view_from_pb(&alertrelay::api::convert::route_to_pb(&r));
    assert_eq!(view.steps, r.steps);
    assert_eq!(view.addresses[0].answers.len(), 2);
    assert_eq!(view.addresses[0].answers[1].country, "US");
    assert!(view.addresses[0].sources_disagree);
    let r = preview(&["http://1.1.1.1/"], "", "csam").await;
    let view =
        alertrelay::api::convert::route_view_from_pb(&alertrelay::api::convert::route_to_pb(&r));
    assert_eq!((view.asn, view.org.as_str()), (13335, "Cloudflare, Inc."));
    assert!(
        view.ambiguity.starts_with("ambiguous: anycast/CDN network"),
        "{}",
        view.ambiguity
    );
    fed.shutdown().await;
}
