//! Gateway bookkeeping: one `api_calls` row per forwarded or denied call (seed
//! `exchange_api_calls`), credential usage counters, persisted sums that limits are
//! derived from, and shared short-window rate counters.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use uuid::Uuid;

use crate::anomaly::HistoryCache;
use crate::{audit, multi_insert_for, Actor, AuditEvent, DbTime, Result, Store};

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

pub(crate) const COLS: &str = "id, connection_id, credential_id, user_id, method, endpoint, class, decision, deny_code, status_code, response_time_ms, success, error_message, rate_limit_remaining, rate_limit_reset, notional_usd_micros, withdrawal_usd_micros, ip_address, user_agent, session_id, created_at, rate_limit_used";

/// One allowed call counts as one use of its credential: per (credential, user), in id
/// order, the number of uses and the latest time.
pub(crate) fn usage_of(calls: &[ApiCallRecord]) -> BTreeMap<(Uuid, Uuid), (i64, DbTime)> {
    let mut usage: BTreeMap<(Uuid, Uuid), (i64, DbTime)> = BTreeMap::new();
    for c in calls.iter().filter(|c| c.decision == "allowed") {
        let e = usage
            .entry((c.credential_id, c.user_id))
            .or_insert((0, c.created_at));
        e.0 += 1;
        e.1 = e.1.max(c.created_at);
    }
    usage
}

/// Allowed calls' amounts per credential and UTC day (`credential_spend`, what the spend
/// caps read): `(credential_id, "YYYY-MM-DD") -> (user_id, volume, withdrawal)` in USD
/// micros. Every allowed call counts, whether or not its row is stored.
pub(crate) fn spend_of(calls: &[ApiCallRecord]) -> BTreeMap<(Uuid, String), (Uuid, i64, i64)> {
    let mut spend: BTreeMap<(Uuid, String), (Uuid, i64, i64)> = BTreeMap::new();
    for c in calls.iter().filter(|c| {
        c.decision == "allowed" && (c.notional_usd_micros != 0 || c.withdrawal_usd_micros != 0)
    }) {
        let day = utc_day(&c.created_at);
        let e = spend
            .entry((c.credential_id, day))
            .or_insert((c.user_id, 0, 0));
        e.1 = e.1.saturating_add(c.notional_usd_micros);
        e.2 = e.2.saturating_add(c.withdrawal_usd_micros);
    }
    spend
}

/// `credential_spend.day` of a time: its UTC date, `YYYY-MM-DD` (what the rows are keyed by
/// and what [`Store::spent_since`] compares against).
fn utc_day(t: &DbTime) -> String {
    t.0.format("%Y-%m-%d").to_string()
}

/// Adds to a credential's spend of a day: `(credential_id, user_id, day, volume,
/// withdrawal)`.
pub(crate) const SPEND_UPSERT: &str = "INSERT INTO credential_spend (credential_id, user_id, day, volume_usd_micros, withdrawal_usd_micros) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (credential_id, day) DO UPDATE SET volume_usd_micros = credential_spend.volume_usd_micros + excluded.volume_usd_micros, \
     withdrawal_usd_micros = credential_spend.withdrawal_usd_micros + excluded.withdrawal_usd_micros";

/// Adds uses to a credential: `(uses, latest time, user_id, id)`.
pub(crate) const USAGE_UPDATE: &str = "UPDATE credentials SET usage_count = usage_count + $1, last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < $2 THEN $2 ELSE last_used_at END WHERE user_id = $3 AND id = $4";

