//! The bench on PostgreSQL (`--database URL --replicas N`): a fresh
//! database per node on that server, dropped when the node's cluster
//! stops, and a round-robin TCP balancer in front of each node's replicas.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use serde::Serialize;
use sqlx::Connection;

/// Where the nodes of the throughput, latency, urgent and drain scenarios
/// keep their data.
#[derive(Debug, Clone, Default)]
pub enum Backend {
    /// A durable SQLite file per node, one process each.
    #[default]
    Sqlite,
    Postgres(Server),
}

/// The PostgreSQL server the bench creates its databases on.
#[derive(Debug, Clone)]
pub struct Server {
    /// As given: the database in it is where `CREATE DATABASE` runs.
    url: String,
    /// Replicas of each node, sharing the node's database.
    pub replicas: usize,
    /// Every database created in this run, and those that could not be
    /// dropped.
    created: Arc<Mutex<Vec<String>>>,
    left: Arc<Mutex<Vec<String>>>,
}

impl Backend {
    pub fn postgres(url: &str, replicas: usize) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("--database {url:?}: {e}"))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "--database {}: a PostgreSQL server URL (postgres://USER@HOST:PORT/DB) is expected",
                crate::store::redact(url)
            ));
        }
        if replicas == 0 {
            return Err("--replicas: at least 1".into());
        }
        Ok(Backend::Postgres(Server {
            url: url.to_owned(),
            replicas,
            created: Arc::default(),
            left: Arc::default(),
        }))
    }

    /// Replicas per node: 1 on SQLite.
    pub fn replicas(&self) -> usize {
        match self {
            Backend::Sqlite => 1,
            Backend::Postgres(s) => s.replicas,
        }
    }

    /// What the figures are for, as the JSON carries it.
    pub fn used(&self) -> StoreUsed {
        match self {
            Backend::Sqlite => StoreUsed {
                kind: "sqlite",
                server: None,
                replicas: 1,
                databases: Vec::new(),
                left_behind: Vec::new(),
            },
            Backend::Postgres(s) => StoreUsed {
                kind: "postgresql",
                server: Some(crate::store::redact(&s.url)),
                replicas: s.replicas,
                databases: names(&s.created),
                left_behind: names(&s.left),
            },
        }
    }
}

