//! docs/contract.md "Bad input: what it gets", class by class, spoken to
//! real nodes the way an attacker would: certificates minted for the attack
//! by a CA the test holds, hand-built and hand-corrupted envelopes, and raw
//! gRPC frames that no generated client would send.
//!
//! Each test asserts the exact answer (a gRPC status code, or the TLS alert
//! that ends the handshake), that nothing was stored at the receiver but
//! the audit entry of the refusal (and no entry at all when the refusal
//! happened inside TLS), and that the node still serves the next good
//! request afterwards.
//!
//! Classes covered by other files, referenced rather than repeated:
//! - TLS, no client certificate and an untrusted CA: tests/it/federation.rs
//!   `a_client_from_an_untrusted_ca_fails_the_handshake_and_the_node_keeps_serving`.
//! - Identity, a valid certificate whose payload claims another node, and
//!   a report signed with one node's key but naming another as signer:
//!   tests/it/federation.rs
//!   `a_valid_certificate_whose_payload_claims_another_node_is_permission_denied`.
//! - Replays, exact replay (original receipt, no second case):
//!   tests/it/federation.rs
//!   `an_exact_replay_gets_the_original_receipt_and_no_second_case`;
//!   equivocation (ALREADY_EXISTS, signed refusal, the metric and the
//!   WARN line): tests/it/federation.rs
//!   `a_report_id_repeated_with_other_content_is_refused_and_alerted_as_equivocation`;
//!   `created_at` far in the future or too old (FAILED_PRECONDITION,
//!   `future`/`stale`), loops, routes that do not
//!   name the receiver, CRLF and bidi in peer fields: tests/it/federation.rs
//!   `misrouted_looping_and_malformed_reports_are_refused_and_not_stored`.
//! - Shape at the Operator service (scheme, CRLF, bidi, category, no URL):
//!   tests/it/federation.rs `bad_input_gets_a_precise_error_and_stores_nothing`.
//! - Signatures, a revoked key (and key rotation), and CRLs applied by a
//!   reload and expired CRLs: tests/it/security.rs
//!   `signing_keys_rotate_without_downtime_and_a_revoked_key_verifies_nothing`,
//!   `a_revoked_peer_is_cut_off_by_a_reload_without_a_restart`,
//!   `an_expired_crl_fails_closed`.
//! - Load, one peer flooding: tests/load.rs
//!   `a_flooding_peer_is_throttled_without_hurting_the_others`.
//! - The database (edited, deleted, reordered rows, truncation, an old
//!   backup): tests/it/audit.rs and tests/it/witness.rs.
//!
//! Where the node differs from what the product is meant to do (a weak key
//! stops the node from starting rather than being refused per signature),
//! the test says what it found, and docs/contract.md "Known gaps" lists it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use alertrelay::crypto::signing::Purpose;
use alertrelay::pb;
use alertrelay::wire;
use prost::Message;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;
use tonic::{Code, Status};

const FED: &str = FEDERATION;
const AB: &[(&str, &[&str])] = &[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])];
const ABC: &[(&str, &[&str])] = &[
    ("FR-PDC", &["FR"]),
    ("DE-ECO", &["DE"]),
    ("NL-EOKM", &["NL"]),
];
const ABCD: &[(&str, &[&str])] = &[
    ("FR-PDC", &["FR"]),
    ("DE-ECO", &["DE"]),
    ("NL-EOKM", &["NL"]),
    ("GB-IWF", &["GB"]),
];
const FR: usize = 0;
const DE: usize = 1;
const NL: usize = 2;
const GB: usize = 3;

// ---------------------------------------------------------------------------
// A federation CA the test holds. The TLS tests install a CA of their own
// (certificate, key and an empty CRL) over the provisioned one before any
// node starts, and mint whatever the attack needs from it with rcgen
// directly, so they depend on nothing but the SPIFFE URI shapes.
// ---------------------------------------------------------------------------

struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    cert_pem: String,
}

#[derive(Clone)]
struct Leaf {
    cert_pem: String,
    key_pem: String,
    serial: u64,
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn uri(s: String) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

fn node_uri(id: &str) -> SanType {
    uri(format!("spiffe://{FED}/hotline/{id}"))
}

/// The SANs a node certificate carries: its SPIFFE id, and the loopback
/// names its endpoint is reached by.
fn node_sans(id: &str) -> Vec<SanType> {
    vec![
        node_uri(id),
        SanType::DnsName("localhost".try_into().unwrap()),
        SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
    ]
}

impl TestCa {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = dn(&format!("{FED} federation CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(3650);
        let key = KeyPair::generate().unwrap();
        let cert_pem = params.self_signed(&key).unwrap().pem();
        TestCa {
            params,
            key,
            cert_pem,
        }
    }

    /// A leaf valid now for server and client auth; `edit` bends it into
    /// whatever the attack needs.
    fn leaf(&self, edit: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        // Positive, eight bytes, no leading zero: the same in DER and in CRLs.
        let serial = 0x1000_0000_0000_0000 | (rand::random::<u64>() >> 4);
        p.serial_number = Some(SerialNumber::from(serial));
        p.distinguished_name = dn("leaf");
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(30);
        edit(&mut p);
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = p.signed_by(&key, &issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial,
        }
    }

    fn node(&self, id: &str) -> Leaf {
        self.leaf(|p| p.subject_alt_names = node_sans(id))
    }

    fn operator(&self, id: &str, name: &str) -> Leaf {
        self.leaf(|p| {
            p.subject_alt_names = vec![uri(format!("spiffe://{FED}/operator/{id}/{name}"))];
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        })
    }

    /// A CRL revoking `revoked`, valid for a day.
    fn crl(&self, revoked: &[&Leaf]) -> String {
        let now = OffsetDateTime::now_utc();
        let issuer = Issuer::from_params(&self.params, &self.key);
        CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(5),
            next_update: now + time::Duration::days(1),
            crl_number: SerialNumber::from(rand::random::<u32>() as u64 + 1),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|l| RevokedCertParams {
                    serial_number: SerialNumber::from(l.serial),
                    revocation_time: now - time::Duration::minutes(1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&issuer)
        .unwrap()
        .pem()
        .unwrap()
    }
}

fn write_secret(path: &Path, pem: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, pem).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Replaces the provisioned CA, node and operator certificates (and the CA
/// key and CRLs, where this version writes them) with ones from `ca`.
fn install_ca(dir: &Path, ids: &[&str], ca: &TestCa) {
    std::fs::write(dir.join("ca.pem"), &ca.cert_pem).unwrap();
    if dir.join("ca.key").exists() {
        write_secret(&dir.join("ca.key"), &ca.key.serialize_pem());
    }
    let crl = ca.crl(&[]);
    if dir.join("crl.pem").exists() {
        std::fs::write(dir.join("crl.pem"), &crl).unwrap();
    }
    for id in ids {
        let nd = dir.join(id);
        std::fs::write(nd.join("ca.pem"), &ca.cert_pem).unwrap();
        let node = ca.node(id);
        std::fs::write(nd.join("node.pem"), &node.cert_pem).unwrap();
        write_secret(&nd.join("node.key"), &node.key_pem);
        let op = ca.operator(id, "analyst");
        std::fs::write(nd.join("operator.pem"), &op.cert_pem).unwrap();
        write_secret(&nd.join("operator.key"), &op.key_pem);
        if nd.join("crl.pem").exists() {
            std::fs::write(nd.join("crl.pem"), &crl).unwrap();
        }
    }
}

fn ids(nodes: &[(&str, &[&str])]) -> Vec<String> {
    nodes.iter().map(|(id, _)| (*id).to_owned()).collect()
}

/// A federation whose CA the test holds.
async fn start_with_ca(nodes: &[(&str, &[&str])]) -> (Federation, TestCa) {
    let ca = TestCa::new();
    let names = ids(nodes);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let fed = Federation::builder(nodes)
        .quiet_audit()
        .prepare(|dir| install_ca(dir, &refs, &ca))
        .start()
        .await;
    (fed, ca)
}

/// Edits node `id`'s copy of the directory as TOML, whatever its schema.
fn edit_directory(dir: &Path, at: &str, edit: impl FnOnce(&mut toml::Table)) {
    let path = dir.join(at).join("directory.toml");
    let mut t: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut t);
    std::fs::write(&path, toml::to_string_pretty(&t).unwrap()).unwrap();
}

fn directory_node<'a>(t: &'a mut toml::Table, id: &str) -> &'a mut toml::Table {
    t.get_mut("node")
        .and_then(|n| n.as_array_mut())
        .unwrap()
        .iter_mut()
        .filter_map(|n| n.as_table_mut())
        .find(|n| n.get("id").and_then(|v| v.as_str()) == Some(id))
        .unwrap()
}

fn first_key(node: &mut toml::Table) -> &mut toml::Table {
    node.get_mut("key")
        .and_then(|k| k.as_array_mut())
        .and_then(|k| k.first_mut())
        .and_then(|k| k.as_table_mut())
        .unwrap()
}

// ---------------------------------------------------------------------------
// Talking to a node as an attacker.
// ---------------------------------------------------------------------------

fn tls_client(ca_pem: &str, leaf: &Leaf, tls12_only: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let certs: Vec<_> = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(certs, key)
    .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(cfg)
}

/// Runs a TLS handshake with node `i` and sends the HTTP/2 preface: `Ok`
/// when the server answers at the HTTP/2 layer, `Err(what ended it)` when
/// the server refused the handshake (in TLS 1.3 the refusal of a client
/// certificate arrives as an alert on the client's first read).
async fn handshake(
    fed: &Federation,
    i: usize,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect(fed.configs[i].listen)
        .await
        .unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = match tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
    {
        Ok(s) => s,
        Err(e) => return Err(format!("{e:?}")),
    };
    let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let _ = tls.flush().await;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Ok(()),
        Ok(Ok(_)) => Err("closed without an answer".into()),
        Ok(Err(e)) => Err(format!("{e:?}")),
        Err(_) => Err("no answer in 10 s".into()),
    }
}

