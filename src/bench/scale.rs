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
use tonic::transport::Channel;

use super::Options;
use super::cluster::{self, Cluster, Spec};
use crate::pb;
use crate::pb::operator_client::OperatorClient;

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

/// A report to submit: `(hosting address, where it belongs)`, the node id
/// of its destination, or `None` when it is kept at the origin.
type Placed = (String, Option<String>);

pub async fn run(opts: &Options) -> anyhow::Result<Scale> {
    super::reset_peak_rss();
    let chosen = choose_hotlines(opts.scale_nodes)?;
    let specs = specs(&chosen);
    let first = first_hotlines(&chosen);
    let relays = relays(&first);
    let hotlines_started = chosen.len();
    let countries: BTreeSet<&String> = chosen.iter().map(|(cc, _)| cc).collect();
    let countries = countries.len();

    let bar = super::bar(opts.json, specs.len() as u64, "scale: starting nodes");
    let started = Instant::now();
    let c = Cluster::start(&opts.dir, &specs, Some(FALLBACK), &relays).await?;
    bar.finish_and_clear();
    let start_secs = started.elapsed().as_secs_f64();

    let plan = Arc::new(plan(&first, opts.scale_reports)?);
    let client = c.client(0).await?;
    let t0 = Instant::now();
    let ids = submit_all(client, &plan, opts).await?;
    wait_delivered(&c, plan.len(), t0, opts.json).await?;
    let secs = t0.elapsed().as_secs_f64();
    let rss_peak = super::rss_mib().1;

    let tally = check(&c, &plan, &ids).await?;
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
        routes: tally.routes,
        hops: tally.hops,
        correct: tally.correct,
        wrong: tally.wrong,
        destinations_reached: tally.reached.len(),
        rss_peak_mib: rss_peak,
    })
}

/// The hotlines started, `(country, node id)`: France (the origin) first,
/// then the others in file order, up to `scale_nodes - 1` (the fallback
/// is the last node).
fn choose_hotlines(scale_nodes: usize) -> anyhow::Result<Vec<(String, String)>> {
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
    let want = scale_nodes.clamp(2, named.len() + 1) - 1;
    let mut chosen = vec![named[fr].clone()];
    for (i, n) in named.iter().enumerate() {
        if chosen.len() >= want {
            break;
        }
        if i != fr {
            chosen.push(n.clone());
        }
    }
    Ok(chosen)
}

/// The nodes to provision: the chosen hotlines, then the fallback.
/// Directory order is file order (it decides between a country's
/// hotlines), with the origin moved first: the same for every country
/// but France, which has one hotline.
fn specs(chosen: &[(String, String)]) -> Vec<Spec> {
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
    specs
}

/// Country → its first hotline started: where its reports belong.
fn first_hotlines(chosen: &[(String, String)]) -> HashMap<String, String> {
    let mut first: HashMap<String, String> = HashMap::new();
    for (cc, id) in chosen {
        first.entry(cc.clone()).or_insert_with(|| id.clone());
    }
    first
}

/// `(node, reached through)` for the pairs of [`RELAYED`] whose two
/// countries both have a hotline started.
fn relays(first: &HashMap<String, String>) -> Vec<(String, String)> {
    RELAYED
        .iter()
        .filter_map(|(cc, via)| Some((first.get(*cc)?.clone(), first.get(*via)?.clone())))
        .collect()
}

