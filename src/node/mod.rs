//! The node's behaviour, free of gRPC and of the listeners: intake of
//! analysts' reports, receiving envelopes and status updates from peers,
//! working cases, amendments, checkpoints, exports, retention, health.
//! Its functions take domain values and return typed outcomes
//! (`NodeError`, `inbound::Verdict`, …); `api::status` alone turns them
//! into gRPC statuses. `Core` (`state.rs`) is the shared state that
//! `runtime` builds at start-up.

pub mod account;
pub mod admission;
pub mod alerts;
pub mod amend;
pub mod background;
pub mod cases;
pub mod checkpoint;
pub mod dns;
pub mod export;
pub mod handoff;
pub mod health;
pub mod inbound;
pub mod intake;
pub mod membership;
pub mod metrics;
pub mod near;
pub mod overview;
pub mod peers;
pub mod receive;
pub mod relay;
pub mod retention;
pub mod route;
pub mod second;
pub mod signatures;
pub mod startup;
pub mod state;
pub mod stats;
pub mod urgent;
pub mod users;

pub use state::{Core, CoreParts, ReloadError, bounded};
pub use urgent::{URGENT_HOLD, URGENT_TIMES, URGENT_TIMES_CHUNK, UrgentGate, UrgentWork};

use crate::report::InvalidInput;
use crate::store::StoreError;

/// Everything that can go wrong while handling a request. `api::status`
/// is the one place that turns these into gRPC statuses.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// Over a quota: retry later.
    #[error("{0}")]
    Overloaded(String),
    #[error(transparent)]
    Wire(#[from] crate::wire::WireError),
    #[error("storage failed")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(&'static str),
}
