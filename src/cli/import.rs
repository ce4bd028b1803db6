//! `alertrelay import`: submits every row of a CSV file through the node's
//! bulk intake (`SubmitReports`, one stream, many rows in flight, committed
//! in groups, each row answered once on disk). Each row
//! carries a `submission_id` derived from the file's SHA-256 and the row's
//! line number, so a re-run (after a crash, a lost answer, Ctrl-C) never
//! submits a row twice: the node answers with the original report.
//!
//! Columns (a header row names them, in any order): `url` (several
//! separated by whitespace), `category`, `hosting_ip`, `hashes`
//! (`sha256:HEX;md5:HEX`), and optionally `priority` (`urgent`/`bulk`),
//! `classification` (`baseline`/`national`) and `notes`. Each row is checked with the node's own validation first; a bad
//! row is reported with its line number and reason and not sent.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::anyhow;
use serde::Serialize;
use tonic::transport::Channel;

use super::client::connect;
use super::{Failure, load_config};
use crate::pb;
use crate::pb::operator_client::OperatorClient;
use crate::report::validate::{Submission, draft};
use crate::report::{MediaHash, Priority};

const COLUMNS: [&str; 7] = [
    "url",
    "category",
    "hosting_ip",
    "hashes",
    "priority",
    "classification",
    "notes",
];
const REQUIRED: [&str; 2] = ["url", "category"];

#[derive(Debug, Clone, Serialize)]
pub struct RowResult {
    /// The line of the CSV file (the header is line 1).
    pub row: u64,
    /// `accepted`, `already-imported` or `refused`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub report_id: String,
    /// Why a row was refused: `field: reason (code)`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

#[derive(Debug, Serialize)]
struct Summary<'a> {
    file: String,
    sha256: String,
    rows: usize,
    accepted: usize,
    already_imported: usize,
    refused: usize,
    /// Sent, but never answered: whether they were stored is unknown.
    unknown: usize,
    results: &'a [RowResult],
}

/// A row, checked and ready to send.
struct Row {
    line: u64,
    request: pb::SubmitReportRequest,
}

pub(crate) async fn run(
    config: PathBuf,
    csv_path: PathBuf,
    concurrency: usize,
    json: bool,
) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    let bytes = std::fs::read(&csv_path)
        .map_err(|e| Failure::usage(anyhow!("cannot read --csv {}: {e}", csv_path.display())))?;
    let file_hash = hex::encode(crate::wire::digest(&bytes));
    let (rows, mut results) = parse(&bytes, &file_hash)
        .map_err(|e| Failure::usage(anyhow!("{}: {e}", csv_path.display())))?;
    let client = connect(&cfg).await?;
    let bar = progress_bar(rows.len(), json);
    results.extend(send_all(client, rows, concurrency.max(1), &bar).await);
    bar.finish_and_clear();
    results.sort_by_key(|r| r.row);

    let count = |s: &str| results.iter().filter(|r| r.status == s).count();
    let summary = Summary {
        file: csv_path.display().to_string(),
        sha256: file_hash,
        rows: results.len(),
        accepted: count("accepted"),
        already_imported: count("already-imported"),
        refused: count("refused"),
        unknown: count("unknown"),
        results: &results,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        summary.print();
    }
    Ok(if summary.refused > 0 || summary.unknown > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

impl Summary<'_> {
    fn print(&self) {
        for r in self.results.iter().filter(|r| r.status != "accepted") {
            if r.status == "refused" || r.status == "unknown" {
                println!("row {}: {}: {}", r.row, r.status, r.reason);
            }
        }
        println!(
            "{}: {} rows: {} accepted, {} already imported (not submitted again), {} refused, {} unknown (run again)",
            self.file, self.rows, self.accepted, self.already_imported, self.refused, self.unknown
        );
    }
}

