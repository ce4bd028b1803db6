//! Real nodes for the benchmark: provisioned into a temporary directory
//! (a federation CA, node and operator certificates, signing keys, durable
//! SQLite files or fresh PostgreSQL databases), started in this process on
//! loopback with mutual TLS, and stopped and restarted on the same port.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

use super::postgres::{Backend, Fresh};
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
    /// Each node's configuration (its first replica's).
    pub configs: Vec<NodeConfig>,
    /// Each node's `node.toml` (its first replica's).
    pub config_paths: Vec<std::path::PathBuf>,
    /// Each node's running replicas (one on SQLite; none while stopped).
    pub nodes: Vec<Vec<NodeHandle>>,
    /// Each node's replicas: configuration file and configuration.
    replicas: Vec<Vec<(std::path::PathBuf, NodeConfig)>>,
    /// The balancers in front of replicated nodes.
    balancers: Vec<tokio::task::JoinHandle<()>>,
    /// On PostgreSQL, the nodes' databases (dropped after the nodes stop).
    databases: Option<Fresh>,
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
        Self::launch(dir, specs, fallback, relays, dns, &Backend::Sqlite).await
    }

    /// As `start` (no fallback, no relays), the nodes keeping their data in
    /// `backend`: on PostgreSQL, each node in a fresh database of its own,
    /// run as that many replicas behind a balancer at the node's address.
    pub async fn start_on(backend: &Backend, dir: &Path, specs: &[Spec]) -> anyhow::Result<Self> {
        Self::launch(dir, specs, None, &[], RawDns::default(), backend).await
    }

    async fn launch(
        dir: &Path,
        specs: &[Spec],
        fallback: Option<&str>,
        relays: &[(String, String)],
        dns: RawDns,
        backend: &Backend,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir_in(dir)?;
        let n = backend.replicas();
        // The node's address (in the directory), and its replicas' own.
        let mut fronts = Vec::new();
        let mut listeners = Vec::new();
        let mut nodes = Vec::new();
        for s in specs {
            let front = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            nodes.push(NodeSpec {
                id: NodeId::new(&s.id)?,
                countries: s.countries.clone(),
                categories: vec![],
                port: Some(front.local_addr()?.port()),
            });
            if n == 1 {
                listeners.push(vec![front]);
            } else {
                let mut own = Vec::new();
                for _ in 0..n {
                    own.push(tokio::net::TcpListener::bind("127.0.0.1:0").await?);
                }
                listeners.push(own);
                fronts.push(front);
            }
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
        let mut databases = match backend {
            Backend::Sqlite => None,
            Backend::Postgres(server) => Some(Fresh::new(server)),
        };
        let mut c = Cluster {
            _dir: dir,
            configs: Vec::new(),
            config_paths: done.configs.clone(),
            nodes: Vec::new(),
            replicas: Vec::new(),
            balancers: Vec::new(),
            databases: None,
        };
        for (path, own) in done.configs.iter().zip(listeners) {
            let database = match databases.as_mut() {
                Some(d) => Some(d.create().await?),
                None => None,
            };
            let mut replicas = Vec::new();
            let mut handles = Vec::new();
            for (k, l) in own.into_iter().enumerate() {
                let file = replica_file(path, k, n, database.as_deref(), l.local_addr()?)?;
                let cfg = NodeConfig::load(&file)?;
                handles.push(
                    crate::runtime::start_with_listener(cfg.clone(), l)
                        .await
                        .with_context(|| format!("starting {}", cfg.node_id))?,
                );
                replicas.push((file, cfg));
            }
            c.configs.push(replicas[0].1.clone());
            c.replicas.push(replicas);
            c.nodes.push(handles);
        }
        for (front, replicas) in fronts.into_iter().zip(&c.replicas) {
            let backends = replicas.iter().map(|(_, cfg)| cfg.listen).collect();
            c.balancers.push(super::postgres::balance(front, backends));
        }
        c.databases = databases;
        Ok(c)
    }

    /// Node `i` (its first replica).
    pub fn core(&self, i: usize) -> anyhow::Result<Arc<Core>> {
        self.nodes[i]
            .first()
            .map(|n| n.core.clone())
            .context("the node is stopped")
    }

    /// Watches the case events of every replica of node `i`: a report
    /// committed by one replica may have its receipt stored by another.
    pub fn receipts(&self, i: usize) -> Receipts {
        let cores: Vec<&Core> = self.nodes[i].iter().map(|n| &*n.core).collect();
        Receipts::watch_all(&cores)
    }

    pub async fn stop(&mut self, i: usize) {
        for n in std::mem::take(&mut self.nodes[i]) {
            n.shutdown().await;
        }
    }

    /// Starts stopped node `i` again (every replica) on the same ports.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        anyhow::ensure!(self.nodes[i].is_empty(), "node {i} is running");
        for (_, cfg) in &self.replicas[i] {
            let listener = rebind(cfg.listen).await?;
            self.nodes[i].push(crate::runtime::start_with_listener(cfg.clone(), listener).await?);
        }
        Ok(())
    }

    /// Starts stopped node `i` again as processes of its own (`alertrelay
    /// serve`, this binary; one per replica), so that its memory can be
    /// told apart from the others'. A process is killed when its handle is
    /// dropped.
    pub async fn restart_as_processes(&mut self, i: usize) -> anyhow::Result<Vec<NodeProcess>> {
        anyhow::ensure!(
            self.nodes[i].is_empty(),
            "node {i} is running in this process"
        );
        let mut started = Vec::new();
        for (path, _) in &self.replicas[i] {
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
            started.push(NodeProcess { child, log });
        }
        Ok(started)
    }

    /// An operator client of node `i` (its own operator certificate; its
    /// first replica).
    pub async fn client(&self, i: usize) -> anyhow::Result<OperatorClient<Channel>> {
        crate::cli::client::connect(&self.configs[i])
            .await
            .map_err(|f| f.error)
    }

    /// An operator client of each replica of node `i`, to spread load over
    /// them (one on SQLite).
    pub async fn clients(&self, i: usize) -> anyhow::Result<Vec<OperatorClient<Channel>>> {
        let mut v = Vec::new();
        for (_, cfg) in &self.replicas[i] {
            v.push(
                crate::cli::client::connect(cfg)
                    .await
                    .map_err(|f| f.error)?,
            );
        }
        Ok(v)
    }

    /// Stops every node, then drops their databases (PostgreSQL).
    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
        for b in &self.balancers {
            b.abort();
        }
        if let Some(d) = self.databases.as_mut() {
            d.drop_all().await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for b in &self.balancers {
            b.abort();
        }
    }
}

