//! `alertrelay bench`: real nodes (mutual TLS, durable SQLite files in a
//! temporary directory, all in this process) under measured load, beside
//! this machine's own limits measured in the same run. Every figure printed
//! is measured in the run that prints it; nothing is asserted about speed.
//!
//! Scenarios (`--scenario`, all by default):
//! - `limits`: ed25519 sign and batch-verify rates, SQLite durable batched
//!   inserts, tonic mTLS streaming, and the ceiling they imply (`limits.rs`);
//! - `throughput`: sustained end to end, many concurrent submitters, counted
//!   at the origin by its queue (`load.rs`);
//! - `latency`: single `SubmitReport` calls saturated, then p50/p99/max at
//!   25, 50 and 90% of that rate, open loop
//!   (`load.rs`);
//! - `urgent`: urgent reports while a bulk backlog drains (`urgent.rs`);
//! - `drain`: the destination down while N reports queue, then up (as a
//!   process of its own): drain rate and peak RSS of each side (`load.rs`);
//! - `scale`: a simulated federation of the 53 hotlines of the example
//!   INHOPE-style directory and a fallback (`scale.rs`);
//! - `pdq`: urgent reports at a destination holding N open cases with a
//!   PDQ hash each, new media and near-duplicates (`pdq.rs`);
//! - `dns`: a bulk import of reports naming many hosts, resolved at the
//!   bench's own DNS server on loopback (`dns.rs`);
//! - `console`: the console's queue and case pages over HTTPS with N
//!   incoming cases stored at the destination (`console.rs`);
//! - `growth` (not in the default set): end-to-end throughput with 0
//!   and with N reports already stored (`growth.rs`).
//!
//! `report.rs` draws the results as one HTML page with SVG charts, from
//! the series the scenarios keep while they run (`series.rs`).
//!
//! With `--database postgres://…` (and `--replicas N`), throughput,
//! latency, urgent and drain run with each node in a fresh PostgreSQL
//! database of its own, as N replicas (`postgres.rs`); the other
//! scenarios measure SQLite nodes and are refused with it.

pub mod cluster;
mod console;
mod dns;
mod growth;
mod limits;
mod load;
mod pdq;
mod postgres;
pub mod report;
mod scale;
mod series;
mod urgent;
pub mod usage;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use console::ConsoleScale;
pub use dns::DnsImport;
pub use growth::Growth;
pub use limits::Limits;
pub use load::{Drain, LatencyAt, Singles, Throughput};
pub use pdq::PdqScale;
pub use postgres::{Backend, StoreUsed};
pub use scale::Scale;
pub use urgent::UrgentLane;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    Limits,
    Throughput,
    Latency,
    Urgent,
    Drain,
    Scale,
    Pdq,
    Dns,
    Console,
    /// Not in `ALL`: loading its store takes minutes at default sizes.
    Growth,
}

