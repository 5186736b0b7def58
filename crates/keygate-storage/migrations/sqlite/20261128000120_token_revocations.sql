-- Kept in step with ../postgres/20261128000120_token_revocations.sql.
--
-- "Sign out everywhere": every token of `user_id` issued before `issued_before` is
-- refused, and the user's console sessions end. One row per user; a later revocation
-- only moves the cut-off on.
CREATE TABLE token_revocations (
    user_id        BLOB PRIMARY KEY,
    issued_before  TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
