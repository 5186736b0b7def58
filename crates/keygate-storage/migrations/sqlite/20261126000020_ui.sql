-- keygate schema: web console (issue 10) on SQLite.
-- Kept in step with ../postgres/20261126000020_ui.sql.

-- One-time sign-in links (`keygate login-link`): only the SHA-256 of the token is stored.
CREATE TABLE ui_login_links (
    token_hash  BLOB PRIMARY KEY,
    user_id     BLOB    NOT NULL,
    is_admin    INTEGER NOT NULL,
    expires_at  TEXT    NOT NULL,
    used_at     TEXT,
    created_at  TEXT    NOT NULL
);

-- Console sessions: the cookie holds a random id; only its SHA-256 is stored.
CREATE TABLE ui_sessions (
    id_hash       BLOB PRIMARY KEY,
    user_id       BLOB    NOT NULL,
    is_admin      INTEGER NOT NULL,
    csrf_token    TEXT    NOT NULL,
    created_at    TEXT    NOT NULL,
    last_seen_at  TEXT    NOT NULL,
    expires_at    TEXT    NOT NULL
);
CREATE INDEX idx_ui_sessions_expiry ON ui_sessions (expires_at);