impl Scenario {
    /// What runs without `--scenario`.
    pub const ALL: [Scenario; 9] = [
        Scenario::Limits,
        Scenario::Throughput,
        Scenario::Latency,
        Scenario::Urgent,
        Scenario::Drain,
        Scenario::Scale,
        Scenario::Pdq,
        Scenario::Dns,
        Scenario::Console,
    ];

    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "limits" => Scenario::Limits,
            "throughput" => Scenario::Throughput,
            "latency" => Scenario::Latency,
            "urgent" => Scenario::Urgent,
            "drain" => Scenario::Drain,
            "scale" => Scenario::Scale,
            "pdq" => Scenario::Pdq,
            "dns" => Scenario::Dns,
            "console" => Scenario::Console,
            "growth" => Scenario::Growth,
            _ => {
                return Err(format!(
                    "unknown scenario {s:?}: one of limits, throughput, latency, urgent, drain, scale, pdq, dns, console, growth"
                ));
            }
        })
    }

    /// The scenarios that run on PostgreSQL (`--database`), and its default.
    pub const ON_POSTGRES: [Scenario; 4] = [
        Scenario::Throughput,
        Scenario::Latency,
        Scenario::Urgent,
        Scenario::Drain,
    ];

    /// All of them, or those that run on `backend`.
    pub fn defaults(backend: &Backend) -> Vec<Scenario> {
        match backend {
            Backend::Sqlite => Self::ALL.to_vec(),
            Backend::Postgres(_) => Self::ON_POSTGRES.to_vec(),
        }
    }

    /// Refuses, on PostgreSQL, the scenarios that measure SQLite: `limits`
    /// (SQLite's own write rate in the ceiling), and `scale`, `pdq`, `dns`
    /// and `console` (nodes of their own, on SQLite).
    pub fn check(scenarios: &[Scenario], backend: &Backend) -> Result<(), String> {
        let Backend::Postgres(_) = backend else {
            return Ok(());
        };
        let refused: Vec<String> = scenarios
            .iter()
            .filter(|s| !Self::ON_POSTGRES.contains(s))
            .map(|s| format!("{s:?}").to_lowercase())
            .collect();
        if refused.is_empty() {
            return Ok(());
        }
        Err(format!(
            "--database runs throughput, latency, urgent and drain on PostgreSQL; \
             {} measure{} SQLite nodes only: run {} without --database",
            refused.join(", "),
            if refused.len() == 1 { "s" } else { "" },
            if refused.len() == 1 { "it" } else { "them" },
        ))
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub scenarios: Vec<Scenario>,
    /// Throughput: measured for this long; each latency level for half.
    pub duration: Duration,
    /// Concurrent unary submitters (latency levels, scale).
    pub concurrency: usize,
    /// Concurrent bulk-intake streams (throughput, queuing backlogs).
    pub streams: usize,
    /// Nodes in the throughput, latency and drain scenarios: one origin
    /// and `nodes - 1` destinations its reports are spread over.
    pub nodes: usize,
    /// Urgent lane: bulk reports queued for the peer while it is down.
    pub backlog: usize,
    /// Urgent lane: urgent reports measured with the peer idle.
    pub urgent: usize,
    /// Drain: reports queued while the destination is down.
    pub drain: usize,
    /// Scale: nodes started (hotlines of the directory, in file order,
    /// always with the origin and the fallback).
    pub scale_nodes: usize,
    /// Scale: reports submitted.
    pub scale_reports: usize,
    /// PDQ: open cases with a PDQ hash each stored at the destination.
    pub pdq: usize,
    /// DNS: reports imported, and the distinct host names they name.
    pub dns_reports: usize,
    pub dns_hosts: usize,
    /// Console: incoming cases stored at the destination.
    pub console_cases: usize,
    /// Growth: reports stored (delivered, receipts stored) before the
    /// second measurement.
    pub growth: usize,
    pub json: bool,
    /// Where the temporary directories go.
    pub dir: PathBuf,
    /// Where the nodes of throughput, latency, urgent and drain keep their
    /// data (`--database`, `--replicas`).
    pub backend: Backend,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(mut v: Vec<Duration>) -> Self {
        v.sort();
        Latency {
            samples: v.len(),
            p50_ms: quantile_ms(&v, 0.5),
            p99_ms: quantile_ms(&v, 0.99),
            max_ms: quantile_ms(&v, 1.0),
        }
    }
}

/// The `p` quantile (0 to 1) of sorted samples, ms (0 without samples).
fn quantile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_mib: u64,
    pub kernel: String,
    /// The 1-minute load average when the run started and ended: other
    /// work on the machine takes cores from the benchmark.
    pub load_start: f64,
    pub load_end: f64,
    /// When the run started, UTC (RFC 3339).
    pub started_utc: String,
    pub build: &'static str,
    pub version: &'static str,
}

impl Machine {
    fn now() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
                .unwrap_or_default(),
            memory_mib: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kb| kb / 1024),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            load_start: load_average(),
            load_end: 0.0,
            started_utc: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// This process's memory (`/proc/self/status`), MiB: (VmRSS, VmHWM).
pub fn rss_mib() -> (f64, f64) {
    rss_mib_of("/proc/self/status")
}

