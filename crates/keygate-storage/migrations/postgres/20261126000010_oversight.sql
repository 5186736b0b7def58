-- keygate schema: oversight (issue 8) and data-model leftovers (issue 5) on PostgreSQL.
-- Kept in step with ../sqlite/20261126000010_oversight.sql.

-- Audit filters by connection and time.
CREATE INDEX idx_audit_connection ON audit_events (connection_id, seq);
CREATE INDEX idx_api_calls_user_time ON api_calls (user_id, created_at);

-- seed: api_key_rotation_schedule (+ api_keys.auto_rotation_enabled,
-- encrypted_exchange_credentials.rotation_scheduled_at). One row per credential.
CREATE TABLE rotation_schedules (
    credential_id          UUID PRIMARY KEY REFERENCES credentials (id) ON DELETE CASCADE,
    user_id                UUID        NOT NULL,
    interval_days          INTEGER     NOT NULL CHECK (interval_days BETWEEN 1 AND 3650),
    next_due_at            TIMESTAMPTZ NOT NULL,
    auto_rotation_enabled  BOOLEAN     NOT NULL DEFAULT FALSE,
    last_rotated_at        TIMESTAMPTZ,
    created_at             TIMESTAMPTZ NOT NULL,
    updated_at             TIMESTAMPTZ NOT NULL
);
CREATE INDEX idx_rotation_schedules_user ON rotation_schedules (user_id, credential_id);
CREATE INDEX idx_rotation_schedules_due ON rotation_schedules (next_due_at);

-- Reminders already sent (rotation, site keys): the unique key is the claim, so a
-- reminder goes out once even with several instances.
CREATE TABLE sent_reminders (
    reminder_key  TEXT PRIMARY KEY,
    subject_kind  TEXT        NOT NULL,
    subject_id    UUID        NOT NULL,
    user_id       UUID,
    created_at    TIMESTAMPTZ NOT NULL
);

-- seed: site_api_keys. Platform-wide provider keys, admin only; the value is sealed with
-- a key derived from the master key ("site-keys/v1").
CREATE TABLE site_api_keys (
    id                      UUID PRIMARY KEY,
    name                    TEXT        NOT NULL UNIQUE,
    provider                TEXT        NOT NULL,
    key_prefix              TEXT        NOT NULL,
    value_ct                BYTEA       NOT NULL,
    description             TEXT,
    is_active               BOOLEAN     NOT NULL,
    usage_count             BIGINT      NOT NULL DEFAULT 0,
    last_used_at            TIMESTAMPTZ,
    rotation_interval_days  INTEGER,
    next_rotation_at        TIMESTAMPTZ,
    created_by              UUID,
    row_version             BIGINT      NOT NULL DEFAULT 1,
    created_at              TIMESTAMPTZ NOT NULL,
    updated_at              TIMESTAMPTZ NOT NULL
);

-- seed: integrations. Per-user OAuth client configuration; the client secret is sealed
-- with the user's DEK.
CREATE TABLE integrations (
    id                UUID PRIMARY KEY,
    user_id           UUID        NOT NULL,
    provider          TEXT        NOT NULL,
    name              TEXT        NOT NULL,
    client_id         TEXT        NOT NULL,
    client_secret_ct  BYTEA,
    token_url         TEXT        NOT NULL,
    scopes            JSONB       NOT NULL,
    config            JSONB       NOT NULL,
    status            TEXT        NOT NULL,
    last_error        TEXT,
    dek_version       INTEGER     NOT NULL,
    row_version       BIGINT      NOT NULL DEFAULT 1,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    UNIQUE (user_id, name)
);
CREATE INDEX idx_integrations_user ON integrations (user_id, id);

-- seed: integration_tokens. One row per integration; tokens sealed with the user's DEK.
CREATE TABLE integration_tokens (
    integration_id     UUID PRIMARY KEY REFERENCES integrations (id) ON DELETE CASCADE,
    user_id            UUID        NOT NULL,
    access_token_ct    BYTEA       NOT NULL,
    refresh_token_ct   BYTEA,
    token_type         TEXT        NOT NULL,
    scopes             JSONB       NOT NULL,
    expires_at         TIMESTAMPTZ,
    dek_version        INTEGER     NOT NULL,
    refreshed_at       TIMESTAMPTZ,
    refresh_attempts   INTEGER     NOT NULL DEFAULT 0,
    next_attempt_at    TIMESTAMPTZ,
    last_error         TEXT,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL
);
CREATE INDEX idx_integration_tokens_expiry ON integration_tokens (expires_at);

