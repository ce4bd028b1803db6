-- Replicas of one node (issue #8): a worker claims outbox rows before it
-- sends them (`FOR UPDATE SKIP LOCKED`). `claimed_by` is the claiming
-- replica's id, `lease_until_ms` when the claim lapses (a dead replica's
-- rows are taken over after it). An unclaimed row has both NULL.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox ADD COLUMN lease_until_ms BIGINT;
-- The claim query: one lane of one peer, in order.
CREATE INDEX outbox_claim ON outbox (peer, kind, urgent, id);
