-- Kept in step with ../postgres/20261128000150_revoked_sign_ins.sql.
--
-- One token (or every token of one sign-in session) revoked: `sign_in` is the token's
-- `session_id` claim, else an id derived from the token itself. Refused until
-- `expires_at` (the token's `exp`, the clock-skew leeway and a minute). `user_id` is the nil UUID for a service-role token
-- without `sub`.
CREATE TABLE revoked_sign_ins (
    user_id     BLOB NOT NULL,
    sign_in     BLOB NOT NULL,
    expires_at  TEXT NOT NULL,
    revoked_at  TEXT NOT NULL,
    PRIMARY KEY (user_id, sign_in)
);

CREATE INDEX revoked_sign_ins_expires ON revoked_sign_ins (expires_at);

-- The token (or session) that opened a console session: revoking it ends the session too.
ALTER TABLE ui_sessions ADD COLUMN opened_by BLOB;
