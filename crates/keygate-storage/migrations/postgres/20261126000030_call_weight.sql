-- keygate schema: exchange rate-limit weight used, per call (issue 10, console chart).
-- Kept in step with ../sqlite/20261126000030_call_weight.sql.

-- What the exchange reported as used in its current window after this call (Binance:
-- X-MBX-USED-WEIGHT-1M), so weight use per credential can be shown over time.
ALTER TABLE api_calls ADD COLUMN rate_limit_used BIGINT;
