//! Prometheus metrics: in-memory counters and histograms updated where
//! things happen, plus gauges read from the database at scrape time, and
//! their text exposition (`render`). `runtime` serves it on its own
//! listener (`[metrics] listen`), off the gRPC port.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Core;

/// Delivery latency buckets, seconds.
const LATENCY_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

/// Time-to-takedown buckets, seconds: a minute to 28 days (INHOPE's
/// figures are 2.5 days inside the network, 28+ outside).
const TAKEDOWN_BUCKETS: [f64; 11] = [
    60.0,
    300.0,
    900.0,
    3600.0,
    14_400.0,
    43_200.0,
    86_400.0,
    216_000.0,
    604_800.0,
    1_209_600.0,
    2_419_200.0,
];

struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (i, b) in self.bounds.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    /// Writes the histogram's series with `labels` (`k="v",` pairs, escaped).
    fn write(&self, out: &mut String, name: &str, labels: &str) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {}", self.count);
        let labels = labels.trim_end_matches(',');
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// Counters keyed by label values. BTreeMap so the output is ordered.
#[derive(Default)]
pub struct Metrics {
    pub reports_submitted: AtomicU64,
    pub reports_received: AtomicU64,
    /// Reports refused because their origin had sent other content under
    /// the same report id (equivocation: a broken or dishonest peer).
    pub equivocations: AtomicU64,
    /// Bulk transactions undone because urgent work arrived while they
    /// were written (each written again after it).
    pub bulk_yielded: AtomicU64,
    /// `Forward` batches received from peers, by call: one stream carrying
    /// batch after batch, or one unary call each.
    pub batches_streamed: AtomicU64,
    pub batches_unary: AtomicU64,
    refusals: Mutex<BTreeMap<String, u64>>,
    deliveries: Mutex<BTreeMap<(String, String), u64>>,
    delivery_failures: Mutex<BTreeMap<String, u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    takedown: Mutex<BTreeMap<(String, String), Histogram>>,
    witness: Mutex<BTreeMap<(String, String), u64>>,
    witness_alarms: Mutex<BTreeMap<(String, String), u64>>,
    /// DNS questions by outcome (`answered`, `no-data`, `nxdomain`, …),
    /// records received by kind, their latency, and cache hits. Never a
    /// host name as a label.
    dns_queries: Mutex<BTreeMap<String, u64>>,
    dns_answers: Mutex<BTreeMap<String, u64>>,
    dns_latency: Mutex<BTreeMap<String, Histogram>>,
    pub dns_cache_hits: AtomicU64,
    urgent_demoted: Mutex<BTreeMap<String, u64>>,
    pdq_unindexed: Mutex<BTreeMap<String, u64>>,
    pdq_indexed: AtomicU64,
    leaves_read: Mutex<BTreeMap<String, u64>>,
}

fn bump<K: Ord>(m: &Mutex<BTreeMap<K, u64>>, k: K, by: u64) {
    if let Ok(mut g) = m.lock() {
        *g.entry(k).or_default() += by;
    }
}

impl Metrics {
    pub fn refusal(&self, reason: &str) {
        bump(&self.refusals, reason.to_owned(), 1);
    }

    /// `outcome`: delivered or refused.
    pub fn delivered(&self, peer: &str, outcome: &str, n: u64) {
        if n > 0 {
            bump(&self.deliveries, (peer.to_owned(), outcome.to_owned()), n);
        }
    }

    /// How long a peer took to answer a delivered batch.
    pub fn delivery_latency(&self, peer: &str, latency: Duration) {
        if let Ok(mut g) = self.latency.lock() {
            g.entry(peer.to_owned())
                .or_insert_with(|| Histogram::new(&LATENCY_BUCKETS))
                .observe(latency.as_secs_f64());
        }
    }

