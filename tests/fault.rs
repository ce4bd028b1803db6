//! Fault injection: real node processes (the built `alertrelay` binary) on
//! loopback, killed with SIGKILL at random moments under load and at named
//! crash points (`src/faults.rs`), behind a proxy that loses replies or
//! partitions the link; then every report is checked: delivered exactly
//! once, the receiver's original receipt stored at the origin, audit logs
//! complete and verifying (`common::check::check_delivery`).
//!
//! ```sh
//! cargo test --test fault                            # CI part, ~30 s
//! cargo test --test fault -- --nocapture             # ... printing the FAULT FIGURES lines
//! cargo test --test fault random_kills_long -- --ignored --nocapture
//!                                # the long run: 3 nodes, 8000 reports, 200 kills, 100 link faults
//! ALERTRELAY_FAULT_SEED=42 cargo test --test fault random -- --nocapture   # another seed
//! ```
//!
//! The CI part: one test per crash point, lost replies, a partition, and a
//! short random run (2 nodes, 300 reports, 20 kills, 8 link faults).
//!
//! The seed (default `DEFAULT_SEED`, printed with the figures) fixes the
//! random runs' schedule: which node gets each submit and for which
//! country, when each kill happens (after how many submits, plus a jitter),
//! how long the node stays down, which crash point it is restarted with,
//! and when which link loses replies or is cut, for how long. The
//! processes' own timing still varies from run to run; the invariants must
//! hold for any.

mod common;

use std::time::{Duration, Instant};

use alertrelay::config::RawDelivery;
use common::check::{Accepted, Figures, check_delivery};
use common::proxy::{Mode, Proxy};
use common::{DE_IP, FR_IP, Federation, NL_IP, process_delivery, submit_numbered};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DEFAULT_SEED: u64 = 0x00a1_e7e1_a7f0;
const FR: usize = 0;
const DE: usize = 1;
const SETTLE: Duration = Duration::from_secs(30);
const DIES_WITHIN: Duration = Duration::from_secs(15);

/// FR-PDC and DE-ECO as node processes, not started.
fn two_nodes() -> common::Builder<'static> {
    Federation::builder(&[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])]).processes()
}

/// Delivery with a 10 s request timeout: a slow answer (a loaded machine,
/// a receiver just restarted) is waited for, not sent again, so a repeat
/// at the receiver can only come from what a crash left behind.
fn patient() -> RawDelivery {
    RawDelivery {
        request_timeout_ms: 10_000,
        ..process_delivery()
    }
}

/// Delivery with a 1 s request timeout: a lost reply is retried soon.
fn short_timeout() -> RawDelivery {
    RawDelivery {
        request_timeout_ms: 1_000,
        ..process_delivery()
    }
}

fn delivered(c: &alertrelay::pb::Case) -> bool {
    c.deliveries.len() == 1 && c.deliveries[0].state == "delivered"
}

/// At least one delivery attempt failed (and was recorded).
fn attempted(c: &alertrelay::pb::Case) -> bool {
    c.deliveries.first().is_some_and(|d| d.attempts >= 1)
}

/// Settles, checks every invariant, prints the figures, and fails on any
/// violation.
async fn finish(
    c: &Federation,
    accepted: &[Accepted],
    mut figures: Figures,
    started: Instant,
) -> Figures {
    c.wait_settled(SETTLE).await;
    let violations = check_delivery(c, accepted, &mut figures).await;
    figures.elapsed = started.elapsed();
    println!("{figures}");
    assert!(
        violations.is_empty(),
        "{} violation(s):\n{}",
        violations.len(),
        violations.join("\n")
    );
    assert_eq!(figures.lost, 0);
    assert_eq!(figures.duplicated, 0);
    figures
}

/// How many entries of `kind` node `i`'s audit log holds (read from the
/// database file: the node may be down).
async fn audit_count(c: &Federation, i: usize, kind: &str) -> usize {
    c.audit_export(i)
        .await
        .iter()
        .filter(|e| e.kind == kind)
        .count()
}

