-- alertrelay schema, PostgreSQL: the same final schema as migrations/sqlite,
-- one file per SQLite migration (BIGINT for INTEGER, BYTEA for BLOB,
-- BIGSERIAL for AUTOINCREMENT). Applied at start-up.

-- Every report this node knows: submitted here (outgoing, local) or
-- received from a peer (incoming). (origin, report_id) is unique forever.
CREATE TABLE reports (
    seq             BIGSERIAL PRIMARY KEY,
    report_id       TEXT    NOT NULL,
    origin          TEXT    NOT NULL,
    direction       TEXT    NOT NULL CHECK (direction IN ('incoming', 'outgoing', 'local')),
    category        TEXT    NOT NULL,
    priority        TEXT    NOT NULL CHECK (priority IN ('bulk', 'urgent')),
    status          TEXT    NOT NULL,
    hosting_country TEXT,
    route           TEXT    NOT NULL,              -- JSON: the routing decision and its evidence
    payload         BYTEA   NOT NULL,              -- the origin's exact signed payload bytes
    payload_digest  BYTEA   NOT NULL,              -- SHA-256 of payload
    envelope        BYTEA   NOT NULL,              -- the envelope as sent or received (protobuf)
    received_from   TEXT,                          -- incoming: the node that delivered it
    receipt         BYTEA,                         -- incoming: the receipt we signed (protobuf Signed)
    created_at_ms   BIGINT  NOT NULL,              -- origin's clock
    stored_at_ms    BIGINT  NOT NULL,
    updated_at_ms   BIGINT  NOT NULL,
    UNIQUE (origin, report_id)
);
CREATE INDEX reports_report_id ON reports (report_id);

-- Delivery of an outgoing report to each destination.
CREATE TABLE deliveries (
    report_seq      BIGINT  NOT NULL REFERENCES reports (seq),
    destination     TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('queued', 'delivered', 'refused')),
    receipt         BYTEA,                         -- the receiver's signed receipt (protobuf Signed)
    reason          TEXT,
    delivered_at_ms BIGINT,
    PRIMARY KEY (report_seq, destination)
);

-- What still has to be sent, per peer. A row leaves only when the peer's
-- signed answer has been stored.
CREATE TABLE outbox (
    id              BIGSERIAL PRIMARY KEY,
    peer            TEXT    NOT NULL,
    kind            TEXT    NOT NULL CHECK (kind IN ('report', 'status')),
    urgent          BIGINT  NOT NULL,
    report_seq      BIGINT  NOT NULL REFERENCES reports (seq),
    body            BYTEA   NOT NULL,              -- protobuf Envelope or Signed status update
    attempts        BIGINT  NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at_ms   BIGINT  NOT NULL
);
CREATE INDEX outbox_by_peer ON outbox (peer, kind, urgent DESC, id);

-- Case status history, local changes and updates signed by the receiver.
CREATE TABLE status_history (
    id              BIGSERIAL PRIMARY KEY,
    report_seq      BIGINT  NOT NULL REFERENCES reports (seq),
    update_id       TEXT    NOT NULL UNIQUE,
    status          TEXT    NOT NULL,
    reason          TEXT    NOT NULL,
    actor           TEXT    NOT NULL,
    signer          TEXT,
    signed          BYTEA,                         -- protobuf Signed StatusUpdate
    at_ms           BIGINT  NOT NULL
);
CREATE INDEX status_history_by_report ON status_history (report_seq, id);

-- The hash-chained audit log (see src/audit). Append-only.
CREATE TABLE audit_log (
    seq             BIGINT  PRIMARY KEY,
    at_ms           BIGINT  NOT NULL,
    kind            TEXT    NOT NULL,
    actor           TEXT    NOT NULL,
    subject         TEXT    NOT NULL,
    detail          TEXT    NOT NULL,
    prev_hash       BYTEA   NOT NULL,
    hash            BYTEA   NOT NULL
);
