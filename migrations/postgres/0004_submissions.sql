-- Idempotent intake: a key the client chooses per submission, so that a
-- retry after a lost answer returns the original report instead of a
-- second one.
CREATE TABLE submissions (
    operator        TEXT    NOT NULL,              -- the submitting operator's identity
    submission_id   TEXT    NOT NULL,
    report_seq      BIGINT  NOT NULL REFERENCES reports (seq),
    PRIMARY KEY (operator, submission_id)
);
