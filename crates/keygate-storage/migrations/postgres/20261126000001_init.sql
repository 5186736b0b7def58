-- keygate schema v1 (PostgreSQL). Kept in step with ../sqlite/20261126000001_init.sql.
-- Timestamps are TIMESTAMPTZ at microsecond precision, money is BIGINT micro-USD,
-- ciphertexts are BYTEA in keygate's self-describing format (ARCHITECTURE.md).

CREATE TABLE keygate_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- seed: user_encryption_keys. One row per DEK version; wrapped by the KEK (and, in
-- password mode, by the password key inside it).
CREATE TABLE user_keys (
    user_id      UUID        NOT NULL,
    version      INTEGER     NOT NULL,
    wrapped_dek  BYTEA,               -- NULL once shredded
    kek_version  INTEGER     NOT NULL,
    protection   TEXT        NOT NULL CHECK (protection IN ('platform', 'password')),
    state        TEXT        NOT NULL CHECK (state IN ('active', 'retired', 'shredded')),
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, version)
);

-- seed: vault_metadata.
CREATE TABLE vaults (
    user_id                     UUID PRIMARY KEY,
    kdf                         TEXT        NOT NULL,
    salt                        BYTEA       NOT NULL,
    auto_lock_minutes           INTEGER     NOT NULL,
    require_password_on_decrypt BOOLEAN     NOT NULL,
    biometric_unlock_enabled    BOOLEAN     NOT NULL,
    failed_unlock_attempts      INTEGER     NOT NULL,
    last_failed_unlock_at       TIMESTAMPTZ,
    locked_out_until            TIMESTAMPTZ,
    last_unlocked_at            TIMESTAMPTZ,
    created_at                  TIMESTAMPTZ NOT NULL,
    updated_at                  TIMESTAMPTZ NOT NULL
);

-- Unlock sessions: the DEK re-wrapped under the KEK for the session's lifetime, so any
-- instance can serve the user while the vault is unlocked; lock deletes the row.
CREATE TABLE vault_sessions (
    user_id        UUID PRIMARY KEY,
    session_id     UUID        NOT NULL,
    session_dek    BYTEA       NOT NULL,
    dek_version    INTEGER     NOT NULL,
    kek_version    INTEGER     NOT NULL,
    unlocked_at    TIMESTAMPTZ NOT NULL,
    last_used_at   TIMESTAMPTZ NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL,
    ip_address     TEXT
);

-- seed: api_keys + encrypted_api_keys + encrypted_exchange_credentials + key columns of
-- exchange_connections + api_key_permissions (scopes and limits).
CREATE TABLE credentials (
    id                   UUID PRIMARY KEY,
    user_id              UUID        NOT NULL,
    exchange             TEXT        NOT NULL,
    label                TEXT        NOT NULL,
    environment          TEXT        NOT NULL CHECK (environment IN ('production', 'testnet')),
    status               TEXT        NOT NULL,
    key_type             TEXT        NOT NULL,
    api_key_hint         TEXT,
    public_key           TEXT,
    permissions          JSONB       NOT NULL,
    limits               JSONB       NOT NULL,
    current_generation   INTEGER     NOT NULL,
    expires_at           TIMESTAMPTZ,
    usage_count          BIGINT      NOT NULL DEFAULT 0,
    last_used_at         TIMESTAMPTZ,
    suspended_reason     TEXT,
    row_version          BIGINT      NOT NULL DEFAULT 1,
    created_at           TIMESTAMPTZ NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL,
    UNIQUE (user_id, label)
);
CREATE INDEX idx_credentials_user ON credentials (user_id, id);

-- One row per key generation (rotation chain). Secrets sealed with the user's DEK;
-- AAD binds (user, generation row id, field, DEK version).
CREATE TABLE credential_secrets (
    id                    UUID PRIMARY KEY,
    credential_id         UUID        NOT NULL REFERENCES credentials (id) ON DELETE CASCADE,
    user_id               UUID        NOT NULL,
    generation            INTEGER     NOT NULL,
    dek_version           INTEGER     NOT NULL,
    api_key_ct            BYTEA,
    api_secret_ct         BYTEA,
    passphrase_ct         BYTEA,
    private_key_ct        BYTEA,
    status                TEXT        NOT NULL,
    rotated_from          UUID,
    grace_period_ends_at  TIMESTAMPTZ,
    last_nonce            BIGINT      NOT NULL DEFAULT 0,
    created_at            TIMESTAMPTZ NOT NULL,
    UNIQUE (credential_id, generation)
);
CREATE INDEX idx_credential_secrets_user ON credential_secrets (user_id);