/// Rows sent, on a terminal.
fn progress_bar(rows: usize, json: bool) -> indicatif::ProgressBar {
    let bar = if json || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(rows as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} rows  {per_sec}  eta {eta}  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Sends every row, each answered once: on one stream; rows it did not
/// answer (the stream broke off, a replica went away) are sent again on a
/// new one, which their submission ids make safe. Rows the node refused
/// are `refused`; rows still unanswered after the last attempt are
/// `unknown` (nothing says whether they were stored: running the import
/// again settles it).
async fn send_all(
    client: OperatorClient<Channel>,
    rows: Vec<Row>,
    window: usize,
    bar: &indicatif::ProgressBar,
) -> Vec<RowResult> {
    let mut results = Vec::new();
    let mut pending = rows;
    let mut attempt = 0u64;
    while !pending.is_empty() {
        attempt += 1;
        let (answered, left, error) = stream(&mut client.clone(), pending, window, bar).await;
        results.extend(answered);
        pending = left;
        let error = match error {
            None if !pending.is_empty() => Some(tonic::Status::unavailable(
                "the node ended the stream before answering every row",
            )),
            e => e,
        };
        let Some(s) = error else { continue };
        let unanswered = !refusal(s.code());
        if unanswered && attempt < SEND_ATTEMPTS {
            tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
            continue;
        }
        let (status, reason) = if unanswered {
            (
                "unknown",
                format!(
                    "not answered ({:?}: {}); run the import again: rows already stored are not submitted twice",
                    s.code(),
                    s.message()
                ),
            )
        } else {
            ("refused", format!("{:?}: {}", s.code(), s.message()))
        };
        results.extend(pending.drain(..).map(|row| RowResult {
            row: row.line,
            status,
            report_id: String::new(),
            reason: reason.clone(),
        }));
    }
    results
}

/// Streams tried before the rows still unanswered are given up on.
const SEND_ATTEMPTS: u64 = 8;

/// Whether a stream's error is the node refusing the rows (an answer),
/// rather than the stream failing before they were answered.
fn refusal(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::InvalidArgument
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::FailedPrecondition
            | Code::NotFound
            | Code::AlreadyExists
            | Code::OutOfRange
            | Code::Unimplemented
    )
}

/// Reads and checks every row. Rows that fail the checks are returned as
/// refused results; the others as requests.
fn parse(bytes: &[u8], file_hash: &str) -> Result<(Vec<Row>, Vec<RowResult>), String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let headers = reader
        .headers()
        .map_err(|e| format!("header row: {e}"))?
        .clone();
    let mut index = std::collections::BTreeMap::new();
    for (i, h) in headers.iter().enumerate() {
        let h = h.to_ascii_lowercase();
        if !COLUMNS.contains(&h.as_str()) {
            return Err(format!(
                "unknown column {h:?}; the columns are {}",
                COLUMNS.join(", ")
            ));
        }
        if index.insert(h.clone(), i).is_some() {
            return Err(format!("column {h:?} appears twice"));
        }
    }
    for r in REQUIRED {
        if !index.contains_key(r) {
            return Err(format!("no {r:?} column (the header row must name it)"));
        }
    }
    let mut rows = Vec::new();
    let mut refused = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                refused.push(RowResult {
                    row: line,
                    status: "refused",
                    report_id: String::new(),
                    reason: format!("not a valid CSV row: {e}"),
                });
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        if record.iter().all(str::is_empty) {
            continue;
        }
        let get = |c: &str| {
            index
                .get(c)
                .and_then(|i| record.get(*i))
                .unwrap_or_default()
                .to_owned()
        };
        match check(&get, line, file_hash) {
            Ok(request) => rows.push(Row { line, request }),
            Err(reason) => refused.push(RowResult {
                row: line,
                status: "refused",
                report_id: String::new(),
                reason,
            }),
        }
    }
    Ok((rows, refused))
}

