//! Bulk import with DNS on: `--dns-reports` bulk reports naming
//! `--dns-hosts` distinct host names (report `i` names host `i mod H`),
//! submitted on bulk-intake streams to an origin whose `[dns]` points at
//! the benchmark's own authoritative server on loopback
//! (`runtime::zone`), each host an A record in a country with a peer.
//! Measured: reports committed per second (each routed by its resolved
//! address), questions asked, cache hits, and the DNS questions' p50/p99
//! as the node's histogram has them. Nothing leaves the machine.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::Options;
use super::cluster::{self, Cluster, Spec};
use crate::config::RawDns;
use crate::pb;
use crate::runtime::zone::{Zone, ZoneServer};

#[derive(Debug, Clone, Serialize)]
pub struct DnsImport {
    pub reports: usize,
    pub hosts: usize,
    /// Reports committed (resolved, routed, signed, stored) per second.
    pub intake_per_sec: f64,
    /// DNS questions the server received (A and AAAA per host, at most).
    pub questions_asked: usize,
    /// Host names answered from the node's cache.
    pub cache_hits: u64,
    /// Questions answered with records (the node's metric).
    pub answered: u64,
}

fn host(i: u64) -> String {
    format!("h{i}.bench.example")
}

pub async fn run(opts: &Options) -> anyhow::Result<DnsImport> {
    let hosts = opts.dns_hosts.max(1);
    let reports = opts.dns_reports;
    let ip = std::net::IpAddr::V4(cluster::address_in("DE")?);
    let mut zone = Zone::new();
    for i in 0..hosts as u64 {
        zone = zone.addr(&host(i), ip, 3600);
    }
    let server = ZoneServer::start(zone).await?;
    let c = Cluster::start_with(
        &opts.dir,
        &[
            Spec {
                id: "FR-BENCH".into(),
                countries: vec!["FR".into()],
            },
            Spec {
                id: "DE-BENCH".into(),
                countries: vec!["DE".into()],
            },
        ],
        None,
        &[],
        RawDns::resolvers(&[server.addr().to_string()]),
    )
    .await?;
    let core = c.core(0)?;
    let mut client = c.client(0).await?;
    let bar = super::bar(
        opts.json,
        reports as u64,
        "dns: importing reports naming hosts",
    );
    let progress = bar.clone();
    let started = Instant::now();
    cluster::submit_stream(
        &mut client,
        cluster::STREAM_WINDOW,
        None,
        move |i| {
            (i < reports as u64).then(|| pb::SubmitReportRequest {
                urls: vec![format!("https://{}/item/{i}", host(i % hosts as u64))],
                category: "csam".into(),
                priority: pb::Priority::Bulk as i32,
                ..Default::default()
            })
        },
        move |_| progress.inc(1),
    )
    .await?;
    let secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let cache_hits = core
        .metrics
        .dns_cache_hits
        .load(std::sync::atomic::Ordering::Relaxed);
    let asked = server.asked().len();
    // Every report is routed to DE-BENCH by its host's address: the
    // origin's queue empties into it.
    cluster::wait_drained(&mut client, Duration::from_secs(3600)).await?;
    c.shutdown().await;
    Ok(DnsImport {
        reports,
        hosts,
        intake_per_sec: reports as f64 / secs.max(1e-9),
        questions_asked: asked,
        cache_hits,
        answered: core.metrics.dns_query_count("answered"),
    })
}

pub fn print(r: &DnsImport) {
    println!();
    println!(
        "bulk import with DNS on: {} reports naming {} hosts, resolved at the benchmark's own DNS server on loopback",
        r.reports, r.hosts
    );
    println!(
        "  {:.0} reports/s committed (each routed by its host's address); {} questions asked ({} answered), {} names from the cache",
        r.intake_per_sec, r.questions_asked, r.answered, r.cache_hits
    );
}
