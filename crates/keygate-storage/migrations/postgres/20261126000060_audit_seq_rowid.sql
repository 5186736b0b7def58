-- keygate schema: kept in step with ../sqlite/20261126000060_audit_seq_rowid.sql, which
-- makes audit_events.seq SQLite's rowid alias (one B-tree fewer per event there).
-- PostgreSQL stores rows in a heap and audit_events_pkey is already its only index on
-- seq, so there is nothing to change here.
SELECT 1;
