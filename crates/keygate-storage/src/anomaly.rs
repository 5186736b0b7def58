//! The facts anomaly scoring needs, gathered in one transaction from indexed columns of
//! `api_calls` and `audit_events`, and suspending a credential.

use uuid::Uuid;

use crate::{Actor, Backend, DbTime, Result, Store};

/// What to gather facts for, and the windows to look at.
#[derive(Debug, Clone)]
pub struct FactsQuery {
    pub user_id: Uuid,
    pub credential_id: Uuid,
    /// Source IP of the call being assessed.
    pub ip: Option<String>,
    /// Start of the "recent" window (burst detection).
    pub recent_since: DbTime,
    /// Start of the history the baseline, known IPs and usual hours come from.
    pub history_since: DbTime,
    /// A password unlock after this counts as "just before".
    pub unlock_since: DbTime,
    /// Calls are considered up to here (exclusive).
    pub now: DbTime,
}

/// Raw counts; the pure scorer turns them into signals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnomalyFacts {
    /// Calls of this credential in the history window (before the recent window).
    pub history_calls: i64,
    /// Of those, calls from the assessed IP.
    pub history_calls_from_ip: i64,
    /// Calls in the recent window from the current source IP.
    pub recent_calls_from_ip: i64,
    /// Calls of this credential in the recent window.
    pub recent_calls: i64,
    /// The user's calls per UTC hour of day over the history window.
    pub hour_histogram: [i64; 24],
    /// Denied calls in a row, newest first (up to 50 looked at).
    pub denial_streak: i64,
    /// IP of the latest successful password unlock inside the unlock window.
    pub recent_unlock_ip: Option<String>,
    /// Successful unlocks before that one from the same IP.
    pub earlier_unlocks_from_ip: i64,
    /// Successful unlocks before that one at all.
    pub earlier_unlocks: i64,
}

impl Store {
    pub async fn anomaly_facts(&self, actor: Actor, q: &FactsQuery) -> Result<AnomalyFacts> {
        let hour = match self.backend() {
            Backend::Postgres => "CAST(EXTRACT(HOUR FROM created_at AT TIME ZONE 'UTC') AS BIGINT)",
            Backend::Sqlite => "CAST(substr(created_at, 12, 2) AS INTEGER)",
        };
        let hist_sql = format!(
            "SELECT {hour} AS h, COUNT(*) FROM api_calls WHERE user_id = $1 AND created_at >= $2 AND created_at < $3 GROUP BY h"
        );
        let counts_sql = "SELECT \
            COALESCE(SUM(CASE WHEN created_at < $3 THEN 1 ELSE 0 END), 0), \
            COALESCE(SUM(CASE WHEN created_at < $3 AND ip_address = $4 THEN 1 ELSE 0 END), 0), \
            COALESCE(SUM(CASE WHEN created_at >= $3 AND ip_address = $4 THEN 1 ELSE 0 END), 0), \
            COALESCE(SUM(CASE WHEN created_at >= $3 THEN 1 ELSE 0 END), 0) \
            FROM api_calls WHERE credential_id = $1 AND created_at >= $2 AND created_at < $5";
        let streak_sql = "SELECT decision FROM api_calls WHERE credential_id = $1 AND created_at < $2 ORDER BY created_at DESC LIMIT 50";
        let unlock_sql = "SELECT ip_address, seq FROM audit_events WHERE user_id = $1 AND category = 'vault' AND action = 'unlock' \
            AND success AND created_at >= $2 ORDER BY seq DESC LIMIT 1";
        let earlier_sql = "SELECT COUNT(*), COALESCE(SUM(CASE WHEN ip_address = $3 THEN 1 ELSE 0 END), 0) FROM audit_events \
            WHERE user_id = $1 AND category = 'vault' AND action = 'unlock' AND success AND seq < $2";
        // read-only: a deferred transaction (on SQLite an IMMEDIATE one would hold the
        // write lock, and so stall the gateway's group commit, for the whole scan)
        Ok(in_tx!(@quiet self, actor, |tx| {
            let mut f = AnomalyFacts::default();
            let (h, h_ip, r_ip, r): (i64, i64, i64, i64) = sqlx::query_as::<DB, _>(counts_sql)
                .bind(q.credential_id)
                .bind(q.history_since)
                .bind(q.recent_since)
                .bind(q.ip.clone())
                .bind(q.now)
                .fetch_one(&mut *tx)
                .await?;
            (f.history_calls, f.history_calls_from_ip, f.recent_calls) = (h, h_ip, r);
            f.recent_calls_from_ip = r_ip;
            let hist: Vec<(i64, i64)> = sqlx::query_as::<DB, _>(&hist_sql)
                .bind(q.user_id)
                .bind(q.history_since)
                .bind(q.now)
                .fetch_all(&mut *tx)
                .await?;
            for (hour, n) in hist {
                if (0..24).contains(&hour) {
                    f.hour_histogram[hour as usize] = n;
                }
            }
            let decisions: Vec<String> = sqlx::query_scalar::<DB, String>(streak_sql)
                .bind(q.credential_id)
                .bind(q.now)
                .fetch_all(&mut *tx)
                .await?;
            f.denial_streak = decisions.iter().take_while(|d| *d == "denied").count() as i64;
            let unlock: Option<(Option<String>, i64)> = sqlx::query_as::<DB, _>(unlock_sql)
                .bind(q.user_id)
                .bind(q.unlock_since)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some((ip, seq)) = unlock {
                let (all, same): (i64, i64) = sqlx::query_as::<DB, _>(earlier_sql)
                    .bind(q.user_id)
                    .bind(seq)
                    .bind(ip.clone())
                    .fetch_one(&mut *tx)
                    .await?;
                f.recent_unlock_ip = ip;
                f.earlier_unlocks = all;
                f.earlier_unlocks_from_ip = same;
            }
            f
        }))
    }

    /// Suspends an active (or rotating) credential with `reason`. Returns false when it
    /// was not active (already suspended, revoked, ...).
    pub async fn suspend_credential(
        &self,
        actor: Actor,
        user_id: Uuid,
        id: Uuid,
        reason: &str,
        now: DbTime,
    ) -> Result<bool> {
        let n = in_tx!(self, actor, |tx| {
            sqlx::query::<DB>(
                "UPDATE credentials SET status = 'suspended', suspended_reason = $1, updated_at = $2, \
                 row_version = row_version + 1 WHERE user_id = $3 AND id = $4 AND status IN ('active', 'rotating')",
            )
            .bind(reason)
            .bind(now)
            .bind(user_id)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }
}
