//! The one map from domain errors to gRPC statuses. Internal details (SQL,
//! IO) are logged here and never sent to the caller.

use tonic::Status;

use crate::node::NodeError;
use crate::node::admission::Overloaded;
use crate::wire::WireError;

pub fn to_status(e: NodeError) -> Status {
    match e {
        NodeError::Invalid(i) => Status::invalid_argument(format!("{} ({})", i, i.code)),
        NodeError::NotFound(m) => Status::not_found(m),
        NodeError::FailedPrecondition(m) => Status::failed_precondition(m),
        NodeError::PermissionDenied(m) => Status::permission_denied(m),
        NodeError::Overloaded(m) => Status::resource_exhausted(m),
        NodeError::Wire(w) => wire_status(w),
        NodeError::Internal(what) => {
            tracing::error!(what, "internal error while handling a request");
            Status::internal("internal error; nothing was stored")
        }
        NodeError::Store(e) => {
            tracing::error!(error = ?e, "storage error while handling a request");
            Status::unavailable("storage is unavailable; nothing was stored; retry later")
        }
    }
}

fn wire_status(w: WireError) -> Status {
    let msg = w.to_string();
    match w {
        WireError::IdentityMismatch { .. }
        | WireError::UnknownSigner(_)
        | WireError::SuspendedSigner(_) => Status::permission_denied(msg),
        WireError::UnknownKey { .. } | WireError::BadSignature(_) | WireError::BadHopChain(_) => {
            Status::unauthenticated(msg)
        }
        WireError::TooManyHops => Status::failed_precondition(msg),
        WireError::Missing(_)
        | WireError::Malformed(_)
        | WireError::NonCanonical(_)
        | WireError::Invalid(_) => Status::invalid_argument(msg),
    }
}

/// A reload the node refused: nothing changed; the reason names the file.
pub fn reload_refused(e: crate::node::ReloadError) -> Status {
    tracing::warn!(error = ?e, "reload refused");
    Status::failed_precondition(format!("reload refused, nothing changed: {e:#}"))
}

/// A caller over its quota (`node::admission`): RESOURCE_EXHAUSTED, so it
/// backs off; the others are not affected.
pub fn overloaded(e: Overloaded) -> Status {
    match e {
        Overloaded::Unavailable => Status::internal("limiter unavailable"),
        other => Status::resource_exhausted(other.to_string()),
    }
}

/// The gRPC code of one item's answer in a batch (`ForwardResult.code`,
/// `PushStatusResponse.*_codes`).
pub fn verdict_code(v: crate::node::inbound::Verdict) -> i32 {
    use crate::node::inbound::Verdict;
    let code = match v {
        Verdict::Accepted => tonic::Code::Ok,
        Verdict::NotFound => tonic::Code::NotFound,
        Verdict::Conflict => tonic::Code::AlreadyExists,
        Verdict::Refused => tonic::Code::FailedPrecondition,
    };
    code as i32
}
