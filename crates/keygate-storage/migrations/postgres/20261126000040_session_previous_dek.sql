-- keygate schema: DEK rotation of password-protected vaults (issue 4) on PostgreSQL.
-- Kept in step with ../sqlite/20261126000030_session_previous_dek.sql.

-- While a password-mode DEK rotation re-seals a user's rows, the unlock session carries
-- the new DEK version (session_dek) and also the one being retired, wrapped the same way
-- (KEK, session context), so rows not yet re-sealed stay readable on every instance.
-- Both columns are cleared when the rotation finishes; NULL otherwise.
ALTER TABLE vault_sessions ADD COLUMN previous_session_dek BYTEA;
ALTER TABLE vault_sessions ADD COLUMN previous_dek_version INTEGER;