fn check(
    get: &dyn Fn(&str) -> String,
    line: u64,
    file_hash: &str,
) -> Result<pb::SubmitReportRequest, String> {
    let urls: Vec<String> = get("url").split_whitespace().map(str::to_owned).collect();
    let category = get("category");
    let hosting_ip = get("hosting_ip");
    let notes = get("notes");
    let classification = get("classification");
    let priority = match get("priority").as_str() {
        "" | "bulk" => Priority::Bulk,
        "urgent" => Priority::Urgent,
        other => {
            return Err(format!(
                "priority: {other:?} is not urgent or bulk (bad-priority)"
            ));
        }
    };
    let mut hashes = Vec::new();
    for (i, h) in get("hashes")
        .split(';')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .enumerate()
    {
        let (algorithm, value) = h.split_once(':').ok_or_else(|| {
            format!("hashes[{i}]: {h:?} is not ALGORITHM:VALUE such as sha256:HEX (bad-hash)")
        })?;
        hashes.push(MediaHash {
            algorithm: algorithm.to_ascii_lowercase(),
            value: value.to_owned(),
        });
    }
    // The node's own checks, so a bad row is named before anything is sent.
    draft(&Submission {
        urls: &urls,
        category: &category,
        hosting_ip: &hosting_ip,
        priority: Some(priority),
        notes: &notes,
        hashes: hashes.clone(),
        classification: &classification,
    })
    .map_err(|e| format!("{}: {} ({})", e.field, e.message, e.code))?;
    Ok(pb::SubmitReportRequest {
        classification,
        urls,
        category,
        hosting_ip,
        priority: match priority {
            Priority::Urgent => pb::Priority::Urgent as i32,
            Priority::Bulk => pb::Priority::Bulk as i32,
        },
        notes,
        hashes: hashes
            .into_iter()
            .map(|h| pb::MediaHash {
                algorithm: h.algorithm,
                value: h.value,
            })
            .collect(),
        submission_id: submission_id(file_hash, line),
    })
}

/// The idempotency key of one row: the same file's same row is always the
/// same submission.
pub fn submission_id(file_hash: &str, line: u64) -> String {
    // The node accepts 1-64 of A-Z a-z 0-9 . _ -
    format!("import-{}-{line}", &file_hash[..32.min(file_hash.len())])
}

/// Sends `rows` on one `SubmitReports` stream with at most `window`
/// unanswered; returns the answered rows, the rows left unanswered, and the
/// status the stream ended with, if it broke off.
async fn stream(
    client: &mut OperatorClient<Channel>,
    rows: Vec<Row>,
    window: usize,
    bar: &indicatif::ProgressBar,
) -> (Vec<RowResult>, Vec<Row>, Option<tonic::Status>) {
    let credit = Arc::new(tokio::sync::Semaphore::new(window));
    let (tx, rx) = tokio::sync::mpsc::channel(window);
    let requests: Vec<pb::SubmitReportRequest> = rows.iter().map(|r| r.request.clone()).collect();
    let producer = {
        let credit = credit.clone();
        tokio::spawn(async move {
            for r in requests {
                let Ok(permit) = credit.acquire().await else {
                    return;
                };
                permit.forget();
                if tx.send(r).await.is_err() {
                    return;
                }
            }
        })
    };
    let mut answered = Vec::with_capacity(rows.len());
    let mut done = vec![false; rows.len()];
    let error = match client
        .submit_reports(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    {
        Err(s) => Some(s),
        Ok(r) => {
            let mut responses = r.into_inner();
            loop {
                match responses.message().await {
                    Ok(Some(a)) => {
                        credit.add_permits(1);
                        bar.inc(1);
                        let Some(row) = rows.get(a.index as usize) else {
                            break Some(tonic::Status::internal(
                                "the node answered an unknown row",
                            ));
                        };
                        done[a.index as usize] = true;
                        answered.push(row_result(row, a));
                    }
                    Ok(None) => break None,
                    Err(s) => break Some(s),
                }
            }
        }
    };
    credit.close();
    producer.abort();
    let left = rows
        .into_iter()
        .zip(done)
        .filter(|(_, d)| !d)
        .map(|(r, _)| r)
        .collect();
    (answered, left, error)
}

/// The node's answer to one row.
fn row_result(row: &Row, a: pb::SubmitReportsResponse) -> RowResult {
    if a.code == 0 {
        RowResult {
            row: row.line,
            // A repeated key is answered with the original report.
            status: if a.repeat {
                "already-imported"
            } else {
                "accepted"
            },
            report_id: a.report_id,
            reason: String::new(),
        }
    } else {
        RowResult {
            row: row.line,
            status: "refused",
            report_id: String::new(),
            reason: format!("{:?}: {}", tonic::Code::from(a.code), a.message),
        }
    }
}
