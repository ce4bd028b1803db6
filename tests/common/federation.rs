//! `Federation`: the nodes of one test federation, written by
//! `provision::init` (what `alertrelay federation init` runs) into a temp
//! directory, and run either in this test process or as `alertrelay serve`
//! processes. `Builder` says which, and with what settings.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use alertrelay::config::{NodeConfig, RawAudit, RawDelivery, RawDns, RawLimits};
use alertrelay::crypto::signing::NodeKey;
use alertrelay::crypto::tls;
use alertrelay::identity::NodeId;
use alertrelay::node::Core;
use alertrelay::pb;
use alertrelay::pb::federation_client::FederationClient;
use alertrelay::pb::operator_client::OperatorClient;
use alertrelay::provision::{self, NodeSpec};
use alertrelay::runtime::{self, NodeHandle, StartError};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

use super::check::AuditEntry;

/// The built binary, for node processes and CLI runs.
pub const BIN: &str = env!("CARGO_BIN_EXE_alertrelay");
/// The environment variable that arms a node process with a crash point
/// (`src/faults.rs`).
pub const CRASH_ENV: &str = "ALERTRELAY_CRASH_AT";
/// Every test federation's name (the CA, the SPIFFE ids, the log origins).
pub const FEDERATION: &str = "test-federation";

/// SIGABRT, what a crash point dies of; SIGKILL, what `kill` sends.
const SIGABRT: i32 = 6;
const SIGKILL: i32 = 9;
/// How long a node process may take to start answering, or to stop.
const READY_WITHIN: Duration = Duration::from_secs(20);
const STOP_WITHIN: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// Quick retries, so tests of outages do not wait.
pub fn fast_delivery() -> RawDelivery {
    RawDelivery {
        retry_initial_ms: 20,
        retry_max_ms: 200,
        batch_size: 64,
        request_timeout_ms: 5_000,
        ..RawDelivery::default()
    }
}

/// Delivery of node processes that are killed and restarted: quick
/// retries, a short request timeout, the shipped batch size.
pub fn process_delivery() -> RawDelivery {
    RawDelivery {
        retry_initial_ms: 20,
        retry_max_ms: 500,
        request_timeout_ms: 2_000,
        ..RawDelivery::default()
    }
}

/// Where the nodes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// In the test process (`runtime::start_with_listener`): a test can
    /// reach into a node's `Core`, and a restart is quick.
    InProcess,
    /// As `alertrelay serve` processes, each run with a log file of its
    /// own: a node can be SIGKILLed or armed with a crash point, its logs
    /// read, its memory measured on its own.
    Processes,
}

/// An edit of a written federation's files.
type Edit<'a> = Box<dyn FnOnce(&Path) + 'a>;

/// Settings of a test federation; `Federation::builder` makes one.
pub struct Builder<'a> {
    nodes: Vec<(String, Vec<String>)>,
    run: Run,
    fallback: Option<String>,
    delivery: Option<RawDelivery>,
    /// None: the default for `run`; Some(None): the shipped five-minute
    /// schedule.
    audit: Option<Option<RawAudit>>,
    limits: Option<RawLimits>,
    relays: Vec<(String, String)>,
    databases: Vec<(usize, String)>,
    prepare: Vec<Edit<'a>>,
    json_logs: bool,
    log_filter: Option<String>,
    /// A signed directory, exchanged so.
    exchange: Option<alertrelay::config::RawExchange>,
    /// `[dns]` of every node: off unless a test names its own server
    /// (nothing leaves the machine).
    dns: RawDns,
}

impl<'a> Builder<'a> {
    /// Nodes in this process, quick retries (`fast_delivery`), checkpoints
    /// and witnessing every 100 ms, metrics on a free port.
    fn new(nodes: &[(&str, &[&str])]) -> Self {
        Builder {
            nodes: nodes
                .iter()
                .map(|(id, cc)| {
                    (
                        (*id).to_owned(),
                        cc.iter().map(|c| (*c).to_owned()).collect(),
                    )
                })
                .collect(),
            run: Run::InProcess,
            fallback: None,
            delivery: None,
            audit: None,
            limits: None,
            relays: Vec::new(),
            databases: Vec::new(),
            prepare: Vec::new(),
            json_logs: false,
            log_filter: None,
            exchange: None,
            dns: RawDns::default(),
        }
    }

