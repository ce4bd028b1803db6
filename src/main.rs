//! The `alertrelay` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc (faster than glibc's malloc for the many small allocations
/// of rows and messages freed on other threads: docs/performance.md),
/// counting allocations while `alertrelay bench` measures (a relaxed load
/// per allocation otherwise).
#[global_allocator]
static ALLOCATOR: alertrelay::bench::usage::alloc_count::Counting =
    alertrelay::bench::usage::alloc_count::Counting;

/// Log directives that silence hickory's crates.
const QUIET_DNS: &str = "hickory_resolver=off,hickory_net=off,hickory_proto=off";

fn main() -> ExitCode {
    let cli = match alertrelay::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage(e),
    };
    let default = match cli.command {
        alertrelay::cli::Command::Serve { .. } => "info",
        // The benchmark stops destinations on purpose: their delivery
        // warnings are expected and would bury the progress bars.
        alertrelay::cli::Command::Bench { .. } => "error",
        _ => "warn",
    };
    // The DNS library logs the names it resolves (reported hosts, which
    // are as sensitive as the URLs): silent unless ALERTRELAY_LOG names it.
    let wanted = std::env::var("ALERTRELAY_LOG").unwrap_or_else(|_| default.to_owned());
    let directives = if wanted.contains("hickory") {
        wanted
    } else {
        format!("{wanted},{QUIET_DNS}")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},{QUIET_DNS}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(alertrelay::cli::run(cli)) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

/// A command line clap could not take: `--help` and `--version` print and
/// succeed; anything else is a usage error, exit 64 (clap's own 2 means
/// "verification failed" here).
fn usage(e: clap::Error) -> ExitCode {
    let _ = e.print();
    match e.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
            ExitCode::SUCCESS
        }
        _ => ExitCode::from(alertrelay::cli::EXIT_CONFIG),
    }
}
