//! `alertrelay bench`: real nodes (mutual TLS, durable SQLite files in a
//! temporary directory, in this process) under measured load. Every figure
//! printed is measured in the run that prints it.
//!
//! The urgent lane: urgent reports' latency (submitted at the origin →
//! signed receipt stored at the origin) with an idle peer, then while a
//! bulk backlog for the same peer drains.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tonic::transport::Channel;

use crate::config::{NodeConfig, RawDelivery, RawLimits};
use crate::identity::NodeId;
use crate::node::NodeHandle;
use crate::pb;
use crate::pb::operator_client::OperatorClient;
use crate::provision::{self, NodeSpec};

/// A German address in the shipped data: the origin's reports go to the
/// German node.
const DE_IP: &str = "85.214.132.117";

#[derive(Debug, Clone)]
pub struct Options {
    /// Bulk reports queued while the destination is down.
    pub backlog: usize,
    /// Urgent reports measured in each phase.
    pub urgent: usize,
    /// Reports in flight while queuing the backlog.
    pub concurrency: usize,
    pub json: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(mut v: Vec<Duration>) -> Self {
        v.sort();
        let at = |p: f64| {
            if v.is_empty() {
                return 0.0;
            }
            let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
            v[i].as_secs_f64() * 1000.0
        };
        Latency {
            samples: v.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

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
}

/// Two nodes in a temporary directory: FR-BENCH (origin) and DE-BENCH.
struct Cluster {
    _dir: tempfile::TempDir,
    configs: Vec<NodeConfig>,
    nodes: Vec<Option<NodeHandle>>,
}

impl Cluster {
    async fn start(dir: tempfile::TempDir) -> anyhow::Result<Self> {
        let mut listeners = Vec::new();
        let mut specs = Vec::new();
        for (id, cc) in [("FR-BENCH", "FR"), ("DE-BENCH", "DE")] {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            specs.push(NodeSpec {
                id: NodeId::new(id)?,
                countries: vec![cc.to_owned()],
                categories: vec![],
                port: Some(l.local_addr()?.port()),
            });
            listeners.push(l);
        }
        let options = provision::Options {
            delivery: Some(RawDelivery {
                retry_initial_ms: 50,
                retry_max_ms: 500,
                ..RawDelivery::default()
            }),
            limits: Some(RawLimits {
                operator_requests_per_sec: 1_000_000.0,
                operator_burst: 1_000_000,
                operator_concurrent: 1024,
                peer_requests_per_sec: 100_000.0,
                peer_burst: 100_000,
                ..RawLimits::default()
            }),
            ..Default::default()
        };
        let done = provision::init(dir.path(), "bench", &specs, &options)?;
        let mut configs = Vec::new();
        let mut nodes = Vec::new();
        for (path, l) in done.configs.iter().zip(listeners) {
            let cfg = NodeConfig::load(path)?;
            nodes.push(Some(
                crate::node::start_with_listener(cfg.clone(), l).await?,
            ));
            configs.push(cfg);
        }
        Ok(Cluster {
            _dir: dir,
            configs,
            nodes,
        })
    }

    async fn stop(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            n.shutdown().await;
        }
    }

    async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
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
        self.nodes[i] = Some(crate::node::start_with_listener(cfg, listener).await?);
        Ok(())
    }

    async fn client(&self, i: usize) -> anyhow::Result<OperatorClient<Channel>> {
        crate::cli::client::connect(&self.configs[i])
            .await
            .map_err(|f| f.error)
    }

    async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
    }
}

async fn submit(
    client: &mut OperatorClient<Channel>,
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
            urls: vec![format!("http://{DE_IP}/{path}")],
            category: "csam".into(),
            priority: priority as i32,
            ..Default::default()
        })
        .await?
        .into_inner()
        .report_id)
}

