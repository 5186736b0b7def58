-- Kept in step with ../sqlite/20261128000150_revoked_sign_ins.sql.
--
-- One token (or every token of one sign-in session) revoked: `sign_in` is the token's
-- `session_id` claim, else an id derived from the token itself (auth::Caller::sign_in).
-- Refused on every instance (each reloads this table within seconds) until `expires_at`,
-- the token's `exp` with the clock-skew leeway and a minute more, after which the row is
-- no longer needed. `user_id` is the nil UUID for a
-- service-role token without `sub`. Keyed by user too, so that whoever can mint a token
-- naming another user's `session_id` cannot end that user's session.
CREATE TABLE revoked_sign_ins (
    user_id     UUID NOT NULL,
    sign_in     UUID NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, sign_in)
);

CREATE INDEX revoked_sign_ins_expires ON revoked_sign_ins (expires_at);

GRANT SELECT, INSERT, UPDATE, DELETE ON revoked_sign_ins TO keygate_app;
ALTER TABLE revoked_sign_ins ENABLE ROW LEVEL SECURITY;
CREATE POLICY service_only ON revoked_sign_ins FOR ALL TO keygate_app
    USING (keygate_role() = 'service')
    WITH CHECK (keygate_role() = 'service');

-- The token (or session) that opened a console session: revoking it ends the session too.
ALTER TABLE ui_sessions ADD COLUMN opened_by UUID;
