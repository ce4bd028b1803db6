//! Turns the verified client certificate of a connection into a typed
//! identity, and enforces who may call which service.

use std::net::SocketAddr;
use std::sync::Arc;

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

/// Which of the node's own services a call is for, by its path; `None`
/// for health and reflection, which anyone with a federation certificate
/// may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Federation,
    Operator,
}

impl Service {
    pub fn of(path: &str) -> Option<Service> {
        if path.starts_with("/alertrelay.v1.Federation/") {
            Some(Service::Federation)
        } else if path.starts_with("/alertrelay.v1.Operator/") {
            Some(Service::Operator)
        } else {
            None
        }
    }
}

/// A caller admitted to one call (`api::admit`, before its body was read):
/// who it is and the permit held until the call is answered.
#[derive(Clone)]
pub struct Admitted {
    pub caller: PeerIdentity,
    pub permit: Arc<Permit>,
}

/// Identity and quota from the connection alone, so it can run before the
/// request body is read: node certificates of active directory members for
/// the Federation service, this node's operator certificates for the
/// Operator service, each within its quota.
pub fn admit(core: &Core, info: Option<&ConnInfo>, service: Service) -> Result<Admitted, Status> {
    let (caller, key, quota) = match service {
        Service::Federation => {
            let peer = node_identity(core, info)?;
            // The peer is up: our worker for it need not wait out a backoff.
            core.contacted_by(&peer);
            let key = format!("node:{peer}");
            (PeerIdentity::Node(peer), key, core.config.peer_quota)
        }
        Service::Operator => {
            let op = operator_identity(core, info)?;
            let key = op.to_string();
            (op, key, core.config.operator_quota)
        }
    };
    let permit = core.limiter.admit(&key, quota).map_err(overloaded)?;
    Ok(Admitted {
        caller,
        permit: Arc::new(permit),
    })
}

/// The admission `api::admit` made for this call, or (a handler reached
/// without that layer) one made now.
fn admitted<T>(core: &Core, req: &Request<T>, service: Service) -> Result<Admitted, Status> {
    match req.extensions().get::<Admitted>() {
        Some(a) => Ok(a.clone()),
        None => admit(core, req.extensions().get::<ConnInfo>(), service),
    }
}

fn identity(info: Option<&ConnInfo>) -> Result<PeerIdentity, Status> {
    let info = info.ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    info.identity
        .clone()
        .map_err(|e| Status::permission_denied(format!("client certificate refused: {e}")))
}

/// Audits a refusal of the caller on `info`'s connection (within the
/// refusal quotas) and returns what the caller is told.
pub async fn refused(core: &Core, info: Option<&ConnInfo>, status: Status) -> Status {
    let who = shown(info);
    match audited_as(core, info.and_then(|i| i.remote), who, Err::<(), _>(status)).await {
        Err(s) => s,
        Ok(()) => Status::internal("refusal lost"),
    }
}

/// The caller as the audit log names it.
fn shown(info: Option<&ConnInfo>) -> String {
    match info.map(|i| &i.identity) {
        Some(Ok(id)) => id.to_string(),
        Some(Err(_)) => "unidentified (certificate refused)".to_owned(),
        None => "unidentified".to_owned(),
    }
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
        return audited_as(core, info.and_then(|i| i.remote), shown(info), result).await;
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
/// active directory members only; admitted within its quota (before the
/// body was read, by `api::admit`). Hold the permit until the request is
/// answered.
pub async fn node<T>(core: &Core, req: &Request<T>) -> Result<(NodeId, Arc<Permit>), Status> {
    let result = admitted(core, req, Service::Federation).and_then(|a| match a.caller {
        PeerIdentity::Node(peer) => Ok((peer, a.permit)),
        PeerIdentity::Operator { .. } => Err(operator_on_federation()),
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
/// issued for this node only; admitted within its quota (before the body
/// was read, by `api::admit`).
pub async fn operator<T>(
    core: &Core,
    req: &Request<T>,
) -> Result<(PeerIdentity, Arc<Permit>), Status> {
    let result = match admitted(core, req, Service::Operator) {
        Ok(a) => person_enabled(core, &a.caller)
            .await
            .map(|()| (a.caller, a.permit)),
        Err(e) => Err(e),
    };
    audited(core, req, result).await
}

/// Refuses the certificate of a person whose account here is disabled.
async fn person_enabled(core: &Core, caller: &PeerIdentity) -> Result<(), Status> {
    let PeerIdentity::Operator { name, .. } = caller else {
        return Ok(());
    };
    match crate::node::users::disabled(core, name).await {
        Ok(false) => Ok(()),
        Ok(true) => Err(Status::permission_denied(
            "this person's account is disabled on this node",
        )),
        Err(e) => Err(crate::api::status::to_status(e)),
    }
}

/// An operator with the admin role, for node management calls.
pub async fn admin<T>(
    core: &Core,
    req: &Request<T>,
) -> Result<(PeerIdentity, Arc<Permit>), Status> {
    let result = admitted(core, req, Service::Operator).and_then(|a| match a.caller {
        op @ PeerIdentity::Operator {
            role: crate::identity::Role::Admin,
            ..
        } => Ok((op, a.permit)),
        _ => Err(Status::permission_denied(
            "this call needs an operator certificate with the admin role",
        )),
    });
    let result = match result {
        Ok((op, permit)) => person_enabled(core, &op).await.map(|()| (op, permit)),
        Err(e) => Err(e),
    };
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

fn operator_on_federation() -> Status {
    Status::permission_denied("operator certificates may not call the Federation service")
}

fn node_identity(core: &Core, info: Option<&ConnInfo>) -> Result<NodeId, Status> {
    match identity(info)? {
        PeerIdentity::Node(id) => active_node(core, &id).map(|()| id),
        PeerIdentity::Operator { .. } => Err(operator_on_federation()),
    }
}

fn operator_identity(core: &Core, info: Option<&ConnInfo>) -> Result<PeerIdentity, Status> {
    match identity(info)? {
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