    /// A report this node sent reached a milestone (`receipt`,
    /// `assessment`, `notice`, `removal`) at `destination`, `ms` after the
    /// report was made.
    pub fn takedown(&self, milestone: &str, destination: &str, ms: i64) {
        if let Ok(mut g) = self.takedown.lock() {
            g.entry((milestone.to_owned(), destination.to_owned()))
                .or_insert_with(|| Histogram::new(&TAKEDOWN_BUCKETS))
                .observe(ms.max(0) as f64 / 1000.0);
        }
    }

    pub fn delivery_failed(&self, peer: &str) {
        bump(&self.delivery_failures, peer.to_owned(), 1);
    }

    /// `n` urgent reports from `peer` past its urgent quota, received as
    /// bulk work.
    pub fn urgent_demoted(&self, peer: &str, n: u64) {
        bump(&self.urgent_demoted, peer.to_owned(), n);
    }

    /// A new case of `origin` whose PDQ hashes were not indexed (its open
    /// cases are at `[limits] peer_open_pdq_cases`).
    pub fn pdq_unindexed(&self, origin: &str) {
        bump(&self.pdq_unindexed, origin.to_owned(), 1);
    }

    /// PDQ hashes in the near-duplicate index now.
    pub fn pdq_indexed(&self, n: usize) {
        self.pdq_indexed.store(n as u64, Ordering::Relaxed);
    }

    /// `n` audit-log entries read to make a checkpoint: `check` (the whole
    /// log checked again, outside the writer lock) or `sign` (the entries
    /// since the last checkpoint, under it).
    pub fn leaves_read(&self, pass: &str, n: u64) {
        bump(&self.leaves_read, pass.to_owned(), n);
    }

    /// `event`: cosigned (we cosigned the peer's checkpoint), refused (we
    /// refused to), refused_us (the peer refused ours).
    pub fn witness(&self, peer: &str, event: &str) {
        bump(&self.witness, (peer.to_owned(), event.to_owned()), 1);
    }

    /// This node's witness refused `peer`'s checkpoint: `kind` is
    /// rollback, fork (equivocation), inconsistent or invalid.
    pub fn witness_alarm(&self, peer: &str, kind: &str) {
        bump(&self.witness_alarms, (peer.to_owned(), kind.to_owned()), 1);
    }

    /// A DNS question ended with `outcome` after `latency`.
    pub fn dns_query(&self, outcome: &str, latency: Duration) {
        bump(&self.dns_queries, outcome.to_owned(), 1);
        if let Ok(mut g) = self.dns_latency.lock() {
            g.entry(String::new())
                .or_insert_with(|| Histogram::new(&LATENCY_BUCKETS))
                .observe(latency.as_secs_f64());
        }
    }

    /// A record of `kind` (`A`, `AAAA`, `CNAME`) was received.
    pub fn dns_answer(&self, kind: &str) {
        bump(&self.dns_answers, kind.to_owned(), 1);
    }

