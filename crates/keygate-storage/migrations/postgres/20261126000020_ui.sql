-- keygate schema: web console (issue 10) on PostgreSQL.
-- Kept in step with ../sqlite/20261126000020_ui.sql.

-- One-time sign-in links (`keygate login-link`): only the SHA-256 of the token is stored.
CREATE TABLE ui_login_links (
    token_hash  BYTEA PRIMARY KEY,
    user_id     UUID        NOT NULL,
    is_admin    BOOLEAN     NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL
);

-- Console sessions: the cookie holds a random id; only its SHA-256 is stored.
CREATE TABLE ui_sessions (
    id_hash       BYTEA PRIMARY KEY,
    user_id       UUID        NOT NULL,
    is_admin      BOOLEAN     NOT NULL,
    csrf_token    TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    last_seen_at  TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX idx_ui_sessions_expiry ON ui_sessions (expires_at);

GRANT SELECT, INSERT, UPDATE, DELETE ON ui_login_links, ui_sessions TO keygate_app;

ALTER TABLE ui_login_links ENABLE ROW LEVEL SECURITY;
ALTER TABLE ui_sessions ENABLE ROW LEVEL SECURITY;

-- Looked up by token hash before any identity is known: the server's service role only.
CREATE POLICY service_only ON ui_login_links FOR ALL TO keygate_app
    USING (keygate_role() = 'service') WITH CHECK (keygate_role() = 'service');
CREATE POLICY service_only ON ui_sessions FOR ALL TO keygate_app
    USING (keygate_role() = 'service') WITH CHECK (keygate_role() = 'service');
