-- A status update's id is chosen by its signer: unique per report and
-- signer (local changes have none), not across the whole table, so no one
-- can have another signer's update skipped by choosing its id first.
ALTER TABLE status_history DROP CONSTRAINT status_history_update_id_key;
CREATE UNIQUE INDEX status_history_by_signer_id
    ON status_history (report_seq, COALESCE(signer, ''), update_id);
