//! `alertrelay users add|list|disable|reset|unlock`: the console's
//! personal accounts, managed through the node (an admin call, audited
//! under the admin's certificate).

use std::path::PathBuf;
use std::process::ExitCode;

use super::args::UsersCommand;
use super::client::{connect_admin, rpc};
use super::print::{clean, emit};
use super::{Failure, load_config};
use crate::config::NodeConfig;
use crate::pb;

pub(crate) async fn run(command: UsersCommand) -> Result<ExitCode, Failure> {
    match command {
        UsersCommand::Add {
            name,
            role,
            config,
            json,
        } => enrolment(config, "add", name, role, json).await,
        UsersCommand::Reset { name, config, json } => {
            enrolment(config, "reset", name, String::new(), json).await
        }
        UsersCommand::List { config, json } => list(config, json).await,
        UsersCommand::Disable { name, config } => change(config, "disable", name).await,
        UsersCommand::Unlock { name, config } => change(config, "unlock", name).await,
    }
}

async fn call(
    cfg: &NodeConfig,
    action: &str,
    name: String,
    role: String,
) -> Result<pb::ManageUsersResponse, Failure> {
    let mut client = connect_admin(cfg).await?;
    client
        .manage_users(pb::ManageUsersRequest {
            action: action.to_owned(),
            name,
            role,
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(rpc)
}

/// The console's enrolment page for a code, when the console is on.
fn enrol_link(cfg: &NodeConfig, code: &str) -> Option<String> {
    cfg.console
        .as_ref()
        .map(|c| format!("https://{}/enrol?code={code}", c.listen))
}

async fn enrolment(
    config: PathBuf,
    action: &str,
    name: String,
    role: String,
    json: bool,
) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let r = call(&cfg, action, name.clone(), role).await?;
    let expires = crate::node::cases::rfc3339(r.enrol_expires_ms);
    let link = enrol_link(&cfg, &r.enrolment_code);
    let out = serde_json::json!({
        "name": name,
        "enrolment_code": r.enrolment_code,
        "expires": expires,
        "link": link,
    });
    emit(&out, json, |_| {
        println!("enrolment code for {name}: {}", r.enrolment_code);
        println!("valid until {expires}, once; give it to {name} by a separate channel");
        match &link {
            Some(l) => println!("console: {l}"),
            None => println!("(the console is off: set [console] listen in node.toml)"),
        }
    })
}

fn user_json(u: &pb::User) -> serde_json::Value {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    serde_json::json!({
        "name": u.name,
        "role": u.role,
        "state": u.state,
        "failures": u.failures,
        "locked_until": opt(&u.locked_until),
        "created_at": u.created_at,
        "created_by": u.created_by,
        "last_login": opt(&u.last_login),
        "enrol_expires": opt(&u.enrol_expires),
    })
}

async fn list(config: PathBuf, json: bool) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let r = call(&cfg, "list", String::new(), String::new()).await?;
    let out: Vec<_> = r.users.iter().map(user_json).collect();
    emit(&out, json, |_| {
        println!(
            "{:<24} {:<10} {:<9} {:>8}  {:<20}  last login",
            "NAME", "ROLE", "STATE", "FAILURES", "LOCKED UNTIL"
        );
        for u in &r.users {
            println!(
                "{:<24} {:<10} {:<9} {:>8}  {:<20}  {}",
                clean(&u.name),
                u.role,
                u.state,
                u.failures,
                if u.locked_until.is_empty() {
                    "-"
                } else {
                    &u.locked_until
                },
                if u.last_login.is_empty() {
                    "never"
                } else {
                    &u.last_login
                },
            );
        }
    })
}

async fn change(config: PathBuf, action: &str, name: String) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let r = call(&cfg, action, name.clone(), String::new()).await?;
    let state = r.users.first().map(|u| u.state.as_str()).unwrap_or("");
    match action {
        "disable" => println!("{name} is disabled ({state})"),
        _ => println!("{name} is unlocked ({state})"),
    }
    Ok(ExitCode::SUCCESS)
}
