//! This machine's limits, measured in the same run as the nodes: Ed25519
//! signing and batch verification (ed25519-dalek, one thread), SQLite
//! durable batched inserts (WAL, synchronous=FULL, one multi-row INSERT per
//! table per transaction of 1,000 reports), and tonic over mutual TLS on
//! loopback (one client stream of 1 KiB messages). From them, the ceiling
//! of one hop between two nodes sharing this machine's cores.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::Options;
use super::cluster::{Cluster, Spec};
use crate::pb;

/// Each measurement runs at least this long.
const RUN: Duration = Duration::from_millis(1500);
const MESSAGE: usize = 1024;
const BATCH: usize = 64;
const SQLITE_TX: usize = 1000;

#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// Signatures per second, one thread, 1 KiB messages.
    pub sign_per_sec: f64,
    /// Signatures verified per second with `verify_batch` of 64, one thread.
    pub verify_batch64_per_sec: f64,
    /// Reports (a 1 KiB row and a ~200-byte audit row) durably inserted per
    /// second: transactions of 1,000, one multi-row INSERT per table.
    pub sqlite_reports_per_sec: f64,
    /// 1 KiB messages per second over one tonic client stream, mutual TLS,
    /// loopback (both ends in this process).
    pub tonic_stream_per_sec: f64,
    pub cores: usize,
    /// The model: one hop costs one signature (the origin's), one batch
    /// verification (the receiver's), three durable writes (intake at the
    /// origin, the report at the receiver, its receipt at the origin) and
    /// three streamed messages (intake, forward, receipt); receipts signed
    /// per batch are negligible. CPU per report, microseconds.
    pub model_us_per_report: f64,
    /// `cores` / the model: reports/s two nodes sharing this machine could
    /// reach if nothing else cost anything.
    pub ceiling_per_sec: f64,
}

pub async fn measure(opts: &Options) -> anyhow::Result<Limits> {
    let bar = super::bar(opts.json, 4, "limits: ed25519, SQLite, tonic");
    let (sign, verify) = tokio::task::spawn_blocking(|| (sign_rate(), verify_rate())).await?;
    bar.inc(2);
    let sqlite = sqlite_rate(opts).await?;
    bar.inc(1);
    let tonic = tonic_rate(opts).await?;
    bar.inc(1);
    bar.finish_and_clear();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = 1e6 * (1.0 / sign + 1.0 / verify + 3.0 / sqlite + 3.0 / tonic);
    Ok(Limits {
        sign_per_sec: sign,
        verify_batch64_per_sec: verify,
        sqlite_reports_per_sec: sqlite,
        tonic_stream_per_sec: tonic,
        cores,
        model_us_per_report: model,
        ceiling_per_sec: cores as f64 * 1e6 / model,
    })
}

fn key() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

fn sign_rate() -> f64 {
    let k = key();
    let msg = vec![0x5a_u8; MESSAGE];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < RUN {
        for _ in 0..100 {
            std::hint::black_box(k.sign(std::hint::black_box(&msg)));
        }
        n += 100;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn verify_rate() -> f64 {
    let keys: Vec<SigningKey> = (0..BATCH).map(|_| key()).collect();
    let msgs: Vec<Vec<u8>> = (0..BATCH).map(|i| vec![i as u8; MESSAGE]).collect();
    let sigs: Vec<Signature> = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
    let vks: Vec<VerifyingKey> = keys.iter().map(|k| k.verifying_key()).collect();
    let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < RUN {
        ed25519_dalek::verify_batch(&refs, &sigs, &vks).expect("valid signatures verify");
        n += BATCH as u64;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn sqlite_rate(opts: &Options) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir_in(&opts.dir)?;
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(dir.path().join("limits.db"))
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full),
        )
        .await?;
    sqlx::query(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY, peer TEXT NOT NULL, body BLOB NOT NULL, created_at_ms INTEGER NOT NULL)",
    )
    .execute(&pool)
    .await?;
    sqlx::query(
        "CREATE TABLE audit (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, subject TEXT NOT NULL, details TEXT NOT NULL, hash BLOB NOT NULL)",
    )
    .execute(&pool)
    .await?;
    let body = vec![0xa5_u8; MESSAGE];
    let details = "x".repeat(160);
    let hash = [7u8; 32];
    let started = Instant::now();
    let mut n = 0usize;
    while started.elapsed() < RUN || n < 3 * SQLITE_TX {
        let mut tx = pool.begin().await?;
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO outbox (peer, body, created_at_ms) ",
        );
        q.push_values(0..SQLITE_TX, |mut b, i| {
            b.push_bind("DE-BENCH")
                .push_bind(body.as_slice())
                .push_bind((n + i) as i64);
        });
        q.build().execute(&mut *tx).await?;
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO audit (kind, subject, details, hash) ",
        );
        q.push_values(0..SQLITE_TX, |mut b, i| {
            b.push_bind("report.submitted")
                .push_bind(format!("FR-BENCH/{}", n + i))
                .push_bind(details.as_str())
                .push_bind(hash.as_slice());
        });
        q.build().execute(&mut *tx).await?;
        tx.commit().await?;
        n += SQLITE_TX;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    pool.close().await;
    Ok(rate)
}

