//! Throughput, latency at fractions of it, and backlog drain, between an
//! origin and `--nodes - 1` destinations.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::cluster::{self, Cluster, STREAM_WINDOW, Spec};
use super::series::{Cdf, Curve, Rates};
use super::{Latency, Options};

/// Destination countries, in order, for `--nodes` > 2.
const COUNTRIES: [&str; 12] = [
    "DE", "NL", "SE", "IT", "ES", "PL", "AT", "BE", "DK", "FI", "IE", "PT",
];

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub nodes: usize,
    /// Bulk-intake streams, each with `STREAM_WINDOW` submissions in flight
    /// (`--streams`, rounded up to a multiple of the origin's replicas).
    pub streams: usize,
    pub measured_secs: f64,
    /// Reports accepted at the origin per second (committed before the
    /// answer).
    pub intake_per_sec: f64,
    /// Reports whose destination's signed receipt was stored at the origin,
    /// per second, over the same window: the sustained end-to-end rate.
    pub end_to_end_per_sec: f64,
    /// Undelivered at the origin at the end of the window (growing when
    /// intake outruns delivery).
    pub queued_at_end: u64,
    /// CPU time of the whole process (all nodes and the load generator)
    /// per delivered report, microseconds.
    pub cpu_us_per_report: f64,
    /// Where that goes: CPU by thread group, context switches, bytes
    /// written and allocations, per delivered report.
    pub breakdown: super::usage::Breakdown,
    /// On PostgreSQL (on loopback): the server's CPU and bytes written.
    pub postgres_server: Option<super::postgres::ServerShare>,
    /// Intake and delivery latency while saturated (closed loop), for
    /// context: the submitters wait for each answer.
    pub submit_latency: Latency,
    /// Intake and end to end per interval of the window.
    pub series: Rates,
}