/// Submits to `origin` until a submit fails (the node died); returns the
/// accepted reports. At most `max` submits.
async fn submit_until_failure(
    c: &Federation,
    origin: usize,
    ip: &str,
    max: u64,
    figures: &mut Figures,
) -> Vec<Accepted> {
    let mut accepted = Vec::new();
    for n in 0..max {
        figures.submits += 1;
        match c.submit(origin, ip, n).await {
            Ok(id) => accepted.push(Accepted { origin, id }),
            Err(_) => {
                figures.failed_submits += 1;
                break;
            }
        }
    }
    accepted
}

// ---- named crash points ----

/// The origin dies just before committing a submitted report: the analyst
/// gets an error, and the report exists nowhere, not at the destination
/// either; the ones acknowledged before are delivered once.
#[tokio::test]
async fn crash_at_intake_before_commit() {
    let started = Instant::now();
    let mut figures = Figures {
        test: "intake-before-commit",
        ..Figures::default()
    };
    let mut c = two_nodes().create().await;
    c.start_together(&[(DE, None), (FR, Some("intake-before-commit:3"))])
        .await;

    let accepted = submit_until_failure(&c, FR, DE_IP, 10, &mut figures).await;
    assert_eq!(accepted.len(), 2, "the third submit must fail");
    let status = c.wait_exit(FR, DIES_WITHIN).await;
    c.assert_crashed_at(FR, status, "intake-before-commit");
    *figures
        .crashes
        .entry("intake-before-commit".into())
        .or_default() += 1;
    assert_eq!(audit_count(&c, FR, "report.submitted").await, 2);

    c.restart(FR).await;
    let figures = finish(&c, &accepted, figures, started).await;
    // The refused submit left nothing behind: FR holds exactly the two it
    // acknowledged (and check_delivery found nothing else at DE).
    assert_eq!(figures.stored_unacknowledged, 0);
    assert_eq!(c.cases(FR, "outgoing").await.unwrap().len(), 2);
    assert_eq!(c.cases(DE, "incoming").await.unwrap().len(), 2);
}

/// The origin dies after committing a report, just before sending it:
/// nothing reached the destination; after the restart it is delivered once
/// (acknowledged to the analyst or not).
#[tokio::test]
async fn crash_at_origin_after_commit_before_send() {
    let started = Instant::now();
    let mut figures = Figures {
        test: "origin-after-commit-before-send",
        ..Figures::default()
    };
    let mut c = two_nodes().delivery(patient()).create().await;
    c.start_together(&[(DE, None), (FR, Some("origin-after-commit-before-send"))])
        .await;

    // The worker may abort the node before the submit's answer is out.
    let accepted = submit_until_failure(&c, FR, DE_IP, 1, &mut figures).await;
    let status = c.wait_exit(FR, DIES_WITHIN).await;
    c.assert_crashed_at(FR, status, "origin-after-commit-before-send");
    *figures
        .crashes
        .entry("origin-after-commit-before-send".into())
        .or_default() += 1;
    assert!(
        c.cases(DE, "incoming").await.unwrap().is_empty(),
        "nothing was sent before the crash"
    );
    assert_eq!(
        audit_count(&c, FR, "report.submitted").await,
        1,
        "committed"
    );

    c.restart(FR).await;
    let figures = finish(&c, &accepted, figures, started).await;
    assert_eq!(figures.delivered, 1, "the committed report is delivered");
    assert_eq!(figures.retransmissions, 0);
}

/// The receiver dies after committing a batch, before its reply: the
/// origin's retry gets the original receipt, and the receiver holds the
/// report once.
#[tokio::test]
async fn crash_at_receiver_after_commit_before_reply() {
    let started = Instant::now();
    let mut figures = Figures {
        test: "receiver-after-commit-before-reply",
        ..Figures::default()
    };
    let mut c = two_nodes().create().await;
    c.start_together(&[(DE, Some("receiver-after-commit-before-reply")), (FR, None)])
        .await;

    let id = c.submit(FR, DE_IP, 0).await.expect("submit");
    figures.submits += 1;
    let status = c.wait_exit(DE, DIES_WITHIN).await;
    c.assert_crashed_at(DE, status, "receiver-after-commit-before-reply");
    *figures
        .crashes
        .entry("receiver-after-commit-before-reply".into())
        .or_default() += 1;
    assert_eq!(
        audit_count(&c, DE, "report.received").await,
        1,
        "DE-ECO committed before it died"
    );
    // The origin got no receipt: still queued, with a failed attempt.
    let case = c.wait_case(FR, &id, DIES_WITHIN, attempted).await;
    assert_eq!(case.deliveries[0].state, "queued");

    c.restart(DE).await;
    let accepted = [Accepted { origin: FR, id }];
    let figures = finish(&c, &accepted, figures, started).await;
    assert!(
        figures.retransmissions >= 1,
        "the retry reached DE-ECO as a repeat"
    );
}

