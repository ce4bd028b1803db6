-- Relays and handoffs (issue #3).

-- Set on a report this node only passes on as a relay: not a case here.
ALTER TABLE reports ADD COLUMN relay BIGINT  NOT NULL DEFAULT 0;

-- The node a report for this destination is handed to (its outermost
-- relay); NULL when it goes to the destination directly.
ALTER TABLE deliveries ADD COLUMN next_hop TEXT;
-- The relay's signed receipt (outcome "relayed") and when it came.
ALTER TABLE deliveries ADD COLUMN relay_receipt BYTEA;
ALTER TABLE deliveries ADD COLUMN relayed_at_ms BIGINT;
-- The relays the destination's receipt came back through, comma-separated.
ALTER TABLE deliveries ADD COLUMN via TEXT;
-- Set when the destination took the case over from another destination
-- (a handoff): the node that handed it over.
ALTER TABLE deliveries ADD COLUMN handed_off_by TEXT;

-- 1 when `body` is a Returned (a receipt or status update passed back
-- towards the origin through relays) rather than a Signed status update.
ALTER TABLE outbox ADD COLUMN returned BIGINT  NOT NULL DEFAULT 0;

-- Case lifecycle (issue #5).

-- The origin's latest signed correction (protobuf Signed Amendment): the
-- case shows its category, hashes and notes over the original's.
ALTER TABLE reports ADD COLUMN correction BYTEA;
-- Set on a report that joined an existing case here (same URL or media):
-- the seq of that case. The case is worked once; every origin hears.
ALTER TABLE reports ADD COLUMN joined_to BIGINT  REFERENCES reports (seq);
CREATE INDEX reports_joined_to ON reports (joined_to) WHERE joined_to IS NOT NULL;

-- What identifies a case's content: `url:<normalised URL>`,
-- `sha256:<hex>`, `md5:<hex>`; PDQ hashes (`pdq:<hex>`) are compared by
-- Hamming distance.
CREATE TABLE case_keys (
    key             TEXT    NOT NULL,
    report_seq      BIGINT  NOT NULL REFERENCES reports (seq),
    PRIMARY KEY (key, report_seq)
);
CREATE INDEX case_keys_by_report ON case_keys (report_seq);
