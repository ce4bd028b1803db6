-- Case views join deliveries to the outbox by report.
CREATE INDEX outbox_by_report ON outbox (report_seq, peer, kind);
