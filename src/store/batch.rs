//! The hot paths' multi-row statements inside a write transaction
//! ([`Tx`]), written once for both backends: one statement per kind of row
//! and per [`ROWS_PER_STATEMENT`] rows (each statement costs a thread
//! hand-off to the SQLite driver, which dominates a report's cost when done
//! row by row). The one-row forms in `write.rs` are these with one row.

use super::log::{self, Entry};
use super::*;

/// Runs `$statement` once per [`ROWS_PER_STATEMENT`] of `$items`, with
/// `$chunk` the items of one statement: `each` for its effect, `rows` to
/// gather the rows each statement returns.
macro_rules! per_chunk {
    (each $items:expr, |$chunk:ident| $statement:expr) => {
        for $chunk in $items.chunks(ROWS_PER_STATEMENT) {
            $statement;
        }
    };
    (rows $items:expr, |$chunk:ident| $statement:expr) => {{
        let mut out = Vec::new();
        for $chunk in $items.chunks(ROWS_PER_STATEMENT) {
            let mut rows = $statement;
            out.append(&mut rows);
        }
        out
    }};
}

/// Inserts `$rows` into `$into` (the table and its columns), one
/// `INSERT … VALUES (…), (…)` per [`ROWS_PER_STATEMENT`] rows: `$bind`
/// binds one row's values on `$b`, in the columns' order; `$then` follows
/// the values (`ON CONFLICT …`).
macro_rules! insert_rows {
    ($tx:expr, $rows:expr, $into:literal, |$b:ident, $r:pat_param| $bind:expr $(, $then:literal)?) => {
        per_chunk!(each $rows, |chunk| built!($tx.conn(), |q| q
            .push(concat!("INSERT INTO ", $into, " "))
            .push_values(chunk, |mut $b, $r| {
                $bind;
            })
            $(.push($then))? => execute))
    };
}

impl Tx {
    /// Inserts the reports in order and returns their seqs in the same order.
    pub async fn insert_reports(&mut self, rs: &[NewReport<'_>]) -> Result<Vec<i64>, StoreError> {
        let rows: Vec<(i64, String, String)> = per_chunk!(rows rs, |chunk| built!(self.conn(), |q| q
            .push(
                "INSERT INTO reports (report_id, origin, direction, category, priority, status,
                    hosting_country, route, payload, payload_digest, envelope, received_from,
                    created_at_ms, stored_at_ms, updated_at_ms, relay, receipt, joined_to, family) ",
            )
            .push_values(chunk, |mut b, r| {
                b.push_bind(r.report_id)
                    .push_bind(r.origin)
                    .push_bind(r.direction)
                    .push_bind(r.category)
                    .push_bind(r.priority)
                    .push_bind(r.status)
                    .push_bind(r.hosting_country)
                    .push_bind(r.route)
                    .push_bind(r.payload)
                    .push_bind(r.payload_digest)
                    .push_bind(r.envelope)
                    .push_bind(r.received_from)
                    .push_bind(r.created_at_ms)
                    .push_bind(r.now_ms)
                    .push_bind(r.now_ms)
                    .push_bind(i64::from(r.relay))
                    .push_bind(r.receipt)
                    .push_bind(r.joined_to)
                    .push_bind(r.family);
            })
            .push(" RETURNING seq, origin, report_id") => fetch_all));
        let by_key: std::collections::HashMap<(String, String), i64> = rows
            .into_iter()
            .map(|(seq, origin, id)| ((origin, id), seq))
            .collect();
        rs.iter()
            .map(|r| {
                by_key
                    .get(&(r.origin.to_owned(), r.report_id.to_owned()))
                    .copied()
                    .ok_or_else(|| StoreError::Invariant("an inserted report has no seq".into()))
            })
            .collect()
    }

    /// The stored reports among these (origin, report id) pairs.
    pub async fn find_reports(
        &mut self,
        keys: &[(&str, &str)],
    ) -> Result<Vec<ReportRow>, StoreError> {
        Ok(per_chunk!(rows keys, |chunk| built!(self.conn(), |q| q
            .push("SELECT r.* FROM reports r JOIN (")
            .push_values(chunk, |mut b, (origin, id)| {
                b.push_bind(*origin).push_bind(*id);
            })
            .push(") AS k ON r.origin = k.column1 AND r.report_id = k.column2") => fetch_all)))
    }