    /// A signed directory (`DIR/directory.key`, version 1 published, each
    /// node reading `directory.signed`), exchanged between the nodes every
    /// `interval_ms`.
    pub fn signed_directory(mut self, interval_ms: u64) -> Self {
        self.exchange = Some(alertrelay::config::RawExchange {
            directory_interval_ms: interval_ms,
            protocol: 2,
        });
        self
    }

    /// Every node resolves host names with this `[dns]` (e.g. the test's
    /// own server: `RawDns::resolvers(&[addr])`).
    pub fn dns(mut self, dns: RawDns) -> Self {
        self.dns = dns;
        self
    }

    /// Runs the nodes as `alertrelay serve` processes (retries up to
    /// 500 ms, 2 s request timeout, checkpoints and witnessing every
    /// 500 ms unless set otherwise).
    pub fn processes(mut self) -> Self {
        self.run = Run::Processes;
        self
    }

    /// The fallback for countries without a hotline.
    pub fn fallback(mut self, node: &str) -> Self {
        self.fallback = Some(node.to_owned());
        self
    }

    pub fn delivery(mut self, delivery: RawDelivery) -> Self {
        self.delivery = Some(delivery);
        self
    }

    /// `[limits]` of every node (peer and operator quotas, clock skew).
    pub fn limits(mut self, limits: RawLimits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Checkpoints and witnessing every so many milliseconds.
    pub fn audit_every_ms(mut self, checkpoint: u64, witness: u64) -> Self {
        self.audit = Some(Some(RawAudit {
            checkpoint_interval_ms: checkpoint,
            witness_interval_ms: witness,
        }));
        self
    }

    /// Checkpoints and witnessing on the shipped five-minute schedule: no
    /// peer calls of the nodes' own during a test, so what a node admits,
    /// refuses or audits is only what the test sent.
    pub fn quiet_audit(mut self) -> Self {
        self.audit = Some(None);
        self
    }

    /// `node` is reached through `via` (directory `relay = "via"`).
    pub fn relay(mut self, node: &str, via: &str) -> Self {
        self.relays.push((node.to_owned(), via.to_owned()));
        self
    }

    /// Node `i` keeps its data in the database at `url` (PostgreSQL).
    pub fn database(mut self, i: usize, url: &str) -> Self {
        self.databases.push((i, url.to_owned()));
        self
    }

    /// Runs `edit` on the federation directory once it is written, before
    /// any node starts (certificates from a CA the test holds, directory
    /// entries, `node.toml` sections). Edits run in the order given.
    pub fn prepare(mut self, edit: impl FnOnce(&Path) + 'a) -> Self {
        self.prepare.push(Box::new(edit));
        self
    }

    /// Node processes log JSON lines (`--log-format json`), filtered by
    /// `filter` (`ALERTRELAY_LOG`).
    pub fn json_logs(mut self, filter: &str) -> Self {
        self.json_logs = true;
        self.log_filter = Some(filter.to_owned());
        self
    }

    /// Writes the federation's files only, for tests of configuration.
    pub fn provision(self) -> Provisioned {
        let (provisioned, _) = self.write();
        provisioned
    }

    /// Writes the federation; no node runs yet.
    pub async fn create(self) -> Federation {
        let run = self.run;
        let log_args = (self.json_logs, self.log_filter.clone());
        let (Provisioned { dir, configs }, listeners) = self.write();
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).expect("create the logs folder");
        let mut fed = Federation {
            dir,
            configs: Vec::new(),
            nodes: Vec::new(),
            run,
            json_logs: log_args.0,
            log_filter: log_args.1,
        };
        for (path, listener) in configs.iter().zip(listeners) {
            let config = NodeConfig::load(path)
                .unwrap_or_else(|e| panic!("{}: {}", path.display(), error_chain(&e)));
            fed.push_node(config, listener, &logs);
        }
        fed
    }

    /// Writes the federation and starts every node.
    pub async fn start(self) -> Federation {
        let mut fed = self.create().await;
        fed.start_all().await;
        fed
    }