impl Backend {
    /// The PostgreSQL server's processes on this machine (all of them,
    /// other clients' work included), when the nodes' server is on
    /// loopback: the work done for the nodes outside this process.
    pub fn server_usage(&self) -> Option<ServerUsage> {
        let Backend::Postgres(s) = self else {
            return None;
        };
        let host = url::Url::parse(&s.url).ok()?.host_str()?.to_owned();
        if !matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]" | "::1") {
            return None;
        }
        let mut u = ServerUsage::default();
        for p in std::fs::read_dir("/proc").ok()?.flatten() {
            let dir = p.path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if comm.trim() != "postgres" {
                continue;
            }
            u.cpu += super::cpu_of(dir.join("stat"));
            u.written_bytes += std::fs::read_to_string(dir.join("io"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
        Some(u)
    }
}

/// CPU time and bytes written to storage by the PostgreSQL server's
/// processes alive at the time (a backend that ended takes its share).
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerUsage {
    cpu: std::time::Duration,
    written_bytes: u64,
}

/// The PostgreSQL server's work per delivered report, between two samples.
#[derive(Debug, Clone, Serialize)]
pub struct ServerShare {
    pub cpu_us: f64,
    pub written_bytes: f64,
}

impl ServerShare {
    pub fn between(a: Option<ServerUsage>, b: Option<ServerUsage>, reports: f64) -> Option<Self> {
        let (a, b) = (a?, b?);
        let n = reports.max(1.0);
        Some(ServerShare {
            cpu_us: b.cpu.saturating_sub(a.cpu).as_secs_f64() * 1e6 / n,
            written_bytes: b.written_bytes.saturating_sub(a.written_bytes) as f64 / n,
        })
    }

    pub fn print(s: &Option<Self>) {
        if let Some(s) = s {
            println!(
                "  PostgreSQL server (its processes on this machine), per delivered report: CPU {:.0} µs, {:.0} bytes written",
                s.cpu_us, s.written_bytes
            );
        }
    }
}

fn names(v: &Mutex<Vec<String>>) -> Vec<String> {
    v.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The store the figures are for.
#[derive(Debug, Clone, Serialize)]
pub struct StoreUsed {
    /// `sqlite` or `postgresql`.
    pub kind: &'static str,
    /// The PostgreSQL server, without its password.
    pub server: Option<String>,
    /// Replicas of each node (in this process, sharing its database).
    pub replicas: usize,
    /// The databases created on the server, one per node and scenario,
    /// each dropped when its scenario ended...
    pub databases: Vec<String>,
    /// ... except these, which could not be dropped.
    pub left_behind: Vec<String>,
}

/// The header line saying where the nodes keep their data.
pub fn describe(u: &StoreUsed) -> String {
    match &u.server {
        None => "durable SQLite (WAL, synchronous=FULL), one file per node".into(),
        Some(server) => format!(
            "PostgreSQL at {server} (a fresh database per node, dropped at the end; \
             synchronous_commit=on), {} replica{} per node{}",
            u.replicas,
            if u.replicas == 1 { "" } else { "s" },
            if u.replicas == 1 {
                String::new()
            } else {
                " (in this process, sharing the node's database, behind a round-robin \
                 TCP balancer; the load spread over the origin's replicas)"
                    .into()
            }
        ),
    }
}

/// Fresh databases of one cluster, dropped by `drop_all` (or, should the
/// cluster be dropped without stopping, when this value is).
pub struct Fresh {
    server: Server,
    names: Vec<String>,
}

impl Fresh {
    pub fn new(server: &Server) -> Self {
        Fresh {
            server: server.clone(),
            names: Vec::new(),
        }
    }

    /// Creates an empty database; returns its URL.
    pub async fn create(&mut self) -> anyhow::Result<String> {
        let name = format!("alertrelay_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = self.admin().await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .with_context(|| format!("CREATE DATABASE on {}", self.shown()))?;
        let _ = conn.close().await;
        self.names.push(name.clone());
        self.server
            .created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.clone());
        let mut url = url::Url::parse(&self.server.url)?;
        url.set_path(&name);
        Ok(url.to_string())
    }

    /// Drops every database created (connections still open to them are
    /// ended); those that cannot be dropped are noted in the results.
    pub async fn drop_all(&mut self) {
        let names = std::mem::take(&mut self.names);
        if names.is_empty() {
            return;
        }
        let mut conn = self.admin().await.ok();
        for name in names {
            let dropped = match conn.as_mut() {
                Some(c) => sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(c)
                .await
                .is_ok(),
                None => false,
            };
            if !dropped {
                tracing::warn!(database = %name, "a bench database could not be dropped");
                self.server
                    .left
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(name);
            }
        }
        if let Some(c) = conn {
            let _ = c.close().await;
        }
    }

    async fn admin(&self) -> anyhow::Result<sqlx::PgConnection> {
        let connect = sqlx::PgConnection::connect(&self.server.url);
        match tokio::time::timeout(std::time::Duration::from_secs(5), connect).await {
            Ok(r) => r.with_context(|| format!("cannot reach PostgreSQL at {}", self.shown())),
            Err(_) => anyhow::bail!("PostgreSQL at {} did not answer within 5 s", self.shown()),
        }
    }

    fn shown(&self) -> String {
        crate::store::redact(&self.server.url)
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        if self.names.is_empty() {
            return;
        }
        // A scenario that failed: its cluster is dropped inside the async
        // runtime, so the drop runs on a thread and runtime of its own.
        let mut rest = Fresh {
            server: self.server.clone(),
            names: std::mem::take(&mut self.names),
        };
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(rest.drop_all());
            }
        })
        .join();
    }
}

/// Accepts connections on `listener` and passes each to the next of
/// `backends` that takes it (round robin), as a TCP (layer 4) balancer
/// with TLS passthrough does in front of replicas: per connection, the
/// bytes copied both ways. A connection no backend takes is closed.
pub fn balance(
    listener: tokio::net::TcpListener,
    backends: Vec<SocketAddr>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut next = 0usize;
        while let Ok((mut inbound, _)) = listener.accept().await {
            let _ = inbound.set_nodelay(true);
            let mut outbound = None;
            for _ in 0..backends.len() {
                let to = backends[next % backends.len()];
                next = next.wrapping_add(1);
                if let Ok(s) = tokio::net::TcpStream::connect(to).await {
                    outbound = Some(s);
                    break;
                }
            }
            let Some(mut outbound) = outbound else {
                continue;
            };
            let _ = outbound.set_nodelay(true);
            tokio::spawn(async move {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    })
}