    pub fn dns_cache_hit(&self) {
        self.dns_cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// DNS questions that ended with `outcome`, so far.
    pub fn dns_query_count(&self, outcome: &str) -> u64 {
        self.dns_queries
            .lock()
            .ok()
            .and_then(|g| g.get(outcome).copied())
            .unwrap_or(0)
    }

    pub fn witness_count(&self, peer: &str, event: &str) -> u64 {
        self.witness
            .lock()
            .ok()
            .and_then(|g| g.get(&(peer.to_owned(), event.to_owned())).copied())
            .unwrap_or(0)
    }
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics page in Prometheus text format.
pub async fn render(core: &Core) -> String {
    let m = &core.metrics;
    let mut out = String::new();
    node_info(&mut out, core);
    totals(&mut out, m);
    family(
        &mut out,
        "alertrelay_refusals_total",
        "counter",
        "Refused inputs by reason code.",
        &m.refusals,
        by("reason"),
    );
    family(
        &mut out,
        "alertrelay_deliveries_total",
        "counter",
        "Reports settled with a peer by outcome.",
        &m.deliveries,
        by_pair("peer", "outcome"),
    );
    family(
        &mut out,
        "alertrelay_delivery_failures_total",
        "counter",
        "Failed delivery attempts (retried).",
        &m.delivery_failures,
        by("peer"),
    );
    family(
        &mut out,
        "alertrelay_delivery_latency_seconds",
        "histogram",
        "Time for a peer to answer a delivered batch.",
        &m.latency,
        |out, name, peer, h| h.write(out, name, &format!("peer=\"{}\",", esc(peer))),
    );
    family(
        &mut out,
        "alertrelay_time_to_takedown_seconds",
        "histogram",
        "Time from a report this node sent to each milestone at the destination (receipt, assessment, notice, removal), as recorded when it happened.",
        &m.takedown,
        |out, name, (milestone, dest), h| {
            let labels = format!(
                "milestone=\"{}\",destination=\"{}\",",
                esc(milestone),
                esc(dest)
            );
            h.write(out, name, &labels);
        },
    );
    family(
        &mut out,
        "alertrelay_urgent_demoted_total",
        "counter",
        "Urgent reports from a peer past its urgent quota, received as bulk work (stored and answered all the same).",
        &m.urgent_demoted,
        by("peer"),
    );
    near_duplicates(&mut out, m);
    family(
        &mut out,
        "alertrelay_checkpoint_leaves_read_total",
        "counter",
        "Audit-log entries read to make checkpoints: pass=check (the whole log checked again, outside the writer lock), pass=ahead (the entries since the last checkpoint, outside the writer lock), pass=sign (those written since, under the writer lock).",
        &m.leaves_read,
        by("pass"),
    );
    family(
        &mut out,
        "alertrelay_witness_events_total",
        "counter",
        "Audit-log witnessing: cosigned, refused (a peer's checkpoint), refused_us (ours, by a peer).",
        &m.witness,
        by_pair("peer", "event"),
    );
    family(
        &mut out,
        "alertrelay_witness_alarms_total",
        "counter",
        "Checkpoints of a peer this node's witness refused, by kind: rollback, fork (the peer showed two different logs of one size: equivocation), inconsistent (no valid consistency proof), invalid (signature or origin).",
        &m.witness_alarms,
        by_pair("peer", "kind"),
    );
    dns(&mut out, m);
    process(&mut out, core);
    directory(&mut out, core);
    tls_expiry(&mut out, core);
    header(
        &mut out,
        "alertrelay_ready",
        "gauge",
        "Whether the node reports SERVING on grpc.health.v1 (database reachable, keys loaded, a peer reachable or none configured).",
    );
    let _ = writeln!(
        out,
        "alertrelay_ready {}",
        u8::from(core.readiness().serving())
    );
    // Gauges from the database.
    outbox(&mut out, core).await;
    notifications(&mut out, core).await;
    cases(&mut out, core).await;
    out
}

/// The near-duplicate index: its size, and cases left out of it.
fn near_duplicates(out: &mut String, m: &Metrics) {
    family(
        out,
        "alertrelay_pdq_unindexed_total",
        "counter",
        "New cases whose PDQ hashes were not indexed for near-duplicate matching: their origin's open cases in the index were at [limits] peer_open_pdq_cases.",
        &m.pdq_unindexed,
        by("peer"),
    );
    let name = "alertrelay_pdq_indexed";
    header(
        out,
        name,
        "gauge",
        "PDQ hashes of open cases in the near-duplicate index (as of the last report that needed it).",
    );
    let _ = writeln!(out, "{name} {}", m.pdq_indexed.load(Ordering::Relaxed));
}

/// The DNS resolver's questions, answers, latency and cache hits.
fn dns(out: &mut String, m: &Metrics) {
    family(
        out,
        "alertrelay_dns_queries_total",
        "counter",
        "DNS questions asked for routing, by outcome (answered, no-data, nxdomain, servfail, timeout, dnssec-bogus, error).",
        &m.dns_queries,
        by("outcome"),
    );
    family(
        out,
        "alertrelay_dns_answers_total",
        "counter",
        "DNS records received for routing, by kind (A, AAAA, CNAME).",
        &m.dns_answers,
        by("kind"),
    );
    family(
        out,
        "alertrelay_dns_query_seconds",
        "histogram",
        "Time for a DNS question to end (answer, failure or deadline).",
        &m.dns_latency,
        |out, name, _, h| h.write(out, name, ""),
    );
    let name = "alertrelay_dns_cache_hits_total";
    header(
        out,
        name,
        "counter",
        "Host names answered from the node's DNS cache.",
    );
    let _ = writeln!(out, "{name} {}", m.dns_cache_hits.load(Ordering::Relaxed));
}

/// A metric's `# HELP` and `# TYPE` lines; `kind` is its Prometheus type.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One series: `labels` are `k="v"` pairs, escaped.
fn sample(out: &mut String, name: &str, labels: &str, v: impl std::fmt::Display) {
    let _ = writeln!(out, "{name}{{{labels}}} {v}");
}

/// A metric of `kind` with the series `write` writes for each key
/// of `series` and its value. The header is written even when there is
/// no series, so the metric is always described.
fn family<K: Ord, V>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    series: &Mutex<BTreeMap<K, V>>,
    write: impl Fn(&mut String, &str, &K, &V),
) {
    header(out, name, kind, help);
    if let Ok(g) = series.lock() {
        for (k, v) in g.iter() {
            write(out, name, k, v);
        }
    }
}

/// Writes a counter's series for `family`, labelled `label="KEY"`.
fn by(label: &str) -> impl Fn(&mut String, &str, &String, &u64) + '_ {
    move |out, name, k, v| sample(out, name, &format!("{label}=\"{}\"", esc(k)), v)
}

