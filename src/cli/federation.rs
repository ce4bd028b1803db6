//! `alertrelay federation init` (a federation's CA, certificates, keys and
//! configs, from `--node ID=CC,...`) and `alertrelay federation revoke`
//! (re-issue the CRL and copy it to every node folder). The work is in
//! `crate::provision`; this file turns the arguments into its inputs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::Failure;
use super::args::{FederationCommand, FederationInitArgs, OperatorCommand};
use crate::identity::NodeId;
use crate::provision::{self, NodeSpec, ProvisionError};

pub(crate) fn run(command: FederationCommand) -> Result<ExitCode, Failure> {
    match command {
        FederationCommand::Init(args) => init(args),
        FederationCommand::Revoke { dir, certs } => revoke(&dir, &certs),
        FederationCommand::Operator {
            command:
                OperatorCommand::Issue {
                    dir,
                    node,
                    name,
                    role,
                },
        } => issue_operator(&dir, &node, &name, &role),
    }
}

fn issue_operator(dir: &Path, node: &str, name: &str, role: &str) -> Result<ExitCode, Failure> {
    let node = NodeId::new(node).map_err(Failure::usage)?;
    let role = crate::identity::Role::parse(role).ok_or_else(|| {
        Failure::usage(anyhow::anyhow!(
            "--role must be analyst, supervisor or admin"
        ))
    })?;
    let (cert, key) = provision::issue_operator(dir, &node, name, role)?;
    println!("operator certificate for {name} ({role}) of {node}:");
    println!("  {}", cert.display());
    println!("  {}", key.display());
    println!("give both to {name}; in their copy of node.toml:");
    let section = if role == crate::identity::Role::Admin {
        "admin"
    } else {
        "operator"
    };
    println!("  [{section}]");
    println!("  cert = {:?}", cert.display().to_string());
    println!("  key = {:?}", key.display().to_string());
    Ok(ExitCode::SUCCESS)
}

fn init(a: FederationInitArgs) -> Result<ExitCode, Failure> {
    let specs = node_specs(&a.nodes, a.base_port)?;
    let fallback = a
        .fallback
        .map(|f| NodeId::new(&f))
        .transpose()
        .map_err(Failure::usage)?;
    let relays = relays(&a.relays).map_err(Failure::usage)?;
    let done = provision::init(
        &a.out,
        &a.federation,
        &specs,
        &provision::Options {
            fallback,
            delivery: None,
            audit: None,
            metrics_listen: None,
            limits: None,
            relays,
        },
    )?;
    println!("federation {} written to {}", a.federation, a.out.display());
    for c in &done.configs {
        println!("  alertrelay serve --config {}", c.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `--node ID=CC[,CC...]` arguments, with ports BASE, BASE+1, ... when
/// `--base-port` is given.
fn node_specs(nodes: &[String], base_port: Option<u16>) -> Result<Vec<NodeSpec>, Failure> {
    let mut specs = nodes
        .iter()
        .map(|n| NodeSpec::parse(n))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::usage)?;
    if let Some(base) = base_port {
        for (i, spec) in specs.iter_mut().enumerate() {
            let port = u16::try_from(i)
                .ok()
                .and_then(|i| base.checked_add(i))
                .ok_or_else(|| {
                    Failure::usage(anyhow::anyhow!("--base-port {base} leaves no room"))
                })?;
            spec.port = Some(port);
        }
    }
    Ok(specs)
}

/// `--relay NODE=RELAY` arguments.
fn relays(relays: &[String]) -> Result<Vec<(NodeId, NodeId)>, ProvisionError> {
    relays
        .iter()
        .map(|r| {
            let bad = || ProvisionError::BadRelaySpec(r.clone());
            let (node, via) = r.split_once('=').ok_or_else(bad)?;
            let id = |s: &str| NodeId::new(s).map_err(|_| bad());
            Ok((id(node)?, id(via)?))
        })
        .collect()
}

fn revoke(dir: &Path, certs: &[PathBuf]) -> Result<ExitCode, Failure> {
    let refs: Vec<&Path> = certs.iter().map(PathBuf::as_path).collect();
    let n = provision::revoke(dir, &refs)?;
    println!(
        "{} written: {n} certificate(s) revoked; send SIGHUP to each node or run `alertrelay reload`",
        dir.join("crl.pem").display()
    );
    Ok(ExitCode::SUCCESS)
}
