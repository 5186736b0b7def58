-- Kept in step with ../postgres/20261128000180_service_writes.sql, which narrows
-- PostgreSQL's row-level security policies; SQLite has none, so nothing changes here.
SELECT 1;