/// Writes a counter's series for `family`, labelled `a="K1",b="K2"` by
/// the two parts of its key.
fn by_pair<'a>(a: &'a str, b: &'a str) -> impl Fn(&mut String, &str, &(String, String), &u64) + 'a {
    move |out, name, (k1, k2), v| {
        sample(
            out,
            name,
            &format!("{a}=\"{}\",{b}=\"{}\"", esc(k1), esc(k2)),
            v,
        );
    }
}

/// The signed directory: its serial, age and time left, versions applied,
/// and each peer's protocol as last seen.
fn directory(out: &mut String, core: &Core) {
    let d = core.directory();
    let now = Core::now_ms();
    let (serial, age, left) = match &d.signed {
        Some(s) => (
            s.serial,
            (now - s.issued_at_ms) as f64 / 1000.0,
            (s.expires_at_ms - now) as f64 / 1000.0,
        ),
        None => (0, 0.0, 0.0),
    };
    for (name, kind, help, v) in [
        (
            "alertrelay_directory_serial",
            "gauge",
            "Serial of the signed directory in use (0: a plain directory file).",
            serial.to_string(),
        ),
        (
            "alertrelay_directory_age_seconds",
            "gauge",
            "Seconds since the directory in use was issued (0 when not signed).",
            age.to_string(),
        ),
        (
            "alertrelay_directory_expires_in_seconds",
            "gauge",
            "Seconds until the directory in use expires; publish a new version before 0 (0 when not signed).",
            left.to_string(),
        ),
        (
            "alertrelay_directory_applied_total",
            "counter",
            "Newer directory versions applied since start (refusals: alertrelay_refusals_total{reason=~\"directory-.*\"}).",
            core.membership.applied.load(Ordering::Relaxed).to_string(),
        ),
    ] {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
    let name = "alertrelay_peer_protocol";
    header(
        out,
        name,
        "gauge",
        "The protocol each peer speaks, as last seen by the directory exchange (1: the previous release).",
    );
    for (peer, protocol) in core.membership.peer_protocols() {
        sample(
            out,
            name,
            &format!("peer=\"{}\"", esc(peer.as_str())),
            protocol,
        );
    }
}

/// Seconds until the node's TLS certificate and the federation CA's
/// expire, and until each CRL is due for replacement (an expired CRL fails
/// every handshake), read from the files at scrape time; a file that
/// cannot be read has no series (`alertrelay doctor` says why).
fn tls_expiry(out: &mut String, core: &Core) {
    use crate::crypto::tls::{certificate_not_after_ms, crl_next_update_ms};
    let now = Core::now_ms();
    let left = |ms: i64| (ms - now) as f64 / 1000.0;
    let tls = &core.config.tls;
    let name = "alertrelay_certificate_expires_in_seconds";
    header(
        out,
        name,
        "gauge",
        "Seconds until a certificate expires: certificate=node (this node's TLS certificate) or ca (the federation CA).",
    );
    for (which, path) in [("node", &tls.cert), ("ca", &tls.ca)] {
        if let Some(ms) = certificate_not_after_ms(path) {
            sample(out, name, &format!("certificate=\"{which}\""), left(ms));
        }
    }
    let name = "alertrelay_crl_next_update_in_seconds";
    header(
        out,
        name,
        "gauge",
        "Seconds until each CRL in tls.crls is due for replacement (its nextUpdate; past it every handshake fails), by file name.",
    );
    for path in &tls.crls {
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned());
        if let (Some(ms), Some(file)) = (crl_next_update_ms(path), file) {
            sample(out, name, &format!("crl=\"{}\"", esc(&file)), left(ms));
        }
    }
}

