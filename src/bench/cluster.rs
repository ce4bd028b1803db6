//! Real nodes for the benchmark: provisioned into a temporary directory
//! (a federation CA, node and operator certificates, signing keys, durable
//! SQLite files), started in this process on loopback with mutual TLS, and
//! stopped and restarted on the same port.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

use crate::config::{NodeConfig, RawAudit, RawDelivery, RawDns, RawLimits};
use crate::identity::NodeId;
use crate::node::Core;
use crate::pb;
use crate::pb::operator_client::OperatorClient;
use crate::provision::{self, NodeSpec};
use crate::runtime::NodeHandle;

/// One node to provision: id, countries served.
pub struct Spec {
    pub id: String,
    pub countries: Vec<String>,
}

pub struct Cluster {
    _dir: tempfile::TempDir,
    pub configs: Vec<NodeConfig>,
    /// Each node's `node.toml`.
    pub config_paths: Vec<std::path::PathBuf>,
    pub nodes: Vec<Option<NodeHandle>>,
}

impl Cluster {
    /// Provisions and starts `specs` (the first is the origin in every
    /// scenario), with `fallback` as the law-enforcement fallback and
    /// `relays` as `(node, reached through)` pairs.
    pub async fn start(
        dir: &Path,
        specs: &[Spec],
        fallback: Option<&str>,
        relays: &[(String, String)],
    ) -> anyhow::Result<Self> {
        Self::start_with(dir, specs, fallback, relays, RawDns::default()).await
    }

    /// As `start`, every node with this `[dns]`.
    pub async fn start_with(
        dir: &Path,
        specs: &[Spec],
        fallback: Option<&str>,
        relays: &[(String, String)],
        dns: RawDns,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir_in(dir)?;
        let mut listeners = Vec::new();
        let mut nodes = Vec::new();
        for s in specs {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            nodes.push(NodeSpec {
                id: NodeId::new(&s.id)?,
                countries: s.countries.clone(),
                categories: vec![],
                port: Some(l.local_addr()?.port()),
            });
            listeners.push(l);
        }
        let options = provision::Options {
            fallback: fallback.map(NodeId::new).transpose()?,
            delivery: Some(RawDelivery {
                retry_initial_ms: 50,
                retry_max_ms: 500,
                ..RawDelivery::default()
            }),
            // Checkpoints and witnessing on their production schedule
            // (minutes): they are not what is measured.
            audit: Some(RawAudit::default()),
            limits: Some(RawLimits {
                operator_requests_per_sec: 1_000_000.0,
                operator_burst: 1_000_000,
                operator_concurrent: 1024,
                peer_requests_per_sec: 100_000.0,
                peer_burst: 100_000,
                // The near-duplicate matching a peer may ask for: loading
                // the `pdq` scenario's cases is not what it measures.
                peer_pdq_per_sec: 1_000_000.0,
                peer_pdq_burst: 1_000_000,
                ..RawLimits::default()
            }),
            relays: relays
                .iter()
                .map(|(n, via)| Ok((NodeId::new(n)?, NodeId::new(via)?)))
                .collect::<anyhow::Result<_>>()?,
            dns,
            ..Default::default()
        };
        let done = provision::init(dir.path(), "bench", &nodes, &options)?;
        let mut configs = Vec::new();
        let mut handles = Vec::new();
        for (path, l) in done.configs.iter().zip(listeners) {
            let cfg = NodeConfig::load(path)?;
            handles.push(Some(
                crate::runtime::start_with_listener(cfg.clone(), l)
                    .await
                    .with_context(|| format!("starting {}", cfg.node_id))?,
            ));
            configs.push(cfg);
        }
        Ok(Cluster {
            _dir: dir,
            configs,
            config_paths: done.configs.clone(),
            nodes: handles,
        })
    }

    pub fn core(&self, i: usize) -> anyhow::Result<Arc<Core>> {
        self.nodes[i]
            .as_ref()
            .map(|n| n.core.clone())
            .context("the node is stopped")
    }

    pub async fn stop(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            n.shutdown().await;
        }
    }

    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let cfg = self.configs[i].clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(cfg.listen).await {
                Ok(l) => break l,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e).context("cannot rebind the node's port"),
            }
        };
        self.nodes[i] = Some(crate::runtime::start_with_listener(cfg, listener).await?);
        Ok(())
    }

    /// Starts stopped node `i` again as a process of its own (`alertrelay
    /// serve`, this binary), so that its memory can be told apart from the
    /// others'. The process is killed when the handle is dropped.
    pub async fn restart_as_process(&mut self, i: usize) -> anyhow::Result<NodeProcess> {
        anyhow::ensure!(
            self.nodes[i].is_none(),
            "node {i} is running in this process"
        );
        let path = &self.config_paths[i];
        let log = path.with_extension("log");
        let child = tokio::process::Command::new(std::env::current_exe()?)
            .arg("serve")
            .arg("--config")
            .arg(path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .context("starting a node process")?;
        Ok(NodeProcess { child, log })
    }

    /// An operator client of node `i` (its own operator certificate).
    pub async fn client(&self, i: usize) -> anyhow::Result<OperatorClient<Channel>> {
        crate::cli::client::connect(&self.configs[i])
            .await
            .map_err(|f| f.error)
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
    }
}

