//! The urgent lane: urgent reports' latency (submitted at the origin →
//! signed receipt stored at the origin) with an idle peer, then while a
//! bulk backlog for the same peer drains.

use std::time::{Duration, Instant};

use serde::Serialize;
use tonic::transport::Channel;

use super::cluster::{self, Cluster, Receipts, Spec};
use super::series::Scatter;
use super::{Latency, Options};
use crate::node::Core;
use crate::pb::operator_client::OperatorClient;

#[derive(Debug, Clone, Serialize)]
pub struct UrgentLane {
    pub backlog: usize,
    /// Bulk reports accepted per second while queuing the backlog (one
    /// `SubmitReport` each, durable before the answer).
    pub intake_per_sec: f64,
    /// Bulk reports delivered per second while the backlog drained
    /// (receipts stored at the origin).
    pub drain_per_sec: f64,
    pub drain_secs: f64,
    pub urgent_idle: Latency,
    pub urgent_during_drain: Latency,
    /// The same samples split by how much of the backlog was still queued
    /// when each urgent report was submitted: at least half of it, and
    /// less than a tenth. Equal figures mean the urgent report's latency
    /// does not depend on the size of the backlog waiting for its peer.
    pub urgent_most_queued: Latency,
    pub urgent_little_queued: Latency,
    /// Every sample of the drain against the backlog still queued when it
    /// was submitted.
    pub by_backlog: Scatter,
}

/// Submits one urgent report and waits until its receipt is stored.
async fn urgent_latency(
    core: &Core,
    receipts: &Receipts,
    client: &mut OperatorClient<Channel>,
    ip: &str,
    path: &str,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let id = cluster::submit(client, ip, path, true).await?;
    let seq = cluster::seq_of(core, &id).await?;
    let at = receipts.wait(seq, Duration::from_secs(120)).await?;
    Ok(at.saturating_duration_since(started))
}

pub async fn urgent_lane(opts: &Options) -> anyhow::Result<UrgentLane> {
    let ip = cluster::address_in("DE")?.to_string();
    let mut c = Cluster::start_on(
        &opts.backend,
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
    )
    .await?;
    let core = c.core(0)?;
    let receipts = c.receipts(0);
    let mut client = c.client(0).await?;
    // Urgent and bulk reports spread over the origin's replicas.
    let mut replicas = c.clients(0).await?;
    let spread = replicas.len();
    // Warm up connections and the destination.
    for (r, cl) in replicas.iter_mut().enumerate() {
        urgent_latency(&core, &receipts, cl, &ip, &format!("warm/{r}")).await?;
    }
    let bar = super::bar(opts.json, opts.urgent as u64, "urgent lane: peer idle");
    let mut idle = Vec::with_capacity(opts.urgent);
    for n in 0..opts.urgent {
        let cl = &mut replicas[n % spread];
        idle.push(urgent_latency(&core, &receipts, cl, &ip, &format!("urgent/{n}")).await?);
        bar.inc(1);
    }
    bar.finish_and_clear();

    // The backlog: the destination is down while bulk reports queue.
    c.stop(1).await;
    let bar = super::bar(
        opts.json,
        opts.backlog as u64,
        "urgent lane: queuing the backlog",
    );
    let streams = super::load::spread(opts.streams, spread);
    let intake_secs = cluster::queue_bulk(
        &replicas,
        std::slice::from_ref(&ip),
        "bulk",
        opts.backlog,
        streams,
        &bar,
    )
    .await?;
    bar.finish_and_clear();

    // The destination comes back: the backlog drains while urgent reports
    // keep arriving.
    c.restart(1).await?;
    let bar = super::bar(opts.json, opts.backlog as u64, "urgent lane: draining");
    let drain_started = Instant::now();
    let mut during = Vec::new();
    let (mut most, mut little) = (Vec::new(), Vec::new());
    let mut by_backlog = Scatter::default();
    let (most_from, little_below) = split_at(opts.backlog);
    let mut left = cluster::queued(&mut client).await?;
    let mut n = opts.urgent;
    // At least one urgent report is measured while the backlog drains,
    // however quickly it drains.
    let drained_at = loop {
        let cl = &mut replicas[n % spread];
        let took = urgent_latency(&core, &receipts, cl, &ip, &format!("urgent/{n}")).await?;
        // Queued when it was submitted, as last counted (just before the
        // pause between samples).
        if left >= most_from {
            most.push(took);
        } else if left < little_below {
            little.push(took);
        }
        during.push(took);
        by_backlog.push(left, took);
        n += 1;
        left = cluster::queued(&mut client).await?;
        bar.set_position(opts.backlog.saturating_sub(left as usize) as u64);
        if left == 0 {
            break drain_started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        if drain_started.elapsed() > Duration::from_secs(3600) {
            anyhow::bail!("the backlog did not drain in an hour");
        }
    };
    bar.finish_and_clear();
    let drain_secs = drained_at.as_secs_f64();
    drop(receipts);
    c.shutdown().await;
    Ok(UrgentLane {
        backlog: opts.backlog,
        intake_per_sec: opts.backlog as f64 / intake_secs,
        drain_per_sec: opts.backlog as f64 / drain_secs,
        drain_secs,
        urgent_idle: Latency::of(idle),
        urgent_during_drain: Latency::of(during),
        urgent_most_queued: Latency::of(most),
        urgent_little_queued: Latency::of(little),
        by_backlog,
    })
}

/// The split of the drain's samples: at least half of the backlog still
/// queued, and less than a tenth of it.
fn split_at(backlog: usize) -> (u64, u64) {
    (backlog.div_ceil(2) as u64, (backlog / 10) as u64)
}

pub fn print(r: &UrgentLane) {
    println!();
    println!(
        "urgent lane: bulk backlog of {} queued at {:.0}/s, drained at {:.0}/s ({:.1} s)",
        r.backlog, r.intake_per_sec, r.drain_per_sec, r.drain_secs
    );
    println!(
        "  {:<40} {:>8} {:>9} {:>9} {:>9}",
        "urgent report → receipt stored", "samples", "p50 ms", "p99 ms", "max ms"
    );
    let (most_from, little_below) = split_at(r.backlog);
    let most = format!("  with ≥ {most_from} still queued");
    let little = format!("  with < {little_below} still queued");
    for (what, l) in [
        ("peer idle", &r.urgent_idle),
        ("while the backlog drains", &r.urgent_during_drain),
        (most.as_str(), &r.urgent_most_queued),
        (little.as_str(), &r.urgent_little_queued),
    ] {
        println!(
            "  {:<40} {:>8} {:>9.1} {:>9.1} {:>9.1}",
            what, l.samples, l.p50_ms, l.p99_ms, l.max_ms
        );
    }
}
