-- alertrelay schema, SQLite. One numbered file per change; applied at start-up.

-- Every report this node knows: submitted here (outgoing, local) or
-- received from a peer (incoming). (origin, report_id) is unique forever.
CREATE TABLE reports (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    report_id       TEXT    NOT NULL,
    origin          TEXT    NOT NULL,
    direction       TEXT    NOT NULL CHECK (direction IN ('incoming', 'outgoing', 'local')),
    category        TEXT    NOT NULL,
    priority        TEXT    NOT NULL CHECK (priority IN ('bulk', 'urgent')),
    status          TEXT    NOT NULL,
    hosting_country TEXT,
    route           TEXT    NOT NULL,              -- JSON: the routing decision and its evidence
    payload         BLOB    NOT NULL,              -- the origin's exact signed payload bytes
    payload_digest  BLOB    NOT NULL,              -- SHA-256 of payload
    envelope        BLOB    NOT NULL,              -- the envelope as sent or received (protobuf)
    received_from   TEXT,                          -- incoming: the node that delivered it
    receipt         BLOB,                          -- incoming: the receipt we signed (protobuf Signed)
    created_at_ms   INTEGER NOT NULL,              -- origin's clock
    stored_at_ms    INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL,
    UNIQUE (origin, report_id)
);
CREATE INDEX reports_report_id ON reports (report_id);

-- Delivery of an outgoing report to each destination.
CREATE TABLE deliveries (
    report_seq      INTEGER NOT NULL REFERENCES reports (seq),
    destination     TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('queued', 'delivered', 'refused')),
    receipt         BLOB,                          -- the receiver's signed receipt (protobuf Signed)
    reason          TEXT,
    delivered_at_ms INTEGER,
    PRIMARY KEY (report_seq, destination)
);

-- What still has to be sent, per peer. A row leaves only when the peer's
-- signed answer has been stored.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    peer            TEXT    NOT NULL,
    kind            TEXT    NOT NULL CHECK (kind IN ('report', 'status')),
    urgent          INTEGER NOT NULL,
    report_seq      INTEGER NOT NULL REFERENCES reports (seq),
    body            BLOB    NOT NULL,              -- protobuf Envelope or Signed status update
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at_ms   INTEGER NOT NULL
);
CREATE INDEX outbox_by_peer ON outbox (peer, kind, urgent DESC, id);

-- Case status history, local changes and updates signed by the receiver.
CREATE TABLE status_history (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    report_seq      INTEGER NOT NULL REFERENCES reports (seq),
    update_id       TEXT    NOT NULL UNIQUE,
    status          TEXT    NOT NULL,
    reason          TEXT    NOT NULL,
    actor           TEXT    NOT NULL,
    signer          TEXT,
    signed          BLOB,                          -- protobuf Signed StatusUpdate
    at_ms           INTEGER NOT NULL
);
CREATE INDEX status_history_by_report ON status_history (report_seq, id);

-- The hash-chained audit log (see src/audit). Append-only.
CREATE TABLE audit_log (
    seq             INTEGER PRIMARY KEY,
    at_ms           INTEGER NOT NULL,
    kind            TEXT    NOT NULL,
    actor           TEXT    NOT NULL,
    subject         TEXT    NOT NULL,
    detail          TEXT    NOT NULL,
    prev_hash       BLOB    NOT NULL,
    hash            BLOB    NOT NULL
);
