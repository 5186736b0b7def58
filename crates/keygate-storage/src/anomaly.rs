//! The facts anomaly scoring needs, gathered in one transaction from indexed columns of
//! `api_calls` and `audit_events`, and suspending a credential.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::{Actor, ApiCallRecord, Backend, DbTime, Result, Store};

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
    /// When set (withdrawals): also find out whether the key was used from `ip` between
    /// `history_since` and this time ([`AnomalyFacts::ip_used_before`]).
    pub ip_settled_before: Option<DbTime>,
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
    /// With [`FactsQuery::ip_settled_before`]: whether the key was used from the assessed
    /// IP between the history's start and that time; `None` when the key has no use in
    /// that span at all (or no IP, or the query did not ask).
    pub ip_used_before: Option<bool>,
}

/// Calls of one credential over a time window, in all and per source IP.
#[derive(Debug, Clone, Default)]
struct Tally {
    calls: i64,
    by_ip: HashMap<Option<String>, i64>,
}

impl Tally {
    fn add(&mut self, ip: Option<String>, n: i64) {
        self.calls += n;
        *self.by_ip.entry(ip).or_default() += n;
    }

    fn of_ip(&self, ip: &Option<String>) -> i64 {
        ip.as_ref()
            .and_then(|ip| self.by_ip.get(&Some(ip.clone())).copied())
            .unwrap_or(0)
    }

    fn drifted(&self) -> bool {
        self.calls < 0 || self.by_ip.values().any(|n| *n < 0)
    }
}

/// A credential's window counts, kept between assessments so that the periodic re-score
/// reads only the rows that entered or left each window since the last one instead of
/// scanning 14 days of history every few seconds:
/// - the history `[history_since, recent_since)`, per source IP, with the user's calls per
///   UTC hour over the same window;
/// - the settled part of the recent window, `[recent_since, now - SETTLE)`. The newest
///   [`SETTLE`] is always counted afresh, since calls near "now" may still be committing.
///
/// Exact as long as a call row is committed within [`SETTLE`] of its `created_at`: the
/// gateway stamps a call when it finishes and commits it within the batch's latency. A
/// row written later through this store (imported, backdated, a stalled write) drops its
/// credential's counts, and deleting a connection's rows drops them all. What this
/// process cannot see (such rows written by another process, clocks of other instances
/// far behind) is bounded by a full recount every [`RESYNC`].
#[derive(Debug, Clone)]
struct HistoryEntry {
    user_id: Uuid,
    history_since: DbTime,
    recent_since: DbTime,
    settled_to: DbTime,
    history: Tally,
    hours: [i64; 24],
    settled: Tally,
    counted_at: Instant,
}

/// Calls this recent are counted afresh on every assessment. A row this process commits
/// later than this after its time drops its credential's counts instead
/// ([`HistoryCache::committed`]). Far above a group commit's latency (PostgreSQL's worst
/// measured stalls: 40–130 ms). It was 10 s: the periodic re-score of a busy key then
/// counted ten seconds of calls afresh every 5 s, 100 ms of CPU each time at 13k calls/s,
/// and signed calls under load ran 6–8 % slower with a higher p99 (BENCHMARKS.md,
/// session 13).
const SETTLE: chrono::Duration = chrono::Duration::seconds(2);
/// How long an entry may be carried forward by deltas before a full recount.
const RESYNC: Duration = Duration::from_secs(600);
/// Credentials seen from more source IPs than this are recounted in full every time.
const MAX_IPS: usize = 1024;
/// Source IPs kept over all entries (a few MB); the cache is emptied when it would exceed
/// this, and refills with the credentials in use.
const MAX_TOTAL_IPS: usize = 65_536;
/// Entries kept, likewise.
const MAX_ENTRIES: usize = 65_536;

/// `[from, to)` and what its rows do: `Some((history sign, settled sign))` for the
/// carried-forward counts, `None` for the fresh part counted for one call only.
type Range = (DbTime, DbTime, Option<(i64, i64)>);

/// Per-process cache of [`HistoryEntry`] by credential.
#[derive(Debug, Default)]
pub(crate) struct HistoryCache(Mutex<Entries>);

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<Uuid, HistoryEntry>,
    /// Source IPs held over all entries.
    ips: usize,
}

