-- Kept in step with ../sqlite/20261128000140_upstream_blocks.sql.
--
-- The exchanges' own refusals for rate (a 429 with Retry-After, a 418 IP ban), shared by
-- every keygate instance on this database: one that learns a ban writes it here, and the
-- others read the table every second and hold their calls too, instead of each sending
-- into the ban until it learns it from its own answer (Binance lengthens bans for
-- addresses that keep calling). `scope` is `host:<exchange host>` for a ban of keygate's
-- address, `key:<credential id>` for one key's. Not user data: service-only, not backed up.
CREATE TABLE upstream_blocks (
    scope          TEXT PRIMARY KEY,
    blocked_until  TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);

GRANT SELECT, INSERT, UPDATE, DELETE ON upstream_blocks TO keygate_app;
ALTER TABLE upstream_blocks ENABLE ROW LEVEL SECURITY;
CREATE POLICY service_only ON upstream_blocks FOR ALL TO keygate_app
    USING (keygate_role() = 'service')
    WITH CHECK (keygate_role() = 'service');
