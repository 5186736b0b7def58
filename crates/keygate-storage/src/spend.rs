//! The spend caps' check-and-reserve (issue 7: daily volume, withdrawals per day and per
//! month), shared by every keygate instance on one database.
//!
//! A check reads a credential's spend of the day and of the month from `credential_spend`
//! and, if the policy allows the call, adds the call's amounts to the ledger at once, in
//! the same transaction, under a lock per credential that every instance takes: on
//! PostgreSQL an advisory transaction lock, on SQLite the write lock (`BEGIN IMMEDIATE`).
//! So a call under way is counted from the moment it is allowed, by whichever instance
//! checks next; parallel withdrawals cannot each read the same total and all pass, on one
//! instance or across several.
//!
//! The amounts reserved are what the call spends once it goes out (the policy's figures):
//! when its `api_calls` row commits, the group commit adds only the difference between
//! what the row counts and what was reserved, usually nothing (`usage::spend_of`). A call
//! that ends up refused after the check (anomaly suspension, the exchange's own rate
//! block, a key that cannot sign) records a row that gives the reservation back in the
//! same commit; if the database rolls that commit back, the call gives it back itself.
//! A call that ends with no row at all, before it went out, gives it back on its own
//! ([`Store::give_back_spend`]). A commit whose outcome is unknown (the connection broke)
//! and a process that dies in between leave the amounts counted: the cap errs towards
//! refusing.

use sqlx::{Postgres, Sqlite, Transaction};
use uuid::Uuid;

use crate::db::Db;
use crate::{Actor, DbTime, Result, Store};

/// A credential's spend, USD micros.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SpentTotals {
    /// Allowed orders' notional today (UTC).
    pub volume_today: i64,
    /// Withdrawals today (UTC).
    pub withdrawals_today: i64,
    /// Withdrawals this calendar month (UTC).
    pub withdrawals_this_month: i64,
}

/// Amounts a call added to its credential's spend when it was allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendReservation {
    pub credential_id: Uuid,
    pub user_id: Uuid,
    /// `credential_spend.day` the amounts went to.
    pub day: String,
    pub volume_usd_micros: i64,
    pub withdrawal_usd_micros: i64,
}

enum CheckTx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// A spend check under way: the credential's lock is held and its totals are read. Either
/// [`SpendCheck::reserve`] the allowed call's amounts, or drop it (rolled back, nothing
/// written) when the call is refused.
pub struct SpendCheck {
    tx: CheckTx,
    credential_id: Uuid,
    day: String,
    totals: SpentTotals,
}

impl std::fmt::Debug for SpendCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpendCheck")
            .field("credential_id", &self.credential_id)
            .field("day", &self.day)
            .field("totals", &self.totals)
            .finish_non_exhaustive()
    }
}

/// The credential's advisory lock key on PostgreSQL.
fn lock_key(credential_id: Uuid) -> i64 {
    advisory_key(credential_id, 0)
}

/// An advisory lock key on PostgreSQL: `id` folded to 64 bits, moved to its own `space` (a
/// collision only makes two checks wait for each other).
pub(crate) fn advisory_key(id: Uuid, space: u64) -> i64 {
    let (hi, lo) = id.as_u64_pair();
    (hi ^ lo ^ space) as i64
}

/// How long a PostgreSQL check waits for the credential's lock before it fails.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

const TOTALS_SQL: &str = "SELECT \
    CAST(COALESCE(SUM(CASE WHEN day >= $2 THEN volume_usd_micros ELSE 0 END), 0) AS BIGINT), \
    CAST(COALESCE(SUM(CASE WHEN day >= $2 THEN withdrawal_usd_micros ELSE 0 END), 0) AS BIGINT), \
    CAST(COALESCE(SUM(withdrawal_usd_micros), 0) AS BIGINT) \
    FROM credential_spend WHERE credential_id = $1 AND day >= $3 AND day <= $2";