impl HistoryEntry {
    fn ips(&self) -> usize {
        self.history.by_ip.len() + self.settled.by_ip.len()
    }
}

impl Entries {
    fn remove(&mut self, credential_id: &Uuid) {
        if let Some(old) = self.map.remove(credential_id) {
            self.ips -= old.ips();
        }
    }
}

impl HistoryCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry for `q`'s credential, unless it is due for a full recount.
    fn entry(&self, q: &FactsQuery) -> Option<HistoryEntry> {
        self.lock()
            .map
            .get(&q.credential_id)
            .filter(|e| e.user_id == q.user_id && e.counted_at.elapsed() < RESYNC)
            .cloned()
    }

    fn put(&self, credential_id: Uuid, e: HistoryEntry) {
        let mut entries = self.lock();
        entries.remove(&credential_id);
        if e.ips() > MAX_IPS {
            return;
        }
        if entries.ips + e.ips() > MAX_TOTAL_IPS || entries.map.len() >= MAX_ENTRIES {
            *entries = Entries::default();
        }
        entries.ips += e.ips();
        entries.map.insert(credential_id, e);
    }

    fn forget(&self, credential_id: Uuid) {
        self.forget_all(&[credential_id]);
    }

    /// Drops the carried counts of these credentials (rows of theirs were written late).
    pub(crate) fn forget_all(&self, credentials: &[Uuid]) {
        if credentials.is_empty() {
            return;
        }
        let mut entries = self.lock();
        for c in credentials {
            entries.remove(c);
        }
    }

    /// Drops every carried count (call rows were deleted).
    pub(crate) fn clear(&self) {
        *self.lock() = Entries::default();
    }

    /// Each counted call row's credential and time (what [`HistoryCache::committed`]
    /// needs). A row the counts leave out ([`is_key_use`]) cannot make them stale: a sync
    /// that took longer than [`SETTLE`] no longer drops its credential's carried counts.
    pub(crate) fn stamps(calls: &[ApiCallRecord]) -> impl Iterator<Item = (Uuid, DbTime)> + '_ {
        calls
            .iter()
            .filter(|c| is_key_use(c))
            .map(|c| (c.credential_id, c.created_at))
    }

    /// After a batch committed: rows stamped more than [`SETTLE`] before now (imported,
    /// backdated, or held up in a stalled write) may fall in a window already counted, so
    /// their credentials' carried counts are dropped.
    pub(crate) fn committed(&self, stamps: impl IntoIterator<Item = (Uuid, DbTime)>) {
        let cutoff = DbTime::new(chrono::Utc::now() - SETTLE);
        let late: Vec<Uuid> = stamps
            .into_iter()
            .filter(|(_, at)| *at < cutoff)
            .map(|(c, _)| c)
            .collect();
        self.forget_all(&late);
    }
}

/// Refusals that say nothing about who holds the key: the vault was locked, a rate limit
/// (keygate's or the exchange's) was reached, the counters were unavailable. A bot that
/// retries through them is not probing; they neither count towards a denial streak nor
/// end one.
const NOT_PROBING: [&str; 4] = [
    "vault_locked",
    "rate_limited",
    "exchange_rate_limited",
    "counters_unavailable",
];

/// Denied calls in a row, newest first, leaving out [`NOT_PROBING`] refusals.
fn denial_streak(decisions: &[(String, Option<String>)]) -> i64 {
    decisions
        .iter()
        .filter(|(d, code)| {
            !(d == "denied" && code.as_deref().is_some_and(|c| NOT_PROBING.contains(&c)))
        })
        .take_while(|(d, _)| d == "denied")
        .count() as i64
}

/// How far back a denial streak is looked for.
const STREAK_WINDOW: chrono::Duration = chrono::Duration::hours(1);

/// The calls that count as use of a key: allowed and signed, by a client. keygate's own
/// calls (a connection's sync, which has no client IP) are not: counted, they made a
/// key's first client IP "new" (30 points; with a withdrawal, enough to suspend it), and
/// a sync at any hour blurred its usual hours.
const KEY_USE: &str = "decision = 'allowed' AND class <> 'public' AND ip_address IS NOT NULL";

