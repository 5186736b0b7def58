-- Times a client sent with a year outside 1-9999 (`+10000-...`, `-0001-...`) were stored
-- as that text before keygate kept stored times within those years (DbTime::stored). As
-- text they sort before every real time ('+' and '-' come before digits), so a far-future
-- due date or expiry counted as long past. Each becomes the nearest end of the range, the
-- value keygate stores for it now.
UPDATE credentials SET expires_at = '9999-12-31T23:59:59.999999Z' WHERE expires_at LIKE '+%';
UPDATE credentials SET expires_at = '0001-01-01T00:00:00.000000Z' WHERE expires_at LIKE '-%';
UPDATE rotation_schedules SET next_due_at = '9999-12-31T23:59:59.999999Z' WHERE next_due_at LIKE '+%';
UPDATE rotation_schedules SET next_due_at = '0001-01-01T00:00:00.000000Z' WHERE next_due_at LIKE '-%';
UPDATE site_api_keys SET next_rotation_at = '9999-12-31T23:59:59.999999Z' WHERE next_rotation_at LIKE '+%';
UPDATE site_api_keys SET next_rotation_at = '0001-01-01T00:00:00.000000Z' WHERE next_rotation_at LIKE '-%';
UPDATE integration_tokens SET expires_at = '9999-12-31T23:59:59.999999Z' WHERE expires_at LIKE '+%';
UPDATE integration_tokens SET expires_at = '0001-01-01T00:00:00.000000Z' WHERE expires_at LIKE '-%';
