//! Near-duplicate matching at scale: the destination holds `pdq` open
//! cases, each with a PDQ hash of its own, and urgent reports' latency
//! (submitted at the origin → signed receipt stored at the origin) is
//! measured for new media and for near-duplicates of stored media (which
//! the destination matches, within 31 bits, to their open case).

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde::Serialize;
use tonic::transport::Channel;

use super::cluster::{self, Cluster, Receipts, Spec};
use super::{Latency, Options};
use crate::node::Core;
use crate::pb;
use crate::pb::operator_client::OperatorClient;

#[derive(Debug, Clone, Serialize)]
pub struct PdqScale {
    /// Open cases stored at the destination, each with one PDQ hash.
    pub stored: usize,
    /// Those reports delivered per second while they were loaded.
    pub load_per_sec: f64,
    /// Urgent reports of media not seen before.
    pub urgent_new: Latency,
    /// Urgent reports of media within 8 bits of a stored hash.
    pub urgent_near_duplicate: Latency,
    /// Of those, how many the destination joined to the stored case.
    pub near_duplicates_joined: usize,
}

/// The PDQ hash of report `i`: 256 random bits from a fixed seed.
fn hash_of(i: u64) -> [u8; 32] {
    let mut h = [0u8; 32];
    rand::rngs::StdRng::seed_from_u64(i).fill(&mut h);
    h
}

/// `h` with `bits` of its bits flipped (distinct positions from `seed`).
fn near(mut h: [u8; 32], bits: u32, seed: u64) -> [u8; 32] {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut flipped = 0;
    let mut seen = [false; 256];
    while flipped < bits {
        let b: usize = rng.gen_range(0..256);
        if !std::mem::replace(&mut seen[b], true) {
            h[b / 8] ^= 1 << (b % 8);
            flipped += 1;
        }
    }
    h
}

fn request(ip: &str, path: &str, pdq: &[u8; 32], urgent: bool) -> pb::SubmitReportRequest {
    let priority = if urgent {
        pb::Priority::Urgent
    } else {
        pb::Priority::Bulk
    };
    pb::SubmitReportRequest {
        urls: vec![format!("http://{ip}/{path}")],
        category: "csam".into(),
        priority: priority as i32,
        hashes: vec![pb::MediaHash {
            algorithm: "pdq".into(),
            value: hex::encode(pdq),
        }],
        ..Default::default()
    }
}

/// Submits one urgent report of `pdq` and waits until its receipt is
/// stored: how long that took, and the report's id.
async fn urgent_latency(
    core: &Core,
    receipts: &Receipts,
    client: &mut OperatorClient<Channel>,
    r: pb::SubmitReportRequest,
) -> anyhow::Result<(Duration, String)> {
    let started = Instant::now();
    let id = client.submit_report(r).await?.into_inner().report_id;
    let seq = cluster::seq_of(core, &id).await?;
    let at = receipts.wait(seq, Duration::from_secs(120)).await?;
    Ok((at.saturating_duration_since(started), id))
}

/// How many of the reports `ids` (from the origin) the destination
/// joined to a case it already had.
async fn joined(destination: &Core, ids: &[String]) -> anyhow::Result<usize> {
    let mut n = 0;
    for id in ids {
        let rows = destination.store.reports_by_id(None, id).await?;
        n += usize::from(rows.iter().any(|r| r.joined_to.is_some()));
    }
    Ok(n)
}

pub async fn run(opts: &Options) -> anyhow::Result<PdqScale> {
    let ip = cluster::address_in("DE")?.to_string();
    let c = Cluster::start(
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
    )
    .await?;
    let core = c.core(0)?;
    let receipts = Receipts::watch(&core);
    let mut client = c.client(0).await?;
    let stored = opts.pdq;
    let bar = super::bar(opts.json, stored as u64, "pdq: storing open cases");
    let started = Instant::now();
    let ip_load = ip.clone();
    let progress = bar.clone();
    cluster::submit_stream(
        &mut client.clone(),
        cluster::STREAM_WINDOW,
        None,
        move |i| {
            (i < stored as u64).then(|| request(&ip_load, &format!("pdq/{i}"), &hash_of(i), false))
        },
        move |_| progress.inc(1),
    )
    .await?;
    cluster::wait_drained(&mut client, Duration::from_secs(3600)).await?;
    let load_secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let bar = super::bar(opts.json, 2 * opts.urgent as u64, "pdq: urgent reports");
    let (mut new, mut dup, mut dup_ids) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..opts.urgent as u64 {
        let fresh = hash_of(u64::MAX - n);
        let r = request(&ip, &format!("pdq-new/{n}"), &fresh, true);
        new.push(urgent_latency(&core, &receipts, &mut client, r).await?.0);
        let of = (n * 7_919) % stored.max(1) as u64;
        let similar = near(hash_of(of), 8, n);
        let r = request(&ip, &format!("pdq-near/{n}"), &similar, true);
        let (latency, id) = urgent_latency(&core, &receipts, &mut client, r).await?;
        dup.push(latency);
        dup_ids.push(id);
        bar.inc(2);
    }
    bar.finish_and_clear();
    let near_duplicates_joined = joined(&*c.core(1)?, &dup_ids).await?;
    drop(receipts);
    c.shutdown().await;
    Ok(PdqScale {
        stored,
        load_per_sec: stored as f64 / load_secs.max(1e-9),
        urgent_new: Latency::of(new),
        urgent_near_duplicate: Latency::of(dup),
        near_duplicates_joined,
    })
}

pub fn print(r: &PdqScale) {
    println!();
    println!(
        "near-duplicate media: {} open cases with a PDQ hash each at the destination (loaded at {:.0}/s)",
        r.stored, r.load_per_sec
    );
    println!(
        "  {:<40} {:>8} {:>9} {:>9} {:>9}",
        "urgent report → receipt stored", "samples", "p50 ms", "p99 ms", "max ms"
    );
    for (what, l) in [
        ("new media", &r.urgent_new),
        ("near-duplicate of a stored case", &r.urgent_near_duplicate),
    ] {
        println!(
            "  {:<40} {:>8} {:>9.1} {:>9.1} {:>9.1}",
            what, l.samples, l.p50_ms, l.p99_ms, l.max_ms
        );
    }
    println!(
        "  near-duplicates joined to their stored case: {} of {}",
        r.near_duplicates_joined, r.urgent_near_duplicate.samples
    );
}
