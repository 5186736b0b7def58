//! Gateway bookkeeping: one `api_calls` row per forwarded or denied call (seed
//! `exchange_api_calls`), credential usage counters, persisted sums that limits are
//! derived from, and shared short-window rate counters.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use uuid::Uuid;

use crate::anomaly::HistoryCache;
use crate::{multi_insert_for, Actor, AuditEvent, DbTime, Result, StorageError, Store};

/// A group commit's batch that the database refused a row of, handed back
/// ([`Store::record_batch_keeping`]): none of it is stored. The events' chain fields are
/// stale; writing them again chains them afresh.
#[derive(Debug)]
pub struct RefusedBatch {
    pub calls: Vec<ApiCallRecord>,
    pub events: Vec<AuditEvent>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiCallRecord {
    pub id: Uuid,
    pub connection_id: Uuid,
    pub credential_id: Uuid,
    pub user_id: Uuid,
    pub method: String,
    pub endpoint: String,
    pub class: String,
    /// allowed | denied | error
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
    /// What the call added to its credential's spend when it was allowed (a capped call,
    /// `spend.rs`); not a column: the commit of the row settles it.
    #[sqlx(skip)]
    pub reserved: Option<crate::SpendReservation>,
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

/// What a batch adds to `credential_spend` (what the spend caps read), per credential and
/// UTC day: `(credential_id, "YYYY-MM-DD") -> (user_id, volume, withdrawal)` in USD micros.
/// An allowed call counts its amounts on its row's day, whether or not its row is stored.
/// A call whose amounts were reserved when it was allowed (`spend.rs`) counts only the
/// difference between what its row counts (its amounts if allowed, else nothing) and the
/// reservation, on the reservation's day: usually nothing, or the reservation given back
/// by a call refused after its check. Entries that come to nothing are left out.
pub(crate) fn spend_of(calls: &[ApiCallRecord]) -> BTreeMap<(Uuid, String), (Uuid, i64, i64)> {
    let mut spend: BTreeMap<(Uuid, String), (Uuid, i64, i64)> = BTreeMap::new();
    for c in calls {
        let (volume, withdrawal) = if c.decision == "allowed" {
            (c.notional_usd_micros, c.withdrawal_usd_micros)
        } else {
            (0, 0)
        };
        let (key, volume, withdrawal) = match &c.reserved {
            Some(r) => (
                (r.credential_id, r.day.clone()),
                volume.saturating_sub(r.volume_usd_micros),
                withdrawal.saturating_sub(r.withdrawal_usd_micros),
            ),
            None => (
                (c.credential_id, utc_day(&c.created_at)),
                volume,
                withdrawal,
            ),
        };
        if volume == 0 && withdrawal == 0 {
            continue;
        }
        let e = spend.entry(key).or_insert((c.user_id, 0, 0));
        e.1 = e.1.saturating_add(volume);
        e.2 = e.2.saturating_add(withdrawal);
    }
    spend.retain(|_, (_, v, w)| *v != 0 || *w != 0);
    for (_, v, w) in spend.values_mut() {
        *v = clamp_spend(*v);
        *w = clamp_spend(*w);
    }
    spend
}

/// `credential_spend.day` of a time: its UTC date, `YYYY-MM-DD` (what the rows are keyed by
/// and what a spend check compares against).
pub(crate) fn utc_day(t: &DbTime) -> String {
    t.0.format("%Y-%m-%d").to_string()
}

/// The most one call, one batch's entry or one ledger row counts, in USD micros: 100
/// billion USD. Larger amounts count as this much, so a month of a credential's ledger
/// rows (31) still sums within a bigint, and no client-sent order size can overflow a
/// running total (on PostgreSQL that failed the whole group commit, everyone's rows with
/// it). No real order, withdrawal or day of them comes near it.
pub const MAX_SPEND_MICROS: i64 = 100_000_000_000_000_000;

/// The `SET` of every upsert into `credential_spend` (`excluded` is the entry): the running
/// totals stay within `0..=`[`MAX_SPEND_MICROS`] (an entry is within `-MAX..=MAX`, so the
/// sum cannot overflow).
macro_rules! spend_set {
    () => {
        "volume_usd_micros = CASE WHEN credential_spend.volume_usd_micros + excluded.volume_usd_micros > 100000000000000000 THEN 100000000000000000 \
       WHEN credential_spend.volume_usd_micros + excluded.volume_usd_micros < 0 THEN 0 \
       ELSE credential_spend.volume_usd_micros + excluded.volume_usd_micros END, \
     withdrawal_usd_micros = CASE WHEN credential_spend.withdrawal_usd_micros + excluded.withdrawal_usd_micros > 100000000000000000 THEN 100000000000000000 \
       WHEN credential_spend.withdrawal_usd_micros + excluded.withdrawal_usd_micros < 0 THEN 0 \
       ELSE credential_spend.withdrawal_usd_micros + excluded.withdrawal_usd_micros END"
    };
}
pub(crate) const SPEND_SET: &str = spend_set!();

/// Adds to a credential's spend of a day: `(credential_id, user_id, day, volume,
/// withdrawal)`.
pub(crate) const SPEND_UPSERT: &str = concat!(
    "INSERT INTO credential_spend (credential_id, user_id, day, volume_usd_micros, withdrawal_usd_micros) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (credential_id, day) DO UPDATE SET ",
    spend_set!()
);

/// `x` within `-MAX..=MAX` ([`MAX_SPEND_MICROS`]).
fn clamp_spend(x: i64) -> i64 {
    x.clamp(-MAX_SPEND_MICROS, MAX_SPEND_MICROS)
}

/// Adds uses to a credential: `(uses, latest time, user_id, id)`.
pub(crate) const USAGE_UPDATE: &str = "UPDATE credentials SET usage_count = usage_count + $1, last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < $2 THEN $2 ELSE last_used_at END WHERE user_id = $3 AND id = $4";

impl ApiCallRecord {
    /// [`crate::audit::storable`] for every text of the row.
    pub fn make_storable(&mut self) {
        for s in [
            &mut self.method,
            &mut self.endpoint,
            &mut self.class,
            &mut self.decision,
        ] {
            crate::audit::storable(s);
        }
        for s in [
            &mut self.deny_code,
            &mut self.error_message,
            &mut self.ip_address,
            &mut self.user_agent,
        ] {
            crate::audit::storable_opt(s);
        }
    }
}

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
    /// for it; if it commits, the row is left out all the same.)
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
        // the owned path makes the rows storable (the batches that come here are small:
        // a sync's rows, a route's events)
        Box::pin(self.record_batch_owned(calls.to_vec(), events, chain_key))
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
            let usage = usage_of(calls);
            let spend = spend_of(calls);
            let backend = self.backend();
            let call_head = format!("INSERT INTO api_calls ({COLS}) VALUES ");
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
                append_chained!(tx, backend, events, chain_key)
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
        self.record_batch_keeping(calls, events, chain_key)
            .await
            .map_err(|(e, _)| e)
    }

