//! `alertrelay demo`: a local federation of four hotlines and a
//! law-enforcement fallback on loopback, with freshly minted certificates,
//! walking three reports through it and verifying every audit log.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{Failure, client, print};
use crate::api::convert::{case_from_pb, route_view_from_pb};
use crate::config::{NodeConfig, RawDelivery};
use crate::identity::NodeId;
use crate::node::cases::CaseView;
use crate::pb;
use crate::provision::{self, NodeSpec};

const NODES: [(&str, &[&str]); 5] = [
    ("FR-PDC", &["FR"]),
    ("DE-ECO", &["DE", "AT"]),
    ("NL-EOKM", &["NL"]),
    ("GB-IWF", &["GB"]),
    ("LE-FALLBACK", &[]),
];

pub(crate) async fn run(keep: Option<PathBuf>) -> Result<ExitCode, Failure> {
    let started = Instant::now();
    let tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let dir = keep.unwrap_or_else(|| tmp.path().to_path_buf());
    // The demo's own DNS server on loopback: the nodes resolve reported
    // host names there, and nothing leaves the machine.
    let zone = crate::runtime::zone::ZoneServer::start(demo_zone())
        .await
        .context("cannot start the demo's DNS server on loopback")?;
    println!("== the demo's own DNS server answers on {}", zone.addr());
    let (paths, listeners) = provision_federation(&dir, zone.addr()).await?;
    print_federation(&dir);
    let mut configs = Vec::new();
    let mut nodes = Vec::new();
    for (path, listener) in paths.iter().zip(listeners) {
        let cfg = NodeConfig::load(path)?;
        configs.push(cfg.clone());
        nodes.push(crate::runtime::start_with_listener(cfg, listener).await?);
    }
    let result = match walk(&configs).await {
        Ok(()) => witnessing(&configs).await,
        Err(e) => Err(e),
    };
    for n in nodes {
        n.shutdown().await;
    }
    result?;
    verify_audit_logs(&configs).await?;
    println!(
        "\ndemo finished in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes the federation into `dir`: the paths of the nodes' configs, and
/// their loopback listeners, bound first so the directory names real, free
/// ports.
/// The demo's zone: a gallery host behind a CNAME, hosted in Germany.
fn demo_zone() -> crate::runtime::zone::Zone {
    crate::runtime::zone::Zone::new()
        .cname("gallery.example.de", "edge.hosting.example.de", 300)
        .addr(
            "edge.hosting.example.de",
            std::net::IpAddr::from([85, 214, 132, 117]),
            300,
        )
}

async fn provision_federation(
    dir: &Path,
    dns: std::net::SocketAddr,
) -> anyhow::Result<(Vec<PathBuf>, Vec<tokio::net::TcpListener>)> {
    let mut listeners = Vec::new();
    let mut specs = Vec::new();
    for (id, countries) in NODES {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        specs.push(NodeSpec {
            id: NodeId::new(id)?,
            countries: countries.iter().map(|c| (*c).to_owned()).collect(),
            categories: Vec::new(),
            port: Some(l.local_addr()?.port()),
        });
        listeners.push(l);
    }
    let done = provision::init(
        dir,
        "alertrelay-demo",
        &specs,
        &provision::Options {
            fallback: Some(NodeId::new("LE-FALLBACK")?),
            delivery: Some(RawDelivery {
                retry_initial_ms: 100,
                retry_max_ms: 2_000,
                ..RawDelivery::default()
            }),
            // Frequent checkpoints and witnessing, so the demo shows them.
            audit: Some(crate::config::RawAudit {
                checkpoint_interval_ms: 200,
                witness_interval_ms: 100,
            }),
            metrics_listen: None,
            limits: None,
            relays: vec![],
            dns: crate::config::RawDns::resolvers(&[dns.to_string()]),
            ..Default::default()
        },
    )?;
    Ok((done.configs, listeners))
}

fn print_federation(dir: &Path) {
    println!(
        "== a federation of {} nodes in {}",
        NODES.len(),
        dir.display()
    );
    for (id, countries) in NODES {
        let serves = if countries.is_empty() {
            "fallback for countries without a hotline".to_owned()
        } else {
            format!("hotline for {}", countries.join(", "))
        };
        println!("   {id:<12} {serves}");
    }
}

/// Every node's audit log, recomputed from its database file.
async fn verify_audit_logs(configs: &[NodeConfig]) -> anyhow::Result<()> {
    println!("\n== every node's audit log, recomputed from its database file");
    for cfg in configs {
        let v = crate::audit::verify(
            &cfg.database,
            &crate::audit::VerifyContext::from_config(cfg),
        )
        .await
        .with_context(|| format!("audit log of {}", cfg.node_id))?;
        println!(
            "   {:<12} {} entries, {} checkpoints, {} cosignatures: verified (root {}…)",
            cfg.node_id,
            v.entries,
            v.checkpoints,
            v.cosignatures,
            v.root.get(..16).unwrap_or_default()
        );
    }
    Ok(())
}

type Client = pb::operator_client::OperatorClient<tonic::transport::Channel>;

/// FR-PDC's analyst submits three reports; DE-ECO works the one it
/// receives, and FR-PDC sees each change.
async fn walk(configs: &[NodeConfig]) -> anyhow::Result<()> {
    let (Some(fr), Some(de)) = (configs.first(), configs.get(1)) else {
        bail!("the demo federation has no FR-PDC and DE-ECO");
    };
    let mut fr_client = client::connect(fr).await.map_err(|f| f.error)?;
    let mut de_client = client::connect(de).await.map_err(|f| f.error)?;
    let ids = submit_reports(&mut fr_client).await?;
    let [abroad, no_hotline, home] = ids.as_slice() else {
        bail!("expected three reports, got {}", ids.len());
    };
    show_deliveries(&mut fr_client, &[abroad, no_hotline], home).await?;
    work_the_case(&mut de_client, &mut fr_client, abroad).await
}

/// The three reports: hosted abroad, in a country with no hotline, at
/// home. Returns their ids.
async fn submit_reports(fr_client: &mut Client) -> anyhow::Result<Vec<String>> {
    let reports = [
        (
            "naming a host that DNS puts in Germany (gallery.example.de, a CNAME to \
             85.214.132.117)",
            vec!["https://gallery.example.de/gallery/index.html".to_owned()],
            "",
            "csam",
        ),
        (
            "hosted in a country with no hotline (analyst traced 130.59.1.1, Switzerland)",
            vec!["https://files.example.ch/share/a1b2c3".to_owned()],
            "130.59.1.1",
            "child-exploitation",
        ),
        (
            "hosted at home (62.210.16.6 is in France)",
            vec!["http://62.210.16.6/forum/thread/42".to_owned()],
            "",
            "grooming",
        ),
    ];
    let mut ids = Vec::new();
    for (what, urls, ip, category) in reports {
        println!("\n== FR-PDC's analyst submits a report {what}");
        let resp = fr_client
            .submit_report(pb::SubmitReportRequest {
                urls,
                category: category.into(),
                hosting_ip: ip.into(),
                priority: pb::Priority::Bulk as i32,
                notes: "demo report".into(),
                hashes: vec![],
                submission_id: String::new(),
                classification: String::new(),
            })
            .await?
            .into_inner();
        println!("   report {} signed and stored by FR-PDC", resp.report_id);
        if let Some(r) = &resp.route {
            print::route(&route_view_from_pb(r));
        }
        ids.push(resp.report_id);
    }
    Ok(ids)
}

/// Waits for the `sent` reports' signed receipts, and shows the `local`
/// one kept here.
async fn show_deliveries(
    fr_client: &mut Client,
    sent: &[&String],
    local: &str,
) -> anyhow::Result<()> {
    println!("\n== delivery: each peer stores the report and signs a receipt");
    for id in sent {
        let case = wait_for(fr_client, id, |c| {
            c.deliveries.iter().all(|d| d.state == "delivered")
        })
        .await?;
        for d in &case.deliveries {
            println!(
                "   {id} -> {}: {} (signed receipt stored at {})",
                d.destination,
                d.state,
                d.delivered_at.as_deref().unwrap_or("?")
            );
        }
    }
    let local = wait_for(fr_client, local, |_| true).await?;
    println!(
        "   {} stays at FR-PDC as a local case: {}",
        local.id, local.status
    );
    Ok(())
}

/// DE-ECO takes report `id` through review to removal; FR-PDC sees the
/// signed history.
async fn work_the_case(
    de_client: &mut Client,
    fr_client: &mut Client,
    id: &str,
) -> anyhow::Result<()> {
    println!("\n== DE-ECO works the case; each change flows back to FR-PDC, signed");
    for (status, reason) in [
        ("in-review", "analyst assigned"),
        ("illegal-baseline", "INTERPOL baseline material"),
        ("notice-sent", "notice to the hosting provider"),
        ("removed", "content no longer online"),
    ] {
        de_client
            .update_case(pb::UpdateCaseRequest {
                id: id.to_owned(),
                status: status.into(),
                reason: reason.into(),
                agency: String::new(),
                reference: String::new(),
                referred_at_ms: 0,
                propose: false,
                reject_proposal: false,
            })
            .await?;
        println!("   DE-ECO: {status} ({reason})");
    }
    let case = wait_for(fr_client, id, |c| c.status == "removed").await?;
    println!("   FR-PDC now sees report {} as {}:", case.id, case.status);
    for h in &case.history {
        println!(
            "     {} {:<18} signed by {}",
            h.at,
            h.status,
            if h.signer.is_empty() { "-" } else { &h.signer }
        );
    }
    Ok(())
}

/// Every node signs a checkpoint of its audit log; its peers check it is
/// consistent with what they saw before and cosign it.
async fn witnessing(configs: &[NodeConfig]) -> anyhow::Result<()> {
    println!("\n== audit logs: each node signs a checkpoint, its peers check and cosign it");
    let peers = configs.len() - 1;
    for cfg in configs {
        let mut client = client::connect_admin(cfg).await.map_err(|f| f.error)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let note = loop {
            let text = client
                .make_checkpoint(pb::MakeCheckpointRequest {})
                .await?
                .into_inner()
                .note;
            let note = crate::audit::note::SignedNote::parse(&text)?;
            if note.signatures.len() > peers {
                break note;
            }
            if Instant::now() > deadline {
                bail!(
                    "{}'s checkpoint was not cosigned by every peer",
                    cfg.node_id
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let cp = crate::audit::note::Checkpoint::parse_body(&note.text)?;
        let witnesses: Vec<&str> = note
            .signatures
            .iter()
            .filter(|s| s.name.ends_with("/witness"))
            .filter_map(|s| s.name.split('/').nth(2))
            .collect();
        println!(
            "   {:<12} checkpoint of {} entries, root {}…, cosigned by {}",
            cfg.node_id,
            cp.size,
            hex::encode(cp.root).get(..16).unwrap_or_default(),
            witnesses.join(", ")
        );
    }
    Ok(())
}

async fn wait_for(
    client: &mut Client,
    id: &str,
    done: impl Fn(&CaseView) -> bool,
) -> anyhow::Result<CaseView> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let case = case_from_pb(
            client
                .get_case(pb::GetCaseRequest { id: id.into() })
                .await?
                .into_inner(),
        );
        if done(&case) {
            return Ok(case);
        }
        if Instant::now() > deadline {
            bail!(
                "report {id} did not reach the expected state: {}",
                case.status
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