/// Binds `addr` again once the node that held it has let it go.
async fn rebind(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e).context("cannot rebind the node's port"),
        }
    }
}

/// The configuration file of replica `k` of `n` of the node `node.toml`
/// (`path`) provisioned: on SQLite, that file as written; on PostgreSQL,
/// with the node's database and, with several replicas, the replica's own
/// address and id (the first in `node.toml` itself, the others in
/// `node-rK.toml` beside it, where its relative paths still hold).
fn replica_file(
    path: &Path,
    k: usize,
    n: usize,
    database: Option<&str>,
    addr: std::net::SocketAddr,
) -> anyhow::Result<std::path::PathBuf> {
    if database.is_none() && n == 1 {
        return Ok(path.to_path_buf());
    }
    let mut t: toml::Table = std::fs::read_to_string(path)?.parse()?;
    if let Some(url) = database {
        t.insert("database".into(), url.into());
    }
    if n > 1 {
        t.insert("listen".into(), addr.to_string().into());
        let delivery = t
            .entry("delivery")
            .or_insert_with(|| toml::Table::new().into());
        if let Some(d) = delivery.as_table_mut() {
            d.insert("replica".into(), format!("r{}", k + 1).into());
        }
    }
    let file = if k == 0 {
        path.to_path_buf()
    } else {
        path.with_file_name(format!("node-r{}.toml", k + 1))
    };
    std::fs::write(&file, toml::to_string(&t)?)?;
    Ok(file)
}

/// A node running as its own process (`Cluster::restart_as_processes`).
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
    clients: &[OperatorClient<Channel>],
    ips: &[String],
    tag: &str,
    n: usize,
    streams: usize,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<f64> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    anyhow::ensure!(!ips.is_empty(), "no address to report");
    anyhow::ensure!(!clients.is_empty(), "no node to submit to");
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..streams.max(1) {
        let mut c = clients[w % clients.len()].clone();
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
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Receipts {
    pub fn watch(core: &Core) -> Self {
        Self::watch_all(&[core])
    }

    /// As `watch`, the events of several replicas of one node together.
    pub fn watch_all(cores: &[&Core]) -> Self {
        let seen: Arc<Mutex<HashMap<i64, (u32, Instant)>>> = Arc::default();
        let lagged = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let tasks = cores
            .iter()
            .map(|core| {
                let mut rx = core.case_events.subscribe();
                let (s, l) = (seen.clone(), lagged.clone());
                tokio::spawn(async move {
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
                })
            })
            .collect();
        Receipts {
            seen,
            lagged,
            tasks,
        }
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
        for t in &self.tasks {
            t.abort();
        }
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
