//! A harness that starts real alertrelay nodes on loopback: certificates
//! minted per test, temp SQLite files, real mutual TLS, and handles that
//! stop and restart nodes on the same port.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use alertrelay::api::convert::case_from_pb;
use alertrelay::config::{NodeConfig, RawDelivery};
use alertrelay::crypto::signing::NodeKey;
use alertrelay::crypto::tls;
use alertrelay::identity::NodeId;
use alertrelay::node::cases::CaseView;
use alertrelay::pb;
use alertrelay::pb::federation_client::FederationClient;
use alertrelay::pb::operator_client::OperatorClient;
use alertrelay::provision::{self, NodeSpec};
use alertrelay::runtime::{self as node, NodeHandle};
use tonic::transport::Channel;

pub mod pg;

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

pub struct Federation {
    pub dir: tempfile::TempDir,
    pub configs: Vec<NodeConfig>,
    pub nodes: Vec<Option<NodeHandle>>,
}

impl Federation {
    /// Starts one node per `(id, countries)`, all on free loopback ports.
    pub async fn start(nodes: &[(&str, &[&str])]) -> Self {
        Self::start_with(nodes, None).await
    }

    pub async fn start_with(nodes: &[(&str, &[&str])], fallback: Option<&str>) -> Self {
        Self::start_opts(nodes, fallback, fast_delivery()).await
    }

    pub async fn start_opts(
        nodes: &[(&str, &[&str])],
        fallback: Option<&str>,
        delivery: RawDelivery,
    ) -> Self {
        Self::start_full(nodes, fallback, delivery, None).await
    }

    pub async fn start_full(
        nodes: &[(&str, &[&str])],
        fallback: Option<&str>,
        delivery: RawDelivery,
        limits: Option<alertrelay::config::RawLimits>,
    ) -> Self {
        let options = provision::Options {
            fallback: fallback.map(|f| NodeId::new(f).unwrap()),
            delivery: Some(delivery),
            audit: Some(alertrelay::config::RawAudit {
                checkpoint_interval_ms: 100,
                witness_interval_ms: 100,
            }),
            metrics_listen: Some("127.0.0.1:0".into()),
            limits,
            relays: vec![],
        };
        Self::start_inner(nodes, options, |_| {}).await
    }

    /// Like `start`, with `prepare` run on the provisioned files before any
    /// node starts (e.g. to put a node's database on PostgreSQL).
    pub async fn start_then(
        nodes: &[(&str, &[&str])],
        prepare: impl FnOnce(&std::path::Path),
    ) -> Self {
        let options = provision::Options {
            delivery: Some(fast_delivery()),
            audit: Some(alertrelay::config::RawAudit {
                checkpoint_interval_ms: 100,
                witness_interval_ms: 100,
            }),
            metrics_listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        Self::start_inner(nodes, options, prepare).await
    }

    /// Provisions a federation with `options`, lets `prepare` change its
    /// files, then starts every node on the port the directory names.
    async fn start_inner(
        nodes: &[(&str, &[&str])],
        options: provision::Options,
        prepare: impl FnOnce(&std::path::Path),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut listeners = Vec::new();
        let mut specs = Vec::new();
        for (id, countries) in nodes {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            specs.push(NodeSpec {
                id: NodeId::new(id).unwrap(),
                countries: countries.iter().map(|c| (*c).to_owned()).collect(),
                categories: vec![],
                port: Some(l.local_addr().unwrap().port()),
            });
            listeners.push(l);
        }
        let done = provision::init(dir.path(), "test-federation", &specs, &options).unwrap();
        prepare(dir.path());
        let mut configs = Vec::new();
        let mut handles = Vec::new();
        for (path, l) in done.configs.iter().zip(listeners) {
            let cfg = NodeConfig::load(path).unwrap();
            handles.push(Some(
                node::start_with_listener(cfg.clone(), l).await.unwrap(),
            ));
            configs.push(cfg);
        }
        Federation {
            dir,
            configs,
            nodes: handles,
        }
    }

    pub fn id(&self, i: usize) -> NodeId {
        self.configs[i].node_id.clone()
    }

    pub async fn stop(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            n.shutdown().await;
        }
    }

    /// Restarts node `i` on the same port, with the same database.
    pub async fn restart(&mut self, i: usize) {
        self.try_restart(i).await.unwrap();
    }

