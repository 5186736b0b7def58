-- The JWKS key (`kid`) a console session was opened with, when it was opened with an
-- asymmetric token: the session ends once that key leaves the identity provider's set,
-- as the token itself would stop working.
ALTER TABLE ui_sessions ADD COLUMN jwks_kid TEXT;