/// A client-streaming sink: counts 1 KiB messages, answers at the end.
#[derive(Clone)]
struct Sink;

impl tonic::server::NamedService for Sink {
    const NAME: &'static str = "alertrelay.bench.Sink";
}

struct SinkMethod;

impl tonic::server::ClientStreamingService<pb::Signed> for SinkMethod {
    type Response = pb::CosignResponse;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<tonic::Response<pb::CosignResponse>, tonic::Status>,
                > + Send,
        >,
    >;

    fn call(&mut self, request: tonic::Request<tonic::Streaming<pb::Signed>>) -> Self::Future {
        Box::pin(async move {
            let mut s = request.into_inner();
            while s.message().await?.is_some() {}
            Ok(tonic::Response::new(pb::CosignResponse {}))
        })
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Sink {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.client_streaming(SinkMethod, req).await)
        })
    }
}

/// One client stream over the federation's own TLS configurations (TLS
/// 1.3, client certificate required and checked), TCP_NODELAY both ways.
async fn tonic_rate(opts: &Options) -> anyhow::Result<f64> {
    // A one-node federation provides the CA, certificate and key.
    let mut c = Cluster::start(
        &opts.dir,
        &[Spec {
            id: "FR-BENCH".into(),
            countries: vec!["FR".into()],
        }],
        None,
        &[],
    )
    .await?;
    let cfg = c.configs[0].clone();
    // Its files stay until `c` is dropped; the node itself is not needed.
    c.stop(0).await;
    let files = cfg.tls.files();
    let server = crate::crypto::tls::server_config(&files, &cfg.directory.federation)?;
    let client_tls = crate::crypto::tls::client_config(&files)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let accept = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            if let Ok(tls) = acceptor.accept(tcp).await
                && tx.send(Ok::<_, std::io::Error>(tls)).await.is_err()
            {
                return;
            }
        }
    });
    let serve = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(Sink)
            .serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(rx)),
    );
    let channel = crate::federation::channel::channel(
        &format!("https://{addr}"),
        Some(cfg.node_id.clone()),
        &cfg.directory.federation,
        client_tls,
        Duration::from_secs(30),
    )?;
    let mut grpc = tonic::client::Grpc::new(channel);
    let send = |n: usize| {
        let msg = pb::Signed {
            payload: vec![0x42; MESSAGE],
            ..Default::default()
        };
        tokio_stream::iter(std::iter::repeat_n(msg, n))
    };
    let path = http::uri::PathAndQuery::from_static("/alertrelay.bench.Sink/Sink");
    // Warm-up: the handshake and the connection.
    grpc.ready().await?;
    grpc.client_streaming::<_, _, pb::CosignResponse, _>(
        tonic::Request::new(send(100)),
        path.clone(),
        tonic_prost::ProstCodec::default(),
    )
    .await?;
    let mut n = 0usize;
    let started = Instant::now();
    while started.elapsed() < RUN {
        grpc.ready().await?;
        grpc.client_streaming::<_, _, pb::CosignResponse, _>(
            tonic::Request::new(send(100_000)),
            path.clone(),
            tonic_prost::ProstCodec::default(),
        )
        .await?;
        n += 100_000;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    accept.abort();
    serve.abort();
    drop(c);
    Ok(rate)
}

pub fn print(l: &Limits) {
    println!();
    println!("this machine's limits (one thread each, 1 KiB messages)");
    println!(
        "  ed25519 sign                              {:>10.0} /s",
        l.sign_per_sec
    );
    println!(
        "  ed25519 verify_batch of 64                {:>10.0} signatures/s",
        l.verify_batch64_per_sec
    );
    println!(
        "  SQLite durable, transactions of 1,000     {:>10.0} reports/s (1 KiB row + audit row, WAL, FULL)",
        l.sqlite_reports_per_sec
    );
    println!(
        "  tonic mTLS client stream (loopback)       {:>10.0} messages/s",
        l.tonic_stream_per_sec
    );
    println!(
        "  ceiling, two nodes on {} cores             {:>10.0} reports/s ({:.0} µs per report: 1 sign + 1 batch verify + 3 durable writes + 3 streamed messages)",
        l.cores, l.ceiling_per_sec, l.model_us_per_report
    );
}
