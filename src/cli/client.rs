//! Talking to the node named by `--config`: a mutual-TLS connection with
//! its operator (or admin) certificate, and what every client command
//! shares: the error an RPC failure becomes and the `--hash
//! ALGORITHM:VALUE` arguments.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, anyhow};
use tonic::transport::Channel;

use super::Failure;
use crate::config::NodeConfig;
use crate::pb;
use crate::pb::operator_client::OperatorClient;

/// Connects with the `[operator]` identity, as the client commands do.
pub(crate) async fn connect(cfg: &NodeConfig) -> Result<OperatorClient<Channel>, Failure> {
    let op = cfg.operator.as_ref().ok_or_else(|| {
        Failure::usage(anyhow!(
            "{}: no [operator] section: the client needs an operator certificate",
            cfg.path.display()
        ))
    })?;
    connect_as(cfg, op).await
}

/// Connects with the `[admin]` identity, for node management.
pub(crate) async fn connect_admin(cfg: &NodeConfig) -> Result<OperatorClient<Channel>, Failure> {
    let admin = cfg.admin.as_ref().ok_or_else(|| {
        Failure::usage(anyhow!(
            "{}: no [admin] section: this command needs an admin operator certificate",
            cfg.path.display()
        ))
    })?;
    connect_as(cfg, admin).await
}

/// How long a client command waits for the node to accept its
/// connection (`--connect-timeout`); set once, at the start of a command.
static CONNECT_TIMEOUT: OnceLock<Duration> = OnceLock::new();

/// The default when no command line set it (the demo, the bench).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one call may take once connected.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn set_connect_timeout(timeout: Duration) {
    let _ = CONNECT_TIMEOUT.set(timeout);
}

async fn connect_as(
    cfg: &NodeConfig,
    op: &crate::config::TlsPaths,
) -> Result<OperatorClient<Channel>, Failure> {
    let tls = crate::crypto::tls::client_config(&op.files()).context("operator TLS identity")?;
    let mut addr = cfg.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let connect_timeout = *CONNECT_TIMEOUT.get().unwrap_or(&DEFAULT_CONNECT_TIMEOUT);
    let channel = crate::crypto::tls::connect_now(
        &format!("https://{addr}"),
        Some(cfg.node_id.clone()),
        &cfg.directory.federation,
        tls,
        connect_timeout,
        CALL_TIMEOUT,
    )
    .await
    .map_err(|e| Failure {
        code: super::EXIT_UNREACHABLE,
        error: anyhow!("cannot reach node {}: {e}", cfg.node_id),
    })?;
    Ok(OperatorClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}

/// A refused or failed call: exit code 1, naming the gRPC code and the
/// node's message.
pub(crate) fn rpc(status: tonic::Status) -> Failure {
    anyhow!("{:?}: {}", status.code(), status.message()).into()
}

/// `--hash ALGORITHM:VALUE` arguments.
pub(crate) fn parse_hashes(args: &[String]) -> Result<Vec<pb::MediaHash>, Failure> {
    let mut hashes = Vec::new();
    for h in args {
        let (algorithm, value) = h
            .split_once(':')
            .ok_or_else(|| Failure::usage(anyhow!("--hash {h:?}: expected ALGORITHM:VALUE")))?;
        hashes.push(pb::MediaHash {
            algorithm: algorithm.to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(hashes)
}