/// A key's use so far today and this month (UTC): calls recorded through keygate (the
/// rows of a deleted connection go with it) and the spend ledger (kept when a connection
/// is deleted). Amounts in micro-USD.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CredentialUsage {
    pub calls_today: i64,
    pub denied_today: i64,
    pub calls_this_month: i64,
    pub denied_this_month: i64,
    pub volume_today: i64,
    pub withdrawals_today: i64,
    pub withdrawals_this_month: i64,
}

impl Store {
    /// [`CredentialUsage`] of `credential_id` at `now`, as `actor` (its owner reads it).
    pub async fn credential_usage(
        &self,
        actor: Actor,
        user_id: Uuid,
        credential_id: Uuid,
        now: DbTime,
    ) -> Result<CredentialUsage> {
        use chrono::{Datelike, TimeZone};
        let day = crate::usage::utc_day(&now);
        let month = format!("{}-01", &day[..7]);
        let t = now.0;
        let day_start = DbTime::new(
            chrono::Utc
                .with_ymd_and_hms(t.year(), t.month(), t.day(), 0, 0, 0)
                .single()
                .unwrap_or(t),
        );
        let month_start = DbTime::new(
            chrono::Utc
                .with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
                .single()
                .unwrap_or(t),
        );
        let calls = "SELECT CAST(COUNT(*) AS BIGINT), \
            CAST(COALESCE(SUM(CASE WHEN decision = 'denied' THEN 1 ELSE 0 END), 0) AS BIGINT) \
            FROM api_calls WHERE user_id = $1 AND credential_id = $2 AND created_at >= $3 AND created_at < $4";
        Ok(in_tx!(@quiet self, actor, |tx| {
            let mut u = CredentialUsage::default();
            for (since, into) in [(day_start, 0), (month_start, 1)] {
                let (n, denied): (i64, i64) = sqlx::query_as::<DB, _>(calls)
                    .bind(user_id)
                    .bind(credential_id)
                    .bind(since)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                if into == 0 {
                    (u.calls_today, u.denied_today) = (n, denied);
                } else {
                    (u.calls_this_month, u.denied_this_month) = (n, denied);
                }
            }
            let (v, wd, wm): (i64, i64, i64) = sqlx::query_as::<DB, _>(TOTALS_SQL)
                .bind(credential_id)
                .bind(&day)
                .bind(&month)
                .fetch_one(&mut *tx)
                .await?;
            (u.volume_today, u.withdrawals_today, u.withdrawals_this_month) = (v, wd, wm);
            u
        }))
    }

