//! The fault harness: a federation of real `alertrelay serve` processes on
//! loopback (written by `alertrelay federation init`), which the tests kill
//! with SIGKILL or arm with a crash point, restart, and finally check:
//! every report delivered exactly once, with the receiver's original
//! receipt at the origin, and every audit log complete and verifying.
//!
//! The test process is only a client: it submits through each node's
//! Operator service with the node's operator certificate, like the CLI.

#![allow(dead_code)]

pub mod proxy;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use alertrelay::config::NodeConfig;
use alertrelay::crypto::tls;
use alertrelay::identity::NodeId;
use alertrelay::pb;
use alertrelay::pb::operator_client::OperatorClient;
use prost::Message;
use tokio::process::{Child, Command};
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_alertrelay");
pub const CRASH_ENV: &str = "ALERTRELAY_CRASH_AT";
pub const FEDERATION: &str = "fault-federation";

/// Hosted in Germany, France and the Netherlands per the shipped data.
pub const DE_IP: &str = "85.214.132.117";
pub const FR_IP: &str = "62.210.16.6";
pub const NL_IP: &str = "145.100.100.100";

/// SIGABRT, what `crash_point` dies of; SIGKILL, what the harness sends.
const SIGABRT: i32 = 6;
const SIGKILL: i32 = 9;

/// How long a node may take to start answering.
const READY_WITHIN: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

/// The `node.toml` values the harness changes from `federation init`'s.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    pub request_timeout_ms: u64,
    pub checkpoint_interval_ms: u64,
    pub witness_interval_ms: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            retry_initial_ms: 20,
            retry_max_ms: 500,
            request_timeout_ms: 2_000,
            checkpoint_interval_ms: 500,
            witness_interval_ms: 500,
        }
    }
}

