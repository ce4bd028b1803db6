-- A status update's id is chosen by its signer: unique per report and
-- signer (local changes have none), not across the whole table, so no one
-- can have another signer's update skipped by choosing its id first.
-- SQLite cannot drop a column's UNIQUE constraint: the table is rebuilt.
CREATE TABLE status_history_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    report_seq      INTEGER NOT NULL REFERENCES reports (seq),
    update_id       TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    reason          TEXT    NOT NULL,
    actor           TEXT    NOT NULL,
    signer          TEXT,
    signed          BLOB,                          -- protobuf Signed StatusUpdate
    at_ms           INTEGER NOT NULL
);
INSERT INTO status_history_new (id, report_seq, update_id, status, reason, actor, signer, signed, at_ms)
    SELECT id, report_seq, update_id, status, reason, actor, signer, signed, at_ms FROM status_history;
DROP TABLE status_history;
ALTER TABLE status_history_new RENAME TO status_history;
CREATE INDEX status_history_by_report ON status_history (report_seq, id);
CREATE UNIQUE INDEX status_history_by_signer_id
    ON status_history (report_seq, COALESCE(signer, ''), update_id);
