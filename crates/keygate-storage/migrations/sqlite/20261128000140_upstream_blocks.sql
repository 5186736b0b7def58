-- Kept in step with ../postgres/20261128000140_upstream_blocks.sql.
--
-- The exchanges' own refusals for rate (a 429 with Retry-After, a 418 IP ban), shared by
-- every keygate process on this database. `scope` is `host:<exchange host>` or
-- `key:<credential id>`. Not user data: not backed up.
CREATE TABLE upstream_blocks (
    scope          TEXT PRIMARY KEY,
    blocked_until  TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
