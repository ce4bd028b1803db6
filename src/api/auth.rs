//! Turns the verified client certificate of a connection into a typed
//! identity, and enforces who may call which service.

use std::net::SocketAddr;

use tonic::{Request, Status};

use crate::identity::{IdentityError, NodeId, PeerIdentity};
use crate::node::Core;

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

/// The calling node, for the `Federation` service: node certificates of
/// active directory members only.
pub fn node<T>(core: &Core, req: &Request<T>) -> Result<NodeId, Status> {
    match identity(req)? {
        PeerIdentity::Node(id) => match core.config.directory.node(&id) {
            Some(n) if n.active => Ok(id),
            Some(_) => Err(Status::permission_denied(format!("{id} is suspended"))),
            None => Err(Status::permission_denied(format!(
                "{id} is not in the directory"
            ))),
        },
        PeerIdentity::Operator { .. } => Err(Status::permission_denied(
            "operator certificates may not call the Federation service",
        )),
    }
}

/// The calling operator, for the `Operator` service: operator certificates
/// issued for this node only.
pub fn operator<T>(core: &Core, req: &Request<T>) -> Result<PeerIdentity, Status> {
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
