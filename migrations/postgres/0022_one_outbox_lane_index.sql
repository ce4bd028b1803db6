-- Performance (issue #27): `outbox_claim` (peer, kind, urgent, id) held the
-- same entries as `outbox_by_peer` (peer, kind, urgent DESC, id), which
-- serves the claim query (one lane of one peer, in id order) just as well.
-- Every queued row paid for a second index entry, written when it was
-- queued and deleted when it was sent.
DROP INDEX IF EXISTS outbox_claim;
