//! The integration tests that run together in one binary (one link of
//! the library, and tests of different files overlapping in time): real
//! nodes on loopback through the one harness, `common`. Each file is a
//! module named as it was a binary before (`cargo test --test it
//! federation::`).
//!
//! Binaries of their own: `fault` (node processes killed under load),
//! `load` (measurements that must not share the cores), `replicas` and
//! `store_conformance` (PostgreSQL).

#[path = "../common/mod.rs"]
mod common;

mod admission;
mod alerting;
mod audit;
mod bad_input;
mod bench;
mod bulk_intake;
mod cases;
mod cli;
mod console;
mod console_cases;
mod console_pages;
mod directory;
mod dns;
mod federation;
mod lawful;
mod lifecycle;
mod merkle_known_answer;
mod notifications;
mod operability;
mod operations;
mod outside;
mod package;
mod postgres;
mod properties;
mod relays;
mod restore;
mod routing;
mod security;
mod simulated_federation;
mod witness;
