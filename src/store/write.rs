//! One-row statements inside a write transaction ([`Tx`]), written once
//! for both backends.

use super::log::{Entry, Hash};
use super::*;

impl Tx {
    pub async fn find_report(
        &mut self,
        origin: &str,
        report_id: &str,
    ) -> Result<Option<ReportRow>, StoreError> {
        Ok(sql!(
            self.conn(),
            fetch_optional(
                "SELECT * FROM reports WHERE origin = $1 AND report_id = $2",
                origin,
                report_id,
            )
        ))
    }

    pub async fn report_by_seq(&mut self, seq: i64) -> Result<Option<ReportRow>, StoreError> {
        read::report_by_seq(self.conn(), seq).await
    }

    pub async fn insert_report(&mut self, r: &NewReport<'_>) -> Result<i64, StoreError> {
        let seqs = self.insert_reports(std::slice::from_ref(r)).await?;
        seqs.first()
            .copied()
            .ok_or_else(|| StoreError::Invariant("an inserted report has no seq".into()))
    }

    /// The report an operator's earlier submission with this key created.
    pub async fn find_submission(
        &mut self,
        operator: &str,
        submission_id: &str,
    ) -> Result<Option<i64>, StoreError> {
        Ok(sql!(
            self.conn(),
            scalar.fetch_optional(
                "SELECT report_seq FROM submissions WHERE operator = $1 AND submission_id = $2",
                operator,
                submission_id,
            )
        ))
    }

    pub async fn insert_submission(
        &mut self,
        operator: &str,
        submission_id: &str,
        report_seq: i64,
    ) -> Result<(), StoreError> {
        self.insert_submissions(operator, &[(submission_id, report_seq)])
            .await
    }

    pub async fn set_receipt(&mut self, seq: i64, receipt: &[u8]) -> Result<(), StoreError> {
        sql!(
            self.conn(),
            execute(
                "UPDATE reports SET receipt = $1 WHERE seq = $2",
                receipt,
                seq
            )
        );
        Ok(())
    }

    pub async fn set_status(
        &mut self,
        seq: i64,
        status: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sql!(
            self.conn(),
            execute(
                "UPDATE reports SET status = $1, updated_at_ms = $2 WHERE seq = $3",
                status,
                now_ms,
                seq,
            )
        );
        Ok(())
    }

    /// A destination of a report, reached through `next_hop` when that is
    /// not the destination itself; `handed_off_by` when another destination
    /// handed the case over to it. False when it was already there.
    pub async fn insert_delivery(
        &mut self,
        seq: i64,
        destination: &str,
        next_hop: Option<&str>,
        handed_off_by: Option<&str>,
    ) -> Result<bool, StoreError> {
        let n = sql!(
            self.conn(),
            execute(
                "INSERT INTO deliveries (report_seq, destination, state, next_hop, handed_off_by)
                 VALUES ($1, $2, 'queued', $3, $4) ON CONFLICT (report_seq, destination) DO NOTHING",
                seq,
                destination,
                next_hop.filter(|h| *h != destination),
                handed_off_by,
            )
        );
        Ok(n == 1)
    }

    /// The delivery state of one destination of a report.
    pub async fn delivery_state(
        &mut self,
        seq: i64,
        destination: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(sql!(
            self.conn(),
            scalar.fetch_optional(
                "SELECT state FROM deliveries WHERE report_seq = $1 AND destination = $2",
                seq,
                destination,
            )
        ))
    }

    /// A relay took the report over for `destination`: its receipt is kept
    /// while the destination's own receipt is awaited.
    pub async fn relayed_delivery(
        &mut self,
        seq: i64,
        destination: &str,
        relay_receipt: &[u8],
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = sql!(
            self.conn(),
            execute(
                "UPDATE deliveries SET relay_receipt = $1, relayed_at_ms = $2
                 WHERE report_seq = $3 AND destination = $4 AND state = 'queued'
                   AND relayed_at_ms IS NULL",
                relay_receipt,
                now_ms,
                seq,
                destination,
            )
        );
        Ok(n == 1)
    }