-- Webhook endpoints: per user (user_id set) or platform-wide (user_id NULL, admin).
-- The signing secret is sealed with a key derived from the master key ("webhooks/v1").
CREATE TABLE webhooks (
    id           UUID PRIMARY KEY,
    user_id      UUID,
    url          TEXT        NOT NULL,
    description  TEXT,
    events       JSONB       NOT NULL,
    secret_ct    BYTEA       NOT NULL,
    is_enabled   BOOLEAN     NOT NULL,
    row_version  BIGINT      NOT NULL DEFAULT 1,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX idx_webhooks_user ON webhooks (user_id, id);

-- Delivery queue and log. webhook_id is NULL for endpoints from KEYGATE_WEBHOOK_URLS.
CREATE TABLE webhook_deliveries (
    id                UUID PRIMARY KEY,
    webhook_id        UUID REFERENCES webhooks (id) ON DELETE CASCADE,
    user_id           UUID,
    url               TEXT        NOT NULL,
    event_type        TEXT        NOT NULL,
    payload           TEXT        NOT NULL,
    status            TEXT        NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts          INTEGER     NOT NULL DEFAULT 0,
    next_attempt_at   TIMESTAMPTZ NOT NULL,
    claimed_until     TIMESTAMPTZ,
    last_status_code  INTEGER,
    last_error        TEXT,
    created_at        TIMESTAMPTZ NOT NULL,
    delivered_at      TIMESTAMPTZ
);
CREATE INDEX idx_webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX idx_webhook_deliveries_hook ON webhook_deliveries (webhook_id, id);

-- Background job leases: a job runs on the instance holding its lease.
CREATE TABLE job_leases (
    name         TEXT PRIMARY KEY,
    holder       TEXT        NOT NULL,
    lease_until  TIMESTAMPTZ NOT NULL,
    last_run_at  TIMESTAMPTZ
);

GRANT SELECT, INSERT, UPDATE, DELETE ON rotation_schedules, sent_reminders, site_api_keys,
    integrations, integration_tokens, webhooks, webhook_deliveries, job_leases TO keygate_app;

ALTER TABLE rotation_schedules ENABLE ROW LEVEL SECURITY;
ALTER TABLE sent_reminders ENABLE ROW LEVEL SECURITY;
ALTER TABLE site_api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE integrations ENABLE ROW LEVEL SECURITY;
ALTER TABLE integration_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhooks ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE job_leases ENABLE ROW LEVEL SECURITY;

CREATE POLICY owner_all ON rotation_schedules FOR ALL TO keygate_app
    USING (user_id = keygate_uid() OR keygate_role() = 'service')
    WITH CHECK (user_id = keygate_uid() OR keygate_role() = 'service');
CREATE POLICY owner_all ON integrations FOR ALL TO keygate_app
    USING (user_id = keygate_uid() OR keygate_role() = 'service')
    WITH CHECK (user_id = keygate_uid() OR keygate_role() = 'service');
CREATE POLICY owner_all ON integration_tokens FOR ALL TO keygate_app
    USING (user_id = keygate_uid() OR keygate_role() = 'service')
    WITH CHECK (user_id = keygate_uid() OR keygate_role() = 'service');
-- Webhooks: a user's own endpoints; platform endpoints (user_id NULL) for admins.
CREATE POLICY owner_or_platform ON webhooks FOR ALL TO keygate_app
    USING (user_id = keygate_uid() OR keygate_role() = 'service'
           OR (user_id IS NULL AND keygate_role() = 'admin'))
    WITH CHECK (user_id = keygate_uid() OR keygate_role() = 'service'
           OR (user_id IS NULL AND keygate_role() = 'admin'));
CREATE POLICY owner_or_platform ON webhook_deliveries FOR ALL TO keygate_app
    USING (user_id = keygate_uid() OR keygate_role() = 'service'
           OR (user_id IS NULL AND keygate_role() = 'admin'))
    WITH CHECK (user_id = keygate_uid() OR keygate_role() = 'service'
           OR (user_id IS NULL AND keygate_role() = 'admin'));
-- seed: "Only admins can manage site API keys"; the service role uses them.
CREATE POLICY admin_only ON site_api_keys FOR ALL TO keygate_app
    USING (keygate_role() IN ('admin', 'service'))
    WITH CHECK (keygate_role() IN ('admin', 'service'));
-- Platform jobs only.
CREATE POLICY service_only ON sent_reminders FOR ALL TO keygate_app
    USING (keygate_role() = 'service') WITH CHECK (keygate_role() = 'service');
CREATE POLICY service_only ON job_leases FOR ALL TO keygate_app
    USING (keygate_role() = 'service') WITH CHECK (keygate_role() = 'service');
