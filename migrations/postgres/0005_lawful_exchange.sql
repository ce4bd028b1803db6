-- Lawful exchange: law-enforcement referrals, retention, audited access.

-- A referral of a case to law enforcement, recorded by this hotline with
-- the status change `referred-to-law-enforcement`. Never sent to peers.
CREATE TABLE referrals (
    id              BIGSERIAL PRIMARY KEY,
    report_seq      BIGINT  NOT NULL REFERENCES reports (seq),
    update_id       TEXT    NOT NULL,              -- the status change that recorded it
    agency          TEXT    NOT NULL,
    reference       TEXT    NOT NULL,
    referred_at_ms  BIGINT  NOT NULL,
    actor           TEXT    NOT NULL,              -- the operator who recorded it
    recorded_at_ms  BIGINT  NOT NULL
);
CREATE INDEX referrals_by_report ON referrals (report_seq, id);

-- When retention purged the report's URLs, notes and evidence (the row stays
-- as a tombstone: (origin, report_id) stays unique forever, the payload
-- digest and receipts stay, so audit entries keep pointing at something).
ALTER TABLE reports ADD COLUMN purged_at_ms BIGINT;

-- Audit entries about one case (law-enforcement export, who looked at what).
CREATE INDEX audit_log_by_subject ON audit_log (subject, seq);
CREATE INDEX audit_log_by_actor ON audit_log (actor, seq);