/// The origin dies after the receiver answered, before storing the
/// receipt: after the restart it sends again and stores the receipt the
/// receiver issued the first time.
#[tokio::test]
async fn crash_at_origin_storing_receipt() {
    let started = Instant::now();
    let mut figures = Figures {
        test: "origin-storing-receipt",
        ..Figures::default()
    };
    let mut c = two_nodes().create().await;
    c.start_together(&[(DE, None), (FR, Some("origin-storing-receipt"))])
        .await;

    let accepted = submit_until_failure(&c, FR, DE_IP, 1, &mut figures).await;
    let status = c.wait_exit(FR, DIES_WITHIN).await;
    c.assert_crashed_at(FR, status, "origin-storing-receipt");
    *figures
        .crashes
        .entry("origin-storing-receipt".into())
        .or_default() += 1;
    assert_eq!(
        c.cases(DE, "incoming").await.unwrap().len(),
        1,
        "DE-ECO stored the report before the origin died"
    );
    assert_eq!(
        audit_count(&c, FR, "delivery.receipt").await,
        0,
        "the receipt's transaction died uncommitted"
    );

    c.restart(FR).await;
    let figures = finish(&c, &accepted, figures, started).await;
    assert_eq!(figures.delivered, 1);
    assert!(figures.retransmissions >= 1, "the resend was a repeat");
}

/// The receiver dies while appending the audit entry of a received report
/// (inside the batch's transaction): nothing of it survives, so the retry
/// stores it afresh, once, with one audit entry.
#[tokio::test]
async fn crash_at_audit_append_on_the_receiver() {
    let started = Instant::now();
    let mut figures = Figures {
        test: "audit-append (receiver)",
        ..Figures::default()
    };
    let mut c = two_nodes().delivery(patient()).create().await;
    // Entry 1 is `node.started`; entry 2 is the first `report.received`.
    c.start_together(&[(DE, Some("audit-append:2")), (FR, None)])
        .await;

    let id = c.submit(FR, DE_IP, 0).await.expect("submit");
    figures.submits += 1;
    let status = c.wait_exit(DE, DIES_WITHIN).await;
    c.assert_crashed_at(DE, status, "audit-append");
    *figures.crashes.entry("audit-append".into()).or_default() += 1;
    assert_eq!(
        audit_count(&c, DE, "report.received").await,
        0,
        "the batch's transaction died uncommitted"
    );

    c.restart(DE).await;
    let accepted = [Accepted { origin: FR, id }];
    let figures = finish(&c, &accepted, figures, started).await;
    assert_eq!(
        figures.retransmissions, 0,
        "the crashed transaction left nothing, so the retry is no repeat"
    );
}

/// The origin dies while appending a submitted report's audit entry: the
/// submit fails and the report exists nowhere; the node then works on.
#[tokio::test]
async fn crash_at_audit_append_on_the_origin() {
    let started = Instant::now();
    let mut figures = Figures {
        test: "audit-append (origin)",
        ..Figures::default()
    };
    let mut c = two_nodes().create().await;
    // Entry 1 is `node.started`; entry 2 is the first `report.submitted`.
    c.start_together(&[(DE, None), (FR, Some("audit-append:2"))])
        .await;

    let mut accepted = submit_until_failure(&c, FR, DE_IP, 1, &mut figures).await;
    assert!(accepted.is_empty(), "the submit must fail");
    let status = c.wait_exit(FR, DIES_WITHIN).await;
    c.assert_crashed_at(FR, status, "audit-append");
    *figures.crashes.entry("audit-append".into()).or_default() += 1;

    c.restart(FR).await;
    assert!(c.cases(FR, "outgoing").await.unwrap().is_empty());
    let id = c.submit(FR, DE_IP, 1).await.expect("submit after restart");
    figures.submits += 1;
    accepted.push(Accepted { origin: FR, id });
    let figures = finish(&c, &accepted, figures, started).await;
    assert_eq!(figures.stored_unacknowledged, 0);
    assert_eq!(c.cases(DE, "incoming").await.unwrap().len(), 1);
}

