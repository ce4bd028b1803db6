//! The generated protobuf and gRPC code for `proto/alertrelay/v1/` (package
//! `alertrelay.v1`). Only `api/` (services) and `wire` (the signed
//! payload codec) use these types; the store and routing never see them.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("alertrelay.v1");

/// The compiled descriptor set, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/alertrelay_descriptor.bin"));