    /// Takes the credential's spend lock (waiting for any check under way on it, in this
    /// or another instance) and reads its totals for `now`'s UTC day and month.
    /// PostgreSQL sums `bigint` as `numeric`: the sums are cast back.
    pub async fn begin_spend_check(&self, credential_id: Uuid, now: DbTime) -> Result<SpendCheck> {
        let day = crate::usage::utc_day(&now);
        let month = format!("{}-01", &day[..7]);
        let (tx, row): (CheckTx, (i64, i64, i64)) = match &self.db {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let row = sqlx::query_as::<Sqlite, (i64, i64, i64)>(TOTALS_SQL)
                    .bind(credential_id)
                    .bind(&day)
                    .bind(&month)
                    .fetch_one(&mut *tx)
                    .await?;
                (CheckTx::Sqlite(tx), row)
            }
            Db::Postgres(pool) => {
                // BEGIN and the identity in one round trip, then the lock, then the totals,
                // each a statement of its own: READ COMMITTED (whatever the server's
                // default) takes a snapshot per statement, so the totals see every
                // reservation committed before the lock was granted. A lock not granted
                // within LOCK_WAIT fails the check (the call is refused) on the server's
                // side: a client-side timeout could leave the transaction open. The lock
                // is not part of the BEGIN: a failure there would leave the pooled
                // connection in an aborted transaction (sqlx rolls back only a begun one).
                let begin = format!(
                    "BEGIN ISOLATION LEVEL READ COMMITTED; {}; SET LOCAL lock_timeout = '{}ms'",
                    crate::db::pg_identity_sql(Actor::service(), true),
                    LOCK_WAIT.as_millis(),
                );
                // Begun on a task of its own: a call whose client goes away mid-BEGIN
                // does not cut it off (sqlx would then pool the connection inside a
                // transaction it does not know of, `db::PgBegin`); the task finishes it,
                // and a transaction no one takes is rolled back as sqlx's own.
                let begun = {
                    let pool = pool.clone();
                    tokio::spawn(async move { pool.begin_with(begin).await })
                };
                let mut tx = begun.await.map_err(|_| sqlx::Error::WorkerCrashed)??;
                sqlx::query::<Postgres>("SELECT pg_advisory_xact_lock($1)")
                    .bind(lock_key(credential_id))
                    .execute(&mut *tx)
                    .await?;
                let row = sqlx::query_as::<Postgres, (i64, i64, i64)>(TOTALS_SQL)
                    .bind(credential_id)
                    .bind(&day)
                    .bind(&month)
                    .fetch_one(&mut *tx)
                    .await?;
                (CheckTx::Postgres(tx), row)
            }
        };
        Ok(SpendCheck {
            tx,
            credential_id,
            day,
            totals: SpentTotals {
                volume_today: row.0,
                withdrawals_today: row.1,
                withdrawals_this_month: row.2,
            },
        })
    }

    /// Takes back amounts reserved by a call that never went out and recorded no row (or
    /// whose row's commit the database rolled back).
    pub async fn give_back_spend(&self, r: &SpendReservation) -> Result<()> {
        if r.volume_usd_micros == 0 && r.withdrawal_usd_micros == 0 {
            return Ok(());
        }
        let back = SpendReservation {
            volume_usd_micros: -r.volume_usd_micros,
            withdrawal_usd_micros: -r.withdrawal_usd_micros,
            ..r.clone()
        };
        // one statement on the ledger: nothing cached depends on it (no epoch bump)
        in_tx!(@quiet self, Actor::service(), |tx| {
            spend_upsert::<DB>(&mut tx, &back).await?;
        });
        Ok(())
    }
}

impl SpendCheck {
    /// The credential's spend, calls under way included.
    pub fn totals(&self) -> SpentTotals {
        self.totals
    }

    /// Adds an allowed call's amounts to today's spend and lets the lock go.
    pub async fn reserve(
        self,
        user_id: Uuid,
        volume_usd_micros: i64,
        withdrawal_usd_micros: i64,
    ) -> Result<SpendReservation> {
        let r = SpendReservation {
            credential_id: self.credential_id,
            user_id,
            day: self.day,
            volume_usd_micros,
            withdrawal_usd_micros,
        };
        let nothing = volume_usd_micros == 0 && withdrawal_usd_micros == 0;
        match self.tx {
            CheckTx::Sqlite(mut tx) => {
                if !nothing {
                    spend_upsert::<Sqlite>(&mut tx, &r).await?;
                }
                tx.commit().await?;
            }
            CheckTx::Postgres(mut tx) => {
                if !nothing {
                    spend_upsert::<Postgres>(&mut tx, &r).await?;
                }
                tx.commit().await?;
            }
        }
        Ok(r)
    }
}

