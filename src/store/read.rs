//! Queries on the read pool ([`Store`]'s reads), written once for both
//! backends, and the few statements that also run inside a write
//! transaction (functions on a `Conn`).

use super::log::Hash;
use super::*;

/// The columns of an outbox row as read for sending.
macro_rules! outbox_columns {
    () => {
        "id, peer, kind, urgent, report_seq, body, attempts, returned"
    };
}

pub(super) async fn report_by_seq(c: Conn<'_>, seq: i64) -> Result<Option<ReportRow>, StoreError> {
    Ok(sql!(
        c,
        fetch_optional("SELECT * FROM reports WHERE seq = $1", seq)
    ))
}

/// The reports that joined the case `seq` (same content, other origins).
pub(super) async fn joined(c: Conn<'_>, seq: i64) -> Result<Vec<ReportRow>, StoreError> {
    Ok(sql!(
        c,
        fetch_all(
            "SELECT * FROM reports WHERE joined_to = $1 ORDER BY seq",
            seq
        )
    ))
}

pub(super) async fn latest_checkpoint(c: Conn<'_>) -> Result<Option<CheckpointRow>, StoreError> {
    Ok(sql!(
        c,
        fetch_optional(
            "SELECT size, root, note, created_at_ms FROM checkpoints ORDER BY size DESC LIMIT 1"
        )
    ))
}