/// Single `SubmitReport` calls (what analysts, the console and most
/// integrations send), saturated: `in_flight` callers, each sending its
/// next report as soon as the last was answered.
#[derive(Debug, Clone, Serialize)]
pub struct Singles {
    pub in_flight: usize,
    pub measured_secs: f64,
    /// Calls answered per second (each report committed before its answer).
    pub per_sec: f64,
    /// Sent → answered.
    pub answered: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyAt {
    /// Fraction of the saturated single-submission rate offered.
    pub fraction: f64,
    pub offered_per_sec: f64,
    pub secs: f64,
    /// Submission (scheduled send time, open loop) → signed receipt stored
    /// at the origin.
    pub end_to_end: Latency,
    pub distribution: Cdf,
    /// Reports without a receipt within the wait after the level (should
    /// be 0), and case events the watcher missed.
    pub missing: usize,
    pub lagged: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Drain {
    pub reports: usize,
    pub nodes: usize,
    pub intake_per_sec: f64,
    pub drain_secs: f64,
    pub drain_per_sec: f64,
    /// Resident memory of this process — the origin, the load generator,
    /// and the destinations while they are down —, MiB: before queuing,
    /// peak (VmHWM, reset at the start of the scenario), and after
    /// draining.
    pub rss_before_mib: f64,
    pub rss_peak_mib: f64,
    pub rss_after_mib: f64,
    /// Whether the peak is this scenario's own (VmHWM could be reset).
    pub peak_reset: bool,
    /// The destinations come back as processes of their own (one per
    /// replica): the highest peak (VmHWM) of any of them while the backlog
    /// drained, MiB.
    pub destination_rss_peak_mib: f64,
    pub destination_processes: usize,
    /// Reports still queued at the origin while the backlog drained.
    pub curve: Curve,
}

fn specs(nodes: usize) -> Vec<Spec> {
    let mut s = vec![Spec {
        id: "FR-BENCH".into(),
        countries: vec!["FR".into()],
    }];
    for cc in COUNTRIES
        .iter()
        .take(nodes.clamp(2, COUNTRIES.len() + 1) - 1)
    {
        s.push(Spec {
            id: format!("{cc}-BENCH"),
            countries: vec![(*cc).to_owned()],
        });
    }
    s
}

/// One address per destination.
fn addresses(c: &Cluster) -> anyhow::Result<Vec<String>> {
    c.configs[1..]
        .iter()
        .map(|cfg| {
            let cc = cfg.node_id.as_str().split('-').next().unwrap_or("DE");
            Ok(cluster::address_in(cc)?.to_string())
        })
        .collect()
}

/// Bulk-intake streams: at least one, and as many on each of the origin's
/// `replicas` (`streams` rounded up to a multiple of them).
pub fn spread(streams: usize, replicas: usize) -> usize {
    let r = replicas.max(1);
    streams.max(1).div_ceil(r) * r
}

/// Throughput: submitters hold while more than this many reports wait at
/// the origin (the figure is a sustained rate, not a growing queue).
pub const MAX_QUEUED: u64 = 8192;

/// Single submissions kept in flight to saturate the origin.
pub const SINGLES_IN_FLIGHT: usize = 256;

/// What the throughput and latency scenarios measure on one cluster.
pub struct Measured {
    pub throughput: Throughput,
    /// With latency: the saturated single-submission rate, and the levels
    /// at fractions of it.
    pub singles: Option<Singles>,
    pub latency: Option<Vec<LatencyAt>>,
}

pub async fn throughput_and_latency(opts: &Options, latency: bool) -> anyhow::Result<Measured> {
    let (c, ips) = start_warm(opts).await?;
    let mut client = c.client(0).await?;
    let throughput = throughput(opts, &c, &ips).await?;
    let (mut singles, mut levels) = (None, None);
    if latency {
        cluster::wait_drained(&mut client, Duration::from_secs(3600)).await?;
        let saturated = single_submissions(opts, &c, &ips).await?;
        cluster::wait_drained(&mut client, Duration::from_secs(3600)).await?;
        let mut v = Vec::new();
        for f in [0.25, 0.5, 0.9] {
            v.push(level(opts, &c, &ips, f, f * saturated.per_sec).await?);
        }
        singles = Some(saturated);
        levels = Some(v);
    }
    c.shutdown().await;
    Ok(Measured {
        throughput,
        singles,
        latency: levels,
    })
}

/// Closed loop: `SINGLES_IN_FLIGHT` callers of `SubmitReport` for half the
/// duration, after a warm-up that is not counted.
async fn single_submissions(
    opts: &Options,
    c: &Cluster,
    ips: &[String],
) -> anyhow::Result<Singles> {
    let replicas = c.clients(0).await?;
    let answered = Arc::new(AtomicU64::new(0));
    let (counting, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..SINGLES_IN_FLIGHT {
        let mut cl = replicas[w % replicas.len()].clone();
        let ip = ips[w % ips.len()].clone();
        let (answered, counting, stop) = (answered.clone(), counting.clone(), stop.clone());
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                cluster::submit(&mut cl, &ip, &format!("single/{w}/{i}"), false).await?;
                if counting.load(Ordering::Relaxed) {
                    answered.fetch_add(1, Ordering::Relaxed);
                    lat.push(sent.elapsed());
                }
                i += 1;
            }
            anyhow::Ok(lat)
        });
    }
    let secs = (opts.duration.as_secs_f64() / 2.0).max(1.0);
    let bar = super::bar(opts.json, secs as u64, "single submissions: saturating (s)");
    tokio::time::sleep(Duration::from_secs_f64((secs / 5.0).min(2.0))).await;
    counting.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < secs {
        tokio::time::sleep(Duration::from_millis(100)).await;
        bar.set_position(t0.elapsed().as_secs());
    }
    counting.store(false, Ordering::Relaxed);
    let dt = t0.elapsed().as_secs_f64();
    let n = answered.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    bar.finish_and_clear();
    let mut lat = Vec::new();
    while let Some(r) = tasks.join_next().await {
        lat.extend(r??);
    }
    Ok(Singles {
        in_flight: SINGLES_IN_FLIGHT,
        measured_secs: dt,
        per_sec: n as f64 / dt,
        answered: Latency::of(lat),
    })
}

