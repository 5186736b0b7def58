-- Kept in step with ../sqlite/20261128000110_owner_checks.sql.
--
-- The database itself checks that a child row has its parent's owner: a connection
-- cannot use another user's credential, nor a balance, rotation schedule, secret,
-- integration token or webhook delivery hang under another user's row. The API checks
-- this before every write; these constraints are the second wall behind it, as
-- row-level security is for reads (a foreign key's own check ignores row-level
-- security, so a bug in the API could otherwise link two users' rows).
--
-- Each is a composite foreign key on (parent id, owner) next to the existing one on the
-- parent id alone, which stays: a webhook delivery of a platform endpoint has no owner,
-- and a composite key with a NULL column checks nothing (MATCH SIMPLE).
-- `api_calls` is left out: the gateway's group commit writes it from the connection it
-- loaded, and is the hot path (issue 7).

ALTER TABLE credentials ADD CONSTRAINT credentials_id_owner_key UNIQUE (id, user_id);
ALTER TABLE connections ADD CONSTRAINT connections_id_owner_key UNIQUE (id, user_id);
ALTER TABLE integrations ADD CONSTRAINT integrations_id_owner_key UNIQUE (id, user_id);
ALTER TABLE webhooks ADD CONSTRAINT webhooks_id_owner_key UNIQUE (id, user_id);

ALTER TABLE credential_secrets ADD CONSTRAINT credential_secrets_owner_fkey
    FOREIGN KEY (credential_id, user_id) REFERENCES credentials (id, user_id) ON DELETE CASCADE;
ALTER TABLE connections ADD CONSTRAINT connections_credential_owner_fkey
    FOREIGN KEY (credential_id, user_id) REFERENCES credentials (id, user_id) ON DELETE RESTRICT;
ALTER TABLE balances ADD CONSTRAINT balances_owner_fkey
    FOREIGN KEY (connection_id, user_id) REFERENCES connections (id, user_id) ON DELETE CASCADE;
ALTER TABLE rotation_schedules ADD CONSTRAINT rotation_schedules_owner_fkey
    FOREIGN KEY (credential_id, user_id) REFERENCES credentials (id, user_id) ON DELETE CASCADE;
ALTER TABLE integration_tokens ADD CONSTRAINT integration_tokens_owner_fkey
    FOREIGN KEY (integration_id, user_id) REFERENCES integrations (id, user_id) ON DELETE CASCADE;
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_owner_fkey
    FOREIGN KEY (webhook_id, user_id) REFERENCES webhooks (id, user_id) ON DELETE CASCADE;