// ---- lost replies and partitions ----

/// A two-node federation where FR-PDC reaches DE-ECO through `proxy`, with
/// one report already delivered through it (so the link is established).
async fn behind_proxy(figures: &mut Figures) -> (Federation, Proxy, Vec<Accepted>) {
    let mut c = two_nodes().delivery(short_timeout()).create().await;
    let proxy = Proxy::start(c.listen(DE)).await;
    c.route_peer_via(FR, DE, proxy.addr);
    c.start_all().await;
    let warm = c.submit(FR, DE_IP, 0).await.expect("submit");
    figures.submits += 1;
    c.wait_case(FR, &warm, SETTLE, delivered).await;
    assert!(
        proxy.connections() >= 1,
        "FR-PDC reaches DE-ECO through the proxy"
    );
    (
        c,
        proxy,
        vec![Accepted {
            origin: FR,
            id: warm,
        }],
    )
}

/// A reply lost after the receiver committed: the origin times out and
/// retries; the retry gets the original receipt, not a second case.
#[tokio::test]
async fn lost_replies_are_retried_and_get_the_original_receipt() {
    let started = Instant::now();
    let mut figures = Figures {
        test: "lost replies",
        ..Figures::default()
    };
    let (c, proxy, mut accepted) = behind_proxy(&mut figures).await;

    proxy.set_mode(Mode::DropReplies);
    figures.link_faults += 1;
    let id = c.submit(FR, DE_IP, 1).await.expect("submit");
    figures.submits += 1;
    c.wait_case(DE, &id, SETTLE, |_| true).await;
    let case = c.wait_case(FR, &id, SETTLE, attempted).await;
    assert_eq!(
        case.deliveries[0].state, "queued",
        "DE-ECO stored it but its receipt never arrived"
    );
    assert!(proxy.dropped_reply_bytes() > 0);

    proxy.set_mode(Mode::Pass);
    c.wait_case(FR, &id, SETTLE, delivered).await;
    accepted.push(Accepted {
        origin: FR,
        id: id.clone(),
    });
    let figures = finish(&c, &accepted, figures, started).await;
    let repeats = c
        .audit_export(DE)
        .await
        .iter()
        .filter(|e| e.kind == "report.repeat" && e.subject == format!("FR-PDC/{id}"))
        .count();
    assert!(
        repeats >= 1,
        "the retry reached DE-ECO and was answered as a repeat"
    );
    assert!(figures.retransmissions >= 1);
}

/// A partition: nothing gets through for a while; reports queue at the
/// origin and, once healed, arrive once each. Nothing reached the receiver
/// during the partition, so there is nothing to repeat.
#[tokio::test]
async fn partition_heals_without_loss_or_duplicates() {
    let started = Instant::now();
    let mut figures = Figures {
        test: "partition",
        ..Figures::default()
    };
    let (c, proxy, mut accepted) = behind_proxy(&mut figures).await;

    proxy.set_mode(Mode::Partition);
    figures.link_faults += 1;
    let mut ids = Vec::new();
    for n in 1..=4 {
        ids.push(c.submit(FR, DE_IP, n).await.expect("submit"));
        figures.submits += 1;
    }
    for id in &ids {
        let case = c.wait_case(FR, id, SETTLE, attempted).await;
        assert_eq!(case.deliveries[0].state, "queued");
    }
    assert_eq!(
        c.cases(DE, "incoming").await.unwrap().len(),
        1,
        "only the warm-up"
    );
    assert!(proxy.dropped_request_bytes() > 0);

    proxy.set_mode(Mode::Pass);
    accepted.extend(ids.into_iter().map(|id| Accepted { origin: FR, id }));
    let figures = finish(&c, &accepted, figures, started).await;
    assert_eq!(figures.delivered, 5);
    assert_eq!(figures.retransmissions, 0);
}

