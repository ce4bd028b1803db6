//! A simulated federation of real size: the 53 hotlines of the illustrative
//! INHOPE-style directory (49 countries; Germany has three hotlines,
//! Hungary and Italy two) plus a law-enforcement fallback, seen from the
//! French hotline. Thousands of hosting addresses are drawn from the
//! shipped IPFire data with a seeded RNG and routed with the pure routing
//! function: each must land at the first hotline (in directory order) of
//! the dataset's country, at the fallback when that country has no hotline
//! (NO, CH, CN, ...), and stay here when the dataset says unknown or the
//! country is France. No servers: delivery is tested elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use alertrelay::directory::{Directory, RawDirectory, RawNode};
use alertrelay::geo::Sources;
use alertrelay::identity::NodeId;
use alertrelay::report::Category;
use alertrelay::report::validate;
use alertrelay::routing::{self, RouteKind};
use rand::{Rng, SeedableRng};

const CSV: &str = include_str!("../data/inhope-directory-example.csv");
const FALLBACK: &str = "LE-FALLBACK";

/// `country,hotline,operator,confidence` rows, in file order.
fn hotlines() -> Vec<(String, String)> {
    CSV.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .skip(1) // header
        .map(|l| {
            let mut f = l.splitn(3, ',');
            let cc = f.next().unwrap().to_owned();
            let name = f.next().unwrap().to_owned();
            (cc, name)
        })
        .collect()
}

/// A node id from a hotline's name: upper-case A-Z, 0-9 and '-', at most
/// 32 characters, made unique with a numeric suffix.
fn node_id(name: &str, taken: &BTreeSet<String>) -> String {
    let mut id = String::new();
    for c in name.chars() {
        let c = c.to_ascii_uppercase();
        if c.is_ascii_alphanumeric() {
            id.push(c);
        } else if !id.ends_with('-') && !id.is_empty() {
            id.push('-');
        }
    }
    id.truncate(32);
    let base = id.trim_end_matches('-').to_owned();
    let mut id = base.clone();
    let mut n = 2;
    while taken.contains(&id) {
        let suffix = format!("-{n}");
        let keep = base.len().min(32 - suffix.len());
        id = format!("{}{suffix}", base[..keep].trim_end_matches('-'));
        n += 1;
    }
    id
}

struct World {
    directory: Directory,
    me: NodeId,
    /// Country → its hotlines' ids, in directory order.
    by_country: BTreeMap<String, Vec<String>>,
}

fn world() -> World {
    let mut taken = BTreeSet::new();
    let mut nodes = Vec::new();
    let mut by_country: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (cc, name) in hotlines() {
        let id = node_id(&name, &taken);
        taken.insert(id.clone());
        by_country.entry(cc.clone()).or_default().push(id.clone());
        nodes.push(RawNode {
            relay: None,
            id,
            name,
            countries: vec![cc],
            endpoint: "https://127.0.0.1:1".into(),
            categories: vec![],
            active: true,
            keys: vec![],
            national_categories: vec![],
        });
    }
    nodes.push(RawNode {
        relay: None,
        id: FALLBACK.into(),
        name: "law enforcement".into(),
        countries: vec![],
        endpoint: "https://127.0.0.1:1".into(),
        categories: vec![],
        active: true,
        keys: vec![],
        national_categories: vec![],
    });
    let directory = Directory::from_raw(
        RawDirectory {
            federation: "inhope-example".into(),
            nodes,
        },
        "inhope-directory-example.csv",
    )
    .expect("every derived node id is valid and unique");
    let me = NodeId::new(&by_country["FR"][0]).unwrap();
    World {
        directory,
        me,
        by_country,
    }
}

fn dataset_country(code: &str) -> Option<&str> {
    match code {
        "" | "EU" | "AP" | "ZZ" | "??" | "A1" | "A2" | "O1" => None,
        "UK" => Some("GB"),
        c => Some(c),
    }
}

fn raw(path: &str) -> Vec<(String, String, String)> {
    let gz = std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(gz.as_slice())
        .read_to_string(&mut text)
        .unwrap();
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_owned(), f[1].to_owned(), f[2].to_owned())
        })
        .collect()
}

/// (address, the dataset's code for it), drawn from random ranges.
fn sample(rng: &mut rand::rngs::StdRng, n4: usize, n6: usize) -> Vec<(IpAddr, String)> {
    let v4 = raw("data/geo/ipfire-country-v4.tor-geoip.gz");
    let v6 = raw("data/geo/ipfire-country-v6.tor-geoip.gz");
    let mut out = Vec::with_capacity(n4 + n6);
    for _ in 0..n4 {
        let (s, e, cc) = &v4[rng.gen_range(0..v4.len())];
        let a = rng.gen_range(s.parse::<u32>().unwrap()..=e.parse::<u32>().unwrap());
        out.push((Ipv4Addr::from(a).into(), cc.clone()));
    }
    for _ in 0..n6 {
        let (s, e, cc) = &v6[rng.gen_range(0..v6.len())];
        let (s, e) = (
            u128::from(s.parse::<Ipv6Addr>().unwrap()),
            u128::from(e.parse::<Ipv6Addr>().unwrap()),
        );
        out.push((Ipv6Addr::from(rng.gen_range(s..=e)).into(), cc.clone()));
    }
    // One range of each country without a hotline, so that each is seen.
    for cc in [
        "NO", "CH", "CN", "IN", "SG", "HK", "VN", "SC", "PA", "AR", "MY", "ID", "BZ", "RU",
    ] {
        let (s, _, _) = v4
            .iter()
            .find(|r| r.2 == cc)
            .expect("the country is in the data");
        out.push((
            Ipv4Addr::from(s.parse::<u32>().unwrap()).into(),
            cc.to_owned(),
        ));
    }
    out
}

