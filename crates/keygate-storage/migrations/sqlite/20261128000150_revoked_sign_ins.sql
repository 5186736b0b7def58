-- Kept in step with ../postgres/20261128000150_revoked_sign_ins.sql.
--
-- One token (or every token of one sign-in session) revoked: `sign_in` is the token's
-- `session_id` claim, else an id derived from the token itself. Refused until
-- `expires_at`, the token's own `exp`. `user_id` is NULL for a service-role token.
CREATE TABLE revoked_sign_ins (
    sign_in     BLOB PRIMARY KEY,
    user_id     BLOB,
    expires_at  TEXT NOT NULL,
    revoked_at  TEXT NOT NULL
);

CREATE INDEX revoked_sign_ins_expires ON revoked_sign_ins (expires_at);
