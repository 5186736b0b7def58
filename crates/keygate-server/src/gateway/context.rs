//! A short-lived cache of [`CallContext`]s, so a busy connection does not pay a read
//! transaction per call.
//!
//! Correctness rests on [`Store::write_epoch`]: an entry records the epoch observed
//! *before* its database read, and is used only while the epoch is unchanged, so any
//! write this instance commits (a suspension, a revoke, new limits, a lock, a rotation,
//! a shred, anything) invalidates every entry at once. Writes by another instance on the
//! same PostgreSQL are seen after at most the TTL (`KEYGATE_GATEWAY_CACHE_MS`, default
//! 1 s; `0` disables the cache). Time-based state (expiry, grace periods, the unlock
//! session's end) is still judged against the call's own `now` by policy.
//! Not-found results are never cached. Each entry also carries what every call derives
//! from the context (merged limits, scopes, the upstream's host), computed once per load.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate_storage::{Actor, CallContext, DbTime, Store};
use parking_lot::Mutex;
use uuid::Uuid;

type Key = (Uuid, Uuid, Option<i32>);

/// A call context and what calls derive from it.
pub struct Prepared {
    pub ctx: CallContext,
    /// Credential and connection limits, the stricter of each, and the connection's own
    /// request caps (Err: unreadable).
    pub limits: Result<(keygate_policy::Limits, keygate_policy::ConnectionRates), String>,
    pub scopes: keygate_policy::ScopeSet,
    /// Base URL, environment and signed host (None: `upstream_of` says why).
    pub upstream: Option<(String, keygate_exchanges::Environment, String)>,
    /// Which caps the credential's other connections set (they count this call too).
    pub sibling_caps: keygate_policy::CapsElsewhere,
}

impl Prepared {
    fn new(ctx: CallContext, allowed_upstreams: &[String]) -> Prepared {
        let upstream = ctx
            .connection
            .exchange
            .parse()
            .ok()
            .and_then(|ex| super::upstream_of(&ctx, ex, allowed_upstreams).ok());
        Prepared {
            limits: super::effective_limits(&ctx),
            sibling_caps: super::sibling_caps(&ctx),
            scopes: super::effective_scopes(&ctx),
            upstream,
            ctx,
        }
    }
}

const MAX_ENTRIES: usize = 10_000;

/// The cache: contexts by (user, connection, pinned generation). Generic over the value
/// only so the loading rules can be tested without a database.
pub struct ContextCache<V = Arc<Prepared>> {
    ttl: Duration,
    /// The value, the write epoch seen before it was read, and when it was read.
    entries: Mutex<HashMap<Key, (V, u64, Instant)>>,
    /// One load at a time per key: when an entry expires under load, the calls that find
    /// it expired wait for one read instead of each making their own (measured: 260
    /// reads in 6 s for one connection at 32 concurrent calls, against a 1 s TTL).
    loading: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

impl ContextCache {
    /// The context of `connection` for `user` (optionally pinned to a key generation);
    /// its upstream is checked against `allowed_upstreams`.
    #[allow(clippy::too_many_arguments)]
    pub async fn get(
        &self,
        store: &Store,
        allowed_upstreams: &[String],
        actor: Actor,
        user: Uuid,
        connection: Uuid,
        generation: Option<i32>,
        now: DbTime,
    ) -> keygate_storage::Result<Option<Arc<Prepared>>> {
        let load = || async {
            Ok(store
                .call_context(actor, user, connection, generation, now)
                .await?
                .map(|c| Arc::new(Prepared::new(c, allowed_upstreams))))
        };
        // Row-level security is the database's: an actor that may not read `user`'s rows
        // (a bug passing another user's id) is not served them from the cache, but asks
        // the database, which refuses.
        if self.ttl.is_zero() || !actor.may_act_for(user) {
            return load().await;
        }
        self.get_with((user, connection, generation), || store.write_epoch(), load)
            .await
    }
}

impl<V: Clone> ContextCache<V> {
    pub fn new(ttl: Duration) -> Self {
        ContextCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
            loading: Mutex::new(HashMap::new()),
        }
    }

    /// The cached value for `key`, if it was read at `epoch` and is within the TTL.
    fn fresh(&self, key: &Key, epoch: u64) -> Option<V> {
        let entries = self.entries.lock();
        let (v, e, at) = entries.get(key)?;
        (*e == epoch && at.elapsed() < self.ttl).then(|| v.clone())
    }

    /// The value for `key` from the cache, or from `load` (one load at a time per key).
    /// `epoch` is the store's write epoch; not-found (`None`) is never cached.
    async fn get_with<F, Fut>(
        &self,
        key: Key,
        epoch: impl Fn() -> u64,
        load: F,
    ) -> keygate_storage::Result<Option<V>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = keygate_storage::Result<Option<V>>>,
    {
        if let Some(v) = self.fresh(&key, epoch()) {
            return Ok(Some(v));
        }
        let gate = {
            let mut loading = self.loading.lock();
            if loading.len() >= MAX_ENTRIES {
                loading.clear();
            }
            loading.entry(key).or_default().clone()
        };
        let _one_at_a_time = gate.lock().await;
        // the epoch before the read, as always; a load that finished while this call
        // waited serves it only if nothing was written since that load began
        let epoch = epoch();
        if let Some(v) = self.fresh(&key, epoch) {
            return Ok(Some(v));
        }
        let loaded = load().await?;
        if let Some(v) = &loaded {
            let mut m = self.entries.lock();
            if m.len() >= MAX_ENTRIES {
                let ttl = self.ttl;
                m.retain(|_, (_, _, at)| at.elapsed() < ttl);
                if m.len() >= MAX_ENTRIES {
                    m.clear();
                }
            }
            m.insert(key, (v.clone(), epoch, Instant::now()));
        }
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_misses_load_once_and_a_write_during_the_load_forces_a_reload() {
        let cache: ContextCache<u64> = ContextCache::new(Duration::from_secs(60));
        let key = (Uuid::new_v4(), Uuid::new_v4(), None);
        let (epoch, loads) = (AtomicU64::new(0), AtomicU64::new(0));
        let load = || async {
            let n = loads.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(Some(n))
        };
        let get = || cache.get_with(key, || epoch.load(Ordering::SeqCst), load);
        let got = futures::future::join_all((0..16).map(|_| get())).await;
        assert_eq!(
            loads.load(Ordering::SeqCst),
            1,
            "one load for 16 concurrent misses"
        );
        assert!(got.iter().all(|v| matches!(v, Ok(Some(1)))));
        // a write (the epoch moves) while a load is running: the calls waiting for it
        // must not take its result, which may predate the write
        epoch.store(1, Ordering::SeqCst);
        let writer = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            epoch.store(2, Ordering::SeqCst);
        };
        let (first, (), second) = tokio::join!(get(), writer, async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            get().await
        });
        assert_eq!(first.unwrap(), Some(2));
        assert_eq!(second.unwrap(), Some(3), "reloaded after the write");
        assert_eq!(get().await.unwrap(), Some(3), "then served from the cache");
        // not found is never cached
        let other = (Uuid::new_v4(), Uuid::new_v4(), None);
        for _ in 0..2 {
            let none = cache
                .get_with(
                    other,
                    || 2,
                    || async {
                        loads.fetch_add(1, Ordering::SeqCst);
                        Ok(None)
                    },
                )
                .await;
            assert!(matches!(none, Ok(None)));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 5);
    }
}
