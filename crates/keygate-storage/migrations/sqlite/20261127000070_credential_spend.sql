-- keygate schema: spend per credential and UTC day (issue 7's caps).
-- Kept in step with ../postgres/20261127000070_credential_spend.sql.

-- What the gateway's spend caps (daily volume, withdrawals per day and per month) are
-- checked against: written with the call rows in the group commit. Unlike `api_calls`,
-- it is untouched when a connection is deleted (which takes that connection's call rows
-- with it), so deleting a connection cannot reopen a credential's spent limits; and a
-- check reads a row per day instead of summing every call of the day.
CREATE TABLE credential_spend (
    credential_id         BLOB   NOT NULL,
    user_id               BLOB   NOT NULL,
    -- 'YYYY-MM-DD', UTC
    day                   TEXT   NOT NULL,
    volume_usd_micros     BIGINT NOT NULL DEFAULT 0,
    withdrawal_usd_micros BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (credential_id, day)
);

INSERT INTO credential_spend (credential_id, user_id, day, volume_usd_micros, withdrawal_usd_micros)
SELECT credential_id, MIN(user_id), substr(created_at, 1, 10), SUM(notional_usd_micros), SUM(withdrawal_usd_micros)
FROM api_calls
WHERE decision = 'allowed' AND (notional_usd_micros <> 0 OR withdrawal_usd_micros <> 0)
GROUP BY credential_id, substr(created_at, 1, 10);
