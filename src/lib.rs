//! alertrelay: the federation node a hotline runs to exchange reports of
//! illegal online content with its peers.
//!
//! Code map (see ARCHITECTURE.md for the invariants):
//! - `api`        gRPC services, listener, auth, the one error→Status map
//! - `audit`      hash-chained audit log and its verifier
//! - `bench`      `alertrelay bench`: real nodes under measured load
//! - `cli`        command-line commands; the only place that prints
//! - `config`     `node.toml` → validated `NodeConfig`
//! - `console`    the analysts' web console (HTTPS, server-rendered), an edge
//! - `crypto`     signing keys and domain tags, PKI minting, TLS configs
//! - `directory`  the federation directory (nodes, countries, keys)
//! - `faults`     named crash points for the fault-injection harness
//! - `federation` outbound per-peer delivery workers, backoff, witnessing
//! - `geo`        IP → country and network from ordered offline sources; optional DNS
//! - `identity`   node ids and certificate identities (SPIFFE URIs)
//! - `node`       the node's behaviour: intake, receiving, cases; start-up
//! - `notify`     notifications out: signed webhooks and email (an edge)
//! - `pb`         generated protobuf / gRPC code
//! - `provision`  writing a federation to disk (CA, certificates, keys, configs)
//! - `report`     the vocabulary of a report, validation, case views
//! - `routing`    pure routing decisions with evidence
//! - `runtime`    starts and stops a node: listeners, workers, the handle
//! - `store`      storage on SQLite or PostgreSQL (sqlx), transactions
//! - `wire`       the signed payloads: codec, envelopes, receipts, exports

// No unsafe code, with these exceptions: `node::background` lowers its own
// threads' scheduling priority (two libc calls on the calling thread's
// id; std has no way to do it); the bench's `bench::usage` reads the
// process's context switches (`getrusage`) and provides the binary's
// allocator, which forwards to the system's and counts allocations while
// the bench measures.
#![deny(unsafe_code)]

pub mod api;
pub mod audit;
pub mod bench;
pub mod cli;
pub mod config;
pub mod console;
pub mod crypto;
pub mod directory;
pub mod faults;
pub mod federation;
pub mod geo;
pub mod identity;
pub mod node;
pub mod notify;
pub mod pb;
pub mod provision;
pub mod report;
pub mod routing;
pub mod runtime;
pub mod store;
pub mod wire;