/// `alertrelay_node_info`: which node this is and its version, as labels.
fn node_info(out: &mut String, core: &Core) {
    let name = "alertrelay_node_info";
    header(out, name, "gauge", "The node and its version.");
    let labels = format!(
        "node=\"{}\",version=\"{}\"",
        esc(core.me.as_str()),
        env!("CARGO_PKG_VERSION")
    );
    sample(out, name, &labels, 1);
}

/// The counters without labels, and the batches received by call.
fn totals(out: &mut String, m: &Metrics) {
    let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
    };
    counter(
        out,
        "alertrelay_reports_submitted_total",
        "Reports submitted by this hotline's analysts.",
        &m.reports_submitted,
    );
    counter(
        out,
        "alertrelay_reports_received_total",
        "Reports received from peers and stored.",
        &m.reports_received,
    );
    counter(
        out,
        "alertrelay_equivocations_total",
        "Reports refused because their origin sent different content under a report id it had used (an alert: a broken or dishonest peer).",
        &m.equivocations,
    );
    counter(
        out,
        "alertrelay_bulk_chunks_yielded_total",
        "Bulk transactions undone and written again because urgent work arrived while they were written.",
        &m.bulk_yielded,
    );
    let name = "alertrelay_forward_batches_received_total";
    header(
        out,
        name,
        "counter",
        "Batches of envelopes received from peers, by call (ForwardStream or unary Forward).",
    );
    sample(
        out,
        name,
        "call=\"stream\"",
        m.batches_streamed.load(Ordering::Relaxed),
    );
    sample(
        out,
        name,
        "call=\"unary\"",
        m.batches_unary.load(Ordering::Relaxed),
    );
}

/// Outbox depth and oldest item's age per peer, read from the database;
/// nothing when it cannot be read. Every peer is listed, with 0 for an
/// empty queue, so a dashboard shows the queue drained rather than no
/// data.
async fn outbox(out: &mut String, core: &Core) {
    let Ok(queues) = core.store.outbox_summary().await else {
        return;
    };
    let now = Core::now_ms();
    let mut per_peer: BTreeMap<String, (i64, f64)> = core
        .peers
        .keys()
        .into_iter()
        .map(|p| (p.to_string(), (0, 0.0)))
        .collect();
    for q in &queues {
        let age = (now - q.oldest_ms).max(0) as f64 / 1000.0;
        per_peer.insert(q.peer.clone(), (q.depth, age));
    }
    let name = "alertrelay_outbox_depth";
    header(out, name, "gauge", "Undelivered items per peer.");
    for (peer, (depth, _)) in &per_peer {
        sample(out, name, &format!("peer=\"{}\"", esc(peer)), depth);
    }
    let name = "alertrelay_outbox_oldest_age_seconds";
    header(
        out,
        name,
        "gauge",
        "Age of the oldest undelivered item per peer (0 when none).",
    );
    for (peer, (_, age)) in &per_peer {
        sample(out, name, &format!("peer=\"{}\"", esc(peer)), age);
    }
}

