-- Alerts (issue #26): each event the node raised, once per condition
-- (`dedup_key`: a case overdue, a peer silent since a time, a certificate
-- by its expiry), and its notifications, one per channel, kept after
-- delivery so that an event is never notified twice. `id` is the
-- idempotency key receivers see. Bodies carry no reported URL or host
-- name unless a route opted in (then only in `alert_deliveries.body`).
CREATE TABLE alerts (
    id             TEXT    PRIMARY KEY,
    dedup_key      TEXT    NOT NULL UNIQUE,
    event          TEXT    NOT NULL,
    severity       TEXT    NOT NULL,
    summary        TEXT    NOT NULL,          -- JSON: the event's facts
    raised_at_ms   BIGINT  NOT NULL
);
CREATE TABLE alert_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    alert_id        TEXT    NOT NULL REFERENCES alerts (id),
    channel         TEXT    NOT NULL,          -- webhook:NAME or email:a@x,b@y
    body            TEXT    NOT NULL,          -- JSON as sent
    attempts        BIGINT  NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_ms BIGINT  NOT NULL,
    lease_until_ms  BIGINT  NOT NULL DEFAULT 0,
    delivered_at_ms BIGINT,
    UNIQUE (alert_id, channel)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (delivered_at_ms, next_attempt_ms);