-- seed: exchange_connections (minus the key columns, which live in credentials).
CREATE TABLE connections (
    id                    UUID PRIMARY KEY,
    user_id               UUID        NOT NULL,
    name                  TEXT        NOT NULL,
    exchange              TEXT        NOT NULL,
    credential_id         UUID        NOT NULL REFERENCES credentials (id) ON DELETE RESTRICT,
    base_url              TEXT,
    timeout_ms            INTEGER     NOT NULL,
    max_retries           INTEGER     NOT NULL,
    is_default            BOOLEAN     NOT NULL,
    is_enabled            BOOLEAN     NOT NULL,
    status                TEXT        NOT NULL,
    scopes                JSONB,
    limits                JSONB       NOT NULL,
    tags                  JSONB       NOT NULL,
    metadata              JSONB       NOT NULL,
    last_successful_ping  TIMESTAMPTZ,
    last_error_message    TEXT,
    error_count           INTEGER     NOT NULL DEFAULT 0,
    warnings              JSONB       NOT NULL,
    last_verified_at      TIMESTAMPTZ,
    verification_status   TEXT        NOT NULL,
    row_version           BIGINT      NOT NULL DEFAULT 1,
    created_at            TIMESTAMPTZ NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL,
    UNIQUE (user_id, name)
);
CREATE INDEX idx_connections_user ON connections (user_id, id);
CREATE INDEX idx_connections_credential ON connections (credential_id);

-- seed: exchange_balances.
CREATE TABLE balances (
    id             UUID PRIMARY KEY,
    connection_id  UUID        NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    user_id        UUID        NOT NULL,
    asset          TEXT        NOT NULL,
    account_type   TEXT        NOT NULL,
    free           TEXT        NOT NULL,
    locked         TEXT        NOT NULL,
    total          TEXT        NOT NULL,
    usd_value      TEXT,
    last_price     TEXT,
    synced_at      TIMESTAMPTZ NOT NULL,
    UNIQUE (connection_id, asset, account_type)
);
CREATE INDEX idx_balances_user ON balances (user_id);

-- seed: exchange_api_calls, plus the policy decision and the notional it counted.
CREATE TABLE api_calls (
    id                    UUID PRIMARY KEY,
    connection_id         UUID        NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    credential_id         UUID        NOT NULL,
    user_id               UUID        NOT NULL,
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
    rate_limit_reset      TIMESTAMPTZ,
    notional_usd_micros   BIGINT      NOT NULL DEFAULT 0,
    withdrawal_usd_micros BIGINT      NOT NULL DEFAULT 0,
    ip_address            TEXT,
    user_agent            TEXT,
    session_id            UUID,
    created_at            TIMESTAMPTZ NOT NULL
);
CREATE INDEX idx_api_calls_connection ON api_calls (connection_id, id);
CREATE INDEX idx_api_calls_credential_time ON api_calls (credential_id, created_at);
CREATE INDEX idx_api_calls_user ON api_calls (user_id);