/// A connection that dies silently (a NAT or firewall on the path forgets
/// it, e.g. after an idle timeout: no RST, no FIN, every packet dropped
/// from then on): the origin must give up on it and connect again, not
/// retry over it until the kernel's TCP retransmissions give up (~15 min).
/// Peer channels send HTTP/2 keep-alive pings; an unanswered one closes
/// the connection (without them, every retry went into the same black hole:
/// "Cancelled: Timeout expired", attempt after attempt).
#[tokio::test]
async fn a_silently_dead_connection_is_replaced() {
    let started = Instant::now();
    let mut figures = Figures {
        test: "silently dead connection",
        ..Figures::default()
    };
    let (c, proxy, mut accepted) = behind_proxy(&mut figures).await;
    let connections = proxy.connections();

    proxy.strand_open_connections();
    figures.link_faults += 1;
    let id = c.submit(FR, DE_IP, 1).await.expect("submit");
    figures.submits += 1;
    c.wait_case(FR, &id, Duration::from_secs(60), delivered)
        .await;
    assert!(proxy.connections() > connections, "FR-PDC connected again");
    accepted.push(Accepted { origin: FR, id });
    finish(&c, &accepted, figures, started).await;
}

// ---- random kills under load ----

struct Chaos {
    test: &'static str,
    nodes: &'static [(&'static str, &'static [&'static str])],
    /// The IP hosted in each node's country, in `nodes` order.
    ips: &'static [&'static str],
    reports: u64,
    /// SIGKILLs of a running node, at least (the run asserts them all).
    kills: u32,
    /// Pause between submits.
    pace: Duration,
    max_down: Duration,
    /// Chance that a killed node is restarted armed with a crash point.
    arm_probability: f64,
    /// Windows in which one link (every node reaches every peer through
    /// its own proxy) loses its replies or is partitioned.
    link_faults: usize,
    max_link_fault: Duration,
}

#[derive(Debug)]
struct Kill {
    /// After this many submits...
    after: u64,
    /// ...and this much more.
    jitter: Duration,
    node: usize,
    down: Duration,
    /// Restarted armed with this crash point (`NAME:N`).
    arm: Option<String>,
}

#[derive(Debug)]
struct LinkFault {
    /// After this many submits...
    after: u64,
    /// ...this link (an index into the proxies)...
    link: usize,
    /// ...loses replies or is cut...
    mode: Mode,
    /// ...for this long.
    lasts: Duration,
}

fn seed() -> u64 {
    match std::env::var("ALERTRELAY_FAULT_SEED") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("ALERTRELAY_FAULT_SEED={s:?} is not a u64")),
        Err(_) => DEFAULT_SEED,
    }
}

/// The seed's schedule: kills, then link faults over `links` links.
fn plan(chaos: &Chaos, links: usize, rng: &mut StdRng) -> (Vec<Kill>, Vec<LinkFault>) {
    let kills = plan_kills(chaos, rng);
    let mut faults: Vec<LinkFault> = (0..chaos.link_faults)
        .map(|_| LinkFault {
            after: rng.gen_range(chaos.reports / 10..chaos.reports * 9 / 10),
            link: rng.gen_range(0..links),
            mode: if rng.gen_bool(0.5) {
                Mode::DropReplies
            } else {
                Mode::Partition
            },
            lasts: Duration::from_millis(
                rng.gen_range(0..=chaos.max_link_fault.as_millis() as u64),
            ),
        })
        .collect();
    faults.sort_by_key(|f| f.after);
    (kills, faults)
}