    /// The files, and for nodes in this process the listeners that hold
    /// their ports until they start.
    fn write(self) -> (Provisioned, Vec<Option<std::net::TcpListener>>) {
        let n = self.nodes.len();
        let dir = tempfile::tempdir().expect("temp dir");
        let (ports, metrics, listeners): (Vec<u16>, Vec<Option<u16>>, Vec<_>) = match self.run {
            Run::InProcess => {
                let listeners: Vec<_> = (0..n)
                    .map(|_| {
                        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                        l.set_nonblocking(true).expect("non-blocking listener");
                        l
                    })
                    .collect();
                let ports = listeners
                    .iter()
                    .map(|l| l.local_addr().expect("listener address").port())
                    .collect();
                (
                    ports,
                    vec![None; n],
                    listeners.into_iter().map(Some).collect(),
                )
            }
            Run::Processes => {
                let base = free_port_block(2 * n);
                (
                    (base..base + n as u16).collect(),
                    (base + n as u16..base + 2 * n as u16).map(Some).collect(),
                    (0..n).map(|_| None).collect(),
                )
            }
        };
        let id = |s: &str| NodeId::new(s).unwrap_or_else(|e| panic!("node id {s}: {e}"));
        let specs: Vec<NodeSpec> = self
            .nodes
            .iter()
            .zip(&ports)
            .map(|((node, countries), port)| NodeSpec {
                id: id(node),
                countries: countries.clone(),
                categories: vec![],
                port: Some(*port),
            })
            .collect();
        let (delivery, audit) = match self.run {
            Run::InProcess => (fast_delivery(), Some(audit_every(100))),
            Run::Processes => (process_delivery(), Some(audit_every(500))),
        };
        let options = provision::Options {
            fallback: self.fallback.as_deref().map(id),
            delivery: Some(self.delivery.unwrap_or(delivery)),
            audit: self.audit.unwrap_or(audit),
            metrics_listen: Some("127.0.0.1:0".into()),
            limits: self.limits,
            relays: self
                .relays
                .iter()
                .map(|(node, via)| (id(node), id(via)))
                .collect(),
            signed_directory: self.exchange.is_some(),
            exchange: self.exchange,
            dns: self.dns.clone(),
        };
        let done = provision::init(dir.path(), FEDERATION, &specs, &options)
            .unwrap_or_else(|e| panic!("provision::init: {}", error_chain(&e)));
        for (path, port) in done.configs.iter().zip(&metrics) {
            if let Some(port) = port {
                set_toml(path, "metrics.listen", format!("127.0.0.1:{port}"));
            }
        }
        for (i, url) in &self.databases {
            set_toml(&done.configs[*i], "database", url.as_str());
        }
        for edit in self.prepare {
            edit(dir.path());
        }
        (
            Provisioned {
                dir,
                configs: done.configs,
            },
            listeners,
        )
    }
}

fn audit_every(ms: u64) -> RawAudit {
    RawAudit {
        checkpoint_interval_ms: ms,
        witness_interval_ms: ms,
    }
}

/// A federation's files, no node started: `dir/<ID>/node.toml` and what
/// it names, `dir/directory.toml`, `dir/ca.pem` and `dir/ca.key`.
pub struct Provisioned {
    pub dir: tempfile::TempDir,
    /// Each node's `node.toml`, in the order the nodes were given.
    pub configs: Vec<PathBuf>,
}

enum State {
    Stopped,
    InProcess(NodeHandle),
    Process(Child),
}

struct Node {
    state: State,
    /// A node process held until it starts (in-process nodes only).
    listener: Option<std::net::TcpListener>,
    /// The crash point the running process was started with.
    armed: Option<String>,
    runs: u32,
    /// `logs/<ID>`: each process run writes `<ID>.run<N>.log` (stderr)
    /// and `<ID>.run<N>.out` (stdout).
    log: PathBuf,
    /// The harness's own Operator client (a lazy channel: it reconnects
    /// after a restart).
    operator: OperatorClient<Channel>,
}

impl Node {
    fn run_file(&self, run: u32, ext: &str) -> PathBuf {
        self.log.with_extension(format!("run{run}.{ext}"))
    }
}

/// A running test federation. Nodes are numbered in the order given.
pub struct Federation {
    pub dir: tempfile::TempDir,
    pub configs: Vec<NodeConfig>,
    nodes: Vec<Node>,
    run: Run,
    json_logs: bool,
    log_filter: Option<String>,
}

impl Federation {
    /// The settings of a federation of `(id, countries)` nodes.
    pub fn builder<'a>(nodes: &[(&str, &[&str])]) -> Builder<'a> {
        Builder::new(nodes)
    }

