//! `alertrelay submit` (a report to your node, retried safely) and
//! `alertrelay route` (where a report would go, and why, without
//! submitting it).

use std::process::ExitCode;

use anyhow::anyhow;

use super::args::{RouteArgs, SubmitArgs};
use super::client::{connect, parse_hashes, rpc};
use super::print::{self, emit};
use super::{Failure, load_config};
use crate::api::convert::{case_from_pb, route_view_from_pb};
use crate::pb;
use crate::pb::operator_client::OperatorClient;

pub(crate) async fn submit(a: SubmitArgs) -> Result<ExitCode, Failure> {
    let cfg = load_config(&a.config)?;
    let priority = match a.priority.as_str() {
        "urgent" => pb::Priority::Urgent,
        "bulk" => pb::Priority::Bulk,
        other => {
            return Err(Failure::usage(anyhow!(
                "--priority {other:?}: expected urgent or bulk"
            )));
        }
    };
    let hashes = parse_hashes(&a.hashes)?;
    let mut client = connect(&cfg).await?;
    let request = pb::SubmitReportRequest {
        urls: a.urls,
        category: a.category,
        hosting_ip: a.hosting_ip.unwrap_or_default(),
        priority: priority as i32,
        notes: a.notes,
        hashes,
        // One key per invocation: the retries below can never submit twice.
        submission_id: uuid::Uuid::new_v4().to_string(),
        classification: a.classification,
    };
    let resp = submit_with_retries(&mut client, request).await?;
    let route = resp.route.as_ref().map(route_view_from_pb);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "id": resp.report_id,
                "route": route,
                "case": resp.case.map(case_from_pb),
            }))?
        );
    } else {
        println!("report {} accepted and stored", resp.report_id);
        if let Some(r) = &route {
            print::route(r);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends `request`, again while the node is unavailable (up to four
/// attempts).
async fn submit_with_retries(
    client: &mut OperatorClient<tonic::transport::Channel>,
    request: pb::SubmitReportRequest,
) -> Result<pb::SubmitReportResponse, Failure> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match client.submit_report(request.clone()).await {
            Ok(r) => return Ok(r.into_inner()),
            // The node was unreachable or restarting: the same key makes a
            // retry safe whether or not the first attempt was stored.
            Err(s) if attempt < 4 && s.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(std::time::Duration::from_millis(500 * attempt)).await;
            }
            Err(s) => return Err(rpc(s)),
        }
    }
}

pub(crate) async fn route(a: RouteArgs) -> Result<ExitCode, Failure> {
    let cfg = load_config(&a.config)?;
    let mut client = connect(&cfg).await?;
    let r = client
        .route(pb::RouteRequest {
            urls: a.urls,
            hosting_ip: a.hosting_ip.unwrap_or_default(),
            category: a.category,
            classification: a.classification,
        })
        .await
        .map_err(rpc)?
        .into_inner();
    let view = route_view_from_pb(&r);
    emit(&view, a.json, print::route)
}
