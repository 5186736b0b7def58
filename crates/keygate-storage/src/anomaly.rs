//! The facts anomaly scoring needs, gathered in one transaction from indexed columns of
//! `api_calls` and `audit_events`, and suspending a credential.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// A credential's history facts (calls over `[from, to)`, per source IP, and its user's
/// calls per UTC hour over the same window), kept between assessments so that the
/// periodic re-score reads only the rows that entered or left the window since the last
/// one instead of scanning 14 days of history every few seconds.
///
/// Exact as long as a call row is committed before its `created_at` falls behind the
/// window's moving end (`recent_since`, minutes behind now): the gateway stamps a call
/// when it finishes and commits it within the batch's latency. Anything else that could
/// make it drift (rows deleted with their connection, clocks of other instances far
/// behind) is bounded by a full recount every [`RESYNC`].
#[derive(Debug, Clone)]
struct HistoryEntry {
    user_id: Uuid,
    from: DbTime,
    to: DbTime,
    calls: i64,
    by_ip: HashMap<Option<String>, i64>,
    hours: [i64; 24],
    counted_at: Instant,
}

/// How long an entry may be carried forward by deltas before a full recount.
const RESYNC: Duration = Duration::from_secs(600);
/// Credentials seen from more source IPs than this are recounted in full every time.
const MAX_IPS: usize = 1024;
/// Entries kept per process (the map is cleared when it grows past this).
const MAX_ENTRIES: usize = 10_000;

/// Per-process cache of [`HistoryEntry`] by credential.
#[derive(Debug, Default)]
pub(crate) struct HistoryCache(Mutex<HashMap<Uuid, HistoryEntry>>);

impl HistoryCache {
    /// The entry for `q`'s credential if the window only moved forward since it was
    /// counted (so a delta can bring it up to date) and it is not due for a recount.
    fn reusable(&self, q: &FactsQuery) -> Option<HistoryEntry> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&q.credential_id)
            .filter(|e| {
                e.user_id == q.user_id
                    && e.from <= q.history_since
                    && e.to <= q.recent_since
                    && q.history_since <= e.to
                    && e.counted_at.elapsed() < RESYNC
            })
            .cloned()
    }

    fn put(&self, credential_id: Uuid, e: HistoryEntry) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if e.by_ip.len() > MAX_IPS {
            map.remove(&credential_id);
            return;
        }
        if map.len() >= MAX_ENTRIES && !map.contains_key(&credential_id) {
            map.clear();
        }
        map.insert(credential_id, e);
    }
}

impl Store {
    /// The facts for one assessment. The history part is carried forward from this
    /// process's previous assessment of the credential where possible ([`HistoryEntry`]);
    /// the recent window, the denial streak and the unlocks are read afresh.
    pub async fn anomaly_facts(&self, actor: Actor, q: &FactsQuery) -> Result<AnomalyFacts> {
        let hour = match self.backend() {
            Backend::Postgres => "CAST(EXTRACT(HOUR FROM created_at AT TIME ZONE 'UTC') AS BIGINT)",
            Backend::Sqlite => "CAST(substr(created_at, 12, 2) AS INTEGER)",
        };
        let hist_sql = format!(
            "SELECT {hour} AS h, COUNT(*) FROM api_calls WHERE user_id = $1 AND created_at >= $2 AND created_at < $3 GROUP BY h"
        );
        let by_ip_sql = "SELECT ip_address, COUNT(*) FROM api_calls \
            WHERE credential_id = $1 AND created_at >= $2 AND created_at < $3 GROUP BY ip_address";
        let recent_sql = "SELECT \
            COALESCE(SUM(CASE WHEN ip_address = $4 THEN 1 ELSE 0 END), 0), COUNT(*) \
            FROM api_calls WHERE credential_id = $1 AND created_at >= $2 AND created_at < $3";
        let streak_sql = "SELECT decision FROM api_calls WHERE credential_id = $1 AND created_at < $2 ORDER BY created_at DESC LIMIT 50";
        let unlock_sql = "SELECT ip_address, seq FROM audit_events WHERE user_id = $1 AND category = 'vault' AND action = 'unlock' \
            AND success AND created_at >= $2 ORDER BY seq DESC LIMIT 1";
        let earlier_sql = "SELECT COUNT(*), COALESCE(SUM(CASE WHEN ip_address = $3 THEN 1 ELSE 0 END), 0) FROM audit_events \
            WHERE user_id = $1 AND category = 'vault' AND action = 'unlock' AND success AND seq < $2";
        // (from, to, sign): the rows to add to, or take from, the carried-forward counts
        let (mut h, ranges) = match self.history.reusable(q) {
            Some(e) => {
                let ranges = [(e.to, q.recent_since, 1), (e.from, q.history_since, -1)];
                (e, ranges.to_vec())
            }
            None => (
                HistoryEntry {
                    user_id: q.user_id,
                    from: q.history_since,
                    to: q.history_since,
                    calls: 0,
                    by_ip: HashMap::new(),
                    hours: [0; 24],
                    counted_at: Instant::now(),
                },
                vec![(q.history_since, q.recent_since, 1)],
            ),
        };
        // read-only: a deferred transaction (on SQLite an IMMEDIATE one would hold the
        // write lock, and so stall the gateway's group commit, for the whole scan)
        let mut f = in_tx!(@quiet self, actor, |tx| {
            let mut f = AnomalyFacts::default();
            for &(from, to, sign) in &ranges {
                if from >= to {
                    continue;
                }
                let ips: Vec<(Option<String>, i64)> = sqlx::query_as::<DB, _>(by_ip_sql)
                    .bind(q.credential_id)
                    .bind(from)
                    .bind(to)
                    .fetch_all(&mut *tx)
                    .await?;
                for (ip, n) in ips {
                    h.calls += sign * n;
                    *h.by_ip.entry(ip).or_default() += sign * n;
                }
                let hist: Vec<(i64, i64)> = sqlx::query_as::<DB, _>(&hist_sql)
                    .bind(q.user_id)
                    .bind(from)
                    .bind(to)
                    .fetch_all(&mut *tx)
                    .await?;
                for (hour, n) in hist {
                    if (0..24).contains(&hour) {
                        h.hours[hour as usize] += sign * n;
                    }
                }
            }
            let (r_ip, r): (i64, i64) = sqlx::query_as::<DB, _>(recent_sql)
                .bind(q.credential_id)
                .bind(q.recent_since)
                .bind(q.now)
                .bind(q.ip.clone())
                .fetch_one(&mut *tx)
                .await?;
            (f.recent_calls_from_ip, f.recent_calls) = (r_ip, r);
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
        });
        h.by_ip.retain(|_, n| *n != 0);
        (h.from, h.to) = (q.history_since, q.recent_since);
        f.history_calls = h.calls;
        f.history_calls_from_ip =
            q.ip.as_ref()
                .and_then(|ip| h.by_ip.get(&Some(ip.clone())).copied())
                .unwrap_or(0);
        f.hour_histogram = h.hours;
        let drifted = h.calls < 0 || h.hours.iter().chain(h.by_ip.values()).any(|n| *n < 0);
        if drifted {
            // something was deleted after it was counted: recount next time
            self.history
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&q.credential_id);
        } else {
            self.history.put(q.credential_id, h);
        }
        Ok(f)
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
