-- keygate schema v1 (SQLite). Kept in step with ../postgres/20261126000001_init.sql.
-- Timestamps are TEXT `YYYY-MM-DDTHH:MM:SS.ffffffZ` (sorts as time), money is BIGINT micro-USD,
-- ciphertexts are BLOB in keygate's self-describing format (ARCHITECTURE.md).

CREATE TABLE keygate_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- seed: user_encryption_keys. One row per DEK version; wrapped by the KEK (and, in
-- password mode, by the password key inside it).
CREATE TABLE user_keys (
    user_id      BLOB        NOT NULL,
    version      INTEGER     NOT NULL,
    wrapped_dek  BLOB ,               -- NULL once shredded
    kek_version  INTEGER     NOT NULL,
    protection   TEXT        NOT NULL CHECK (protection IN ('platform', 'password')),
    state        TEXT        NOT NULL CHECK (state IN ('active', 'retired', 'shredded')),
    created_at   TEXT        NOT NULL,
    updated_at   TEXT        NOT NULL,
    PRIMARY KEY (user_id, version)
);

-- seed: vault_metadata.
CREATE TABLE vaults (
    user_id                     BLOB PRIMARY KEY,
    kdf                         TEXT        NOT NULL,
    salt                        BLOB        NOT NULL,
    auto_lock_minutes           INTEGER     NOT NULL,
    require_password_on_decrypt BOOLEAN     NOT NULL,
    biometric_unlock_enabled    BOOLEAN     NOT NULL,
    failed_unlock_attempts      INTEGER     NOT NULL,
    last_failed_unlock_at       TEXT       ,
    locked_out_until            TEXT       ,
    last_unlocked_at            TEXT       ,
    created_at                  TEXT        NOT NULL,
    updated_at                  TEXT        NOT NULL
);

-- Unlock sessions: the DEK re-wrapped under the KEK for the session's lifetime, so any
-- instance can serve the user while the vault is unlocked; lock deletes the row.
CREATE TABLE vault_sessions (
    user_id        BLOB PRIMARY KEY,
    session_id     BLOB        NOT NULL,
    session_dek    BLOB        NOT NULL,
    dek_version    INTEGER     NOT NULL,
    kek_version    INTEGER     NOT NULL,
    unlocked_at    TEXT        NOT NULL,
    last_used_at   TEXT        NOT NULL,
    expires_at     TEXT        NOT NULL,
    ip_address     TEXT
);

-- seed: api_keys + encrypted_api_keys + encrypted_exchange_credentials + key columns of
-- exchange_connections + api_key_permissions (scopes and limits).
CREATE TABLE credentials (
    id                   BLOB PRIMARY KEY,
    user_id              BLOB        NOT NULL,
    exchange             TEXT        NOT NULL,
    label                TEXT        NOT NULL,
    environment          TEXT        NOT NULL CHECK (environment IN ('production', 'testnet')),
    status               TEXT        NOT NULL,
    key_type             TEXT        NOT NULL,
    api_key_hint         TEXT,
    public_key           TEXT,
    permissions          TEXT        NOT NULL,
    limits               TEXT        NOT NULL,
    current_generation   INTEGER     NOT NULL,
    expires_at           TEXT       ,
    usage_count          BIGINT      NOT NULL DEFAULT 0,
    last_used_at         TEXT       ,
    suspended_reason     TEXT,
    row_version          BIGINT      NOT NULL DEFAULT 1,
    created_at           TEXT        NOT NULL,
    updated_at           TEXT        NOT NULL,
    UNIQUE (user_id, label)
);
CREATE INDEX idx_credentials_user ON credentials (user_id, id);

-- One row per key generation (rotation chain). Secrets sealed with the user's DEK;
-- AAD binds (user, generation row id, field, DEK version).
CREATE TABLE credential_secrets (
    id                    BLOB PRIMARY KEY,
    credential_id         BLOB        NOT NULL REFERENCES credentials (id) ON DELETE CASCADE,
    user_id               BLOB        NOT NULL,
    generation            INTEGER     NOT NULL,
    dek_version           INTEGER     NOT NULL,
    api_key_ct            BLOB ,
    api_secret_ct         BLOB ,
    passphrase_ct         BLOB ,
    private_key_ct        BLOB ,
    status                TEXT        NOT NULL,
    rotated_from          BLOB,
    grace_period_ends_at  TEXT       ,
    last_nonce            BIGINT      NOT NULL DEFAULT 0,
    created_at            TEXT        NOT NULL,
    UNIQUE (credential_id, generation)
);
CREATE INDEX idx_credential_secrets_user ON credential_secrets (user_id);