/// A node running as its own process (`Cluster::restart_as_process`).
pub struct NodeProcess {
    child: tokio::process::Child,
    log: std::path::PathBuf,
}

impl NodeProcess {
    /// Fails (with the end of its log) when the process has exited.
    pub fn check(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            anyhow::bail!(
                "the node process exited ({status}): {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            );
        }
        Ok(())
    }

    /// The process's memory, MiB: (VmRSS, VmHWM, its peak since it started).
    pub fn rss_mib(&self) -> (f64, f64) {
        self.child
            .id()
            .map(|pid| super::rss_mib_of(&format!("/proc/{pid}/status")))
            .unwrap_or_default()
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Submits one report about `http://{ip}/{path}`; returns its id.
pub async fn submit(
    client: &mut OperatorClient<Channel>,
    ip: &str,
    path: &str,
    urgent: bool,
) -> anyhow::Result<String> {
    let priority = if urgent {
        pb::Priority::Urgent
    } else {
        pb::Priority::Bulk
    };
    Ok(client
        .submit_report(pb::SubmitReportRequest {
            urls: vec![format!("http://{ip}/{path}")],
            category: "csam".into(),
            priority: priority as i32,
            ..Default::default()
        })
        .await?
        .into_inner()
        .report_id)
}

/// Unanswered submissions each bulk submitter keeps in flight.
pub const STREAM_WINDOW: usize = 1024;

/// Submits through the bulk intake (`SubmitReports`): `make(i)` gives the
/// i-th submission, or `None` to end; at most `window` stay unanswered;
/// nothing is sent while `hold` is set.
/// Returns each answer's latency (sent → stored), in order. Any refusal is
/// an error: the bench only submits valid reports.
pub async fn submit_stream(
    client: &mut OperatorClient<Channel>,
    window: usize,
    hold: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    mut make: impl FnMut(u64) -> Option<pb::SubmitReportRequest> + Send + 'static,
    mut answered: impl FnMut(u64),
) -> anyhow::Result<Vec<Duration>> {
    use std::sync::{Arc, Mutex};
    let window = window.max(1);
    let credit = Arc::new(tokio::sync::Semaphore::new(window));
    let sent: Arc<Mutex<std::collections::VecDeque<Instant>>> = Arc::default();
    let (tx, rx) = tokio::sync::mpsc::channel(window);
    let producer = {
        let (credit, sent) = (credit.clone(), sent.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            loop {
                let Ok(permit) = credit.acquire().await else {
                    break;
                };
                permit.forget();
                // Held while the origin's queue is above what the bench
                // lets build up (sustained, not an ever-growing queue).
                while hold
                    .as_ref()
                    .is_some_and(|h| h.load(std::sync::atomic::Ordering::Relaxed))
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let Some(r) = make(i) else { break };
                sent.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(Instant::now());
                if tx.send(r).await.is_err() {
                    break;
                }
                i += 1;
            }
        })
    };
    let mut responses = client
        .submit_reports(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut latencies = Vec::new();
    let result = loop {
        match responses.message().await {
            Ok(Some(r)) => {
                if r.code != 0 {
                    break Err(anyhow::anyhow!(
                        "submission {} refused: {}",
                        r.index,
                        r.message
                    ));
                }
                let at = sent.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                if let Some(at) = at {
                    latencies.push(at.elapsed());
                }
                credit.add_permits(1);
                answered(r.index);
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e.into()),
        }
    };
    credit.close();
    producer.abort();
    result.map(|()| latencies)
}

/// Queues `n` bulk reports through the bulk intake with `streams`
/// concurrent streams, the i-th about `http://{ips[i % len]}/{tag}/{i}`,
/// each answer counted on `bar`; returns the seconds it took.
pub async fn queue_bulk(
    client: &OperatorClient<Channel>,
    ips: &[String],
    tag: &str,
    n: usize,
    streams: usize,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<f64> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    anyhow::ensure!(!ips.is_empty(), "no address to report");
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..streams.max(1) {
        let mut c = client.clone();
        let (next, ips, tag, bar) = (next.clone(), ips.to_vec(), tag.to_owned(), bar.clone());
        tasks.spawn(async move {
            submit_stream(
                &mut c,
                STREAM_WINDOW,
                None,
                move |_| {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    (i < n).then(|| bulk_request(&ips[i % ips.len()], &format!("{tag}/{i}")))
                },
                move |_| bar.inc(1),
            )
            .await
            .map(|_| ())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// A bulk submission about `http://{ip}/{path}`.
pub fn bulk_request(ip: &str, path: &str) -> pb::SubmitReportRequest {
    pb::SubmitReportRequest {
        urls: vec![format!("http://{ip}/{path}")],
        category: "csam".into(),
        priority: pb::Priority::Bulk as i32,
        ..Default::default()
    }
}

/// Undelivered reports at the origin, all peers (`ListPeers` queue depth):
/// an outbox row leaves only when the peer's signed receipt is stored.
pub async fn queued(client: &mut OperatorClient<Channel>) -> anyhow::Result<u64> {
    let peers = client
        .list_peers(pb::ListPeersRequest {})
        .await?
        .into_inner();
    Ok(peers.peers.iter().map(|p| p.queue_depth).sum())
}

/// Polls until nothing is queued at the origin (or `limit` passes).
pub async fn wait_drained(
    client: &mut OperatorClient<Channel>,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if queued(client).await? == 0 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            anyhow::bail!("the queue did not drain in {} s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the origin's queue every 50 ms until it is empty, showing on
/// `bar` how many of `total` left it; `each(secs, queued)` sees every
/// reading and may end the wait with an error. Fails after `limit`.
/// Returns the seconds it took.
pub async fn watch_drain(
    client: &mut OperatorClient<Channel>,
    total: u64,
    bar: &indicatif::ProgressBar,
    limit: Duration,
    mut each: impl FnMut(f64, u64) -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    loop {
        let left = queued(client).await?;
        let secs = started.elapsed().as_secs_f64();
        each(secs, left)?;
        bar.set_position(total.saturating_sub(left));
        if left == 0 {
            return Ok(secs);
        }
        if started.elapsed() > limit {
            anyhow::bail!("the backlog did not drain in {} s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An IPv4 address the shipped data places in `country`, found by a
/// seeded search (so runs are comparable).
pub fn address_in(country: &str) -> anyhow::Result<Ipv4Addr> {
    let geo = crate::geo::GeoDb::embedded()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(country.bytes().map(u64::from).sum());
    for _ in 0..2_000_000 {
        let a = Ipv4Addr::from(rng.r#gen::<u32>());
        if geo.lookup(a.into()).country.as_deref() == Some(country) {
            return Ok(a);
        }
    }
    anyhow::bail!("no address in {country} found in the shipped data")
}

/// Watches a node's case events (in process: the broadcast `WatchCases`
/// is built on) and notes when each case changed. A report this node sends
/// changes twice in a benchmark: when it is committed at intake, and when
/// the peer's signed receipt is stored. Reading nothing from the database,
/// it does not disturb what it measures.
pub struct Receipts {
    seen: Arc<Mutex<HashMap<i64, (u32, Instant)>>>,
    lagged: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Receipts {
    pub fn watch(core: &Core) -> Self {
        let mut rx = core.case_events.subscribe();
        let seen: Arc<Mutex<HashMap<i64, (u32, Instant)>>> = Arc::default();
        let lagged = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (s, l) = (seen.clone(), lagged.clone());
        let task = tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(seq) => {
                        let now = Instant::now();
                        if let Ok(mut m) = s.lock() {
                            let e = m.entry(seq).or_insert((0, now));
                            e.0 += 1;
                            e.1 = now;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        l.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Receipts { seen, lagged, task }
    }

    /// When the case `seq` changed the second time (its receipt), if it has.
    pub fn receipt(&self, seq: i64) -> Option<Instant> {
        let m = self.seen.lock().ok()?;
        m.get(&seq).filter(|e| e.0 >= 2).map(|e| e.1)
    }

    /// Events missed because the watcher fell behind.
    pub fn lagged(&self) -> u64 {
        self.lagged.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits for the receipt of `seq` (`limit` at most).
    pub async fn wait(&self, seq: i64, limit: Duration) -> anyhow::Result<Instant> {
        let started = Instant::now();
        loop {
            if let Some(t) = self.receipt(seq) {
                return Ok(t);
            }
            if started.elapsed() > limit {
                anyhow::bail!("no receipt for case {seq} in {} s", limit.as_secs());
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }
}

impl Drop for Receipts {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The sequence number of a report this node made.
pub async fn seq_of(core: &Core, report_id: &str) -> anyhow::Result<i64> {
    core.store
        .reports_by_id(Some(core.me.as_str()), report_id)
        .await?
        .first()
        .map(|r| r.seq)
        .context("a submitted report is not stored")
}
