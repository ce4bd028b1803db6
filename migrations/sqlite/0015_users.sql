-- Personal accounts of this hotline's people (issue #23): who may log in
-- to the console, with which role, and the state of their credentials.
-- `password_hash` is an argon2id PHC string; `totp_secret` the RFC 6238
-- shared secret in base32 (the node must read it to check codes);
-- `enrol_code_hash` the SHA-256 of the one-time enrolment code (the code
-- itself is shown once and never stored).
CREATE TABLE users (
    name             TEXT   PRIMARY KEY,
    role             TEXT   NOT NULL,
    state            TEXT   NOT NULL,          -- enrolling, active, disabled
    password_hash    TEXT,
    totp_secret      TEXT,
    totp_last_step   BIGINT NOT NULL DEFAULT 0, -- a code is accepted once
    enrol_code_hash  TEXT,
    enrol_expires_ms BIGINT NOT NULL DEFAULT 0,
    failures         BIGINT NOT NULL DEFAULT 0, -- failed logins in a row
    locked_until_ms  BIGINT NOT NULL DEFAULT 0,
    created_at_ms    BIGINT NOT NULL,
    created_by       TEXT   NOT NULL,
    last_login_ms    BIGINT
);
CREATE UNIQUE INDEX users_by_enrol_code ON users (enrol_code_hash);
