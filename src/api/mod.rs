//! The gRPC surface: the listener (TLS 1.3, mutual auth, one identity per
//! connection), the `Federation` and `Operator` services, health and
//! reflection. Calls are admitted before their bodies are read (`admit`);
//! handlers authenticate (`auth`), convert protobuf into domain
//! calls (`convert`), call `node::*`, and map errors in exactly one place
//! (`status`).

pub mod admit;
pub mod auth;
pub mod convert;
pub mod deadline;
pub mod federation;
pub mod operator;
pub mod rescue;
pub mod server;
pub mod status;
pub mod trace;
