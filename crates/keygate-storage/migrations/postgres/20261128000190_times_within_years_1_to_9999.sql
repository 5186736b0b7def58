-- Kept in step with ../sqlite/20261128000190_times_within_years_1_to_9999.sql. PostgreSQL
-- sorts such times correctly, but a backup writes every time within years 1-9999 now
-- (DbTime::stored): the rows hold the same value the backup and SQLite do.
UPDATE credentials SET expires_at = '9999-12-31 23:59:59.999999+00' WHERE expires_at > '9999-12-31 23:59:59.999999+00';
UPDATE credentials SET expires_at = '0001-01-01 00:00:00+00' WHERE expires_at < '0001-01-01 00:00:00+00';
UPDATE rotation_schedules SET next_due_at = '9999-12-31 23:59:59.999999+00' WHERE next_due_at > '9999-12-31 23:59:59.999999+00';
UPDATE rotation_schedules SET next_due_at = '0001-01-01 00:00:00+00' WHERE next_due_at < '0001-01-01 00:00:00+00';
UPDATE site_api_keys SET next_rotation_at = '9999-12-31 23:59:59.999999+00' WHERE next_rotation_at > '9999-12-31 23:59:59.999999+00';
UPDATE site_api_keys SET next_rotation_at = '0001-01-01 00:00:00+00' WHERE next_rotation_at < '0001-01-01 00:00:00+00';
UPDATE integration_tokens SET expires_at = '9999-12-31 23:59:59.999999+00' WHERE expires_at > '9999-12-31 23:59:59.999999+00';
UPDATE integration_tokens SET expires_at = '0001-01-01 00:00:00+00' WHERE expires_at < '0001-01-01 00:00:00+00';
