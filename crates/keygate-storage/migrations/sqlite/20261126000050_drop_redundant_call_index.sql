-- keygate schema: one index fewer on the gateway's hottest table (issue 7).
-- Kept in step with ../postgres/20261126000050_drop_redundant_call_index.sql.

-- idx_api_calls_user (user_id) is a prefix of idx_api_calls_user_time (user_id,
-- created_at), which serves every query the first one did. Each call row paid for both.
DROP INDEX IF EXISTS idx_api_calls_user;
