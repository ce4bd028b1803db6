//! `geo::GeoDb::from_tor_geoip` on arbitrary bytes (a corrupt or hostile
//! data file): parsing never panics, and a database that parses answers
//! lookups without panicking.
//!
//! The input is split at its first NUL: IPv4 file before, IPv6 file after.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use alertrelay::geo::GeoDb;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (v4, v6) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(db) = GeoDb::from_tor_geoip(v4, v6, "fuzz") else {
        return;
    };
    let mut ips: Vec<IpAddr> = vec![
        Ipv4Addr::UNSPECIFIED.into(),
        Ipv4Addr::BROADCAST.into(),
        Ipv4Addr::new(85, 214, 132, 117).into(),
        Ipv6Addr::UNSPECIFIED.into(),
        Ipv6Addr::new(
            0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff,
        )
        .into(),
        "::ffff:1.2.3.4".parse().expect("literal"),
    ];
    for chunk in data.chunks_exact(4).take(16) {
        ips.push(Ipv4Addr::new(chunk[0], chunk[1], chunk[2], chunk[3]).into());
    }
    for ip in ips {
        let _ = db.lookup(ip);
    }
});