    /// The relays a destination's receipt came back through.
    pub async fn set_delivery_via(
        &mut self,
        seq: i64,
        destination: &str,
        via: &str,
    ) -> Result<(), StoreError> {
        sql!(
            self.conn(),
            execute(
                "UPDATE deliveries SET via = $1 WHERE report_seq = $2 AND destination = $3",
                via,
                seq,
                destination,
            )
        );
        Ok(())
    }

    /// The destinations whose reports go through `next_hop`.
    pub async fn destinations_via(
        &mut self,
        seq: i64,
        next_hop: &str,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sql!(
            self.conn(),
            scalar.fetch_all(
                "SELECT destination FROM deliveries
                 WHERE report_seq = $1 AND COALESCE(next_hop, destination) = $2
                 ORDER BY destination",
                seq,
                next_hop,
            )
        ))
    }

    pub async fn finish_delivery(
        &mut self,
        seq: i64,
        destination: &str,
        state: &str,
        receipt: &[u8],
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sql!(
            self.conn(),
            execute(
                "UPDATE deliveries SET state = $1, receipt = $2, reason = $3, delivered_at_ms = $4
                 WHERE report_seq = $5 AND destination = $6",
                state,
                receipt,
                reason,
                now_ms,
                seq,
                destination,
            )
        );
        Ok(())
    }

    /// Whether `destination` is one of the report's destinations.
    pub async fn is_destination(
        &mut self,
        seq: i64,
        destination: &str,
    ) -> Result<bool, StoreError> {
        Ok(self.delivery_state(seq, destination).await?.is_some())
    }

    /// Queues one outbox row (`enqueue_many` for several).
    pub async fn enqueue(&mut self, row: NewOutbox<'_>, now_ms: i64) -> Result<(), StoreError> {
        self.enqueue_many(&[row], now_ms).await
    }

    /// The outbox row still holding this report for `peer`, if not sent.
    pub async fn queued_report(
        &mut self,
        report_seq: i64,
        peer: &str,
    ) -> Result<Option<i64>, StoreError> {
        Ok(sql!(
            self.conn(),
            scalar.fetch_optional(
                "SELECT id FROM outbox
                 WHERE report_seq = $1 AND peer = $2 AND kind = 'report' LIMIT 1",
                report_seq,
                peer,
            )
        ))
    }

    /// Every destination of a report: (destination, next hop, state).
    pub async fn delivery_routes(
        &mut self,
        report_seq: i64,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        Ok(sql!(
            self.conn(),
            fetch_all(
                "SELECT destination, COALESCE(next_hop, destination), state FROM deliveries
                 WHERE report_seq = $1 ORDER BY destination",
                report_seq,
            )
        ))
    }

    /// Records the origin's latest correction (and the category it sets).
    pub async fn set_correction(
        &mut self,
        seq: i64,
        category: &str,
        correction: &[u8],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sql!(
            self.conn(),
            execute(
                "UPDATE reports SET category = $1, correction = $2, updated_at_ms = $3
                 WHERE seq = $4",
                category,
                correction,
                now_ms,
                seq,
            )
        );
        Ok(())
    }

    /// What identifies a case's content (see `case_keys`).
    pub async fn insert_case_keys(&mut self, seq: i64, keys: &[String]) -> Result<(), StoreError> {
        let keys: Vec<(i64, &str)> = keys.iter().map(|k| (seq, k.as_str())).collect();
        self.insert_case_keys_many(&keys).await
    }

    /// The oldest open case worked here with any of these keys.
    pub async fn open_case_with_keys(
        &mut self,
        keys: &[String],
    ) -> Result<Option<i64>, StoreError> {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let cases = self.open_cases_with_keys(&keys).await?;
        Ok(cases.into_iter().map(|(_, seq)| seq).min())
    }

    /// The highest report sequence number stored.
    pub async fn last_report_seq(&mut self) -> Result<i64, StoreError> {
        Ok(sql!(
            self.conn(),
            scalar.fetch_one("SELECT COALESCE(MAX(seq), 0) FROM reports")
        ))
    }

    /// The PDQ hashes stored with reports `after < seq <= upto`: (report
    /// seq, its origin, hash hex, whether it is an open case worked here).
    pub async fn pdq_keys_between(
        &mut self,
        after: i64,
        upto: i64,
    ) -> Result<Vec<(i64, String, String, bool)>, StoreError> {
        Ok(sql!(
            self.conn(),
            fetch_all(
                concat!(
                    "SELECT r.seq, r.origin, substr(k.key, 5), (",
                    open_case!(),
                    ") FROM case_keys k JOIN reports r ON r.seq = k.report_seq
                     WHERE k.key LIKE 'pdq:%' AND k.report_seq > $1 AND k.report_seq <= $2"
                ),
                after,
                upto
            )
        ))
    }

    /// Which of the cases `seqs` are open cases worked here.
    pub async fn open_among(&mut self, seqs: &[i64]) -> Result<Vec<i64>, StoreError> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        Ok(built!(self.conn(), |q| q
            .push("SELECT r.seq FROM reports r WHERE r.seq IN (")
            .push_list(seqs)
            .push(concat!(") AND ", open_case!(), " ORDER BY r.seq")) => scalar.fetch_all))
    }

    pub async fn set_joined(&mut self, seq: i64, case_seq: i64) -> Result<(), StoreError> {
        sql!(
            self.conn(),
            execute(
                "UPDATE reports SET joined_to = $1 WHERE seq = $2",
                case_seq,
                seq
            )
        );
        Ok(())
    }

    /// The reports that joined the case `seq`.
    pub async fn joined(&mut self, seq: i64) -> Result<Vec<ReportRow>, StoreError> {
        read::joined(self.conn(), seq).await
    }

    /// Removes a sent outbox row; false when it was already gone.
    pub async fn dequeue(&mut self, id: i64) -> Result<bool, StoreError> {
        Ok(!self.dequeue_many(&[id]).await?.is_empty())
    }

    /// Whether `signer`'s history entry with this id is recorded for the
    /// report (ids are the signer's choice: unique per report and signer).
    pub async fn status_recorded(
        &mut self,
        seq: i64,
        signer: &str,
        update_id: &str,
    ) -> Result<bool, StoreError> {
        let n: i64 = sql!(
            self.conn(),
            scalar.fetch_one(
                "SELECT COUNT(*) FROM status_history
                 WHERE report_seq = $1 AND COALESCE(signer, '') = $2 AND update_id = $3",
                seq,
                signer,
                update_id,
            )
        );
        Ok(n > 0)
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn insert_referral(
        &mut self,
        seq: i64,
        update_id: &str,
        agency: &str,
        reference: &str,
        referred_at_ms: i64,
        actor: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sql!(
            self.conn(),
            execute(
                "INSERT INTO referrals (report_seq, update_id, agency, reference, referred_at_ms,
                    actor, recorded_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                seq,
                update_id,
                agency,
                reference,
                referred_at_ms,
                actor,
                now_ms,
            )
        );
        Ok(())
    }

    /// Retention: removes a report's URLs, notes, hashes, hosting evidence,
    /// history reasons, operator names and submission keys, keeping a
    /// tombstone (ids, category, status, payload digest, receipts) that the
    /// audit log's entries still point at. False when it was already
    /// purged or something is still to be sent for it.
    pub async fn purge_report(&mut self, seq: i64, now_ms: i64) -> Result<bool, StoreError> {
        let pending: i64 = sql!(
            self.conn(),
            scalar.fetch_one("SELECT COUNT(*) FROM outbox WHERE report_seq = $1", seq)
        );
        if pending > 0 {
            return Ok(false);
        }
        let route: Option<String> = sql!(
            self.conn(),
            scalar.fetch_optional(
                "SELECT route FROM reports WHERE seq = $1 AND purged_at_ms IS NULL",
                seq,
            )
        );
        let Some(route) = route else {
            return Ok(false);
        };
        let n = sql!(
            self.conn(),
            execute(
                "UPDATE reports SET payload = $1, envelope = $1, route = $2,
                    correction = NULL, purged_at_ms = $3
                 WHERE seq = $4 AND purged_at_ms IS NULL",
                &[][..] as &[u8],
                purged_route(&route),
                now_ms,
                seq,
            )
        );
        if n != 1 {
            return Ok(false);
        }
        for statement in [
            "UPDATE status_history SET reason = '', signed = NULL,
                actor = CASE WHEN actor LIKE 'node:%' THEN actor ELSE 'operator (purged)' END
             WHERE report_seq = $1",
            "UPDATE referrals SET actor = 'operator (purged)' WHERE report_seq = $1",
            "DELETE FROM submissions WHERE report_seq = $1",
            // The content keys hold normalised URLs and media hashes.
            "DELETE FROM case_keys WHERE report_seq = $1",
        ] {
            sql!(self.conn(), execute(statement, seq));
        }
        Ok(true)
    }

    /// Adds a status change; false when `signer` already recorded
    /// `update_id` for this report (ids are unique per report and signer,
    /// so no one can pre-empt another signer's update by choosing its id).
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_status(
        &mut self,
        seq: i64,
        update_id: &str,
        status: &str,
        reason: &str,
        actor: &str,
        signer: Option<&str>,
        signed: Option<&[u8]>,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = sql!(
            self.conn(),
            execute(
                "INSERT INTO status_history (report_seq, update_id, status, reason, actor, signer,
                    signed, at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                seq,
                update_id,
                status,
                reason,
                actor,
                signer,
                signed,
                at_ms,
            )
        );
        Ok(n == 1)
    }

    /// Appends an audit entry, chained to the previous one. Runs inside the
    /// transaction of the change it records.
    pub async fn audit(&mut self, entry: &Entry, now_ms: i64) -> Result<i64, StoreError> {
        self.audit_many(std::slice::from_ref(entry), now_ms).await
    }

    /// Number of entries in the audit log.
    pub async fn audit_size(&mut self) -> Result<u64, StoreError> {
        read::audit_size(self.conn()).await
    }

    /// `Store::fold_leaves`, inside this transaction.
    pub async fn fold_leaves(
        &mut self,
        after: u64,
        upto: u64,
        f: impl FnMut(&Hash),
    ) -> Result<u64, StoreError> {
        read::fold_leaves(self.conn(), after, upto, LEAF_PAGE, f).await
    }

    pub async fn latest_checkpoint(&mut self) -> Result<Option<CheckpointRow>, StoreError> {
        read::latest_checkpoint(self.conn()).await
    }

    pub async fn insert_checkpoint(
        &mut self,
        size: u64,
        root: &Hash,
        note: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sql!(
            self.conn(),
            execute(
                "INSERT INTO checkpoints (size, root, note, created_at_ms) VALUES ($1, $2, $3, $4)",
                i64::try_from(size).unwrap_or(i64::MAX),
                root.as_slice(),
                note,
                now_ms,
            )
        );
        Ok(())
    }

    /// Stores a witness's cosignature; false when it was already stored.
    pub async fn insert_cosignature(
        &mut self,
        size: u64,
        witness: &str,
        line: &str,
        timestamp: u64,
    ) -> Result<bool, StoreError> {
        let n = sql!(
            self.conn(),
            execute(
                "INSERT INTO cosignatures (size, witness, line, timestamp) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (size, witness) DO NOTHING",
                i64::try_from(size).unwrap_or(i64::MAX),
                witness,
                line,
                i64::try_from(timestamp).unwrap_or(i64::MAX),
            )
        );
        Ok(n == 1)
    }

    /// As a witness: moves `log`'s witnessed checkpoint from `from` (None:
    /// never witnessed) to the new one, only if it is still `from`. The
    /// atomic check-and-store of tlog-witness: false when it changed meanwhile.
    pub async fn advance_witnessed(
        &mut self,
        log: &str,
        from: Option<(u64, &Hash)>,
        to: &WitnessedRow,
    ) -> Result<bool, StoreError> {
        let n = match from {
            None => sql!(
                self.conn(),
                execute(
                    "INSERT INTO witnessed (log, size, root, note, cosignature, updated_at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (log) DO NOTHING",
                    log,
                    to.size,
                    &to.root,
                    &to.note,
                    &to.cosignature,
                    to.updated_at_ms,
                )
            ),
            Some((size, root)) => sql!(
                self.conn(),
                execute(
                    "UPDATE witnessed SET size = $2, root = $3, note = $4, cosignature = $5,
                        updated_at_ms = $6
                     WHERE log = $1 AND size = $7 AND root = $8",
                    log,
                    to.size,
                    &to.root,
                    &to.note,
                    &to.cosignature,
                    to.updated_at_ms,
                    i64::try_from(size).unwrap_or(i64::MAX),
                    root.as_slice(),
                )
            ),
        };
        Ok(n == 1)
    }
}