async fn spend_upsert<'c, D>(tx: &mut Transaction<'c, D>, r: &SpendReservation) -> Result<()>
where
    D: sqlx::Database,
    for<'a> <D as sqlx::Database>::Arguments<'a>: sqlx::IntoArguments<'a, D>,
    for<'a> &'a mut <D as sqlx::Database>::Connection: sqlx::Executor<'a, Database = D>,
    Uuid: for<'a> sqlx::Encode<'a, D> + sqlx::Type<D>,
    String: for<'a> sqlx::Encode<'a, D> + sqlx::Type<D>,
    i64: for<'a> sqlx::Encode<'a, D> + sqlx::Type<D>,
{
    sqlx::query::<D>(crate::usage::SPEND_UPSERT)
        .bind(r.credential_id)
        .bind(r.user_id)
        .bind(r.day.clone())
        .bind(r.volume_usd_micros)
        .bind(r.withdrawal_usd_micros)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two stores on one database (two instances): a second check on a credential waits
    /// until the first has reserved, and then reads what it reserved; a check on another
    /// credential does not wait; a reservation given back is gone.
    async fn one_check_at_a_time(url: &str) {
        let a = Store::connect(url).await.unwrap();
        a.migrate().await.unwrap();
        let b = Store::connect(url).await.unwrap();
        let (cred, other, user) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let now = DbTime::now();
        let first = a.begin_spend_check(cred, now).await.unwrap();
        assert_eq!(first.totals(), SpentTotals::default());
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.begin_spend_check(cred, now).await.unwrap().totals() })
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            !waiter.is_finished(),
            "the second check waits for the first"
        );
        let r = first.reserve(user, 5_000_000, 7).await.unwrap();
        let seen = waiter.await.unwrap();
        assert_eq!(
            seen,
            SpentTotals {
                volume_today: 5_000_000,
                withdrawals_today: 7,
                withdrawals_this_month: 7
            }
        );
        // a refused check writes nothing
        let refused = b.begin_spend_check(cred, now).await.unwrap();
        drop(refused);
        let held = a.begin_spend_check(other, now).await.unwrap();
        if a.backend() == crate::Backend::Postgres {
            // per credential (SQLite's write lock is one for the whole file)
            let t = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                b.begin_spend_check(cred, now),
            )
            .await
            .expect("another credential's check does not wait")
            .unwrap()
            .totals();
            assert_eq!(t, seen);
        }
        drop(held);
        a.give_back_spend(&r).await.unwrap();
        let after = b.begin_spend_check(cred, now).await.unwrap().totals();
        assert_eq!(after, SpentTotals::default());
        // a later day's row (an instance whose clock is ahead, or a planted one) is not
        // today's, nor this month's so far
        let tomorrow = DbTime::new(now.0 + chrono::Duration::days(1));
        let c = a.begin_spend_check(cred, tomorrow).await.unwrap();
        c.reserve(user, 9, 9).await.unwrap();
        let today = b.begin_spend_check(cred, now).await.unwrap().totals();
        assert_eq!(today, SpentTotals::default());
        a.close().await;
        b.close().await;
    }

    #[tokio::test]
    async fn sqlite_checks_one_at_a_time() {
        let dir = tempfile_dir();
        one_check_at_a_time(&format!("sqlite://{}", dir.join("t.db").display())).await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn postgres_checks_one_at_a_time_across_instances() {
        let Some(admin) = crate::scratch::test_admin_url() else {
            return;
        };
        let db = crate::scratch::create(&admin, &crate::scratch::test_prefix())
            .await
            .unwrap();
        one_check_at_a_time(&db.url).await;
        a_timed_out_check_leaves_the_pool_whole(&db.url).await;
        db.drop().await;
    }

    /// A check whose lock is not granted within the wait fails (the call is refused), and
    /// the pooled connection it ran on is rolled back, not left in an aborted transaction
    /// for the next user of the pool.
    async fn a_timed_out_check_leaves_the_pool_whole(url: &str) {
        use sqlx::Connection;
        let store = Store::connect(url).await.unwrap();
        let cred = Uuid::now_v7();
        let mut holder = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(lock_key(cred))
            .execute(&mut holder)
            .await
            .unwrap();
        assert!(
            store.begin_spend_check(cred, DbTime::now()).await.is_err(),
            "the lock was held past the wait"
        );
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(lock_key(cred))
            .execute(&mut holder)
            .await
            .unwrap();
        for _ in 0..12 {
            let c = store.begin_spend_check(cred, DbTime::now()).await.unwrap();
            c.reserve(Uuid::now_v7(), 0, 0).await.unwrap();
        }
        store.close().await;
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("keygate-spend-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
