-- keygate schema: oversight (issue 8) and data-model leftovers (issue 5) on SQLite.
-- Kept in step with ../postgres/20261126000010_oversight.sql.

-- Audit filters by connection and time.
CREATE INDEX idx_audit_connection ON audit_events (connection_id, seq);
CREATE INDEX idx_api_calls_user_time ON api_calls (user_id, created_at);

-- seed: api_key_rotation_schedule (+ api_keys.auto_rotation_enabled,
-- encrypted_exchange_credentials.rotation_scheduled_at). One row per credential.
CREATE TABLE rotation_schedules (
    credential_id          BLOB PRIMARY KEY REFERENCES credentials (id) ON DELETE CASCADE,
    user_id                BLOB        NOT NULL,
    interval_days          INTEGER     NOT NULL CHECK (interval_days BETWEEN 1 AND 3650),
    next_due_at            TEXT        NOT NULL,
    auto_rotation_enabled  BOOLEAN     NOT NULL DEFAULT 0,
    last_rotated_at        TEXT       ,
    created_at             TEXT        NOT NULL,
    updated_at             TEXT        NOT NULL
);
CREATE INDEX idx_rotation_schedules_user ON rotation_schedules (user_id, credential_id);
CREATE INDEX idx_rotation_schedules_due ON rotation_schedules (next_due_at);

-- Reminders already sent (rotation, site keys): the unique key is the claim, so a
-- reminder goes out once even with several instances.
CREATE TABLE sent_reminders (
    reminder_key  TEXT PRIMARY KEY,
    subject_kind  TEXT        NOT NULL,
    subject_id    BLOB        NOT NULL,
    user_id       BLOB,
    created_at    TEXT        NOT NULL
);

-- seed: site_api_keys. Platform-wide provider keys, admin only; the value is sealed with
-- a key derived from the master key ("site-keys/v1").
CREATE TABLE site_api_keys (
    id                      BLOB PRIMARY KEY,
    name                    TEXT        NOT NULL UNIQUE,
    provider                TEXT        NOT NULL,
    key_prefix              TEXT        NOT NULL,
    value_ct                BLOB        NOT NULL,
    description             TEXT,
    is_active               BOOLEAN     NOT NULL,
    usage_count             BIGINT      NOT NULL DEFAULT 0,
    last_used_at            TEXT       ,
    rotation_interval_days  INTEGER,
    next_rotation_at        TEXT       ,
    created_by              BLOB,
    row_version             BIGINT      NOT NULL DEFAULT 1,
    created_at              TEXT        NOT NULL,
    updated_at              TEXT        NOT NULL
);

-- seed: integrations. Per-user OAuth client configuration; the client secret is sealed
-- with the user's DEK.
CREATE TABLE integrations (
    id                BLOB PRIMARY KEY,
    user_id           BLOB        NOT NULL,
    provider          TEXT        NOT NULL,
    name              TEXT        NOT NULL,
    client_id         TEXT        NOT NULL,
    client_secret_ct  BLOB ,
    token_url         TEXT        NOT NULL,
    scopes            TEXT        NOT NULL,
    config            TEXT        NOT NULL,
    status            TEXT        NOT NULL,
    last_error        TEXT,
    dek_version       INTEGER     NOT NULL,
    row_version       BIGINT      NOT NULL DEFAULT 1,
    created_at        TEXT        NOT NULL,
    updated_at        TEXT        NOT NULL,
    UNIQUE (user_id, name)
);
CREATE INDEX idx_integrations_user ON integrations (user_id, id);

-- seed: integration_tokens. One row per integration; tokens sealed with the user's DEK.
CREATE TABLE integration_tokens (
    integration_id     BLOB PRIMARY KEY REFERENCES integrations (id) ON DELETE CASCADE,
    user_id            BLOB        NOT NULL,
    access_token_ct    BLOB        NOT NULL,
    refresh_token_ct   BLOB ,
    token_type         TEXT        NOT NULL,
    scopes             TEXT        NOT NULL,
    expires_at         TEXT       ,
    dek_version        INTEGER     NOT NULL,
    refreshed_at       TEXT       ,
    refresh_attempts   INTEGER     NOT NULL DEFAULT 0,
    next_attempt_at    TEXT       ,
    last_error         TEXT,
    created_at         TEXT        NOT NULL,
    updated_at         TEXT        NOT NULL
);
CREATE INDEX idx_integration_tokens_expiry ON integration_tokens (expires_at);

-- Webhook endpoints: per user (user_id set) or platform-wide (user_id NULL, admin).
-- The signing secret is sealed with a key derived from the master key ("webhooks/v1").
CREATE TABLE webhooks (
    id           BLOB PRIMARY KEY,
    user_id      BLOB,
    url          TEXT        NOT NULL,
    description  TEXT,
    events       TEXT        NOT NULL,
    secret_ct    BLOB        NOT NULL,
    is_enabled   BOOLEAN     NOT NULL,
    row_version  BIGINT      NOT NULL DEFAULT 1,
    created_at   TEXT        NOT NULL,
    updated_at   TEXT        NOT NULL
);
CREATE INDEX idx_webhooks_user ON webhooks (user_id, id);

-- Delivery queue and log. webhook_id is NULL for endpoints from KEYGATE_WEBHOOK_URLS.
CREATE TABLE webhook_deliveries (
    id                BLOB PRIMARY KEY,
    webhook_id        BLOB REFERENCES webhooks (id) ON DELETE CASCADE,
    user_id           BLOB,
    url               TEXT        NOT NULL,
    event_type        TEXT        NOT NULL,
    payload           TEXT        NOT NULL,
    status            TEXT        NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts          INTEGER     NOT NULL DEFAULT 0,
    next_attempt_at   TEXT        NOT NULL,
    claimed_until     TEXT       ,
    last_status_code  INTEGER,
    last_error        TEXT,
    created_at        TEXT        NOT NULL,
    delivered_at      TEXT       
);
CREATE INDEX idx_webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX idx_webhook_deliveries_hook ON webhook_deliveries (webhook_id, id);

-- Background job leases: a job runs on the instance holding its lease.
CREATE TABLE job_leases (
    name         TEXT PRIMARY KEY,
    holder       TEXT        NOT NULL,
    lease_until  TEXT        NOT NULL,
    last_run_at  TEXT       
);
