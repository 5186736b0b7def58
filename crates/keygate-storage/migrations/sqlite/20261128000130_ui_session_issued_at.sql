-- When what a console session was opened with was issued (the token's `iat`, or the time
-- a sign-in link was used), Unix seconds: a session opened with something issued before
-- its user signed out everywhere ends, on whichever instance it was opened.
ALTER TABLE ui_sessions ADD COLUMN issued_at BIGINT;