/// A process's memory from its `/proc/PID/status`, MiB: (VmRSS, VmHWM).
pub fn rss_mib_of(status: &str) -> (f64, f64) {
    let s = std::fs::read_to_string(status).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets this process's peak RSS (VmHWM) to its current RSS, so that a
/// scenario's peak is its own (Linux `clear_refs`, value 5).
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// CPU time this process used so far (user + system), from
/// `/proc/self/stat` (clock ticks of 1/100 s).
pub fn cpu_time() -> Duration {
    cpu_of("/proc/self/stat")
}

/// CPU time (user + system) from a `/proc/…/stat` file.
pub fn cpu_of(path: impl AsRef<std::path::Path>) -> Duration {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// A progress bar on stderr when it is a terminal (never with `--json`).
pub fn bar(json: bool, len: u64, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    let bar = if json || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(len)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:40} {bar:30} {pos}/{len}  {per_sec}  {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_owned());
    bar
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub machine: Machine,
    /// How the nodes ran: all in this process, so RSS figures are the
    /// whole process (every node and the load generator).
    pub nodes_in: &'static str,
    /// Where the nodes kept their data: the figures are for this store.
    pub store: StoreUsed,
    pub limits: Option<Limits>,
    pub throughput: Option<Throughput>,
    pub singles: Option<Singles>,
    pub latency: Option<Vec<LatencyAt>>,
    pub urgent_lane: Option<UrgentLane>,
    pub drain: Option<Drain>,
    pub scale: Option<Scale>,
    pub pdq: Option<PdqScale>,
    pub dns: Option<DnsImport>,
    pub console: Option<ConsoleScale>,
    pub growth: Option<Growth>,
    /// Measured end-to-end throughput / the ceiling the limits imply.
    pub ratio_to_ceiling: Option<f64>,
    pub total_secs: f64,
}

pub async fn run(opts: &Options) -> anyhow::Result<Results> {
    Scenario::check(&opts.scenarios, &opts.backend).map_err(anyhow::Error::msg)?;
    let started = std::time::Instant::now();
    let want = |s: Scenario| opts.scenarios.contains(&s);
    let mut r = Results {
        machine: Machine::now(),
        nodes_in: "one process (in-process nodes; RSS is the whole process), except the drain's destinations once back (own processes)",
        store: opts.backend.used(),
        limits: None,
        throughput: None,
        singles: None,
        latency: None,
        urgent_lane: None,
        drain: None,
        scale: None,
        pdq: None,
        dns: None,
        console: None,
        growth: None,
        ratio_to_ceiling: None,
        total_secs: 0.0,
    };
    if want(Scenario::Limits) {
        r.limits = Some(limits::measure(opts).await?);
    }
    if want(Scenario::Throughput) || want(Scenario::Latency) {
        let m = load::throughput_and_latency(opts, want(Scenario::Latency)).await?;
        r.throughput = Some(m.throughput);
        r.singles = m.singles;
        r.latency = m.latency;
    }
    if want(Scenario::Urgent) {
        r.urgent_lane = Some(urgent::urgent_lane(opts).await?);
    }
    if want(Scenario::Drain) {
        r.drain = Some(load::drain(opts).await?);
    }
    if want(Scenario::Scale) {
        r.scale = Some(scale::run(opts).await?);
    }
    if want(Scenario::Pdq) {
        r.pdq = Some(pdq::run(opts).await?);
    }
    if want(Scenario::Dns) {
        r.dns = Some(dns::run(opts).await?);
    }
    if want(Scenario::Console) {
        r.console = Some(console::run(opts).await?);
    }
    if want(Scenario::Growth) {
        r.growth = Some(growth::run(opts).await?);
    }
    if let (Some(l), Some(t)) = (&r.limits, &r.throughput)
        && l.ceiling_per_sec > 0.0
    {
        r.ratio_to_ceiling = Some(t.end_to_end_per_sec / l.ceiling_per_sec);
    }
    r.store = opts.backend.used();
    r.machine.load_end = load_average();
    r.total_secs = started.elapsed().as_secs_f64();
    Ok(r)
}

/// The table, as `alertrelay bench` prints it.
pub fn print(r: &Results) {
    let m = &r.machine;
    println!(
        "alertrelay {} bench ({} build) on {} CPUs ({}), {} MiB, Linux {}; load {:.2} → {:.2}",
        m.version, m.build, m.cpus, m.cpu_model, m.memory_mib, m.kernel, m.load_start, m.load_end
    );
    println!("nodes: {}, mutual TLS on loopback", r.nodes_in);
    println!("store: {}", postgres::describe(&r.store));
    if !r.store.left_behind.is_empty() {
        println!(
            "  databases that could not be dropped: {}",
            r.store.left_behind.join(", ")
        );
    }
    if let Some(l) = &r.limits {
        limits::print(l);
    }
    if let Some(t) = &r.throughput {
        load::print_throughput(t, r.ratio_to_ceiling);
    }
    if let Some(s) = &r.singles {
        load::print_singles(s);
    }
    if let Some(l) = &r.latency {
        load::print_latency(l);
    }
    if let Some(u) = &r.urgent_lane {
        urgent::print(u);
    }
    if let Some(d) = &r.drain {
        load::print_drain(d);
    }
    if let Some(s) = &r.scale {
        scale::print(s);
    }
    if let Some(p) = &r.pdq {
        pdq::print(p);
    }
    if let Some(d) = &r.dns {
        dns::print(d);
    }
    if let Some(c) = &r.console {
        console::print(c);
    }
    if let Some(g) = &r.growth {
        growth::print(g);
    }
    println!("total {:.0} s", r.total_secs);
}