#[test]
fn the_directory_has_53_hotlines_in_49_countries() {
    let w = world();
    assert_eq!(
        w.directory.nodes().len(),
        54,
        "53 hotlines and the fallback"
    );
    assert_eq!(w.by_country.len(), 49);
    assert_eq!(w.by_country["DE"].len(), 3);
    assert_eq!(w.by_country["DE"][0], "ECO-BESCHWERDESTELLE");
    assert_eq!((w.by_country["HU"].len(), w.by_country["IT"].len()), (2, 2));
    for n in w.directory.nodes() {
        assert!(n.id.as_str().len() <= 32, "{}", n.id);
    }
}

#[test]
fn thousands_of_real_hosting_addresses_land_where_the_dataset_says() {
    let w = world();
    let fallback = NodeId::new(FALLBACK).unwrap();
    let sources = Sources::shipped();
    let mut rng = rand::rngs::StdRng::seed_from_u64(20_260_625);
    let categories = Category::ALL;
    let mut seen: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut fallback_countries = BTreeSet::new();
    for (ip, code) in sample(&mut rng, 4000, 1500) {
        let category = categories[rng.gen_range(0..categories.len())];
        let url = match ip {
            IpAddr::V4(a) => format!("http://{a}/content"),
            IpAddr::V6(a) => format!("https://[{a}]/content"),
        };
        let urls = vec![validate::url(&url).unwrap()];
        let r = routing::decide(
            &routing::RouteInput {
                urls: &urls,
                hosting_ip: None,
                category,
                resolved: None,
                on_dns_failure: Default::default(),
            },
            &sources,
            &routing::Federation {
                directory: &w.directory,
                me: &w.me,
                fallback: Some(&fallback),
                fallback_for: &[],
            },
        );
        let want = dataset_country(&code);
        assert_eq!(r.evidence.country.as_deref(), want, "{ip} (code {code:?})");
        assert_eq!(r.evidence.dataset_date, "2026-06-25");
        let dest: Vec<&str> = r.destinations.iter().map(NodeId::as_str).collect();
        match want {
            None => {
                assert_eq!(
                    (r.kind, dest.len()),
                    (RouteKind::Local, 0),
                    "{ip}: {}",
                    r.reason
                );
                assert!(r.reason.contains("unknown"), "{}", r.reason);
            }
            Some("FR") => assert_eq!(r.kind, RouteKind::Local, "{ip}"),
            Some(cc) => match w.by_country.get(cc) {
                Some(ids) => {
                    assert_eq!(r.kind, RouteKind::Peer, "{ip}: {}", r.reason);
                    assert_eq!(dest, vec![ids[0].as_str()], "{ip} in {cc}");
                }
                None => {
                    assert_eq!(
                        (r.kind, dest),
                        (RouteKind::Fallback, vec![FALLBACK]),
                        "{ip} in {cc}"
                    );
                    fallback_countries.insert(cc.to_owned());
                }
            },
        }
        *seen.entry(r.kind.as_str()).or_default() += 1;
    }
    // The sample covers every outcome, and every country without a hotline.
    for kind in ["peer", "local", "fallback"] {
        assert!(seen.get(kind).copied().unwrap_or(0) > 0, "{seen:?}");
    }
    for cc in [
        "NO", "CH", "CN", "IN", "SG", "HK", "VN", "SC", "PA", "AR", "MY", "ID", "BZ", "RU",
    ] {
        assert!(fallback_countries.contains(cc), "{cc}");
    }
    assert!(seen["peer"] > 2000, "{seen:?}");
}

#[test]
fn without_a_fallback_countries_without_a_hotline_are_kept_as_no_hotline() {
    let w = world();
    let sources = Sources::shipped();
    let mut rng = rand::rngs::StdRng::seed_from_u64(49);
    let mut no_hotline = 0;
    for (ip, code) in sample(&mut rng, 1000, 200) {
        let urls = vec![
            validate::url(&format!(
                "http://{}/",
                match ip {
                    IpAddr::V4(a) => a.to_string(),
                    IpAddr::V6(a) => format!("[{a}]"),
                }
            ))
            .unwrap(),
        ];
        let r = routing::decide(
            &routing::RouteInput {
                urls: &urls,
                hosting_ip: None,
                category: Category::Csam,
                resolved: None,
                on_dns_failure: Default::default(),
            },
            &sources,
            &routing::Federation {
                directory: &w.directory,
                me: &w.me,
                fallback: None,
                fallback_for: &[],
            },
        );
        if let Some(cc) = dataset_country(&code)
            && cc != "FR"
            && !w.by_country.contains_key(cc)
        {
            assert_eq!(r.kind, RouteKind::NoHotline, "{ip} in {cc}");
            assert!(r.destinations.is_empty());
            no_hotline += 1;
        } else {
            assert_ne!(r.kind, RouteKind::NoHotline, "{ip}");
        }
    }
    assert!(no_hotline >= 14, "{no_hotline}");
}