/// The origin and `--nodes - 1` destinations, started, each destination
/// sent one report (connections up); with the addresses of the
/// destinations.
pub(super) async fn start_warm(opts: &Options) -> anyhow::Result<(Cluster, Vec<String>)> {
    let c = Cluster::start_on(&opts.backend, &opts.dir, &specs(opts.nodes)).await?;
    let ips = addresses(&c)?;
    let mut client = c.client(0).await?;
    for (i, ip) in ips.iter().enumerate() {
        cluster::submit(&mut client, ip, &format!("warm/{i}"), true).await?;
    }
    cluster::wait_drained(&mut client, Duration::from_secs(60)).await?;
    Ok((c, ips))
}

/// Sustained end-to-end throughput of a started cluster's origin.
pub(super) async fn throughput(
    opts: &Options,
    c: &Cluster,
    ips: &[String],
) -> anyhow::Result<Throughput> {
    let mut client = c.client(0).await?;
    let replicas = c.clients(0).await?;
    let submitted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    // Bulk submitters on the streaming intake, each keeping a window of
    // unanswered submissions.
    let hold = Arc::new(AtomicBool::new(false));
    let streams = spread(opts.streams, replicas.len());
    for w in 0..streams {
        let mut cl = replicas[w % replicas.len()].clone();
        let (submitted, stop) = (submitted.clone(), stop.clone());
        let ips = ips.to_vec();
        let hold = hold.clone();
        tasks.spawn(async move {
            cluster::submit_stream(
                &mut cl,
                STREAM_WINDOW,
                Some(hold),
                move |i| {
                    (!stop.load(Ordering::Relaxed)).then(|| {
                        let ip = &ips[(w + i as usize) % ips.len()];
                        cluster::bulk_request(ip, &format!("load/{w}/{i}"))
                    })
                },
                move |_| {
                    submitted.fetch_add(1, Ordering::Relaxed);
                },
            )
            .await
        });
    }
    let secs = opts.duration.as_secs_f64().max(1.0);
    let bar = super::bar(opts.json, secs as u64, "throughput: saturating (s)");
    // A warm-up of a fifth of the window (at most 3 s) is not counted.
    let warm = Duration::from_secs_f64((secs / 5.0).min(3.0));
    let started = Instant::now();
    tokio::time::sleep(warm).await;
    let s0 = submitted.load(Ordering::Relaxed);
    let q0 = cluster::queued(&mut client).await?;
    let t0 = Instant::now();
    let u0 = super::usage::Sample::now();
    let mut series = Rates::start(s0, q0);
    let pg0 = opts.backend.server_usage();
    while t0.elapsed().as_secs_f64() < secs {
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Sustained: the submitters hold while the origin's queue is
        // above a bound, so intake cannot outrun delivery indefinitely.
        let q = cluster::queued(&mut client).await?;
        hold.store(q > MAX_QUEUED, Ordering::Relaxed);
        let at = t0.elapsed().as_secs_f64();
        series.observe(at, submitted.load(Ordering::Relaxed), q);
        bar.set_position(t0.elapsed().as_secs());
    }
    let s1 = submitted.load(Ordering::Relaxed);
    let q1 = cluster::queued(&mut client).await?;
    let dt = t0.elapsed().as_secs_f64();
    let u1 = super::usage::Sample::now();
    let pg1 = opts.backend.server_usage();
    bar.finish_and_clear();
    stop.store(true, Ordering::Relaxed);
    hold.store(false, Ordering::Relaxed);
    let mut lat = Vec::new();
    while let Some(r) = tasks.join_next().await {
        lat.extend(r??);
    }
    let _ = started;
    // Delivered in the window = submitted in it - growth of the queue.
    let delivered = (s1 - s0) as f64 - (q1 as f64 - q0 as f64);
    let breakdown = super::usage::Breakdown::between(&u0, &u1, delivered.max(0.0) as u64);
    Ok(Throughput {
        nodes: c.configs.len(),
        streams,
        measured_secs: dt,
        intake_per_sec: (s1 - s0) as f64 / dt,
        end_to_end_per_sec: delivered.max(0.0) / dt,
        queued_at_end: q1,
        cpu_us_per_report: if delivered > 0.0 {
            breakdown.cpu_us
        } else {
            0.0
        },
        breakdown,
        postgres_server: super::postgres::ServerShare::between(pg0, pg1, delivered),
        submit_latency: Latency::of(lat),
        series,
    })
}