    /// Starts one node per `(id, countries)`, in this process, with the
    /// builder's defaults.
    pub async fn start(nodes: &[(&str, &[&str])]) -> Self {
        Self::builder(nodes).start().await
    }

    fn push_node(
        &mut self,
        config: NodeConfig,
        listener: Option<std::net::TcpListener>,
        logs: &Path,
    ) -> usize {
        let same_id = self
            .configs
            .iter()
            .filter(|c| c.node_id == config.node_id)
            .count();
        let name = match same_id {
            0 => config.node_id.to_string(),
            n => format!("{}-{}", config.node_id, n + 1),
        };
        self.nodes.push(Node {
            state: State::Stopped,
            listener,
            armed: None,
            runs: 0,
            log: logs.join(name),
            operator: operator_client(&config),
        });
        self.configs.push(config);
        self.configs.len() - 1
    }

    pub fn len(&self) -> usize {
        self.configs.len()
    }

    /// Adds a node written after the federation started (`federation
    /// join`): loaded from its `node.toml`, not yet running.
    pub fn add_node(&mut self, config: &Path) -> usize {
        let config = NodeConfig::load(config)
            .unwrap_or_else(|e| panic!("{}: {}", config.display(), error_chain(&e)));
        let logs = self.dir.path().join("logs");
        self.push_node(config, None, &logs)
    }

    pub fn id(&self, i: usize) -> NodeId {
        self.configs[i].node_id.clone()
    }

