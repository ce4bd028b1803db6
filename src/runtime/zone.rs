//! A small authoritative DNS server on loopback (UDP), for the demo, the
//! benchmark and the tests: nodes are pointed at it with
//! `[dns] mode = "resolvers"`, so nothing leaves the machine. It serves a
//! zone held in memory: A, AAAA and CNAME records with their TTLs (a CNAME
//! chain inside the zone is followed in the answer, as real authoritative
//! servers do), NXDOMAIN for names it does not have, SERVFAIL for names
//! marked so, and silence (the resolver's deadline passes) for names
//! marked silent. Records can be changed while it runs (content moved).
//! It is built on hickory-proto's message codec. `start_tls` serves the
//! same zone over DNS over TLS (RFC 7858: TCP, TLS, each message after its
//! two-byte length) with the certificate it is given.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, CNAME};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

/// One record of the zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneRecord {
    Addr(IpAddr, u32),
    Cname(String, u32),
}

/// The zone: names (lower case, no final dot) and their records.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    records: BTreeMap<String, Vec<ZoneRecord>>,
    silent: BTreeSet<String>,
    servfail: BTreeSet<String>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Zone {
    pub fn new() -> Zone {
        Zone::default()
    }

    /// Adds an A or AAAA record.
    pub fn addr(mut self, name: &str, ip: IpAddr, ttl: u32) -> Zone {
        self.records
            .entry(key(name))
            .or_default()
            .push(ZoneRecord::Addr(ip, ttl));
        self
    }

    /// Makes `name` an alias of `target`.
    pub fn cname(mut self, name: &str, target: &str, ttl: u32) -> Zone {
        self.records
            .entry(key(name))
            .or_default()
            .push(ZoneRecord::Cname(key(target), ttl));
        self
    }

    /// Questions about `name` are never answered.
    pub fn silent(mut self, name: &str) -> Zone {
        self.silent.insert(key(name));
        self
    }

    /// Questions about `name` get SERVFAIL.
    pub fn servfail(mut self, name: &str) -> Zone {
        self.servfail.insert(key(name));
        self
    }

    /// The records answering `name`/`kind`, following CNAMEs inside the
    /// zone; `None` when the name does not exist (NXDOMAIN).
    fn answer(&self, name: &str, kind: RecordType) -> Option<Vec<(String, ZoneRecord)>> {
        let mut out = Vec::new();
        let mut current = key(name);
        let first = self.records.get(&current)?;
        let mut records = first;
        for _ in 0..8 {
            let mut next = None;
            for r in records {
                match r {
                    ZoneRecord::Cname(target, _) => {
                        out.push((current.clone(), r.clone()));
                        next = Some(target.clone());
                    }
                    ZoneRecord::Addr(ip, _) => {
                        let wanted = match kind {
                            RecordType::A => ip.is_ipv4(),
                            RecordType::AAAA => ip.is_ipv6(),
                            _ => false,
                        };
                        if wanted {
                            out.push((current.clone(), r.clone()));
                        }
                    }
                }
            }
            match next.and_then(|n| self.records.get(&n).map(|r| (n, r))) {
                Some((n, r)) => {
                    current = n;
                    records = r;
                }
                None => break,
            }
        }
        Some(out)
    }
}

/// The running server. Stops when dropped.
pub struct ZoneServer {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    asked: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ZoneServer {
    /// Serves `zone` on a free UDP port of 127.0.0.1.
    pub async fn start(zone: Zone) -> std::io::Result<ZoneServer> {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let addr = socket.local_addr()?;
        let zone = Arc::new(Mutex::new(zone));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(serve(socket, zone.clone(), asked.clone()));
        Ok(ZoneServer {
            addr,
            zone,
            asked,
            task,
        })
    }