    pub async fn try_restart(&mut self, i: usize) -> Result<(), node::StartError> {
        let cfg = self.configs[i].clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(cfg.listen).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot rebind {}: {e}", cfg.listen),
            }
        };
        self.nodes[i] = Some(node::start_with_listener(cfg, listener).await?);
        Ok(())
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("https://{}", self.configs[i].listen)
    }

    /// An Operator client using node `i`'s operator certificate.
    pub fn operator(&self, i: usize) -> OperatorClient<Channel> {
        let cfg = &self.configs[i];
        let files = cfg.operator.as_ref().unwrap().files();
        let tls = tls::client_config(&files).unwrap();
        let ch = alertrelay::federation::channel::channel(
            &self.endpoint(i),
            Some(cfg.node_id.clone()),
            "test-federation",
            tls,
            Duration::from_secs(10),
        )
        .unwrap();
        OperatorClient::new(ch)
    }

    /// An Operator client using node `i`'s ADMIN operator certificate.
    pub fn admin(&self, i: usize) -> OperatorClient<Channel> {
        let cfg = &self.configs[i];
        let files = cfg.admin.as_ref().unwrap().files();
        let tls = tls::client_config(&files).unwrap();
        let ch = alertrelay::federation::channel::channel(
            &self.endpoint(i),
            Some(cfg.node_id.clone()),
            "test-federation",
            tls,
            Duration::from_secs(10),
        )
        .unwrap();
        OperatorClient::new(ch)
    }

    /// Raw TLS client config with node `i`'s own node certificate.
    pub fn node_tls(&self, i: usize) -> std::sync::Arc<rustls::ClientConfig> {
        tls::client_config(&self.configs[i].tls.files()).unwrap()
    }

    /// A Federation client that connects to node `to` as node `from`.
    pub fn federation_as(&self, from: usize, to: usize) -> FederationClient<Channel> {
        let ch = alertrelay::federation::channel::channel(
            &self.endpoint(to),
            Some(self.id(to)),
            "test-federation",
            self.node_tls(from),
            Duration::from_secs(10),
        )
        .unwrap();
        FederationClient::new(ch)
    }

    /// An Operator client that connects to node `to` with node `from`'s
    /// NODE certificate (which must be refused).
    pub fn operator_with_node_cert(&self, from: usize, to: usize) -> OperatorClient<Channel> {
        let ch = alertrelay::federation::channel::channel(
            &self.endpoint(to),
            Some(self.id(to)),
            "test-federation",
            self.node_tls(from),
            Duration::from_secs(10),
        )
        .unwrap();
        OperatorClient::new(ch)
    }

    pub fn signing_key(&self, i: usize) -> NodeKey {
        NodeKey::load(&self.configs[i].signing_key).unwrap()
    }

    /// Fetches node `i`'s Prometheus page.
    pub async fn metrics(&self, i: usize) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.nodes[i].as_ref().unwrap().metrics_addr.unwrap();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        out
    }

    /// Node `i`'s SQLite file (panics for a node on PostgreSQL).
    pub fn database(&self, i: usize) -> PathBuf {
        self.configs[i]
            .database
            .sqlite_path()
            .expect("a node on SQLite")
            .to_path_buf()
    }

    pub fn config_path(&self, i: usize) -> PathBuf {
        self.configs[i].path.clone()
    }
}

pub async fn submit(
    client: &mut OperatorClient<Channel>,
    url: &str,
    hosting_ip: &str,
) -> pb::SubmitReportResponse {
    client
        .submit_report(pb::SubmitReportRequest {
            urls: vec![url.to_owned()],
            category: "csam".into(),
            hosting_ip: hosting_ip.into(),
            priority: pb::Priority::Bulk as i32,
            notes: String::new(),
            hashes: vec![],
            submission_id: String::new(),
            classification: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Submits an urgent report of `url`; returns its report id.
pub async fn submit_urgent(client: &mut OperatorClient<Channel>, url: &str) -> String {
    client
        .submit_report(pb::SubmitReportRequest {
            urls: vec![url.to_owned()],
            category: "csam".into(),
            priority: pb::Priority::Urgent as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .report_id
}

pub async fn case(client: &mut OperatorClient<Channel>, id: &str) -> CaseView {
    case_from_pb(
        client
            .get_case(pb::GetCaseRequest { id: id.into() })
            .await
            .unwrap()
            .into_inner(),
    )
}

pub async fn cases(client: &mut OperatorClient<Channel>, direction: &str) -> Vec<CaseView> {
    client
        .list_cases(pb::ListCasesRequest {
            direction: direction.into(),
            limit: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .cases
        .into_iter()
        .map(case_from_pb)
        .collect()
}

/// Polls a case until `check` holds (each poll is a real RPC), or panics
/// after `secs` seconds with the last state.
pub async fn wait_case(
    client: &OperatorClient<Channel>,
    id: &str,
    secs: u64,
    check: impl Fn(&CaseView) -> bool,
) -> CaseView {
    let client = client.clone();
    eventually(
        secs,
        || {
            let mut c = client.clone();
            let id = id.to_owned();
            async move { case(&mut c, &id).await }
        },
        check,
    )
    .await
}

/// Polls `check` until it holds (each poll is a real RPC), or panics after
/// `secs` seconds with the last state.
pub async fn eventually<T: std::fmt::Debug, F, Fut>(
    secs: u64,
    mut probe: F,
    check: impl Fn(&T) -> bool,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = probe().await;
        if check(&v) {
            return v;
        }
        if Instant::now() > deadline {
            panic!("condition not reached in {secs}s; last state: {v:#?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A German IP address in the shipped IPFire data.
pub const DE_IP: &str = "85.214.132.117";
/// A French one.
pub const FR_IP: &str = "62.210.16.6";
/// A Swiss one (no hotline in the test federations).
pub const CH_IP: &str = "130.59.1.1";

impl Federation {
    /// Like `start`, but `prepare` may rewrite the provisioned files under
    /// the federation directory (certificates from a CA the test holds,
    /// directory entries, `node.toml`) before any node starts.
    pub async fn start_prepared(
        nodes: &[(&str, &[&str])],
        prepare: impl FnOnce(&std::path::Path),
    ) -> Self {
        let options = provision::Options {
            delivery: Some(fast_delivery()),
            // Witnessing on its default 5-minute schedule: no peer
            // traffic of its own during a test, so a test that
            // suspends or breaks a node sees only its own refusals.
            audit: None,
            metrics_listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        Self::start_inner(nodes, options, prepare).await
    }
}
