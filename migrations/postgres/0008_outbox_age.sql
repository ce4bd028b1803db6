-- Queue depth and oldest age per peer (`peers`, `status`, /metrics) from
-- the index alone: without it, every scrape read every queued body.
CREATE INDEX outbox_by_peer_age ON outbox (peer, created_at_ms);
