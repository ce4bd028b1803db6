//! `alertrelay bench`: the command's options turned into
//! `crate::bench::Options`, and the results printed. The measuring is in
//! `crate::bench`.

use std::process::ExitCode;

use super::Failure;
use super::args::BenchArgs;
use super::print::emit;

pub(crate) async fn run(a: BenchArgs) -> Result<ExitCode, Failure> {
    use crate::bench::{Backend, Scenario};
    let backend = match &a.database {
        Some(url) => Backend::postgres(url, a.replicas).map_err(usage)?,
        None => Backend::Sqlite,
    };
    let scenarios = if a.scenario.is_empty() {
        Scenario::defaults(&backend)
    } else {
        a.scenario
    };
    Scenario::check(&scenarios, &backend).map_err(usage)?;
    let opts = crate::bench::Options {
        scenarios,
        duration: std::time::Duration::from_secs_f64(a.duration.max(0.5)),
        concurrency: a.concurrency,
        streams: a.streams,
        nodes: a.nodes,
        backlog: a.backlog,
        urgent: a.urgent,
        drain: a.drain,
        scale_nodes: a.scale_nodes,
        scale_reports: a.reports,
        pdq: a.pdq,
        dns_reports: a.dns_reports,
        dns_hosts: a.dns_hosts,
        console_cases: a.console_cases,
        growth: a.growth,
        json: a.json,
        dir: std::env::temp_dir(),
        backend,
    };
    let results = crate::bench::run(&opts).await?;
    if let Some(dir) = &a.report {
        let page = crate::bench::report::write(&results, dir)?;
        eprintln!("report: {}", page.display());
    }
    emit(&results, a.json, crate::bench::print)
}

fn usage(message: String) -> Failure {
    Failure::usage(anyhow::anyhow!(message))
}