/// `n` reports' hosting addresses, drawn from the public IPv4 space with a
/// fixed seed (the same every run), each with where it belongs by the
/// shipped data: kept at the origin when the country is France or
/// unknown, else the country's first hotline, else the fallback.
fn plan(first: &HashMap<String, String>, n: usize) -> anyhow::Result<Vec<Placed>> {
    let geo = crate::geo::GeoDb::embedded()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(53);
    let mut plan: Vec<Placed> = Vec::with_capacity(n);
    while plan.len() < n {
        let a = Ipv4Addr::from(rng.r#gen::<u32>());
        if !is_public(a) {
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
    Ok(plan)
}

/// Whether content could be hosted at `a`: not a private, loopback,
/// link-local, multicast, broadcast, unspecified, documentation, reserved
/// (240/4), "this network" (0/8) or shared (100.64/10) address.
fn is_public(a: Ipv4Addr) -> bool {
    !(a.is_private()
        || a.is_loopback()
        || a.is_link_local()
        || a.is_multicast()
        || a.is_broadcast()
        || a.is_unspecified()
        || a.is_documentation()
        || a.octets()[0] >= 240
        || a.octets()[0] == 0
        || (a.octets()[0] == 100 && (a.octets()[1] & 0xc0) == 64))
}

/// Submits every report of `plan` at the origin, `concurrency` at a time;
/// returns their report ids, in plan order.
async fn submit_all(
    client: OperatorClient<Channel>,
    plan: &Arc<Vec<Placed>>,
    opts: &Options,
) -> anyhow::Result<Vec<String>> {
    let bar = super::bar(
        opts.json,
        plan.len() as u64,
        "scale: submitting at the origin",
    );
    let next = Arc::new(AtomicUsize::new(0));
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
    Ok(ids)
}

/// Waits until no node has anything left to send (reports, and receipts
/// travelling back through relays): then every report is delivered.
/// Gives up four hours after `t0`.
async fn wait_delivered(
    c: &Cluster,
    reports: usize,
    t0: Instant,
    json: bool,
) -> anyhow::Result<()> {
    let bar = super::bar(json, reports as u64, "scale: delivering");
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
        bar.set_position(reports.saturating_sub(left as usize) as u64);
        if left == 0 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(4 * 3600) {
            anyhow::bail!("the simulated federation did not deliver in four hours");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bar.finish_and_clear();
    Ok(())
}

/// What the checks found.
#[derive(Default)]
struct Tally {
    /// Reports by where they were meant to go: `peer`, `fallback`, `local`.
    routes: BTreeMap<String, usize>,
    /// Reports found where they belong, by hops (0 = kept at the origin).
    hops: BTreeMap<usize, usize>,
    /// Destinations that hold at least one report where it belongs.
    reached: BTreeSet<String>,
    correct: usize,
    wrong: usize,
}

/// Looks every report of `plan` (report ids `ids`) up where it should
/// be, with one query per node.
async fn check(c: &Cluster, plan: &[Placed], ids: &[String]) -> anyhow::Result<Tally> {
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
    let at = stored_hops(&c.configs[1..], &origin).await?;
    Ok(tally(plan, ids, &local, &delivered, &at))
}

/// At each node of `configs`: report id → hops in the envelope it stored,
/// for `origin`'s reports (1 = direct).
async fn stored_hops(
    configs: &[crate::config::NodeConfig],
    origin: &str,
) -> anyhow::Result<HashMap<String, HashMap<String, usize>>> {
    let mut at: HashMap<String, HashMap<String, usize>> = HashMap::new();
    for cfg in configs {
        let pool = read_pool(&cfg.database).await?;
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT report_id, envelope FROM reports WHERE origin = ?1 AND relay = 0",
        )
        .bind(origin)
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
    Ok(at)
}

/// Counts each report as correct or wrong: one kept at the origin must be
/// there with no delivery; one for a destination must be stored there,
/// with its receipt (`delivered`) stored at the origin.
fn tally(
    plan: &[Placed],
    ids: &[String],
    local: &BTreeSet<String>,
    delivered: &HashMap<String, (String, String)>,
    at: &HashMap<String, HashMap<String, usize>>,
) -> Tally {
    let mut t = Tally::default();
    for ((_, want), id) in plan.iter().zip(ids) {
        match want {
            None => {
                *t.routes.entry("local".into()).or_default() += 1;
                if local.contains(id) && !delivered.contains_key(id) {
                    t.correct += 1;
                    *t.hops.entry(0).or_default() += 1;
                } else {
                    t.wrong += 1;
                }
            }
            Some(dest) => {
                let kind = if dest == FALLBACK { "fallback" } else { "peer" };
                *t.routes.entry(kind.into()).or_default() += 1;
                let receipt = delivered
                    .get(id)
                    .is_some_and(|(d, s)| d == dest && s == "delivered");
                match at.get(dest).and_then(|m| m.get(id)) {
                    Some(h) if receipt => {
                        t.correct += 1;
                        t.reached.insert(dest.clone());
                        *t.hops.entry(*h).or_default() += 1;
                    }
                    _ => t.wrong += 1,
                }
            }
        }
    }
    t
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
