//! Store growth: the sustained end-to-end throughput (as the `throughput`
//! scenario measures it) on fresh nodes with no reports stored, then on
//! fresh nodes that already hold `--growth` reports, delivered and with
//! their receipts stored. The ratio of the two says whether the cost of
//! a report stays flat as the store grows.

use std::time::Duration;

use serde::Serialize;

use super::Options;
use super::cluster;
use super::load::{self, Throughput};

#[derive(Debug, Clone, Serialize)]
pub struct Growth {
    /// Reports delivered, receipts stored, before the second measurement.
    pub stored: usize,
    /// Those reports accepted at the origin per second (bulk intake),
    /// and delivered per second from the first submission until the
    /// origin's queue was empty.
    pub load_intake_per_sec: f64,
    pub load_delivered_per_sec: f64,
    pub load_secs: f64,
    /// Seconds to sign an audit checkpoint on every node once loaded.
    pub checkpoint_secs: f64,
    /// Nothing stored before the measurement.
    pub empty: Throughput,
    /// `stored` reports stored before the measurement.
    pub full: Throughput,
    /// End to end with `stored` reports / with none.
    pub ratio: f64,
}

/// What loading the store took: (intake/s, delivered/s, seconds, seconds
/// of the checkpoints after it).
struct Loaded(f64, f64, f64, f64);

pub async fn run(opts: &Options) -> anyhow::Result<Growth> {
    let (empty, _) = measure(opts, 0).await?;
    let (full, Loaded(intake, delivered, secs, checkpoint_secs)) =
        measure(opts, opts.growth).await?;
    Ok(Growth {
        stored: opts.growth,
        load_intake_per_sec: intake,
        load_delivered_per_sec: delivered,
        load_secs: secs,
        checkpoint_secs,
        ratio: if empty.end_to_end_per_sec > 0.0 {
            full.end_to_end_per_sec / empty.end_to_end_per_sec
        } else {
            0.0
        },
        empty,
        full,
    })
}

/// Fresh nodes holding `stored` delivered reports, then the throughput
/// measurement on them.
async fn measure(opts: &Options, stored: usize) -> anyhow::Result<(Throughput, Loaded)> {
    let (c, ips) = load::start_warm(opts).await?;
    let loaded = fill(opts, &c, &ips, stored).await?;
    let t = load::throughput(opts, &c, &ips).await;
    c.shutdown().await;
    Ok((t?, loaded))
}

/// Stores `n` reports through the bulk intake, spread over the
/// destinations, and waits until every one is delivered (the origin's
/// queue is empty).
async fn fill(
    opts: &Options,
    c: &cluster::Cluster,
    ips: &[String],
    n: usize,
) -> anyhow::Result<Loaded> {
    if n == 0 {
        return Ok(Loaded(0.0, 0.0, 0.0, 0.0));
    }
    let mut client = c.client(0).await?;
    let bar = super::bar(opts.json, n as u64, "growth: storing (intake)");
    let replicas = c.clients(0).await?;
    let streams = super::load::spread(opts.streams, replicas.len());
    let intake_secs = cluster::queue_bulk(&replicas, ips, "growth", n, streams, &bar).await?;
    bar.finish_and_clear();
    let bar = super::bar(opts.json, n as u64, "growth: storing (delivered)");
    let rest = cluster::watch_drain(
        &mut client,
        n as u64,
        &bar,
        Duration::from_secs(6 * 3600),
        |_, _| Ok(()),
    )
    .await?;
    bar.finish_and_clear();
    let secs = intake_secs + rest;
    // A running node signs a checkpoint of its audit log every few
    // minutes, folding the entries since the last one: signed here once
    // loaded, so that the measurement after it is of a node in that steady
    // state, not of one that folds a million reports' entries inside the
    // measured seconds.
    let started = std::time::Instant::now();
    for i in 0..c.nodes.len() {
        crate::node::checkpoint::make(&*c.core(i)?).await?;
    }
    let checkpoint_secs = started.elapsed().as_secs_f64();
    Ok(Loaded(
        n as f64 / intake_secs,
        n as f64 / secs,
        secs,
        checkpoint_secs,
    ))
}

pub fn print(g: &Growth) {
    println!();
    println!(
        "store growth: end to end sustained, fresh nodes with 0 and with {} reports stored",
        g.stored
    );
    println!(
        "  {} reports stored: accepted at {:.0}/s, all receipts stored in {:.1} s ({:.0}/s)",
        g.stored, g.load_intake_per_sec, g.load_secs, g.load_delivered_per_sec
    );
    println!(
        "  then an audit checkpoint signed on each node (its log folded since the start): {:.1} s",
        g.checkpoint_secs
    );
    let stored = format!("with {} stored", g.stored);
    for (what, t) in [("with 0 stored", &g.empty), (stored.as_str(), &g.full)] {
        println!(
            "  end to end {:<24} {:>9.0} reports/s ({:.0} µs CPU per report)",
            what, t.end_to_end_per_sec, t.cpu_us_per_report
        );
        t.breakdown.print();
    }
    println!("  ratio, {} stored / 0 stored: {:.2}", g.stored, g.ratio);
}
