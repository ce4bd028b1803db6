-- A case's pending "not illegal" close, when the node's policy
-- (`[cases] not_illegal_needs_supervisor`) wants a second person
-- (issue #23): who proposed it, from which status, and why. At most one
-- per case; it holds only while the case keeps that status, and goes when
-- a supervisor confirms or rejects it.
CREATE TABLE close_proposals (
    report_seq     BIGINT PRIMARY KEY,
    status         TEXT   NOT NULL,   -- the status proposed (not-illegal)
    from_status    TEXT   NOT NULL,   -- the case's status when proposed
    reason         TEXT   NOT NULL,
    proposed_by    TEXT   NOT NULL,   -- the proposer's identity, as audited
    proposed_at_ms BIGINT NOT NULL
);

-- The console's queue (issue #23): incoming cases still open here, urgent
-- first ('urgent' sorts after 'bulk', hence DESC) then oldest, read a page
-- at a time from this index whatever the number of cases stored.
CREATE INDEX reports_open_queue ON reports (direction, priority DESC, created_at_ms, seq)
    WHERE relay = 0 AND joined_to IS NULL
      AND status NOT IN ('not-illegal', 'removed', 'moved', 'retracted');
