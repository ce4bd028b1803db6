//! Turns the verified client certificate of a connection into a typed
//! identity, and enforces who may call which service.

use std::net::SocketAddr;

use tonic::{Request, Status};

use crate::api::status::overloaded;
use crate::identity::{IdentityError, NodeId, PeerIdentity};
use crate::node::Core;
use crate::node::admission::Permit;

/// Per-connection information, computed once at the TLS handshake.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: Option<SocketAddr>,
    pub identity: Result<PeerIdentity, IdentityError>,
}

fn identity<T>(req: &Request<T>) -> Result<PeerIdentity, Status> {
    let info = req
        .extensions()
        .get::<ConnInfo>()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    info.identity
        .clone()
        .map_err(|e| Status::permission_denied(format!("client certificate refused: {e}")))
}

/// Audits a refused caller (with whatever identity it showed) and passes
/// the refusal on.
async fn audited<T, R>(
    core: &Core,
    req: &Request<T>,
    result: Result<R, Status>,
) -> Result<R, Status> {
    if result.is_err() {
        let info = req.extensions().get::<ConnInfo>();
        let who = match info.map(|i| &i.identity) {
            Some(Ok(id)) => id.to_string(),
            Some(Err(_)) => "unidentified (certificate refused)".to_owned(),
            None => "unidentified".to_owned(),
        };
        return audited_as(core, info.and_then(|i| i.remote), who, result).await;
    }
    result
}

/// Audits a refusal of `who` (within the refusal quota of the caller and
/// of its connection) and passes it on; past the quota the caller is told
/// to back off.
async fn audited_as<R>(
    core: &Core,
    connection: Option<std::net::SocketAddr>,
    who: String,
    result: Result<R, Status>,
) -> Result<R, Status> {
    if let Err(status) = &result {
        let code = if status.code() == tonic::Code::ResourceExhausted {
            "rate-limited"
        } else {
            "permission-denied"
        };
        if !core
            .audit_refusal_on(connection, &who, code, status.message(), &[])
            .await
        {
            return Err(Status::resource_exhausted(
                "too many refused calls; retry later",
            ));
        }
    }
    result
}

/// The calling node, for the `Federation` service: node certificates of
/// active directory members only; admitted within its quota. Hold the
/// permit until the request is answered.
pub async fn node<T>(core: &Core, req: &Request<T>) -> Result<(NodeId, Permit), Status> {
    let result = node_identity(core, req).and_then(|peer| {
        // The peer is up: our worker for it need not wait out a backoff.
        core.contacted_by(&peer);
        let permit = core
            .limiter
            .admit(&format!("node:{peer}"), core.config.peer_quota)
            .map_err(overloaded)?;
        Ok((peer, permit))
    });
    audited(core, req, result).await
}

/// The calling node, for a `Federation` stream: identified, admitted and
/// audited when refused as for a call (opening a stream costs one call of
/// its quota), then admitted again for each message (`node_message`), so a
/// stream is held to the same quota as the calls it replaces.
pub async fn node_stream<T>(core: &Core, req: &Request<T>) -> Result<NodeId, Status> {
    node(core, req).await.map(|(peer, _permit)| peer)
}

/// One message of a node's stream, as one call: the node is still an
/// active member of the directory (it may have been suspended since the
/// stream opened), and within its quota. Hold the permit until the message
/// is answered.
pub async fn node_message(core: &Core, peer: &NodeId) -> Result<Permit, Status> {
    let result = active_node(core, peer).and_then(|()| {
        core.limiter
            .admit(&format!("node:{peer}"), core.config.peer_quota)
            .map_err(overloaded)
    });
    audited_as(
        core,
        None,
        PeerIdentity::Node(peer.clone()).to_string(),
        result,
    )
    .await
}

/// The calling operator, for the `Operator` service: operator certificates
/// issued for this node only; admitted within its quota.
pub async fn operator<T>(core: &Core, req: &Request<T>) -> Result<(PeerIdentity, Permit), Status> {
    let result = operator_identity(core, req).and_then(|op| {
        let permit = core
            .limiter
            .admit(&op.to_string(), core.config.operator_quota)
            .map_err(overloaded)?;
        Ok((op, permit))
    });
    audited(core, req, result).await
}

/// An operator with the admin role, for node management calls.
pub async fn admin<T>(core: &Core, req: &Request<T>) -> Result<(PeerIdentity, Permit), Status> {
    let result = operator_identity(core, req).and_then(|op| match op {
        PeerIdentity::Operator {
            role: crate::identity::Role::Admin,
            ..
        } => {
            let permit = core
                .limiter
                .admit(&op.to_string(), core.config.operator_quota)
                .map_err(overloaded)?;
            Ok((op, permit))
        }
        _ => Err(Status::permission_denied(
            "this call needs an operator certificate with the admin role",
        )),
    });
    audited(core, req, result).await
}

fn active_node(core: &Core, id: &NodeId) -> Result<(), Status> {
    match core.directory().node(id) {
        Some(n) if n.active => Ok(()),
        Some(_) => Err(Status::permission_denied(format!("{id} is suspended"))),
        None => Err(Status::permission_denied(format!(
            "{id} is not in the directory"
        ))),
    }
}

fn node_identity<T>(core: &Core, req: &Request<T>) -> Result<NodeId, Status> {
    match identity(req)? {
        PeerIdentity::Node(id) => active_node(core, &id).map(|()| id),
        PeerIdentity::Operator { .. } => Err(Status::permission_denied(
            "operator certificates may not call the Federation service",
        )),
    }
}

fn operator_identity<T>(core: &Core, req: &Request<T>) -> Result<PeerIdentity, Status> {
    match identity(req)? {
        op @ PeerIdentity::Operator { .. } => {
            if matches!(&op, PeerIdentity::Operator { node, .. } if node == &core.me) {
                Ok(op)
            } else {
                Err(Status::permission_denied(
                    "this operator certificate belongs to another node",
                ))
            }
        }
        PeerIdentity::Node(_) => Err(Status::permission_denied(
            "node certificates may not call the Operator service",
        )),
    }
}
