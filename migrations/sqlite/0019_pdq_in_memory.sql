-- Near-duplicate media are matched in memory (report::near), from the
-- `pdq:<64 hex>` keys, read once at start and then as reports are stored.
-- The 16 chunk keys per hash that 0009 added are no longer read.
DELETE FROM case_keys WHERE key LIKE 'pdqc:%';
CREATE INDEX case_keys_pdq ON case_keys (report_seq) WHERE key LIKE 'pdq:%';