/// Submits one urgent report and waits until its receipt is stored.
async fn urgent_latency(
    client: &mut OperatorClient<Channel>,
    n: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let id = submit(client, &format!("urgent/{n}"), true).await?;
    loop {
        let case = client
            .get_case(pb::GetCaseRequest { id: id.clone() })
            .await?
            .into_inner();
        if case.deliveries.iter().all(|d| d.state == "delivered") && !case.deliveries.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("urgent report {id} not delivered in 120 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Queued (undelivered) reports at the origin.
async fn queued(client: &mut OperatorClient<Channel>) -> anyhow::Result<u64> {
    let peers = client
        .list_peers(pb::ListPeersRequest {})
        .await?
        .into_inner();
    Ok(peers.peers.iter().map(|p| p.queue_depth).sum())
}

fn progress(json: bool, what: &str, done: usize, of: usize) {
    use std::io::Write;
    if !json {
        eprint!("\r  {what}: {done}/{of}   ");
        let _ = std::io::stderr().flush();
    }
}

pub async fn urgent_lane(opts: &Options, dir: &Path) -> anyhow::Result<UrgentLane> {
    let tmp = tempfile::tempdir_in(dir)?;
    let mut cluster = Cluster::start(tmp).await?;
    let mut client = cluster.client(0).await?;
    // Warm up connections and the destination.
    urgent_latency(&mut client, 0).await?;
    let mut idle = Vec::with_capacity(opts.urgent);
    for n in 0..opts.urgent {
        idle.push(urgent_latency(&mut client, n + 1).await?);
        progress(opts.json, "urgent, peer idle", n + 1, opts.urgent);
    }

    // The backlog: the destination is down while bulk reports queue.
    cluster.stop(1).await;
    let started = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..opts.concurrency.max(1) {
        let mut c = client.clone();
        let next = next.clone();
        let total = opts.backlog;
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<(), anyhow::Error>(());
                }
                submit(&mut c, &format!("bulk/{i}"), false).await?;
            }
        });
    }
    let mut last = Instant::now();
    while !tasks.is_empty() {
        tokio::select! {
            r = tasks.join_next() => {
                if let Some(r) = r {
                    r??;
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        if last.elapsed() > Duration::from_millis(250) {
            let done = next
                .load(std::sync::atomic::Ordering::Relaxed)
                .min(opts.backlog);
            progress(opts.json, "queuing the bulk backlog", done, opts.backlog);
            last = Instant::now();
        }
    }
    let intake_secs = started.elapsed().as_secs_f64();

    // The destination comes back: the backlog drains while urgent reports
    // keep arriving.
    cluster.restart(1).await?;
    let drain_started = Instant::now();
    let mut during = Vec::with_capacity(opts.urgent);
    let mut n = opts.urgent + 1;
    let drained_at = loop {
        let left = queued(&mut client).await?;
        if left == 0 {
            break drain_started.elapsed();
        }
        during.push(urgent_latency(&mut client, n).await?);
        n += 1;
        progress(
            opts.json,
            &format!("draining ({left} left); urgent reports measured"),
            during.len(),
            during.len(),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        if drain_started.elapsed() > Duration::from_secs(3600) {
            anyhow::bail!("the backlog did not drain in an hour");
        }
    };
    if !opts.json {
        eprintln!();
    }
    let drain_secs = drained_at.as_secs_f64();
    cluster.shutdown().await;
    Ok(UrgentLane {
        backlog: opts.backlog,
        intake_per_sec: opts.backlog as f64 / intake_secs,
        drain_per_sec: opts.backlog as f64 / drain_secs,
        drain_secs,
        urgent_idle: Latency::of(idle),
        urgent_during_drain: Latency::of(during),
    })
}

pub fn print_urgent(r: &UrgentLane) {
    println!("urgent lane (2 nodes, mutual TLS, durable SQLite, this machine)");
    println!(
        "  bulk backlog        {:>9} reports queued at {:.0}/s, drained at {:.0}/s ({:.1} s)",
        r.backlog, r.intake_per_sec, r.drain_per_sec, r.drain_secs
    );
    println!(
        "  {:<34} {:>8} {:>9} {:>9} {:>9}",
        "urgent report → receipt stored", "samples", "p50 ms", "p99 ms", "max ms"
    );
    for (what, l) in [
        ("peer idle", &r.urgent_idle),
        ("while the backlog drains", &r.urgent_during_drain),
    ] {
        println!(
            "  {:<34} {:>8} {:>9.1} {:>9.1} {:>9.1}",
            what, l.samples, l.p50_ms, l.p99_ms, l.max_ms
        );
    }
}