    pub async fn reports_by_seqs(&mut self, seqs: &[i64]) -> Result<Vec<ReportRow>, StoreError> {
        Ok(per_chunk!(rows seqs, |chunk| built!(self.conn(), |q| q
            .push("SELECT * FROM reports WHERE seq IN (")
            .push_list(chunk)
            .push(")") => fetch_all)))
    }

    /// (key, case seq) for every open case worked here holding one of
    /// these content keys (the oldest such case per key).
    ///
    /// Each key's rows are found by the key, then each report by its
    /// `seq` (a subquery per row, which no planner turns around): as a
    /// join, on a PostgreSQL table never analysed (autovacuum off, or not
    /// yet run) the planner scanned every report for each lookup, 0.2–0.9 s
    /// at 30,000 reports.
    pub async fn open_cases_with_keys(
        &mut self,
        keys: &[&str],
    ) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(per_chunk!(rows keys, |chunk| built!(self.conn(), |q| q
            .push("SELECT k.key, MIN(k.report_seq) FROM case_keys k WHERE k.key IN (")
            .push_list(chunk)
            .push(concat!(
                ") AND (SELECT 1 FROM reports r WHERE r.seq = k.report_seq AND ",
                open_case!(),
                ") = 1 GROUP BY k.key"
            )) => fetch_all)))
    }

    /// Content keys (report seq, key); a pair already stored is skipped.
    pub async fn insert_case_keys_many(&mut self, keys: &[(i64, &str)]) -> Result<(), StoreError> {
        insert_rows!(
            self,
            keys,
            "case_keys (key, report_seq)",
            |b, (seq, key)| { b.push_bind(*key).push_bind(*seq) },
            "ON CONFLICT DO NOTHING"
        );
        Ok(())
    }

    /// Queued deliveries; a destination already there is skipped.
    pub async fn insert_deliveries(&mut self, ds: &[NewDelivery<'_>]) -> Result<(), StoreError> {
        insert_rows!(
            self,
            ds,
            "deliveries (report_seq, destination, state, next_hop)",
            |b, d| {
                b.push_bind(d.seq)
                    .push_bind(d.destination)
                    .push_bind(QUEUED)
                    .push_bind(d.stored_next_hop())
            },
            "ON CONFLICT (report_seq, destination) DO NOTHING"
        );
        Ok(())
    }

    /// Queues each row's `body` for its peer (on PostgreSQL announced to
    /// the other replicas when this transaction commits).
    pub async fn enqueue_many(
        &mut self,
        rows: &[NewOutbox<'_>],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        insert_rows!(
            self,
            rows,
            "outbox (peer, kind, urgent, report_seq, body, created_at_ms, returned)",
            |b, r| {
                b.push_bind(r.peer)
                    .push_bind(r.kind)
                    .push_bind(i64::from(r.urgent))
                    .push_bind(r.report_seq)
                    .push_bind(r.body)
                    .push_bind(now_ms)
                    .push_bind(r.returned)
            }
        );
        for r in rows {
            self.queued(r.peer, r.urgent);
        }
        Ok(())
    }

    /// Unsigned history entries; an `update_id` already recorded for the
    /// report (unsigned) is skipped.
    pub async fn insert_statuses(
        &mut self,
        rows: &[NewStatus<'_>],
        at_ms: i64,
    ) -> Result<(), StoreError> {
        insert_rows!(
            self,
            rows,
            "status_history (report_seq, update_id, status, reason, actor, at_ms)",
            |b, r| {
                b.push_bind(r.seq)
                    .push_bind(r.update_id.as_str())
                    .push_bind(r.status)
                    .push_bind(r.reason)
                    .push_bind(r.actor)
                    .push_bind(at_ms)
            },
            "ON CONFLICT DO NOTHING"
        );
        Ok(())
    }

    /// Appends the entries in order, one audit sequence number each,
    /// chained; returns the last one's (the log's size).
    pub async fn audit_many(&mut self, entries: &[Entry], now_ms: i64) -> Result<i64, StoreError> {
        if entries.is_empty() {
            return Ok(i64::try_from(self.audit_size().await?).unwrap_or(i64::MAX));
        }
        let (prev_seq, prev_hash) = match self.audit_head.take() {
            Some(head) => head,
            // Both backends have one writer at a time (SQLite's one
            // connection, PostgreSQL's writer lock taken in `begin`): the
            // head read here is still the head at commit.
            None => {
                let last: Option<(i64, Vec<u8>)> = sql!(
                    self.conn(),
                    fetch_optional("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                );
                last.unwrap_or((0, log::GENESIS.to_vec()))
            }
        };
        let rows = log::chain(entries, prev_seq, &prev_hash, now_ms);
        crate::faults::crash_point("audit-append");
        insert_rows!(
            self,
            rows,
            "audit_log (seq, at_ms, kind, actor, subject, detail, prev_hash, hash, leaf_hash)",
            |b, r| {
                b.push_bind(r.seq)
                    .push_bind(now_ms)
                    .push_bind(r.kind)
                    .push_bind(r.actor)
                    .push_bind(r.subject)
                    .push_bind(r.detail.as_str())
                    .push_bind(r.prev_hash.as_slice())
                    .push_bind(r.hash.as_slice())
                    .push_bind(r.leaf.as_slice())
            }
        );
        let head = match rows.last() {
            Some(last) => (last.seq, last.hash.to_vec()),
            None => (prev_seq, prev_hash),
        };
        let seq = head.0;
        self.audit_head = Some(head);
        Ok(seq)
    }

    /// Deletes these outbox rows; returns the ids that were still there.
    pub async fn dequeue_many(&mut self, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
        let gone: Vec<i64> = per_chunk!(rows ids, |chunk| built!(self.conn(), |q| q
            .push("DELETE FROM outbox WHERE id IN (")
            .push_list(chunk)
            .push(") RETURNING id") => scalar.fetch_all));
        self.dequeued(&gone);
        Ok(gone)
    }

    /// (report seq, destination) of every destination of these reports
    /// reached through `next_hop` (itself included).
    pub async fn destinations_via_many(
        &mut self,
        seqs: &[i64],
        next_hop: &str,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        Ok(per_chunk!(rows seqs, |chunk| built!(self.conn(), |q| q
            .push(
                "SELECT report_seq, destination FROM deliveries
                 WHERE COALESCE(next_hop, destination) = ",
            )
            .push_bind(next_hop)
            .push(" AND report_seq IN (")
            .push_list(chunk)
            .push(") ORDER BY report_seq, destination") => fetch_all)))
    }

    /// Settles deliveries with the peer's answer.
    pub async fn finish_deliveries(
        &mut self,
        ds: &[FinishedDelivery<'_>],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        per_chunk!(each ds, |chunk| built!(self.conn(), |q| q
            .push("WITH v (report_seq, destination, state, receipt, reason) AS (")
            .push_values(chunk, |mut b, d| {
                b.push_bind(d.seq)
                    .push_bind(d.destination)
                    .push_bind(d.state)
                    .push_bind(d.receipt)
                    .push_bind(d.reason);
            })
            .push(
                ") UPDATE deliveries SET state = v.state, receipt = v.receipt,
                    reason = v.reason, delivered_at_ms = ",
            )
            .push_bind(now_ms)
            .push(
                " FROM v WHERE deliveries.report_seq = v.report_seq
                   AND deliveries.destination = v.destination",
            ) => execute));
        Ok(())
    }

    /// Sets the status of those of these reports whose status is `from`.
    pub async fn set_status_many(
        &mut self,
        seqs: &[i64],
        from: &str,
        to: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        per_chunk!(each seqs, |chunk| built!(self.conn(), |q| q
            .push("UPDATE reports SET status = ")
            .push_bind(to)
            .push(", updated_at_ms = ")
            .push_bind(now_ms)
            .push(" WHERE status = ")
            .push_bind(from)
            .push(" AND seq IN (")
            .push_list(chunk)
            .push(")") => execute));
        Ok(())
    }

    /// (submission id, report seq) of this operator's earlier submissions
    /// among these keys.
    pub async fn find_submissions(
        &mut self,
        operator: &str,
        ids: &[&str],
    ) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(per_chunk!(rows ids, |chunk| built!(self.conn(), |q| q
            .push("SELECT submission_id, report_seq FROM submissions WHERE operator = ")
            .push_bind(operator)
            .push(" AND submission_id IN (")
            .push_list(chunk)
            .push(")") => fetch_all)))
    }

    /// Records which report each of an operator's submission keys created.
    pub async fn insert_submissions(
        &mut self,
        operator: &str,
        rows: &[(&str, i64)],
    ) -> Result<(), StoreError> {
        insert_rows!(
            self,
            rows,
            "submissions (operator, submission_id, report_seq)",
            |b, (id, seq)| { b.push_bind(operator).push_bind(*id).push_bind(*seq) }
        );
        Ok(())
    }
}
