//! `alertrelay federation init` (a federation's CA, certificates, keys and
//! configs, from `--node ID=CC,...`) and `alertrelay federation revoke`
//! (re-issue the CRL and copy it to every node folder). The work is in
//! `crate::provision`; this file turns the arguments into its inputs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::Failure;
use super::args::{FederationCommand, FederationInitArgs, OperatorCommand, PublishArgs};
use crate::identity::NodeId;
use crate::provision::secretariat::{self, Publish, Published};
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
        FederationCommand::Publish { publish, install } => {
            let done = secretariat::publish(&publish.dir, &how(&publish)).map_err(failed)?;
            if let Some(path) = install {
                std::fs::copy(&done.path, &path)
                    .map_err(|e| anyhow::anyhow!("cannot install to {}: {e}", path.display()))?;
                println!("installed to {}", path.display());
            }
            published("published", &done)
        }
        other => lifecycle(other),
    }
}

/// The secretariat's one-step commands: each edits its folder and
/// publishes a version.
fn lifecycle(command: FederationCommand) -> Result<ExitCode, Failure> {
    match command {
        FederationCommand::Init(_)
        | FederationCommand::Revoke { .. }
        | FederationCommand::Operator { .. }
        | FederationCommand::Publish { .. } => run(command),
        FederationCommand::Join {
            publish,
            node,
            endpoint,
            port,
        } => {
            let mut spec = NodeSpec::parse(&node).map_err(Failure::usage)?;
            spec.port = port;
            let done = secretariat::join(
                &publish.dir,
                &spec,
                endpoint,
                &Default::default(),
                &how(&publish),
            )
            .map_err(failed)?;
            println!(
                "{} joined: its files are in {}",
                spec.id,
                publish.dir.join(spec.id.as_str()).display()
            );
            published("published", &done)
        }
        FederationCommand::Leave { publish, node } => {
            let done = secretariat::leave(&publish.dir, &node_id(&node)?, &how(&publish))
                .map_err(failed)?;
            published(
                &format!("{node} removed and its certificate revoked;"),
                &done,
            )
        }
        FederationCommand::Suspend { publish, node } => {
            let done =
                secretariat::set_active(&publish.dir, &node_id(&node)?, false, &how(&publish))
                    .map_err(failed)?;
            published(&format!("{node} suspended;"), &done)
        }
        FederationCommand::Reinstate { publish, node } => {
            let done =
                secretariat::set_active(&publish.dir, &node_id(&node)?, true, &how(&publish))
                    .map_err(failed)?;
            published(&format!("{node} reinstated;"), &done)
        }
        FederationCommand::RotateKey {
            publish,
            node,
            public_key,
            overlap_days,
        } => {
            let (done, key_id) = secretariat::rotate_key(
                &publish.dir,
                &node_id(&node)?,
                public_key.as_deref(),
                time::Duration::days(i64::from(overlap_days)),
                &how(&publish),
            )
            .map_err(failed)?;
            published(
                &format!(
                    "{node}: new signing key {key_id}, old keys valid {overlap_days} more days;"
                ),
                &done,
            )
        }
        FederationCommand::RotateDirectoryKey { publish } => {
            let (done, key_id) =
                secretariat::rotate_directory_key(&publish.dir, &how(&publish)).map_err(failed)?;
            published(
                &format!(
                    "new directory key {key_id} (DIR/directory.key), signed by the old keys too; \
                     the old key file is kept as directory.key.retired-*: destroy it once every node \
                     has the new version;"
                ),
                &done,
            )
        }
        FederationCommand::RotateTls { publish, node } => {
            let done = secretariat::rotate_tls(&publish.dir, &node_id(&node)?, &how(&publish))
                .map_err(failed)?;
            published(
                &format!("{node}: new TLS certificate, the old one revoked;"),
                &done,
            )
        }
    }
}

/// A node that is not in the directory, or already is, or a malformed
/// `--node`: a usage error (64); anything else fails the operation (1).
fn failed(e: ProvisionError) -> Failure {
    match e {
        ProvisionError::UnknownNode(_)
        | ProvisionError::Duplicate(_)
        | ProvisionError::BadNodeSpec(_)
        | ProvisionError::Key(
            crate::crypto::signing::KeyError::PublicKeyFormat(_)
            | crate::crypto::signing::KeyError::WeakKey(_),
        ) => Failure::usage(e),
        other => other.into(),
    }
}

fn how(a: &PublishArgs) -> Publish {
    Publish {
        keys: a.keys.clone(),
        valid_for: time::Duration::days(i64::from(a.valid_days)),
    }
}

fn node_id(node: &str) -> Result<NodeId, Failure> {
    NodeId::new(node).map_err(Failure::usage)
}

fn published(what: &str, done: &Published) -> Result<ExitCode, Failure> {
    println!(
        "{what} directory serial {} written to {} (expires {}); the nodes spread it within one exchange interval",
        done.serial,
        done.path.display(),
        crate::directory::signed::rfc3339(done.expires_at_ms)
    );
    Ok(ExitCode::SUCCESS)
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
            signed_directory: !a.plain_directory,
            exchange: None,
            // A new node resolves reported host names with the machine's
            // resolvers (docs/configuration.md: the modes and their privacy).
            dns: crate::config::RawDns::system(),
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