    /// The index of the first node with this id.
    pub fn index(&self, id: &str) -> usize {
        self.configs
            .iter()
            .position(|c| c.node_id.as_str() == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn listen(&self, i: usize) -> SocketAddr {
        self.configs[i].listen
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("https://{}", self.configs[i].listen)
    }

    pub fn config_path(&self, i: usize) -> PathBuf {
        self.configs[i].path.clone()
    }

    /// Node `i`'s SQLite file (panics for a node on PostgreSQL).
    pub fn database(&self, i: usize) -> PathBuf {
        self.configs[i]
            .database
            .sqlite_path()
            .expect("a node on SQLite")
            .to_path_buf()
    }

    pub fn signing_key(&self, i: usize) -> NodeKey {
        NodeKey::load(&self.configs[i].signing_key).unwrap()
    }

    // ---- starting and stopping ----

    /// Starts every node that is not running (processes all at once).
    pub async fn start_all(&mut self) {
        let stopped: Vec<_> = (0..self.len())
            .filter(|&i| !self.is_running(i))
            .map(|i| (i, None))
            .collect();
        self.start_together(&stopped).await;
    }

    /// (Re)starts node `i` on its port, with its database, and waits until
    /// it answers.
    pub async fn restart(&mut self, i: usize) {
        self.start_together(&[(i, None)]).await;
    }

    /// Starts node `i` in this process; the error if it does not start.
    pub async fn try_restart(&mut self, i: usize) -> Result<(), StartError> {
        assert_eq!(
            self.run,
            Run::InProcess,
            "try_restart: nodes in this process"
        );
        assert!(!self.is_running(i), "{} is already running", self.id(i));
        // A signed directory changes on disk while the node runs (the node
        // writes each newer version): start from the file, as `serve` does.
        if self.configs[i].directory.signed.is_some() {
            let path = self.configs[i].path.clone();
            self.configs[i] = NodeConfig::load(&path)
                .unwrap_or_else(|e| panic!("{}: {}", path.display(), error_chain(&e)));
        }
        // The SQLite lock of a node just stopped (an flock, held by an
        // open file) can outlive it for a moment: a process that another
        // test of this binary spawns at that instant holds a copy of every
        // open file until it execs. Only a lock that stays held is an error.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let listener = match self.nodes[i].listener.take() {
                Some(l) => tokio::net::TcpListener::from_std(l).expect("adopt the listener"),
                None => rebind(self.configs[i].listen).await,
            };
            match runtime::start_with_listener(self.configs[i].clone(), listener).await {
                Ok(handle) => {
                    self.nodes[i].state = State::InProcess(handle);
                    return Ok(());
                }
                Err(StartError::AlreadyRunning { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts node `i` once more, beside itself, on a port of its own: what
    /// a second process on the same database would do.
    pub async fn start_second_instance(&self, i: usize) -> Result<NodeHandle, StartError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        runtime::start_with_listener(self.configs[i].clone(), listener).await
    }

    /// Starts node `i` armed with crash point `crash` (`NAME[:N]`), and
    /// waits until it answers; panics if it dies first.
    pub async fn start_armed(&mut self, i: usize, crash: Option<&str>) {
        self.start_together(&[(i, crash)]).await;
    }

    /// Starts several nodes at once (`(node, crash point)`; crash points
    /// only for processes), then waits until each answers; panics if one
    /// dies first.
    pub async fn start_together(&mut self, nodes: &[(usize, Option<&str>)]) {
        match self.run {
            Run::InProcess => {
                for (i, crash) in nodes {
                    assert!(crash.is_none(), "crash points need node processes");
                    self.try_restart(*i).await.unwrap_or_else(|e| {
                        panic!("{} did not start: {}", self.id(*i), error_chain(&e))
                    });
                }
            }
            Run::Processes => {
                for (i, crash) in nodes {
                    self.spawn(*i, *crash);
                }
                for (i, _) in nodes {
                    if let Err(status) = self.wait_ready(*i).await {
                        panic!(
                            "{} exited while starting ({status}):\n{}",
                            self.id(*i),
                            self.log_tail(*i, 40)
                        );
                    }
                }
            }
        }
    }

    /// Starts node `i`'s process and returns at once.
    pub fn spawn(&mut self, i: usize, crash: Option<&str>) {
        assert_eq!(self.run, Run::Processes, "spawn: node processes");
        let node = &mut self.nodes[i];
        assert!(
            matches!(node.state, State::Stopped),
            "node {i} is already running"
        );
        node.runs += 1;
        let out =
            std::fs::File::create(node.run_file(node.runs, "out")).expect("create stdout file");
        let err = std::fs::File::create(node.run_file(node.runs, "log")).expect("create log file");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.configs[i].path)
            .env("NO_COLOR", "1")
            .env_remove(CRASH_ENV)
            .env_remove("ALERTRELAY_LOG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        if self.json_logs {
            cmd.args(["--log-format", "json"]);
        }
        if let Some(filter) = &self.log_filter {
            cmd.env("ALERTRELAY_LOG", filter);
        }
        if let Some(spec) = crash {
            cmd.env(CRASH_ENV, spec);
        }
        node.state = State::Process(cmd.spawn().expect("spawn alertrelay serve"));
        node.armed = crash.map(str::to_owned);
    }

    /// Waits until node `i`'s process answers an Operator call, or returns
    /// how it exited if it died first.
    pub async fn wait_ready(&mut self, i: usize) -> Result<(), ExitStatus> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = self.try_exited(i) {
                return Err(status);
            }
            // `Status`, not a case read: reads of cases are audited, and
            // the crash-point tests count audit appends.
            let mut client = self.nodes[i].operator.clone();
            if client.status(pb::StatusRequest {}).await.is_ok() {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within {READY_WITHIN:?}:\n{}",
                self.id(i),
                self.log_tail(i, 40)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops node `i` cleanly: a shutdown in this process, SIGTERM to a
    /// process (which must exit, successfully, within 30 s).
    pub async fn stop(&mut self, i: usize) {
        match std::mem::replace(&mut self.nodes[i].state, State::Stopped) {
            State::Stopped => {}
            State::InProcess(handle) => handle.shutdown().await,
            State::Process(child) => {
                self.nodes[i].state = State::Process(child);
                let status = self.terminate(i, STOP_WITHIN).await;
                assert!(
                    status.success(),
                    "{} exited {status} on SIGTERM",
                    self.id(i)
                );
            }
        }
        self.nodes[i].armed = None;
    }

    /// Sends node `i`'s process SIGTERM and returns how it exited; panics
    /// if it is still running after `within`.
    pub async fn terminate(&mut self, i: usize, within: Duration) -> ExitStatus {
        let State::Process(child) = &self.nodes[i].state else {
            panic!("terminate: node {i} is not a running process");
        };
        let pid = child.id().expect("a running process has a pid");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_exited(i) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running {within:?} after SIGTERM:\n{}",
                self.id(i),
                self.log_tail(i, 40)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGKILLs node `i`'s process and reaps it. Returns how the process
    /// ended: by the SIGKILL, or (if it died by itself just before)
    /// otherwise; None if it was not running.
    pub async fn kill(&mut self, i: usize) -> Option<ExitStatus> {
        self.nodes[i].armed = None;
        let state = std::mem::replace(&mut self.nodes[i].state, State::Stopped);
        let State::Process(mut child) = state else {
            assert!(
                matches!(state, State::Stopped),
                "kill: node {i} runs in this process"
            );
            return None;
        };
        // On Unix `start_kill` is SIGKILL: no shutdown, no flush. Sending
        // it to a process that already exited (not yet reaped) is harmless.
        let _ = child.start_kill();
        Some(child.wait().await.expect("reap the killed node"))
    }

    /// Stops every node.
    pub async fn shutdown(mut self) {
        for i in 0..self.len() {
            self.stop(i).await;
        }
    }

    pub fn is_running(&self, i: usize) -> bool {
        !matches!(self.nodes[i].state, State::Stopped)
    }

    /// Reaps node `i`'s process if it has exited, returning how.
    pub fn try_exited(&mut self, i: usize) -> Option<ExitStatus> {
        let State::Process(child) = &mut self.nodes[i].state else {
            return None;
        };
        let status = child.try_wait().expect("poll child")?;
        self.nodes[i].state = State::Stopped;
        Some(status)
    }

    /// Waits for node `i`'s process to die by itself (at its crash point).
    pub async fn wait_exit(&mut self, i: usize, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_exited(i) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} (armed with {:?}) still running after {within:?}:\n{}",
                self.id(i),
                self.nodes[i].armed,
                self.log_tail(i, 40)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The process id of node `i`.
    pub fn pid(&self, i: usize) -> u32 {
        match &self.nodes[i].state {
            State::Process(child) => child.id().expect("a running process has a pid"),
            _ => panic!("node {i} is not a running process"),
        }
    }

    /// Node `i` running in this process.
    pub fn handle(&self, i: usize) -> &NodeHandle {
        match &self.nodes[i].state {
            State::InProcess(handle) => handle,
            _ => panic!("node {i} is not running in this process"),
        }
    }

    /// The state of node `i`, running in this process.
    pub fn core(&self, i: usize) -> &Core {
        &self.handle(i).core
    }

    // ---- crash points and logs (processes) ----

    pub fn armed(&self, i: usize) -> Option<&str> {
        self.nodes[i].armed.as_deref()
    }

    /// The crash point named in the current run's log, if the node reached
    /// one.
    pub fn crash_point_hit(&self, i: usize) -> Option<String> {
        self.log(i).lines().find_map(|l| {
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
            self.id(i),
            self.log_tail(i, 40)
        );
        assert_eq!(self.crash_point_hit(i).as_deref(), Some(name));
    }

    /// Whether an exit status is the harness's own SIGKILL.
    pub fn was_killed(status: ExitStatus) -> bool {
        status.signal() == Some(SIGKILL)
    }

    /// What node `i`'s current (or last) process run wrote to stderr: its
    /// log.
    pub fn log(&self, i: usize) -> String {
        let node = &self.nodes[i];
        std::fs::read_to_string(node.run_file(node.runs, "log")).unwrap_or_default()
    }

    /// What node `i`'s current (or last) process run wrote to stdout.
    pub fn stdout(&self, i: usize) -> String {
        let node = &self.nodes[i];
        std::fs::read_to_string(node.run_file(node.runs, "out")).unwrap_or_default()
    }

    /// The last `lines` lines of node `i`'s current log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = self.log(i);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    // ---- clients ----

    /// An Operator client using node `i`'s operator certificate.
    pub fn operator(&self, i: usize) -> OperatorClient<Channel> {
        self.nodes[i].operator.clone()
    }

    /// An Operator client using node `i`'s ADMIN operator certificate.
    pub fn admin(&self, i: usize) -> OperatorClient<Channel> {
        OperatorClient::new(self.channel(i, self.admin_tls(i)))
    }

    /// Raw TLS client config with node `i`'s ADMIN operator certificate.
    pub fn admin_tls(&self, i: usize) -> std::sync::Arc<rustls::ClientConfig> {
        tls::client_config(&self.configs[i].admin.as_ref().unwrap().files()).unwrap()
    }

    /// Raw TLS client config with node `i`'s own node certificate.
    pub fn node_tls(&self, i: usize) -> std::sync::Arc<rustls::ClientConfig> {
        tls::client_config(&self.configs[i].tls.files()).unwrap()
    }

    /// A Federation client that connects to node `to` as node `from`.
    pub fn federation_as(&self, from: usize, to: usize) -> FederationClient<Channel> {
        FederationClient::new(self.channel(to, self.node_tls(from)))
    }

    /// An Operator client that connects to node `to` with node `from`'s
    /// NODE certificate (which must be refused).
    pub fn operator_with_node_cert(&self, from: usize, to: usize) -> OperatorClient<Channel> {
        OperatorClient::new(self.channel(to, self.node_tls(from)))
    }

    fn channel(&self, to: usize, tls: std::sync::Arc<rustls::ClientConfig>) -> Channel {
        alertrelay::federation::channel::channel(
            &self.endpoint(to),
            Some(self.id(to)),
            FEDERATION,
            tls,
            Duration::from_secs(10),
        )
        .unwrap()
    }

    /// Fetches node `i`'s Prometheus page.
    pub async fn metrics(&self, i: usize) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = match &self.nodes[i].state {
            State::InProcess(handle) => handle.metrics_addr,
            _ => self.configs[i].metrics_listen,
        }
        .expect("the node serves metrics");
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        out
    }

    // ---- reading the nodes through their Operator service ----

    /// Submits a report of `http://<hosting_ip>/fault-harness/<n>` to node
    /// `i`.
    pub async fn submit(
        &self,
        i: usize,
        hosting_ip: &str,
        n: u64,
    ) -> Result<String, tonic::Status> {
        super::submit_numbered(self.operator(i), hosting_ip, n).await
    }

    /// Node `i`'s cases in `direction` ("incoming", "outgoing"), as sent.
    pub async fn cases(&self, i: usize, direction: &str) -> Result<Vec<pb::Case>, tonic::Status> {
        let r = self
            .operator(i)
            .list_cases(pb::ListCasesRequest {
                direction: direction.into(),
                limit: 10_000,
                ..Default::default()
            })
            .await?;
        Ok(r.into_inner().cases)
    }

    /// Node `i`'s case `id`, as sent.
    pub async fn case(&self, i: usize, id: &str) -> Result<pb::Case, tonic::Status> {
        let r = self
            .operator(i)
            .get_case(pb::GetCaseRequest { id: id.into() })
            .await?;
        Ok(r.into_inner())
    }

    /// Polls node `i`'s case `id` until `check` holds.
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
                self.id(i)
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
            for i in 0..self.len() {
                match self.cases(i, "outgoing").await {
                    Ok(cases) => {
                        for c in &cases {
                            for d in c.deliveries.iter().filter(|d| d.state == "queued") {
                                pending.push(format!(
                                    "{}/{} -> {} (attempts {}, last error {:?})",
                                    self.id(i),
                                    c.id,
                                    d.destination,
                                    d.attempts,
                                    d.last_error
                                ));
                            }
                        }
                    }
                    Err(e) => pending.push(format!("{} unreachable: {e}", self.id(i))),
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

    /// Node `i`'s audit log, through `alertrelay audit export` (from the
    /// database: the node may be down).
    pub async fn audit_export(&self, i: usize) -> Vec<AuditEntry> {
        let config = self.configs[i].path.to_string_lossy().into_owned();
        let (code, out, err) = super::cli(&["audit", "export", "--config", &config]).await;
        assert_eq!(code, 0, "audit export of {} failed: {err}", self.id(i));
        out.lines()
            .map(|l| serde_json::from_str(l).expect("an audit export line is JSON"))
            .collect()
    }

    /// `alertrelay audit verify` on node `i` (`--offline`: from the file
    /// alone; otherwise also against what its peers cosigned). Returns the
    /// exit code and what it printed.
    pub async fn audit_verify(&self, i: usize, offline: bool) -> (i32, String) {
        let config = self.configs[i].path.to_string_lossy().into_owned();
        let mut args = vec!["audit", "verify", "--config", &config];
        if offline {
            args.push("--offline");
        }
        let (code, out, err) = super::cli(&args).await;
        (code, format!("{out}{err}"))
    }

    // ---- editing a stopped node's files ----

    /// Sets `key` (dotted: `delivery.lease_ms`) in node `i`'s node.toml,
    /// effective at its next start.
    pub fn set(&mut self, i: usize, key: &str, value: impl Into<toml::Value>) {
        let path = self.configs[i].path.clone();
        set_toml(&path, key, value);
        self.configs[i] = NodeConfig::load(&path).expect("load the edited node.toml");
        self.nodes[i].operator = operator_client(&self.configs[i]);
    }

    /// Adds a replica of node `i`: the same node (id, certificates, keys,
    /// database), its own node.toml beside the original with its own
    /// loopback ports and `delivery.replica = replica`. Returns its index;
    /// it is started like any node.
    pub fn add_replica(&mut self, i: usize, replica: &str) -> usize {
        let src = self.configs[i].path.clone();
        let path = src.with_file_name(format!("node-{replica}.toml"));
        std::fs::copy(&src, &path).expect("copy node.toml");
        let port = free_port_block(2);
        set_toml(&path, "listen", format!("127.0.0.1:{port}"));
        set_toml(&path, "metrics.listen", format!("127.0.0.1:{}", port + 1));
        set_toml(&path, "delivery.replica", replica);
        let config = NodeConfig::load(&path).expect("load the replica's node.toml");
        let logs = self.dir.path().join("logs");
        self.push_node(config, None, &logs)
    }

    /// Makes node `at` reach `peer` through `addr` (a proxy), by editing
    /// `at`'s copy of the directory. Takes effect at `at`'s next start.
    pub fn route_peer_via(&self, at: usize, peer: usize, addr: SocketAddr) {
        let path = &self.configs[at].directory_path;
        let text = std::fs::read_to_string(path).expect("read directory");
        let old = format!("endpoint = \"https://{}\"", self.listen(peer));
        assert_eq!(text.matches(&old).count(), 1, "{old} in {}", path.display());
        let new = format!("endpoint = \"https://{addr}\"");
        std::fs::write(path, text.replace(&old, &new)).expect("write directory");
    }
}

impl Drop for Federation {
    fn drop(&mut self) {
        // Node processes die with their handles (kill_on_drop); on a
        // failed test, show what they said last.
        if std::thread::panicking() {
            for (i, node) in self.nodes.iter().enumerate() {
                if node.runs > 0 {
                    eprintln!(
                        "---- {} (run {}) log tail ----\n{}",
                        self.configs[i].node_id,
                        node.runs,
                        self.log_tail(i, 30)
                    );
                }
            }
        }
    }
}

/// An Operator client with the operator certificate `cfg` names.
fn operator_client(cfg: &NodeConfig) -> OperatorClient<Channel> {
    let files = cfg
        .operator
        .as_ref()
        .expect("provisioned nodes have an [operator] section")
        .files();
    let tls = tls::client_config(&files).expect("operator TLS config");
    let channel = alertrelay::federation::channel::channel(
        &format!("https://{}", cfg.listen),
        Some(cfg.node_id.clone()),
        &cfg.directory.federation,
        tls,
        Duration::from_secs(10),
    )
    .expect("operator channel");
    OperatorClient::new(channel)
}

/// Binds `addr` again (the node that had it may take a moment to let go).
async fn rebind(addr: SocketAddr) -> tokio::net::TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(POLL).await;
            }
            Err(e) => panic!("cannot rebind {addr}: {e}"),
        }
    }
}

/// Sets `key` (dotted for a table: `metrics.listen`) in a TOML file.
pub fn set_toml(path: &Path, key: &str, value: impl Into<toml::Value>) {
    let text = std::fs::read_to_string(path).expect("read the TOML file");
    let mut doc: toml::Table = toml::from_str(&text).expect("a TOML file");
    let (tables, last) = match key.rsplit_once('.') {
        Some((tables, last)) => (tables.split('.').collect::<Vec<_>>(), last),
        None => (Vec::new(), key),
    };
    let mut table = &mut doc;
    for t in tables {
        table = table
            .entry(t)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap_or_else(|| panic!("{t} is not a table in {}", path.display()));
    }
    table.insert(last.to_owned(), value.into());
    std::fs::write(path, toml::to_string_pretty(&doc).expect("TOML")).expect("write the TOML file");
}

/// A block of `n` consecutive free loopback ports, below the kernel's
/// ephemeral range: node processes are restarted on the same port, and a
/// port the kernel hands out for outgoing connections or `:0` listeners
/// could be taken while a node is down.
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

/// An error and its sources, one after the other.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
