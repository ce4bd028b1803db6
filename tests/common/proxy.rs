//! A TCP proxy that can lose replies or partition a link, for the fault
//! tests. It sits between a node and one peer (the node's copy of the
//! directory points the peer's endpoint at the proxy) and forwards bytes
//! without looking at them: TLS runs end to end through it, so the client
//! still checks the real peer's certificate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Pass,
    /// Replies are lost: on open connections, requests still reach the
    /// server but everything it answers is read and discarded; new
    /// connections are closed at once (a handshake needs replies).
    DropReplies,
    /// Nothing gets through: open connections are black holes both ways,
    /// new connections are closed at once.
    Partition,
}

/// What the proxy did, for assertions and figures.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub refused_connections: AtomicU64,
    pub dropped_request_bytes: AtomicU64,
    pub dropped_reply_bytes: AtomicU64,
}

pub struct Proxy {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    mode: watch::Sender<Mode>,
    /// Connections opened before the latest `strand_open_connections`
    /// carry this epoch or a lower one.
    epoch: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (mode, watch) = watch::channel(Mode::Pass);
        let stats = Arc::new(Stats::default());
        let epoch = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(accept_loop(
            listener,
            upstream,
            watch,
            stats.clone(),
            epoch.clone(),
        ));
        Proxy {
            addr,
            stats,
            mode,
            epoch,
            task,
        }
    }

    /// Switches mode. Going back to `Pass` closes every connection that
    /// lost bytes (its TLS stream can never recover), so clients reconnect.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Every connection open now becomes a silent black hole for good,
    /// both ways, and is never closed, as when a NAT or firewall on the
    /// path forgets a connection's state; new connections work.
    pub fn strand_open_connections(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    pub fn dropped_reply_bytes(&self) -> u64 {
        self.stats.dropped_reply_bytes.load(Ordering::Relaxed)
    }

    pub fn dropped_request_bytes(&self) -> u64 {
        self.stats.dropped_request_bytes.load(Ordering::Relaxed)
    }

    pub fn connections(&self) -> u64 {
        self.stats.connections.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: watch::Receiver<Mode>,
    stats: Arc<Stats>,
    epoch: Arc<AtomicU64>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if *mode.borrow() != Mode::Pass {
            stats.refused_connections.fetch_add(1, Ordering::Relaxed);
            drop(client);
            continue;
        }
        stats.connections.fetch_add(1, Ordering::Relaxed);
        // Connections die with the proxy (the JoinSet aborts them on drop).
        conns.spawn(connection(
            client,
            upstream,
            mode.clone(),
            stats.clone(),
            epoch.clone(),
        ));
        while conns.try_join_next().is_some() {}
    }
}

async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    stats: Arc<Stats>,
    epoch: Arc<AtomicU64>,
) {
    let born = epoch.load(Ordering::SeqCst);
    let stranded = move || epoch.load(Ordering::SeqCst) > born;
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Set once a direction has lost bytes.
    let (up_gap, down_gap) = (AtomicBool::new(false), AtomicBool::new(false));
    let up = pump(
        client_read,
        server_write,
        mode.clone(),
        |m| m == Mode::Partition,
        &stranded,
        &stats.dropped_request_bytes,
        &up_gap,
    );
    let down = pump(
        server_read,
        client_write,
        mode.clone(),
        |m| m != Mode::Pass,
        &stranded,
        &stats.dropped_reply_bytes,
        &down_gap,
    );
    let healed = async {
        loop {
            // Re-checked now and then too: a pump may record a gap just
            // after the switch back to `Pass` was seen here.
            let changed = tokio::time::timeout(Duration::from_millis(50), mode.changed()).await;
            if let Ok(Err(_)) = changed {
                // The proxy is gone; its task aborts this connection.
                return std::future::pending::<()>().await;
            }
            let lost = up_gap.load(Ordering::SeqCst) || down_gap.load(Ordering::SeqCst);
            if *mode.borrow() == Mode::Pass && lost && !stranded() {
                return;
            }
        }
    };
    // Whichever ends first (a side closed, or the link healed after losing
    // bytes) closes both sockets.
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = healed => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: watch::Receiver<Mode>,
    drops: impl Fn(Mode) -> bool,
    stranded: &(dyn Fn() -> bool + Sync),
    dropped: &AtomicU64,
    gap: &AtomicBool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if drops(*mode.borrow()) || stranded() {
            gap.store(true, Ordering::SeqCst);
            dropped.fetch_add(n as u64, Ordering::Relaxed);
            continue;
        }
        // Bytes after a gap would only corrupt the TLS stream: this
        // direction forwards nothing more (the link is closed on healing).
        if gap.load(Ordering::SeqCst) {
            dropped.fetch_add(n as u64, Ordering::Relaxed);
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