pub struct Node {
    pub id: String,
    pub config: NodeConfig,
    client: OperatorClient<Channel>,
    child: Option<Child>,
    /// The crash point the running process was started with.
    armed: Option<String>,
    runs: u32,
    log: PathBuf,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// Writes a federation of `(id, countries)` nodes (countries as in
    /// `--node ID=CC,CC`) with `alertrelay federation init`, on free
    /// loopback ports, and applies `tuning` to every node.toml. Starts
    /// nothing.
    pub async fn create(specs: &[(&str, &str)], tuning: &Tuning) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("fed");
        let base = free_port_block(specs.len());
        let mut cmd = Command::new(BIN);
        cmd.args(["federation", "init", "--federation", FEDERATION, "--out"])
            .arg(&out)
            .args(["--base-port", &base.to_string()]);
        for (id, countries) in specs {
            cmd.args(["--node", &format!("{id}={countries}")]);
        }
        let done = cmd.output().await.expect("run alertrelay federation init");
        assert!(
            done.status.success(),
            "federation init failed: {}",
            String::from_utf8_lossy(&done.stderr)
        );
        let mut nodes = Vec::new();
        for (id, _) in specs {
            let path = out.join(id).join("node.toml");
            for (key, value) in [
                ("retry_initial_ms", tuning.retry_initial_ms),
                ("retry_max_ms", tuning.retry_max_ms),
                ("request_timeout_ms", tuning.request_timeout_ms),
                ("checkpoint_interval_ms", tuning.checkpoint_interval_ms),
                ("witness_interval_ms", tuning.witness_interval_ms),
            ] {
                set_toml_value(&path, key, &value.to_string());
            }
            let config = NodeConfig::load(&path).expect("load the generated node.toml");
            nodes.push(Node {
                id: (*id).to_owned(),
                client: operator_client(&config),
                config,
                child: None,
                armed: None,
                runs: 0,
                log: dir.path().join(id),
            });
        }
        Cluster { dir, nodes }
    }

    /// Sets `key = value` (a key `federation init` writes once; `value` as
    /// TOML, strings quoted) in node `i`'s node.toml, effective at its
    /// next start.
    pub fn set(&mut self, i: usize, key: &str, value: &str) {
        let path = self.nodes[i].config.path.clone();
        set_toml_value(&path, key, value);
        self.nodes[i].config = NodeConfig::load(&path).expect("load the edited node.toml");
    }

    /// Adds a replica of node `i`: the same node (id, certificates, keys,
    /// database), its own node.toml beside the original with its own
    /// loopback port and `delivery.replica = replica`. Returns its index;
    /// it is started like any node.
    pub fn add_replica(&mut self, i: usize, replica: &str) -> usize {
        let src = self.nodes[i].config.path.clone();
        let path = src.with_file_name(format!("node-{replica}.toml"));
        std::fs::copy(&src, &path).expect("copy node.toml");
        let port = free_port_block(1);
        set_toml_value(&path, "listen", &format!("\"127.0.0.1:{port}\""));
        set_toml_value(&path, "replica", &format!("\"{replica}\""));
        let config = NodeConfig::load(&path).expect("load the replica's node.toml");
        let id = self.nodes[i].id.clone();
        self.nodes.push(Node {
            log: self.dir.path().join(format!("{id}-{replica}")),
            id,
            client: operator_client(&config),
            config,
            child: None,
            armed: None,
            runs: 0,
        });
        self.nodes.len() - 1
    }

    pub fn index(&self, id: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn listen(&self, i: usize) -> SocketAddr {
        self.nodes[i].config.listen
    }

    /// Makes node `at` reach `peer` through `addr` (a proxy), by editing
    /// `at`'s copy of the directory. Takes effect at `at`'s next start.
    pub fn route_peer_via(&self, at: usize, peer: usize, addr: SocketAddr) {
        let path = &self.nodes[at].config.directory_path;
        let text = std::fs::read_to_string(path).expect("read directory");
        let old = format!("endpoint = \"https://{}\"", self.listen(peer));
        assert_eq!(text.matches(&old).count(), 1, "{old} in {}", path.display());
        let new = format!("endpoint = \"https://{addr}\"");
        std::fs::write(path, text.replace(&old, &new)).expect("write directory");
    }

    pub async fn start_all(&mut self) {
        let all: Vec<_> = (0..self.nodes.len()).map(|i| (i, None)).collect();
        self.start_together(&all).await;
    }

    /// Starts several nodes at once (`(node, crash point)`), then waits
    /// until each answers; panics if one dies first.
    pub async fn start_together(&mut self, nodes: &[(usize, Option<&str>)]) {
        for (i, crash) in nodes {
            self.spawn(*i, *crash);
        }
        for (i, _) in nodes {
            if let Err(status) = self.wait_ready(*i).await {
                panic!(
                    "{} exited while starting ({status}):\n{}",
                    self.nodes[*i].id,
                    self.log_tail(*i, 40)
                );
            }
        }
    }

    /// Starts node `i` (armed with crash point `crash`, `NAME[:N]`, if
    /// given) and waits until it answers; panics if it dies first.
    pub async fn start(&mut self, i: usize, crash: Option<&str>) {
        self.start_together(&[(i, crash)]).await;
    }

    /// Starts the process and returns at once.
    pub fn spawn(&mut self, i: usize, crash: Option<&str>) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "{} is already running", node.id);
        node.runs += 1;
        let log = std::fs::File::create(node.run_log(node.runs)).expect("create node log");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--config")
            .arg(&node.config.path)
            .env("NO_COLOR", "1")
            .env_remove(CRASH_ENV)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .kill_on_drop(true);
        if let Some(spec) = crash {
            cmd.env(CRASH_ENV, spec);
        }
        node.child = Some(cmd.spawn().expect("spawn alertrelay serve"));
        node.armed = crash.map(str::to_owned);
    }

    /// Waits until node `i` answers an Operator call, or returns how it
    /// exited if it died first.
    pub async fn wait_ready(&mut self, i: usize) -> Result<(), ExitStatus> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = self.try_exited(i) {
                return Err(status);
            }
            let mut client = self.nodes[i].client.clone();
            // `Status`, not a case read: reads of cases are audited, and
            // the crash-point tests count audit appends.
            let probe = client.status(pb::StatusRequest {});
            if probe.await.is_ok() {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within {READY_WITHIN:?}:\n{}",
                self.nodes[i].id,
                self.log_tail(i, 40)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGKILLs node `i` and reaps it. Returns how the process ended: by
    /// the SIGKILL, or (if it died by itself just before) otherwise; None
    /// if it was not running.
    pub async fn kill(&mut self, i: usize) -> Option<ExitStatus> {
        self.nodes[i].armed = None;
        let mut child = self.nodes[i].child.take()?;
        // On Unix `start_kill` is SIGKILL: no shutdown, no flush. Sending
        // it to a process that already exited (not yet reaped) is harmless.
        let _ = child.start_kill();
        Some(child.wait().await.expect("reap the killed node"))
    }

    /// Reaps node `i` if its process has exited, returning how.
    pub fn try_exited(&mut self, i: usize) -> Option<ExitStatus> {
        let node = &mut self.nodes[i];
        let status = node.child.as_mut()?.try_wait().expect("poll child")?;
        node.child = None;
        Some(status)
    }

    /// Waits for node `i` to die by itself (at its crash point).
    pub async fn wait_exit(&mut self, i: usize, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_exited(i) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} (armed with {:?}) still running after {within:?}:\n{}",
                self.nodes[i].id,
                self.nodes[i].armed,
                self.log_tail(i, 40)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    pub fn armed(&self, i: usize) -> Option<&str> {
        self.nodes[i].armed.as_deref()
    }

    /// The crash point named in the current run's log, if the node reached one.
    pub fn crash_point_hit(&self, i: usize) -> Option<String> {
        let node = &self.nodes[i];
        let text = std::fs::read_to_string(node.run_log(node.runs)).unwrap_or_default();
        text.lines().find_map(|l| {
            l.split_once("aborting at crash point ")
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .map(str::to_owned)
        })
    }

    /// Asserts node `i` died of the abort at crash point `name`.
    pub fn assert_crashed_at(&self, i: usize, status: ExitStatus, name: &str) {
        assert_eq!(
            status.signal(),
            Some(SIGABRT),
            "{} should have aborted at {name}, exited {status}:\n{}",
            self.nodes[i].id,
            self.log_tail(i, 40)
        );
        assert_eq!(self.crash_point_hit(i).as_deref(), Some(name));
    }

    /// Whether an exit status is the harness's own SIGKILL.
    pub fn was_killed(status: ExitStatus) -> bool {
        status.signal() == Some(SIGKILL)
    }

    pub fn client(&self, i: usize) -> OperatorClient<Channel> {
        self.nodes[i].client.clone()
    }

    /// Submits a report whose URL is hosted at `hosting_ip` to node `i`.
    pub async fn submit(
        &self,
        i: usize,
        hosting_ip: &str,
        n: u64,
    ) -> Result<String, tonic::Status> {
        submit(self.client(i), hosting_ip, n).await
    }

    /// Node `i`'s cases in `direction` ("incoming", "outgoing").
    pub async fn cases(&self, i: usize, direction: &str) -> Result<Vec<pb::Case>, tonic::Status> {
        let mut client = self.client(i);
        let r = client
            .list_cases(pb::ListCasesRequest {
                direction: direction.into(),
                limit: 10_000,
                ..Default::default()
            })
            .await?;
        Ok(r.into_inner().cases)
    }

    /// Node `i`'s case `id`.
    pub async fn case(&self, i: usize, id: &str) -> Result<pb::Case, tonic::Status> {
        let mut client = self.client(i);
        let r = client
            .get_case(pb::GetCaseRequest { id: id.into() })
            .await?;
        Ok(r.into_inner())
    }

    /// Polls `check` on node `i`'s case `id` until it holds.
    pub async fn wait_case(
        &self,
        i: usize,
        id: &str,
        within: Duration,
        check: impl Fn(&pb::Case) -> bool,
    ) -> pb::Case {
        let deadline = Instant::now() + within;
        loop {
            let case = self.case(i, id).await;
            if let Ok(c) = &case
                && check(c)
            {
                return c.clone();
            }
            assert!(
                Instant::now() < deadline,
                "case {id} at {} not as expected within {within:?}; last: {case:#?}",
                self.nodes[i].id
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until no node has an outgoing delivery still queued, and
    /// returns how long that took.
    pub async fn wait_settled(&self, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let mut pending = Vec::new();
            for (i, node) in self.nodes.iter().enumerate() {
                match self.cases(i, "outgoing").await {
                    Ok(cases) => {
                        for c in &cases {
                            for d in c.deliveries.iter().filter(|d| d.state == "queued") {
                                pending.push(format!(
                                    "{}/{} -> {} (attempts {}, last error {:?})",
                                    node.id, c.id, d.destination, d.attempts, d.last_error
                                ));
                            }
                        }
                    }
                    Err(e) => pending.push(format!("{} unreachable: {e}", node.id)),
                }
            }
            if pending.is_empty() {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "not settled within {within:?}; {} pending, e.g. {:#?}",
                pending.len(),
                &pending[..pending.len().min(10)]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Node `i`'s audit log, through `alertrelay audit export`.
    pub async fn audit_export(&self, i: usize) -> Vec<AuditEntry> {
        let out = Command::new(BIN)
            .args(["audit", "export", "--config"])
            .arg(&self.nodes[i].config.path)
            .output()
            .await
            .expect("run alertrelay audit export");
        assert!(
            out.status.success(),
            "audit export of {} failed: {}",
            self.nodes[i].id,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("an audit export line is JSON"))
            .collect()
    }

    /// `alertrelay audit verify` on node `i` (`--offline`: from the file
    /// alone; otherwise also against what its peers cosigned). Returns the
    /// exit code and what it printed.
    pub async fn audit_verify(&self, i: usize, offline: bool) -> (Option<i32>, String) {
        let mut cmd = Command::new(BIN);
        cmd.args(["audit", "verify", "--config"])
            .arg(&self.nodes[i].config.path);
        if offline {
            cmd.arg("--offline");
        }
        let out = cmd.output().await.expect("run alertrelay audit verify");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    }

    /// The last `lines` lines of node `i`'s current log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let node = &self.nodes[i];
        let text = std::fs::read_to_string(node.run_log(node.runs)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Node {
    fn run_log(&self, run: u32) -> PathBuf {
        self.log.with_extension(format!("run{run}.log"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The children die with their handles (kill_on_drop); on a failed
        // test, show what the nodes said last.
        if std::thread::panicking() {
            for i in 0..self.nodes.len() {
                eprintln!(
                    "---- {} (run {}) log tail ----\n{}",
                    self.nodes[i].id,
                    self.nodes[i].runs,
                    self.log_tail(i, 30)
                );
            }
        }
    }
}

/// Submits one report (one URL at `hosting_ip`) through `client`.
pub async fn submit(
    mut client: OperatorClient<Channel>,
    hosting_ip: &str,
    n: u64,
) -> Result<String, tonic::Status> {
    let r = client
        .submit_report(pb::SubmitReportRequest {
            urls: vec![format!("http://{hosting_ip}/fault-harness/{n}")],
            category: "csam".into(),
            priority: pb::Priority::Bulk as i32,
            ..Default::default()
        })
        .await?;
    Ok(r.into_inner().report_id)
}

fn operator_client(cfg: &NodeConfig) -> OperatorClient<Channel> {
    let files = cfg
        .operator
        .as_ref()
        .expect("federation init writes an [operator] section")
        .files();
    let tls = tls::client_config(&files).expect("operator TLS config");
    let channel = tls::channel(
        &format!("https://{}", cfg.listen),
        Some(cfg.node_id.clone()),
        &cfg.directory.federation,
        tls,
        Duration::from_secs(5),
    )
    .expect("operator channel");
    OperatorClient::new(channel)
}

/// Replaces `key = ...` (a key that occurs once) in a TOML file.
fn set_toml_value(path: &Path, key: &str, value: &str) {
    let text = std::fs::read_to_string(path).expect("read node.toml");
    let prefix = format!("{key} = ");
    assert_eq!(
        text.lines().filter(|l| l.starts_with(&prefix)).count(),
        1,
        "{key} in {}",
        path.display()
    );
    let edited: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with(&prefix) {
                format!("{prefix}{value}")
            } else {
                l.to_owned()
            }
        })
        .collect();
    std::fs::write(path, edited.join("\n") + "\n").expect("write node.toml");
}

/// A block of `n` consecutive free loopback ports, below the kernel's
/// ephemeral range: the nodes are restarted on the same port, and a port
/// the kernel hands out for outgoing connections or `:0` listeners could
/// be taken while a node is down.
fn free_port_block(n: usize) -> u16 {
    use rand::Rng;
    let n = u16::try_from(n).expect("a few nodes");
    let mut rng = rand::thread_rng();
    for _ in 0..1_000 {
        let base = rng.gen_range(20_000..32_000 - n);
        let free = (base..base + n).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no {n} consecutive free loopback ports in 20000-32000");
}

/// One line of `alertrelay audit export`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub kind: String,
    pub subject: String,
    pub detail: serde_json::Value,
}

impl AuditEntry {
    fn detail_str(&self, field: &str) -> &str {
        self.detail
            .get(field)
            .and_then(|v| v.as_str())
            .unwrap_or("")
    }
}

/// A report whose submission was answered with its id.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub origin: usize,
    pub id: String,
}

/// What a run did and found; printed by every test.
#[derive(Debug, Default)]
pub struct Figures {
    pub test: &'static str,
    pub seed: Option<u64>,
    pub random_kills: u32,
    /// Windows in which a link lost replies or was partitioned.
    pub link_faults: u32,
    /// Deaths at each crash point.
    pub crashes: BTreeMap<String, u32>,
    pub submits: u64,
    pub accepted: usize,
    /// Submits that failed (the node died or was down): not accepted.
    pub failed_submits: u64,
    /// Stored by the origin although the submit failed (it died between
    /// the commit and the answer): must be delivered all the same.
    pub stored_unacknowledged: usize,
    pub delivered: usize,
    pub lost: usize,
    pub duplicated: usize,
    /// `report.repeat` entries at the receivers: a retry of a report the
    /// receiver already had, answered with the original receipt.
    pub retransmissions: usize,
    /// From the last restart (or the end of the load, if later) to every
    /// delivery settled.
    pub recovery: Option<Duration>,
    pub elapsed: Duration,
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kills = self.random_kills + self.crashes.values().sum::<u32>();
        write!(f, "FAULT FIGURES [{}]", self.test)?;
        if let Some(seed) = self.seed {
            write!(f, " seed={seed}")?;
        }
        write!(f, " kills={kills} (sigkill={}", self.random_kills)?;
        for (point, n) in &self.crashes {
            write!(f, ", {point}={n}")?;
        }
        write!(
            f,
            ") link-faults={} submits={} accepted={} failed-submits={} stored-unacknowledged={} \
             delivered={} lost={} duplicated={} retransmissions={}",
            self.link_faults,
            self.submits,
            self.accepted,
            self.failed_submits,
            self.stored_unacknowledged,
            self.delivered,
            self.lost,
            self.duplicated,
            self.retransmissions,
        )?;
        if let Some(r) = self.recovery {
            write!(f, " recovery={}ms", r.as_millis())?;
        }
        write!(f, " elapsed={}ms", self.elapsed.as_millis())
    }
}

/// Everything the harness reads from one node at the end.
struct Snapshot {
    outgoing: Vec<pb::Case>,
    /// (origin, report id) → how many incoming cases.
    incoming: HashMap<(String, String), usize>,
    /// (kind, subject) → entries.
    audit: HashMap<(String, String), Vec<AuditEntry>>,
}

impl Snapshot {
    fn entries(&self, kind: &str, subject: &str) -> &[AuditEntry] {
        self.audit
            .get(&(kind.to_owned(), subject.to_owned()))
            .map_or(&[], Vec::as_slice)
    }
}

/// Checks, with every node running and settled, that every report an
/// origin stored (every accepted one, and any stored whose submit failed)
/// is delivered exactly once with the receiver's original receipt stored
/// at the origin, that nothing else arrived anywhere, that each step has
/// exactly one audit entry, and that every audit log verifies. Fills in
/// `figures` and returns the violations found.
pub async fn check_delivery(
    cluster: &Cluster,
    accepted: &[Accepted],
    figures: &mut Figures,
) -> Vec<String> {
    let mut violations = Vec::new();
    let mut snaps = Vec::new();
    for i in 0..cluster.nodes.len() {
        let outgoing = cluster.cases(i, "outgoing").await.expect("list outgoing");
        let mut incoming = HashMap::new();
        for c in cluster.cases(i, "incoming").await.expect("list incoming") {
            *incoming
                .entry((c.origin.clone(), c.id.clone()))
                .or_insert(0) += 1;
        }
        let mut audit: HashMap<(String, String), Vec<AuditEntry>> = HashMap::new();
        for e in cluster.audit_export(i).await {
            audit
                .entry((e.kind.clone(), e.subject.clone()))
                .or_default()
                .push(e);
        }
        snaps.push(Snapshot {
            outgoing,
            incoming,
            audit,
        });
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);

    // Accepted reports: each must be stored at its origin.
    let mut accepted_ids = std::collections::HashSet::new();
    for a in accepted {
        accepted_ids.insert((a.origin, a.id.clone()));
        if !snaps[a.origin].outgoing.iter().any(|c| c.id == a.id) {
            figures.lost += 1;
            violations.push(format!(
                "LOST: {} accepted report {} but does not list it",
                cluster.nodes[a.origin].id, a.id
            ));
        }
    }
    figures.accepted = accepted.len();

    // Every report an origin stored: delivered once, original receipt kept.
    let mut expected_incoming: HashMap<usize, HashMap<(String, String), ()>> = HashMap::new();
    for (o, snap) in snaps.iter().enumerate() {
        let origin = &cluster.nodes[o];
        for case in &snap.outgoing {
            let subject = format!("{}/{}", origin.id, case.id);
            let was_accepted = accepted_ids.contains(&(o, case.id.clone()));
            if !was_accepted {
                figures.stored_unacknowledged += 1;
            }
            let submitted = snap.entries("report.submitted", &subject);
            if submitted.len() != 1 {
                violations.push(format!(
                    "{subject}: {} report.submitted audit entries at the origin, want 1",
                    submitted.len()
                ));
            }
            let digest = submitted
                .first()
                .map(|e| e.detail_str("payload_sha256").to_owned())
                .unwrap_or_default();
            let mut ok = !case.deliveries.is_empty();
            let mut duplicated = false;
            for d in &case.deliveries {
                let Some(r) = cluster.nodes.iter().position(|n| n.id == d.destination) else {
                    violations.push(format!("{subject}: unknown destination {}", d.destination));
                    ok = false;
                    continue;
                };
                expected_incoming
                    .entry(r)
                    .or_default()
                    .insert((origin.id.clone(), case.id.clone()), ());
                let at_receiver = snaps[r]
                    .incoming
                    .get(&(origin.id.clone(), case.id.clone()))
                    .copied()
                    .unwrap_or(0);
                if at_receiver == 0 {
                    ok = false;
                    violations.push(format!("LOST: {subject} is not at {}", d.destination));
                } else if at_receiver > 1 {
                    duplicated = true;
                    violations.push(format!(
                        "DUPLICATED: {subject} is {at_receiver} times at {}",
                        d.destination
                    ));
                }
                if d.state != "delivered" {
                    ok = false;
                    violations.push(format!(
                        "{subject} -> {}: delivery {:?}, want delivered (last error {:?})",
                        d.destination, d.state, d.last_error
                    ));
                }
                let received = snaps[r].entries("report.received", &subject);
                if received.len() != 1 {
                    duplicated |= received.len() > 1;
                    violations.push(format!(
                        "{subject}: {} report.received audit entries at {}, want 1",
                        received.len(),
                        d.destination
                    ));
                }
                figures.retransmissions += snaps[r].entries("report.repeat", &subject).len();
                let receipts = snap.entries("delivery.receipt", &subject);
                if receipts.len() != 1 {
                    violations.push(format!(
                        "{subject}: {} delivery.receipt audit entries at the origin, want 1",
                        receipts.len()
                    ));
                }
                let problem = check_receipt(
                    &d.receipt,
                    &cluster.nodes[r].id,
                    &case.id,
                    &digest,
                    &origin.config,
                    now,
                    received.first(),
                    receipts.first(),
                );
                if let Some(problem) = problem {
                    ok = false;
                    violations.push(format!("{subject} -> {}: {problem}", d.destination));
                }
            }
            if duplicated {
                figures.duplicated += 1;
            }
            if ok {
                figures.delivered += 1;
            } else if was_accepted {
                figures.lost += 1;
            }
        }
    }

    // Nothing arrived that its origin does not hold as outgoing to here.
    for (r, snap) in snaps.iter().enumerate() {
        for (key, _) in snap.incoming.iter() {
            let expected = expected_incoming
                .get(&r)
                .is_some_and(|m| m.contains_key(key));
            if !expected {
                violations.push(format!(
                    "{} holds {}/{} which its origin does not list as sent to it",
                    cluster.nodes[r].id, key.0, key.1
                ));
            }
        }
    }

    // Every audit log verifies: from the file, and against its witnesses.
    for (i, node) in cluster.nodes.iter().enumerate() {
        for offline in [true, false] {
            let (code, text) = cluster.audit_verify(i, offline).await;
            if code != Some(0) {
                violations.push(format!(
                    "audit verify{} of {} exited {code:?}: {text}",
                    if offline { " --offline" } else { "" },
                    node.id
                ));
            }
        }
    }
    violations
}

/// Checks a stored receipt: signed by the receiver for this report and
/// this content, and the very receipt the receiver issued when it stored
/// the report (a retry must get the original back).
#[allow(clippy::too_many_arguments)]
fn check_receipt(
    bytes: &[u8],
    receiver: &str,
    report_id: &str,
    digest_hex: &str,
    origin: &NodeConfig,
    now_ms: i64,
    received: Option<&AuditEntry>,
    delivery_entry: Option<&AuditEntry>,
) -> Option<String> {
    if bytes.is_empty() {
        return Some("no receipt stored at the origin".into());
    }
    let Ok(signed) = pb::Signed::decode(bytes) else {
        return Some("stored receipt does not decode".into());
    };
    let receiver_id = NodeId::new(receiver).expect("node id");
    let digest = hex::decode(digest_hex).unwrap_or_default();
    if let Err(e) = alertrelay::wire::open_receipt(
        &signed,
        &receiver_id,
        report_id,
        &digest,
        &origin.directory,
        now_ms,
    ) {
        return Some(format!("stored receipt does not verify: {e}"));
    }
    let signature = hex::encode(&signed.signature);
    if let Some(e) = received
        && e.detail_str("receipt_signature") != signature
    {
        return Some(format!(
            "stored receipt is not the one the receiver issued on storing it ({} != {signature})",
            e.detail_str("receipt_signature")
        ));
    }
    if let Some(e) = delivery_entry
        && e.detail_str("receipt_signature") != signature
    {
        return Some("origin's delivery.receipt audit entry names another receipt".into());
    }
    None
}