/// Notifications waiting to go out and the age of the oldest, per channel
/// (every configured one, 0 when none waits), read from the database;
/// nothing when it cannot be read.
async fn notifications(out: &mut String, core: &Core) {
    let Ok(waiting) = super::alerts::waiting(core).await else {
        return;
    };
    let name = "alertrelay_notifications_waiting";
    header(
        out,
        name,
        "gauge",
        "Notifications not yet delivered (nor given up) per channel.",
    );
    for w in &waiting {
        sample(
            out,
            name,
            &format!("channel=\"{}\"", esc(&w.channel)),
            w.waiting,
        );
    }
    let name = "alertrelay_notifications_oldest_waiting_age_seconds";
    header(
        out,
        name,
        "gauge",
        "Age of the event of the oldest notification waiting per channel (0 when none).",
    );
    for w in &waiting {
        let age = w.oldest_age_ms.max(0) as f64 / 1000.0;
        sample(out, name, &format!("channel=\"{}\"", esc(&w.channel)), age);
    }
}

/// Cases by direction and status, read from the database; nothing when
/// it cannot be read.
async fn cases(out: &mut String, core: &Core) {
    let Ok(counts) = core.store.case_counts().await else {
        return;
    };
    let name = "alertrelay_cases";
    header(out, name, "gauge", "Cases by direction and status.");
    for (direction, status, n) in counts {
        let labels = format!(
            "direction=\"{}\",status=\"{}\"",
            esc(&direction),
            esc(&status)
        );
        sample(out, name, &labels, n);
    }
}

/// The standard process figures (Prometheus client conventions), read
/// from `/proc/self` on Linux; absent elsewhere.
fn process(out: &mut String, core: &Core) {
    let start = core.started_at_ms as f64 / 1000.0;
    let _ = writeln!(
        out,
        "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {start}"
    );
    let Some(p) = ProcSelf::read() else {
        return;
    };
    let _ = writeln!(
        out,
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {}",
        p.cpu_seconds
    );
    let _ = writeln!(
        out,
        "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}",
        p.resident_bytes
    );
    let _ = writeln!(
        out,
        "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes {}",
        p.virtual_bytes
    );
    let _ = writeln!(
        out,
        "# HELP process_open_fds Number of open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds {}",
        p.open_fds
    );
    if let Some(max) = p.max_fds {
        let _ = writeln!(
            out,
            "# HELP process_max_fds Maximum number of open file descriptors.\n# TYPE process_max_fds gauge\nprocess_max_fds {max}"
        );
    }
}

/// What `/proc/self` says about this process.
#[derive(Debug, Clone, Copy)]
pub struct ProcSelf {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
}

impl ProcSelf {
    /// `None` where there is no `/proc` (not Linux).
    pub fn read() -> Option<ProcSelf> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which is in parentheses and may
        // contain spaces: field 3 (state) is the first after ") ".
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // proc(5): utime 14, stime 15, vsize 23 (1-based overall).
        let num = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
        // The kernel's clock tick is 100 Hz on every Linux platform
        // Rust supports (USER_HZ is fixed in the ABI).
        const TICKS: f64 = 100.0;
        // VmRSS is in kB, independent of the page size.
        let resident_kb = std::fs::read_to_string("/proc/self/status")
            .ok()?
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| {
                l.lines()
                    .find(|l| l.starts_with("Max open files"))
                    .and_then(|l| l.split_whitespace().nth(3))
                    .and_then(|v| v.parse().ok())
            });
        Some(ProcSelf {
            cpu_seconds: (num(14)? + num(15)?) as f64 / TICKS,
            virtual_bytes: num(23)?,
            resident_bytes: resident_kb * 1024,
            open_fds,
            max_fds,
        })
    }
}