    /// [`Store::record_batch_owned`] that hands the rows back when the database refused
    /// one of them, and so stored none of the batch ([`StorageError::refused_row`]): the
    /// caller can write them again in smaller batches, leaving the refused row's alone.
    pub async fn record_batch_keeping(
        &self,
        mut calls: Vec<ApiCallRecord>,
        events: Vec<AuditEvent>,
        chain_key: &[u8],
    ) -> std::result::Result<Vec<AuditEvent>, (StorageError, Option<RefusedBatch>)> {
        if calls.is_empty() && events.is_empty() {
            return Ok(events);
        }
        calls.iter_mut().for_each(ApiCallRecord::make_storable);
        // the calls move to the writer: keep what the check after the commit needs
        let stamps: Vec<_> = HistoryCache::stamps(&calls).collect();
        let out = match &self.writer {
            Some(w) => match w.write(calls, events, chain_key).await {
                (_, events, Ok(())) => events,
                (calls, events, Err(e)) if e.refused_row() => {
                    return Err((e, Some(RefusedBatch { calls, events })))
                }
                (_, _, Err(e)) => return Err((e, None)),
            },
            None => self
                .write_batch(&calls, events, chain_key)
                .await
                .map_err(|e| (e, None))?,
        };
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

    /// Takes `weight` from the shared pool `bucket` of the window `window_start`: what the
    /// instances on this database may still send in it. The pool is what this instance
    /// knows is left (`left`) or, when another instance got there first, what that one
    /// left, whichever is smaller, so a lower count any instance learned lowers it for
    /// all. One transaction that locks the pool's row, so two instances cannot both take
    /// the last of it. Answers whether it was taken (not when less than `weight` is
    /// left), and what is left now.
    pub async fn take_from_pool(
        &self,
        bucket: &str,
        window_start: i64,
        left: i64,
        weight: i64,
    ) -> Result<(bool, i64)> {
        if left < weight {
            return Ok((false, left));
        }
        Ok(in_tx!(@quiet self, Actor::service(), |tx| {
            // the pool, lowered to what this instance knows is left, and (on PostgreSQL)
            // its row locked until the take below commits
            let pooled = sqlx::query_scalar::<DB, i64>(
                "INSERT INTO rate_counters (bucket, window_start, count) VALUES ($1, $2, $3) \
                 ON CONFLICT (bucket, window_start) DO UPDATE \
                 SET count = CASE WHEN rate_counters.count < $3 THEN rate_counters.count ELSE $3 END \
                 RETURNING count",
            )
            .bind(bucket)
            .bind(window_start)
            .bind(left)
            .fetch_one(&mut *tx)
            .await?;
            if pooled < weight {
                (false, pooled)
            } else {
                let after = sqlx::query_scalar::<DB, i64>(
                    "UPDATE rate_counters SET count = count - $3 \
                     WHERE bucket = $1 AND window_start = $2 RETURNING count",
                )
                .bind(bucket)
                .bind(window_start)
                .bind(weight)
                .fetch_one(&mut *tx)
                .await?;
                (true, after)
            }
        }))
    }

    /// Drops counter windows that ended before `before`, and the exchange rate-limit
    /// pools (`up:` buckets, keyed by their window's end) whose window ended before
    /// `pools_before`.
    pub async fn prune_counters(&self, before: i64, pools_before: i64) -> Result<u64> {
        Ok(in_tx!(self, Actor::service(), |tx| {
            sqlx::query::<DB>("DELETE FROM rate_counters WHERE window_start < $1")
                .bind(before)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                + sqlx::query::<DB>(
                    "DELETE FROM rate_counters WHERE bucket LIKE 'up:%' AND window_start < $1",
                )
                .bind(pools_before)
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
    use super::*;

    fn row(decision: &str, volume: i64, reserved: Option<i64>) -> ApiCallRecord {
        let (cred, user) = (Uuid::from_u128(1), Uuid::from_u128(2));
        ApiCallRecord {
            id: Uuid::now_v7(),
            connection_id: Uuid::from_u128(3),
            credential_id: cred,
            user_id: user,
            method: "POST".into(),
            endpoint: "/api/v3/order".into(),
            class: "trade".into(),
            decision: decision.into(),
            deny_code: None,
            status_code: Some(200),
            response_time_ms: Some(1),
            success: true,
            error_message: None,
            rate_limit_remaining: None,
            rate_limit_reset: None,
            rate_limit_used: None,
            notional_usd_micros: volume,
            withdrawal_usd_micros: 0,
            ip_address: None,
            user_agent: None,
            session_id: None,
            created_at: DbTime::new("2026-11-28T00:00:01Z".parse().unwrap()),
            reserved: reserved.map(|v| crate::SpendReservation {
                credential_id: cred,
                user_id: user,
                day: "2026-11-27".into(),
                volume_usd_micros: v,
                withdrawal_usd_micros: 0,
            }),
        }
    }

    /// A reserved call that went out as reserved adds nothing (its check counted it), one
    /// refused after its check gives the reservation back on the reservation's day, and
    /// an unreserved allowed call counts on its row's day.
    #[test]
    fn the_commit_settles_what_was_reserved() {
        let cred = Uuid::from_u128(1);
        assert!(spend_of(&[row("allowed", 5, Some(5))]).is_empty());
        let back = spend_of(&[row("denied", 5, Some(5)), row("error", 0, Some(2))]);
        assert_eq!(
            back.into_iter().collect::<Vec<_>>(),
            vec![(
                (cred, "2026-11-27".to_string()),
                (Uuid::from_u128(2), -7, 0)
            )]
        );
        let plain = spend_of(&[row("allowed", 4, None), row("denied", 9, None)]);
        assert_eq!(
            plain.into_iter().collect::<Vec<_>>(),
            vec![((cred, "2026-11-28".to_string()), (Uuid::from_u128(2), 4, 0))]
        );
    }

    /// The upsert's clamp is [`MAX_SPEND_MICROS`], and a batch's entries stay within it.
    #[test]
    fn spend_stays_within_the_clamp() {
        assert_eq!(
            SPEND_UPSERT.matches(&MAX_SPEND_MICROS.to_string()).count(),
            4
        );
        let mut rows: Vec<ApiCallRecord> = (0..3)
            .map(|_| row("allowed", MAX_SPEND_MICROS, None))
            .collect();
        rows.push(row("denied", 0, Some(MAX_SPEND_MICROS)));
        let back = spend_of(&rows);
        assert!(
            back.values()
                .all(|(_, v, _)| (-MAX_SPEND_MICROS..=MAX_SPEND_MICROS).contains(v)),
            "{back:?}"
        );
        // 31 days at the clamp still sum within a bigint
        assert!(MAX_SPEND_MICROS.checked_mul(31).is_some());
    }

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

    /// Two stores on one database take from one pool: together never more than the
    /// smaller of what each knew was left, and a pool of another window is another pool.
    async fn one_pool_for_every_store(url: &str) {
        let a = Store::connect(url).await.unwrap();
        a.migrate().await.unwrap();
        let b = Store::connect(url).await.unwrap();
        let bucket = format!("up:key:{}#weight-1m", Uuid::now_v7());
        let take = |s: &Store, b: &str, w: i64, l: i64, n: i64| {
            let (s, b) = (s.clone(), b.to_string());
            async move { s.take_from_pool(&b, w, l, n).await.unwrap() }
        };
        // a knows 10 are left and takes 4; b, whose last answer said 12, takes from the 6
        assert_eq!(take(&a, &bucket, 60, 10, 4).await, (true, 6));
        assert_eq!(take(&b, &bucket, 60, 12, 5).await, (true, 1));
        assert_eq!(take(&a, &bucket, 60, 6, 2).await, (false, 1));
        assert_eq!(take(&b, &bucket, 60, 12, 1).await, (true, 0));
        assert_eq!(take(&a, &bucket, 60, 10, 1).await, (false, 0));
        // an instance that knows less is left than the pool holds lowers it, for all
        let low = format!("{bucket}-low");
        assert_eq!(take(&a, &low, 60, 10, 1).await, (true, 9));
        assert_eq!(take(&b, &low, 60, 3, 1).await, (true, 2));
        assert_eq!(take(&a, &low, 60, 9, 1).await, (true, 1));
        assert_eq!(take(&b, &low, 60, 5, 3).await, (false, 1));
        // another window's pool; a refused take took nothing
        assert_eq!(take(&a, &bucket, 120, 3, 1).await, (true, 2));
        assert_eq!(take(&b, &bucket, 120, 10, 5).await, (false, 2));
        assert_eq!(take(&b, &bucket, 120, 10, 2).await, (true, 0));
        // ended pools go, the request counters of the last day stay
        a.bump_counter(Actor::service(), "req:x:m", 100)
            .await
            .unwrap();
        assert_eq!(a.prune_counters(0, 121).await.unwrap(), 3);
        assert_eq!(take(&a, &bucket, 60, 5, 1).await, (true, 4));
        assert_eq!(
            a.bump_counter(Actor::service(), "req:x:m", 100)
                .await
                .unwrap(),
            2
        );
        a.close().await;
        b.close().await;
    }

    #[tokio::test]
    async fn sqlite_stores_share_one_pool() {
        let dir = std::env::temp_dir().join(format!("keygate-pool-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        one_pool_for_every_store(&format!("sqlite://{}", dir.join("t.db").display())).await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn postgres_stores_share_one_pool() {
        let Some(admin) = crate::scratch::test_admin_url() else {
            return;
        };
        let db = crate::scratch::create(&admin, &crate::scratch::test_prefix())
            .await
            .unwrap();
        one_pool_for_every_store(&db.url).await;
        db.drop().await;
    }
}