/// Open loop at `rate` reports/s: each submission is sent at its scheduled
/// time, whether or not earlier ones were answered, and its latency counts
/// from that time (no coordinated omission).
async fn level(
    opts: &Options,
    c: &Cluster,
    ips: &[String],
    fraction: f64,
    rate: f64,
) -> anyhow::Result<LatencyAt> {
    let core = c.core(0)?;
    let receipts = c.receipts(0);
    let replicas = c.clients(0).await?;
    let secs = (opts.duration.as_secs_f64() / 2.0).max(1.0);
    let rate = rate.max(1.0);
    let total = (rate * secs).round().max(1.0) as usize;
    let bar = super::bar(
        opts.json,
        total as u64,
        &format!("latency at {:.0}% ({:.0}/s)", fraction * 100.0, rate),
    );
    // Enough in flight for the rate; beyond it a submission waits, and its
    // wait counts in its latency.
    let permits = Arc::new(tokio::sync::Semaphore::new(4096));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    let mut sent = 0usize;
    while sent < total {
        let due = ((started.elapsed().as_secs_f64() * rate) as usize + 1).min(total);
        while sent < due {
            let scheduled = started + Duration::from_secs_f64(sent as f64 / rate);
            let permit = permits.clone().acquire_owned().await?;
            let mut cl = replicas[sent % replicas.len()].clone();
            let ip = ips[sent % ips.len()].clone();
            let n = sent;
            tasks.spawn(async move {
                let id = cluster::submit(&mut cl, &ip, &format!("lat/{fraction}/{n}"), false).await;
                drop(permit);
                id.map(|id| (id, scheduled))
            });
            sent += 1;
        }
        bar.set_position(sent as u64);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut submitted = Vec::with_capacity(total);
    while let Some(r) = tasks.join_next().await {
        submitted.push(r??);
    }
    bar.finish_and_clear();
    let mut client = c.client(0).await?;
    cluster::wait_drained(&mut client, Duration::from_secs(600)).await?;
    let mut lat = Vec::with_capacity(submitted.len());
    let mut missing = 0;
    for (id, scheduled) in &submitted {
        let seq = cluster::seq_of(&core, id).await?;
        match receipts.receipt(seq) {
            Some(t) => lat.push(t.saturating_duration_since(*scheduled)),
            None => missing += 1,
        }
    }
    Ok(LatencyAt {
        fraction,
        offered_per_sec: rate,
        secs,
        distribution: Cdf::of(&lat),
        end_to_end: Latency::of(lat),
        missing,
        lagged: receipts.lagged(),
    })
}

pub async fn drain(opts: &Options) -> anyhow::Result<Drain> {
    let (mut c, ips) = start_warm(opts).await?;
    let mut client = c.client(0).await?;
    let peak_reset = super::reset_peak_rss();
    let rss_before = super::rss_mib().0;
    for i in 1..c.nodes.len() {
        c.stop(i).await;
    }
    let bar = super::bar(
        opts.json,
        opts.drain as u64,
        "drain: queuing (destinations down)",
    );
    let replicas = c.clients(0).await?;
    let streams = spread(opts.streams, replicas.len());
    let intake_secs =
        cluster::queue_bulk(&replicas, &ips, "drain", opts.drain, streams, &bar).await?;
    bar.finish_and_clear();
    // The destinations come back as processes of their own, so that the
    // memory of a node receiving the backlog is measured apart from the
    // origin holding it.
    let mut destinations = Vec::new();
    for i in 1..c.nodes.len() {
        destinations.extend(c.restart_as_processes(i).await?);
    }
    let bar = super::bar(opts.json, opts.drain as u64, "drain: destinations back");
    let mut curve = Curve::default();
    let drain_secs = cluster::watch_drain(
        &mut client,
        opts.drain as u64,
        &bar,
        Duration::from_secs(4 * 3600),
        |secs, left| {
            curve.observe(secs, left);
            destinations.iter_mut().try_for_each(|d| d.check())
        },
    )
    .await?;
    bar.finish_and_clear();
    let destination_processes = destinations.len();
    let destination_peak = destinations
        .iter()
        .map(|d| d.rss_mib().1)
        .fold(0.0, f64::max);
    for d in destinations {
        d.stop().await;
    }
    let (rss_after, hwm) = super::rss_mib();
    // The kernel's RSS counters are per-CPU approximations, so VmHWM read
    // now can fall a few pages short of a VmRSS read earlier: the peak is
    // the highest of everything read.
    let peak = hwm.max(rss_before).max(rss_after);
    let nodes = c.configs.len();
    c.shutdown().await;
    Ok(Drain {
        reports: opts.drain,
        nodes,
        intake_per_sec: opts.drain as f64 / intake_secs,
        drain_secs,
        drain_per_sec: opts.drain as f64 / drain_secs,
        rss_before_mib: rss_before,
        rss_peak_mib: peak,
        rss_after_mib: rss_after,
        peak_reset,
        destination_rss_peak_mib: destination_peak,
        destination_processes,
        curve,
    })
}

pub fn print_throughput(t: &Throughput, ratio: Option<f64>) {
    println!();
    println!(
        "throughput: {} nodes, {} bulk-intake streams ({} in flight each), {:.0} s measured",
        t.nodes, t.streams, STREAM_WINDOW, t.measured_secs
    );
    println!(
        "  intake (committed at the origin)         {:>9.0} reports/s",
        t.intake_per_sec
    );
    println!(
        "  end to end (receipt stored at origin)    {:>9.0} reports/s{}",
        t.end_to_end_per_sec,
        ratio.map_or(String::new(), |r| format!("  = {:.2} of the ceiling", r))
    );
    println!(
        "  queued at the end of the window          {:>9}",
        t.queued_at_end
    );
    println!(
        "  CPU per delivered report (whole process) {:>9.0} µs",
        t.cpu_us_per_report
    );
    println!(
        "  bulk intake (SubmitReports) answered, saturated: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        t.submit_latency.p50_ms, t.submit_latency.p99_ms, t.submit_latency.max_ms
    );
    t.breakdown.print();
    super::postgres::ServerShare::print(&t.postgres_server);
}

pub fn print_singles(s: &Singles) {
    println!();
    println!(
        "single SubmitReport calls, saturated ({} in flight, {:.0} s measured)",
        s.in_flight, s.measured_secs
    );
    println!(
        "  answered (committed at the origin)       {:>9.0} reports/s",
        s.per_sec
    );
    println!(
        "  sent → answered: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        s.answered.p50_ms, s.answered.p99_ms, s.answered.max_ms
    );
}

pub fn print_latency(v: &[LatencyAt]) {
    println!();
    println!(
        "latency, open loop, single submissions at fractions of their saturated rate: submitted → signed receipt stored at the origin"
    );
    println!(
        "  {:<10} {:>10} {:>8} {:>9} {:>9} {:>9} {:>8}",
        "load", "offered/s", "samples", "p50 ms", "p99 ms", "max ms", "missing"
    );
    for l in v {
        println!(
            "  {:<10} {:>10.0} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>8}",
            format!("{:.0}%", l.fraction * 100.0),
            l.offered_per_sec,
            l.end_to_end.samples,
            l.end_to_end.p50_ms,
            l.end_to_end.p99_ms,
            l.end_to_end.max_ms,
            l.missing
        );
    }
}

pub fn print_drain(d: &Drain) {
    println!();
    println!(
        "backlog drain: {} reports queued with {} destination(s) down at {:.0}/s, then up",
        d.reports,
        d.nodes - 1,
        d.intake_per_sec
    );
    println!(
        "  drained in {:.1} s: {:.0} reports/s",
        d.drain_secs, d.drain_per_sec
    );
    println!(
        "  RSS of the origin's process (origin + load): {:.0} MiB before, peak {:.0} MiB{}, {:.0} MiB after",
        d.rss_before_mib,
        d.rss_peak_mib,
        if d.peak_reset { "" } else { " (since start)" },
        d.rss_after_mib
    );
    println!(
        "  RSS of the destination{} (own process{}, while draining): peak {:.0} MiB",
        if d.nodes > 2 { "s" } else { "" },
        if d.destination_processes > 1 {
            "es; the highest"
        } else {
            ""
        },
        d.destination_rss_peak_mib
    );
}
