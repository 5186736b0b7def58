-- Kept in step with ../sqlite/20261128000120_token_revocations.sql.
--
-- "Sign out everywhere": every token of `user_id` issued before `issued_before` is
-- refused, on every instance (each reloads this table within seconds), and the user's
-- console sessions end. One row per user; a later revocation only moves the cut-off on.
CREATE TABLE token_revocations (
    user_id        UUID PRIMARY KEY,
    issued_before  TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);

GRANT SELECT, INSERT, UPDATE ON token_revocations TO keygate_app;
ALTER TABLE token_revocations ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_all ON token_revocations FOR ALL TO keygate_app
    USING (user_id = keygate_uid() OR keygate_role() = 'service')
    WITH CHECK (user_id = keygate_uid() OR keygate_role() = 'service');