-- seed: exchange_connections (minus the key columns, which live in credentials).
CREATE TABLE connections (
    id                    BLOB PRIMARY KEY,
    user_id               BLOB        NOT NULL,
    name                  TEXT        NOT NULL,
    exchange              TEXT        NOT NULL,
    credential_id         BLOB        NOT NULL REFERENCES credentials (id) ON DELETE RESTRICT,
    base_url              TEXT,
    timeout_ms            INTEGER     NOT NULL,
    max_retries           INTEGER     NOT NULL,
    is_default            BOOLEAN     NOT NULL,
    is_enabled            BOOLEAN     NOT NULL,
    status                TEXT        NOT NULL,
    scopes                TEXT ,
    limits                TEXT        NOT NULL,
    tags                  TEXT        NOT NULL,
    metadata              TEXT        NOT NULL,
    last_successful_ping  TEXT       ,
    last_error_message    TEXT,
    error_count           INTEGER     NOT NULL DEFAULT 0,
    warnings              TEXT        NOT NULL,
    last_verified_at      TEXT       ,
    verification_status   TEXT        NOT NULL,
    row_version           BIGINT      NOT NULL DEFAULT 1,
    created_at            TEXT        NOT NULL,
    updated_at            TEXT        NOT NULL,
    UNIQUE (user_id, name)
);
CREATE INDEX idx_connections_user ON connections (user_id, id);
CREATE INDEX idx_connections_credential ON connections (credential_id);

-- seed: exchange_balances.
CREATE TABLE balances (
    id             BLOB PRIMARY KEY,
    connection_id  BLOB        NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    user_id        BLOB        NOT NULL,
    asset          TEXT        NOT NULL,
    account_type   TEXT        NOT NULL,
    free           TEXT        NOT NULL,
    locked         TEXT        NOT NULL,
    total          TEXT        NOT NULL,
    usd_value      TEXT,
    last_price     TEXT,
    synced_at      TEXT        NOT NULL,
    UNIQUE (connection_id, asset, account_type)
);
CREATE INDEX idx_balances_user ON balances (user_id);

-- seed: exchange_api_calls, plus the policy decision and the notional it counted.
CREATE TABLE api_calls (
    id                    BLOB PRIMARY KEY,
    connection_id         BLOB        NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    credential_id         BLOB        NOT NULL,
    user_id               BLOB        NOT NULL,
    method                TEXT        NOT NULL,
    endpoint              TEXT        NOT NULL,
    class                 TEXT        NOT NULL,
    decision              TEXT        NOT NULL,
    deny_code             TEXT,
    status_code           INTEGER,
    response_time_ms      INTEGER,
    success               BOOLEAN     NOT NULL,
    error_message         TEXT,
    rate_limit_remaining  BIGINT,
    rate_limit_reset      TEXT       ,
    notional_usd_micros   BIGINT      NOT NULL DEFAULT 0,
    withdrawal_usd_micros BIGINT      NOT NULL DEFAULT 0,
    ip_address            TEXT,
    user_agent            TEXT,
    session_id            BLOB,
    created_at            TEXT        NOT NULL
);
CREATE INDEX idx_api_calls_connection ON api_calls (connection_id, id);
CREATE INDEX idx_api_calls_credential_time ON api_calls (credential_id, created_at);
CREATE INDEX idx_api_calls_user ON api_calls (user_id);

-- seed: api_key_usage_audit + vault_access_log, one append-only HMAC chain.
CREATE TABLE audit_events (
    seq                BIGINT PRIMARY KEY,
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
CREATE INDEX idx_audit_user ON audit_events (user_id, seq);
CREATE INDEX idx_audit_credential ON audit_events (credential_id, seq);

-- The audit chain's head: appends lock this one row, so the chain stays linear across
-- instances. It holds no user data, hence no row-level security.
CREATE TABLE audit_head (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    seq   BIGINT NOT NULL,
    hash  TEXT   NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, 'genesis');

-- Shared short-window counters (rate limits) for many instances.
CREATE TABLE rate_counters (
    bucket       TEXT   NOT NULL,
    window_start BIGINT NOT NULL,
    count        BIGINT NOT NULL,
    PRIMARY KEY (bucket, window_start)
);
