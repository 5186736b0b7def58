-- When the background sync last tried a connection, whatever came of it: a connection whose
-- check keeps failing waits its interval like the others instead of being picked on
-- every run ahead of them.
ALTER TABLE connections ADD COLUMN sync_attempted_at TIMESTAMPTZ;