/// [`KEY_USE`] for a row in memory (keep the two in step).
fn is_key_use(c: &ApiCallRecord) -> bool {
    c.decision == "allowed" && c.class != "public" && c.ip_address.is_some()
}

impl Store {
    /// The facts for one assessment. The history and the settled part of the recent
    /// window are carried forward from this process's previous assessment of the
    /// credential where possible ([`HistoryEntry`]); the newest seconds, the denial streak
    /// and the unlocks are read afresh.
    pub async fn anomaly_facts(&self, actor: Actor, q: &FactsQuery) -> Result<AnomalyFacts> {
        let hour = match self.backend() {
            Backend::Postgres => "CAST(EXTRACT(HOUR FROM created_at AT TIME ZONE 'UTC') AS BIGINT)",
            Backend::Sqlite => "CAST(substr(created_at, 12, 2) AS INTEGER)",
        };
        // Only the key's own use counts: allowed, signed calls (`KEY_USE`). A public call
        // is made by anyone holding a token and costs nothing; counted, one from a new IP
        // made that IP "known" five minutes later, and one between probes ended the streak.
        let hist_sql = format!(
            "SELECT {hour} AS h, COUNT(*) FROM api_calls WHERE user_id = $1 AND created_at >= $2 AND created_at < $3 AND {KEY_USE} GROUP BY h"
        );
        let by_ip_sql = format!(
            "SELECT ip_address, COUNT(*) FROM api_calls \
             WHERE credential_id = $1 AND created_at >= $2 AND created_at < $3 AND {KEY_USE} GROUP BY ip_address"
        );
        // within the last hour: the scan walks the key's calls newest first, and skips its
        // public ones, of which a polling bot can have millions between two signed calls
        // (a sync between probes does not end the streak either)
        let streak_sql = "SELECT decision, deny_code FROM api_calls WHERE credential_id = $1 AND created_at < $2 AND created_at >= $3 AND class <> 'public' AND ip_address IS NOT NULL ORDER BY created_at DESC LIMIT 50";
        // 0 or 1: whether such a call exists (the first one found ends the scan)
        let settled_sql = format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM api_calls WHERE credential_id = $1 AND created_at >= $2 \
             AND created_at < $3 AND {KEY_USE} LIMIT 1) AS t"
        );
        let settled_ip_sql = format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM api_calls WHERE credential_id = $1 AND created_at >= $2 \
             AND created_at < $3 AND ip_address = $4 AND {KEY_USE} LIMIT 1) AS t"
        );
        let unlock_sql = "SELECT ip_address, seq FROM audit_events WHERE user_id = $1 AND category = 'vault' AND action = 'unlock' \
            AND success AND created_at >= $2 ORDER BY seq DESC LIMIT 1";
        let earlier_sql = "SELECT COUNT(*), COALESCE(SUM(CASE WHEN ip_address = $3 THEN 1 ELSE 0 END), 0) FROM audit_events \
            WHERE user_id = $1 AND category = 'vault' AND action = 'unlock' AND success AND seq < $2";
        let settled_to = DbTime::new((q.now.0 - SETTLE).max(q.recent_since.0));
        let carried = self.history.entry(q);
        let mut h = HistoryEntry {
            user_id: q.user_id,
            history_since: q.history_since,
            recent_since: q.recent_since,
            settled_to,
            history: Tally::default(),
            hours: [0; 24],
            settled: Tally::default(),
            // kept from the entry while any window is carried forward
            counted_at: Instant::now(),
        };
        // The rows to add to, or take from, the carried-forward counts ([`Range`]). A
        // window is carried forward only if both its ends moved forward and it overlaps
        // its old self, otherwise it is counted afresh.
        let mut ranges: Vec<Range> = Vec::new();
        let mut range = |from: DbTime, to: DbTime, hist: i64, settled: i64| {
            if from >= to {
                return;
            }
            match ranges.iter_mut().find(|r| (r.0, r.1) == (from, to)) {
                Some((_, _, Some(signs))) => *signs = (signs.0 + hist, signs.1 + settled),
                _ => ranges.push((from, to, Some((hist, settled)))),
            }
        };
        match &carried {
            Some(e)
                if e.history_since <= q.history_since
                    && q.history_since <= e.recent_since
                    && e.recent_since <= q.recent_since =>
            {
                (h.history, h.hours, h.counted_at) = (e.history.clone(), e.hours, e.counted_at);
                range(e.history_since, q.history_since, -1, 0);
                range(e.recent_since, q.recent_since, 1, 0);
            }
            _ => range(q.history_since, q.recent_since, 1, 0),
        }
        match &carried {
            Some(e)
                if e.recent_since <= q.recent_since
                    && q.recent_since <= e.settled_to
                    && e.settled_to <= settled_to =>
            {
                (h.settled, h.counted_at) = (e.settled.clone(), e.counted_at);
                range(e.recent_since, q.recent_since, 0, -1);
                range(e.settled_to, settled_to, 0, 1);
            }
            _ => range(q.recent_since, settled_to, 0, 1),
        }
        if settled_to < q.now {
            ranges.push((settled_to, q.now, None));
        }
        let mut fresh = Tally::default();
        // read-only: a deferred transaction (on SQLite an IMMEDIATE one would hold the
        // write lock, and so stall the gateway's group commit, for the whole scan)
        let mut f = in_tx!(@quiet self, actor, |tx| {
            let mut f = AnomalyFacts::default();
            for &(from, to, signs) in &ranges {
                let ips: Vec<(Option<String>, i64)> = sqlx::query_as::<DB, _>(&by_ip_sql)
                    .bind(q.credential_id)
                    .bind(from)
                    .bind(to)
                    .fetch_all(&mut *tx)
                    .await?;
                let Some((hist, settled)) = signs else {
                    for (ip, n) in ips {
                        fresh.add(ip, n);
                    }
                    continue;
                };
                for (ip, n) in ips {
                    if hist != 0 {
                        h.history.add(ip.clone(), hist * n);
                    }
                    if settled != 0 {
                        h.settled.add(ip, settled * n);
                    }
                }
                if hist == 0 {
                    continue;
                }
                let hours: Vec<(i64, i64)> = sqlx::query_as::<DB, _>(&hist_sql)
                    .bind(q.user_id)
                    .bind(from)
                    .bind(to)
                    .fetch_all(&mut *tx)
                    .await?;
                for (hour, n) in hours {
                    if (0..24).contains(&hour) {
                        h.hours[hour as usize] += hist * n;
                    }
                }
            }
            if let (Some(before), Some(ip)) = (q.ip_settled_before, q.ip.as_ref()) {
                // withdrawals only: the first call in the span answers the first question
                // at once, and a long-used IP is met early in the second (a scan of the
                // whole span means the IP is young)
                let any: i64 = sqlx::query_scalar::<DB, i64>(&settled_sql)
                    .bind(q.credential_id)
                    .bind(q.history_since)
                    .bind(before)
                    .fetch_one(&mut *tx)
                    .await?;
                if any > 0 {
                    let from_ip: i64 = sqlx::query_scalar::<DB, i64>(&settled_ip_sql)
                        .bind(q.credential_id)
                        .bind(q.history_since)
                        .bind(before)
                        .bind(ip)
                        .fetch_one(&mut *tx)
                        .await?;
                    f.ip_used_before = Some(from_ip > 0);
                }
            }
            let decisions: Vec<(String, Option<String>)> = sqlx::query_as::<DB, _>(streak_sql)
                .bind(q.credential_id)
                .bind(q.now)
                .bind(DbTime::new(q.now.0 - STREAK_WINDOW))
                .fetch_all(&mut *tx)
                .await?;
            f.denial_streak = denial_streak(&decisions);
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
        h.history.by_ip.retain(|_, n| *n != 0);
        h.settled.by_ip.retain(|_, n| *n != 0);
        (h.history_since, h.recent_since, h.settled_to) =
            (q.history_since, q.recent_since, settled_to);
        f.history_calls = h.history.calls;
        f.history_calls_from_ip = h.history.of_ip(&q.ip);
        f.recent_calls = h.settled.calls + fresh.calls;
        f.recent_calls_from_ip = h.settled.of_ip(&q.ip) + fresh.of_ip(&q.ip);
        f.hour_histogram = h.hours;
        if h.history.drifted() || h.settled.drifted() || h.hours.iter().any(|n| *n < 0) {
            // something was deleted after it was counted: recount next time
            self.history.forget(q.credential_id);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the rows the counts include are stamped: a sync's (no client IP), a public
    /// call's and a denied one's are not, so they never drop the carried counts.
    #[test]
    fn only_counted_rows_are_stamped() {
        let row = |decision: &str, class: &str, ip: Option<&str>| ApiCallRecord {
            id: Uuid::now_v7(),
            connection_id: Uuid::from_u128(3),
            credential_id: Uuid::from_u128(1),
            user_id: Uuid::from_u128(2),
            method: "GET".into(),
            endpoint: "/api/v3/account".into(),
            class: class.into(),
            decision: decision.into(),
            deny_code: None,
            status_code: Some(200),
            response_time_ms: Some(1),
            success: true,
            error_message: None,
            rate_limit_remaining: None,
            rate_limit_reset: None,
            rate_limit_used: None,
            notional_usd_micros: 0,
            withdrawal_usd_micros: 0,
            ip_address: ip.map(str::to_string),
            user_agent: None,
            session_id: None,
            created_at: DbTime::from_micros(0),
            reserved: None,
        };
        let rows = [
            row("allowed", "read", Some("10.0.0.1")),
            row("allowed", "read", None),
            row("allowed", "public", Some("10.0.0.1")),
            row("denied", "trade", Some("10.0.0.1")),
        ];
        assert_eq!(HistoryCache::stamps(&rows).count(), 1);
        assert!(is_key_use(&rows[0]));
    }

    #[test]
    fn a_denial_streak_leaves_out_refusals_that_are_not_probing() {
        let row = |d: &str, code: Option<&str>| (d.to_string(), code.map(str::to_string));
        let denied = |code| row("denied", Some(code));
        // newest first: rate limits and a locked vault neither count nor end the streak
        let rows = vec![
            denied("rate_limited"),
            denied("scope_denied"),
            denied("vault_locked"),
            denied("symbol_not_allowed"),
            denied("exchange_rate_limited"),
            denied("counters_unavailable"),
            denied("scope_denied"),
            row("allowed", None),
            denied("scope_denied"),
        ];
        assert_eq!(denial_streak(&rows), 3);
        assert_eq!(denial_streak(&vec![denied("vault_locked"); 20]), 0);
        assert_eq!(denial_streak(&[row("denied", None)]), 1);
        assert_eq!(
            denial_streak(&[row("allowed", None), denied("scope_denied")]),
            0
        );
    }

    fn entry(ips: usize) -> HistoryEntry {
        let t = DbTime::now();
        let mut history = Tally::default();
        for i in 0..ips {
            history.add(Some(format!("10.0.{}.{}", i / 256, i % 256)), 1);
        }
        HistoryEntry {
            user_id: Uuid::nil(),
            history_since: t,
            recent_since: t,
            settled_to: t,
            history,
            hours: [0; 24],
            settled: Tally::default(),
            counted_at: Instant::now(),
        }
    }

    fn held(c: &HistoryCache) -> (usize, usize) {
        let e = c.lock();
        assert_eq!(e.ips, e.map.values().map(HistoryEntry::ips).sum::<usize>());
        (e.map.len(), e.ips)
    }

    #[test]
    fn the_cache_stays_within_its_bounds_and_accounts_exactly() {
        let c = HistoryCache::default();
        // too many source IPs for one credential: not kept
        c.put(Uuid::new_v4(), entry(MAX_IPS + 1));
        assert_eq!(held(&c), (0, 0));
        let id = Uuid::new_v4();
        c.put(id, entry(10));
        c.put(id, entry(3));
        assert_eq!(held(&c), (1, 3), "a replaced entry gives its IPs back");
        c.forget(id);
        assert_eq!(held(&c), (0, 0));
        for _ in 0..(2 * MAX_TOTAL_IPS / MAX_IPS) {
            c.put(Uuid::new_v4(), entry(MAX_IPS));
            assert!(held(&c).1 <= MAX_TOTAL_IPS);
        }
        assert!(held(&c).0 >= 1);
        c.clear();
        assert_eq!(held(&c), (0, 0));
    }
}
