-- Kept in step with ../sqlite/20261128000180_service_writes.sql (row-level security is
-- PostgreSQL's alone; the SQLite file is empty).
--
-- Tables only the service identity writes (the group commit, the spend check, the rate
-- and upstream counters, the token revocations): a user's identity reads its own rows and
-- writes none, so a statement run under the wrong user's identity by a bug cannot plant
-- a spend row that blocks (or, negative, lifts) another user's caps, move a revocation
-- cut-off back, or empty a shared counter. `api_calls` keeps the owner's DELETE: deleting
-- a connection takes its call rows with it.
DROP POLICY owner_all ON credential_spend;
CREATE POLICY owner_read ON credential_spend FOR SELECT TO keygate_app
    USING (user_id = keygate_uid() OR keygate_role() = 'service');
CREATE POLICY service_write ON credential_spend FOR ALL TO keygate_app
    USING (keygate_role() = 'service') WITH CHECK (keygate_role() = 'service');

DROP POLICY owner_all ON token_revocations;
CREATE POLICY owner_read ON token_revocations FOR SELECT TO keygate_app
    USING (user_id = keygate_uid() OR keygate_role() = 'service');
CREATE POLICY service_write ON token_revocations FOR ALL TO keygate_app
    USING (keygate_role() = 'service') WITH CHECK (keygate_role() = 'service');

DROP POLICY counters_all ON rate_counters;
CREATE POLICY service_only ON rate_counters FOR ALL TO keygate_app
    USING (keygate_role() = 'service') WITH CHECK (keygate_role() = 'service');

DROP POLICY owner_all ON api_calls;
CREATE POLICY owner_read ON api_calls FOR SELECT TO keygate_app
    USING (user_id = keygate_uid() OR keygate_role() = 'service');
CREATE POLICY owner_delete ON api_calls FOR DELETE TO keygate_app
    USING (user_id = keygate_uid() OR keygate_role() = 'service');
CREATE POLICY service_write ON api_calls FOR ALL TO keygate_app
    USING (keygate_role() = 'service') WITH CHECK (keygate_role() = 'service');
