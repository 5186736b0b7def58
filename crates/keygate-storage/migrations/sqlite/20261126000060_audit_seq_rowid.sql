-- keygate schema: one B-tree fewer per audit event on SQLite (issue 7).
-- Kept in step with ../postgres/20261126000060_audit_seq_rowid.sql (a no-op there).
--
-- `seq BIGINT PRIMARY KEY` is not SQLite's rowid alias (only the exact type name INTEGER
-- is), so every event was stored twice over: in the table's rowid B-tree and in a
-- separate unique index on seq. As `INTEGER PRIMARY KEY` the sequence number IS the rowid.
-- Same columns in the same order, same values; the table is rebuilt to change that.

CREATE TABLE audit_events_new (
    seq                INTEGER PRIMARY KEY,
    id                 BLOB        NOT NULL UNIQUE,
    created_at         TEXT        NOT NULL,
    category           TEXT        NOT NULL,
    action             TEXT        NOT NULL,
    actor_id           BLOB,
    actor_role         TEXT        NOT NULL,
    user_id            BLOB,
    credential_id      BLOB,
    connection_id      BLOB,
    endpoint           TEXT,
    http_method        TEXT,
    ip_address         TEXT,
    user_agent         TEXT,
    device_fingerprint TEXT,
    geo_country        TEXT,
    geo_city           TEXT,
    session_id         BLOB,
    success            BOOLEAN     NOT NULL,
    status_code        INTEGER,
    reason             TEXT,
    risk_score         INTEGER     NOT NULL,
    risk_reasons       TEXT        NOT NULL,
    metadata           TEXT        NOT NULL,
    prev_hash          TEXT        NOT NULL,
    hash               TEXT        NOT NULL
);

INSERT INTO audit_events_new SELECT * FROM audit_events;
DROP TABLE audit_events;
ALTER TABLE audit_events_new RENAME TO audit_events;
CREATE INDEX idx_audit_user ON audit_events (user_id, seq);
CREATE INDEX idx_audit_credential ON audit_events (credential_id, seq);
CREATE INDEX idx_audit_connection ON audit_events (connection_id, seq);