impl Store {
    /// Writes a batch of call rows and counts each allowed one as a use of its credential
    /// (see [`Store::record_batch`]).
    pub fn insert_api_calls<'a>(&'a self, rows: &'a [ApiCallRecord]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.record_batch(rows, Vec::new(), &[]).await?;
            Ok(())
        })
    }

    /// The gateway's group commit, in ONE transaction under the service identity (a batch
    /// mixes users): the `api_calls` rows, each used credential's `usage_count` and
    /// `last_used_at`, and the audit events chained under the head's lock (a row lock on
    /// PostgreSQL, the write lock on SQLite). A SQLite file and PostgreSQL are written by
    /// the store's own connection on its own thread, the whole batch in one hand-over
    /// (`batch_writer.rs` with `sqlite_writer.rs` or `pg_batch.rs`; on PostgreSQL the head
    /// is locked first when there are events, so the gateway's batches of every instance
    /// touch credential rows one at a time).
    /// A call row whose connection was deleted while the call was under way is left out
    /// (the deletion took the connection's rows with it), so that it cannot fail the
    /// foreign key and with it everyone else's rows in the batch; the rest commits.
    /// (PostgreSQL: a deletion still uncommitted when the batch runs makes the batch wait
    /// for it, and fail if it commits.)
    /// The sqlx path below serves in-memory SQLite: one UPDATE per credential in id order,
    /// the head lock taken last, inserts in chunks of fixed sizes so the statement cache
    /// holds a handful of statements. Does not move [`Store::write_epoch`]. Returns the
    /// stored events.
    pub fn record_batch<'a>(
        &'a self,
        calls: &'a [ApiCallRecord],
        events: Vec<AuditEvent>,
        chain_key: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<AuditEvent>>> {
        Box::pin(async move {
            let out = self.write_batch(calls, events, chain_key).await?;
            self.history.committed(HistoryCache::stamps(calls));
            Ok(out)
        })
    }

    fn write_batch<'a>(
        &'a self,
        calls: &'a [ApiCallRecord],
        events: Vec<AuditEvent>,
        chain_key: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<AuditEvent>>> {
        Box::pin(async move {
            if calls.is_empty() && events.is_empty() {
                return Ok(events);
            }
            if let Some(w) = &self.writer {
                return w.write(calls.to_vec(), events, chain_key).await;
            }
            let usage = usage_of(calls);
            let spend = spend_of(calls);
            let backend = self.backend();
            let call_head = format!("INSERT INTO api_calls ({COLS}) VALUES ");
            let audit_head = format!("INSERT INTO audit_events ({}) VALUES ", audit::COLS);
            Ok(in_tx!(@quiet self, Actor::service(), |tx| {
                let mut live = std::collections::BTreeSet::new();
                for id in calls.iter().map(|c| c.connection_id).collect::<std::collections::BTreeSet<_>>() {
                    if sqlx::query::<DB>("SELECT 1 FROM connections WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?
                        .is_some()
                    {
                        live.insert(id);
                    }
                }
                let kept: Vec<&ApiCallRecord> = calls
                    .iter()
                    .filter(|c| live.contains(&c.connection_id))
                    .collect();
                let mut rest = &kept[..];
                while !rest.is_empty() {
                    let n = chunk(rest.len());
                    let sql = multi_insert_for(backend, &call_head, 22, n);
                    let mut q = sqlx::query::<DB>(&sql);
                    for r in &rest[..n] {
                        q = bind_api_call!(q, r);
                    }
                    q.execute(&mut *tx).await?;
                    rest = &rest[n..];
                }
                for ((credential_id, user_id), (n, at)) in &usage {
                    sqlx::query::<DB>(USAGE_UPDATE)
                        .bind(*n)
                        .bind(*at)
                        .bind(*user_id)
                        .bind(*credential_id)
                        .execute(&mut *tx)
                        .await?;
                }
                for ((credential_id, day), (user_id, volume, withdrawal)) in &spend {
                    sqlx::query::<DB>(SPEND_UPSERT)
                        .bind(*credential_id)
                        .bind(*user_id)
                        .bind(day.clone())
                        .bind(*volume)
                        .bind(*withdrawal)
                        .execute(&mut *tx)
                        .await?;
                }
                if events.is_empty() {
                    events
                } else {
                    // takes the head's row lock and reads it in one statement
                    let head = sqlx::query::<DB>(
                        "UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash",
                    )
                    .fetch_one(&mut *tx)
                    .await?;
                    let (out, seq, prev) = audit::chain(
                        events,
                        sqlx::Row::try_get(&head, 0)?,
                        sqlx::Row::try_get(&head, 1)?,
                        chain_key,
                    );
                    let mut rest = &out[..];
                    while !rest.is_empty() {
                        let n = chunk(rest.len());
                        let sql = multi_insert_for(backend, &audit_head, 26, n);
                        let mut q = sqlx::query::<DB>(&sql);
                        for e in &rest[..n] {
                            q = bind_audit_event!(q, e);
                        }
                        q.execute(&mut *tx).await?;
                        rest = &rest[n..];
                    }
                    sqlx::query::<DB>("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                        .bind(seq)
                        .bind(prev)
                        .execute(&mut *tx)
                        .await?;
                    out
                }
            }))
        })
    }

    /// [`Store::record_batch`] taking the rows by value (no copy for the SQLite writer).
    pub async fn record_batch_owned(
        &self,
        calls: Vec<ApiCallRecord>,
        events: Vec<AuditEvent>,
        chain_key: &[u8],
    ) -> Result<Vec<AuditEvent>> {
        if calls.is_empty() && events.is_empty() {
            return Ok(events);
        }
        // the calls move to the writer: keep what the check after the commit needs
        let stamps: Vec<_> = HistoryCache::stamps(&calls).collect();
        let out = match &self.writer {
            Some(w) => w.write(calls, events, chain_key).await,
            None => self.write_batch(&calls, events, chain_key).await,
        }?;
        self.history.committed(stamps);
        Ok(out)
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

    /// Sums of allowed notional and withdrawals for a credential from the start of
    /// `since`'s UTC day (`credential_spend`, persisted: neither a restart nor deleting a
    /// connection reopens a spent limit). PostgreSQL sums `bigint` as `numeric`: cast
    /// back, or the row cannot be read and every capped call is refused.
    pub async fn spent_since(
        &self,
        actor: Actor,
        credential_id: Uuid,
        since: DbTime,
    ) -> Result<(i64, i64)> {
        let sql = "SELECT CAST(COALESCE(SUM(volume_usd_micros), 0) AS BIGINT), CAST(COALESCE(SUM(withdrawal_usd_micros), 0) AS BIGINT) FROM credential_spend WHERE credential_id = $1 AND day >= $2";
        let day = utc_day(&since);
        Ok(in_tx!(@quiet self, actor, |tx| {
            let row: (i64, i64) = sqlx::query_as::<DB, _>(sql)
                .bind(credential_id)
                .bind(day.clone())
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

/// Rows per multi-row INSERT for `n` pending rows: a few fixed sizes (largest first), so
/// a connection's statement cache holds at most four statements per table.
pub(crate) fn chunk(n: usize) -> usize {
    [64, 16, 4, 1].into_iter().find(|c| *c <= n).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunks_cover_any_batch_with_few_statements() {
        for n in 1..600 {
            let (mut left, mut stmts) = (n, 0);
            while left > 0 {
                let c = super::chunk(left);
                assert!(c <= left);
                left -= c;
                stmts += 1;
            }
            // at most 3 of each smaller size
            assert!(stmts <= n / 64 + 9, "{n}: {stmts}");
        }
    }
}
