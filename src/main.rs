//! The `alertrelay` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;

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
    // are as sensitive as the URLs): silent unless ALERTRELAY_LOG asks.
    let default = format!("{default},{QUIET_DNS}");
    let filter = tracing_subscriber::EnvFilter::try_from_env("ALERTRELAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
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