fn plan_kills(chaos: &Chaos, rng: &mut StdRng) -> Vec<Kill> {
    const POINTS: &[(&str, u64)] = &[
        ("intake-before-commit", 5),
        ("origin-after-commit-before-send", 5),
        ("receiver-after-commit-before-reply", 5),
        ("origin-storing-receipt", 5),
        ("audit-append", 20),
    ];
    let mut afters: Vec<u64> = (0..chaos.kills)
        .map(|_| rng.gen_range(chaos.reports / 10..chaos.reports * 9 / 10))
        .collect();
    afters.sort_unstable();
    afters
        .into_iter()
        .map(|after| {
            let arm = rng.gen_bool(chaos.arm_probability).then(|| {
                let (name, max) = POINTS[rng.gen_range(0..POINTS.len())];
                // `audit-append:1` would be the restart's `node.started`.
                let min = if name == "audit-append" { 2 } else { 1 };
                format!("{name}:{}", rng.gen_range(min..=max))
            });
            Kill {
                after,
                jitter: Duration::from_millis(rng.gen_range(0..40)),
                node: rng.gen_range(0..chaos.nodes.len()),
                down: Duration::from_millis(rng.gen_range(0..=chaos.max_down.as_millis() as u64)),
                arm,
            }
        })
        .collect()
}