/// A channel to node `to` with node `from`'s own certificate.
fn node_channel(fed: &Federation, from: usize, to: usize) -> Channel {
    channel_to(fed, to, fed.node_tls(from))
}

fn channel_to(fed: &Federation, to: usize, cfg: Arc<rustls::ClientConfig>) -> Channel {
    alertrelay::federation::channel::channel(
        &fed.endpoint(to),
        Some(fed.id(to)),
        FED,
        cfg,
        Duration::from_secs(10),
    )
    .unwrap()
}

/// A codec that sends and receives raw message bytes, so a test can put
/// anything in a gRPC frame.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        use prost::bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        use prost::bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Sends `body` as the one message of a unary call to `path`.
async fn raw_call(channel: Channel, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("not ready: {e}")))?;
    grpc.unary(
        tonic::Request::new(body),
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(|r| r.into_inner())
}

const FORWARD: &str = "/alertrelay.v1.Federation/Forward";

fn now_ms() -> i64 {
    alertrelay::node::Core::now_ms()
}

fn report(origin: &str, id: &str, destinations: &[&str]) -> pb::ReportPayload {
    pb::ReportPayload {
        report_id: id.into(),
        origin: origin.into(),
        created_at_ms: now_ms(),
        urls: vec![format!("http://{DE_IP}/evidence")],
        category: "csam".into(),
        route: Some(pb::RouteDecision {
            kind: "peer".into(),
            destinations: destinations.iter().map(|d| (*d).to_owned()).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn fresh_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

fn sign_report(fed: &Federation, signer: usize, p: &pb::ReportPayload) -> pb::Signed {
    wire::sign(
        &fed.signing_key(signer),
        &fed.id(signer),
        Purpose::Report,
        p,
    )
}

/// Signs `payload` bytes as they are (no re-encoding) for `purpose`.
fn sign_bytes(fed: &Federation, signer: usize, purpose: Purpose, payload: Vec<u8>) -> pb::Signed {
    let key = fed.signing_key(signer);
    pb::Signed {
        signature: key.sign(purpose, &payload).to_vec(),
        batch: None,
        payload,
        signer: fed.id(signer).to_string(),
        key_id: key.key_id().to_owned(),
    }
}

fn envelope(report: pb::Signed, hops: Vec<pb::Signed>) -> pb::Envelope {
    pb::Envelope {
        report: Some(report),
        hops,
    }
}

/// A hop signed by node `by`: "I received `signed` from `from` and passed
/// it to `to`".
fn hop(
    fed: &Federation,
    by: usize,
    from: &str,
    to: &str,
    signed: &pb::Signed,
    p: &pb::ReportPayload,
) -> pb::Signed {
    let h = pb::Hop {
        report_id: p.report_id.clone(),
        origin: p.origin.clone(),
        report_digest: wire::digest(&signed.payload).to_vec(),
        from: from.into(),
        by: fed.id(by).to_string(),
        to: to.into(),
        at_ms: now_ms(),
        ..Default::default()
    };
    wire::sign(&fed.signing_key(by), &fed.id(by), Purpose::Hop, &h)
}

async fn forward(
    fed: &Federation,
    sender: usize,
    to: usize,
    env: pb::Envelope,
) -> Result<pb::ForwardResponse, Status> {
    fed.federation_as(sender, to)
        .forward(pb::ForwardRequest {
            envelopes: vec![env],
            urgent: false,
        })
        .await
        .map(|r| r.into_inner())
}

#[track_caller]
fn assert_refused<T: std::fmt::Debug>(r: Result<T, Status>, code: Code, says: &str) -> Status {
    let err = r.expect_err("must be refused");
    assert_eq!(err.code(), code, "{err:?}");
    assert!(
        err.message().contains(says),
        "{says:?} not in {:?}",
        err.message()
    );
    err
}

async fn incoming(fed: &Federation, i: usize) -> Vec<alertrelay::node::cases::CaseView> {
    cases(&mut fed.operator(i), "incoming").await
}

/// The node still serves the next good request: node `from`'s analyst
/// submits a report hosted in Germany, and DE-ECO's signed receipt comes
/// back. Returns the report id.
async fn good_delivery(fed: &Federation, from: usize) -> String {
    let mut op = fed.operator(from);
    let url = format!("http://{DE_IP}/after-the-attack/{}", uuid::Uuid::new_v4());
    let id = submit(&mut op, &url, "").await.report_id;
    wait_case(&op, &id, 20, |c| c.status == "delivered").await;
    id
}

/// Stops node `i` and reads its whole audit log from the database file.
async fn audit_log(fed: &mut Federation, i: usize) -> Vec<alertrelay::store::AuditRow> {
    fed.stop(i).await;
    let store = alertrelay::store::Store::open(&fed.database(i))
        .await
        .unwrap();
    let rows = store.audit_entries(0, 1_000_000).await.unwrap();
    store.close().await;
    rows
}

/// `(kind, actor, reason_code)` of every refusal in the log.
fn refusals(rows: &[alertrelay::store::AuditRow]) -> Vec<(String, String, String)> {
    rows.iter()
        .filter(|r| r.kind == "input.refused" || r.kind == "report.refused")
        .map(|r| {
            let detail: serde_json::Value = serde_json::from_str(&r.detail).unwrap();
            (
                r.kind.clone(),
                r.actor.clone(),
                detail["reason_code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

fn reason_codes(rows: &[alertrelay::store::AuditRow]) -> Vec<String> {
    refusals(rows).into_iter().map(|(_, _, c)| c).collect()
}

fn count(rows: &[alertrelay::store::AuditRow], kind: &str) -> usize {
    rows.iter().filter(|r| r.kind == kind).count()
}

// ===========================================================================
// TLS: the handshake fails, so the node never sees a request and writes
// nothing, not even an audit entry.
// ===========================================================================

/// Presents `leaf` to DE-ECO; the handshake must end with `alert`, DE-ECO
/// must store and audit nothing, and FR-PDC's next delivery must succeed.
async fn refused_in_tls(make: impl FnOnce(&TestCa) -> Leaf, tls12_only: bool, alert: &str) {
    let (mut fed, ca) = start_with_ca(AB).await;
    let leaf = make(&ca);
    let outcome = handshake(&fed, DE, tls_client(&ca.cert_pem, &leaf, tls12_only)).await;
    let err = outcome.expect_err("the handshake must fail");
    assert!(err.contains(alert), "expected {alert}, got {err}");
    // The same certificate through a real gRPC client fails too.
    let mut client = pb::federation_client::FederationClient::new(channel_to(
        &fed,
        DE,
        tls_client(&ca.cert_pem, &leaf, tls12_only),
    ));
    let err = client
        .node_info(pb::NodeInfoRequest {})
        .await
        .expect_err("no call gets through");
    // The alert surfaces as a transport error (UNKNOWN or UNAVAILABLE,
    // depending on when the client notices it).
    assert!(
        matches!(err.code(), Code::Unknown | Code::Unavailable),
        "{err:?}"
    );
    assert!(format!("{err:?}").contains(alert), "{err:?}");

    assert!(incoming(&fed, DE).await.is_empty());
    let good = good_delivery(&fed, FR).await;
    let log = audit_log(&mut fed, DE).await;
    assert!(
        refusals(&log).is_empty(),
        "a handshake refusal writes nothing: {:?}",
        refusals(&log)
    );
    assert_eq!(count(&log, "report.received"), 1, "only the good report");
    assert!(log.iter().any(|r| r.subject.ends_with(&good)));
    fed.shutdown().await;
}

#[tokio::test]
async fn tls_an_expired_client_certificate_fails_the_handshake() {
    refused_in_tls(
        |ca| {
            ca.leaf(|p| {
                p.subject_alt_names = node_sans("FR-PDC");
                let now = OffsetDateTime::now_utc();
                p.not_before = now - time::Duration::days(60);
                p.not_after = now - time::Duration::days(1);
            })
        },
        false,
        "CertificateExpired",
    )
    .await;
}

#[tokio::test]
async fn tls_a_not_yet_valid_client_certificate_fails_the_handshake() {
    refused_in_tls(
        |ca| {
            ca.leaf(|p| {
                p.subject_alt_names = node_sans("FR-PDC");
                let now = OffsetDateTime::now_utc();
                p.not_before = now + time::Duration::days(1);
                p.not_after = now + time::Duration::days(60);
            })
        },
        false,
        "CertificateExpired",
    )
    .await;
}

#[tokio::test]
async fn tls_a_client_certificate_that_is_a_ca_fails_the_handshake() {
    refused_in_tls(
        |ca| {
            ca.leaf(|p| {
                p.subject_alt_names = node_sans("FR-PDC");
                p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                p.key_usages = vec![
                    KeyUsagePurpose::KeyCertSign,
                    KeyUsagePurpose::DigitalSignature,
                ];
            })
        },
        false,
        "CertificateUnknown",
    )
    .await;
}

#[tokio::test]
async fn tls_a_certificate_not_issued_for_client_auth_fails_the_handshake() {
    refused_in_tls(
        |ca| {
            ca.leaf(|p| {
                p.subject_alt_names = node_sans("FR-PDC");
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            })
        },
        false,
        "UnsupportedCertificate",
    )
    .await;
}

#[tokio::test]
async fn tls_a_client_offering_only_tls_1_2_fails_the_handshake() {
    // A perfectly valid node certificate: only the protocol version is wrong.
    refused_in_tls(|ca| ca.node("FR-PDC"), true, "ProtocolVersion").await;
}

#[tokio::test]
async fn tls_a_certificate_revoked_by_the_crl_fails_the_handshake() {
    let ca = TestCa::new();
    let revoked = ca.node("NL-EOKM");
    let names = ids(ABC);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut fed = Federation::builder(ABC)
        .quiet_audit()
        .prepare(|dir| {
            install_ca(dir, &refs, &ca);
            // DE-ECO's CRL revokes the certificate NL-EOKM is about to use.
            let de = dir.join("DE-ECO");
            std::fs::write(de.join("crl.pem"), ca.crl(&[&revoked])).unwrap();
            let text = std::fs::read_to_string(de.join("node.toml")).unwrap();
            assert!(text.contains("crl.pem"), "provisioned nodes check a CRL");
        })
        .start()
        .await;
    let err = handshake(&fed, DE, tls_client(&ca.cert_pem, &revoked, false))
        .await
        .expect_err("a revoked certificate must not complete the handshake");
    assert!(err.contains("CertificateRevoked"), "{err}");
    // NL-EOKM's other, unrevoked certificate still works: the CRL names
    // one certificate, not the node.
    assert_eq!(
        handshake(
            &fed,
            DE,
            tls_client(&ca.cert_pem, &ca.node("NL-EOKM"), false)
        )
        .await,
        Ok(())
    );
    good_delivery(&fed, FR).await;
    let log = audit_log(&mut fed, DE).await;
    assert!(refusals(&log).is_empty(), "{:?}", refusals(&log));
    fed.shutdown().await;
}

// ===========================================================================
// TLS passes, identity does not: PERMISSION_DENIED, audited with whatever
// identity the certificate showed.
// ===========================================================================

#[tokio::test]
async fn tls_certificates_with_no_or_several_uri_sans_fail_the_handshake() {
    // A certificate must prove exactly one identity of this federation:
    // one SPIFFE URI SAN. More than one, none, or another federation's:
    // the handshake fails, though the chain is valid.
    let (mut fed, ca) = start_with_ca(AB).await;
    let two = ca.leaf(|p| {
        p.subject_alt_names = vec![node_uri("DE-ECO"), node_uri("FR-PDC")];
    });
    let none = ca.leaf(|p| {
        p.subject_alt_names = vec![SanType::DnsName("localhost".try_into().unwrap())];
    });
    let foreign = ca.leaf(|p| {
        p.subject_alt_names = vec![uri("spiffe://other-federation/hotline/FR-PDC".into())];
    });
    for leaf in [&two, &none, &foreign] {
        let err = handshake(&fed, DE, tls_client(&ca.cert_pem, leaf, false))
            .await
            .expect_err("the handshake must fail");
        assert!(err.contains("alert") || err.contains("Alert"), "{err}");
    }
    assert!(incoming(&fed, DE).await.is_empty());
    good_delivery(&fed, FR).await;
    let log = audit_log(&mut fed, DE).await;
    assert!(
        refusals(&log).is_empty(),
        "refused at TLS: nothing reached the node"
    );
    assert_eq!(count(&log, "report.received"), 1);
    fed.shutdown().await;
}

// ===========================================================================
// Identity.
// ===========================================================================

#[tokio::test]
async fn identity_a_node_absent_from_the_directory_is_permission_denied() {
    // A certificate the federation CA really issued, for a node id the
    // directory does not list (a node removed from the federation whose
    // certificate has not expired, or a CA mistake).
    let (mut fed, ca) = start_with_ca(AB).await;
    let rogue = ca.node("XX-ROGUE");
    let mut client = pb::federation_client::FederationClient::new(channel_to(
        &fed,
        DE,
        tls_client(&ca.cert_pem, &rogue, false),
    ));
    // Even carrying a report genuinely signed by FR-PDC.
    let signed = sign_report(&fed, FR, &report("FR-PDC", &fresh_id("rogue"), &["DE-ECO"]));
    assert_refused(
        client
            .forward(pb::ForwardRequest {
                envelopes: vec![envelope(signed, vec![])],
                urgent: false,
            })
            .await,
        Code::PermissionDenied,
        "XX-ROGUE is not in the directory",
    );
    assert_refused(
        client.node_info(pb::NodeInfoRequest {}).await,
        Code::PermissionDenied,
        "not in the directory",
    );
    assert!(incoming(&fed, DE).await.is_empty());
    good_delivery(&fed, FR).await;
    let log = audit_log(&mut fed, DE).await;
    assert_eq!(
        refusals(&log),
        vec![
            (
                "input.refused".into(),
                "node:XX-ROGUE".into(),
                "permission-denied".into()
            );
            2
        ]
    );
    assert_eq!(count(&log, "report.received"), 1);
    fed.shutdown().await;
}

#[tokio::test]
async fn identity_a_suspended_node_is_permission_denied_even_through_a_relay() {
    // DE-ECO's directory suspends NL-EOKM (`active = false`).
    let mut fed = Federation::builder(ABC)
        .quiet_audit()
        .prepare(|dir| {
            edit_directory(dir, "DE-ECO", |t| {
                directory_node(t, "NL-EOKM").insert("active".into(), false.into());
            });
        })
        .start()
        .await;
    let p = report("NL-EOKM", &fresh_id("suspended"), &["DE-ECO"]);
    let signed = sign_report(&fed, NL, &p);
    // Directly.
    assert_refused(
        forward(&fed, NL, DE, envelope(signed.clone(), vec![])).await,
        Code::PermissionDenied,
        "NL-EOKM is suspended",
    );
    assert_refused(
        fed.federation_as(NL, DE)
            .node_info(pb::NodeInfoRequest {})
            .await,
        Code::PermissionDenied,
        "suspended",
    );
    // Laundered through an active relay: the origin's signature is what
    // counts, and the origin is suspended.
    let relayed = hop(&fed, FR, "NL-EOKM", "DE-ECO", &signed, &p);
    assert_refused(
        forward(&fed, FR, DE, envelope(signed, vec![relayed])).await,
        Code::PermissionDenied,
        "suspended",
    );
    assert!(incoming(&fed, DE).await.is_empty());
    good_delivery(&fed, FR).await;
    let log = audit_log(&mut fed, DE).await;
    assert_eq!(
        reason_codes(&log),
        vec!["permission-denied", "permission-denied", "suspended-signer"]
    );
    assert_eq!(count(&log, "report.received"), 1);
    fed.shutdown().await;
}

// ===========================================================================
// Signatures: UNAUTHENTICATED, checked before anything is decoded.
// ===========================================================================

#[tokio::test]
async fn signatures_forged_or_with_one_byte_flipped_are_unauthenticated() {
    let mut fed = Federation::start(AB).await;
    let p = report("FR-PDC", &fresh_id("flip"), &["DE-ECO"]);
    let good = sign_report(&fed, FR, &p);
    let mut attempts = Vec::new();
    // A signature made up by the attacker.
    let mut forged = good.clone();
    forged.signature = (0..64).map(|_| rand::random::<u8>()).collect();
    attempts.push(("made-up signature", forged));
    // One byte flipped in the payload, inside the URL: still decodes, so
    // only the signature can catch it.
    let mut flipped = good.clone();
    let at = flipped
        .payload
        .windows(8)
        .position(|w| w == b"evidence")
        .unwrap();
    flipped.payload[at] ^= 0x01;
    assert!(pb::ReportPayload::decode(flipped.payload.as_slice()).is_ok());
    attempts.push(("payload byte flipped", flipped));
    for i in [0, 31, 32, 63] {
        let mut s = good.clone();
        s.signature[i] ^= 0x80;
        attempts.push(("signature byte flipped", s));
    }
    let mut short = good.clone();
    short.signature.truncate(63);
    attempts.push(("63-byte signature", short));
    let mut empty = good.clone();
    empty.signature.clear();
    attempts.push(("no signature", empty));
    for (what, s) in &attempts {
        let r = forward(&fed, FR, DE, envelope(s.clone(), vec![])).await;
        let err = assert_refused(r, Code::Unauthenticated, "signature does not verify");
        assert!(!err.message().contains("evidence"), "{what}: {err:?}");
    }
    assert!(incoming(&fed, DE).await.is_empty());
    // The untouched original is then accepted: it was only the changes.
    let ok = forward(&fed, FR, DE, envelope(good, vec![])).await.unwrap();
    assert_eq!(ok.results[0].code, 0);
    good_delivery(&fed, FR).await;
    let log = audit_log(&mut fed, DE).await;
    assert_eq!(reason_codes(&log), vec!["bad-signature"; attempts.len()]);
    assert_eq!(count(&log, "report.received"), 2);
    fed.shutdown().await;
}

#[tokio::test]
async fn signatures_an_unknown_key_id_is_unauthenticated() {
    let mut fed = Federation::start(AB).await;
    let p = report("FR-PDC", &fresh_id("key"), &["DE-ECO"]);
    for key_id in ["0000000000000000", "", "../../etc/passwd\r\n"] {
        let mut s = sign_report(&fed, FR, &p);
        s.key_id = key_id.into();
        assert_refused(
            forward(&fed, FR, DE, envelope(s, vec![])).await,
            Code::Unauthenticated,
            "unknown, expired or revoked",
        );
    }
    // A key of the right shape that belongs to another node.
    let mut s = sign_report(&fed, FR, &p);
    s.key_id = fed.signing_key(DE).key_id().into();
    assert_refused(
        forward(&fed, FR, DE, envelope(s, vec![])).await,
        Code::Unauthenticated,
        "unknown, expired or revoked",
    );
    assert!(incoming(&fed, DE).await.is_empty());
    good_delivery(&fed, FR).await;
    let log = audit_log(&mut fed, DE).await;
    assert_eq!(reason_codes(&log), vec!["unknown-key"; 4]);
    fed.shutdown().await;
}

#[tokio::test]
async fn signatures_by_a_key_outside_its_validity_window_are_unauthenticated() {
    // At DE-ECO, FR-PDC's key expired yesterday and NL-EOKM's is valid
    // only from tomorrow; GB-IWF's is fine.
    let mut fed = Federation::builder(ABCD)
        .quiet_audit()
        .prepare(|dir| {
            edit_directory(dir, "DE-ECO", |t| {
                let day = time::Duration::days(1);
                let fmt = |t: OffsetDateTime| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .unwrap()
                };
                let now = OffsetDateTime::now_utc();
                first_key(directory_node(t, "FR-PDC"))
                    .insert("not_after".into(), fmt(now - day).into());
                first_key(directory_node(t, "NL-EOKM"))
                    .insert("not_before".into(), fmt(now + day).into());
            });
        })
        .start()
        .await;
    for (who, name) in [(FR, "FR-PDC"), (NL, "NL-EOKM")] {
        let s = sign_report(&fed, who, &report(name, &fresh_id("window"), &["DE-ECO"]));
        assert_refused(
            forward(&fed, who, DE, envelope(s, vec![])).await,
            Code::Unauthenticated,
            "unknown, expired or revoked",
        );
    }
    assert!(incoming(&fed, DE).await.is_empty());
    good_delivery(&fed, GB).await;
    let log = audit_log(&mut fed, DE).await;
    assert_eq!(reason_codes(&log), vec!["unknown-key"; 2]);
    assert_eq!(count(&log, "report.received"), 1);
    fed.shutdown().await;
}

#[tokio::test]
async fn signatures_a_weak_small_order_key_in_the_directory_stops_the_node_from_starting() {
    // Found out: the node refuses to START (the directory is refused at
    // load, exit 64), rather than starting and refusing that one key. A
    // small-order key would let anyone forge signatures that verify
    // non-strictly, so a directory carrying one is treated as corrupt.
    // The identity point (y = 1) has order 1: every signature "verifies"
    // under a lax check.
    let mut weak = [0u8; 32];
    weak[0] = 1;
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&weak).unwrap();
    let weak_id = alertrelay::crypto::signing::key_id_of(&vk);
    let weak_b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(weak)
    };
    let done = Federation::builder(ABC)
        .prepare(|dir| {
            edit_directory(dir, "DE-ECO", |t| {
                let nl = directory_node(t, "NL-EOKM");
                let keys = nl.get_mut("key").and_then(|k| k.as_array_mut()).unwrap();
                let mut k = toml::Table::new();
                k.insert("id".into(), weak_id.clone().into());
                k.insert("public_key".into(), weak_b64.clone().into());
                keys.push(k.into());
            })
        })
        .provision();
    let de = &done.configs[1];
    let err = alertrelay::config::NodeConfig::load(de).expect_err("refused at load");
    let chain = error_chain(&err);
    assert!(chain.contains("weak (small order)"), "{chain}");
    assert!(chain.contains("NL-EOKM"), "names the node: {chain}");

    // And `alertrelay serve` exits with the configuration error code.
    let (code, _, stderr) = tokio::time::timeout(
        Duration::from_secs(30),
        cli(&["serve", "--config", arg(de)]),
    )
    .await
    .expect("the node must not start and keep running");
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("weak"), "{stderr}");
    // The unmodified directory of another node still loads.
    alertrelay::config::NodeConfig::load(&done.configs[0]).unwrap();
}

#[tokio::test]
async fn signatures_made_for_another_purpose_never_pass_as_a_report_signature() {
    let mut fed = Federation::start(ABC).await;
    let p = report("FR-PDC", &fresh_id("purpose"), &["DE-ECO"]);
    let bytes = p.encode_to_vec();
    // FR-PDC's own key, over the exact report bytes, under every other tag.
    for purpose in [
        Purpose::Receipt,
        Purpose::Status,
        Purpose::Hop,
        Purpose::Checkpoint,
    ] {
        let s = sign_bytes(&fed, FR, purpose, bytes.clone());
        assert_refused(
            forward(&fed, FR, DE, envelope(s, vec![])).await,
            Code::Unauthenticated,
            "report signature does not verify",
        );
    }
    // A real checkpoint FR-PDC signed (C2SP signed note: no domain tag, but
    // no NUL either), presented as a report with the note as payload. It is
    // refused as UNAUTHENTICATED, not INVALID_ARGUMENT: the signature is
    // checked before the payload is decoded.
    let note = fed
        .admin(FR)
        .make_checkpoint(pb::MakeCheckpointRequest {})
        .await
        .unwrap()
        .into_inner()
        .note;
    let (text, sigs) = note.split_once("\n\n").unwrap();
    let line = sigs
        .lines()
        .find(|l| l.contains("/hotline/FR-PDC/audit"))
        .unwrap();
    let sig = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(line.rsplit(' ').next().unwrap())
            .unwrap()
    };
    let mut s = sign_bytes(&fed, FR, Purpose::Report, format!("{text}\n").into_bytes());
    s.signature = sig[4..].to_vec();
    assert_eq!(s.signature.len(), 64);
    assert_refused(
        forward(&fed, FR, DE, envelope(s, vec![])).await,
        Code::Unauthenticated,
        "report signature does not verify",
    );
    // A receipt DE-ECO really signed, replayed by FR-PDC to NL-EOKM as if it
    // were a report from DE-ECO.
    let delivered = forward(&fed, FR, DE, envelope(sign_report(&fed, FR, &p), vec![]))
        .await
        .unwrap();
    let receipt = delivered.results[0].receipt.clone().unwrap();
    assert_eq!(receipt.signer, "DE-ECO");
    assert_refused(
        forward(&fed, FR, NL, envelope(receipt, vec![])).await,
        Code::Unauthenticated,
        "report signature does not verify",
    );
    assert!(incoming(&fed, NL).await.is_empty());
    assert_eq!(incoming(&fed, DE).await.len(), 1, "only the genuine report");
    good_delivery(&fed, FR).await;
    let log = audit_log(&mut fed, DE).await;
    assert_eq!(reason_codes(&log), vec!["bad-signature"; 5]);
    let log = audit_log(&mut fed, NL).await;
    assert_eq!(reason_codes(&log), vec!["bad-signature"]);
    fed.shutdown().await;
}

#[tokio::test]
async fn signatures_a_tampered_hop_chain_is_unauthenticated() {
    let mut fed = Federation::builder(ABC)
        .quiet_audit()
        .relay("DE-ECO", "NL-EOKM")
        .start()
        .await;
    // FR-PDC's report for DE-ECO, relayed by NL-EOKM (the relay the
    // directory puts in front of DE-ECO).
    let relayed = |id: &str| {
        let p = report("FR-PDC", id, &["DE-ECO"]);
        let s = sign_report(&fed, FR, &p);
        (p, s)
    };
    // The untampered chain is accepted: a positive control.
    let (p, s) = relayed(&fresh_id("relay-ok"));
    let h = hop(&fed, NL, "FR-PDC", "DE-ECO", &s, &p);
    let ok = forward(&fed, NL, DE, envelope(s, vec![h])).await.unwrap();
    assert_eq!(ok.results[0].code, 0, "{:?}", ok.results[0]);

    let (p, s) = relayed(&fresh_id("relay-bad"));
    let other = sign_report(&fed, FR, &report("FR-PDC", "other", &["DE-ECO"]));
    let mut cases: Vec<(&str, pb::Signed)> = vec![
        // Re-signed by NL-EOKM, but not what happened.
        ("to another node", hop(&fed, NL, "FR-PDC", "GB-IWF", &s, &p)),
        (
            "from another node",
            hop(&fed, NL, "DE-ECO", "DE-ECO", &s, &p),
        ),
        (
            "about another report",
            hop(&fed, NL, "FR-PDC", "DE-ECO", &other, &p),
        ),
    ];
    let mut by_other = hop(&fed, NL, "FR-PDC", "DE-ECO", &s, &p);
    let mut h: pb::Hop = pb::Hop::decode(by_other.payload.as_slice()).unwrap();
    h.by = "FR-PDC".into();
    by_other = wire::sign(&fed.signing_key(NL), &fed.id(NL), Purpose::Hop, &h);
    cases.push(("claiming another relay", by_other));
    let mut flipped = hop(&fed, NL, "FR-PDC", "DE-ECO", &s, &p);
    flipped.signature[7] ^= 1;
    cases.push(("signature flipped", flipped));
    let mut payload_flipped = hop(&fed, NL, "FR-PDC", "DE-ECO", &s, &p);
    let last = payload_flipped.payload.len() - 1;
    payload_flipped.payload[last] ^= 1;
    cases.push(("payload flipped", payload_flipped));
    // A hop signed under the report tag.
    let h = pb::Hop::decode(hop(&fed, NL, "FR-PDC", "DE-ECO", &s, &p).payload.as_slice()).unwrap();
    cases.push((
        "signed as a report",
        wire::sign(&fed.signing_key(NL), &fed.id(NL), Purpose::Report, &h),
    ));
    for (what, h) in &cases {
        let r = forward(&fed, NL, DE, envelope(s.clone(), vec![h.clone()])).await;
        let err = r.expect_err(what);
        assert_eq!(err.code(), Code::Unauthenticated, "{what}: {err:?}");
    }
    // The chain cut off: NL-EOKM sends FR-PDC's report with no hop at all.
    // That is a sender that is not the signer: PERMISSION_DENIED.
    assert_refused(
        forward(&fed, NL, DE, envelope(s, vec![])).await,
        Code::PermissionDenied,
        "the connection is from NL-EOKM",
    );
    assert_eq!(incoming(&fed, DE).await.len(), 1, "only the control");
    good_delivery(&fed, FR).await;
    let log = audit_log(&mut fed, DE).await;
    let mut want = vec!["bad-hop-chain"; 4];
    want.extend(["bad-signature"; 3]);
    want.push("identity-mismatch");
    assert_eq!(reason_codes(&log), want);
    fed.shutdown().await;
}

// ===========================================================================
// Shape.
// ===========================================================================

#[tokio::test]
async fn shape_a_message_over_the_size_limit_is_refused_before_it_is_read() {
    let mut fed = Federation::start(AB).await;
    let limit = alertrelay::api::server::MAX_MESSAGE;
    let body = vec![0u8; limit + 1];
    let err = raw_call(node_channel(&fed, FR, DE), FORWARD, body)
        .await
        .expect_err("refused");
    // tonic refuses a frame whose declared length is over the limit before
    // buffering it; the node answers RESOURCE_EXHAUSTED, as docs/contract.md says.
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("size limit"), "{err:?}");
    // A message within the limit is read and refused for what it is (an
    // empty message decodes as an empty batch).
    let err = raw_call(node_channel(&fed, FR, DE), FORWARD, vec![])
        .await
        .expect_err("an empty batch is refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(incoming(&fed, DE).await.is_empty());
    good_delivery(&fed, FR).await;
    let log = audit_log(&mut fed, DE).await;
    // The oversize frame never reached the handler, but its refusal is
    // audited too; then the empty batch's.
    assert_eq!(reason_codes(&log), vec!["too-large", "batch-size"]);
    fed.shutdown().await;
}

#[tokio::test]
async fn shape_malformed_protobuf_is_refused_and_nothing_is_stored() {
    let mut fed = Federation::start(AB).await;
    // Inside the signature: FR-PDC signs bytes that are no ReportPayload.
    // The signature verifies; decoding then fails: INVALID_ARGUMENT.
    for garbage in [vec![0xff; 40], vec![0x0a, 0x80], b"\x0a\x05abc".to_vec()] {
        let s = sign_bytes(&fed, FR, Purpose::Report, garbage);
        assert_refused(
            forward(&fed, FR, DE, envelope(s, vec![])).await,
            Code::InvalidArgument,
            "report payload is not valid protobuf",
        );
    }
    // The request itself is not protobuf: tonic's codec refuses it before
    // the handler runs, and the node answers INVALID_ARGUMENT and audits it
    // (`api::rescue`).
    let valid = pb::ForwardRequest {
        envelopes: vec![envelope(
            sign_report(&fed, FR, &report("FR-PDC", "truncated", &["DE-ECO"])),
            vec![],
        )],
        urgent: false,
    }
    .encode_to_vec();
    for body in [
        vec![0xff; 32],
        vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
        valid[..valid.len() - 10].to_vec(),
    ] {
        let err = raw_call(node_channel(&fed, FR, DE), FORWARD, body)
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
    assert!(incoming(&fed, DE).await.is_empty());
    good_delivery(&fed, FR).await;
    let log = audit_log(&mut fed, DE).await;
    assert_eq!(reason_codes(&log), vec!["malformed"; 6]);
    assert_eq!(count(&log, "report.received"), 1);
    fed.shutdown().await;
}

#[tokio::test]
async fn shape_an_undecodable_request_is_invalid_argument_and_audited() {
    let mut fed = Federation::start(AB).await;
    // Invalid UTF-8 in a string field outside the signed payload: the
    // signer name. The last "FR-PDC" string tagged as field 2 is
    // Signed.signer (the payload's own origin field comes first).
    let mut body = pb::ForwardRequest {
        envelopes: vec![envelope(
            sign_report(&fed, FR, &report("FR-PDC", "utf8", &["DE-ECO"])),
            vec![],
        )],
        urgent: false,
    }
    .encode_to_vec();
    let at = body
        .windows(8)
        .rposition(|w| w == b"\x12\x06FR-PDC")
        .unwrap();
    body[at + 2] = 0xff;
    for body in [vec![0xff; 32], body] {
        let err = raw_call(node_channel(&fed, FR, DE), FORWARD, body)
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
    good_delivery(&fed, FR).await;
    let log = audit_log(&mut fed, DE).await;
    assert_eq!(reason_codes(&log), vec!["malformed"; 2]);
    fed.shutdown().await;
}

#[tokio::test]
async fn shape_unknown_duplicated_or_reordered_fields_inside_the_signed_payload_are_invalid_argument()
 {
    let mut fed = Federation::start(AB).await;
    let p = report("FR-PDC", &fresh_id("canonical"), &["DE-ECO"]);
    let canonical = p.encode_to_vec();
    // Field 99, varint 1: unknown to this schema, dropped by prost.
    let mut unknown = canonical.clone();
    unknown.extend_from_slice(&[0x98, 0x06, 0x01]);
    // report_id (field 1) twice: prost keeps the last one.
    let mut duplicated = canonical.clone();
    duplicated.extend_from_slice(&[0x0a, 0x02, b'x', b'y']);
    // The same fields in another order: decodes to the same message.
    let mut reordered = pb::ReportPayload {
        category: p.category.clone(),
        ..Default::default()
    }
    .encode_to_vec();
    reordered.extend(
        pb::ReportPayload {
            category: String::new(),
            ..p.clone()
        }
        .encode_to_vec(),
    );
    assert_eq!(pb::ReportPayload::decode(reordered.as_slice()).unwrap(), p);
    for bytes in [unknown, duplicated, reordered] {
        let s = sign_bytes(&fed, FR, Purpose::Report, bytes);
        assert_refused(
            forward(&fed, FR, DE, envelope(s, vec![])).await,
            Code::InvalidArgument,
            "not canonical",
        );
    }
    assert!(incoming(&fed, DE).await.is_empty());
    good_delivery(&fed, FR).await;
    let log = audit_log(&mut fed, DE).await;
    assert_eq!(reason_codes(&log), vec!["non-canonical"; 3]);
    fed.shutdown().await;
}

#[tokio::test]
async fn shape_invalid_utf8_inside_the_signed_payload_is_invalid_argument() {
    let mut fed = Federation::start(AB).await;
    let mut p = report("FR-PDC", &fresh_id("utf8"), &["DE-ECO"]);
    p.urls = vec![format!("http://{DE_IP}/XX")];
    let encoded = p.encode_to_vec();
    let mut in_url = encoded.clone();
    let at = in_url.windows(2).position(|w| w == b"XX").unwrap();
    in_url[at..at + 2].copy_from_slice(&[0xff, 0xfe]);
    let mut in_category = encoded.clone();
    let at = in_category.windows(4).position(|w| w == b"csam").unwrap();
    // An overlong encoding of 'a': never valid UTF-8.
    in_category[at + 1..at + 3].copy_from_slice(&[0xc1, 0xa1]);
    for bytes in [in_url, in_category] {
        assert!(pb::ReportPayload::decode(bytes.as_slice()).is_err());
        let s = sign_bytes(&fed, FR, Purpose::Report, bytes);
        assert_refused(
            forward(&fed, FR, DE, envelope(s, vec![])).await,
            Code::InvalidArgument,
            "not valid protobuf",
        );
    }
    assert!(incoming(&fed, DE).await.is_empty());
    good_delivery(&fed, FR).await;
    let log = audit_log(&mut fed, DE).await;
    assert_eq!(reason_codes(&log), vec!["malformed"; 2]);
    fed.shutdown().await;
}

#[tokio::test]
async fn shape_too_many_urls_and_urls_over_8_kib_are_invalid_argument() {
    let mut fed = Federation::start(AB).await;
    let max_urls = alertrelay::report::validate::MAX_URLS;
    let max_bytes = alertrelay::report::validate::MAX_URL_BYTES;
    let many =
        |n: usize| -> Vec<String> { (0..n).map(|i| format!("http://{DE_IP}/{i}")).collect() };
    let sized = |n: usize| {
        let prefix = format!("http://{DE_IP}/");
        format!("{prefix}{}", "a".repeat(n - prefix.len()))
    };
    // From a peer.
    for (urls, says) in [
        (many(max_urls + 1), "at most 100 URLs, got 101"),
        (vec![sized(max_bytes + 1)], "8193 bytes, at most 8192"),
    ] {
        let mut p = report("FR-PDC", &fresh_id("size"), &["DE-ECO"]);
        p.urls = urls;
        assert_refused(
            forward(&fed, FR, DE, envelope(sign_report(&fed, FR, &p), vec![])).await,
            Code::InvalidArgument,
            says,
        );
    }
    // Exactly at both limits is accepted.
    let mut p = report("FR-PDC", &fresh_id("at-limit"), &["DE-ECO"]);
    p.urls = many(max_urls - 1);
    p.urls.push(sized(max_bytes));
    let ok = forward(&fed, FR, DE, envelope(sign_report(&fed, FR, &p), vec![]))
        .await
        .unwrap();
    assert_eq!(ok.results[0].code, 0);
    // From an analyst.
    let mut fr = fed.operator(FR);
    for (urls, code) in [
        (many(max_urls + 1), "too-many-urls"),
        (vec![sized(max_bytes + 1)], "url-too-long"),
    ] {
        let r = fr
            .submit_report(pb::SubmitReportRequest {
                urls,
                category: "csam".into(),
                ..Default::default()
            })
            .await;
        assert_refused(r, Code::InvalidArgument, code);
    }
    assert_eq!(incoming(&fed, DE).await.len(), 1);
    good_delivery(&fed, FR).await;
    let log = audit_log(&mut fed, DE).await;
    assert_eq!(reason_codes(&log), vec!["too-many-urls", "url-too-long"]);
    let log = audit_log(&mut fed, FR).await;
    assert_eq!(reason_codes(&log), vec!["too-many-urls", "url-too-long"]);
    assert_eq!(count(&log, "report.submitted"), 1);
    fed.shutdown().await;
}

/// URLs no report may carry, with the reason code each gets.
fn hostile_urls() -> Vec<(String, &'static str)> {
    let h = format!("http://{DE_IP}");
    vec![
        ("javascript:alert(1)".into(), "url-scheme"),
        ("file:///etc/passwd".into(), "url-scheme"),
        (
            "data:text/html,<script>alert(1)</script>".into(),
            "url-scheme",
        ),
        (format!("ws://{DE_IP}/x"), "url-scheme"),
        (format!("sftp://{DE_IP}/x"), "url-scheme"),
        (format!("{h}/\0x"), "control-character"),
        (format!("{h}/\u{1b}[2Jx"), "control-character"),
        (format!("{h}/\u{7f}"), "control-character"),
        (format!("{h}/\u{85}"), "control-character"),
        (format!("{h}/\u{202e}gpj.exe"), "bidi-override"),
        (format!("{h}/\u{2067}x"), "bidi-override"),
        (format!("{h}/\u{200f}x"), "bidi-override"),
        (format!("{h}/\u{061c}x"), "bidi-override"),
        (format!("{h}/x\r\nX-Injected: 1"), "crlf"),
        (format!("{h}/x\nfake line"), "crlf"),
        (format!("{h}/x\r"), "crlf"),
    ]
}

#[tokio::test]
async fn shape_schemes_control_characters_bidi_and_crlf_in_urls_are_invalid_argument() {
    let mut fed = Federation::start(AB).await;
    let list = hostile_urls();
    // From a peer, as the second URL of a report: every URL is checked.
    for (url, _) in &list {
        let mut p = report("FR-PDC", &fresh_id("hostile"), &["DE-ECO"]);
        p.urls = vec![format!("http://{DE_IP}/fine"), url.clone()];
        assert_refused(
            forward(&fed, FR, DE, envelope(sign_report(&fed, FR, &p), vec![])).await,
            Code::InvalidArgument,
            "urls[1]",
        );
    }
    // From an analyst (a few of these are also in tests/it/federation.rs).
    let mut fr = fed.operator(FR);
    for (url, code) in &list {
        let r = fr
            .submit_report(pb::SubmitReportRequest {
                urls: vec![url.clone()],
                category: "csam".into(),
                ..Default::default()
            })
            .await;
        let err = assert_refused(r, Code::InvalidArgument, code);
        // The refusal never echoes the hostile bytes back.
        assert!(
            !err.message().chars().any(|c| c.is_control()),
            "{:?}",
            err.message()
        );
    }
    assert!(incoming(&fed, DE).await.is_empty());
    good_delivery(&fed, FR).await;
    let want: Vec<&str> = list.iter().map(|(_, c)| *c).collect();
    let log = audit_log(&mut fed, DE).await;
    assert_eq!(reason_codes(&log), want);
    let log = audit_log(&mut fed, FR).await;
    assert_eq!(reason_codes(&log), want);
    fed.shutdown().await;
}

/// One way to put a hostile string into a report.
type Edit = Box<dyn Fn(&mut pb::ReportPayload)>;

#[tokio::test]
async fn shape_control_characters_in_a_peers_evidence_and_route_fields_are_invalid_argument() {
    let mut fed = Federation::start(AB).await;
    let hostile = [
        "DE\r\n  status:   removed",
        "\u{1b}[2J\u{1b}[H",
        "\u{1b}]52;c;cm0gLXJmIH4=\u{7}",
        "x\u{202e}ED",
    ];
    let mut n = 0;
    let started = std::time::Instant::now();
    for s in hostile {
        let edits: Vec<Edit> = vec![
            Box::new(move |p| p.hosting.get_or_insert_default().country = s.into()),
            Box::new(move |p| p.hosting.get_or_insert_default().ip = s.into()),
            Box::new(move |p| p.hosting.get_or_insert_default().dataset = s.into()),
            Box::new(move |p| p.route.as_mut().unwrap().reason = s.into()),
            Box::new(move |p| p.route.as_mut().unwrap().kind = s.into()),
            Box::new(move |p| p.route.as_mut().unwrap().destinations.push(s.into())),
            Box::new(move |p| p.hosting.get_or_insert_default().org = s.into()),
            Box::new(move |p| p.hosting.get_or_insert_default().ambiguity = s.into()),
            Box::new(move |p| p.hosting.get_or_insert_default().flags.push(s.into())),
            Box::new(move |p| p.route.as_mut().unwrap().steps.push(s.into())),
            // The DNS evidence (#24), in the payload's and the route's copy.
            Box::new(move |p| p.hosting.get_or_insert_default().behind_cdn = s.into()),
            Box::new(move |p| {
                p.hosting
                    .get_or_insert_default()
                    .dns
                    .push(pb::DnsResolution {
                        resolver: s.into(),
                        ..Default::default()
                    })
            }),
            Box::new(move |p| {
                let route = p.route.as_mut().unwrap();
                route
                    .evidence
                    .get_or_insert_default()
                    .dns
                    .push(pb::DnsResolution {
                        answers: vec![pb::DnsAnswer {
                            value: s.into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    })
            }),
        ];
        for edit in edits {
            let mut p = report("FR-PDC", &fresh_id("evidence"), &["DE-ECO"]);
            edit(&mut p);
            let r = forward(&fed, FR, DE, envelope(sign_report(&fed, FR, &p), vec![])).await;
            assert_refused(r, Code::InvalidArgument, "");
            n += 1;
        }
    }
    assert!(incoming(&fed, DE).await.is_empty());
    good_delivery(&fed, FR).await;
    // Each refusal has its own audit entry up to the caller's refusal
    // burst; the rest are counted (into the metric, and into the caller's
    // next entry), so a peer cannot grow the audit log without bound.
    let metrics = fed.metrics(DE).await;
    let log = audit_log(&mut fed, DE).await;
    let audited = refusals(&log).len();
    // The burst of 20, and what the bucket refilled (2 a second) while
    // the test ran: a slow machine audits a few more, never all.
    let refilled = (started.elapsed().as_secs_f64() * 2.0).ceil() as usize;
    assert!(
        (n.min(20)..=(20 + refilled).min(n)).contains(&audited),
        "{audited} of {n} refusals audited in {:?}",
        started.elapsed()
    );
    let throttled = metric_value(
        &metrics,
        "alertrelay_refusals_total{reason=\"refusals-throttled\"}",
    );
    assert_eq!(
        audited + throttled as usize,
        n,
        "every refusal counted: {metrics}"
    );
    fed.shutdown().await;
}

/// The value of one series on a Prometheus page (0 when absent).
fn metric_value(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series).map(str::trim))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn shape_control_characters_in_a_status_update_reason_are_invalid_argument() {
    let mut fed = Federation::start(AB).await;
    let id = good_delivery(&fed, FR).await;
    // DE-ECO, the hotline working the case, sends back a status whose
    // reason forges a second history line (and an OSC 52 clipboard write).
    for reason in [
        "ok\n  history:  2026-01-01T00:00:00Z removed by node:DE-ECO, signed by DE-ECO",
        "ok\r\nremoved",
        "\u{1b}]52;c;cm0gLXJmIH4=\u{7}",
        "done \u{202e}enilno llits",
    ] {
        let update = pb::StatusUpdate {
            update_id: uuid::Uuid::new_v4().to_string(),
            report_id: id.clone(),
            origin: "FR-PDC".into(),
            node: "DE-ECO".into(),
            status: "in-review".into(),
            reason: reason.into(),
            at_ms: now_ms(),
        };
        let signed = wire::sign(&fed.signing_key(DE), &fed.id(DE), Purpose::Status, &update);
        let r = fed
            .federation_as(DE, FR)
            .push_status(pb::PushStatusRequest {
                updates: vec![signed],
                ..Default::default()
            })
            .await;
        assert_refused(r, Code::InvalidArgument, "reason");
    }
    let c = case(&mut fed.operator(FR), &id).await;
    assert!(
        c.history
            .iter()
            .all(|h| !h.reason.chars().any(char::is_control))
    );
    let log = audit_log(&mut fed, FR).await;
    assert_eq!(refusals(&log).len(), 4);
    fed.shutdown().await;
}

/// Look-alike hosts: Cyrillic "а" and "о" among Latin letters, the
/// punycode form of one, and an all-Cyrillic name that passes for "paypal".
const HOMOGRAPHS: [&str; 4] = [
    "http://\u{430}pple.com/login",
    "https://xn--pple-43d.com/account",
    "http://g\u{43e}\u{43e}gle.com/search?q=x",
    "https://\u{440}\u{430}\u{443}\u{440}\u{430}l.com/",
];

#[tokio::test]
async fn shape_an_idn_homograph_url_is_accepted_flagged_and_stored_byte_for_byte() {
    use alertrelay::report::validate::{CONFUSABLE_HOST, MIXED_SCRIPT_HOST};
    let mut fed = Federation::start(AB).await;
    let mut fr = fed.operator(FR);
    let urls: Vec<String> = HOMOGRAPHS.iter().map(|u| (*u).to_owned()).collect();
    let resp = fr
        .submit_report(pb::SubmitReportRequest {
            urls: urls.clone(),
            category: "csam".into(),
            hosting_ip: DE_IP.into(),
            ..Default::default()
        })
        .await
        .expect("a homograph URL is evidence, and accepted")
        .into_inner();
    let id = resp.report_id;
    wait_case(&fr, &id, 20, |c| c.status == "delivered").await;
    for i in [FR, DE] {
        let c = case(&mut fed.operator(i), &id).await;
        let stored: Vec<&[u8]> = c.urls.iter().map(|u| u.as_bytes()).collect();
        let sent: Vec<&[u8]> = urls.iter().map(|u| u.as_bytes()).collect();
        assert_eq!(stored, sent, "node {i} keeps the URLs byte-for-byte");
        // The flags travel in the origin's signed route evidence, so the
        // receiving analyst sees them too.
        let flags = c.route.map(|r| r.flags).unwrap_or_default();
        for flag in [MIXED_SCRIPT_HOST, CONFUSABLE_HOST] {
            assert!(flags.iter().any(|f| f == flag), "node {i}: {flags:?}");
        }
    }
    let log = audit_log(&mut fed, DE).await;
    assert!(refusals(&log).is_empty());
    // Audit entries carry report ids, never the URLs.
    assert!(log.iter().all(|r| !r.detail.contains("pple")));
    fed.shutdown().await;
}

#[tokio::test]
async fn shape_sql_looking_strings_are_stored_byte_for_byte() {
    let mut fed = Federation::start(AB).await;
    let urls = vec![
        format!("http://{DE_IP}/?id=1' OR '1'='1'; DROP TABLE reports; --"),
        format!("http://{DE_IP}/x\"); DELETE FROM audit; --%00%27\\"),
    ];
    let notes = "Robert'); DROP TABLE cases;--\n\"quoted\" `tick` \\ %s %n $1 ?1 :name";
    let mut fr = fed.operator(FR);
    let id = fr
        .submit_report(pb::SubmitReportRequest {
            urls: urls.clone(),
            category: "csam".into(),
            notes: notes.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .report_id;
    wait_case(&fr, &id, 20, |c| c.status == "delivered").await;
    for i in [FR, DE] {
        let c = case(&mut fed.operator(i), &id).await;
        assert_eq!(c.urls, urls, "node {i}");
        assert_eq!(c.notes.as_bytes(), notes.as_bytes(), "node {i}");
    }
    // A report id is not free text: SQL in it is refused.
    let p = report("FR-PDC", "1' OR '1'='1", &["DE-ECO"]);
    assert_refused(
        forward(&fed, FR, DE, envelope(sign_report(&fed, FR, &p), vec![])).await,
        Code::InvalidArgument,
        "report_id",
    );
    good_delivery(&fed, FR).await;
    assert_eq!(incoming(&fed, DE).await.len(), 2);
    let log = audit_log(&mut fed, DE).await;
    assert_eq!(reason_codes(&log), vec!["bad-report-id"]);
    fed.shutdown().await;
}

/// Refusals made before any handler runs (an undecodable body) are held
/// to the caller's refusal quota like every other: a flood of them from
/// one certificate writes a bounded number of audit entries, and every one
/// is counted.
#[tokio::test]
async fn load_a_flood_of_undecodable_calls_cannot_grow_the_audit_log_without_bound() {
    let mut fed = Federation::start(AB).await;
    let before = fed.metrics(DE).await;
    let calls = 300;
    let channel = node_channel(&fed, FR, DE);
    for _ in 0..calls {
        // A field header with nothing after it: not protobuf.
        let err = raw_call(channel.clone(), FORWARD, vec![0x0a, 0xff])
            .await
            .expect_err("refused");
        assert!(
            matches!(err.code(), Code::InvalidArgument | Code::ResourceExhausted),
            "{err:?}"
        );
    }
    let metrics = fed.metrics(DE).await;
    let malformed =
        |page: &str| metric_value(page, "alertrelay_refusals_total{reason=\"malformed\"}");
    assert_eq!(
        malformed(&metrics) - malformed(&before),
        calls as f64,
        "every refusal counted"
    );
    good_delivery(&fed, FR).await;
    let log = audit_log(&mut fed, DE).await;
    let audited = refusals(&log)
        .iter()
        .filter(|(_, _, code)| code == "malformed")
        .count();
    // The refusal burst (20) and what the refusal rate (2/s) adds while
    // the flood lasts, not 300.
    assert!(
        (20..=60).contains(&audited),
        "{audited} audit entries for {calls} refused calls"
    );
    fed.shutdown().await;
}

// ===========================================================================
// Routing.
// ===========================================================================

/// FR-PDC's report for DE-ECO relayed `n` times, alternately by NL-EOKM
/// and FR-PDC (signatures and links all valid), and the node that sends it
/// last.
fn relayed(fed: &Federation, n: usize) -> (pb::Envelope, usize) {
    let p = report("FR-PDC", &fresh_id("hops"), &["DE-ECO"]);
    let s = sign_report(fed, FR, &p);
    let by: Vec<usize> = (0..n).map(|i| if i % 2 == 0 { NL } else { FR }).collect();
    let hops = (0..n)
        .map(|i| {
            let from = if i == 0 {
                "FR-PDC".to_owned()
            } else {
                fed.id(by[i - 1]).to_string()
            };
            let to = by
                .get(i + 1)
                .map(|b| fed.id(*b).to_string())
                .unwrap_or_else(|| "DE-ECO".to_owned());
            hop(fed, by[i], &from, &to, &s, &p)
        })
        .collect();
    (envelope(s, hops), by[n - 1])
}

#[tokio::test]
async fn routing_more_than_eight_hops_is_refused_and_not_stored() {
    let mut fed = Federation::start(ABC).await;
    assert_eq!(wire::MAX_HOPS, 8);
    // Eight signed, well-linked hops open (a directory of three nodes has
    // no relay chain that long, so the node itself would refuse them as
    // not its relays; the count is what is checked here).
    let (env, sender) = relayed(&fed, 8);
    let opened = wire::open_envelope(
        &env,
        &fed.id(sender),
        &fed.id(DE),
        &fed.configs[DE].directory,
        alertrelay::node::Core::now_ms(),
    );
    assert!(opened.is_ok(), "eight hops are allowed: {opened:?}");
    let (env, sender) = relayed(&fed, 9);
    assert_refused(
        forward(&fed, sender, DE, env).await,
        Code::FailedPrecondition,
        "more than 8 hops",
    );
    // The count is checked before any signature: nine junk hops are refused
    // just the same, without costing nine verifications.
    let (mut env, _) = relayed(&fed, 1);
    env.hops = vec![pb::Signed::default(); 9];
    assert_refused(
        forward(&fed, NL, DE, env).await,
        Code::FailedPrecondition,
        "more than 8 hops",
    );
    assert!(incoming(&fed, DE).await.is_empty());
    good_delivery(&fed, FR).await;
    let log = audit_log(&mut fed, DE).await;
    assert_eq!(reason_codes(&log), vec!["too-many-hops"; 2]);
    fed.shutdown().await;
}

// ===========================================================================
// Load (the flood of one peer is tests/load.rs).
// ===========================================================================

#[tokio::test]
async fn load_refused_callers_are_throttled_and_cannot_grow_the_audit_log_without_bound() {
    let mut fed = Federation::start(AB).await;
    // FR-PDC's analyst: a valid certificate of the federation CA, knocking
    // at DE-ECO's Operator service, which it may not use.
    let files = fed.configs[FR].operator.as_ref().unwrap().files();
    let tls = alertrelay::crypto::tls::client_config(&files).unwrap();
    let client = pb::operator_client::OperatorClient::new(channel_to(&fed, DE, tls));
    const CALLS: usize = 1_000;
    let (mut denied, mut exhausted) = (0, 0);
    let started = std::time::Instant::now();
    for _ in 0..CALLS / 50 {
        let calls: Vec<_> = (0..50)
            .map(|_| {
                let mut c = client.clone();
                tokio::spawn(async move { c.list_cases(pb::ListCasesRequest::default()).await })
            })
            .collect();
        for c in calls {
            match c.await.unwrap().map(|_| ()).map_err(|s| s.code()) {
                Err(Code::PermissionDenied) => denied += 1,
                Err(Code::ResourceExhausted) => exhausted += 1,
                other => panic!("{other:?}"),
            }
        }
    }
    println!(
        "{CALLS} refused calls in {:?}: {denied} PERMISSION_DENIED, {exhausted} RESOURCE_EXHAUSTED",
        started.elapsed()
    );
    good_delivery(&fed, FR).await;
    let log = audit_log(&mut fed, DE).await;
    let n = count(&log, "input.refused");
    assert!(
        exhausted > 0 && n <= 100,
        "{CALLS} refused calls: {exhausted} throttled, {n} audit entries"
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn load_idle_connections_from_one_address_cannot_take_every_handshake_slot() {
    let fed = Federation::start(AB).await;
    // Connections that never send a ClientHello, from another loopback
    // address than the honest client's. No certificate needed. The node
    // caps handshakes in progress per address, so the honest client still
    // gets a slot (many attacking addresses are beyond this test).
    let mut idle = Vec::new();
    for _ in 0..300 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        idle.push(socket.connect(fed.configs[DE].listen).await.unwrap());
    }
    let started = std::time::Instant::now();
    let r = fed
        .operator(DE)
        .list_cases(pb::ListCasesRequest::default())
        .await;
    assert!(r.is_ok(), "DE-ECO's own analyst is locked out: {r:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(idle);
    fed.shutdown().await;
}
