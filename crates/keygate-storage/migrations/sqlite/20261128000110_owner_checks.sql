-- Kept in step with ../postgres/20261128000110_owner_checks.sql.
--
-- The database itself checks that a child row has its parent's owner: a connection
-- cannot use another user's credential, nor a balance, rotation schedule, secret,
-- integration token or webhook delivery hang under another user's row. The API checks
-- this before every write; these triggers are the second wall behind it. (SQLite cannot
-- add a composite foreign key to an existing table, hence triggers.) A missing parent is
-- left to the foreign key on the parent id; a row without an owner or parent (a platform
-- endpoint's delivery) is not checked, as PostgreSQL's MATCH SIMPLE does not. A parent
-- with children keeps its owner, as the composite keys make it on PostgreSQL.
-- `api_calls` is left out: the gateway's group commit writes it from the connection it
-- loaded, and is the hot path (issue 7).

CREATE TRIGGER credential_secrets_owner_insert BEFORE INSERT ON credential_secrets
WHEN NEW.credential_id IS NOT NULL AND NEW.user_id IS NOT NULL
    AND EXISTS (SELECT 1 FROM credentials WHERE id = NEW.credential_id AND user_id IS NOT NEW.user_id)
BEGIN
    SELECT RAISE(ABORT, 'owner_mismatch: credential_secrets.credential_id names a credentials row of another owner');
END;

CREATE TRIGGER credential_secrets_owner_update BEFORE UPDATE OF credential_id, user_id ON credential_secrets
WHEN NEW.credential_id IS NOT NULL AND NEW.user_id IS NOT NULL
    AND EXISTS (SELECT 1 FROM credentials WHERE id = NEW.credential_id AND user_id IS NOT NEW.user_id)
BEGIN
    SELECT RAISE(ABORT, 'owner_mismatch: credential_secrets.credential_id names a credentials row of another owner');
END;

CREATE TRIGGER connections_owner_insert BEFORE INSERT ON connections
WHEN NEW.credential_id IS NOT NULL AND NEW.user_id IS NOT NULL
    AND EXISTS (SELECT 1 FROM credentials WHERE id = NEW.credential_id AND user_id IS NOT NEW.user_id)
BEGIN
    SELECT RAISE(ABORT, 'owner_mismatch: connections.credential_id names a credentials row of another owner');
END;

CREATE TRIGGER connections_owner_update BEFORE UPDATE OF credential_id, user_id ON connections
WHEN NEW.credential_id IS NOT NULL AND NEW.user_id IS NOT NULL
    AND EXISTS (SELECT 1 FROM credentials WHERE id = NEW.credential_id AND user_id IS NOT NEW.user_id)
BEGIN
    SELECT RAISE(ABORT, 'owner_mismatch: connections.credential_id names a credentials row of another owner');
END;

CREATE TRIGGER balances_owner_insert BEFORE INSERT ON balances
WHEN NEW.connection_id IS NOT NULL AND NEW.user_id IS NOT NULL
    AND EXISTS (SELECT 1 FROM connections WHERE id = NEW.connection_id AND user_id IS NOT NEW.user_id)
BEGIN
    SELECT RAISE(ABORT, 'owner_mismatch: balances.connection_id names a connections row of another owner');
END;

CREATE TRIGGER balances_owner_update BEFORE UPDATE OF connection_id, user_id ON balances
WHEN NEW.connection_id IS NOT NULL AND NEW.user_id IS NOT NULL
    AND EXISTS (SELECT 1 FROM connections WHERE id = NEW.connection_id AND user_id IS NOT NEW.user_id)
BEGIN
    SELECT RAISE(ABORT, 'owner_mismatch: balances.connection_id names a connections row of another owner');
END;

CREATE TRIGGER rotation_schedules_owner_insert BEFORE INSERT ON rotation_schedules
WHEN NEW.credential_id IS NOT NULL AND NEW.user_id IS NOT NULL
    AND EXISTS (SELECT 1 FROM credentials WHERE id = NEW.credential_id AND user_id IS NOT NEW.user_id)
BEGIN
    SELECT RAISE(ABORT, 'owner_mismatch: rotation_schedules.credential_id names a credentials row of another owner');
END;

CREATE TRIGGER rotation_schedules_owner_update BEFORE UPDATE OF credential_id, user_id ON rotation_schedules
WHEN NEW.credential_id IS NOT NULL AND NEW.user_id IS NOT NULL
    AND EXISTS (SELECT 1 FROM credentials WHERE id = NEW.credential_id AND user_id IS NOT NEW.user_id)
BEGIN
    SELECT RAISE(ABORT, 'owner_mismatch: rotation_schedules.credential_id names a credentials row of another owner');
END;

CREATE TRIGGER integration_tokens_owner_insert BEFORE INSERT ON integration_tokens
WHEN NEW.integration_id IS NOT NULL AND NEW.user_id IS NOT NULL
    AND EXISTS (SELECT 1 FROM integrations WHERE id = NEW.integration_id AND user_id IS NOT NEW.user_id)
BEGIN
    SELECT RAISE(ABORT, 'owner_mismatch: integration_tokens.integration_id names a integrations row of another owner');
END;

CREATE TRIGGER integration_tokens_owner_update BEFORE UPDATE OF integration_id, user_id ON integration_tokens
WHEN NEW.integration_id IS NOT NULL AND NEW.user_id IS NOT NULL
    AND EXISTS (SELECT 1 FROM integrations WHERE id = NEW.integration_id AND user_id IS NOT NEW.user_id)
BEGIN
    SELECT RAISE(ABORT, 'owner_mismatch: integration_tokens.integration_id names a integrations row of another owner');
END;

CREATE TRIGGER webhook_deliveries_owner_insert BEFORE INSERT ON webhook_deliveries
WHEN NEW.webhook_id IS NOT NULL AND NEW.user_id IS NOT NULL
    AND EXISTS (SELECT 1 FROM webhooks WHERE id = NEW.webhook_id AND user_id IS NOT NEW.user_id)
BEGIN
    SELECT RAISE(ABORT, 'owner_mismatch: webhook_deliveries.webhook_id names a webhooks row of another owner');
END;

CREATE TRIGGER webhook_deliveries_owner_update BEFORE UPDATE OF webhook_id, user_id ON webhook_deliveries
WHEN NEW.webhook_id IS NOT NULL AND NEW.user_id IS NOT NULL
    AND EXISTS (SELECT 1 FROM webhooks WHERE id = NEW.webhook_id AND user_id IS NOT NEW.user_id)
BEGIN
    SELECT RAISE(ABORT, 'owner_mismatch: webhook_deliveries.webhook_id names a webhooks row of another owner');
END;

CREATE TRIGGER credentials_owner_kept BEFORE UPDATE OF id, user_id ON credentials
WHEN (NEW.id IS NOT OLD.id OR NEW.user_id IS NOT OLD.user_id)
    AND (EXISTS (SELECT 1 FROM credential_secrets WHERE credential_id = OLD.id AND user_id IS NOT NULL)
    OR EXISTS (SELECT 1 FROM connections WHERE credential_id = OLD.id AND user_id IS NOT NULL)
    OR EXISTS (SELECT 1 FROM rotation_schedules WHERE credential_id = OLD.id AND user_id IS NOT NULL))
BEGIN
    SELECT RAISE(ABORT, 'owner_mismatch: credentials row has rows of its owner under it');
END;

CREATE TRIGGER connections_owner_kept BEFORE UPDATE OF id, user_id ON connections
WHEN (NEW.id IS NOT OLD.id OR NEW.user_id IS NOT OLD.user_id)
    AND (EXISTS (SELECT 1 FROM balances WHERE connection_id = OLD.id AND user_id IS NOT NULL))
BEGIN
    SELECT RAISE(ABORT, 'owner_mismatch: connections row has rows of its owner under it');
END;

CREATE TRIGGER integrations_owner_kept BEFORE UPDATE OF id, user_id ON integrations
WHEN (NEW.id IS NOT OLD.id OR NEW.user_id IS NOT OLD.user_id)
    AND (EXISTS (SELECT 1 FROM integration_tokens WHERE integration_id = OLD.id AND user_id IS NOT NULL))
BEGIN
    SELECT RAISE(ABORT, 'owner_mismatch: integrations row has rows of its owner under it');
END;

CREATE TRIGGER webhooks_owner_kept BEFORE UPDATE OF id, user_id ON webhooks
WHEN (NEW.id IS NOT OLD.id OR NEW.user_id IS NOT OLD.user_id)
    AND (EXISTS (SELECT 1 FROM webhook_deliveries WHERE webhook_id = OLD.id AND user_id IS NOT NULL))
BEGIN
    SELECT RAISE(ABORT, 'owner_mismatch: webhooks row has rows of its owner under it');
END;