async fn run_chaos(chaos: Chaos) {
    let started = Instant::now();
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let n = chaos.nodes.len();
    let (kills, link_faults) = plan(&chaos, n * (n - 1), &mut rng);
    let mut figures = Figures {
        test: chaos.test,
        seed: Some(seed),
        ..Figures::default()
    };
    let mut c = Federation::builder(chaos.nodes)
        .processes()
        .delivery(short_timeout())
        .create()
        .await;
    // Every node reaches every peer through a proxy of its own.
    let mut links = Vec::new();
    for from in 0..n {
        for to in (0..n).filter(|&to| to != from) {
            let proxy = Proxy::start(c.listen(to)).await;
            c.route_peer_via(from, to, proxy.addr);
            links.push(proxy);
        }
    }
    let mut heal_at: Vec<Option<Instant>> = vec![None; links.len()];
    c.start_all().await;

    // The load: a steady stream of submits, each to a node chosen by the
    // seed, for content hosted at another node's country.
    let submitted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let load = {
        let clients: Vec<_> = (0..c.len()).map(|i| c.operator(i)).collect();
        let mut rng = StdRng::seed_from_u64(seed ^ 0x10ad);
        let submitted = submitted.clone();
        let (ips, reports, pace) = (chaos.ips, chaos.reports, chaos.pace);
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut failed = 0u64;
            for n in 0..reports {
                let origin = rng.gen_range(0..clients.len());
                let dest = (origin + rng.gen_range(1..clients.len())) % clients.len();
                match submit_numbered(clients[origin].clone(), ips[dest], n).await {
                    Ok(id) => accepted.push(Accepted { origin, id }),
                    Err(_) => failed += 1,
                }
                submitted.store(n + 1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(pace).await;
            }
            (accepted, failed)
        })
    };

    // The faults, while the load runs.
    let mut last_restart = Instant::now();
    let (mut next, mut next_link) = (0, 0);
    while !load.is_finished() || next < kills.len() || next_link < link_faults.len() {
        for i in 0..c.len() {
            if let Some(status) = c.try_exited(i) {
                record_crash(&c, i, status, &mut figures);
                c.restart(i).await;
                last_restart = Instant::now();
            }
        }
        let done = submitted.load(std::sync::atomic::Ordering::SeqCst);
        while let Some(f) = link_faults.get(next_link).filter(|f| done >= f.after) {
            next_link += 1;
            links[f.link].set_mode(f.mode);
            let until = Instant::now() + f.lasts;
            heal_at[f.link] = Some(heal_at[f.link].map_or(until, |h| h.max(until)));
            figures.link_faults += 1;
        }
        for (link, at) in heal_at.iter_mut().enumerate() {
            if at.is_some_and(|at| Instant::now() >= at) {
                links[link].set_mode(Mode::Pass);
                *at = None;
            }
        }
        let due = kills.get(next).is_some_and(|k| done >= k.after);
        if due {
            let k = &kills[next];
            next += 1;
            tokio::time::sleep(k.jitter).await;
            kill_running(&mut c, k.node, &mut figures).await;
            tokio::time::sleep(k.down).await;
            c.spawn(k.node, k.arm.as_deref());
            if let Err(status) = c.wait_ready(k.node).await {
                // Armed with a point reached during start-up.
                record_crash(&c, k.node, status, &mut figures);
                c.restart(k.node).await;
            }
            last_restart = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (accepted, failed) = load.await.expect("load task");
    let load_end = Instant::now();
    figures.submits = chaos.reports;
    figures.failed_submits = failed;

    // The end: every link healed, every node up and disarmed.
    for link in &links {
        link.set_mode(Mode::Pass);
    }
    for i in 0..c.len() {
        if let Some(status) = c.try_exited(i) {
            record_crash(&c, i, status, &mut figures);
        }
        if c.armed(i).is_some() {
            kill_running(&mut c, i, &mut figures).await;
        }
        if !c.is_running(i) {
            c.restart(i).await;
            last_restart = Instant::now();
        }
    }
    // Recovery: from the last fault (or the end of the load, if later) to
    // every delivery settled.
    let faults_over = last_restart.max(load_end);
    c.wait_settled(SETTLE).await;
    figures.recovery = Some(faults_over.elapsed());
    let figures = finish(&c, &accepted, figures, started).await;
    assert!(
        figures.random_kills >= chaos.kills,
        "the run SIGKILLed running nodes {} times, planned {}",
        figures.random_kills,
        chaos.kills
    );
    assert!(
        figures.accepted > 0,
        "the load got through between the faults"
    );
}

/// SIGKILLs node `i` while it runs, and counts it. A node that died at its
/// crash point in the meantime is recorded as such and restarted first,
/// so every planned kill is a SIGKILL of a running node.
async fn kill_running(c: &mut Federation, i: usize, figures: &mut Figures) {
    loop {
        if let Some(status) = c.try_exited(i) {
            record_crash(c, i, status, figures);
        }
        if !c.is_running(i) {
            c.restart(i).await;
        }
        match c.kill(i).await {
            Some(status) if Federation::was_killed(status) => {
                figures.random_kills += 1;
                return;
            }
            Some(status) => record_crash(c, i, status, figures),
            None => {}
        }
    }
}

/// A node the harness did not kill must have died at its crash point.
fn record_crash(c: &Federation, i: usize, status: std::process::ExitStatus, figures: &mut Figures) {
    let point = c.crash_point_hit(i);
    let armed = c.armed(i).map(str::to_owned);
    let Some(point) = point else {
        panic!(
            "{} died by itself ({status}), armed with {armed:?}:\n{}",
            c.id(i),
            c.log_tail(i, 40)
        );
    };
    c.assert_crashed_at(i, status, &point);
    *figures.crashes.entry(point).or_default() += 1;
}

/// CI: two nodes sending to each other, 300 reports, 20 kills, 8 windows of
/// lost replies or partition.
#[tokio::test]
async fn random_kills_short() {
    run_chaos(Chaos {
        test: "random short",
        nodes: &[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])],
        ips: &[FR_IP, DE_IP],
        reports: 300,
        kills: 20,
        pace: Duration::from_millis(15),
        max_down: Duration::from_millis(300),
        arm_probability: 0.3,
        link_faults: 8,
        max_link_fault: Duration::from_millis(1_500),
    })
    .await;
}

/// On demand (`cargo test --test fault -- --ignored`): three nodes,
/// 8000 reports, 200 kills (many of them restarts armed with crash points),
/// 100 windows of lost replies or partition.
#[tokio::test]
#[ignore = "long; run with --ignored"]
async fn random_kills_long() {
    run_chaos(Chaos {
        test: "random long",
        nodes: &[
            ("FR-PDC", &["FR"]),
            ("DE-ECO", &["DE"]),
            ("NL-MELD", &["NL"]),
        ],
        ips: &[FR_IP, DE_IP, NL_IP],
        reports: 8_000,
        kills: 200,
        pace: Duration::from_millis(10),
        max_down: Duration::from_millis(1_000),
        arm_probability: 0.4,
        link_faults: 100,
        max_link_fault: Duration::from_millis(3_000),
    })
    .await;
}
