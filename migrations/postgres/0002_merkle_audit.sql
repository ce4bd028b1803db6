-- The audit log becomes an RFC 6962 Merkle tree with signed checkpoints
-- and peer cosignatures (C2SP tlog-checkpoint, tlog-cosignature).

-- RFC 6962 leaf hash H(0x00 || entry) of each entry (see src/audit).
-- Rows written before this migration are filled in at start-up.
ALTER TABLE audit_log ADD COLUMN leaf_hash BYTEA;

-- Checkpoints this node signed of its own log: a signed note per size.
CREATE TABLE checkpoints (
    size            BIGINT  PRIMARY KEY,
    root            BYTEA   NOT NULL,
    note            TEXT    NOT NULL,              -- the signed note, as signed
    created_at_ms   BIGINT  NOT NULL
);

-- Cosignatures peers (witnesses) returned for those checkpoints.
CREATE TABLE cosignatures (
    size            BIGINT  NOT NULL REFERENCES checkpoints (size),
    witness         TEXT    NOT NULL,              -- node id of the witness
    line            TEXT    NOT NULL,              -- the cosignature line
    timestamp       BIGINT  NOT NULL,
    PRIMARY KEY (size, witness)
);

-- As a witness: the latest checkpoint of each peer's log that this node
-- checked and cosigned. Only ever moves forward, consistently.
CREATE TABLE witnessed (
    log             TEXT    PRIMARY KEY,           -- node id of the log owner
    size            BIGINT  NOT NULL,
    root            BYTEA   NOT NULL,
    note            TEXT    NOT NULL,              -- their checkpoint note
    cosignature     TEXT    NOT NULL,              -- our cosignature line
    updated_at_ms   BIGINT  NOT NULL
);