-- seed: api_key_usage_audit + vault_access_log, one append-only HMAC chain.
CREATE TABLE audit_events (
    seq                BIGINT PRIMARY KEY,
    id                 UUID        NOT NULL UNIQUE,
    created_at         TIMESTAMPTZ NOT NULL,
    category           TEXT        NOT NULL,
    action             TEXT        NOT NULL,
    actor_id           UUID,
    actor_role         TEXT        NOT NULL,
    user_id            UUID,
    credential_id      UUID,
    connection_id      UUID,
    endpoint           TEXT,
    http_method        TEXT,
    ip_address         TEXT,
    user_agent         TEXT,
    device_fingerprint TEXT,
    geo_country        TEXT,
    geo_city           TEXT,
    session_id         UUID,
    success            BOOLEAN     NOT NULL,
    status_code        INTEGER,
    reason             TEXT,
    risk_score         INTEGER     NOT NULL,
    risk_reasons       JSONB       NOT NULL,
    metadata           JSONB       NOT NULL,
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

-- ---------------------------------------------------------------------------------------
-- Row-level security: the second wall. Every request transaction runs as keygate_app
-- (NOLOGIN, NOBYPASSRLS, not the owner) with its caller in transaction-local settings:
--   keygate.user_id  the caller's user id (uuid text)
--   keygate.role     'user' | 'admin' | 'service'
-- 'service' is the platform identity (background jobs, operator CLI, backup): it sees
-- every user's rows through the explicit *_service policies below, never via BYPASSRLS.
DO $$
BEGIN
    CREATE ROLE keygate_app NOLOGIN NOBYPASSRLS;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;
DO $$
BEGIN
    EXECUTE format('GRANT keygate_app TO %I', current_user);
EXCEPTION WHEN others THEN NULL;
END
$$;

CREATE FUNCTION keygate_uid() RETURNS uuid LANGUAGE sql STABLE AS
$$ SELECT NULLIF(current_setting('keygate.user_id', true), '')::uuid $$;
CREATE FUNCTION keygate_role() RETURNS text LANGUAGE sql STABLE AS
$$ SELECT COALESCE(NULLIF(current_setting('keygate.role', true), ''), 'none') $$;

GRANT SELECT ON keygate_meta TO keygate_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON user_keys, vaults, vault_sessions, credentials,
    credential_secrets, connections, balances, api_calls, rate_counters TO keygate_app;
-- Audit rows may only be appended and read by the app (tamper-evident by the HMAC chain).
GRANT SELECT, INSERT ON audit_events TO keygate_app;
GRANT SELECT, UPDATE ON audit_head TO keygate_app;

ALTER TABLE user_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE vaults ENABLE ROW LEVEL SECURITY;
ALTER TABLE vault_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE credentials ENABLE ROW LEVEL SECURITY;
ALTER TABLE credential_secrets ENABLE ROW LEVEL SECURITY;
ALTER TABLE connections ENABLE ROW LEVEL SECURITY;
ALTER TABLE balances ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_calls ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE rate_counters ENABLE ROW LEVEL SECURITY;

-- Owner-only on every user table (seed: "Users can ... own ..."), plus the service identity.
CREATE POLICY owner_all ON user_keys FOR ALL TO keygate_app
    USING (user_id = keygate_uid() OR keygate_role() = 'service')
    WITH CHECK (user_id = keygate_uid() OR keygate_role() = 'service');
CREATE POLICY owner_all ON vaults FOR ALL TO keygate_app
    USING (user_id = keygate_uid() OR keygate_role() = 'service')
    WITH CHECK (user_id = keygate_uid() OR keygate_role() = 'service');
CREATE POLICY owner_all ON vault_sessions FOR ALL TO keygate_app
    USING (user_id = keygate_uid() OR keygate_role() = 'service')
    WITH CHECK (user_id = keygate_uid() OR keygate_role() = 'service');
CREATE POLICY owner_all ON credentials FOR ALL TO keygate_app
    USING (user_id = keygate_uid() OR keygate_role() = 'service')
    WITH CHECK (user_id = keygate_uid() OR keygate_role() = 'service');
CREATE POLICY owner_all ON credential_secrets FOR ALL TO keygate_app
    USING (user_id = keygate_uid() OR keygate_role() = 'service')
    WITH CHECK (user_id = keygate_uid() OR keygate_role() = 'service');
CREATE POLICY owner_all ON connections FOR ALL TO keygate_app
    USING (user_id = keygate_uid() OR keygate_role() = 'service')
    WITH CHECK (user_id = keygate_uid() OR keygate_role() = 'service');
CREATE POLICY owner_all ON balances FOR ALL TO keygate_app
    USING (user_id = keygate_uid() OR keygate_role() = 'service')
    WITH CHECK (user_id = keygate_uid() OR keygate_role() = 'service');
CREATE POLICY owner_all ON api_calls FOR ALL TO keygate_app
    USING (user_id = keygate_uid() OR keygate_role() = 'service')
    WITH CHECK (user_id = keygate_uid() OR keygate_role() = 'service');
-- Audit: owners and admins read; anyone acting for the user appends.
CREATE POLICY audit_read ON audit_events FOR SELECT TO keygate_app
    USING (user_id = keygate_uid() OR keygate_role() IN ('admin', 'service'));
CREATE POLICY audit_append ON audit_events FOR INSERT TO keygate_app
    WITH CHECK (user_id IS NULL OR user_id = keygate_uid() OR keygate_role() IN ('admin', 'service'));
-- Rate counters are keyed by credential, not user: any authenticated context may count.
CREATE POLICY counters_all ON rate_counters FOR ALL TO keygate_app
    USING (keygate_role() <> 'none') WITH CHECK (keygate_role() <> 'none');
