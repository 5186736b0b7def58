//! Gateway bookkeeping: one `api_calls` row per forwarded or denied call (seed
//! `exchange_api_calls`), credential usage counters, persisted sums that limits are
//! derived from, and shared short-window rate counters.

use futures::future::BoxFuture;
use uuid::Uuid;

use crate::{Actor, DbTime, Result, Store};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiCallRecord {
    pub id: Uuid,
    pub connection_id: Uuid,
    pub credential_id: Uuid,
    pub user_id: Uuid,
    pub method: String,
    pub endpoint: String,
    pub class: String,
    /// allowed | denied | failed
    pub decision: String,
    pub deny_code: Option<String>,
    pub status_code: Option<i32>,
    pub response_time_ms: Option<i32>,
    pub success: bool,
    pub error_message: Option<String>,
    pub rate_limit_remaining: Option<i64>,
    pub rate_limit_reset: Option<DbTime>,
    /// Weight (or requests) the exchange reported used in its current window after this call.
    pub rate_limit_used: Option<i64>,
    pub notional_usd_micros: i64,
    pub withdrawal_usd_micros: i64,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub session_id: Option<Uuid>,
    pub created_at: DbTime,
}

const COLS: &str = "id, connection_id, credential_id, user_id, method, endpoint, class, decision, deny_code, status_code, response_time_ms, success, error_message, rate_limit_remaining, rate_limit_reset, notional_usd_micros, withdrawal_usd_micros, ip_address, user_agent, session_id, created_at, rate_limit_used";

impl Store {
    /// Writes a batch of call rows and bumps each used credential's usage count, in one
    /// transaction under the service identity (the batch mixes users).
    pub fn insert_api_calls<'a>(&'a self, rows: &'a [ApiCallRecord]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if rows.is_empty() {
                return Ok(());
            }
            let ins = format!("INSERT INTO api_calls ({COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22)");
            in_tx!(self, Actor::service(), |tx| {
                for r in rows {
                    sqlx::query::<DB>(&ins)
                        .bind(r.id)
                        .bind(r.connection_id)
                        .bind(r.credential_id)
                        .bind(r.user_id)
                        .bind(r.method.clone())
                        .bind(r.endpoint.clone())
                        .bind(r.class.clone())
                        .bind(r.decision.clone())
                        .bind(r.deny_code.clone())
                        .bind(r.status_code)
                        .bind(r.response_time_ms)
                        .bind(r.success)
                        .bind(r.error_message.clone())
                        .bind(r.rate_limit_remaining)
                        .bind(r.rate_limit_reset)
                        .bind(r.notional_usd_micros)
                        .bind(r.withdrawal_usd_micros)
                        .bind(r.ip_address.clone())
                        .bind(r.user_agent.clone())
                        .bind(r.session_id)
                        .bind(r.created_at)
                        .bind(r.rate_limit_used)
                        .execute(&mut *tx)
                        .await?;
                    if r.decision == "allowed" {
                        sqlx::query::<DB>("UPDATE credentials SET usage_count = usage_count + 1, last_used_at = $1 WHERE id = $2")
                        .bind(r.created_at)
                        .bind(r.credential_id)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
            });
            Ok(())
        })
    }

    /// A connection's call log, newest first, after `cursor`.
    pub async fn list_api_calls(
        &self,
        actor: Actor,
        user_id: Uuid,
        connection_id: Uuid,
        cursor: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<ApiCallRecord>> {
        let sql = format!("SELECT {COLS} FROM api_calls WHERE user_id = $1 AND connection_id = $2 AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4");
        Ok(in_tx!(self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(user_id)
                .bind(connection_id)
                .bind(cursor)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?
        }))
    }

    /// Sums of allowed notional and withdrawals for a credential since `since`
    /// (persisted rows: a restart never reopens a spent limit).
    pub async fn spent_since(
        &self,
        actor: Actor,
        credential_id: Uuid,
        since: DbTime,
    ) -> Result<(i64, i64)> {
        let sql = "SELECT COALESCE(SUM(notional_usd_micros), 0), COALESCE(SUM(withdrawal_usd_micros), 0) FROM api_calls WHERE credential_id = $1 AND created_at >= $2 AND decision = 'allowed'";
        Ok(in_tx!(self, actor, |tx| {
            let row: (i64, i64) = sqlx::query_as::<DB, _>(sql)
                .bind(credential_id)
                .bind(since)
                .fetch_one(&mut *tx)
                .await?;
            row
        }))
    }

    /// Adds one to the shared counter `bucket` for the window starting at `window_start`
    /// and returns the new count (PostgreSQL: shared by every instance).
    pub async fn bump_counter(&self, actor: Actor, bucket: &str, window_start: i64) -> Result<i64> {
        Ok(in_tx!(self, actor, |tx| {
            sqlx::query_scalar::<DB, _>("INSERT INTO rate_counters (bucket, window_start, count) VALUES ($1, $2, 1) ON CONFLICT (bucket, window_start) DO UPDATE SET count = rate_counters.count + 1 RETURNING count")
                .bind(bucket)
                .bind(window_start)
                .fetch_one(&mut *tx)
                .await?
        }))
    }

    /// Drops counter windows that ended before `before`.
    pub async fn prune_counters(&self, before: i64) -> Result<u64> {
        Ok(in_tx!(self, Actor::service(), |tx| {
            sqlx::query::<DB>("DELETE FROM rate_counters WHERE window_start < $1")
                .bind(before)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        }))
    }
}
