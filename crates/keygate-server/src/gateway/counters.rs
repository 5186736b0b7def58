//! Request counters for the per-minute/hour/day limits, in calendar-aligned UTC windows.
//!
//! Where they live: Redis when `KEYGATE_REDIS_URL` is set (shared by every instance);
//! else PostgreSQL's `rate_counters` table (shared by every instance on that database);
//! else (SQLite, one instance) in process. Daily volume and withdrawal totals never live
//! here: they are the database's `credential_spend` ledger, which every instance checks
//! and reserves in under one lock (`keygate_storage::Store::begin_spend_check`).

use std::collections::HashMap;

use chrono::{DateTime, Timelike, Utc};
use keygate_storage::{Actor, Backend, Store};
use parking_lot::Mutex;
use uuid::Uuid;

use crate::config::Config;

pub enum CounterStore {
    Local(Mutex<HashMap<(Uuid, u8, i64), u32>>),
    Database,
    Redis(RedisCounters),
}

pub struct RedisCounters {
    client: redis::Client,
    conn: tokio::sync::OnceCell<redis::aio::MultiplexedConnection>,
}

/// Window starts (unix seconds) of the minute, hour and day containing `now`.
pub fn windows(now: DateTime<Utc>) -> [i64; 3] {
    let t = now.timestamp();
    let minute = t - i64::from(now.second());
    let hour = minute - i64::from(now.minute()) * 60;
    let day = hour - i64::from(now.hour()) * 3600;
    [minute, hour, day]
}

const SPANS: [i64; 3] = [60, 3600, 86_400];

impl CounterStore {
    pub fn new(config: &Config, backend: Backend) -> Self {
        if let Some(url) = config.redis_url.as_deref() {
            match redis::Client::open(url) {
                Ok(client) => {
                    return CounterStore::Redis(RedisCounters {
                        client,
                        conn: tokio::sync::OnceCell::new(),
                    })
                }
                // Config validation rejects bad URLs earlier; if one slips through, every
                // rate-limited call is denied rather than counted nowhere.
                Err(e) => tracing::error!(error = %e, "KEYGATE_REDIS_URL is not usable"),
            }
            return CounterStore::Database;
        }
        match backend {
            Backend::Postgres => CounterStore::Database,
            Backend::Sqlite => CounterStore::Local(Mutex::new(HashMap::new())),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            CounterStore::Local(_) => "in-process",
            CounterStore::Database => "database",
            CounterStore::Redis(_) => "redis",
        }
    }

    /// Counts one request in each of `scopes` and returns, for each, the counts of the
    /// current minute, hour and day *including* it.
    pub async fn bump(
        &self,
        store: &Store,
        scopes: &[Scope],
        now: DateTime<Utc>,
    ) -> Result<Vec<[u32; 3]>, String> {
        if scopes.is_empty() {
            return Ok(Vec::new());
        }
        let w = windows(now);
        let to_u32 = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
        match self {
            CounterStore::Local(map) => {
                let mut m = map.lock();
                if m.len() > 100_000 {
                    // Drop windows that have ended (bounded memory).
                    m.retain(|(_, k, start), _| {
                        *start + SPANS[usize::from(*k % 3)] > now.timestamp()
                    });
                }
                Ok(scopes
                    .iter()
                    .map(|scope| {
                        let mut out = [0u32; 3];
                        for (k, start) in w.iter().enumerate() {
                            let c = m.entry((scope.id(), scope.slot(k), *start)).or_insert(0);
                            *c = c.saturating_add(1);
                            out[k] = *c;
                        }
                        out
                    })
                    .collect())
            }
            CounterStore::Database => {
                let keys: Vec<(String, i64)> = scopes
                    .iter()
                    .flat_map(|scope| {
                        ["m", "h", "d"]
                            .iter()
                            .zip(w)
                            .map(move |(k, start)| (format!("{}:{k}", scope.bucket()), start))
                    })
                    .collect();
                let v = store
                    .bump_counters(Actor::service(), &keys)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(v.chunks(3)
                    .map(|c| [to_u32(c[0]), to_u32(c[1]), to_u32(c[2])])
                    .collect())
            }
            CounterStore::Redis(r) => {
                let mut conn = r
                    .conn
                    .get_or_try_init(|| r.client.get_multiplexed_async_connection())
                    .await
                    .map_err(|e| e.to_string())?
                    .clone();
                let mut pipe = redis::pipe();
                pipe.atomic();
                for scope in scopes {
                    for ((k, start), span) in ["m", "h", "d"].iter().zip(w).zip(SPANS) {
                        let key = format!("keygate:{}:{k}:{start}", scope.bucket());
                        pipe.incr(&key, 1).expire(&key, span + 60).ignore();
                    }
                }
                let v: Vec<i64> = pipe
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                if v.len() != 3 * scopes.len() {
                    return Err(format!(
                        "Redis answered {} counts for {}",
                        v.len(),
                        3 * scopes.len()
                    ));
                }
                Ok(v.chunks(3)
                    .map(|c| [to_u32(c[0]), to_u32(c[1]), to_u32(c[2])])
                    .collect())
            }
        }
    }
}

/// What a request counter counts: every call of a key, or the calls made through one of
/// its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Credential(Uuid),
    Connection(Uuid),
}

impl Scope {
    fn id(self) -> Uuid {
        match self {
            Scope::Credential(id) | Scope::Connection(id) => id,
        }
    }

    /// The in-process map's window slot: 0–2 for a key, 3–5 for a connection.
    fn slot(self, window: usize) -> u8 {
        let base = match self {
            Scope::Credential(_) => 0,
            Scope::Connection(_) => 3,
        };
        base + window as u8
    }

    /// The shared counter's name (a key's is the one keygate has always used).
    fn bucket(self) -> String {
        match self {
            Scope::Credential(id) => format!("req:{id}"),
            Scope::Connection(id) => format!("reqc:{id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn windows_are_calendar_aligned() {
        let t = Utc.with_ymd_and_hms(2026, 11, 26, 13, 45, 17).unwrap();
        let [m, h, d] = windows(t);
        assert_eq!(
            m,
            Utc.with_ymd_and_hms(2026, 11, 26, 13, 45, 0)
                .unwrap()
                .timestamp()
        );
        assert_eq!(
            h,
            Utc.with_ymd_and_hms(2026, 11, 26, 13, 0, 0)
                .unwrap()
                .timestamp()
        );
        assert_eq!(
            d,
            Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0)
                .unwrap()
                .timestamp()
        );
    }
}
