//! Scale, simulated: the federation of the example INHOPE-style directory
//! (53 hotlines in 49 countries, `tests/data/inhope-directory-example.csv`,
//! the same file as `../shared/data/directory/`) and a law-enforcement
//! fallback, every node real and in this process. The French hotline
//! submits reports whose hosting addresses are drawn uniformly from the
//! IPv4 space and placed by the shipped dataset; a few small hotlines are
//! reached through relays. Afterwards each report is looked up where it
//! should be: at the first hotline (directory order) of its hosting
//! country, at the fallback when that country has no hotline, kept at the
//! origin when the country is France or unknown — and its receipt stored
//! at the origin. Hops are counted from the envelope the destination
//! stored (1 = direct).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prost::Message;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

use super::Options;
use super::cluster::{self, Cluster, Spec};
use crate::pb;

const CSV: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/inhope-directory-example.csv"
));
const FALLBACK: &str = "LE-FALLBACK";
/// `(country, reached through country)`: small hotlines behind a regional
/// one (Kazakhstan behind Ukraine, behind Romania: three hops).
const RELAYED: [(&str, &str); 6] = [
    ("AL", "RO"),
    ("BA", "RO"),
    ("MD", "RO"),
    ("UA", "RO"),
    ("KZ", "UA"),
    ("TH", "JP"),
];

#[derive(Debug, Clone, Serialize)]
pub struct Scale {
    /// Nodes started: hotlines and the fallback.
    pub nodes: usize,
    pub hotlines: usize,
    pub countries: usize,
    pub reports: usize,
    pub start_secs: f64,
    /// Submitted at the origin → every receipt stored at the origin.
    pub secs: f64,
    pub per_sec: f64,
    /// Where reports went: `peer`, `fallback`, `local`.
    pub routes: BTreeMap<String, usize>,
    /// Hops from the origin to the destination (1 = direct); 0 = kept at
    /// the origin.
    pub hops: BTreeMap<usize, usize>,
    /// Reports found where they belong, with their receipt at the origin.
    pub correct: usize,
    /// Reports not at the right node, or without a receipt.
    pub wrong: usize,
    pub destinations_reached: usize,
    /// Peak resident memory of the process while it ran, MiB.
    pub rss_peak_mib: f64,
}

/// `(country, hotline name)` rows, in file order.
fn hotlines() -> Vec<(String, String)> {
    CSV.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .skip(1)
        .filter_map(|l| {
            let mut f = l.splitn(3, ',');
            Some((f.next()?.to_owned(), f.next()?.to_owned()))
        })
        .collect()
}

/// A node id from a hotline's name: A-Z, 0-9 and '-', at most 32
/// characters, unique with a numeric suffix.
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

async fn read_pool(db: &crate::store::Database) -> anyhow::Result<sqlx::SqlitePool> {
    let path = db
        .sqlite_path()
        .ok_or_else(|| anyhow::anyhow!("the scale bench runs on SQLite"))?;
    Ok(SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(path).read_only(true))
        .await?)
}

