-- Kept in step with ../postgres/20261128000160_ui_session_signed_in_at.sql.
--
-- When the console session's user last signed in (Unix seconds): the time a sign-in link
-- was used, or the pasted token's authentication time (`auth_time`, its newest `amr`
-- timestamp, else `iat`). Changes that need a recent sign-in (a vault without a
-- password: widening a key; any vault: setting a password, shredding) read it. NULL
-- (unknown, or a session opened before this was kept) is never recent.
ALTER TABLE ui_sessions ADD COLUMN signed_in_at BIGINT;
-- A session opened with a sign-in link was opened at its sign-in.
UPDATE ui_sessions SET signed_in_at = issued_at WHERE opened_by IS NULL;
