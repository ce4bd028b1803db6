//! The command line. The only place that prints for humans; `--json`
//! output is for scripts and is stable.
//!
//! This file dispatches each command to the file of its group and holds
//! what they all share: the exit codes and [`Failure`]. Where a command
//! lives:
//!
//! - `args.rs`       the clap types (the grammar), nothing else
//! - `serve.rs`      `serve`, `reload`: running a node
//! - `demo.rs`       `demo`: a local federation walked through
//! - `federation.rs` `federation init`, `federation revoke`, `federation operator issue`
//! - `submit.rs`     `submit`, `route`
//! - `import.rs`     `import`: CSV bulk submission
//! - `cases.rs`      `cases list|watch|show|update|retract|correct|handoff|export|verify-export`
//! - `overview.rs`   `stats`, `peers`, `status`
//! - `formats.rs`    `notice`, `export stix`
//! - `audit.rs`      `audit verify|prove|verify-proof|export`
//! - `db.rs`         `db backup`, `db migrate-to`
//! - `retention.rs`  `retention run`, `retention erase`
//! - `users.rs`      `users add|list|disable|reset|unlock`: console accounts
//! - `geo.rs`        `geo lookup`
//! - `doctor.rs`     `doctor`
//! - `bench.rs`      `bench` (the options; the work is in `crate::bench`)
//! - `client.rs`     connecting to the node as its operator or admin
//! - `print.rs`      human-readable output shared by several commands

pub mod args;
mod audit;
mod bench;
mod cases;
pub(crate) mod client;
mod db;
mod demo;
mod doctor;
mod federation;
mod formats;
mod geo;
mod import;
mod overview;
mod print;
mod restore;
mod retention;
mod serve;
mod submit;
mod users;

use std::path::Path;
use std::process::ExitCode;

use args::ExportCommand;
pub use args::{Cli, Command};

use crate::config::NodeConfig;

/// Exit code for configuration errors (EX_USAGE... EX_DATAERR family).
pub const EXIT_CONFIG: u8 = 64;

/// Exit code for a verification that failed: an audit log, a proof or an
/// export that does not check out.
pub const EXIT_INVALID: u8 = 2;

/// Exit code for a node that could not be reached (EX_UNAVAILABLE): the
/// message names the address and why.
pub const EXIT_UNREACHABLE: u8 = 69;

/// A failure with the exit code it deserves.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            code: 1,
            error: e.into(),
        }
    }
}

impl Failure {
    /// A usage or configuration error (exit code 64).
    pub(crate) fn usage(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: EXIT_CONFIG,
            error: error.into(),
        }
    }
}

pub(crate) fn load_config(path: &Path) -> Result<NodeConfig, Failure> {
    NodeConfig::load(path).map_err(Failure::usage)
}

/// Runs one command: each goes to the file of its group.
pub async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    client::set_connect_timeout(std::time::Duration::from_secs(cli.connect_timeout));
    match cli.command {
        Command::Demo { keep } => demo::run(keep).await,
        Command::Federation { command } => federation::run(command),
        Command::Serve { config } => serve::serve(config).await,
        Command::Reload { config } => serve::reload(config).await,
        Command::Submit(args) => submit::submit(args).await,
        Command::Route(args) => submit::route(args).await,
        Command::Import {
            config,
            csv,
            concurrency,
            json,
        } => import::run(config, csv, concurrency, json).await,
        Command::Cases { command } => cases::run(command).await,
        Command::Stats {
            config,
            window_days,
            json,
        } => overview::stats(config, window_days, json).await,
        Command::Peers { config, json } => overview::peers(config, json).await,
        Command::Status { config, json } => overview::status(config, json).await,
        Command::Notice {
            case,
            config,
            format,
        } => formats::notice(config, case, format).await,
        Command::Export {
            command: ExportCommand::Stix(args),
        } => formats::export_stix(args).await,
        Command::Audit { command } => audit::run(command).await,
        Command::Db { command } => db::run(command).await,
        Command::Retention { command } => retention::run(command).await,
        Command::Users { command } => users::run(command).await,
        Command::Geo { command } => geo::run(command),
        Command::Doctor { config, json } => doctor::run(config, json).await,
        Command::Bench(args) => bench::run(args).await,
    }
}
