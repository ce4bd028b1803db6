//! The console with many cases stored: the destination holds `--console-
//! cases` incoming cases (bulk reports through the federation, one in a
//! hundred urgent), its own console is started (`console::spawn`, HTTPS
//! with its node certificate), a person is enrolled and given a session,
//! and the queue page (its pages in turn) and case pages (a different case
//! each time) are fetched over one kept-alive TLS connection, one request
//! at a time, each timed from the request to the last byte of the page.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::cluster::{self, Cluster, Spec};
use super::{Latency, Options};
use crate::node::Core;
use crate::pb;

/// Requests timed per page kind.
const SAMPLES: usize = 200;

#[derive(Debug, Clone, Serialize)]
pub struct ConsoleScale {
    /// Incoming cases stored at the destination.
    pub stored: usize,
    /// Those reports delivered per second while they were loaded.
    pub load_per_sec: f64,
    /// `GET /queue?page=N`: 200 cases a page, urgent first then oldest.
    pub queue: Latency,
    /// `GET /case/ORIGIN/ID`, a different case each time.
    pub case: Latency,
}

fn request(ip: &str, i: u64) -> pb::SubmitReportRequest {
    let priority = if i.is_multiple_of(100) {
        pb::Priority::Urgent
    } else {
        pb::Priority::Bulk
    };
    pb::SubmitReportRequest {
        urls: vec![format!("http://{ip}/console/{i}")],
        category: "csam".into(),
        priority: priority as i32,
        ..Default::default()
    }
}

/// An account for the bench, enrolled through the node's functions, and
/// a console session for it: the session cookie.
async fn session(core: &Core, console: &crate::console::Running) -> anyhow::Result<String> {
    use crate::crypto::totp;
    use crate::node::users;
    let admin = crate::identity::PeerIdentity::Operator {
        node: core.me.clone(),
        name: "bench-admin".into(),
        role: crate::identity::Role::Admin,
    };
    let password = "a bench password, long enough";
    let e = users::add(core, &admin, "bench", "analyst").await?;
    let setup = users::begin_enrolment(core, &e.code, password).await?;
    let key = totp::from_base32(&setup.secret).ok_or_else(|| anyhow::anyhow!("TOTP secret"))?;
    let now = u64::try_from(Core::now_ms() / 1000)?;
    let code = totp::code_at(&key, totp::step_at(now));
    users::finish_enrolment(core, &e.code, &code).await?;
    let (token, _csrf) = console.console.sessions.create("bench");
    Ok(format!("{}={token}", crate::console::session::COOKIE))
}

/// A kept-alive HTTP/1.1 connection to the console over TLS (the
/// federation CA as the only root; the node certificate names
/// 127.0.0.1).
struct Conn {
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    buf: Vec<u8>,
    cookie: String,
}

impl Conn {
    async fn open(
        addr: std::net::SocketAddr,
        ca: &std::path::Path,
        cookie: String,
    ) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(ca)?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert?)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        Ok(Conn {
            tls,
            buf: Vec::new(),
            cookie,
        })
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.tls.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "the console closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// GETs `path`; the time to the whole answer. Anything but a 200 with
    /// a Content-Length is an error.
    async fn get(&mut self, path: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {}\r\nAccept-Language: en\r\n\r\n",
            self.cookie
        );
        self.tls.write_all(req.as_bytes()).await?;
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
        anyhow::ensure!(
            head.starts_with("http/1.1 200"),
            "GET {path}: {}",
            head.lines().next().unwrap_or("")
        );
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("GET {path}: no Content-Length"))?;
        while self.buf.len() < end + len {
            self.fill().await?;
        }
        self.buf.drain(..end + len);
        Ok(started.elapsed())
    }
}

/// Loads `n` reports from the origin to the destination; the rate.
async fn load(c: &Cluster, n: usize, json: bool) -> anyhow::Result<f64> {
    let ip = cluster::address_in("DE")?.to_string();
    let mut client = c.client(0).await?;
    let bar = super::bar(json, n as u64, "console: storing cases");
    let started = Instant::now();
    let progress = bar.clone();
    cluster::submit_stream(
        &mut client.clone(),
        cluster::STREAM_WINDOW,
        None,
        move |i| (i < n as u64).then(|| request(&ip, i)),
        move |_| progress.inc(1),
    )
    .await?;
    cluster::wait_drained(&mut client, Duration::from_secs(6 * 3600)).await?;
    bar.finish_and_clear();
    Ok(n as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

/// The pages timed: the queue's first pages in turn, and cases spread
/// over the store.
async fn measure(
    core: &Core,
    conn: &mut Conn,
    stored: usize,
) -> anyhow::Result<(Latency, Latency)> {
    let pages = (stored / 200).clamp(1, 10);
    let mut queue = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        queue.push(conn.get(&format!("/queue?page={}", i % pages)).await?);
    }
    let mut ids = Vec::new();
    for page in 0..i64::try_from(pages)? {
        ids.extend(crate::node::cases::queue(core, None, page, 200).await?);
    }
    anyhow::ensure!(!ids.is_empty(), "no case reached the destination");
    let mut case = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let c = &ids[(i * 7_919) % ids.len()];
        case.push(conn.get(&format!("/case/{}/{}", c.origin, c.id)).await?);
    }
    Ok((Latency::of(queue), Latency::of(case)))
}

pub async fn run(opts: &Options) -> anyhow::Result<ConsoleScale> {
    let spec = |id: &str, cc: &str| Spec {
        id: id.into(),
        countries: vec![cc.into()],
    };
    let c = Cluster::start(
        &opts.dir,
        &[spec("FR-BENCH", "FR"), spec("DE-BENCH", "DE")],
        None,
        &[],
    )
    .await?;
    let load_per_sec = load(&c, opts.console_cases, opts.json).await?;
    let core = c.core(1)?;
    let cfg = crate::config::Console {
        listen: "127.0.0.1:0".parse()?,
        cert: core.config.tls.cert.clone(),
        key: core.config.tls.key.clone(),
        idle_timeout: Duration::from_secs(3600),
        absolute_timeout: Duration::from_secs(3600),
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let running = crate::console::spawn(&core, &cfg, &mut tasks, &stopped).await?;
    let cookie = session(&core, &running).await?;
    let mut conn = Conn::open(running.addr, &core.config.tls.ca, cookie).await?;
    let measured = measure(&core, &mut conn, opts.console_cases).await;
    drop(conn);
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    drop(core);
    c.shutdown().await;
    let (queue, case) = measured?;
    Ok(ConsoleScale {
        stored: opts.console_cases,
        load_per_sec,
        queue,
        case,
    })
}

pub fn print(r: &ConsoleScale) {
    println!();
    println!(
        "console: {} incoming cases stored at the destination (loaded at {:.0}/s), pages over HTTPS one at a time",
        r.stored, r.load_per_sec
    );
    println!(
        "  {:<40} {:>8} {:>9} {:>9} {:>9}",
        "page", "samples", "p50 ms", "p99 ms", "max ms"
    );
    for (what, l) in [("queue (200 cases a page)", &r.queue), ("case", &r.case)] {
        println!(
            "  {:<40} {:>8} {:>9.1} {:>9.1} {:>9.1}",
            what, l.samples, l.p50_ms, l.p99_ms, l.max_ms
        );
    }
}
