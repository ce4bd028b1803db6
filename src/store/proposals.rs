//! The `close_proposals` table: a case's pending close that waits for a
//! second person (`node::cases::propose_close`), written once for both
//! backends. The node decides every value; these statements only read,
//! store and delete a row.

use super::*;

impl Store {
    /// The pending close proposal of case `seq`, if any.
    pub async fn close_proposal(&self, seq: i64) -> Result<Option<ProposalRow>, StoreError> {
        Ok(sql!(
            self.reader().await?.conn(),
            fetch_optional(
                "SELECT report_seq, status, from_status, reason, proposed_by, proposed_at_ms
                 FROM close_proposals WHERE report_seq = $1",
                seq
            )
        ))
    }
}

impl Tx {
    /// The pending close proposal of case `seq`, inside this transaction.
    pub async fn close_proposal(&mut self, seq: i64) -> Result<Option<ProposalRow>, StoreError> {
        Ok(sql!(
            self.conn(),
            fetch_optional(
                "SELECT report_seq, status, from_status, reason, proposed_by, proposed_at_ms
                 FROM close_proposals WHERE report_seq = $1",
                seq
            )
        ))
    }

    /// Records a proposal, replacing any earlier one of the case.
    pub async fn put_close_proposal(&mut self, p: &ProposalRow) -> Result<(), StoreError> {
        self.delete_close_proposal(p.report_seq).await?;
        sql!(
            self.conn(),
            execute(
                "INSERT INTO close_proposals
                     (report_seq, status, from_status, reason, proposed_by, proposed_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                p.report_seq,
                &p.status,
                &p.from_status,
                &p.reason,
                &p.proposed_by,
                p.proposed_at_ms,
            )
        );
        Ok(())
    }

    /// Removes case `seq`'s proposal; whether there was one.
    pub async fn delete_close_proposal(&mut self, seq: i64) -> Result<bool, StoreError> {
        let n = sql!(
            self.conn(),
            execute("DELETE FROM close_proposals WHERE report_seq = $1", seq)
        );
        Ok(n > 0)
    }
}