/// Number of entries in the audit log.
pub(super) async fn audit_size(c: Conn<'_>) -> Result<u64, StoreError> {
    let n: i64 = sql!(
        c,
        scalar.fetch_one("SELECT COALESCE(MAX(seq), 0) FROM audit_log")
    );
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Calls `f` with the leaf hashes of audit entries `after + 1 ..= upto`,
/// in order, read `page` at a time. Returns how many.
pub(super) async fn fold_leaves(
    mut c: Conn<'_>,
    after: u64,
    upto: u64,
    page: u64,
    mut f: impl FnMut(&Hash),
) -> Result<u64, StoreError> {
    let (mut at, mut n) = (after, 0);
    while at < upto {
        let end = upto.min(at.saturating_add(page.max(1)));
        let hashes: Vec<Vec<u8>> = sql!(
            c.re(),
            scalar.fetch_all(
                "SELECT leaf_hash FROM audit_log WHERE seq > $1 AND seq <= $2 ORDER BY seq",
                i64::try_from(at).unwrap_or(i64::MAX),
                i64::try_from(end).unwrap_or(i64::MAX),
            )
        );
        hashes.iter().for_each(|h| f(&to_hash(h)));
        n += hashes.len() as u64;
        at = end;
    }
    Ok(n)
}

/// The first `limit` outbox rows for `peer` of one kind: of one lane
/// (`urgent`), in order, or of both lanes (`None`), urgent first.
pub(super) async fn outbox_rows(
    c: Conn<'_>,
    peer: &str,
    kind: &str,
    urgent: Option<bool>,
    limit: i64,
) -> Result<Vec<OutboxRow>, StoreError> {
    const LANE: &str = concat!(
        "SELECT ",
        outbox_columns!(),
        " FROM outbox WHERE peer = $1 AND kind = $2 AND urgent = $3 ORDER BY id LIMIT $4"
    );
    const BOTH: &str = concat!(
        "SELECT ",
        outbox_columns!(),
        " FROM outbox WHERE peer = $1 AND kind = $2 ORDER BY urgent DESC, id LIMIT $3"
    );
    Ok(match urgent {
        Some(urgent) => sql!(c, fetch_all(LANE, peer, kind, i64::from(urgent), limit)),
        None => sql!(c, fetch_all(BOTH, peer, kind, limit)),
    })
}

impl Store {
    pub async fn report_by_seq(&self, seq: i64) -> Result<Option<ReportRow>, StoreError> {
        report_by_seq(self.reader().await?.conn(), seq).await
    }

    /// Reports with this id (from any origin), or with `origin` when given.
    pub async fn reports_by_id(
        &self,
        origin: Option<&str>,
        report_id: &str,
    ) -> Result<Vec<ReportRow>, StoreError> {
        Ok(sql!(
            self.reader().await?.conn(),
            fetch_all(
                "SELECT * FROM reports WHERE report_id = $1 AND ($2 IS NULL OR origin = $2)
                 ORDER BY seq LIMIT 2",
                report_id,
                origin,
            )
        ))
    }

    pub async fn list_reports(&self, f: &CaseFilter<'_>) -> Result<Vec<ReportRow>, StoreError> {
        Ok(sql!(
            self.reader().await?.conn(),
            fetch_all(
                "SELECT * FROM reports r
                 WHERE ($1 IS NULL OR (CASE WHEN r.relay = 1 THEN 'relayed' ELSE r.direction END) = $1)
                   AND ($2 IS NULL OR r.status = $2)
                   AND ($3 IS NULL OR r.category = $3)
                   AND ($4 IS NULL OR r.priority = $4)
                   AND ($5 IS NULL OR r.created_at_ms >= $5)
                   AND ($6 IS NULL OR r.origin = $6 OR r.received_from = $6
                        OR EXISTS (SELECT 1 FROM deliveries d WHERE d.report_seq = r.seq AND d.destination = $6))
                   AND ($7 IS NULL OR r.family = $7)
                 ORDER BY r.seq DESC LIMIT $8",
                f.direction,
                f.status,
                f.category,
                f.priority,
                f.created_after_ms,
                f.peer,
                f.family,
                f.limit,
            )
        ))
    }

    /// A page of the open queue: incoming cases still worked here (not
    /// final, not joined to another, not relayed), urgent first ('urgent'
    /// sorts after 'bulk') then oldest, optionally of one category; read
    /// from the `reports_open_queue` index.
    pub async fn open_queue(
        &self,
        category: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<ReportRow>, StoreError> {
        Ok(sql!(
            self.reader().await?.conn(),
            fetch_all(
                "SELECT * FROM reports r
                 WHERE r.direction = 'incoming' AND r.relay = 0 AND r.joined_to IS NULL
                   AND r.status NOT IN ('not-illegal', 'removed', 'moved', 'retracted')
                   AND ($1 IS NULL OR r.category = $1)
                 ORDER BY r.direction, r.priority DESC, r.created_at_ms, r.seq
                 LIMIT $2 OFFSET $3",
                category,
                limit,
                offset,
            )
        ))
    }

    pub async fn deliveries(&self, seq: i64) -> Result<Vec<DeliveryRow>, StoreError> {
        Ok(sql!(
            self.reader().await?.conn(),
            fetch_all(
                "SELECT d.destination, d.state, d.receipt, d.reason, d.delivered_at_ms,
                        COALESCE(MAX(o.attempts), 0) AS attempts, MAX(o.last_error) AS last_error,
                        d.next_hop, d.relayed_at_ms, d.via, d.handed_off_by
                 FROM deliveries d
                 LEFT JOIN outbox o ON o.report_seq = d.report_seq
                    AND o.peer = COALESCE(d.next_hop, d.destination) AND o.kind = 'report'
                 WHERE d.report_seq = $1
                 GROUP BY d.report_seq, d.destination ORDER BY d.destination",
                seq,
            )
        ))
    }

    /// For time-to-takedown figures: every destination of the reports
    /// `origin` sent since `since_ms`.
    pub async fn sent_since(
        &self,
        origin: &str,
        since_ms: i64,
    ) -> Result<Vec<SentRow>, StoreError> {
        Ok(sql!(
            self.reader().await?.conn(),
            fetch_all(
                "SELECT r.seq, r.category, COALESCE(r.hosting_country, '') AS country, r.created_at_ms,
                        d.destination, d.state, d.delivered_at_ms, d.relayed_at_ms, d.next_hop
                 FROM reports r JOIN deliveries d ON d.report_seq = r.seq
                 WHERE r.origin = $1 AND r.relay = 0 AND r.created_at_ms >= $2 ORDER BY r.seq",
                origin,
                since_ms,
            )
        ))
    }

    /// For time-to-takedown figures: cases worked here received since
    /// `since_ms` (not joined to another case).
    pub async fn worked_since(&self, since_ms: i64) -> Result<Vec<SentRow>, StoreError> {
        Ok(sql!(
            self.reader().await?.conn(),
            fetch_all(
                "SELECT r.seq, r.category, COALESCE(r.hosting_country, '') AS country,
                        r.stored_at_ms AS created_at_ms, r.origin AS destination, r.status AS state,
                        CAST(NULL AS BIGINT) AS delivered_at_ms, CAST(NULL AS BIGINT) AS relayed_at_ms,
                        CAST(NULL AS TEXT) AS next_hop
                 FROM reports r
                 WHERE r.direction IN ('incoming', 'local') AND r.relay = 0 AND r.joined_to IS NULL
                   AND r.stored_at_ms >= $1 ORDER BY r.seq",
                since_ms,
            )
        ))
    }

    /// The first time each status was reached, per report and signer, for
    /// reports since `since_seq`.
    pub async fn first_statuses(&self, since_seq: i64) -> Result<Vec<FirstStatus>, StoreError> {
        Ok(sql!(
            self.reader().await?.conn(),
            fetch_all(
                "SELECT report_seq, COALESCE(signer, '') AS signer, status, MIN(at_ms) AS at_ms
                 FROM status_history WHERE report_seq >= $1
                 GROUP BY report_seq, signer, status",
                since_seq,
            )
        ))
    }

    /// The reports that joined the case `seq` (same content, other origins).
    pub async fn joined(&self, seq: i64) -> Result<Vec<ReportRow>, StoreError> {
        joined(self.reader().await?.conn(), seq).await
    }

    /// The reports of `origin`'s case family `family` stored here
    /// (destinations, hosting country), in order.
    pub async fn family(&self, origin: &str, family: &str) -> Result<Vec<ReportRow>, StoreError> {
        Ok(sql!(
            self.reader().await?.conn(),
            fetch_all(
                "SELECT * FROM reports WHERE origin = $1 AND family = $2 ORDER BY seq",
                origin,
                family,
            )
        ))
    }

    pub async fn history(&self, seq: i64) -> Result<Vec<HistoryRow>, StoreError> {
        Ok(sql!(
            self.reader().await?.conn(),
            fetch_all(
                "SELECT status, reason, actor, signer, at_ms FROM status_history
                 WHERE report_seq = $1 ORDER BY id",
                seq,
            )
        ))
    }

    /// The next batch for `peer` of one kind: urgent first, then in order.
    pub async fn outbox_batch(
        &self,
        peer: &str,
        kind: &str,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let mut rows = outbox_rows(self.reader().await?.conn(), peer, kind, None, limit).await?;
        self.fill_bodies(&mut rows).await?;
        Ok(rows)
    }

    /// The next batch for one lane of `peer` (urgent or bulk), in order.
    pub async fn outbox_lane(
        &self,
        peer: &str,
        kind: &str,
        urgent: bool,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let mut rows =
            outbox_rows(self.reader().await?.conn(), peer, kind, Some(urgent), limit).await?;
        self.fill_bodies(&mut rows).await?;
        Ok(rows)
    }

    /// A report row queued with an empty body carries the report's own
    /// envelope as stored (the origin's first send): written once, in
    /// `reports`, not again in the outbox, its claims and its deletion.
    pub(super) async fn fill_bodies(&self, rows: &mut [OutboxRow]) -> Result<(), StoreError> {
        let carried = |r: &OutboxRow| r.body.is_empty() && r.kind == "report";
        let seqs: Vec<i64> = rows
            .iter()
            .filter(|r| carried(r))
            .map(|r| r.report_seq)
            .collect();
        let mut envelopes = std::collections::HashMap::with_capacity(seqs.len());
        for chunk in seqs.chunks(ROWS_PER_STATEMENT) {
            let found: Vec<(i64, Vec<u8>)> = built!(self.reader().await?.conn(), |q| q
                .push("SELECT seq, envelope FROM reports WHERE seq IN (")
                .push_list(chunk)
                .push(")") => fetch_all);
            envelopes.extend(found);
        }
        for r in rows.iter_mut().filter(|r| carried(r)) {
            if let Some(e) = envelopes.get(&r.report_seq) {
                r.body = e.clone();
            }
        }
        Ok(())
    }

    /// Whether urgent work waits for `peer`.
    pub async fn urgent_pending(&self, peer: &str) -> Result<bool, StoreError> {
        let n: i64 = sql!(
            self.reader().await?.conn(),
            scalar.fetch_one(
                "SELECT COUNT(*) FROM (SELECT 1 FROM outbox
                    WHERE peer = $1 AND kind IN ('report', 'status') AND urgent = 1 LIMIT 1) AS u",
                peer,
            )
        );
        Ok(n != 0)
    }

    /// Whether report `seq`'s envelope still waits in the outbox for
    /// `peer` (queued, or being sent).
    pub async fn report_queued_for(&self, seq: i64, peer: &str) -> Result<bool, StoreError> {
        let n: i64 = sql!(
            self.reader().await?.conn(),
            scalar.fetch_one(
                "SELECT COUNT(*) FROM (SELECT 1 FROM outbox
                    WHERE report_seq = $1 AND peer = $2 AND kind = 'report' LIMIT 1) AS q",
                seq,
                peer,
            )
        );
        Ok(n != 0)
    }

    /// Records a failed attempt for these outbox rows.
    pub async fn outbox_failed(&self, ids: &[i64], error: &str) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            built!(tx.conn(), |q| q
                .push("UPDATE outbox SET attempts = attempts + 1, last_error = ")
                .push_bind(error)
                .push(" WHERE id IN (")
                .push_list(chunk)
                .push(")") => execute);
        }
        tx.commit().await
    }

    pub async fn latest_checkpoint(&self) -> Result<Option<CheckpointRow>, StoreError> {
        latest_checkpoint(self.reader().await?.conn()).await
    }

    pub async fn checkpoint(&self, size: u64) -> Result<Option<CheckpointRow>, StoreError> {
        Ok(sql!(
            self.reader().await?.conn(),
            fetch_optional(
                "SELECT size, root, note, created_at_ms FROM checkpoints WHERE size = $1",
                i64::try_from(size).unwrap_or(i64::MAX),
            )
        ))
    }

    pub async fn cosignatures(&self, size: u64) -> Result<Vec<CosignatureRow>, StoreError> {
        Ok(sql!(
            self.reader().await?.conn(),
            fetch_all(
                "SELECT size, witness, line, timestamp FROM cosignatures WHERE size = $1
                 ORDER BY witness",
                i64::try_from(size).unwrap_or(i64::MAX),
            )
        ))
    }

    pub async fn witnessed(&self, log: &str) -> Result<Option<WitnessedRow>, StoreError> {
        Ok(sql!(
            self.reader().await?.conn(),
            fetch_optional(
                "SELECT log, size, root, note, cosignature, updated_at_ms FROM witnessed
                 WHERE log = $1",
                log,
            )
        ))
    }

    /// Calls `f` with the leaf hashes of audit entries `after + 1 ..=
    /// upto`, in order, read `LEAF_PAGE` at a time, so that checkpoints and
    /// proofs never hold the whole log in memory. Returns how many.
    pub async fn fold_leaves(
        &self,
        after: u64,
        upto: u64,
        f: impl FnMut(&Hash),
    ) -> Result<u64, StoreError> {
        self.fold_leaves_paged(after, upto, LEAF_PAGE, f).await
    }

    /// `fold_leaves` with a page size of `page`.
    pub async fn fold_leaves_paged(
        &self,
        after: u64,
        upto: u64,
        page: u64,
        f: impl FnMut(&Hash),
    ) -> Result<u64, StoreError> {
        fold_leaves(self.reader().await?.conn(), after, upto, page, f).await
    }

    /// Whether the database answers a read (for health).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let _: i64 = sql!(
            self.reader().await?.conn(),
            scalar.fetch_one("SELECT COUNT(*) FROM (SELECT 1 FROM audit_log LIMIT 1) AS a")
        );
        Ok(())
    }

    /// Per peer: undelivered items and the creation time of the oldest.
    pub async fn outbox_summary(&self) -> Result<Vec<QueueRow>, StoreError> {
        Ok(sql!(
            self.reader().await?.conn(),
            fetch_all(
                "SELECT peer, COUNT(*) AS depth, MIN(created_at_ms) AS oldest_ms FROM outbox
                 GROUP BY peer ORDER BY peer"
            )
        ))
    }

    pub async fn audit_entries_count(&self) -> Result<u64, StoreError> {
        audit_size(self.reader().await?.conn()).await
    }

    /// Number of cases by direction and status.
    pub async fn case_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        Ok(sql!(
            self.reader().await?.conn(),
            fetch_all(
                "SELECT direction, status, COUNT(*) FROM reports
                 GROUP BY direction, status ORDER BY direction, status"
            )
        ))
    }

    /// The latest audit entry of `kind`.
    pub async fn last_audit_of_kind(&self, kind: &str) -> Result<Option<AuditRow>, StoreError> {
        Ok(sql!(
            self.reader().await?.conn(),
            fetch_optional(
                "SELECT seq, at_ms, kind, actor, subject, detail FROM audit_log
                 WHERE kind = $1 ORDER BY seq DESC LIMIT 1",
                kind,
            )
        ))
    }

    pub async fn referrals(&self, seq: i64) -> Result<Vec<ReferralRow>, StoreError> {
        Ok(sql!(
            self.reader().await?.conn(),
            fetch_all(
                "SELECT agency, reference, referred_at_ms, actor FROM referrals
                 WHERE report_seq = $1 ORDER BY id",
                seq,
            )
        ))
    }

    /// The signed status updates (protobuf `Signed`) of a case, in order.
    pub async fn signed_status_updates(&self, seq: i64) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(sql!(
            self.reader().await?.conn(),
            scalar.fetch_all(
                "SELECT signed FROM status_history
                 WHERE report_seq = $1 AND signed IS NOT NULL ORDER BY id",
                seq,
            )
        ))
    }

    /// Every audit entry about `subject` (e.g. `ORIGIN/REPORT-ID`), in order.
    pub async fn audit_entries_about(&self, subject: &str) -> Result<Vec<AuditRow>, StoreError> {
        Ok(sql!(
            self.reader().await?.conn(),
            fetch_all(
                "SELECT seq, at_ms, kind, actor, subject, detail FROM audit_log
                 WHERE subject = $1 ORDER BY seq",
                subject,
            )
        ))
    }

    pub async fn audit_entries(&self, after: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        Ok(sql!(
            self.reader().await?.conn(),
            fetch_all(
                "SELECT seq, at_ms, kind, actor, subject, detail FROM audit_log
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
                after,
                limit,
            )
        ))
    }

    /// Reports not purged yet, with nothing left to send, whose record kind
    /// expired: `closed` (a final case status, last changed before
    /// `cutoff_ms`), `refused` (outgoing, refused by every receiver) or
    /// `delivered` (outgoing, delivered to every destination).
    pub async fn expired_reports(
        &self,
        kind: &str,
        cutoff_ms: i64,
        limit: i64,
    ) -> Result<Vec<ExpiredRow>, StoreError> {
        let sql: &'static str = match kind {
            "closed" => {
                "SELECT r.seq, r.origin, r.report_id, r.direction, r.status FROM reports r
                 WHERE r.purged_at_ms IS NULL AND r.updated_at_ms <= $1
                   AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.report_seq = r.seq)
                   AND r.status IN ('not-illegal', 'removed', 'moved', 'retracted')
                 ORDER BY r.seq LIMIT $2"
            }
            "refused" => {
                "SELECT r.seq, r.origin, r.report_id, r.direction, r.status FROM reports r
                 WHERE r.purged_at_ms IS NULL AND r.updated_at_ms <= $1
                   AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.report_seq = r.seq)
                   AND r.direction = 'outgoing' AND r.status = 'refused'
                 ORDER BY r.seq LIMIT $2"
            }
            "delivered" => {
                "SELECT r.seq, r.origin, r.report_id, r.direction, r.status FROM reports r
                 WHERE r.purged_at_ms IS NULL AND r.updated_at_ms <= $1
                   AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.report_seq = r.seq)
                   AND EXISTS (SELECT 1 FROM deliveries d WHERE d.report_seq = r.seq)
                   AND ((r.direction = 'outgoing' AND r.relay = 0
                         AND r.status NOT IN ('queued', 'held', 'no-hotline', 'refused',
                                              'not-illegal', 'removed', 'moved', 'retracted')
                         AND NOT EXISTS (SELECT 1 FROM deliveries d
                                         WHERE d.report_seq = r.seq AND d.state <> 'delivered'))
                        -- a copy this node only relayed, once every destination answered
                        OR (r.relay = 1
                            AND NOT EXISTS (SELECT 1 FROM deliveries d
                                            WHERE d.report_seq = r.seq AND d.state = 'queued')))
                 ORDER BY r.seq LIMIT $2"
            }
            _ => return Ok(Vec::new()),
        };
        Ok(sql!(
            self.reader().await?.conn(),
            fetch_all(sql, cutoff_ms, limit)
        ))
    }
}