pub async fn run(opts: &Options) -> anyhow::Result<Scale> {
    super::reset_peak_rss();
    // The hotlines started: France (the origin) first, then the others in
    // file order, up to `scale_nodes - 1`; the fallback last.
    let all = hotlines();
    let mut taken = BTreeSet::new();
    let mut named: Vec<(String, String)> = Vec::new(); // (country, id)
    for (cc, name) in &all {
        let id = node_id(name, &taken);
        taken.insert(id.clone());
        named.push((cc.clone(), id));
    }
    let fr = named
        .iter()
        .position(|(cc, _)| cc == "FR")
        .ok_or_else(|| anyhow::anyhow!("the directory has no French hotline"))?;
    let want = opts.scale_nodes.clamp(2, named.len() + 1) - 1;
    let mut chosen = vec![named[fr].clone()];
    for (i, n) in named.iter().enumerate() {
        if chosen.len() >= want {
            break;
        }
        if i != fr {
            chosen.push(n.clone());
        }
    }
    // Directory order is file order (it decides between a country's
    // hotlines), with the origin moved first: the same for every country
    // but France, which has one hotline.
    let mut specs: Vec<Spec> = chosen
        .iter()
        .map(|(cc, id)| Spec {
            id: id.clone(),
            countries: vec![cc.clone()],
        })
        .collect();
    specs.push(Spec {
        id: FALLBACK.into(),
        countries: vec![],
    });
    // Country → its first hotline started.
    let mut first: HashMap<String, String> = HashMap::new();
    for (cc, id) in &chosen {
        first.entry(cc.clone()).or_insert_with(|| id.clone());
    }
    let relays: Vec<(String, String)> = RELAYED
        .iter()
        .filter_map(|(cc, via)| Some((first.get(*cc)?.clone(), first.get(*via)?.clone())))
        .collect();
    let hotlines_started = chosen.len();
    let countries: BTreeSet<&String> = chosen.iter().map(|(cc, _)| cc).collect();
    let countries = countries.len();

    let bar = super::bar(opts.json, specs.len() as u64, "scale: starting nodes");
    let started = Instant::now();
    let c = Cluster::start(&opts.dir, &specs, Some(FALLBACK), &relays).await?;
    bar.finish_and_clear();
    let start_secs = started.elapsed().as_secs_f64();
    let index: HashMap<String, usize> = c
        .configs
        .iter()
        .enumerate()
        .map(|(i, cfg)| (cfg.node_id.to_string(), i))
        .collect();

    // Addresses, and where each report belongs.
    let geo = crate::geo::GeoDb::embedded()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(53);
    let mut plan: Vec<(String, Option<String>)> = Vec::with_capacity(opts.scale_reports);
    while plan.len() < opts.scale_reports {
        let a = Ipv4Addr::from(rng.r#gen::<u32>());
        if a.is_private()
            || a.is_loopback()
            || a.is_link_local()
            || a.is_multicast()
            || a.is_broadcast()
            || a.is_unspecified()
            || a.is_documentation()
            || a.octets()[0] >= 240
            || a.octets()[0] == 0
            || (a.octets()[0] == 100 && (a.octets()[1] & 0xc0) == 64)
        {
            continue;
        }
        let want = match geo.lookup(a.into()).country {
            None => None,
            Some(cc) if cc == "FR" => None,
            Some(cc) => Some(
                first
                    .get(&cc)
                    .cloned()
                    .unwrap_or_else(|| FALLBACK.to_owned()),
            ),
        };
        plan.push((a.to_string(), want));
    }

    let client = c.client(0).await?;
    let bar = super::bar(
        opts.json,
        plan.len() as u64,
        "scale: submitting at the origin",
    );
    let t0 = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let plan = Arc::new(plan);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..opts.concurrency.max(1) {
        let mut cl = client.clone();
        let (next, plan, bar) = (next.clone(), plan.clone(), bar.clone());
        tasks.spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= plan.len() {
                    return Ok::<_, anyhow::Error>(ids);
                }
                let id = cluster::submit(&mut cl, &plan[i].0, &format!("scale/{i}"), false).await?;
                ids.push((i, id));
                bar.inc(1);
            }
        });
    }
    let mut ids = vec![String::new(); plan.len()];
    while let Some(r) = tasks.join_next().await {
        for (i, id) in r?? {
            ids[i] = id;
        }
    }
    bar.finish_and_clear();
    // Delivered when no node has anything left to send (reports, and
    // receipts travelling back through relays).
    let bar = super::bar(opts.json, plan.len() as u64, "scale: delivering");
    loop {
        let mut left = 0i64;
        for n in c.nodes.iter().flatten() {
            left += n
                .core
                .store
                .outbox_summary()
                .await?
                .iter()
                .map(|q| q.depth)
                .sum::<i64>();
        }
        bar.set_position(plan.len().saturating_sub(left as usize) as u64);
        if left == 0 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(4 * 3600) {
            anyhow::bail!("the simulated federation did not deliver in four hours");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let rss_peak = super::rss_mib().1;

    // Checks, one query per node.
    let origin = c.configs[0].node_id.to_string();
    let pool = read_pool(&c.configs[0].database).await?;
    let local: BTreeSet<String> = sqlx::query_scalar(
        "SELECT report_id FROM reports WHERE origin = ?1 AND direction = 'local'",
    )
    .bind(&origin)
    .fetch_all(&pool)
    .await?
    .into_iter()
    .collect();
    let delivered: HashMap<String, (String, String)> = sqlx::query_as::<_, (String, String, String)>(
        "SELECT r.report_id, d.destination, d.state FROM reports r JOIN deliveries d ON d.report_seq = r.seq WHERE r.origin = ?1",
    )
    .bind(&origin)
    .fetch_all(&pool)
    .await?
    .into_iter()
    .map(|(id, d, s)| (id, (d, s)))
    .collect();
    pool.close().await;
    // At each destination: report id → hops in the stored envelope.
    let mut at: HashMap<String, HashMap<String, usize>> = HashMap::new();
    for cfg in &c.configs[1..] {
        let pool = read_pool(&cfg.database).await?;
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT report_id, envelope FROM reports WHERE origin = ?1 AND relay = 0",
        )
        .bind(&origin)
        .fetch_all(&pool)
        .await?;
        pool.close().await;
        let m = rows
            .into_iter()
            .map(|(id, env)| {
                let hops = pb::Envelope::decode(env.as_slice()).map_or(0, |e| e.hops.len());
                (id, hops + 1)
            })
            .collect();
        at.insert(cfg.node_id.to_string(), m);
    }
    let mut routes: BTreeMap<String, usize> = BTreeMap::new();
    let mut hops: BTreeMap<usize, usize> = BTreeMap::new();
    let mut reached = BTreeSet::new();
    let (mut correct, mut wrong) = (0, 0);
    for ((_, want), id) in plan.iter().zip(&ids) {
        match want {
            None => {
                *routes.entry("local".into()).or_default() += 1;
                if local.contains(id) && !delivered.contains_key(id) {
                    correct += 1;
                    *hops.entry(0).or_default() += 1;
                } else {
                    wrong += 1;
                }
            }
            Some(dest) => {
                let kind = if dest == FALLBACK { "fallback" } else { "peer" };
                *routes.entry(kind.into()).or_default() += 1;
                let receipt = delivered
                    .get(id)
                    .is_some_and(|(d, s)| d == dest && s == "delivered");
                match at.get(dest).and_then(|m| m.get(id)) {
                    Some(h) if receipt => {
                        correct += 1;
                        reached.insert(dest.clone());
                        *hops.entry(*h).or_default() += 1;
                    }
                    _ => wrong += 1,
                }
            }
        }
    }
    let _ = index;
    let nodes = c.configs.len();
    c.shutdown().await;
    Ok(Scale {
        nodes,
        hotlines: hotlines_started,
        countries,
        reports: plan.len(),
        start_secs,
        secs,
        per_sec: plan.len() as f64 / secs,
        routes,
        hops,
        correct,
        wrong,
        destinations_reached: reached.len(),
        rss_peak_mib: rss_peak,
    })
}

pub fn print(s: &Scale) {
    println!();
    println!(
        "scale, simulated: {} nodes ({} hotlines in {} countries + fallback) in one process, started in {:.1} s",
        s.nodes, s.hotlines, s.countries, s.start_secs
    );
    println!(
        "  {} reports from the French hotline, hosting addresses drawn from the shipped IPv4 data",
        s.reports
    );
    println!(
        "  submitted → every receipt stored: {:.1} s, {:.0} reports/s; peak RSS {:.0} MiB",
        s.secs, s.per_sec, s.rss_peak_mib
    );
    let routes: Vec<String> = s.routes.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("  routes: {}", routes.join(", "));
    let hops: Vec<String> = s
        .hops
        .iter()
        .map(|(h, n)| match h {
            0 => format!("kept here {n}"),
            1 => format!("1 hop {n}"),
            h => format!("{h} hops {n}"),
        })
        .collect();
    println!("  hops: {}", hops.join(", "));
    println!(
        "  where they belong, receipt stored: {} of {} ({} wrong); {} destinations reached",
        s.correct, s.reports, s.wrong, s.destinations_reached
    );
}