    /// Serves `zone` over DNS over TLS on a free TCP port of 127.0.0.1,
    /// presenting `tls`'s certificate.
    pub async fn start_tls(
        zone: Zone,
        tls: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<ZoneServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let zone = Arc::new(Mutex::new(zone));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let (z, a) = (zone.clone(), asked.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, zone, asked) = (acceptor.clone(), z.clone(), a.clone());
                tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        serve_stream(stream, zone, asked).await;
                    }
                });
            }
        });
        Ok(ZoneServer {
            addr,
            zone,
            asked,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the records of `name` (the content moved).
    pub fn set(&self, name: &str, records: Vec<ZoneRecord>) {
        if let Ok(mut z) = self.zone.lock() {
            z.records.insert(key(name), records);
        }
    }

    /// Every question received so far, as `NAME TYPE`.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().map(|a| a.clone()).unwrap_or_default()
    }
}

impl Drop for ZoneServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    socket: tokio::net::UdpSocket,
    zone: Arc<Mutex<Zone>>,
    asked: Arc<Mutex<Vec<String>>>,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let Some(query) = buf.get(..n).and_then(|b| Message::from_vec(b).ok()) else {
            continue;
        };
        let reply = {
            let Ok(zone) = zone.lock() else { return };
            respond(&zone, &query, &asked)
        };
        if let Some(bytes) = reply.and_then(|m| m.to_vec().ok()) {
            let _ = socket.send_to(&bytes, from).await;
        }
    }
}

/// One DNS-over-TLS connection: length-prefixed queries, each answered
/// in turn (a silent name is not answered), until the client closes it.
async fn serve_stream<S>(mut stream: S, zone: Arc<Mutex<Zone>>, asked: Arc<Mutex<Vec<String>>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok(len) = stream.read_u16().await else {
            return;
        };
        let mut buf = vec![0u8; usize::from(len)];
        if stream.read_exact(&mut buf).await.is_err() {
            return;
        }
        let Ok(query) = Message::from_vec(&buf) else {
            return;
        };
        let reply = {
            let Ok(zone) = zone.lock() else { return };
            respond(&zone, &query, &asked)
        };
        let Some(bytes) = reply.and_then(|m| m.to_vec().ok()) else {
            continue;
        };
        let Ok(n) = u16::try_from(bytes.len()) else {
            continue;
        };
        let mut out = n.to_be_bytes().to_vec();
        out.extend_from_slice(&bytes);
        if stream.write_all(&out).await.is_err() || stream.flush().await.is_err() {
            return;
        }
    }
}

/// The reply to one query; `None` for a silent name.
fn respond(zone: &Zone, query: &Message, asked: &Mutex<Vec<String>>) -> Option<Message> {
    let mut reply = Message::response(query.metadata.id, OpCode::Query);
    reply.metadata.message_type = MessageType::Response;
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    let Some(q) = query.queries.first() else {
        reply.metadata.response_code = ResponseCode::FormErr;
        return Some(reply);
    };
    reply.add_query(q.clone());
    let name = key(&q.name().to_ascii());
    if let Ok(mut a) = asked.lock() {
        a.push(format!("{name} {}", q.query_type()));
    }
    if zone.silent.contains(&name) {
        return None;
    }
    if zone.servfail.contains(&name) {
        reply.metadata.response_code = ResponseCode::ServFail;
        return Some(reply);
    }
    match zone.answer(&name, q.query_type()) {
        None => reply.metadata.response_code = ResponseCode::NXDomain,
        Some(records) => {
            for (owner, r) in records {
                if let Some(rec) = to_record(&owner, &r) {
                    reply.add_answer(rec);
                }
            }
        }
    }
    Some(reply)
}

fn to_record(owner: &str, r: &ZoneRecord) -> Option<Record> {
    let name = Name::from_ascii(format!("{owner}.")).ok()?;
    let (data, ttl) = match r {
        ZoneRecord::Addr(IpAddr::V4(ip), ttl) => (RData::A(A(*ip)), *ttl),
        ZoneRecord::Addr(IpAddr::V6(ip), ttl) => (RData::AAAA(AAAA(*ip)), *ttl),
        ZoneRecord::Cname(target, ttl) => (
            RData::CNAME(CNAME(Name::from_ascii(format!("{target}.")).ok()?)),
            *ttl,
        ),
    };
    Some(Record::from_rdata(name, ttl, data))
}
