//! `alertrelay geo lookup IP`: which country the shipped, offline IP data
//! places an address in, and on what evidence.

use std::process::ExitCode;

use anyhow::anyhow;

use super::Failure;
use super::args::GeoCommand;
use super::print::emit;

pub(crate) fn run(command: GeoCommand) -> Result<ExitCode, Failure> {
    match command {
        GeoCommand::Lookup { ip, json } => lookup(&ip, json),
    }
}

fn lookup(ip: &str, json: bool) -> Result<ExitCode, Failure> {
    let addr: std::net::IpAddr = ip
        .parse()
        .map_err(|_| Failure::usage(anyhow!("{ip:?} is not an IPv4 or IPv6 address")))?;
    let answer = crate::geo::GeoDb::embedded()?.lookup(addr);
    emit(&answer, json, |answer| {
        println!(
            "{addr}: {} (raw {:?}; {} {}, {})",
            answer.country.as_deref().unwrap_or("unknown"),
            answer.raw_code,
            answer.dataset,
            answer.dataset_date,
            answer.method
        );
    })
}
